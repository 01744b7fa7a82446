//! The one subscription of this instance: follow the log, map, fan out.
//!
//! The feed also notices when the database moved under it (ADR 0008): every
//! `WS_PROGRESS_INTERVAL_MS`, after a failed read, and whenever a batch arrives from a later
//! epoch, it checks the log's epoch. A move means events may have been lost (an async
//! standby promoted) or renumbered, so neither its own position nor any cursor a panel
//! holds can be trusted: the feed restarts from the new head and every socket is closed
//! with 4400 `CURSOR_STALE` (the panel reloads); a `since` of the earlier epoch is refused
//! the same way.

use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use eventstore::{Cursor, StoreError, StoredEvent};
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

use super::mapping::{self, FeedItem};
use crate::state::AppState;

/// Events read per page (the projections read 500 too).
const PAGE_SIZE: i64 = 500;
/// Pause before retrying after a database error or a read model that did not catch up.
const RETRY_DELAY: Duration = Duration::from_secs(1);

/// The broadcast side of the live feed. Sockets take a receiver with [`LiveFeed::subscribe`];
/// the task started by [`start`] is the only sender.
pub struct LiveFeed {
    channel: broadcast::Sender<FeedItem>,
    /// The cursor of the last event the feed has dealt with. It moves after that event's
    /// messages are in the channel, under this lock; [`LiveFeed::subscribe`] takes a receiver
    /// under it too, so a receiver holds exactly the messages after the position it got.
    position: Mutex<Cursor>,
    shutdown: watch::Sender<bool>,
    task: Mutex<Option<JoinHandle<()>>>,
    /// Event-store subscriptions held by this feed: 1 while it runs, whatever the number of
    /// sockets (reported by `/ready`).
    subscriptions: AtomicUsize,
    /// Bumped (under the position lock) when the feed restarts in a new epoch of the log;
    /// sockets that subscribed before close with `CURSOR_STALE`.
    restarts: watch::Sender<u64>,
    /// The desktops' sockets on this instance (`/ws/device`).
    pub devices: super::DeviceHub,
}

/// A socket's view of the feed, taken at one instant under the position lock.
pub struct FeedSubscription {
    /// Every message after `position`.
    pub receiver: broadcast::Receiver<FeedItem>,
    pub position: Cursor,
    /// Changes when the feed restarts in a new epoch.
    pub restarts: watch::Receiver<u64>,
}

/// What `/ready` reports about the feed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LiveStatus {
    /// False only when the feed task ended without being asked to (a panic).
    pub ok: bool,
    pub position: Cursor,
    pub subscriptions: usize,
    pub sockets: usize,
}

impl LiveFeed {
    pub fn new(capacity: usize) -> Self {
        let (channel, _) = broadcast::channel(capacity);
        Self {
            channel,
            position: Mutex::new(Cursor::START),
            shutdown: watch::Sender::new(false),
            task: Mutex::new(None),
            subscriptions: AtomicUsize::new(0),
            restarts: watch::Sender::new(0),
            devices: super::DeviceHub::default(),
        }
    }

    /// A receiver of every message after the returned cursor, and that cursor.
    pub fn subscribe(&self) -> FeedSubscription {
        let position = self.position.lock().expect("not poisoned");
        FeedSubscription {
            receiver: self.channel.subscribe(),
            position: *position,
            restarts: self.restarts.subscribe(),
        }
    }

    /// The feed's position if `receiver` holds no message that its socket has not taken
    /// yet: then the socket has dealt with everything up to there, including events that
    /// map to no message. `None` while messages are waiting.
    pub fn drained_position(&self, receiver: &broadcast::Receiver<FeedItem>) -> Option<Cursor> {
        let position = self.position.lock().expect("not poisoned");
        receiver.is_empty().then_some(*position)
    }

    /// Resolves once the gateway is stopping (at once if it already is).
    pub fn stopping(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut shutdown = self.shutdown.subscribe();
        async move {
            let _ = shutdown.wait_for(|stop| *stop).await;
        }
    }

    /// Stops the feed and tells every socket to close (1001); waits for the feed task.
    pub async fn stop(&self) {
        self.shutdown.send_replace(true);
        let task = self.task.lock().expect("not poisoned").take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }

    pub fn status(&self) -> LiveStatus {
        let died = self
            .task
            .lock()
            .expect("not poisoned")
            .as_ref()
            .is_some_and(|task| task.is_finished());
        LiveStatus {
            ok: !died,
            position: *self.position.lock().expect("not poisoned"),
            subscriptions: self.subscriptions.load(Ordering::Relaxed),
            sockets: self.channel.receiver_count(),
        }
    }

    /// Starts over at `head` in a new epoch: sockets that subscribed before are told to go.
    fn restart(&self, head: Cursor) {
        let mut position = self.position.lock().expect("not poisoned");
        *position = head;
        self.restarts.send_modify(|n| *n += 1);
    }

    /// Sends `items` to every socket, then moves the position to `through`.
    fn publish(&self, items: Vec<FeedItem>, through: Cursor) {
        let mut position = self.position.lock().expect("not poisoned");
        for item in items {
            // An error only means that no socket is connected.
            let _ = self.channel.send(item);
        }
        *position = through;
    }
}

/// Starts the feed of `state.live` at the log's head: only what settles from now on is
/// pushed (a reconnecting panel asks for the past with `since`). Call once, before serving.
pub async fn start(state: &AppState) -> Result<(), StoreError> {
    let head = state.store.head().await?;
    let feed = &state.live;
    *feed.position.lock().expect("not poisoned") = head;
    let task = tokio::spawn(run(state.clone(), head));
    *feed.task.lock().expect("not poisoned") = Some(task);
    tracing::info!(live.position = %head, "live feed started");
    Ok(())
}

/// What woke the feed.
enum Wake {
    Batch(Result<Vec<StoredEvent>, StoreError>),
    Check,
}

async fn run(state: AppState, from: Cursor) {
    let feed = &state.live;
    let mut subscription = state.store.subscribe(from, PAGE_SIZE);
    feed.subscriptions.fetch_add(1, Ordering::Relaxed);
    let every = state.config.ws_progress_interval;
    let mut check = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Whichever way the feed ends (a panic included), verify stops trusting the view.
    let _view_guard = NotFollowingOnDrop(&state.licenses.view);
    // The verify view starts where the feed starts, so every later change reaches it.
    let view_started = start_view(&state, from).await;
    if view_started {
        loop {
            let wake = tokio::select! {
                batch = subscription.next_batch() => Wake::Batch(batch),
                _ = check.tick() => Wake::Check,
                () = feed.stopping() => break,
            };
            let events = match wake {
                Wake::Check => {
                    if let Some(head) = moved(&state, subscription.cursor()).await {
                        subscription = state.store.subscribe(head, PAGE_SIZE);
                    }
                    resume_view_if_current(&state, subscription.cursor()).await;
                    continue;
                }
                Wake::Batch(Ok(events)) => events,
                Wake::Batch(Err(e)) => {
                    // The subscription keeps its cursor: the retry reads the same page again.
                    // Until it does, changes may be passing this instance by: verify reads
                    // the read model meanwhile.
                    state.licenses.view.set_following(false);
                    tracing::warn!(error = %e, "live feed cannot read the log; retrying");
                    if until_stopped(feed, tokio::time::sleep(RETRY_DELAY))
                        .await
                        .is_none()
                    {
                        break;
                    }
                    // A lost connection is what a failover looks like from here: check at once
                    // rather than at the next tick.
                    if let Some(head) = moved(&state, subscription.cursor()).await {
                        subscription = state.store.subscribe(head, PAGE_SIZE);
                    }
                    continue;
                }
            };
            let through = events.last().expect("batches are never empty").cursor;
            let position = feed.status().position;
            if through.epoch() != position.epoch() {
                // Another instance opened a new epoch: this feed may have passed events written
                // before it opened (reused transaction ids), so it starts over rather than go on.
                match moved(&state, position).await {
                    Some(head) => subscription = state.store.subscribe(head, PAGE_SIZE),
                    None => {
                        // Could not tell (database error): read this batch again later.
                        state.licenses.view.set_following(false);
                        subscription = state.store.subscribe(position, PAGE_SIZE);
                        if until_stopped(feed, tokio::time::sleep(RETRY_DELAY))
                            .await
                            .is_none()
                        {
                            break;
                        }
                    }
                }
                continue;
            }
            let Some(items) = map_until_done(&state, &events).await else {
                break;
            };
            feed.publish(items, through);
        }
    }
    feed.subscriptions.fetch_sub(1, Ordering::Relaxed);
    tracing::info!("live feed stopped");
}

/// Clears the verify view's "following" flag when dropped.
struct NotFollowingOnDrop<'a>(&'a crate::licenses::view::VerifyView);

impl Drop for NotFollowingOnDrop<'_> {
    fn drop(&mut self) {
        self.0.set_following(false);
    }
}

/// After a failure, the view is trusted again once the feed has followed the log up to its
/// head (a quiet log brings no batch whose success would say so).
async fn resume_view_if_current(state: &AppState, position: Cursor) {
    let view = &state.licenses.view;
    if view.is_following() {
        return;
    }
    if let Ok(head) = state.store.head().await
        && head <= position
    {
        view.set_following(true);
    }
}

/// Loads the verify view at the feed's starting point, retrying until it works; false when
/// the feed is stopped first.
async fn start_view(state: &AppState, from: Cursor) -> bool {
    loop {
        match until_stopped(&state.live, crate::licenses::view::start(state, from)).await {
            Some(Ok(())) => return true,
            Some(Err(e)) => {
                tracing::warn!(error = %e, "verify view cannot load yet; retrying");
                if until_stopped(&state.live, tokio::time::sleep(RETRY_DELAY))
                    .await
                    .is_none()
                {
                    return false;
                }
            }
            None => return false,
        }
    }
}

/// Checks the log's epoch (opening a new one if the database moved); if it is not the epoch
/// of `position`, restarts the feed at the head and returns it.
async fn moved(state: &AppState, position: Cursor) -> Option<Cursor> {
    let epoch = match state.store.check_epoch().await {
        Ok(check) => check.epoch,
        Err(e) => {
            tracing::warn!(error = %e, "live feed cannot check the log's epoch; will retry");
            return None;
        }
    };
    if epoch == position.epoch() {
        return None;
    }
    let head = match state.store.head().await {
        Ok(head) => head,
        Err(e) => {
            tracing::warn!(error = %e, "live feed cannot read the log's head; will retry");
            return None;
        }
    };
    tracing::warn!(
        live.position = %position,
        live.head = %head,
        "the event log moved to a new epoch; the live feed starts over and closes every socket"
    );
    metrics::counter!("live_feed_restarts_total").increment(1);
    state.live.restart(head);
    // What the feed passed before the move may be gone or renumbered: read it all again.
    state.licenses.view.reload_or_warn(&state.pool, None).await;
    Some(head)
}

/// Keeps the verify view current with a batch and maps it, retrying until both work:
/// skipping would leave a gap in every panel (and a stale verify answer), so a broken read
/// model stalls the feed (loudly) instead. `None` when stopped meanwhile.
async fn map_until_done(
    state: &AppState,
    events: &[eventstore::StoredEvent],
) -> Option<Vec<FeedItem>> {
    loop {
        let work = async {
            crate::licenses::view::follow(state, events).await?;
            mapping::items(state, events).await
        };
        match until_stopped(&state.live, work).await? {
            Ok(items) => return Some(items),
            Err(e) => {
                tracing::error!(
                    error = %e,
                    error.detail = e.internal_detail().unwrap_or(""),
                    live.position = %events[0].cursor,
                    "live feed cannot map events; retrying"
                );
                until_stopped(&state.live, tokio::time::sleep(RETRY_DELAY)).await?;
            }
        }
    }
}

/// `future`'s output, or `None` when the feed is stopped first.
async fn until_stopped<T>(feed: &LiveFeed, future: impl Future<Output = T>) -> Option<T> {
    tokio::select! {
        output = future => Some(output),
        () = feed.stopping() => None,
    }
}
