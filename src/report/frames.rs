//! The polars frames of a run store: `accuracy` (long), `metrics` (one row per run) and
//! `summary` (per stream and method over seeds). Runs are sorted by id first, so every frame is
//! independent of the order in which runs were stored or read.

use polars::prelude::*;

use super::stats;
use crate::experiment::{matrix_of, throughput, RunSummary, StoredRun};
use crate::metrics::{Column as MetricColumn, METRICS, THROUGHPUT};

fn sorted(runs: &[StoredRun]) -> Vec<&StoredRun> {
    let mut v: Vec<&StoredRun> = runs.iter().collect();
    v.sort_by(|a, b| a.id.cmp(&b.id));
    v
}

/// The identity columns (`run_id, stream, method, seed`) of a long frame, one entry per row.
#[derive(Default)]
struct RunKeys {
    id: Vec<String>,
    stream: Vec<String>,
    method: Vec<String>,
    seed: Vec<u64>,
}

impl RunKeys {
    fn push(&mut self, r: &StoredRun) {
        self.id.push(r.id.clone());
        self.stream.push(r.spec.stream_name.clone());
        self.method.push(r.spec.method.name.clone());
        self.seed.push(r.spec.seed);
    }

    /// The identity columns followed by `rest`.
    fn with(self, rest: Vec<Column>) -> PolarsResult<DataFrame> {
        let mut cols = vec![
            Column::new("run_id".into(), self.id),
            Column::new("stream".into(), self.stream),
            Column::new("method".into(), self.method),
            Column::new("seed".into(), self.seed),
        ];
        cols.extend(rest);
        DataFrame::new_infer_height(cols)
    }
}

/// Long accuracy table: `run_id, stream, method, seed, after_task, eval_task, accuracy, loss`.
pub fn accuracy_frame(runs: &[StoredRun]) -> PolarsResult<DataFrame> {
    let mut keys = RunKeys::default();
    let (mut after, mut eval, mut acc, mut loss) = (vec![], vec![], vec![], vec![]);
    for r in sorted(runs) {
        for (i, (row, lrow)) in r.record.accuracy.iter().zip(&r.record.loss).enumerate() {
            for (j, (a, l)) in row.iter().zip(lrow).enumerate() {
                keys.push(r);
                after.push(i as u32);
                eval.push(j as u32 + 1);
                acc.push(*a);
                loss.push(*l);
            }
        }
    }
    keys.with(vec![
        Column::new("after_task".into(), after),
        Column::new("eval_task".into(), eval),
        Column::new("accuracy".into(), acc),
        Column::new("loss".into(), loss),
    ])
}

/// One row per run: identity, status and every metric (null where undefined or diverged) —
/// the runs' [`RunSummary`]s as a frame. Nothing in it depends on the machine; training time
/// and throughput are in [`timing_frame`].
pub fn metrics_frame(runs: &[StoredRun]) -> PolarsResult<DataFrame> {
    let summaries: Vec<RunSummary> = sorted(runs).into_iter().map(StoredRun::summary).collect();
    let column = |f: &dyn Fn(&RunSummary) -> Option<f64>| -> Vec<Option<f64>> {
        summaries.iter().map(f).collect()
    };
    let mut cols = vec![
        Column::new(
            "run_id".into(),
            summaries
                .iter()
                .map(|s| s.run_id.clone())
                .collect::<Vec<_>>(),
        ),
        Column::new(
            "stream".into(),
            summaries
                .iter()
                .map(|s| s.stream.clone())
                .collect::<Vec<_>>(),
        ),
        Column::new(
            "method".into(),
            summaries
                .iter()
                .map(|s| s.method.clone())
                .collect::<Vec<_>>(),
        ),
        Column::new(
            "seed".into(),
            summaries.iter().map(|s| s.seed).collect::<Vec<_>>(),
        ),
        Column::new(
            "status".into(),
            summaries
                .iter()
                .map(|s| s.status.as_str())
                .collect::<Vec<_>>(),
        ),
    ];
    for metric in &METRICS {
        cols.push(Column::new(
            metric.name.into(),
            column(&|s| s.metric(metric.name)),
        ));
    }
    let as_u32 = |v: Option<usize>| v.map(|v| v as u32);
    cols.push(Column::new(
        "diverged_task".into(),
        summaries
            .iter()
            .map(|s| as_u32(s.diverged_task))
            .collect::<Vec<_>>(),
    ));
    cols.push(Column::new(
        "diverged_step".into(),
        summaries
            .iter()
            .map(|s| as_u32(s.diverged_step))
            .collect::<Vec<_>>(),
    ));
    DataFrame::new_infer_height(cols)
}

/// One row per run: identity, training time and throughput ([`THROUGHPUT`]; null for runs
/// stored without their timing, as committed results are), and where it ran (CPU, kernel
/// instruction set and path, device, threads, commit; null for runs stored before platforms
/// were recorded). Everything here depends on the machine, so the report writes it to its own
/// files (`tables/timing.*`), apart from the results.
pub fn timing_frame(runs: &[StoredRun]) -> PolarsResult<DataFrame> {
    let runs = sorted(runs);
    let text = |name: &str, f: &dyn Fn(&StoredRun) -> Option<String>| {
        Column::new(name.into(), runs.iter().map(|r| f(r)).collect::<Vec<_>>())
    };
    let platform = |f: fn(&crate::platform::Platform) -> String| {
        move |r: &StoredRun| r.record.platform.as_ref().map(f)
    };
    let timing: Vec<Option<(f64, f64)>> = runs
        .iter()
        .map(|r| r.timed.then(|| throughput(&r.record)))
        .collect();
    let [seconds, per_s] = [0, 1].map(|k| {
        timing
            .iter()
            .map(|t| t.map(|(s, p)| if k == 0 { s } else { p }))
            .collect::<Vec<_>>()
    });
    DataFrame::new_infer_height(vec![
        text("run_id", &|r| Some(r.id.clone())),
        text("stream", &|r| Some(r.spec.stream_name.clone())),
        text("method", &|r| Some(r.spec.method.name.clone())),
        Column::new(
            "seed".into(),
            runs.iter().map(|r| r.spec.seed).collect::<Vec<_>>(),
        ),
        Column::new(THROUGHPUT[0].name.into(), seconds),
        Column::new(THROUGHPUT[1].name.into(), per_s),
        text("cpu", &platform(|p| p.cpu.clone())),
        text("kernel_isa", &platform(|p| p.kernel_isa.clone())),
        text("kernel_path", &platform(|p| p.kernel_path.as_str().into())),
        text("device", &platform(|p| p.device.clone())),
        Column::new(
            "threads".into(),
            runs.iter()
                .map(|r| r.record.platform.as_ref().map(|p| p.threads as u32))
                .collect::<Vec<_>>(),
        ),
        text("git_commit", &platform(|p| p.git_commit.clone())),
    ])
}

/// Every column summarized over seeds: the metrics.
pub fn summary_columns() -> impl Iterator<Item = &'static MetricColumn> {
    METRICS.iter()
}

/// The columns shown in the console summary: the headline metrics.
pub fn console_columns() -> impl Iterator<Item = &'static MetricColumn> {
    METRICS.iter().filter(|c| c.headline)
}

/// The runs of one (stream, method) in a metrics frame.
struct Group {
    stream: String,
    method: String,
    /// Row indices of its completed runs.
    completed: Vec<usize>,
    /// How many of its runs diverged.
    diverged: usize,
}

/// (stream, method) groups of a metrics frame, sorted.
fn groups(metrics: &DataFrame) -> PolarsResult<Vec<Group>> {
    let stream = metrics.column("stream")?.str()?.clone();
    let method = metrics.column("method")?.str()?.clone();
    let status = metrics.column("status")?.str()?.clone();
    let mut keys: Vec<(String, String)> = (0..metrics.height())
        .map(|i| {
            (
                stream.get(i).unwrap_or("").to_string(),
                method.get(i).unwrap_or("").to_string(),
            )
        })
        .collect();
    keys.sort();
    keys.dedup();
    Ok(keys
        .into_iter()
        .map(|(s, m)| {
            let rows: Vec<usize> = (0..metrics.height())
                .filter(|&i| stream.get(i) == Some(s.as_str()) && method.get(i) == Some(m.as_str()))
                .collect();
            let completed: Vec<usize> = rows
                .iter()
                .copied()
                .filter(|&i| status.get(i) == Some("completed"))
                .collect();
            Group {
                stream: s,
                method: m,
                diverged: rows.len() - completed.len(),
                completed,
            }
        })
        .collect())
}

/// Per (stream, method), sorted: `n` (completed runs), `diverged`, and for each of
/// [`summary_columns`] `<col>_mean`, `_sd`, `_sem`, `_ci95_low`, `_ci95_high` (Student's t with
/// n−1 degrees of freedom). Diverged runs are counted and left out of the statistics; undefined
/// statistics (n < 2 for the spread) are null.
pub fn summary_frame(metrics: &DataFrame) -> PolarsResult<DataFrame> {
    let groups = groups(metrics)?;
    let mut cols = vec![
        Column::new(
            "stream".into(),
            groups.iter().map(|g| g.stream.clone()).collect::<Vec<_>>(),
        ),
        Column::new(
            "method".into(),
            groups.iter().map(|g| g.method.clone()).collect::<Vec<_>>(),
        ),
        Column::new(
            "n".into(),
            groups
                .iter()
                .map(|g| g.completed.len() as u32)
                .collect::<Vec<_>>(),
        ),
        Column::new(
            "diverged".into(),
            groups.iter().map(|g| g.diverged as u32).collect::<Vec<_>>(),
        ),
    ];
    for metric in summary_columns().map(|c| c.name) {
        let values = metrics.column(metric)?.f64()?.clone();
        let mut out: [Vec<Option<f64>>; 5] = Default::default();
        for group in &groups {
            let xs: Vec<f64> = group
                .completed
                .iter()
                .filter_map(|&i| values.get(i))
                .filter(|v| v.is_finite())
                .collect();
            let m = stats::mean(&xs);
            let ci = stats::ci_half_width(&xs, 0.95);
            out[0].push(m);
            out[1].push(stats::sd(&xs));
            out[2].push(stats::sem(&xs));
            out[3].push(m.zip(ci).map(|(m, c)| m - c));
            out[4].push(m.zip(ci).map(|(m, c)| m + c));
        }
        for (suffix, v) in ["mean", "sd", "sem", "ci95_low", "ci95_high"]
            .iter()
            .zip(out)
        {
            cols.push(Column::new(format!("{metric}_{suffix}").into(), v));
        }
    }
    DataFrame::new_infer_height(cols)
}

/// Every pair of methods on the same stream, per metric, over the seeds both completed:
/// `stream, method_a, method_b, metric, n, mean_diff (a − b), t, p_t (paired t-test),
/// w_plus, p_wilcoxon (signed-rank), wins, ties, losses` (a win: a is better than b on that
/// seed, by the metric's direction).
pub fn comparison_frame(metrics: &DataFrame) -> PolarsResult<DataFrame> {
    let seed = metrics.column("seed")?.u64()?.clone();
    let groups = groups(metrics)?;
    let mut out = ComparisonColumns::default();
    for (i, a) in groups.iter().enumerate() {
        for b in &groups[i + 1..] {
            if a.stream != b.stream {
                continue;
            }
            // Pair runs by seed.
            let pairs: Vec<(usize, usize)> = a
                .completed
                .iter()
                .filter_map(|&ra| {
                    b.completed
                        .iter()
                        .find(|&&rb| seed.get(rb) == seed.get(ra))
                        .map(|&rb| (ra, rb))
                })
                .collect();
            for column in METRICS.iter().filter(|c| c.compared) {
                let metric = column.name;
                let values = metrics.column(metric)?.f64()?.clone();
                let (xa, xb): (Vec<f64>, Vec<f64>) = pairs
                    .iter()
                    .filter_map(|&(ra, rb)| values.get(ra).zip(values.get(rb)))
                    .filter(|(x, y)| x.is_finite() && y.is_finite())
                    .unzip();
                let t = stats::paired_t_test(&xa, &xb);
                let w = stats::wilcoxon_signed_rank(&xa, &xb);
                let sign = if column.higher_is_better() { 1.0 } else { -1.0 };
                let wins = xa
                    .iter()
                    .zip(&xb)
                    .filter(|(x, y)| sign * (*x - *y) > 0.0)
                    .count() as u32;
                let ties = xa.iter().zip(&xb).filter(|(x, y)| x == y).count() as u32;
                out.stream.push(a.stream.clone());
                out.method_a.push(a.method.clone());
                out.method_b.push(b.method.clone());
                out.metric.push(metric.to_string());
                out.n.push(xa.len() as u32);
                out.mean_diff.push(stats::mean(
                    &xa.iter().zip(&xb).map(|(x, y)| x - y).collect::<Vec<_>>(),
                ));
                out.t.push(t.map(|t| t.t).filter(|t| t.is_finite()));
                out.p_t.push(t.map(|t| t.p));
                out.w_plus.push(w.map(|w| w.0));
                out.p_wilcoxon.push(w.map(|w| w.1));
                out.wins.push(wins);
                out.ties.push(ties);
                out.losses.push(xa.len() as u32 - wins - ties);
            }
        }
    }
    DataFrame::new_infer_height(vec![
        Column::new("stream".into(), out.stream),
        Column::new("method_a".into(), out.method_a),
        Column::new("method_b".into(), out.method_b),
        Column::new("metric".into(), out.metric),
        Column::new("n".into(), out.n),
        Column::new("mean_diff".into(), out.mean_diff),
        Column::new("t".into(), out.t),
        Column::new("p_t".into(), out.p_t),
        Column::new("w_plus".into(), out.w_plus),
        Column::new("p_wilcoxon".into(), out.p_wilcoxon),
        Column::new("wins".into(), out.wins),
        Column::new("ties".into(), out.ties),
        Column::new("losses".into(), out.losses),
    ])
}

/// The columns of [`comparison_frame`], filled row by row.
#[derive(Default)]
struct ComparisonColumns {
    stream: Vec<String>,
    method_a: Vec<String>,
    method_b: Vec<String>,
    metric: Vec<String>,
    n: Vec<u32>,
    mean_diff: Vec<Option<f64>>,
    t: Vec<Option<f64>>,
    p_t: Vec<Option<f64>>,
    w_plus: Vec<Option<f64>>,
    p_wilcoxon: Vec<Option<f64>>,
    wins: Vec<u32>,
    ties: Vec<u32>,
    losses: Vec<u32>,
}

/// The A_k curve of every completed run (long): `run_id, stream, method, seed, k, a_k`.
pub fn average_accuracy_frame(runs: &[StoredRun]) -> PolarsResult<DataFrame> {
    let mut keys = RunKeys::default();
    let (mut k, mut a) = (vec![], vec![]);
    for r in sorted(runs) {
        if let Some(m) = matrix_of(&r.record) {
            for (i, v) in m.average_accuracy_curve().into_iter().enumerate() {
                keys.push(r);
                k.push(i as u32 + 1);
                a.push(v);
            }
        }
    }
    keys.with(vec![
        Column::new("k".into(), k),
        Column::new("a_k".into(), a),
    ])
}

/// Within-task learning curves of every run that recorded them (`training.eval_every`), long:
/// `run_id, stream, method, seed, training_task, step, progress, eval_task, accuracy`, where
/// `progress` = (training_task − 1) + step / steps of that task, in units of tasks.
pub fn curves_frame(runs: &[StoredRun]) -> PolarsResult<DataFrame> {
    let mut keys = RunKeys::default();
    let (mut task, mut step, mut progress, mut eval, mut acc) =
        (vec![], vec![], vec![], vec![], vec![]);
    for r in sorted(runs) {
        for c in &r.record.curves {
            let steps = r
                .record
                .tasks
                .get(c.training_task - 1)
                .map_or(0, |t| t.steps)
                .max(1);
            keys.push(r);
            task.push(c.training_task as u32);
            step.push(c.step as u32);
            progress.push((c.training_task - 1) as f64 + c.step as f64 / steps as f64);
            eval.push(c.eval_task as u32);
            acc.push(c.accuracy);
        }
    }
    keys.with(vec![
        Column::new("training_task".into(), task),
        Column::new("step".into(), step),
        Column::new("progress".into(), progress),
        Column::new("eval_task".into(), eval),
        Column::new("accuracy".into(), acc),
    ])
}
