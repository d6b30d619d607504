//! HTTP request bodies: `POST /v1/predict` and `POST /v1/feedback`.
//!
//! Every input goes through `server::body::parse` (the one place a body becomes a
//! value, with its error classification), then the predict shapes are encoded by
//! the bundled penguins schema exactly as the handler does, and the answers (and
//! the `{"error": {"code", "message"}}` bodies) are serialised back to JSON.
//! Nothing here may panic, whatever the bytes.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use steward::data::Table;
use steward::model::{EncodeError, Schema};
use steward::server::body;
use steward::server::error::ApiError;
use steward::server::predict::PredictRequest;

/// The schema the daemon's first model has: fitted on the bundled penguins.
fn schema() -> &'static Schema {
    static SCHEMA: OnceLock<Schema> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        let table = Table::parse("penguins.csv", steward::BUNDLED_PENGUINS.as_bytes())
            .expect("the bundled data parses");
        let label = table
            .label_index("label")
            .expect("the bundled data has `label`");
        Schema::fit(&table, label).expect("the bundled data fits a schema")
    })
}

/// `server.max_batch` in the shipped config.
const MAX_BATCH: usize = 1024;

/// The shape of `server::feedback::FeedbackRequest` (the `feedback` module is
/// private to the server), with the same `deny_unknown_fields`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct FeedbackRequest {
    id: Option<String>,
    label: Option<Value>,
    feedback: Option<Vec<FeedbackItem>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct FeedbackItem {
    id: String,
    label: Value,
}

/// The error body the server answers with.
fn error_body(e: &ApiError) -> Value {
    json!({"error": {"code": e.code, "message": e.message, "status": e.status.as_u16()}})
}

/// Encodes one row as the predict handler does and returns what would be answered
/// about it: the encoded vector, or the error body.
fn encode(schema: &Schema, row: &Map<String, Value>) -> Value {
    let mut x = vec![0f32; schema.width()];
    match schema.encode_json(row, &mut x) {
        Ok(()) => json!({"encoded": x}),
        Err(EncodeError { code, message }) => json!({"error": {"code": code, "message": message}}),
    }
}

fn to_json(v: &Value) {
    let bytes = serde_json::to_vec(v).expect("a serde_json::Value always serialises");
    std::hint::black_box(bytes);
}

fuzz_target!(|data: &[u8]| {
    let schema = schema();

    // The untyped path: any JSON value, then the predict shapes picked out by hand.
    match body::parse::<Value>(data) {
        Ok(value) => {
            // Any `features`/`instances` found in any JSON value, whatever else
            // the body holds (the typed path below is the handler's own).
            let mut answers = Vec::new();
            if let Some(obj) = value.as_object() {
                if let Some(Value::Object(features)) = obj.get("features") {
                    answers.push(encode(schema, features));
                }
                if let Some(Value::Array(instances)) = obj.get("instances") {
                    for instance in instances {
                        if let Value::Object(row) = instance {
                            answers.push(encode(schema, row));
                        }
                    }
                }
                // The feedback shapes, as the feedback handler tells them apart.
                let single = matches!(
                    (obj.get("id"), obj.get("label")),
                    (Some(Value::String(_)), Some(_))
                );
                let batch = obj.get("feedback").and_then(Value::as_array).map(|items| {
                    items
                        .iter()
                        .filter(|i| i.get("id").is_some_and(Value::is_string))
                        .filter_map(|i| i.get("label"))
                        .count()
                });
                std::hint::black_box((single, batch));
            }
            to_json(&value);
            to_json(&Value::Array(answers));
        }
        Err(e) => to_json(&error_body(&e)),
    }

    // The typed paths, as the handlers run them: the predict handler's own
    // request type (duplicate features, `features` xor `instances`, batch size),
    // then every row encoded.
    match body::parse::<PredictRequest>(data).and_then(|req| req.into_rows(MAX_BATCH)) {
        Ok((rows, batch)) => {
            let answers: Vec<Value> = rows.iter().map(|row| encode(schema, row)).collect();
            to_json(&json!({"batch": batch, "answers": answers}));
        }
        Err(e) => to_json(&error_body(&e)),
    }
    match body::parse::<FeedbackRequest>(data) {
        Ok(req) => {
            std::hint::black_box(&req);
        }
        Err(e) => to_json(&error_body(&e)),
    }
});
