//! What can go wrong in the store, in terms a caller can act on.

use crate::event::StreamId;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another command appended to the stream first. Reload and decide again.
    #[error("stream {stream} is at version {actual}, expected {expected}")]
    Conflict {
        stream: StreamId,
        expected: u64,
        actual: u64,
    },
    /// An event id was already used by a different append (not an idempotent retry).
    #[error("event id already used by another append")]
    DuplicateEventId,
    #[error("stored event could not be decoded: {0}")]
    Decode(String),
    #[error("event could not be encoded: {0}")]
    Encode(#[from] serde_json::Error),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

impl StoreError {
    /// Errors worth retrying with the very same append (same event ids): the append may or
    /// may not have committed, and the idempotent retry finds out.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            StoreError::Database(
                sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed
            )
        )
    }
}
