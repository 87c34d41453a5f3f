//! `clbench report` and `clbench metrics`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Result;

use super::args::{MetricsArgs, MetricsFormat, ReportArgs, TableArgs};
use super::settings::{table_options, UsageError};

/// `clbench report`: rebuild every table and figure of one or more stores.
pub(crate) fn report_command(args: ReportArgs) -> Result<ExitCode> {
    for dir in &args.dirs {
        if !dir.is_dir() {
            return Err(UsageError(format!(
                "{}: not a results directory (expected a directory holding runs/)",
                dir.display()
            ))
            .into());
        }
    }
    let out = args.out.clone().unwrap_or_else(|| args.dirs[0].clone());
    if out.exists() && !out.is_dir() {
        return Err(UsageError(format!("--out {}: not a directory", out.display())).into());
    }
    if args.check {
        return check_report(&args, &out);
    }
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

/// `report --check`: the report rebuilt in a scratch directory, every file compared with its
/// counterpart under `out`.
fn check_report(args: &ReportArgs, out: &Path) -> Result<ExitCode> {
    let scratch = std::env::temp_dir().join(format!("clbench-check-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    let opts = table_options(&args.tables, &args.dirs[0])?;
    let built = clbench::report::build_report(&args.dirs, &scratch, &opts);
    let result = built.map(|report| {
        let mut differing = Vec::new();
        for file in &report.files {
            let rel = file.strip_prefix(&scratch).unwrap_or(file);
            let committed = out.join(rel);
            match std::fs::read(&committed) {
                Err(_) => differing.push(format!("{} (missing)", committed.display())),
                Ok(bytes) if std::fs::read(file).ok().as_ref() != Some(&bytes) => {
                    differing.push(committed.display().to_string())
                }
                Ok(_) => {}
            }
        }
        (report.runs, report.files.len(), differing)
    });
    let _ = std::fs::remove_dir_all(&scratch);
    let (runs, files, differing) = result?;
    if differing.is_empty() {
        println!(
            "{}: all {files} tables and figures regenerate byte for byte from {runs} stored runs",
            out.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    for d in &differing {
        eprintln!("differs: {d}");
    }
    eprintln!(
        "error: {} of {files} files under {} are not what the {runs} stored runs give; `clbench report {}` rewrites them",
        differing.len(),
        out.display(),
        out.display()
    );
    Ok(ExitCode::from(1))
}

/// Builds the report of the stores `dirs` into `out` (tables as `args` say), logging the
/// runs it skipped and a baseline that has no runs.
pub(crate) fn write_report(
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

/// `clbench metrics`: the metrics of one accuracy matrix from a CSV file.
pub(crate) fn metrics_command(args: MetricsArgs) -> Result<ExitCode> {
    let text = clbench::yaml::read_input(&args.matrix).map_err(|e| {
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
