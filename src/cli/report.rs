//! `clbench report` and `clbench metrics`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;

use crate::{MetricsArgs, MetricsFormat, SpreadArg, TableArgs, UsageError};

pub(crate) fn table_options(
    args: &TableArgs,
    dir: &std::path::Path,
) -> Result<clbench::report::TableOptions> {
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

pub(crate) fn metrics_command(args: MetricsArgs) -> Result<ExitCode> {
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
