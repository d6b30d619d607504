//! The floor for `POST /v1/predict` on this machine: a bare axum handler that
//! parses the request body into a `serde_json::Value` and answers a JSON object
//! of the shape steward answers (an id, the version, the class, the
//! probabilities, the anomaly fields), with no model, no logging and no
//! database. `scripts/floor.sh` runs the same wrk load against it and against
//! `steward serve`, and prints the ratio: what steward's work per request costs.
//!
//! ```sh
//! cargo run --release --example floor -- 127.0.0.1:8090
//! ```

use std::sync::atomic::{AtomicU64, Ordering};

use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};

static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// One answer per request, of steward's shape. The body is parsed whole (as
/// steward's handler parses it) and its feature count goes into the answer, so
/// the parse cannot be optimised away.
async fn predict(Json(body): Json<Value>) -> Json<Value> {
    let features = body["features"].as_object().map_or(0, |f| f.len());
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    Json(json!({
        "id": format!("{id:032x}"),
        "model_version": "1",
        "prediction": "Adelie",
        "probabilities": {"Adelie": 0.999_935_87, "Chinstrap": 0.000_002_836_615_5, "Gentoo": 0.000_061_223_32},
        "anomaly": false,
        "anomaly_score": features as f64,
    }))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8090".to_string());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("listening on {}", listener.local_addr()?);
    let app = Router::new().route("/v1/predict", post(predict));
    axum::serve(listener, app).await?;
    Ok(())
}
