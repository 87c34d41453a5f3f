//! The `clbench` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};

mod cli;

use cli::bench::bench_command;
use cli::data::{data_command, yaml_word};
use cli::experiment::{run_command, slurm_command, validate_command};
use cli::report::{metrics_command, write_report};

use clbench::data;
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
