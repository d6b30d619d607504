//! The HTTP error type: every failure a client can see, mapped to a status and a
//! stable snake_case `code`, sent as `{"error": {"code", "message"}}`. Internal
//! details (SQL errors, paths) are logged, never sent.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

/// An error answer.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Seconds for a `Retry-After` header (a 503 that will pass).
    pub retry_after: Option<u32>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// Adds `Retry-After: secs`.
    pub fn retry_after(mut self, secs: u32) -> ApiError {
        self.retry_after = Some(secs);
        self
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn unprocessable(code: &'static str, message: impl Into<String>) -> ApiError {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }

    /// A server-side failure: logged with its cause, answered without it.
    pub fn internal(cause: &dyn std::fmt::Display) -> ApiError {
        tracing::error!(error = %cause, "request failed on the server side");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; see the daemon's log",
        )
    }

    pub fn unavailable(code: &'static str, message: impl Into<String>) -> ApiError {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, code, message)
    }
}

impl From<crate::store::StoreError> for ApiError {
    /// A database that cannot take writes right now (full, locked, read-only) is
    /// a 503 to retry; anything else is an internal error, logged.
    fn from(e: crate::store::StoreError) -> ApiError {
        if e.is_unavailable() {
            tracing::warn!(error = %e, "request refused: the database cannot take writes now");
            ApiError::unavailable(
                "database_unavailable",
                "the database cannot take writes right now (full, locked or read-only); \
                 nothing was stored, retry later",
            )
            .retry_after(5)
        } else {
            ApiError::internal(&e)
        }
    }
}

impl From<crate::app::predict::PredictError> for ApiError {
    fn from(e: crate::app::predict::PredictError) -> ApiError {
        use crate::app::predict::PredictError;
        match e {
            PredictError::Refused { code, message } => ApiError::unprocessable(code, message),
            // The handler answers these with their place in the body; this is
            // the same answer without it.
            PredictError::Json { error, .. } => super::body::json_error(&error),
            e @ PredictError::Output(_) => ApiError::internal(&e),
        }
    }
}

impl From<crate::app::feedback::FeedbackError> for ApiError {
    fn from(e: crate::app::feedback::FeedbackError) -> ApiError {
        use crate::app::feedback::FeedbackError as E;
        let message = e.to_string();
        match e {
            E::Empty => ApiError::unprocessable("empty_batch", message),
            E::TooMany { .. } => ApiError::unprocessable("batch_too_large", message),
            E::InvalidLabel { .. } => ApiError::unprocessable("invalid_label", message),
            E::Duplicate { .. } => ApiError::unprocessable("duplicate_prediction", message),
            E::Unknown { .. } => {
                ApiError::new(StatusCode::NOT_FOUND, "unknown_prediction", message)
            }
            E::LogFailing => ApiError::unavailable("log_unavailable", message).retry_after(5),
            E::LogBehind => ApiError::unavailable("log_unavailable", message).retry_after(1),
            E::Store(e) => e.into(),
        }
    }
}

impl From<crate::app::models::ModelsError> for ApiError {
    fn from(e: crate::app::models::ModelsError) -> ApiError {
        use crate::app::models::ModelsError as E;
        let message = e.to_string();
        match e {
            E::UnknownVersion(_) => {
                ApiError::new(StatusCode::NOT_FOUND, "unknown_version", message)
            }
            E::Retired(_) => ApiError::new(StatusCode::CONFLICT, "version_retired", message),
            E::ArtifactInvalid { .. } => {
                ApiError::new(StatusCode::CONFLICT, "artifact_invalid", message)
            }
            E::UploadedArtifact(_) => ApiError::bad_request("invalid_artifact", message),
            E::Import(e) if matches!(e, crate::onnx::OnnxError::Check { .. }) => {
                ApiError::unprocessable(e.code(), message)
            }
            E::Import(e) => ApiError::bad_request(e.code(), message),
            E::InvalidModel(_) => ApiError::bad_request("invalid_model", message),
            E::Store(e) => e.into(),
            E::Learning(crate::learning::LearningError::Invalid(_)) => {
                ApiError::bad_request("invalid_model", message)
            }
            e @ E::Learning(_) => ApiError::internal(&e),
        }
    }
}

impl From<crate::app::alerts::AlertsError> for ApiError {
    fn from(e: crate::app::alerts::AlertsError) -> ApiError {
        use crate::app::alerts::AlertsError as E;
        let message = e.to_string();
        match e {
            E::InvalidSilence(_) => ApiError::unprocessable("invalid_silence", message),
            E::UnknownSilence(_) => {
                ApiError::new(StatusCode::NOT_FOUND, "unknown_silence", message)
            }
            E::InvalidParameter(_) => ApiError::unprocessable("invalid_parameter", message),
            E::Store(e) => e.into(),
            e @ E::Encode(_) => ApiError::internal(&e),
        }
    }
}

impl From<crate::app::dashboard::DashboardError> for ApiError {
    fn from(e: crate::app::dashboard::DashboardError) -> ApiError {
        use crate::app::dashboard::DashboardError as E;
        match e {
            E::InvalidParameter(message) => ApiError::unprocessable("invalid_parameter", message),
            E::Store(e) => e.into(),
        }
    }
}

impl From<crate::app::health::HealthError> for ApiError {
    fn from(e: crate::app::health::HealthError) -> ApiError {
        use crate::app::health::HealthError as E;
        match e {
            E::DatabaseUnwritable(_) => ApiError::unavailable(
                "database_unwritable",
                "the database does not take writes; see the daemon's log",
            ),
            E::LogFailing(_) => ApiError::unavailable(
                "log_writer_failing",
                "prediction log writes are failing; see the daemon's log",
            ),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"error": {"code": self.code, "message": self.message}});
        let mut response = (self.status, Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        response
    }
}
