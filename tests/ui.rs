//! The dashboard in headless Chromium, against a real daemon (its own process,
//! a real database, a bearer token) that has served calm traffic, labels, and
//! then a burst in which two inputs drift, and that has mailed the incident to
//! a real SMTP server on loopback. Every page loads with no console error and
//! no failed or refused request; every chart holds data points; the drift page
//! lists the shifted features first; activation and silences work from the
//! page, with the token typed in and never kept. One screenshot per page goes to
//! target/screenshots/dashboard/ (dashboard-postgres/ from the daemon on
//! PostgreSQL). Both tests run on SQLite and on PostgreSQL (`for_each_backend!`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};

use crate::common::browser::{Browser, Page};
use crate::common::{client, eventually, for_each_backend, shared_model, Api, Backend, Daemon};
use crate::learning::finished;
use crate::monitoring::{checks_after, predict_all, rows};
use crate::smtp::{SmtpOptions, SmtpServer};

const TOKEN: &str = "s3cret-dashboard";

/// The daemon's config: drift checks every second, mail to `port`. No drift
/// retraining: a run started by the drifted burst could promote its model
/// after the page's rollback to v1 and make the rollback look undone (seen
/// once in about 20 runs: version 4 live after the rollback).
fn config(port: u16) -> String {
    format!(
        "[training]\ndrift_retrain = false\n\
         [drift]\ninterval_secs = 1\nwindow = 300\nmin_rows = 50\nconfirm_checks = 1\n\
         [alerts]\ntransport = \"smtp\"\nsmtp_host = \"127.0.0.1\"\nsmtp_port = {port}\n\
         tls = \"none\"\nfrom = \"steward@example.org\"\nto = [\"ops@example.org\"]\n\
         group_wait_secs = 1\nretry_initial_secs = 0.2\nretry_max_secs = 1\n"
    )
}

/// Longer bills and heavier birds.
fn shifted(r: &mut Value) {
    if let Some(v) = r["bill_length_mm"].as_f64() {
        r["bill_length_mm"] = json!(v + 8.0);
    }
    if let Some(v) = r["body_mass_g"].as_f64() {
        r["body_mass_g"] = json!(v + 1500.0);
    }
}

/// Where the screenshots of the daemon on `backend` go (one directory each:
/// both tests run at once).
fn shots(backend: Backend) -> PathBuf {
    let name = match backend {
        Backend::Sqlite => "dashboard",
        Backend::Postgres => "dashboard-postgres",
    };
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/screenshots")
        .join(name)
}

/// Opens `path`, waits for the page's data and charts, and checks that nothing
/// went wrong on the way: no console error, every request answered 2xx.
fn open_page<'a>(browser: &'a mut Browser, base: &str, path: &str) -> Page<'a> {
    let mut page = browser.open(&format!("{base}{path}"));
    page.wait_for(
        "document.body.dataset.ready === 'true'",
        &format!("{path}: data and charts"),
    );
    assert_clean(&page, path);
    page
}

fn assert_clean(page: &Page<'_>, path: &str) {
    let errors = page.console_errors();
    assert!(errors.is_empty(), "{path}: {errors:#?}");
    let requests = page.requests();
    assert!(requests.len() >= 3, "{path}: {requests:#?}");
    for r in &requests {
        assert_eq!(r.failed, None, "{path}: {r:?}");
        assert!(
            r.status.is_some_and(|s| (200..300).contains(&s)),
            "{path}: {r:?}"
        );
    }
}

/// Per chart on the page: its source, and how many data points it draws (the
/// points of its lines, and its bars in the reference and current colours).
const CHART_POINTS: &str = r##"[...document.querySelectorAll("figure.chart")].map(f => {
    const svg = f.querySelector("svg");
    if (!svg) return [f.dataset.src, -1];
    const line = [...svg.querySelectorAll("polyline")]
        .filter(p => (p.getAttribute("stroke") || "").toUpperCase() === "#4C72B0")
        .map(p => p.getAttribute("points").trim().split(/\s+/).length)
        .reduce((a, b) => a + b, 0);
    const bars = [...svg.querySelectorAll("rect")]
        .filter(r => ["#4C72B0", "#DD8452"].includes((r.getAttribute("fill") || "").toUpperCase()))
        .length;
    return [f.dataset.src, line + bars];
})"##;

fn chart_points(page: &mut Page<'_>) -> Vec<(String, i64)> {
    serde_json::from_value(page.eval(CHART_POINTS)).unwrap()
}

fn text(page: &mut Page<'_>, selector: &str) -> Vec<String> {
    let v = page.eval(&format!(
        "[...document.querySelectorAll({})].map(e => e.textContent.trim())",
        Value::String(selector.into())
    ));
    serde_json::from_value(v).unwrap()
}

for_each_backend!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    every_dashboard_page_shows_its_data_and_the_drifted_features_first
);
async fn every_dashboard_page_shows_its_data_and_the_drifted_features_first(backend: Backend) {
    let smtp = SmtpServer::start(SmtpOptions::default());
    let d = Daemon::start_on(backend, &config(smtp.port()), &[("STEWARD_TOKEN", TOKEN)]);
    let c = client();
    // Calm traffic with labels (the feedback chart), then the shifted burst.
    let calm = rows(300, |_| {});
    let answers = predict_all(&d, &c, &calm).await;
    let labels: Vec<Value> = answers
        .iter()
        .map(|a| json!({"id": a["id"], "label": a["prediction"]}))
        .collect();
    let status = c
        .post(format!("{}/v1/feedback", d.base()))
        .bearer_auth(TOKEN)
        .json(&json!({ "feedback": labels }))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 202);
    checks_after(&d, &c, 1.0).await;
    predict_all(&d, &c, &rows(300, shifted)).await;
    checks_after(&d, &c, 2.0).await;
    eventually("the incident mailed", Duration::from_secs(30), || async {
        !smtp.messages().is_empty()
    })
    .await;
    // A second version, uploaded and made live: the page can roll back to v1.
    let artifact = std::fs::read(shared_model()).unwrap();
    let form = reqwest::multipart::Form::new().part(
        "artifact",
        reqwest::multipart::Part::bytes(artifact).file_name("model.safetensors"),
    );
    let uploaded = c
        .post(format!("{}/v1/models?activate=true", d.base()))
        .bearer_auth(TOKEN)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(uploaded.status(), 201, "{}", uploaded.text().await.unwrap());
    // A retraining run, for the models page's table of runs.
    let started: Value = c
        .post(format!("{}/v1/retrain", d.base()))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let run = finished(&d, &c, started["id"].as_i64().unwrap()).await;
    let versions_before = d.get_json(&c, "/v1/models").await;
    let base = d.base().to_string();

    let checked = tokio::task::spawn_blocking(move || {
        // Without Chromium (outside CI) the test skips.
        let mut browser = Browser::launch()?;
        std::fs::create_dir_all(shots(backend)).unwrap();
        let mut seen = Vec::new();

        // Overview, at `/`: the five charts over the hour, one point a minute.
        let mut page = open_page(&mut browser, &base, "/");
        let charts = chart_points(&mut page);
        assert_eq!(charts.len(), 5, "{charts:?}");
        for (src, points) in &charts {
            assert!(*points > 0, "{src}: no data points");
        }
        let predictions = charts
            .iter()
            .find(|(s, _)| s.contains("predictions"))
            .unwrap();
        // 60 minutes, and a dot per minute (60 or fewer points are drawn as dots
        // too, which are circles, not counted here): the line has all 60.
        assert_eq!(predictions.1, 60, "{charts:?}");
        let firing = text(&mut page, "tr.firing td:first-child");
        assert!(firing.iter().any(|r| r == "feature_drift"), "{firing:?}");
        let cards = text(&mut page, ".card .value");
        assert!(
            cards.first().is_some_and(|v| v.starts_with('v')),
            "{cards:?}"
        );
        page.screenshot(&shots(backend).join("overview.png"));
        seen.push("overview");
        drop(page);

        // Drift: the table drifted first, each part by p-value (smallest
        // first), both shifted inputs among the drifted; the sections in the
        // table's order. (Checked on the page's own numbers: a check may run
        // between any two reads.)
        let mut page = open_page(&mut browser, &base, "/ui/drift");
        let names = text(&mut page, "#features tbody tr td:first-child");
        assert_eq!(names.len(), 7, "six inputs and the prediction: {names:?}");
        let verdicts = text(&mut page, "#features tbody tr td:last-child");
        let p_values: Vec<f64> = text(&mut page, "#features tbody tr td:nth-child(4)")
            .iter()
            .map(|p| p.parse().unwrap())
            .collect();
        let drifted = verdicts.iter().take_while(|v| *v == "DRIFT").count();
        assert!(
            verdicts[drifted..].iter().all(|v| v != "DRIFT"),
            "{verdicts:?}"
        );
        for part in [&p_values[..drifted], &p_values[drifted..]] {
            assert!(
                part.windows(2).all(|w| w[0] <= w[1]),
                "{names:?} {p_values:?}"
            );
        }
        for shifted in ["bill_length_mm", "body_mass_g"] {
            assert!(
                names[..drifted].iter().any(|n| n == shifted),
                "{shifted} not among the drifted first: {names:?} {verdicts:?}"
            );
        }
        let sections = text(&mut page, "section.feature h2");
        assert!(sections[0].starts_with(&names[0]), "{sections:?}");
        let charts = chart_points(&mut page);
        assert_eq!(charts.len(), 3 * sections.len(), "{charts:?}");
        for (src, points) in &charts {
            assert!(*points > 0, "{src}: no data points");
        }
        page.screenshot(&shots(backend).join("drift.png"));
        seen.push("drift");
        drop(page);

        // Models: roll back from the page. A wrong token is refused and said;
        // the right one works; neither stays in the page.
        let mut page = open_page(&mut browser, &base, "/ui/models");
        let buttons = text(&mut page, "#versions button");
        assert!(
            buttons.iter().any(|b| b == "Roll back to v1"),
            "{buttons:?}"
        );
        // The run, with its state, the gate's numbers and its decision.
        let cells = text(&mut page, &format!("#run-{} td", run["id"]));
        assert_eq!(cells[3], run["state"].as_str().unwrap(), "{cells:?}");
        assert!(
            ["promoted", "rejected"].contains(&cells[3].as_str()),
            "the gate decided: {cells:?}"
        );
        for (cell, key) in [(6, "live_metric"), (7, "candidate_metric")] {
            let shown: f64 = cells[cell].parse().unwrap();
            let exact = run[key].as_f64().unwrap();
            assert!((shown - exact).abs() < 1e-4, "{key}: {cells:?} {run}");
        }
        assert_eq!(
            cells.last().map(String::as_str),
            run["decision"].as_str(),
            "{cells:?} {run}"
        );
        page.screenshot(&shots(backend).join("models.png"));
        let click = r#"(() => {
            document.querySelector("input[name=token]").value = TOKEN_VALUE;
            document.querySelector("button[data-version='1']").click();
            return true; })()"#;
        page.eval(&click.replace("TOKEN_VALUE", "'wrong'"));
        page.wait_for(
            "document.getElementById('activate-status').textContent.includes('401')",
            "the refusal shown",
        );
        page.eval(&click.replace("TOKEN_VALUE", &format!("'{TOKEN}'")));
        page.wait_for(
            "document.getElementById('activate-status').textContent.includes('v1 is live')",
            "the activation shown",
        );
        let kept = page.eval(
            "document.querySelector('input[name=token]').value + document.cookie \
             + localStorage.length + sessionStorage.length",
        );
        assert_eq!(kept, "00", "the token stays nowhere");
        seen.push("models");
        drop(page);

        // Alerts: the incident's mail as sent; a silence made with the token,
        // then listed with it.
        let mut page = open_page(&mut browser, &base, "/ui/alerts");
        let states = text(&mut page, "#mails tbody tr td:nth-child(4)");
        assert!(states.iter().any(|s| s == "sent"), "{states:?}");
        let subjects = text(&mut page, "#mails tbody tr td:nth-child(3)");
        assert!(
            subjects.iter().any(|s| s.contains("feature drift")),
            "{subjects:?}"
        );
        page.eval(&format!(
            r#"(() => {{
            const f = document.getElementById("new-silence");
            f.querySelector("input[name=matchers]").value = "feature=bill_length_mm";
            f.querySelector("input[name=comment]").value = "known migration";
            f.querySelector("input[name=token]").value = "{TOKEN}";
            f.requestSubmit();
            return true; }})()"#
        ));
        page.wait_for(
            "document.getElementById('silence-status').textContent.includes('created')",
            "the silence created",
        );
        page.eval(&format!(
            r##"(() => {{
            const f = document.querySelector("#silences form");
            f.querySelector("input[name=token]").value = "{TOKEN}";
            f.requestSubmit();
            return true; }})()"##
        ));
        page.wait_for(
            "!!document.getElementById('silence-list')",
            "the silences listed",
        );
        let listed = text(&mut page, "#silence-list tbody tr td:first-child");
        assert_eq!(listed, ["feature=bill_length_mm"]);
        let comments = text(&mut page, "#silence-list tbody tr td:nth-child(5)");
        assert_eq!(comments, ["known migration"]);
        page.screenshot(&shots(backend).join("alerts.png"));
        // Deleted from its row, with the token.
        page.eval(&format!(
            r##"(() => {{
            const f = document.querySelector("#silence-list tbody tr form");
            f.querySelector("input[name=token]").value = "{TOKEN}";
            f.requestSubmit();
            return true; }})()"##
        ));
        page.wait_for(
            "document.querySelector('#silence-list tbody tr').classList.contains('gone')",
            "the silence deleted",
        );
        assert_clean(&page, "/ui/alerts after the writes");
        seen.push("alerts");
        Some(seen)
    })
    .await
    .unwrap();
    let Some(seen) = checked else {
        return;
    };
    assert_eq!(seen, ["overview", "drift", "models", "alerts"]);
    // What the page did, the API confirms.
    let model = d.get_json(&c, "/v1/model").await;
    assert_eq!(model["version"], "1", "{versions_before}");
    let silences = c
        .get(format!("{}/v1/silences", d.base()))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(silences["silences"], json!([]), "the page deleted it");
}

for_each_backend!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    chart_endpoints_answer_svg_and_name_a_bad_parameter
);
/// The chart endpoints refuse what they cannot draw with a 422 that names the
/// parameter, and answer SVG otherwise.
async fn chart_endpoints_answer_svg_and_name_a_bad_parameter(backend: Backend) {
    let d = crate::common::InProcess::start_on(
        backend,
        "[drift]\ninterval_secs = 1\nwindow = 300\nmin_rows = 50\nconfirm_checks = 1\n",
    )
    .await;
    let c = client();
    predict_all(&d, &c, &rows(120, |_| {})).await;
    checks_after(&d, &c, 1.0).await;
    let get = |path: &str| {
        let c = c.clone();
        let url = format!("{}{path}", d.base());
        async move {
            let r = c.get(url).send().await.unwrap();
            let status = r.status().as_u16();
            let kind = r
                .headers()
                .get("content-type")
                .map(|v| v.to_str().unwrap().to_string())
                .unwrap_or_default();
            (status, kind, r.text().await.unwrap())
        }
    };
    for path in [
        "/ui/charts/overview.svg?chart=latency_p99&minutes=5",
        "/ui/charts/drift.svg?feature=body_mass_g&chart=distribution",
        "/ui/charts/drift.svg?feature=prediction&chart=psi&checks=3",
    ] {
        let (status, kind, body) = get(path).await;
        assert_eq!(
            (status, kind.as_str()),
            (200, "image/svg+xml"),
            "{path}: {body}"
        );
        assert!(body.starts_with("<svg"), "{path}: {body}");
    }
    for (path, needle) in [
        ("/ui/charts/overview.svg", "`chart` is required"),
        ("/ui/charts/overview.svg?chart=nope", "chart=`nope`"),
        (
            "/ui/charts/overview.svg?chart=predictions&minutes=0",
            "minutes=`0`",
        ),
        (
            "/ui/charts/overview.svg?chart=predictions&hours=1",
            "`hours`",
        ),
        ("/ui/charts/drift.svg?chart=psi", "`feature` is required"),
        (
            "/ui/charts/drift.svg?feature=nope&chart=psi",
            "feature=`nope`",
        ),
        (
            "/ui/charts/drift.svg?feature=island&chart=psi&checks=501",
            "checks=`501`",
        ),
    ] {
        let (status, _, body) = get(path).await;
        assert_eq!(status, 422, "{path}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["error"]["code"], "invalid_parameter", "{path}");
        let message = v["error"]["message"].as_str().unwrap();
        assert!(message.contains(needle), "{path}: {message}");
    }
    // The pages and their assets, with their types.
    for (path, kind) in [
        ("/", "text/html; charset=utf-8"),
        ("/ui/drift", "text/html; charset=utf-8"),
        ("/ui/assets/app.js", "text/javascript; charset=utf-8"),
        ("/ui/assets/style.css", "text/css; charset=utf-8"),
    ] {
        let (status, got, _) = get(path).await;
        assert_eq!((status, got.as_str()), (200, kind), "{path}");
    }
    let (status, _, _) = get("/ui/nope").await;
    assert_eq!(status, 404);
    d.stop().await;
}
