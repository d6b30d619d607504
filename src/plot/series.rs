//! The time-series chart: one value over time (an error rate, an accuracy, a
//! p-value), with vertical markers for events (a change point, a new model
//! version) and an optional horizontal threshold (alpha, a budget). Times are Unix
//! milliseconds, shown in UTC.

use plotters::coord::Shift;
use plotters::prelude::{
    BindKeyPoints, Circle, Color, DashedLineSeries, DrawingArea, DrawingBackend, LineSeries,
    Rectangle, Text, WHITE,
};
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::{
    drawing, fit, frame, render_png, render_svg, style_mesh, text, Draw, PlotError, Size, DRIFT,
    INK, LABEL, LEGEND, MUTED, PAD, REFERENCE, STATUS,
};

/// A labelled vertical line at a time.
#[derive(Debug, Clone, PartialEq)]
pub struct Marker {
    /// Unix milliseconds.
    pub at: i64,
    pub label: String,
}

/// A labelled horizontal line at a value.
#[derive(Debug, Clone, PartialEq)]
pub struct Threshold {
    pub value: f64,
    pub label: String,
}

/// One value over time.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TimeSeries {
    pub title: String,
    /// What the value is, on the y axis.
    pub y_label: String,
    /// (Unix milliseconds, value), in time order; a non-finite value breaks the
    /// line.
    pub points: Vec<(i64, f64)>,
    pub markers: Vec<Marker>,
    pub threshold: Option<Threshold>,
    /// A fixed y range (0 to 1 for a p-value or an accuracy); else fitted to the
    /// values and the threshold.
    pub y_range: Option<(f64, f64)>,
}

impl TimeSeries {
    /// The chart as an SVG element, for inlining in HTML.
    pub fn svg(&self, size: Size) -> Result<String, PlotError> {
        render_svg(self, size)
    }

    /// The chart as a PNG image, for mail.
    pub fn png(&self, size: Size) -> Result<Vec<u8>, PlotError> {
        render_png(self, size)
    }

    /// The time axis: the points and the markers, at least a minute wide.
    fn x_range(&self) -> (i64, i64) {
        let times = self
            .points
            .iter()
            .map(|p| p.0)
            .chain(self.markers.iter().map(|m| m.at));
        let (lo, hi) = times.fold((i64::MAX, i64::MIN), |(lo, hi), t| (lo.min(t), hi.max(t)));
        if lo > hi {
            (0, 3_600_000)
        } else if hi - lo < 60_000 {
            (lo - 30_000, hi + 30_000)
        } else {
            let pad = (hi - lo) / 40;
            (lo - pad, hi + pad)
        }
    }

    fn y_range(&self) -> (f64, f64) {
        if let Some((lo, hi)) = self.y_range.filter(|(lo, hi)| lo < hi) {
            return (lo, hi);
        }
        let values = self
            .points
            .iter()
            .map(|p| p.1)
            .chain(self.threshold.as_ref().map(|t| t.value))
            .filter(|v| v.is_finite());
        let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
        if lo > hi {
            (0.0, 1.0)
        } else if hi - lo < 1e-12 {
            let pad = (lo.abs() * 0.1).max(0.5);
            (lo - pad, hi + pad)
        } else {
            let pad = (hi - lo) * 0.08;
            (lo - pad, hi + pad)
        }
    }
}

/// Tick times between `lo` and `hi`: multiples of the smallest round step
/// (seconds, minutes, hours, days) that gives at most `max` of them.
pub(super) fn time_ticks(lo: i64, hi: i64, max: i64) -> Vec<i64> {
    const S: i64 = 1000;
    const M: i64 = 60 * S;
    const H: i64 = 60 * M;
    const D: i64 = 24 * H;
    const STEPS: [i64; 22] = [
        S,
        2 * S,
        5 * S,
        10 * S,
        15 * S,
        30 * S,
        M,
        2 * M,
        5 * M,
        10 * M,
        15 * M,
        30 * M,
        H,
        2 * H,
        3 * H,
        6 * H,
        12 * H,
        D,
        2 * D,
        7 * D,
        14 * D,
        30 * D,
    ];
    let span = (hi - lo).max(1);
    let step = STEPS
        .into_iter()
        .find(|step| span / step < max)
        .unwrap_or_else(|| (span / max / D + 1) * D);
    let first = lo.div_euclid(step) * step + if lo.rem_euclid(step) == 0 { 0 } else { step };
    (0..)
        .map(|i| first + i * step)
        .take_while(|t| *t <= hi)
        .collect()
}

/// Time labels in UTC, as fine as the span needs.
fn time_label(ms: i64, span_ms: i64) -> String {
    let Some(t) = chrono::DateTime::from_timestamp_millis(ms) else {
        return String::new();
    };
    let day = 86_400_000;
    let format = if span_ms <= 600_000 {
        "%H:%M:%S"
    } else if span_ms <= 2 * day {
        "%H:%M"
    } else if span_ms <= 60 * day {
        "%m-%d %H:%M"
    } else {
        "%Y-%m-%d"
    };
    t.format(format).to_string()
}

/// The height of the title block in pixels.
const HEAD: u32 = 42;

impl Draw for TimeSeries {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), PlotError> {
        root.fill(&WHITE).map_err(drawing)?;
        let (width, _) = root.dim_in_pixel();
        let (head, body) = root.split_vertically(HEAD);
        let title_style = text(STATUS, INK);
        let title = fit(root, &self.title, &title_style, width as i32 - 2 * PAD)?;
        head.draw(&Text::new(title, (PAD, 10), title_style))
            .map_err(drawing)?;

        let (x0, x1) = self.x_range();
        let (y0, y1) = self.y_range();
        let span = x1 - x0;
        let mut chart = frame(&body, 68)
            .build_cartesian_2d((x0..x1).with_key_points(time_ticks(x0, x1, 7)), y0..y1)
            .map_err(drawing)?;
        let x_format = |t: &i64| time_label(*t, span);
        let mut mesh = chart.configure_mesh();
        style_mesh(&mut mesh, &self.y_label);
        mesh.x_labels(8)
            .x_label_formatter(&x_format)
            .x_desc("time (UTC)")
            .draw()
            .map_err(drawing)?;

        if let Some(t) = &self.threshold {
            chart
                .draw_series(DashedLineSeries::new(
                    [(x0, t.value), (x1, t.value)],
                    6,
                    4,
                    DRIFT.stroke_width(1),
                ))
                .map_err(drawing)?;
            let (x, y) = chart.backend_coord(&(x1, t.value));
            let style = text(LABEL, DRIFT).pos(Pos::new(HPos::Right, VPos::Bottom));
            let room = super::text_width(root, &t.label, &style)?;
            root.draw(&Rectangle::new(
                [(x - 6 - room, y - 20), (x - 2, y - 2)],
                WHITE.mix(0.85).filled(),
            ))
            .map_err(drawing)?;
            root.draw(&Text::new(t.label.clone(), (x - 4, y - 3), style))
                .map_err(drawing)?;
        }

        // The line, broken where a value is missing; dots when they can be told apart.
        let mut runs: Vec<Vec<(i64, f64)>> = vec![Vec::new()];
        for &(t, v) in &self.points {
            match runs.last_mut() {
                Some(run) if v.is_finite() => run.push((t, v)),
                Some(run) if !run.is_empty() => runs.push(Vec::new()),
                _ => {}
            }
        }
        for run in runs.iter().filter(|r| !r.is_empty()) {
            chart
                .draw_series(LineSeries::new(
                    run.iter().copied(),
                    REFERENCE.stroke_width(2),
                ))
                .map_err(drawing)?;
        }
        let finite = runs.iter().map(Vec::len).sum::<usize>();
        if finite <= 60 {
            chart
                .draw_series(
                    runs.iter()
                        .flatten()
                        .map(|&p| Circle::new(p, 3, REFERENCE.filled())),
                )
                .map_err(drawing)?;
        }

        for (i, m) in self.markers.iter().enumerate() {
            chart
                .draw_series(DashedLineSeries::new(
                    [(m.at, y0), (m.at, y1)],
                    5,
                    4,
                    INK.mix(0.7).stroke_width(1),
                ))
                .map_err(drawing)?;
            // Labels just right of their line, staggered so that neighbours do
            // not overwrite each other; one too close to the right edge goes left.
            let (x, top) = chart.backend_coord(&(m.at, y1));
            let y = top + 4 + (i as i32 % 3) * 20;
            let (right, _) = chart.backend_coord(&(x1, y1));
            let style = text(LABEL, INK);
            let label = fit(root, &m.label, &style, (right - x).max(width as i32 / 3))?;
            let room = super::text_width(root, &label, &style)?;
            let (at, style, box_left) = if x + 4 + room > right {
                (
                    x - 4,
                    style.pos(Pos::new(HPos::Right, VPos::Top)),
                    x - 6 - room,
                )
            } else {
                (x + 4, style, x + 2)
            };
            // A light box behind the label keeps it readable over the line.
            root.draw(&Rectangle::new(
                [(box_left, y - 1), (box_left + room + 4, y + 18)],
                WHITE.mix(0.85).filled(),
            ))
            .map_err(drawing)?;
            root.draw(&Text::new(label, (at, y), style))
                .map_err(drawing)?;
        }
        if finite == 0 {
            let (x, y) = chart.backend_coord(&((x0 + x1) / 2, (y0 + y1) / 2.0));
            let style = text(LEGEND, MUTED).pos(Pos::new(HPos::Center, VPos::Center));
            root.draw(&Text::new("no values", (x, y), style))
                .map_err(drawing)?;
        }
        Ok(())
    }
}
