//! Live subscriptions: catch up from a cursor, then follow the log.

use std::time::Duration;

use tokio::sync::watch;

use crate::{Cursor, EventStore, StoreError, StoredEvent};

/// A reader that yields every committed event after its starting cursor exactly once, in log
/// order, and then waits for more. Wakes on appends made through this process's
/// [`EventStore`] and otherwise re-reads every poll interval, which is how it sees other
/// gateway instances' appends and events that the fence held back.
pub struct Subscription {
    store: EventStore,
    cursor: Cursor,
    page_size: i64,
    watcher: AppendWatcher,
}

/// Waits for "maybe there is something new": an append through this process's store, or the
/// poll interval passing. A hint only; the reader always re-reads the table.
pub struct AppendWatcher {
    appended: watch::Receiver<u64>,
    poll_interval: Duration,
}

impl AppendWatcher {
    /// Forget earlier signals. Call *before* reading, so that an append landing between the
    /// read and [`AppendWatcher::wait`] still wakes the waiter.
    pub fn mark_seen(&mut self) {
        self.appended.borrow_and_update();
    }

    pub async fn wait(&mut self) {
        tokio::select! {
            _ = self.appended.changed() => {}
            _ = tokio::time::sleep(self.poll_interval) => {}
        }
    }
}

impl EventStore {
    pub fn subscribe(&self, from: Cursor, page_size: i64) -> Subscription {
        Subscription {
            store: self.clone(),
            cursor: from,
            page_size: page_size.max(1),
            watcher: self.watcher(),
        }
    }

    pub fn watcher(&self) -> AppendWatcher {
        AppendWatcher {
            appended: self.inner.appended.subscribe(),
            poll_interval: self.inner.poll_interval,
        }
    }
}

impl Subscription {
    /// The cursor of the last event handed out.
    pub fn cursor(&self) -> Cursor {
        self.cursor
    }

    /// The next non-empty page of events; waits until there is one.
    pub async fn next_batch(&mut self) -> Result<Vec<StoredEvent>, StoreError> {
        loop {
            self.watcher.mark_seen();
            let page = self.store.read_page(self.cursor, self.page_size).await?;
            if let Some(last) = page.last() {
                self.cursor = last.cursor;
                return Ok(page);
            }
            self.watcher.wait().await;
        }
    }

    /// Whatever is settled right now, possibly nothing; never waits.
    pub async fn try_next_batch(&mut self) -> Result<Vec<StoredEvent>, StoreError> {
        let page = self.store.read_page(self.cursor, self.page_size).await?;
        if let Some(last) = page.last() {
            self.cursor = last.cursor;
        }
        Ok(page)
    }
}
