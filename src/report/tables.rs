//! Paper tables from the summary and comparison frames: Markdown and LaTeX (booktabs).

use polars::prelude::*;

use crate::metrics::{Column as MetricColumn, METRICS};

/// Which spread follows the mean.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Spread {
    /// Sample standard deviation over seeds.
    #[default]
    Sd,
    /// Standard error of the mean (as van de Ven et al. 2022 report).
    Sem,
}

impl Spread {
    fn column(self) -> &'static str {
        match self {
            Spread::Sd => "sd",
            Spread::Sem => "sem",
        }
    }

    fn words(self) -> &'static str {
        match self {
            Spread::Sd => "mean ± standard deviation",
            Spread::Sem => "mean ± standard error of the mean",
        }
    }
}

/// How tables are written.
#[derive(Debug, Clone)]
pub struct TableOptions {
    /// sd or sem.
    pub spread: Spread,
    /// Digits after the decimal point (values in percent).
    pub digits: usize,
    /// Method that significance markers compare against.
    pub baseline: Option<String>,
    /// Significance level of the marker (paired t-test).
    pub alpha: f64,
    /// LaTeX caption (a default one describes the table).
    pub caption: Option<String>,
    /// LaTeX label.
    pub label: Option<String>,
    /// Width of every figure, in inches (see [`super::plots::Look`]).
    pub figure_width_in: f64,
}

impl Default for TableOptions {
    fn default() -> Self {
        Self {
            spread: Spread::Sd,
            digits: 2,
            baseline: None,
            alpha: 0.05,
            caption: None,
            label: None,
            figure_width_in: super::plots::DEFAULT_WIDTH_IN,
        }
    }
}

/// The table's metric columns: the headline metrics of [`METRICS`].
fn table_metrics() -> impl Iterator<Item = &'static MetricColumn> + Clone {
    METRICS.iter().filter(|c| c.headline)
}

/// One formatted cell.
struct Cell {
    mean: Option<f64>,
    spread: Option<f64>,
    best: bool,
    significant: bool,
}

/// One table per stream: rows of (method, n, cells).
struct Table {
    stream: String,
    rows: Vec<(String, u32, Vec<Cell>)>,
}

fn build(
    summary: &DataFrame,
    comparison: &DataFrame,
    opts: &TableOptions,
) -> PolarsResult<Vec<Table>> {
    let stream = summary.column("stream")?.str()?.clone();
    let method = summary.column("method")?.str()?.clone();
    let n = summary.column("n")?.u32()?.clone();
    let mut streams: Vec<String> = stream.iter().flatten().map(str::to_string).collect();
    streams.dedup();
    let cmp_stream = comparison.column("stream")?.str()?.clone();
    let cmp_a = comparison.column("method_a")?.str()?.clone();
    let cmp_b = comparison.column("method_b")?.str()?.clone();
    let cmp_metric = comparison.column("metric")?.str()?.clone();
    let cmp_p = comparison.column("p_t")?.f64()?.clone();
    let significant = |s: &str, m: &str, metric: &str| -> bool {
        let Some(base) = opts.baseline.as_deref().map(|b| baseline_of(m, b)) else {
            return false;
        };
        let base = base.as_str();
        if m == base {
            return false;
        }
        (0..comparison.height()).any(|i| {
            cmp_stream.get(i) == Some(s)
                && cmp_metric.get(i) == Some(metric)
                && ((cmp_a.get(i) == Some(m) && cmp_b.get(i) == Some(base))
                    || (cmp_a.get(i) == Some(base) && cmp_b.get(i) == Some(m)))
                && cmp_p.get(i).is_some_and(|p| p < opts.alpha)
        })
    };
    let mut tables = Vec::new();
    for s in streams {
        let idx: Vec<usize> = (0..summary.height())
            .filter(|&i| stream.get(i) == Some(s.as_str()))
            .collect();
        let mut rows: Vec<(String, u32, Vec<Cell>)> = idx
            .iter()
            .map(|&i| {
                (
                    method.get(i).unwrap_or("").to_string(),
                    n.get(i).unwrap_or(0),
                    Vec::new(),
                )
            })
            .collect();
        for column in table_metrics() {
            let metric = column.name;
            let means = summary.column(&format!("{metric}_mean"))?.f64()?.clone();
            let spreads = summary
                .column(&format!("{metric}_{}", opts.spread.column()))?
                .f64()?
                .clone();
            let values: Vec<Option<f64>> = idx.iter().map(|&i| means.get(i)).collect();
            let sign = if column.higher_is_better() { 1.0 } else { -1.0 };
            let best = values
                .iter()
                .flatten()
                .map(|v| sign * v)
                .fold(f64::NEG_INFINITY, f64::max);
            let rounding = 10f64.powi(opts.digits as i32 + 2);
            for (k, &i) in idx.iter().enumerate() {
                let mean = means.get(i);
                // Best as displayed: equal after rounding counts as a tie for best.
                let is_best = values.len() > 1
                    && mean.is_some_and(|v| {
                        ((sign * v) * rounding).round() == (best * rounding).round()
                    });
                let marked = significant(&s, &rows[k].0, metric);
                rows[k].2.push(Cell {
                    mean,
                    spread: spreads.get(i),
                    best: is_best,
                    significant: marked,
                });
            }
        }
        tables.push(Table { stream: s, rows });
    }
    Ok(tables)
}

fn number(v: f64, digits: usize) -> String {
    let s = format!("{:.*}", digits, v * 100.0);
    // Avoid "-0.00".
    if s.trim_start_matches('-')
        .chars()
        .all(|c| c == '0' || c == '.')
    {
        s.trim_start_matches('-').to_string()
    } else {
        s
    }
}

fn note(opts: &TableOptions, tables: &[Table], latex: bool) -> String {
    let n: Vec<u32> = tables
        .iter()
        .flat_map(|t| t.rows.iter().map(|r| r.1))
        .collect();
    let seeds = match (n.iter().min(), n.iter().max()) {
        (Some(1), Some(1)) => "1 seed".into(),
        (Some(a), Some(b)) if a == b => format!("{a} seeds"),
        (Some(a), Some(b)) => format!("{a}–{b} seeds"),
        _ => "seeds".into(),
    };
    let mut text = format!(
        "Values in percent, {} over {seeds}. Bold: best in its column. FWT is measured against an independently initialized, untrained model; forgetting is the average over tasks of the maximum earlier accuracy minus the final accuracy (Chaudhry et al. 2018).",
        opts.spread.words()
    );
    if let Some(b) = &opts.baseline {
        let (name, swept) = match split_tag(b) {
            Some((name, _)) => (name, true),
            None => (b.as_str(), false),
        };
        let name = if latex {
            escape(name)
        } else {
            format!("`{name}`")
        };
        let dagger = if latex { r"$^\dagger$" } else { "†" };
        let whom = if swept {
            format!("the {name} of its own sweep combination")
        } else {
            name
        };
        text.push_str(&format!(
            " {dagger}: differs from {whom} in a paired t-test over seeds, p < {}.",
            opts.alpha
        ));
    }
    text
}

/// `name[tag]` as (`name`, `tag`); `None` for a name without a sweep tag. Method names cannot
/// hold `[`, so the first one starts the tag.
fn split_tag(method: &str) -> Option<(&str, &str)> {
    method.strip_suffix(']')?.split_once('[')
}

/// The method whose runs `method`'s significance markers compare against: `baseline`, or in a
/// sweep, the baseline's method in `method`'s own sweep combination (`sgd[lr=0.1]` against
/// `base[lr=0.1]`), so that each combination is compared with its own baseline.
fn baseline_of(method: &str, baseline: &str) -> String {
    match (split_tag(method), split_tag(baseline)) {
        (Some((_, tag)), Some((base, _))) => format!("{base}[{tag}]"),
        _ => baseline.to_string(),
    }
}

/// The summary as Markdown tables (one per stream) with a note on what the numbers are.
pub fn markdown(
    summary: &DataFrame,
    comparison: &DataFrame,
    opts: &TableOptions,
) -> PolarsResult<String> {
    let tables = build(summary, comparison, opts)?;
    let mut out = String::new();
    for t in &tables {
        if tables.len() > 1 {
            out.push_str(&format!("**{}**\n\n", t.stream));
        }
        out.push_str("| Method | n |");
        for header in table_metrics().map(|c| c.label) {
            out.push_str(&format!(" {header} |"));
        }
        out.push_str("\n|:--|--:|");
        out.push_str(&"--:|".repeat(table_metrics().count()));
        out.push('\n');
        for (method, n, cells) in &t.rows {
            out.push_str(&format!("| {} | {n} |", markdown_cell(method)));
            for c in cells {
                let text = match (c.mean, c.spread) {
                    (Some(m), Some(s)) => {
                        format!("{} ± {}", number(m, opts.digits), number(s, opts.digits))
                    }
                    (Some(m), None) => number(m, opts.digits),
                    _ => "–".into(),
                };
                let text = if c.best { format!("**{text}**") } else { text };
                let mark = if c.significant { " †" } else { "" };
                out.push_str(&format!(" {text}{mark} |"));
            }
            out.push('\n');
        }
        out.push('\n');
    }
    out.push_str(&note(opts, &tables, false));
    out.push('\n');
    Ok(out)
}

/// Text for a cell of a Markdown table: `|` escaped as `\|`, which would otherwise end the
/// cell (names cannot hold backslashes or line breaks: see [`crate::validate::path_name`]).
pub fn markdown_cell(s: &str) -> String {
    s.replace('|', "\\|")
}

/// Escapes LaTeX's special characters in plain text.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str(r"\textbackslash{}"),
            '&' | '%' | '$' | '#' | '_' | '{' | '}' => {
                out.push('\\');
                out.push(c);
            }
            '~' => out.push_str(r"\textasciitilde{}"),
            '^' => out.push_str(r"\textasciicircum{}"),
            _ => out.push(c),
        }
    }
    out
}

/// The summary as a LaTeX `table` with a booktabs `tabular` (needs `\usepackage{booktabs}`).
pub fn latex(
    summary: &DataFrame,
    comparison: &DataFrame,
    opts: &TableOptions,
) -> PolarsResult<String> {
    let tables = build(summary, comparison, opts)?;
    let mut out = String::from("% Generated by clbench report. Requires \\usepackage{booktabs}.\n");
    out.push_str("\\begin{table}[t]\n\\centering\n");
    let caption = opts.caption.clone().map(|c| escape(&c)).unwrap_or_else(|| {
        let streams: Vec<String> = tables.iter().map(|t| escape(&t.stream)).collect();
        format!("Continual-learning metrics on {}.", streams.join(", "))
    });
    out.push_str(&format!(
        "\\caption{{{caption} {}}}\n",
        note(opts, &tables, true)
    ));
    if let Some(label) = &opts.label {
        out.push_str(&format!(
            "\\label{{{}}}\n",
            label.replace(['{', '}', '\\'], "")
        ));
    }
    out.push_str(&format!(
        "\\begin{{tabular}}{{lr{}}}\n\\toprule\n",
        "r".repeat(table_metrics().count())
    ));
    out.push_str("Method & $n$");
    for header in table_metrics().map(|c| c.latex) {
        out.push_str(&format!(" & {header}"));
    }
    out.push_str(" \\\\\n");
    for t in &tables {
        out.push_str("\\midrule\n");
        if tables.len() > 1 {
            out.push_str(&format!(
                "\\multicolumn{{{}}}{{l}}{{\\textit{{{}}}}} \\\\\n",
                table_metrics().count() + 2,
                escape(&t.stream)
            ));
        }
        for (method, n, cells) in &t.rows {
            out.push_str(&format!("{} & {n}", escape(method)));
            for c in cells {
                let body = match (c.mean, c.spread) {
                    (Some(m), Some(s)) => {
                        format!("{} \\pm {}", number(m, opts.digits), number(s, opts.digits))
                    }
                    (Some(m), None) => number(m, opts.digits),
                    _ => "-".to_string(),
                };
                let body = if c.best {
                    format!("\\mathbf{{{body}}}")
                } else {
                    body
                };
                let mark = if c.significant { "^{\\dagger}" } else { "" };
                out.push_str(&format!(" & ${body}{mark}$"));
            }
            out.push_str(" \\\\\n");
        }
    }
    out.push_str("\\bottomrule\n\\end{tabular}\n\\end{table}\n");
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_sweep_combination_is_compared_with_its_own_baseline() {
        assert_eq!(baseline_of("adam[lr=0.1]", "sgd[lr=0.01]"), "sgd[lr=0.1]");
        assert_eq!(
            baseline_of("adam[lr=0.1,hidden=[8,8]]", "sgd[lr=0.01,hidden=[8]]"),
            "sgd[lr=0.1,hidden=[8,8]]"
        );
        assert_eq!(baseline_of("adam", "sgd"), "sgd");
        assert_eq!(baseline_of("adam[lr=0.1]", "sgd"), "sgd");
        assert_eq!(split_tag("sgd"), None);
    }
}
