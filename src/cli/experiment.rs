//! `clbench run`, `validate` and `slurm`: experiments from the command line.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Result;

use super::args::{RunArgs, ValidateArgs};
use super::report::write_report;
use super::settings::{RunSettings, UsageError};
use crate::experiment::store::ExperimentRecord;
use crate::experiment::{self, check_configurations, Experiment, PlannedRun, RunStore};

/// A progress bar per task (one run at a time) or one overall bar (parallel runs), shown only on
/// a terminal and without -q.
pub(crate) struct BarObserver {
    bar: indicatif::ProgressBar,
    overall: Option<indicatif::ProgressBar>,
    label: String,
}

impl crate::train::Observer for BarObserver {
    fn task_started(&self, task: usize, steps: usize) {
        self.bar.reset();
        self.bar.set_length(steps as u64);
        self.bar
            .set_message(format!("{} task {}", self.label, task + 1));
    }
    fn step_done(&self, loss: f32) {
        self.bar.inc(1);
        if self.bar.position().is_multiple_of(50) {
            self.bar.set_prefix(format!("loss {loss:.3}"));
        }
    }
    fn task_finished(&self, _task: usize) {
        self.bar.finish_and_clear();
    }
    fn run_finished(&self) {
        if let Some(b) = &self.overall {
            b.inc(1);
        }
    }
}

/// `clbench run`: load and plan the experiment, train what is missing, write the report.
pub(crate) fn run_command(args: RunArgs, progress: bool) -> Result<ExitCode> {
    let settings = RunSettings::new(args)?;
    if let Some(isa) = settings.kernels {
        crate::engine::kernels::Isa::choose(isa).map_err(anyhow::Error::msg)?;
    }
    let exp = Experiment::load(&settings.config)?;
    let out = settings
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("results").join(&exp.name));
    if out.exists() && !out.is_dir() {
        return Err(UsageError(format!(
            "--out {}: exists and is not a directory",
            out.display()
        ))
        .into());
    }
    refuse_foreign_output(&out, "run")?;
    let runs = planned_runs(&exp, &settings)?;
    let store = RunStore::new(&out);
    // Runs of another configuration already stored under one of these method names would be
    // pooled with these in every table.
    let (stored, skipped) = store.load()?;
    let ids: Vec<String> = runs.iter().map(PlannedRun::id).collect();
    check_configurations(
        &out,
        stored.iter().map(|r| (r.id.as_str(), &r.spec)).chain(
            ids.iter()
                .map(String::as_str)
                .zip(runs.iter().map(|r| &r.spec)),
        ),
    )
    .map_err(|conflict| *conflict)?;
    if settings.dry_run {
        // (A real run reports skipped runs with its report.)
        for w in &skipped {
            tracing::warn!("{w}");
        }
        check_data(&runs, false)?;
        print_dry_run(&store, &runs, &out)?;
        return Ok(ExitCode::SUCCESS);
    }
    // Missing or damaged data is the user's to fix (exit 2), before anything trains; the
    // loaded data is cached for the runs.
    check_data(&runs, true)?;
    // The whole experiment's methods, whatever share of its runs this writer trains: the
    // first is the report's default baseline, and every shard must record the same one.
    store.write_experiment(&ExperimentRecord::of(&exp, &experiment::plan(&exp, None)))?;
    tracing::info!(experiment = %exp.name, runs = runs.len(), jobs = settings.jobs, threads = settings.threads, out = %out.display(), "starting");
    let executed = train_runs(&runs, &settings, &out, progress)?;
    if store.load()?.0.is_empty() {
        if !executed.busy.is_empty() {
            say!(
                "all {} runs are being trained by other writers; `clbench report {}` once they finish",
                executed.busy.len(),
                out.display()
            );
            return Ok(ExitCode::SUCCESS);
        }
        anyhow::bail!("no run completed; nothing to report");
    }
    let report = write_report(std::slice::from_ref(&out), &out, &settings.tables)?;
    say!("{}", crate::report::summary_text(&report.summary)?);
    say!(
        "\n{} trained, {} already complete, {} left to other writers, {} diverged, {} failed; results in {}",
        executed.trained.len(),
        executed.skipped.len(),
        executed.busy.len(),
        executed.diverged.len(),
        executed.failed.len(),
        out.display()
    );
    if executed.failed.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    for failed in &executed.failed {
        tell!("error: run {} failed: {}", failed.id, failed.error);
    }
    Ok(ExitCode::from(1))
}

/// Finds (and with `load`, loads and verifies) every dataset the runs use.
fn check_data(runs: &[PlannedRun], load: bool) -> Result<()> {
    let mut names: Vec<&str> = runs
        .iter()
        .map(|r| r.stream.spec.dataset.as_str())
        .collect();
    names.sort_unstable();
    names.dedup();
    for name in names {
        if load {
            crate::data::load(name)?;
        } else {
            crate::data::find(name)?;
        }
    }
    Ok(())
}

/// The experiment's runs for `--seeds` and `--methods`, restricted to the shard when there is
/// one.
fn planned_runs(exp: &Experiment, settings: &RunSettings) -> Result<Vec<PlannedRun>> {
    let mut runs = experiment::plan(exp, settings.seeds.as_deref());
    if let Some(wanted) = &settings.methods {
        runs = select_methods(runs, wanted, &exp.path)?;
    }
    let Some((i, n)) = settings.shard else {
        return Ok(runs);
    };
    let total = runs.len();
    let share = experiment::shard(runs, i, n);
    if share.is_empty() {
        return Err(UsageError(format!(
            "shard {i}/{n} holds none of the {total} runs; use at most {total} shards"
        ))
        .into());
    }
    tracing::info!("shard {i}/{n}: {} of {total} runs", share.len());
    Ok(share)
}

/// The runs of the methods named in `wanted`: a name matches a method's results name
/// (`name[tag]` in a sweep) or, in a sweep, the name every variant shares. A name that matches
/// nothing is an error that lists the config's methods.
fn select_methods(
    runs: Vec<PlannedRun>,
    wanted: &[String],
    config: &std::path::Path,
) -> Result<Vec<PlannedRun>> {
    let base = |name: &str| name.split('[').next().unwrap_or(name).to_string();
    let matches = |w: &str, name: &str| w == name || w == base(name);
    if let Some(unknown) = wanted
        .iter()
        .find(|w| !runs.iter().any(|r| matches(w, &r.method.name)))
    {
        let mut names: Vec<&str> = runs.iter().map(|r| r.method.name.as_str()).collect();
        names.dedup();
        return Err(UsageError(format!(
            "--methods: {}: no method `{unknown}`; its methods are {}",
            config.display(),
            names.join(", ")
        ))
        .into());
    }
    Ok(runs
        .into_iter()
        .filter(|r| wanted.iter().any(|w| matches(w, &r.method.name)))
        .collect())
}

/// `run --dry-run`: one line per planned run, complete or pending.
fn print_dry_run(
    store: &RunStore,
    runs: &[PlannedRun],
    out: &std::path::Path,
) -> Result<(), super::StdoutError> {
    let mut pending = 0;
    for r in runs {
        let done = store.is_complete(&r.id());
        pending += usize::from(!done);
        say!(
            "{:<9} {:<44} {:<28} seed {}",
            if done { "complete" } else { "pending" },
            r.id(),
            r.method.name,
            r.spec.seed
        );
    }
    say!(
        "{} runs: {} complete, {pending} to run; output {}",
        runs.len(),
        runs.len() - pending,
        out.display()
    );
    Ok(())
}

/// Trains the runs not yet complete, with a progress bar per task (one job) or one overall
/// bar (several jobs) on a terminal.
fn train_runs(
    runs: &[PlannedRun],
    settings: &RunSettings,
    out: &std::path::Path,
    progress: bool,
) -> Result<experiment::ExecuteReport> {
    let overall = (progress && settings.jobs > 1).then(|| {
        bar(
            "runs [{bar:30}] {pos}/{len} elapsed {elapsed} eta {eta}",
            runs.len() as u64,
        )
    });
    let opts = experiment::ExecuteOptions {
        out: out.to_path_buf(),
        device: settings.device.clone(),
        jobs: settings.jobs,
        threads: settings.threads,
    };
    let executed = experiment::execute(runs, &opts, &|i, n, run| {
        let task_bar = if progress && settings.jobs == 1 {
            bar(
                "{msg} [{bar:30}] {pos}/{len} {per_sec} {prefix} eta {eta}",
                0,
            )
        } else {
            indicatif::ProgressBar::hidden()
        };
        let name = &run.method.name;
        tracing::info!(
            "run {}/{n}: {name} seed {} ({})",
            i + 1,
            run.spec.seed,
            run.id()
        );
        Box::new(BarObserver {
            bar: task_bar,
            overall: overall.clone(),
            label: format!("[{}/{n}] {name} s{}", i + 1, run.spec.seed),
        })
    })?;
    if let Some(b) = &overall {
        b.finish_and_clear();
    }
    Ok(executed)
}

fn bar(template: &str, len: u64) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(len);
    bar.set_style(
        indicatif::ProgressStyle::with_template(template)
            .expect("static template")
            .progress_chars("=> "),
    );
    bar
}

/// `clbench validate`: load and check a config, print what it would run.
pub(crate) fn validate_command(args: ValidateArgs) -> Result<ExitCode> {
    let exp = Experiment::load(&args.config)?;
    let runs = experiment::plan(&exp, None);
    check_data(&runs, false)?;
    say!("{}: ok — experiment `{}`", args.config.display(), exp.name);
    for v in &exp.variants {
        say!(
            "  {}: stream {}, {} methods × {} seeds",
            v.tag.as_deref().unwrap_or("(no sweep)"),
            v.stream.path.display(),
            v.methods.len(),
            v.config.seeds.len()
        );
    }
    say!("  {} runs in total", runs.len());
    Ok(ExitCode::SUCCESS)
}

/// Refuses an output folder that `command` must not write into: one that holds files clbench
/// did not write (it would overwrite `metrics.csv`, `summary.md`, `tables/…`), and for `run`
/// a report folder without runs (its tables come from other stores).
pub(crate) fn refuse_foreign_output(out: &Path, command: &str) -> Result<(), UsageError> {
    use crate::experiment::OutputFolder;
    let kind = crate::experiment::classify_output(out).map_err(|e| {
        UsageError(format!(
            "--out {}: cannot read the folder: {e}",
            out.display()
        ))
    })?;
    match kind {
        OutputFolder::New | OutputFolder::Store => Ok(()),
        OutputFolder::Report if command == "report" => Ok(()),
        OutputFolder::Report => Err(UsageError(format!(
            "--out {}: holds a report merged from other stores (tables/, no runs/); `clbench run` \
             would mix its runs into those tables: give a new or empty folder, or a run store",
            out.display()
        ))),
        OutputFolder::Foreign(names) => Err(UsageError(format!(
            "--out {}: not empty and not a clbench results folder (it holds {}{}, and neither \
             experiment.yaml nor runs/); `clbench {command}` would overwrite files there: give a \
             new or empty folder",
            out.display(),
            names.join(", "),
            if names.len() == 5 { ", …" } else { "" }
        ))),
    }
}
