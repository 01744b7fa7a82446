//! Licenses, plans and customers (SPEC §4, §9; seeds 000 §5 and 001 "Lisans Yönetimi"),
//! against a fake Telegram Bot API and a fake SMTP server on loopback.

use std::time::Duration;

use aggregates::license::{License, LicenseCommand, Owner, SealedText};
use eventstore::sealing::Sealer;
use eventstore::{CommandHandler, EventStore, Metadata};
use futures_util::{SinkExt, StreamExt};
use reqwest::{Method, StatusCode};
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio_tungstenite::connect_async;
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

use crate::fakes::{FakeSmtp, FakeTelegram, Mode, decoded_body};
use crate::helpers::{ADMIN_SECRET, LANDING_KEY, TestApp, create_admin, lead_of_submission, login};

const GEMINI_KEY: &str = "AIzaSyB-test-gemini-key-0123456789-3xQ";
const BOT_TOKEN: &str = "7123456789:ABCdefGHIjklMNOpqrsTUVwxyz";
const PUBLIC: &str = "https://api.domizan.test";

struct Setup {
    app: TestApp,
    token: String,
    telegram: FakeTelegram,
    smtp: FakeSmtp,
}

async fn setup(pool: PgPool) -> Setup {
    let telegram = FakeTelegram::start().await;
    let smtp = FakeSmtp::start().await;
    let app = TestApp::spawn_with(
        pool,
        &[
            ("TELEGRAM_API_BASE", telegram.base.as_str()),
            ("SMTP_URL", smtp.url.as_str()),
            ("MAIL_FROM", "lisans@domizan.com"),
            ("PUBLIC_BASE_URL", PUBLIC),
            ("TRUSTED_PROXIES", "127.0.0.1/32"),
            ("ADMIN_RATE_LIMIT_PER_MINUTE", "100000"),
        ],
    )
    .await;
    let (token, _) = login(&app).await;
    Setup {
        app,
        token,
        telegram,
        smtp,
    }
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

/// A license key encrypted as the gateway stores it (under the test configuration's key).
fn sealed_key(pool: &PgPool, key: &str) -> SealedText {
    let config = crate::helpers::test_config(pool, &[]);
    let sealer = Sealer::new(pool.clone(), *config.encryption_key.expose_secret());
    SealedText(sealer.encrypt_with_master(key.as_bytes()))
}

/// The seed 001 body of `POST /v1/admin/licenses`.
fn seed_license() -> Value {
    json!({
        "ownerName": "Ahmet Kaya",
        "ownerEmail": "ahmet@kayasmmm.com",
        "ownerPhone": "+905321234567",
        "companyName": "Kaya SMMM",
        "companyVkn": "1234567890",
        "packageType": "pro",
        "maxDevices": 5,
        "durationMonths": 12,
        "monthlyTokenLimit": 500000,
        "geminiApiKey": GEMINI_KEY,
        "telegramBotToken": BOT_TOKEN,
        "telegramBotUsername": "@kaya_smmm_bot",
    })
}

async fn create(s: &Setup, body: &Value) -> Value {
    let (status, body) =
        send(admin(&s.app, Method::POST, "/v1/admin/licenses", &s.token).json(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["data"].clone()
}

async fn submit_lead(app: &TestApp, n: u32) -> String {
    let response = app
        .client
        .post(app.url("/v1/leads"))
        .header("X-API-Key", LANDING_KEY)
        .header("X-Forwarded-For", format!("198.19.0.{n}"))
        .json(&json!({
            "name": "Ayşe Yılmaz", "email": format!("ayse{n}@yilmaz.com.tr"),
            "phone": format!("+90533{n:07}"), "company": "Yılmaz Muhasebe",
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let body: Value = response.json().await.unwrap();
    lead_of_submission(&app.pool, body["data"]["id"].as_str().unwrap()).await
}

/// Polls `done` over the license detail until it holds.
async fn license_until(s: &Setup, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    for _ in 0..500 {
        let (status, body) = send(admin(
            &s.app,
            Method::GET,
            &format!("/v1/admin/licenses/{id}"),
            &s.token,
        ))
        .await;
        if status == StatusCode::OK && done(&body["data"]) {
            return body["data"].clone();
        }
        last = body;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("license {id} did not reach the expected state: {last}");
}

#[testkit::test(migrations = false)]
async fn the_seed_license_is_created_with_its_webhook_and_its_email(pool: PgPool) {
    let s = setup(pool).await;
    let data = create(&s, &seed_license()).await;
    let license = &data["license"];
    let id = license["id"].as_str().unwrap();
    let key = license["licenseKey"].as_str().unwrap();
    assert!(key.starts_with("DOMIZAN-PRO5-"), "{key}");
    assert_eq!(key.len(), "DOMIZAN-PRO5-XXXX-XXXX".len());
    assert_eq!(license["status"], "active");
    assert_eq!(license["ownerName"], "Ahmet Kaya");
    assert_eq!(license["maxDevices"], 5);
    assert_eq!(license["currentDevices"], 0);
    assert_eq!(license["tokensUsedThisMonth"], 0);
    assert_eq!(license["monthlyTokenLimit"], 500000);
    assert_eq!(license["telegramBotUsername"], "@kaya_smmm_bot");
    assert_eq!(license["telegramWebhookActive"], true);
    assert_eq!(license["geminiApiKey"], "AIza…3xQ");
    assert_eq!(license["hasGeminiApiKey"], true);
    let expires: chrono::DateTime<chrono::Utc> =
        license["expiresAt"].as_str().unwrap().parse().unwrap();
    let in_a_year = chrono::Utc::now() + chrono::Months::new(12);
    assert!((expires - in_a_year).num_minutes().abs() < 5, "{expires}");
    // setWebhook as seed 001 step 6 writes it.
    let webhook_url = format!("{PUBLIC}/v1/webhook/telegram/{id}");
    assert_eq!(
        data["webhookSetup"],
        json!({"success": true, "webhookUrl": webhook_url})
    );
    let requests = s.telegram.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    let (method, path, body) = &requests[0];
    assert_eq!(
        (method.as_str(), path.as_str()),
        ("POST", format!("/bot{BOT_TOKEN}/setWebhook").as_str())
    );
    assert_eq!(body["url"], webhook_url);
    let secret = body["secret_token"].as_str().unwrap();
    assert_eq!(secret.len(), 43);
    assert!(
        secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    );
    // The customer's e-mail carries the key.
    assert_eq!(data["emailSent"], true, "{data}");
    let mails = s.smtp.messages();
    assert_eq!(mails.len(), 1);
    assert_eq!(mails[0].to, vec!["ahmet@kayasmmm.com".to_string()]);
    assert!(
        decoded_body(&mails[0]).contains(key),
        "the mail carries the key"
    );
    s.app.stop().await.unwrap();
}

/// Every place a secret could leak: the answers an admin gets and the whole database.
#[testkit::test(migrations = false)]
async fn no_secret_lies_in_clear_in_any_answer_or_in_the_database(pool: PgPool) {
    let s = setup(pool.clone()).await;
    let data = create(&s, &seed_license()).await;
    let id = data["license"]["id"].as_str().unwrap().to_string();
    let key = data["license"]["licenseKey"].as_str().unwrap().to_string();
    let secret = s.telegram.requests()[0].2["secret_token"]
        .as_str()
        .unwrap()
        .to_string();
    let mut answers = vec![data.to_string()];
    for path in [
        "/v1/admin/licenses".to_string(),
        format!("/v1/admin/licenses/{id}"),
        "/v1/admin/customers".to_string(),
    ] {
        answers.push(
            send(admin(&s.app, Method::GET, &path, &s.token))
                .await
                .1
                .to_string(),
        );
    }
    for answer in &answers {
        for hidden in [GEMINI_KEY, BOT_TOKEN, secret.as_str()] {
            assert!(
                !answer.contains(hidden),
                "an answer shows a secret: {answer}"
            );
        }
    }
    let dump = crate::hardening::dump(&pool).await;
    assert!(dump.contains("LicenseCreated"), "the dump holds the log");
    for hidden in [GEMINI_KEY, BOT_TOKEN, secret.as_str(), key.as_str()] {
        assert!(
            !dump.contains(hidden),
            "{hidden} lies in clear in the database"
        );
    }
    s.app.stop().await.unwrap();
}

#[testkit::test(migrations = false)]
async fn a_lead_converts_into_a_license_once(pool: PgPool) {
    let s = setup(pool.clone()).await;
    let lead = submit_lead(&s.app, 1).await;
    let path = format!("/v1/admin/leads/{lead}/convert-to-license");
    let body = json!({"packageType": "pro", "durationMonths": 12});
    let (status, data) = send(admin(&s.app, Method::POST, &path, &s.token).json(&body)).await;
    assert_eq!(status, StatusCode::CREATED, "{data}");
    let data = &data["data"];
    assert_eq!(data["lead"], json!({"id": lead, "status": "converted"}));
    let license = &data["license"];
    assert_eq!(license["ownerName"], "Ayşe Yılmaz");
    assert_eq!(license["ownerEmail"], "ayse1@yilmaz.com.tr");
    assert_eq!(license["companyName"], "Yılmaz Muhasebe");
    assert_eq!(license["leadId"], lead.as_str());
    // Plan defaults: pro gives 5 devices and 500 000 tokens.
    assert_eq!(license["maxDevices"], 5);
    assert_eq!(license["monthlyTokenLimit"], 500000);
    assert_eq!(data["emailSent"], true);
    let (_, detail) = send(admin(
        &s.app,
        Method::GET,
        &format!("/v1/admin/leads/{lead}"),
        &s.token,
    ))
    .await;
    assert_eq!(detail["data"]["status"], "converted");
    let (status, again) = send(admin(&s.app, Method::POST, &path, &s.token).json(&body)).await;
    assert_eq!(
        (status, again["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("LEAD_ALREADY_CONVERTED"))
    );
    s.app.stop().await.unwrap();
}

#[testkit::test(migrations = false)]
async fn two_concurrent_conversions_of_one_lead_make_one_license(pool: PgPool) {
    let s = setup(pool.clone()).await;
    let lead = submit_lead(&s.app, 2).await;
    let path = format!("/v1/admin/leads/{lead}/convert-to-license");
    let body = json!({"packageType": "basic", "durationMonths": 1});
    let (a, b) = tokio::join!(
        send(admin(&s.app, Method::POST, &path, &s.token).json(&body)),
        send(admin(&s.app, Method::POST, &path, &s.token).json(&body)),
    );
    let mut statuses = [a.0.as_u16(), b.0.as_u16()];
    statuses.sort();
    assert_eq!(statuses, [201, 409], "{a:?} {b:?}");
    let loser = if a.0 == StatusCode::CONFLICT {
        &a.1
    } else {
        &b.1
    };
    assert_eq!(loser["error"]["code"], "LEAD_ALREADY_CONVERTED");
    let licenses: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'LicenseCreated'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(licenses, 1);
    s.app.stop().await.unwrap();
}

#[testkit::test(migrations = false)]
async fn a_conversion_cut_off_after_the_license_is_completed_at_the_next_start(pool: PgPool) {
    let s = setup(pool.clone()).await;
    let lead: Uuid = submit_lead(&s.app, 3).await.parse().unwrap();
    s.app.stop().await.unwrap();
    // The license of the lead exists, its LeadConverted does not: a crash in between.
    let license_id = gateway::licenses::license_id_for_lead(lead);
    CommandHandler::<License>::new(EventStore::new(pool.clone()), ())
        .execute(
            &license_id.to_string(),
            LicenseCommand::Create {
                key: sealed_key(&pool, "DOMIZAN-BAS1-CUT0-OFF0"),
                key_digest: "cut-off".into(),
                owner: Owner {
                    name: "Ayşe Yılmaz".into(),
                    email: "ayse3@yilmaz.com.tr".into(),
                    phone: None,
                    company_name: "Yılmaz Muhasebe".into(),
                    company_vkn: None,
                },
                package: "basic".into(),
                max_devices: 1,
                monthly_token_limit: 1000,
                duration_months: 1,
                gemini: None,
                telegram: None,
                lead_id: Some(lead),
                now: chrono::Utc::now(),
            },
            &Metadata::actor("test"),
        )
        .await
        .unwrap();
    let app = TestApp::spawn(pool.clone()).await;
    let (token, _) = login(&app).await;
    let mut status = Value::Null;
    for _ in 0..500 {
        let (_, detail) = send(admin(
            &app,
            Method::GET,
            &format!("/v1/admin/leads/{lead}"),
            &token,
        ))
        .await;
        status = detail["data"]["status"].clone();
        if status == "converted" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        status, "converted",
        "the next start completes the conversion"
    );
    app.stop().await.unwrap();
}

#[testkit::test(migrations = false)]
async fn an_erased_or_lost_lead_does_not_convert(pool: PgPool) {
    let s = setup(pool.clone()).await;
    let body = json!({"packageType": "basic", "durationMonths": 1});
    let erased = submit_lead(&s.app, 4).await;
    let (status, _) = send(admin(
        &s.app,
        Method::POST,
        &format!("/v1/admin/leads/{erased}/erase"),
        &s.token,
    ))
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, answer) = send(
        admin(
            &s.app,
            Method::POST,
            &format!("/v1/admin/leads/{erased}/convert-to-license"),
            &s.token,
        )
        .json(&body),
    )
    .await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (StatusCode::GONE, Some("LEAD_ERASED"))
    );
    let lost = submit_lead(&s.app, 5).await;
    let (status, _) = send(
        admin(
            &s.app,
            Method::PATCH,
            &format!("/v1/admin/leads/{lost}"),
            &s.token,
        )
        .json(&json!({"status": "lost"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, answer) = send(
        admin(
            &s.app,
            Method::POST,
            &format!("/v1/admin/leads/{lost}/convert-to-license"),
            &s.token,
        )
        .json(&body),
    )
    .await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("LEAD_LOST"))
    );
    let (status, answer) = send(
        admin(
            &s.app,
            Method::POST,
            &format!("/v1/admin/leads/{}/convert-to-license", Uuid::new_v4()),
            &s.token,
        )
        .json(&body),
    )
    .await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("LEAD_NOT_FOUND"))
    );
    s.app.stop().await.unwrap();
}

#[testkit::test(migrations = false)]
async fn telegram_down_or_slow_does_not_fail_the_license_and_a_retry_sets_it_up(pool: PgPool) {
    let s = setup(pool).await;
    s.telegram.set_mode(Mode::Down);
    let data = create(&s, &seed_license()).await;
    let id = data["license"]["id"].as_str().unwrap().to_string();
    assert_eq!(data["webhookSetup"]["success"], false);
    assert_eq!(data["license"]["telegramWebhookActive"], false);
    // Slow: the answer comes after the bounded wait, still 201.
    s.telegram.set_mode(Mode::Slow(Duration::from_secs(30)));
    let started = std::time::Instant::now();
    let slow = create(&s, &seed_license()).await;
    assert_eq!(slow["webhookSetup"]["success"], false);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the wait is bounded"
    );
    s.telegram.set_mode(Mode::Ok);
    let (status, retried) = send(admin(
        &s.app,
        Method::POST,
        &format!("/v1/admin/licenses/{id}/telegram-webhook"),
        &s.token,
    ))
    .await;
    assert_eq!(status, StatusCode::OK, "{retried}");
    assert_eq!(retried["data"]["webhookSetup"]["success"], true);
    assert_eq!(retried["data"]["license"]["telegramWebhookActive"], true);
    s.app.stop().await.unwrap();
}

#[testkit::test(migrations = false)]
async fn a_new_bot_token_reruns_set_webhook_and_removing_it_deletes_the_webhook(pool: PgPool) {
    let s = setup(pool).await;
    let data = create(&s, &seed_license()).await;
    let id = data["license"]["id"].as_str().unwrap().to_string();
    let new_token = "7999999999:ZYXwvuTSRqpoNMLkjiHGFedcba";
    let (status, patched) = send(
        admin(
            &s.app,
            Method::PATCH,
            &format!("/v1/admin/licenses/{id}"),
            &s.token,
        )
        .json(&json!({"telegramBotToken": new_token})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(patched["data"]["webhookSetup"]["success"], true);
    let (status, _) = send(
        admin(
            &s.app,
            Method::PATCH,
            &format!("/v1/admin/licenses/{id}"),
            &s.token,
        )
        .json(&json!({"telegramBotToken": null})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let paths: Vec<String> = s.telegram.requests().into_iter().map(|r| r.1).collect();
    assert_eq!(
        paths,
        [
            format!("/bot{BOT_TOKEN}/setWebhook"),
            format!("/bot{BOT_TOKEN}/deleteWebhook"),
            format!("/bot{new_token}/setWebhook"),
            format!("/bot{new_token}/deleteWebhook"),
        ]
    );
    let license = license_until(&s, &id, |l| l["hasTelegramBotToken"] == false).await;
    assert_eq!(license["telegramWebhookActive"], false);
    s.app.stop().await.unwrap();
}

#[testkit::test(migrations = false)]
async fn smtp_down_then_up_sends_exactly_one_mail(pool: PgPool) {
    let s = setup(pool).await;
    s.smtp.set_up(false);
    let data = create(&s, &seed_license()).await;
    assert_eq!(data["emailSent"], false);
    let id = data["license"]["id"].as_str().unwrap().to_string();
    s.smtp.set_up(true);
    let license = license_until(&s, &id, |l| !l["emailSentAt"].is_null()).await;
    assert!(
        license["history"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h["action"] == "email_sent")
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(s.smtp.messages().len(), 1, "one mail, not one per attempt");
    // An admin may send it again, though not twice within a minute.
    let resend = || {
        send(admin(
            &s.app,
            Method::POST,
            &format!("/v1/admin/licenses/{id}/resend-email"),
            &s.token,
        ))
    };
    let (status, too_soon) = resend().await;
    assert_eq!(
        (status, too_soon["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("EMAIL_RECENTLY_SENT"))
    );
    sqlx::query("UPDATE license_mail_outbox SET sent_at = sent_at - interval '2 minutes'")
        .execute(&s.app.pool)
        .await
        .unwrap();
    let (status, resent) = send(admin(
        &s.app,
        Method::POST,
        &format!("/v1/admin/licenses/{id}/resend-email"),
        &s.token,
    ))
    .await;
    assert_eq!(status, StatusCode::OK, "{resent}");
    assert_eq!(resent["data"]["emailSent"], true);
    assert_eq!(s.smtp.messages().len(), 2);
    s.app.stop().await.unwrap();
}

#[testkit::test(migrations = false)]
async fn tax_numbers_need_valid_check_digits(pool: PgPool) {
    let s = setup(pool).await;
    for (vkn, ok) in [
        ("1234567890", true),
        ("1234567891", false),
        ("10000000146", true),
        ("10000000147", false),
        ("123", false),
    ] {
        let mut body = seed_license();
        body["companyVkn"] = json!(vkn);
        body.as_object_mut().unwrap().remove("telegramBotToken");
        let (status, answer) =
            send(admin(&s.app, Method::POST, "/v1/admin/licenses", &s.token).json(&body)).await;
        if ok {
            assert_eq!(status, StatusCode::CREATED, "{vkn}: {answer}");
        } else {
            assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{vkn}");
            assert_eq!(answer["error"]["field"], "companyVkn");
        }
    }
    s.app.stop().await.unwrap();
}

#[testkit::test(migrations = false)]
async fn every_lifecycle_transition_and_its_refusals(pool: PgPool) {
    let s = setup(pool).await;
    let data = create(&s, &seed_license()).await;
    let id = data["license"]["id"].as_str().unwrap().to_string();
    let expires_at = data["license"]["expiresAt"].as_str().unwrap().to_string();
    let step = |action: &'static str, body: Option<Value>| {
        let mut request = admin(
            &s.app,
            Method::POST,
            &format!("/v1/admin/licenses/{id}/{action}"),
            &s.token,
        );
        if let Some(body) = body {
            request = request.json(&body);
        }
        send(request)
    };
    let (status, suspended) = step("suspend", None).await;
    assert_eq!(
        (status, suspended["data"]["status"].as_str()),
        (StatusCode::OK, Some("suspended"))
    );
    let (status, again) = step("suspend", None).await;
    assert_eq!(
        (status, again["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("LICENSE_ALREADY_SUSPENDED"))
    );
    let (status, active) = step("reactivate", None).await;
    assert_eq!(
        (status, active["data"]["status"].as_str()),
        (StatusCode::OK, Some("active"))
    );
    let (status, again) = step("reactivate", None).await;
    assert_eq!(
        (status, again["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("LICENSE_NOT_SUSPENDED"))
    );
    // Renewal counts from the current expiry (still in the future).
    let (status, renewed) = step("renew", Some(json!({"durationMonths": 12}))).await;
    assert_eq!(status, StatusCode::OK);
    let before: chrono::DateTime<chrono::Utc> = expires_at.parse().unwrap();
    let after: chrono::DateTime<chrono::Utc> = renewed["data"]["expiresAt"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        after,
        before.checked_add_months(chrono::Months::new(12)).unwrap()
    );
    let (status, bad) = step("renew", Some(json!({"durationMonths": 0}))).await;
    assert_eq!(
        (status, bad["error"]["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("durationMonths"))
    );
    let (status, revoked) = step("revoke", None).await;
    assert_eq!(
        (status, revoked["data"]["status"].as_str()),
        (StatusCode::OK, Some("revoked"))
    );
    for (action, body) in [
        ("reactivate", None),
        ("suspend", None),
        ("revoke", None),
        ("renew", Some(json!({"durationMonths": 1}))),
    ] {
        let (status, refused) = step(action, body).await;
        assert_eq!(
            (status, refused["error"]["code"].as_str()),
            (StatusCode::CONFLICT, Some("LICENSE_REVOKED")),
            "{action}"
        );
    }
    let (status, refused) = send(
        admin(
            &s.app,
            Method::PATCH,
            &format!("/v1/admin/licenses/{id}"),
            &s.token,
        )
        .json(&json!({"maxDevices": 7})),
    )
    .await;
    assert_eq!(
        (status, refused["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("LICENSE_REVOKED"))
    );
    let history: Vec<String> = license_until(&s, &id, |_| true).await["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["action"].as_str().unwrap().to_string())
        .collect();
    for action in ["created", "suspended", "reactivated", "renewed", "revoked"] {
        assert!(
            history.iter().any(|h| h == action),
            "{action} in {history:?}"
        );
    }
    s.app.stop().await.unwrap();
}

#[testkit::test(migrations = false)]
async fn an_expired_license_is_listed_as_expired_never_active(pool: PgPool) {
    let s = setup(pool.clone()).await;
    let id = Uuid::now_v7();
    CommandHandler::<License>::new(EventStore::new(pool.clone()), ())
        .execute(
            &id.to_string(),
            LicenseCommand::Create {
                key: sealed_key(&pool, "DOMIZAN-BAS1-OLD0-OLD0"),
                key_digest: "expired-test".into(),
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
                now: chrono::Utc::now() - chrono::Duration::days(400),
            },
            &Metadata::actor("test"),
        )
        .await
        .unwrap();
    let fresh = create(&s, &seed_license()).await;
    let fresh_id = fresh["license"]["id"].as_str().unwrap().to_string();
    license_until(&s, &id.to_string(), |l| l["status"] == "expired").await;
    let ids = |body: &Value| -> Vec<String> {
        body["data"]["licenses"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["id"].as_str().unwrap().to_string())
            .collect()
    };
    let (_, expired) = send(admin(
        &s.app,
        Method::GET,
        "/v1/admin/licenses?status=expired",
        &s.token,
    ))
    .await;
    assert_eq!(ids(&expired), [id.to_string()]);
    assert_eq!(expired["data"]["licenses"][0]["status"], "expired");
    let (_, active) = send(admin(
        &s.app,
        Method::GET,
        "/v1/admin/licenses?status=active",
        &s.token,
    ))
    .await;
    assert_eq!(ids(&active), std::slice::from_ref(&fresh_id));
    let (_, all) = send(admin(&s.app, Method::GET, "/v1/admin/licenses", &s.token)).await;
    for license in all["data"]["licenses"].as_array().unwrap() {
        if license["id"] == id.to_string() {
            assert_eq!(license["status"], "expired");
        }
    }
    let (_, expiring) = send(admin(
        &s.app,
        Method::GET,
        "/v1/admin/licenses?expiringWithinDays=400",
        &s.token,
    ))
    .await;
    assert_eq!(
        ids(&expiring),
        [fresh_id],
        "expiring soon: active ones only"
    );
    s.app.stop().await.unwrap();
}

#[testkit::test(migrations = false)]
async fn the_list_searches_filters_and_groups_customers(pool: PgPool) {
    let s = setup(pool).await;
    let first = create(&s, &seed_license()).await;
    let key = first["license"]["licenseKey"].as_str().unwrap().to_string();
    let mut second = seed_license();
    second["packageType"] = json!("enterprise");
    second["maxDevices"] = json!(20);
    second["ownerName"] = json!("Çağlar Işık");
    create(&s, &second).await;
    let mut other = seed_license();
    other["companyName"] = json!("Başka Ltd");
    other["companyVkn"] = json!("9876543217");
    create(&s, &other).await;
    for (query, expected) in [
        ("search=caglar", 1),
        ("search=kaya", 3),
        (&*format!("search={}", key.to_lowercase()), 1),
        ("packageType=enterprise", 1),
        ("packageType=pro", 2),
    ] {
        let (status, body) = send(admin(
            &s.app,
            Method::GET,
            &format!("/v1/admin/licenses?{query}"),
            &s.token,
        ))
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            body["data"]["pagination"]["total"], expected,
            "{query}: {body}"
        );
    }
    let (_, bad) = send(admin(
        &s.app,
        Method::GET,
        "/v1/admin/licenses?sortBy=secret",
        &s.token,
    ))
    .await;
    assert_eq!(bad["error"]["field"], "sortBy");
    let (_, customers) = send(admin(&s.app, Method::GET, "/v1/admin/customers", &s.token)).await;
    let customers = customers["data"]["customers"].as_array().unwrap().clone();
    assert_eq!(customers.len(), 2, "{customers:?}");
    let kaya = customers
        .iter()
        .find(|c| c["companyVkn"] == "1234567890")
        .unwrap();
    assert_eq!(kaya["totalLicenses"], 2);
    assert_eq!(kaya["licenses"].as_array().unwrap().len(), 2);
    s.app.stop().await.unwrap();
}

#[testkit::test(migrations = false)]
async fn plans_exist_from_the_start_with_exact_prices_and_follow_their_rules(pool: PgPool) {
    let s = setup(pool).await;
    let (_, plans) = send(admin(&s.app, Method::GET, "/v1/admin/plans", &s.token)).await;
    let slugs: Vec<&str> = plans["data"]["plans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["slug"].as_str().unwrap())
        .collect();
    assert_eq!(slugs, ["basic", "pro", "enterprise"]);
    assert_eq!(plans["data"]["plans"][1]["priceMonthly"], "1499.00");
    let body = json!({"slug": "premium", "name": "Premium", "priceMonthly": 29.99, "priceYearly": "299.90",
                      "maxDevices": 3, "monthlyTokenLimit": 250000, "features": ["documentAnalysis"]});
    let (status, created) =
        send(admin(&s.app, Method::POST, "/v1/admin/plans", &s.token).json(&body)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["data"]["plan"]["priceMonthly"], "29.99");
    assert_eq!(created["data"]["plan"]["priceYearly"], "299.90");
    let plan_id = created["data"]["plan"]["id"].as_str().unwrap().to_string();
    let (status, taken) =
        send(admin(&s.app, Method::POST, "/v1/admin/plans", &s.token).json(&body)).await;
    assert_eq!(
        (status, taken["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("PLAN_SLUG_TAKEN"))
    );
    // A license on the plan keeps it from being deleted.
    let mut license = seed_license();
    license["packageType"] = json!("premium");
    license.as_object_mut().unwrap().remove("maxDevices");
    let made = create(&s, &license).await;
    assert_eq!(made["license"]["maxDevices"], 3, "the plan's default");
    let (status, in_use) = send(admin(
        &s.app,
        Method::DELETE,
        &format!("/v1/admin/plans/{plan_id}"),
        &s.token,
    ))
    .await;
    assert_eq!(
        (status, in_use["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("PLAN_IN_USE"))
    );
    // An unused plan goes.
    let unused = json!({"slug": "trial", "name": "Deneme", "priceMonthly": 0, "priceYearly": 0,
                        "maxDevices": 1, "monthlyTokenLimit": 1000});
    let (_, trial) =
        send(admin(&s.app, Method::POST, "/v1/admin/plans", &s.token).json(&unused)).await;
    let trial_id = trial["data"]["plan"]["id"].as_str().unwrap().to_string();
    let (status, _) = send(admin(
        &s.app,
        Method::DELETE,
        &format!("/v1/admin/plans/{trial_id}"),
        &s.token,
    ))
    .await;
    assert_eq!(status, StatusCode::OK);
    // Reading plans needs `licenses`; changing them needs `settings`.
    let licenses_only =
        create_admin(&s.app, &s.token, "lic@example.com", "admin", &["licenses"]).await;
    let (status, _) = send(admin(
        &s.app,
        Method::GET,
        "/v1/admin/plans",
        &licenses_only,
    ))
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) =
        send(admin(&s.app, Method::POST, "/v1/admin/plans", &licenses_only).json(&unused)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = send(
        admin(
            &s.app,
            Method::PUT,
            &format!("/v1/admin/plans/{plan_id}"),
            &licenses_only,
        )
        .json(&body),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    s.app.stop().await.unwrap();
}

#[testkit::test(migrations = false)]
async fn license_events_reach_admins_who_hold_licenses_only(pool: PgPool) {
    let s = setup(pool).await;
    let sales = create_admin(&s.app, &s.token, "sales@example.com", "admin", &["leads"]).await;
    let url = format!("{}/ws/admin", s.app.base.replace("http://", "ws://"));
    let mut panels = Vec::new();
    for token in [&s.token, &sales] {
        let (mut socket, _) = connect_async(&url).await.unwrap();
        socket
            .send(Message::text(
                json!({"type": "auth", "token": token}).to_string(),
            ))
            .await
            .unwrap();
        panels.push(socket);
    }
    let data = create(&s, &seed_license()).await;
    let id = data["license"]["id"].as_str().unwrap();
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !seen.contains(&"LICENSE_UPDATED".to_string()) {
        let message = tokio::time::timeout_at(deadline, panels[0].next())
            .await
            .expect("license messages in time")
            .unwrap()
            .unwrap();
        if let Message::Text(text) = message {
            let value: Value = serde_json::from_str(&text).unwrap();
            if value["data"]["id"] == id {
                seen.push(value["type"].as_str().unwrap().to_string());
                assert!(value["data"]["licenseKey"].is_string());
            }
        }
    }
    assert_eq!(seen[0], "LICENSE_CREATED");
    // The sales admin without `licenses` got none of it.
    while let Ok(Some(Ok(message))) =
        tokio::time::timeout(Duration::from_millis(500), panels[1].next()).await
    {
        if let Message::Text(text) = message {
            assert!(!text.contains("LICENSE_"), "{text}");
        }
    }
    s.app.stop().await.unwrap();
}

#[testkit::test(migrations = false)]
async fn a_plan_is_never_deleted_while_a_license_is_created_with_it(pool: PgPool) {
    let s = setup(pool.clone()).await;
    for round in 0..4 {
        let slug = format!("race{round}");
        let plan = json!({"slug": slug, "name": "Yarış", "priceMonthly": 1, "priceYearly": 10,
                          "maxDevices": 1, "monthlyTokenLimit": 1000});
        let (status, created) =
            send(admin(&s.app, Method::POST, "/v1/admin/plans", &s.token).json(&plan)).await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        let plan_id = created["data"]["plan"]["id"].as_str().unwrap().to_string();
        let mut license = seed_license();
        license["packageType"] = json!(slug);
        license.as_object_mut().unwrap().remove("telegramBotToken");
        let (made, deleted) = tokio::join!(
            send(admin(&s.app, Method::POST, "/v1/admin/licenses", &s.token).json(&license)),
            send(admin(
                &s.app,
                Method::DELETE,
                &format!("/v1/admin/plans/{plan_id}"),
                &s.token
            )),
        );
        assert!(
            !(made.0 == StatusCode::CREATED && deleted.0 == StatusCode::OK),
            "round {round}: a license was created with a plan deleted at the same time"
        );
        assert!(
            made.0 == StatusCode::CREATED || deleted.0 == StatusCode::OK,
            "{made:?} {deleted:?}"
        );
    }
    s.app.stop().await.unwrap();
}

#[testkit::test(migrations = false)]
async fn revoking_a_license_takes_its_bots_webhook_down(pool: PgPool) {
    let s = setup(pool).await;
    let data = create(&s, &seed_license()).await;
    let id = data["license"]["id"].as_str().unwrap().to_string();
    let (status, revoked) = send(admin(
        &s.app,
        Method::POST,
        &format!("/v1/admin/licenses/{id}/revoke"),
        &s.token,
    ))
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(revoked["data"]["telegramWebhookActive"], false);
    let last = s.telegram.requests().pop().unwrap();
    assert_eq!(last.1, format!("/bot{BOT_TOKEN}/deleteWebhook"));
    s.app.stop().await.unwrap();
}
