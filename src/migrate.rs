//! Applying the schema migrations: on a session of their own, one INFO line per migration.
//!
//! sqlx logs every statement that takes longer than a second as a WARN with the statement's
//! full text. A migration is one statement as far as that logger knows, so a first start on a
//! busy machine greeted the user with a whole migration file at WARN level. The migrations
//! therefore run on a separate connection whose slow-statement logging is off, and say what
//! they did here instead (name and time). The pool's connections keep sqlx's defaults, so a
//! slow query of the running gateway is still reported.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context;
use log::LevelFilter;
use sqlx::migrate::{Migrate, MigrateError, Migrator};
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{ConnectOptions, Connection};

/// Applies the pending migrations of `migrator` to the database `connect` points at.
///
/// The same steps as sqlx's `Migrator::run` (0.8): advisory lock (so several instances may
/// start together), bookkeeping table, refusal of a dirty or modified history, then every
/// pending up-migration in order, each in its own transaction. Always locks and never ignores
/// applied migrations missing from `migrator`, which is how the gateway's [`crate::MIGRATOR`]
/// is configured.
pub async fn apply(connect: &PgConnectOptions, migrator: &Migrator) -> anyhow::Result<()> {
    // No statement_timeout either (the pool sets one for request statements): a migration may
    // legitimately rewrite a table for longer than any request should take.
    let options = connect
        .clone()
        .log_slow_statements(LevelFilter::Off, Duration::ZERO);
    let mut conn = PgConnection::connect_with(&options)
        .await
        .context("connecting to Postgres to apply migrations")?;
    let result = apply_pending(&mut conn, migrator).await;
    // Ending the session also releases the advisory lock when a migration failed midway.
    let _ = conn.close().await;
    result.context("applying migrations")
}

async fn apply_pending(conn: &mut PgConnection, migrator: &Migrator) -> Result<(), MigrateError> {
    conn.lock().await?;
    conn.ensure_migrations_table().await?;
    if let Some(version) = conn.dirty_version().await? {
        return Err(MigrateError::Dirty(version));
    }
    let applied: HashMap<i64, Vec<u8>> = conn
        .list_applied_migrations()
        .await?
        .into_iter()
        .map(|m| (m.version, m.checksum.into_owned()))
        .collect();
    for version in applied.keys() {
        if !migrator.iter().any(|m| m.version == *version) {
            return Err(MigrateError::VersionMissing(*version));
        }
    }
    for migration in migrator
        .iter()
        .filter(|m| !m.migration_type.is_down_migration())
    {
        match applied.get(&migration.version) {
            Some(checksum) if *checksum != *migration.checksum => {
                return Err(MigrateError::VersionMismatch(migration.version));
            }
            Some(_) => {}
            None => {
                let took = conn.apply(migration).await?;
                // The file name it came from (`0001_event_store`), which is what one looks for.
                let name = format!(
                    "{:04}_{}",
                    migration.version,
                    migration.description.replace(' ', "_")
                );
                tracing::info!(migration = %name, took_ms = took.as_millis() as u64, "migration applied");
            }
        }
    }
    conn.unlock().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use sqlx::PgPool;

    use super::*;

    /// Everything the `tracing` subscriber installed by [`capture`] writes.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        fn text(&self) -> String {
            String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
        }
    }

    /// Logs of this thread at the gateway's default filter (`sqlx=warn`: slow statements show,
    /// ordinary statement logging does not). `testkit::test` runs on a current-thread runtime, so
    /// every event of the test body lands here.
    fn capture() -> (Captured, tracing::subscriber::DefaultGuard) {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("info,sqlx=warn"))
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        (captured, tracing::subscriber::set_default(subscriber))
    }

    /// A migrator over one migration that takes longer than sqlx's slow-statement threshold
    /// (one second) and whose text is recognisable in a log.
    async fn slow_migrator(dir: &std::path::Path) -> Migrator {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(
            dir.join("0001_slow_backfill.sql"),
            "CREATE TABLE backfilled (id int);\nINSERT INTO backfilled SELECT 1 FROM pg_sleep(1.2);\n",
        )
        .unwrap();
        Migrator::new(dir.to_path_buf()).await.unwrap()
    }

    #[testkit::test(migrations = false)]
    async fn a_slow_migration_logs_one_line_with_its_name_not_its_sql(pool: PgPool) {
        let dir = std::env::temp_dir().join(format!("gw-migrations-{}", uuid::Uuid::new_v4()));
        let migrator = slow_migrator(&dir).await;
        let (logs, _guard) = capture();

        apply(&pool.connect_options(), &migrator).await.unwrap();
        // A second run finds nothing pending and says nothing.
        apply(&pool.connect_options(), &migrator).await.unwrap();
        std::fs::remove_dir_all(&dir).unwrap();

        let text = logs.text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1, "one line for one migration: {text}");
        assert!(lines[0].contains(" INFO "), "{text}");
        assert!(lines[0].contains("migration=0001_slow_backfill"), "{text}");
        assert!(lines[0].contains("took_ms="), "{text}");
        assert!(!text.contains("pg_sleep"), "no SQL text in the log: {text}");
        assert!(!text.contains("slow statement"), "{text}");
        let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM backfilled")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(rows, 1, "the migration was applied once");
    }

    #[testkit::test(migrations = false)]
    async fn a_slow_query_on_the_pool_is_still_reported(pool: PgPool) {
        // The pool the gateway serves with, not testkit's.
        let pool = eventstore::connect((*pool.connect_options()).clone(), 1)
            .await
            .unwrap();
        let (logs, _guard) = capture();
        sqlx::query("SELECT pg_sleep(1.2)")
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
        let text = logs.text();
        assert!(
            text.contains("WARN") && text.contains("slow statement"),
            "{text}"
        );
    }
}
