//! Reports: polars frames built from the run store (the one representation every table and
//! plot reads), and their exports — CSV, Parquet and JSON frames, Markdown and LaTeX tables,
//! PNG, SVG and PDF figures.

pub mod export;
mod fonts;
pub mod frames;
pub mod grapes_effect;
pub mod pdf;
pub mod plots;
pub mod stats;
pub mod tables;

use std::path::{Path, PathBuf};

use polars::prelude::*;

pub use export::{write_all_formats, write_frame, ExportError, FrameFormat};
pub use frames::{
    accuracy_frame, average_accuracy_frame, comparison_frame, console_columns, curves_frame,
    metrics_frame, summary_frame, timing_frame,
};
pub use tables::{Spread, TableOptions};

use crate::experiment::store::{write_atomic, RunStore, StoreError, EXPERIMENT_FILE};

/// What can go wrong while building a report.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The directory holds no complete run.
    #[error("{}: no complete runs found under {}/runs (run `clbench run <config> --out {}` first)", dir.display(), dir.display(), dir.display())]
    NoRuns { dir: PathBuf },
    /// The store could not be read.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An export failed.
    #[error(transparent)]
    Export(#[from] ExportError),
    /// The stores hold runs of two configurations under one method name.
    #[error(transparent)]
    Conflict(#[from] Box<crate::experiment::ConfigurationConflict>),
    /// A stored run names its stream with a name that cannot be part of a file name (a
    /// record written by hand or by another tool: `clbench run` refuses such a name).
    #[error("{dir}: run {run} names its stream `{name}`, which cannot name figure files: {why}", dir = dir.display())]
    UnsafeStreamName {
        /// The store holding the run.
        dir: PathBuf,
        /// The run.
        run: String,
        /// The name, escaped and shortened.
        name: String,
        /// What the name breaks.
        why: String,
    },
    /// Two stores hold one run with different results.
    #[error("run {run} is stored twice with different results: in {} and in {} (a merged report would depend on the order of the stores; remove the copy that is wrong)", first.display(), second.display())]
    DivergentCopies {
        /// The run id.
        run: String,
        /// The store read first.
        first: PathBuf,
        /// The store that disagrees with it.
        second: PathBuf,
    },
    /// A frame could not be built.
    #[error("building the report frames: {0}")]
    Frame(#[from] PolarsError),
}

impl crate::error::InputError for ReportError {
    /// Whether the error is bad input (no runs) rather than a runtime failure.
    fn is_input_error(&self) -> bool {
        matches!(
            self,
            ReportError::NoRuns { .. }
                | ReportError::Conflict(_)
                | ReportError::UnsafeStreamName { .. }
                | ReportError::DivergentCopies { .. }
        )
    }
}

/// Everything a report produced.
#[derive(Debug)]
pub struct Report {
    /// Runs included.
    pub runs: usize,
    /// Incomplete or unreadable runs skipped, with why.
    pub warnings: Vec<String>,
    /// The frames.
    pub metrics: DataFrame,
    /// Summary over seeds.
    pub summary: DataFrame,
    /// Paired comparisons.
    pub comparison: DataFrame,
    /// The Markdown table.
    pub markdown: String,
    /// Result files written: tables and figures that depend only on the stored records.
    pub files: Vec<PathBuf>,
    /// Machine-dependent files written (`tables/timing.*`: wall times, throughput, platforms),
    /// not part of the results: `clbench report --check` does not compare them.
    pub timing_files: Vec<PathBuf>,
}

/// The default baseline: the first method of the experiment recorded in the store, if known.
pub fn default_baseline(dir: &Path) -> Option<String> {
    RunStore::new(dir).experiment()?.methods.into_iter().next()
}

/// The runs a report is built from: every complete run of the stores, merged, checked.
#[derive(Debug)]
pub struct LoadedRuns {
    /// The runs, each once, in the order the stores list them.
    pub runs: Vec<crate::experiment::StoredRun>,
    /// Incomplete or unreadable runs skipped, with why.
    pub warnings: Vec<String>,
    /// The method names in the order the stores' experiments planned them (the first store's
    /// config first; `experiment.yaml`), which tables and figures follow.
    pub order: Vec<String>,
}

impl LoadedRuns {
    /// The method names of the runs (`name[sweep tag]`), each once, in run order.
    pub fn methods(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for run in &self.runs {
            if !out.contains(&run.spec.method.name.as_str()) {
                out.push(&run.spec.method.name);
            }
        }
        out
    }
}

/// Reads the complete runs of the stores `sources` and merges them: a run held by several
/// stores counts once, and only where every store holds the same results for it (two
/// different records under one id would make the tables depend on the order of the stores).
/// Fails when no run is complete, when two runs of one method name have different
/// configurations, or when a record names its stream with a name that cannot name files.
pub fn load_runs(sources: &[PathBuf]) -> Result<LoadedRuns, ReportError> {
    let mut runs: Vec<crate::experiment::StoredRun> = Vec::new();
    let mut origins: Vec<&PathBuf> = Vec::new();
    let mut warnings = Vec::new();
    let mut order: Vec<String> = Vec::new();
    for source in sources {
        let planned = RunStore::new(source).experiment().map(|e| e.methods);
        if planned.is_none() && source.join(EXPERIMENT_FILE).exists() {
            warnings.push(format!(
                "{}: cannot be read; figures list this store's methods by name instead of in \
                 its plan order",
                source.join(EXPERIMENT_FILE).display()
            ));
        }
        for method in planned.unwrap_or_default() {
            if !order.contains(&method) {
                order.push(method);
            }
        }
        let (found, w) = RunStore::new(source).load()?;
        warnings.extend(w);
        for run in found {
            let name = &run.spec.stream_name;
            if let Err(e) = crate::validate::path_name("stream", "a stream name", name, &[]) {
                return Err(ReportError::UnsafeStreamName {
                    dir: source.clone(),
                    run: run.id.clone(),
                    name: crate::validate::short_excerpt(name),
                    why: e
                        .message
                        .rsplit(": ")
                        .next()
                        .unwrap_or_default()
                        .to_string(),
                });
            }
            match runs.iter().position(|r| r.id == run.id) {
                None => {
                    runs.push(run);
                    origins.push(source);
                }
                Some(i) if same_results(&runs[i], &run) => {}
                Some(i) => {
                    return Err(ReportError::DivergentCopies {
                        run: run.id.clone(),
                        first: origins[i].clone(),
                        second: source.clone(),
                    })
                }
            }
        }
    }
    crate::experiment::check_configurations(
        sources.first().map_or(Path::new("."), PathBuf::as_path),
        runs.iter().map(|r| (r.id.as_str(), &r.spec)),
    )?;
    if runs.is_empty() {
        return Err(ReportError::NoRuns {
            dir: sources.first().cloned().unwrap_or_default(),
        });
    }
    Ok(LoadedRuns {
        runs,
        warnings,
        order,
    })
}

/// Whether two stored copies of one run hold the same results: outcome, accuracy and loss
/// matrices, untrained baselines and learning curves, bit for bit (wall times and the
/// platform may differ: the same run on two machines gives the same numbers).
fn same_results(a: &crate::experiment::StoredRun, b: &crate::experiment::StoredRun) -> bool {
    let results = |r: &crate::train::RunRecord| {
        serde_json::to_string(&(
            &r.status,
            &r.accuracy,
            r.loss
                .iter()
                .map(|row| row.iter().map(|v| v.to_bits()).collect::<Vec<_>>())
                .collect::<Vec<_>>(),
            &r.baseline_accuracy,
            &r.curves,
            r.parameters,
        ))
        .unwrap_or_default()
    };
    results(&a.record) == results(&b.record)
}

/// Rebuilds every frame, table and figure from the run stores in `sources` (merged as
/// [`load_runs`] merges them) into `dir`, without training: see [`write_report`].
pub fn build_report(
    sources: &[PathBuf],
    dir: &Path,
    opts: &TableOptions,
) -> Result<Report, ReportError> {
    write_report(load_runs(sources)?, dir, opts)
}

/// Every frame a report is made of, built from the stored runs.
struct Frames {
    accuracy: DataFrame,
    metrics: DataFrame,
    summary: DataFrame,
    comparison: DataFrame,
    average_accuracy: DataFrame,
    learning_curves: DataFrame,
    grapes_effect: DataFrame,
    timing: DataFrame,
}

impl Frames {
    /// The frames of `runs`, and the warnings of GRAPES pairs that cannot be formed.
    fn build(runs: &[crate::experiment::StoredRun]) -> Result<(Frames, Vec<String>), ReportError> {
        let metrics = metrics_frame(runs)?;
        let (pairs, unpaired) = grapes_effect::grapes_pairs(runs);
        let frames = Frames {
            accuracy: accuracy_frame(runs)?,
            summary: summary_frame(&metrics)?,
            comparison: comparison_frame(&metrics)?,
            average_accuracy: average_accuracy_frame(runs)?,
            learning_curves: curves_frame(runs)?,
            grapes_effect: grapes_effect::grapes_effect_frame(&pairs, &metrics)?,
            timing: timing_frame(runs)?,
            metrics,
        };
        Ok((frames, unpaired))
    }

    /// The streams of the summary, in its order.
    fn streams(&self) -> Result<Vec<String>, ReportError> {
        let mut s: Vec<String> = self
            .summary
            .column("stream")?
            .str()?
            .iter()
            .flatten()
            .map(str::to_string)
            .collect();
        s.dedup();
        Ok(s)
    }
}

/// Writes every frame, table and figure of `loaded` into `dir`:
/// `metrics.csv`, `summary.md` at the top; `tables/` (every frame as CSV, Parquet and JSON, plus
/// `summary.md` and `summary.tex`); `figures/` (PNG, SVG and PDF, laid out by
/// [`plots::Look`]: `opts.figure_width_in` wide, methods in the stores' plan order).
pub fn write_report(
    loaded: LoadedRuns,
    dir: &Path,
    opts: &TableOptions,
) -> Result<Report, ReportError> {
    let LoadedRuns {
        runs,
        mut warnings,
        order,
    } = loaded;
    let look = plots::Look {
        width_in: opts.figure_width_in,
        order,
    };
    warnings.extend(platform_warnings(&runs));
    let (frames, unpaired) = Frames::build(&runs)?;
    warnings.extend(unpaired);
    let (mut files, timing_files) = write_frames(&frames, dir)?;
    let markdown = tables::markdown(&frames.summary, &frames.comparison, opts)?;
    files.extend(write_texts(&frames, &markdown, dir, opts)?);
    files.extend(write_plots(&frames, dir, opts, &look)?);
    let Frames {
        metrics,
        summary,
        comparison,
        ..
    } = frames;
    Ok(Report {
        runs: runs.len(),
        warnings,
        metrics,
        summary,
        comparison,
        markdown,
        files,
        timing_files,
    })
}

/// Every frame in every format under `dir/tables/`, and `metrics.csv` at the top; returns the
/// result files and, apart, the machine-dependent timing files.
fn write_frames(frames: &Frames, dir: &Path) -> Result<(Vec<PathBuf>, Vec<PathBuf>), ReportError> {
    let tables_dir = dir.join("tables");
    let in_formats = |name: &str| -> Vec<PathBuf> {
        FrameFormat::ALL
            .iter()
            .map(|f| tables_dir.join(format!("{name}.{}", f.extension())))
            .collect()
    };
    let mut files = Vec::new();
    for (name, df) in [
        ("accuracy", &frames.accuracy),
        ("metrics", &frames.metrics),
        ("summary", &frames.summary),
        ("comparison", &frames.comparison),
        ("average_accuracy", &frames.average_accuracy),
        ("learning_curves", &frames.learning_curves),
        ("grapes_effect", &frames.grapes_effect),
    ] {
        write_all_formats(df, &tables_dir, name)?;
        files.extend(in_formats(name));
    }
    // Machine-dependent: its own files, apart from the results (see the README's
    // Reproducibility section).
    write_all_formats(&frames.timing, &tables_dir, "timing")?;
    write_frame(&frames.metrics, &dir.join("metrics.csv"), FrameFormat::Csv)?;
    files.push(dir.join("metrics.csv"));
    Ok((files, in_formats("timing")))
}

/// The Markdown and LaTeX tables: the summary (`markdown`, already rendered) under `tables/`
/// and at the top, and the GRAPES effect when the runs hold methods with and without it.
fn write_texts(
    frames: &Frames,
    markdown: &str,
    dir: &Path,
    opts: &TableOptions,
) -> Result<Vec<PathBuf>, ReportError> {
    let tables_dir = dir.join("tables");
    let latex = tables::latex(&frames.summary, &frames.comparison, opts)?;
    let mut texts = vec![
        (tables_dir.join("summary.md"), markdown.to_string()),
        (tables_dir.join("summary.tex"), latex),
        (dir.join("summary.md"), markdown.to_string()),
    ];
    if frames.grapes_effect.height() > 0 {
        texts.push((
            tables_dir.join("grapes_effect.md"),
            grapes_effect::markdown(&frames.grapes_effect, opts)?,
        ));
        texts.push((
            tables_dir.join("grapes_effect.tex"),
            grapes_effect::latex(&frames.grapes_effect, opts)?,
        ));
    }
    let mut files = Vec::new();
    for (path, text) in texts {
        write_atomic(&path, text.as_bytes())?;
        files.push(path);
    }
    Ok(files)
}

/// Every figure under `dir/figures/`: the GRAPES forest plot when there are pairs, then each
/// stream's figures and learning curves.
fn write_plots(
    frames: &Frames,
    dir: &Path,
    opts: &TableOptions,
    look: &plots::Look,
) -> Result<Vec<PathBuf>, ReportError> {
    let figures = dir.join("figures");
    let mut files = Vec::new();
    if frames.grapes_effect.height() > 0 {
        files.extend(plots::write_grapes_effect(
            &figures,
            &frames.grapes_effect,
            opts.alpha,
            look,
        )?);
    }
    for stream in frames.streams()? {
        files.extend(plots::write_figures(
            &figures,
            &stream,
            &frames.accuracy,
            &frames.metrics,
            &frames.summary,
            opts.spread,
            look,
        )?);
        files.extend(plots::write_learning_curves(
            &figures,
            &stream,
            &frames.learning_curves,
            look,
        )?);
    }
    Ok(files)
}

/// One warning per (stream, method) group whose platform-dependent runs (candle's kernels,
/// see [`crate::platform`]) ran on more than one platform: their numbers may differ by
/// platform alone. Portable runs never warn; runs without a recorded platform are not judged.
fn platform_warnings(runs: &[crate::experiment::StoredRun]) -> Vec<String> {
    use std::collections::{BTreeMap, BTreeSet};
    let mut groups: BTreeMap<(&str, &str), BTreeSet<String>> = BTreeMap::new();
    for run in runs {
        if let Some(f) = run.record.platform.as_ref().and_then(|p| p.fingerprint()) {
            groups
                .entry((&run.spec.stream_name, &run.spec.method.name))
                .or_default()
                .insert(f);
        }
    }
    groups
        .into_iter()
        .filter(|(_, platforms)| platforms.len() > 1)
        .map(|((stream, method), platforms)| {
            format!(
                "{stream} / {method}: runs on candle's platform-dependent kernels come from {}                  platforms ({}); their numbers can differ by platform alone",
                platforms.len(),
                platforms.into_iter().collect::<Vec<_>>().join("; ")
            )
        })
        .collect()
}

/// A plain-text table of the summary frame: one row per (stream, method), `mean ± sd` per metric.
pub fn summary_text(summary: &DataFrame) -> PolarsResult<String> {
    let methods = summary.column("method")?.str()?.clone();
    let n = summary.column("n")?.u32()?.clone();
    let mut header = vec!["method".to_string(), "n".to_string()];
    let mut cols: Vec<Vec<String>> = Vec::new();
    for column in console_columns() {
        let (metric, scale, digits) = (column.name, column.scale, column.digits);
        header.push(column.label.to_string());
        let mean = summary.column(&format!("{metric}_mean"))?.f64()?.clone();
        let sd = summary.column(&format!("{metric}_sd"))?.f64()?.clone();
        cols.push(
            mean.iter()
                .zip(sd.iter())
                .map(|(m, s)| match (m, s) {
                    (Some(m), Some(s)) => {
                        format!("{:.*} ± {:.*}", digits, m * scale, digits, s * scale)
                    }
                    (Some(m), None) => format!("{:.*}", digits, m * scale),
                    _ => "—".into(),
                })
                .collect(),
        );
    }
    let rows: Vec<Vec<String>> = (0..summary.height())
        .map(|i| {
            let mut r = vec![
                methods.get(i).unwrap_or("").to_string(),
                n.get(i).unwrap_or(0).to_string(),
            ];
            r.extend(cols.iter().map(|c| c[i].clone()));
            r
        })
        .collect();
    let widths: Vec<usize> = (0..header.len())
        .map(|c| {
            rows.iter()
                .map(|r| r[c].chars().count())
                .chain([header[c].chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: &[String]| -> String {
        cells
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(i, (c, w))| {
                if i == 0 {
                    format!("{c:<w$}")
                } else {
                    format!("{c:>w$}")
                }
            })
            .collect::<Vec<_>>()
            .join("  ")
    };
    let mut out = line(&header);
    out.push('\n');
    out.push_str(
        &widths
            .iter()
            .map(|w| "-".repeat(*w))
            .collect::<Vec<_>>()
            .join("  "),
    );
    for r in &rows {
        out.push('\n');
        out.push_str(&line(r));
    }
    Ok(out)
}
