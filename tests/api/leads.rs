//! Leads end to end (seeds 000 and 001): the landing form, the admin list/detail/board/export,
//! PATCH, activities, and KVKK erasure — against the real server and Postgres.

use aggregates::lead::{Lead, LeadCommand};
use eventstore::{CommandHandler, EventStore, Metadata};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

use crate::helpers::{ADMIN_SECRET, LANDING_KEY, TestApp, lead_of_submission, login};

fn seed_lead() -> Value {
    json!({
        "name": "Ahmet Kaya",
        "email": "ahmet@kayasmmm.com",
        "phone": "+905321234567",
        "company": "Kaya SMMM",
        "message": "Demo talep ediyorum, muhasebe ofisimiz için AI asistan arıyoruz.",
        "source": "landing_page",
        "utm_source": "google",
        "utm_campaign": "smmm_2026"
    })
}

async fn post_lead(app: &TestApp, body: &Value) -> reqwest::Response {
    app.client
        .post(app.url("/v1/leads"))
        .header("X-API-Key", LANDING_KEY)
        .json(body)
        .send()
        .await
        .unwrap()
}

/// Submits `body` and returns the id of the lead it landed on (not the answer's id, which
/// names the submission).
async fn create(app: &TestApp, body: &Value) -> String {
    let response = post_lead(app, body).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let body: Value = response.json().await.unwrap();
    lead_of_submission(&app.pool, body["data"]["id"].as_str().unwrap()).await
}

fn lead(name: &str, email: &str, phone: &str, company: &str) -> Value {
    json!({"name": name, "email": email, "phone": phone, "company": company, "source": "landing_page"})
}

/// An authenticated admin request.
fn admin(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    token: &str,
) -> reqwest::RequestBuilder {
    app.client
        .request(method, app.url(path))
        .header("X-Admin-Secret", ADMIN_SECRET)
        .bearer_auth(token)
}

async fn get_json(app: &TestApp, path: &str, token: &str) -> Value {
    let response = admin(app, reqwest::Method::GET, path, token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK, "{path}");
    response.json().await.unwrap()
}

/// The landing endpoint answers once the event is stored; the admin read model follows a
/// moment later. Polls `path` until `done` holds.
async fn eventually(
    app: &TestApp,
    path: &str,
    token: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    for _ in 0..400 {
        let response = admin(app, reqwest::Method::GET, path, token)
            .send()
            .await
            .unwrap();
        if response.status() == StatusCode::OK {
            let body: Value = response.json().await.unwrap();
            if done(&body) {
                return body;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("{path} did not reach the expected state");
}

fn total_is(n: i64) -> impl Fn(&Value) -> bool {
    move |body| body["data"]["pagination"]["total"] == n
}

fn history_len(n: usize) -> impl Fn(&Value) -> bool {
    move |body| {
        body["data"]["history"]
            .as_array()
            .is_some_and(|h| h.len() == n)
    }
}

// ---------------------------------------------------------------------------------------
// Landing (seed 000 §1).

#[testkit::test(migrations = false)]
async fn the_seed_landing_submission_is_accepted_with_the_turkish_message(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let response = post_lead(&app, &seed_lead()).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["success"], true);
    assert_eq!(
        body["data"]["message"],
        "Talebiniz alındı. En kısa sürede sizinle iletişime geçeceğiz."
    );
    assert!(body["data"]["id"].as_str().unwrap().parse::<Uuid>().is_ok());
    app.stop().await.unwrap();
}

#[testkit::test(migrations = false)]
async fn a_missing_or_wrong_api_key_is_refused(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    for key in [None, Some("lp_live_wrong")] {
        let mut request = app.client.post(app.url("/v1/leads")).json(&seed_lead());
        if let Some(key) = key {
            request = request.header("X-API-Key", key);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        let body: Value = response.json().await.unwrap();
        assert_eq!(
            body,
            json!({"success": false, "error": {"code": "INVALID_API_KEY", "message": "Geçersiz veya eksik API anahtarı"}})
        );
    }
    let count: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE aggregate_type = 'lead'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(count, 0, "no lead was recorded");
    app.stop().await.unwrap();
}

#[testkit::test(migrations = false)]
async fn invalid_fields_are_422_naming_the_field_and_change_nothing(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    let cases: Vec<(&str, Value, &str)> = vec![
        ("email", json!("not-an-email"), "Geçersiz email formatı"),
        ("phone", json!("12345"), "Geçersiz telefon numarası"),
        ("name", json!("A"), ""),
        ("name", json!("x".repeat(101)), ""),
        ("message", json!("x".repeat(5001)), ""),
        ("source", json!("facebook"), ""),
        ("company", json!(42), ""),
    ];
    for (field, value, message) in cases {
        let mut body = seed_lead();
        body[field] = value;
        let response = post_lead(&app, &body).await;
        assert_eq!(
            response.status(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "{field}"
        );
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "VALIDATION_ERROR");
        assert_eq!(body["error"]["field"], field);
        if !message.is_empty() {
            assert_eq!(body["error"]["message"], message);
        }
    }
    let mut missing = seed_lead();
    missing.as_object_mut().unwrap().remove("email");
    let body: Value = post_lead(&app, &missing).await.json().await.unwrap();
    assert_eq!(body["error"]["field"], "email");
    let leads: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE aggregate_type = 'lead'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(leads, 0);
    app.stop().await.unwrap();
}

#[testkit::test(migrations = false)]
async fn turkish_phone_spellings_are_stored_in_e164(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (token, _) = login(&app).await;
    let id = create(
        &app,
        &lead(
            "Ayşe Yılmaz",
            "ayse@ornek.com.tr",
            "0532 987 6543",
            "Yılmaz Mali Müşavirlik",
        ),
    )
    .await;
    let body = eventually(
        &app,
        &format!("/v1/admin/leads/{id}"),
        &token,
        history_len(1),
    )
    .await;
    assert_eq!(body["data"]["phone"], "+905329876543");
    app.stop().await.unwrap();
}

#[testkit::test(migrations = false)]
async fn the_eleventh_submission_in_a_minute_is_rate_limited(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    for i in 0..10 {
        let body = lead(
            "Deneme Kişi",
            &format!("d{i}@ornek.com"),
            &format!("+9053200000{i:02}"),
            "X",
        );
        assert_eq!(
            post_lead(&app, &body).await.status(),
            StatusCode::CREATED,
            "request {i}"
        );
    }
    let response = post_lead(
        &app,
        &lead("Deneme Kişi", "d11@ornek.com", "+905320000011", "X"),
    )
    .await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "RATE_LIMIT_EXCEEDED");
    assert_eq!(
        body["error"]["message"],
        "Çok fazla istek. Lütfen biraz bekleyin."
    );
    assert_eq!(body["error"]["retryAfter"], retry_after);
    app.stop().await.unwrap();
}

#[testkit::test(migrations = false)]
async fn forwarded_addresses_count_only_behind_a_trusted_proxy(pool: PgPool) {
    let app = TestApp::spawn_with(pool, &[("TRUSTED_PROXIES", "127.0.0.1/32")]).await;
    // Behind the trusted proxy, each forwarded client has its own budget of 10.
    for client in 0..2 {
        for i in 0..10 {
            let body = lead(
                "Vekil Test",
                &format!("v{client}-{i}@ornek.com"),
                &format!("+90532100{client}0{i:02}"),
                "X",
            );
            let response = app
                .client
                .post(app.url("/v1/leads"))
                .header("X-API-Key", LANDING_KEY)
                .header("X-Forwarded-For", format!("203.0.113.{client}"))
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(
                response.status(),
                StatusCode::CREATED,
                "client {client} request {i}"
            );
        }
    }
    app.stop().await.unwrap();
}

#[testkit::test(migrations = false)]
async fn a_duplicate_submission_lands_on_the_open_lead_as_a_resubmission(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (token, _) = login(&app).await;
    let first = create(&app, &seed_lead()).await;
    // Same e-mail in other letters case, phone in another spelling.
    let mut again = seed_lead();
    again["email"] = json!("AHMET@kayasmmm.com");
    again["phone"] = json!("0532 123 45 67");
    again["message"] = json!("Tekrar yazıyorum.");
    let second = create(&app, &again).await;
    assert_eq!(first, second);
    // Same phone, other e-mail: still the same contact.
    let mut by_phone = seed_lead();
    by_phone["email"] = json!("baska@kayasmmm.com");
    assert_eq!(create(&app, &by_phone).await, first);

    let detail = eventually(
        &app,
        &format!("/v1/admin/leads/{first}"),
        &token,
        history_len(3),
    )
    .await;
    let list = get_json(&app, "/v1/admin/leads", &token).await;
    assert_eq!(list["data"]["pagination"]["total"], 1);
    let actions: Vec<&str> = detail["data"]["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["created", "resubmitted", "resubmitted"]);
    assert_eq!(
        detail["data"]["history"][1]["details"]["message"],
        "Tekrar yazıyorum."
    );
    app.stop().await.unwrap();
}

#[testkit::test(migrations = false)]
async fn concurrent_duplicates_create_one_lead(pool: PgPool) {
    let app = TestApp::spawn_with(pool.clone(), &[("TRUSTED_PROXIES", "127.0.0.1/32")]).await;
    let requests = (0..8).map(|i| {
        app.client
            .post(app.url("/v1/leads"))
            .header("X-API-Key", LANDING_KEY)
            .header("X-Forwarded-For", format!("198.51.100.{i}"))
            .json(&seed_lead())
            .send()
    });
    let responses = futures_util::future::join_all(requests).await;
    let mut answers = std::collections::HashSet::new();
    let mut leads = std::collections::HashSet::new();
    for response in responses {
        let response = response.unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        let body: Value = response.json().await.unwrap();
        let submission = body["data"]["id"].as_str().unwrap().to_string();
        leads.insert(lead_of_submission(&pool, &submission).await);
        answers.insert(submission);
    }
    assert_eq!(leads.len(), 1, "{leads:?}");
    assert_eq!(
        answers.len(),
        8,
        "every submission is answered with its own id"
    );
    let created: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'LeadCreated'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(created, 1);
    app.stop().await.unwrap();
}

#[testkit::test(migrations = false)]
async fn a_creation_that_fails_at_the_append_leaves_no_reservation_key_or_stream(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    // The append is the last write of a creation: failing it stands in for a crash after the
    // reservation and the data key were written.
    sqlx::raw_sql(
        "CREATE FUNCTION refuse_lead_created() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             IF NEW.event_type = 'LeadCreated' THEN RAISE EXCEPTION 'append refused'; END IF;
             RETURN NEW;
         END $$;
         CREATE TRIGGER refuse_lead_created BEFORE INSERT ON events
             FOR EACH ROW EXECUTE FUNCTION refuse_lead_created();",
    )
    .execute(&pool)
    .await
    .unwrap();
    let response = post_lead(&app, &seed_lead()).await;
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    for table in ["lead_contacts", "data_keys", "streams"] {
        let rows: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
            .fetch_one(&pool)
            .await
            .unwrap();
        let rows = if table == "streams" {
            // The bootstrap admin's stream is there from the start.
            let admins: i64 =
                sqlx::query_scalar("SELECT count(*) FROM streams WHERE aggregate_type <> 'lead'")
                    .fetch_one(&pool)
                    .await
                    .unwrap();
            rows - admins
        } else {
            rows
        };
        assert_eq!(rows, 0, "{table} kept a row of the failed creation");
    }

    // The contact is free: the next submission creates the lead at once.
    sqlx::raw_sql("DROP TRIGGER refuse_lead_created ON events")
        .execute(&pool)
        .await
        .unwrap();
    let lead_id = create(&app, &seed_lead()).await;
    let owners: Vec<Uuid> = sqlx::query_scalar("SELECT DISTINCT lead_id FROM lead_contacts")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(owners, vec![lead_id.parse::<Uuid>().unwrap()]);
    let keys: i64 = sqlx::query_scalar("SELECT count(*) FROM data_keys")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(keys, 1);
    app.stop().await.unwrap();
}

#[testkit::test(migrations = false)]
async fn a_retried_request_with_the_same_idempotency_key_gets_the_same_answer(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    let send = |body: Value| {
        app.client
            .post(app.url("/v1/leads"))
            .header("X-API-Key", LANDING_KEY)
            .header("Idempotency-Key", "form-submit-1")
            .json(&body)
            .send()
    };
    let first: Value = send(seed_lead()).await.unwrap().json().await.unwrap();
    let retry = send(seed_lead()).await.unwrap();
    assert_eq!(retry.status(), StatusCode::CREATED);
    assert_eq!(retry.json::<Value>().await.unwrap(), first);
    let events: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE aggregate_type = 'lead'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(events, 1, "the retry appended nothing");
    let mut other = seed_lead();
    other["name"] = json!("Başka Biri");
    let reused = send(other).await.unwrap();
    assert_eq!(reused.status(), StatusCode::UNPROCESSABLE_ENTITY);
    app.stop().await.unwrap();
}

#[testkit::test(migrations = false)]
async fn cors_admits_only_the_landing_origins(pool: PgPool) {
    let app = TestApp::spawn_with(pool, &[("LANDING_ORIGINS", "https://domizan.com")]).await;
    let preflight = |origin: &'static str| {
        app.client
            .request(reqwest::Method::OPTIONS, app.url("/v1/leads"))
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "POST")
            .header("Access-Control-Request-Headers", "content-type,x-api-key")
            .send()
    };
    let allowed = preflight("https://domizan.com").await.unwrap();
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://domizan.com"
    );
    let refused = preflight("https://evil.example").await.unwrap();
    assert!(
        !refused
            .headers()
            .contains_key("access-control-allow-origin")
    );
    app.stop().await.unwrap();
}

// ---------------------------------------------------------------------------------------
// Admin (seed 001 / seed 000 §3–4).

async fn three_leads(app: &TestApp) -> Vec<String> {
    vec![
        create(
            app,
            &lead(
                "Ahmet Kaya",
                "ahmet@kayasmmm.com",
                "+905321234567",
                "Kaya SMMM",
            ),
        )
        .await,
        create(
            app,
            &lead(
                "Işıl Çağlar",
                "isil@caglar.com",
                "+905331112233",
                "Çağlar Müşavirlik",
            ),
        )
        .await,
        create(
            app,
            &lead(
                "Zeynep Demir",
                "zeynep@demir.net",
                "+905441112233",
                "Demir Danışmanlık",
            ),
        )
        .await,
    ]
}

#[testkit::test(migrations = false)]
async fn the_admin_list_filters_searches_sorts_and_pages(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (token, _) = login(&app).await;
    let ids = three_leads(&app).await;
    eventually(&app, "/v1/admin/leads", &token, total_is(3)).await;

    let page = get_json(&app, "/v1/admin/leads?page=1&limit=2&status=new", &token).await;
    assert_eq!(
        page["data"]["pagination"],
        json!({"page": 1, "limit": 2, "total": 3, "totalPages": 2})
    );
    assert_eq!(page["data"]["leads"].as_array().unwrap().len(), 2);
    // Newest first by default.
    assert_eq!(page["data"]["leads"][0]["id"], ids[2]);
    let first = &page["data"]["leads"][0];
    for key in [
        "name",
        "email",
        "phone",
        "company",
        "message",
        "source",
        "status",
        "assignedTo",
        "notes",
        "createdAt",
        "updatedAt",
    ] {
        assert!(first.get(key).is_some(), "{key}");
    }

    for (query, expected) in [
        ("kaya", &ids[0]),
        ("KAYA smmm", &ids[0]),
        ("isil", &ids[1]),
        ("çağlar", &ids[1]),
        ("CAGLAR", &ids[1]),
        ("5441112233", &ids[2]),
    ] {
        let found = get_json(
            &app,
            &format!("/v1/admin/leads?search={}", urlencode(query)),
            &token,
        )
        .await;
        assert_eq!(found["data"]["pagination"]["total"], 1, "{query}");
        assert_eq!(&found["data"]["leads"][0]["id"], expected, "{query}");
    }

    let by_name = get_json(&app, "/v1/admin/leads?sortBy=name&sortOrder=asc", &token).await;
    let names: Vec<&str> = by_name["data"]["leads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Ahmet Kaya", "Işıl Çağlar", "Zeynep Demir"]);

    for bad in [
        "sortBy=email",
        "sortOrder=up",
        "limit=101",
        "page=0",
        "status=won",
        "from=yesterday",
    ] {
        let response = admin(
            &app,
            reqwest::Method::GET,
            &format!("/v1/admin/leads?{bad}"),
            &token,
        )
        .send()
        .await
        .unwrap();
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
    }
    let none = get_json(&app, "/v1/admin/leads?from=2099-01-01", &token).await;
    assert_eq!(none["data"]["pagination"]["total"], 0);
    app.stop().await.unwrap();
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[testkit::test(migrations = false)]
async fn patch_moves_status_assigns_and_notes_and_answers_with_the_updated_lead(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (token, _) = login(&app).await;
    let id = create(&app, &seed_lead()).await;
    let response = admin(
        &app,
        reqwest::Method::PATCH,
        &format!("/v1/admin/leads/{id}"),
        &token,
    )
    .json(&json!({
        "status": "contacted",
        "assignedTo": "root@example.com",
        "notes": "Telefonda görüşüldü. Demo için tarih belirlendi: 10 Şubat."
    }))
    .send()
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["data"]["status"], "contacted");
    assert_eq!(body["data"]["assignedTo"], "root@example.com");
    assert_eq!(
        body["data"]["notes"],
        "Telefonda görüşüldü. Demo için tarih belirlendi: 10 Şubat."
    );
    let actions: Vec<&str> = body["data"]["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        ["created", "status_changed", "assigned", "note_added"]
    );
    assert!(body["data"]["history"][1]["by"].is_string());

    let filtered = get_json(
        &app,
        "/v1/admin/leads?assignedTo=root@example.com&status=contacted",
        &token,
    )
    .await;
    assert_eq!(filtered["data"]["pagination"]["total"], 1);

    let unknown = admin(
        &app,
        reqwest::Method::PATCH,
        &format!("/v1/admin/leads/{id}"),
        &token,
    )
    .json(&json!({"assignedTo": "nobody@example.com"}))
    .send()
    .await
    .unwrap();
    assert_eq!(unknown.status(), StatusCode::UNPROCESSABLE_ENTITY);
    app.stop().await.unwrap();
}

#[testkit::test(migrations = false)]
async fn illegal_transitions_are_refused(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    let (token, _) = login(&app).await;
    let id = create(&app, &seed_lead()).await;
    let patch = |body: Value| {
        admin(
            &app,
            reqwest::Method::PATCH,
            &format!("/v1/admin/leads/{id}"),
            &token,
        )
        .json(&body)
        .send()
    };

    let to_converted = patch(json!({"status": "converted"})).await.unwrap();
    assert_eq!(to_converted.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        to_converted.json::<Value>().await.unwrap()["error"]["field"],
        "status"
    );

    assert_eq!(
        patch(json!({"status": "contacted"}))
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    let back_to_new = patch(json!({"status": "new"})).await.unwrap();
    assert_eq!(back_to_new.status(), StatusCode::UNPROCESSABLE_ENTITY);

    // Conversion happens through licensing; do it through the command side directly.
    let handler = CommandHandler::<Lead>::new(EventStore::new(pool.clone()), ());
    handler
        .execute(
            &id,
            LeadCommand::MarkConverted {
                license_id: Uuid::now_v7(),
            },
            &Metadata::actor("system"),
        )
        .await
        .unwrap();
    let after = patch(json!({"status": "lost"})).await.unwrap();
    assert_eq!(after.status(), StatusCode::CONFLICT);
    assert_eq!(
        after.json::<Value>().await.unwrap()["error"]["code"],
        "LEAD_ALREADY_CONVERTED"
    );

    let missing = admin(
        &app,
        reqwest::Method::PATCH,
        &format!("/v1/admin/leads/{}", Uuid::now_v7()),
        &token,
    )
    .json(&json!({"status": "lost"}))
    .send()
    .await
    .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    app.stop().await.unwrap();
}

#[testkit::test(migrations = false)]
async fn activities_join_the_timeline_oldest_first(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (token, _) = login(&app).await;
    let id = create(&app, &seed_lead()).await;
    for (kind, note) in [("CALL", "İlk arama"), ("MEETING", "Demo yapıldı")] {
        let response = admin(
            &app,
            reqwest::Method::POST,
            &format!("/v1/admin/leads/{id}/activities"),
            &token,
        )
        .json(&json!({"type": kind, "note": note, "at": "2026-02-10T10:00:00.000Z"}))
        .send()
        .await
        .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
    }
    let bad = admin(
        &app,
        reqwest::Method::POST,
        &format!("/v1/admin/leads/{id}/activities"),
        &token,
    )
    .json(&json!({"type": "FAX", "note": "x"}))
    .send()
    .await
    .unwrap();
    assert_eq!(bad.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let detail = get_json(&app, &format!("/v1/admin/leads/{id}"), &token).await;
    let history = detail["data"]["history"].as_array().unwrap();
    assert_eq!(history.len(), 3);
    assert_eq!(history[1]["action"], "activity_logged");
    assert_eq!(
        history[1]["details"],
        json!({"type": "CALL", "note": "İlk arama", "occurredAt": "2026-02-10T10:00:00.000Z"})
    );
    assert_eq!(history[2]["details"]["type"], "MEETING");
    app.stop().await.unwrap();
}

#[testkit::test(migrations = false)]
async fn the_board_groups_leads_by_status(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (token, _) = login(&app).await;
    let ids = three_leads(&app).await;
    eventually(&app, "/v1/admin/leads", &token, total_is(3)).await;
    let response = admin(
        &app,
        reqwest::Method::PATCH,
        &format!("/v1/admin/leads/{}", ids[0]),
        &token,
    )
    .json(&json!({"status": "demo_scheduled"}))
    .send()
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let board = get_json(&app, "/v1/admin/leads/board", &token).await;
    let columns = board["data"]["columns"].as_array().unwrap();
    let statuses: Vec<&str> = columns
        .iter()
        .map(|c| c["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        ["new", "contacted", "demo_scheduled", "converted", "lost"]
    );
    assert_eq!(columns[0]["count"], 2);
    assert_eq!(columns[2]["count"], 1);
    assert_eq!(columns[2]["cards"][0]["id"], ids[0]);
    app.stop().await.unwrap();
}

#[testkit::test(migrations = false)]
async fn the_csv_export_escapes_formulas_and_follows_the_filters(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (token, _) = login(&app).await;
    create(
        &app,
        &lead(
            "=HYPERLINK(\"http://x\")",
            "f@ornek.com",
            "+905320000001",
            "@SUM(A1), Ltd",
        ),
    )
    .await;
    create(
        &app,
        &lead("Normal Kişi", "n@ornek.com", "+905320000002", "Normal"),
    )
    .await;
    eventually(&app, "/v1/admin/leads", &token, total_is(2)).await;
    let response = admin(
        &app,
        reqwest::Method::GET,
        "/v1/admin/leads/export.csv?search=ornek",
        &token,
    )
    .send()
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let csv = response.text().await.unwrap();
    let lines: Vec<&str> = csv.split("\r\n").filter(|l| !l.is_empty()).collect();
    assert_eq!(lines.len(), 3, "{csv}");
    assert!(
        lines[0].starts_with("\u{FEFF}id,name,email,phone"),
        "a BOM for Excel"
    );
    assert!(csv.contains("\"'=HYPERLINK(\"\"http://x\"\")\""), "{csv}");
    assert!(csv.contains("\"'@SUM(A1), Ltd\""), "{csv}");
    assert!(csv.contains(",'+905320000002,"), "{csv}");
    let filtered = admin(
        &app,
        reqwest::Method::GET,
        "/v1/admin/leads/export.csv?search=normal",
        &token,
    )
    .send()
    .await
    .unwrap();
    assert_eq!(
        filtered
            .text()
            .await
            .unwrap()
            .split("\r\n")
            .filter(|l| !l.is_empty())
            .count(),
        2
    );
    app.stop().await.unwrap();
}

#[testkit::test(migrations = false)]
async fn a_viewer_may_read_leads_but_not_change_them(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (token, _) = login(&app).await;
    let id = create(&app, &seed_lead()).await;
    let viewer =
        crate::helpers::create_admin(&app, &token, "viewer@example.com", "viewer", &["leads"])
            .await;
    assert_eq!(
        admin(&app, reqwest::Method::GET, "/v1/admin/leads", &viewer)
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    for (method, path, body) in [
        (
            reqwest::Method::PATCH,
            format!("/v1/admin/leads/{id}"),
            json!({"status": "lost"}),
        ),
        (
            reqwest::Method::POST,
            format!("/v1/admin/leads/{id}/activities"),
            json!({"type": "CALL", "note": "x"}),
        ),
        (
            reqwest::Method::POST,
            format!("/v1/admin/leads/{id}/erase"),
            json!({}),
        ),
    ] {
        let response = admin(&app, method, &path, &viewer)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{path}");
        assert_eq!(
            response.json::<Value>().await.unwrap()["error"]["code"],
            "FORBIDDEN"
        );
    }
    let no_leads =
        crate::helpers::create_admin(&app, &token, "analyst@example.com", "admin", &["analytics"])
            .await;
    let response = admin(&app, reqwest::Method::GET, "/v1/admin/leads", &no_leads)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    app.stop().await.unwrap();
}

// ---------------------------------------------------------------------------------------
// KVKK erasure (SPEC §8).

#[testkit::test(migrations = false)]
async fn personal_data_never_lies_in_clear_in_the_event_rows(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    let (token, _) = login(&app).await;
    let id = create(&app, &seed_lead()).await;
    admin(
        &app,
        reqwest::Method::PATCH,
        &format!("/v1/admin/leads/{id}"),
        &token,
    )
    .json(&json!({"notes": "Gizli not: ev adresi Kadıköy"}))
    .send()
    .await
    .unwrap();
    let rows: Vec<String> = sqlx::query_scalar(
        "SELECT payload::text || metadata::text FROM events WHERE aggregate_type = 'lead'",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), 2);
    for needle in [
        "ahmet@kayasmmm.com",
        "5321234567",
        "Ahmet Kaya",
        "Kaya SMMM",
        "Demo talep",
        "Kadıköy",
        "Kad\\u0131k\\u00f6y",
    ] {
        assert!(
            rows.iter().all(|r| !r.contains(needle)),
            "{needle} in {rows:?}"
        );
    }
    app.stop().await.unwrap();
}

#[testkit::test(migrations = false)]
async fn erasure_shreds_the_lead_everywhere_and_survives_a_rebuild(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    let (token, _) = login(&app).await;
    let erased = create(&app, &seed_lead()).await;
    let kept = create(
        &app,
        &lead(
            "Zeynep Demir",
            "zeynep@demir.net",
            "+905441112233",
            "Demir Danışmanlık",
        ),
    )
    .await;
    admin(
        &app,
        reqwest::Method::PATCH,
        &format!("/v1/admin/leads/{erased}"),
        &token,
    )
    .json(&json!({"status": "contacted", "notes": "Özel not"}))
    .send()
    .await
    .unwrap();

    let response = admin(
        &app,
        reqwest::Method::POST,
        &format!("/v1/admin/leads/{erased}/erase"),
        &token,
    )
    .send()
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let check = |detail: &Value| {
        let lead = &detail["data"];
        for key in ["name", "email", "phone", "company", "message", "notes"] {
            assert_eq!(lead[key], "[silindi]", "{key}");
        }
        assert_eq!(lead["status"], "contacted", "non-personal fields stay");
        assert_eq!(lead["utmSource"], "google");
        let history = lead["history"].as_array().unwrap();
        assert_eq!(history.last().unwrap()["action"], "erased");
        assert!(!detail.to_string().contains("Özel not"));
    };
    check(&get_json(&app, &format!("/v1/admin/leads/{erased}"), &token).await);
    eventually(&app, "/v1/admin/leads", &token, total_is(2)).await;
    let list = get_json(&app, "/v1/admin/leads?search=kaya", &token).await;
    assert_eq!(
        list["data"]["pagination"]["total"], 0,
        "erased leads are not findable by their data"
    );
    let all = get_json(&app, "/v1/admin/leads", &token).await;
    assert_eq!(all["data"]["pagination"]["total"], 2, "counts stay");
    let csv = admin(
        &app,
        reqwest::Method::GET,
        "/v1/admin/leads/export.csv",
        &token,
    )
    .send()
    .await
    .unwrap()
    .text()
    .await
    .unwrap();
    assert!(
        !csv.contains("ahmet") && !csv.contains("Kaya") && csv.contains("[silindi]"),
        "{csv}"
    );
    // A new submission with the same contact is a new lead, not a resubmission of the erased one.
    assert_ne!(create(&app, &seed_lead()).await, erased);
    eventually(&app, "/v1/admin/leads", &token, total_is(3)).await;
    app.stop().await.unwrap();

    // Rebuild the read model from the events alone.
    sqlx::query("TRUNCATE leads, lead_history")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("DELETE FROM projection_checkpoints WHERE name = 'leads'")
        .execute(&pool)
        .await
        .unwrap();
    let app = TestApp::spawn(pool.clone()).await;
    let (token, _) = login(&app).await;
    // The rebuild runs in the background: the third lead was created after the erasure, so
    // once it is back, everything before it is too.
    let mut tries = 0;
    while get_json(&app, "/v1/admin/leads", &token).await["data"]["pagination"]["total"] != 3 {
        tries += 1;
        assert!(tries < 400, "rebuild did not finish");
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    check(&get_json(&app, &format!("/v1/admin/leads/{erased}"), &token).await);
    let kept_detail = get_json(&app, &format!("/v1/admin/leads/{kept}"), &token).await;
    assert_eq!(kept_detail["data"]["email"], "zeynep@demir.net");
    app.stop().await.unwrap();
}

#[testkit::test(migrations = false)]
async fn a_lost_lead_gets_no_resubmissions_until_it_is_reopened(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (token, _) = login(&app).await;
    let patch = |id: String, status: &'static str| {
        admin(
            &app,
            reqwest::Method::PATCH,
            &format!("/v1/admin/leads/{id}"),
            &token,
        )
        .json(&json!({"status": status}))
        .send()
    };
    let first = create(&app, &seed_lead()).await;
    assert_eq!(
        patch(first.clone(), "lost").await.unwrap().status(),
        StatusCode::OK
    );
    assert_eq!(
        patch(first.clone(), "contacted").await.unwrap().status(),
        StatusCode::OK
    );
    assert_eq!(
        create(&app, &seed_lead()).await,
        first,
        "reopened: the contact is its own again"
    );

    assert_eq!(
        patch(first.clone(), "lost").await.unwrap().status(),
        StatusCode::OK
    );
    let second = create(&app, &seed_lead()).await;
    assert_ne!(second, first, "a lost lead takes no resubmission");
    app.stop().await.unwrap();
}

#[testkit::test(migrations = false)]
async fn an_idempotency_key_left_by_a_dead_request_is_taken_over(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    let send = || {
        app.client
            .post(app.url("/v1/leads"))
            .header("X-API-Key", LANDING_KEY)
            .header("Idempotency-Key", "k-1")
            .json(&seed_lead())
            .send()
    };
    // A request that claimed the key and never finished, a moment ago…
    sqlx::query(
        "INSERT INTO idempotency_keys (scope, key, request_hash) VALUES ('landing', 'k-1', 'x')",
    )
    .execute(&pool)
    .await
    .unwrap();
    let busy = send().await.unwrap();
    assert_eq!(
        busy.status(),
        StatusCode::UNPROCESSABLE_ENTITY,
        "another body under the same key"
    );
    // The same body under the key, its answer never stored: what a request that died
    // between claiming the key and answering leaves behind.
    sqlx::query("DELETE FROM idempotency_keys")
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(send().await.unwrap().status(), StatusCode::CREATED);
    sqlx::query("UPDATE idempotency_keys SET status = NULL, body = NULL")
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(
        send().await.unwrap().status(),
        StatusCode::CONFLICT,
        "still in progress"
    );
    // …and long ago: taken over.
    sqlx::query("UPDATE idempotency_keys SET created_at = now() - interval '5 minutes'")
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(send().await.unwrap().status(), StatusCode::CREATED);
    app.stop().await.unwrap();
}
