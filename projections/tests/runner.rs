//! The projection runner against a real Postgres: exactly-once effects across crashes,
//! single leadership with takeover, loud failure, read-your-writes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use eventstore::{EventStore, Metadata, NewEvent, StoredEvent, StreamId};
use projections::{
    BoxFuture, Projection, ProjectionError, ProjectionHandle, ProjectionState, RunnerConfig,
    WaitError,
};
use serde_json::json;
use sqlx::{PgConnection, PgPool};

/// Counts events into `tally` and records which runner handled each one. A duplicate effect
/// would show as a count above the number of events.
struct Tally {
    runner: &'static str,
    per_event_delay: Duration,
}

impl Projection for Tally {
    fn name(&self) -> &'static str {
        "tally"
    }

    fn apply<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        events: &'a [StoredEvent],
    ) -> BoxFuture<'a, Result<(), ProjectionError>> {
        Box::pin(async move {
            for event in events {
                if event.event_type == "Poison" {
                    return Err(ProjectionError::event(event, "cannot digest poison"));
                }
                sqlx::query("UPDATE tally SET n = n + 1")
                    .execute(&mut *tx)
                    .await?;
                sqlx::query(
                    "INSERT INTO tally_by (runner, n) VALUES ($1, 1)
                             ON CONFLICT (runner) DO UPDATE SET n = tally_by.n + 1",
                )
                .bind(self.runner)
                .execute(&mut *tx)
                .await?;
                if !self.per_event_delay.is_zero() {
                    tokio::time::sleep(self.per_event_delay).await;
                }
            }
            Ok(())
        })
    }
}

async fn setup(pool: &PgPool) {
    sqlx::query("CREATE TABLE tally (n bigint NOT NULL)")
        .execute(pool)
        .await
        .unwrap();
    sqlx::query("INSERT INTO tally VALUES (0)")
        .execute(pool)
        .await
        .unwrap();
    sqlx::query("CREATE TABLE tally_by (runner text PRIMARY KEY, n bigint NOT NULL)")
        .execute(pool)
        .await
        .unwrap();
}

async fn append(
    store: &EventStore,
    stream: &str,
    n: usize,
    event_type: &str,
) -> eventstore::Cursor {
    let events: Vec<_> = (0..n)
        .map(|i| NewEvent::new(event_type, "1", json!({"i": i}), Metadata::actor("test")))
        .collect();
    let version = store
        .stream_version(&StreamId::new("t", stream))
        .await
        .unwrap();
    store
        .append(&StreamId::new("t", stream), version, &events)
        .await
        .unwrap()
        .cursor()
        .unwrap()
}

async fn tally(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT n FROM tally")
        .fetch_one(pool)
        .await
        .unwrap()
}

fn config(page_size: i64) -> RunnerConfig {
    RunnerConfig {
        page_size,
        takeover_interval: Duration::from_millis(50),
        reconnect_delay: Duration::from_millis(50),
        ..RunnerConfig::default()
    }
}

fn start(
    pool: &PgPool,
    store: &EventStore,
    runner: &'static str,
    delay_ms: u64,
    page: i64,
) -> ProjectionHandle {
    let projection = Arc::new(Tally {
        runner,
        per_event_delay: Duration::from_millis(delay_ms),
    });
    let options = (*pool.connect_options())
        .clone()
        .application_name(&format!("projection-{runner}"));
    projections::spawn(projection, store.clone(), options, config(page))
}

async fn wait_until(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn a_crash_between_and_within_pages_still_gives_exactly_once_effects(pool: PgPool) {
    setup(&pool).await;
    let store = EventStore::new(pool.clone());
    let last = append(&store, "a", 60, "Counted").await;

    // Crash 1: the task is killed mid-run (maybe inside a page's transaction).
    let first = start(&pool, &store, "first", 2, 7);
    wait_until("some progress", async || {
        first.status().events_handled >= 14
    })
    .await;
    first.abort();

    // Crash 2: the database drops the leader's connection under it.
    let second = start(&pool, &store, "second", 2, 7);
    wait_until("more progress", async || {
        second.status().events_handled >= 35
    })
    .await;
    sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'projection-second'")
        .execute(&pool)
        .await
        .unwrap();

    // The same runner reconnects, takes the lock again and finishes from its checkpoint.
    second
        .wait_for(last, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(tally(&pool).await, 60);
    let handled: i64 = sqlx::query_scalar(
        "SELECT events_handled FROM projection_checkpoints WHERE name = 'tally'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(handled, 60);
    second.stop().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn two_runners_of_one_projection_never_both_process_and_the_standby_takes_over(pool: PgPool) {
    setup(&pool).await;
    let store = EventStore::new(pool.clone());
    let a = start(&pool, &store, "a", 0, 10);
    wait_until("a leads", async || {
        a.status().state == ProjectionState::Leading
    })
    .await;
    let b = start(&pool, &store, "b", 0, 10);

    let cursor = append(&store, "x", 30, "Counted").await;
    a.wait_for(cursor, Duration::from_secs(30)).await.unwrap();
    // The standby sees progress through the database too.
    b.wait_for(cursor, Duration::from_secs(30)).await.unwrap();
    assert_eq!(b.status().state, ProjectionState::Standby);
    let by: Vec<(String, i64)> = sqlx::query_as("SELECT runner, n FROM tally_by")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(by, [("a".to_string(), 30)]);

    a.stop().await;
    wait_until("b takes over", async || {
        b.status().state == ProjectionState::Leading
    })
    .await;
    let cursor = append(&store, "x", 5, "Counted").await;
    b.wait_for(cursor, Duration::from_secs(30)).await.unwrap();
    let mut by: Vec<(String, i64)> = sqlx::query_as("SELECT runner, n FROM tally_by")
        .fetch_all(&pool)
        .await
        .unwrap();
    by.sort();
    assert_eq!(by, [("a".to_string(), 30), ("b".to_string(), 5)]);
    assert_eq!(tally(&pool).await, 35);
    b.stop().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn a_handler_error_stops_the_projection_without_skipping_the_event(pool: PgPool) {
    setup(&pool).await;
    let store = EventStore::new(pool.clone());
    let good = append(&store, "p", 3, "Counted").await;
    let runner = start(&pool, &store, "p", 0, 100);
    runner
        .wait_for(good, Duration::from_secs(30))
        .await
        .unwrap();

    let poison = append(&store, "p", 1, "Poison").await;
    let after = append(&store, "p", 2, "Counted").await;
    let err = runner
        .wait_for(after, Duration::from_secs(30))
        .await
        .unwrap_err();
    assert!(
        matches!(err, WaitError::Failed("tally", ref e) if e.contains("poison")),
        "{err:?}"
    );
    assert!(matches!(runner.status().state, ProjectionState::Failed(_)));
    assert_eq!(
        runner.status().checkpoint,
        good,
        "the checkpoint stays before the poison event"
    );
    assert!(poison > good);
    assert_eq!(tally(&pool).await, 3);

    let (status, error): (String, Option<String>) = sqlx::query_as(
        "SELECT status, last_error FROM projection_checkpoints WHERE name = 'tally'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(status, "failed");
    assert!(error.unwrap().contains("Poison"));
}

#[sqlx::test(migrations = "../migrations")]
async fn wait_for_gives_read_your_writes(pool: PgPool) {
    setup(&pool).await;
    let store = EventStore::new(pool.clone());
    let runner = start(&pool, &store, "r", 0, 100);
    for round in 1..=5 {
        let cursor = append(&store, "r", 1, "Counted").await;
        runner
            .wait_for(cursor, Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!(tally(&pool).await, round);
    }
    runner.stop().await;
    assert_eq!(runner.status().state, ProjectionState::Stopped);
}
