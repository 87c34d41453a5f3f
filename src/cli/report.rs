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
    check_report_output(&args.dirs, &out)?;
    if args.check {
        return check_report(&args, &out);
    }
    let report = write_report(&args.dirs, &out, &args.tables)?;
    say!("{}", report.markdown);
    say!(
        "{} runs; {} files written under {}",
        report.runs,
        report.files.len(),
        out.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Whether `a` and `b` are the same existing folder.
fn same_folder(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// Where a report of `dirs` may be written: into the one store it reads, or into a folder that
/// is new, empty or a report of its own; never into one of several stores it merges (its tables
/// would show runs it does not hold, and the next `clbench run` there would drop them), into
/// another store, or over somebody else's files.
fn check_report_output(dirs: &[PathBuf], out: &Path) -> Result<(), UsageError> {
    if let Some(input) = dirs.iter().find(|d| same_folder(d, out)) {
        if dirs.len() > 1 {
            return Err(UsageError(format!(
                "--out {}: is one of the stores being merged ({}); its tables would show runs it \
                 does not hold: write the merged report into a folder of its own",
                out.display(),
                input.display()
            )));
        }
        return Ok(());
    }
    if crate::experiment::classify_output(out).ok() == Some(crate::experiment::OutputFolder::Store)
    {
        return Err(UsageError(format!(
            "--out {}: holds runs of its own that this report does not read; its tables would \
             stop matching them: write the report into a folder of its own",
            out.display()
        )));
    }
    super::experiment::refuse_foreign_output(out, "report")
}

/// The stores' runs, with an explicit `--baseline` that names no method of them refused (a
/// typo would silently drop every significance marker).
fn load_checked(dirs: &[PathBuf], args: &TableArgs) -> Result<crate::report::LoadedRuns> {
    let loaded = crate::report::load_runs(dirs)?;
    if let Some(b) = &args.baseline {
        let methods = loaded.methods();
        if !methods.contains(&b.as_str()) {
            return Err(UsageError(format!(
                "--baseline {b}: no run of that method in {} (methods: {})",
                dirs.iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                methods.join(", ")
            ))
            .into());
        }
    }
    Ok(loaded)
}

/// `report --check`: the report rebuilt in a scratch directory, every file compared with its
/// counterpart under `out`; files under `out`'s `tables/` and `figures/` that the report would
/// not write are stale and fail the check too.
fn check_report(args: &ReportArgs, out: &Path) -> Result<ExitCode> {
    let scratch = super::Scratch::new("clbench-check")?;
    let opts = table_options(&args.tables, &args.dirs[0])?;
    let built = load_checked(&args.dirs, &args.tables)
        .and_then(|loaded| Ok(crate::report::write_report(loaded, scratch.path(), &opts)?));
    let report = built?;
    for w in &report.warnings {
        tell!("warning: {w}");
    }
    let mut differing = Vec::new();
    let mut expected = std::collections::BTreeSet::new();
    for file in &report.files {
        let rel = file.strip_prefix(scratch.path()).unwrap_or(file);
        let committed = out.join(rel);
        expected.insert(rel.to_path_buf());
        match std::fs::read(&committed) {
            Err(_) => differing.push(format!("{} (missing)", committed.display())),
            Ok(bytes) if std::fs::read(file).ok().as_ref() != Some(&bytes) => {
                differing.push(format!("{} (differs)", committed.display()))
            }
            Ok(_) => {}
        }
    }
    for file in &report.timing_files {
        expected.insert(
            file.strip_prefix(scratch.path())
                .unwrap_or(file)
                .to_path_buf(),
        );
    }
    let stale = stale_files(out, &expected)?;
    let files = report.files.len();
    let runs = report.runs;
    if differing.is_empty() && stale.is_empty() {
        say!(
            "{}: all {files} tables and figures regenerate byte for byte from {runs} stored runs",
            out.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    for d in &differing {
        tell!("differs: {d}");
    }
    for f in &stale {
        tell!("stale: {} (no stored run gives it)", f.display());
    }
    tell!(
        "error: {} of {files} files under {} are not what the {runs} stored runs give{}; `clbench report {}` rewrites them{}",
        differing.len(),
        out.display(),
        if stale.is_empty() {
            String::new()
        } else {
            format!(", and {} files there are stale", stale.len())
        },
        out.display(),
        if stale.is_empty() { "" } else { " (remove the stale ones)" }
    );
    Ok(ExitCode::from(1))
}

/// Files under `out`'s `tables/` and `figures/` that are not in `expected` (paths relative to
/// `out`).
fn stale_files(out: &Path, expected: &std::collections::BTreeSet<PathBuf>) -> Result<Vec<PathBuf>> {
    let mut stale = Vec::new();
    for sub in ["tables", "figures"] {
        let dir = out.join(sub);
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => anyhow::bail!("{}: cannot read the folder: {e}", dir.display()),
        };
        for entry in entries {
            let entry = entry?;
            let rel = Path::new(sub).join(entry.file_name());
            if !expected.contains(&rel) {
                stale.push(out.join(rel));
            }
        }
    }
    stale.sort();
    Ok(stale)
}

/// Builds the report of the stores `dirs` into `out` (tables as `args` say), logging the
/// runs it skipped and a default baseline that has no runs (an explicit `--baseline` without
/// runs is refused before anything is written).
pub(crate) fn write_report(
    dirs: &[PathBuf],
    out: &std::path::Path,
    args: &TableArgs,
) -> Result<crate::report::Report> {
    let opts = table_options(args, &dirs[0])?;
    let loaded = load_checked(dirs, args)?;
    let known = opts
        .baseline
        .as_deref()
        .is_none_or(|b| loaded.methods().contains(&b));
    let report = crate::report::write_report(loaded, out, &opts)?;
    for w in &report.warnings {
        tracing::warn!("{w}");
    }
    if !known {
        tracing::warn!(
            "baseline `{}` has no runs in {}: no significance markers",
            opts.baseline.as_deref().unwrap_or_default(),
            out.display()
        );
    }
    Ok(report)
}

/// `clbench metrics`: the metrics of one accuracy matrix from a CSV file.
pub(crate) fn metrics_command(args: MetricsArgs) -> Result<ExitCode> {
    let text = crate::yaml::read_input(&args.matrix).map_err(|e| {
        UsageError(format!(
            "{}: cannot read the file: {e}",
            args.matrix.display()
        ))
    })?;
    let m = crate::metrics::parse_matrix_csv(&text, &args.matrix)?;
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
            say!("{}", serde_json::Value::Object(obj));
        }
        MetricsFormat::Table => {
            say!(
                "{}: {} tasks (FWT against row 0, the initialization)",
                args.matrix.display(),
                m.tasks()
            );
            for (k, v) in fields {
                match v {
                    Some(v) => say!("{k:<26} {v:>9.4}"),
                    None => say!("{k:<26} {:>9}", "undefined"),
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
