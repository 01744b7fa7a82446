//! Running `cqrs-es` aggregates against the store: load, decide, append, retry on conflict.

use cqrs_es::event_sink::EventSink;
use cqrs_es::persist::{EventUpcaster, SerializedEvent};
use cqrs_es::{Aggregate, DomainEvent};

use crate::{Cursor, EventStore, Metadata, NewEvent, StoreError, StoredEvent, StreamId};

/// How often a command is decided again after losing a race before the caller gets
/// [`CommandError::Conflict`] (SPEC §8: 409 `CONCURRENT_MODIFICATION`).
pub const DEFAULT_MAX_ATTEMPTS: usize = 8;
/// How often the very same append is retried after a transient database error.
const TRANSIENT_RETRIES: usize = 3;

#[derive(Debug, thiserror::Error)]
pub enum CommandError<E: std::error::Error> {
    /// The aggregate refused the command.
    #[error(transparent)]
    Domain(E),
    /// Still losing races after the bounded number of attempts.
    #[error("concurrent modification of {0}")]
    Conflict(StreamId),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The result of a successful command.
#[derive(Debug)]
pub struct CommandOutcome<A: Aggregate> {
    /// The aggregate after the new events.
    pub aggregate: A,
    /// The stream version after the new events.
    pub version: u64,
    /// The domain events the command emitted (empty: nothing changed).
    pub events: Vec<A::Event>,
    /// The stored events, with their cursors.
    pub stored: Vec<StoredEvent>,
}

impl<A: Aggregate> CommandOutcome<A> {
    /// Cursor of the last new event, to wait for read models (read-your-writes).
    pub fn cursor(&self) -> Option<Cursor> {
        self.stored.last().map(|e| e.cursor)
    }
}

/// Executes commands of one aggregate type.
pub struct CommandHandler<A: Aggregate> {
    store: EventStore,
    services: A::Services,
    upcasters: Vec<Box<dyn EventUpcaster>>,
    max_attempts: usize,
}

impl<A> CommandHandler<A>
where
    A: Aggregate,
    A::Command: Clone,
{
    pub fn new(store: EventStore, services: A::Services) -> Self {
        Self {
            store,
            services,
            upcasters: Vec::new(),
            max_attempts: DEFAULT_MAX_ATTEMPTS,
        }
    }

    /// Upcasters turn older stored versions of an event into the current shape on load.
    pub fn with_upcasters(mut self, upcasters: Vec<Box<dyn EventUpcaster>>) -> Self {
        self.upcasters = upcasters;
        self
    }

    pub fn with_max_attempts(mut self, attempts: usize) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    pub fn store(&self) -> &EventStore {
        &self.store
    }

    pub fn stream(aggregate_id: &str) -> StreamId {
        StreamId::new(A::TYPE, aggregate_id)
    }

    /// Loads the aggregate and its version.
    pub async fn load(&self, aggregate_id: &str) -> Result<(A, u64), StoreError> {
        let stream = Self::stream(aggregate_id);
        let mut aggregate = A::default();
        let mut version = 0;
        for stored in self.store.read_stream(&stream).await? {
            version = stored.sequence;
            aggregate.apply(self.decode(stored)?);
        }
        Ok((aggregate, version))
    }

    fn decode(&self, stored: StoredEvent) -> Result<A::Event, StoreError> {
        let serialized = SerializedEvent::new(
            stored.stream.aggregate_id,
            stored.sequence as usize,
            stored.stream.aggregate_type,
            stored.event_type,
            stored.event_version,
            stored.payload,
            serde_json::Value::Null,
        );
        let upcast = self.upcasters.iter().fold(serialized, |event, upcaster| {
            if upcaster.can_upcast(&event.event_type, &event.event_version) {
                upcaster.upcast(event)
            } else {
                event
            }
        });
        serde_json::from_value(upcast.payload).map_err(|e| {
            StoreError::Decode(format!(
                "{} v{} at {}/{}#{}: {e}",
                upcast.event_type,
                upcast.event_version,
                upcast.aggregate_type,
                upcast.aggregate_id,
                upcast.sequence
            ))
        })
    }

    /// Loads, lets the aggregate decide, and appends its events at the loaded version. On a
    /// conflict the whole cycle runs again, up to the attempt limit.
    pub async fn execute(
        &self,
        aggregate_id: &str,
        command: A::Command,
        metadata: &Metadata,
    ) -> Result<CommandOutcome<A>, CommandError<A::Error>> {
        let stream = Self::stream(aggregate_id);
        for _ in 0..self.max_attempts {
            let (mut aggregate, version) = self.load(aggregate_id).await?;
            let sink = EventSink::default();
            aggregate
                .handle(command.clone(), &self.services, &sink)
                .await
                .map_err(CommandError::Domain)?;
            let events = sink.collect().await;
            let new_events = self.to_new_events(&events, metadata)?;
            match self.append_retrying(&stream, version, &new_events).await {
                Ok(outcome) => {
                    return Ok(CommandOutcome {
                        aggregate,
                        version: outcome.version,
                        events,
                        stored: outcome.events,
                    });
                }
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(CommandError::Conflict(stream))
    }

    /// [`CommandHandler::execute`] for an aggregate id that was just minted: decides on a
    /// fresh aggregate at version 0 without reading the (surely empty) stream. If the stream
    /// exists after all, the append conflicts and the ordinary load-decide-append path runs.
    pub async fn execute_new(
        &self,
        aggregate_id: &str,
        command: A::Command,
        metadata: &Metadata,
    ) -> Result<CommandOutcome<A>, CommandError<A::Error>> {
        let stream = Self::stream(aggregate_id);
        let mut aggregate = A::default();
        let sink = EventSink::default();
        aggregate
            .handle(command.clone(), &self.services, &sink)
            .await
            .map_err(CommandError::Domain)?;
        let events = sink.collect().await;
        let new_events = self.to_new_events(&events, metadata)?;
        match self.append_retrying(&stream, 0, &new_events).await {
            Ok(outcome) => Ok(CommandOutcome {
                aggregate,
                version: outcome.version,
                events,
                stored: outcome.events,
            }),
            Err(StoreError::Conflict { .. }) => self.execute(aggregate_id, command, metadata).await,
            Err(e) => Err(e.into()),
        }
    }

    /// [`CommandHandler::execute_new`] inside the caller's transaction: decides on a fresh
    /// aggregate and appends with [`EventStore::append_in`], once. A conflict (the stream
    /// exists after all) is returned, not retried, since the transaction is the caller's to
    /// roll back; after committing, the caller calls [`EventStore::notify_appended`].
    pub async fn execute_new_in(
        &self,
        conn: &mut sqlx::PgConnection,
        aggregate_id: &str,
        command: A::Command,
        metadata: &Metadata,
    ) -> Result<CommandOutcome<A>, CommandError<A::Error>> {
        let stream = Self::stream(aggregate_id);
        let mut aggregate = A::default();
        let sink = EventSink::default();
        aggregate
            .handle(command, &self.services, &sink)
            .await
            .map_err(CommandError::Domain)?;
        let events = sink.collect().await;
        let new_events = self.to_new_events(&events, metadata)?;
        match self.store.append_in(conn, &stream, 0, &new_events).await {
            Ok(outcome) => Ok(CommandOutcome {
                aggregate,
                version: outcome.version,
                events,
                stored: outcome.events,
            }),
            Err(StoreError::Conflict { .. }) => Err(CommandError::Conflict(stream)),
            Err(e) => Err(e.into()),
        }
    }

    fn to_new_events(
        &self,
        events: &[A::Event],
        metadata: &Metadata,
    ) -> Result<Vec<NewEvent>, StoreError> {
        events
            .iter()
            .map(|event| {
                Ok(NewEvent::new(
                    event.event_type(),
                    event.event_version(),
                    serde_json::to_value(event)?,
                    metadata.clone(),
                ))
            })
            .collect::<Result<Vec<_>, serde_json::Error>>()
            .map_err(StoreError::from)
    }

    /// The same append (same event ids) again after a transient error: if the first try did
    /// commit, the store answers with its original result.
    async fn append_retrying(
        &self,
        stream: &StreamId,
        version: u64,
        events: &[NewEvent],
    ) -> Result<crate::AppendOutcome, StoreError> {
        let mut tries = 0;
        loop {
            match self.store.append(stream, version, events).await {
                Err(e) if e.is_transient() && tries < TRANSIENT_RETRIES => {
                    tries += 1;
                    tracing::warn!(error = %e, stream = %stream, "append failed, retrying the same events");
                    tokio::time::sleep(std::time::Duration::from_millis(20 << tries)).await;
                }
                other => return other,
            }
        }
    }
}
