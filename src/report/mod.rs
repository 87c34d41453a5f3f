//! Reports: polars frames built from the run store (the one representation every table and
//! plot reads), and their exports — CSV, Parquet and JSON frames, Markdown and LaTeX tables,
//! PNG and SVG figures.

pub mod export;
pub mod frames;
pub mod grapes_effect;
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

use crate::experiment::store::{write_atomic, RunStore, StoreError};

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
    /// A frame could not be built.
    #[error("building the report frames: {0}")]
    Frame(#[from] PolarsError),
}

impl crate::error::InputError for ReportError {
    /// Whether the error is bad input (no runs) rather than a runtime failure.
    fn is_input_error(&self) -> bool {
        matches!(self, ReportError::NoRuns { .. } | ReportError::Conflict(_))
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

/// Rebuilds every frame, table and figure from the run stores in `sources` (merged; a run in
/// several stores counts once) into `dir`, without training:
/// `metrics.csv`, `summary.md` at the top; `tables/` (every frame as CSV, Parquet and JSON, plus
/// `summary.md` and `summary.tex`); `figures/` (PNG and SVG).
pub fn build_report(
    sources: &[PathBuf],
    dir: &Path,
    opts: &TableOptions,
) -> Result<Report, ReportError> {
    let mut runs: Vec<crate::experiment::StoredRun> = Vec::new();
    let mut warnings = Vec::new();
    for source in sources {
        let (found, w) = RunStore::new(source).load()?;
        warnings.extend(w);
        for run in found {
            if !runs.iter().any(|r| r.id == run.id) {
                runs.push(run);
            }
        }
    }
    crate::experiment::check_configurations(
        sources.first().map_or(dir, PathBuf::as_path),
        runs.iter().map(|r| (r.id.as_str(), &r.spec)),
    )?;
    if runs.is_empty() {
        return Err(ReportError::NoRuns {
            dir: sources
                .first()
                .cloned()
                .unwrap_or_else(|| dir.to_path_buf()),
        });
    }
    warnings.extend(platform_warnings(&runs));
    let accuracy = accuracy_frame(&runs)?;
    let metrics = metrics_frame(&runs)?;
    let summary = summary_frame(&metrics)?;
    let comparison = comparison_frame(&metrics)?;
    let curves = average_accuracy_frame(&runs)?;
    let learning = curves_frame(&runs)?;
    let (pairs, unpaired) = grapes_effect::grapes_pairs(&runs);
    warnings.extend(unpaired);
    let grapes_effect = grapes_effect::grapes_effect_frame(&pairs, &metrics)?;
    let tables_dir = dir.join("tables");
    let mut files = Vec::new();
    for (name, df) in [
        ("accuracy", &accuracy),
        ("metrics", &metrics),
        ("summary", &summary),
        ("comparison", &comparison),
        ("average_accuracy", &curves),
        ("learning_curves", &learning),
        ("grapes_effect", &grapes_effect),
    ] {
        write_all_formats(df, &tables_dir, name)?;
        files.extend(
            FrameFormat::ALL
                .iter()
                .map(|f| tables_dir.join(format!("{name}.{}", f.extension()))),
        );
    }
    // Machine-dependent: its own files, apart from the results (see the README's
    // Reproducibility section).
    write_all_formats(&timing_frame(&runs)?, &tables_dir, "timing")?;
    let timing_files = FrameFormat::ALL
        .iter()
        .map(|f| tables_dir.join(format!("timing.{}", f.extension())))
        .collect();
    write_frame(&metrics, &dir.join("metrics.csv"), FrameFormat::Csv)?;
    files.push(dir.join("metrics.csv"));
    let markdown = tables::markdown(&summary, &comparison, opts)?;
    let latex = tables::latex(&summary, &comparison, opts)?;
    for (path, text) in [
        (tables_dir.join("summary.md"), &markdown),
        (tables_dir.join("summary.tex"), &latex),
        (dir.join("summary.md"), &markdown),
    ] {
        write_atomic(&path, text.as_bytes())?;
        files.push(path);
    }
    // What GRAPES does to each method, when the runs hold methods with and without it.
    if grapes_effect.height() > 0 {
        for (path, text) in [
            (
                tables_dir.join("grapes_effect.md"),
                grapes_effect::markdown(&grapes_effect, opts)?,
            ),
            (
                tables_dir.join("grapes_effect.tex"),
                grapes_effect::latex(&grapes_effect, opts)?,
            ),
        ] {
            write_atomic(&path, text.as_bytes())?;
            files.push(path);
        }
        files.extend(plots::write_grapes_effect(
            &dir.join("figures"),
            &grapes_effect,
            opts.alpha,
        )?);
    }
    let streams: Vec<String> = {
        let mut s: Vec<String> = summary
            .column("stream")?
            .str()?
            .iter()
            .flatten()
            .map(str::to_string)
            .collect();
        s.dedup();
        s
    };
    for stream in streams {
        files.extend(plots::write_figures(
            &dir.join("figures"),
            &stream,
            &accuracy,
            &metrics,
            &summary,
            opts.spread,
        )?);
        files.extend(plots::write_learning_curves(
            &dir.join("figures"),
            &stream,
            &learning,
        )?);
    }
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
