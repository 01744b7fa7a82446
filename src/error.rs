//! The one error type of the HTTP API and its envelope (SPEC §1).
//!
//! Every failure a client can see is an [`AppError`]: a stable English `code`, an HTTP
//! status, a Turkish `message`, and optional extra keys (`field`, `retryAfter`, …).
//! Internal errors are logged once, here, and answered with a generic message.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

#[derive(Debug)]
pub struct AppError {
    status: StatusCode,
    code: &'static str,
    message: String,
    extra: Map<String, Value>,
    retry_after: Option<u64>,
    /// Logged, never sent.
    internal: Option<String>,
}

impl AppError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            extra: Map::new(),
            retry_after: None,
            internal: None,
        }
    }

    /// Adds an extra key to the error object (`field`, `expiredAt`, …).
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.extra.insert(key.to_string(), value.into());
        self
    }

    pub fn code(&self) -> &'static str {
        self.code
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The log-only detail of an internal error, for callers that log instead of answering
    /// (the live feed).
    pub fn internal_detail(&self) -> Option<&str> {
        self.internal.as_deref()
    }

    // ---- the table of codes -------------------------------------------------------------

    pub fn not_found() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "İstenen kaynak bulunamadı.",
        )
    }

    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "METHOD_NOT_ALLOWED",
            "Bu adres için bu HTTP yöntemi desteklenmiyor.",
        )
    }

    pub fn payload_too_large() -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "PAYLOAD_TOO_LARGE",
            "İstek gövdesi çok büyük.",
        )
    }

    /// 400 for a body that is not JSON. The parser's own words stay in the log: they
    /// describe our internals, not the client's mistake.
    pub fn invalid_json(detail: impl Into<String>) -> Self {
        tracing::debug!(detail = %detail.into(), "request body is not JSON");
        Self::new(
            StatusCode::BAD_REQUEST,
            "INVALID_JSON",
            "İstek gövdesi geçerli bir JSON değil.",
        )
    }

    pub fn unsupported_media_type() -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UNSUPPORTED_MEDIA_TYPE",
            "İçerik türü desteklenmiyor; application/json bekleniyor.",
        )
    }

    pub fn validation(field: &str, message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "VALIDATION_ERROR",
            message,
        )
        .with("field", field)
    }

    pub fn rate_limited(retry_after_secs: u64) -> Self {
        let mut e = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "RATE_LIMIT_EXCEEDED",
            "Çok fazla istek. Lütfen biraz bekleyin.",
        )
        .with("retryAfter", retry_after_secs);
        e.retry_after = Some(retry_after_secs);
        e
    }

    pub fn concurrent_modification() -> Self {
        Self::new(
            StatusCode::CONFLICT,
            "CONCURRENT_MODIFICATION",
            "Kayıt aynı anda başka biri tarafından değiştirildi. Lütfen tekrar deneyin.",
        )
    }

    pub fn not_ready(details: Value) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "NOT_READY",
            "Servis henüz hazır değil.",
        )
        .with("checks", details)
    }

    /// Something broke on our side. `detail` goes to the log only.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        let mut e = Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL_ERROR",
            "Beklenmeyen bir hata oluştu.",
        );
        e.internal = Some(detail.to_string());
        e
    }

    /// The envelope for a bare status produced outside our handlers (a layer's 413, a 405).
    pub fn from_status(status: StatusCode) -> Self {
        match status {
            StatusCode::NOT_FOUND => Self::not_found(),
            StatusCode::METHOD_NOT_ALLOWED => Self::method_not_allowed(),
            StatusCode::PAYLOAD_TOO_LARGE => Self::payload_too_large(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => Self::unsupported_media_type(),
            StatusCode::REQUEST_TIMEOUT => {
                Self::new(status, "REQUEST_TIMEOUT", "İstek zaman aşımına uğradı.")
            }
            s if s.is_server_error() => Self::internal(format!("bare {s} response")),
            s => Self::new(s, "BAD_REQUEST", "İstek işlenemedi."),
        }
    }
}

impl std::fmt::Display for AppError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        if let Some(internal) = &self.internal {
            tracing::error!(error.code = self.code, error.detail = %internal, "internal error");
        }
        let mut error = Map::new();
        error.insert("code".into(), self.code.into());
        error.insert("message".into(), self.message.into());
        error.extend(self.extra);
        let mut response = (
            self.status,
            Json(json!({"success": false, "error": Value::Object(error)})),
        )
            .into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

impl From<sqlx::Error> for AppError {
    fn from(e: sqlx::Error) -> Self {
        AppError::internal(e)
    }
}

impl From<eventstore::StoreError> for AppError {
    fn from(e: eventstore::StoreError) -> Self {
        match e {
            eventstore::StoreError::Conflict { .. } => AppError::concurrent_modification(),
            other => AppError::internal(other),
        }
    }
}

pub type AppResult<T> = Result<T, AppError>;
