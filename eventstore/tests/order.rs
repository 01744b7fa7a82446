//! The log's order against what operations and stray writers do to it: INSERTs that name
//! their own place, a database that finds itself on another cluster (emulated here by
//! changing the recorded identity; `projections/tests/clusters.rs` restores a real dump
//! into a real second cluster and promotes a real standby), transaction ids below the
//! log's, and the session settings every connection gets.

use std::time::{Duration, Instant};

use eventstore::{Cursor, EventStore, Metadata, NewEvent, StreamId};
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

fn event(n: i64) -> NewEvent {
    NewEvent::new("Added", "1", json!({"n": n}), Metadata::actor("test"))
}

async fn append(store: &EventStore, stream: &str, n: i64) -> Vec<(Uuid, Cursor)> {
    let stream = StreamId::new("counter", stream);
    let version = store.stream_version(&stream).await.unwrap();
    let events: Vec<NewEvent> = (0..n).map(event).collect();
    store
        .append(&stream, version, &events)
        .await
        .unwrap()
        .events
        .iter()
        .map(|e| (e.event_id, e.cursor))
        .collect()
}

/// Everything after `from` until `want` events arrived (other tests' open transactions may
/// hold the cluster-wide fence for a moment), then whatever else is settled.
async fn read_until(store: &EventStore, from: Cursor, want: usize) -> Vec<(Uuid, Cursor)> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut cursor = from;
    let mut seen = Vec::new();
    loop {
        let page = store.read_page(cursor, 100).await.unwrap();
        match page.last() {
            Some(last) => {
                cursor = last.cursor;
                seen.extend(page.iter().map(|e| (e.event_id, e.cursor)));
            }
            None if seen.len() >= want => return seen,
            None => {
                assert!(
                    Instant::now() < deadline,
                    "only {} of {want} events arrived",
                    seen.len()
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

fn ids(events: &[(Uuid, Cursor)]) -> Vec<Uuid> {
    events.iter().map(|(id, _)| *id).collect()
}

/// Pretends the database moved to another cluster: the identity recorded with the current
/// epoch no longer matches the server's.
async fn move_to_another_cluster(pool: &PgPool) {
    sqlx::query(
        "UPDATE event_log_epochs SET system_identifier = system_identifier + 1
          WHERE epoch = (SELECT max(epoch) FROM event_log_epochs)",
    )
    .execute(pool)
    .await
    .unwrap();
}

#[testkit::test(migrations = "../migrations")]
async fn an_insert_cannot_choose_its_transaction_id_or_epoch(pool: PgPool) {
    let store = EventStore::new(pool.clone());
    let before = append(&store, "a", 2).await;
    let cursor = read_until(&store, Cursor::START, 2).await.last().unwrap().1;
    assert_eq!(cursor, before[1].1);

    // A writer going around `append`, naming a place below every reader's cursor.
    let id = Uuid::new_v4();
    let (epoch, tx): (i64, i64) = sqlx::query_as(
        "INSERT INTO events (transaction_id, epoch, event_id, aggregate_type, aggregate_id,
                             sequence, event_type, event_version, payload)
         VALUES (1, -5, $1, 'raw', 'r', 1, 'Raw', '1', '{}')
         RETURNING epoch, transaction_id",
    )
    .bind(id)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(epoch, store.current_epoch().await.unwrap());
    assert!(
        tx > cursor.transaction_id(),
        "the database's transaction id, not 1"
    );

    // So a reader that was already past the earlier events still gets it.
    let after = read_until(&store, cursor, 1).await;
    assert_eq!(ids(&after), [id]);
}

#[testkit::test(migrations = "../migrations")]
async fn events_are_appended_in_read_committed_transactions_only(pool: PgPool) {
    let mut tx = pool.begin().await.unwrap();
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        .execute(&mut *tx)
        .await
        .unwrap();
    let err = sqlx::query(
        "INSERT INTO events (event_id, aggregate_type, aggregate_id, sequence, event_type,
                             event_version, payload)
         VALUES (gen_random_uuid(), 'raw', 'r', 1, 'Raw', '1', '{}')",
    )
    .execute(&mut *tx)
    .await
    .unwrap_err();
    assert!(err.to_string().contains("READ COMMITTED"), "{err}");
}

#[testkit::test(migrations = "../migrations")]
async fn on_another_cluster_a_new_epoch_opens_and_new_events_sort_after_all_old_ones(pool: PgPool) {
    let store = EventStore::new(pool.clone());
    let unchanged = store.check_epoch().await.unwrap();
    assert_eq!(unchanged.opened, None, "nothing moved yet");
    let old = append(&store, "a", 3).await;
    let reader = read_until(&store, Cursor::START, 3).await.last().unwrap().1;

    move_to_another_cluster(&pool).await;
    let opened = store.check_epoch().await.unwrap();
    assert!(
        opened.opened.as_deref().unwrap().starts_with("cluster"),
        "{opened:?}"
    );
    assert!(opened.epoch > unchanged.epoch);
    // Another gateway starting at the same time finds the epoch already open.
    assert_eq!(
        store.check_epoch().await.unwrap(),
        eventstore::EpochCheck {
            epoch: opened.epoch,
            opened: None
        }
    );
    let head = store.head().await.unwrap();
    assert_eq!(
        head,
        Cursor::epoch_start(opened.epoch),
        "the head carries the epoch"
    );

    let new = append(&store, "b", 2).await;
    assert!(new.iter().all(|(_, c)| c.epoch() == opened.epoch));
    // A reader that was at the end of the old epoch, and a rebuild from scratch, both see
    // the new events once, after the old ones.
    assert_eq!(ids(&read_until(&store, reader, 2).await), ids(&new));
    let everything = read_until(&store, Cursor::START, 5).await;
    assert_eq!(ids(&everything), [ids(&old), ids(&new)].concat());
}

#[testkit::test(migrations = "../migrations")]
async fn transaction_ids_below_the_log_s_open_a_new_epoch(pool: PgPool) {
    let store = EventStore::new(pool.clone());
    let old = append(&store, "a", 1).await;
    // What a restore into a cluster with a lower xid counter looks like from inside: a
    // committed event whose transaction id this cluster has not handed out yet. (Written
    // around the trigger, which is what pg_restore does too: triggers come after the data.)
    let restored = Uuid::new_v4();
    let mut conn = pool.acquire().await.unwrap();
    sqlx::query("ALTER TABLE events DISABLE TRIGGER events_log_order")
        .execute(&mut *conn)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO events (transaction_id, epoch, event_id, aggregate_type, aggregate_id,
                             sequence, event_type, event_version, payload)
         VALUES ((8::bigint << 32) + 1000, 0, $1, 'raw', 'r', 1, 'Raw', '1', '{}')",
    )
    .bind(restored)
    .execute(&mut *conn)
    .await
    .unwrap();
    sqlx::query("ALTER TABLE events ENABLE TRIGGER events_log_order")
        .execute(&mut *conn)
        .await
        .unwrap();
    drop(conn);
    // The fence holds it back: it looks like a transaction that has not even started.
    let seen = read_until(&store, Cursor::START, 1).await;
    assert_eq!(ids(&seen), ids(&old));

    let opened = store.check_epoch().await.unwrap();
    assert_eq!(
        opened.opened.as_deref(),
        Some("transaction ids run below the log's")
    );
    let new = append(&store, "b", 1).await;
    let everything = read_until(&store, Cursor::START, 3).await;
    assert_eq!(
        ids(&everything),
        [ids(&old), vec![restored], ids(&new)].concat()
    );
}

#[testkit::test(migrations = "../migrations")]
async fn opening_an_epoch_waits_for_appends_in_flight(pool: PgPool) {
    let store = EventStore::new(pool.clone());
    let mut writer = pool.begin().await.unwrap();
    let slow = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO events (event_id, aggregate_type, aggregate_id, sequence, event_type,
                             event_version, payload)
         VALUES ($1, 'raw', 'slow', 1, 'Raw', '1', '{}')",
    )
    .bind(slow)
    .execute(&mut *writer)
    .await
    .unwrap();
    move_to_another_cluster(&pool).await;
    let checker = tokio::spawn({
        let store = store.clone();
        async move { store.check_epoch().await.unwrap() }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity
              WHERE datname = current_database() AND wait_event_type = 'Lock'
                AND query LIKE '%event_log_check_epoch%'",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        if waiting == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "the check never waited");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!checker.is_finished());
    writer.commit().await.unwrap();
    let opened = checker.await.unwrap();
    assert!(opened.opened.is_some());

    // The slow writer's event belongs to the old epoch and is final before the new one.
    let new = append(&store, "b", 1).await;
    let everything = read_until(&store, Cursor::START, 2).await;
    assert_eq!(ids(&everything), [vec![slow], ids(&new)].concat());
    assert!(everything[0].1.epoch() < opened.epoch);
}

#[testkit::test(migrations = "../migrations")]
async fn pool_connections_pin_synchronous_commit_and_bound_transactions(pool: PgPool) {
    let database: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(&pool)
        .await
        .unwrap();
    sqlx::query(&format!(
        "ALTER DATABASE \"{database}\" SET synchronous_commit = off"
    ))
    .execute(&pool)
    .await
    .unwrap();
    let store_pool = eventstore::connect((*pool.connect_options()).clone(), 1)
        .await
        .unwrap();
    let settings: Vec<(String, String)> = sqlx::query_as(
        "SELECT name, setting FROM pg_settings
          WHERE name IN ('synchronous_commit', 'statement_timeout',
                         'idle_in_transaction_session_timeout', 'tcp_keepalives_idle',
                         'tcp_keepalives_interval', 'tcp_keepalives_count', 'tcp_user_timeout')
          ORDER BY name",
    )
    .fetch_all(&store_pool)
    .await
    .unwrap();
    let settings: Vec<(&str, &str)> = settings
        .iter()
        .map(|(n, s)| (n.as_str(), s.as_str()))
        .collect();
    assert_eq!(
        settings,
        [
            ("idle_in_transaction_session_timeout", "60000"),
            ("statement_timeout", "30000"),
            ("synchronous_commit", "on"),
            ("tcp_keepalives_count", "3"),
            ("tcp_keepalives_idle", "10"),
            ("tcp_keepalives_interval", "5"),
            ("tcp_user_timeout", "30000"),
        ]
    );
    store_pool.close().await;
}
