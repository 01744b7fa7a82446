//! Read models and the machinery that keeps them up to date.
//!
//! A [`Projection`] turns pages of events into SQL writes. The [`runner`] feeds it: one
//! leader per projection across all gateway instances (a session advisory lock on a
//! dedicated connection), the checkpoint written in the same transaction as the read-model
//! rows (exactly-once effects), and a handler error stops the projection loudly instead of
//! skipping the event. [`ProjectionHandle::wait_for`] gives HTTP handlers read-your-writes.

pub mod adapter;
pub mod admins;
pub mod leads;
pub mod licenses;
pub mod plans;
pub mod runner;

pub use adapter::{Adapter, EventProjection};
pub use runner::{
    BoxFuture, Lag, Projection, ProjectionError, ProjectionHandle, ProjectionState,
    ProjectionStatus, RunnerConfig, WaitError, is_transient, lag, spawn,
};

/// Timestamps as the API writes them: RFC 3339, UTC, milliseconds (SPEC §1). Read models
/// render API shapes, so the format lives here for them and for the gateway.
pub fn rfc3339(at: chrono::DateTime<chrono::Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// A `LIKE` pattern matching folded text that contains `search` (folded the same way, see
/// [`leads::fold`]), with `\`, `%` and `_` taken literally; `None` for a blank search.
pub fn contains_pattern(search: &str) -> Option<String> {
    let folded = leads::fold(search);
    let trimmed = folded.trim();
    if trimmed.is_empty() {
        return None;
    }
    let escaped = trimmed
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_");
    Some(format!("%{escaped}%"))
}

/// Text as Postgres can hold it. Read models are total over the log: whatever text an event
/// holds, the projection stores something rather than stopping. U+0000 is the one character
/// valid UTF-8 may carry that no `text` column or `jsonb` value accepts; it becomes U+FFFD.
/// (The command side refuses it on the way in; this is for events already in a log.)
pub fn pg_text(text: &str) -> std::borrow::Cow<'_, str> {
    if text.contains('\0') {
        std::borrow::Cow::Owned(text.replace('\0', "\u{FFFD}"))
    } else {
        std::borrow::Cow::Borrowed(text)
    }
}

/// [`pg_text`] for an optional value.
pub fn pg_text_opt(text: Option<&str>) -> Option<std::borrow::Cow<'_, str>> {
    text.map(pg_text)
}

/// [`pg_text`] applied to every string and key in a JSON value, for `jsonb` columns.
pub fn pg_json(value: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::String(s) if s.contains('\0') => Value::String(pg_text(&s).into_owned()),
        Value::Array(items) => Value::Array(items.into_iter().map(pg_json).collect()),
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (pg_text(&k).into_owned(), pg_json(v)))
                .collect(),
        ),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn nul_becomes_a_replacement_character_in_text_and_json() {
        assert_eq!(pg_text("a\0b"), "a\u{FFFD}b");
        assert!(matches!(pg_text("plain"), std::borrow::Cow::Borrowed(_)));
        assert_eq!(
            pg_json(json!({"k\u{0}": ["x\u{0}", 1, {"n": "\u{0}"}]})),
            json!({"k\u{FFFD}": ["x\u{FFFD}", 1, {"n": "\u{FFFD}"}]})
        );
    }
}
