//! The drift report as one self-contained HTML page (`steward drift --html`): a
//! summary, a table of every feature (drifted ones first) and each feature's
//! distribution chart as inline SVG.
//!
//! Self-contained means the page loads nothing: no script, no external style
//! sheet, font or image, not even a favicon (an empty `data:` icon stops the
//! browser asking for one); one inline `<style>`. It opens offline, from a mail
//! attachment or an artefact store, and tells nobody that it was opened.
//!
//! The numbers are those of the [`DriftReport`] that `--json` prints. The table
//! shows them rounded; each row also carries them at full precision in `data-*`
//! attributes (Rust's shortest round-trip form, `null` as an empty string), so a
//! test or a script can check one against the other. Every string that comes
//! from the data (feature and category names, file names) is escaped.
//!
//! The charts draw the histograms the report carries (`FeatureDrift::histogram`,
//! binned once in `monitor::drift`), so they show what the tests compared.
//!
//! This module builds the page; it does not run the tests, read the CSVs or write
//! the file (`cli` does).

use std::fmt::Write as _;

use crate::monitor::drift::{DriftReport, FeatureDrift};
use crate::plot::{self, Distribution, Histogram, PlotError, Size, Verdict};
use crate::stats::Correction;

/// Why the page could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("the chart of feature `{feature}`: {source}")]
    Chart {
        feature: String,
        #[source]
        source: PlotError,
    },
}

/// What the page says about where the report comes from.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// The reference sample, as the user named it (a file name).
    pub reference: &'a str,
    /// The current sample.
    pub current: &'a str,
    /// When the report was made (RFC 3339).
    pub generated: &'a str,
}

/// One feature's chart: the histogram and the verdict the report holds, so the
/// chart draws exactly what the test compared. A feature without a histogram
/// (a side had no values) gets empty bins of its kind. The alert mail draws the
/// same chart as a PNG.
pub fn distribution(feature: &FeatureDrift) -> Distribution {
    let histogram = feature.histogram.clone().unwrap_or_else(|| {
        if feature.kind == "categorical" {
            Histogram::categorical::<&str>(&[], &[], plot::MAX_CATEGORIES)
        } else {
            Histogram::numeric(&[], &[], plot::NUMERIC_BINS)
        }
    });
    Distribution {
        feature: feature.name.clone(),
        histogram,
        verdict: Verdict {
            test: feature.test.to_string(),
            p_value: feature.p_value,
            p_adjusted: feature.p_adjusted,
            psi: feature.psi,
            drift: feature.drift,
        },
    }
}

/// Drifted features first, then by adjusted p-value (untested ones last); the
/// report's order where those tie.
fn reading_order(report: &DriftReport) -> Vec<usize> {
    let mut order: Vec<usize> = (0..report.features.len()).collect();
    order.sort_by(|&a, &b| {
        let (fa, fb) = (&report.features[a], &report.features[b]);
        let p = |f: &FeatureDrift| f.p_adjusted.unwrap_or(f64::INFINITY);
        fb.drift.cmp(&fa.drift).then(p(fa).total_cmp(&p(fb)))
    });
    order
}

/// The whole page.
pub fn drift_html(report: &DriftReport, context: &Context) -> Result<String, ReportError> {
    let mut charts = String::new();
    let mut rows = String::new();
    for (rank, &i) in reading_order(report).iter().enumerate() {
        let f = &report.features[i];
        let chart = distribution(f);
        let svg = chart.svg(Size::MAIL).map_err(|source| ReportError::Chart {
            feature: f.name.clone(),
            source,
        })?;
        let _ = writeln!(
            charts,
            "<figure id=\"chart-{rank}\" class=\"{class}\" data-feature=\"{name}\" \
             data-bins=\"{bins}\">{svg}</figure>",
            class = verdict_class(f),
            name = esc(&f.name),
            bins = chart.histogram.len(),
        );
        rows.push_str(&table_row(f, rank));
    }
    let title = format!(
        "Drift: {} against {}",
        esc(context.current),
        esc(context.reference)
    );
    let tested = report
        .features
        .iter()
        .filter(|f| f.p_value.is_some())
        .count();
    let mut page = String::with_capacity(charts.len() + rows.len() + 8_000);
    let _ = write!(
        page,
        r##"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="steward {version}">
<title>{title}</title>
<link rel="icon" href="data:,">
<style>{STYLE}</style>
</head>
<body>
<main>
<header>
<h1>Drift report</h1>
<p class="sources">current <b>{current}</b> ({current_rows} rows) against reference <b>{reference}</b> ({reference_rows} rows) · {generated} · steward {version}</p>
</header>
<section id="summary" class="summary {summary_class}" data-drift="{drift}" data-dataset-drift="{dataset_drift}" data-drifted="{drifted}" data-features="{features}" data-tested="{tested}" data-alpha="{alpha:?}" data-correction="{correction_key}" data-reference-rows="{reference_rows}" data-current-rows="{current_rows}">
<p class="headline">{drifted} of {features} features drifted</p>
<dl>
<dt>dataset drift</dt><dd>{dataset_drift_text}</dd>
<dt>alpha</dt><dd>{alpha}</dd>
<dt>correction</dt><dd>{correction}</dd>
<dt>tested features</dt><dd>{tested}</dd>
<dt>rows</dt><dd>{reference_rows} reference, {current_rows} current</dd>
</dl>
</section>
<h2>Features</h2>
<table id="features">
<thead><tr><th>feature</th><th>kind</th><th>test</th><th>statistic</th><th>p-value</th><th>adjusted p</th><th>PSI</th><th>values (ref / cur)</th><th>drift</th></tr></thead>
<tbody>
{rows}</tbody>
</table>
<p class="note">{rule}</p>
<h2>Distributions</h2>
<p class="note">Each feature's values as shares of its sample: reference in blue, current in orange, over bins common to both.
Numeric bins are of equal width over both samples' ranges (values beyond Tukey's far fences count in the outer bins); categories past {max_categories} share one bar.</p>
<div class="charts">
{charts}</div>
</main>
</body>
</html>
"##,
        version = env!("CARGO_PKG_VERSION"),
        STYLE = STYLE,
        current = esc(context.current),
        reference = esc(context.reference),
        generated = esc(context.generated),
        current_rows = report.current_rows,
        reference_rows = report.reference_rows,
        summary_class = if report.drift { "drift" } else { "steady" },
        drift = report.drift,
        dataset_drift = report.dataset_drift,
        drifted = report.drifted,
        features = report.features.len(),
        alpha = report.alpha,
        correction_key = correction_key(report.correction),
        dataset_drift_text = if report.dataset_drift {
            "yes: at least half of the tested features drift"
        } else {
            "no: fewer than half of the tested features drift"
        },
        correction = match report.correction {
            Correction::Bonferroni => "Bonferroni",
            Correction::BenjaminiHochberg => "Benjamini–Hochberg",
            Correction::None => "none",
        },
        rule = RULE,
        max_categories = plot::MAX_CATEGORIES,
    );
    Ok(page)
}

/// The `correction` value as `--json` writes it.
fn correction_key(c: Correction) -> &'static str {
    match c {
        Correction::Bonferroni => "bonferroni",
        Correction::BenjaminiHochberg => "bh",
        Correction::None => "none",
    }
}

fn verdict_class(f: &FeatureDrift) -> &'static str {
    match (f.drift, f.p_value.is_some()) {
        (true, _) => "drift",
        (false, true) => "steady",
        (false, false) => "untested",
    }
}

/// One row of the feature table: rounded text, exact `data-*` attributes.
fn table_row(f: &FeatureDrift, rank: usize) -> String {
    let exact = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v:?}"));
    let shown = |v: Option<f64>, p: bool| match v {
        Some(v) if p => plot::p_text(v),
        Some(v) => plot::number_text(v),
        None => "–".into(),
    };
    let verdict = match verdict_class(f) {
        "drift" => "yes",
        "steady" => "no",
        _ => "not tested",
    };
    format!(
        "<tr class=\"{class}\" data-feature=\"{name}\" data-kind=\"{kind}\" data-test=\"{test}\" \
         data-statistic=\"{statistic}\" data-p-value=\"{p_value}\" data-p-adjusted=\"{p_adjusted}\" \
         data-psi=\"{psi}\" data-drift=\"{drift}\" data-reference-values=\"{rv}\" \
         data-current-values=\"{cv}\">\
         <td class=\"name\"><a href=\"#chart-{rank}\">{name}</a></td><td class=\"text\">{kind}</td>\
         <td class=\"text\">{test}</td><td>{statistic_text}</td><td>{p_text}</td>\
         <td>{p_adjusted_text}</td><td>{psi_text}</td><td>{rv} / {cv}</td>\
         <td class=\"verdict\">{verdict}</td></tr>\n",
        class = verdict_class(f),
        name = esc(&f.name),
        kind = f.kind,
        test = f.test,
        statistic = exact(f.statistic),
        p_value = exact(f.p_value),
        p_adjusted = exact(f.p_adjusted),
        psi = exact(f.psi),
        drift = f.drift,
        rv = f.reference_values,
        cv = f.current_values,
        statistic_text = shown(f.statistic, false),
        p_text = shown(f.p_value, true),
        p_adjusted_text = shown(f.p_adjusted, true),
        psi_text = shown(f.psi, false),
    )
}

/// How to read the table, under it.
const RULE: &str = "A feature drifts when its adjusted p-value is below alpha and the \
change is large enough to matter: PSI at least 0.1, or for a numeric feature a KS \
statistic at least 0.05. Numeric features are tested with the two-sample \
Kolmogorov–Smirnov test, categorical ones with a chi-square test of the current \
counts against the reference's proportions. PSI (population stability index) uses \
the reference's deciles for numeric features.";

/// Text for HTML: `&`, `<`, `>`, `"` and `'` escaped, so it is safe both between
/// tags and inside a quoted attribute.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The page's only style sheet. System fonts only: nothing to download.
const STYLE: &str = r#"
:root { color-scheme: light; --drift: #c0392b; --steady: #2e7d32; --muted: #666; --line: #dcdfe4; }
* { box-sizing: border-box; }
body { margin: 0; background: #f5f6f8; color: #222;
  font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; }
main { max-width: 1480px; margin: 0 auto; padding: 24px 24px 48px; }
h1 { font-size: 26px; margin: 0 0 4px; }
h2 { font-size: 19px; margin: 32px 0 10px; }
.sources { color: var(--muted); margin: 0 0 20px; overflow-wrap: anywhere; }
.summary { background: #fff; border: 1px solid var(--line); border-left: 6px solid var(--steady);
  border-radius: 6px; padding: 14px 20px; max-width: 720px; }
.summary.drift { border-left-color: var(--drift); }
.headline { font-size: 21px; font-weight: 600; margin: 0 0 8px; }
.summary.drift .headline { color: var(--drift); }
dl { display: grid; grid-template-columns: max-content auto; gap: 2px 18px; margin: 0; }
dt { color: var(--muted); }
dd { margin: 0; }
table { border-collapse: collapse; background: #fff; border: 1px solid var(--line);
  font-variant-numeric: tabular-nums; min-width: 720px; }
th, td { padding: 6px 12px; border-bottom: 1px solid #eceef1; text-align: right; white-space: nowrap; }
th { background: #eef0f3; font-weight: 600; font-size: 13px; color: #444; }
th:nth-child(-n+3), td.name, td.text { text-align: left; }
td.name { max-width: 320px; overflow: hidden; text-overflow: ellipsis; }
td.name a { color: inherit; }
tr.drift td.verdict { color: var(--drift); font-weight: 600; }
tr.drift td.name { box-shadow: inset 4px 0 var(--drift); }
tr.steady td.verdict { color: var(--steady); }
tr.untested td { color: var(--muted); }
.note { color: var(--muted); font-size: 13px; max-width: 900px; }
.charts { display: grid; grid-template-columns: repeat(auto-fill, minmax(640px, 1fr)); gap: 16px; }
figure { margin: 0; background: #fff; border: 1px solid var(--line); border-radius: 6px; padding: 6px; }
figure.drift { border-top: 4px solid var(--drift); }
figure svg { display: block; width: 100%; height: auto; max-width: 760px; margin: 0 auto; }
"#;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitor::drift::{compare, Columns, DriftOptions, Values};

    fn columns() -> Columns {
        let numeric = |shift: f64| {
            Values::Numeric((0..200).map(|i| (i as f64 * 0.7).sin() + shift).collect())
        };
        let cats = |names: &[&str]| {
            Values::Categorical(
                (0..200)
                    .map(|i| names[i % names.len()].to_string())
                    .collect(),
            )
        };
        Columns {
            names: vec!["a".into(), "<b> & \"c\"".into(), "moved".into()],
            reference: vec![numeric(0.0), cats(&["x", "y"]), numeric(0.0)],
            current: vec![numeric(0.0), cats(&["x", "y", "<z>"]), numeric(1.5)],
        }
    }

    fn page() -> (DriftReport, String) {
        let c = columns();
        let report = compare(&c.names, &c.reference, &c.current, &DriftOptions::default()).unwrap();
        let context = Context {
            reference: "ref<1>.csv",
            current: "cur.csv",
            generated: "2026-01-02T03:04:05Z",
        };
        let html = drift_html(&report, &context).unwrap();
        (report, html)
    }

    #[test]
    fn drifted_features_come_first_and_every_name_is_escaped() {
        let (report, html) = page();
        let drifted: Vec<&str> = report
            .features
            .iter()
            .filter(|f| f.drift)
            .map(|f| f.name.as_str())
            .collect();
        assert_eq!(drifted.len(), 2, "{report:#?}");
        let first_rows: Vec<&str> = html
            .split("<tr class=\"")
            .skip(1)
            .map(|r| r.split('"').next().unwrap())
            .collect();
        assert_eq!(first_rows, ["drift", "drift", "steady"]);
        assert!(html.contains("&lt;b&gt; &amp; &quot;c&quot;"));
        assert!(html.contains("ref&lt;1&gt;.csv"));
        assert!(!html.contains("<b> &") && !html.contains("<z>") && !html.contains("ref<1>"));
    }

    #[test]
    fn the_page_loads_nothing() {
        let (_, html) = page();
        // The SVG namespace is a name, not a request.
        let html = html.replace(r#"xmlns="http://www.w3.org/2000/svg""#, "");
        for needle in ["<script", "src=", "url(", "@import", "http://", "https://"] {
            assert!(!html.contains(needle), "`{needle}` in the page");
        }
        assert_eq!(html.matches("<svg").count(), 3);
        assert_eq!(
            html.matches("<link").count(),
            1,
            "only the empty data: icon"
        );
    }

    #[test]
    fn rows_carry_the_reports_numbers_exactly() {
        let (report, html) = page();
        for f in &report.features {
            let row = html
                .split("<tr ")
                .find(|r| r.contains(&format!("data-feature=\"{}\"", esc(&f.name))))
                .unwrap();
            let attr = |key: &str| -> Option<f64> {
                let at = row.find(&format!("data-{key}=\"")).unwrap() + key.len() + 7;
                let text = &row[at..at + row[at..].find('"').unwrap()];
                (!text.is_empty()).then(|| text.parse().unwrap())
            };
            assert_eq!(attr("statistic"), f.statistic);
            assert_eq!(attr("p-value"), f.p_value);
            assert_eq!(attr("p-adjusted"), f.p_adjusted);
            assert_eq!(attr("psi"), f.psi);
        }
    }

    #[test]
    fn escaping_covers_text_and_attributes() {
        assert_eq!(
            esc(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }
}
