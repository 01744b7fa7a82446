//! The projection runner: leadership, batching, checkpoints, failure, waiting.
//!
//! A passing database hiccup (a lost or killed connection, a statement timeout, a deadlock,
//! a serialization failure, a lock timeout, a server out of resources) ends the leadership
//! term and the runner tries again with backoff; only an error the handler itself reports
//! about an event (or a database error outside those classes) stops the projection as
//! poison. The leader's connection carries the store's session settings plus an idle-session
//! timeout, and every step on it has a client-side deadline, so a frozen leader or a
//! network partition releases the fence and the leadership lock within about a minute.

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
    /// First backoff after a lost connection or a transient error; it doubles with every
    /// further one in a row, up to [`RunnerConfig::max_backoff`].
    pub reconnect_delay: Duration,
    pub max_backoff: Duration,
    /// Client-side deadline for one step on the leader connection (connect, take the lock,
    /// read and apply one page, commit). Past it the connection is dropped and the term
    /// ends: the server side times out on its own (ADR 0001's 60 s), and this side must not
    /// wait for TCP to give up either.
    pub step_timeout: Duration,
    /// The leader connection's `idle_session_timeout`: a leader frozen outside a
    /// transaction (which the idle-in-transaction timeout does not cover) loses its session
    /// lock, and with it the leadership, after this long. Must exceed the store's poll
    /// interval and the takeover interval, which are the longest a healthy runner idles.
    pub idle_session_timeout: Duration,
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
            max_backoff: Duration::from_secs(30),
            step_timeout: Duration::from_secs(60),
            idle_session_timeout: Duration::from_secs(60),
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
    /// This instance's runner was stopped (or died): nothing here will move it any more.
    #[error("projection {0} is not running on this instance")]
    Stopped(&'static str),
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
    /// (read-your-writes). Works whichever instance leads: a standby asks the database. A
    /// failed or stopped projection answers at once with an error instead of letting the
    /// caller wait out its timeout.
    pub async fn wait_for(&self, cursor: Cursor, timeout: Duration) -> Result<(), WaitError> {
        let deadline = Instant::now() + timeout;
        let mut status = self.status.clone();
        let mut runner_gone = false;
        loop {
            let current = status.borrow_and_update().clone();
            if current.checkpoint >= cursor {
                return Ok(());
            }
            match current.state {
                ProjectionState::Failed(e) => return Err(WaitError::Failed(self.name, e)),
                ProjectionState::Stopped => return Err(WaitError::Stopped(self.name)),
                ProjectionState::Leading if !runner_gone => {}
                ProjectionState::Leading | ProjectionState::Standby => {
                    let (checkpoint, failed) = self.stored_checkpoint().await?;
                    if let Some(e) = failed {
                        return Err(WaitError::Failed(self.name, e));
                    }
                    if checkpoint >= cursor {
                        return Ok(());
                    }
                    if runner_gone {
                        // Aborted or panicked without a last word: the status will not
                        // change any more, and polling the database for it would spin.
                        return Err(WaitError::Stopped(self.name));
                    }
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(WaitError::Timeout(self.name));
            }
            let nap = (deadline - now).min(Duration::from_millis(20));
            tokio::select! {
                changed = status.changed() => runner_gone = changed.is_err(),
                _ = tokio::time::sleep(nap) => {}
            }
        }
    }

    async fn stored_checkpoint(&self) -> Result<(Cursor, Option<String>), WaitError> {
        let row: Option<(i64, i64, i64, String, Option<String>)> = sqlx::query_as(
            "SELECT epoch, transaction_id, global_position, status, last_error
               FROM projection_checkpoints WHERE name = $1",
        )
        .bind(self.name)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| WaitError::Database(self.name, e.to_string()))?;
        Ok(match row {
            Some((epoch, tx, pos, status, error)) => (
                Cursor::new(epoch, tx, pos),
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
    /// The connection was lost or a transient error interrupted a page; try again.
    Interrupted(sqlx::Error),
}

/// What one step of a term did.
enum Step {
    /// Nothing settled after the checkpoint.
    Idle,
    /// A page was applied and committed; the checkpoint is now this cursor.
    Applied(Cursor, usize),
    /// The handler cannot project an event of the page (rolled back).
    Poison(ProjectionError),
}

impl Runner {
    async fn run(mut self) {
        let name = self.projection.name();
        let mut failures_in_a_row = 0u32;
        loop {
            let (end, progressed) = self.lead().await;
            if progressed {
                failures_in_a_row = 0;
            }
            match end {
                TermEnd::Shutdown => {
                    self.status
                        .send_modify(|s| s.state = ProjectionState::Stopped);
                    return;
                }
                TermEnd::Failed => return,
                TermEnd::Interrupted(e) => {
                    let delay = backoff(&self.config, failures_in_a_row);
                    failures_in_a_row = failures_in_a_row.saturating_add(1);
                    metrics::counter!("projection_retries_total", "projection" => name)
                        .increment(1);
                    tracing::warn!(
                        projection = name,
                        error = %e,
                        retry.in_ms = delay.as_millis() as u64,
                        "projection interrupted by a database error that may pass; will retry"
                    );
                    self.status
                        .send_modify(|s| s.state = ProjectionState::Standby);
                    if self.sleep_or_shutdown(delay).await {
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

    /// `future` within the step deadline; past it, an I/O error that ends the term (the
    /// connection is dropped with it, whatever state it was in).
    async fn bounded<T>(
        &self,
        future: impl Future<Output = Result<T, sqlx::Error>>,
    ) -> Result<T, sqlx::Error> {
        match tokio::time::timeout(self.config.step_timeout, future).await {
            Ok(result) => result,
            Err(_) => Err(sqlx::Error::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!(
                    "no answer from the database within {:?} on the leader connection",
                    self.config.step_timeout
                ),
            ))),
        }
    }

    /// One leadership term; also says whether it committed anything (which resets the
    /// backoff).
    async fn lead(&mut self) -> (TermEnd, bool) {
        let mut progressed = false;
        let end = match self.term(&mut progressed).await {
            Ok(end) => end,
            Err(e) => TermEnd::Interrupted(e),
        };
        (end, progressed)
    }

    /// One leadership term on one dedicated connection: wait for the lock, then project until
    /// shutdown, failure or interruption. The lock is a session lock: if this process dies
    /// or the connection breaks, Postgres releases it and a standby takes over.
    async fn term(&mut self, progressed: &mut bool) -> Result<TermEnd, sqlx::Error> {
        let name = self.projection.name();
        let options = leader_options(self.connect.clone(), self.config.idle_session_timeout);
        let mut conn = self.bounded(PgConnection::connect_with(&options)).await?;
        loop {
            let locked: bool = self
                .bounded(
                    sqlx::query_scalar("SELECT pg_try_advisory_lock($1, hashtext($2))")
                        .bind(LOCK_CLASS)
                        .bind(name)
                        .fetch_one(&mut conn),
                )
                .await?;
            if locked {
                break;
            }
            if self.sleep_or_shutdown(self.config.takeover_interval).await {
                return Ok(TermEnd::Shutdown);
            }
        }
        let (epoch, tx, pos, handled): (i64, i64, i64, i64) = self
            .bounded(async {
                sqlx::query(
                    "INSERT INTO projection_checkpoints (name) VALUES ($1) ON CONFLICT DO NOTHING",
                )
                .bind(name)
                .execute(&mut conn)
                .await?;
                sqlx::query_as(
                    "SELECT epoch, transaction_id, global_position, events_handled
                       FROM projection_checkpoints WHERE name = $1",
                )
                .bind(name)
                .fetch_one(&mut conn)
                .await
            })
            .await?;
        let mut checkpoint = Cursor::new(epoch, tx, pos);
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
            match self.bounded(self.step(&mut conn, checkpoint)).await? {
                Step::Idle => {
                    tokio::select! {
                        _ = watcher.wait() => {}
                        _ = self.shutdown.changed() => {}
                    }
                }
                Step::Applied(last, n) => {
                    *progressed = true;
                    metrics::counter!("projection_events_handled_total", "projection" => name)
                        .increment(n as u64);
                    checkpoint = last;
                    self.status.send_modify(|s| {
                        s.checkpoint = last;
                        s.events_handled += n as i64;
                    });
                    if (n as i64) < self.config.page_size
                        && !self.config.gather.is_zero()
                        && self.sleep_or_shutdown(self.config.gather).await
                    {
                        let _ = conn.close().await;
                        return Ok(TermEnd::Shutdown);
                    }
                }
                Step::Poison(e) => {
                    return self.bounded(self.fail(&mut conn, &e)).await;
                }
            }
        }
    }

    /// Reads the page after `checkpoint`, applies it and moves the checkpoint, all in one
    /// transaction on the leader connection.
    async fn step(&self, conn: &mut PgConnection, checkpoint: Cursor) -> Result<Step, sqlx::Error> {
        let name = self.projection.name();
        let page = eventstore::read_page(&mut *conn, checkpoint, self.config.page_size)
            .await
            .map_err(store_to_sqlx)?;
        let Some(last) = page.last().map(|e| e.cursor) else {
            return Ok(Step::Idle);
        };
        let mut tx = conn.begin().await?;
        if let Err(e) = self.projection.apply(&mut tx, &page).await {
            drop(tx);
            return match e {
                ProjectionError::Database(db) if is_transient(&db) => Err(db),
                poison => Ok(Step::Poison(poison)),
            };
        }
        let moved = sqlx::query(
            "UPDATE projection_checkpoints
                SET epoch = $2, transaction_id = $3, global_position = $4,
                    events_handled = events_handled + $5,
                    status = 'running', last_error = NULL, updated_at = now()
              WHERE name = $1 AND epoch = $6 AND transaction_id = $7 AND global_position = $8",
        )
        .bind(name)
        .bind(last.epoch())
        .bind(last.transaction_id())
        .bind(last.global_position())
        .bind(page.len() as i64)
        .bind(checkpoint.epoch())
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
        Ok(Step::Applied(last, page.len()))
    }

    /// A handler error: record it for /ready and operators, stop this projection, keep the
    /// checkpoint where it is (the event is not skipped).
    async fn fail(
        &self,
        conn: &mut PgConnection,
        error: &ProjectionError,
    ) -> Result<TermEnd, sqlx::Error> {
        let name = self.projection.name();
        let text = error.to_string();
        sqlx::query(
            "UPDATE projection_checkpoints SET status = 'failed', last_error = $2, updated_at = now()
              WHERE name = $1",
        )
        .bind(name)
        .bind(&text)
        .execute(&mut *conn)
        .await?;
        // Counted once it is recorded: a connection lost on the way ends the term as an
        // interruption, and the next term meets the same event again.
        tracing::error!(projection = name, error = %error, "projection stopped by a handler error");
        metrics::counter!("projection_failures_total", "projection" => name).increment(1);
        self.status
            .send_modify(|s| s.state = ProjectionState::Failed(text));
        // The connection (and with it the lock) goes when the caller drops it. Another
        // instance may take over and try the same event once; it will stop the same way
        // unless the failure was transient. Operators restart after a fix.
        Ok(TermEnd::Failed)
    }
}

/// The leader's connection: the store's session settings, and an idle-session timeout so
/// that a leader frozen outside a transaction (which the idle-in-transaction timeout does
/// not cover) still loses its session lock, and with it the leadership. A healthy leader is
/// never idle that long: it polls the log every 100 ms.
fn leader_options(options: PgConnectOptions, idle_session_timeout: Duration) -> PgConnectOptions {
    let ms = idle_session_timeout.as_millis().max(1);
    eventstore::session_options(options).options([("idle_session_timeout", format!("{ms}ms"))])
}

/// The backoff before the next term after `failures_in_a_row` interruptions in a row.
fn backoff(config: &RunnerConfig, failures_in_a_row: u32) -> Duration {
    config
        .reconnect_delay
        .saturating_mul(1u32 << failures_in_a_row.min(16))
        .min(config.max_backoff.max(config.reconnect_delay))
}

/// Database errors that say nothing about the events being projected, only that this
/// attempt met a database that was briefly unable or unwilling: worth another try.
///
/// SQLSTATE classes 08 (connection), 53 (insufficient resources), 57P0x (shutdown, crash,
/// cannot connect now, idle-session timeout), 57014 (statement timeout, cancel), 40001
/// (serialization), 40P01 (deadlock), 55P03 (lock not available), 25P03 (idle in
/// transaction timeout); and every error of the connection itself.
pub fn is_transient(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolClosed
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            code.starts_with("08")
                || code.starts_with("53")
                || code.starts_with("57P0")
                || matches!(&*code, "57014" | "40001" | "40P01" | "55P03" | "25P03")
        }),
        _ => false,
    }
}

fn store_to_sqlx(e: eventstore::StoreError) -> sqlx::Error {
    match e {
        eventstore::StoreError::Database(db) => db,
        other => sqlx::Error::Protocol(other.to_string()),
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
    let stored: Option<(i64, i64, i64, String)> = sqlx::query_as(
        "SELECT epoch, transaction_id, global_position, status
           FROM projection_checkpoints WHERE name = $1",
    )
    .bind(name)
    .fetch_optional(pool)
    .await?;
    let (checkpoint, status) = match stored {
        Some((epoch, tx, pos, status)) => (Cursor::new(epoch, tx, pos), Some(status)),
        None => (Cursor::START, None),
    };
    let (events, seconds): (i64, Option<f64>) = sqlx::query_as(
        "SELECT count(*), extract(epoch FROM now() - min(recorded_at))::float8
           FROM (SELECT recorded_at FROM events
                  WHERE (epoch, transaction_id, global_position) > ($1, $2, $3)
                  ORDER BY epoch, transaction_id, global_position
                  LIMIT $4) behind",
    )
    .bind(checkpoint.epoch())
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
