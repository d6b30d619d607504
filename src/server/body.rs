//! `JsonBody<T>`: the one place a request body becomes a typed value. Checks the
//! Content-Type, the size limit (`server.max_body_bytes`, via axum's
//! `DefaultBodyLimit`), emptiness and JSON syntax, and answers each failure with its
//! own code: `unsupported_media_type`, `body_too_large`, `empty_body`,
//! `malformed_json`, `nesting_too_deep`, `number_out_of_range`,
//! `duplicate_feature`, `invalid_request`. Also the path parameter
//! (`PathParam`, `invalid_path`) and the query parameters of GET endpoints
//! (`QueryParams`, `invalid_parameter`).

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use serde::de::DeserializeOwned;
use serde::Deserialize;

use super::error::ApiError;

/// A JSON body deserialized into `T`.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let JsonBytes(bytes) = JsonBytes::from_request(req, state).await?;
        parse(&bytes).map(JsonBody)
    }
}

/// A JSON request's body, its Content-Type and size checked but not yet parsed:
/// for a handler whose parsed value borrows from the text
/// (`parse::<T<'_>>(&bytes)`).
pub struct JsonBytes(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for JsonBytes {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let content_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !is_json(content_type) {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                format!("Content-Type must be application/json, got `{content_type}`"),
            ));
        }
        Bytes::from_request(req, state)
            .await
            .map(JsonBytes)
            .map_err(|e| {
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "body_too_large",
                        "request body is larger than server.max_body_bytes",
                    )
                } else {
                    ApiError::bad_request("unreadable_body", e.body_text())
                }
            })
    }
}

/// One path parameter (`/v1/retrain/{id}`); a segment that does not decode
/// (percent-encoded bytes that are not UTF-8) is a 400 `invalid_path` in the
/// JSON error shape, not axum's plain-text rejection.
pub struct PathParam(pub String);

impl<S: Send + Sync> FromRequestParts<S> for PathParam {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Path::<String>::from_request_parts(parts, state)
            .await
            .map(|Path(p)| PathParam(p))
            .map_err(|e| ApiError::bad_request("invalid_path", e.body_text()))
    }
}

/// A request's query parameters, for a GET endpoint that takes a few named
/// ones. A name the endpoint does not take, one given twice, or a query that
/// does not decode is `422 invalid_parameter`: a misspelt parameter is a client
/// bug, not a request for the default.
pub struct QueryParams(Vec<(String, String)>);

impl<S: Send + Sync> FromRequestParts<S> for QueryParams {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Query::<Vec<(String, String)>>::from_request_parts(parts, state)
            .await
            .map(|Query(pairs)| QueryParams(pairs))
            .map_err(|e| ApiError::unprocessable("invalid_parameter", e.body_text()))
    }
}

impl QueryParams {
    /// The value of `name`, if given, after checking that every parameter is
    /// one of `known` and given once.
    pub fn get(&self, known: &[&str], name: &str) -> Result<Option<&str>, ApiError> {
        for (i, (k, _)) in self.0.iter().enumerate() {
            if !known.contains(&k.as_str()) {
                return Err(ApiError::unprocessable(
                    "invalid_parameter",
                    format!(
                        "unknown query parameter `{k}`; this endpoint takes {}",
                        known
                            .iter()
                            .map(|n| format!("`{n}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
            }
            if self.0[..i].iter().any(|(seen, _)| seen == k) {
                return Err(ApiError::unprocessable(
                    "invalid_parameter",
                    format!("query parameter `{k}` is given more than once"),
                ));
            }
        }
        Ok(self
            .0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str()))
    }
}

/// Parses a JSON body, classifying the failure.
pub fn parse<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request(
            "empty_body",
            "the request body is empty; a JSON object is expected",
        ));
    }
    serde_json::from_slice(bytes).map_err(|e| json_error(&e))
}

/// The API error for a JSON error, at the place it gives.
pub fn json_error(e: &serde_json::Error) -> ApiError {
    classify(e, e.line(), e.column())
}

/// A JSON error found in `part`, a slice of `body` parsed on its own after the
/// body was (a row of `/v1/predict`, parsed into the model's schema), answered as
/// parsing the whole body would have answered it: the same code, and the line
/// and column in the body.
pub fn part_error(body: &[u8], part: &str, e: &serde_json::Error) -> ApiError {
    let offset = (part.as_ptr() as usize).wrapping_sub(body.as_ptr() as usize);
    let Some(before) = body.get(..offset) else {
        return classify(e, e.line(), e.column());
    };
    let lines_before = before.iter().filter(|&&b| b == b'\n').count();
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |p| p + 1);
    let (line, column) = match e.line() {
        0 => (0, 0),
        1 => (lines_before + 1, offset - line_start + e.column()),
        n => (lines_before + n, e.column()),
    };
    classify(e, line, column)
}

/// The API error for a JSON error at `line` and `column` of the body (0: no
/// position).
fn classify(e: &serde_json::Error, line: usize, column: usize) -> ApiError {
    let text = e.to_string();
    // serde_json ends its message with its own position; ours replaces it.
    let own = format!(" at line {} column {}", e.line(), e.column());
    let message = match e.line() {
        0 => text.as_str(),
        _ => text.strip_suffix(&own).unwrap_or(&text),
    };
    let at = match line {
        0 => String::new(),
        _ => format!(" at line {line} column {column}"),
    };
    if message.starts_with("recursion limit exceeded") {
        ApiError::bad_request("nesting_too_deep", format!("JSON nested too deeply{at}"))
    } else if message.starts_with("number out of range") {
        ApiError::bad_request(
            "number_out_of_range",
            format!("a number does not fit in a 64-bit float{at}"),
        )
    } else if message.starts_with(crate::model::row::DUPLICATE_FEATURE) {
        ApiError::unprocessable("duplicate_feature", format!("{message}{at}"))
    } else if e.is_data() {
        ApiError::unprocessable("invalid_request", format!("{message}{at}"))
    } else {
        ApiError::bad_request("malformed_json", format!("{message}{at}"))
    }
}

fn is_json(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn code(body: &str) -> &'static str {
        parse::<Value>(body.as_bytes()).unwrap_err().code
    }

    #[test]
    fn failures_are_classified() {
        assert_eq!(code("  "), "empty_body");
        assert_eq!(code("{\"a\": "), "malformed_json");
        assert_eq!(code("{\"a\": 1e400}"), "number_out_of_range");
        assert_eq!(
            code(&("[".repeat(200) + &"]".repeat(200))),
            "nesting_too_deep"
        );
        assert!(is_json("application/json; charset=utf-8"));
        assert!(!is_json("text/plain"));
    }
}
