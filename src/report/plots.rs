//! Figures for papers, as PNG and SVG: the accuracy-matrix heatmap, each task's accuracy across
//! the sequence (mean with a band over seeds), per-method bars with error bars per metric, and
//! the stability–plasticity plane (forgetting against learning accuracy, each method joined to
//! its GRAPES twin).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use polars::prelude::*;

use super::export::ExportError;
use super::stats;
use super::tables::Spread;
use crate::metrics::{Column as MetricColumn, METRICS};

/// Mean and spread of the accuracy matrix of one method on one stream, over seeds.
#[derive(Debug, Clone)]
pub struct MatrixStats {
    /// Method name.
    pub method: String,
    /// Completed runs averaged.
    pub n: usize,
    /// `mean[i][j]`: accuracy on task j+1 after task i (row 0: initialization).
    pub mean: Vec<Vec<f64>>,
    /// Sample sd (0 with a single run).
    pub sd: Vec<Vec<f64>>,
}

/// Groups the long accuracy frame of completed runs into per-method matrix statistics for
/// `stream`, methods sorted by name.
pub fn matrix_stats(
    accuracy: &DataFrame,
    metrics: &DataFrame,
    stream: &str,
) -> PolarsResult<Vec<MatrixStats>> {
    let completed: Vec<String> = {
        let ids = metrics.column("run_id")?.str()?.clone();
        let status = metrics.column("status")?.str()?.clone();
        (0..metrics.height())
            .filter(|&i| status.get(i) == Some("completed"))
            .filter_map(|i| ids.get(i).map(str::to_string))
            .collect()
    };
    let run = accuracy.column("run_id")?.str()?.clone();
    let st = accuracy.column("stream")?.str()?.clone();
    let method = accuracy.column("method")?.str()?.clone();
    let after = accuracy.column("after_task")?.u32()?.clone();
    let eval = accuracy.column("eval_task")?.u32()?.clone();
    let acc = accuracy.column("accuracy")?.f64()?.clone();
    let rows: Vec<usize> = (0..accuracy.height())
        .filter(|&i| {
            st.get(i) == Some(stream)
                && run.get(i).is_some_and(|r| completed.iter().any(|c| c == r))
        })
        .collect();
    let tasks = rows.iter().filter_map(|&i| eval.get(i)).max().unwrap_or(0) as usize;
    let mut methods: Vec<String> = rows
        .iter()
        .filter_map(|&i| method.get(i).map(str::to_string))
        .collect();
    methods.sort();
    methods.dedup();
    Ok(methods
        .into_iter()
        .map(|m| {
            let mine: Vec<usize> = rows
                .iter()
                .copied()
                .filter(|&i| method.get(i) == Some(m.as_str()))
                .collect();
            let mut runs: Vec<&str> = mine.iter().filter_map(|&i| run.get(i)).collect();
            runs.sort();
            runs.dedup();
            let mut cells = vec![vec![Vec::new(); tasks]; tasks + 1];
            for &i in &mine {
                if let (Some(a), Some(e), Some(v)) = (after.get(i), eval.get(i), acc.get(i)) {
                    cells[a as usize][e as usize - 1].push(v);
                }
            }
            let reduce = |f: &dyn Fn(&[f64]) -> Option<f64>| -> Vec<Vec<f64>> {
                cells
                    .iter()
                    .map(|r| r.iter().map(|c| f(c).unwrap_or(0.0)).collect())
                    .collect()
            };
            MatrixStats {
                method: m,
                n: runs.len(),
                mean: reduce(&stats::mean),
                sd: reduce(&stats::sd),
            }
        })
        .collect())
}

fn register_fonts() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let regular: &'static [u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");
        let bold: &'static [u8] = include_bytes!("../../assets/fonts/DejaVuSans-Bold.ttf");
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, regular);
        let _ = plotters::style::register_font("sans-serif", FontStyle::Bold, bold);
    });
}

/// Tableau 10: distinguishable categorical colours.
const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

fn color(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

/// Viridis, linearly interpolated between 6 anchors; `v` in [0, 1].
fn viridis(v: f64) -> RGBColor {
    const A: [(f64, f64, f64); 6] = [
        (68.0, 1.0, 84.0),
        (65.0, 68.0, 135.0),
        (42.0, 120.0, 142.0),
        (34.0, 168.0, 132.0),
        (122.0, 209.0, 81.0),
        (253.0, 231.0, 37.0),
    ];
    let x = v.clamp(0.0, 1.0) * (A.len() - 1) as f64;
    let i = (x.floor() as usize).min(A.len() - 2);
    let f = x - i as f64;
    let mix = |a: f64, b: f64| (a + (b - a) * f).round() as u8;
    RGBColor(
        mix(A[i].0, A[i + 1].0),
        mix(A[i].1, A[i + 1].1),
        mix(A[i].2, A[i + 1].2),
    )
}

type DrawResult = Result<(), Box<dyn std::error::Error>>;

/// Axis numbers without a trailing ".0" on whole values.
fn tick(v: &f64) -> String {
    if (v - v.round()).abs() < 1e-9 {
        format!("{}", v.round() as i64)
    } else {
        format!("{v:.1}")
    }
}

/// Most panels per row of the one-panel-per-method figures.
const GRID_COLUMNS: usize = 6;

/// (rows, columns) of the panel grid for `n` methods.
fn grid(n: usize) -> (usize, usize) {
    let cols = n.clamp(1, GRID_COLUMNS);
    (n.max(1).div_ceil(cols), cols)
}

/// Pixel size of a figure of `n` panels of `w × h` in a [`grid`], plus `extra_w` (a legend) and
/// `extra_h` (the title).
fn grid_size(n: usize, (w, h): (u32, u32), extra_w: u32, extra_h: u32) -> (u32, u32) {
    let (rows, cols) = grid(n);
    (w * cols as u32 + extra_w, h * rows as u32 + extra_h)
}

/// Writes one figure as `<base>.png` and `<base>.svg` (each atomically) with the same drawing code.
fn render(
    base: &Path,
    size: (u32, u32),
    draw: impl Fn(DrawingArea<SVGBackend, Shift>) -> DrawResult,
    draw_png: impl Fn(DrawingArea<BitMapBackend, Shift>) -> DrawResult,
) -> Result<Vec<PathBuf>, ExportError> {
    register_fonts();
    let fail = |path: &Path, e: Box<dyn std::error::Error>| ExportError::Plot {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let png = base.with_extension("png");
    let tmp = base.with_extension(format!("png.tmp-{}.png", std::process::id()));
    {
        let root = BitMapBackend::new(&tmp, size).into_drawing_area();
        root.fill(&WHITE).map_err(|e| fail(&png, e.into()))?;
        draw_png(root.clone()).map_err(|e| fail(&png, e))?;
        root.present().map_err(|e| fail(&png, e.into()))?;
    }
    std::fs::rename(&tmp, &png).map_err(|e| fail(&png, e.into()))?;
    let svg = base.with_extension("svg");
    let mut text = String::new();
    {
        let root = SVGBackend::with_string(&mut text, size).into_drawing_area();
        root.fill(&WHITE).map_err(|e| fail(&svg, e.into()))?;
        draw(root.clone()).map_err(|e| fail(&svg, e))?;
        root.present().map_err(|e| fail(&svg, e.into()))?;
    }
    crate::experiment::store::write_atomic(&svg, text.as_bytes())?;
    Ok(vec![png, svg])
}

/// Calls `f` once for the SVG and once for the PNG backend.
macro_rules! both {
    ($f:expr) => {
        (
            |root: DrawingArea<SVGBackend, Shift>| $f(root),
            |root: DrawingArea<BitMapBackend, Shift>| $f(root),
        )
    };
}

fn heatmap<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    stream: &str,
    data: &[MatrixStats],
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    let title = format!("Test accuracy (%) after each task — {stream}");
    let root = root.titled(&title, ("sans-serif", 24).into_font())?;
    let (body, legend) = root.split_horizontally(root.dim_in_pixel().0 - 90);
    let panels = body.split_evenly(grid(data.len()));
    for (panel, m) in panels.iter().zip(data) {
        let t = m.mean.first().map_or(0, Vec::len);
        let mut chart = ChartBuilder::on(panel)
            .caption(format!("{} (n = {})", m.method, m.n), ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(50)
            .y_label_area_size(70)
            .build_cartesian_2d(0.5f64..t as f64 + 0.5, -0.5f64..t as f64 + 0.5)?;
        chart
            .configure_mesh()
            .disable_mesh()
            .x_labels(t)
            .y_labels(t + 1)
            .x_label_formatter(&|x| format!("{}", x.round() as i64))
            .y_label_formatter(&|y| {
                let row = t as i64 - y.round() as i64;
                if row == 0 {
                    "init".into()
                } else {
                    format!("{row}")
                }
            })
            .x_desc("evaluated task")
            .y_desc("after training task")
            .label_style(("sans-serif", 15))
            .axis_desc_style(("sans-serif", 16))
            .draw()?;
        for (i, row) in m.mean.iter().enumerate() {
            let y = (t - i) as f64;
            for (j, &v) in row.iter().enumerate() {
                let x = (j + 1) as f64;
                chart.draw_series(std::iter::once(Rectangle::new(
                    [(x - 0.5, y - 0.5), (x + 0.5, y + 0.5)],
                    viridis(v).filled(),
                )))?;
                if t <= 12 {
                    let ink = if v > 0.6 { BLACK } else { WHITE };
                    chart.draw_series(std::iter::once(Text::new(
                        format!("{:.0}", v * 100.0),
                        (x, y),
                        ("sans-serif", if t <= 6 { 15 } else { 11 })
                            .into_font()
                            .color(&ink)
                            .pos(plotters::style::text_anchor::Pos::new(
                                plotters::style::text_anchor::HPos::Center,
                                plotters::style::text_anchor::VPos::Center,
                            )),
                    )))?;
                }
            }
        }
    }
    // Colour bar.
    let mut bar = ChartBuilder::on(&legend)
        .margin_top(60)
        .margin_bottom(60)
        .margin_right(10)
        .y_label_area_size(45)
        .build_cartesian_2d(0f64..1f64, 0f64..100f64)?;
    bar.configure_mesh()
        .disable_mesh()
        .disable_x_axis()
        .y_labels(6)
        .y_label_formatter(&|v| format!("{}%", tick(v)))
        .label_style(("sans-serif", 14))
        .draw()?;
    for k in 0..100 {
        let v = k as f64;
        bar.draw_series(std::iter::once(Rectangle::new(
            [(0.0, v), (1.0, v + 1.0)],
            viridis(v / 100.0).filled(),
        )))?;
    }
    Ok(())
}

fn task_curves<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    stream: &str,
    data: &[MatrixStats],
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    let title = format!(
        "Accuracy on each task as later tasks are learned — {stream} (mean ± sd over seeds)"
    );
    let root = root.titled(&title, ("sans-serif", 22).into_font())?;
    let panels = root.split_evenly(grid(data.len()));
    for (panel, m) in panels.iter().zip(data) {
        let t = m.mean.first().map_or(0, Vec::len);
        let mut chart = ChartBuilder::on(panel)
            .caption(format!("{} (n = {})", m.method, m.n), ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(50)
            .y_label_area_size(60)
            .build_cartesian_2d(0.8f64..t as f64 + 0.2, 0f64..100f64)?;
        chart
            .configure_mesh()
            .x_labels(t)
            .x_label_formatter(&|x| format!("{}", x.round() as i64))
            .x_desc("after training task")
            .y_desc("test accuracy (%)")
            .y_label_formatter(&tick)
            .label_style(("sans-serif", 15))
            .axis_desc_style(("sans-serif", 16))
            .light_line_style(WHITE.mix(0.0))
            .draw()?;
        for j in 0..t {
            let points: Vec<(f64, f64, f64)> = (j + 1..=t)
                .map(|k| (k as f64, m.mean[k][j], m.sd[k][j]))
                .collect();
            band_line(
                &mut chart,
                &points,
                color(j),
                2,
                3,
                format!("task {}", j + 1),
            )?;
        }
        legend(&mut chart, 13)?;
    }
    Ok(())
}

/// The series legend, lower left on a translucent box.
fn legend<'a, DB: DrawingBackend + 'a>(
    chart: &mut ChartContext<'a, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>,
    font_size: u32,
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .label_font(("sans-serif", font_size))
        .draw()?;
    Ok(())
}

/// A mean line with markers and a ± sd band (clipped to [0, 1]); `points` are
/// (x, mean, sd) as fractions, drawn in percent.
fn band_line<DB: DrawingBackend>(
    chart: &mut ChartContext<'_, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>,
    points: &[(f64, f64, f64)],
    c: RGBColor,
    width: u32,
    marker: u32,
    label: String,
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    if points.len() > 1 {
        let upper = points
            .iter()
            .map(|&(x, m, s)| (x, 100.0 * (m + s).min(1.0)));
        let lower = points
            .iter()
            .rev()
            .map(|&(x, m, s)| (x, 100.0 * (m - s).max(0.0)));
        chart.draw_series(std::iter::once(Polygon::new(
            upper.chain(lower).collect::<Vec<_>>(),
            c.mix(0.18),
        )))?;
    }
    let line: Vec<(f64, f64)> = points.iter().map(|&(x, m, _)| (x, 100.0 * m)).collect();
    chart
        .draw_series(LineSeries::new(line.clone(), c.stroke_width(width)))?
        .label(label)
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(3)));
    chart.draw_series(line.into_iter().map(|p| Circle::new(p, marker, c.filled())))?;
    Ok(())
}

fn first_task<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    stream: &str,
    data: &[MatrixStats],
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    let t = data
        .first()
        .and_then(|m| m.mean.first())
        .map_or(0, Vec::len);
    let low = data
        .iter()
        .flat_map(|m| (1..=t).map(move |k| 100.0 * (m.mean[k][0] - m.sd[k][0])))
        .fold(100.0f64, f64::min);
    let y0 = ((low - 5.0) / 10.0).floor().clamp(0.0, 9.0) * 10.0;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("Forgetting of task 1 — {stream} (mean ± sd over seeds)"),
            ("sans-serif", 22),
        )
        .margin(15)
        .x_label_area_size(50)
        .y_label_area_size(60)
        .build_cartesian_2d(0.8f64..t as f64 + 0.2, y0..100f64)?;
    chart
        .configure_mesh()
        .x_labels(t)
        .x_label_formatter(&|x| format!("{}", x.round() as i64))
        .x_desc("after training task")
        .y_desc("test accuracy on task 1 (%)")
        .y_label_formatter(&tick)
        .label_style(("sans-serif", 15))
        .axis_desc_style(("sans-serif", 16))
        .light_line_style(WHITE.mix(0.0))
        .draw()?;
    for (i, m) in data.iter().enumerate() {
        let points: Vec<(f64, f64, f64)> = (1..=t)
            .map(|k| (k as f64, m.mean[k][0], m.sd[k][0]))
            .collect();
        band_line(
            &mut chart,
            &points,
            color(i),
            3,
            4,
            format!("{} (n = {})", m.method, m.n),
        )?;
    }
    legend(&mut chart, 15)?;
    Ok(())
}

/// The metrics drawn as bars: the headline metrics of [`METRICS`].
fn bar_metrics() -> Vec<&'static MetricColumn> {
    METRICS.iter().filter(|c| c.headline).collect()
}

/// Up to this many methods, the metric panels stand side by side.
const BAR_SIDE_BY_SIDE: usize = 6;

fn bars<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    stream: &str,
    summary: &DataFrame,
    spread: Spread,
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    let st = summary.column("stream")?.str()?.clone();
    let method = summary.column("method")?.str()?.clone();
    let rows: Vec<usize> = (0..summary.height())
        .filter(|&i| st.get(i) == Some(stream))
        .collect();
    let names: Vec<String> = rows
        .iter()
        .map(|&i| method.get(i).unwrap_or("").to_string())
        .collect();
    let spread_name = match spread {
        Spread::Sd => "sd",
        Spread::Sem => "sem",
    };
    // Error bars only where a spread exists (two or more completed seeds).
    let first_spread = summary
        .column(&format!("{}_{spread_name}", bar_metrics()[0].name))?
        .f64()?
        .clone();
    let any_spread = rows
        .iter()
        .any(|&i| first_spread.get(i).is_some_and(f64::is_finite));
    let title = if any_spread {
        format!(
            "Metrics per method — {stream} (bars: mean, error bars: ± {spread_name} over seeds)"
        )
    } else {
        format!("Metrics per method — {stream} (one seed per method: no error bars)")
    };
    let root = root.titled(&title, ("sans-serif", 22).into_font())?;
    // Few methods: the metrics side by side; many: one metric per row, names written upwards.
    let stacked = names.len() > BAR_SIDE_BY_SIDE;
    let panels = if stacked {
        root.split_evenly((bar_metrics().len(), 1))
    } else {
        root.split_evenly((1, bar_metrics().len()))
    };
    for (panel, column) in panels.iter().zip(bar_metrics()) {
        let (metric, label) = (column.name, column.axis);
        let means = summary.column(&format!("{metric}_mean"))?.f64()?.clone();
        let errs = summary
            .column(&format!("{metric}_{spread_name}"))?
            .f64()?
            .clone();
        let vals: Vec<(f64, Option<f64>)> = rows
            .iter()
            .map(|&i| {
                (
                    100.0 * means.get(i).unwrap_or(0.0),
                    errs.get(i).filter(|e| e.is_finite()).map(|e| 100.0 * e),
                )
            })
            .collect();
        bar_panel(panel, &names, &vals, label, stacked)?;
    }
    Ok(())
}

/// One panel of the bar figure: a bar (and error bar) per method, for one metric.
fn bar_panel<DB: DrawingBackend>(
    panel: &DrawingArea<DB, Shift>,
    names: &[String],
    vals: &[(f64, Option<f64>)],
    label: &str,
    stacked: bool,
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    let hi = vals
        .iter()
        .map(|(m, e)| m + e.unwrap_or(0.0))
        .fold(0.0f64, f64::max);
    let lo = vals
        .iter()
        .map(|(m, e)| m - e.unwrap_or(0.0))
        .fold(0.0f64, f64::min);
    let pad = ((hi - lo) * 0.1).max(0.5);
    let n = names.len();
    let mut chart = ChartBuilder::on(panel)
        .margin(12)
        .x_label_area_size(if stacked { 140 } else { 70 })
        .y_label_area_size(55)
        .build_cartesian_2d(
            -0.5f64..n as f64 - 0.5,
            (lo - if lo < 0.0 { pad } else { 0.0 })..hi + pad,
        )?;
    let names_ref = names.to_vec();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n.max(1))
        .x_label_formatter(&move |x| {
            let i = x.round();
            if (x - i).abs() < 0.01 && i >= 0.0 {
                let name = names_ref.get(i as usize).cloned().unwrap_or_default();
                if stacked {
                    // Labels are centred on their tick: a blank first half keeps the
                    // upright name below the axis.
                    format!("{}{name}", " ".repeat(name.chars().count() + 7))
                } else {
                    name
                }
            } else {
                String::new()
            }
        })
        .y_desc(label)
        .y_label_formatter(&tick)
        .label_style(("sans-serif", 14))
        .x_label_style(if stacked {
            ("sans-serif", 14)
                .into_font()
                .transform(FontTransform::Rotate90)
        } else {
            ("sans-serif", 14).into_font()
        })
        .axis_desc_style(("sans-serif", 16))
        .light_line_style(WHITE.mix(0.0))
        .draw()?;
    for (i, (m, e)) in vals.iter().enumerate() {
        let x = i as f64;
        let c = color(i);
        chart.draw_series(std::iter::once(Rectangle::new(
            [(x - 0.35, 0.0), (x + 0.35, *m)],
            c.mix(0.85).filled(),
        )))?;
        if let Some(e) = e {
            chart.draw_series(std::iter::once(ErrorBar::new_vertical(
                x,
                m - e,
                *m,
                m + e,
                BLACK.stroke_width(2),
                12,
            )))?;
        }
    }
    if lo < 0.0 {
        chart.draw_series(LineSeries::new(
            vec![(-0.5, 0.0), (n as f64 - 0.5, 0.0)],
            BLACK.stroke_width(1),
        ))?;
    }
    Ok(())
}

/// Draws every figure of `stream` into `dir` as PNG and SVG; returns the files written.
pub fn write_figures(
    dir: &Path,
    stream: &str,
    accuracy: &DataFrame,
    metrics: &DataFrame,
    summary: &DataFrame,
    spread: Spread,
) -> Result<Vec<PathBuf>, ExportError> {
    std::fs::create_dir_all(dir).map_err(|source| crate::experiment::store::StoreError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let data = matrix_stats(accuracy, metrics, stream).map_err(|e| ExportError::Encode {
        path: dir.to_path_buf(),
        source: e,
    })?;
    if data.is_empty() {
        return Ok(Vec::new());
    }
    let panels = data.len();
    let mut written = Vec::new();
    let (a, b) = both!(|root| heatmap(root, stream, &data));
    written.extend(render(
        &dir.join(format!("{stream}-accuracy-matrix")),
        grid_size(panels, (430, 480), 90, 40),
        a,
        b,
    )?);
    let (a, b) = both!(|root| task_curves(root, stream, &data));
    written.extend(render(
        &dir.join(format!("{stream}-task-accuracy")),
        grid_size(panels, (520, 450), 0, 30),
        a,
        b,
    )?);
    let (a, b) = both!(|root| first_task(root, stream, &data));
    written.extend(render(
        &dir.join(format!("{stream}-first-task")),
        (760, 500),
        a,
        b,
    )?);
    let (a, b) = both!(|root| stability_plasticity(root, stream, summary, spread));
    written.extend(render(
        &dir.join(format!("{stream}-stability-plasticity")),
        (1000 + LEGEND_WIDTH, 720),
        a,
        b,
    )?);
    let (a, b) = both!(|root| bars(root, stream, summary, spread));
    let methods = data.len() as u32;
    written.extend(render(
        &dir.join(format!("{stream}-metrics")),
        if data.len() > BAR_SIDE_BY_SIDE {
            (
                (90 + 60 * methods).max(900),
                420 * bar_metrics().len() as u32 + 40,
            )
        } else {
            (1500, 440)
        },
        a,
        b,
    )?);
    Ok(written)
}

/// The suffix that names a method's GRAPES twin (`sgd` → `sgd+grapes`).
const GRAPES_SUFFIX: &str = "+grapes";

/// One method's point in the stability–plasticity plane: (name, learning accuracy, its
/// spread, forgetting, its spread), in percent.
type PlanePoint = (String, f64, Option<f64>, f64, Option<f64>);

/// Forgetting (y) against learning accuracy (x) per method, ± the spread over seeds in both
/// directions: up and to the left forgets more and learns less. A method and its GRAPES twin
/// (`name` and `name+grapes`) share a colour, the twin a hollow marker, joined by an arrow from
/// the method to its twin, so the figure says at a glance what GRAPES does to each.
fn stability_plasticity<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    stream: &str,
    summary: &DataFrame,
    spread: Spread,
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    let spread_name = match spread {
        Spread::Sd => "sd",
        Spread::Sem => "sem",
    };
    let st = summary.column("stream")?.str()?.clone();
    let method = summary.column("method")?.str()?.clone();
    let col =
        |name: &str| -> PolarsResult<Float64Chunked> { Ok(summary.column(name)?.f64()?.clone()) };
    let (la, la_e) = (
        col("learning_accuracy_mean")?,
        col(&format!("learning_accuracy_{spread_name}"))?,
    );
    let (fg, fg_e) = (
        col("forgetting_mean")?,
        col(&format!("forgetting_{spread_name}"))?,
    );
    let points: Vec<PlanePoint> = (0..summary.height())
        .filter(|&i| st.get(i) == Some(stream))
        .filter_map(|i| {
            let pct = |v: Option<f64>| v.filter(|v| v.is_finite()).map(|v| 100.0 * v);
            Some((
                method.get(i)?.to_string(),
                pct(la.get(i))?,
                pct(la_e.get(i)),
                pct(fg.get(i))?,
                pct(fg_e.get(i)),
            ))
        })
        .collect();
    let title =
        format!("Stability–plasticity — {stream} (± {spread_name} over seeds; hollow: + GRAPES)");
    let root = root.titled(&title, ("sans-serif", 22).into_font())?;
    if points.is_empty() {
        return Ok(());
    }
    // The legend gets its own column, so it never hides a point.
    let (width, _) = root.dim_in_pixel();
    let (root, key) = root.split_horizontally(width.saturating_sub(LEGEND_WIDTH));
    let span = |v: &dyn Fn(&PlanePoint) -> (f64, f64)| {
        let (lo, hi) = points
            .iter()
            .map(v)
            .fold((f64::MAX, f64::MIN), |(a, b), (l, h)| (a.min(l), b.max(h)));
        let pad = ((hi - lo) * 0.08).max(0.5);
        (lo - pad)..(hi + pad)
    };
    let x = span(&|p| (p.1 - p.2.unwrap_or(0.0), p.1 + p.2.unwrap_or(0.0)));
    let y = span(&|p| (p.3 - p.4.unwrap_or(0.0), p.3 + p.4.unwrap_or(0.0)));
    let mut chart = ChartBuilder::on(&root)
        .margin(16)
        .x_label_area_size(55)
        .y_label_area_size(65)
        .build_cartesian_2d(x, y)?;
    chart
        .configure_mesh()
        .x_desc("learning accuracy (%): each task right after it is learned")
        .y_desc("forgetting (%)")
        .x_label_formatter(&tick)
        .y_label_formatter(&tick)
        .label_style(("sans-serif", 14))
        .axis_desc_style(("sans-serif", 16))
        .light_line_style(BLACK.mix(0.05))
        .draw()?;
    // Colours by base method, in order of first appearance.
    let base_of = |name: &str| name.strip_suffix(GRAPES_SUFFIX).unwrap_or(name).to_string();
    let mut bases: Vec<String> = Vec::new();
    for p in &points {
        let b = base_of(&p.0);
        if !bases.contains(&b) {
            bases.push(b);
        }
    }
    for (k, base) in bases.iter().enumerate() {
        let c = color(k);
        let own = points.iter().find(|p| &p.0 == base);
        let twin = points
            .iter()
            .find(|p| p.0 == format!("{base}{GRAPES_SUFFIX}"));
        if let (Some(a), Some(b)) = (own, twin) {
            chart.draw_series(std::iter::once(PathElement::new(
                vec![(a.1, a.3), (b.1, b.3)],
                c.mix(0.6).stroke_width(2),
            )))?;
        }
        for (p, hollow) in own
            .map(|p| (p, false))
            .into_iter()
            .chain(twin.map(|p| (p, true)))
        {
            if let Some(e) = p.2 {
                chart.draw_series(std::iter::once(ErrorBar::new_horizontal(
                    p.3,
                    p.1 - e,
                    p.1,
                    p.1 + e,
                    c.mix(0.7).stroke_width(1),
                    8,
                )))?;
            }
            if let Some(e) = p.4 {
                chart.draw_series(std::iter::once(ErrorBar::new_vertical(
                    p.1,
                    p.3 - e,
                    p.3,
                    p.3 + e,
                    c.mix(0.7).stroke_width(1),
                    8,
                )))?;
            }
            let style = if hollow {
                c.stroke_width(3)
            } else {
                c.filled()
            };
            chart.draw_series(std::iter::once(Circle::new((p.1, p.3), 7, style)))?;
            if bases.len() > PALETTE.len() {
                // Colours repeat: the names say which point is which.
                chart.draw_series(std::iter::once(Text::new(
                    p.0.clone(),
                    (p.1, p.3),
                    ("sans-serif", 13).into_font().color(&BLACK.mix(0.8)),
                )))?;
            }
        }
    }
    // The legend: one colour per method, then the twins' marker.
    let font = ("sans-serif", 14).into_font();
    let row = |i: usize| 60 + 24 * i as i32;
    for (k, base) in bases.iter().enumerate() {
        key.draw(&Circle::new((18, row(k)), 6, color(k).filled()))?;
        key.draw(&Text::new(base.clone(), (32, row(k) - 8), font.clone()))?;
    }
    if points.iter().any(|p| p.0.ends_with(GRAPES_SUFFIX)) {
        let i = bases.len() + 1;
        key.draw(&Circle::new((18, row(i)), 6, BLACK.stroke_width(2)))?;
        key.draw(&Text::new(
            "+ GRAPES (line from",
            (32, row(i) - 8),
            font.clone(),
        ))?;
        key.draw(&Text::new(
            "the method to it)",
            (32, row(i) + 10),
            font.clone(),
        ))?;
    }
    Ok(())
}

/// Pixels of the stability–plasticity figure's legend column.
const LEGEND_WIDTH: u32 = 220;

/// Mean and sd over seeds of the within-task curves of one method: per evaluated task, points
/// (progress, mean, sd) in order of progress.
type CurveStats = (String, usize, Vec<Vec<(f64, f64, f64)>>);

fn curve_stats(curves: &DataFrame, stream: &str) -> PolarsResult<Vec<CurveStats>> {
    let st = curves.column("stream")?.str()?.clone();
    let method = curves.column("method")?.str()?.clone();
    let run = curves.column("run_id")?.str()?.clone();
    let progress = curves.column("progress")?.f64()?.clone();
    let eval = curves.column("eval_task")?.u32()?.clone();
    let acc = curves.column("accuracy")?.f64()?.clone();
    let rows: Vec<usize> = (0..curves.height())
        .filter(|&i| st.get(i) == Some(stream))
        .collect();
    let mut methods: Vec<&str> = rows.iter().filter_map(|&i| method.get(i)).collect();
    methods.sort();
    methods.dedup();
    let tasks = rows.iter().filter_map(|&i| eval.get(i)).max().unwrap_or(0) as usize;
    Ok(methods
        .into_iter()
        .map(|m| {
            let mine: Vec<usize> = rows
                .iter()
                .copied()
                .filter(|&i| method.get(i) == Some(m))
                .collect();
            let mut runs: Vec<&str> = mine.iter().filter_map(|&i| run.get(i)).collect();
            runs.sort();
            runs.dedup();
            let per_task = (1..=tasks as u32)
                .map(|j| {
                    // Group by progress (identical across seeds of one config).
                    let mut by_x: Vec<(f64, Vec<f64>)> = Vec::new();
                    for &i in mine.iter().filter(|&&i| eval.get(i) == Some(j)) {
                        let (Some(x), Some(a)) = (progress.get(i), acc.get(i)) else {
                            continue;
                        };
                        match by_x.iter_mut().find(|(px, _)| (*px - x).abs() < 1e-9) {
                            Some((_, v)) => v.push(a),
                            None => by_x.push((x, vec![a])),
                        }
                    }
                    by_x.sort_by(|a, b| a.0.total_cmp(&b.0));
                    by_x.into_iter()
                        .map(|(x, v)| {
                            (
                                x,
                                stats::mean(&v).unwrap_or(0.0),
                                stats::sd(&v).unwrap_or(0.0),
                            )
                        })
                        .collect()
                })
                .collect();
            (m.to_string(), runs.len(), per_task)
        })
        .collect())
}

fn learning_curves<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    stream: &str,
    data: &[CurveStats],
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    let title =
        format!("Accuracy on each seen task during training — {stream} (mean ± sd over seeds)");
    let root = root.titled(&title, ("sans-serif", 22).into_font())?;
    let panels = root.split_evenly(grid(data.len()));
    for (panel, (method, n, per_task)) in panels.iter().zip(data) {
        let t = per_task.len();
        let mut chart = ChartBuilder::on(panel)
            .caption(format!("{method} (n = {n})"), ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(50)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..t as f64, 0f64..100f64)?;
        chart
            .configure_mesh()
            .x_labels(t + 1)
            .x_label_formatter(&tick)
            .y_label_formatter(&tick)
            .x_desc("training progress (tasks)")
            .y_desc("test accuracy (%)")
            .label_style(("sans-serif", 15))
            .axis_desc_style(("sans-serif", 16))
            .light_line_style(WHITE.mix(0.0))
            .draw()?;
        for (j, points) in per_task.iter().enumerate() {
            if !points.is_empty() {
                band_line(
                    &mut chart,
                    points,
                    color(j),
                    2,
                    2,
                    format!("task {}", j + 1),
                )?;
            }
        }
        legend(&mut chart, 13)?;
    }
    Ok(())
}

/// Draws `<stream>-learning-curves` (PNG and SVG) when runs of `stream` recorded within-task
/// curves; returns the files written (none otherwise).
pub fn write_learning_curves(
    dir: &Path,
    stream: &str,
    curves: &DataFrame,
) -> Result<Vec<PathBuf>, ExportError> {
    let data = curve_stats(curves, stream).map_err(|e| ExportError::Encode {
        path: dir.to_path_buf(),
        source: e,
    })?;
    if data.is_empty() {
        return Ok(Vec::new());
    }
    std::fs::create_dir_all(dir).map_err(|source| crate::experiment::store::StoreError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let (a, b) = both!(|root| learning_curves(root, stream, &data));
    render(
        &dir.join(format!("{stream}-learning-curves")),
        grid_size(data.len(), (560, 450), 0, 30),
        a,
        b,
    )
}

/// The GRAPES figure: a forest plot per (stream, metric of
/// [`super::grapes_effect::EFFECT_METRICS`]), rows = the streams, columns = the metrics: per
/// method pair, the mean paired difference with − without GRAPES (points) and its 95% CI
/// (bars), in percentage points, with the zero line. Green: the t-test says GRAPES helps at
/// `alpha`; red: hurts; grey: no detectable effect. Writes nothing without pairs.
pub fn write_grapes_effect(
    dir: &Path,
    frame: &DataFrame,
    alpha: f64,
) -> Result<Vec<PathBuf>, ExportError> {
    if frame.height() == 0 {
        return Ok(Vec::new());
    }
    std::fs::create_dir_all(dir).map_err(|source| crate::experiment::store::StoreError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let streams: Vec<String> = {
        let mut s: Vec<String> = frame
            .column("stream")
            .and_then(|c| Ok(c.str()?.iter().flatten().map(str::to_string).collect()))
            .map_err(|e| ExportError::Encode {
                path: dir.to_path_buf(),
                source: e,
            })?;
        s.dedup();
        s
    };
    // The most pairs of one stream (rows of its panels).
    let methods = frame
        .column("metric")
        .and_then(|c| Ok(c.str()?.iter().filter(|m| *m == Some("acc")).count()))
        .unwrap_or(0)
        .div_ceil(streams.len().max(1));
    let (a, b) = both!(|root| grapes_effect(root, frame, &streams, alpha));
    render(
        &dir.join("grapes-effect"),
        (
            1600,
            40 + streams.len() as u32 * (120 + 26 * methods.max(3) as u32),
        ),
        a,
        b,
    )
}

fn grapes_effect<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    frame: &DataFrame,
    streams: &[String],
    alpha: f64,
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    use super::grapes_effect::EFFECT_METRICS;
    let st = frame.column("stream")?.str()?.clone();
    let base = frame.column("method")?.str()?.clone();
    let metric = frame.column("metric")?.str()?.clone();
    let n = frame.column("n")?.u32()?.clone();
    let diff = frame.column("diff_mean")?.f64()?.clone();
    let low = frame.column("diff_ci95_low")?.f64()?.clone();
    let high = frame.column("diff_ci95_high")?.f64()?.clone();
    let p = frame.column("p_t")?.f64()?.clone();
    let root = root.titled(
        &format!("GRAPES on every method: with − without, paired by seed (mean, 95% CI; points) — green: helps, red: hurts, grey: no detectable effect (paired t, α = {alpha})"),
        ("sans-serif", 19).into_font(),
    )?;
    let rows = root.split_evenly((streams.len(), EFFECT_METRICS.len()));
    for (r, s) in streams.iter().enumerate() {
        for (c, name) in EFFECT_METRICS.iter().enumerate() {
            let column = MetricColumn::named(name).expect("a known metric");
            let idx: Vec<usize> = (0..frame.height())
                .filter(|&i| st.get(i) == Some(s.as_str()) && metric.get(i) == Some(*name))
                .collect();
            let names: Vec<String> = idx
                .iter()
                .map(|&i| base.get(i).unwrap_or("").to_string())
                .collect();
            let pts: Vec<(f64, Option<(f64, f64)>)> = idx
                .iter()
                .map(|&i| {
                    (
                        100.0 * diff.get(i).unwrap_or(0.0),
                        low.get(i)
                            .zip(high.get(i))
                            .map(|(l, h)| (100.0 * l, 100.0 * h)),
                    )
                })
                .collect();
            let lo = pts
                .iter()
                .map(|(m, ci)| ci.map_or(*m, |c| c.0))
                .fold(0.0f64, f64::min);
            let hi = pts
                .iter()
                .map(|(m, ci)| ci.map_or(*m, |c| c.1))
                .fold(0.0f64, f64::max);
            let pad = ((hi - lo) * 0.08).max(0.2);
            let k = names.len().max(1);
            let panel = &rows[r * EFFECT_METRICS.len() + c];
            let caption = format!("{s} — Δ {}", column.axis);
            let mut chart = ChartBuilder::on(panel)
                .caption(caption, ("sans-serif", 15))
                .margin(8)
                .x_label_area_size(30)
                .y_label_area_size(if c == 0 { 120 } else { 10 })
                .build_cartesian_2d((lo - pad)..(hi + pad), -0.5f64..k as f64 - 0.5)?;
            let names_ref = names.clone();
            let first = c == 0;
            chart
                .configure_mesh()
                .disable_y_mesh()
                .y_labels(k)
                .y_label_formatter(&move |y| {
                    let i = y.round();
                    if first && (y - i).abs() < 0.01 && i >= 0.0 {
                        // Top to bottom in the frame's order.
                        names_ref
                            .get(names_ref.len().saturating_sub(1 + i as usize))
                            .cloned()
                            .unwrap_or_default()
                    } else {
                        String::new()
                    }
                })
                .x_label_formatter(&tick)
                .label_style(("sans-serif", 13))
                .light_line_style(WHITE.mix(0.0))
                .draw()?;
            chart.draw_series(LineSeries::new(
                vec![(0.0, -0.5), (0.0, k as f64 - 0.5)],
                BLACK.stroke_width(1),
            ))?;
            for (j, (&i, (m, ci))) in idx.iter().zip(&pts).enumerate() {
                let y = (k - 1 - j) as f64;
                let verdict = super::grapes_effect::verdict(
                    column,
                    n.get(i).unwrap_or(0),
                    diff.get(i),
                    p.get(i),
                    alpha,
                );
                let col = match verdict.as_str() {
                    "helps" => RGBColor(44, 160, 44),
                    "hurts" => RGBColor(214, 39, 40),
                    _ => RGBColor(110, 110, 110),
                };
                if let Some((l, h)) = ci {
                    chart.draw_series(std::iter::once(ErrorBar::new_horizontal(
                        y,
                        *l,
                        *m,
                        *h,
                        col.stroke_width(2),
                        8,
                    )))?;
                }
                chart.draw_series(std::iter::once(Circle::new((*m, y), 5, col.filled())))?;
            }
        }
    }
    Ok(())
}
