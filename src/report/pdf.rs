//! Vector PDF figures: a plotters drawing backend that writes one PDF page, so a LaTeX paper can
//! `\includegraphics` a figure as it is (the PNG is raster, the SVG needs a converter).
//!
//! Written with `pdf-writer` (the PDF object writer of typst) and `subsetter` (typst's font
//! subsetter) rather than by converting the SVG (`svg2pdf` would bring a full SVG parser and
//! renderer, about 90 crates): plotters calls this backend with the same shapes and text it gives
//! the SVG backend, and they become PDF path and text operators one for one.
//!
//! - **Geometry**: the page is the figure's pixel canvas scaled to `width_pt` points (one
//!   transformation at the top of the page, y pointing down as in plotters), so line widths and
//!   font sizes scale with it; nothing is rasterized.
//! - **Text**: real text in the bundled DejaVu Sans (regular and bold), embedded as a subset
//!   (only the glyphs drawn) TrueType CID font with a `ToUnicode` map, so the words can be
//!   searched and copied and no Type 3 font reaches a publisher's checker. Placement follows the
//!   SVG backend's rules (font size = plotters' size / 1.24, the same anchors and rotations),
//!   without kerning.
//! - **Transparency**: plotters' alpha as `ExtGState` constant alpha.
//! - **Bits**: no date, producer or random document id is written, the streams are compressed
//!   by a fixed deflate level, so the same figure gives the same bytes (`report --check`).

use std::collections::BTreeMap;

use pdf_writer::types::{CidFontType, FontFlags, SystemInfo, UnicodeCmap};
use pdf_writer::{Content, Filter, Name, Pdf, Rect, Ref, Str};
use plotters_backend::text_anchor::{HPos, VPos};
use plotters_backend::{
    BackendColor, BackendCoord, BackendStyle, BackendTextStyle, DrawingBackend, DrawingErrorKind,
    FontStyle, FontTransform,
};

use super::fonts;

/// What went wrong while writing a PDF figure.
#[derive(Debug, thiserror::Error)]
pub enum PdfError {
    /// The bundled font could not be read or subset.
    #[error("font: {0}")]
    Font(String),
}

/// One of the two faces a figure's text uses, with the glyphs drawn so far.
struct UsedFace {
    face: ttf_parser::Face<'static>,
    data: &'static [u8],
    /// The PDF name of the PostScript font (`ABCDEF+DejaVuSans`: a subset's tag).
    base_name: &'static str,
    /// Old glyph id → id in the subset (the CID shown in the content stream).
    remapper: subsetter::GlyphRemapper,
    /// Subset id → (advance in font units, the character it shows).
    glyphs: BTreeMap<u16, (u16, char)>,
}

impl UsedFace {
    fn new(data: &'static [u8], base_name: &'static str) -> Result<UsedFace, PdfError> {
        let face = ttf_parser::Face::parse(data, 0)
            .map_err(|e| PdfError::Font(format!("{base_name}: {e}")))?;
        Ok(UsedFace {
            face,
            data,
            base_name,
            remapper: subsetter::GlyphRemapper::new(),
            glyphs: BTreeMap::new(),
        })
    }

    fn units_per_em(&self) -> f32 {
        f32::from(self.face.units_per_em())
    }

    /// The text as subset glyph ids (two bytes each, big-endian) and its advance width in ems.
    fn encode(&mut self, text: &str) -> (Vec<u8>, f32) {
        let mut bytes = Vec::with_capacity(2 * text.len());
        let mut advance = 0u32;
        for c in text.chars() {
            let gid = self.face.glyph_index(c).map_or(0, |g| g.0);
            let width = self
                .face
                .glyph_hor_advance(ttf_parser::GlyphId(gid))
                .unwrap_or(0);
            let new = self.remapper.remap(gid);
            self.glyphs.entry(new).or_insert((width, c));
            bytes.extend_from_slice(&new.to_be_bytes());
            advance += u32::from(width);
        }
        (bytes, advance as f32 / self.units_per_em())
    }

    /// x-height in ems (SVG's `ex`, which the anchors use).
    fn x_height(&self) -> f32 {
        self.face
            .x_height()
            .map_or(0.5, |h| f32::from(h) / self.units_per_em())
    }
}

/// A plotters backend that draws one figure as a one-page vector PDF into `target` when
/// [`DrawingBackend::present`] is called.
pub struct PdfBackend<'a> {
    target: &'a mut Vec<u8>,
    size: (u32, u32),
    /// Points per pixel of the canvas.
    scale: f32,
    content: Content,
    /// Regular and bold, created when first used.
    faces: [Option<UsedFace>; 2],
    /// Distinct alpha values (in thousandths) → their graphics-state name index.
    alphas: BTreeMap<u16, usize>,
    /// The alpha of fills and strokes now in effect (thousandths).
    alpha_now: u16,
    presented: bool,
}

impl<'a> PdfBackend<'a> {
    /// A canvas of `size` pixels whose page is `width_pt` points wide (72 points per inch).
    pub fn new(target: &'a mut Vec<u8>, size: (u32, u32), width_pt: f32) -> PdfBackend<'a> {
        let scale = width_pt / size.0.max(1) as f32;
        let mut content = Content::new();
        // y down, in pixels, as plotters draws.
        content.transform([scale, 0.0, 0.0, -scale, 0.0, size.1 as f32 * scale]);
        PdfBackend {
            target,
            size,
            scale,
            content,
            faces: [None, None],
            alphas: BTreeMap::new(),
            alpha_now: 1000,
            presented: false,
        }
    }

    fn set_alpha(&mut self, alpha: f64) {
        let key = (alpha.clamp(0.0, 1.0) * 1000.0).round() as u16;
        if key == self.alpha_now {
            return;
        }
        let next = self.alphas.len();
        let index = *self.alphas.entry(key).or_insert(next);
        self.content
            .set_parameters(Name(format!("A{index}").as_bytes()));
        self.alpha_now = key;
    }

    fn fill_color(&mut self, c: BackendColor) {
        self.set_alpha(c.alpha);
        let (r, g, b) = rgb(c);
        self.content.set_fill_rgb(r, g, b);
    }

    fn stroke_color(&mut self, c: BackendColor, width: u32) {
        self.set_alpha(c.alpha);
        let (r, g, b) = rgb(c);
        self.content.set_stroke_rgb(r, g, b);
        self.content.set_line_width(width.max(1) as f32);
    }

    /// One shape: its colour (and line width) set first, then the path `build` writes, then
    /// the fill or the stroke (PDF allows no colour change inside a path). Invisible shapes
    /// write nothing.
    fn shape<S: BackendStyle>(&mut self, style: &S, fill: bool, build: impl FnOnce(&mut Content)) {
        let c = style.color();
        if c.alpha == 0.0 {
            return;
        }
        if fill {
            self.fill_color(c);
        } else {
            self.stroke_color(c, style.stroke_width());
        }
        build(&mut self.content);
        if fill {
            self.content.fill_nonzero();
        } else {
            self.content.stroke();
        }
    }

    fn face(&mut self, bold: bool) -> Result<&mut UsedFace, PdfError> {
        let slot = &mut self.faces[usize::from(bold)];
        if slot.is_none() {
            *slot = Some(if bold {
                UsedFace::new(fonts::BOLD, "AAAAAB+DejaVuSans-Bold")?
            } else {
                UsedFace::new(fonts::REGULAR, "AAAAAA+DejaVuSans")?
            });
        }
        Ok(slot.as_mut().expect("just set"))
    }

    /// Assembles the PDF: page, content, fonts (subset and embedded), alpha states.
    fn finish_pdf(&mut self) -> Result<Vec<u8>, PdfError> {
        let mut pdf = Pdf::new();
        let mut next = 1;
        let mut alloc = || {
            let r = Ref::new(next);
            next += 1;
            r
        };
        let catalog = alloc();
        let pages = alloc();
        let page = alloc();
        let content_id = alloc();
        let (w, h) = (
            self.size.0 as f32 * self.scale,
            self.size.1 as f32 * self.scale,
        );
        pdf.catalog(catalog).pages(pages);
        pdf.pages(pages).kids([page]).count(1);

        let mut font_refs = Vec::new();
        for (i, face) in self.faces.iter().enumerate() {
            if let Some(face) = face {
                let ids = [alloc(), alloc(), alloc(), alloc(), alloc()];
                write_font(&mut pdf, face, ids)?;
                font_refs.push((i, ids[0]));
            }
        }
        let alpha_refs: Vec<(usize, u16, Ref)> = self
            .alphas
            .iter()
            .map(|(&key, &index)| (index, key, alloc()))
            .collect();

        {
            let mut p = pdf.page(page);
            p.media_box(Rect::new(0.0, 0.0, w, h));
            p.parent(pages);
            p.contents(content_id);
            let mut resources = p.resources();
            {
                let mut f = resources.fonts();
                for &(i, r) in &font_refs {
                    f.pair(Name(format!("F{i}").as_bytes()), r);
                }
            }
            {
                let mut g = resources.ext_g_states();
                for &(index, _, r) in &alpha_refs {
                    g.pair(Name(format!("A{index}").as_bytes()), r);
                }
            }
        }
        for &(_, key, r) in &alpha_refs {
            let a = f32::from(key) / 1000.0;
            pdf.ext_graphics(r).non_stroking_alpha(a).stroking_alpha(a);
        }
        let content = std::mem::replace(&mut self.content, Content::new()).finish();
        pdf.stream(content_id, &deflate(&content))
            .filter(Filter::FlateDecode);
        Ok(pdf.finish())
    }
}

/// Writes one face as a Type 0 font over a CIDFontType2 (TrueType) descendant, its subset
/// embedded. `ids`: Type 0 font, CID font, descriptor, font file, ToUnicode map.
fn write_font(pdf: &mut Pdf, face: &UsedFace, ids: [Ref; 5]) -> Result<(), PdfError> {
    let [type0, cid, descriptor, file, to_unicode] = ids;
    let base = Name(face.base_name.as_bytes());
    let per_em = face.units_per_em();
    let to_pdf = |v: f32| v / per_em * 1000.0;
    pdf.type0_font(type0)
        .base_font(base)
        .encoding_predefined(Name(b"Identity-H"))
        .descendant_font(cid)
        .to_unicode(to_unicode);
    let info = SystemInfo {
        registry: Str(b"Adobe"),
        ordering: Str(b"Identity"),
        supplement: 0,
    };
    {
        let mut c = pdf.cid_font(cid);
        c.subtype(CidFontType::Type2)
            .base_font(base)
            .system_info(info)
            .font_descriptor(descriptor)
            .default_width(0.0)
            .cid_to_gid_map_predefined(Name(b"Identity"));
        let mut widths = c.widths();
        for (&gid, &(advance, _)) in &face.glyphs {
            widths.consecutive(gid, [to_pdf(f32::from(advance))]);
        }
    }
    let bbox = face.face.global_bounding_box();
    pdf.font_descriptor(descriptor)
        .name(base)
        .flags(FontFlags::NON_SYMBOLIC)
        .bbox(Rect::new(
            to_pdf(f32::from(bbox.x_min)),
            to_pdf(f32::from(bbox.y_min)),
            to_pdf(f32::from(bbox.x_max)),
            to_pdf(f32::from(bbox.y_max)),
        ))
        .italic_angle(0.0)
        .ascent(to_pdf(f32::from(face.face.ascender())))
        .descent(to_pdf(f32::from(face.face.descender())))
        .cap_height(to_pdf(f32::from(
            face.face.capital_height().unwrap_or(face.face.ascender()),
        )))
        .stem_v(if face.face.is_bold() { 120.0 } else { 80.0 })
        .font_file2(file);
    let subset = subsetter::subset(face.data, 0, &face.remapper)
        .map_err(|e| PdfError::Font(format!("{}: subsetting: {e}", face.base_name)))?;
    pdf.stream(file, &deflate(&subset))
        .filter(Filter::FlateDecode);
    let mut cmap = UnicodeCmap::new(Name(b"Custom"), info);
    for (&gid, &(_, c)) in &face.glyphs {
        if gid != 0 {
            cmap.pair(gid, c);
        }
    }
    pdf.cmap(to_unicode, &cmap.finish());
    Ok(())
}

fn deflate(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::new(6));
    e.write_all(bytes).expect("writing to memory");
    e.finish().expect("writing to memory")
}

fn rgb(c: BackendColor) -> (f32, f32, f32) {
    let f = |v: u8| f32::from(v) / 255.0;
    (f(c.rgb.0), f(c.rgb.1), f(c.rgb.2))
}

/// `points` as one open path (at least one point).
fn trace(content: &mut Content, points: &[BackendCoord]) {
    let (x, y) = points[0];
    content.move_to(x as f32, y as f32);
    for &(x, y) in &points[1..] {
        content.line_to(x as f32, y as f32);
    }
}

/// `v` turned as plotters' [`FontTransform`] turns text (y pointing down).
fn turn(t: &FontTransform, (x, y): (f32, f32)) -> (f32, f32) {
    match t {
        FontTransform::None => (x, y),
        FontTransform::Rotate90 => (-y, x),
        FontTransform::Rotate180 => (-x, -y),
        FontTransform::Rotate270 => (y, -x),
    }
}

type Drawn<E> = Result<(), DrawingErrorKind<E>>;

impl DrawingBackend for PdfBackend<'_> {
    type ErrorType = PdfError;

    fn get_size(&self) -> (u32, u32) {
        self.size
    }

    fn ensure_prepared(&mut self) -> Drawn<PdfError> {
        Ok(())
    }

    fn present(&mut self) -> Drawn<PdfError> {
        if !self.presented {
            let bytes = self.finish_pdf().map_err(DrawingErrorKind::DrawingError)?;
            *self.target = bytes;
            self.presented = true;
        }
        Ok(())
    }

    fn draw_pixel(&mut self, (x, y): BackendCoord, color: BackendColor) -> Drawn<PdfError> {
        if color.alpha == 0.0 {
            return Ok(());
        }
        self.fill_color(color);
        self.content
            .rect(x as f32, y as f32, 1.0, 1.0)
            .fill_nonzero();
        Ok(())
    }

    fn draw_line<S: BackendStyle>(
        &mut self,
        from: BackendCoord,
        to: BackendCoord,
        style: &S,
    ) -> Drawn<PdfError> {
        self.draw_path([from, to], style)
    }

    fn draw_rect<S: BackendStyle>(
        &mut self,
        (x0, y0): BackendCoord,
        (x1, y1): BackendCoord,
        style: &S,
        fill: bool,
    ) -> Drawn<PdfError> {
        let (w, h) = ((x1 - x0) as f32, (y1 - y0) as f32);
        self.shape(style, fill, |content| {
            content.rect(x0 as f32, y0 as f32, w, h);
        });
        Ok(())
    }

    fn draw_path<S: BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        path: I,
        style: &S,
    ) -> Drawn<PdfError> {
        let points: Vec<BackendCoord> = path.into_iter().collect();
        if !points.is_empty() {
            self.shape(style, false, |content| trace(content, &points));
        }
        Ok(())
    }

    fn draw_circle<S: BackendStyle>(
        &mut self,
        (cx, cy): BackendCoord,
        radius: u32,
        style: &S,
        fill: bool,
    ) -> Drawn<PdfError> {
        let (x, y, r) = (cx as f32, cy as f32, radius as f32);
        // Four cubic arcs; 0.5523 r puts the midpoints on the circle.
        let k = 0.552_284_8 * r;
        self.shape(style, fill, |content| {
            content
                .move_to(x + r, y)
                .cubic_to(x + r, y + k, x + k, y + r, x, y + r)
                .cubic_to(x - k, y + r, x - r, y + k, x - r, y)
                .cubic_to(x - r, y - k, x - k, y - r, x, y - r)
                .cubic_to(x + k, y - r, x + r, y - k, x + r, y)
                .close_path();
        });
        Ok(())
    }

    fn fill_polygon<S: BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        vert: I,
        style: &S,
    ) -> Drawn<PdfError> {
        let points: Vec<BackendCoord> = vert.into_iter().collect();
        if !points.is_empty() {
            self.shape(style, true, |content| {
                trace(content, &points);
                content.close_path();
            });
        }
        Ok(())
    }

    fn draw_text<T: BackendTextStyle>(
        &mut self,
        text: &str,
        style: &T,
        (x, y): BackendCoord,
    ) -> Drawn<PdfError> {
        let c = style.color();
        if c.alpha == 0.0 || text.is_empty() {
            return Ok(());
        }
        let bold = matches!(style.style(), FontStyle::Bold);
        let em = (style.size() / 1.24) as f32;
        let face = self.face(bold).map_err(DrawingErrorKind::DrawingError)?;
        let (bytes, width) = face.encode(text);
        let ex = face.x_height();
        let anchor = style.anchor();
        let dx = match anchor.h_pos {
            HPos::Left => 0.0,
            HPos::Center => -width * em / 2.0,
            HPos::Right => -width * em,
        };
        let dy = match anchor.v_pos {
            VPos::Top => 0.76 * em,
            VPos::Center => 0.5 * ex * em,
            VPos::Bottom => -0.5 * ex * em,
        };
        let t = style.transform();
        let (ox, oy) = turn(&t, (dx, dy));
        let (ax, ay) = turn(&t, (em, 0.0));
        let (bx, by) = turn(&t, (0.0, -em));
        self.fill_color(c);
        self.content
            .begin_text()
            .set_font(Name(format!("F{}", usize::from(bold)).as_bytes()), 1.0)
            .set_text_matrix([ax, ay, bx, by, x as f32 + ox, y as f32 + oy])
            .show(Str(&bytes))
            .end_text();
        Ok(())
    }
}
