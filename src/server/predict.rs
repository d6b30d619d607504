//! `POST /v1/predict`: one row (`{"features": {..}}`) or a batch
//! (`{"instances": [{..}, ..]}`), answered by `app::predict` (validation,
//! encoding, the non-finite refusal, the log row and the answer's JSON live
//! there). Here: the request's shape. Each row is taken as its JSON text, as
//! received, and parsed once, straight into the model's schema, by the app; a
//! JSON error found there (a feature named twice, a number beyond f64) is
//! answered with the same code, line and column as a parse of the whole body.

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::body::{self, JsonBytes};
use super::error::ApiError;
use super::AppState;
use crate::app::predict::PredictError;

/// The request body; each row's text borrowed from it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PredictRequest<'a> {
    #[serde(borrow)]
    features: Option<&'a RawValue>,
    #[serde(borrow)]
    instances: Option<Vec<&'a RawValue>>,
}

impl<'a> PredictRequest<'a> {
    /// The rows' texts, and whether they came as a batch (`instances`).
    pub fn into_rows(self, max_batch: usize) -> Result<(Vec<&'a str>, bool), ApiError> {
        match (self.features, self.instances) {
            (Some(row), None) => Ok((vec![row.get()], false)),
            (None, Some(instances)) => {
                if instances.is_empty() {
                    return Err(ApiError::unprocessable(
                        "empty_batch",
                        "`instances` is empty",
                    ));
                }
                if instances.len() > max_batch {
                    return Err(ApiError::unprocessable(
                        "batch_too_large",
                        format!(
                            "{} instances, server.max_batch is {max_batch}",
                            instances.len()
                        ),
                    ));
                }
                Ok((instances.into_iter().map(RawValue::get).collect(), true))
            }
            (Some(_), Some(_)) => Err(ApiError::unprocessable(
                "invalid_request",
                "give either `features` or `instances`, not both",
            )),
            (None, None) => Err(ApiError::unprocessable(
                "invalid_request",
                "the body needs `features` (one row) or `instances` (a batch)",
            )),
        }
    }
}

pub async fn predict(
    State(state): State<AppState>,
    JsonBytes(bytes): JsonBytes,
) -> Result<Response, ApiError> {
    let service = state.app.predictions();
    let (rows, batch) = body::parse::<PredictRequest>(&bytes)?.into_rows(service.max_batch())?;
    let answers = service.predict(&rows, batch).await.map_err(|e| match e {
        PredictError::Json { row, error } => body::part_error(&bytes, rows[row], &error),
        e => e.into(),
    })?;
    Ok(([(header::CONTENT_TYPE, "application/json")], answers.body).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// A JSON error in one row is placed in the body where a parse of the whole
    /// body finds it.
    #[test]
    fn an_error_in_a_row_is_placed_in_the_body() {
        let bodies = [
            "{\"features\": {\"a\": 1e400}}",
            "{\n  \"instances\": [{\"a\": 1},\n    {\"b\": 2, \"a\": -1e999}\n  ]\n}",
            "{\"instances\": [{\"a\": 1}, {\"a\":\n\n  [1, 2e500]}]}",
        ];
        for body in bodies {
            let whole = serde_json::from_str::<Value>(body).unwrap_err();
            let (rows, _) = body::parse::<PredictRequest>(body.as_bytes())
                .unwrap()
                .into_rows(8)
                .unwrap();
            let (row, e) = rows
                .iter()
                .find_map(|r| serde_json::from_str::<Value>(r).err().map(|e| (*r, e)))
                .unwrap();
            let placed = body::part_error(body.as_bytes(), row, &e);
            assert_eq!(placed.code, "number_out_of_range");
            let at = format!("at line {} column {}", whole.line(), whole.column());
            assert!(placed.message.ends_with(&at), "{body}: {}", placed.message);
        }
    }
}
