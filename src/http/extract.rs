//! Extractors that reject with our envelope instead of axum's plain-text rejections.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use crate::error::AppError;

/// `Json<T>` whose failures are [`AppError`]s: 415 for a missing JSON content type,
/// 400 `INVALID_JSON` for bad syntax, 422 `VALIDATION_ERROR` naming the field for a body
/// that parses but does not fit, 413 for a body over the limit.
#[derive(Debug, Clone, Copy, Default)]
pub struct AppJson<T>(pub T);

impl<T, S> FromRequest<S> for AppJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(AppJson(value)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

fn json_rejection(rejection: JsonRejection) -> AppError {
    match rejection {
        JsonRejection::MissingJsonContentType(_) => AppError::unsupported_media_type(),
        JsonRejection::JsonDataError(e) => {
            // serde_path_to_error's text: "<path>: <reason>"; the path names the field.
            let text = e.body_text();
            let detail = text.split_once(": ").map(|(_, rest)| rest).unwrap_or(&text);
            let (field, reason) = match detail.split_once(": ") {
                Some((path, reason)) if !path.contains(' ') => {
                    (path.to_string(), reason.to_string())
                }
                _ => (
                    missing_field(detail).unwrap_or_default(),
                    detail.to_string(),
                ),
            };
            AppError::validation(&field, format!("Geçersiz alan: {reason}"))
        }
        JsonRejection::JsonSyntaxError(e) => AppError::invalid_json(e.body_text()),
        other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => AppError::payload_too_large(),
        other => AppError::invalid_json(other.body_text()),
    }
}

/// serde reports a missing field as "missing field `name` at line …".
fn missing_field(detail: &str) -> Option<String> {
    let start = detail.find("missing field `")? + "missing field `".len();
    let end = detail[start..].find('`')?;
    Some(detail[start..start + end].to_string())
}
