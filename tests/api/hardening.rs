//! What an attacker tried against the landed gateway, and what it must answer now: poison
//! text, an admin reaching above their rights, what the public answer and the log reveal,
//! edge inputs that used to answer 500, and the connection-level limits.

use std::time::Duration;

use aggregates::lead::{Lead, LeadCommand, LeadSource, SealedText};
use eventstore::sealing::Sealer;
use eventstore::{CommandHandler, EventStore, Metadata};
use futures_util::{SinkExt, StreamExt};
use projections::leads::{Personal, subject};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config as ProptestConfig, RngAlgorithm, TestRng, TestRunner};
use reqwest::{Method, StatusCode};
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::connect_async;
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

use crate::helpers::{
    ADMIN_SECRET, LANDING_KEY, TestApp, create_admin, lead_of_submission, login, login_as,
    test_config,
};

fn form(n: u32) -> Value {
    json!({
        "name": "Ayşe Yılmaz",
        "email": format!("ayse{n}@ornek.com.tr"),
        "phone": format!("+90532{n:07}"),
        "company": "Yılmaz SMMM",
        "message": "Demo rica ederim.",
        "source": "landing_page",
    })
}

/// Submits the landing form. Each call comes from its own address (believed when the app
/// trusts loopback as a proxy), so the per-IP limit stays out of the way.
async fn post_form(app: &TestApp, body: &Value) -> reqwest::Response {
    let ip = format!("198.18.{}.{}", rand::random::<u8>(), rand::random::<u8>());
    app.client
        .post(app.url("/v1/leads"))
        .header("X-API-Key", LANDING_KEY)
        .header("X-Forwarded-For", ip)
        .json(body)
        .send()
        .await
        .unwrap()
}

fn admin(app: &TestApp, method: Method, path: &str, token: &str) -> reqwest::RequestBuilder {
    app.client
        .request(method, app.url(path))
        .header("X-Admin-Secret", ADMIN_SECRET)
        .bearer_auth(token)
}

async fn error_of(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    let body: Value = response.json().await.expect("an enveloped JSON answer");
    assert_eq!(body["success"], false, "{body}");
    (status, body["error"].clone())
}

async fn event_count(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn lead_event_count(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM events WHERE aggregate_type = 'lead'")
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Polls `/ready` until it answers 200 (every projection running and caught up).
async fn assert_becomes_ready(app: &TestApp) {
    let mut last = Value::Null;
    for _ in 0..500 {
        let response = app.client.get(app.url("/ready")).send().await.unwrap();
        if response.status() == StatusCode::OK {
            return;
        }
        last = response.json().await.unwrap_or_default();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the gateway is not ready: {last}");
}

/// Connects an admin panel, submits one ordinary lead and waits for its `NEW_LEAD`.
async fn assert_feed_delivers(app: &TestApp, token: &str, n: u32) {
    let url = format!("{}/ws/admin", app.base.replace("http://", "ws://"));
    let (mut socket, _) = connect_async(url).await.unwrap();
    socket
        .send(Message::text(
            json!({"type": "auth", "token": token}).to_string(),
        ))
        .await
        .unwrap();
    let response = post_form(app, &form(n)).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let submission: Value = response.json().await.unwrap();
    let lead = lead_of_submission(&app.pool, submission["data"]["id"].as_str().unwrap()).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let message = tokio::time::timeout_at(deadline, socket.next())
            .await
            .expect("NEW_LEAD in time")
            .expect("the socket is open")
            .unwrap();
        if let Message::Text(text) = message {
            let value: Value = serde_json::from_str(&text).unwrap();
            if value["type"] == "NEW_LEAD" && value["data"]["id"] == lead.as_str() {
                return;
            }
        }
    }
}

/// Polls the lead's admin detail until the read model has it with `entries` timeline
/// entries; returns it.
async fn lead_detail(app: &TestApp, token: &str, lead: &str, entries: usize) -> Value {
    let mut detail = Value::Null;
    for _ in 0..500 {
        detail = admin(app, Method::GET, &format!("/v1/admin/leads/{lead}"), token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if detail["data"]["history"]
            .as_array()
            .is_some_and(|h| h.len() == entries)
        {
            return detail;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the lead did not reach {entries} timeline entries: {detail}");
}

// ---------------------------------------------------------------------------------------
// Poison text.

#[testkit::test(migrations = false)]
async fn a_nul_in_any_landing_field_is_refused_and_changes_nothing(pool: PgPool) {
    let app = TestApp::spawn_with(pool.clone(), &[("TRUSTED_PROXIES", "127.0.0.1/32")]).await;
    for field in [
        "name",
        "company",
        "message",
        "utm_source",
        "utm_campaign",
        "email",
    ] {
        let mut body = form(1);
        body[field] = json!("Nul\u{0}Value@x.com");
        let (status, error) = error_of(post_form(&app, &body).await).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{field}");
        assert_eq!(error["code"], "VALIDATION_ERROR");
        assert_eq!(error["field"], field, "{error}");
    }
    // Other control characters and disguising formatting too; a message keeps its lines.
    for (field, value) in [
        ("name", "Esc\u{1b}[31m"),
        ("company", "Two\nLines"),
        ("name", "Ters\u{202E}çevir"),
        ("message", "bell\u{7}"),
    ] {
        let mut body = form(1);
        body[field] = json!(value);
        let (status, error) = error_of(post_form(&app, &body).await).await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{field} {value:?}"
        );
        assert_eq!(error["field"], field);
    }
    assert_eq!(lead_event_count(&pool).await, 0, "no lead was recorded");
    let mut multi_line = form(2);
    multi_line["message"] = json!("Merhaba,\r\n\tdemo rica ederim.");
    assert_eq!(
        post_form(&app, &multi_line).await.status(),
        StatusCode::CREATED
    );
    assert_becomes_ready(&app).await;
    app.stop().await.unwrap();
}

#[testkit::test(migrations = false)]
async fn nul_in_admin_input_is_a_422_never_a_500(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    let (token, _) = login(&app).await;
    let response = post_form(&app, &form(1)).await;
    let submission: Value = response.json().await.unwrap();
    let lead = lead_of_submission(&pool, submission["data"]["id"].as_str().unwrap()).await;
    let before = event_count(&pool).await;

    let cases: Vec<(Method, String, Value, &str)> = vec![
        (
            Method::PATCH,
            format!("/v1/admin/leads/{lead}"),
            json!({"notes": "n\u{0}o"}),
            "notes",
        ),
        (
            Method::POST,
            format!("/v1/admin/leads/{lead}/activities"),
            json!({"type": "CALL", "note": "n\u{0}o"}),
            "note",
        ),
        (
            Method::POST,
            "/v1/admin/users".into(),
            json!({"email": "new@example.com", "name": "Nul\u{0}Name", "password": "Long-Enough-Pass", "role": "viewer"}),
            "name",
        ),
    ];
    for (method, path, body, field) in cases {
        let (status, error) = error_of(
            admin(&app, method, &path, &token)
                .json(&body)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{path}");
        assert_eq!(error["field"], field, "{error}");
    }
    let (status, error) = error_of(
        app.admin(Method::POST, "/v1/admin/auth/login")
            .json(&json!({"email": "root\u{0}@example.com", "password": "whatever-long"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, error["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("email"))
    );
    let (status, error) = error_of(
        admin(&app, Method::GET, "/v1/admin/leads?search=a%00b", &token)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, error["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("search"))
    );
    assert_eq!(event_count(&pool).await, before, "nothing was recorded");
    assert_becomes_ready(&app).await;
    app.stop().await.unwrap();
}

#[testkit::test(migrations = false)]
async fn a_nul_already_in_the_log_is_stored_safely_and_stops_nothing(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    let (token, _) = login(&app).await;
    // Sealed text is opaque to the database, so an older gateway could log a NUL in it.
    let config = test_config(&pool, &[]);
    let sealer = Sealer::new(pool.clone(), *config.encryption_key.expose_secret());
    let handler = CommandHandler::<Lead>::new(EventStore::new(pool.clone()), ());
    let id = Uuid::now_v7();
    let personal = Personal {
        name: "Nul\u{0}Name".into(),
        email: "nul@example.com".into(),
        phone: "+905320000000".into(),
        company: Some("Co\u{0}".into()),
        message: Some("m\u{0}".into()),
        ip: None,
        user_agent: None,
    };
    let sealed = sealer.seal_json(&subject(id), &personal).await.unwrap();
    let metadata = Metadata::actor("landing");
    handler
        .execute(
            &id.to_string(),
            LeadCommand::Create {
                personal: SealedText(sealed.into_string()),
                source: LeadSource::LandingPage,
                utm_source: None,
                utm_campaign: None,
                submission_id: None,
            },
            &metadata,
        )
        .await
        .unwrap();
    let note = sealer.seal_json(&subject(id), &"not\u{0}e").await.unwrap();
    handler
        .execute(
            &id.to_string(),
            LeadCommand::LogActivity {
                kind: aggregates::lead::ActivityKind::Call,
                note: SealedText(note.into_string()),
                occurred_at: chrono::Utc::now(),
            },
            &metadata,
        )
        .await
        .unwrap();
    assert_becomes_ready(&app).await;
    let detail = lead_detail(&app, &token, &id.to_string(), 2).await;
    assert_eq!(detail["data"]["name"], "Nul\u{FFFD}Name", "{detail}");
    assert_eq!(
        detail["data"]["history"][1]["details"]["note"],
        "not\u{FFFD}e"
    );
    assert_feed_delivers(&app, &token, 7).await;
    app.stop().await.unwrap();
}

/// Text that goes looking for trouble: anything at all, and a mix heavy in control
/// characters, separators, bidi overrides, byte-order marks and Turkish letters.
fn hostile_text() -> BoxedStrategy<String> {
    let nasty = prop_oneof![
        Just('\u{0}'),
        Just('\n'),
        Just('\r'),
        Just('\t'),
        Just('\u{7f}'),
        Just('\u{85}'),
        Just('\u{202E}'),
        Just('\u{2028}'),
        Just('\u{FEFF}'),
        Just('\u{FFFF}'),
        Just('"'),
        Just('\\'),
        Just('%'),
        Just('ş'),
        Just('İ'),
        any::<char>(),
    ];
    prop_oneof![
        any::<String>(),
        proptest::collection::vec(nasty, 0..24).prop_map(|cs| cs.into_iter().collect()),
        Just(String::new()),
        "[a-zA-ZçğıöşüÇĞİÖŞÜ ]{2,30}",
    ]
    .boxed()
}

/// Drives every endpoint that takes a command with arbitrary Unicode in every string field.
/// Whatever is accepted, every projection keeps running and the live feed keeps delivering.
/// `PROPTEST_SEED=<n>` replays a run.
#[testkit::test(migrations = false)]
async fn arbitrary_unicode_in_every_field_never_stops_a_read_model(pool: PgPool) {
    let app = TestApp::spawn_with(
        pool.clone(),
        &[
            ("TRUSTED_PROXIES", "127.0.0.1/32"),
            ("ADMIN_RATE_LIMIT_PER_MINUTE", "100000"),
        ],
    )
    .await;
    let (token, _) = login(&app).await;
    let seed: u64 = std::env::var("PROPTEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("PROPTEST_SEED={seed}");
    let mut seed_bytes = [0u8; 32];
    seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let mut runner = TestRunner::new_with_rng(
        ProptestConfig::default(),
        TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes),
    );
    let strategy = hostile_text();
    let mut text = || strategy.new_tree(&mut runner).unwrap().current();

    let first = post_form(&app, &form(0))
        .await
        .json::<Value>()
        .await
        .unwrap();
    let mut lead = lead_of_submission(&pool, first["data"]["id"].as_str().unwrap()).await;
    let spare = "spare@example.com";
    create_admin(&app, &token, spare, "viewer", &[]).await;
    let spare_id = gateway::auth::users::admin_id_for_email(spare);
    let mut accepted = 0;
    let no_5xx = |status: StatusCode, what: &str, body: &Value| {
        assert!(
            !status.is_server_error(),
            "{what} answered {status} for {body}"
        );
    };
    for case in 0..40u32 {
        let email = if case % 3 == 0 {
            text()
        } else {
            format!("p{case}.{}@example.com", text().len())
        };
        let body = json!({
            "name": text(), "email": email, "phone": format!("+90533{case:07}"),
            "company": text(), "message": text(), "utm_source": text(),
            "utmCampaign": text(), "source": if case % 5 == 0 { text() } else { "landing_page".into() },
        });
        let response = app
            .client
            .post(app.url("/v1/leads"))
            .header("X-API-Key", LANDING_KEY)
            .header(
                "X-Forwarded-For",
                format!("198.51.{}.{}", case / 200, case % 200),
            )
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status();
        no_5xx(status, "POST /v1/leads", &body);
        if status == StatusCode::CREATED {
            accepted += 1;
            let answer: Value = response.json().await.unwrap();
            lead = lead_of_submission(&pool, answer["data"]["id"].as_str().unwrap()).await;
        }
        let requests: Vec<(Method, String, Value)> = vec![
            (
                Method::PATCH,
                format!("/v1/admin/leads/{lead}"),
                json!({"notes": text(), "status": if case % 4 == 0 { text() } else { "contacted".into() }}),
            ),
            (
                Method::PATCH,
                format!("/v1/admin/leads/{lead}"),
                json!({"assignedTo": if case % 2 == 0 { text() } else { "root@example.com".into() }}),
            ),
            (
                Method::POST,
                format!("/v1/admin/leads/{lead}/activities"),
                json!({"type": if case % 6 == 0 { text() } else { "COMMENT".into() }, "note": text(),
                       "at": if case % 7 == 0 { Value::from(text()) } else { Value::Null }}),
            ),
            (
                Method::PATCH,
                format!("/v1/admin/users/{spare_id}"),
                json!({"name": text()}),
            ),
            (
                Method::GET,
                format!("/v1/admin/leads?search={}", urlencode(&text())),
                Value::Null,
            ),
        ];
        for (method, path, body) in requests {
            let mut request = admin(&app, method.clone(), &path, &token);
            if !body.is_null() {
                request = request.json(&body);
            }
            let status = request.send().await.unwrap().status();
            no_5xx(status, &format!("{method} {path}"), &body);
        }
        if case % 10 == 0 {
            // Each costs a bcrypt hash: a few are enough.
            let body = json!({"email": format!("{}@example.com", text()), "name": text(),
                              "password": text() + "-Long-Enough", "role": "viewer"});
            let status = admin(&app, Method::POST, "/v1/admin/users", &token)
                .json(&body)
                .send()
                .await
                .unwrap()
                .status();
            no_5xx(status, "POST /v1/admin/users", &body);
            let body = json!({"email": text(), "password": text()});
            let status = app
                .admin(Method::POST, "/v1/admin/auth/login")
                .json(&body)
                .send()
                .await
                .unwrap()
                .status();
            no_5xx(status, "POST /v1/admin/auth/login", &body);
        }
    }
    assert!(accepted > 0, "some submissions were accepted");
    assert_becomes_ready(&app).await;
    assert_feed_delivers(&app, &token, 999).await;
    app.stop().await.unwrap();
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// Admins above one's rights.

#[testkit::test(migrations = false)]
async fn an_admin_with_users_only_cannot_touch_an_admin_who_holds_more(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    let (root, _) = login(&app).await;
    let weak = create_admin(&app, &root, "weak@example.com", "admin", &["users"]).await;
    create_admin(
        &app,
        &root,
        "strong@example.com",
        "admin",
        &["users", "leads"],
    )
    .await;
    create_admin(&app, &root, "peer@example.com", "viewer", &["users"]).await;
    let strong_id = gateway::auth::users::admin_id_for_email("strong@example.com");
    let peer_id = gateway::auth::users::admin_id_for_email("peer@example.com");
    let before = event_count(&pool).await;
    for body in [
        json!({"password": "Taken-Over-123"}),
        json!({"active": false}),
        json!({"permissions": ["users"]}),
        json!({"role": "viewer"}),
        json!({"name": "Renamed"}),
    ] {
        let (status, error) = error_of(
            admin(
                &app,
                Method::PATCH,
                &format!("/v1/admin/users/{strong_id}"),
                &weak,
            )
            .json(&body)
            .send()
            .await
            .unwrap(),
        )
        .await;
        assert_eq!(
            (status, error["code"].as_str()),
            (StatusCode::FORBIDDEN, Some("FORBIDDEN")),
            "{body}"
        );
    }
    assert_eq!(event_count(&pool).await, before, "nothing changed");
    // The stronger admin still logs in with their own password and keeps their rights.
    let strong = login_as(&app, "strong@example.com", "Another-Password-456")
        .await
        .0;
    let leads = admin(&app, Method::GET, "/v1/admin/leads", &strong)
        .send()
        .await
        .unwrap();
    assert_eq!(leads.status(), StatusCode::OK);
    // An admin whose rights the actor all holds can still be managed.
    let renamed = admin(
        &app,
        Method::PATCH,
        &format!("/v1/admin/users/{peer_id}"),
        &weak,
    )
    .json(&json!({"name": "Peer Renamed", "active": false}))
    .send()
    .await
    .unwrap();
    assert_eq!(renamed.status(), StatusCode::OK);
    app.stop().await.unwrap();
}

#[testkit::test(migrations = false)]
async fn look_alike_admin_emails_are_refused(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (root, _) = login(&app).await;
    for email in [
        "\u{430}dmin@example.com",
        "ａdmin@example.com",
        "ad\u{200B}min@example.com",
    ] {
        let (status, error) = error_of(
            admin(&app, Method::POST, "/v1/admin/users", &root)
                .json(&json!({"email": email, "name": "Look Alike", "password": "Long-Enough-Pass", "role": "viewer"}))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(
            (status, error["field"].as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some("email")),
            "{email:?}"
        );
    }
    app.stop().await.unwrap();
}

// ---------------------------------------------------------------------------------------
// What the public answer and the log reveal.

#[testkit::test(migrations = false)]
async fn every_submission_is_answered_with_its_own_id_that_reveals_no_lead(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    let (token, _) = login(&app).await;
    let answer = |response: reqwest::Response| async move {
        assert_eq!(response.status(), StatusCode::CREATED);
        let body: Value = response.json().await.unwrap();
        body["data"].clone()
    };
    let first = answer(post_form(&app, &form(1)).await).await;
    let again = answer(post_form(&app, &form(1)).await).await;
    assert_eq!(first["message"], again["message"]);
    let (first_id, again_id) = (first["id"].as_str().unwrap(), again["id"].as_str().unwrap());
    assert_ne!(first_id, again_id, "a resubmission gets its own id");
    let lead = lead_of_submission(&pool, first_id).await;
    assert_eq!(lead, lead_of_submission(&pool, again_id).await);
    assert_ne!(first_id, lead, "the answer does not name the lead");
    for id in [first_id, again_id] {
        let version = id.parse::<Uuid>().unwrap().get_version_num();
        assert_eq!(version, 4, "a random id, no creation time inside");
    }
    // The admin sees both submissions on the lead, under the ids they were answered with.
    let history = lead_detail(&app, &token, &lead, 2).await["data"]["history"].clone();
    assert_eq!(history[0]["details"]["submissionId"], first_id, "{history}");
    assert_eq!(history[1]["details"]["submissionId"], again_id, "{history}");
    app.stop().await.unwrap();
}

/// `pg_dump` of the test's database, as text.
pub async fn dump(pool: &PgPool) -> String {
    let url = crate::helpers::database_url(pool);
    let output = tokio::task::spawn_blocking(move || {
        let candidates = std::iter::once("pg_dump".to_string()).chain(
            std::fs::read_dir("/usr/lib/postgresql")
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| format!("{}/bin/pg_dump", e.path().display())),
        );
        candidates
            .filter_map(|bin| {
                std::process::Command::new(bin)
                    .args(["--data-only", "--dbname", &url])
                    .output()
                    .ok()
            })
            .find(|o| o.status.success())
            .expect("pg_dump runs")
    })
    .await
    .unwrap();
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[testkit::test(migrations = false)]
async fn the_submitters_address_is_sealed_with_the_lead_and_shredded_with_it(pool: PgPool) {
    let app = TestApp::spawn_with(pool.clone(), &[("TRUSTED_PROXIES", "127.0.0.1/32")]).await;
    let (token, _) = login(&app).await;
    let ip = "203.0.113.77";
    let agent = "Submitter-Browser/9.9";
    let body = form(3);
    for _ in 0..2 {
        let response = app
            .client
            .post(app.url("/v1/leads"))
            .header("X-API-Key", LANDING_KEY)
            .header("X-Forwarded-For", ip)
            .header("User-Agent", agent)
            .header("Idempotency-Key", Uuid::new_v4().to_string())
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
    }
    let lead: String =
        sqlx::query_scalar("SELECT aggregate_id FROM events WHERE event_type = 'LeadCreated'")
            .fetch_one(&pool)
            .await
            .unwrap();
    let before = dump(&pool).await;
    assert!(before.contains("LeadResubmitted"), "the dump holds the log");
    // (The read model shows the lead's name and e-mail to the admins until erasure; the
    // address and browser are not shown anywhere.)
    for secret in [ip, agent] {
        assert!(
            !before.contains(secret),
            "{secret} lies in clear in the database"
        );
    }
    // The idempotency fingerprint is keyed: not the plain SHA-256 of the body.
    let plain: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM idempotency_keys WHERE request_hash = encode(sha256(convert_to($1, 'UTF8')), 'hex')",
    )
    .bind(body.to_string())
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(plain, 0);
    let erased = admin(
        &app,
        Method::POST,
        &format!("/v1/admin/leads/{lead}/erase"),
        &token,
    )
    .send()
    .await
    .unwrap();
    assert_eq!(erased.status(), StatusCode::OK);
    let after = dump(&pool).await;
    for secret in [ip, agent, "ayse3@ornek.com.tr", "Ayşe Yılmaz"] {
        assert!(!after.contains(secret), "{secret} survived the erasure");
    }
    app.stop().await.unwrap();
}

#[testkit::test(migrations = false)]
async fn expired_idempotency_keys_are_forgotten(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    let send = || {
        app.client
            .post(app.url("/v1/leads"))
            .header("X-API-Key", LANDING_KEY)
            .header("Idempotency-Key", "old-key")
            .json(&form(4))
            .send()
    };
    assert_eq!(send().await.unwrap().status(), StatusCode::CREATED);
    sqlx::query("UPDATE idempotency_keys SET created_at = now() - interval '25 hours'")
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(gateway::idempotency::purge_expired(&pool).await.unwrap(), 1);
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM idempotency_keys")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(left, 0);
    app.stop().await.unwrap();
}

#[testkit::test(migrations = false)]
async fn only_a_short_plain_request_id_is_kept_and_recorded(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    let long = "a".repeat(5_000);
    for (given, kept) in [
        ("plain-id_1.2", true),
        (long.as_str(), false),
        ("has space", false),
        ("<script>", false),
    ] {
        let response = app
            .client
            .post(app.url("/v1/leads"))
            .header("X-API-Key", LANDING_KEY)
            .header("X-Request-Id", given)
            .json(&form(5))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        let echoed = response.headers()["x-request-id"]
            .to_str()
            .unwrap()
            .to_string();
        assert_eq!(echoed == given, kept, "{given:.20}");
        assert!(echoed.len() <= 64);
        let recorded: String = sqlx::query_scalar(
            "SELECT metadata->>'correlationId' FROM events ORDER BY global_position DESC LIMIT 1",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(
            recorded, echoed,
            "the event carries the id that was answered"
        );
    }
    app.stop().await.unwrap();
}

// ---------------------------------------------------------------------------------------
// Resource limits.

#[testkit::test(migrations = false)]
async fn made_up_methods_do_not_mint_metric_series(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    for i in 0..20 {
        let method = Method::from_bytes(format!("BOGUS{i}X").as_bytes()).unwrap();
        let response = app
            .client
            .request(method, app.url("/health"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    }
    let metrics = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!metrics.contains("BOGUS"), "made-up methods became labels");
    assert!(
        metrics.contains("method=\"OTHER\""),
        "they are counted as OTHER"
    );
    app.stop().await.unwrap();
}

#[testkit::test(migrations = false)]
async fn silent_and_idle_connections_are_closed(pool: PgPool) {
    let app = TestApp::spawn_with(pool, &[("HTTP_IDLE_TIMEOUT_MS", "300")]).await;
    let address = app.base.trim_start_matches("http://").to_string();
    let closed = |mut stream: tokio::net::TcpStream| async move {
        let mut buffer = Vec::new();
        let read =
            tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut buffer)).await;
        assert!(read.is_ok(), "the server closed the connection");
        buffer
    };
    // Connects and says nothing.
    let silent = tokio::net::TcpStream::connect(&address).await.unwrap();
    closed(silent).await;
    // Starts a request and never finishes its headers.
    let mut slow = tokio::net::TcpStream::connect(&address).await.unwrap();
    slow.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    closed(slow).await;
    // One request, then idle on keep-alive.
    let mut idle = tokio::net::TcpStream::connect(&address).await.unwrap();
    idle.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let answer = closed(idle).await;
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"));
    app.stop().await.unwrap();
}

// ---------------------------------------------------------------------------------------
// Edge inputs that used to answer 500, and the answers' headers.

#[testkit::test(migrations = false)]
async fn edge_inputs_get_a_4xx_in_the_envelope(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (root, _) = login(&app).await;
    // The longest password the policy allows is hashed and logs in.
    let password = "ş".repeat(36);
    assert_eq!(password.len(), 72);
    let created = admin(&app, Method::POST, "/v1/admin/users", &root)
        .json(&json!({"email": "long@example.com", "name": "Long Pass", "password": password, "role": "viewer"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    login_as(&app, "long@example.com", &password).await;
    // Dates beyond what the database holds.
    for query in ["from=-262143-01-01", "to=+262142-12-31", "from=0000-01-01"] {
        let (status, error) = error_of(
            admin(
                &app,
                Method::GET,
                &format!("/v1/admin/leads?{query}"),
                &root,
            )
            .send()
            .await
            .unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{query}");
        assert_eq!(error["code"], "VALIDATION_ERROR");
    }
    // A wrong type is said in the product's words, not the parser's.
    let (status, error) = error_of(
        admin(&app, Method::POST, "/v1/admin/users", &root)
            .json(&json!({"email": "x@example.com", "name": null, "password": "Long-Enough-1", "role": "viewer"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, error["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("name"))
    );
    let message = error["message"].as_str().unwrap();
    assert!(
        !message.contains("line") && !message.contains("expected"),
        "{message}"
    );
    // Oversized header sets get the envelope too.
    let big = app
        .client
        .get(app.url("/health"))
        .header("X-Big", "a".repeat(20_000))
        .send()
        .await
        .unwrap();
    let (status, error) = error_of(big).await;
    assert_eq!(
        (status, error["code"].as_str()),
        (
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Some("HEADERS_TOO_LARGE")
        )
    );
    let mut many = app.client.get(app.url("/health"));
    for i in 0..150 {
        many = many.header(format!("x-h{i}"), "v");
    }
    let (status, _) = error_of(many.send().await.unwrap()).await;
    assert_eq!(status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    app.stop().await.unwrap();
}

#[testkit::test(migrations = false)]
async fn every_answer_carries_the_security_headers(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let login = app
        .admin(Method::POST, "/v1/admin/auth/login")
        .json(&json!({"email": crate::helpers::ROOT_EMAIL, "password": crate::helpers::ROOT_PASSWORD}))
        .send()
        .await
        .unwrap();
    let missing = app.client.get(app.url("/nowhere")).send().await.unwrap();
    let health = app.client.get(app.url("/health")).send().await.unwrap();
    for response in [login, missing, health] {
        let headers = response.headers();
        assert_eq!(headers["x-content-type-options"], "nosniff");
        assert_eq!(headers["x-frame-options"], "DENY");
        assert_eq!(headers["referrer-policy"], "no-referrer");
        assert_eq!(headers["cache-control"], "no-store");
    }
    app.stop().await.unwrap();
}

#[testkit::test(migrations = false)]
async fn the_csv_export_opens_in_a_turkish_excel(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    let (token, _) = login(&app).await;
    let mut body = form(6);
    body["company"] = json!("Çağlar; =1+1 Ltd");
    let response = post_form(&app, &body).await;
    let answer: Value = response.json().await.unwrap();
    let lead = lead_of_submission(&pool, answer["data"]["id"].as_str().unwrap()).await;
    lead_detail(&app, &token, &lead, 1).await;
    let csv = admin(
        &app,
        Method::GET,
        "/v1/admin/leads/export.csv?delimiter=semicolon",
        &token,
    )
    .send()
    .await
    .unwrap()
    .text()
    .await
    .unwrap();
    assert!(csv.starts_with("\u{FEFF}id;name;email;phone"), "{csv}");
    assert!(csv.contains(";\"Çağlar; =1+1 Ltd\";"), "{csv}");
    let comma = admin(&app, Method::GET, "/v1/admin/leads/export.csv", &token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        comma.contains(",\"Çağlar; =1+1 Ltd\","),
        "a ; is quoted in the comma variant too: {comma}"
    );
    let wrong = admin(
        &app,
        Method::GET,
        "/v1/admin/leads/export.csv?delimiter=tab",
        &token,
    )
    .send()
    .await
    .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNPROCESSABLE_ENTITY);
    app.stop().await.unwrap();
}

// ---------------------------------------------------------------------------------------
// Found by the attacker review of the first fixes.

#[testkit::test(migrations = false)]
async fn look_alike_contacts_and_invisible_names_are_refused_on_the_landing_form(pool: PgPool) {
    let app = TestApp::spawn_with(pool.clone(), &[("TRUSTED_PROXIES", "127.0.0.1/32")]).await;
    for (field, value) in [
        ("email", "victim\u{200B}@example.com"),
        ("email", "v\u{456}ctim@example.com"),
        ("email", "victim@ex\u{430}mple.com"),
        ("name", "Ahmet\u{200B}"),
        ("name", "Ahmet\u{E0041}"),
        ("name", "12345"),
        ("company", "Soft\u{AD}Hyphen"),
    ] {
        let mut body = form(8);
        body[field] = json!(value);
        let (status, error) = error_of(post_form(&app, &body).await).await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{field} {value:?}"
        );
        assert_eq!(error["field"], field);
    }
    // U+0000 in a key the form does not read is refused too.
    let mut body = form(8);
    body["na\u{0}me"] = json!("x");
    let (status, _) = error_of(post_form(&app, &body).await).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    // An Idempotency-Key that is not ASCII is refused, not silently ignored.
    let response = app
        .client
        .post(app.url("/v1/leads"))
        .header("X-API-Key", LANDING_KEY)
        .header(
            "Idempotency-Key",
            reqwest::header::HeaderValue::from_bytes(b"k\xe4y").unwrap(),
        )
        .json(&form(8))
        .send()
        .await
        .unwrap();
    let (status, error) = error_of(response).await;
    assert_eq!(
        (status, error["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("Idempotency-Key"))
    );
    assert_eq!(lead_event_count(&pool).await, 0, "no lead was recorded");
    app.stop().await.unwrap();
}

#[testkit::test(migrations = false)]
async fn ipv6_clients_are_rate_limited_by_their_network(pool: PgPool) {
    let app = TestApp::spawn_with(pool, &[("TRUSTED_PROXIES", "127.0.0.1/32")]).await;
    let mut statuses = Vec::new();
    for i in 1..=11 {
        let response = app
            .client
            .post(app.url("/v1/leads"))
            .header("X-API-Key", LANDING_KEY)
            .header("X-Forwarded-For", format!("2001:db8:77::{i:x}"))
            .json(&form(100 + i))
            .send()
            .await
            .unwrap();
        statuses.push(response.status().as_u16());
    }
    assert_eq!(statuses[..10], [201; 10]);
    assert_eq!(
        statuses[10], 429,
        "the eleventh from the same /64 is limited"
    );
    app.stop().await.unwrap();
}

#[testkit::test(migrations = false)]
async fn a_body_that_is_not_json_gets_no_parser_text(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let response = app
        .admin(Method::POST, "/v1/admin/auth/login")
        .header("Content-Type", "application/json")
        .body("{\"email\":")
        .send()
        .await
        .unwrap();
    let (status, error) = error_of(response).await;
    assert_eq!(
        (status, error["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("INVALID_JSON"))
    );
    assert!(error.get("detail").is_none(), "{error}");
    app.stop().await.unwrap();
}
