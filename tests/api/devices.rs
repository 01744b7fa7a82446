//! Desktop licensing (SPEC §4 "Devices", §5 verify, §6; seed 002 §4, seed 001 "Cihaz
//! Yönetimi"): verify, device approval and its limits, release, the live notices on
//! `/ws/admin` and `/ws/device`.

use std::time::Duration;

use aggregates::license::{License, LicenseCommand, Owner};
use eventstore::{CommandHandler, EventStore, Metadata};
use futures_util::{SinkExt, StreamExt};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};
use uuid::Uuid;

use crate::helpers::{ADMIN_SECRET, TestApp, login};

type Socket = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;
type Headers = Vec<(&'static str, String)>;

struct Setup {
    app: TestApp,
    token: String,
}

async fn setup(pool: PgPool) -> Setup {
    let app = TestApp::spawn_with(
        pool,
        &[
            ("TRUSTED_PROXIES", "127.0.0.1/32"),
            ("ADMIN_RATE_LIMIT_PER_MINUTE", "100000"),
        ],
    )
    .await;
    let (token, _) = login(&app).await;
    Setup { app, token }
}

fn admin(app: &TestApp, method: Method, path: &str, token: &str) -> reqwest::RequestBuilder {
    app.client
        .request(method, app.url(path))
        .header("X-Admin-Secret", ADMIN_SECRET)
        .bearer_auth(token)
}

async fn send(request: reqwest::RequestBuilder) -> (StatusCode, Value) {
    let response = request.send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// A license as an admin creates it: (id, key).
async fn license(s: &Setup, package: &str, max_devices: u32) -> (String, String) {
    let (status, body) = send(
        admin(&s.app, Method::POST, "/v1/admin/licenses", &s.token).json(&json!({
            "ownerName": "Ahmet Kaya",
            "ownerEmail": "ahmet@kayasmmm.com",
            "companyName": "Kaya SMMM",
            "packageType": package,
            "maxDevices": max_devices,
            "durationMonths": 12,
            "monthlyTokenLimit": 500000,
        })),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let l = &body["data"]["license"];
    (
        l["id"].as_str().unwrap().to_string(),
        l["licenseKey"].as_str().unwrap().to_string(),
    )
}

fn print(n: u8) -> String {
    format!("{n:02x}").repeat(32)
}

fn device_body(fingerprint: &str, name: &str) -> Value {
    json!({
        "fingerprint": fingerprint,
        "deviceName": name,
        "osType": "windows",
        "osVersion": "Windows 11 Pro 23H2",
        "appVersion": "1.1.0",
        "ipAddress": "85.123.45.67",
    })
}

async fn verify_on(app: &TestApp, key: &str, fingerprint: &str, name: &str) -> (StatusCode, Value) {
    send(
        app.client
            .post(app.url("/v1/licenses/verify"))
            .header("X-License-Key", key)
            .header("X-Device-Fingerprint", fingerprint)
            .header("X-App-Version", "1.1.0")
            .json(&device_body(fingerprint, name)),
    )
    .await
}

async fn verify(s: &Setup, key: &str, fingerprint: &str, name: &str) -> (StatusCode, Value) {
    verify_on(&s.app, key, fingerprint, name).await
}

async fn patch(s: &Setup, license: &str, device: &str, body: Value) -> (StatusCode, Value) {
    send(
        admin(
            &s.app,
            Method::PATCH,
            &format!("/v1/admin/licenses/{license}/devices/{device}"),
            &s.token,
        )
        .json(&body),
    )
    .await
}

async fn devices(s: &Setup, license: &str) -> Value {
    let (status, body) = send(admin(
        &s.app,
        Method::GET,
        &format!("/v1/admin/licenses/{license}/devices"),
        &s.token,
    ))
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["data"].clone()
}

async fn lifecycle(s: &Setup, license: &str, action: &str) {
    let (status, body) = send(admin(
        &s.app,
        Method::POST,
        &format!("/v1/admin/licenses/{license}/{action}"),
        &s.token,
    ))
    .await;
    assert_eq!(status, StatusCode::OK, "{action}: {body}");
}

fn error_code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("")
}

async fn admin_socket(s: &Setup) -> Socket {
    let url = format!("{}/ws/admin", s.app.base.replace("http://", "ws://"));
    let (mut socket, _) = connect_async(&url).await.unwrap();
    socket
        .send(Message::text(
            json!({"type": "auth", "token": s.token}).to_string(),
        ))
        .await
        .unwrap();
    next_of(&mut socket, "AUTH_OK").await;
    socket
}

/// The next message of `kind`, skipping others; fails after 10 s.
async fn next_of(socket: &mut Socket, kind: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let message = tokio::time::timeout_at(deadline, socket.next())
            .await
            .unwrap_or_else(|_| panic!("no {kind} in time"))
            .expect("socket open")
            .unwrap();
        if let Message::Text(text) = message {
            let value: Value = serde_json::from_str(&text).unwrap();
            if value["type"] == kind {
                return value;
            }
        }
    }
}

#[testkit::test(migrations = false)]
async fn the_first_device_is_approved_master_and_answers_as_seed_002(pool: PgPool) {
    let s = setup(pool.clone()).await;
    let (id, key) = license(&s, "pro", 5).await;
    let (status, body) = verify(&s, &key, &print(1), "DESKTOP-AHMET").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let data = &body["data"];
    assert_eq!(data["valid"], true);
    assert_eq!(data["license"]["key"], key.as_str());
    assert_eq!(data["license"]["ownerName"], "Ahmet Kaya");
    assert_eq!(data["license"]["companyName"], "Kaya SMMM");
    assert_eq!(data["license"]["packageType"], "pro");
    let days = data["license"]["daysRemaining"].as_i64().unwrap();
    assert!((365..=366).contains(&days), "{days}");
    assert!(data["device"]["id"].as_str().unwrap().starts_with("dev_"));
    assert_eq!(data["device"]["status"], "approved");
    assert_eq!(data["device"]["isMaster"], true);
    assert!(data["device"].get("message").is_none());
    assert_eq!(
        data["usage"],
        json!({"tokensUsed": 0, "tokensLimit": 500000, "tokensRemaining": 500000,
               "resetDate": data["usage"]["resetDate"]})
    );
    let reset = data["usage"]["resetDate"].as_str().unwrap();
    assert!(reset.ends_with("-01T00:00:00.000Z"), "{reset}");
    assert_eq!(
        data["features"],
        json!({"documentAnalysis": true, "telegramIntegration": true,
               "multiDevice": true, "prioritySupport": false})
    );
    // The signed offline certificate covers this license and this computer.
    let certificate = data["certificate"]
        .as_str()
        .expect("an approved device's certificate");
    let claims = crate::helpers::test_config(&pool, &[])
        .license_certifier
        .verify(certificate)
        .expect("signed by the gateway's key");
    assert_eq!(claims.license_id.to_string(), id);
    assert_eq!(claims.fingerprint, print(1));
    assert_eq!(claims.device_id, data["device"]["id"].as_str().unwrap());
    // The same desktop again: the same device, nothing new registered.
    let (_, again) = verify(&s, &key, &print(1), "DESKTOP-AHMET").await;
    assert_eq!(again["data"]["device"]["id"], data["device"]["id"]);
    let device_events = || {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM events WHERE event_type LIKE 'Device%'")
            .fetch_one(&pool)
    };
    // Unchanged details and lastActiveAt cost no event; a new name is one.
    assert_eq!(device_events().await.unwrap(), 1);
    let (status, _) = verify(&s, &key, &print(1), "DESKTOP-AHMET-2").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(device_events().await.unwrap(), 2);
    verify(&s, &key, &print(1), "DESKTOP-AHMET").await;
    let list = devices(&s, &id).await;
    assert_eq!(list["devices"].as_array().unwrap().len(), 1);
    let device = &list["devices"][0];
    assert_eq!(device["fingerprint"], print(1));
    assert_eq!(device["deviceName"], "DESKTOP-AHMET");
    assert_eq!(device["osVersion"], "Windows 11 Pro 23H2");
    assert_eq!(device["appVersion"], "1.1.0");
    assert_eq!(device["ipAddress"], "127.0.0.1");
    assert!(device["lastActiveAt"].is_string());
    assert_eq!(
        (
            &list["maxDevices"],
            &list["approvedCount"],
            &list["pendingCount"]
        ),
        (&json!(5), &json!(1), &json!(0))
    );
    // The license list shows the seat taken and the last activity.
    let (_, detail) = send(admin(
        &s.app,
        Method::GET,
        &format!("/v1/admin/licenses/{id}"),
        &s.token,
    ))
    .await;
    assert_eq!(detail["data"]["currentDevices"], 1);
    assert!(detail["data"]["lastActiveAt"].is_string());
    // The desktop is answered from memory (ADR 0011).
    let ready: Value = s
        .app
        .client
        .get(s.app.url("/ready"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        ready["data"]["verifyView"],
        json!({"following": true}),
        "{ready}"
    );
    let metrics = s
        .app
        .client
        .get(s.app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("verify_view_entries 1"), "{metrics}");
    s.app.stop().await.unwrap();
}

#[testkit::test(migrations = false)]
async fn a_second_device_waits_for_approval_and_the_panel_is_told(pool: PgPool) {
    let s = setup(pool).await;
    let (id, key) = license(&s, "pro", 5).await;
    verify(&s, &key, &print(1), "DESKTOP-AHMET").await;
    let mut panel = admin_socket(&s).await;
    let (status, body) = verify(&s, &key, &print(2), "LAPTOP-AHMET").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let data = &body["data"];
    assert_eq!(data["valid"], true);
    assert_eq!(data["device"]["status"], "pending");
    assert_eq!(data["device"]["isMaster"], false);
    assert_eq!(
        data["device"]["message"],
        "Bu cihaz onay bekliyor. Admin onayladıktan sonra kullanabilirsiniz."
    );
    assert_eq!(data["usage"], Value::Null);
    assert_eq!(data["features"], Value::Null);
    assert_eq!(data["certificate"], Value::Null);
    let pending = next_of(&mut panel, "NEW_DEVICE_PENDING").await;
    assert_eq!(pending["data"]["license"]["key"], key.as_str());
    assert_eq!(pending["data"]["license"]["ownerName"], "Ahmet Kaya");
    assert_eq!(pending["data"]["device"]["name"], "LAPTOP-AHMET");
    assert_eq!(pending["data"]["device"]["os"], "windows");
    let device = data["device"]["id"].as_str().unwrap();
    // Approval: the panel hears of it, the desktop gets its usage on the next verify.
    let (status, body) = patch(&s, &id, device, json!({"status": "approved"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["device"]["status"], "approved");
    assert_eq!(body["data"]["device"]["isMaster"], false);
    assert_eq!(body["data"]["notificationSent"], false);
    let changed = next_of(&mut panel, "DEVICE_STATUS_CHANGED").await;
    assert_eq!(changed["data"]["id"], device);
    assert_eq!(changed["data"]["status"], "approved");
    let (_, body) = verify(&s, &key, &print(2), "LAPTOP-AHMET").await;
    assert_eq!(body["data"]["device"]["status"], "approved");
    assert!(body["data"]["usage"].is_object());
    let list = devices(&s, &id).await;
    assert_eq!(list["approvedCount"], 2);
    s.app.stop().await.unwrap();
}

/// A license written straight to the log, for states the API cannot produce (long expired).
async fn old_license(pool: &PgPool, key: &str, days_ago: i64) -> (String, String) {
    let id = Uuid::now_v7();
    let config = crate::helpers::test_config(pool, &[]);
    let sealer = eventstore::sealing::Sealer::new(
        pool.clone(),
        *secrecy::ExposeSecret::expose_secret(&config.encryption_key),
    );
    CommandHandler::<License>::new(EventStore::new(pool.clone()), ())
        .execute(
            &id.to_string(),
            LicenseCommand::Create {
                key: aggregates::license::SealedText(sealer.encrypt_with_master(key.as_bytes())),
                key_digest: sealer.digest(&format!("license-key:{key}")),
                owner: Owner {
                    name: "Eski Müşteri".into(),
                    email: "eski@example.com".into(),
                    phone: None,
                    company_name: "Eski SMMM".into(),
                    company_vkn: None,
                },
                package: "basic".into(),
                max_devices: 1,
                monthly_token_limit: 1000,
                duration_months: 1,
                gemini: None,
                telegram: None,
                lead_id: None,
                now: chrono::Utc::now() - chrono::Duration::days(days_ago),
            },
            &Metadata::actor("test"),
        )
        .await
        .unwrap();
    (id.to_string(), key.to_string())
}

#[testkit::test(migrations = false)]
async fn errors_come_in_the_spec_order(pool: PgPool) {
    let s = setup(pool.clone()).await;
    // Unknown and malformed keys answer alike.
    let (status, unknown) = verify(&s, "DOMIZAN-PRO5-XXXX-YYYY", &print(1), "PC").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, malformed) = verify(&s, "not a key", &print(1), "PC").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(unknown, malformed);
    assert_eq!(error_code(&unknown), "LICENSE_NOT_FOUND");
    // Expired.
    let (expired_id, expired_key) = old_license(&pool, "DOMIZAN-BAS1-OLD0-OLD0", 400).await;
    // The read model follows the log: wait for the admin GET to show it (a verify poll
    // would count as failed attempts).
    for _ in 0..200 {
        let (status, _) = send(admin(
            &s.app,
            Method::GET,
            &format!("/v1/admin/licenses/{expired_id}"),
            &s.token,
        ))
        .await;
        if status == StatusCode::OK {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let (status, body) = verify(&s, &expired_key, &print(1), "PC").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(error_code(&body), "LICENSE_EXPIRED");
    assert!(body["error"]["expiredAt"].is_string());
    assert_eq!(
        body["error"]["message"],
        "Lisansınız sona ermiş. Yenilemek için bizimle iletişime geçin."
    );
    // Revoked and expired: revoked wins.
    lifecycle(&s, &expired_id, "revoke").await;
    let (status, body) = verify(&s, &expired_key, &print(1), "PC").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(error_code(&body), "LICENSE_REVOKED");
    // Suspended; then a blocked device once reactivated.
    let (id, key) = license(&s, "pro", 5).await;
    verify(&s, &key, &print(1), "PC-1").await;
    let (_, second) = verify(&s, &key, &print(2), "PC-2").await;
    let second_id = second["data"]["device"]["id"].as_str().unwrap().to_string();
    lifecycle(&s, &id, "suspend").await;
    let (status, body) = verify(&s, &key, &print(1), "PC-1").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(error_code(&body), "LICENSE_SUSPENDED");
    lifecycle(&s, &id, "reactivate").await;
    let (status, _) = patch(&s, &id, &second_id, json!({"status": "blocked"})).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = verify(&s, &key, &print(2), "PC-2").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(error_code(&body), "DEVICE_BLOCKED");
    // Nor can it release its seat to come back as a new device.
    let (status, body) = send(
        s.app
            .client
            .post(s.app.url("/v1/licenses/devices/release"))
            .header("X-License-Key", key.clone())
            .header("X-Device-Fingerprint", print(2)),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(error_code(&body), "DEVICE_BLOCKED");
    let (status, _) = verify(&s, &key, &print(1), "PC-1").await;
    assert_eq!(status, StatusCode::OK);
    s.app.stop().await.unwrap();
}

#[testkit::test(migrations = false)]
async fn bad_verify_input_is_refused_with_its_field(pool: PgPool) {
    let s = setup(pool).await;
    let (id, key) = license(&s, "pro", 5).await;
    let post = |headers: Headers, body: Value| {
        let mut request = s.app.client.post(s.app.url("/v1/licenses/verify"));
        for (k, v) in headers {
            request = request.header(k, v);
        }
        send(request.json(&body))
    };
    let key_header = ("X-License-Key", key.clone());
    let cases: Vec<(Headers, Value, &str)> = vec![
        (
            vec![key_header.clone()],
            device_body("abc", "PC"),
            "fingerprint",
        ),
        (
            vec![key_header.clone()],
            device_body(&"z".repeat(64), "PC"),
            "fingerprint",
        ),
        (
            vec![key_header.clone(), ("X-Device-Fingerprint", print(9))],
            device_body(&print(1), "PC"),
            "fingerprint",
        ),
        (
            vec![key_header.clone(), ("X-App-Version", "2.0.0".into())],
            device_body(&print(1), "PC"),
            "appVersion",
        ),
        (
            vec![key_header.clone()],
            json!({"fingerprint": print(1), "osType": "windows", "osVersion": "11", "appVersion": "1"}),
            "deviceName",
        ),
        (
            vec![key_header.clone()],
            device_body(&print(1), "PC\u{7}"),
            "deviceName",
        ),
    ];
    for (headers, body, field) in cases {
        let (status, answer) = post(headers, body).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
        assert_eq!(answer["error"]["field"], field, "{answer}");
    }
    // Nothing was registered.
    assert_eq!(devices(&s, &id).await["devices"], json!([]));
    s.app.stop().await.unwrap();
}

#[testkit::test(migrations = false)]
async fn approvals_stop_at_max_devices_even_when_they_race(pool: PgPool) {
    let s = setup(pool).await;
    let (id, key) = license(&s, "pro", 2).await;
    verify(&s, &key, &print(1), "PC-1").await;
    let mut pending = Vec::new();
    for n in [2, 3] {
        let (_, body) = verify(&s, &key, &print(n), &format!("PC-{n}")).await;
        pending.push(body["data"]["device"]["id"].as_str().unwrap().to_string());
    }
    let (a, b) = tokio::join!(
        patch(&s, &id, &pending[0], json!({"status": "approved"})),
        patch(&s, &id, &pending[1], json!({"status": "approved"})),
    );
    let mut statuses = [a.0, b.0];
    statuses.sort();
    assert_eq!(
        statuses,
        [StatusCode::OK, StatusCode::CONFLICT],
        "{a:?} {b:?}"
    );
    let refused = if a.0 == StatusCode::CONFLICT {
        &a.1
    } else {
        &b.1
    };
    assert_eq!(error_code(refused), "DEVICE_LIMIT_REACHED");
    let list = devices(&s, &id).await;
    assert_eq!(
        (&list["approvedCount"], &list["pendingCount"]),
        (&json!(2), &json!(1))
    );
    // Without a race too.
    let (_, fourth) = verify(&s, &key, &print(4), "PC-4").await;
    let fourth = fourth["data"]["device"]["id"].as_str().unwrap();
    let (status, body) = patch(&s, &id, fourth, json!({"status": "approved"})).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(error_code(&body), "DEVICE_LIMIT_REACHED");
    s.app.stop().await.unwrap();
}

#[testkit::test(migrations = false)]
async fn making_another_device_master_moves_the_flag(pool: PgPool) {
    let s = setup(pool).await;
    let (id, key) = license(&s, "pro", 5).await;
    let (_, first) = verify(&s, &key, &print(1), "PC-1").await;
    let first = first["data"]["device"]["id"].as_str().unwrap().to_string();
    let (_, second) = verify(&s, &key, &print(2), "PC-2").await;
    let second = second["data"]["device"]["id"].as_str().unwrap().to_string();
    // A pending device cannot be master; the master cannot just drop the flag.
    let (status, body) = patch(&s, &id, &second, json!({"isMaster": true})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["field"], "isMaster");
    let (status, _) = patch(&s, &id, &first, json!({"isMaster": false})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    // Approve and make master at once; ids work without their prefix too.
    let bare = second.strip_prefix("dev_").unwrap();
    let (status, body) = patch(
        &s,
        &id,
        bare,
        json!({"status": "approved", "isMaster": true}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["device"]["isMaster"], true);
    let list = devices(&s, &id).await;
    let masters: Vec<&Value> = list["devices"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["isMaster"] == true)
        .collect();
    assert_eq!(masters.len(), 1);
    assert_eq!(masters[0]["id"], second.as_str());
    // Blocking the master hands the flag to the other approved device.
    let (status, _) = patch(&s, &id, &second, json!({"status": "blocked"})).await;
    assert_eq!(status, StatusCode::OK);
    let (_, body) = verify(&s, &key, &print(1), "PC-1").await;
    assert_eq!(body["data"]["device"]["isMaster"], true);
    // Unknown devices and another license's devices are not found.
    let (status, body) = patch(&s, &id, &format!("dev_{}", Uuid::now_v7()), json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error_code(&body), "DEVICE_NOT_FOUND");
    let (other, _) = license(&s, "pro", 5).await;
    let (status, _) = patch(&s, &other, &first, json!({"status": "blocked"})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    s.app.stop().await.unwrap();
}

#[testkit::test(migrations = false)]
async fn a_device_releases_its_seat_and_another_takes_it(pool: PgPool) {
    let s = setup(pool).await;
    let (id, key) = license(&s, "basic", 1).await;
    verify(&s, &key, &print(1), "OLD-PC").await;
    let (_, new) = verify(&s, &key, &print(2), "NEW-PC").await;
    assert_eq!(new["data"]["device"]["status"], "pending");
    let new_id = new["data"]["device"]["id"].as_str().unwrap().to_string();
    let (status, _) = patch(&s, &id, &new_id, json!({"status": "approved"})).await;
    assert_eq!(status, StatusCode::CONFLICT);
    let release = |fingerprint: String| {
        send(
            s.app
                .client
                .post(s.app.url("/v1/licenses/devices/release"))
                .header("X-License-Key", key.clone())
                .header("X-Device-Fingerprint", fingerprint),
        )
    };
    let (status, body) = release(print(1)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["device"]["status"], "released");
    // The seat is free at once.
    let (status, body) = patch(&s, &id, &new_id, json!({"status": "approved"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["device"]["isMaster"], true);
    let list = devices(&s, &id).await;
    let old = list["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["fingerprint"] == print(1))
        .unwrap();
    assert_eq!(old["status"], "released");
    // The old computer comes back: it queues like any new device.
    let (_, back) = verify(&s, &key, &print(1), "OLD-PC").await;
    assert_eq!(back["data"]["device"]["status"], "pending");
    // A release with an unknown key is refused like verify.
    let (status, _) = send(
        s.app
            .client
            .post(s.app.url("/v1/licenses/devices/release"))
            .header("X-License-Key", "DOMIZAN-NOPE-NOPE-NOPE")
            .header("X-Device-Fingerprint", print(1)),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    s.app.stop().await.unwrap();
}

#[testkit::test(migrations = false)]
async fn a_suspension_on_one_instance_stops_verify_on_another(pool: PgPool) {
    let s = setup(pool.clone()).await;
    let other = TestApp::spawn_with(pool, &[("TRUSTED_PROXIES", "127.0.0.1/32")]).await;
    let (id, key) = license(&s, "pro", 5).await;
    let (status, _) = verify_on(&other, &key, &print(1), "PC-1").await;
    assert_eq!(status, StatusCode::OK);
    // `other` now answers this desktop from its verify view.
    let (status, _) = verify_on(&other, &key, &print(1), "PC-1").await;
    assert_eq!(status, StatusCode::OK);
    lifecycle(&s, &id, "suspend").await;
    // The instance that suspended knows at once.
    let (status, body) = verify(&s, &key, &print(1), "PC-1").await;
    assert_eq!(error_code(&body), "LICENSE_SUSPENDED", "{status} {body}");
    // The other one once its live feed has read the log (ADR 0011: one poll, 100 ms, plus
    // the projection's lag); the bound here is only against hanging.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = verify_on(&other, &key, &print(1), "PC-1").await;
        if error_code(&body) == "LICENSE_SUSPENDED" {
            assert_eq!(status, StatusCode::FORBIDDEN);
            break;
        }
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(
            tokio::time::Instant::now() < deadline,
            "the other instance never saw the suspension"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    other.stop().await.unwrap();
    s.app.stop().await.unwrap();
}

#[testkit::test(migrations = false)]
async fn a_waiting_desktop_hears_of_its_approval_on_ws_device(pool: PgPool) {
    let s = setup(pool).await;
    let (id, key) = license(&s, "pro", 5).await;
    verify(&s, &key, &print(1), "PC-1").await;
    let (_, second) = verify(&s, &key, &print(2), "PC-2").await;
    let device = second["data"]["device"]["id"].as_str().unwrap().to_string();
    let url = format!("{}/ws/device", s.app.base.replace("http://", "ws://"));
    // A wrong fingerprint is refused.
    let (mut stranger, _) = connect_async(&url).await.unwrap();
    stranger
        .send(Message::text(
            json!({"type": "auth", "licenseKey": key, "fingerprint": print(7)}).to_string(),
        ))
        .await
        .unwrap();
    match tokio::time::timeout(Duration::from_secs(5), stranger.next()).await {
        Ok(Some(Ok(Message::Close(Some(frame))))) => assert_eq!(u16::from(frame.code), 4401),
        other => panic!("expected a close, got {other:?}"),
    }
    let (mut desktop, _) = connect_async(&url).await.unwrap();
    desktop
        .send(Message::text(
            json!({"type": "auth", "licenseKey": key, "fingerprint": print(2)}).to_string(),
        ))
        .await
        .unwrap();
    let ok = next_of(&mut desktop, "AUTH_OK").await;
    assert_eq!(ok["device"]["status"], "pending");
    let (status, body) = patch(&s, &id, &device, json!({"status": "approved"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["notificationSent"], true);
    let notice = next_of(&mut desktop, "DEVICE_STATUS_CHANGED").await;
    assert_eq!(notice["data"]["device"]["id"], device.as_str());
    assert_eq!(notice["data"]["device"]["status"], "approved");
    // A license change reaches the desktop too.
    lifecycle(&s, &id, "suspend").await;
    let update = next_of(&mut desktop, "LICENSE_UPDATED").await;
    assert_eq!(update["data"]["license"]["status"], "suspended");
    // Blocked: it hears of it, then the socket closes — a blocked device listens no more.
    let (status, _) = patch(&s, &id, &device, json!({"status": "blocked"})).await;
    assert_eq!(status, StatusCode::OK);
    let notice = next_of(&mut desktop, "DEVICE_STATUS_CHANGED").await;
    assert_eq!(notice["data"]["device"]["status"], "blocked");
    loop {
        match tokio::time::timeout(Duration::from_secs(5), desktop.next()).await {
            Ok(Some(Ok(Message::Close(Some(frame))))) => {
                assert_eq!(
                    (u16::from(frame.code), frame.reason.as_str()),
                    (4403, "DEVICE_BLOCKED")
                );
                break;
            }
            Ok(Some(Ok(Message::Text(_) | Message::Ping(_) | Message::Pong(_)))) => continue,
            other => panic!("expected a close, got {other:?}"),
        }
    }
    s.app.stop().await.unwrap();
}

#[testkit::test(migrations = false)]
async fn guesses_are_limited_per_client_network_and_its_known_desktops_go_on(pool: PgPool) {
    let s = setup(pool).await;
    let (_, key) = license(&s, "pro", 5).await;
    let attempt = |key: String, ip: &'static str, fingerprint: String| {
        send(
            s.app
                .client
                .post(s.app.url("/v1/licenses/verify"))
                .header("X-License-Key", key)
                .header("X-Forwarded-For", ip)
                .json(&device_body(&fingerprint, "PC")),
        )
    };
    let office = "198.51.100.7";
    // A desktop of the office, known before the guessing starts; valid verifies cost nothing.
    for _ in 0..25 {
        let (status, _) = attempt(key.clone(), office, print(1)).await;
        assert_eq!(status, StatusCode::OK);
    }
    // A burst of guesses at once: exactly the limit is looked up, the rest wait.
    let guesses = futures_util::future::join_all(
        (0..40).map(|n| attempt(format!("DOMIZAN-GUES-S{n:03}-XXXX"), office, print(1))),
    )
    .await;
    let count = |code: StatusCode| guesses.iter().filter(|(s, _)| *s == code).count();
    assert_eq!(count(StatusCode::UNAUTHORIZED), 20);
    assert_eq!(count(StatusCode::TOO_MANY_REQUESTS), 20);
    // The right key from a new device waits like a guess: the limit tells a guesser nothing.
    let (status, body) = attempt(key.clone(), office, print(2)).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert!(body["error"]["retryAfter"].as_u64().unwrap() >= 1);
    // The office's known desktop goes on working; another network is not limited.
    let (status, body) = attempt(key.clone(), office, print(1)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _) = attempt(key, "198.51.100.8", print(2)).await;
    assert_eq!(status, StatusCode::OK);
    s.app.stop().await.unwrap();
}

#[testkit::test(migrations = false)]
async fn a_block_is_not_undone_by_a_new_fingerprint(pool: PgPool) {
    let s = setup(pool).await;
    let (id, key) = license(&s, "pro", 3).await;
    let (_, first) = verify(&s, &key, &print(1), "PC-1").await;
    let first = first["data"]["device"]["id"].as_str().unwrap().to_string();
    let (status, _) = patch(&s, &id, &first, json!({"status": "blocked"})).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = verify(&s, &key, &print(9), "Yeni PC").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["device"]["status"], "pending", "{body}");
    assert!(body["data"]["certificate"].is_null());
    s.app.stop().await.unwrap();
}

#[testkit::test(migrations = false)]
async fn a_device_holds_at_most_four_sockets(pool: PgPool) {
    let s = setup(pool).await;
    let (_, key) = license(&s, "pro", 5).await;
    verify(&s, &key, &print(1), "PC-1").await;
    let url = format!("{}/ws/device", s.app.base.replace("http://", "ws://"));
    let auth = json!({"type": "auth", "licenseKey": key, "fingerprint": print(1)}).to_string();
    let mut open = Vec::new();
    for _ in 0..4 {
        let (mut socket, _) = connect_async(&url).await.unwrap();
        socket.send(Message::text(auth.clone())).await.unwrap();
        next_of(&mut socket, "AUTH_OK").await;
        open.push(socket);
    }
    let (mut fifth, _) = connect_async(&url).await.unwrap();
    fifth.send(Message::text(auth.clone())).await.unwrap();
    match tokio::time::timeout(Duration::from_secs(5), fifth.next()).await {
        Ok(Some(Ok(Message::Close(Some(frame))))) => assert_eq!(
            (u16::from(frame.code), frame.reason.as_str()),
            (4429, "TOO_MANY_CONNECTIONS")
        ),
        other => panic!("expected a close, got {other:?}"),
    }
    // One closes: its place is free again.
    let mut first = open.remove(0);
    first.close(None).await.unwrap();
    while let Some(Ok(_)) = first.next().await {}
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (mut again, _) = connect_async(&url).await.unwrap();
        again.send(Message::text(auth.clone())).await.unwrap();
        match tokio::time::timeout(Duration::from_secs(5), again.next()).await {
            Ok(Some(Ok(Message::Text(text)))) if text.contains("AUTH_OK") => break,
            _ => assert!(
                tokio::time::Instant::now() < deadline,
                "the freed place was never given again"
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    s.app.stop().await.unwrap();
}

#[testkit::test(migrations = false)]
async fn the_device_limit_cannot_go_below_the_approved_devices(pool: PgPool) {
    let s = setup(pool).await;
    let (id, key) = license(&s, "pro", 3).await;
    verify(&s, &key, &print(1), "PC-1").await;
    let (_, second) = verify(&s, &key, &print(2), "PC-2").await;
    let second = second["data"]["device"]["id"].as_str().unwrap().to_string();
    let (status, _) = patch(&s, &id, &second, json!({"status": "approved"})).await;
    assert_eq!(status, StatusCode::OK);
    let limit = |max: u32| {
        send(
            admin(
                &s.app,
                Method::PATCH,
                &format!("/v1/admin/licenses/{id}"),
                &s.token,
            )
            .json(&json!({"maxDevices": max})),
        )
    };
    let (status, body) = limit(1).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["field"], "maxDevices", "{body}");
    assert_eq!(devices(&s, &id).await["maxDevices"], 3);
    let (status, body) = limit(2).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(devices(&s, &id).await["maxDevices"], 2);
    s.app.stop().await.unwrap();
}

#[testkit::test(migrations = false)]
async fn a_desktop_moving_between_networks_writes_no_event(pool: PgPool) {
    let s = setup(pool.clone()).await;
    let (id, key) = license(&s, "pro", 5).await;
    let from = |ip: &'static str| {
        send(
            s.app
                .client
                .post(s.app.url("/v1/licenses/verify"))
                .header("X-License-Key", key.clone())
                .header("X-Forwarded-For", ip)
                .json(&device_body(&print(1), "PC-1")),
        )
    };
    let (status, _) = from("198.51.100.1").await;
    assert_eq!(status, StatusCode::OK);
    let events = || {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM events WHERE event_type LIKE 'Device%'")
            .fetch_one(&pool)
    };
    let before = events().await.unwrap();
    for n in 0..20 {
        let ip = if n % 2 == 0 {
            "198.51.100.2"
        } else {
            "203.0.113.9"
        };
        let (status, _) = from(ip).await;
        assert_eq!(status, StatusCode::OK);
    }
    assert_eq!(events().await.unwrap(), before);
    // A changed name is still an event, carrying the address of that moment.
    let (status, _) = send(
        s.app
            .client
            .post(s.app.url("/v1/licenses/verify"))
            .header("X-License-Key", key.clone())
            .header("X-Forwarded-For", "203.0.113.9")
            .json(&device_body(&print(1), "PC-1-NEW")),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(events().await.unwrap(), before + 1);
    let list = devices(&s, &id).await;
    assert_eq!(list["devices"][0]["ipAddress"], "203.0.113.9");
    s.app.stop().await.unwrap();
}

#[testkit::test(migrations = false)]
async fn release_does_not_confirm_a_key_without_its_device(pool: PgPool) {
    let s = setup(pool).await;
    let (_, key) = license(&s, "pro", 5).await;
    verify(&s, &key, &print(1), "PC-1").await;
    let release = |key: String, fingerprint: String| {
        send(
            s.app
                .client
                .post(s.app.url("/v1/licenses/devices/release"))
                .header("X-License-Key", key)
                .header("X-Device-Fingerprint", fingerprint),
        )
    };
    let (real, real_body) = release(key.clone(), print(9)).await;
    let (fake, fake_body) = release("DOMIZAN-PRO5-ZZZZ-ZZZZ".into(), print(9)).await;
    assert_eq!(
        (real, fake),
        (StatusCode::UNAUTHORIZED, StatusCode::UNAUTHORIZED)
    );
    assert_eq!(real_body["error"], fake_body["error"]);
    s.app.stop().await.unwrap();
}

#[testkit::test(migrations = false)]
async fn a_limited_network_learns_nothing_of_a_license_on_ws_device(pool: PgPool) {
    let s = setup(pool).await;
    let (id, key) = license(&s, "pro", 5).await;
    verify(&s, &key, &print(1), "PC-1").await;
    lifecycle(&s, &id, "revoke").await;
    // From loopback (the client network of this test) 20 guesses use up the budget.
    for n in 0..20 {
        let (status, _) = send(
            s.app
                .client
                .post(s.app.url("/v1/licenses/verify"))
                .header("X-License-Key", format!("DOMIZAN-GUES-S{n:03}-XXXX"))
                .json(&device_body(&print(1), "PC")),
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let url = format!("{}/ws/device", s.app.base.replace("http://", "ws://"));
    let close_of = |fingerprint: String| {
        let url = url.clone();
        let key = key.clone();
        async move {
            let (mut socket, _) = connect_async(&url).await.unwrap();
            socket
                .send(Message::text(
                    json!({"type": "auth", "licenseKey": key, "fingerprint": fingerprint})
                        .to_string(),
                ))
                .await
                .unwrap();
            match tokio::time::timeout(Duration::from_secs(5), socket.next()).await {
                Ok(Some(Ok(Message::Close(Some(frame))))) => {
                    (u16::from(frame.code), frame.reason.to_string())
                }
                other => panic!("expected a close, got {other:?}"),
            }
        }
    };
    // Verify answers the known desktop too, limited or not.
    let (_, body) = verify(&s, &key, &print(1), "PC-1").await;
    assert_eq!(error_code(&body), "LICENSE_REVOKED", "{body}");
    // A revoked key with a stranger's fingerprint looks like any guess...
    assert_eq!(
        close_of(print(7)).await,
        (4429, "RATE_LIMIT_EXCEEDED".into())
    );
    // ...while the license's own desktop is told.
    assert_eq!(close_of(print(1)).await, (4403, "LICENSE_REVOKED".into()));
    s.app.stop().await.unwrap();
}

#[testkit::test(migrations = false)]
async fn a_network_holds_at_most_sixteen_sockets_waiting_to_authenticate(pool: PgPool) {
    let s = setup(pool).await;
    let url = format!("{}/ws/device", s.app.base.replace("http://", "ws://"));
    let mut waiting = Vec::new();
    for _ in 0..16 {
        waiting.push(connect_async(&url).await.unwrap().0);
    }
    // The hub counts a socket once its task runs; give the sixteen a moment.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (mut one_more, _) = connect_async(&url).await.unwrap();
    match tokio::time::timeout(Duration::from_secs(3), one_more.next()).await {
        Ok(Some(Ok(Message::Close(Some(frame))))) => assert_eq!(
            (u16::from(frame.code), frame.reason.as_str()),
            (4429, "TOO_MANY_CONNECTIONS")
        ),
        other => panic!("expected a close, got {other:?}"),
    }
    // One of them authenticates (and fails): its place is free again.
    waiting[0]
        .send(Message::text(
            json!({"type": "auth", "licenseKey": "DOMIZAN-NOPE-NOPE-NOPE", "fingerprint": print(1)})
                .to_string(),
        ))
        .await
        .unwrap();
    match tokio::time::timeout(Duration::from_secs(3), waiting[0].next()).await {
        Ok(Some(Ok(Message::Close(Some(frame))))) => assert_eq!(u16::from(frame.code), 4401),
        other => panic!("expected a close, got {other:?}"),
    }
    let (mut again, _) = connect_async(&url).await.unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(500), again.next())
            .await
            .is_err(),
        "a freed place is given again (the socket waits for its auth message)"
    );
    s.app.stop().await.unwrap();
}
