//! The embedded default: `gateway serve` with no `DATABASE_URL` runs its own cluster.

use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

struct Served {
    child: Child,
    base: String,
    output: tokio::task::JoinHandle<String>,
}

async fn free_port() -> u16 {
    tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn serve(data_dir: &std::path::Path) -> Served {
    let port = free_port().await;
    let mut child = Command::new(env!("CARGO_BIN_EXE_gateway"))
        .arg("serve")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATA_DIR", data_dir)
        .env("BIND", format!("127.0.0.1:{port}"))
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let output = tokio::spawn(async move {
        let mut text = String::new();
        let mut out = BufReader::new(stdout).lines();
        let mut err = BufReader::new(stderr).lines();
        loop {
            tokio::select! {
                Ok(Some(line)) = out.next_line() => { text.push_str(&line); text.push('\n'); }
                Ok(Some(line)) = err.next_line() => { text.push_str(&line); text.push('\n'); }
                else => break,
            }
        }
        text
    });
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if let Ok(r) = client.get(format!("{base}/health")).send().await
            && r.status().is_success()
        {
            break;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("gateway exited with {status}: {}", output.await.unwrap());
        }
        assert!(
            Instant::now() < deadline,
            "the embedded gateway did not come up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Served {
        child,
        base,
        output,
    }
}

impl Served {
    /// SIGTERM, then wait for a clean exit; returns everything it printed.
    async fn stop(mut self) -> String {
        let pid = self.child.id().unwrap();
        let status = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await
            .unwrap();
        assert!(status.success());
        let exit = tokio::time::timeout(Duration::from_secs(60), self.child.wait())
            .await
            .unwrap()
            .unwrap();
        let output = self.output.await.unwrap();
        assert!(exit.success(), "exit {exit}: {output}");
        output
    }
}

fn postmaster_running(data_dir: &std::path::Path) -> bool {
    data_dir.join("postgres").join("postmaster.pid").exists()
}

#[tokio::test]
async fn an_empty_data_dir_serves_health_and_a_second_start_reuses_the_cluster() {
    let data_dir = std::env::temp_dir().join(format!("gw-embedded-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&data_dir).unwrap();

    let first = serve(&data_dir).await;
    let ready = reqwest::get(format!("{}/ready", first.base)).await.unwrap();
    assert_eq!(ready.status(), 200);
    let version_file = data_dir.join("postgres").join("PG_VERSION");
    let created = std::fs::metadata(&version_file)
        .unwrap()
        .modified()
        .unwrap();
    let secrets = std::fs::read_to_string(data_dir.join("dev-secrets.json")).unwrap();
    let output = first.stop().await;
    assert!(
        output.contains("admin login"),
        "prints how to log in: {output}"
    );
    assert!(
        !output.contains(
            &serde_json::from_str::<serde_json::Value>(&secrets).unwrap()["bootstrapAdminPassword"]
                .as_str()
                .unwrap()
                .to_string()
        ),
        "the password itself is never printed"
    );
    assert!(
        !postmaster_running(&data_dir),
        "the cluster stops with the gateway"
    );

    let second = serve(&data_dir).await;
    assert_eq!(
        reqwest::get(format!("{}/health", second.base))
            .await
            .unwrap()
            .status(),
        200
    );
    second.stop().await;
    assert_eq!(
        std::fs::metadata(&version_file)
            .unwrap()
            .modified()
            .unwrap(),
        created,
        "reused, not re-initialised"
    );
    assert_eq!(
        std::fs::read_to_string(data_dir.join("dev-secrets.json")).unwrap(),
        secrets,
        "same dev secrets"
    );
    std::fs::remove_dir_all(&data_dir).unwrap();
}

/// The README's first command, as a new user runs it: through cargo, from the repository, with
/// nothing about a database in the environment. The gateway's own start test above runs the
/// binary directly and so cannot see what cargo adds to the environment (a `[env]
/// DATABASE_URL` in `.cargo/config.toml` once sent this command to the machine's Postgres).
mod readme_first_command {
    use std::path::{Path, PathBuf};
    use std::process::Stdio;
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    use sqlx::Connection;
    use tokio::io::{AsyncBufReadExt, BufReader};
    use tokio::process::{Child, Command};

    /// The first line of the README's first `sh` block, without its comment.
    fn readme_first_command() -> String {
        let readme =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
                .unwrap();
        let block = readme
            .split("```sh\n")
            .nth(1)
            .expect("the README opens with a sh block");
        let line = block.lines().next().unwrap();
        line.split('#').next().unwrap().trim().to_string()
    }

    /// The target directory this test binary was built in (`<target>/debug/gateway`).
    fn target_dir() -> PathBuf {
        Path::new(env!("CARGO_BIN_EXE_gateway"))
            .parent()
            .and_then(Path::parent)
            .unwrap()
            .to_path_buf()
    }

    /// Tables of the database in `DATABASE_URL` (the machine's Postgres the other tests use),
    /// not counting `_sqlx_test`, where `sqlx::test` (which these tests used before testkit)
    /// booked its databases: a run of an older checkout may still write there meanwhile.
    async fn machine_tables() -> Vec<String> {
        let url = std::env::var("DATABASE_URL")
            .expect("DATABASE_URL names the machine's Postgres (README, Operations)");
        let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
        let tables = sqlx::query_scalar(
            "SELECT n.nspname || '.' || c.relname FROM pg_class c
               JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE c.relkind IN ('r', 'p', 'v', 'm')
                AND n.nspname NOT IN ('pg_catalog', 'information_schema', '_sqlx_test')
                AND n.nspname NOT LIKE 'pg\\_toast%'
              ORDER BY 1",
        )
        .fetch_all(&mut conn)
        .await
        .unwrap();
        conn.close().await.unwrap();
        tables
    }

    /// Removed at the end, also after a failed assertion (declared before [`Running`], so the
    /// gateway and its cluster are stopped first).
    struct TempDir(PathBuf);

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// The `cargo run` child; SIGTERM on drop so a failed assertion still stops the gateway
    /// and with it the cluster (a SIGKILL would leave the postmaster running).
    struct Running {
        child: Option<Child>,
        output: Arc<Mutex<String>>,
    }

    impl Running {
        fn output(&self) -> String {
            self.output.lock().unwrap().clone()
        }

        fn terminate(&self) {
            if let Some(pid) = self.child.as_ref().and_then(Child::id) {
                let _ = std::process::Command::new("kill")
                    .args(["-TERM", &pid.to_string()])
                    .status();
            }
        }

        /// SIGTERM, then waits for the exit; returns the exit status and everything printed.
        async fn stop(mut self) -> (std::process::ExitStatus, String) {
            self.terminate();
            let mut child = self.child.take().unwrap();
            let status = tokio::time::timeout(Duration::from_secs(120), child.wait())
                .await
                .expect("the gateway stops on SIGTERM")
                .unwrap();
            // The readers end with the pipes.
            tokio::time::sleep(Duration::from_millis(100)).await;
            (status, self.output())
        }
    }

    impl Drop for Running {
        fn drop(&mut self) {
            self.terminate();
            if let Some(child) = self.child.as_mut() {
                for _ in 0..600 {
                    if !matches!(child.try_wait(), Ok(None)) {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }

    fn collect(
        stream: impl tokio::io::AsyncRead + Unpin + Send + 'static,
        into: Arc<Mutex<String>>,
    ) {
        tokio::spawn(async move {
            let mut lines = BufReader::new(stream).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let mut text = into.lock().unwrap();
                text.push_str(&line);
                text.push('\n');
            }
        });
    }

    /// The paste-ready login of the banner: the text after `log in:` and its `\` continuations.
    fn printed_login(output: &str) -> String {
        let mut lines = output.lines().skip_while(|l| !l.contains("log in:"));
        let first = lines.next().expect("the banner prints a login command");
        let mut command = first.split_once("log in:").unwrap().1.trim().to_string();
        while command.ends_with('\\') {
            command.push('\n');
            command.push_str(lines.next().expect("a continuation line"));
        }
        command
    }

    #[tokio::test]
    async fn runs_the_embedded_cluster_under_data_dir_and_the_printed_login_works() {
        let readme = readme_first_command();
        assert_eq!(
            readme, "cargo run --release -- serve",
            "the README's first command changed; this check runs it"
        );
        // The one liberty taken: the debug profile instead of `--release`. A release build
        // of the workspace takes many minutes on the 2-core machines this runs on, while the
        // debug one reuses what the test build left in the same target directory. The
        // profile does not take part in what is checked here (which database the command
        // uses: cargo hands its `[env]` to every profile alike).
        let args: Vec<&str> = readme
            .split_whitespace()
            .skip(1)
            .filter(|a| *a != "--release")
            .collect();

        // Under the temp dir: /tmp is world-traversable, which the cluster's `postgres` user
        // needs when this runs as root (as on CI).
        let temp =
            TempDir(std::env::temp_dir().join(format!("gw-readme-{}", uuid::Uuid::new_v4())));
        let data_dir = temp.0.clone();
        std::fs::create_dir_all(&data_dir).unwrap();
        let port = super::free_port().await;
        let tables_before = machine_tables().await;

        let cargo = std::env::var("CARGO").unwrap_or_else(|_| env!("CARGO").into());
        let mut command = Command::new(cargo);
        command
            .args(&args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            // The same target directory as this test's build: nothing to rebuild but the
            // binary's own feature set. Cargo releases its build lock before running tests
            // (with nextest and `cargo test` alike), so this does not wait on the outer cargo.
            .env("CARGO_TARGET_DIR", target_dir())
            .env("DATA_DIR", &data_dir)
            .env("BIND", format!("127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // A new user's shell: nothing the gateway reads, above all no DATABASE_URL (the test
        // runner's own points at the machine's Postgres), and the default log filter.
        for name in gateway::config::VARIABLES
            .iter()
            .map(|v| v.name)
            .filter(|n| !matches!(*n, "DATA_DIR" | "BIND"))
        {
            command.env_remove(name);
        }
        let mut child = command.spawn().unwrap();
        let output = Arc::new(Mutex::new(String::new()));
        collect(child.stdout.take().unwrap(), output.clone());
        collect(child.stderr.take().unwrap(), output.clone());
        let mut running = Running {
            child: Some(child),
            output,
        };

        // Generous: on a fresh clone cargo may have to compile the binary's own feature set.
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20 * 60);
        loop {
            if let Ok(r) = reqwest::get(format!("{base}/health")).await
                && r.status().is_success()
            {
                break;
            }
            if let Ok(Some(status)) = running.child.as_mut().unwrap().try_wait() {
                panic!(
                    "`cargo {}` exited with {status}:\n{}",
                    args.join(" "),
                    running.output()
                );
            }
            assert!(
                Instant::now() < deadline,
                "no /health answer:\n{}",
                running.output()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }

        let cluster = data_dir.join("postgres");
        assert!(
            cluster.join("PG_VERSION").is_file() && cluster.join("postmaster.pid").is_file(),
            "a running cluster under DATA_DIR:\n{}",
            running.output()
        );
        // …and it is the gateway's database: its port (line 4 of postmaster.pid) serves the
        // event store.
        let pid_file = std::fs::read_to_string(cluster.join("postmaster.pid")).unwrap();
        let cluster_port = pid_file.lines().nth(3).unwrap().trim();
        let mut conn = sqlx::PgConnection::connect(&format!(
            "postgres://postgres@127.0.0.1:{cluster_port}/domizan"
        ))
        .await
        .unwrap();
        let event_store: Option<String> = sqlx::query_scalar("SELECT to_regclass('events')::text")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(event_store.as_deref(), Some("events"));
        conn.close().await.unwrap();

        let login = printed_login(&running.output());
        let answer = Command::new("sh")
            .arg("-c")
            .arg(&login)
            .stdin(Stdio::null())
            .output()
            .await
            .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&answer.stdout).unwrap_or_else(|_| {
            panic!(
                "{login}\nanswered: {}{}",
                String::from_utf8_lossy(&answer.stdout),
                String::from_utf8_lossy(&answer.stderr)
            )
        });
        assert_eq!(body["data"]["user"]["email"], "admin@localhost", "{body}");
        assert!(body["data"]["tokens"]["accessToken"].is_string(), "{body}");

        let (status, output) = running.stop().await;
        assert!(status.success(), "exit {status}:\n{output}");
        assert!(
            !cluster.join("postmaster.pid").exists(),
            "the cluster stops with the gateway"
        );
        assert_eq!(
            machine_tables().await,
            tables_before,
            "the machine's Postgres gained tables:\n{output}"
        );
        // A first start reads clean: a line per migration, no SQL dumped as a slow statement.
        assert!(!output.contains("slow statement"), "{output}");
        for migration in
            std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations")).unwrap()
        {
            let name = migration.unwrap().file_name();
            let name = name.to_string_lossy();
            let name = name.trim_end_matches(".sql");
            assert!(
                output
                    .lines()
                    .any(|l| l.contains("migration applied") && l.contains(name)),
                "{name} logged:\n{output}"
            );
        }
    }
}
