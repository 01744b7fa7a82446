//! Appending a command's events: one statement that moves the stream version and inserts.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgConnection;
use sqlx::types::Json;
use uuid::Uuid;

use crate::{
    AppendOutcome, Cursor, EventStore, Metadata, NewEvent, StoreError, StoredEvent, StreamId,
};

/// How the statement checks and moves the stream version before inserting.
///
/// First append of a stream: create the stream row; a concurrent creator makes this a no-op
/// (ON CONFLICT waits for it), so the loser inserts no events and burns no positions.
const BUMP_NEW_STREAM: &str = "INSERT INTO streams (aggregate_type, aggregate_id, version)
    VALUES ($1, $2, $3 + {n})
    ON CONFLICT (aggregate_type, aggregate_id) DO NOTHING
    RETURNING 1";

/// Later appends: the UPDATE takes the stream's row lock, so concurrent writers of one stream
/// queue here and all but the first find `version <> expected` after the wait.
const BUMP_EXISTING_STREAM: &str = "UPDATE streams SET version = $3 + {n}
     WHERE aggregate_type = $1 AND aggregate_id = $2 AND version = $3
    RETURNING 1";

/// Appends of up to this many events send them as a multi-row VALUES of plain parameters;
/// larger ones as arrays through `unnest`. The VALUES form costs the server ~40 µs less per
/// append (no tuplestore, no array decoding, no memory churn at executor end: see
/// `ops/bench/README.md`) but needs one statement text per event count and 5 parameters
/// per event (Postgres allows 65535).
const MAX_VALUES_EVENTS: usize = 1000;
/// Statement texts for the most common event counts, built once.
const CACHED_COUNTS: usize = 16;

/// The append statement for `n` events.
fn append_sql(new_stream: bool, n: usize) -> std::borrow::Cow<'static, str> {
    use std::borrow::Cow;
    use std::sync::OnceLock;
    static CACHE: OnceLock<[Vec<String>; 2]> = OnceLock::new();
    if (1..=CACHED_COUNTS).contains(&n) {
        let cache = CACHE.get_or_init(|| {
            [false, true].map(|new| {
                (1..=CACHED_COUNTS)
                    .map(|k| build_append_sql(new, k))
                    .collect()
            })
        });
        return Cow::Borrowed(cache[usize::from(new_stream)][n - 1].as_str());
    }
    Cow::Owned(build_append_sql(new_stream, n))
}

fn build_append_sql(new_stream: bool, n: usize) -> String {
    let bump = if new_stream {
        BUMP_NEW_STREAM
    } else {
        BUMP_EXISTING_STREAM
    }
    .replace("{n}", &n.to_string());
    let source = if n <= MAX_VALUES_EVENTS {
        let rows: Vec<String> = (0..n)
            .map(|i| {
                let p = 4 + 5 * i;
                format!(
                    "(${}::uuid, {}::bigint, ${}::text, ${}::text, ${}::jsonb, ${}::jsonb)",
                    p,
                    i + 1,
                    p + 1,
                    p + 2,
                    p + 3,
                    p + 4
                )
            })
            .collect();
        format!(
            "(VALUES {}) AS e(event_id, ord, event_type, event_version, payload, metadata)",
            rows.join(", ")
        )
    } else {
        "unnest($4::uuid[], $5::text[], $6::text[], $7::jsonb[], $8::jsonb[]) WITH ORDINALITY
         AS e(event_id, event_type, event_version, payload, metadata, ord)"
            .to_string()
    };
    format!(
        "WITH bump AS ({bump})
INSERT INTO events (event_id, aggregate_type, aggregate_id, sequence,
                    event_type, event_version, payload, metadata)
SELECT e.event_id, $1, $2, $3 + e.ord, e.event_type, e.event_version, e.payload, e.metadata
  FROM {source}
 WHERE EXISTS (SELECT 1 FROM bump)
 ORDER BY e.ord
RETURNING global_position, epoch, transaction_id, event_id, sequence, recorded_at"
    )
}

type AppendedRow = (i64, i64, i64, Uuid, i64, DateTime<Utc>);

/// The append statement with its parameters bound.
fn append_query<'q>(
    sql: &'q str,
    stream: &'q StreamId,
    expected: i64,
    events: &'q [NewEvent],
) -> sqlx::query::QueryAs<'q, sqlx::Postgres, AppendedRow, sqlx::postgres::PgArguments> {
    let mut query = sqlx::query_as::<_, AppendedRow>(sql)
        .bind(&stream.aggregate_type)
        .bind(&stream.aggregate_id)
        .bind(expected);
    if events.len() <= MAX_VALUES_EVENTS {
        for e in events {
            query = query
                .bind(e.event_id)
                .bind(&e.event_type)
                .bind(&e.event_version)
                .bind(&e.payload)
                .bind(Json(&e.metadata));
        }
    } else {
        let ids: Vec<Uuid> = events.iter().map(|e| e.event_id).collect();
        let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
        let versions: Vec<&str> = events.iter().map(|e| e.event_version.as_str()).collect();
        let payloads: Vec<&Value> = events.iter().map(|e| &e.payload).collect();
        let metadata: Vec<Json<&Metadata>> = events.iter().map(|e| Json(&e.metadata)).collect();
        query = query
            .bind(ids)
            .bind(types)
            .bind(versions)
            .bind(payloads)
            .bind(metadata);
    }
    query
}

impl EventStore {
    /// Appends `events` to `stream`, which must be at `expected_version` (0 for a stream
    /// that does not exist yet). All events commit together or not at all.
    ///
    /// Retrying the same call (same event ids) after an unknown outcome returns the original
    /// result. A different append that lost the race gets [`StoreError::Conflict`].
    pub async fn append(
        &self,
        stream: &StreamId,
        expected_version: u64,
        events: &[NewEvent],
    ) -> Result<AppendOutcome, StoreError> {
        if events.is_empty() {
            return Ok(AppendOutcome {
                version: expected_version,
                events: Vec::new(),
            });
        }
        let expected = to_i64(expected_version);
        let new_version = expected + events.len() as i64;
        let sql = append_sql(expected == 0, events.len());
        let query = append_query(&sql, stream, expected, events);
        let result = query.fetch_all(&self.pool).await;
        let rows = match result {
            Ok(rows) => rows,
            Err(sqlx::Error::Database(db)) if db.constraint() == Some("events_event_id_key") => {
                return self
                    .idempotent_outcome(stream, expected_version, events)
                    .await;
            }
            Err(e) => return Err(e.into()),
        };
        if rows.is_empty() {
            return self
                .idempotent_outcome(stream, expected_version, events)
                .await;
        }
        self.notify_appended();
        metrics::counter!("eventstore_events_appended_total").increment(rows.len() as u64);
        Ok(AppendOutcome {
            version: new_version as u64,
            events: stored(stream, events, rows)?,
        })
    }

    /// [`EventStore::append`] inside the caller's transaction, so that the events commit
    /// together with the caller's own rows (a lead's contact reservation and data key) in one
    /// commit, or not at all.
    ///
    /// The caller must call [`EventStore::notify_appended`] after its commit (subscribers
    /// woken earlier would not see the events yet and wait for their next poll). There is no
    /// idempotent retry here: a lost race is [`StoreError::Conflict`], a reused event id an
    /// error, and either leaves the transaction to be rolled back.
    pub async fn append_in(
        &self,
        conn: &mut PgConnection,
        stream: &StreamId,
        expected_version: u64,
        events: &[NewEvent],
    ) -> Result<AppendOutcome, StoreError> {
        if events.is_empty() {
            return Ok(AppendOutcome {
                version: expected_version,
                events: Vec::new(),
            });
        }
        let expected = to_i64(expected_version);
        let new_version = expected + events.len() as i64;
        let sql = append_sql(expected == 0, events.len());
        let rows = match append_query(&sql, stream, expected, events)
            .fetch_all(&mut *conn)
            .await
        {
            Ok(rows) => rows,
            Err(sqlx::Error::Database(db)) if db.constraint() == Some("events_event_id_key") => {
                return Err(StoreError::DuplicateEventId);
            }
            Err(e) => return Err(e.into()),
        };
        if rows.is_empty() {
            let actual: Option<i64> = sqlx::query_scalar(
                "SELECT version FROM streams WHERE aggregate_type = $1 AND aggregate_id = $2",
            )
            .bind(&stream.aggregate_type)
            .bind(&stream.aggregate_id)
            .fetch_optional(&mut *conn)
            .await?;
            return Err(StoreError::Conflict {
                stream: stream.clone(),
                expected: expected_version,
                actual: actual.unwrap_or(0) as u64,
            });
        }
        metrics::counter!("eventstore_events_appended_total").increment(rows.len() as u64);
        Ok(AppendOutcome {
            version: new_version as u64,
            events: stored(stream, events, rows)?,
        })
    }

    /// The append inserted nothing. Either it is a retry of an append that already committed
    /// (every event id present, at the same versions) or it lost the race.
    async fn idempotent_outcome(
        &self,
        stream: &StreamId,
        expected_version: u64,
        events: &[NewEvent],
    ) -> Result<AppendOutcome, StoreError> {
        let ids: Vec<Uuid> = events.iter().map(|e| e.event_id).collect();
        let rows = sqlx::query_as::<_, AppendedRow>(
            "SELECT global_position, epoch, transaction_id, event_id, sequence, recorded_at
               FROM events
              WHERE event_id = ANY($1) AND aggregate_type = $2 AND aggregate_id = $3
              ORDER BY sequence",
        )
        .bind(&ids)
        .bind(&stream.aggregate_type)
        .bind(&stream.aggregate_id)
        .fetch_all(&self.pool)
        .await?;
        let same_append = rows.len() == events.len()
            && rows
                .iter()
                .zip(1..)
                .all(|(row, i)| row.4 == to_i64(expected_version) + i);
        if same_append {
            return Ok(AppendOutcome {
                version: expected_version + events.len() as u64,
                events: stored(stream, events, rows)?,
            });
        }
        if !rows.is_empty() {
            return Err(StoreError::DuplicateEventId);
        }
        let actual = self.stream_version(stream).await?;
        if actual == expected_version {
            // The version matched but nothing was inserted: the ids are used by another stream.
            return Err(StoreError::DuplicateEventId);
        }
        Err(StoreError::Conflict {
            stream: stream.clone(),
            expected: expected_version,
            actual,
        })
    }

    /// The current version of a stream (0 when it has no events).
    pub async fn stream_version(&self, stream: &StreamId) -> Result<u64, StoreError> {
        let version: Option<i64> = sqlx::query_scalar(
            "SELECT version FROM streams WHERE aggregate_type = $1 AND aggregate_id = $2",
        )
        .bind(&stream.aggregate_type)
        .bind(&stream.aggregate_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(version.unwrap_or(0) as u64)
    }
}

fn stored(
    stream: &StreamId,
    events: &[NewEvent],
    mut rows: Vec<AppendedRow>,
) -> Result<Vec<StoredEvent>, StoreError> {
    rows.sort_by_key(|r| r.4);
    events
        .iter()
        .zip(rows)
        .map(
            |(event, (position, epoch, tx, id, sequence, recorded_at))| {
                if id != event.event_id {
                    return Err(StoreError::Decode(format!(
                        "append returned event {id} where {} was expected",
                        event.event_id
                    )));
                }
                Ok(StoredEvent {
                    cursor: Cursor::new(epoch, tx, position),
                    event_id: id,
                    stream: stream.clone(),
                    sequence: sequence as u64,
                    event_type: event.event_type.clone(),
                    event_version: event.event_version.clone(),
                    payload: event.payload.clone(),
                    metadata: event.metadata.clone(),
                    recorded_at,
                })
            },
        )
        .collect()
}

fn to_i64(version: u64) -> i64 {
    i64::try_from(version).expect("stream versions stay far below i64::MAX")
}
