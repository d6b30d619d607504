//! The dashboard: four pages (`/` or `/ui/overview`, `/ui/drift`, `/ui/models`,
//! `/ui/alerts`), their script and style sheet, and the charts they show, all
//! embedded in the binary (no CDN, no build step: it works offline).
//!
//! A page is a small HTML shell; its script (assets/ui/app.js) reads the JSON
//! endpoints under `/v1/` and fills in the numbers and tables. The charts are
//! drawn here, server-side, as SVG by `crate::plot`: the same drawing code as the
//! drift report and the alert mail's PNGs, so a chart looks the same in the
//! mail, the report and the page, and no JavaScript chart library has to be
//! vendored and kept up to date. `GET /ui/charts/overview.svg` and
//! `GET /ui/charts/drift.svg` read the same services as `/v1/overview` and
//! `/v1/drift/history` (rollups, never the prediction log) and take the same
//! parameters, plus which chart.
//!
//! The pages hold no secret: a write (activate a version, create or delete a
//! silence) asks for the bearer token in a form field that is cleared after
//! the request and never stored.

mod charts;

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::body::QueryParams;
use super::error::ApiError;
use super::AppState;
use crate::plot::Size;

/// The pages: path segment, title.
pub const PAGES: [(&str, &str); 4] = [
    ("overview", "Overview"),
    ("drift", "Drift"),
    ("models", "Models"),
    ("alerts", "Alerts"),
];

static SCRIPT: &str = include_str!("../../../assets/ui/app.js");
static STYLE: &str = include_str!("../../../assets/ui/style.css");

/// Where a chart sits on a page: wide enough for two side by side.
const CHART: Size = Size {
    width: 700,
    height: 320,
};

/// What the pages may load: only this origin; inline styles for the SVG
/// charts' attributes; no frames.
const POLICY: &str = "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; \
                      frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// The dashboard's routes, merged into the API's router.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(overview))
        .route("/ui", get(overview))
        .route("/ui/", get(overview))
        .route("/ui/overview", get(overview))
        .route(
            "/ui/drift",
            get(|s: State<AppState>| async move { page(&s, "drift") }),
        )
        .route(
            "/ui/models",
            get(|s: State<AppState>| async move { page(&s, "models") }),
        )
        .route(
            "/ui/alerts",
            get(|s: State<AppState>| async move { page(&s, "alerts") }),
        )
        .route(
            "/ui/assets/app.js",
            get(|| async { asset(SCRIPT, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/ui/assets/style.css",
            get(|| async { asset(STYLE, "text/css; charset=utf-8") }),
        )
        .route("/ui/charts/overview.svg", get(overview_chart))
        .route("/ui/charts/drift.svg", get(drift_chart))
}

async fn overview(state: State<AppState>) -> Response {
    page(&state, "overview")
}

/// The HTML shell of page `name` (one of [`PAGES`]). `data-token` tells the
/// script whether writes (and the silences' list) need the bearer token, so it
/// asks for one only then.
fn page(state: &AppState, name: &str) -> Response {
    let token = if state.app.settings().token.is_some() {
        "required"
    } else {
        "none"
    };
    let title = PAGES
        .iter()
        .find(|(n, _)| *n == name)
        .map_or("steward", |(_, t)| t);
    let nav: String = PAGES
        .iter()
        .map(|(n, t)| {
            let current = if *n == name {
                " aria-current=\"page\""
            } else {
                ""
            };
            format!("<a href=\"/ui/{n}\"{current}>{t}</a>")
        })
        .collect();
    let html = format!(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{title} · steward</title>\n<link rel=\"icon\" href=\"data:,\">\n\
         <link rel=\"stylesheet\" href=\"/ui/assets/style.css\">\n\
         <script src=\"/ui/assets/app.js\" defer></script>\n</head>\n\
         <body data-page=\"{name}\" data-token=\"{token}\">\n<header><span class=\"brand\">steward</span>\
         <nav>{nav}</nav><span id=\"live\" class=\"live\"></span></header>\n\
         <main id=\"main\"><p class=\"muted\">Loading…</p></main>\n\
         <noscript><p>The dashboard needs JavaScript; the same data is at /v1/overview, \
         /v1/drift/history, /v1/models and /v1/alerts.</p></noscript>\n</body>\n</html>\n"
    );
    let mut response = (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        html,
    )
        .into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

fn asset(body: &'static str, kind: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, kind),
            // Embedded in the binary: a new build is a new daemon, so revalidate.
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

fn svg(body: String) -> Response {
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "image/svg+xml"),
            (header::CACHE_CONTROL, "no-store"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

/// `GET /ui/charts/overview.svg?chart=C&minutes=N`: one of the overview's
/// per-minute series ([`charts::OVERVIEW`]), version changes marked.
async fn overview_chart(
    State(state): State<AppState>,
    params: QueryParams,
) -> Result<Response, ApiError> {
    const KNOWN: [&str; 2] = ["chart", "minutes"];
    let chart = required(&params, &KNOWN, "chart")?;
    let minutes = params.get(&KNOWN, "minutes")?;
    let kind = charts::OverviewChart::parse(chart)?;
    let overview = state.app.dashboard().overview(minutes).await?;
    let series = kind.series(&overview)?;
    Ok(svg(series
        .svg(CHART)
        .map_err(|e| ApiError::internal(&e))?))
}

/// `GET /ui/charts/drift.svg?feature=F&chart=C&checks=N`: feature `F`'s
/// distribution at the newest check, or its p-value or PSI over the last `N`
/// checks. The model's output is the feature `prediction`.
async fn drift_chart(
    State(state): State<AppState>,
    params: QueryParams,
) -> Result<Response, ApiError> {
    const KNOWN: [&str; 3] = ["feature", "chart", "checks"];
    let feature = required(&params, &KNOWN, "feature")?;
    let chart = required(&params, &KNOWN, "chart")?;
    let checks = params.get(&KNOWN, "checks")?;
    let kind = charts::DriftChart::parse(chart)?;
    let history = state.app.dashboard().drift_history(checks).await?;
    let drawn = kind.draw(&history, feature, CHART)?;
    Ok(svg(drawn))
}

/// A query parameter the chart cannot do without.
fn required<'a>(params: &'a QueryParams, known: &[&str], name: &str) -> Result<&'a str, ApiError> {
    params.get(known, name)?.ok_or_else(|| {
        ApiError::unprocessable(
            "invalid_parameter",
            format!("query parameter `{name}` is required"),
        )
    })
}
