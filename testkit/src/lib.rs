//! Test databases: each `#[testkit::test]` gets a Postgres database of its own, made for it on
//! the server in `DATABASE_URL` and dropped after it, whatever the outcome.
//!
//! It replaces `#[sqlx::test]`, whose database names are a hash of the test's path: the same
//! test started from two checkouts (or two runs of one) against one server got the same name,
//! and sqlx 0.8 drops that name before creating it (`do_cleanup` in sqlx-postgres's
//! `testing/mod.rs`), so one run dropped the other's database under it or failed with
//! "database … is being accessed by other users"; it also kept the database of every failed
//! test. Here a name is unique per run and per test, `gwtest_<unix seconds>_<16 hex>`, and
//! nothing is shared between runs but the prefix:
//!
//! * the database is created with `CREATE DATABASE` on a connection to `DATABASE_URL`, the
//!   migrations (if any) are applied, and the test gets a pool on it;
//! * after the test, also after a panic, its runtime is shut down (ending what it spawned),
//!   and the database is dropped `WITH (FORCE)`; `TESTKIT_KEEP_DB=1` keeps it for a look and
//!   prints its name;
//! * the first test of a process drops `gwtest_` databases older than [`STALE_AFTER`] by the
//!   time in their name, left by killed runs; younger ones may belong to a run going on now
//!   and are never touched.
//!
//! The test body runs on a current-thread tokio runtime, as under `#[sqlx::test]` (tests that
//! capture their thread's logs rely on it).

use std::collections::hash_map::RandomState;
use std::future::Future;
use std::hash::BuildHasher;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, Executor, PgConnection, PgPool};

pub use testkit_macros::test;

/// What every test database's name starts with; nothing else on the server may use it.
pub const PREFIX: &str = "gwtest_";

/// Set to `1` to keep each test's database after the test (its name is printed).
pub const KEEP_ENV: &str = "TESTKIT_KEEP_DB";

/// Age past which a `gwtest_` database is taken for a killed run's and dropped. No test run
/// lasts this long (the suite takes minutes; nextest ends a hung test after three).
pub const STALE_AFTER: Duration = Duration::from_secs(6 * 60 * 60);

/// How long the test's pool may take to close after the body returned: a test that still
/// holds a connection is reported, not waited for (the drop ends the connection anyway).
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs one test: what `#[testkit::test]` expands to. `test_path` names the test in messages;
/// `migrations` are applied to the fresh database before `test` gets a pool on it.
///
/// Panics if `DATABASE_URL` is missing or the database cannot be made; a panic of the test is
/// resumed after its database is dropped.
pub fn run<F, Fut>(test_path: &str, migrations: Option<Migrator>, test: F) -> Fut::Output
where
    F: FnOnce(PgPool) -> Fut,
    Fut: Future,
{
    let server = server_options();
    let database = block_on(create(&server, migrations.as_ref()))
        .unwrap_or_else(|e| panic!("testkit: could not set up the database of {test_path}: {e}"));

    let outcome = catch_unwind(AssertUnwindSafe(|| {
        // Dropped at the end of this closure, also when unwinding: tasks the test spawned
        // (a gateway, a projection runner) stop before their database is dropped.
        let runtime = runtime();
        runtime.block_on(async {
            let pool = PgPoolOptions::new()
                // As under sqlx::test: a test needing more is doing too much at once.
                .max_connections(5)
                .idle_timeout(Some(Duration::from_secs(1)))
                .connect_with(server.clone().database(&database))
                .await
                .unwrap_or_else(|e| panic!("testkit: could not connect to {database}: {e}"));
            let output = test(pool.clone()).await;
            if tokio::time::timeout(CLOSE_TIMEOUT, pool.close())
                .await
                .is_err()
            {
                eprintln!("testkit: {test_path} held on to its pool after it returned");
            }
            output
        })
    }));

    if std::env::var(KEEP_ENV).is_ok_and(|v| v == "1") {
        eprintln!("testkit: kept database {database} of {test_path} ({KEEP_ENV}=1)");
    } else if let Err(e) = block_on(drop_database(&server, &database)) {
        // Not a failure of the test; a later run's sweep drops it once it is stale.
        eprintln!("testkit: could not drop database {database} of {test_path}: {e}");
    }

    match outcome {
        Ok(output) => output,
        Err(panic) => resume_unwind(panic),
    }
}

/// The server in `DATABASE_URL`; the database named there is only used to connect to.
fn server_options() -> PgConnectOptions {
    let url = std::env::var("DATABASE_URL").unwrap_or_else(|_| {
        panic!(
            "testkit: DATABASE_URL is not set; database tests need a Postgres server whose \
             user may create databases, e.g. `export \
             DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres` (README, Operations; \
             ops/test.sh sets it)"
        )
    });
    PgConnectOptions::from_str(&url)
        .unwrap_or_else(|e| panic!("testkit: DATABASE_URL is not a Postgres URL: {e}"))
}

/// A current-thread runtime, as `#[sqlx::test]` and `#[tokio::test]` use.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("testkit: could not start a tokio runtime")
}

/// Setup and teardown each get a runtime of their own: the test's is gone by teardown.
fn block_on<T>(future: impl Future<Output = T>) -> T {
    runtime().block_on(future)
}

/// Makes the test's database (after the process's first sweep) and applies `migrations`.
async fn create(
    server: &PgConnectOptions,
    migrations: Option<&Migrator>,
) -> Result<String, sqlx::Error> {
    let mut maintenance = PgConnection::connect_with(server).await?;
    static SWEPT: AtomicBool = AtomicBool::new(false);
    if !SWEPT.swap(true, Ordering::SeqCst) {
        sweep_stale(&mut maintenance).await;
    }
    let name = database_name(SystemTime::now());
    maintenance
        .execute(format!(r#"CREATE DATABASE "{name}""#).as_str())
        .await?;
    // Made: from here on an error must not lose the name, or the database would be left.
    let _ = maintenance.close().await;

    if let Some(migrator) = migrations {
        let applied = async {
            let mut conn = PgConnection::connect_with(&server.clone().database(&name)).await?;
            migrator.run(&mut conn).await?;
            conn.close().await
        }
        .await;
        if let Err(e) = applied {
            let _ = drop_database(server, &name).await;
            return Err(e);
        }
    }
    Ok(name)
}

async fn drop_database(server: &PgConnectOptions, name: &str) -> Result<(), sqlx::Error> {
    let mut maintenance = PgConnection::connect_with(server).await?;
    // FORCE ends connections still open (a task that outlived its test, a backend not yet
    // gone after its client closed); without it the drop fails with "being accessed by
    // other users".
    maintenance.execute(drop_statement(name).as_str()).await?;
    let _ = maintenance.close().await;
    Ok(())
}

fn drop_statement(name: &str) -> String {
    format!(r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#)
}

/// Drops the test databases of runs that ended without dropping them (killed, or kept with
/// [`KEEP_ENV`]) once they are older than [`STALE_AFTER`]. Errors are reported, not raised:
/// another process may be sweeping the same names.
async fn sweep_stale(maintenance: &mut PgConnection) {
    let names: Vec<String> =
        match sqlx::query_scalar(r"SELECT datname FROM pg_database WHERE datname LIKE 'gwtest\_%'")
            .fetch_all(&mut *maintenance)
            .await
        {
            Ok(names) => names,
            Err(e) => {
                eprintln!("testkit: could not list old test databases: {e}");
                return;
            }
        };
    let now = SystemTime::now();
    for name in names.iter().filter(|n| is_stale(n, now)) {
        if let Err(e) = maintenance.execute(drop_statement(name).as_str()).await {
            eprintln!("testkit: could not drop stale test database {name}: {e}");
        }
    }
}

/// `gwtest_<unix seconds>_<16 hex>`: the time leads so a sweep can tell a killed run's
/// database from one in use; the hex, drawn from the process's random hash keys, its pid, a
/// counter and the clock's nanoseconds, keeps two runs started in the same second apart.
/// 34 bytes, well within Postgres's 63.
fn database_name(now: SystemTime) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let since_epoch = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let random = RandomState::new().hash_one((
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        since_epoch.as_nanos(),
    ));
    format!("{PREFIX}{}_{random:016x}", since_epoch.as_secs())
}

/// When a name of [`database_name`]'s form was made; `None` for any other name, which is
/// then never dropped.
fn created_at(name: &str) -> Option<SystemTime> {
    let (seconds, hex) = name.strip_prefix(PREFIX)?.split_once('_')?;
    let well_formed = !seconds.is_empty()
        && seconds.bytes().all(|b| b.is_ascii_digit())
        && hex.len() == 16
        && hex.bytes().all(|b| b.is_ascii_hexdigit());
    if !well_formed {
        return None;
    }
    Some(UNIX_EPOCH + Duration::from_secs(seconds.parse().ok()?))
}

fn is_stale(name: &str, now: SystemTime) -> bool {
    created_at(name)
        .and_then(|created| now.duration_since(created).ok())
        .is_some_and(|age| age > STALE_AFTER)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    #[test]
    fn names_are_unique_and_read_back_their_time() {
        let now = SystemTime::now();
        let a = super::database_name(now);
        let b = super::database_name(now);
        assert_ne!(a, b);
        assert!(a.len() <= 63, "{a}");
        let created = super::created_at(&a).unwrap();
        assert!(now.duration_since(created).unwrap() < Duration::from_secs(1));
    }

    #[test]
    fn only_old_names_of_our_form_are_stale() {
        let now = SystemTime::now();
        let hour = Duration::from_secs(3600);
        let old = super::database_name(now - 7 * hour);
        let young = super::database_name(now - 5 * hour);
        assert!(super::is_stale(&old, now));
        assert!(!super::is_stale(&young, now));
        // A clock behind the name's (another machine's run) is young, not stale.
        assert!(!super::is_stale(&super::database_name(now + hour), now));
        for other in [
            "gwtest_1_zz",
            "gwtest_x_0123456789abcdef",
            "gwtest__0123456789abcdef",
            "gwtest_1_0123456789abcdef_more",
            "postgres",
            "_sqlx_test_abc",
        ] {
            assert!(!super::is_stale(other, now), "{other}");
        }
    }
}
