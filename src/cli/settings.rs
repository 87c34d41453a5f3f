//! Validated settings: every command-line check written once, turning the raw flags of
//! [`super::args`] into the values the library takes (threads per job, a device, a shard, table
//! options). A bad flag is a [`UsageError`] (exit code 2) that names the flag.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::engine::kernels::Isa;
use candle_core::Device;

use super::args::{BenchArgs, RunArgs, SlurmArgs, SpreadArg, TableArgs};
use crate::report::{Spread, TableOptions};

/// A bad command-line value (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct UsageError(pub(crate) String);

fn usage<T>(message: String) -> Result<T, UsageError> {
    Err(UsageError(message))
}

/// The machine's logical CPUs.
pub(crate) fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// The most threads (or jobs) a flag may ask for.
pub(crate) const MAX_THREADS: usize = 1024;

/// `--threads N`: 1 to [`MAX_THREADS`].
fn threads_flag(t: usize) -> Result<usize, UsageError> {
    match t {
        0 => usage("--threads: expected at least 1".into()),
        t if t > MAX_THREADS => usage(format!("--threads {t}: expected at most {MAX_THREADS}")),
        t => Ok(t),
    }
}

/// `--kernels NAME`: kernels this CPU runs.
fn kernels_flag(name: &str) -> Result<Isa, UsageError> {
    match Isa::from_name(name) {
        Some(isa) if isa.runs_here() => Ok(isa),
        Some(isa) => usage(format!(
            "--kernels {isa}: this CPU cannot run them (it runs: {})",
            Isa::available_names()
        )),
        None => usage(format!(
            "--kernels {name}: expected avx512f, avx2+fma or scalar"
        )),
    }
}

/// `clbench run`, checked.
pub(crate) struct RunSettings {
    /// The experiment config.
    pub(crate) config: PathBuf,
    /// `--out`, if given (else `results/<experiment name>`).
    pub(crate) out: Option<PathBuf>,
    /// Seeds replacing the config's.
    pub(crate) seeds: Option<Vec<u64>>,
    /// The methods to train (all when `None`), checked against the config once it is loaded.
    pub(crate) methods: Option<Vec<String>>,
    /// Runs trained at once.
    pub(crate) jobs: usize,
    /// Threads of each run.
    pub(crate) threads: usize,
    /// The product kernels (`None`: the fastest this CPU runs).
    pub(crate) kernels: Option<Isa>,
    /// Where tensors live.
    pub(crate) device: Device,
    /// Share `I` of `N` of the runs.
    pub(crate) shard: Option<(usize, usize)>,
    /// List the runs only.
    pub(crate) dry_run: bool,
    /// How tables are written (the baseline is resolved once the store is known).
    pub(crate) tables: TableArgs,
}

impl RunSettings {
    /// Checks `clbench run`'s flags. Threads per run default to the cores shared among the
    /// jobs.
    pub(crate) fn new(args: RunArgs) -> Result<RunSettings, UsageError> {
        let jobs = match args.jobs {
            0 => return usage("--jobs: expected at least 1".into()),
            j => j,
        };
        if jobs > MAX_THREADS {
            return usage(format!("--jobs {jobs}: expected at most {MAX_THREADS}"));
        }
        let threads = match args.threads {
            Some(t) => threads_flag(t)?,
            None => (cores() / jobs).max(1),
        };
        if let Some(seeds) = &args.seeds {
            if seeds.is_empty() {
                return usage("--seeds: expected at least one seed".into());
            }
            if let Some(d) = seeds
                .iter()
                .enumerate()
                .find(|(i, s)| seeds[..*i].contains(s))
            {
                return usage(format!("--seeds: seed {} is listed twice", d.1));
            }
        }
        if let Some(methods) = &args.methods {
            if let Some(m) = methods.iter().find(|m| m.trim().is_empty()) {
                return usage(format!("--methods: expected method names, got {m:?}"));
            }
            if let Some(d) = methods
                .iter()
                .enumerate()
                .find(|(i, m)| methods[..*i].contains(m))
            {
                return usage(format!("--methods: method {} is listed twice", d.1));
            }
        }
        check_table_args(&args.tables)?;
        Ok(RunSettings {
            device: device(&args.device)?,
            shard: shard(args.shard.as_deref())?,
            config: args.config,
            out: args.out,
            seeds: args.seeds,
            methods: args.methods,
            jobs,
            threads,
            kernels: args.kernels.as_deref().map(kernels_flag).transpose()?,
            dry_run: args.dry_run,
            tables: args.tables,
        })
    }
}

/// `clbench bench`, checked.
pub(crate) struct BenchSettings {
    /// One JSON object per line.
    pub(crate) json: bool,
    /// Time measured per configuration.
    pub(crate) duration: Duration,
    /// Threads of the single-run measurements.
    pub(crate) threads: usize,
    /// Skip the peak-RSS measurement.
    pub(crate) skip_rss: bool,
    /// Which models to measure.
    pub(crate) models: super::args::BenchModelsArg,
    /// The product kernels to measure (`None`: the fastest this CPU runs).
    pub(crate) kernels: Option<Isa>,
    /// Measure each strategy's step cost instead.
    pub(crate) strategies: bool,
}

impl BenchSettings {
    /// Checks `clbench bench`'s flags.
    pub(crate) fn new(args: &BenchArgs) -> Result<BenchSettings, UsageError> {
        if !(args.seconds > 0.0 && args.seconds.is_finite()) {
            return usage(format!(
                "--seconds {}: expected a positive number",
                args.seconds
            ));
        }
        let threads = match args.threads {
            Some(t) => threads_flag(t)?,
            None => cores(),
        };
        let kernels = args.kernels.as_deref().map(kernels_flag).transpose()?;
        Ok(BenchSettings {
            json: args.json,
            duration: Duration::from_secs_f64(args.seconds),
            threads,
            skip_rss: args.skip_rss,
            models: args.models,
            kernels,
            strategies: args.strategies,
        })
    }
}

/// Checks `clbench slurm`'s flags that do not depend on the experiment.
pub(crate) fn check_slurm_args(args: &SlurmArgs) -> Result<(), UsageError> {
    if !valid_slurm_time(&args.time) {
        return usage(format!(
            "--time `{}`: expected Slurm's [D-]HH:MM:SS",
            args.time
        ));
    }
    if args.cpus_per_task == 0 {
        return usage("--cpus-per-task: expected at least 1".into());
    }
    if args.shards == Some(0) {
        return usage("--shards: expected at least 1".into());
    }
    Ok(())
}

/// Whether `t` is a Slurm time limit, `[D-]HH:MM:SS` (or a shorter `MM:SS`, `MM`).
pub(crate) fn valid_slurm_time(t: &str) -> bool {
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

fn check_table_args(args: &TableArgs) -> Result<(), UsageError> {
    if !(args.alpha > 0.0 && args.alpha < 1.0) {
        return usage(format!(
            "--alpha {}: expected a number in (0, 1)",
            args.alpha
        ));
    }
    if args.digits > 6 {
        return usage(format!("--digits {}: expected at most 6", args.digits));
    }
    let (lo, hi) = crate::report::plots::WIDTH_RANGE_IN;
    if !(args.figure_width >= lo && args.figure_width <= hi) {
        return usage(format!(
            "--figure-width {}: expected a width in inches from {lo} to {hi} (7: two columns, 3.5: one)",
            args.figure_width
        ));
    }
    Ok(())
}

/// Table options from the flags; without `--baseline`, the first method of the experiment
/// recorded in the store `dir`.
pub(crate) fn table_options(args: &TableArgs, dir: &Path) -> Result<TableOptions, UsageError> {
    check_table_args(args)?;
    Ok(TableOptions {
        spread: match args.spread {
            SpreadArg::Sd => Spread::Sd,
            SpreadArg::Sem => Spread::Sem,
        },
        digits: args.digits,
        baseline: args.baseline.clone().or_else(|| {
            let found = crate::report::default_baseline(dir);
            if found.is_none() && dir.join(crate::experiment::store::EXPERIMENT_FILE).exists() {
                tracing::warn!(
                    "{}: cannot be read; no default baseline, so no significance markers (give --baseline)",
                    dir.join(crate::experiment::store::EXPERIMENT_FILE).display()
                );
            }
            found
        }),
        alpha: args.alpha,
        caption: args.caption.clone(),
        label: args.label.clone(),
        figure_width_in: args.figure_width,
    })
}

/// `--device`: `cpu`, or `cuda[:N]` in a build with CUDA.
pub(crate) fn device(name: &str) -> Result<Device, UsageError> {
    match name {
        "cpu" => Ok(Device::Cpu),
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
                return usage(format!(
                    "--device {name}: this clbench was built without CUDA; rebuild with `--features cuda`"
                ));
            }
            Device::new_cuda(ordinal).map_err(|e| UsageError(format!("--device {name}: {e}")))
        }
        other => usage(format!("--device {other}: expected cpu or cuda[:N]")),
    }
}

/// `I/N` from `--shard`, else from Slurm's array variables when set.
pub(crate) fn shard(arg: Option<&str>) -> Result<Option<(usize, usize)>, UsageError> {
    let parse = |text: &str, what: &str| -> Result<(usize, usize), UsageError> {
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
            return Err(bad());
        }
        Ok((i, n))
    };
    if let Some(a) = arg {
        return parse(a, "--shard").map(Some);
    }
    // A variable that is set but not a number would otherwise make every array task run every
    // run: an error instead.
    let var = |k: &str| -> Result<Option<usize>, UsageError> {
        match std::env::var(k) {
            Err(_) => Ok(None),
            Ok(v) => v.trim().parse::<usize>().map(Some).map_err(|_| {
                UsageError(format!(
                    "{k}=`{v}`: expected a whole number (or pass --shard I/N)"
                ))
            }),
        }
    };
    match (var("SLURM_ARRAY_TASK_ID")?, var("SLURM_ARRAY_TASK_COUNT")?) {
        (Some(id), Some(count)) => {
            let index = id.saturating_sub(var("SLURM_ARRAY_TASK_MIN")?.unwrap_or(0));
            parse(&format!("{index}/{count}"), "Slurm array task").map(Some)
        }
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slurm_times() {
        for ok in ["04:00:00", "1-00:00:00", "30", "10:00"] {
            assert!(valid_slurm_time(ok), "{ok}");
        }
        for bad in ["", "4h", "1-", "1:2:3:4", "-1:00"] {
            assert!(!valid_slurm_time(bad), "{bad}");
        }
    }

    #[test]
    fn shards_are_checked() {
        assert_eq!(shard(Some("1/4")).unwrap(), Some((1, 4)));
        for bad in ["4/4", "1", "a/2", "0/0"] {
            assert!(shard(Some(bad)).is_err(), "{bad}");
        }
    }
}
