//! The log moved between clusters, for real: a database dumped from a long-lived cluster
//! (transaction ids at epoch 8, above 2³²) restored into another cluster whose counter is
//! far lower, an async standby promoted after losing the primary's last commits, and
//! prepared transactions (which the shared test server does not allow) holding the fence. Each test starts its own private cluster (`support/cluster.rs`).

#[path = "support/cluster.rs"]
mod cluster;

use std::sync::Arc;
use std::time::{Duration, Instant};

use cluster::PrivateCluster;
use eventstore::{Cursor, EventStore, Metadata, NewEvent, StoredEvent, StreamId};
use projections::{BoxFuture, Projection, ProjectionError, RunnerConfig};
use serde_json::json;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// Counts events and remembers their ids, so a repeated or missing event shows.
struct Seen;

impl Projection for Seen {
    fn name(&self) -> &'static str {
        "seen"
    }

    fn apply<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        events: &'a [StoredEvent],
    ) -> BoxFuture<'a, Result<(), ProjectionError>> {
        Box::pin(async move {
            for event in events {
                sqlx::query("INSERT INTO seen (event_id) VALUES ($1)")
                    .bind(event.event_id)
                    .execute(&mut *tx)
                    .await?;
            }
            Ok(())
        })
    }
}

async fn append(store: &EventStore, stream: &str, n: usize) -> Vec<Uuid> {
    let stream = StreamId::new("t", stream);
    let version = store.stream_version(&stream).await.unwrap();
    let events: Vec<NewEvent> = (0..n)
        .map(|i| NewEvent::new("Counted", "1", json!({"i": i}), Metadata::actor("test")))
        .collect();
    store
        .append(&stream, version, &events)
        .await
        .unwrap()
        .events
        .iter()
        .map(|e| e.event_id)
        .collect()
}

/// Reads from `from` to the end of what is settled.
async fn read_all(store: &EventStore, from: Cursor) -> (Vec<Uuid>, Cursor) {
    let mut cursor = from;
    let mut ids = Vec::new();
    loop {
        let page = store.read_page(cursor, 3).await.unwrap();
        let Some(last) = page.last() else {
            return (ids, cursor);
        };
        cursor = last.cursor;
        ids.extend(page.iter().map(|e| e.event_id));
    }
}

/// Reads from `from` until `want` events arrived: on the shared server, other tests' open
/// transactions may hold the cluster-wide fence for a moment.
async fn read_until(store: &EventStore, from: Cursor, want: usize) -> (Vec<Uuid>, Cursor) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let (mut ids, mut cursor) = read_all(store, from).await;
    while ids.len() < want {
        assert!(
            Instant::now() < deadline,
            "only {} of {want} arrived",
            ids.len()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
        let (more, next) = read_all(store, cursor).await;
        ids.extend(more);
        cursor = next;
    }
    (ids, cursor)
}

async fn project(pool: &PgPool, store: &EventStore, until: Cursor) {
    let runner = projections::spawn(
        Arc::new(Seen),
        store.clone(),
        (*pool.connect_options()).clone(),
        RunnerConfig {
            page_size: 2,
            ..RunnerConfig::default()
        },
    );
    runner
        .wait_for(until, Duration::from_secs(30))
        .await
        .unwrap();
    runner.stop().await;
}

async fn seen(pool: &PgPool) -> Vec<Uuid> {
    sqlx::query_scalar("SELECT event_id FROM seen ORDER BY n")
        .fetch_all(pool)
        .await
        .unwrap()
}

#[testkit::test(migrations = false)]
async fn a_dump_restored_into_a_cluster_with_lower_xids_keeps_every_reader_in_order(
    target: PgPool,
) {
    // The source: a cluster whose transaction ids are past 8 · 2³².
    let source_cluster = PrivateCluster::start(Some(8), &[]);
    let source = PgPool::connect(&source_cluster.url()).await.unwrap();
    sqlx::migrate!("../migrations").run(&source).await.unwrap();
    sqlx::query("CREATE TABLE seen (n bigserial PRIMARY KEY, event_id uuid NOT NULL UNIQUE)")
        .execute(&source)
        .await
        .unwrap();
    let store = EventStore::new(source.clone());
    let old: Vec<Uuid> = [append(&store, "a", 3).await, append(&store, "b", 2).await].concat();
    let (read, feed_cursor) = read_all(&store, Cursor::START).await;
    assert_eq!(read, old);
    assert!(feed_cursor.transaction_id() > 8 << 32);
    project(&source, &store, feed_cursor).await;
    source.close().await;

    // pg_dump | pg_restore into a database of the shared server, a cluster whose counter
    // is far below the source's.
    let dump = std::env::temp_dir().join(format!("gateway-test-{}.dump", Uuid::new_v4()));
    let out = std::process::Command::new(source_cluster.bin("pg_dump"))
        .args(["-Fc", "-f"])
        .arg(&dump)
        .arg(source_cluster.url())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let target_url = {
        let options = target.connect_options();
        let database = options.get_database().unwrap();
        format!(
            "postgres://postgres@{}:{}/{database}",
            options.get_host(),
            options.get_port()
        )
    };
    let out = std::process::Command::new(source_cluster.bin("pg_restore"))
        .args(["--no-owner", "--no-privileges", "--exit-on-error", "-d"])
        .arg(&target_url)
        .arg(&dump)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&dump);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(source_cluster);

    let lower: bool = sqlx::query_scalar(
        "SELECT pg_current_xact_id()::text::bigint < (SELECT max(transaction_id) FROM events)",
    )
    .fetch_one(&target)
    .await
    .unwrap();
    assert!(
        lower,
        "the target's transaction ids run below the restored log's"
    );

    // What the gateway does at start on the moved database.
    let store = EventStore::new(target.clone());
    let opened = store.check_epoch().await.unwrap();
    assert!(
        opened
            .opened
            .as_deref()
            .unwrap_or("")
            .starts_with("cluster"),
        "{opened:?}"
    );
    let new: Vec<Uuid> = [append(&store, "a", 2).await, append(&store, "c", 1).await].concat();

    // A rebuild reads old then new, each once.
    let (everything, head) = read_until(&store, Cursor::START, 8).await;
    assert_eq!(everything, [old.clone(), new.clone()].concat());
    // A reader that held its cursor through the move (the live feed, a projection in
    // memory) gets exactly the new events.
    assert_eq!(read_until(&store, feed_cursor, 3).await.0, new);
    // The projection resumes from its restored checkpoint.
    project(&target, &store, head).await;
    assert_eq!(seen(&target).await, [old, new].concat());
}

#[testkit::test(migrations = false)]
async fn a_prepared_transaction_holding_the_fence_shows_in_the_fence_status(_unused: PgPool) {
    // The shared server runs with max_prepared_transactions = 0, like most installations.
    let cluster = PrivateCluster::start(None, &["max_prepared_transactions=2"]);
    let pool = PgPool::connect(&cluster.url()).await.unwrap();
    sqlx::migrate!("../migrations").run(&pool).await.unwrap();
    let store = EventStore::new(pool.clone());
    let (_, start) = read_all(&store, Cursor::START).await;

    let mut conn = pool.acquire().await.unwrap();
    sqlx::query("BEGIN").execute(&mut *conn).await.unwrap();
    sqlx::query("SELECT pg_current_xact_id()")
        .execute(&mut *conn)
        .await
        .unwrap();
    sqlx::query("PREPARE TRANSACTION 'left-behind'")
        .execute(&mut *conn)
        .await
        .unwrap();
    drop(conn);
    let appended = append(&store, "p", 2).await;

    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        let status = store.fence_status(start).await.unwrap();
        if status.oldest_xact_age_seconds > 0.0 || Instant::now() > deadline {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(status.prepared_xacts, 1, "{status:?}");
    assert_eq!(status.held_back, 2, "{status:?}");
    assert!(status.oldest_xact_age_seconds > 0.0, "{status:?}");
    assert!(
        read_all(&store, start).await.0.is_empty(),
        "stalled, not skipped"
    );

    sqlx::query("ROLLBACK PREPARED 'left-behind'")
        .execute(&pool)
        .await
        .unwrap();
    let status = store.fence_status(start).await.unwrap();
    assert_eq!(
        (status.prepared_xacts, status.held_back),
        (0, 0),
        "{status:?}"
    );
    assert_eq!(read_all(&store, start).await.0, appended);
    pool.close().await;
}

#[testkit::test(migrations = false)]
async fn a_standby_promoted_after_losing_commits_opens_an_epoch_so_held_cursors_skip_nothing(
    _unused: PgPool,
) {
    let primary = PrivateCluster::start(None, &[]);
    let primary_pool = PgPool::connect(&primary.url()).await.unwrap();
    sqlx::migrate!("../migrations")
        .run(&primary_pool)
        .await
        .unwrap();
    let store = EventStore::new(primary_pool.clone());
    let replicated = append(&store, "a", 2).await;
    let standby = PrivateCluster::standby_of(&primary);
    // The standby has everything so far once it replays the primary's current WAL position.
    let lsn: String = sqlx::query_scalar("SELECT pg_current_wal_lsn()::text")
        .fetch_one(&primary_pool)
        .await
        .unwrap();
    let standby_pool = PgPool::connect(&standby.url()).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let caught_up: bool = sqlx::query_scalar("SELECT pg_last_wal_replay_lsn() >= $1::pg_lsn")
            .bind(&lsn)
            .fetch_one(&standby_pool)
            .await
            .unwrap();
        if caught_up {
            break;
        }
        assert!(Instant::now() < deadline, "the standby never caught up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    standby_pool.close().await;

    // The standby falls behind (async replication), the primary commits more, a panel is
    // handed their cursors, and the primary dies.
    standby.stop();
    let mut lost = Vec::new();
    for stream in ["b", "c", "d", "e"] {
        lost.extend(append(&store, stream, 1).await);
    }
    let (seen, held) = read_all(&store, Cursor::START).await;
    assert_eq!(seen, [replicated.clone(), lost].concat());
    primary_pool.close().await;
    primary.stop();

    // The standby is promoted without those commits and the gateway starts on it.
    standby.start_again();
    standby.promote();
    let promoted = PgPool::connect(&standby.url()).await.unwrap();
    let store = EventStore::new(promoted.clone());
    let opened = store.check_epoch().await.unwrap();
    assert_eq!(opened.opened.as_deref(), Some("timeline 2, was 1"));
    let new = append(&store, "f", 1).await;
    let (everything, _) = read_all(&store, Cursor::START).await;
    assert_eq!(everything, [replicated, new.clone()].concat());
    let new_cursor = store.head().await.unwrap();
    // Transaction ids were handed out again: without the epoch the new event would sort
    // at or before the cursor the panel holds, and reading on from it would skip it.
    assert!(
        new_cursor.transaction_id() <= held.transaction_id(),
        "{new_cursor} vs {held}"
    );
    assert_eq!(read_all(&store, held).await.0, new);
    promoted.close().await;
}
