//! Reading the log: whole-log catch-up in the fenced total order, and one stream's events.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::types::Json;
use sqlx::{FromRow, PgExecutor};
use uuid::Uuid;

use crate::{Cursor, EventStore, Metadata, StoreError, StoredEvent, StreamId};

/// The fence as a row value: `(epoch, transaction_id) < FENCE` holds for exactly the final
/// rows. Every event of an earlier epoch is final (opening an epoch waits for all writers);
/// in the current one, rows of transactions below the snapshot's xmin are. Rows of a newer
/// epoch than this snapshot knows cannot be visible to it.
const FENCE: &str = "((SELECT max(epoch) FROM event_log_epochs),
                     pg_snapshot_xmin(pg_current_snapshot())::text::bigint)";

/// One statement, one snapshot: the fence must come from the same snapshot that reads the
/// rows. Everything that may still commit sorts after the fence, and so after the cursor.
static READ_PAGE: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "SELECT global_position, epoch, transaction_id, event_id, aggregate_type, aggregate_id,
                sequence, event_type, event_version, payload, metadata, recorded_at
           FROM events
          WHERE (epoch, transaction_id, global_position) > ($1, $2, $3)
            AND (epoch, transaction_id) < {FENCE}
          ORDER BY epoch, transaction_id, global_position
          LIMIT $4"
    )
});

#[derive(FromRow)]
struct EventRow {
    global_position: i64,
    epoch: i64,
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
            cursor: Cursor::new(row.epoch, row.transaction_id, row.global_position),
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
    /// that sets the fence), prepared transactions included; 0 when there is none.
    pub oldest_xact_age_seconds: f64,
    /// Prepared (two-phase) transactions in the cluster; each holds the fence until it is
    /// committed or rolled back.
    pub prepared_xacts: i64,
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

    /// The cursor of the newest settled event, or the start of the current epoch if that is
    /// later (so it always carries the current epoch): a reader that starts here gets
    /// exactly the events that settle from now on (the live feed starts here). Same fence and
    /// same single statement as [`read_page`], read backwards along the catch-up index.
    pub async fn head(&self) -> Result<Cursor, StoreError> {
        let (epoch, newest_epoch, tx, pos): (Option<i64>, Option<i64>, Option<i64>, Option<i64>) =
            sqlx::query_as(&format!(
                "SELECT c.epoch, h.epoch, h.transaction_id, h.global_position
                   FROM (SELECT max(epoch) AS epoch FROM event_log_epochs) c
                   LEFT JOIN LATERAL (
                        SELECT epoch, transaction_id, global_position
                          FROM events
                         WHERE (epoch, transaction_id) < {FENCE}
                         ORDER BY epoch DESC, transaction_id DESC, global_position DESC
                         LIMIT 1) h ON true"
            ))
            .fetch_one(&self.pool)
            .await?;
        let newest = match (newest_epoch, tx, pos) {
            (Some(e), Some(tx), Some(pos)) => Cursor::new(e, tx, pos),
            _ => Cursor::START,
        };
        Ok(newest.max(Cursor::epoch_start(epoch.unwrap_or(0))))
    }

    /// How many events lie after `after` and at or before `through`, counting at most
    /// `cap` (so that bounding a replay does not turn into a scan of the log).
    pub async fn count_between(
        &self,
        after: Cursor,
        through: Cursor,
        cap: i64,
    ) -> Result<i64, StoreError> {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM (
                SELECT 1 FROM events
                 WHERE (epoch, transaction_id, global_position) > ($1, $2, $3)
                   AND (epoch, transaction_id, global_position) <= ($4, $5, $6)
                 ORDER BY epoch, transaction_id, global_position
                 LIMIT $7) span",
        )
        .bind(after.epoch())
        .bind(after.transaction_id())
        .bind(after.global_position())
        .bind(through.epoch())
        .bind(through.transaction_id())
        .bind(through.global_position())
        .bind(cap)
        .fetch_one(&self.pool)
        .await?;
        Ok(n)
    }

    /// Every event of one stream in version order (for loading an aggregate).
    pub async fn read_stream(&self, stream: &StreamId) -> Result<Vec<StoredEvent>, StoreError> {
        let rows = sqlx::query_as::<_, EventRow>(
            "SELECT global_position, epoch, transaction_id, event_id, aggregate_type, aggregate_id,
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
    /// Counts prepared transactions too: one left behind by a two-phase commit holds its xid
    /// (and so the fence) until someone commits or rolls it back, with no backend to show
    /// in `pg_stat_activity`.
    pub async fn fence_status(&self, after: Cursor) -> Result<FenceStatus, StoreError> {
        let (held_back, age, prepared): (i64, f64, i64) = sqlx::query_as(&format!(
            r#"SELECT (SELECT count(*) FROM events
                        WHERE (epoch, transaction_id, global_position) > ($1, $2, $3)
                          AND NOT (epoch, transaction_id) < {FENCE}),
                      COALESCE(extract(epoch FROM now() - least(
                          (SELECT min(xact_start) FROM pg_stat_activity
                            WHERE backend_xid IS NOT NULL),
                          (SELECT min(prepared) FROM pg_prepared_xacts)))::float8, 0),
                      (SELECT count(*) FROM pg_prepared_xacts)"#
        ))
        .bind(after.epoch())
        .bind(after.transaction_id())
        .bind(after.global_position())
        .fetch_one(&self.pool)
        .await?;
        Ok(FenceStatus {
            held_back,
            oldest_xact_age_seconds: age.max(0.0),
            prepared_xacts: prepared,
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
    let rows = sqlx::query_as::<_, EventRow>(&READ_PAGE)
        .bind(after.epoch())
        .bind(after.transaction_id())
        .bind(after.global_position())
        .bind(limit)
        .fetch_all(executor)
        .await?;
    Ok(rows.into_iter().map(StoredEvent::from).collect())
}
