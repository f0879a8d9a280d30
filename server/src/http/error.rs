//! The one error shape. Every failure leaves the server as `ApiError {code, message, field,
//! request_id}` with the status that fits it.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use matrixhost_api::{ApiError, ErrorCode, RuleError};

use super::request_id;
use crate::domain::DomainError;
use crate::runtime::RuntimeError;

#[derive(Debug)]
pub struct AppError {
    pub status: StatusCode,
    pub code: ErrorCode,
    pub message: String,
    pub field: Option<String>,
    /// Seconds to wait before retrying (429).
    pub retry_after: Option<u64>,
}

pub type AppResult<T> = Result<T, AppError>;

impl AppError {
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), field: None, retry_after: None }
    }

    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    /// A request field breaks a rule (422). The message starts with the field's name.
    pub fn field(field: &str, message: impl std::fmt::Display) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, ErrorCode::InvalidField, format!("{field}: {message}")).with_field(field)
    }

    pub fn rule(field: &str, err: RuleError) -> Self {
        Self::field(field, err.message)
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, ErrorCode::NotFound, format!("{what} not found"))
    }

    pub fn conflict(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized, message)
    }

    pub fn internal(err: impl std::fmt::Display) -> Self {
        // The detail goes to the log, inside the request's span; the client gets the request id.
        tracing::error!(error = %err, "internal error");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::Internal, "internal error; the request id identifies it in the server log")
    }
}

impl From<sqlx::Error> for AppError {
    fn from(err: sqlx::Error) -> Self {
        Self::internal(format!("database: {err}"))
    }
}

impl From<anyhow::Error> for AppError {
    fn from(err: anyhow::Error) -> Self {
        Self::internal(format!("{err:#}"))
    }
}

/// What each domain refusal is in HTTP.
impl From<DomainError> for AppError {
    fn from(err: DomainError) -> Self {
        match err {
            DomainError::NotFound(what) => AppError::not_found(what),
            DomainError::Missing { field, message } => AppError::new(StatusCode::NOT_FOUND, ErrorCode::NotFound, message).with_field(field),
            DomainError::Invalid { code, field, message } => {
                let e = AppError::new(StatusCode::UNPROCESSABLE_ENTITY, code, message);
                if field.is_empty() {
                    e
                } else {
                    e.with_field(field)
                }
            }
            DomainError::Conflict { code, message, field } => {
                let e = AppError::conflict(code, message);
                match field {
                    Some(f) => e.with_field(f),
                    None => e,
                }
            }
            DomainError::Forbidden { code, message } => AppError::new(StatusCode::FORBIDDEN, code, message),
            DomainError::Payment { code, field, message } => AppError::new(StatusCode::PAYMENT_REQUIRED, code, message).with_field(field),
            DomainError::PaymentProcessor(message) => AppError::new(StatusCode::BAD_GATEWAY, ErrorCode::PaymentProcessorUnavailable, message),
            DomainError::Database(e) => AppError::internal(format!("database: {e}")),
            DomainError::Internal(detail) => AppError::internal(detail),
        }
    }
}

/// The runtime's failures are the platform's own words and a reference: shown as they are.
impl From<RuntimeError> for AppError {
    fn from(err: RuntimeError) -> Self {
        tracing::warn!(error = %err, "the runtime could not answer");
        AppError::new(StatusCode::SERVICE_UNAVAILABLE, ErrorCode::HomeserverUnavailable, err.to_string())
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        if self.status.is_client_error() {
            tracing::info!(status = self.status.as_u16(), code = self.code.as_str(), field = self.field.as_deref(), "request refused: {}", self.message);
        }
        let body = ApiError { code: self.code, message: self.message, field: self.field, request_id: request_id() };
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(seconds) = self.retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}
