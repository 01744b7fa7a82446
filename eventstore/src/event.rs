//! The shapes of events going into and coming out of the store.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::Cursor;

/// A stream is one aggregate instance: its type and id.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct StreamId {
    pub aggregate_type: String,
    pub aggregate_id: String,
}

impl StreamId {
    pub fn new(aggregate_type: impl Into<String>, aggregate_id: impl Into<String>) -> Self {
        Self {
            aggregate_type: aggregate_type.into(),
            aggregate_id: aggregate_id.into(),
        }
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.aggregate_type, self.aggregate_id)
    }
}

/// Who and what caused an event (SPEC §8). `actor` is an admin id, a license id, `system`
/// or `landing`; the correlation id is the HTTP request id.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Metadata {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<String>,
}

impl Metadata {
    pub fn actor(actor: impl Into<String>) -> Self {
        Self {
            actor: Some(actor.into()),
            ..Self::default()
        }
    }
}

/// An event about to be appended. The id makes a retried append idempotent: generate it once
/// per decision and reuse it on retry.
#[derive(Clone, Debug, PartialEq)]
pub struct NewEvent {
    pub event_id: Uuid,
    pub event_type: String,
    pub event_version: String,
    pub payload: Value,
    pub metadata: Metadata,
}

impl NewEvent {
    pub fn new(
        event_type: impl Into<String>,
        event_version: impl Into<String>,
        payload: Value,
        metadata: Metadata,
    ) -> Self {
        Self {
            event_id: Uuid::now_v7(),
            event_type: event_type.into(),
            event_version: event_version.into(),
            payload,
            metadata,
        }
    }
}

/// An event as committed, with its place in the log.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredEvent {
    pub cursor: Cursor,
    pub event_id: Uuid,
    pub stream: StreamId,
    /// Version of the stream after this event (1 for the first).
    pub sequence: u64,
    pub event_type: String,
    pub event_version: String,
    pub payload: Value,
    pub metadata: Metadata,
    pub recorded_at: DateTime<Utc>,
}

impl StoredEvent {
    pub fn global_position(&self) -> i64 {
        self.cursor.global_position()
    }
}

/// What an append produced: the stream's new version and the stored events, the last of
/// which carries the cursor to wait for (read-your-writes).
#[derive(Clone, Debug, PartialEq)]
pub struct AppendOutcome {
    pub version: u64,
    pub events: Vec<StoredEvent>,
}

impl AppendOutcome {
    /// Cursor of the last appended event; `None` for an empty append.
    pub fn cursor(&self) -> Option<Cursor> {
        self.events.last().map(|e| e.cursor)
    }
}
