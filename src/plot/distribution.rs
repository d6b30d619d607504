//! The distribution chart: one feature's reference and current samples side by
//! side over common bins, as shares of each sample (the samples differ in size),
//! under a title with the feature's name, its test's p-values and PSI, and the
//! verdict.

use plotters::coord::Shift;
use plotters::prelude::{Color, DrawingArea, DrawingBackend, Rectangle, Text, WHITE};
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::{
    drawing, fit, frame, number_text, p_text, render_png, render_svg, style_mesh, text, text_width,
    Bins, Draw, Histogram, PlotError, Size, CURRENT, DRIFT, INK, LABEL, LEGEND, MUTED, PAD,
    REFERENCE, STATUS, STEADY, TITLE,
};

/// What the drift test said about the feature. Reads from a drift result's
/// JSON (`test`, `p_value`, `p_adjusted`, `psi`, `drift`; the rest ignored).
#[derive(Debug, Clone, PartialEq, Default, serde::Deserialize)]
#[serde(default)]
pub struct Verdict {
    /// The test's name as the report gives it (`ks`, `chi2`, `none`).
    pub test: String,
    pub p_value: Option<f64>,
    /// The p-value after the correction across features.
    pub p_adjusted: Option<f64>,
    pub psi: Option<f64>,
    pub drift: bool,
}

/// One feature's reference against current distribution.
#[derive(Debug, Clone, PartialEq)]
pub struct Distribution {
    pub feature: String,
    pub histogram: Histogram,
    pub verdict: Verdict,
}

impl Distribution {
    /// The chart as an SVG element, for inlining in HTML: one `<rect>` filled
    /// with [`REFERENCE_FILL`](super::REFERENCE_FILL) and one with
    /// [`CURRENT_FILL`](super::CURRENT_FILL) per bin (zero high for an empty bin),
    /// and no other rectangle in those colours.
    pub fn svg(&self, size: Size) -> Result<String, PlotError> {
        render_svg(self, size)
    }

    /// The chart as a PNG image, for mail.
    pub fn png(&self, size: Size) -> Result<Vec<u8>, PlotError> {
        render_png(self, size)
    }

    /// The line under the title: the test, its p-values and the PSI.
    fn subtitle(&self) -> String {
        let v = &self.verdict;
        let Some(p) = v.p_value else {
            return match v.psi {
                Some(psi) => format!("no test · PSI {}", number_text(psi)),
                None => "no test: a side has no values, or there is one category".into(),
            };
        };
        let test = match v.test.as_str() {
            "ks" => "KS",
            "chi2" => "χ²",
            other => other,
        };
        let mut s = format!("{test} p = {}", p_text(p));
        if let Some(adjusted) = v.p_adjusted {
            s.push_str(&format!(" (adjusted {})", p_text(adjusted)));
        }
        if let Some(psi) = v.psi {
            s.push_str(&format!(" · PSI {}", number_text(psi)));
        }
        s
    }
}

/// The height of the title block in pixels.
const HEAD: u32 = 66;

impl Draw for Distribution {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), PlotError> {
        root.fill(&WHITE).map_err(drawing)?;
        let (width, _) = root.dim_in_pixel();
        let right = width as i32 - PAD;
        let (head, body) = root.split_vertically(HEAD);

        let (status, colour) = match (self.verdict.drift, self.verdict.p_value.is_some()) {
            (true, _) => ("DRIFT", DRIFT),
            (false, true) => ("no drift", STEADY),
            (false, false) => ("not tested", MUTED),
        };
        let status_style = text(STATUS, colour).pos(Pos::new(HPos::Right, VPos::Top));
        let status_width = text_width(root, status, &status_style)?;
        head.draw(&Text::new(status, (right, 10), status_style))
            .map_err(drawing)?;
        let title_style = text(TITLE, INK);
        let title = fit(
            root,
            &self.feature,
            &title_style,
            right - PAD - status_width - 2 * PAD,
        )?;
        head.draw(&Text::new(title, (PAD, 8), title_style))
            .map_err(drawing)?;

        // The legend, right-aligned on the second line; the subtitle left of it.
        let (n_ref, n_cur) = self.histogram.totals();
        let second = 40;
        let current = format!("■ current ({n_cur})");
        let current_style = text(LEGEND, CURRENT).pos(Pos::new(HPos::Right, VPos::Top));
        let reference = format!("■ reference ({n_ref})");
        let reference_style = text(LEGEND, REFERENCE).pos(Pos::new(HPos::Right, VPos::Top));
        let x = right - text_width(root, &current, &current_style)? - 16;
        let legend_left = x - text_width(root, &reference, &reference_style)?;
        head.draw(&Text::new(current, (right, second), current_style))
            .map_err(drawing)?;
        head.draw(&Text::new(reference, (x, second), reference_style))
            .map_err(drawing)?;
        let subtitle_style = text(LEGEND, MUTED);
        let subtitle = fit(
            root,
            &self.subtitle(),
            &subtitle_style,
            legend_left - 2 * PAD,
        )?;
        head.draw(&Text::new(subtitle, (PAD, second), subtitle_style))
            .map_err(drawing)?;

        self.draw_bars(root, &body)
    }
}

impl Distribution {
    fn draw_bars<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, Shift>,
        body: &DrawingArea<DB, Shift>,
    ) -> Result<(), PlotError> {
        let h = &self.histogram;
        let reference = Histogram::shares(&h.reference);
        let current = Histogram::shares(&h.current);
        let top = reference
            .iter()
            .chain(&current)
            .fold(0.0f64, |a, &b| a.max(b));
        let y_max = (top * 1.12).max(0.01);
        // Each bin's slot on the x axis, and the gap left on each side of its bars.
        let (slots, gap): (Vec<(f64, f64)>, f64) = match &h.bins {
            Bins::Edges(edges) => (edges.windows(2).map(|w| (w[0], w[1])).collect(), 0.08),
            Bins::Categories(names) => (
                (0..names.len())
                    .map(|i| (i as f64 - 0.5, i as f64 + 0.5))
                    .collect(),
                0.18,
            ),
        };
        let (x0, x1) = match (slots.first(), slots.last()) {
            (Some(first), Some(last)) => (first.0, last.1),
            _ => (0.0, 1.0),
        };
        let mut chart = frame(body, 64)
            .build_cartesian_2d(x0..x1, 0.0..y_max)
            .map_err(drawing)?;
        let percent = |v: &f64| {
            if y_max < 0.05 {
                format!("{:.1}%", v * 100.0)
            } else {
                format!("{:.0}%", v * 100.0)
            }
        };
        let categorical = matches!(h.bins, Bins::Categories(_));
        // Edges as short as the axis' span allows: 180, not 180.0.
        let decimals = (2 - ((x1 - x0).abs().max(1e-12)).log10().floor() as i32).clamp(0, 12);
        let x_format = |v: &f64| {
            let s = format!("{v:.*}", decimals as usize);
            let s = if s.contains('.') {
                s.trim_end_matches('0').trim_end_matches('.')
            } else {
                &s
            };
            if s == "-0" {
                "0".to_string()
            } else {
                s.to_string()
            }
        };
        let mut mesh = chart.configure_mesh();
        style_mesh(&mut mesh, "share of values");
        mesh.disable_x_mesh().y_label_formatter(&percent);
        if categorical {
            mesh.x_labels(0);
        } else {
            mesh.x_labels(8).x_label_formatter(&x_format);
        }
        mesh.draw().map_err(drawing)?;

        let bars = |shares: &[f64], left: bool, colour: plotters::style::RGBColor| {
            slots
                .iter()
                .zip(shares.to_vec())
                .map(move |(&(a, b), share)| {
                    let (pad, mid) = ((b - a) * gap, (a + b) / 2.0);
                    let (from, to) = if left { (a + pad, mid) } else { (mid, b - pad) };
                    Rectangle::new([(from, share), (to, 0.0)], colour.filled())
                })
        };
        chart
            .draw_series(bars(&reference, true, REFERENCE))
            .map_err(drawing)?;
        chart
            .draw_series(bars(&current, false, CURRENT))
            .map_err(drawing)?;

        if let Bins::Categories(names) = &h.bins {
            // Category names under their bars, cut to the slot's width.
            let style = text(LABEL, INK).pos(Pos::new(HPos::Center, VPos::Top));
            for (i, name) in names.iter().enumerate() {
                let (x, y) = chart.backend_coord(&(i as f64, 0.0));
                let (left, _) = chart.backend_coord(&(i as f64 - 0.5, 0.0));
                let label = fit(root, name, &style, 2 * (x - left) - 4)?;
                root.draw(&Text::new(label, (x, y + 8), style.clone()))
                    .map_err(drawing)?;
            }
        }
        if n_values(h) == 0 {
            let (x, y) = chart.backend_coord(&((x0 + x1) / 2.0, y_max / 2.0));
            let style = text(LEGEND, MUTED).pos(Pos::new(HPos::Center, VPos::Center));
            root.draw(&Text::new("no values", (x, y), style))
                .map_err(drawing)?;
        }
        Ok(())
    }
}

fn n_values(h: &Histogram) -> u64 {
    let (r, c) = h.totals();
    r + c
}
