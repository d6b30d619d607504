//! Charts, drawn once and rendered two ways: an SVG string for HTML (the drift
//! report, the dashboard) and PNG bytes for mail (an inline image). Two charts:
//! [`Distribution`] (one feature's reference against current distribution, with
//! its test's verdict) and [`TimeSeries`] (one value over time, with labelled
//! markers and a threshold).
//!
//! Built on plotters without its system-font support: every glyph comes from the
//! DejaVu Sans embedded here (`assets/fonts`), registered under the family name
//! `sans-serif`, so a PNG looks the same on any machine and needs no fontconfig.
//! An SVG names the family `sans-serif` and leaves the glyphs to the browser.
//!
//! This module counts and draws. It does not decide drift or read data: callers
//! pass the samples and the verdict (`report` builds them from a drift report).
//! Synchronous, no I/O.

mod bins;
mod distribution;
mod glyphs;
mod series;

use plotters::chart::MeshStyle;
use plotters::coord::ranged1d::Ranged;
use plotters::coord::Shift;
use plotters::prelude::{
    ChartBuilder, DrawingArea, DrawingAreaErrorKind, DrawingBackend, IntoDrawingArea, WHITE,
};
use plotters::style::{FontStyle, IntoFont, RGBColor, TextStyle};

pub use bins::{Bins, Histogram, MAX_CATEGORIES, NUMERIC_BINS};
pub use distribution::{Distribution, Verdict};
pub use series::{Marker, Threshold, TimeSeries};

/// Why a chart could not be drawn.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    #[error("chart size {0}×{1}: each side must be between {MIN_SIDE} and {MAX_SIDE} pixels")]
    Size(u32, u32),
    #[error("the embedded font does not load")]
    Font,
    #[error("drawing the chart: {0}")]
    Draw(String),
    #[error("encoding the PNG: {0}")]
    Png(#[from] png::EncodingError),
}

/// A chart's size in pixels (CSS pixels for SVG).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size {
    pub width: u32,
    pub height: u32,
}

impl Size {
    /// Fits the text column of a mail (and of the HTML report).
    pub const MAIL: Size = Size {
        width: 700,
        height: 350,
    };
}

const MIN_SIDE: u32 = 100;
const MAX_SIDE: u32 = 4000;

/// The embedded font (assets/fonts/README.md says where it comes from).
static FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");

/// The family every chart's text uses.
const FAMILY: &str = "sans-serif";

/// The palette: reference, current, and the verdict's colours.
const REFERENCE: RGBColor = RGBColor(0x4c, 0x72, 0xb0);
const CURRENT: RGBColor = RGBColor(0xdd, 0x84, 0x52);
const DRIFT: RGBColor = RGBColor(0xc0, 0x39, 0x2b);
const STEADY: RGBColor = RGBColor(0x2e, 0x7d, 0x32);
const INK: RGBColor = RGBColor(0x22, 0x22, 0x22);
const MUTED: RGBColor = RGBColor(0x66, 0x66, 0x66);
const GRID: RGBColor = RGBColor(0xe4, 0xe4, 0xe4);
const AXIS: RGBColor = RGBColor(0x99, 0x99, 0x99);

/// The colour of the reference series, as SVG writes it (`fill="#4C72B0"`).
pub const REFERENCE_FILL: &str = "#4C72B0";
/// The colour of the current series, as SVG writes it.
pub const CURRENT_FILL: &str = "#DD8452";

/// The embedded font, parsed, and registered with plotters: once per process.
fn font() -> Result<&'static ab_glyph::FontRef<'static>, PlotError> {
    static PARSED: std::sync::OnceLock<Option<ab_glyph::FontRef<'static>>> =
        std::sync::OnceLock::new();
    PARSED
        .get_or_init(|| {
            let font = ab_glyph::FontRef::try_from_slice(FONT).ok()?;
            plotters::style::register_font(FAMILY, FontStyle::Normal, FONT).ok()?;
            Some(font)
        })
        .as_ref()
        .ok_or(PlotError::Font)
}

/// Text sizes (plotters' sizes: an SVG shows them as `font-size` ÷ 1.24).
const TITLE: f64 = 22.0;
const STATUS: f64 = 20.0;
const LEGEND: f64 = 15.5;
const LABEL: f64 = 15.0;

/// Text of `size` pixels in `color`.
fn text(size: f64, color: RGBColor) -> TextStyle<'static> {
    (FAMILY, size).into_font().color(&color)
}

/// Space around the text and the plot area, in pixels.
const PAD: i32 = 14;

/// The plot area under a title block: margins and label areas both charts use,
/// with `y_labels` pixels for the y axis' labels.
fn frame<'a, 'b, DB: DrawingBackend>(
    body: &'a DrawingArea<DB, Shift>,
    y_labels: u32,
) -> ChartBuilder<'a, 'b, DB> {
    let mut builder = ChartBuilder::on(body);
    builder
        .margin_left(PAD as u32 / 2)
        .margin_right(PAD as u32 + 4)
        .margin_top(6)
        .margin_bottom(4)
        .x_label_area_size(38)
        .y_label_area_size(y_labels);
    builder
}

/// Both charts' axes: dark labels, muted descriptions, light horizontal grid.
fn style_mesh<X, Y, DB>(mesh: &mut MeshStyle<'_, '_, X, Y, DB>, y_desc: &str)
where
    X: Ranged,
    Y: Ranged,
    DB: DrawingBackend,
{
    mesh.y_labels(6)
        .y_desc(y_desc)
        .label_style(text(LABEL, INK))
        .axis_desc_style(text(LABEL, MUTED))
        .light_line_style(WHITE)
        .bold_line_style(GRID)
        .axis_style(AXIS);
}

/// Drawing on a backend: what both renderings share.
trait Draw {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), PlotError>;
}

/// A plotters error, as text (its type depends on the backend).
fn drawing<E: std::error::Error + Send + Sync>(e: DrawingAreaErrorKind<E>) -> PlotError {
    PlotError::Draw(e.to_string())
}

fn checked(size: Size) -> Result<(u32, u32), PlotError> {
    let ok = |side: u32| (MIN_SIDE..=MAX_SIDE).contains(&side);
    if ok(size.width) && ok(size.height) {
        Ok((size.width, size.height))
    } else {
        Err(PlotError::Size(size.width, size.height))
    }
}

/// The chart as an SVG document (`<svg …>…</svg>`, no XML declaration): ready to
/// be inlined in HTML. Its text is escaped by plotters.
fn render_svg(chart: &impl Draw, size: Size) -> Result<String, PlotError> {
    let dims = checked(size)?;
    font()?;
    let mut out = String::new();
    {
        let root = plotters::backend::SVGBackend::with_string(&mut out, dims).into_drawing_area();
        chart.draw(&root)?;
        root.present().map_err(drawing)?;
    }
    Ok(out)
}

/// The chart as a PNG image (8-bit RGB).
fn render_png(chart: &impl Draw, size: Size) -> Result<Vec<u8>, PlotError> {
    use plotters::backend::{BitMapBackend, RGBPixel};
    let (width, height) = checked(size)?;
    let font = font()?;
    let mut pixels = vec![0u8; width as usize * height as usize * 3];
    {
        let inner = BitMapBackend::<RGBPixel>::with_buffer_and_format(&mut pixels, (width, height))
            .map_err(|e| PlotError::Draw(e.to_string()))?;
        let root = glyphs::Glyphs { inner, font }.into_drawing_area();
        chart.draw(&root)?;
        root.present().map_err(drawing)?;
    }
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, width, height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header()?;
    writer.write_image_data(&pixels)?;
    writer.finish()?;
    Ok(out)
}

/// The width of `s` in `style`, in pixels.
fn text_width<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    s: &str,
    style: &TextStyle,
) -> Result<i32, PlotError> {
    let (w, _) = area.estimate_text_size(s, style).map_err(drawing)?;
    Ok(w as i32)
}

/// `s`, cut with an ellipsis to at most `max` pixels in `style`.
fn fit<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    s: &str,
    style: &TextStyle,
    max: i32,
) -> Result<String, PlotError> {
    if text_width(area, s, style)? <= max {
        return Ok(s.to_string());
    }
    let chars: Vec<char> = s.chars().collect();
    let mut keep = chars.len();
    while keep > 0 {
        keep -= 1;
        let cut: String = chars[..keep].iter().chain(['…'].iter()).collect();
        if text_width(area, &cut, style)? <= max {
            return Ok(cut);
        }
    }
    Ok(String::new())
}

/// A p-value for people: three decimals, or scientific notation below 0.001.
pub fn p_text(p: f64) -> String {
    if p == 0.0 {
        "0".into()
    } else if p < 1e-3 {
        format!("{p:.1e}")
    } else {
        format!("{p:.3}")
    }
}

/// A statistic or a PSI for people: three decimals, or scientific notation for
/// very large or small magnitudes.
pub fn number_text(v: f64) -> String {
    let a = v.abs();
    if a != 0.0 && !(1e-3..1e5).contains(&a) {
        format!("{v:.2e}")
    } else {
        format!("{v:.3}")
    }
}

#[cfg(test)]
mod tests;
