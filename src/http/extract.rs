//! Extractors that reject with our envelope instead of axum's plain-text rejections, and in
//! the product's words instead of the parser's.

use axum::body::Bytes;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, StatusCode, header};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::AppError;

/// `Json<T>` whose failures are [`AppError`]s: 415 for a missing JSON content type,
/// 400 `INVALID_JSON` for bad syntax, 422 `VALIDATION_ERROR` naming the field for a body
/// that parses but does not fit — or that carries U+0000 anywhere, which no text column,
/// jsonb value or event can hold — and 413 for a body over the limit.
#[derive(Debug, Clone, Copy, Default)]
pub struct AppJson<T>(pub T);

impl<T, S> FromRequest<S> for AppJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !json_content_type(req.headers()) {
            return Err(AppError::unsupported_media_type());
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                AppError::payload_too_large()
            } else {
                AppError::invalid_json(e.body_text())
            }
        })?;
        // The common case straight into `T`. A body that could hold U+0000 (only as the
        // escape), is not UTF-8, or fails in any way takes the careful path below, so every
        // refusal is decided as there: syntax before U+0000 before fit. (Values of fields `T`
        // does not read are skipped here, not checked: a lone surrogate escape or a number
        // out of range in an ignored field passes; nothing ignored reaches an event.)
        if std::str::from_utf8(&bytes).is_ok() && !bytes.windows(6).any(|w| w == br"\u0000") {
            let mut deserializer = serde_json::Deserializer::from_slice(&bytes);
            if let Ok(value) = serde_path_to_error::deserialize(&mut deserializer)
                && deserializer.end().is_ok()
            {
                return Ok(AppJson(value));
            }
        }
        let axum::Json(value) = axum::Json::<Value>::from_bytes(&bytes).map_err(json_rejection)?;
        if let Some(field) = nul_path(&value, String::new()) {
            return Err(nul_in(&field));
        }
        serde_path_to_error::deserialize(value)
            .map(AppJson)
            .map_err(|e| {
                let path = e.path().to_string();
                data_error(&path, &e.into_inner().to_string())
            })
    }
}

/// `application/json` or `application/*+json`, as axum's `Json` accepts.
fn json_content_type(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<mime::Mime>().ok())
        .is_some_and(|mime| {
            mime.type_() == "application"
                && (mime.subtype() == "json" || mime.suffix().is_some_and(|s| s == "json"))
        })
}

/// 422 for a value holding U+0000.
pub fn nul_in(field: &str) -> AppError {
    AppError::validation(
        field,
        format!(
            "{} izin verilmeyen bir karakter (U+0000) içeriyor.",
            label(field)
        ),
    )
}

/// The path of the first string (or key) in `value` that holds U+0000.
pub fn nul_path(value: &Value, at: String) -> Option<String> {
    let join = |key: &str| {
        if at.is_empty() {
            key.to_string()
        } else {
            format!("{at}.{key}")
        }
    };
    match value {
        Value::String(s) if s.contains('\0') => Some(at),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, v)| nul_path(v, format!("{at}[{i}]"))),
        Value::Object(map) => map.iter().find_map(|(k, v)| {
            if k.contains('\0') {
                Some(join(&k.replace('\0', "")))
            } else {
                nul_path(v, join(k))
            }
        }),
        _ => None,
    }
}

/// For `Option<Option<T>>` body fields: `null` clears, a missing key leaves alone (use with
/// `#[serde(default, deserialize_with = "double_option")]`).
pub fn double_option<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    <Option<T> as serde::Deserialize>::deserialize(deserializer).map(Some)
}

/// `page` (1…1 000 000, default 1) and `limit` (1…100, default 20) of a list query (SPEC §1).
pub fn page_params(q: &std::collections::HashMap<String, String>) -> Result<(i64, i64), AppError> {
    let number = |k: &str, default: i64, max: i64| -> Result<i64, AppError> {
        match q.get(k) {
            None => Ok(default),
            Some(v) => v
                .parse::<i64>()
                .ok()
                .filter(|n| (1..=max).contains(n))
                .ok_or_else(|| {
                    AppError::validation(k, format!("{k} 1 ile {max} arasında bir sayı olmalı"))
                }),
        }
    };
    Ok((number("page", 1, 1_000_000)?, number("limit", 20, 100)?))
}

fn json_rejection(rejection: JsonRejection) -> AppError {
    match rejection {
        JsonRejection::MissingJsonContentType(_) => AppError::unsupported_media_type(),
        JsonRejection::JsonDataError(e) => data_error("", &e.body_text()),
        JsonRejection::JsonSyntaxError(e) => AppError::invalid_json(e.body_text()),
        other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => AppError::payload_too_large(),
        other => AppError::invalid_json(other.body_text()),
    }
}

/// `field` as a message names it (the whole body when empty).
fn label(field: &str) -> String {
    if field.is_empty() || field == "." {
        "İstek gövdesi".to_string()
    } else {
        format!("'{field}' alanı")
    }
}

/// A body that parsed but does not fit `T`, said in the product's words. `path` is where
/// serde stopped; `reason` is serde's text, read for its kind and never passed on.
fn data_error(path: &str, reason: &str) -> AppError {
    let path = if path == "." { "" } else { path };
    let backticked = |prefix: &str| {
        let start = reason.find(prefix)? + prefix.len();
        let end = reason[start..].find('`')?;
        Some(reason[start..start + end].to_string())
    };
    let child = |name: String| {
        // serde_path_to_error already names the field for some errors.
        if path.is_empty() || path == name || path.ends_with(&format!(".{name}")) {
            if path.is_empty() {
                name
            } else {
                path.to_string()
            }
        } else {
            format!("{path}.{name}")
        }
    };
    if let Some(name) = backticked("missing field `") {
        let field = child(name);
        return AppError::validation(&field, format!("{} zorunludur.", label(&field)));
    }
    if let Some(name) = backticked("unknown field `") {
        let field = child(name);
        return AppError::validation(&field, format!("{} tanınmıyor.", label(&field)));
    }
    let message = if reason.starts_with("invalid type") {
        let expected = [
            ("expected a string", "metin"),
            ("expected a boolean", "true ya da false"),
            ("expected a sequence", "liste"),
            ("expected a map", "nesne"),
            ("expected struct", "nesne"),
            ("expected i", "tam sayı"),
            ("expected u", "tam sayı"),
            ("expected f", "sayı"),
        ]
        .iter()
        .find(|(needle, _)| reason.contains(needle))
        .map(|(_, kind)| *kind);
        match expected {
            Some(kind) => format!("{} {kind} olmalı.", label(path)),
            None => format!("{} türü geçersiz.", label(path)),
        }
    } else if reason.starts_with("unknown variant") || reason.starts_with("invalid value") {
        format!("{} değeri geçersiz.", label(path))
    } else if reason.starts_with("invalid length") {
        format!("{} uzunluğu geçersiz.", label(path))
    } else {
        format!("{} geçersiz.", label(path))
    };
    AppError::validation(path, message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_nul_is_found_in_nested_strings_and_keys() {
        assert_eq!(
            nul_path(&json!({"a": "ok", "b": "x\u{0}"}), String::new()),
            Some("b".into())
        );
        assert_eq!(
            nul_path(&json!({"a": {"list": ["ok", "n\u{0}"]}}), String::new()),
            Some("a.list[1]".into())
        );
        assert_eq!(
            nul_path(&json!({"k\u{0}": 1}), String::new()),
            Some("k".into())
        );
        assert_eq!(nul_path(&json!({"a": "fine"}), String::new()), None);
    }

    #[test]
    fn serde_texts_become_product_words_without_parser_detail() {
        let e = data_error(
            "name",
            "invalid type: null, expected a string at line 1 column 21",
        );
        let text = format!("{e}");
        assert!(text.contains("'name' alanı metin olmalı"), "{text}");
        assert!(!text.contains("line 1"), "{text}");
        assert!(
            format!("{}", data_error(".", "missing field `email`"))
                .contains("'email' alanı zorunludur")
        );
    }
}
