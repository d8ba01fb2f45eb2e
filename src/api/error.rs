//! Errors as the API says them: a status and `{"error": MESSAGE}`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::db::DbError;
use crate::ops::OpError;
use crate::store::StoreError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }

    pub fn bad(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }

    /// Masks the configuration's secrets in the message (errors may quote values).
    pub fn masked(mut self, secrets: &crate::config::Secrets) -> ApiError {
        self.message = crate::config::secrets::mask_published(&secrets.mask(&self.message));
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "error": self.message }))).into_response()
    }
}

impl From<OpError> for ApiError {
    fn from(e: OpError) -> ApiError {
        let status = match &e {
            OpError::BadInput(_) => StatusCode::BAD_REQUEST,
            OpError::UnknownName(_) | OpError::UnknownRun(_) => StatusCode::NOT_FOUND,
            OpError::Conflict(_) => StatusCode::CONFLICT,
            OpError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            OpError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, e.to_string())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        tracing::error!(error = %e, "store error serving a request");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
    }
}

impl From<DbError> for ApiError {
    fn from(e: DbError) -> ApiError {
        match e {
            DbError::Store(e) => e.into(),
            DbError::Join(m) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, m),
        }
    }
}
