//! What every handler can reach: configuration, the database, the store, the projections.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use eventstore::sealing::Sealer;
use eventstore::{CommandHandler, Cursor, EventStore};
use projections::{ProjectionHandle, ProjectionState};
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::config::Config;
use crate::error::AppError;
use crate::leads::LeadService;
use crate::live::LiveFeed;
use crate::ratelimit::KeyedLimiter;

/// SPEC §3: landing submissions per client IP and minute.
const LANDING_PER_MINUTE: u32 = 10;

/// How far (in events) a projection may trail the log and the gateway still call itself
/// ready.
const READY_MAX_LAG_EVENTS: i64 = 10_000;
/// How long a handler waits for its own write to show in a read model.
pub const READ_YOUR_WRITES_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub pool: PgPool,
    pub store: EventStore,
    pub projections: Arc<Vec<ProjectionHandle>>,
    /// Admin access: token keys, admin-secret digest, rate-limit counters.
    pub auth: Arc<crate::auth::AuthRuntime>,
    /// Personal data sealing (crypto-shredding) and secrets at rest.
    pub sealer: Sealer,
    pub leads: Arc<LeadService>,
    pub licenses: Arc<crate::licenses::LicenseService>,
    /// 10 landing submissions per minute per client IP (SPEC §3), per instance.
    pub landing_limiter: Arc<KeyedLimiter<IpAddr>>,
    /// The live admin feed (`/ws/admin`); `startup::run` starts it.
    pub live: Arc<LiveFeed>,
}

pub struct Readiness {
    pub ready: bool,
    pub checks: Value,
}

impl AppState {
    pub fn new(
        config: Config,
        pool: PgPool,
        store: EventStore,
        sealer: Sealer,
        projections: Vec<ProjectionHandle>,
    ) -> Self {
        let leads = LeadService::new(
            pool.clone(),
            sealer.clone(),
            CommandHandler::new(store.clone(), ()),
        );
        // `startup::run` refuses a malformed SMTP_URL before it gets here.
        let mailer = crate::integrations::mail::Mailer::from_config(
            config.smtp_url.as_ref().map(|u| u.expose_secret()),
            config.mail_from.as_deref(),
        )
        .unwrap_or_else(|e| {
            tracing::error!(error = %e, "SMTP_URL / MAIL_FROM unusable; no license e-mails");
            None
        });
        let licenses = crate::licenses::LicenseService::new(
            pool.clone(),
            store.clone(),
            sealer.clone(),
            crate::integrations::telegram::Telegram::new(
                &config.telegram_api_base,
                crate::licenses::TELEGRAM_WAIT,
            ),
            mailer,
            config.public_base_url.clone(),
        );
        AppState {
            licenses: Arc::new(licenses),
            auth: Arc::new(crate::auth::AuthRuntime::new(&config)),
            config: Arc::new(config),
            pool,
            store,
            projections: Arc::new(projections),
            sealer,
            leads: Arc::new(leads),
            landing_limiter: Arc::new(KeyedLimiter::new(
                LANDING_PER_MINUTE,
                Duration::from_secs(60),
            )),
            live: Arc::new(LiveFeed::new(crate::live::CHANNEL_CAPACITY)),
        }
    }

    /// The running projection called `name`.
    pub fn projection(&self, name: &str) -> Option<&ProjectionHandle> {
        self.projections.iter().find(|p| p.name() == name)
    }

    /// Waits until projection `name` includes the last event of `stream`: for a lookup
    /// that found nothing and may only be early (a lead submitted a moment ago). `false`
    /// when the stream has no events at all (nothing to wait for: it does not exist).
    pub async fn catch_up_with(
        &self,
        name: &str,
        stream: &eventstore::StreamId,
    ) -> Result<bool, AppError> {
        let Some(last) = self.store.read_stream(stream).await?.pop() else {
            return Ok(false);
        };
        self.wait_for(name, last.cursor).await?;
        Ok(true)
    }

    /// Waits until projection `name` includes the event at `cursor`, so the response can be
    /// read from it (read-your-writes).
    pub async fn wait_for(&self, name: &str, cursor: Cursor) -> Result<(), AppError> {
        let projection = self
            .projection(name)
            .ok_or_else(|| AppError::internal(format!("no projection {name}")))?;
        projection
            .wait_for(cursor, READ_YOUR_WRITES_TIMEOUT)
            .await
            .map_err(AppError::internal)
    }

    /// [`AppState::wait_for`] the `licenses` read model to include `cursor`, an event of
    /// license `license_id` written by this instance, then reloads the license in the verify
    /// view: the next verify here reads the change.
    pub async fn license_written(
        &self,
        license_id: uuid::Uuid,
        cursor: Cursor,
    ) -> Result<(), AppError> {
        self.wait_for(projections::licenses::NAME, cursor).await?;
        self.licenses
            .view
            .reload_or_warn(&self.pool, Some(&[license_id]))
            .await;
        Ok(())
    }

    pub async fn readiness(&self) -> Readiness {
        let mut ready = true;
        let database = match sqlx::query_scalar::<_, i32>("SELECT 1")
            .fetch_one(&self.pool)
            .await
        {
            Ok(_) => json!({"ok": true}),
            Err(e) => {
                ready = false;
                tracing::warn!(error = %e, "readiness: database unreachable");
                json!({"ok": false})
            }
        };
        let expected = crate::MIGRATOR
            .iter()
            .filter(|m| m.migration_type.is_up_migration())
            .count() as i64;
        let applied: i64 =
            sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
                .fetch_one(&self.pool)
                .await
                .unwrap_or(-1);
        let migrations_ok = applied == expected;
        ready &= migrations_ok;
        let mut projections = Vec::new();
        for handle in self.projections.iter() {
            let (ok, detail) = self.projection_readiness(handle).await;
            ready &= ok;
            projections.push(detail);
        }
        let live = self.live.status();
        ready &= live.ok;
        Readiness {
            ready,
            checks: json!({
                "database": database,
                "migrations": {"ok": migrations_ok, "applied": applied, "expected": expected},
                "projections": projections,
                "liveFeed": {
                    "ok": live.ok,
                    "cursor": live.position,
                    "subscriptions": live.subscriptions,
                    "sockets": live.sockets,
                },
                // Informative: verify works either way (from the read model while the view
                // is not followed), only slower.
                // (Its size is on /metrics: a device count is no business of a load balancer.)
                "verifyView": {"following": self.licenses.view.is_following()},
            }),
        }
    }

    async fn projection_readiness(&self, handle: &ProjectionHandle) -> (bool, Value) {
        let Ok(lag) = projections::lag(&self.pool, handle.name(), READY_MAX_LAG_EVENTS + 1).await
        else {
            return (false, json!({"name": handle.name(), "ok": false}));
        };
        let failed = lag.failed() || matches!(handle.status().state, ProjectionState::Failed(_));
        let ok = !failed && lag.events <= READY_MAX_LAG_EVENTS;
        let status = lag.status.as_deref().unwrap_or("starting");
        (
            ok,
            json!({"name": handle.name(), "ok": ok, "status": status, "lagEvents": lag.events}),
        )
    }
}
