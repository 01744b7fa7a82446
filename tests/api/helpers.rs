//! Starting a real gateway for a test.

use std::collections::HashMap;

use eventstore::EventStore;
use eventstore::sealing::Sealer;
use gateway::config::Config;
use gateway::state::AppState;
use secrecy::ExposeSecret;
use sqlx::PgPool;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const ADMIN_SECRET: &str = "test-admin-secret-0123456789abcdefXYZ";
pub const LANDING_KEY: &str = "lk_test_0123456789abcdefghij";
pub const JWT_SECRET: &str = "test-jwt-secret-0123456789abcdefghijklmnop";
/// The bootstrap super admin of every test gateway.
pub const ROOT_EMAIL: &str = "root@example.com";
pub const ROOT_PASSWORD: &str = "Root-Password-123";

pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub pool: PgPool,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

/// The URL of the database behind `pool` (the test's own, made by `testkit::test`).
pub fn database_url(pool: &PgPool) -> String {
    let base = std::env::var("DATABASE_URL")
        .expect("DATABASE_URL names the test Postgres (README, Operations)");
    let base = base.split('?').next().unwrap();
    let (server, _) = base.rsplit_once('/').unwrap();
    let db = pool.connect_options().get_database().unwrap().to_string();
    format!("{server}/{db}")
}

/// Test configuration: explicit secrets (no files written), the test's database.
pub fn test_config(pool: &PgPool, extra: &[(&str, &str)]) -> Config {
    let mut vars: HashMap<String, String> = [
        ("DATABASE_URL", database_url(pool)),
        ("BIND", "127.0.0.1:0".into()),
        ("ADMIN_SECRET", ADMIN_SECRET.into()),
        ("JWT_SECRET", JWT_SECRET.into()),
        (
            "ENCRYPTION_KEY",
            "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff".into(),
        ),
        ("LANDING_API_KEYS", LANDING_KEY.into()),
        (
            "LICENSE_SIGNING_KEY",
            "HxrDeJsP5+sqBC/iCIpi8JpJhzSOxwSmSZJ/N1Vwahk=".into(),
        ),
        ("BOOTSTRAP_ADMIN_EMAIL", ROOT_EMAIL.into()),
        ("BOOTSTRAP_ADMIN_PASSWORD", ROOT_PASSWORD.into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    for (k, v) in extra {
        vars.insert(k.to_string(), v.to_string());
    }
    Config::from_vars(|name| vars.get(name).cloned()).expect("test config is valid")
}

impl TestApp {
    pub async fn spawn(pool: PgPool) -> Self {
        Self::spawn_with(pool, &[]).await
    }

    pub async fn spawn_with(pool: PgPool, extra: &[(&str, &str)]) -> Self {
        gateway::telemetry::init(false);
        let config = test_config(&pool, extra);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(gateway::startup::run(config, listener, async {
            let _ = rx.await;
        }));
        let app = TestApp {
            base,
            client: reqwest::Client::new(),
            pool,
            shutdown: Some(tx),
            task: Some(task),
        };
        app.wait_until_ready().await;
        app
    }

    async fn wait_until_ready(&self) {
        for _ in 0..500 {
            if let Ok(r) = self.client.get(format!("{}/ready", self.base)).send().await
                && r.status().is_success()
            {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("the gateway did not become ready");
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A request to an admin route with `X-Admin-Secret` (add `.bearer_auth(..)`).
    pub fn admin(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, self.url(path))
            .header("X-Admin-Secret", ADMIN_SECRET)
    }

    /// Graceful shutdown; returns what `run` returned.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        let _ = self.shutdown.take().unwrap().send(());
        self.task.take().unwrap().await.unwrap()
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// An in-process state for tests that drive the router without a socket.
pub async fn state(pool: PgPool) -> AppState {
    gateway::MIGRATOR.run(&pool).await.unwrap();
    let config = test_config(&pool, &[]);
    let sealer = Sealer::new(pool.clone(), *config.encryption_key.expose_secret());
    AppState::new(
        config,
        pool.clone(),
        EventStore::new(pool),
        sealer,
        Vec::new(),
    )
}

/// Logs in as the bootstrap super admin: (access token, refresh token).
pub async fn login(app: &TestApp) -> (String, String) {
    login_as(app, ROOT_EMAIL, ROOT_PASSWORD).await
}

/// Logs in and returns (access token, refresh token); panics unless it succeeds.
pub async fn login_as(app: &TestApp, email: &str, password: &str) -> (String, String) {
    let response = app
        .admin(reqwest::Method::POST, "/v1/admin/auth/login")
        .json(&serde_json::json!({"email": email, "password": password}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "login as {email}");
    let body: serde_json::Value = response.json().await.unwrap();
    let tokens = &body["data"]["tokens"];
    (
        tokens["accessToken"].as_str().unwrap().to_string(),
        tokens["refreshToken"].as_str().unwrap().to_string(),
    )
}

/// Creates an admin through the API as `access` and logs in as it: its access token.
pub async fn create_admin(
    app: &TestApp,
    access: &str,
    email: &str,
    role: &str,
    permissions: &[&str],
) -> String {
    let password = "Another-Password-456";
    let response = app
        .admin(reqwest::Method::POST, "/v1/admin/users")
        .bearer_auth(access)
        .json(&serde_json::json!({
            "email": email, "name": "Test Admin", "password": password, "role": role, "permissions": permissions
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201, "creating {email}");
    login_as(app, email, password).await.0
}

/// The lead a landing submission landed on. The public answer names the submission only
/// (it must not reveal the lead); the event that recorded it carries the submission id.
pub async fn lead_of_submission(pool: &PgPool, submission_id: &str) -> String {
    sqlx::query_scalar(
        "SELECT aggregate_id FROM events
          WHERE aggregate_type = 'lead'
            AND coalesce(payload->'LeadCreated'->>'submission_id',
                         payload->'LeadResubmitted'->>'submission_id') = $1",
    )
    .bind(submission_id)
    .fetch_one(pool)
    .await
    .expect("a submission answered 201 is in the log")
}
