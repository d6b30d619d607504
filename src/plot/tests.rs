//! The charts render in both forms: PNGs decode to the asked size with ink where
//! the bars are, SVGs are well-formed and hold one bar per bin per series.

use super::*;

/// `n` values spread as a normal distribution: its quantiles at evenly spaced
/// probabilities (deterministic, no random numbers).
fn normal(n: usize, mean: f64, sd: f64) -> Vec<f64> {
    use statrs::distribution::{ContinuousCDF, Normal};
    let d = Normal::new(mean, sd).unwrap();
    (0..n)
        .map(|i| d.inverse_cdf((i as f64 + 0.5) / n as f64))
        .collect()
}

fn numeric() -> Distribution {
    Distribution {
        feature: "flipper_length_mm".into(),
        histogram: Histogram::numeric(
            &normal(333, 200.0, 14.0),
            &normal(250, 215.0, 14.0),
            NUMERIC_BINS,
        ),
        verdict: Verdict {
            test: "ks".into(),
            p_value: Some(3.2e-11),
            p_adjusted: Some(1.9e-10),
            psi: Some(0.61),
            drift: true,
        },
    }
}

fn categorical() -> Distribution {
    let reference: Vec<&str> = [("Biscoe", 168), ("Dream", 124), ("Torgersen", 52)]
        .iter()
        .flat_map(|(name, n)| std::iter::repeat_n(*name, *n))
        .collect();
    let current: Vec<&str> = [
        ("Biscoe", 60),
        ("Dream", 150),
        ("Torgersen", 30),
        ("Anvers", 9),
    ]
    .iter()
    .flat_map(|(name, n)| std::iter::repeat_n(*name, *n))
    .collect();
    Distribution {
        feature: "island".into(),
        histogram: Histogram::categorical(&reference, &current, MAX_CATEGORIES),
        verdict: Verdict {
            test: "chi2".into(),
            p_value: Some(0.2),
            p_adjusted: Some(1.0),
            psi: Some(0.04),
            drift: false,
        },
    }
}

fn series() -> TimeSeries {
    let start = 1_764_000_000_000;
    TimeSeries {
        title: "Error rate of the live model".into(),
        y_label: "error rate".into(),
        points: (0..48)
            .map(|i| {
                let v = if i < 30 { 0.05 } else { 0.22 } + 0.01 * ((i * 7 % 5) as f64);
                (start + i * 600_000, if i == 12 { f64::NAN } else { v })
            })
            .collect(),
        markers: vec![
            Marker {
                at: start + 30 * 600_000,
                label: "change point".into(),
            },
            Marker {
                at: start + 40 * 600_000,
                label: "v3 → v4".into(),
            },
        ],
        threshold: Some(Threshold {
            value: 0.15,
            label: "alert at 0.15".into(),
        }),
        y_range: None,
    }
}

/// Decodes a PNG: (width, height, RGB bytes).
fn decode(bytes: &[u8]) -> (u32, u32, Vec<u8>) {
    let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!(info.color_type, png::ColorType::Rgb);
    buf.truncate(info.buffer_size());
    (info.width, info.height, buf)
}

/// Pixels of `rgb` inside the rectangle (x0..x1, y0..y1) whose colour `keep` accepts.
fn pixels(
    rgb: &[u8],
    width: u32,
    (x0, x1): (u32, u32),
    (y0, y1): (u32, u32),
    keep: impl Fn([u8; 3]) -> bool,
) -> usize {
    (y0..y1)
        .flat_map(|y| (x0..x1).map(move |x| ((y * width + x) * 3) as usize))
        .filter(|&i| keep([rgb[i], rgb[i + 1], rgb[i + 2]]))
        .count()
}

#[test]
fn a_distribution_png_decodes_to_the_asked_size_with_both_series_in_the_plot_area() {
    for chart in [numeric(), categorical()] {
        let bytes = chart.png(Size::MAIL).unwrap();
        let (w, h, rgb) = decode(&bytes);
        assert_eq!((w, h), (700, 350));
        // The plot area: below the title block, right of the y labels.
        let area = ((90, 680), (70, 300));
        let ink = pixels(&rgb, w, area.0, area.1, |p| p != [255, 255, 255]);
        assert!(ink > 5_000, "{}: {ink} inked pixels", chart.feature);
        let colour = |c: RGBColor| move |p: [u8; 3]| p == [c.0, c.1, c.2];
        assert!(pixels(&rgb, w, area.0, area.1, colour(REFERENCE)) > 1_000);
        assert!(pixels(&rgb, w, area.0, area.1, colour(CURRENT)) > 1_000);
        // The title block has text in it.
        assert!(pixels(&rgb, w, (0, 700), (0, 66), |p| p != [255, 255, 255]) > 500);
    }
}

/// Checks that every tag opened in `svg` is closed in order: well-formed enough
/// for a browser's XML parser, without pulling one in.
fn assert_balanced(svg: &str) {
    let mut open: Vec<String> = Vec::new();
    let mut rest = svg;
    while let Some(at) = rest.find('<') {
        let end = rest[at..].find('>').expect("a tag closes") + at;
        let tag = &rest[at + 1..end];
        rest = &rest[end + 1..];
        if tag.starts_with('?') || tag.starts_with('!') {
            continue;
        }
        let name = |t: &str| {
            t.trim_start_matches('/')
                .split(|c: char| c.is_whitespace() || c == '/')
                .next()
                .unwrap()
                .to_string()
        };
        if tag.starts_with('/') {
            assert_eq!(open.pop(), Some(name(tag)), "closing </{tag}>");
        } else if !tag.ends_with('/') {
            open.push(name(tag));
        }
        assert!(!tag.contains('<'), "a `<` inside a tag: {tag}");
    }
    assert!(open.is_empty(), "never closed: {open:?}");
    assert!(!rest.contains('>'), "text after the last tag: {rest}");
}

/// Rectangles filled with `fill`.
fn rects(svg: &str, fill: &str) -> usize {
    svg.split("<rect")
        .skip(1)
        .filter(|r| r[..r.find('>').unwrap()].contains(&format!("fill=\"{fill}\"")))
        .count()
}

#[test]
fn a_distribution_svg_is_well_formed_with_one_bar_per_bin_per_series() {
    for (chart, bins) in [(numeric(), NUMERIC_BINS), (categorical(), 4)] {
        assert_eq!(chart.histogram.len(), bins);
        let svg = chart.svg(Size::MAIL).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..40]);
        assert!(svg.contains(r#"width="700" height="350""#));
        assert_balanced(&svg);
        assert_eq!(rects(&svg, REFERENCE_FILL), bins, "{}", chart.feature);
        assert_eq!(rects(&svg, CURRENT_FILL), bins, "{}", chart.feature);
        assert!(svg.contains(&chart.feature));
    }
    let svg = categorical().svg(Size::MAIL).unwrap();
    for name in [
        "Biscoe",
        "Dream",
        "Torgersen",
        "Anvers",
        "no drift",
        "χ² p = 0.200",
    ] {
        assert!(svg.contains(name), "{name} missing");
    }
    assert!(numeric().svg(Size::MAIL).unwrap().contains("DRIFT"));
}

#[test]
fn the_numeric_bars_hold_every_value_of_both_samples() {
    let chart = numeric();
    assert_eq!(chart.histogram.totals(), (333, 250));
    let svg = chart.svg(Size::MAIL).unwrap();
    assert!(svg.contains("■ reference (333)") && svg.contains("■ current (250)"));
}

#[test]
fn names_from_data_are_escaped_in_svg() {
    let mut chart = categorical();
    chart.feature = "<script>alert(1)</script> & co".into();
    chart.histogram = Histogram::categorical(&["<b>", "a&b"], &["<b>"], MAX_CATEGORIES);
    let svg = chart.svg(Size::MAIL).unwrap();
    assert!(!svg.contains("<script>") && !svg.contains("<b>"));
    assert!(svg.contains("&lt;script&gt;") && svg.contains("a&amp;b"));
    assert_balanced(&svg);
}

#[test]
fn a_time_series_renders_in_both_forms_with_its_markers() {
    let chart = series();
    let svg = chart.svg(Size::MAIL).unwrap();
    assert_balanced(&svg);
    for text in [
        "Error rate of the live model",
        "change point",
        "v3 → v4",
        "alert at 0.15",
    ] {
        assert!(svg.contains(text), "{text} missing");
    }
    let (w, h, rgb) = decode(
        &chart
            .png(Size {
                width: 640,
                height: 300,
            })
            .unwrap(),
    );
    assert_eq!((w, h), (640, 300));
    let line = |p: [u8; 3]| p == [REFERENCE.0, REFERENCE.1, REFERENCE.2];
    assert!(pixels(&rgb, w, (80, 620), (50, 260), line) > 300);
    // Empty series and edge cases still draw.
    let empty = TimeSeries {
        title: "nothing yet".into(),
        ..TimeSeries::default()
    };
    assert!(empty.svg(Size::MAIL).unwrap().contains("no values"));
    decode(&empty.png(Size::MAIL).unwrap());
}

#[test]
fn sizes_out_of_range_are_refused() {
    let chart = numeric();
    for size in [(0, 350), (700, 99), (5000, 350)] {
        let size = Size {
            width: size.0,
            height: size.1,
        };
        assert!(matches!(chart.png(size), Err(PlotError::Size(..))));
        assert!(matches!(chart.svg(size), Err(PlotError::Size(..))));
    }
}

#[test]
fn p_values_and_numbers_read_well() {
    assert_eq!(p_text(0.0), "0");
    assert_eq!(p_text(3.2e-11), "3.2e-11");
    assert_eq!(p_text(0.0123), "0.012");
    assert_eq!(number_text(0.6123), "0.612");
    assert_eq!(number_text(123456.0), "1.23e5");
}

/// The charts as PNG files in target/screenshots/, to look at.
#[test]
fn sample_charts_are_written_to_target_screenshots() {
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
        .join("screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    for (name, bytes) in [
        ("plot-distribution-numeric.png", numeric().png(Size::MAIL)),
        (
            "plot-distribution-categorical.png",
            categorical().png(Size::MAIL),
        ),
        ("plot-time-series.png", series().png(Size::MAIL)),
    ] {
        std::fs::write(dir.join(name), bytes.unwrap()).unwrap();
    }
}

#[test]
fn time_ticks_fall_on_round_times() {
    use super::series::time_ticks;
    let h = 3_600_000;
    // 16:00 to 24:00 UTC: every 2 hours.
    let lo = 1_764_000_000_000 - 1_764_000_000_000 % (24 * h) + 16 * h;
    let ticks = time_ticks(lo - 60_000, lo + 8 * h, 7);
    assert_eq!(ticks, (0..5).map(|i| lo + 2 * i * h).collect::<Vec<_>>());
    assert_eq!(
        time_ticks(0, 90_000, 7),
        vec![0, 15_000, 30_000, 45_000, 60_000, 75_000, 90_000]
    );
    assert!(time_ticks(0, 400 * 24 * h, 7).len() <= 7);
}
