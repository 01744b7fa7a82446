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
