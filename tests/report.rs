//! `steward drift --html`: the report page opened in headless Chromium. It loads
//! nothing but itself, logs no error, lists the drifted features first, draws one
//! bar per bin per sample, and shows the numbers `--json` gives. A screenshot goes
//! to target/screenshots/drift-report.png.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::Value;

use crate::common::browser::Browser;
use crate::common::{run, screenshots_dir};

/// A column name that would run script and load an image if it were not escaped.
const HOSTILE: &str = "<img src=x onerror=console.error(1)>";

/// The bundled penguins split in two (rows 0 and 3 of every 4 against rows 1 and
/// 2: the file often alternates the sexes, so both halves keep the same mix); the
/// current half has flipper length and bill depth shifted, and `sex` renamed to
/// [`HOSTILE`].
fn write_samples(dir: &Path) {
    let mut lines = steward::BUNDLED_PENGUINS.lines();
    let header = lines
        .next()
        .unwrap()
        .replace(",sex,", &format!(",{HOSTILE},"));
    let columns: Vec<&str> = header.split(',').collect();
    let at = |name: &str| columns.iter().position(|c| *c == name).unwrap();
    let (flipper, depth) = (at("flipper_length_mm"), at("bill_depth_mm"));
    let (mut reference, mut current) = (vec![header.clone()], vec![header.clone()]);
    for (i, line) in lines.enumerate() {
        if i % 4 == 0 || i % 4 == 3 {
            reference.push(line.to_string());
            continue;
        }
        let mut cells: Vec<String> = line.split(',').map(String::from).collect();
        for (col, by) in [(flipper, 12.0), (depth, 1.8)] {
            if let Ok(v) = cells[col].parse::<f64>() {
                cells[col] = format!("{}", v + by);
            }
        }
        current.push(cells.join(","));
    }
    std::fs::write(dir.join("reference.csv"), reference.join("\n") + "\n").unwrap();
    std::fs::write(dir.join("current.csv"), current.join("\n") + "\n").unwrap();
}

/// Runs `steward drift --html OUT --json` on the samples written into `dir`.
fn drift_html(dir: &Path, out: &str) -> (i32, String, String) {
    let args = ["--reference", "reference.csv", "--current", "current.csv"];
    let mut all = vec!["drift"];
    all.extend(args);
    all.extend(["--html", out, "--json"]);
    run(&all, dir)
}

/// A number from a `data-*` attribute ("" is null) equals the JSON's: parsed
/// from the same shortest round-trip text, up to serde_json's last bit.
fn same_number(attribute: &Value, json: &Value, what: &str) {
    let text = attribute.as_str().unwrap();
    match json.as_f64() {
        None => assert!(
            json.is_null() && text.is_empty(),
            "{what}: {text} vs {json}"
        ),
        Some(want) => {
            let got: f64 = text.parse().unwrap();
            assert!(
                (got - want).abs() <= want.abs() * 4.0 * f64::EPSILON,
                "{what}: html {got} vs json {want}"
            );
        }
    }
}

#[test]
fn the_html_report_is_self_contained_and_agrees_with_json() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_samples(d);
    std::fs::create_dir(d.join("out")).unwrap();
    let (code, stdout, stderr) = drift_html(d, "out/report.html");
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("report written to out/report.html"),
        "{stderr}"
    );
    let json: Value = serde_json::from_str(stdout.trim()).expect("one JSON document on stdout");
    let features = json["features"].as_array().unwrap();
    let drifted: BTreeSet<&str> = features
        .iter()
        .filter(|f| f["drift"] == true)
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        drifted,
        BTreeSet::from(["bill_depth_mm", "flipper_length_mm"]),
        "{json}"
    );

    let path = d.join("out/report.html").canonicalize().unwrap();
    let Some(mut browser) = Browser::launch() else {
        return;
    };
    let url = format!("file://{}", path.display());
    let mut page = browser.open(&url);

    assert_eq!(page.console_errors(), Vec::<String>::new());
    let requests = page.requests();
    assert_eq!(requests.len(), 1, "only the file itself: {requests:#?}");
    assert_eq!(
        (requests[0].url.as_str(), requests[0].failed.as_deref()),
        (url.as_str(), None)
    );

    // The table: drifted first, every number as --json has it, and the rounded
    // text as steward prints it.
    let rows = page.eval(
        "[...document.querySelectorAll('#features tbody tr')].map(tr => ({
            data: {...tr.dataset},
            cells: [...tr.cells].map(td => td.textContent),
        }))",
    );
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), features.len());
    let flags: Vec<bool> = rows.iter().map(|r| r["data"]["drift"] == "true").collect();
    assert_eq!(flags[..2], [true, true], "drifted features first");
    assert!(flags[2..].iter().all(|d| !d), "{flags:?}");
    for row in rows {
        let data = &row["data"];
        let name = data["feature"].as_str().unwrap();
        let f = features.iter().find(|f| f["name"] == name).unwrap();
        for (attribute, key) in [
            ("statistic", "statistic"),
            ("pValue", "p_value"),
            ("pAdjusted", "p_adjusted"),
            ("psi", "psi"),
        ] {
            same_number(&data[attribute], &f[key], &format!("{name} {key}"));
        }
        assert_eq!(data["drift"].as_str().unwrap(), f["drift"].to_string());
        assert_eq!(data["test"], f["test"]);
        let cells: Vec<&str> = row["cells"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap())
            .collect();
        assert_eq!(cells[0], name, "the name is shown as text");
        let p = f["p_value"]
            .as_f64()
            .map_or("–".into(), steward::plot::p_text);
        let psi = f["psi"]
            .as_f64()
            .map_or("–".into(), steward::plot::number_text);
        assert_eq!((cells[4], cells[6]), (p.as_str(), psi.as_str()), "{name}");
    }
    let hostile = rows
        .iter()
        .any(|r| r["data"]["feature"] == HOSTILE && r["cells"][0] == HOSTILE);
    assert!(hostile, "the hostile name is text, not markup");
    assert_eq!(
        page.eval("document.querySelectorAll('img, script').length"),
        0
    );

    // The summary holds the report's own values.
    let summary = page.eval("({...document.getElementById('summary').dataset})");
    assert_eq!(summary["drifted"], json["drifted"].to_string());
    assert_eq!(summary["datasetDrift"], json["dataset_drift"].to_string());
    assert_eq!(summary["correction"], json["correction"]);
    same_number(&summary["alpha"], &json["alpha"], "alpha");
    assert_eq!(summary["referenceRows"], json["reference_rows"].to_string());
    assert_eq!(summary["currentRows"], json["current_rows"].to_string());

    // One chart per feature, in the table's order, one bar per bin per sample.
    let charts = page.eval(
        "[...document.querySelectorAll('figure')].map(f => ({
            feature: f.dataset.feature,
            bins: Number(f.dataset.bins),
            reference: f.querySelectorAll('svg rect[fill=\"#4C72B0\"]').length,
            current: f.querySelectorAll('svg rect[fill=\"#DD8452\"]').length,
        }))",
    );
    let charts = charts.as_array().unwrap();
    let order: Vec<&Value> = rows.iter().map(|r| &r["data"]["feature"]).collect();
    let chart_order: Vec<&Value> = charts.iter().map(|c| &c["feature"]).collect();
    assert_eq!(chart_order, order);
    for c in charts {
        let name = c["feature"].as_str().unwrap();
        let f = features.iter().find(|f| f["name"] == name).unwrap();
        let bins = match (f["kind"].as_str().unwrap(), name) {
            ("numeric", _) => steward::plot::NUMERIC_BINS as u64,
            (_, "island" | "label") => 3,
            (_, HOSTILE) => 2, // female, male; empty cells are missing
            other => panic!("unexpected feature {other:?}"),
        };
        // The chart draws the histogram --json gives: as many bins, and every
        // counted value of each side in them.
        let h = &f["histogram"];
        assert_eq!(
            h["reference"].as_array().unwrap().len() as u64,
            bins,
            "{name}"
        );
        let sum = |side: &str| {
            h[side]
                .as_array()
                .unwrap()
                .iter()
                .map(|n| n.as_u64().unwrap())
                .sum::<u64>()
        };
        assert_eq!(
            sum("reference"),
            f["reference_values"].as_u64().unwrap(),
            "{name}"
        );
        assert_eq!(
            sum("current"),
            f["current_values"].as_u64().unwrap(),
            "{name}"
        );
        assert_eq!(c["bins"], bins, "{name}");
        assert_eq!(
            (c["reference"].clone(), c["current"].clone()),
            (bins.into(), bins.into()),
            "{name}"
        );
    }

    let shot = screenshots_dir().join("drift-report.png");
    let (width, height) = page.screenshot(&shot);
    assert!(width >= 1000 && height > 1000, "{width}×{height}");
    let png = std::fs::read(&shot).unwrap();
    assert_eq!(&png[1..4], b"PNG");
}

#[test]
fn a_report_that_cannot_be_written_fails_with_exit_1_and_says_where() {
    let dir = tempfile::tempdir().unwrap();
    write_samples(dir.path());
    let (code, stdout, stderr) = drift_html(dir.path(), "missing/report.html");
    assert_eq!(code, 1, "{stderr}");
    assert!(stdout.is_empty(), "no JSON when the page failed: {stdout}");
    assert!(
        stderr.contains("missing/report.html: cannot write: No such file or directory"),
        "{stderr}"
    );
}

/// The chart the alert mail will carry: a drifted feature of the same data as a
/// PNG, written next to the report's screenshot.
#[test]
fn a_drifted_features_chart_renders_as_png() {
    use steward::monitor::drift::{compare, table_values, DriftOptions};
    let dir = tempfile::tempdir().unwrap();
    write_samples(dir.path());
    let read = |name: &str| steward::data::Table::read(&dir.path().join(name)).unwrap();
    let (r, c) = (read("reference.csv"), read("current.csv"));
    let columns = table_values(&r, &c, &[]).unwrap();
    let report = compare(
        &columns.names,
        &columns.reference,
        &columns.current,
        &DriftOptions::default(),
    )
    .unwrap();
    let flipper = report
        .features
        .iter()
        .find(|f| f.name == "flipper_length_mm")
        .unwrap();
    let chart = steward::report::distribution(flipper);
    assert!(chart.verdict.drift);
    let png = chart.png(steward::plot::Size::MAIL).unwrap();
    let dir = screenshots_dir();
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("drift-flipper_length_mm.png"), png).unwrap();
}
