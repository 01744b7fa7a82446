//! The part every event-by-event read model shares: keep the runner's page loop, skip other
//! aggregates' streams, decode the payload (an undecodable payload is the one genuine
//! poison), hand each event over, and flush the page's batched writes at its end. A read
//! model implements [`EventProjection`] and runs as [`Adapter`].

use cqrs_es::DomainEvent;
use eventstore::StoredEvent;
use serde::de::DeserializeOwned;
use sqlx::PgConnection;

use crate::{BoxFuture, Projection, ProjectionError};

/// A read model fed one decoded event at a time.
pub trait EventProjection: Send + Sync + 'static {
    /// The aggregate's event type, decoded from the payload.
    type Event: DomainEvent + DeserializeOwned;
    /// Scratch space for one page (batched writes); flushed by [`EventProjection::finish`].
    type Page: Default + Send;

    /// Stable name; the checkpoint's key.
    const NAME: &'static str;
    /// The stream type whose events this projection reads; others are skipped.
    const AGGREGATE_TYPE: &'static str;

    fn apply<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        stored: &'a StoredEvent,
        event: Self::Event,
        page: &'a mut Self::Page,
    ) -> BoxFuture<'a, Result<(), ProjectionError>>;

    /// Writes what the page batched. The default has nothing to write.
    fn finish<'a>(
        &'a self,
        _tx: &'a mut PgConnection,
        _page: &'a mut Self::Page,
    ) -> BoxFuture<'a, Result<(), ProjectionError>> {
        Box::pin(async { Ok(()) })
    }
}

/// Runs an [`EventProjection`] as a [`Projection`].
pub struct Adapter<P>(pub P);

impl<P: EventProjection> Projection for Adapter<P> {
    fn name(&self) -> &'static str {
        P::NAME
    }

    fn apply<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        events: &'a [StoredEvent],
    ) -> BoxFuture<'a, Result<(), ProjectionError>> {
        Box::pin(async move {
            let mut page = P::Page::default();
            for stored in events {
                if stored.stream.aggregate_type != P::AGGREGATE_TYPE {
                    continue;
                }
                let event: P::Event = serde_json::from_value(stored.payload.clone())
                    .map_err(|e| ProjectionError::event(stored, e))?;
                self.0.apply(tx, stored, event, &mut page).await?;
            }
            self.0.finish(tx, &mut page).await
        })
    }
}
