//! The log epoch: which Postgres cluster the log's transaction ids come from (ADR 0008).
//!
//! `migrations/0005_log_epoch.sql` keeps one row per epoch with the cluster it was opened on
//! and a server function that compares it with the cluster the database runs on now. A
//! restore or logical copy into another cluster, a promoted standby (new timeline), or
//! transaction ids that run below the log's highest one open a new epoch, which leads the
//! read order, so new events sort after all old ones and no reader skips them.

use crate::{EventStore, StoreError};

/// What [`EventStore::check_epoch`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EpochCheck {
    /// The current epoch (the first part of every cursor written from now on).
    pub epoch: i64,
    /// Why a new epoch was opened by this check; `None` when the current one still holds.
    pub opened: Option<String>,
}

impl EventStore {
    /// Makes sure the current epoch belongs to the cluster the database runs on, opening a
    /// new one if not. One statement; cheap when nothing changed. Call it at start-up
    /// before anything appends, and whenever the database may have moved (after the
    /// connection was lost): cursors of an earlier epoch held outside the database (live
    /// feed positions, browsers' `since`) can no longer be trusted once it opens.
    pub async fn check_epoch(&self) -> Result<EpochCheck, StoreError> {
        let (epoch, opened): (i64, Option<String>) =
            sqlx::query_as("SELECT current_epoch, opened_because FROM event_log_check_epoch()")
                .fetch_one(&self.pool)
                .await?;
        if let Some(reason) = &opened {
            tracing::warn!(
                log.epoch = epoch,
                log.reason = %reason,
                "the database is on another cluster than the event log's last epoch; opened a new epoch"
            );
        }
        Ok(EpochCheck { epoch, opened })
    }

    /// The current epoch as the database has it (no check).
    pub async fn current_epoch(&self) -> Result<i64, StoreError> {
        let epoch: Option<i64> = sqlx::query_scalar("SELECT max(epoch) FROM event_log_epochs")
            .fetch_one(&self.pool)
            .await?;
        Ok(epoch.unwrap_or(0))
    }
}
