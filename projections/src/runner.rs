//! The projection runner: leadership, batching, checkpoints, failure, waiting.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use eventstore::{Cursor, EventStore, StoredEvent};
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection, PgPool};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A read model fed by the event log.
pub trait Projection: Send + Sync + 'static {
    /// Stable name; also the checkpoint's key. Renaming it rebuilds from scratch.
    fn name(&self) -> &'static str;

    /// Applies a page of events inside the runner's transaction. The runner writes the
    /// checkpoint in the same transaction, so this must do all its writes through `tx`.
    /// Returning an error stops the projection at the page's first event.
    fn apply<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        events: &'a [StoredEvent],
    ) -> BoxFuture<'a, Result<(), ProjectionError>>;
}

#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error("event {event_type} at {cursor} cannot be projected: {reason}")]
    Event {
        cursor: Cursor,
        event_type: String,
        reason: String,
    },
}

impl ProjectionError {
    pub fn event(event: &StoredEvent, reason: impl ToString) -> Self {
        ProjectionError::Event {
            cursor: event.cursor,
            event_type: event.event_type.clone(),
            reason: reason.to_string(),
        }
    }
}

/// What one instance's runner is doing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProjectionState {
    /// Another instance leads (or we are connecting).
    Standby,
    Leading,
    /// A handler error stopped it; the text is the error.
    Failed(String),
    Stopped,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProjectionStatus {
    pub state: ProjectionState,
    /// Last event whose effects are committed (as far as this instance knows).
    pub checkpoint: Cursor,
    pub events_handled: i64,
}

#[derive(Clone, Debug)]
pub struct RunnerConfig {
    pub page_size: i64,
    /// How often a standby instance tries to take over leadership.
    pub takeover_interval: Duration,
    /// Backoff after a lost database connection.
    pub reconnect_delay: Duration,
    /// After a page that was not full, wait this long before reading the next one, so that
    /// under a stream of appends the next page gathers several events instead of one: every
    /// page costs a read, a checkpoint and a commit whatever its size. An event that arrives
    /// while the projection is idle is read at once; only events right behind a page wait.
    pub gather: Duration,
}

impl Default for RunnerConfig {
    fn default() -> Self {
        Self {
            page_size: 500,
            takeover_interval: Duration::from_secs(1),
            reconnect_delay: Duration::from_secs(1),
            gather: Duration::from_millis(5),
        }
    }
}

/// Namespace of the two-key advisory locks (the second key is `hashtext(name)`), so they
/// cannot collide with other advisory locks in the database.
const LOCK_CLASS: i32 = 0x0D0_0001;

/// A running projection in this process.
#[derive(Clone)]
pub struct ProjectionHandle {
    name: &'static str,
    pool: PgPool,
    status: watch::Receiver<ProjectionStatus>,
    task: Arc<std::sync::Mutex<Option<JoinHandle<()>>>>,
    shutdown: Arc<watch::Sender<bool>>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WaitError {
    #[error("projection {0} did not reach the cursor in time")]
    Timeout(&'static str),
    #[error("projection {0} has failed: {1}")]
    Failed(&'static str, String),
    #[error("projection {0}: {1}")]
    Database(&'static str, String),
}

/// Starts the runner for `projection` on its own task. `connect` is used for the dedicated
/// leader connection (its death releases the leadership lock), `pool` for status queries.
pub fn spawn(
    projection: Arc<dyn Projection>,
    store: EventStore,
    connect: PgConnectOptions,
    config: RunnerConfig,
) -> ProjectionHandle {
    let name = projection.name();
    let (status_tx, status_rx) = watch::channel(ProjectionStatus {
        state: ProjectionState::Standby,
        checkpoint: Cursor::START,
        events_handled: 0,
    });
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let pool = store.pool().clone();
    let runner = Runner {
        projection,
        store,
        connect,
        config,
        status: status_tx,
        shutdown: shutdown_rx,
    };
    let task = tokio::spawn(runner.run());
    ProjectionHandle {
        name,
        pool,
        status: status_rx,
        task: Arc::new(std::sync::Mutex::new(Some(task))),
        shutdown: Arc::new(shutdown_tx),
    }
}

impl ProjectionHandle {
    pub fn name(&self) -> &'static str {
        self.name
    }

    pub fn status(&self) -> ProjectionStatus {
        self.status.borrow().clone()
    }

    /// Stops the runner after its current page and waits for it; releases leadership.
    pub async fn stop(&self) {
        let _ = self.shutdown.send(true);
        let task = self.task.lock().expect("not poisoned").take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }

    /// Kills the runner at once, wherever it is (a crash, as far as the database can tell).
    pub fn abort(&self) {
        if let Some(task) = self.task.lock().expect("not poisoned").take() {
            task.abort();
        }
    }

    /// Waits until the projection's effects include the event at `cursor`
    /// (read-your-writes). Works whichever instance leads: a standby asks the database.
    pub async fn wait_for(&self, cursor: Cursor, timeout: Duration) -> Result<(), WaitError> {
        let deadline = Instant::now() + timeout;
        let mut status = self.status.clone();
        loop {
            let current = status.borrow_and_update().clone();
            if current.checkpoint >= cursor {
                return Ok(());
            }
            if let ProjectionState::Failed(e) = current.state {
                return Err(WaitError::Failed(self.name, e));
            }
            if current.state != ProjectionState::Leading {
                let (checkpoint, failed) = self.stored_checkpoint().await?;
                if let Some(e) = failed {
                    return Err(WaitError::Failed(self.name, e));
                }
                if checkpoint >= cursor {
                    return Ok(());
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(WaitError::Timeout(self.name));
            }
            let nap = (deadline - now).min(Duration::from_millis(20));
            tokio::select! {
                _ = status.changed() => {}
                _ = tokio::time::sleep(nap) => {}
            }
        }
    }

    async fn stored_checkpoint(&self) -> Result<(Cursor, Option<String>), WaitError> {
        let row: Option<(i64, i64, String, Option<String>)> = sqlx::query_as(
            "SELECT transaction_id, global_position, status, last_error
               FROM projection_checkpoints WHERE name = $1",
        )
        .bind(self.name)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| WaitError::Database(self.name, e.to_string()))?;
        Ok(match row {
            Some((tx, pos, status, error)) => (
                Cursor::new(tx, pos),
                (status == "failed").then(|| error.unwrap_or_default()),
            ),
            None => (Cursor::START, None),
        })
    }
}

struct Runner {
    projection: Arc<dyn Projection>,
    store: EventStore,
    connect: PgConnectOptions,
    config: RunnerConfig,
    status: watch::Sender<ProjectionStatus>,
    shutdown: watch::Receiver<bool>,
}

/// Why a leadership term ended.
enum TermEnd {
    Shutdown,
    Failed,
    ConnectionLost(sqlx::Error),
}

impl Runner {
    async fn run(mut self) {
        let name = self.projection.name();
        loop {
            let end = match self.lead().await {
                Ok(end) => end,
                Err(e) => TermEnd::ConnectionLost(e),
            };
            match end {
                TermEnd::Shutdown => {
                    self.status
                        .send_modify(|s| s.state = ProjectionState::Stopped);
                    return;
                }
                TermEnd::Failed => return,
                TermEnd::ConnectionLost(e) => {
                    tracing::warn!(projection = name, error = %e, "projection lost its connection; will retry");
                    self.status
                        .send_modify(|s| s.state = ProjectionState::Standby);
                    if self.sleep_or_shutdown(self.config.reconnect_delay).await {
                        self.status
                            .send_modify(|s| s.state = ProjectionState::Stopped);
                        return;
                    }
                }
            }
        }
    }

    /// True when shutdown was requested during the sleep.
    async fn sleep_or_shutdown(&mut self, duration: Duration) -> bool {
        if *self.shutdown.borrow() {
            return true;
        }
        tokio::select! {
            _ = tokio::time::sleep(duration) => *self.shutdown.borrow(),
            _ = self.shutdown.changed() => true,
        }
    }

    /// One leadership term on one dedicated connection: wait for the lock, then project until
    /// shutdown, failure or connection loss. The lock is a session lock: if this process dies
    /// or the connection breaks, Postgres releases it and a standby takes over.
    async fn lead(&mut self) -> Result<TermEnd, sqlx::Error> {
        let name = self.projection.name();
        // Asynchronous commit for the read model: a crash can lose the last pages' commits,
        // but their checkpoint goes with them, so the pages are projected again from the
        // durable log. Spares every page a wait for its WAL flush.
        let connect = self
            .connect
            .clone()
            .options([("synchronous_commit", "off")]);
        let mut conn = PgConnection::connect_with(&connect).await?;
        loop {
            let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1, hashtext($2))")
                .bind(LOCK_CLASS)
                .bind(name)
                .fetch_one(&mut conn)
                .await?;
            if locked {
                break;
            }
            if self.sleep_or_shutdown(self.config.takeover_interval).await {
                return Ok(TermEnd::Shutdown);
            }
        }
        sqlx::query("INSERT INTO projection_checkpoints (name) VALUES ($1) ON CONFLICT DO NOTHING")
            .bind(name)
            .execute(&mut conn)
            .await?;
        let (tx, pos, handled): (i64, i64, i64) = sqlx::query_as(
            "SELECT transaction_id, global_position, events_handled
               FROM projection_checkpoints WHERE name = $1",
        )
        .bind(name)
        .fetch_one(&mut conn)
        .await?;
        let mut checkpoint = Cursor::new(tx, pos);
        tracing::info!(projection = name, %checkpoint, "projection leader");
        self.status.send_modify(|s| {
            s.state = ProjectionState::Leading;
            s.checkpoint = checkpoint;
            s.events_handled = handled;
        });
        let mut watcher = self.store.watcher();
        loop {
            if *self.shutdown.borrow() {
                let _ = conn.close().await;
                return Ok(TermEnd::Shutdown);
            }
            watcher.mark_seen();
            let page = eventstore::read_page(&mut conn, checkpoint, self.config.page_size)
                .await
                .map_err(store_to_sqlx)?;
            let Some(last) = page.last().map(|e| e.cursor) else {
                tokio::select! {
                    _ = watcher.wait() => {}
                    _ = self.shutdown.changed() => {}
                }
                continue;
            };
            let mut tx = conn.begin().await?;
            if let Err(e) = self.projection.apply(&mut tx, &page).await {
                if let ProjectionError::Database(db) = &e
                    && is_connection_error(db)
                {
                    return Err(e.into_sqlx());
                }
                drop(tx);
                return self.fail(&mut conn, &e).await;
            }
            let moved = sqlx::query(
                "UPDATE projection_checkpoints
                    SET transaction_id = $2, global_position = $3,
                        events_handled = events_handled + $4,
                        status = 'running', last_error = NULL, updated_at = now()
                  WHERE name = $1 AND transaction_id = $5 AND global_position = $6",
            )
            .bind(name)
            .bind(last.transaction_id())
            .bind(last.global_position())
            .bind(page.len() as i64)
            .bind(checkpoint.transaction_id())
            .bind(checkpoint.global_position())
            .execute(&mut *tx)
            .await?;
            if moved.rows_affected() != 1 {
                // Someone else moved our checkpoint: we are not the only writer after all.
                // Never commit on top of it; start a new term from the stored checkpoint.
                tracing::error!(
                    projection = name,
                    "checkpoint moved under the leader; restarting term"
                );
                drop(tx);
                return Err(sqlx::Error::Protocol(
                    "checkpoint moved under the leader".into(),
                ));
            }
            tx.commit().await?;
            metrics::counter!("projection_events_handled_total", "projection" => name)
                .increment(page.len() as u64);
            checkpoint = last;
            self.status.send_modify(|s| {
                s.checkpoint = last;
                s.events_handled += page.len() as i64;
            });
            if (page.len() as i64) < self.config.page_size
                && !self.config.gather.is_zero()
                && self.sleep_or_shutdown(self.config.gather).await
            {
                let _ = conn.close().await;
                return Ok(TermEnd::Shutdown);
            }
        }
    }

    /// A handler error: record it for /ready and operators, stop this projection, keep the
    /// checkpoint where it is (the event is not skipped).
    async fn fail(
        &mut self,
        conn: &mut PgConnection,
        error: &ProjectionError,
    ) -> Result<TermEnd, sqlx::Error> {
        let name = self.projection.name();
        tracing::error!(projection = name, error = %error, "projection stopped by a handler error");
        metrics::counter!("projection_failures_total", "projection" => name).increment(1);
        let text = error.to_string();
        sqlx::query(
            "UPDATE projection_checkpoints SET status = 'failed', last_error = $2, updated_at = now()
              WHERE name = $1",
        )
        .bind(name)
        .bind(&text)
        .execute(&mut *conn)
        .await?;
        self.status
            .send_modify(|s| s.state = ProjectionState::Failed(text));
        // The connection (and with it the lock) goes when the caller drops it. Another
        // instance may take over and try the same event once; it will stop the same way
        // unless the failure was transient. Operators restart after a fix.
        Ok(TermEnd::Failed)
    }
}

fn is_connection_error(e: &sqlx::Error) -> bool {
    matches!(
        e,
        sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolClosed
            | sqlx::Error::PoolTimedOut
    )
}

fn store_to_sqlx(e: eventstore::StoreError) -> sqlx::Error {
    match e {
        eventstore::StoreError::Database(db) => db,
        other => sqlx::Error::Protocol(other.to_string()),
    }
}

impl ProjectionError {
    fn into_sqlx(self) -> sqlx::Error {
        match self {
            ProjectionError::Database(e) => e,
            other => sqlx::Error::Protocol(other.to_string()),
        }
    }
}

/// How far a projection trails the log, from its stored checkpoint.
#[derive(Clone, Debug, PartialEq)]
pub struct Lag {
    /// `None` before the projection's first start.
    pub status: Option<String>,
    pub checkpoint: Cursor,
    /// Events after the checkpoint, counted up to the cap given to [`lag`].
    pub events: i64,
    /// Age of the oldest of those events (0 when there is none).
    pub seconds: f64,
}

impl Lag {
    pub fn failed(&self) -> bool {
        self.status.as_deref() == Some("failed")
    }
}

/// The lag of projection `name`, counting at most `cap` events so that a far-behind
/// projection does not turn a health check into a scan of the log.
pub async fn lag(pool: &PgPool, name: &str, cap: i64) -> Result<Lag, sqlx::Error> {
    let stored: Option<(i64, i64, String)> = sqlx::query_as(
        "SELECT transaction_id, global_position, status FROM projection_checkpoints WHERE name = $1",
    )
    .bind(name)
    .fetch_optional(pool)
    .await?;
    let (checkpoint, status) = match stored {
        Some((tx, pos, status)) => (Cursor::new(tx, pos), Some(status)),
        None => (Cursor::START, None),
    };
    let (events, seconds): (i64, Option<f64>) = sqlx::query_as(
        "SELECT count(*), extract(epoch FROM now() - min(recorded_at))::float8
           FROM (SELECT recorded_at FROM events
                  WHERE (transaction_id, global_position) > ($1, $2)
                  ORDER BY transaction_id, global_position
                  LIMIT $3) behind",
    )
    .bind(checkpoint.transaction_id())
    .bind(checkpoint.global_position())
    .bind(cap)
    .fetch_one(pool)
    .await?;
    Ok(Lag {
        status,
        checkpoint,
        events,
        seconds: seconds.unwrap_or(0.0).max(0.0),
    })
}
