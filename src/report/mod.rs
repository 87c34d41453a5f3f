//! Reports: polars frames built from the run store (the one representation every table and
//! plot reads), and their exports.

pub mod frames;
pub mod stats;

use std::path::Path;

use polars::prelude::*;

pub use frames::{accuracy_frame, metrics_frame, summary_frame, SUMMARY_METRICS};

use crate::experiment::store::{write_atomic, StoreError};

/// Writes a frame as CSV, atomically.
pub fn write_csv(df: &DataFrame, path: &Path) -> Result<(), StoreError> {
    let mut buf = Vec::new();
    let mut df = df.clone();
    CsvWriter::new(&mut buf)
        .include_header(true)
        .finish(&mut df)
        .map_err(|e| StoreError::Corrupt {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
    write_atomic(path, &buf)
}

/// A plain-text table of the summary frame: one row per (stream, method), `mean ± sd` per metric.
pub fn summary_text(summary: &DataFrame) -> PolarsResult<String> {
    let methods = summary.column("method")?.str()?.clone();
    let n = summary.column("n")?.u32()?.clone();
    let mut header = vec!["method".to_string(), "n".to_string()];
    let mut cols: Vec<Vec<String>> = Vec::new();
    for (metric, label, scale, digits) in SUMMARY_METRICS {
        header.push(label.to_string());
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
