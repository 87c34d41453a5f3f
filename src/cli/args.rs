//! The command line as clap parses it: raw flags, checked into settings by
//! [`super::settings`] (ripgrep's split between low-level arguments and validated settings).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// clbench: continual-learning benchmarks — task streams, training with or without GRAPES,
/// forgetting metrics and paper-ready exports.
#[derive(Debug, Parser)]
#[command(name = "clbench", version, about, long_about = None)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub(crate) verbosity: Verbosity,
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// Logging flags shared by every command.
#[derive(Debug, Args)]
pub(crate) struct Verbosity {
    /// More log output (-v: debug, -vv: trace). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub(crate) verbose: u8,
    /// Only errors; no progress bars.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub(crate) quiet: bool,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
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
    /// Print this machine and build as every run records them (CPU, the kernels' instruction
    /// set, commit, compiler, target).
    Platform(PlatformArgs),
}

/// How tables are written.
#[derive(Debug, Args)]
pub(crate) struct TableArgs {
    /// Method that significance markers (paired t-test) compare against
    /// [default: the first method of the experiment].
    #[arg(long)]
    pub(crate) baseline: Option<String>,
    /// Spread after the mean in tables and error bars.
    #[arg(long, value_enum, default_value = "sd")]
    pub(crate) spread: SpreadArg,
    /// Digits after the decimal point (values in percent).
    #[arg(long, default_value_t = 2)]
    pub(crate) digits: usize,
    /// Significance level of the markers.
    #[arg(long, default_value_t = 0.05)]
    pub(crate) alpha: f64,
    /// LaTeX caption (a note on what the numbers are is appended).
    #[arg(long)]
    pub(crate) caption: Option<String>,
    /// LaTeX label.
    #[arg(long)]
    pub(crate) label: Option<String>,
    /// Width of every figure in inches: 7 fits two columns of a paper, 3.5 one column. Fonts
    /// are set for print at this width (7–9 pt), so include the PDF at its own size.
    #[arg(long, value_name = "INCHES", default_value_t = 7.0)]
    pub(crate) figure_width: f64,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub(crate) enum SpreadArg {
    /// Sample standard deviation over seeds.
    Sd,
    /// Standard error of the mean.
    Sem,
}

#[derive(Debug, Args)]
pub(crate) struct ReportArgs {
    /// Results directories (holding runs/), e.g. results/paper-forgetting; several are merged
    /// (e.g. the stores of shards run apart).
    #[arg(required = true)]
    pub(crate) dirs: Vec<PathBuf>,
    /// Where the merged report goes [default: the first directory].
    #[arg(long)]
    pub(crate) out: Option<PathBuf>,
    /// Write nothing: rebuild the report elsewhere and check that every table and figure in the
    /// output directory is byte for byte what the stored runs give (exit 1 naming the files
    /// that differ or are missing).
    #[arg(long)]
    pub(crate) check: bool,
    #[command(flatten)]
    pub(crate) tables: TableArgs,
}

#[derive(Debug, Args)]
pub(crate) struct PlatformArgs {
    /// One line of text instead of JSON.
    #[arg(long)]
    pub(crate) short: bool,
}

#[derive(Debug, Args)]
pub(crate) struct MetricsArgs {
    /// CSV with header `after_task,task_1,...,task_T` and rows after_task = 0..T.
    pub(crate) matrix: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    pub(crate) format: MetricsFormat,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub(crate) enum MetricsFormat {
    /// JSON object with acc, bwt, fwt, forgetting, learning_accuracy, avg_incremental_accuracy.
    Json,
    /// Aligned text.
    Table,
}

#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// Experiment config, e.g. configs/paper-forgetting.yaml.
    pub(crate) config: PathBuf,
    /// Output directory [default: results/<experiment name>].
    #[arg(long)]
    pub(crate) out: Option<PathBuf>,
    /// Seeds to run instead of the config's, comma-separated (e.g. 0,1,2).
    #[arg(long, value_delimiter = ',')]
    pub(crate) seeds: Option<Vec<u64>>,
    /// Train only these methods of the config, comma-separated names as in the config (e.g.
    /// ewc,ewc+grapes); in a sweep a name selects every variant of that method, `name[tag]`
    /// one variant. The store still records the whole experiment, and the report covers every
    /// completed run.
    #[arg(long, value_delimiter = ',')]
    pub(crate) methods: Option<Vec<String>>,
    /// CPU threads of each run [default: the cores, shared among the jobs].
    #[arg(long)]
    pub(crate) threads: Option<usize>,
    /// Device: cpu, or cuda[:N] when built with `--features cuda`.
    #[arg(long, default_value = "cpu")]
    pub(crate) device: String,
    /// Runs trained at the same time; threads per run default to cores / jobs.
    #[arg(long, default_value_t = 1)]
    pub(crate) jobs: usize,
    /// Run the matrix products on these kernels instead of the fastest this CPU runs:
    /// avx512f, avx2+fma or scalar. They give the same bits, only slower; e.g. avx2+fma on an
    /// AVX-512 machine checks what an AVX2 machine would record.
    #[arg(long)]
    pub(crate) kernels: Option<String>,
    /// Run only share I of N (0 ≤ I < N) of the runs, sorted by id [default: Slurm's
    /// SLURM_ARRAY_TASK_ID/SLURM_ARRAY_TASK_COUNT when set].
    #[arg(long)]
    pub(crate) shard: Option<String>,
    /// List the runs that would execute and which already exist; train nothing.
    #[arg(long)]
    pub(crate) dry_run: bool,
    #[command(flatten)]
    pub(crate) tables: TableArgs,
}

#[derive(Debug, Args)]
pub(crate) struct BenchArgs {
    /// One JSON object per line instead of a table.
    #[arg(long)]
    pub(crate) json: bool,
    /// Seconds measured per configuration (after a warm-up).
    #[arg(long, default_value_t = 3.0)]
    pub(crate) seconds: f64,
    /// Threads for the single-run measurements [default: all cores].
    #[arg(long)]
    pub(crate) threads: Option<usize>,
    /// Skip the peak-RSS measurement (it trains one seed of configs/paper-forgetting.yaml).
    #[arg(long)]
    pub(crate) skip_rss: bool,
    /// Which models' training and evaluation to measure: the MLPs (784-256-256-10 at batch 64
    /// and at batch 10, the training-regime studies' batch; 784-1000-1000-10 at batch 128), the
    /// CNNs (cnn-8-16-128 and cnn-16-32-128 at batch 128), or both.
    #[arg(long, value_enum, default_value = "all")]
    pub(crate) models: BenchModelsArg,
    /// Measure these product kernels instead of the fastest this CPU runs: avx512f, avx2+fma
    /// or scalar (they give the same bits; e.g. avx2+fma on an AVX-512 machine shows what an
    /// AVX2 machine of the same clock would do).
    #[arg(long)]
    pub(crate) kernels: Option<String>,
    /// Measure the continual-learning strategies instead: each one's seconds per training step
    /// (Adam, task 2 of a two-task permuted MNIST) relative to a fine-tuning run timed just
    /// before it (median of 3 rounds), beside its FLOP ratio (penalties 1, replay and A-GEM 2,
    /// LwF 1 + forward/training FLOP), at 784-1000-1000-10 batch 128 and 784-256-256-10 batch
    /// 64 (needs the MNIST files).
    #[arg(long)]
    pub(crate) strategies: bool,
}

/// The models `clbench bench` measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum BenchModelsArg {
    /// The two MLPs.
    Mlp,
    /// The two CNNs.
    Cnn,
    /// All four.
    All,
}

#[derive(Debug, Args)]
pub(crate) struct ValidateArgs {
    /// Experiment config to check.
    pub(crate) config: PathBuf,
}

#[derive(Debug, Args)]
pub(crate) struct SlurmArgs {
    /// Experiment config.
    pub(crate) config: PathBuf,
    /// Array tasks [default: one per run].
    #[arg(long)]
    pub(crate) shards: Option<usize>,
    /// CPUs per array task (passed to --threads).
    #[arg(long, default_value_t = 2)]
    pub(crate) cpus_per_task: usize,
    /// Wall-time limit per array task, [D-]HH:MM:SS.
    #[arg(long, default_value = "04:00:00")]
    pub(crate) time: String,
    /// Slurm partition.
    #[arg(long)]
    pub(crate) partition: Option<String>,
    /// Slurm account to charge.
    #[arg(long)]
    pub(crate) account: Option<String>,
    /// Slurm quality of service.
    #[arg(long)]
    pub(crate) qos: Option<String>,
    /// Memory per array task (Slurm's --mem, e.g. 8G).
    #[arg(long)]
    pub(crate) mem: Option<String>,
    /// Generic resources per array task (e.g. gpu:1 for a CUDA build with --device cuda).
    #[arg(long)]
    pub(crate) gres: Option<String>,
    /// Extra sbatch option, written as its own #SBATCH line (repeatable; e.g. --sbatch=--mail-type=END).
    #[arg(long = "sbatch", value_name = "OPTION", allow_hyphen_values = true)]
    pub(crate) sbatch: Vec<String>,
    /// Shell line run before clbench in every array task (repeatable; e.g. "module load rust").
    #[arg(long = "setup", value_name = "LINE")]
    pub(crate) setup: Vec<String>,
    /// The clbench executable as the compute nodes see it [default: this binary's file name,
    /// `clbench` or a plugin crate's binary, from PATH].
    #[arg(long = "bin", value_name = "PATH")]
    pub(crate) bin: Option<String>,
    /// Extra arguments of every `clbench run` (e.g. "--device cuda"), split on whitespace.
    #[arg(long = "run-args", value_name = "ARGS", allow_hyphen_values = true)]
    pub(crate) run_args: Option<String>,
    /// Give every array task its own results directory, <out>/shard-<task>, instead of one
    /// shared store (for file systems without working advisory locks); merge them afterwards
    /// with `clbench report <out>/shard-* --out <out>`.
    #[arg(long)]
    pub(crate) separate_outs: bool,
    /// Results directory [default: results/<experiment name>]. Its slurm/ folder (the array's
    /// logs) is created now: Slurm opens the log files before the script runs.
    #[arg(long)]
    pub(crate) out: Option<PathBuf>,
    /// Write the script here instead of standard output.
    #[arg(long)]
    pub(crate) script: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum DataCommand {
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
        /// Seconds without a byte from a mirror (no answer, or a stalled download) before it
        /// is given up.
        #[arg(long, default_value_t = crate::data::fetch::FetchOptions::DEFAULT_READ_TIMEOUT_S)]
        read_timeout: u64,
        /// Seconds one file may take from one mirror in all.
        #[arg(long, default_value_t = crate::data::fetch::FetchOptions::DEFAULT_TOTAL_TIMEOUT_S)]
        total_timeout: u64,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum TasksCommand {
    /// Print one line per task of a stream: sizes, classes, targets, head and transform.
    Describe {
        /// A stream file, e.g. tasks/permuted-mnist-5.yaml.
        file: PathBuf,
        /// The seed the stream is built with (a `seed:` in the file takes precedence).
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
}
