//! Continual-learning metrics of one accuracy matrix, exactly as `docs/METRICS.md` defines them.
//!
//! `R[i][j]` is the accuracy on task `j` after training on tasks `1..=i`; row 0 is the model at
//! initialization. `b[j]` is the accuracy of an independently initialized, untrained model.
//! Tasks are 1-based in the formulas and 0-based in the code. Undefined values (for example BWT
//! with a single task) are `None`, never 0.

use serde::{Deserialize, Serialize};

/// A `(T+1) × T` accuracy matrix, with the random baseline when it was recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccuracyMatrix {
    /// `rows[i][j]` = `R[i][j]`, i = 0..=T, j = 0..T (0-based task j is task j+1).
    pub rows: Vec<Vec<f64>>,
    /// `b[j]` of an independently initialized model, if evaluated.
    pub baseline: Option<Vec<f64>>,
}

/// What is wrong with a matrix.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MatrixError {
    /// No task columns or no rows.
    #[error("the matrix is empty")]
    Empty,
    /// Wrong number of rows or a ragged row.
    #[error("{0}")]
    Shape(String),
    /// A value outside [0, 1] or not a number.
    #[error("row {row} (after task {row}), task {task}: accuracy {value} is not in [0, 1]")]
    OutOfRange { row: usize, task: usize, value: f64 },
}

impl AccuracyMatrix {
    /// Validates shape `(T+1) × T` and values in `[0, 1]`.
    pub fn new(rows: Vec<Vec<f64>>, baseline: Option<Vec<f64>>) -> Result<Self, MatrixError> {
        let t = rows.first().map(Vec::len).ok_or(MatrixError::Empty)?;
        if t == 0 {
            return Err(MatrixError::Empty);
        }
        if rows.len() != t + 1 {
            return Err(MatrixError::Shape(format!(
                "{t} tasks need {} rows (after_task 0..={t}), found {}",
                t + 1,
                rows.len()
            )));
        }
        for (i, r) in rows.iter().enumerate() {
            if r.len() != t {
                return Err(MatrixError::Shape(format!(
                    "row {i} has {} values, expected {t}",
                    r.len()
                )));
            }
            for (j, &v) in r.iter().enumerate() {
                if !(0.0..=1.0).contains(&v) {
                    return Err(MatrixError::OutOfRange {
                        row: i,
                        task: j + 1,
                        value: v,
                    });
                }
            }
        }
        if let Some(b) = &baseline {
            if b.len() != t {
                return Err(MatrixError::Shape(format!(
                    "baseline has {} values, expected {t}",
                    b.len()
                )));
            }
        }
        Ok(Self { rows, baseline })
    }

    /// Number of tasks T.
    pub fn tasks(&self) -> usize {
        self.rows[0].len()
    }

    fn r(&self, i: usize, j: usize) -> f64 {
        self.rows[i][j]
    }

    /// `ACC = (1/T) Σ_j R[T][j]`.
    pub fn acc(&self) -> f64 {
        let t = self.tasks();
        (0..t).map(|j| self.r(t, j)).sum::<f64>() / t as f64
    }

    /// `BWT = (1/(T−1)) Σ_{j<T} (R[T][j] − R[j][j])`.
    pub fn bwt(&self) -> Option<f64> {
        let t = self.tasks();
        (t > 1).then(|| {
            (0..t - 1)
                .map(|j| self.r(t, j) - self.r(j + 1, j))
                .sum::<f64>()
                / (t - 1) as f64
        })
    }

    /// `FWT = (1/(T−1)) Σ_{j>1} (R[j−1][j] − b[j])` with the recorded random baseline.
    pub fn fwt(&self) -> Option<f64> {
        self.baseline.as_ref().and_then(|b| self.fwt_against(b))
    }

    /// FWT with row 0 (the run's own initialization) as the baseline.
    pub fn fwt_init(&self) -> Option<f64> {
        let b = self.rows[0].clone();
        self.fwt_against(&b)
    }

    fn fwt_against(&self, b: &[f64]) -> Option<f64> {
        let t = self.tasks();
        // Task j+1 (0-based j ≥ 1) evaluated after tasks 1..=j, i.e. row j.
        (t > 1).then(|| (1..t).map(|j| self.r(j, j) - b[j]).sum::<f64>() / (t - 1) as f64)
    }

    /// Chaudhry's `f_j = max_{l∈[1,T−1]} R[l][j] − R[T][j]` for each task j < T (0-based).
    pub fn forgetting_per_task(&self) -> Vec<f64> {
        let t = self.tasks();
        (0..t.saturating_sub(1))
            .map(|j| {
                let best = (1..t)
                    .map(|l| self.r(l, j))
                    .fold(f64::NEG_INFINITY, f64::max);
                best - self.r(t, j)
            })
            .collect()
    }

    /// Forgetting (Chaudhry et al. 2018): mean of f_j over j < T.
    pub fn forgetting(&self) -> Option<f64> {
        let f = self.forgetting_per_task();
        (!f.is_empty()).then(|| f.iter().sum::<f64>() / f.len() as f64)
    }

    /// Max forgetting: max_{j<T} f_j.
    pub fn max_forgetting(&self) -> Option<f64> {
        self.forgetting_per_task().into_iter().reduce(f64::max)
    }

    /// "Drop since learned" forgetting: mean over j < T of `R[j][j] − R[T][j]` (= −BWT; what
    /// Avalanche's `StreamForgetting` reports).
    pub fn drop_since_learned(&self) -> Option<f64> {
        self.bwt().map(|b| -b)
    }

    /// Learning accuracy (plasticity): `(1/T) Σ_j R[j][j]`.
    pub fn learning_accuracy(&self) -> f64 {
        let t = self.tasks();
        (0..t).map(|j| self.r(j + 1, j)).sum::<f64>() / t as f64
    }

    /// `A_k = (1/k) Σ_{j≤k} R[k][j]` for k = 1..=T.
    pub fn average_accuracy_curve(&self) -> Vec<f64> {
        (1..=self.tasks())
            .map(|k| (0..k).map(|j| self.r(k, j)).sum::<f64>() / k as f64)
            .collect()
    }

    /// Average incremental accuracy (Rebuffi et al. 2017): (1/T) Σ_k A_k.
    pub fn avg_incremental_accuracy(&self) -> f64 {
        let a = self.average_accuracy_curve();
        a.iter().sum::<f64>() / a.len() as f64
    }

    /// Every scalar metric of the matrix.
    pub fn summary(&self) -> RunMetrics {
        RunMetrics {
            acc: self.acc(),
            bwt: self.bwt(),
            fwt: self.fwt(),
            fwt_init: self.fwt_init(),
            forgetting: self.forgetting(),
            max_forgetting: self.max_forgetting(),
            drop_since_learned: self.drop_since_learned(),
            learning_accuracy: self.learning_accuracy(),
            avg_incremental_accuracy: self.avg_incremental_accuracy(),
        }
    }
}

/// A matrix file that cannot be used, with the line at fault.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}{}: {message}", path.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct MatrixCsvError {
    /// The file.
    pub path: std::path::PathBuf,
    /// 1-based line, when one line is at fault.
    pub line: Option<usize>,
    /// What is wrong and what was expected.
    pub message: String,
}

/// Parses an accuracy matrix written by any framework: a header `after_task,task_1,...,task_T`
/// and one row per `after_task` from 0 (initialization) to T, accuracies in `[0, 1]`.
///
/// The text is read by polars' CSV reader (RFC 4180: quoted fields and names, as R's
/// `write.csv` writes them, `""` inside quotes, CRLF line ends). A leading index column, as
/// pandas' `to_csv` and R's `write.csv` write by default (an empty name before `after_task`),
/// is ignored. Errors name the line of the row at fault.
pub fn parse_matrix_csv(
    text: &str,
    path: &std::path::Path,
) -> Result<AccuracyMatrix, MatrixCsvError> {
    use polars::prelude::*;
    let text = crate::yaml::strip_bom(text);
    let fail = |line: Option<usize>, message: String| MatrixCsvError {
        path: path.to_path_buf(),
        line,
        message,
    };
    const EXPECTED: &str = "expected a header `after_task,task_1,...,task_T`";
    let lines = record_lines(text);
    let Some(&header_line) = lines.first() else {
        return Err(fail(None, format!("the file is empty; {EXPECTED}")));
    };
    // Every field as text, so that a value that is not a number is reported as written.
    let df = CsvReadOptions::default()
        .with_has_header(true)
        .with_infer_schema_length(Some(0))
        .map_parse_options(|o| o.with_missing_is_null(true))
        .into_reader_with_file_handle(std::io::Cursor::new(text.as_bytes().to_vec()))
        .finish()
        .map_err(|e| fail(None, format!("not a readable CSV file: {e}")))?;
    let mut names: Vec<String> = df
        .get_column_names()
        .iter()
        .map(|n| n.trim().to_string())
        .collect();
    let mut first = 0;
    if names.len() > 1 && names[0] != "after_task" && names[1] == "after_task" {
        // An index column (pandas' `Unnamed`, R's row names under an empty name).
        first = 1;
        names.remove(0);
    }
    if names.first().map(String::as_str) != Some("after_task") || names.len() < 2 {
        return Err(fail(
            Some(header_line),
            format!(
                "{EXPECTED}, found `{}`",
                crate::validate::short_excerpt(&names.join(","))
            ),
        ));
    }
    let t = names.len() - 1;
    for (j, name) in names[1..].iter().enumerate() {
        if *name != format!("task_{}", j + 1) {
            return Err(fail(
                Some(header_line),
                format!(
                    "column {} is `{}`, expected `task_{}`",
                    j + 2 + first,
                    crate::validate::short_excerpt(name),
                    j + 1
                ),
            ));
        }
    }
    let columns: Vec<StringChunked> = df
        .columns()
        .iter()
        .skip(first)
        .map(|c| c.as_materialized_series().str().cloned())
        .collect::<PolarsResult<_>>()
        .map_err(|e| fail(None, format!("reading the columns: {e}")))?;
    let mut rows = Vec::with_capacity(t + 1);
    let mut record = 0;
    for i in 0..df.height() {
        if columns
            .iter()
            .all(|c| c.get(i).is_none_or(|v| v.trim().is_empty()))
        {
            continue; // a blank line
        }
        record += 1;
        let line = lines.get(record).copied();
        let field = |c: usize| columns[c].get(i).map(str::trim);
        let expected_row = rows.len();
        match field(0).map(str::parse::<usize>) {
            Some(Ok(r)) if r == expected_row => {}
            _ => {
                return Err(fail(
                    line,
                    format!(
                        "after_task is `{}`, expected {expected_row} (rows in order from 0 to {t})",
                        crate::validate::short_excerpt(field(0).unwrap_or(""))
                    ),
                ))
            }
        }
        let mut row = Vec::with_capacity(t);
        for j in 0..t {
            let Some(f) = field(j + 1) else {
                return Err(fail(
                    line,
                    format!(
                        "task_{}: no value ({} values expected: after_task and {t} tasks)",
                        j + 1,
                        t + 1
                    ),
                ));
            };
            let v: f64 = f.parse().map_err(|_| {
                fail(
                    line,
                    format!(
                        "task_{}: `{}` is not a number",
                        j + 1,
                        crate::validate::short_excerpt(f)
                    ),
                )
            })?;
            if !(0.0..=1.0).contains(&v) {
                return Err(fail(
                    line,
                    format!(
                        "task_{}: accuracy {v} is not in [0, 1] (give fractions, not percent)",
                        j + 1
                    ),
                ));
            }
            row.push(v);
        }
        rows.push(row);
    }
    if rows.len() != t + 1 {
        return Err(fail(
            None,
            format!(
                "{} data rows, expected {} (after_task 0 to {t})",
                rows.len(),
                t + 1
            ),
        ));
    }
    AccuracyMatrix::new(rows, None).map_err(|e| fail(None, e.to_string()))
}

/// The 1-based line on which each CSV record of `text` starts, blank lines skipped (a quoted
/// field may span lines: newlines inside `"…"` do not start a record).
fn record_lines(text: &str) -> Vec<usize> {
    let mut starts = Vec::new();
    let (mut line, mut quoted, mut at_start, mut blank) = (1usize, false, true, true);
    for c in text.chars() {
        if at_start {
            starts.push(line);
            at_start = false;
            blank = true;
        }
        match c {
            '"' => {
                quoted = !quoted;
                blank = false;
            }
            '\n' => {
                line += 1;
                if !quoted {
                    at_start = true;
                    if blank {
                        starts.pop();
                    }
                }
            }
            '\r' => {}
            c if !c.is_whitespace() => blank = false,
            _ => {}
        }
    }
    if !at_start && blank {
        starts.pop();
    }
    starts
}

/// Whether larger or smaller values of a column are better.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Accuracies and transfers.
    HigherIsBetter,
    /// Forgetting-like metrics, and time.
    LowerIsBetter,
}

/// One column of the metrics frame: its name and everything a table, a figure or a comparison
/// needs to know of it. [`METRICS`] and [`THROUGHPUT`] list every such column, once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Column {
    /// The column name (`acc`).
    pub name: &'static str,
    /// Its header in text and Markdown tables (`ACC (%)`).
    pub label: &'static str,
    /// Its header in LaTeX tables (`ACC (\%)`).
    pub latex: &'static str,
    /// Its axis title in figures.
    pub axis: &'static str,
    /// Displayed values are the stored ones times this (100 for fractions shown in percent).
    pub scale: f64,
    /// Digits after the decimal point in the console summary.
    pub digits: usize,
    /// Which way is better.
    pub direction: Direction,
    /// Shown in the summary tables and the bar figure.
    pub headline: bool,
    /// Compared between methods (paired tests in the comparison frame).
    pub compared: bool,
}

impl Column {
    /// Whether a larger value is better.
    pub fn higher_is_better(&self) -> bool {
        self.direction == Direction::HigherIsBetter
    }

    /// The column named `name`, among [`METRICS`] and [`THROUGHPUT`].
    pub fn named(name: &str) -> Option<&'static Column> {
        METRICS
            .iter()
            .chain(THROUGHPUT.iter())
            .find(|c| c.name == name)
    }
}

const fn percent(
    name: &'static str,
    label: &'static str,
    latex: &'static str,
    axis: &'static str,
    direction: Direction,
    headline: bool,
    compared: bool,
) -> Column {
    Column {
        name,
        label,
        latex,
        axis,
        scale: 100.0,
        digits: 2,
        direction,
        headline,
        compared,
    }
}

use Direction::{HigherIsBetter, LowerIsBetter};

/// The metric columns, in the order of [`RunMetrics::named`] (definitions: `docs/METRICS.md`).
pub const METRICS: [Column; 9] = [
    percent(
        "acc",
        "ACC (%)",
        r"ACC (\%)",
        "ACC (%)",
        HigherIsBetter,
        true,
        true,
    ),
    percent(
        "bwt",
        "BWT (%)",
        r"BWT (\%)",
        "BWT (%)",
        HigherIsBetter,
        true,
        true,
    ),
    percent(
        "fwt",
        "FWT (%)",
        r"FWT (\%)",
        "FWT (%)",
        HigherIsBetter,
        true,
        true,
    ),
    percent(
        "fwt_init",
        "FWT vs init (%)",
        r"FWT vs init (\%)",
        "FWT vs initialization (%)",
        HigherIsBetter,
        false,
        false,
    ),
    percent(
        "forgetting",
        "Forgetting (%)",
        r"Forgetting (\%)",
        "Forgetting (%)",
        LowerIsBetter,
        true,
        true,
    ),
    percent(
        "max_forgetting",
        "Max forgetting (%)",
        r"Max forgetting (\%)",
        "Max forgetting (%)",
        LowerIsBetter,
        false,
        true,
    ),
    percent(
        "drop_since_learned",
        "Drop since learned (%)",
        r"Drop since learned (\%)",
        "Drop since learned (%)",
        LowerIsBetter,
        false,
        true,
    ),
    percent(
        "learning_accuracy",
        "Learning acc. (%)",
        r"Learning acc.\ (\%)",
        "Learning accuracy (%)",
        HigherIsBetter,
        true,
        true,
    ),
    percent(
        "avg_incremental_accuracy",
        "Avg. incremental acc. (%)",
        r"Avg.\ incremental acc.\ (\%)",
        "Average incremental accuracy (%)",
        HigherIsBetter,
        false,
        true,
    ),
];

/// The throughput columns of the metrics frame, summarized over seeds like the metrics.
pub const THROUGHPUT: [Column; 2] = [
    Column {
        name: "train_seconds",
        label: "train s",
        latex: "train s",
        axis: "Training time (s)",
        scale: 1.0,
        digits: 1,
        direction: LowerIsBetter,
        headline: false,
        compared: false,
    },
    Column {
        name: "samples_per_s",
        label: "samples/s",
        latex: "samples/s",
        axis: "Samples per second",
        scale: 1.0,
        digits: 0,
        direction: HigherIsBetter,
        headline: false,
        compared: false,
    },
];

/// The names of [`RunMetrics::named`]'s values, in order: the metric columns of every table.
pub const METRIC_NAMES: [&str; 9] = {
    let mut names = [""; 9];
    let mut i = 0;
    while i < METRICS.len() {
        names[i] = METRICS[i].name;
        i += 1;
    }
    names
};

/// The scalar metrics of one run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RunMetrics {
    /// Average final accuracy.
    pub acc: f64,
    /// Backward transfer.
    pub bwt: Option<f64>,
    /// Forward transfer against the random baseline `b`.
    pub fwt: Option<f64>,
    /// Forward transfer against row 0 (the run's initialization).
    pub fwt_init: Option<f64>,
    /// Average forgetting (Chaudhry's max convention).
    pub forgetting: Option<f64>,
    /// Largest per-task forgetting.
    pub max_forgetting: Option<f64>,
    /// Average drop since learned (−BWT).
    pub drop_since_learned: Option<f64>,
    /// Learning accuracy (plasticity).
    pub learning_accuracy: f64,
    /// Average incremental accuracy.
    pub avg_incremental_accuracy: f64,
}

impl RunMetrics {
    /// Every metric with its name ([`METRIC_NAMES`]); `None` where undefined.
    pub fn named(&self) -> [(&'static str, Option<f64>); 9] {
        let values = [
            Some(self.acc),
            self.bwt,
            self.fwt,
            self.fwt_init,
            self.forgetting,
            self.max_forgetting,
            self.drop_since_learned,
            Some(self.learning_accuracy),
            Some(self.avg_incremental_accuracy),
        ];
        let mut out = [("", None); 9];
        for (o, (name, v)) in out.iter_mut().zip(METRIC_NAMES.iter().zip(values)) {
            *o = (*name, v);
        }
        out
    }
}

impl crate::error::InputError for MatrixCsvError {
    fn is_input_error(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-12, "{a} vs {b}");
    }

    #[test]
    fn single_task_has_undefined_transfer() {
        let m = AccuracyMatrix::new(vec![vec![0.1], vec![0.9]], Some(vec![0.1])).unwrap();
        close(m.acc(), 0.9);
        assert_eq!(m.bwt(), None);
        assert_eq!(m.fwt(), None);
        assert_eq!(m.forgetting(), None);
        assert_eq!(m.max_forgetting(), None);
        close(m.learning_accuracy(), 0.9);
    }

    #[test]
    fn perfect_memory_has_zero_bwt_and_forgetting() {
        let m = AccuracyMatrix::new(
            vec![
                vec![0.1, 0.1, 0.1],
                vec![0.9, 0.1, 0.1],
                vec![0.9, 0.8, 0.1],
                vec![0.9, 0.8, 0.7],
            ],
            Some(vec![0.1, 0.1, 0.1]),
        )
        .unwrap();
        close(m.bwt().unwrap(), 0.0);
        close(m.forgetting().unwrap(), 0.0);
        close(m.acc(), 0.8);
        close(m.fwt().unwrap(), 0.0);
        close(m.learning_accuracy(), 0.8);
        // A_1 = 0.9, A_2 = 0.85, A_3 = 0.8.
        assert_eq!(m.average_accuracy_curve().len(), 3);
        close(m.avg_incremental_accuracy(), (0.9 + 0.85 + 0.8) / 3.0);
    }

    #[test]
    fn total_forgetting() {
        let m = AccuracyMatrix::new(
            vec![vec![0.1, 0.1], vec![1.0, 0.1], vec![0.0, 1.0]],
            Some(vec![0.1, 0.2]),
        )
        .unwrap();
        close(m.bwt().unwrap(), -1.0);
        close(m.forgetting().unwrap(), 1.0);
        close(m.drop_since_learned().unwrap(), 1.0);
        close(m.fwt().unwrap(), 0.1 - 0.2);
        close(m.fwt_init().unwrap(), 0.0);
    }

    #[test]
    fn negative_forgetting_when_the_final_accuracy_is_the_best() {
        // Task 1 improves after task 2: f_1 = max(R[1][1]) − R[2][1] = 0.6 − 0.8 < 0.
        let m = AccuracyMatrix::new(vec![vec![0.1, 0.1], vec![0.6, 0.1], vec![0.8, 0.9]], None)
            .unwrap();
        close(m.forgetting().unwrap(), -0.2);
        close(m.bwt().unwrap(), 0.2);
        assert_eq!(m.fwt(), None);
        assert!(m.forgetting().unwrap() >= -m.bwt().unwrap() - 1e-12);
    }

    #[test]
    fn forgetting_takes_the_max_over_earlier_checkpoints() {
        // Task 1: 0.7 after task 1, 0.9 after task 2, 0.5 at the end → f_1 = 0.4, drop = 0.2.
        let m = AccuracyMatrix::new(
            vec![
                vec![0.1; 3],
                vec![0.7, 0.1, 0.1],
                vec![0.9, 0.8, 0.1],
                vec![0.5, 0.8, 0.9],
            ],
            None,
        )
        .unwrap();
        assert_eq!(m.forgetting_per_task().len(), 2);
        close(m.forgetting_per_task()[0], 0.4);
        close(m.forgetting_per_task()[1], 0.0);
        close(m.max_forgetting().unwrap(), 0.4);
        close(m.drop_since_learned().unwrap(), 0.1);
    }

    #[test]
    fn parses_matrix_csv_and_names_bad_lines() {
        let p = std::path::Path::new("m.csv");
        let m = parse_matrix_csv(
            "after_task,task_1,task_2\n0,0.1,0.1\n1,0.9,0.2\n2,0.7,0.95\n",
            p,
        )
        .unwrap();
        close(m.acc(), 0.825);
        let e = parse_matrix_csv(
            "after_task,task_1,task_2\n0,0.1,0.1\n1,0.9\n2,0.7,0.95\n",
            p,
        )
        .unwrap_err();
        assert_eq!(e.line, Some(3));
        let e = parse_matrix_csv("after_task,task_1\n0,abc\n1,0.5\n", p).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("m.csv:2: task_1: `abc` is not a number"),
            "{e}"
        );
        let e = parse_matrix_csv("after_task,task_1\n0,10\n1,95\n", p).unwrap_err();
        assert!(e.to_string().contains("not in [0, 1]"));
        let e =
            parse_matrix_csv("after_task,task_1,task_2\n0,0.1,0.1\n1,0.9,0.2\n", p).unwrap_err();
        assert!(e.to_string().contains("2 data rows, expected 3"));
        assert!(parse_matrix_csv("", p).is_err());
    }

    /// Matrices as R (`write.csv`, with and without row names), pandas (`to_csv`, with and
    /// without its index) and polars (`write_csv`) write them, with CRLF and LF line ends.
    #[test]
    fn reads_matrices_written_by_r_pandas_and_polars() {
        let p = std::path::Path::new("m.csv");
        let files = [
            // R: write.csv(m, row.names = FALSE)
            "\"after_task\",\"task_1\",\"task_2\"\n0,0.1,0.1\n1,0.9,0.2\n2,0.7,0.95\n",
            // R: write.csv(m) (row names), on Windows
            "\"\",\"after_task\",\"task_1\",\"task_2\"\r\n\"1\",0,0.1,0.1\r\n\"2\",1,0.9,0.2\r\n\"3\",2,0.7,0.95\r\n",
            // pandas: df.to_csv(index=False)
            "after_task,task_1,task_2\n0,0.1,0.1\n1,0.9,0.2\n2,0.7,0.95\n",
            // pandas: df.to_csv() (index)
            ",after_task,task_1,task_2\n0,0,0.1,0.1\n1,1,0.9,0.2\n2,2,0.7,0.95\n",
            // polars: df.write_csv(), no final newline
            "after_task,task_1,task_2\n0,0.1,0.1\n1,0.9,0.2\n2,0.7,0.95",
            // quoted values, a blank line
            "\"after_task\",\"task_1\",\"task_2\"\n\"0\",\"0.1\",\"0.1\"\n\n1,0.9,0.2\n2,0.7,0.95\n",
        ];
        for text in files {
            let m = parse_matrix_csv(text, p).unwrap_or_else(|e| panic!("{e}\n{text}"));
            close(m.acc(), 0.825);
        }
        // Lines are still named, counted as written.
        let e =
            parse_matrix_csv("\"after_task\",\"task_1\"\r\n0,0.1\r\n\r\n1,x\r\n", p).unwrap_err();
        assert_eq!(e.line, Some(4), "{e}");
        assert!(e.to_string().contains("`x` is not a number"), "{e}");
    }

    #[test]
    fn record_lines_skip_blank_lines_and_quoted_newlines() {
        assert_eq!(record_lines("a\nb\n"), vec![1, 2]);
        assert_eq!(record_lines("a\n\nb"), vec![1, 3]);
        assert_eq!(record_lines("\"a\nb\",c\nd\n"), vec![1, 3]);
        assert_eq!(record_lines("a\r\n  \r\nb\r\n"), vec![1, 3]);
    }

    #[test]
    fn rejects_bad_shapes_and_values() {
        assert!(AccuracyMatrix::new(vec![vec![0.1, 0.2]], None).is_err());
        assert!(
            AccuracyMatrix::new(vec![vec![0.1, 0.2], vec![0.1], vec![0.1, 0.1]], None).is_err()
        );
        assert!(matches!(
            AccuracyMatrix::new(vec![vec![0.1], vec![1.2]], None),
            Err(MatrixError::OutOfRange { .. })
        ));
        assert!(AccuracyMatrix::new(vec![vec![f64::NAN], vec![0.5]], None).is_err());
    }
}
