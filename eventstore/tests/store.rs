//! The event store against a real Postgres: concurrency, idempotency, immutability and the
//! catch-up cases of EVENTSTORE.md, each with real open transactions.
//!
//! Postgres' xmin is cluster-wide, so transactions held open by tests running in parallel
//! may stall a reader for a moment; assertions about "eventually delivered" therefore poll
//! with a deadline, and assertions about "not delivered yet" hold regardless.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cqrs_es::event_sink::EventSink;
use cqrs_es::persist::{EventUpcaster, SemanticVersionEventUpcaster};
use cqrs_es::{Aggregate, DomainEvent};
use eventstore::{
    CommandError, CommandHandler, Cursor, EventStore, Metadata, NewEvent, StoreError, StreamId,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

// ---------------------------------------------------------------------------------------
// A tiny aggregate: a counter that refuses to pass a limit.

#[derive(Debug, Default, Serialize, Deserialize)]
struct Counter {
    value: i64,
}

#[derive(Clone, Debug)]
enum CounterCommand {
    Add(i64),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
enum CounterEvent {
    Added { by: i64 },
}

impl DomainEvent for CounterEvent {
    fn event_type(&self) -> String {
        "Added".into()
    }
    fn event_version(&self) -> String {
        "2.0".into()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("limit reached")]
struct LimitReached;

impl Aggregate for Counter {
    const TYPE: &'static str = "counter";
    type Command = CounterCommand;
    type Event = CounterEvent;
    type Error = LimitReached;
    type Services = i64;

    async fn handle(
        &mut self,
        command: CounterCommand,
        limit: &i64,
        sink: &EventSink<Self>,
    ) -> Result<(), LimitReached> {
        let CounterCommand::Add(by) = command;
        if self.value + by > *limit {
            return Err(LimitReached);
        }
        sink.write(CounterEvent::Added { by }, self).await;
        Ok(())
    }

    fn apply(&mut self, event: CounterEvent) {
        let CounterEvent::Added { by } = event;
        self.value += by;
    }
}

// ---------------------------------------------------------------------------------------
// Helpers.

fn event(n: i64) -> NewEvent {
    NewEvent::new(
        "Added",
        "2.0",
        json!({"Added": {"by": n}}),
        Metadata::actor("test"),
    )
}

/// Inserts one event inside a caller-held transaction, as a slow writer would.
async fn insert_raw(conn: &mut PgConnection, stream: &str, position: Option<i64>) -> Uuid {
    let id = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO events (global_position, event_id, aggregate_type, aggregate_id, sequence,
                             event_type, event_version, payload)
         VALUES (COALESCE($1, nextval(pg_get_serial_sequence('events', 'global_position'))),
                 $2, 'raw', $3, 1, 'Raw', '1', '{}')",
    )
    .bind(position)
    .bind(id)
    .bind(stream)
    .execute(conn)
    .await
    .unwrap();
    id
}

async fn draw_position(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT nextval(pg_get_serial_sequence('events', 'global_position'))")
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Reads everything settled after `from`, page by page.
async fn read_settled(store: &EventStore, from: Cursor) -> (Vec<Uuid>, Cursor) {
    let mut cursor = from;
    let mut ids = Vec::new();
    loop {
        let page = store.read_page(cursor, 100).await.unwrap();
        let Some(last) = page.last() else { break };
        cursor = last.cursor;
        ids.extend(page.iter().map(|e| e.event_id));
    }
    (ids, cursor)
}

/// Reads from `from` until `want` events have arrived (other tests' transactions may stall
/// the fence for a moment).
async fn read_until(store: &EventStore, from: Cursor, want: usize) -> Vec<Uuid> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut cursor = from;
    let mut ids = Vec::new();
    while ids.len() < want {
        assert!(
            Instant::now() < deadline,
            "only {} of {want} events arrived",
            ids.len()
        );
        let page = store.read_page(cursor, 100).await.unwrap();
        match page.last() {
            Some(last) => {
                cursor = last.cursor;
                ids.extend(page.iter().map(|e| e.event_id));
            }
            None => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
    ids
}

async fn tail_cursor(store: &EventStore) -> Cursor {
    read_settled(store, Cursor::START).await.1
}

// ---------------------------------------------------------------------------------------
// Appends and commands.

#[testkit::test(migrations = "../migrations")]
async fn sixteen_concurrent_commands_each_land_or_conflict(pool: PgPool) {
    let store = EventStore::new(pool.clone());
    let handler = Arc::new(CommandHandler::<Counter>::new(store, 1_000));
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let handler = handler.clone();
            tokio::spawn(async move {
                handler
                    .execute("c1", CounterCommand::Add(1), &Metadata::actor("t"))
                    .await
            })
        })
        .collect();
    let mut landed = 0;
    let mut versions = HashSet::new();
    for task in tasks {
        match task.await.unwrap() {
            Ok(outcome) => {
                landed += 1;
                assert!(
                    versions.insert(outcome.version),
                    "version {} twice",
                    outcome.version
                );
            }
            Err(CommandError::Conflict(_)) => {}
            Err(other) => panic!("unexpected error {other}"),
        }
    }
    assert!(landed >= 1);
    let (counter, version) = handler.load("c1").await.unwrap();
    assert_eq!(counter.value, landed);
    assert_eq!(version, landed as u64);
    let sequences: Vec<i64> = sqlx::query_scalar(
        "SELECT sequence FROM events WHERE aggregate_id = 'c1' ORDER BY sequence",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(sequences, (1..=landed).collect::<Vec<_>>());
}

#[testkit::test(migrations = "../migrations")]
async fn a_command_for_a_new_id_skips_the_load_and_falls_back_if_the_stream_exists(pool: PgPool) {
    let handler = CommandHandler::<Counter>::new(EventStore::new(pool.clone()), 100);
    let first = handler
        .execute_new("n", CounterCommand::Add(1), &Metadata::default())
        .await
        .unwrap();
    assert_eq!(first.version, 1);
    // The id was not new after all: the append at version 0 conflicts and the command is
    // decided again on the loaded aggregate.
    let second = handler
        .execute_new("n", CounterCommand::Add(2), &Metadata::default())
        .await
        .unwrap();
    assert_eq!(second.version, 2);
    assert_eq!(second.aggregate.value, 3);
    let refused = handler
        .execute_new("n", CounterCommand::Add(200), &Metadata::default())
        .await;
    assert!(matches!(refused, Err(CommandError::Domain(LimitReached))));
}

#[testkit::test(migrations = "../migrations")]
async fn a_refused_command_appends_nothing(pool: PgPool) {
    let handler = CommandHandler::<Counter>::new(EventStore::new(pool.clone()), 5);
    handler
        .execute("c", CounterCommand::Add(5), &Metadata::default())
        .await
        .unwrap();
    let err = handler
        .execute("c", CounterCommand::Add(1), &Metadata::default())
        .await;
    assert!(matches!(err, Err(CommandError::Domain(LimitReached))));
    assert_eq!(handler.load("c").await.unwrap().1, 1);
}

#[testkit::test(migrations = "../migrations")]
async fn several_events_of_one_command_commit_together_with_metadata(pool: PgPool) {
    let store = EventStore::new(pool.clone());
    let stream = StreamId::new("counter", "m");
    let meta = Metadata {
        actor: Some("admin-1".into()),
        ip: Some("10.0.0.1".into()),
        user_agent: Some("ua".into()),
        correlation_id: Some("req-1".into()),
        causation_id: Some("cmd-1".into()),
    };
    let mut events = vec![event(1), event(2), event(3)];
    for e in &mut events {
        e.metadata = meta.clone();
    }
    let outcome = store.append(&stream, 0, &events).await.unwrap();
    assert_eq!(outcome.version, 3);
    assert_eq!(
        outcome
            .events
            .iter()
            .map(|e| e.sequence)
            .collect::<Vec<_>>(),
        [1, 2, 3]
    );
    let tx: HashSet<i64> = outcome
        .events
        .iter()
        .map(|e| e.cursor.transaction_id())
        .collect();
    assert_eq!(tx.len(), 1, "one transaction");
    let loaded = store.read_stream(&stream).await.unwrap();
    assert_eq!(loaded, outcome.events);
    assert_eq!(loaded[2].metadata, meta);
}

#[testkit::test(migrations = "../migrations")]
async fn appends_of_any_size_keep_their_order_in_both_statement_forms(pool: PgPool) {
    let store = EventStore::new(pool.clone());
    // 1 and 17 events use the VALUES form (cached and built on demand), 1001 the array form.
    let mut version = 0;
    for (n, new_stream) in [(1, true), (17, false), (1001, false), (3, false)] {
        let stream = StreamId::new("counter", "big");
        let events: Vec<_> = (0..n).map(|i| event(i as i64)).collect();
        let outcome = store.append(&stream, version, &events).await.unwrap();
        assert_eq!(
            outcome.events.len(),
            n,
            "{n} events (new stream: {new_stream})"
        );
        let ids: Vec<Uuid> = outcome.events.iter().map(|e| e.event_id).collect();
        assert_eq!(ids, events.iter().map(|e| e.event_id).collect::<Vec<_>>());
        let sequences: Vec<u64> = outcome.events.iter().map(|e| e.sequence).collect();
        assert_eq!(
            sequences,
            ((version + 1)..=(version + n as u64)).collect::<Vec<_>>()
        );
        let positions: Vec<i64> = outcome.events.iter().map(|e| e.global_position()).collect();
        assert!(
            positions.windows(2).all(|w| w[0] < w[1]),
            "positions follow the events' order"
        );
        version += n as u64;
        // The same append again is an idempotent retry in either form.
        assert_eq!(
            store
                .append(&stream, version - n as u64, &events)
                .await
                .unwrap(),
            outcome
        );
    }
    let loaded = store
        .read_stream(&StreamId::new("counter", "big"))
        .await
        .unwrap();
    assert_eq!(loaded.len(), 1 + 17 + 1001 + 3);
    assert_eq!(loaded[1000].payload, json!({"Added": {"by": 982}}));
}

#[testkit::test(migrations = "../migrations")]
async fn a_retried_append_returns_the_original_result(pool: PgPool) {
    let store = EventStore::new(pool.clone());
    let stream = StreamId::new("counter", "r");
    let events = vec![event(1), event(2)];
    let first = store.append(&stream, 0, &events).await.unwrap();
    let again = store.append(&stream, 0, &events).await.unwrap();
    assert_eq!(first, again);
    let more = vec![event(3)];
    let second = store.append(&stream, 2, &more).await.unwrap();
    assert_eq!(store.append(&stream, 2, &more).await.unwrap(), second);
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(count, 3);
}

#[testkit::test(migrations = "../migrations")]
async fn a_stale_version_is_a_conflict_and_draws_no_position(pool: PgPool) {
    let store = EventStore::new(pool.clone());
    let stream = StreamId::new("counter", "s");
    store.append(&stream, 0, &[event(1)]).await.unwrap();
    let before = draw_position(&pool).await;
    for expected in [0, 2, 7] {
        match store.append(&stream, expected, &[event(9)]).await {
            Err(StoreError::Conflict { actual: 1, .. }) => {}
            other => panic!("expected a conflict, got {other:?}"),
        }
    }
    let after = draw_position(&pool).await;
    assert_eq!(after, before + 1, "conflicting appends drew positions");
}

#[testkit::test(migrations = "../migrations")]
async fn an_append_inside_a_transaction_commits_or_rolls_back_with_it(pool: PgPool) {
    let store = EventStore::new(pool.clone());
    let handler = CommandHandler::<Counter>::new(store.clone(), 10);

    // Rolled back: neither the events nor the stream remain.
    let mut tx = pool.begin().await.unwrap();
    let outcome = handler
        .execute_new_in(
            &mut tx,
            "a",
            CounterCommand::Add(3),
            &Metadata::actor("test"),
        )
        .await
        .unwrap();
    assert_eq!(outcome.version, 1);
    tx.rollback().await.unwrap();
    assert_eq!(handler.load("a").await.unwrap().1, 0);
    assert_eq!(
        store
            .stream_version(&StreamId::new("counter", "a"))
            .await
            .unwrap(),
        0
    );

    // Committed: visible with the cursor the outcome named.
    let mut tx = pool.begin().await.unwrap();
    let outcome = handler
        .execute_new_in(
            &mut tx,
            "a",
            CounterCommand::Add(3),
            &Metadata::actor("test"),
        )
        .await
        .unwrap();
    tx.commit().await.unwrap();
    store.notify_appended();
    let (counter, version) = handler.load("a").await.unwrap();
    assert_eq!((counter.value, version), (3, 1));
    let read = read_until(&store, Cursor::START, 1).await;
    assert_eq!(read, vec![outcome.stored[0].event_id]);

    // The stream exists now: a second creation in a transaction is a conflict, not a retry.
    let mut tx = pool.begin().await.unwrap();
    let err = handler
        .execute_new_in(
            &mut tx,
            "a",
            CounterCommand::Add(1),
            &Metadata::actor("test"),
        )
        .await;
    assert!(matches!(err, Err(CommandError::Conflict(_))), "{err:?}");
    tx.rollback().await.unwrap();
    assert_eq!(handler.load("a").await.unwrap().1, 1);
}

#[testkit::test(migrations = "../migrations")]
async fn reusing_an_event_id_elsewhere_is_refused(pool: PgPool) {
    let store = EventStore::new(pool.clone());
    let e = event(1);
    store
        .append(&StreamId::new("counter", "a"), 0, std::slice::from_ref(&e))
        .await
        .unwrap();
    let err = store.append(&StreamId::new("counter", "b"), 0, &[e]).await;
    assert!(matches!(err, Err(StoreError::DuplicateEventId)), "{err:?}");
    assert_eq!(
        store
            .stream_version(&StreamId::new("counter", "b"))
            .await
            .unwrap(),
        0
    );
}

#[testkit::test(migrations = "../migrations")]
async fn events_cannot_be_updated_deleted_or_truncated(pool: PgPool) {
    let store = EventStore::new(pool.clone());
    store
        .append(&StreamId::new("counter", "i"), 0, &[event(1)])
        .await
        .unwrap();
    for sql in [
        "UPDATE events SET payload = '{}'",
        "DELETE FROM events",
        "TRUNCATE events",
    ] {
        let err = sqlx::query(sql).execute(&pool).await.unwrap_err();
        assert!(err.to_string().contains("append-only"), "{sql}: {err}");
    }
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(count, 1);
}

#[testkit::test(migrations = "../migrations")]
async fn upcasters_turn_old_event_versions_into_the_current_shape(pool: PgPool) {
    let store = EventStore::new(pool.clone());
    // Version 1.0 stored the amount as "amount"; 2.0 calls it "by".
    let old = NewEvent::new(
        "Added",
        "1.0",
        json!({"Added": {"amount": 4}}),
        Metadata::default(),
    );
    store
        .append(&StreamId::new("counter", "u"), 0, &[old])
        .await
        .unwrap();
    let upcaster: Box<dyn EventUpcaster> = Box::new(SemanticVersionEventUpcaster::new(
        "Added",
        "2.0",
        Box::new(|mut payload| {
            let amount = payload["Added"]["amount"].take();
            json!({"Added": {"by": amount}})
        }),
    ));
    let handler = CommandHandler::<Counter>::new(store, 100).with_upcasters(vec![upcaster]);
    let outcome = handler
        .execute("u", CounterCommand::Add(1), &Metadata::default())
        .await
        .unwrap();
    assert_eq!(outcome.aggregate.value, 5);
    assert_eq!(outcome.version, 2);
}

// ---------------------------------------------------------------------------------------
// Catch-up reading with real open transactions.

#[testkit::test(migrations = "../migrations")]
async fn a_slow_writer_holding_a_lower_position_is_delivered_after_it_commits(pool: PgPool) {
    let store = EventStore::new(pool.clone());
    let start = tail_cursor(&store).await;
    let mut slow = pool.begin().await.unwrap();
    let slow_id = insert_raw(&mut slow, "slow", None).await;
    let fast = store
        .append(&StreamId::new("counter", "fast"), 0, &[event(1)])
        .await
        .unwrap();
    let fast_id = fast.events[0].event_id;
    assert!(fast.events[0].global_position() > 0);

    // The fast event has committed but sits above the slow writer's xid: not yet delivered.
    let (seen, cursor) = read_settled(&store, start).await;
    assert!(
        !seen.contains(&fast_id),
        "delivered past an open lower transaction"
    );
    assert!(!seen.contains(&slow_id));

    slow.commit().await.unwrap();
    let seen = read_until(&store, cursor, 2).await;
    assert_eq!(seen, [slow_id, fast_id]);
}

#[testkit::test(migrations = "../migrations")]
async fn a_lower_position_drawn_before_any_xid_is_not_skipped(pool: PgPool) {
    let store = EventStore::new(pool.clone());
    let start = tail_cursor(&store).await;
    let low = draw_position(&pool).await;
    let mut late = pool.begin().await.unwrap();
    let xid: Option<i64> =
        sqlx::query_scalar("SELECT pg_current_xact_id_if_assigned()::text::bigint")
            .fetch_one(&mut *late)
            .await
            .unwrap();
    assert_eq!(xid, None, "the late writer has no xid yet");

    let fast = store
        .append(&StreamId::new("counter", "f"), 0, &[event(1)])
        .await
        .unwrap();
    let fast_id = fast.events[0].event_id;
    // Nothing holds the fast event back: the late writer has no xid to fence with.
    let seen = read_until(&store, start, 1).await;
    assert_eq!(seen, [fast_id]);
    let cursor = fast.events[0].cursor;

    // Now the late writer inserts the lower position; its xid is higher than the fast one's.
    let late_id = insert_raw(&mut late, "late", Some(low)).await;
    late.commit().await.unwrap();
    let row: (i64, i64) =
        sqlx::query_as("SELECT global_position, transaction_id FROM events WHERE event_id = $1")
            .bind(late_id)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(row.0 < fast.events[0].global_position(), "lower position");
    assert!(row.1 > cursor.transaction_id(), "higher xid");
    assert_eq!(read_until(&store, cursor, 1).await, [late_id]);
}

#[testkit::test(migrations = "../migrations")]
async fn a_lower_position_committed_first_waits_for_an_open_lower_xid(pool: PgPool) {
    let store = EventStore::new(pool.clone());
    let start = tail_cursor(&store).await;
    let low = draw_position(&pool).await;
    let mut early = pool.begin().await.unwrap();
    let mut middle = pool.begin().await.unwrap();
    let middle_id = insert_raw(&mut middle, "middle", None).await; // higher position, lower xid
    let early_id = insert_raw(&mut early, "early", Some(low)).await; // lower position, higher xid
    early.commit().await.unwrap();

    let (seen, cursor) = read_settled(&store, start).await;
    assert!(
        !seen.contains(&early_id),
        "the fence must hold it while a lower xid is open"
    );

    middle.commit().await.unwrap();
    assert_eq!(read_until(&store, cursor, 2).await, [middle_id, early_id]);
}

#[testkit::test(migrations = "../migrations")]
async fn rollbacks_and_conflict_losers_leave_holes_that_readers_pass(pool: PgPool) {
    let store = EventStore::new(pool.clone());
    let start = tail_cursor(&store).await;
    let a = store
        .append(&StreamId::new("counter", "h"), 0, &[event(1)])
        .await
        .unwrap();

    let mut rolled = pool.begin().await.unwrap();
    insert_raw(&mut rolled, "rolled", None).await;
    insert_raw(&mut rolled, "rolled2", None).await;
    rolled.rollback().await.unwrap();

    // A unique-key loser draws a position before failing: another hole.
    let mut loser = pool.begin().await.unwrap();
    let dup = sqlx::query(
        "INSERT INTO events (event_id, aggregate_type, aggregate_id, sequence, event_type, event_version, payload)
         VALUES ($1, 'counter', 'h', 1, 'Added', '2.0', '{}')",
    )
    .bind(Uuid::new_v4())
    .execute(&mut *loser)
    .await;
    assert!(dup.is_err());
    loser.rollback().await.unwrap();
    assert!(matches!(
        store
            .append(&StreamId::new("counter", "h"), 0, &[event(2)])
            .await,
        Err(StoreError::Conflict { .. })
    ));

    let b = store
        .append(&StreamId::new("counter", "h"), 1, &[event(3)])
        .await
        .unwrap();
    assert!(
        b.events[0].global_position() > a.events[0].global_position() + 1,
        "there is a hole"
    );
    let seen = read_until(&store, start, 2).await;
    assert_eq!(seen, [a.events[0].event_id, b.events[0].event_id]);
}

#[testkit::test(migrations = "../migrations")]
async fn an_unrelated_long_transaction_stalls_readers_and_is_reported(pool: PgPool) {
    let store = EventStore::new(pool.clone());
    let start = tail_cursor(&store).await;
    let mut long = pool.begin().await.unwrap();
    sqlx::query("SELECT pg_current_xact_id()")
        .execute(&mut *long)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;

    let e = store
        .append(&StreamId::new("counter", "x"), 0, &[event(1)])
        .await
        .unwrap();
    let (seen, _) = read_settled(&store, start).await;
    assert!(seen.is_empty(), "stalled, not skipped");
    let status = store.fence_status(start).await.unwrap();
    assert!(status.held_back >= 1, "{status:?}");
    assert!(status.oldest_xact_age_seconds > 0.0, "{status:?}");

    long.commit().await.unwrap();
    assert_eq!(read_until(&store, start, 1).await, [e.events[0].event_id]);
}

#[testkit::test(migrations = "../migrations")]
async fn a_subscription_catches_up_then_follows(pool: PgPool) {
    let store = EventStore::new(pool.clone());
    let first = store
        .append(&StreamId::new("counter", "s1"), 0, &[event(1), event(2)])
        .await
        .unwrap();
    let mut sub = store.subscribe(Cursor::START, 1);
    let got = tokio::time::timeout(Duration::from_secs(20), sub.next_batch())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got[0].event_id, first.events[0].event_id);
    let got = tokio::time::timeout(Duration::from_secs(20), sub.next_batch())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got[0].event_id, first.events[1].event_id);

    // A subscriber of another "instance" (a separate store handle, no shared signal) sees it too.
    let other = EventStore::with_poll_interval(pool.clone(), Duration::from_millis(20));
    let mut remote = other.subscribe(sub.cursor(), 10);
    let waiter = tokio::spawn(async move { sub.next_batch().await.unwrap() });
    let remote_waiter = tokio::spawn(async move { remote.next_batch().await.unwrap() });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let next = store
        .append(&StreamId::new("counter", "s2"), 0, &[event(3)])
        .await
        .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(20), waiter)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got[0].event_id, next.events[0].event_id);
    let got = tokio::time::timeout(Duration::from_secs(20), remote_waiter)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got[0].event_id, next.events[0].event_id);
}

#[testkit::test(migrations = "../migrations")]
async fn the_head_is_the_newest_settled_event_and_nothing_after_it_is_lost(pool: PgPool) {
    let store = EventStore::new(pool.clone());
    assert_eq!(store.head().await.unwrap(), Cursor::START, "empty log");
    let settled = store
        .append(&StreamId::new("counter", "h1"), 0, &[event(1), event(2)])
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while store.head().await.unwrap() != settled.cursor().unwrap() {
        assert!(
            Instant::now() < deadline,
            "the head never reached the append"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // A committed event above an open lower transaction is not settled: not the head yet.
    let mut slow = pool.begin().await.unwrap();
    let slow_id = insert_raw(&mut slow, "slow", None).await;
    let fast = store
        .append(&StreamId::new("counter", "h2"), 0, &[event(3)])
        .await
        .unwrap();
    let head = store.head().await.unwrap();
    assert_eq!(head, settled.cursor().unwrap());

    // A reader starting at the head gets both, in the catch-up order, once the slow one commits.
    slow.commit().await.unwrap();
    assert_eq!(
        read_until(&store, head, 2).await,
        [slow_id, fast.events[0].event_id]
    );
}

// ---------------------------------------------------------------------------------------
// Property: many writers with delays, rollbacks and conflicts; many readers with random page
// sizes and restarts. Every reader sees exactly the committed events, once, in one order.

#[testkit::test(migrations = "../migrations")]
async fn every_reader_sees_exactly_the_committed_events_in_one_order(pool: PgPool) {
    let seed: u64 = std::env::var("PROPTEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    println!("seed {seed} (set PROPTEST_SEED to replay)");
    const WRITERS: usize = 4;
    const READERS: usize = 3;
    const APPENDS_PER_WRITER: usize = 40;

    let store = EventStore::new(pool.clone());
    let start = tail_cursor(&store).await;
    let writers_done = Arc::new(std::sync::atomic::AtomicUsize::new(0));

    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let (pool, store, done) = (pool.clone(), store.clone(), writers_done.clone());
        let mut rng = StdRng::seed_from_u64(seed ^ (w as u64 + 1));
        writers.push(tokio::spawn(async move {
            let mut committed = Vec::new();
            for i in 0..APPENDS_PER_WRITER {
                match rng.random_range(0..10) {
                    // A slow raw transaction that commits or rolls back.
                    0..=3 => {
                        let mut tx = pool.begin().await.unwrap();
                        let n = rng.random_range(1..=3);
                        let mut ids = Vec::new();
                        for k in 0..n {
                            ids.push(insert_raw(&mut tx, &format!("w{w}-{i}-{k}"), None).await);
                            tokio::time::sleep(Duration::from_millis(rng.random_range(0..15)))
                                .await;
                        }
                        if rng.random_bool(0.25) {
                            tx.rollback().await.unwrap();
                        } else {
                            tx.commit().await.unwrap();
                            committed.extend(ids);
                        }
                    }
                    // Appends to a stream shared by all writers: some lose the race.
                    _ => {
                        let stream = StreamId::new("counter", format!("shared-{}", i % 3));
                        let version = store.stream_version(&stream).await.unwrap();
                        let events: Vec<_> = (0..rng.random_range(1..=3)).map(event).collect();
                        match store.append(&stream, version, &events).await {
                            Ok(o) => committed.extend(o.events.iter().map(|e| e.event_id)),
                            Err(StoreError::Conflict { .. }) => {}
                            Err(e) => panic!("{e}"),
                        }
                    }
                }
            }
            done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            committed
        }));
    }

    let mut readers = Vec::new();
    for r in 0..READERS {
        let (store, done) = (store.clone(), writers_done.clone());
        let mut rng = StdRng::seed_from_u64(seed ^ (0x100 + r as u64));
        readers.push(tokio::spawn(async move {
            let mut seen: Vec<Uuid> = Vec::new();
            let mut checkpoint = start;
            let mut idle_after_done = 0;
            while idle_after_done < 3 {
                // A restart resumes from the checkpoint with a fresh subscription.
                let mut sub = store.subscribe(checkpoint, rng.random_range(1..=25));
                for _ in 0..rng.random_range(1..8) {
                    let page = sub.try_next_batch().await.unwrap();
                    if page.is_empty() {
                        if done.load(std::sync::atomic::Ordering::SeqCst) == WRITERS {
                            idle_after_done += 1;
                        }
                        tokio::time::sleep(Duration::from_millis(rng.random_range(1..20))).await;
                    } else {
                        idle_after_done = 0;
                    }
                    seen.extend(page.iter().map(|e| e.event_id));
                }
                checkpoint = sub.cursor();
            }
            (seen, checkpoint)
        }));
    }

    let mut committed = HashSet::new();
    for w in writers {
        committed.extend(w.await.unwrap());
    }
    let mut outputs = Vec::new();
    for r in readers {
        let (mut seen, cursor) = r.await.unwrap();
        // A reader that stopped while someone else's transaction held the fence finishes here.
        let rest = read_until(&store, cursor, committed.len().saturating_sub(seen.len())).await;
        seen.extend(rest);
        outputs.push(seen);
    }
    let (fresh, _) = read_settled(&store, start).await;
    let fresh_set: HashSet<Uuid> = fresh.iter().copied().collect();
    assert_eq!(fresh.len(), fresh_set.len(), "a fresh read has duplicates");
    assert_eq!(
        fresh_set, committed,
        "a fresh read differs from what committed"
    );
    for (r, seen) in outputs.iter().enumerate() {
        assert_eq!(seen, &fresh, "reader {r} (seed {seed})");
    }
}
