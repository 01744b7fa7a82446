//! Bringing the gateway up and down: database (given or embedded), migrations, projections,
//! the HTTP server, and a graceful shutdown that lets in-flight requests finish.

use std::future::Future;
use std::sync::Arc;

use anyhow::Context;
use eventstore::EventStore;
use eventstore::sealing::Sealer;
use projections::{Adapter, Projection, ProjectionHandle, RunnerConfig};
use secrecy::ExposeSecret;
use sqlx::PgPool;
use sqlx::postgres::PgConnectOptions;
use tokio::net::TcpListener;

use crate::config::Config;
use crate::embedded::EmbeddedPostgres;
use crate::state::AppState;

/// The database the gateway runs on, and the embedded cluster behind it if there is one.
pub struct Database {
    pub pool: PgPool,
    pub connect: PgConnectOptions,
    embedded: Option<EmbeddedPostgres>,
}

impl Database {
    /// Connects to `DATABASE_URL`, or starts the embedded cluster under `DATA_DIR`.
    pub async fn open(config: &Config) -> anyhow::Result<Self> {
        let (url, embedded) = match &config.database_url {
            Some(url) => (url.expose_secret().to_string(), None),
            None => {
                let cluster = EmbeddedPostgres::start(&config.data_dir)
                    .await
                    .context("starting the embedded Postgres cluster")?;
                (cluster.database_url(), Some(cluster))
            }
        };
        let connect: PgConnectOptions =
            url.parse().context("DATABASE_URL is not a Postgres URL")?;
        let pool = match eventstore::connect(connect.clone(), 16).await {
            Ok(pool) => pool,
            Err(e) => {
                if let Some(cluster) = embedded {
                    let _ = cluster.stop().await;
                }
                return Err(e).context("connecting to Postgres");
            }
        };
        Ok(Self {
            pool,
            connect,
            embedded,
        })
    }

    pub fn is_embedded(&self) -> bool {
        self.embedded.is_some()
    }

    /// Applies pending migrations (see [`crate::migrate`]), then makes sure the event log's
    /// epoch belongs to this cluster: every command that migrates (`serve`, `migrate`,
    /// `admin create`) may append next, and on a database that moved to another cluster
    /// (restore, promoted standby) new events must open a new epoch, or they would sort
    /// inside the old log (ADR 0008).
    pub async fn migrate(&self) -> anyhow::Result<()> {
        crate::migrate::apply(&self.connect, &crate::MIGRATOR).await?;
        EventStore::new(self.pool.clone())
            .check_epoch()
            .await
            .context("checking the event log's epoch")?;
        Ok(())
    }

    /// Closes the pool and stops the embedded cluster, if any.
    pub async fn close(self) -> anyhow::Result<()> {
        self.pool.close().await;
        if let Some(cluster) = self.embedded {
            cluster.stop().await?;
        }
        Ok(())
    }
}

/// The read models this gateway keeps up to date.
fn projections(sealer: &Sealer) -> Vec<Arc<dyn Projection>> {
    let mut all = Vec::new();
    all.extend(crate::auth::projections());
    all.push(
        Arc::new(projections::leads::LeadsProjection::new(sealer.clone())) as Arc<dyn Projection>,
    );
    all.push(Arc::new(Adapter(projections::plans::PlansProjection)));
    all.push(Arc::new(Adapter(projections::licenses::LicensesProjection)));
    all.push(Arc::new(Adapter(
        projections::licenses::LicenseMailProjection,
    )));
    all
}

/// Runs the gateway on `listener` until `shutdown` resolves, then drains requests, stops the
/// projections, and closes the database.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    crate::metrics::handle();
    // A malformed SMTP_URL / MAIL_FROM is refused before anything starts.
    crate::integrations::mail::Mailer::from_config(
        config.smtp_url.as_ref().map(|u| u.expose_secret()),
        config.mail_from.as_deref(),
    )
    .context("SMTP_URL / MAIL_FROM")?;
    let database = Database::open(&config).await?;
    if let Err(e) = database.migrate().await {
        let _ = database.close().await;
        return Err(e);
    }
    let store = EventStore::new(database.pool.clone());
    let sealer = Sealer::new(
        database.pool.clone(),
        *config.encryption_key.expose_secret(),
    );
    let handles: Vec<ProjectionHandle> = projections(&sealer)
        .into_iter()
        .map(|p| {
            projections::spawn(
                p,
                store.clone(),
                database.connect.clone(),
                RunnerConfig::default(),
            )
        })
        .collect();
    let state = AppState::new(config, database.pool.clone(), store, sealer, handles);
    let started = match crate::auth::bootstrap(&state).await {
        Ok(()) => match crate::licenses::plans::ensure_default_plans(&state).await {
            Ok(()) => crate::live::start(&state)
                .await
                .context("starting the live feed"),
            Err(e) => Err(e),
        },
        Err(e) => Err(e.context("creating the bootstrap admin")),
    };
    if let Err(e) = started {
        for handle in state.projections.iter() {
            handle.stop().await;
        }
        drop(state);
        let _ = database.close().await;
        return Err(e);
    }
    let address = listener.local_addr()?;
    tracing::info!(%address, embedded = database.is_embedded(), "gateway listening");
    let housekeeping = tokio::spawn(housekeeping(state.clone()));
    let mail_worker = tokio::spawn(crate::licenses::mail::run_worker(state.licenses.clone()));
    let activity_writer = {
        let state = state.clone();
        tokio::spawn(async move { state.licenses.activity.run_writer(&state.pool).await })
    };
    let served = crate::http::server::serve(
        listener,
        crate::http::app(state.clone()),
        state.config.http_idle_timeout,
        shutdown,
    )
    .await;
    tracing::info!("shutting down");
    housekeeping.abort();
    mail_worker.abort();
    state.licenses.activity.stop();
    let _ = activity_writer.await;
    // First the feed (it waits on the projections) and with it every admin socket.
    state.live.stop().await;
    for handle in state.projections.iter() {
        handle.stop().await;
    }
    drop(state);
    database.close().await?;
    served.context("serving HTTP")
}

/// Periodic work that needs no trigger: completing lead conversions a crash left half-done
/// (at start, then every 10 minutes) and forgetting expired idempotency keys.
async fn housekeeping(state: AppState) {
    let mut every = tokio::time::interval(std::time::Duration::from_secs(600));
    loop {
        every.tick().await;
        if let Err(e) = state.licenses.complete_conversions().await {
            tracing::warn!(error = %e, "completing lead conversions failed");
        }
        match crate::idempotency::purge_expired(&state.pool).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(keys = n, "expired idempotency keys forgotten"),
            Err(e) => tracing::warn!(error = %e, "purging expired idempotency keys failed"),
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
}

#[cfg(test)]
mod tests {
    /// Compile-time guard: the server future must be spawnable (sqlx executor calls can make
    /// it non-`Send` through rust-lang/rust#102211; tests and `main` both spawn it).
    #[expect(dead_code, reason = "checked by the compiler only")]
    fn run_is_spawnable(config: crate::config::Config, listener: tokio::net::TcpListener) {
        tokio::spawn(super::run(config, listener, async {}));
    }
}
