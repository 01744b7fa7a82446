//! Reading the log: whole-log catch-up in the fenced total order, and one stream's events.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::types::Json;
use sqlx::{FromRow, PgExecutor};
use uuid::Uuid;

use crate::{Cursor, EventStore, Metadata, StoreError, StoredEvent, StreamId};

/// One statement, one snapshot: the fence (`pg_snapshot_xmin`) must come from the same
/// snapshot that reads the rows. Rows of transactions below the fence are final; everything
/// that may still commit has a transaction id at or above it and so sorts after the cursor.
const READ_PAGE: &str = r#"
SELECT global_position, transaction_id, event_id, aggregate_type, aggregate_id, sequence,
       event_type, event_version, payload, metadata, recorded_at
  FROM events
 WHERE (transaction_id, global_position) > ($1, $2)
   AND transaction_id < pg_snapshot_xmin(pg_current_snapshot())::text::bigint
 ORDER BY transaction_id, global_position
 LIMIT $3
"#;

#[derive(FromRow)]
struct EventRow {
    global_position: i64,
    transaction_id: i64,
    event_id: Uuid,
    aggregate_type: String,
    aggregate_id: String,
    sequence: i64,
    event_type: String,
    event_version: String,
    payload: Value,
    metadata: Json<Metadata>,
    recorded_at: DateTime<Utc>,
}

impl From<EventRow> for StoredEvent {
    fn from(row: EventRow) -> Self {
        StoredEvent {
            cursor: Cursor::new(row.transaction_id, row.global_position),
            event_id: row.event_id,
            stream: StreamId::new(row.aggregate_type, row.aggregate_id),
            sequence: row.sequence as u64,
            event_type: row.event_type,
            event_version: row.event_version,
            payload: row.payload,
            metadata: row.metadata.0,
            recorded_at: row.recorded_at,
        }
    }
}

/// Why a reader may be waiting: the fence and what holds it.
#[derive(Clone, Debug, PartialEq)]
pub struct FenceStatus {
    /// Committed events after the cursor that the fence still holds back.
    pub held_back: i64,
    /// Age in seconds of the oldest transaction in the cluster that holds an xid (the one
    /// that sets the fence); 0 when there is none.
    pub oldest_xact_age_seconds: f64,
}

impl EventStore {
    /// Up to `limit` events after `after`, in log order. An empty page means "nothing settled
    /// yet", never "nothing more will come".
    pub async fn read_page(
        &self,
        after: Cursor,
        limit: i64,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        read_page(&self.pool, after, limit).await
    }

    /// The cursor of the newest settled event ([`Cursor::START`] for an empty log): a reader
    /// that starts here gets exactly the events that settle from now on (the live feed starts
    /// here). Same fence and same single statement as [`read_page`], read backwards along
    /// the catch-up index.
    pub async fn head(&self) -> Result<Cursor, StoreError> {
        let row: Option<(i64, i64)> = sqlx::query_as(
            "SELECT transaction_id, global_position
               FROM events
              WHERE transaction_id < pg_snapshot_xmin(pg_current_snapshot())::text::bigint
              ORDER BY transaction_id DESC, global_position DESC
              LIMIT 1",
        )
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map_or(Cursor::START, |(tx, pos)| Cursor::new(tx, pos)))
    }

    /// Every event of one stream in version order (for loading an aggregate).
    pub async fn read_stream(&self, stream: &StreamId) -> Result<Vec<StoredEvent>, StoreError> {
        let rows = sqlx::query_as::<_, EventRow>(
            "SELECT global_position, transaction_id, event_id, aggregate_type, aggregate_id,
                    sequence, event_type, event_version, payload, metadata, recorded_at
               FROM events
              WHERE aggregate_type = $1 AND aggregate_id = $2
              ORDER BY sequence",
        )
        .bind(&stream.aggregate_type)
        .bind(&stream.aggregate_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(StoredEvent::from).collect())
    }

    /// How far the fence holds readers at `after` back, for metrics and the stall alarm.
    pub async fn fence_status(&self, after: Cursor) -> Result<FenceStatus, StoreError> {
        let (held_back, age): (i64, f64) = sqlx::query_as(
            r#"SELECT (SELECT count(*) FROM events
                        WHERE (transaction_id, global_position) > ($1, $2)
                          AND transaction_id >= pg_snapshot_xmin(pg_current_snapshot())::text::bigint),
                      COALESCE((SELECT extract(epoch FROM max(now() - xact_start))::float8
                                  FROM pg_stat_activity
                                 WHERE backend_xid IS NOT NULL), 0)"#,
        )
        .bind(after.transaction_id())
        .bind(after.global_position())
        .fetch_one(&self.pool)
        .await?;
        Ok(FenceStatus {
            held_back,
            oldest_xact_age_seconds: age,
        })
    }
}

/// [`EventStore::read_page`] on any executor, so a projection can read on the connection
/// that holds its leadership lock.
pub async fn read_page<'e>(
    executor: impl PgExecutor<'e>,
    after: Cursor,
    limit: i64,
) -> Result<Vec<StoredEvent>, StoreError> {
    let rows = sqlx::query_as::<_, EventRow>(READ_PAGE)
        .bind(after.transaction_id())
        .bind(after.global_position())
        .bind(limit)
        .fetch_all(executor)
        .await?;
    Ok(rows.into_iter().map(StoredEvent::from).collect())
}
