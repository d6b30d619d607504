//! `JsonBody<T>`: the one place a request body becomes a typed value. Checks the
//! Content-Type, the size limit (`server.max_body_bytes`, via axum's
//! `DefaultBodyLimit`), emptiness and JSON syntax, and answers each failure with its
//! own code: `unsupported_media_type`, `body_too_large`, `empty_body`,
//! `malformed_json`, `nesting_too_deep`, `number_out_of_range`,
//! `duplicate_feature`, `invalid_request`.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// A JSON body deserialized into `T`.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
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
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body_too_large",
                    "request body is larger than server.max_body_bytes",
                )
            } else {
                ApiError::bad_request("unreadable_body", e.body_text())
            }
        })?;
        parse(&bytes).map(JsonBody)
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

/// Parses a JSON body, classifying the failure.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request(
            "empty_body",
            "the request body is empty; a JSON object is expected",
        ));
    }
    serde_json::from_slice(bytes).map_err(|e| {
        let at = format!("at line {} column {}", e.line(), e.column());
        let text = e.to_string();
        if text.starts_with("recursion limit exceeded") {
            ApiError::bad_request("nesting_too_deep", format!("JSON nested too deeply {at}"))
        } else if text.starts_with("number out of range") {
            ApiError::bad_request(
                "number_out_of_range",
                format!("a number does not fit in a 64-bit float {at}"),
            )
        } else if text.starts_with(super::predict::DUPLICATE_FEATURE) {
            ApiError::unprocessable("duplicate_feature", text)
        } else if e.is_data() {
            ApiError::unprocessable("invalid_request", text)
        } else {
            ApiError::bad_request("malformed_json", text)
        }
    })
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
