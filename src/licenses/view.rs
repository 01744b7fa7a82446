//! The in-memory verify view (ADR 0011): what `POST /v1/licenses/verify` answers from, so the
//! hot path of every desktop start and every document costs no database round trip.
//!
//! An entry is one desktop of one license, keyed by the license key's keyed digest and the
//! device's fingerprint: the `licenses` read model's [`VerifyRow`], the answer last made
//! for it (certificate included), and when the device was last recorded as active. Every known device is loaded at
//! start ([`VerifyView::load`]); a miss (a new device, an entry dropped by a change) reads
//! the read model and fills the entry.
//!
//! Kept current in three ways:
//! * the instance that wrote a license event drops that license's entries after the read
//!   model has the event ([`crate::state::AppState::license_written`]), so its own next
//!   verify sees the change;
//! * the live feed, which follows the whole log on every instance, drops a license's entries
//!   once the read model has each of its events, and every entry when a plan changes
//!   ([`follow`]): another instance sees a revoke, suspension or block within one poll of the
//!   log (100 ms) plus the projection's lag;
//! * while the feed cannot keep up with the log (a read model it waits for failed, the
//!   database is unreachable) or is not running, the view is bypassed: verify reads the read
//!   model, as it would without the view; and an entry older than [`ENTRY_TTL`] is read
//!   again whatever happens.
//!
//! A fill never brings back what a drop removed: a fill takes a ticket (the drop counter)
//! before reading the read model, and is kept only if no drop of its license happened since.
//! Every drop happens after the read model has the event that caused it, so a read that
//! started after the drop sees the event.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use eventstore::{Cursor, StoredEvent};
use projections::licenses::VerifyRow;
use uuid::Uuid;

use crate::error::AppError;
use crate::state::AppState;

/// The longest an entry is used before the read model is read again.
pub const ENTRY_TTL: Duration = Duration::from_secs(600);
/// Beyond this many entries the view starts over rather than grow (a bound on memory, far
/// above the desktops of any one instance's customers).
pub const MAX_ENTRIES: usize = 200_000;

/// One desktop of one license, as verify answers it.
pub struct Entry {
    pub row: VerifyRow,
    loaded: Instant,
    /// When this device was last recorded as active (throttled telemetry).
    last_active: Mutex<Option<DateTime<Utc>>>,
    /// The whole answer, serialised, and until when it holds (see [`Entry::answer`]).
    answer: Mutex<Option<(DateTime<Utc>, axum::body::Bytes)>>,
}

impl Entry {
    fn new(row: VerifyRow) -> Self {
        Self {
            last_active: Mutex::new(row.last_active_at),
            row,
            loaded: Instant::now(),
            answer: Mutex::new(None),
        }
    }

    /// An entry for one answer only (a device the view does not keep).
    pub fn uncached(row: VerifyRow) -> Self {
        Self::new(row)
    }

    /// True (and the time recorded) when the device's last activity is more than a minute
    /// before `now`: the caller writes it to the read model. One caller per minute gets true.
    pub fn mark_active(&self, now: DateTime<Utc>) -> bool {
        let mut last = lock(&self.last_active);
        if last.is_some_and(|at| at >= now - chrono::Duration::minutes(1)) {
            return false;
        }
        *last = Some(now);
        true
    }

    /// The serialised answer at `now`: made by `render` at the first call and again once
    /// the time it returned has come (the entry itself is replaced when anything else in the
    /// answer changes).
    pub fn answer(
        &self,
        now: DateTime<Utc>,
        render: impl FnOnce() -> (axum::body::Bytes, DateTime<Utc>),
    ) -> axum::body::Bytes {
        let mut slot = lock(&self.answer);
        match &*slot {
            Some((until, body)) if now < *until => body.clone(),
            _ => {
                let (body, until) = render();
                *slot = Some((until, body.clone()));
                body
            }
        }
    }
}

/// A promise that nothing was dropped since it was taken (see the module docs).
#[derive(Clone, Copy, Debug)]
pub struct Ticket(u64);

#[derive(Default)]
pub struct VerifyView {
    /// Counts drops; a [`Ticket`] is its value when taken.
    drops: AtomicU64,
    /// True while the live feed follows the log without failing ([`VerifyView::follow`]).
    following: AtomicBool,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<String, Arc<Entry>>,
    /// The entry keys of each license, to drop them together.
    by_license: HashMap<Uuid, Vec<String>>,
    /// The drop counter's value at each license's last drop.
    dropped: HashMap<Uuid, u64>,
    /// The drop counter's value when every entry was last dropped.
    all_dropped: u64,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing here is left half-changed by a panic that matters: a lost entry is a miss.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

fn entry_key(key_digest: &str, fingerprint: &str) -> String {
    format!("{key_digest}/{fingerprint}")
}

impl VerifyView {
    /// Fills the view with every device the read model knows of the licenses in `only`, or
    /// of all. Call after the read model has what changed them.
    async fn load(&self, pool: &sqlx::PgPool, only: Option<&[Uuid]>) -> Result<usize, sqlx::Error> {
        let ticket = self.ticket();
        let rows = projections::licenses::all_for_verify(pool, only).await?;
        let count = rows.len();
        for row in rows {
            if let Some(fingerprint) = row.fingerprint.clone() {
                let digest = row.key_digest.clone();
                self.keep(ticket, &digest, &fingerprint, Arc::new(Entry::new(row)));
            }
        }
        Ok(count)
    }

    /// Whether the feed keeps the view current: set by the feed after each batch it has
    /// followed, cleared when it fails or stops. Cleared, every verify reads the read model.
    pub fn set_following(&self, following: bool) {
        self.following.store(following, Ordering::SeqCst);
    }

    /// Whether the view holds every known device right now (see [`VerifyView::set_following`]).
    pub fn is_following(&self) -> bool {
        self.following.load(Ordering::SeqCst)
    }

    /// The live entry of this key and fingerprint, if any.
    pub fn get(&self, key_digest: &str, fingerprint: &str) -> Option<Arc<Entry>> {
        if !self.following.load(Ordering::SeqCst) {
            return None;
        }
        let entry = lock(&self.inner)
            .entries
            .get(&entry_key(key_digest, fingerprint))
            .cloned()?;
        (entry.loaded.elapsed() < ENTRY_TTL).then_some(entry)
    }

    /// Take before reading the read model for [`VerifyView::fill`].
    pub fn ticket(&self) -> Ticket {
        Ticket(self.drops.load(Ordering::SeqCst))
    }

    /// The entry for `row`; kept for later verifies unless its license (or everything) was
    /// dropped after `ticket` was taken.
    pub fn fill(
        &self,
        ticket: Ticket,
        key_digest: &str,
        fingerprint: &str,
        row: VerifyRow,
    ) -> Arc<Entry> {
        let entry = Arc::new(Entry::new(row));
        if self.following.load(Ordering::SeqCst) {
            self.keep(ticket, key_digest, fingerprint, Arc::clone(&entry));
        }
        // Otherwise nothing would drop it when its license changes.
        entry
    }

    fn keep(&self, ticket: Ticket, key_digest: &str, fingerprint: &str, entry: Arc<Entry>) {
        let license_id = entry.row.license_id;
        let mut inner = lock(&self.inner);
        let dropped = inner.dropped.get(&license_id).copied().unwrap_or(0);
        if dropped > ticket.0 || inner.all_dropped > ticket.0 {
            return;
        }
        if inner.entries.len() >= MAX_ENTRIES {
            inner.entries.clear();
            inner.by_license.clear();
        }
        let key = entry_key(key_digest, fingerprint);
        if inner.entries.insert(key.clone(), entry).is_none() {
            inner.by_license.entry(license_id).or_default().push(key);
        }
    }

    /// Drops the entries of `license_id`. Call after the read model has the event.
    pub fn drop_license(&self, license_id: Uuid) {
        let drop = self.drops.fetch_add(1, Ordering::SeqCst) + 1;
        let mut inner = lock(&self.inner);
        inner.dropped.insert(license_id, drop);
        for key in inner.by_license.remove(&license_id).unwrap_or_default() {
            inner.entries.remove(&key);
        }
    }

    /// Drops the entries of the licenses in `only` (of all, with `None`) and loads them
    /// again from the read model, so the view keeps holding every known device (a limited
    /// network's verify relies on it). Call after the read model has the change. If the
    /// load fails the entries stay dropped and the next verify of each reads the read model.
    pub async fn reload(
        &self,
        pool: &sqlx::PgPool,
        only: Option<&[Uuid]>,
    ) -> Result<usize, sqlx::Error> {
        match only {
            Some(licenses) => licenses.iter().for_each(|id| self.drop_license(*id)),
            None => self.drop_all(),
        }
        self.load(pool, only).await
    }

    /// [`VerifyView::reload`] for a caller that has already answered for the change and
    /// cannot retry: a failure is logged, and verify falls back to the read model.
    pub async fn reload_or_warn(&self, pool: &sqlx::PgPool, only: Option<&[Uuid]>) {
        if let Err(e) = self.reload(pool, only).await {
            tracing::warn!(error = %e, "reloading the verify view failed; verify reads the read model for what was dropped");
        }
    }

    /// Drops every entry (a plan's features changed). Call after the read model has it.
    pub fn drop_all(&self) {
        let drop = self.drops.fetch_add(1, Ordering::SeqCst) + 1;
        let mut inner = lock(&self.inner);
        inner.all_dropped = drop;
        inner.entries.clear();
        inner.by_license.clear();
    }

    pub fn len(&self) -> usize {
        lock(&self.inner).entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The live feed's first step, at the log's `head` where it starts: once the read models
/// include everything up to there, loads every known device and lets verify use the view.
/// Retried by the feed until it succeeds.
pub async fn start(state: &AppState, head: Cursor) -> Result<(), AppError> {
    let view = &state.licenses.view;
    state.wait_for(projections::plans::NAME, head).await?;
    state.wait_for(projections::licenses::NAME, head).await?;
    let count = view.load(&state.pool, None).await?;
    view.set_following(true);
    tracing::info!(devices = count, "verify view loaded");
    Ok(())
}

/// The live feed's part of each batch: after the read models have `events`, drops what
/// they changed and loads it again (so a device the view did not know, or an entry the
/// change dropped, is ready for its next verify). Retried by the feed until it succeeds (a
/// drop and a load can be repeated); while it fails, verify does not use the view.
pub async fn follow(state: &AppState, events: &[StoredEvent]) -> Result<(), AppError> {
    let followed = drop_changed(state, events).await;
    state.licenses.view.set_following(followed.is_ok());
    followed
}

async fn drop_changed(state: &AppState, events: &[StoredEvent]) -> Result<(), AppError> {
    let mut licenses: Vec<Uuid> = Vec::new();
    let mut last_license = None;
    let mut last_plan = None;
    for event in events {
        match event.stream.aggregate_type.as_str() {
            aggregates::license::AGGREGATE_TYPE => {
                if let Ok(id) = event.stream.aggregate_id.parse::<Uuid>() {
                    licenses.push(id);
                    last_license = Some(event.cursor);
                }
            }
            aggregates::plan::AGGREGATE_TYPE => last_plan = Some(event.cursor),
            _ => {}
        }
    }
    licenses.sort_unstable();
    licenses.dedup();
    if let Some(cursor) = last_license {
        state.wait_for(projections::licenses::NAME, cursor).await?;
    }
    let view = &state.licenses.view;
    if let Some(cursor) = last_plan {
        state.wait_for(projections::plans::NAME, cursor).await?;
        view.reload(&state.pool, None).await?;
    } else if last_license.is_some() {
        view.reload(&state.pool, Some(&licenses)).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(license_id: Uuid) -> VerifyRow {
        VerifyRow {
            license_id,
            key_digest: "k".into(),
            owner_name: "Ayşe".into(),
            company_name: "Örnek".into(),
            package_type: "PRO".into(),
            state: "active".into(),
            expires_at: Utc::now(),
            monthly_token_limit: 1,
            tokens_used_this_month: 0,
            features: None,
            device_id: Some(Uuid::now_v7()),
            fingerprint: Some("ab".repeat(32)),
            device_status: Some("approved".into()),
            is_master: Some(true),
            device_name: None,
            os_type: None,
            os_version: None,
            app_version: None,
            ip_address: None,
            last_active_at: None,
        }
    }

    fn following() -> VerifyView {
        let view = VerifyView::default();
        view.set_following(true);
        view
    }

    #[test]
    fn a_view_the_feed_does_not_follow_answers_nothing_and_keeps_nothing() {
        let view = following();
        let license = Uuid::now_v7();
        view.fill(view.ticket(), "k", "f", row(license));
        view.set_following(false);
        assert!(view.get("k", "f").is_none());
        view.fill(view.ticket(), "k", "g", row(license));
        view.set_following(true);
        assert!(view.get("k", "f").is_some());
        assert!(view.get("k", "g").is_none());
    }

    #[test]
    fn a_fill_that_read_before_a_drop_is_not_kept() {
        let view = following();
        let license = Uuid::now_v7();
        let ticket = view.ticket();
        view.drop_license(license);
        view.fill(ticket, "k", "f", row(license));
        assert!(view.get("k", "f").is_none());
        // A read that started after the drop is kept, and the next drop removes it.
        view.fill(view.ticket(), "k", "f", row(license));
        assert!(view.get("k", "f").is_some());
        view.drop_license(license);
        assert!(view.get("k", "f").is_none());
    }

    #[test]
    fn dropping_one_license_keeps_the_others_and_dropping_all_keeps_none() {
        let view = following();
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        view.fill(view.ticket(), "a", "1", row(a));
        view.fill(view.ticket(), "a", "2", row(a));
        view.fill(view.ticket(), "b", "1", row(b));
        view.drop_license(a);
        assert_eq!(view.len(), 1);
        assert!(view.get("b", "1").is_some());
        let ticket = view.ticket();
        view.drop_all();
        assert!(view.is_empty());
        view.fill(ticket, "b", "1", row(b));
        assert!(view.is_empty());
    }

    #[test]
    fn activity_is_recorded_once_a_minute() {
        let entry = Entry::new(row(Uuid::now_v7()));
        let now = Utc::now();
        assert!(entry.mark_active(now));
        assert!(!entry.mark_active(now + chrono::Duration::seconds(30)));
        assert!(entry.mark_active(now + chrono::Duration::seconds(61)));
    }

    #[test]
    fn an_answer_is_made_once_until_its_time_comes() {
        let entry = Entry::new(row(Uuid::now_v7()));
        let now = Utc::now();
        let later = now + chrono::Duration::hours(1);
        let first = entry.answer(now, || (format!("at {now}").into(), later));
        let again = entry.answer(later - chrono::Duration::seconds(1), || unreachable!());
        assert_eq!(first, again);
        let next = entry.answer(later, || {
            ("next".into(), later + chrono::Duration::hours(1))
        });
        assert_eq!(next, "next");
    }
}
