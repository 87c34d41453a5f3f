//! The polars frames of a run store: `accuracy` (long), `metrics` (one row per run) and
//! `summary` (per stream and method over seeds). Runs are sorted by id first, so every frame is
//! independent of the order in which runs were stored or read.

use polars::prelude::*;

use super::stats;
use crate::experiment::{matrix_of, throughput, StoredRun};
use crate::train::RunStatus;

fn sorted(runs: &[StoredRun]) -> Vec<&StoredRun> {
    let mut v: Vec<&StoredRun> = runs.iter().collect();
    v.sort_by(|a, b| a.id.cmp(&b.id));
    v
}

/// Long accuracy table: `run_id, stream, method, seed, after_task, eval_task, accuracy, loss`.
pub fn accuracy_frame(runs: &[StoredRun]) -> PolarsResult<DataFrame> {
    let (mut id, mut stream, mut method, mut seed) = (vec![], vec![], vec![], vec![]);
    let (mut after, mut eval, mut acc, mut loss) = (vec![], vec![], vec![], vec![]);
    for r in sorted(runs) {
        for (i, (row, lrow)) in r.record.accuracy.iter().zip(&r.record.loss).enumerate() {
            for (j, (a, l)) in row.iter().zip(lrow).enumerate() {
                id.push(r.id.clone());
                stream.push(r.spec.stream_name.clone());
                method.push(r.spec.method.name.clone());
                seed.push(r.spec.seed);
                after.push(i as u32);
                eval.push(j as u32 + 1);
                acc.push(*a);
                loss.push(*l);
            }
        }
    }
    DataFrame::new_infer_height(vec![
        Column::new("run_id".into(), id),
        Column::new("stream".into(), stream),
        Column::new("method".into(), method),
        Column::new("seed".into(), seed),
        Column::new("after_task".into(), after),
        Column::new("eval_task".into(), eval),
        Column::new("accuracy".into(), acc),
        Column::new("loss".into(), loss),
    ])
}

/// The metric columns of the metrics frame, in order.
pub const METRIC_COLUMNS: &[&str] = &[
    "acc",
    "bwt",
    "fwt",
    "fwt_init",
    "forgetting",
    "max_forgetting",
    "drop_since_learned",
    "learning_accuracy",
    "avg_incremental_accuracy",
];

/// One row per run: identity, status, every metric (null where undefined or diverged),
/// training time and throughput.
pub fn metrics_frame(runs: &[StoredRun]) -> PolarsResult<DataFrame> {
    let runs = sorted(runs);
    let mut metric_values: Vec<Vec<Option<f64>>> = vec![Vec::new(); METRIC_COLUMNS.len()];
    let (mut seconds, mut sps, mut status, mut dtask, mut dstep) =
        (vec![], vec![], vec![], vec![], vec![]);
    for r in &runs {
        let m = matrix_of(&r.record).map(|m| m.summary());
        let values = [
            m.map(|m| m.acc),
            m.and_then(|m| m.bwt),
            m.and_then(|m| m.fwt),
            m.and_then(|m| m.fwt_init),
            m.and_then(|m| m.forgetting),
            m.and_then(|m| m.max_forgetting),
            m.and_then(|m| m.drop_since_learned),
            m.map(|m| m.learning_accuracy),
            m.map(|m| m.avg_incremental_accuracy),
        ];
        for (col, v) in metric_values.iter_mut().zip(values) {
            col.push(v);
        }
        let (s, t) = throughput(&r.record);
        seconds.push(s);
        sps.push(t);
        match &r.record.status {
            RunStatus::Completed => {
                status.push("completed");
                dtask.push(None);
                dstep.push(None);
            }
            RunStatus::Diverged { task, step, .. } => {
                status.push("diverged");
                dtask.push(Some(*task as u32));
                dstep.push(Some(*step as u32));
            }
        }
    }
    let mut cols = vec![
        Column::new(
            "run_id".into(),
            runs.iter().map(|r| r.id.clone()).collect::<Vec<_>>(),
        ),
        Column::new(
            "stream".into(),
            runs.iter()
                .map(|r| r.spec.stream_name.clone())
                .collect::<Vec<_>>(),
        ),
        Column::new(
            "method".into(),
            runs.iter()
                .map(|r| r.spec.method.name.clone())
                .collect::<Vec<_>>(),
        ),
        Column::new(
            "seed".into(),
            runs.iter().map(|r| r.spec.seed).collect::<Vec<_>>(),
        ),
        Column::new("status".into(), status),
    ];
    for (name, values) in METRIC_COLUMNS.iter().zip(metric_values) {
        cols.push(Column::new((*name).into(), values));
    }
    cols.push(Column::new("train_seconds".into(), seconds));
    cols.push(Column::new("samples_per_s".into(), sps));
    cols.push(Column::new("diverged_task".into(), dtask));
    cols.push(Column::new("diverged_step".into(), dstep));
    DataFrame::new_infer_height(cols)
}

/// The metrics summarized over seeds: (column, label, display scale, display digits).
pub const SUMMARY_METRICS: &[(&str, &str, f64, usize)] = &[
    ("acc", "ACC (%)", 100.0, 2),
    ("bwt", "BWT (%)", 100.0, 2),
    ("fwt", "FWT (%)", 100.0, 2),
    ("forgetting", "forgetting (%)", 100.0, 2),
    ("learning_accuracy", "learning acc (%)", 100.0, 2),
    ("samples_per_s", "samples/s", 1.0, 0),
];

/// Per (stream, method), sorted by stream then method name: `n`
/// (completed runs) and `<metric>_mean`, `<metric>_sd`, `<metric>_sem` for each summary metric.
/// Diverged runs are counted in `diverged` and left out of the statistics.
pub fn summary_frame(metrics: &DataFrame) -> PolarsResult<DataFrame> {
    let stream = metrics.column("stream")?.str()?.clone();
    let method = metrics.column("method")?.str()?.clone();
    let status = metrics.column("status")?.str()?.clone();
    let mut groups: Vec<(String, String)> = Vec::new();
    for i in 0..metrics.height() {
        let key = (
            stream.get(i).unwrap_or("").to_string(),
            method.get(i).unwrap_or("").to_string(),
        );
        if !groups.contains(&key) {
            groups.push(key);
        }
    }
    groups.sort();
    let rows_of = |g: &(String, String)| -> Vec<usize> {
        (0..metrics.height())
            .filter(|&i| stream.get(i) == Some(g.0.as_str()) && method.get(i) == Some(g.1.as_str()))
            .collect()
    };
    let mut cols = vec![
        Column::new(
            "stream".into(),
            groups.iter().map(|g| g.0.clone()).collect::<Vec<_>>(),
        ),
        Column::new(
            "method".into(),
            groups.iter().map(|g| g.1.clone()).collect::<Vec<_>>(),
        ),
    ];
    let completed = |i: &usize| status.get(*i) == Some("completed");
    cols.push(Column::new(
        "n".into(),
        groups
            .iter()
            .map(|g| rows_of(g).iter().filter(|i| completed(i)).count() as u32)
            .collect::<Vec<_>>(),
    ));
    cols.push(Column::new(
        "diverged".into(),
        groups
            .iter()
            .map(|g| rows_of(g).iter().filter(|i| !completed(i)).count() as u32)
            .collect::<Vec<_>>(),
    ));
    for (metric, ..) in SUMMARY_METRICS {
        let values = metrics.column(metric)?.f64()?.clone();
        let (mut means, mut sds, mut sems) = (vec![], vec![], vec![]);
        for g in &groups {
            let xs: Vec<f64> = rows_of(g)
                .into_iter()
                .filter(completed)
                .filter_map(|i| values.get(i))
                .filter(|v| v.is_finite())
                .collect();
            means.push(stats::mean(&xs));
            sds.push(stats::sd(&xs));
            sems.push(stats::sem(&xs));
        }
        cols.push(Column::new(format!("{metric}_mean").into(), means));
        cols.push(Column::new(format!("{metric}_sd").into(), sds));
        cols.push(Column::new(format!("{metric}_sem").into(), sems));
    }
    DataFrame::new_infer_height(cols)
}
