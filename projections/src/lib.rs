//! Read models and the machinery that keeps them up to date.
//!
//! A [`Projection`] turns pages of events into SQL writes. The [`runner`] feeds it: one
//! leader per projection across all gateway instances (a session advisory lock on a
//! dedicated connection), the checkpoint written in the same transaction as the read-model
//! rows (exactly-once effects), and a handler error stops the projection loudly instead of
//! skipping the event. [`ProjectionHandle::wait_for`] gives HTTP handlers read-your-writes.

pub mod admins;
pub mod leads;
pub mod runner;

pub use runner::{
    BoxFuture, Lag, Projection, ProjectionError, ProjectionHandle, ProjectionState,
    ProjectionStatus, RunnerConfig, WaitError, is_transient, lag, spawn,
};

/// Timestamps as the API writes them: RFC 3339, UTC, milliseconds (SPEC §1). Read models
/// render API shapes, so the format lives here for them and for the gateway.
pub fn rfc3339(at: chrono::DateTime<chrono::Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
