//! Middleware that guards every request and answer before any handler runs: the request
//! id a client may choose, query strings Postgres could not hold, oversized header sets,
//! and the security headers every answer carries.

use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::REQUEST_ID;
use crate::error::AppError;

/// A client's `X-Request-Id` is kept only if it is this short and plain; anything else is
/// replaced by a minted one (it lands in append-only event metadata and in every log line).
pub const MAX_REQUEST_ID_LEN: usize = 64;
/// More header bytes (names and values) than any browser or our clients send.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
/// More header fields than any browser or our clients send.
pub const MAX_HEADER_COUNT: usize = 100;

/// Whether a client-chosen request id may be kept: 1–64 of `[A-Za-z0-9._-]`.
pub fn is_plain_request_id(value: &[u8]) -> bool {
    (1..=MAX_REQUEST_ID_LEN).contains(&value.len())
        && value
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Runs before the request-id layer: an id that is not plain is dropped, so one is minted.
pub async fn sanitise_request_id(mut request: Request, next: Next) -> Response {
    let keep = request
        .headers()
        .get_all(REQUEST_ID)
        .iter()
        .map(|v| is_plain_request_id(v.as_bytes()))
        .collect::<Vec<_>>();
    if keep != [true] && !keep.is_empty() {
        request.headers_mut().remove(REQUEST_ID);
    }
    next.run(request).await
}

/// The checks of a request before its handler, in one layer (each layer around a route
/// costs a clone of that route's stack per request): [`headers_too_large`], then
/// [`nul_in_query`].
pub async fn check_request(request: Request, next: Next) -> Response {
    if let Some(refused) = headers_too_large(&request).or_else(|| nul_in_query(&request)) {
        return refused;
    }
    next.run(request).await
}

/// 431 `HEADERS_TOO_LARGE` in the envelope for header sets over our limits. (The HTTP
/// parser's own, larger limits answer a bare 431 before any of this runs; see
/// `startup::serve`.)
fn headers_too_large(request: &Request) -> Option<Response> {
    let headers = request.headers();
    let bytes: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    (headers.len() > MAX_HEADER_COUNT || bytes > MAX_HEADER_BYTES).then(|| {
        AppError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "HEADERS_TOO_LARGE",
            "İstek başlıkları çok büyük.",
        )
        .into_response()
    })
}

/// 422 for a query parameter that decodes to U+0000 (no text column, jsonb value or event
/// can hold it), naming the parameter.
fn nul_in_query(request: &Request) -> Option<Response> {
    let query = request.uri().query().filter(|q| q.contains('%'))?;
    let field = query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let nul = |s: &str| s.to_ascii_lowercase().contains("%00");
        (nul(key) || nul(value)).then(|| if nul(key) { "query" } else { key }.to_string())
    })?;
    Some(super::extract::nul_in(&field).into_response())
}

/// Headers every answer carries: no MIME sniffing, no framing, no referrer leaking a URL
/// with an id in it, and no caching of anything (answers carry tokens and personal data).
pub async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    for (name, value) in [
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CONTENT_SECURITY_POLICY, "frame-ancestors 'none'"),
        (header::CACHE_CONTROL, "no-store"),
    ] {
        headers
            .entry(name)
            .or_insert(HeaderValue::from_static(value));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_short_plain_request_ids_are_kept() {
        assert!(is_plain_request_id(b"abc-123_x.y"));
        assert!(is_plain_request_id(&[b'a'; 64]));
        assert!(!is_plain_request_id(&[b'a'; 65]));
        assert!(!is_plain_request_id(b""));
        assert!(!is_plain_request_id(b"a b"));
        assert!(!is_plain_request_id("ş".as_bytes()));
    }
}
