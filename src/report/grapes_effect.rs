//! What GRAPES does to each method: every method run with GRAPES is paired with the run of the
//! same configuration without it (same stream, model, training, optimizer and strategy, same
//! seed; only `optimizer.grapes` and the method's name differ), and each compared metric's
//! paired difference over seeds is summarized with its confidence interval and tests.
//!
//! Pairs are found from the stored configurations, never from method names, so a report
//! cannot pair `ewc+grapes` with an `ewc` of another λ.

use std::collections::BTreeMap;

use polars::prelude::*;

use super::stats;
use super::tables::{escape, TableOptions};
use crate::experiment::StoredRun;
use crate::metrics::{Column as MetricColumn, METRICS};

/// (stream, method without GRAPES, method with GRAPES, GRAPES variant).
pub type GrapesPair = (String, String, String, String);

/// Every GRAPES pair found in `runs`, sorted, and one warning per configuration whose methods
/// with GRAPES cannot be paired because several methods without GRAPES share it.
pub fn grapes_pairs(runs: &[StoredRun]) -> (Vec<GrapesPair>, Vec<String>) {
    /// Runs that only their method's name and GRAPES variant tell apart.
    #[derive(PartialEq, Eq, PartialOrd, Ord)]
    struct Twins {
        stream: String,
        /// The run configuration without the method's name and `optimizer.grapes`, as JSON.
        configuration: String,
    }
    // Per such group: each method's name and its GRAPES variant.
    let mut by_key: BTreeMap<Twins, BTreeMap<String, String>> = BTreeMap::new();
    for r in runs {
        let mut config = r.spec.configuration();
        let mut variant = String::from("off");
        if let Some(method) = config.get_mut("method").and_then(|m| m.as_object_mut()) {
            method.remove("name");
            if let Some(opt) = method.get_mut("optimizer").and_then(|o| o.as_object_mut()) {
                if let Some(g) = opt.remove("grapes") {
                    variant = g.as_str().unwrap_or("off").to_string();
                }
            }
        }
        by_key
            .entry(Twins {
                stream: r.spec.stream_name.clone(),
                configuration: config.to_string(),
            })
            .or_default()
            .insert(r.spec.method.name.clone(), variant);
    }
    let mut pairs = Vec::new();
    let mut warnings = Vec::new();
    for (Twins { stream, .. }, methods) in by_key {
        let without: Vec<&String> = methods
            .iter()
            .filter(|(_, v)| v.as_str() == "off")
            .map(|(m, _)| m)
            .collect();
        // Two names for one configuration without GRAPES would make the pairing ambiguous.
        let [base] = without.as_slice() else {
            let with: Vec<&String> = methods
                .iter()
                .filter(|(_, v)| v.as_str() != "off")
                .map(|(m, _)| m)
                .collect();
            if without.len() > 1 && !with.is_empty() {
                warnings.push(format!(
                    "{stream}: GRAPES effect of {} not computed: the same configuration without GRAPES runs under several names ({})",
                    with.iter().map(|m| m.as_str()).collect::<Vec<_>>().join(", "),
                    without.iter().map(|m| m.as_str()).collect::<Vec<_>>().join(", ")
                ));
            }
            continue;
        };
        for (m, v) in &methods {
            if v != "off" {
                pairs.push((stream.clone(), (*base).clone(), m.clone(), v.clone()));
            }
        }
    }
    pairs.sort();
    (pairs, warnings)
}

/// One row per (GRAPES pair, compared metric), over the seeds both methods completed with a
/// finite value: `stream, method, method_grapes, grapes, metric, n, mean_without, mean_with,
/// diff_mean (with − without), diff_ci95_low, diff_ci95_high (Student's t, n − 1 df), p_t
/// (paired t-test), p_wilcoxon (signed-rank, exact for n ≤ 50 without ties), better, ties,
/// worse` (seeds on which GRAPES is better / equal / worse by the metric's direction).
pub fn grapes_effect_frame(pairs: &[GrapesPair], metrics: &DataFrame) -> PolarsResult<DataFrame> {
    let stream = metrics.column("stream")?.str()?.clone();
    let method = metrics.column("method")?.str()?.clone();
    let seed = metrics.column("seed")?.u64()?.clone();
    let status = metrics.column("status")?.str()?.clone();
    let rows_of = |s: &str, m: &str| -> BTreeMap<u64, usize> {
        (0..metrics.height())
            .filter(|&i| {
                stream.get(i) == Some(s)
                    && method.get(i) == Some(m)
                    && status.get(i) == Some("completed")
            })
            .filter_map(|i| seed.get(i).map(|sd| (sd, i)))
            .collect()
    };
    let mut cols = EffectColumns::default();
    for (s, base, with, variant) in pairs.iter() {
        let (a, b) = (rows_of(s, base), rows_of(s, with));
        for column in METRICS.iter().filter(|c| c.compared) {
            let values = metrics.column(column.name)?.f64()?.clone();
            let (without_v, with_v): (Vec<f64>, Vec<f64>) = a
                .iter()
                .filter_map(|(sd, &ia)| b.get(sd).map(|&ib| (ia, ib)))
                .filter_map(|(ia, ib)| values.get(ia).zip(values.get(ib)))
                .filter(|(x, y)| x.is_finite() && y.is_finite())
                .unzip();
            let d: Vec<f64> = with_v.iter().zip(&without_v).map(|(y, x)| y - x).collect();
            let mean_d = stats::mean(&d);
            let half = stats::ci_half_width(&d, 0.95);
            let sign = if column.higher_is_better() { 1.0 } else { -1.0 };
            let better = d.iter().filter(|&&x| sign * x > 0.0).count() as u32;
            let ties = d.iter().filter(|&&x| x == 0.0).count() as u32;
            cols.stream.push(s.clone());
            cols.method.push(base.clone());
            cols.method_grapes.push(with.clone());
            cols.grapes.push(variant.clone());
            cols.metric.push(column.name.to_string());
            cols.n.push(d.len() as u32);
            cols.mean_without.push(stats::mean(&without_v));
            cols.mean_with.push(stats::mean(&with_v));
            cols.diff_mean.push(mean_d);
            cols.low.push(mean_d.zip(half).map(|(m, h)| m - h));
            cols.high.push(mean_d.zip(half).map(|(m, h)| m + h));
            cols.p_t
                .push(stats::paired_t_test(&with_v, &without_v).map(|t| t.p));
            cols.p_w
                .push(stats::wilcoxon_signed_rank(&with_v, &without_v).map(|w| w.1));
            cols.better.push(better);
            cols.ties.push(ties);
            cols.worse.push(d.len() as u32 - better - ties);
        }
    }
    DataFrame::new_infer_height(vec![
        Column::new("stream".into(), cols.stream),
        Column::new("method".into(), cols.method),
        Column::new("method_grapes".into(), cols.method_grapes),
        Column::new("grapes".into(), cols.grapes),
        Column::new("metric".into(), cols.metric),
        Column::new("n".into(), cols.n),
        Column::new("mean_without".into(), cols.mean_without),
        Column::new("mean_with".into(), cols.mean_with),
        Column::new("diff_mean".into(), cols.diff_mean),
        Column::new("diff_ci95_low".into(), cols.low),
        Column::new("diff_ci95_high".into(), cols.high),
        Column::new("p_t".into(), cols.p_t),
        Column::new("p_wilcoxon".into(), cols.p_w),
        Column::new("better".into(), cols.better),
        Column::new("ties".into(), cols.ties),
        Column::new("worse".into(), cols.worse),
    ])
}

#[derive(Default)]
struct EffectColumns {
    stream: Vec<String>,
    method: Vec<String>,
    method_grapes: Vec<String>,
    grapes: Vec<String>,
    metric: Vec<String>,
    n: Vec<u32>,
    mean_without: Vec<Option<f64>>,
    mean_with: Vec<Option<f64>>,
    diff_mean: Vec<Option<f64>>,
    low: Vec<Option<f64>>,
    high: Vec<Option<f64>>,
    p_t: Vec<Option<f64>>,
    p_w: Vec<Option<f64>>,
    better: Vec<u32>,
    ties: Vec<u32>,
    worse: Vec<u32>,
}

/// The metrics of the GRAPES table, in its column order: ACC first (the verdict), then
/// BWT, forgetting and learning accuracy.
pub const EFFECT_METRICS: [&str; 4] = ["acc", "bwt", "forgetting", "learning_accuracy"];

/// The plain-language verdict on one metric: `helps` or `hurts` when the paired t-test over
/// at least 3 seeds rejects "no difference" at `alpha` (by the metric's direction), otherwise
/// `no detectable effect at n seeds`; `—` without the seeds to test.
pub fn verdict(
    column: &MetricColumn,
    n: u32,
    diff: Option<f64>,
    p_t: Option<f64>,
    alpha: f64,
) -> String {
    match (diff, p_t) {
        (Some(d), Some(p)) if n >= 3 => {
            let good = if column.higher_is_better() {
                d > 0.0
            } else {
                d < 0.0
            };
            if p < alpha && good {
                "helps".into()
            } else if p < alpha && d != 0.0 {
                "hurts".into()
            } else {
                format!("no detectable effect at {n} seeds")
            }
        }
        _ => "— (fewer than 3 seeds)".into(),
    }
}

/// One parsed row of the effect frame.
struct EffectRow {
    stream: String,
    method: String,
    metric: String,
    n: u32,
    without: Option<f64>,
    with: Option<f64>,
    diff: Option<f64>,
    low: Option<f64>,
    high: Option<f64>,
    p_t: Option<f64>,
    p_w: Option<f64>,
}

fn rows(frame: &DataFrame) -> PolarsResult<Vec<EffectRow>> {
    let s = |c: &str| -> PolarsResult<StringChunked> { Ok(frame.column(c)?.str()?.clone()) };
    let f = |c: &str| -> PolarsResult<Float64Chunked> { Ok(frame.column(c)?.f64()?.clone()) };
    let (stream, method, metric) = (s("stream")?, s("method_grapes")?, s("metric")?);
    let base = s("method")?;
    let n = frame.column("n")?.u32()?.clone();
    let (without, with, diff) = (f("mean_without")?, f("mean_with")?, f("diff_mean")?);
    let (low, high, p_t, p_w) = (
        f("diff_ci95_low")?,
        f("diff_ci95_high")?,
        f("p_t")?,
        f("p_wilcoxon")?,
    );
    Ok((0..frame.height())
        .map(|i| EffectRow {
            stream: stream.get(i).unwrap_or("").into(),
            method: format!(
                "{} vs {}",
                method.get(i).unwrap_or(""),
                base.get(i).unwrap_or("")
            ),
            metric: metric.get(i).unwrap_or("").into(),
            n: n.get(i).unwrap_or(0),
            without: without.get(i),
            with: with.get(i),
            diff: diff.get(i),
            low: low.get(i),
            high: high.get(i),
            p_t: p_t.get(i),
            p_w: p_w.get(i),
        })
        .collect())
}

fn pct(v: Option<f64>, digits: usize) -> String {
    match v {
        Some(v) => {
            let s = format!("{:+.*}", digits, v * 100.0);
            if s[1..].chars().all(|c| c == '0' || c == '.') {
                s[1..].to_string()
            } else {
                s
            }
        }
        None => "–".into(),
    }
}

/// `Δ [low, high]`, or `Δ` alone where no interval exists (one seed).
fn with_ci(diff: Option<f64>, low: Option<f64>, high: Option<f64>, digits: usize) -> String {
    match (low, high) {
        (Some(_), Some(_)) => format!(
            "{} [{}, {}]",
            pct(diff, digits),
            pct(low, digits),
            pct(high, digits)
        ),
        _ => pct(diff, digits),
    }
}

fn plain(v: Option<f64>, digits: usize) -> String {
    v.map_or("–".into(), |v| format!("{:.*}", digits, v * 100.0))
}

fn p_value(p: Option<f64>) -> String {
    match p {
        Some(p) if p < 0.001 => "<0.001".into(),
        Some(p) => format!("{p:.3}"),
        None => "–".into(),
    }
}

/// The GRAPES table as Markdown: per stream, one row per (pair, metric of
/// [`EFFECT_METRICS`]): the means without and with GRAPES, the paired difference with its 95%
/// CI, both p-values and the verdict. Empty when the runs hold no pair.
pub fn markdown(frame: &DataFrame, opts: &TableOptions) -> PolarsResult<String> {
    let rows = rows(frame)?;
    if rows.is_empty() {
        return Ok(String::new());
    }
    let d = opts.digits;
    let mut out = String::new();
    let mut streams: Vec<&str> = rows.iter().map(|r| r.stream.as_str()).collect();
    streams.dedup();
    for s in streams {
        out.push_str(&format!("**{s}**\n\n"));
        out.push_str("| Methods | Metric | n | without (%) | with (%) | Δ with − without (95% CI) | p (t) | p (Wilcoxon) | Verdict |\n");
        out.push_str("|:--|:--|--:|--:|--:|--:|--:|--:|:--|\n");
        let mut methods: Vec<&str> = rows
            .iter()
            .filter(|r| r.stream == s)
            .map(|r| r.method.as_str())
            .collect();
        methods.dedup();
        for m in methods {
            for (k, name) in EFFECT_METRICS.iter().enumerate() {
                let Some(r) = rows
                    .iter()
                    .find(|r| r.stream == s && r.method == m && r.metric == *name)
                else {
                    continue;
                };
                let column = MetricColumn::named(name).expect("a known metric");
                out.push_str(&format!(
                    "| {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
                    if k == 0 {
                        super::tables::markdown_cell(m)
                    } else {
                        String::new()
                    },
                    column.label.trim_end_matches(" (%)"),
                    r.n,
                    plain(r.without, d),
                    plain(r.with, d),
                    with_ci(r.diff, r.low, r.high, d),
                    p_value(r.p_t),
                    p_value(r.p_w),
                    verdict(column, r.n, r.diff, r.p_t, opts.alpha),
                ));
            }
        }
        out.push('\n');
    }
    out.push_str(&format!(
        "Each method with GRAPES against the same configuration without it, paired by seed (values in percent; Δ = with − without, 95% CI from Student's t). Verdict on each metric by the two-sided paired t-test at α = {}: \"helps\" / \"hurts\" by the metric's direction (forgetting: lower is better), otherwise no detectable effect at that number of seeds. The exact Wilcoxon signed-rank test cannot reach p < 0.0625 with 5 seeds, so it serves as a check on the t-test's normality assumption, not as the verdict.\n",
        opts.alpha
    ));
    Ok(out)
}

/// The GRAPES table as a LaTeX `table` (booktabs): ACC and forgetting differences per pair.
pub fn latex(frame: &DataFrame, opts: &TableOptions) -> PolarsResult<String> {
    let rows = rows(frame)?;
    if rows.is_empty() {
        return Ok(String::new());
    }
    let d = opts.digits;
    let mut out = String::from(
        "% Generated by clbench report. Requires \\usepackage{booktabs}.\n\\begin{table}[t]\n\\centering\n\\begin{tabular}{llrrrrl}\n\\toprule\n",
    );
    out.push_str("Stream & Methods & n & $\\Delta$ACC (\\%) & $p_t$ & $\\Delta$Forgetting (\\%) & ACC verdict \\\\\n\\midrule\n");
    let mut keys: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| (r.stream.as_str(), r.method.as_str()))
        .collect();
    keys.dedup();
    for (s, m) in keys {
        let find = |metric: &str| {
            rows.iter()
                .find(|r| r.stream == s && r.method == m && r.metric == metric)
        };
        let (Some(acc), forgetting) = (find("acc"), find("forgetting")) else {
            continue;
        };
        let column = MetricColumn::named("acc").expect("acc");
        out.push_str(&format!(
            "{} & {} & {} & {} & {} & {} & {} \\\\\n",
            escape(s),
            escape(m),
            acc.n,
            with_ci(acc.diff, acc.low, acc.high, d),
            p_value(acc.p_t).replace('<', "$<$"),
            forgetting.map_or("–".into(), |f| pct(f.diff, d)),
            verdict(column, acc.n, acc.diff, acc.p_t, opts.alpha),
        ));
    }
    out.push_str(&format!(
        "\\bottomrule\n\\end{{tabular}}\n\\caption{{GRAPES on every method: paired differences with $-$ without GRAPES over seeds (95\\% CI, Student's $t$); verdict by the paired $t$-test at $\\alpha = {}$.}}\n\\end{{table}}\n",
        opts.alpha
    ));
    Ok(out)
}
