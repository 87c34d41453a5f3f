//! Figures for papers, each as PNG, SVG and vector PDF: the accuracy-matrix heatmap, each
//! task's accuracy across the sequence (mean with a band over seeds), the first task's
//! forgetting, per-method bars with error bars per metric, the stability–plasticity plane
//! (forgetting against learning accuracy) and the GRAPES forest plot.
//!
//! # Style (one for every figure)
//! - **Print size**: every figure is laid out for a page [`Look::width_in`] inches wide
//!   (default 7 in, two columns; `clbench report --figure-width 3.5` for one column) at
//!   [`PPI`] pixels per inch, and its fonts are set in points at that size (title 9 pt, labels
//!   8 pt, ticks and legends 7 pt), so they stay legible when the PDF is included at its own
//!   width. The PNG is the same canvas (150 dpi).
//! - **Colour**: one colour-blind-safe palette, Okabe & Ito (2008), for methods; a method and
//!   its `+grapes` twin share their hue (the twin: lighter bar with an outline, hollow marker,
//!   dashed line), so the colour says which method and the shade says with or without GRAPES.
//!   Past the palette's eight colours the markers change shape (circle, square, triangle,
//!   diamond), so no two methods of a figure look alike.
//!   Ordered quantities (tasks, accuracy) use viridis. The forest plot's verdicts: bluish
//!   green helps, vermillion hurts, grey no detectable effect.
//! - **Order**: methods in the order of the experiment's config (the plan order its store
//!   records, [`Look::order`]), methods it does not list after them by name.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use polars::prelude::*;

use super::export::ExportError;
use super::fonts;
use super::pdf::PdfBackend;
use super::stats;
use super::tables::Spread;
use crate::metrics::{Column as MetricColumn, METRICS};

/// How figures are laid out: the page width they are made for and the order of methods.
#[derive(Debug, Clone, PartialEq)]
pub struct Look {
    /// Width of every figure in inches (7: two columns of a paper; 3.5: one).
    pub width_in: f64,
    /// Method names in the order the figures list them (the config's plan order).
    pub order: Vec<String>,
}

impl Default for Look {
    fn default() -> Self {
        Look {
            width_in: DEFAULT_WIDTH_IN,
            order: Vec::new(),
        }
    }
}

/// The default figure width: a two-column paper's text width, in inches.
pub const DEFAULT_WIDTH_IN: f64 = 7.0;
/// The narrowest and widest figure widths `--figure-width` accepts, in inches.
pub const WIDTH_RANGE_IN: (f64, f64) = (3.0, 20.0);

/// Pixels per inch of the canvas (the PNG's resolution; the PDF page is the canvas at this
/// resolution, so 72 / PPI points per pixel).
pub const PPI: f64 = 150.0;

/// Font sizes in points.
const TITLE_PT: f64 = 9.0;
const LABEL_PT: f64 = 8.0;
const TICK_PT: f64 = 7.0;
const CELL_PT: f64 = 6.5;

/// `inches` in canvas pixels.
fn px(inches: f64) -> u32 {
    (inches * PPI).round().max(0.0) as u32
}

/// The same, signed.
fn pxi(inches: f64) -> i32 {
    (inches * PPI).round() as i32
}

/// The figures' font at `points` (plotters' size is 1.24 × the em size its SVG and PDF use).
fn font(points: f64) -> FontDesc<'static> {
    ("sans-serif", points * PPI / 72.0 * 1.24).into_font()
}

/// The figures' font at `points`, or smaller (down to 5 pt) until `text` fits across `area`.
fn fitted<DB: DrawingBackend>(
    text: &str,
    area: &DrawingArea<DB, Shift>,
    points: f64,
) -> FontDesc<'static> {
    font(points_to_fit(
        text,
        area.dim_in_pixel().0.saturating_sub(px(0.05)),
        points,
    ))
}

/// The largest size from `points` down to 5 pt, in half points, at which `text` is at most
/// `room` pixels wide (5 pt when none is).
fn points_to_fit(text: &str, room: u32, points: f64) -> f64 {
    let mut pt = points;
    while pt > 5.0 && widest(&[text.to_string()], pt) > room {
        pt -= 0.5;
    }
    pt
}

/// Black text at `points`, anchored at `h` and centred vertically.
fn anchored(points: f64, h: HPos) -> TextStyle<'static> {
    font(points).color(&BLACK).pos(Pos::new(h, VPos::Center))
}

impl Look {
    /// Where `name` goes in [`Look::order`]: its position, or after every listed method.
    fn rank(&self, name: &str) -> usize {
        self.order
            .iter()
            .position(|m| m == name)
            .unwrap_or(self.order.len())
    }

    /// The base methods of `names` (each once, `+grapes` twins folded into their method), in
    /// the config's order: a twin without its method keeps its own name.
    fn bases(&self, names: &[String]) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for n in names {
            let base = base_of(n);
            let base = if names.contains(&base) { &base } else { n };
            if !out.iter().any(|b| b == base) {
                out.push(base.to_string());
            }
        }
        out.sort_by(|a, b| {
            let r = |n: &str| self.rank(n).min(self.rank(&twin_of(n)));
            r(a).cmp(&r(b)).then_with(|| a.cmp(b))
        });
        out
    }

    /// Panels per row of a one-panel-per-method figure: as many of at least `min_in` inches
    /// as fit across `usable_in`, at most 6 and at most `n`.
    fn columns(&self, n: usize, usable_in: f64, min_in: f64) -> usize {
        ((usable_in / min_in).floor() as usize)
            .clamp(1, 6)
            .min(n.max(1))
    }
}

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
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, fonts::REGULAR);
        let _ = plotters::style::register_font("sans-serif", FontStyle::Bold, fonts::BOLD);
    });
}

/// Okabe & Ito (2008), "Color Universal Design": eight colours told apart with every common
/// colour-vision deficiency. Yellow last: it is faint on white.
const PALETTE: [RGBColor; 8] = [
    RGBColor(0, 114, 178),   // blue
    RGBColor(230, 159, 0),   // orange
    RGBColor(0, 158, 115),   // bluish green
    RGBColor(213, 94, 0),    // vermillion
    RGBColor(86, 180, 233),  // sky blue
    RGBColor(204, 121, 167), // reddish purple
    RGBColor(0, 0, 0),       // black
    RGBColor(240, 228, 66),  // yellow
];

/// The forest plot's verdict colours (Okabe–Ito bluish green and vermillion, and grey).
const HELPS: RGBColor = RGBColor(0, 158, 115);
const HURTS: RGBColor = RGBColor(213, 94, 0);
const NO_EFFECT: RGBColor = RGBColor(120, 120, 120);
/// The grey of a key that shows a shade, not a method.
const KEY_GREY: RGBColor = RGBColor(110, 110, 110);

fn color(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

/// A marker's shape. Methods `8k … 8k + 7` of a figure get `SHAPES[k]`: the palette's
/// colours over again, each with another shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    Circle,
    Square,
    Triangle,
    Diamond,
}

const SHAPES: [Shape; 4] = [
    Shape::Circle,
    Shape::Square,
    Shape::Triangle,
    Shape::Diamond,
];

/// How the `i`-th method of a figure is drawn: its colour and its markers' shape.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Mark {
    color: RGBColor,
    shape: Shape,
}

/// The `i`-th method's mark: [`PALETTE`]'s colours in turn, the shape changing every eight.
fn mark(i: usize) -> Mark {
    Mark {
        color: color(i),
        shape: SHAPES[(i / PALETTE.len()) % SHAPES.len()],
    }
}

/// A circle of colour `color`: the mark of lines and keys that only a colour tells apart.
fn round(color: RGBColor) -> Mark {
    Mark {
        color,
        shape: Shape::Circle,
    }
}

/// The corners of `shape` around `(0, 0)`, about as large as a circle of radius `r` pixels
/// (a circle has none).
fn corners(shape: Shape, r: i32) -> Vec<(i32, i32)> {
    let scaled = |f: f64| (f64::from(r) * f).round() as i32;
    match shape {
        Shape::Circle => Vec::new(),
        Shape::Square => {
            let s = scaled(0.9);
            vec![(-s, -s), (s, -s), (s, s), (-s, s)]
        }
        Shape::Triangle => {
            let (h, w) = (scaled(1.2), scaled(1.05));
            vec![(0, -h), (w, scaled(0.7)), (-w, scaled(0.7))]
        }
        Shape::Diamond => {
            let d = scaled(1.25);
            vec![(0, -d), (d, 0), (0, d), (-d, 0)]
        }
    }
}

/// How a marker is painted: filled, outlined with white inside (covers what is under it), or
/// outlined only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Paint {
    Filled,
    Hollow,
    Outline,
}

/// Draws `mark`'s marker at `at` (coordinates of `area`), radius `r` pixels, outlines `stroke`
/// pixels wide.
fn draw_mark<DB, CT>(
    area: &DrawingArea<DB, CT>,
    at: CT::From,
    mark: Mark,
    r: i32,
    paint: Paint,
    stroke: u32,
) -> DrawResult
where
    DB: DrawingBackend,
    DB::ErrorType: 'static,
    CT: CoordTranslate,
    CT::From: Clone,
{
    let c = mark.color;
    if mark.shape == Shape::Circle {
        match paint {
            Paint::Filled => area.draw(&Circle::new(at, r, c.filled()))?,
            Paint::Hollow => {
                area.draw(&Circle::new(at.clone(), r, WHITE.filled()))?;
                area.draw(&Circle::new(at, r, c.stroke_width(stroke)))?;
            }
            Paint::Outline => area.draw(&Circle::new(at, r, c.stroke_width(stroke)))?,
        }
        return Ok(());
    }
    let corners = corners(mark.shape, r);
    let mut closed = corners.clone();
    closed.push(corners[0]);
    match paint {
        Paint::Filled => {
            area.draw(&(EmptyElement::at(at) + Polygon::new(corners, c.filled())))?;
        }
        Paint::Hollow => {
            area.draw(&(EmptyElement::at(at.clone()) + Polygon::new(corners, WHITE.filled())))?;
            area.draw(&(EmptyElement::at(at) + PathElement::new(closed, c.stroke_width(stroke))))?;
        }
        Paint::Outline => {
            area.draw(&(EmptyElement::at(at) + PathElement::new(closed, c.stroke_width(stroke))))?;
        }
    }
    Ok(())
}

/// `c` mixed with white: the `+grapes` twin's lighter fill.
fn lighter(c: RGBColor, keep: f64) -> RGBColor {
    let m = |v: u8| (255.0 - (255.0 - f64::from(v)) * keep).round() as u8;
    RGBColor(m(c.0), m(c.1), m(c.2))
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

/// Task `j` of `t` on viridis, stopping short of its faint yellow end.
fn task_color(j: usize, t: usize) -> RGBColor {
    viridis(0.85 * j as f64 / (t.max(2) - 1) as f64)
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

/// The widest of `texts` in the figures' font at `points`, in pixels (0 for none).
fn widest(texts: &[String], points: f64) -> u32 {
    register_fonts();
    let style: TextStyle = font(points).into();
    texts
        .iter()
        .filter_map(|t| {
            plotters::style::FontDesc::box_size(&style.font, t)
                .ok()
                .map(|(w, _)| w)
        })
        .max()
        .unwrap_or(0)
}

/// Writes one figure as `<base>.png`, `<base>.svg` and `<base>.pdf` (each atomically), drawn by
/// the same code on each backend.
fn render<S, B, P>(
    base: &Path,
    size: (u32, u32),
    (svg_draw, png_draw, pdf_draw): (S, B, P),
) -> Result<Vec<PathBuf>, ExportError>
where
    S: Fn(DrawingArea<SVGBackend, Shift>) -> DrawResult,
    B: Fn(DrawingArea<BitMapBackend, Shift>) -> DrawResult,
    P: Fn(DrawingArea<PdfBackend, Shift>) -> DrawResult,
{
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
        png_draw(root.clone()).map_err(|e| fail(&png, e))?;
        root.present().map_err(|e| fail(&png, e.into()))?;
    }
    std::fs::rename(&tmp, &png).map_err(|e| fail(&png, e.into()))?;
    let svg = base.with_extension("svg");
    let mut text = String::new();
    {
        let root = SVGBackend::with_string(&mut text, size).into_drawing_area();
        root.fill(&WHITE).map_err(|e| fail(&svg, e.into()))?;
        svg_draw(root.clone()).map_err(|e| fail(&svg, e))?;
        root.present().map_err(|e| fail(&svg, e.into()))?;
    }
    crate::experiment::store::write_atomic(&svg, text.as_bytes())?;
    let pdf = base.with_extension("pdf");
    let mut bytes = Vec::new();
    {
        let width_pt = size.0 as f32 * 72.0 / PPI as f32;
        let root = PdfBackend::new(&mut bytes, size, width_pt).into_drawing_area();
        root.fill(&WHITE).map_err(|e| fail(&pdf, e.into()))?;
        pdf_draw(root.clone()).map_err(|e| fail(&pdf, e))?;
        root.present().map_err(|e| fail(&pdf, e.into()))?;
    }
    crate::experiment::store::write_atomic(&pdf, &bytes)?;
    Ok(vec![png, svg, pdf])
}

/// The same drawing function for the SVG, PNG and PDF backends.
macro_rules! backends {
    ($f:expr) => {
        (
            |root: DrawingArea<SVGBackend, Shift>| $f(root),
            |root: DrawingArea<BitMapBackend, Shift>| $f(root),
            |root: DrawingArea<PdfBackend, Shift>| $f(root),
        )
    };
}

/// Height of a figure's title line, in inches.
const TITLE_IN: f64 = 0.32;

/// Draws `title` at the top of `root` and returns the area below it. A title wider than the
/// figure is broken before its last parenthesis (or its last " — ") onto a second line; what
/// still does not fit is set smaller, so nothing is clipped at any `--figure-width`.
fn title_on<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
) -> Result<DrawingArea<DB, Shift>, Box<dyn std::error::Error>>
where
    DB::ErrorType: 'static,
{
    let room = root.dim_in_pixel().0.saturating_sub(px(0.1));
    let fits = |t: &str, pt: f64| widest(&[t.to_string()], pt) <= room;
    let lines: Vec<&str> = if fits(title, TITLE_PT) {
        vec![title]
    } else if let Some(i) = title.rfind(" (").or_else(|| title.rfind(" — ")) {
        vec![title[..i].trim_end(), title[i..].trim_start()]
    } else {
        vec![title]
    };
    let mut area = root.clone();
    for line in lines {
        area = area.titled(line, font(points_to_fit(line, room, TITLE_PT)))?;
    }
    Ok(area)
}

/// The layout of a one-panel-per-method figure: columns, rows, and the figure's pixel size for
/// panels `panel_h_in / panel_w_in` as tall as wide, `side_in` inches kept on the right (a
/// colour bar) and `note_in` below the title (a key).
fn panel_grid(
    look: &Look,
    n: usize,
    panel_h_in: f64,
    side_in: f64,
) -> ((usize, usize), (u32, u32)) {
    let usable = look.width_in - side_in;
    let cols = look.columns(n, usable, 1.5);
    let rows = n.max(1).div_ceil(cols);
    let panel_w = usable / cols as f64;
    let h = TITLE_IN + rows as f64 * panel_w * panel_h_in;
    ((rows, cols), (px(look.width_in), px(h)))
}

fn heatmap<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    stream: &str,
    data: &[MatrixStats],
    look: &Look,
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    let title = format!("Test accuracy (%) after each task — {stream}");
    let root = title_on(&root, &title)?;
    let ((rows, cols), _) = panel_grid(look, data.len(), 1.0, HEATMAP_BAR_IN);
    let (body, legend) =
        root.split_horizontally(root.dim_in_pixel().0.saturating_sub(px(HEATMAP_BAR_IN)));
    let panels = body.split_evenly((rows, cols));
    for (panel, m) in panels.iter().zip(data) {
        let t = m.mean.first().map_or(0, Vec::len);
        let mut chart = ChartBuilder::on(panel)
            .caption(
                format!("{} (n = {})", m.method, m.n),
                fitted(&format!("{} (n = {})", m.method, m.n), panel, LABEL_PT),
            )
            .margin(px(0.05))
            .x_label_area_size(px(0.32))
            .y_label_area_size(px(0.4))
            .build_cartesian_2d(0.5f64..t as f64 + 0.5, -0.5f64..t as f64 + 0.5)?;
        // At most one tick label per 0.22 in.
        let most = ((panel.dim_in_pixel().0 as f64 / PPI - 0.45) / 0.22)
            .floor()
            .max(2.0) as usize;
        let every = t.div_ceil(most).max(1);
        chart
            .configure_mesh()
            .disable_mesh()
            .x_labels(t.div_ceil(every))
            .y_labels((t + 1).div_ceil(every))
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
            .y_desc("after task")
            .label_style(font(TICK_PT))
            .axis_desc_style(font(TICK_PT))
            .draw()?;
        // Numbers in the cells only where a cell is wide enough for "100".
        let (w, _) = chart.plotting_area().dim_in_pixel();
        let cell_in = w as f64 / t.max(1) as f64 / PPI;
        let numbers = cell_in >= 0.19;
        for (i, row) in m.mean.iter().enumerate() {
            let y = (t - i) as f64;
            for (j, &v) in row.iter().enumerate() {
                let x = (j + 1) as f64;
                chart.draw_series(std::iter::once(Rectangle::new(
                    [(x - 0.5, y - 0.5), (x + 0.5, y + 0.5)],
                    viridis(v).filled(),
                )))?;
                if numbers {
                    let ink = if v > 0.6 { BLACK } else { WHITE };
                    chart.draw_series(std::iter::once(Text::new(
                        format!("{:.0}", v * 100.0),
                        (x, y),
                        font(CELL_PT)
                            .color(&ink)
                            .pos(Pos::new(HPos::Center, VPos::Center)),
                    )))?;
                }
            }
        }
    }
    // Colour bar, at most 3 in tall, at the top.
    let (_, h) = legend.dim_in_pixel();
    let mut bar = ChartBuilder::on(&legend)
        .margin_top(px(0.4))
        .margin_bottom(px(0.4).max(h.saturating_sub(px(3.4))))
        .margin_right(px(0.05))
        .y_label_area_size(px(0.38))
        .build_cartesian_2d(0f64..1f64, 0f64..100f64)?;
    bar.configure_mesh()
        .disable_mesh()
        .disable_x_axis()
        .y_labels(6)
        .y_label_formatter(&|v| format!("{}%", tick(v)))
        .label_style(font(TICK_PT))
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

/// Inches of the heatmap's colour bar column.
const HEATMAP_BAR_IN: f64 = 0.6;

/// Up to this many tasks, each panel of a per-task figure has a legend; beyond, the title
/// says how the colours run.
const TASK_LEGEND_MAX: usize = 5;

/// The title's note on the task colours of a per-task figure.
fn task_note(t: usize) -> String {
    if t > TASK_LEGEND_MAX {
        format!("; colour: task 1 dark purple → task {t} green")
    } else {
        String::new()
    }
}

fn task_curves<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    stream: &str,
    data: &[MatrixStats],
    look: &Look,
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    let t = data
        .first()
        .and_then(|m| m.mean.first())
        .map_or(0, Vec::len);
    let title = format!(
        "Accuracy on each task as later tasks are learned — {stream} (mean ± sd{})",
        task_note(t)
    );
    let root = title_on(&root, &title)?;
    let ((rows, cols), _) = panel_grid(look, data.len(), PANEL_H, 0.0);
    let panels = root.split_evenly((rows, cols));
    for (panel, m) in panels.iter().zip(data) {
        let t = m.mean.first().map_or(0, Vec::len);
        let mut chart = ChartBuilder::on(panel)
            .caption(
                format!("{} (n = {})", m.method, m.n),
                fitted(&format!("{} (n = {})", m.method, m.n), panel, LABEL_PT),
            )
            .margin(px(0.06))
            .x_label_area_size(px(0.32))
            .y_label_area_size(px(0.4))
            .build_cartesian_2d(0.8f64..t as f64 + 0.2, 0f64..100f64)?;
        chart
            .configure_mesh()
            .x_labels(t.min(10))
            .x_label_formatter(&|x| format!("{}", x.round() as i64))
            .x_desc("after task")
            .y_desc("accuracy (%)")
            .y_label_formatter(&tick)
            .label_style(font(TICK_PT))
            .axis_desc_style(font(TICK_PT))
            .light_line_style(WHITE.mix(0.0))
            .draw()?;
        for j in 0..t {
            let points: Vec<(f64, f64, f64)> = (j + 1..=t)
                .map(|k| (k as f64, m.mean[k][j], m.sd[k][j]))
                .collect();
            band_line(
                &mut chart,
                &points,
                round(task_color(j, t)),
                Line::solid(1.5, t),
                format!("task {}", j + 1),
            )?;
        }
        if t <= TASK_LEGEND_MAX {
            legend(&mut chart)?;
        }
    }
    Ok(())
}

/// Panels of the per-method line figures: this many times as tall as wide.
const PANEL_H: f64 = 0.8;

/// The series legend, lower left on a translucent box.
fn legend<'a, DB: DrawingBackend + 'a>(
    chart: &mut ChartContext<'a, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>,
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .label_font(font(TICK_PT))
        .draw()?;
    Ok(())
}

/// How a line is drawn: its width in points, whether dashed (a `+grapes` twin), and the
/// sequence length it belongs to (markers shrink when more than 10 points crowd a panel).
#[derive(Clone, Copy)]
struct Line {
    width_pt: f64,
    dashed: bool,
    points: usize,
}

impl Line {
    fn solid(width_pt: f64, points: usize) -> Line {
        Line {
            width_pt,
            dashed: false,
            points,
        }
    }

    fn pixels(self) -> u32 {
        (self.width_pt * PPI / 72.0).round().max(1.0) as u32
    }
}

/// A mean line with markers of `mark` and a ± sd band (clipped to [0, 1]); `points` are
/// (x, mean, sd) as fractions, drawn in percent. A dashed line gets outlined markers.
fn band_line<DB: DrawingBackend>(
    chart: &mut ChartContext<'_, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>,
    points: &[(f64, f64, f64)],
    mark: Mark,
    line: Line,
    label: String,
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    let c = mark.color;
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
            c.mix(if line.dashed { 0.06 } else { 0.12 }),
        )))?;
    }
    let line_points: Vec<(f64, f64)> = points.iter().map(|&(x, m, _)| (x, 100.0 * m)).collect();
    let w = line.pixels();
    let style = c.stroke_width(w);
    let key = move |(x, y): (i32, i32)| {
        PathElement::new(vec![(x, y), (x + pxi(0.18), y)], c.stroke_width(w))
    };
    if line.dashed {
        chart
            .draw_series(DashedLineSeries::new(
                line_points.clone(),
                pxi(0.06),
                pxi(0.04),
                style,
            ))?
            .label(label)
            .legend(key);
    } else {
        chart
            .draw_series(LineSeries::new(line_points.clone(), style))?
            .label(label)
            .legend(key);
    }
    // Markers shrink as the points crowd (20 tasks across a panel).
    let r = if line.points > 10 { w.max(2) } else { w + 2 };
    let paint = if line.dashed {
        Paint::Outline
    } else {
        Paint::Filled
    };
    let area = chart.plotting_area();
    for p in line_points {
        draw_mark(area, p, mark, r as i32, paint, w.max(1))?;
    }
    Ok(())
}

/// One entry of a figure's key column: a name and how its method is drawn.
struct KeyEntry {
    name: String,
    mark: Mark,
    twin: bool,
}

/// The key column of a figure: one row per base method (its filled marker), then what a
/// `+grapes` twin looks like when there is one.
fn key_column<DB: DrawingBackend>(
    key: &DrawingArea<DB, Shift>,
    entries: &[KeyEntry],
    twin_note: &str,
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    let f = anchored(TICK_PT, HPos::Left);
    let row_h = pxi(0.16);
    let row = |i: usize| pxi(0.35) + row_h * i as i32;
    let x = pxi(0.1);
    let r = pxi(0.035).max(2);
    for (i, e) in entries.iter().enumerate() {
        draw_mark(key, (x, row(i)), e.mark, r, Paint::Filled, 1)?;
        key.draw(&Text::new(
            e.name.clone(),
            (x + pxi(0.1), row(i)),
            f.clone(),
        ))?;
    }
    if entries.iter().any(|e| e.twin) {
        let i = entries.len();
        key.draw(&Circle::new(
            (x, row(i) + row_h / 2),
            r,
            BLACK.stroke_width(1),
        ))?;
        for (k, line) in twin_note.split('\n').enumerate() {
            key.draw(&Text::new(
                line.to_string(),
                (x + pxi(0.1), row(i) + row_h / 2 + k as i32 * row_h),
                f.clone(),
            ))?;
        }
    }
    Ok(())
}

/// Width of a key column for `names`, in pixels.
fn key_width(names: &[String]) -> u32 {
    let mut texts = names.to_vec();
    texts.push("+ GRAPES: hollow,".to_string());
    widest(&texts, TICK_PT) + px(0.3)
}

fn first_task<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    stream: &str,
    data: &[MatrixStats],
    look: &Look,
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
    let root = title_on(
        &root,
        &format!("Forgetting of task 1 — {stream} (mean ± sd over seeds)"),
    )?;
    let names: Vec<String> = data.iter().map(|m| m.method.clone()).collect();
    let bases = look.bases(&names);
    let seeds = |name: &str| data.iter().find(|m| m.method == name).map(|m| m.n);
    let labels: Vec<String> = bases
        .iter()
        .map(|b| {
            let n: Vec<String> = [seeds(b), seeds(&twin_of(b))]
                .into_iter()
                .flatten()
                .map(|n| n.to_string())
                .collect();
            format!("{b} (n = {})", n.join("/"))
        })
        .collect();
    let (w, _) = root.dim_in_pixel();
    let (plot, key) = root.split_horizontally(w.saturating_sub(key_width(&labels)));
    let mut chart = ChartBuilder::on(&plot)
        .margin(px(0.08))
        .x_label_area_size(px(0.35))
        .y_label_area_size(px(0.45))
        .build_cartesian_2d(0.8f64..t as f64 + 0.2, y0..100f64)?;
    chart
        .configure_mesh()
        .x_labels(t.min(20))
        .x_label_formatter(&|x| format!("{}", x.round() as i64))
        .x_desc("after training task")
        .y_desc("accuracy on task 1 (%)")
        .y_label_formatter(&tick)
        .label_style(font(TICK_PT))
        .axis_desc_style(font(LABEL_PT))
        .light_line_style(WHITE.mix(0.0))
        .draw()?;
    let mut entries = Vec::new();
    for (k, (base, label)) in bases.iter().zip(labels).enumerate() {
        let method_mark = mark(k);
        let twin_name = twin_of(base);
        let mut twin = false;
        for (name, dashed) in [(base.as_str(), false), (twin_name.as_str(), true)] {
            let Some(m) = data.iter().find(|m| m.method == name) else {
                continue;
            };
            twin |= dashed;
            let points: Vec<(f64, f64, f64)> = (1..=t)
                .map(|k| (k as f64, m.mean[k][0], m.sd[k][0]))
                .collect();
            let line = Line {
                width_pt: 1.2,
                dashed,
                points: t,
            };
            band_line(&mut chart, &points, method_mark, line, m.method.clone())?;
        }
        entries.push(KeyEntry {
            name: label,
            mark: method_mark,
            twin,
        });
    }
    key_column(&key, &entries, "+ GRAPES: hollow,\ndashed")?;
    Ok(())
}

/// The metrics drawn as bars: the headline metrics of [`METRICS`].
fn bar_metrics() -> Vec<&'static MetricColumn> {
    METRICS.iter().filter(|c| c.headline).collect()
}

/// Inches per method row of the bar figure (two bars when it has a `+grapes` twin).
const BAR_ROW_IN: f64 = 0.24;

/// One bar: mean and spread in percent.
type BarValue = Option<(f64, Option<f64>)>;

/// A base method's row of the bar figure: its name, colour, and per metric the bar without
/// and the bar with GRAPES (each absent when that method has no run).
struct BarRow {
    name: String,
    color: RGBColor,
    plain: bool,
    twin: bool,
    values: Vec<(BarValue, BarValue)>,
}

fn bar_rows(
    stream: &str,
    summary: &DataFrame,
    spread: Spread,
    look: &Look,
) -> PolarsResult<Vec<BarRow>> {
    let st = summary.column("stream")?.str()?.clone();
    let method = summary.column("method")?.str()?.clone();
    let rows: Vec<usize> = (0..summary.height())
        .filter(|&i| st.get(i) == Some(stream))
        .collect();
    let names: Vec<String> = rows
        .iter()
        .map(|&i| method.get(i).unwrap_or("").to_string())
        .collect();
    let spread_name = spread_name(spread);
    let mut columns = Vec::new();
    for c in bar_metrics() {
        columns.push((
            summary.column(&format!("{}_mean", c.name))?.f64()?.clone(),
            summary
                .column(&format!("{}_{spread_name}", c.name))?
                .f64()?
                .clone(),
        ));
    }
    let value = |name: &str, k: usize| -> BarValue {
        let i = *rows.get(names.iter().position(|n| n == name)?)?;
        let (means, errs) = &columns[k];
        let m = means.get(i).filter(|v| v.is_finite())?;
        Some((
            100.0 * m,
            errs.get(i).filter(|e| e.is_finite()).map(|e| 100.0 * e),
        ))
    };
    Ok(look
        .bases(&names)
        .into_iter()
        .enumerate()
        .map(|(k, base)| {
            let twin = twin_of(&base);
            BarRow {
                color: color(k),
                plain: names.contains(&base),
                twin: names.contains(&twin),
                values: (0..bar_metrics().len())
                    .map(|m| (value(&base, m), value(&twin, m)))
                    .collect(),
                name: base,
            }
        })
        .collect())
}

fn spread_name(spread: Spread) -> &'static str {
    match spread {
        Spread::Sd => "sd",
        Spread::Sem => "sem",
    }
}

/// Panels of the bar figure per row: as many metrics as fit at 1.2 in each beside a label
/// column of `label_in` inches (all of them at 7 in; fewer, in several rows, at one column).
fn bar_columns(look: &Look, label_in: f64) -> usize {
    let metrics = bar_metrics().len();
    (((look.width_in - label_in) / 1.2).floor() as usize).clamp(1, metrics)
}

/// Inches of one row of bar panels for `n` methods (the bars and the axis below them).
fn bar_block_in(n: usize) -> f64 {
    0.36 + BAR_ROW_IN * n.max(1) as f64 + 0.06
}

/// Pixel size of the bar figure of `rows`.
fn bars_size(look: &Look, rows: &[BarRow]) -> (u32, u32) {
    let names: Vec<String> = rows.iter().map(|r| r.name.clone()).collect();
    let label_in = (widest(&names, TICK_PT) + px(0.12)) as f64 / PPI;
    let blocks = bar_metrics().len().div_ceil(bar_columns(look, label_in));
    (
        px(look.width_in),
        px(TITLE_IN + 0.2 + blocks as f64 * bar_block_in(rows.len())),
    )
}

/// Horizontal bars per method (rows in the config's order) for each headline metric
/// (panels side by side, in more than one row at narrow widths); a method's `+grapes` twin is
/// the lighter bar just under it.
fn bars<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    stream: &str,
    rows: &[BarRow],
    spread: Spread,
    look: &Look,
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    let spread_name = spread_name(spread);
    let any_spread = rows
        .iter()
        .flat_map(|r| &r.values)
        .any(|(a, b)| [a, b].iter().any(|v| v.is_some_and(|v| v.1.is_some())));
    let title = if any_spread {
        format!("Metrics per method — {stream} (mean ± {spread_name} over seeds)")
    } else {
        format!("Metrics per method — {stream} (one seed per method: no error bars)")
    };
    let root = title_on(&root, &title)?;
    let (key, body) = root.split_vertically(px(0.2));
    if rows.iter().any(|r| r.twin) {
        let y = key.dim_in_pixel().1 as i32 / 2;
        let (w, h) = (pxi(0.22), pxi(0.09));
        let mut x = pxi(0.2);
        let f = anchored(TICK_PT, HPos::Left);
        key.draw(&Rectangle::new(
            [(x, y - h / 2), (x + w, y + h / 2)],
            KEY_GREY.filled(),
        ))?;
        key.draw(&Text::new(
            "method (colour)",
            (x + w + pxi(0.06), y),
            f.clone(),
        ))?;
        x += pxi(1.25);
        key.draw(&Rectangle::new(
            [(x, y - h / 2), (x + w, y + h / 2)],
            lighter(KEY_GREY, 0.4).filled(),
        ))?;
        key.draw(&Rectangle::new(
            [(x, y - h / 2), (x + w, y + h / 2)],
            KEY_GREY.stroke_width(1),
        ))?;
        key.draw(&Text::new(
            "+ GRAPES (lighter, below)",
            (x + w + pxi(0.06), y),
            f,
        ))?;
    }
    let names: Vec<String> = rows.iter().map(|r| r.name.clone()).collect();
    let label_w = widest(&names, TICK_PT) + px(0.12);
    let metrics = bar_metrics();
    let cols = bar_columns(look, label_w as f64 / PPI);
    let blocks = body.split_evenly((metrics.len().div_ceil(cols), 1));
    let mut panels = Vec::new();
    for block in &blocks {
        let (labels, panels_area) = block.split_horizontally(label_w);
        for (j, panel) in panels_area.split_evenly((1, cols)).into_iter().enumerate() {
            panels.push((panel, (j == 0).then(|| labels.clone())));
        }
    }
    let n = rows.len();
    let y_of = |i: usize| (n - 1 - i) as f64;
    for (k, ((panel, labels), column)) in panels.iter().zip(&metrics).enumerate() {
        let all: Vec<(f64, Option<f64>)> = rows
            .iter()
            .flat_map(|r| [r.values[k].0, r.values[k].1])
            .flatten()
            .collect();
        let hi = all
            .iter()
            .map(|(m, e)| m + e.unwrap_or(0.0))
            .fold(0.0f64, f64::max);
        let lo = all
            .iter()
            .map(|(m, e)| m - e.unwrap_or(0.0))
            .fold(0.0f64, f64::min);
        let pad = ((hi - lo) * 0.08).max(0.5);
        let mut chart = ChartBuilder::on(panel)
            .margin_left(px(0.04))
            .margin_right(px(0.1))
            .margin_top(px(0.02))
            .x_label_area_size(px(0.36))
            .build_cartesian_2d(
                (lo - if lo < 0.0 { pad } else { 0.0 })..hi + pad,
                -0.5f64..n as f64 - 0.5,
            )?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .y_labels(0)
            .x_labels(if cols < metrics.len() { 4 } else { 3 })
            .x_desc(column.axis)
            .x_label_formatter(&tick)
            .label_style(font(TICK_PT))
            .axis_desc_style(font(TICK_PT))
            .light_line_style(WHITE.mix(0.0))
            .bold_line_style(BLACK.mix(0.12))
            .draw()?;
        for (i, r) in rows.iter().enumerate() {
            let y = y_of(i);
            let both = r.plain && r.twin;
            let half = if both { 0.19 } else { 0.3 };
            for (v, is_twin) in [(r.values[k].0, false), (r.values[k].1, true)] {
                let Some((m, e)) = v else { continue };
                let centre = match (both, is_twin) {
                    (true, false) => y + 0.2,
                    (true, true) => y - 0.2,
                    _ => y,
                };
                let (y0, y1) = (centre - half, centre + half);
                if is_twin {
                    chart.draw_series(std::iter::once(Rectangle::new(
                        [(0.0, y0), (m, y1)],
                        lighter(r.color, 0.4).filled(),
                    )))?;
                    chart.draw_series(std::iter::once(Rectangle::new(
                        [(0.0, y0), (m, y1)],
                        r.color.stroke_width(1),
                    )))?;
                } else {
                    chart.draw_series(std::iter::once(Rectangle::new(
                        [(0.0, y0), (m, y1)],
                        r.color.filled(),
                    )))?;
                }
                if let Some(e) = e {
                    chart.draw_series(std::iter::once(ErrorBar::new_horizontal(
                        centre,
                        m - e,
                        m,
                        m + e,
                        BLACK.stroke_width(1),
                        pxi(0.05) as u32,
                    )))?;
                }
            }
        }
        if lo < 0.0 {
            chart.draw_series(LineSeries::new(
                vec![(0.0, -0.5), (0.0, n as f64 - 0.5)],
                BLACK.stroke_width(1),
            ))?;
        }
        if let Some(labels) = labels {
            // The method names, right-aligned beside the first panel of each row.
            for (i, r) in rows.iter().enumerate() {
                let (_, py) = chart.backend_coord(&(0.0, y_of(i)));
                labels.draw(&Text::new(
                    r.name.clone(),
                    (label_w as i32 - pxi(0.06), py - labels.get_base_pixel().1),
                    anchored(TICK_PT, HPos::Right),
                ))?;
            }
        }
    }
    Ok(())
}

/// Draws every figure of `stream` into `dir` as PNG, SVG and PDF; returns the files written.
pub fn write_figures(
    dir: &Path,
    stream: &str,
    accuracy: &DataFrame,
    metrics: &DataFrame,
    summary: &DataFrame,
    spread: Spread,
    look: &Look,
) -> Result<Vec<PathBuf>, ExportError> {
    std::fs::create_dir_all(dir).map_err(|source| crate::experiment::store::StoreError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let encode = |e| ExportError::Encode {
        path: dir.to_path_buf(),
        source: e,
    };
    let mut data = matrix_stats(accuracy, metrics, stream).map_err(encode)?;
    if data.is_empty() {
        return Ok(Vec::new());
    }
    data.sort_by(|a, b| {
        look.rank(&a.method)
            .cmp(&look.rank(&b.method))
            .then_with(|| a.method.cmp(&b.method))
    });
    let panels = data.len();
    let mut written = Vec::new();
    written.extend(render(
        &dir.join(format!("{stream}-accuracy-matrix")),
        panel_grid(look, panels, 1.0, HEATMAP_BAR_IN).1,
        backends!(|root| heatmap(root, stream, &data, look)),
    )?);
    written.extend(render(
        &dir.join(format!("{stream}-task-accuracy")),
        panel_grid(look, panels, PANEL_H, 0.0).1,
        backends!(|root| task_curves(root, stream, &data, look)),
    )?);
    written.extend(render(
        &dir.join(format!("{stream}-first-task")),
        (
            px(look.width_in),
            px(TITLE_IN + (look.width_in * 0.5).clamp(2.4, 4.5)),
        ),
        backends!(|root| first_task(root, stream, &data, look)),
    )?);
    written.extend(render(
        &dir.join(format!("{stream}-stability-plasticity")),
        (
            px(look.width_in),
            px(TITLE_IN + (look.width_in * 0.55).clamp(2.6, 5.0)),
        ),
        backends!(|root| stability_plasticity(root, stream, summary, spread, look)),
    )?);
    let rows = bar_rows(stream, summary, spread, look).map_err(encode)?;
    written.extend(render(
        &dir.join(format!("{stream}-metrics")),
        bars_size(look, &rows),
        backends!(|root| bars(root, stream, &rows, spread, look)),
    )?);
    Ok(written)
}

/// The suffix that names a method's GRAPES twin (`sgd` → `sgd+grapes`), before a sweep tag
/// (`stable-sgd[dropout=0.5]` → `stable-sgd+grapes[dropout=0.5]`).
const GRAPES_SUFFIX: &str = "+grapes";

/// `name`'s sweep tag (`[dropout=0.5]`), or "".
fn split_tag(name: &str) -> (&str, &str) {
    match name.find('[') {
        Some(i) if name.ends_with(']') => name.split_at(i),
        _ => (name, ""),
    }
}

/// The name of `name`'s GRAPES twin.
fn twin_of(name: &str) -> String {
    let (stem, tag) = split_tag(name);
    format!("{stem}{GRAPES_SUFFIX}{tag}")
}

/// The name without GRAPES (`name` itself when it is not a twin).
fn base_of(name: &str) -> String {
    let (stem, tag) = split_tag(name);
    match stem.strip_suffix(GRAPES_SUFFIX) {
        Some(b) => format!("{b}{tag}"),
        None => name.to_string(),
    }
}

/// One method's point in the stability–plasticity plane: (name, learning accuracy, its
/// spread, forgetting, its spread), in percent.
type PlanePoint = (String, f64, Option<f64>, f64, Option<f64>);

/// Forgetting (y) against learning accuracy (x) per method, ± the spread over seeds in both
/// directions: up and to the left forgets more and learns less. A method and its GRAPES twin
/// (`name` and `name+grapes`) share a colour, the twin a hollow marker, joined by a line from
/// the method to its twin, so the figure says at a glance what GRAPES does to each.
fn stability_plasticity<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    stream: &str,
    summary: &DataFrame,
    spread: Spread,
    look: &Look,
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    let spread_name = spread_name(spread);
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
    let title = format!("Stability–plasticity — {stream} (mean ± {spread_name} over seeds)");
    let root = title_on(&root, &title)?;
    if points.is_empty() {
        return Ok(());
    }
    let names: Vec<String> = points.iter().map(|p| p.0.clone()).collect();
    let bases = look.bases(&names);
    // The key gets its own column, so it never hides a point.
    let (width, _) = root.dim_in_pixel();
    let (plot, key) = root.split_horizontally(width.saturating_sub(key_width(&bases)));
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
    let long = "learning accuracy (%): each task just after it is learned";
    let room = plot.dim_in_pixel().0.saturating_sub(px(0.6));
    let x_desc = if widest(&[long.to_string()], LABEL_PT) <= room {
        long
    } else {
        "learning accuracy (%)"
    };
    let x_desc_font = font(LABEL_PT);
    let mut chart = ChartBuilder::on(&plot)
        .margin(px(0.08))
        .x_label_area_size(px(0.4))
        .y_label_area_size(px(0.45))
        .build_cartesian_2d(x, y)?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc("forgetting (%)")
        .x_labels(((look.width_in - 1.5) / 0.45).clamp(3.0, 10.0) as usize)
        .x_label_formatter(&tick)
        .y_label_formatter(&tick)
        .label_style(font(TICK_PT))
        .axis_desc_style(x_desc_font)
        .light_line_style(BLACK.mix(0.05))
        .bold_line_style(BLACK.mix(0.1))
        .draw()?;
    let r = pxi(0.035).max(2);
    let cap = pxi(0.04) as u32;
    let mut entries = Vec::new();
    for (k, base) in bases.iter().enumerate() {
        let method_mark = mark(k);
        let c = method_mark.color;
        let own = points.iter().find(|p| &p.0 == base);
        let twin = points.iter().find(|p| p.0 == twin_of(base));
        entries.push(KeyEntry {
            name: base.clone(),
            mark: method_mark,
            twin: twin.is_some(),
        });
        if let (Some(a), Some(b)) = (own, twin) {
            chart.draw_series(std::iter::once(PathElement::new(
                vec![(a.1, a.3), (b.1, b.3)],
                c.mix(0.6).stroke_width(1),
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
                    cap,
                )))?;
            }
            if let Some(e) = p.4 {
                chart.draw_series(std::iter::once(ErrorBar::new_vertical(
                    p.1,
                    p.3 - e,
                    p.3,
                    p.3 + e,
                    c.mix(0.7).stroke_width(1),
                    cap,
                )))?;
            }
            let paint = if hollow { Paint::Hollow } else { Paint::Filled };
            draw_mark(chart.plotting_area(), (p.1, p.3), method_mark, r, paint, 2)?;
        }
    }
    key_column(&key, &entries, "+ GRAPES: hollow,\njoined to its method")?;
    Ok(())
}

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
    look: &Look,
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    let t = data.first().map_or(0, |d| d.2.len());
    let title = format!(
        "Accuracy on each seen task during training — {stream} (mean ± sd{})",
        task_note(t)
    );
    let root = title_on(&root, &title)?;
    let ((rows, cols), _) = panel_grid(look, data.len(), PANEL_H, 0.0);
    let panels = root.split_evenly((rows, cols));
    for (panel, (method, n, per_task)) in panels.iter().zip(data) {
        let t = per_task.len();
        let mut chart = ChartBuilder::on(panel)
            .caption(
                format!("{method} (n = {n})"),
                fitted(&format!("{method} (n = {n})"), panel, LABEL_PT),
            )
            .margin(px(0.06))
            .x_label_area_size(px(0.32))
            .y_label_area_size(px(0.4))
            .build_cartesian_2d(0f64..t as f64, 0f64..100f64)?;
        chart
            .configure_mesh()
            .x_labels((t + 1).min(11))
            .x_label_formatter(&tick)
            .y_label_formatter(&tick)
            .x_desc("training progress (tasks)")
            .y_desc("accuracy (%)")
            .label_style(font(TICK_PT))
            .axis_desc_style(font(TICK_PT))
            .light_line_style(WHITE.mix(0.0))
            .draw()?;
        for (j, points) in per_task.iter().enumerate() {
            if !points.is_empty() {
                band_line(
                    &mut chart,
                    points,
                    round(task_color(j, t)),
                    Line::solid(1.0, points.len()),
                    format!("task {}", j + 1),
                )?;
            }
        }
        if t <= TASK_LEGEND_MAX {
            legend(&mut chart)?;
        }
    }
    Ok(())
}

/// Draws `<stream>-learning-curves` (PNG, SVG and PDF) when runs of `stream` recorded
/// within-task curves; returns the files written (none otherwise).
pub fn write_learning_curves(
    dir: &Path,
    stream: &str,
    curves: &DataFrame,
    look: &Look,
) -> Result<Vec<PathBuf>, ExportError> {
    let mut data = curve_stats(curves, stream).map_err(|e| ExportError::Encode {
        path: dir.to_path_buf(),
        source: e,
    })?;
    if data.is_empty() {
        return Ok(Vec::new());
    }
    data.sort_by(|a, b| {
        look.rank(&a.0)
            .cmp(&look.rank(&b.0))
            .then_with(|| a.0.cmp(&b.0))
    });
    std::fs::create_dir_all(dir).map_err(|source| crate::experiment::store::StoreError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    render(
        &dir.join(format!("{stream}-learning-curves")),
        panel_grid(look, data.len(), PANEL_H, 0.0).1,
        backends!(|root| learning_curves(root, stream, &data, look)),
    )
}

/// The GRAPES figure: a forest plot per (stream, metric of
/// [`super::grapes_effect::EFFECT_METRICS`]), rows = the streams, columns = the metrics: per
/// method pair (in the config's order, top to bottom), the mean paired difference with −
/// without GRAPES (points) and its 95% CI (bars), in percentage points, with the zero line.
/// Bluish green: the t-test says GRAPES helps at `alpha`; vermillion: hurts; grey: no
/// detectable effect. Writes nothing without pairs.
pub fn write_grapes_effect(
    dir: &Path,
    frame: &DataFrame,
    alpha: f64,
    look: &Look,
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
    let names: Vec<String> = frame
        .column("method")
        .and_then(|c| Ok(c.str()?.iter().flatten().map(str::to_string).collect()))
        .unwrap_or_default();
    let label_in = (widest(&names, TICK_PT) + px(0.12)) as f64 / PPI;
    let blocks = super::grapes_effect::EFFECT_METRICS
        .len()
        .div_ceil(effect_columns(look, label_in));
    render(
        &dir.join("grapes-effect"),
        (
            px(look.width_in),
            px(TITLE_IN
                + 0.25
                + streams.len() as f64 * blocks as f64 * (0.55 + 0.17 * methods.max(2) as f64)
                + if streams.len() > 1 {
                    0.2 * streams.len() as f64
                } else {
                    0.0
                }),
        ),
        backends!(|root| grapes_effect(root, frame, &streams, alpha, look)),
    )
}

/// Metric panels per row of the forest plot: all four when each gets at least 1.1 in beside
/// the labels, else two (a 2 × 2 block per stream).
fn effect_columns(look: &Look, label_in: f64) -> usize {
    use super::grapes_effect::EFFECT_METRICS;
    if (look.width_in - label_in) / EFFECT_METRICS.len() as f64 >= 1.1 {
        EFFECT_METRICS.len()
    } else {
        2
    }
}

fn grapes_effect<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    frame: &DataFrame,
    streams: &[String],
    alpha: f64,
    look: &Look,
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
    let root = title_on(
        &root,
        "GRAPES on each method: with − without, paired by seed (mean and 95% CI)",
    )?;
    let (key, root) = root.split_vertically(px(0.25));
    {
        let y = key.dim_in_pixel().1 as i32 / 2;
        let f = anchored(TICK_PT, HPos::Left);
        let mut x = pxi(0.2);
        for (c, what) in [
            (HELPS, "helps".to_string()),
            (HURTS, "hurts".to_string()),
            (
                NO_EFFECT,
                if look.width_in < 5.0 {
                    format!("no detectable effect (α = {alpha})")
                } else {
                    format!("no detectable effect (paired t-test, α = {alpha})")
                },
            ),
        ] {
            key.draw(&Circle::new((x, y), pxi(0.03) as u32, c.filled()))?;
            key.draw(&Text::new(what.clone(), (x + pxi(0.07), y), f.clone()))?;
            x += widest(&[what], TICK_PT) as i32 + pxi(0.25);
        }
    }
    let all_names: Vec<String> = (0..frame.height())
        .filter_map(|i| base.get(i).map(str::to_string))
        .collect();
    let label_w = widest(&all_names, TICK_PT) + px(0.12);
    let rows = root.split_evenly((streams.len(), 1));
    for (r, s) in streams.iter().enumerate() {
        // Several streams: each row of panels under its stream's name.
        let row = if streams.len() > 1 {
            rows[r].titled(s, font(LABEL_PT))?
        } else {
            rows[r].clone()
        };
        let cols = effect_columns(look, label_w as f64 / PPI);
        let mut panels = Vec::new();
        for block in row.split_evenly((EFFECT_METRICS.len().div_ceil(cols), 1)) {
            let (labels, panels_area) = block.split_horizontally(label_w);
            for (j, panel) in panels_area.split_evenly((1, cols)).into_iter().enumerate() {
                panels.push((panel, (j == 0).then(|| labels.clone())));
            }
        }
        for (c, name) in EFFECT_METRICS.iter().enumerate() {
            let (panel, labels) = &panels[c];
            let column = MetricColumn::named(name).expect("a known metric");
            let mut idx: Vec<usize> = (0..frame.height())
                .filter(|&i| st.get(i) == Some(s.as_str()) && metric.get(i) == Some(*name))
                .collect();
            idx.sort_by(|&a, &b| {
                let (a, b) = (base.get(a).unwrap_or(""), base.get(b).unwrap_or(""));
                look.rank(a).cmp(&look.rank(b)).then_with(|| a.cmp(b))
            });
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
            let k = idx.len().max(1);
            let caption = format!("Δ {}", column.axis);
            let caption_font = fitted(&caption, panel, TICK_PT);
            let mut chart = ChartBuilder::on(panel)
                .caption(caption, caption_font)
                .margin_left(px(0.04))
                .margin_right(px(0.08))
                .x_label_area_size(px(0.22))
                .build_cartesian_2d((lo - pad)..(hi + pad), -0.5f64..k as f64 - 0.5)?;
            chart
                .configure_mesh()
                .disable_y_mesh()
                .y_labels(0)
                .x_labels(4)
                .x_label_formatter(&tick)
                .label_style(font(TICK_PT))
                .light_line_style(WHITE.mix(0.0))
                .bold_line_style(BLACK.mix(0.08))
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
                    "helps" => HELPS,
                    "hurts" => HURTS,
                    _ => NO_EFFECT,
                };
                if let Some((l, h)) = ci {
                    chart.draw_series(std::iter::once(ErrorBar::new_horizontal(
                        y,
                        *l,
                        *m,
                        *h,
                        col.stroke_width(2),
                        pxi(0.05) as u32,
                    )))?;
                }
                chart.draw_series(std::iter::once(Circle::new(
                    (*m, y),
                    pxi(0.03) as u32,
                    col.filled(),
                )))?;
                if let Some(labels) = labels {
                    let (_, py) = chart.backend_coord(&(0.0, y));
                    labels.draw(&Text::new(
                        base.get(i).unwrap_or("").to_string(),
                        (label_w as i32 - pxi(0.06), py - labels.get_base_pixel().1),
                        anchored(TICK_PT, HPos::Right),
                    ))?;
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn methods_follow_the_config_order_with_twins_folded_in() {
        let look = Look {
            width_in: 7.0,
            order: names(&["sgd", "sgd+grapes", "adam+grapes", "adam", "ewc"]),
        };
        // Stored (alphabetical) order in, the config's order out; `zeta` is not in the
        // config, so it comes last; a twin without its method stands for itself.
        let got = look.bases(&names(&[
            "adam",
            "adam+grapes",
            "ewc",
            "lone+grapes",
            "sgd",
            "sgd+grapes",
            "zeta",
        ]));
        assert_eq!(got, names(&["sgd", "adam", "ewc", "lone+grapes", "zeta"]));
        // Without a recorded order: by name.
        let plain = Look::default();
        assert_eq!(
            plain.bases(&names(&["b", "a+grapes", "a"])),
            names(&["a", "b"])
        );
    }

    #[test]
    fn a_sweep_tag_stays_after_the_grapes_suffix() {
        assert_eq!(twin_of("sgd"), "sgd+grapes");
        assert_eq!(
            twin_of("stable-sgd[dropout=0.5]"),
            "stable-sgd+grapes[dropout=0.5]"
        );
        assert_eq!(
            base_of("stable-sgd+grapes[dropout=0.5]"),
            "stable-sgd[dropout=0.5]"
        );
        assert_eq!(base_of("sgd+grapes"), "sgd");
        assert_eq!(base_of("sgd"), "sgd");
        let look = Look {
            width_in: 7.0,
            order: names(&[
                "s[d=0.5]",
                "s+grapes[d=0.5]",
                "s[d=0.25]",
                "s+grapes[d=0.25]",
            ]),
        };
        assert_eq!(
            look.bases(&names(&[
                "s+grapes[d=0.25]",
                "s+grapes[d=0.5]",
                "s[d=0.25]",
                "s[d=0.5]"
            ])),
            names(&["s[d=0.5]", "s[d=0.25]"])
        );
    }

    #[test]
    fn panels_per_row_follow_the_page_width() {
        let look = Look::default();
        assert_eq!(look.columns(20, 6.4, 1.5), 4);
        assert_eq!(look.columns(2, 6.4, 1.5), 2);
        assert_eq!(look.columns(20, 3.5, 1.5), 2);
        assert_eq!(look.columns(20, 1.0, 1.5), 1);
    }

    /// Up to 32 methods, no two look alike; the first eight keep the plain circles (so
    /// figures of up to eight methods did not change), and every shape fits the room of a
    /// circle of the same radius (about: the triangle and diamond reach a little past it).
    #[test]
    fn methods_past_the_palette_change_shape_not_look() {
        let marks: Vec<Mark> = (0..32).map(mark).collect();
        for (i, a) in marks.iter().enumerate() {
            for b in &marks[i + 1..] {
                assert_ne!(a, b, "two methods drawn alike");
            }
        }
        assert!(marks[..PALETTE.len()]
            .iter()
            .all(|m| m.shape == Shape::Circle));
        assert_eq!(marks[8].color, marks[0].color);
        assert_eq!(marks[8].shape, Shape::Square);
        for shape in SHAPES {
            let r = 10;
            for (x, y) in corners(shape, r) {
                assert!(x.abs() <= 13 && y.abs() <= 13, "{shape:?} at ({x}, {y})");
            }
        }
    }
}
