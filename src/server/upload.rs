//! `POST /v1/models` (admin): a new model version sent to the running daemon, as
//! multipart/form-data: an `artifact` part (a steward model file), or an `onnx`
//! part with a `data` part (the CSV describing its features) and optional text
//! parts `label`, `task`, `classes` (comma-separated) and `tolerance`.
//! `?activate=true` makes it live at once. The body may be up to
//! `server.max_upload_bytes`; a refused upload registers nothing.

use std::collections::HashMap;

use axum::extract::multipart::{Multipart, MultipartError, MultipartRejection};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::Json;

use super::error::ApiError;
use super::AppState;
use crate::app::models::{Registered, Upload};
use crate::model::Task;
use crate::onnx::ImportOptions;

/// The parts of an upload, as they arrived.
#[derive(Default)]
struct Parts {
    files: HashMap<&'static str, (String, Vec<u8>)>,
    text: HashMap<&'static str, String>,
}

const FILES: [&str; 3] = ["artifact", "onnx", "data"];
const TEXTS: [&str; 4] = ["label", "task", "classes", "tolerance"];

pub async fn upload(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<(StatusCode, Json<Registered>), ApiError> {
    let activate = match query.get("activate").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(ApiError::bad_request(
                "invalid_query",
                format!("activate=`{other}`: must be true or false"),
            ))
        }
    };
    let multipart = multipart.map_err(|e| {
        ApiError::bad_request(
            "invalid_upload",
            format!(
                "{e}: send multipart/form-data with an `artifact` part, or `onnx` and `data` parts"
            ),
        )
    })?;
    let parts = read_parts(multipart).await?;
    let upload = into_upload(parts)?;
    let registered = state.app.models().upload(upload, activate).await?;
    Ok((StatusCode::CREATED, Json(registered)))
}

async fn read_parts(mut multipart: Multipart) -> Result<Parts, ApiError> {
    let mut parts = Parts::default();
    while let Some(field) = multipart.next_field().await.map_err(multipart_error)? {
        let name = field.name().unwrap_or_default().to_string();
        let file_name = field.file_name().map(str::to_string);
        let bytes = field.bytes().await.map_err(multipart_error)?.to_vec();
        if let Some(key) = FILES.iter().find(|k| **k == name) {
            let file = file_name.unwrap_or_else(|| format!("{name} part"));
            parts.files.insert(key, (file, bytes));
        } else if let Some(key) = TEXTS.iter().find(|k| **k == name) {
            let text = String::from_utf8(bytes).map_err(|_| {
                ApiError::bad_request("invalid_upload", format!("part `{name}` is not UTF-8 text"))
            })?;
            parts.text.insert(key, text.trim().to_string());
        } else {
            return Err(ApiError::bad_request(
                "invalid_upload",
                format!("unknown part `{name}`; the parts are artifact, or onnx and data, with label, task, classes, tolerance"),
            ));
        }
    }
    Ok(parts)
}

fn multipart_error(e: MultipartError) -> ApiError {
    let status = e.status();
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(
            status,
            "upload_too_large",
            "the upload is larger than server.max_upload_bytes",
        )
    } else {
        ApiError::bad_request(
            "invalid_upload",
            format!("the multipart body cannot be read: {e}"),
        )
    }
}

fn into_upload(mut parts: Parts) -> Result<Upload, ApiError> {
    let artifact = parts.files.remove("artifact");
    let onnx = parts.files.remove("onnx");
    let data = parts.files.remove("data");
    match (artifact, onnx, data) {
        (Some((name, bytes)), None, None) => Ok(Upload::Artifact { name, bytes }),
        (None, Some((name, bytes)), Some((csv_name, csv))) => Ok(Upload::Onnx {
            name,
            bytes,
            csv_name,
            csv,
            options: import_options(&parts.text)?,
        }),
        (None, Some(_), None) => Err(ApiError::bad_request(
            "invalid_upload",
            "an `onnx` part needs a `data` part: the CSV that names its features",
        )),
        (Some(_), _, _) => Err(ApiError::bad_request(
            "invalid_upload",
            "send either an `artifact` part or `onnx` and `data` parts, not both",
        )),
        (None, None, _) => Err(ApiError::bad_request(
            "invalid_upload",
            "no model in the upload: send an `artifact` part, or `onnx` and `data` parts",
        )),
    }
}

fn import_options(text: &HashMap<&'static str, String>) -> Result<ImportOptions, ApiError> {
    let mut options = ImportOptions::new(text.get("label").map_or("label", String::as_str));
    options.task = match text.get("task").map(String::as_str) {
        None | Some("") => None,
        Some("classification") => Some(Task::Classification),
        Some("regression") => Some(Task::Regression),
        Some(other) => {
            return Err(ApiError::bad_request(
                "invalid_upload",
                format!("task `{other}`: must be classification or regression"),
            ))
        }
    };
    options.classes = text
        .get("classes")
        .filter(|c| !c.is_empty())
        .map(|c| c.split(',').map(|s| s.trim().to_string()).collect());
    if let Some(t) = text.get("tolerance").filter(|t| !t.is_empty()) {
        options.tolerance = t
            .parse::<f64>()
            .ok()
            .filter(|v| *v > 0.0 && v.is_finite())
            .ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_upload",
                    format!("tolerance `{t}`: must be a positive number"),
                )
            })?;
    }
    Ok(options)
}
