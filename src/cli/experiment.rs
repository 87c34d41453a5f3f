//! `clbench run`, `validate` and `slurm`: experiments from the command line.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};

use super::report::write_report;
use crate::{RunArgs, SlurmArgs, UsageError, ValidateArgs};

pub(crate) fn parse_device(name: &str) -> Result<candle_core::Device> {
    match name {
        "cpu" => Ok(candle_core::Device::Cpu),
        cuda if cuda == "cuda" || cuda.starts_with("cuda:") => {
            let ordinal: usize = cuda
                .strip_prefix("cuda:")
                .map_or(Ok(0), str::parse)
                .map_err(|_| {
                    UsageError(format!(
                        "--device {name}: expected cuda:N with N a GPU index"
                    ))
                })?;
            if !candle_core::utils::cuda_is_available() {
                return Err(UsageError(format!("--device {name}: this clbench was built without CUDA; rebuild with `--features cuda`")).into());
            }
            Ok(candle_core::Device::new_cuda(ordinal)?)
        }
        other => Err(UsageError(format!("--device {other}: expected cpu or cuda[:N]")).into()),
    }
}

/// A progress bar per task (one run at a time) or one overall bar (parallel runs), shown only on
/// a terminal and without -q.
pub(crate) struct BarObserver {
    bar: indicatif::ProgressBar,
    overall: Option<indicatif::ProgressBar>,
    label: String,
}

impl clbench::train::Observer for BarObserver {
    fn task_started(&self, task: usize, steps: usize) {
        self.bar.reset();
        self.bar.set_length(steps as u64);
        self.bar
            .set_message(format!("{} task {}", self.label, task + 1));
    }
    fn step_done(&self, loss: f32) {
        self.bar.inc(1);
        if self.bar.position() % 50 == 0 {
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

/// `I/N` from `--shard` or Slurm's array variables.
pub(crate) fn shard_of(arg: Option<&str>) -> Result<Option<(usize, usize)>> {
    let parse = |text: &str, what: &str| -> Result<(usize, usize)> {
        let bad = || {
            UsageError(format!(
                "{what} `{text}`: expected I/N with 0 ≤ I < N (e.g. 0/4)"
            ))
        };
        let (i, n) = text.split_once('/').ok_or_else(bad)?;
        let (i, n): (usize, usize) = (
            i.trim().parse().map_err(|_| bad())?,
            n.trim().parse().map_err(|_| bad())?,
        );
        if n == 0 || i >= n {
            return Err(bad().into());
        }
        Ok((i, n))
    };
    if let Some(a) = arg {
        return parse(a, "--shard").map(Some);
    }
    let var = |k: &str| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.trim().parse::<usize>().ok())
    };
    match (var("SLURM_ARRAY_TASK_ID"), var("SLURM_ARRAY_TASK_COUNT")) {
        (Some(id), Some(count)) => {
            let index = id.saturating_sub(var("SLURM_ARRAY_TASK_MIN").unwrap_or(0));
            parse(&format!("{index}/{count}"), "Slurm array task").map(Some)
        }
        _ => Ok(None),
    }
}

pub(crate) fn run_command(args: RunArgs, progress: bool) -> Result<ExitCode> {
    use clbench::experiment::{self, Experiment, RunStore};
    if args.jobs == 0 {
        return Err(UsageError("--jobs: expected at least 1".into()).into());
    }
    let threads = match args.threads {
        Some(0) => return Err(UsageError("--threads: expected at least 1".into()).into()),
        Some(t) => Some(t),
        // Parallel runs share the cores.
        None if args.jobs > 1 => {
            let cores = std::thread::available_parallelism().map_or(1, usize::from);
            Some((cores / args.jobs).max(1))
        }
        None => None,
    };
    if let Some(t) = threads {
        std::env::set_var("RAYON_NUM_THREADS", t.to_string());
    }
    if args.seeds.as_ref().is_some_and(Vec::is_empty) {
        return Err(UsageError("--seeds: expected at least one seed".into()).into());
    }
    let device = parse_device(&args.device)?;
    let exp = Experiment::load(&args.config)?;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("results").join(&exp.name));
    let mut planned = experiment::plan(&exp, args.seeds.as_deref());
    let total = planned.len();
    if let Some((i, n)) = shard_of(args.shard.as_deref())? {
        planned = experiment::shard(planned, i, n);
        tracing::info!("shard {i}/{n}: {} of {total} runs", planned.len());
    }
    let store = RunStore::new(&out);
    if args.dry_run {
        let mut pending = 0;
        for r in &planned {
            let done = store.is_complete(&r.id());
            pending += usize::from(!done);
            println!(
                "{:<9} {:<44} {:<28} seed {}",
                if done { "complete" } else { "pending" },
                r.id(),
                r.spec.method.name,
                r.spec.seed
            );
        }
        println!(
            "{} runs: {} complete, {pending} to run; output {}",
            planned.len(),
            planned.len() - pending,
            out.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let config_text = std::fs::read(&args.config)
        .with_context(|| format!("reading {}", args.config.display()))?;
    clbench::experiment::store::write_atomic(
        &out.join(clbench::report::EXPERIMENT_COPY),
        &config_text,
    )?;
    tracing::info!(experiment = %exp.name, runs = planned.len(), jobs = args.jobs, out = %out.display(), "starting");
    let overall = (progress && args.jobs > 1).then(|| {
        let bar = indicatif::ProgressBar::new(planned.len() as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "runs [{bar:30}] {pos}/{len} elapsed {elapsed} eta {eta}",
            )
            .expect("static template")
            .progress_chars("=> "),
        );
        bar
    });
    let opts = experiment::ExecuteOptions {
        out: out.clone(),
        device,
        jobs: args.jobs,
    };
    let executed = experiment::execute(&exp, &planned, &opts, &|i, n, run| {
        let bar = if progress && args.jobs == 1 {
            let bar = indicatif::ProgressBar::new(0);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{msg} [{bar:30}] {pos}/{len} {per_sec} {prefix} eta {eta}",
                )
                .expect("static template")
                .progress_chars("=> "),
            );
            bar
        } else {
            indicatif::ProgressBar::hidden()
        };
        tracing::info!(
            "run {}/{}: {} seed {} ({})",
            i + 1,
            n,
            run.spec.method.name,
            run.spec.seed,
            run.id()
        );
        Box::new(BarObserver {
            bar,
            overall: overall.clone(),
            label: format!(
                "[{}/{}] {} s{}",
                i + 1,
                n,
                run.spec.method.name,
                run.spec.seed
            ),
        })
    })?;
    if let Some(b) = &overall {
        b.finish_and_clear();
    }
    if store.load()?.0.is_empty() {
        anyhow::bail!("no run completed; nothing to report");
    }
    let report = write_report(std::slice::from_ref(&out), &out, &args.tables)?;
    println!("{}", clbench::report::summary_text(&report.summary)?);
    println!(
        "\n{} trained, {} already complete, {} diverged, {} failed; results in {}",
        executed.trained.len(),
        executed.skipped.len(),
        executed.diverged.len(),
        executed.failed.len(),
        out.display()
    );
    if executed.failed.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        for (id, e) in &executed.failed {
            eprintln!("error: run {id} failed: {e}");
        }
        Ok(ExitCode::from(1))
    }
}

pub(crate) fn validate_command(args: ValidateArgs) -> Result<ExitCode> {
    let exp = clbench::experiment::Experiment::load(&args.config)?;
    let runs = clbench::experiment::plan(&exp, None);
    println!("{}: ok — experiment `{}`", args.config.display(), exp.name);
    for v in &exp.variants {
        println!(
            "  {}: stream {}, {} methods × {} seeds",
            v.tag.as_deref().unwrap_or("(no sweep)"),
            v.stream.path.display(),
            v.methods.len(),
            v.config.seeds.len()
        );
    }
    println!("  {} runs in total", runs.len());
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn slurm_command(args: SlurmArgs) -> Result<ExitCode> {
    let exp = clbench::experiment::Experiment::load(&args.config)?;
    let runs = clbench::experiment::plan(&exp, None).len();
    let shards = args.shards.unwrap_or(runs).clamp(1, runs.max(1));
    if !validate_time(&args.time) {
        return Err(UsageError(format!(
            "--time `{}`: expected Slurm's [D-]HH:MM:SS",
            args.time
        ))
        .into());
    }
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("results").join(&exp.name));
    let config = args.config.display().to_string();
    let mut script = String::from("#!/bin/bash\n");
    script.push_str(&format!("#SBATCH --job-name=clbench-{}\n", exp.name));
    script.push_str(&format!("#SBATCH --array=0-{}\n", shards - 1));
    script.push_str(&format!("#SBATCH --cpus-per-task={}\n", args.cpus_per_task));
    script.push_str(&format!("#SBATCH --time={}\n", args.time));
    if let Some(p) = &args.partition {
        script.push_str(&format!("#SBATCH --partition={p}\n"));
    }
    script.push_str(&format!(
        "#SBATCH --output={}/slurm/%A_%a.out\n",
        out.display()
    ));
    script.push_str(&format!(
        "# {runs} runs of {config} in {shards} shards; each array task runs its share (--shard defaults to\n\
         # SLURM_ARRAY_TASK_ID/SLURM_ARRAY_TASK_COUNT) and skips runs already complete, so the array can be\n\
         # resubmitted after a failure. Afterwards: clbench report {}\n",
        out.display()
    ));
    script.push_str("set -euo pipefail\n");
    script.push_str(&format!("mkdir -p {}/slurm\n", out.display()));
    script.push_str(&format!(
        "srun clbench run {config} --out {} --threads \"$SLURM_CPUS_PER_TASK\" -q\n",
        out.display()
    ));
    match &args.script {
        Some(path) => {
            clbench::experiment::store::write_atomic(path, script.as_bytes())?;
            eprintln!(
                "wrote {} ({runs} runs in {shards} array tasks); submit with: sbatch {}",
                path.display(),
                path.display()
            );
        }
        None => print!("{script}"),
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn validate_time(t: &str) -> bool {
    let (days, rest) = match t.split_once('-') {
        Some((d, r)) => (Some(d), r),
        None => (None, t),
    };
    days.is_none_or(|d| d.parse::<u32>().is_ok())
        && rest.split(':').count() <= 3
        && rest
            .split(':')
            .all(|p| !p.is_empty() && p.parse::<u32>().is_ok())
}
