//! The `clbench` command line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};

use clbench::data::{self, catalog, fetch};
use clbench::streams::{StreamSpec, TaskStream};

/// clbench: continual-learning benchmarks — task streams, training with or without GRAPES,
/// forgetting metrics and paper-ready exports.
#[derive(Debug, Parser)]
#[command(name = "clbench", version, about, long_about = None)]
struct Cli {
    #[command(flatten)]
    verbosity: Verbosity,
    #[command(subcommand)]
    command: Command,
}

/// Logging flags shared by every command.
#[derive(Debug, Args)]
struct Verbosity {
    /// More log output (-v: debug, -vv: trace). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// Only errors; no progress bars.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    quiet: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Find, verify and download datasets.
    #[command(subcommand)]
    Data(DataCommand),
    /// Inspect task streams.
    #[command(subcommand)]
    Tasks(TasksCommand),
    /// Train every method of an experiment config on its task stream, for every seed, then write
    /// the run store and the full report.
    Run(RunArgs),
    /// Rebuild every table and figure of a results directory from its stored runs (no training).
    Report(ReportArgs),
    /// Check an experiment config (extends, sweep, every value) without running it.
    Validate(ValidateArgs),
    /// Write a Slurm sbatch array script that runs an experiment in shards.
    Slurm(SlurmArgs),
    /// Measure training and evaluation throughput, the matrix-product peak, parallel scaling and
    /// the peak memory of the paper protocol.
    Bench(BenchArgs),
    /// Compute the metrics of one accuracy matrix made by any framework.
    Metrics(MetricsArgs),
}

/// How tables are written.
#[derive(Debug, Args)]
struct TableArgs {
    /// Method that significance markers (paired t-test) compare against
    /// [default: the first method of the experiment].
    #[arg(long)]
    baseline: Option<String>,
    /// Spread after the mean in tables and error bars.
    #[arg(long, value_enum, default_value = "sd")]
    spread: SpreadArg,
    /// Digits after the decimal point (values in percent).
    #[arg(long, default_value_t = 2)]
    digits: usize,
    /// Significance level of the markers.
    #[arg(long, default_value_t = 0.05)]
    alpha: f64,
    /// LaTeX caption (a note on what the numbers are is appended).
    #[arg(long)]
    caption: Option<String>,
    /// LaTeX label.
    #[arg(long)]
    label: Option<String>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum SpreadArg {
    /// Sample standard deviation over seeds.
    Sd,
    /// Standard error of the mean.
    Sem,
}

#[derive(Debug, Args)]
struct ReportArgs {
    /// Results directories (holding runs/), e.g. results/paper-forgetting; several are merged
    /// (e.g. the stores of shards run apart).
    #[arg(required = true)]
    dirs: Vec<PathBuf>,
    /// Where the merged report goes [default: the first directory].
    #[arg(long)]
    out: Option<PathBuf>,
    #[command(flatten)]
    tables: TableArgs,
}

#[derive(Debug, Args)]
struct MetricsArgs {
    /// CSV with header `after_task,task_1,...,task_T` and rows after_task = 0..T.
    matrix: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    format: MetricsFormat,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum MetricsFormat {
    /// JSON object with acc, bwt, fwt, forgetting, learning_accuracy, avg_incremental_accuracy.
    Json,
    /// Aligned text.
    Table,
}

#[derive(Debug, Args)]
struct RunArgs {
    /// Experiment config, e.g. configs/paper-forgetting.yaml.
    config: PathBuf,
    /// Output directory [default: results/<experiment name>].
    #[arg(long)]
    out: Option<PathBuf>,
    /// Seeds to run instead of the config's, comma-separated (e.g. 0,1,2).
    #[arg(long, value_delimiter = ',')]
    seeds: Option<Vec<u64>>,
    /// CPU threads for the matrix products [default: all cores; RAYON_NUM_THREADS also works].
    #[arg(long)]
    threads: Option<usize>,
    /// Device: cpu, or cuda[:N] when built with `--features cuda`.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Runs trained at the same time; threads per run default to cores / jobs.
    #[arg(long, default_value_t = 1)]
    jobs: usize,
    /// Run only share I of N (0 ≤ I < N) of the runs, sorted by id [default: Slurm's
    /// SLURM_ARRAY_TASK_ID/SLURM_ARRAY_TASK_COUNT when set].
    #[arg(long)]
    shard: Option<String>,
    /// List the runs that would execute and which already exist; train nothing.
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    tables: TableArgs,
}

#[derive(Debug, Args)]
struct BenchArgs {
    /// One JSON object per line instead of a table.
    #[arg(long)]
    json: bool,
    /// Seconds measured per configuration (after a warm-up).
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Threads for the single-run measurements [default: all cores].
    #[arg(long)]
    threads: Option<usize>,
    /// Skip the peak-RSS measurement (it trains one seed of configs/paper-forgetting.yaml).
    #[arg(long)]
    skip_rss: bool,
}

#[derive(Debug, Args)]
struct ValidateArgs {
    /// Experiment config to check.
    config: PathBuf,
}

#[derive(Debug, Args)]
struct SlurmArgs {
    /// Experiment config.
    config: PathBuf,
    /// Array tasks [default: one per run].
    #[arg(long)]
    shards: Option<usize>,
    /// CPUs per array task (passed to --threads).
    #[arg(long, default_value_t = 2)]
    cpus_per_task: usize,
    /// Wall-time limit per array task, [D-]HH:MM:SS.
    #[arg(long, default_value = "04:00:00")]
    time: String,
    /// Slurm partition.
    #[arg(long)]
    partition: Option<String>,
    /// Results directory [default: results/<experiment name>].
    #[arg(long)]
    out: Option<PathBuf>,
    /// Write the script here instead of standard output.
    #[arg(long)]
    script: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum DataCommand {
    /// Show each dataset, where it was found and whether its checksums verify.
    List,
    /// Check every file of a dataset (all found datasets if none is named) against its SHA-256.
    Verify {
        /// Dataset name (mnist, fashion-mnist).
        name: Option<String>,
    },
    /// Download a dataset from its canonical mirrors, verify it and install it.
    Fetch {
        /// Dataset name (mnist, fashion-mnist).
        name: String,
        /// Destination directory [default: $CLBENCH_DATA_DIR/<name>, else data/<name>].
        #[arg(long)]
        dest: Option<PathBuf>,
        /// Base URL to download from instead of the canonical mirrors (repeatable, tried in order).
        #[arg(long = "mirror")]
        mirrors: Vec<String>,
        /// Seconds to wait for a connection to a mirror.
        #[arg(long, default_value_t = 20)]
        connect_timeout: u64,
    },
}

#[derive(Debug, Subcommand)]
enum TasksCommand {
    /// Print one line per task of a stream: sizes, classes, targets, head and transform.
    Describe {
        /// A stream file, e.g. tasks/permuted-mnist-5.yaml.
        file: PathBuf,
        /// The seed the stream is built with (a `seed:` in the file takes precedence).
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.verbosity);
    match dispatch(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(exit_code_of(&err))
        }
    }
}

/// 2 for errors in the user's input (config, stream, data), 1 for runtime failures.
fn exit_code_of(err: &anyhow::Error) -> u8 {
    let input = err.chain().any(|cause| {
        cause
            .downcast_ref::<data::DataError>()
            .is_some_and(data::DataError::is_input_error)
            || cause
                .downcast_ref::<clbench::streams::StreamError>()
                .is_some_and(clbench::streams::StreamError::is_input_error)
            || cause
                .downcast_ref::<clbench::experiment::ConfigError>()
                .is_some()
            || cause.downcast_ref::<UsageError>().is_some()
            || cause
                .downcast_ref::<clbench::metrics::MatrixCsvError>()
                .is_some()
            || cause
                .downcast_ref::<clbench::report::ReportError>()
                .is_some_and(clbench::report::ReportError::is_input_error)
    });
    if input {
        2
    } else {
        1
    }
}

fn init_logging(v: &Verbosity) {
    let default = if v.quiet {
        "error"
    } else {
        match v.verbose {
            0 => "info",
            1 => "debug",
            _ => "trace",
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
}

fn dispatch(cli: Cli) -> Result<ExitCode> {
    let progress = !cli.verbosity.quiet && std::io::IsTerminal::is_terminal(&std::io::stderr());
    match cli.command {
        Command::Data(cmd) => data_command(cmd, progress),
        Command::Run(args) => run_command(args, progress),
        Command::Report(args) => {
            let out = args.out.clone().unwrap_or_else(|| args.dirs[0].clone());
            let report = write_report(&args.dirs, &out, &args.tables)?;
            println!("{}", report.markdown);
            println!(
                "{} runs; {} files written under {}",
                report.runs,
                report.files.len(),
                out.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Validate(args) => validate_command(args),
        Command::Slurm(args) => slurm_command(args),
        Command::Bench(args) => bench_command(args),
        Command::Metrics(args) => metrics_command(args),
        Command::Tasks(TasksCommand::Describe { file, seed }) => {
            let stream_file = StreamSpec::load(&file)?;
            let stream = TaskStream::build(&stream_file, seed)?;
            println!(
                "{}: {} tasks, {} {} on {} ({}), seed {}",
                file.display(),
                stream.len(),
                yaml_word(&stream.spec.kind),
                yaml_word(&stream.spec.scenario),
                stream.dataset.name,
                match &stream.outputs {
                    clbench::streams::OutputLayout::Shared { outputs } =>
                        format!("one shared output layer of {outputs}"),
                    clbench::streams::OutputLayout::MultiHead { sizes } =>
                        format!("{} heads of sizes {:?}", sizes.len(), sizes),
                },
                stream.seed
            );
            let (scale, shift) = stream.pixel_scale_shift;
            println!(
                "pixels: byte × {scale:.6} {} {:.6}{}",
                if shift < 0.0 { "−" } else { "+" },
                shift.abs(),
                if stream.spec.normalize.unwrap_or(false) {
                    " (standardized with the dataset's mean and sd)"
                } else {
                    " (scaled to [0, 1])"
                }
            );
            for line in stream.describe() {
                println!("{line}");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// A bad command-line value (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct UsageError(String);

fn parse_device(name: &str) -> Result<candle_core::Device> {
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
struct BarObserver {
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
fn shard_of(arg: Option<&str>) -> Result<Option<(usize, usize)>> {
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

fn run_command(args: RunArgs, progress: bool) -> Result<ExitCode> {
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

fn validate_command(args: ValidateArgs) -> Result<ExitCode> {
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

fn slurm_command(args: SlurmArgs) -> Result<ExitCode> {
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

fn bench_command(args: BenchArgs) -> Result<ExitCode> {
    use clbench::bench;
    use clbench::optim::GrapesMode;
    if !(args.seconds > 0.0 && args.seconds.is_finite()) {
        return Err(UsageError(format!(
            "--seconds {}: expected a positive number",
            args.seconds
        ))
        .into());
    }
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let threads = args.threads.unwrap_or(cores).max(1);
    let duration = std::time::Duration::from_secs_f64(args.seconds);
    let device = candle_core::Device::Cpu;
    let emit = |json: serde_json::Value, text: String| {
        if args.json {
            println!("{json}");
        } else {
            println!("{text}");
        }
    };
    std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
    // The peak is the best of five short measurements (the speed of shared machines drifts).
    let mut peak = 0.0f64;
    for _ in 0..5 {
        peak = peak.max(bench::matmul_peak(2048, duration / 5));
    }
    emit(
        serde_json::json!({"kind": "matmul_peak", "n": 2048, "threads": threads, "gflop_per_s": peak}),
        format!("matmul 2048×2048×2048 (gemm, best of 5), {threads} threads: {peak:.1} GFLOP/s: the peak for \"% peak\"\n"),
    );
    if !args.json {
        println!(
            "{:<16} {:>5} {:<11} {:>7} {:>12} {:>11} {:>10} {:>8}",
            "model", "batch", "method", "threads", "samples/s", "FLOP/sample", "GFLOP/s", "% peak"
        );
    }
    let mut by_config = Vec::new();
    for (hidden, batch) in [(vec![256, 256], 64usize), (vec![1000, 1000], 128)] {
        // Rounds alternate between the two methods and the median round is reported, so that
        // drifts of the machine's speed hit both alike.
        let mut rounds: [Vec<bench::TrainMeasurement>; 2] = [Vec::new(), Vec::new()];
        for _ in 0..3 {
            for (k, grapes) in [GrapesMode::Off, GrapesMode::Propagating]
                .into_iter()
                .enumerate()
            {
                rounds[k].push(bench::train_throughput(
                    &hidden,
                    batch,
                    grapes,
                    20,
                    duration / 3,
                    &device,
                )?);
            }
        }
        for mut r in rounds {
            r.sort_by(|a, b| a.samples_per_s.total_cmp(&b.samples_per_s));
            let m = r.swap_remove(1);
            let mut json = serde_json::to_value(&m)?;
            json["kind"] = "train".into();
            json["percent_of_peak"] = (100.0 * m.gflop_per_s / peak).into();
            emit(
                json,
                format!(
                    "{:<16} {:>5} {:<11} {:>7} {:>12.0} {:>11.2e} {:>10.1} {:>7.1}%",
                    m.model,
                    m.batch,
                    m.method,
                    m.threads,
                    m.samples_per_s,
                    m.flop_per_sample,
                    m.gflop_per_s,
                    100.0 * m.gflop_per_s / peak
                ),
            );
            by_config.push(m);
        }
    }
    for pair in by_config.chunks(2) {
        let overhead = 100.0 * (pair[0].samples_per_s / pair[1].samples_per_s - 1.0);
        emit(
            serde_json::json!({"kind": "grapes_overhead", "model": pair[0].model, "batch": pair[0].batch, "percent": overhead}),
            format!(
                "GRAPES costs {overhead:.1}% on {} at batch {}",
                pair[0].model, pair[0].batch
            ),
        );
    }
    for (hidden, batch) in [(vec![256, 256], 1000usize), (vec![1000, 1000], 1000)] {
        let sps = bench::eval_throughput(&hidden, batch, duration, &device)?;
        emit(
            serde_json::json!({"kind": "eval", "model": bench::model_name(&hidden), "batch": batch, "threads": threads, "samples_per_s": sps}),
            format!(
                "evaluation {} at batch {batch}: {sps:.0} samples/s",
                bench::model_name(&hidden)
            ),
        );
    }
    // Parallel scaling: one single-threaded run, then two at once.
    std::env::set_var("RAYON_NUM_THREADS", "1");
    let one = bench::train_throughput(&[256, 256], 64, GrapesMode::Off, 20, duration, &device)?
        .samples_per_s;
    let two: Vec<f64> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..2)
            .map(|_| {
                s.spawn(|| {
                    bench::train_throughput(
                        &[256, 256],
                        64,
                        GrapesMode::Off,
                        20,
                        duration,
                        &candle_core::Device::Cpu,
                    )
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("bench thread").map(|m| m.samples_per_s))
            .collect::<candle_core::Result<Vec<f64>>>()
    })?;
    let total: f64 = two.iter().sum();
    emit(
        serde_json::json!({"kind": "parallel", "model": "784-256-256-10", "batch": 64, "one_run_samples_per_s": one, "two_runs_samples_per_s": total, "scaling": total / one}),
        format!("two single-threaded runs at once: {total:.0} samples/s in all, {:.2}× one run ({one:.0})", total / one),
    );
    if !args.skip_rss {
        let config = PathBuf::from("configs/paper-forgetting.yaml");
        if config.is_file() {
            let out =
                std::env::temp_dir().join(format!("clbench-bench-rss-{}", std::process::id()));
            let status = std::process::Command::new(std::env::current_exe()?)
                .args([
                    "run",
                    "configs/paper-forgetting.yaml",
                    "--seeds",
                    "1234",
                    "--out",
                ])
                .arg(&out)
                .args(["-q", "--threads", &threads.to_string()])
                .stdout(std::process::Stdio::null())
                .status()?;
            let _ = std::fs::remove_dir_all(&out);
            let rss = bench::children_peak_rss_mb().unwrap_or(f64::NAN);
            emit(
                serde_json::json!({"kind": "peak_rss", "config": "configs/paper-forgetting.yaml", "seeds": [1234], "ok": status.success(), "peak_rss_mb": rss}),
                format!("peak RSS of configs/paper-forgetting.yaml (seed 1234, both methods): {rss:.0} MB"),
            );
        } else {
            tracing::warn!("configs/paper-forgetting.yaml not found here: peak RSS not measured");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn validate_time(t: &str) -> bool {
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

fn table_options(args: &TableArgs, dir: &std::path::Path) -> Result<clbench::report::TableOptions> {
    if !(args.alpha > 0.0 && args.alpha < 1.0) {
        return Err(UsageError(format!(
            "--alpha {}: expected a number in (0, 1)",
            args.alpha
        ))
        .into());
    }
    if args.digits > 6 {
        return Err(UsageError(format!("--digits {}: expected at most 6", args.digits)).into());
    }
    Ok(clbench::report::TableOptions {
        spread: match args.spread {
            SpreadArg::Sd => clbench::report::Spread::Sd,
            SpreadArg::Sem => clbench::report::Spread::Sem,
        },
        digits: args.digits,
        baseline: args
            .baseline
            .clone()
            .or_else(|| clbench::report::default_baseline(dir)),
        alpha: args.alpha,
        caption: args.caption.clone(),
        label: args.label.clone(),
    })
}

fn write_report(
    dirs: &[PathBuf],
    out: &std::path::Path,
    args: &TableArgs,
) -> Result<clbench::report::Report> {
    let opts = table_options(args, &dirs[0])?;
    let report = clbench::report::build_report(dirs, out, &opts)?;
    for w in &report.warnings {
        tracing::warn!("{w}");
    }
    if let Some(b) = &opts.baseline {
        let known = report
            .summary
            .column("method")?
            .str()?
            .iter()
            .flatten()
            .any(|m| m == b);
        if !known {
            tracing::warn!(
                "baseline `{b}` has no runs in {}: no significance markers",
                out.display()
            );
        }
    }
    Ok(report)
}

fn metrics_command(args: MetricsArgs) -> Result<ExitCode> {
    let text = std::fs::read_to_string(&args.matrix).map_err(|e| {
        UsageError(format!(
            "{}: cannot read the file: {e}",
            args.matrix.display()
        ))
    })?;
    let m = clbench::metrics::parse_matrix_csv(&text, &args.matrix)?;
    let s = m.summary();
    // FWT against row 0: a matrix from another framework carries no random baseline.
    let fields: [(&str, Option<f64>); 6] = [
        ("acc", Some(s.acc)),
        ("bwt", s.bwt),
        ("fwt", s.fwt_init),
        ("forgetting", s.forgetting),
        ("learning_accuracy", Some(s.learning_accuracy)),
        ("avg_incremental_accuracy", Some(s.avg_incremental_accuracy)),
    ];
    match args.format {
        MetricsFormat::Json => {
            let obj: serde_json::Map<String, serde_json::Value> = fields
                .iter()
                .map(|(k, v)| (k.to_string(), serde_json::json!(v)))
                .collect();
            println!("{}", serde_json::Value::Object(obj));
        }
        MetricsFormat::Table => {
            println!(
                "{}: {} tasks (FWT against row 0, the initialization)",
                args.matrix.display(),
                m.tasks()
            );
            for (k, v) in fields {
                match v {
                    Some(v) => println!("{k:<26} {v:>9.4}"),
                    None => println!("{k:<26} {:>9}", "undefined"),
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn yaml_word<T: serde::Serialize>(v: &T) -> String {
    serde_yaml::to_string(v)
        .unwrap_or_default()
        .trim()
        .to_string()
}

fn data_command(cmd: DataCommand, progress: bool) -> Result<ExitCode> {
    match cmd {
        DataCommand::List => {
            println!(
                "{:<14} {:<8} {:<14} location",
                "dataset", "status", "license"
            );
            for info in &data::DATASETS {
                let (status, location) = match catalog::locate(info) {
                    None => (
                        "missing",
                        format!(
                            "not found (searched {})",
                            catalog::search_dirs(info)
                                .iter()
                                .map(|d| d.display().to_string())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    ),
                    Some(dir) => {
                        let ok = data::verify_dir(info, &dir)
                            .iter()
                            .all(|c| c.result.is_ok());
                        (
                            if ok { "verified" } else { "CORRUPT" },
                            dir.display().to_string(),
                        )
                    }
                };
                println!(
                    "{:<14} {:<8} {:<14} {}",
                    info.name, status, info.license, location
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        DataCommand::Verify { name } => {
            let infos: Vec<&catalog::DatasetInfo> = match &name {
                Some(n) => vec![data::find(n)?.0],
                None => data::DATASETS
                    .iter()
                    .filter(|i| catalog::locate(i).is_some())
                    .collect(),
            };
            if infos.is_empty() {
                anyhow::bail!(
                    "no dataset found to verify; `clbench data list` shows where clbench looks"
                );
            }
            let mut all_ok = true;
            for info in infos {
                let (_, dir) = data::find(info.name)?;
                for check in data::verify_dir(info, &dir) {
                    match &check.result {
                        Ok(()) => println!("ok       {}", check.path.display()),
                        Err(e) => {
                            all_ok = false;
                            println!("FAILED   {e}");
                        }
                    }
                }
            }
            if all_ok {
                Ok(ExitCode::SUCCESS)
            } else {
                eprintln!(
                    "error: some files do not match their published SHA-256; fetch them again"
                );
                Ok(ExitCode::from(2))
            }
        }
        DataCommand::Fetch {
            name,
            dest,
            mirrors,
            connect_timeout,
        } => {
            let info =
                data::dataset_info(&name).ok_or_else(|| data::DataError::UnknownDataset {
                    name: name.clone(),
                    known: data::dataset_names().join(", "),
                })?;
            let opts = fetch::FetchOptions {
                dest: dest.unwrap_or_else(|| catalog::default_fetch_dir(info)),
                mirrors: if mirrors.is_empty() {
                    info.mirrors.iter().map(|m| m.to_string()).collect()
                } else {
                    mirrors
                },
                progress,
                connect_timeout: Duration::from_secs(connect_timeout),
            };
            let outcomes = fetch::fetch(info, &opts)
                .with_context(|| format!("fetching {name} into {}", opts.dest.display()))?;
            for o in outcomes {
                match o {
                    fetch::FetchOutcome::AlreadyPresent(p) => println!("present  {}", p.display()),
                    fetch::FetchOutcome::Downloaded { path, url } => {
                        println!("fetched  {} (from {url}, verified)", path.display())
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
