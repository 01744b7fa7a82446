//! The Postgres event store: the one place where events are written and read back.
//!
//! It owns the `events` and `streams` tables (see `migrations/0001_event_store.sql`) and
//! keeps the rules of `EVENTSTORE.md`:
//!
//! * [`EventStore::append`] checks the expected stream version and inserts every event of a
//!   command in one statement (one round trip, one transaction); a retry with the same event
//!   ids returns the original result instead of a conflict.
//! * [`EventStore::read_page`] reads the whole log in one total order, `(transaction_id,
//!   global_position)`, fenced by the reader's own snapshot xmin, so a transaction that
//!   commits late can never be skipped and no timeout is needed ([`Cursor`]).
//! * The order's first key is the log epoch ([`EventStore::check_epoch`]): transaction ids
//!   belong to one cluster, and a move to another one (restore, promoted standby) opens a
//!   new epoch so that nothing written there sorts inside the old log. A trigger gives every
//!   inserted event its epoch and transaction id, whatever the INSERT says.
//! * [`Subscription`] catches up from a cursor and then follows the log; appends in this
//!   process wake it at once, other processes' appends are found by polling. Writers never
//!   `NOTIFY` (it serialises commits).
//! * [`CommandHandler`] runs `cqrs-es` aggregates: load (with upcasting), decide, append,
//!   and retry a bounded number of times on conflict.
//! * [`sealing`] keeps personal data in events erasable although events are not: it is
//!   sealed with a key per subject, kept in `data_keys`, and erasure deletes the key.
//!
//! cqrs-es's own Postgres back end (`postgres-es`) is not used: it has no global position
//! and no safe catch-up order.

mod append;
mod command;
mod cursor;
mod epoch;
mod error;
mod event;
mod read;
pub mod sealing;
mod subscribe;

pub use command::{CommandError, CommandHandler, CommandOutcome};
pub use cursor::{Cursor, CursorParseError};
pub use epoch::EpochCheck;
pub use error::StoreError;
pub use event::{AppendOutcome, Metadata, NewEvent, StoredEvent, StreamId};
pub use read::{FenceStatus, read_page};
pub use sealing::{KeyRing, MasterKey, SHREDDED, SealError, Sealed, Sealer};
pub use subscribe::{AppendWatcher, Subscription};

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use tokio::sync::watch;

/// Handle to the event store. Cheap to clone; all clones share the pool and the in-process
/// wake-up signal.
#[derive(Clone)]
pub struct EventStore {
    pool: PgPool,
    inner: Arc<Inner>,
}

struct Inner {
    /// Bumped after every successful append in this process; subscribers wait on it.
    appended: watch::Sender<u64>,
    /// How often a waiting subscriber re-reads the log to see other processes' appends (and
    /// events held back by the fence).
    poll_interval: Duration,
}

impl EventStore {
    /// Default interval at which idle subscribers look for events appended elsewhere.
    pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(100);

    pub fn new(pool: PgPool) -> Self {
        Self::with_poll_interval(pool, Self::DEFAULT_POLL_INTERVAL)
    }

    pub fn with_poll_interval(pool: PgPool, poll_interval: Duration) -> Self {
        let (appended, _) = watch::channel(0);
        Self {
            pool,
            inner: Arc::new(Inner {
                appended,
                poll_interval,
            }),
        }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Wakes this process's subscribers, e.g. after an import wrote events directly.
    pub fn notify_appended(&self) {
        self.inner.appended.send_modify(|n| *n = n.wrapping_add(1));
    }
}

/// Pool settings that suit the store: no liveness ping before each acquire (it doubles the
/// round trips of an append, see EVENTSTORE.md), bounded acquire wait.
pub fn pool_options(max_connections: u32) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .min_connections(1)
        .test_before_acquire(false)
        .acquire_timeout(Duration::from_secs(10))
}

/// The session settings every connection of the gateway needs, for the pool and for the
/// projection leaders' own connections:
///
/// * `synchronous_commit=on`, whatever the server or database default: an event must not
///   be pushed to a browser and then vanish in a crash or failover (EVENTSTORE.md);
/// * `statement_timeout` 30 s and `idle_in_transaction_session_timeout` 60 s: a runaway or
///   abandoned transaction holds an xid, and with it the fence that every reader waits on;
/// * TCP keepalives and `tcp_user_timeout` on the server's side of the socket, and
///   `client_connection_check_interval`: a client that vanished in a network partition is
///   noticed within about 30 s, so its transaction (the fence) and its session locks (a
///   projection's leadership) are released instead of lasting until TCP gives up (hours).
///
/// Needs PostgreSQL 14 or later (`client_connection_check_interval`); see
/// `ops/deploy/POSTGRES.md`.
pub fn session_options(options: PgConnectOptions) -> PgConnectOptions {
    options.options([
        ("synchronous_commit", "on"),
        ("statement_timeout", "30s"),
        ("idle_in_transaction_session_timeout", "60s"),
        ("tcp_keepalives_idle", "10"),
        ("tcp_keepalives_interval", "5"),
        ("tcp_keepalives_count", "3"),
        ("tcp_user_timeout", "30000"),
        ("client_connection_check_interval", "10s"),
    ])
}

/// Connects with [`pool_options`] and [`session_options`].
pub async fn connect(
    options: PgConnectOptions,
    max_connections: u32,
) -> Result<PgPool, sqlx::Error> {
    pool_options(max_connections)
        .connect_with(session_options(options))
        .await
}
