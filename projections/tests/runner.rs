//! The projection runner against a real Postgres: exactly-once effects across crashes,
//! single leadership with takeover, loud failure, read-your-writes, and transient database
//! errors (timeouts, killed backends) that are retried rather than taken for poison.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

#[path = "support/proxy.rs"]
mod proxy;

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
    name: &'static str,
    runner: &'static str,
    per_event_delay: Duration,
    /// How many times the handler met a `Hiccup` event: the first one times out its
    /// statement, later ones pass.
    hiccups: Arc<AtomicUsize>,
}

impl Tally {
    fn new(runner: &'static str, per_event_delay: Duration) -> Self {
        Self {
            name: "tally",
            runner,
            per_event_delay,
            hiccups: Arc::default(),
        }
    }
}

impl Projection for Tally {
    fn name(&self) -> &'static str {
        self.name
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
                if event.event_type == "Hiccup" && self.hiccups.fetch_add(1, Ordering::SeqCst) == 0
                {
                    sqlx::query("SET LOCAL statement_timeout = '10ms'")
                        .execute(&mut *tx)
                        .await?;
                    sqlx::query("SELECT pg_sleep(5)").execute(&mut *tx).await?;
                }
                if event.event_type == "Blocked" {
                    // Waits for the test's lock: the test kills this backend meanwhile.
                    sqlx::query("SELECT pg_advisory_xact_lock(8008)")
                        .execute(&mut *tx)
                        .await?;
                }
                if event.event_type == "Settings" {
                    sqlx::query(
                        "CREATE TABLE IF NOT EXISTS leader_settings AS
                         SELECT name, setting FROM pg_settings
                          WHERE name IN ('synchronous_commit', 'statement_timeout',
                                         'idle_in_transaction_session_timeout',
                                         'idle_session_timeout', 'tcp_keepalives_idle',
                                         'tcp_user_timeout', 'client_connection_check_interval')",
                    )
                    .execute(&mut *tx)
                    .await?;
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
    let projection = Arc::new(Tally::new(runner, Duration::from_millis(delay_ms)));
    start_projection(pool, store, runner, projection, page)
}

fn start_projection(
    pool: &PgPool,
    store: &EventStore,
    runner: &'static str,
    projection: Arc<Tally>,
    page: i64,
) -> ProjectionHandle {
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

#[testkit::test(migrations = "../migrations")]
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
    // This test's database only: another test run may use the same application name.
    sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
          WHERE application_name = 'projection-second' AND datname = current_database()",
    )
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

#[testkit::test(migrations = "../migrations")]
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

#[testkit::test(migrations = "../migrations")]
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

#[testkit::test(migrations = "../migrations")]
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

/// The process's metrics as Prometheus text (nextest runs each test in its own process).
fn metrics_text() -> String {
    static HANDLE: OnceLock<metrics_exporter_prometheus::PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).expect("the first recorder of this process");
            handle
        })
        .render()
}

/// The value of `metric{projection="<projection>"}`, 0 when it was never recorded.
fn counter(metric: &str, projection: &str) -> u64 {
    let prefix = format!("{metric}{{projection=\"{projection}\"}} ");
    metrics_text()
        .lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .map_or(0, |value| value.trim().parse().unwrap())
}

#[testkit::test(migrations = "../migrations")]
async fn a_statement_timeout_inside_a_handler_is_retried_and_the_projection_goes_on(pool: PgPool) {
    setup(&pool).await;
    metrics_text();
    let store = EventStore::new(pool.clone());
    let projection = Arc::new(Tally {
        name: "hiccup",
        ..Tally::new("h", Duration::ZERO)
    });
    let runner = start_projection(&pool, &store, "h", projection.clone(), 100);
    append(&store, "h", 2, "Counted").await;
    append(&store, "h", 1, "Hiccup").await;
    let last = append(&store, "h", 2, "Counted").await;

    runner
        .wait_for(last, Duration::from_secs(30))
        .await
        .expect("the projection retried past the timeout");
    assert_eq!(runner.status().state, ProjectionState::Leading);
    assert!(projection.hiccups.load(Ordering::SeqCst) >= 2, "retried");
    assert_eq!(
        tally(&pool).await,
        5,
        "every event once, the timed-out page rolled back"
    );
    let (status, error): (String, Option<String>) = sqlx::query_as(
        "SELECT status, last_error FROM projection_checkpoints WHERE name = 'hiccup'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((status.as_str(), error), ("running", None));
    assert_eq!(counter("projection_failures_total", "hiccup"), 0);
    assert!(counter("projection_retries_total", "hiccup") >= 1);
    runner.stop().await;
}

#[testkit::test(migrations = "../migrations")]
async fn a_killed_leader_backend_is_retried_without_counting_a_failure(pool: PgPool) {
    setup(&pool).await;
    metrics_text();
    let store = EventStore::new(pool.clone());
    let projection = Arc::new(Tally {
        name: "killed",
        ..Tally::new("k", Duration::ZERO)
    });
    // Hold the lock the handler will wait for, so the leader is busy in a statement when
    // its backend is terminated (the server answers with SQLSTATE 57P01).
    let mut blocker = pool.acquire().await.unwrap();
    sqlx::query("SELECT pg_advisory_lock(8008)")
        .execute(&mut *blocker)
        .await
        .unwrap();
    let runner = start_projection(&pool, &store, "killed", projection, 100);
    append(&store, "k", 1, "Counted").await;
    append(&store, "k", 1, "Blocked").await;
    let waiting = async || {
        sqlx::query_scalar::<_, i32>(
            "SELECT pid FROM pg_stat_activity
              WHERE application_name = 'projection-killed' AND wait_event_type = 'Lock'
                AND datname = current_database()",
        )
        .fetch_optional(&pool)
        .await
        .unwrap()
    };
    wait_until("the leader waits in its handler", async || {
        waiting().await.is_some()
    })
    .await;
    let pid = waiting().await.unwrap();
    sqlx::query("SELECT pg_terminate_backend($1)")
        .bind(pid)
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("SELECT pg_advisory_unlock(8008)")
        .execute(&mut *blocker)
        .await
        .unwrap();
    drop(blocker);

    let last = append(&store, "k", 1, "Counted").await;
    runner
        .wait_for(last, Duration::from_secs(30))
        .await
        .expect("the runner reconnected and went on");
    assert_eq!(tally(&pool).await, 3);
    assert_eq!(counter("projection_failures_total", "killed"), 0);
    assert!(counter("projection_retries_total", "killed") >= 1);
    runner.stop().await;
}

#[testkit::test(migrations = "../migrations")]
async fn wait_for_on_a_stopped_or_aborted_runner_answers_at_once(pool: PgPool) {
    setup(&pool).await;
    let store = EventStore::new(pool.clone());
    let runner = start(&pool, &store, "s", 0, 100);
    let first = append(&store, "s", 1, "Counted").await;
    runner
        .wait_for(first, Duration::from_secs(30))
        .await
        .unwrap();
    runner.stop().await;
    let later = append(&store, "s", 1, "Counted").await;
    // The timeout is far beyond any test's patience: only an immediate answer passes.
    let err = runner
        .wait_for(later, Duration::from_secs(3600))
        .await
        .unwrap_err();
    assert_eq!(err, WaitError::Stopped("tally"));
    // What is already projected is still answered.
    runner
        .wait_for(first, Duration::from_secs(3600))
        .await
        .unwrap();

    let aborted = start(&pool, &store, "a", 0, 100);
    aborted
        .wait_for(later, Duration::from_secs(30))
        .await
        .unwrap();
    aborted.abort();
    let latest = append(&store, "s", 1, "Counted").await;
    let err = aborted
        .wait_for(latest, Duration::from_secs(3600))
        .await
        .unwrap_err();
    assert_eq!(err, WaitError::Stopped("tally"));
}

#[testkit::test(migrations = "../migrations")]
async fn the_leader_connection_has_timeouts_keepalives_and_synchronous_commit(pool: PgPool) {
    setup(&pool).await;
    let database: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(&pool)
        .await
        .unwrap();
    // A database default that would let an acknowledged event vanish in a crash.
    sqlx::query(&format!(
        "ALTER DATABASE \"{database}\" SET synchronous_commit = off"
    ))
    .execute(&pool)
    .await
    .unwrap();
    let store = EventStore::new(pool.clone());
    let runner = start(&pool, &store, "settings", 0, 100);
    let cursor = append(&store, "s", 1, "Settings").await;
    runner
        .wait_for(cursor, Duration::from_secs(30))
        .await
        .unwrap();
    runner.stop().await;
    let settings: Vec<(String, String)> =
        sqlx::query_as("SELECT name, setting FROM leader_settings ORDER BY name")
            .fetch_all(&pool)
            .await
            .unwrap();
    let settings: Vec<(&str, &str)> = settings
        .iter()
        .map(|(n, s)| (n.as_str(), s.as_str()))
        .collect();
    assert_eq!(
        settings,
        [
            ("client_connection_check_interval", "10000"),
            ("idle_in_transaction_session_timeout", "60000"),
            ("idle_session_timeout", "60000"),
            ("statement_timeout", "30000"),
            ("synchronous_commit", "on"),
            ("tcp_keepalives_idle", "10"),
            ("tcp_user_timeout", "30000"),
        ]
    );
}

#[testkit::test(migrations = "../migrations")]
async fn a_leader_cut_off_by_a_partition_gives_up_and_the_projection_goes_on(pool: PgPool) {
    setup(&pool).await;
    metrics_text();
    let store = EventStore::new(pool.clone());
    let proxy = proxy::FreezableProxy::start(pool.connect_options().get_port()).await;
    let options = (*pool.connect_options())
        .clone()
        .host("127.0.0.1")
        .port(proxy.port)
        .application_name("projection-partitioned");
    let config = RunnerConfig {
        // Short deadlines so the test need not wait a minute; the mechanism is the same.
        step_timeout: Duration::from_secs(1),
        idle_session_timeout: Duration::from_secs(1),
        ..config(100)
    };
    let runner = projections::spawn(
        Arc::new(Tally {
            name: "partitioned",
            ..Tally::new("p", Duration::ZERO)
        }),
        store.clone(),
        options,
        config,
    );
    let first = append(&store, "p", 2, "Counted").await;
    runner
        .wait_for(first, Duration::from_secs(30))
        .await
        .unwrap();

    // The leader's connection goes silent both ways, its sockets still open: neither TCP
    // nor the leader's own code would notice for hours.
    proxy.freeze_open_connections();
    let after = append(&store, "p", 3, "Counted").await;
    runner
        .wait_for(after, Duration::from_secs(30))
        .await
        .expect("the leader gave up on the silent connection and a new term took over");
    assert_eq!(tally(&pool).await, 5);
    assert_eq!(counter("projection_failures_total", "partitioned"), 0);
    assert!(counter("projection_retries_total", "partitioned") >= 1);
    runner.stop().await;
}
