//! The HTTP API (axum): routes, shared state, and the layers every request passes
//! (metrics, request timeout, body limit, bearer token on write endpoints).
//!
//! [`router`] builds the whole app from an [`AppState`] (the `app` layer's
//! services), so tests can drive it without a socket; the daemon binds it to a
//! listener. Handlers are adapters: they turn bodies into typed values through
//! `body::JsonBody`, call one service method, and answer failures with
//! `error::ApiError`, into which every service's error converts.

mod alerts;
pub mod body;
mod dashboard;
mod drift;
pub mod error;
mod feedback;
mod learning;
pub mod listen;
pub mod metrics;
mod parse_errors;
pub mod predict;
mod process;
mod status;
mod ui;
mod upload;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::error_handling::HandleErrorLayer;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::Router;
use tower::ServiceBuilder;

use crate::app::App;
use error::ApiError;
use metrics::Metrics;

/// What every handler can reach: the services, and the HTTP layer's own
/// counters. Cloned for every request (by each middleware and the handler's
/// `State`), so all of it sits behind one `Arc`: a clone is one reference
/// count, shared by both cores' workers, not one for every part.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

/// The parts of [`AppState`].
pub struct Shared {
    pub app: Arc<App>,
    pub metrics: Arc<Metrics>,
    /// What `/metrics` encodes.
    pub registry: prometheus_client::registry::Registry,
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl AppState {
    pub fn new(app: App) -> AppState {
        let app = Arc::new(app);
        let metrics = Arc::new(Metrics::default());
        let registry = metrics::registry(&app, &metrics);
        AppState(Arc::new(Shared {
            app,
            metrics,
            registry,
        }))
    }
}

/// Limits and switches fixed at start-up.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_body_bytes: usize,
    /// `server.max_upload_bytes`: the body limit of `POST /v1/models`.
    pub max_upload_bytes: usize,
    pub request_timeout: Duration,
    /// `log.access`: one log line per request.
    pub access_log: bool,
}

/// Builds the app.
pub fn router(state: AppState, limits: Limits) -> Router {
    let write = Router::new()
        .route("/v1/feedback", post(feedback::feedback))
        .route(
            "/v1/silences",
            post(alerts::create_silence).get(alerts::silences),
        )
        .route("/v1/silences/{id}", delete(alerts::delete_silence))
        .route("/v1/retrain", post(learning::start))
        .route("/v1/models/{version}/activate", post(learning::activate))
        .route(
            "/v1/models",
            post(upload::upload).layer(DefaultBodyLimit::max(limits.max_upload_bytes)),
        )
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route("/v1/predict", post(predict::predict))
        .route("/v1/model", get(status::model))
        .route("/v1/models", get(status::models))
        .route("/v1/retrain", get(learning::runs))
        .route("/v1/retrain/{id}", get(learning::run))
        .route("/v1/drift", get(drift::drift))
        .route("/v1/drift/history", get(dashboard::drift_history))
        .route("/v1/overview", get(dashboard::overview))
        .route("/v1/alerts", get(alerts::alerts))
        .route("/healthz", get(status::healthz))
        .route("/readyz", get(status::readyz))
        .route("/metrics", get(status::metrics))
        .merge(write)
        .merge(ui::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(
            ServiceBuilder::new()
                .layer(middleware::from_fn_with_state(
                    (state.clone(), limits),
                    observe,
                ))
                .layer(HandleErrorLayer::new(|_: tower::BoxError| async {
                    ApiError::unavailable(
                        "timeout",
                        "the request took longer than server.request_timeout_secs",
                    )
                }))
                .timeout(limits.request_timeout)
                .layer(DefaultBodyLimit::max(limits.max_body_bytes)),
        )
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method not allowed on this endpoint",
    )
}

/// The edge of every request: counts and times it by matched route and status;
/// gives it a request id (the client's `x-request-id`, or a new UUID), returned
/// in the answer's `x-request-id` and written on the access log line
/// (`log.access`); and refuses a body whose declared length is over
/// `server.max_body_bytes` before any of it is read (a client that sent
/// `Expect: 100-continue` gets the 413 instead of `100 Continue`, which hyper
/// sends once the body is read). One middleware for all three: each `from_fn`
/// layer costs a boxed future per request.
async fn observe(
    State((state, limits)): State<(AppState, Limits)>,
    req: Request,
    next: Next,
) -> Response {
    let start = Instant::now();
    let upload = req.method() == axum::http::Method::POST && req.uri().path() == "/v1/models";
    let max_body = if upload {
        limits.max_upload_bytes
    } else {
        limits.max_body_bytes
    };
    // MatchedPath is an Arc<str>: cloning it does not allocate.
    let route = req.extensions().get::<MatchedPath>().cloned();
    let request_id = request_id(&req);
    let method = limits.access_log.then(|| req.method().clone());
    let mut response = if let Some(n) = declared_length(&req).filter(|n| *n > max_body as u64) {
        let drained = drain_refused(req, n).await;
        let mut refused = ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            if upload {
                "upload_too_large"
            } else {
                "body_too_large"
            },
            format!(
                "request body is larger than server.{} ({max_body})",
                if upload {
                    "max_upload_bytes"
                } else {
                    "max_body_bytes"
                }
            ),
        )
        .into_response();
        if !drained {
            // The rest of the body is still coming: this connection cannot carry
            // another request.
            refused.headers_mut().insert(
                header::CONNECTION,
                header::HeaderValue::from_static("close"),
            );
        }
        refused
    } else {
        next.run(req).await
    };
    let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
    let elapsed = start.elapsed();
    let status = response.status().as_u16();
    state.metrics.observe(route, status, elapsed);
    if let Some(method) = method {
        tracing::info!(
            target: "steward::access",
            request_id = %request_id.to_str().unwrap_or_default(),
            %method,
            route,
            status,
            duration_us = elapsed.as_micros() as u64,
            "request"
        );
    }
    response.headers_mut().insert(REQUEST_ID, request_id);
    response
}

const REQUEST_ID: header::HeaderName = header::HeaderName::from_static("x-request-id");

/// The client's `x-request-id` when it is 1 to 128 visible ASCII characters;
/// else a new UUID (v7: ordered by time).
fn request_id(req: &Request) -> header::HeaderValue {
    req.headers()
        .get(&REQUEST_ID)
        .filter(|v| {
            let b = v.as_bytes();
            (1..=128).contains(&b.len()) && b.iter().all(|c| c.is_ascii_graphic())
        })
        .cloned()
        .unwrap_or_else(|| {
            let mut buf = uuid::Uuid::encode_buffer();
            let id = uuid::Uuid::now_v7().hyphenated().encode_lower(&mut buf);
            header::HeaderValue::from_str(id).unwrap_or(header::HeaderValue::from_static("-"))
        })
}

/// The most of a refused body read and discarded before the 413 is sent.
const DRAIN_MAX_BYTES: u64 = 8 << 20;
/// How long the discarding may take.
const DRAIN_TIME: Duration = Duration::from_secs(2);

/// Reads and discards a body refused for its declared `length`, when it is at
/// most [`DRAIN_MAX_BYTES`] and the client did not ask `Expect: 100-continue`
/// (such a client waits for the answer and never sends it). Closing a socket
/// with unread bytes makes the kernel send a reset, and a client still sending
/// would see "connection reset" instead of the 413 that says what is wrong.
/// Returns whether the whole body was read.
async fn drain_refused(req: Request, length: u64) -> bool {
    use http_body_util::BodyExt;
    if length > DRAIN_MAX_BYTES || req.headers().contains_key(header::EXPECT) {
        return false;
    }
    let mut body = req.into_body();
    let mut read = 0u64;
    let drain = async {
        while let Some(frame) = body.frame().await {
            match frame.ok().and_then(|f| f.into_data().ok()) {
                Some(data) => read += data.len() as u64,
                None => return false,
            }
            if read >= length {
                return true;
            }
        }
        read >= length
    };
    tokio::time::timeout(DRAIN_TIME, drain)
        .await
        .unwrap_or(false)
}

fn declared_length(req: &Request) -> Option<u64> {
    req.headers()
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Write endpoints need `Authorization: Bearer <token>` when a token is configured.
async fn require_token(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let settings = state.app.settings();
    if let Some(token) = &settings.token {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        match given {
            None => {
                return ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "this endpoint needs Authorization: Bearer <token>",
                )
                .into_response()
            }
            Some(g) if !constant_time_eq(g.as_bytes(), token.as_bytes()) => {
                return ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "the bearer token is not valid",
                )
                .into_response()
            }
            Some(_) => {}
        }
    }
    next.run(req).await
}

/// Compares in constant time (`subtle`), so timing does not reveal how much of
/// a guess matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.ct_eq(b).into()
}

#[cfg(test)]
mod tests {
    #[test]
    fn token_comparison() {
        assert!(super::constant_time_eq(b"secret", b"secret"));
        assert!(!super::constant_time_eq(b"secreT", b"secret"));
        assert!(!super::constant_time_eq(b"secret1", b"secret"));
        assert!(!super::constant_time_eq(b"", b"secret"));
    }
}
