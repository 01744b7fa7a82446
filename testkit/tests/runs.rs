//! Whole test runs against one server, as they happen: this binary starts copies of itself
//! (`std::env::current_exe`) running `child_reports_its_database`, the way two checkouts or
//! two `cargo nextest` runs start the same test, and looks at the server afterwards.

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sqlx::PgPool;
use tokio::process::Command;

/// A folder the child writes its database's name into (as an empty file of that name).
const REPORT_ENV: &str = "TESTKIT_CHILD_REPORT";
/// How many children meet in the report folder before any of them returns.
const MEET_ENV: &str = "TESTKIT_CHILD_MEET";
/// Set: the child panics after reporting.
const PANIC_ENV: &str = "TESTKIT_CHILD_PANIC";

const CHILD: &str = "child_reports_its_database";

async fn current_database(pool: &PgPool) -> String {
    sqlx::query_scalar("SELECT current_database()")
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn existing(pool: &PgPool, names: &[String]) -> Vec<String> {
    sqlx::query_scalar("SELECT datname::text FROM pg_database WHERE datname = ANY($1) ORDER BY 1")
        .bind(names)
        .fetch_all(pool)
        .await
        .unwrap()
}

/// The names in `dir` that end with `suffix`, without it.
fn reported(dir: &Path, suffix: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter_map(|n| n.strip_suffix(suffix).map(str::to_string))
        .collect();
    names.sort();
    names
}

/// Waits until `count` files ending in `suffix` are in `dir`.
async fn meet(dir: &Path, suffix: &str, count: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let names = reported(dir, suffix);
        if names.len() >= count {
            return names;
        }
        assert!(
            Instant::now() < deadline,
            "only {names:?} of {count} runs came"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Run alone, it checks that its pool is on a test database of its own. Started by the tests
/// below, it reports that database; with [`MEET_ENV`], every copy checks, while all of them
/// hold their databases, that all those databases exist, and only then do they return.
#[testkit::test]
async fn child_reports_its_database(pool: PgPool) {
    let name = current_database(&pool).await;
    assert!(name.starts_with(testkit::PREFIX), "{name}");
    let Ok(dir) = std::env::var(REPORT_ENV) else {
        return;
    };
    let dir = PathBuf::from(dir);
    std::fs::write(dir.join(format!("{name}.db")), "").unwrap();
    if let Ok(count) = std::env::var(MEET_ENV) {
        let count = count.parse().unwrap();
        let all = meet(&dir, ".db", count).await;
        assert_eq!(
            existing(&pool, &all).await,
            all,
            "every run's database is there"
        );
        // Nobody drops theirs before everyone has looked.
        std::fs::write(dir.join(format!("{name}.seen")), "").unwrap();
        meet(&dir, ".seen", count).await;
    }
    assert!(std::env::var(PANIC_ENV).is_err(), "asked to panic");
}

/// A fresh folder for the children's reports.
fn report_dir(test: &str) -> PathBuf {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let dir = std::env::temp_dir().join(format!("testkit-{test}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// This test binary again, running only the child test.
fn child(dir: &Path) -> Command {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args(["--exact", CHILD, "--nocapture", "--test-threads=1"])
        .env(REPORT_ENV, dir)
        .env_remove(MEET_ENV)
        .env_remove(PANIC_ENV)
        .env_remove(testkit::KEEP_ENV)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

async fn finish(command: &mut Command) -> (bool, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = tokio::time::timeout(Duration::from_secs(90), command.output())
        .await
        .expect("the child run ends")
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&stdout),
        String::from_utf8_lossy(&stderr)
    );
    assert!(
        text.contains("1 passed") || text.contains("1 failed"),
        "the child ran its test: {text}"
    );
    (status.success(), text)
}

#[testkit::test]
async fn two_runs_of_one_test_at_once_both_pass_and_leave_nothing(pool: PgPool) {
    let dir = report_dir("two-runs");
    let mut first = child(&dir);
    let mut second = child(&dir);
    first.env(MEET_ENV, "2");
    second.env(MEET_ENV, "2");
    let ((first_passed, first_out), (second_passed, second_out)) =
        tokio::join!(finish(&mut first), finish(&mut second));
    assert!(first_passed, "{first_out}");
    assert!(second_passed, "{second_out}");

    let names = reported(&dir, ".db");
    assert_eq!(names.len(), 2, "two databases, one per run: {names:?}");
    assert_eq!(existing(&pool, &names).await, Vec::<String>::new());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[testkit::test]
async fn a_panicking_test_still_drops_its_database(pool: PgPool) {
    let dir = report_dir("panic");
    let (passed, out) = finish(child(&dir).env(PANIC_ENV, "1")).await;
    assert!(!passed && out.contains("asked to panic"), "{out}");

    let names = reported(&dir, ".db");
    assert_eq!(names.len(), 1, "{names:?}");
    assert_eq!(existing(&pool, &names).await, Vec::<String>::new());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[testkit::test]
async fn keep_db_keeps_the_database_and_names_it(pool: PgPool) {
    let dir = report_dir("keep");
    let (passed, out) = finish(child(&dir).env(testkit::KEEP_ENV, "1")).await;
    assert!(passed, "{out}");

    let names = reported(&dir, ".db");
    assert_eq!(existing(&pool, &names).await, names, "kept");
    assert!(
        out.contains(&format!("kept database {}", names[0])),
        "{out}"
    );
    sqlx::query(&format!(r#"DROP DATABASE "{}" WITH (FORCE)"#, names[0]))
        .execute(&pool)
        .await
        .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[testkit::test]
async fn a_new_run_drops_stale_test_databases_and_no_young_one(pool: PgPool) {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let hour = Duration::from_secs(3600);
    let named = |age: Duration| {
        format!(
            "{}{}_{:016x}",
            testkit::PREFIX,
            (now - age).as_secs(),
            now.subsec_nanos() ^ std::process::id()
        )
    };
    // Past and within the six hours a run may take.
    let stale = named(7 * hour);
    let young = named(5 * hour);
    for name in [&stale, &young] {
        sqlx::query(&format!(r#"CREATE DATABASE "{name}""#))
            .execute(&pool)
            .await
            .unwrap();
    }

    // A new process: its first test sweeps.
    let dir = report_dir("stale");
    let (passed, out) = finish(&mut child(&dir)).await;
    assert!(passed, "{out}");

    let names = [stale, young.clone()];
    assert_eq!(existing(&pool, &names).await, vec![young.clone()]);
    sqlx::query(&format!(r#"DROP DATABASE "{young}""#))
        .execute(&pool)
        .await
        .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}
