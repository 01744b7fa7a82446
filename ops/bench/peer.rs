//! The peer: the same command workload through `postgres-es` + `cqrs-es`, the crates the
//! product was designed on, beside our `CommandHandler` and the raw INSERT, in one run.
//!
//! Workload: create a lead (`LeadCommand::Create` on a new aggregate id, one `LeadCreated`
//! event of the size the landing form produces) with request metadata, decided by the real
//! `Lead` aggregate. Variants:
//!
//! * `store create`: `CommandHandler::execute_new`, the product's creation path (the id was
//!   just minted, so nothing is loaded): one append statement.
//! * `store cmd`: `CommandHandler::execute`: load (one SELECT), decide, one append statement.
//! * `postgres-es`: `CqrsFramework::execute_with_metadata` over the pool its documentation
//!   builds (`default_postgress_pool`: `PgPoolOptions::new().max_connections(10)`, so a
//!   liveness ping before every acquire): load SELECT, BEGIN, INSERT, COMMIT.
//! * `pg-es our pool`: the same over the bench's pool (`eventstore::connect`, no ping), so that
//!   the difference to `store cmd` is the command path alone.
//!
//! The peer writes to its own tables (`pges_events`, `pges_snapshots`, its published schema)
//! in the event store phases' scratch database.

use std::collections::HashMap;
use std::sync::Arc;

use aggregates::lead::{Lead, LeadCommand, LeadSource, SealedText};
use anyhow::{Result, anyhow};
use cqrs_es::CqrsFramework;
use cqrs_es::persist::PersistedEventStore;
use eventstore::{CommandHandler, Metadata};
use postgres_es::PostgresEventRepository;
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

/// The peer's tables, as `postgres-es` 0.5 publishes them (`db/init.sql`), renamed so they
/// sit beside our `events`.
const PEER_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS pges_events (
    aggregate_type text NOT NULL,
    aggregate_id   text NOT NULL,
    sequence       bigint CHECK (sequence >= 0) NOT NULL,
    event_type     text NOT NULL,
    event_version  text NOT NULL,
    payload        json NOT NULL,
    metadata       json NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id, sequence)
);
CREATE TABLE IF NOT EXISTS pges_snapshots (
    aggregate_type   text NOT NULL,
    aggregate_id     text NOT NULL,
    last_sequence    bigint CHECK (last_sequence >= 0) NOT NULL,
    current_snapshot bigint CHECK (current_snapshot >= 0) NOT NULL,
    payload          json NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id, last_sequence)
);
";

type PeerCqrs = CqrsFramework<Lead, PersistedEventStore<PostgresEventRepository, Lead>>;

/// Our command path and the peer's, the peer on two pools.
pub(crate) struct Peer {
    ours: CommandHandler<Lead>,
    theirs: PeerCqrs,
    theirs_own_pool: PeerCqrs,
}

impl Peer {
    pub(crate) async fn new(
        pool: &PgPool,
        db_opts: &PgConnectOptions,
        store: &eventstore::EventStore,
    ) -> Result<Arc<Self>> {
        sqlx::raw_sql(PEER_SCHEMA).execute(pool).await?;
        let framework = |pool: PgPool| {
            let repo =
                PostgresEventRepository::new(pool).with_tables("pges_events", "pges_snapshots");
            CqrsFramework::new(PersistedEventStore::new_event_store(repo), vec![], ())
        };
        // `postgres_es::default_postgress_pool`, on the same server options as ours.
        let own_pool = PgPoolOptions::new()
            .max_connections(10)
            .connect_with(db_opts.clone())
            .await?;
        Ok(Arc::new(Self {
            ours: CommandHandler::new(store.clone(), ()),
            theirs: framework(pool.clone()),
            theirs_own_pool: framework(own_pool),
        }))
    }

    /// One lead created through our `CommandHandler`: `execute_new` (no load) when `fresh`,
    /// else `execute`.
    pub(crate) async fn ours(
        &self,
        aggregate_id: &str,
        metadata: &Metadata,
        fresh: bool,
    ) -> Result<()> {
        let outcome = if fresh {
            self.ours
                .execute_new(aggregate_id, create_command(), metadata)
                .await?
        } else {
            self.ours
                .execute(aggregate_id, create_command(), metadata)
                .await?
        };
        if outcome.stored.len() != 1 {
            return Err(anyhow!("store cmd wrote {} events", outcome.stored.len()));
        }
        Ok(())
    }

    /// The same through `postgres-es` + `cqrs-es`, on its documented pool or on ours.
    pub(crate) async fn theirs(
        &self,
        aggregate_id: &str,
        metadata: &Metadata,
        own_pool: bool,
    ) -> Result<()> {
        let mut meta = HashMap::new();
        for (key, value) in [
            ("actor", &metadata.actor),
            ("userAgent", &metadata.user_agent),
            ("correlationId", &metadata.correlation_id),
        ] {
            if let Some(value) = value {
                meta.insert(key.to_string(), value.clone());
            }
        }
        let framework = if own_pool {
            &self.theirs_own_pool
        } else {
            &self.theirs
        };
        framework
            .execute_with_metadata(aggregate_id, create_command(), meta)
            .await
            .map_err(|e| anyhow!("postgres-es: {e}"))
    }
}

/// A landing creation as the gateway issues it: a sealed personal value of the usual size
/// (the aggregate does not open it), source, UTM, the submission id.
fn create_command() -> LeadCommand {
    LeadCommand::Create {
        personal: SealedText(format!(
            "v1.0123abcd.{}",
            "Q".repeat(420) // ~ a sealed name, e-mail, phone, company, message, ip, agent
        )),
        source: LeadSource::LandingPage,
        utm_source: Some("google".into()),
        utm_campaign: Some("spring-2026".into()),
        submission_id: Some(uuid::Uuid::new_v4()),
    }
}
