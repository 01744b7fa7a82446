//! Admin access end to end: the admin secret, login and its throttling, access and refresh
//! tokens (rotation, reuse detection, logout), permissions, managing admins, the login
//! audit trail, and the per-admin rate limit.

use reqwest::Method;
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::helpers::{
    ADMIN_SECRET, JWT_SECRET, ROOT_EMAIL, ROOT_PASSWORD, TestApp, login, login_as,
};

async fn answer(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

async fn me(app: &TestApp, access: &str) -> (u16, Value) {
    answer(
        app.admin(Method::GET, "/v1/admin/auth/me")
            .bearer_auth(access)
            .send()
            .await
            .unwrap(),
    )
    .await
}

async fn refresh(app: &TestApp, token: &str) -> (u16, Value) {
    answer(
        app.admin(Method::POST, "/v1/admin/auth/refresh")
            .json(&json!({"refreshToken": token}))
            .send()
            .await
            .unwrap(),
    )
    .await
}

async fn try_login(app: &TestApp, email: &str, password: &str) -> reqwest::Response {
    app.admin(Method::POST, "/v1/admin/auth/login")
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .unwrap()
}

/// Creates an admin through the API as `access`; returns the created user.
async fn create_user(app: &TestApp, access: &str, user: Value) -> Value {
    let (status, body) = answer(
        app.admin(Method::POST, "/v1/admin/users")
            .bearer_auth(access)
            .json(&user)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    body["data"]["user"].clone()
}

async fn patch_user(app: &TestApp, access: &str, id: &str, patch: Value) -> (u16, Value) {
    answer(
        app.admin(Method::PATCH, &format!("/v1/admin/users/{id}"))
            .bearer_auth(access)
            .json(&patch)
            .send()
            .await
            .unwrap(),
    )
    .await
}

fn assert_error(status: u16, body: &Value, expected_status: u16, code: &str) {
    assert_eq!(status, expected_status, "{body}");
    assert_eq!(body["success"], false, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

// ---- login ----------------------------------------------------------------------------------

#[testkit::test(migrations = false)]
async fn login_answers_the_user_and_a_token_pair(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let response = try_login(&app, "  ROOT@Example.com ", ROOT_PASSWORD).await;
    let text = response.text().await.unwrap();
    assert!(!text.contains("$2b$"), "a password hash leaked: {text}");
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["success"], true);
    let user = &body["data"]["user"];
    assert_eq!(user["email"], ROOT_EMAIL);
    assert_eq!(user["name"], "Sistem Yöneticisi");
    assert_eq!(user["role"], "super_admin");
    assert_eq!(
        user["permissions"],
        json!([
            "leads",
            "licenses",
            "users",
            "analytics",
            "settings",
            "audit"
        ])
    );
    assert!(user["id"].as_str().unwrap().parse::<uuid::Uuid>().is_ok());
    let tokens = &body["data"]["tokens"];
    assert_eq!(tokens["expiresIn"], 900);
    assert_eq!(
        tokens["accessToken"].as_str().unwrap().split('.').count(),
        3
    );
    assert_eq!(tokens["refreshToken"].as_str().unwrap().len(), 43);
    app.stop().await.unwrap();
}

#[testkit::test(migrations = false)]
async fn a_wrong_password_and_an_unknown_email_get_the_same_answer(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (status, wrong_password) =
        answer(try_login(&app, ROOT_EMAIL, "Wrong-Password-1").await).await;
    assert_error(status, &wrong_password, 401, "INVALID_CREDENTIALS");
    let (status, unknown) =
        answer(try_login(&app, "nobody@example.com", ROOT_PASSWORD).await).await;
    assert_error(status, &unknown, 401, "INVALID_CREDENTIALS");
    assert_eq!(wrong_password, unknown);
    app.stop().await.unwrap();
}

#[testkit::test(migrations = false)]
async fn repeated_failed_logins_are_throttled_even_for_the_right_password(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    for _ in 0..5 {
        let (status, body) = answer(try_login(&app, ROOT_EMAIL, "Wrong-Password-1").await).await;
        assert_error(status, &body, 401, "INVALID_CREDENTIALS");
    }
    let response = try_login(&app, ROOT_EMAIL, ROOT_PASSWORD).await;
    let retry_header: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let (status, body) = answer(response).await;
    assert_error(status, &body, 429, "RATE_LIMIT_EXCEEDED");
    let retry_after = body["error"]["retryAfter"].as_u64().unwrap();
    assert!((1..=900).contains(&retry_after), "{retry_after}");
    assert_eq!(retry_header, retry_after);
    // Another e-mail from the same address is not locked out.
    let (status, _) = answer(try_login(&app, "other@example.com", "Wrong-Password-1").await).await;
    assert_eq!(status, 401);
    app.stop().await.unwrap();
}

// ---- the admin secret and the bearer token --------------------------------------------------

#[testkit::test(migrations = false)]
async fn a_missing_or_wrong_admin_secret_is_refused_everywhere(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (access, _) = login(&app).await;
    let no_secret = app
        .client
        .post(app.url("/v1/admin/auth/login"))
        .json(&json!({"email": ROOT_EMAIL, "password": ROOT_PASSWORD}))
        .send()
        .await
        .unwrap();
    let (status, body) = answer(no_secret).await;
    assert_error(status, &body, 401, "INVALID_ADMIN_SECRET");
    for secret in ["wrong", &ADMIN_SECRET[..ADMIN_SECRET.len() - 1], ""] {
        let response = app
            .client
            .get(app.url("/v1/admin/auth/me"))
            .header("X-Admin-Secret", secret)
            .bearer_auth(&access)
            .send()
            .await
            .unwrap();
        let (status, body) = answer(response).await;
        assert_error(status, &body, 401, "INVALID_ADMIN_SECRET");
    }
    app.stop().await.unwrap();
}

#[testkit::test(migrations = false)]
async fn a_missing_or_garbage_token_is_invalid(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (status, body) = answer(
        app.admin(Method::GET, "/v1/admin/auth/me")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_error(status, &body, 401, "INVALID_TOKEN");
    for garbage in ["garbage", "a.b.c", "eyJhbGciOiJub25lIn0.e30."] {
        let (status, body) = me(&app, garbage).await;
        assert_error(status, &body, 401, "INVALID_TOKEN");
    }
    let (status, body) = answer(
        app.admin(Method::GET, "/v1/admin/users")
            .header("Authorization", "Basic cm9vdDpwdw==")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_error(status, &body, 401, "INVALID_TOKEN");
    app.stop().await.unwrap();
}

#[testkit::test(migrations = false)]
async fn an_expired_token_is_refused_with_its_expiry(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (access, _) = login(&app).await;
    let (_, me_body) = me(&app, &access).await;
    let admin_id = me_body["data"]["user"]["id"].as_str().unwrap().to_string();
    // A token the server really signed, but 20 minutes ago.
    let now = chrono::Utc::now().timestamp();
    gateway::auth::tokens::install_crypto_provider();
    let forged = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({
            "sub": admin_id, "sid": uuid::Uuid::new_v4(), "role": "super_admin",
            "permissions": [], "iat": now - 1200, "exp": now - 300,
            "jti": uuid::Uuid::new_v4(), "iss": "domizan-gateway", "aud": "domizan-admin",
        }),
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .unwrap();
    let (status, body) = me(&app, &forged).await;
    assert_error(status, &body, 401, "TOKEN_EXPIRED");
    let expired_at = body["error"]["expiredAt"].as_str().unwrap();
    assert_eq!(
        chrono::DateTime::parse_from_rfc3339(expired_at)
            .unwrap()
            .timestamp(),
        now - 300
    );
    app.stop().await.unwrap();
}

// ---- refresh, reuse, logout, me ----------------------------------------------------------------

#[testkit::test(migrations = false)]
async fn refresh_rotates_and_reusing_an_old_token_revokes_the_whole_session(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (_, first) = login(&app).await;

    let (status, rotated) = refresh(&app, &first).await;
    assert_eq!(status, 200, "{rotated}");
    let tokens = &rotated["data"]["tokens"];
    let second = tokens["refreshToken"].as_str().unwrap().to_string();
    let access = tokens["accessToken"].as_str().unwrap().to_string();
    assert_ne!(second, first);
    assert_eq!(tokens["expiresIn"], 900);
    assert_eq!(me(&app, &access).await.0, 200);

    // The old token again: reuse. It fails, and so does everything of that session.
    let (status, body) = refresh(&app, &first).await;
    assert_error(status, &body, 401, "INVALID_TOKEN");
    let (status, body) = refresh(&app, &second).await;
    assert_error(status, &body, 401, "INVALID_TOKEN");
    let (status, body) = me(&app, &access).await;
    assert_error(status, &body, 401, "INVALID_TOKEN");

    // Another login is a new session and works.
    let (access, _) = login(&app).await;
    assert_eq!(me(&app, &access).await.0, 200);
    app.stop().await.unwrap();
}

#[testkit::test(migrations = false)]
async fn an_unknown_refresh_token_is_invalid(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (status, body) = refresh(&app, "not-a-token").await;
    assert_error(status, &body, 401, "INVALID_TOKEN");
    app.stop().await.unwrap();
}

#[testkit::test(migrations = false)]
async fn logout_ends_the_access_and_refresh_tokens_of_the_session(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (access, refresh_token) = login(&app).await;
    let (other_access, _) = login(&app).await;
    let (status, body) = answer(
        app.admin(Method::POST, "/v1/admin/auth/logout")
            .bearer_auth(&access)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["success"], true);
    assert_error_status(me(&app, &access).await, 401, "INVALID_TOKEN");
    assert_error_status(refresh(&app, &refresh_token).await, 401, "INVALID_TOKEN");
    // Other sessions of the same admin live on.
    assert_eq!(me(&app, &other_access).await.0, 200);
    app.stop().await.unwrap();
}

fn assert_error_status((status, body): (u16, Value), expected: u16, code: &str) {
    assert_error(status, &body, expected, code);
}

#[testkit::test(migrations = false)]
async fn me_answers_the_current_admin_without_secrets(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (access, _) = login(&app).await;
    let (status, body) = me(&app, &access).await;
    assert_eq!(status, 200);
    let user = &body["data"]["user"];
    assert_eq!(user["email"], ROOT_EMAIL);
    assert_eq!(user["active"], true);
    assert!(user["lastLoginAt"].is_string() || user["lastLoginAt"].is_null());
    assert!(user.get("passwordHash").is_none());
    app.stop().await.unwrap();
}

// ---- permissions -------------------------------------------------------------------------------

#[testkit::test(migrations = false)]
async fn a_viewer_reads_what_it_may_and_writes_nothing(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (root, _) = login(&app).await;
    create_user(
        &app,
        &root,
        json!({"email": "viewer@example.com", "name": "Veli Viewer", "password": "Viewer-Pass-1",
               "role": "viewer", "permissions": ["users"]}),
    )
    .await;
    let other = create_user(
        &app,
        &root,
        json!({"email": "leads@example.com", "name": "Leyla Leads", "password": "Leads-Pass-12",
               "role": "viewer", "permissions": ["leads"]}),
    )
    .await;
    let (viewer, _) = login_as(&app, "viewer@example.com", "Viewer-Pass-1").await;
    let (status, _) = answer(
        app.admin(Method::GET, "/v1/admin/users")
            .bearer_auth(&viewer)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    let (status, body) = patch_user(
        &app,
        &viewer,
        other["id"].as_str().unwrap(),
        json!({"name": "X Y"}),
    )
    .await;
    assert_error(status, &body, 403, "FORBIDDEN");

    // Without the `users` permission even reading the list is refused.
    let (leads_viewer, _) = login_as(&app, "leads@example.com", "Leads-Pass-12").await;
    let (status, body) = answer(
        app.admin(Method::GET, "/v1/admin/users")
            .bearer_auth(&leads_viewer)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_error(status, &body, 403, "FORBIDDEN");
    app.stop().await.unwrap();
}

#[testkit::test(migrations = false)]
async fn an_admin_cannot_grant_more_than_it_holds(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (root, _) = login(&app).await;
    create_user(
        &app,
        &root,
        json!({"email": "manager@example.com", "name": "Mehmet Manager", "password": "Manager-Pass-1",
               "role": "admin", "permissions": ["users", "leads"]}),
    )
    .await;
    let (manager, _) = login_as(&app, "manager@example.com", "Manager-Pass-1").await;
    for user in [
        json!({"email": "a@example.com", "name": "Ali Admin", "password": "Ali-Password-1",
               "role": "super_admin"}),
        json!({"email": "b@example.com", "name": "Berk Admin", "password": "Berk-Password-1",
               "role": "admin", "permissions": ["settings"]}),
    ] {
        let (status, body) = answer(
            app.admin(Method::POST, "/v1/admin/users")
                .bearer_auth(&manager)
                .json(&user)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_error(status, &body, 403, "FORBIDDEN");
    }
    app.stop().await.unwrap();
}

// ---- managing admins ----------------------------------------------------------------------------

#[testkit::test(migrations = false)]
async fn a_created_admin_can_log_in_and_its_email_is_then_taken(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (root, _) = login(&app).await;
    let user = create_user(
        &app,
        &root,
        json!({"email": " Ayse.Kaya@Example.com", "name": "Ayşe Kaya", "password": "Ayse-Password-1",
               "role": "admin", "permissions": ["leads", "licenses", "leads"]}),
    )
    .await;
    assert_eq!(user["email"], "ayse.kaya@example.com");
    assert_eq!(user["role"], "admin");
    assert_eq!(user["permissions"], json!(["leads", "licenses"]));
    assert_eq!(user["active"], true);
    assert!(user.get("passwordHash").is_none() && user.get("password").is_none());
    login_as(&app, "ayse.kaya@example.com", "Ayse-Password-1").await;

    let (status, body) = answer(
        app.admin(Method::POST, "/v1/admin/users")
            .bearer_auth(&root)
            .json(
                &json!({"email": "AYSE.KAYA@example.com", "name": "Başka Ayşe",
                          "password": "Other-Password-1", "role": "viewer"}),
            )
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_error(status, &body, 409, "EMAIL_TAKEN");
    app.stop().await.unwrap();
}

#[testkit::test(migrations = false)]
async fn invalid_admin_input_names_the_field(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (root, _) = login(&app).await;
    let base = json!({"email": "x@example.com", "name": "Xavier", "password": "Xavier-Pass-1",
                      "role": "admin", "permissions": []});
    for (field, value) in [
        ("email", json!("not-an-email")),
        ("name", json!("X")),
        ("password", json!("short")),
        ("role", json!("root")),
        ("permissions", json!(["everything"])),
    ] {
        let mut user = base.clone();
        user[field] = value;
        let (status, body) = answer(
            app.admin(Method::POST, "/v1/admin/users")
                .bearer_auth(&root)
                .json(&user)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_error(status, &body, 422, "VALIDATION_ERROR");
        assert_eq!(body["error"]["field"], field, "{body}");
    }
    app.stop().await.unwrap();
}

#[testkit::test(migrations = false)]
async fn the_last_active_super_admin_can_be_neither_deactivated_nor_demoted(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (root, _) = login(&app).await;
    let (_, me_body) = me(&app, &root).await;
    let root_id = me_body["data"]["user"]["id"].as_str().unwrap().to_string();
    for patch in [json!({"active": false}), json!({"role": "admin"})] {
        let (status, body) = patch_user(&app, &root, &root_id, patch).await;
        assert_error(status, &body, 409, "LAST_SUPER_ADMIN");
    }
    // With a second super admin the first may step down.
    create_user(
        &app,
        &root,
        json!({"email": "second@example.com", "name": "İkinci Yönetici", "password": "Second-Pass-1",
               "role": "super_admin"}),
    )
    .await;
    let (status, body) = patch_user(
        &app,
        &root,
        &root_id,
        json!({"role": "admin", "permissions": ["users"]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["user"]["role"], "admin");
    assert_eq!(body["data"]["user"]["permissions"], json!(["users"]));
    // Now the second one is the last.
    let (second, _) = login_as(&app, "second@example.com", "Second-Pass-1").await;
    let (_, second_me) = me(&app, &second).await;
    let second_id = second_me["data"]["user"]["id"].as_str().unwrap();
    let (status, body) = patch_user(&app, &second, second_id, json!({"active": false})).await;
    assert_error(status, &body, 409, "LAST_SUPER_ADMIN");
    app.stop().await.unwrap();
}

#[testkit::test(migrations = false)]
async fn a_deactivated_admin_is_locked_out_at_once_and_can_be_reactivated(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (root, _) = login(&app).await;
    let user = create_user(
        &app,
        &root,
        json!({"email": "temp@example.com", "name": "Geçici Kişi", "password": "Temp-Password-1",
               "role": "admin", "permissions": ["leads"]}),
    )
    .await;
    let id = user["id"].as_str().unwrap();
    let (access, refresh_token) = login_as(&app, "temp@example.com", "Temp-Password-1").await;

    let (status, body) = patch_user(
        &app,
        &root,
        id,
        json!({"name": "Eski Çalışan", "active": false}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["user"]["name"], "Eski Çalışan");
    assert_eq!(body["data"]["user"]["active"], false);

    assert_eq!(me(&app, &access).await.0, 401);
    assert_eq!(refresh(&app, &refresh_token).await.0, 401);
    let (status, body) = answer(try_login(&app, "temp@example.com", "Temp-Password-1").await).await;
    assert_error(status, &body, 401, "ACCOUNT_DEACTIVATED");
    // A deactivated admin is not changed, except by bringing it back.
    let (status, body) = patch_user(&app, &root, id, json!({"name": "Yine Değişti"})).await;
    assert_error(status, &body, 409, "ADMIN_DEACTIVATED");
    let (status, body) = patch_user(
        &app,
        &root,
        id,
        json!({"active": true, "password": "New-Password-123"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    login_as(&app, "temp@example.com", "New-Password-123").await;
    app.stop().await.unwrap();
}

#[testkit::test(migrations = false)]
async fn admins_are_listed_a_page_at_a_time(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (root, _) = login(&app).await;
    for (email, name) in [("b@example.com", "Bora"), ("c@example.com", "Cem")] {
        create_user(
            &app,
            &root,
            json!({"email": email, "name": name, "password": "Some-Password-1", "role": "viewer",
                   "permissions": ["leads"]}),
        )
        .await;
    }
    let list = |query: &str| {
        app.admin(Method::GET, &format!("/v1/admin/users{query}"))
            .bearer_auth(&root)
            .send()
    };
    let (status, body) = answer(
        list("?page=2&limit=2&sortBy=email&sortOrder=asc")
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let users = body["data"]["users"].as_array().unwrap();
    assert_eq!(users.len(), 1);
    assert_eq!(users[0]["email"], "root@example.com");
    assert_eq!(
        body["data"]["pagination"],
        json!({"page": 2, "limit": 2, "total": 3, "totalPages": 2})
    );
    assert!(!body.to_string().contains("$2b$"));
    for (query, field) in [
        ("?limit=101", "limit"),
        ("?page=0", "page"),
        ("?sortBy=password", "sortBy"),
        ("?sortOrder=sideways", "sortOrder"),
    ] {
        let (status, body) = answer(list(query).await.unwrap()).await;
        assert_error(status, &body, 422, "VALIDATION_ERROR");
        assert_eq!(body["error"]["field"], field);
    }
    let (status, body) = answer(
        app.admin(Method::GET, "/v1/admin/users/not-a-uuid")
            .bearer_auth(&root)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_error(status, &body, 404, "NOT_FOUND");
    app.stop().await.unwrap();
}

// ---- audit trail, rate limit, bootstrap --------------------------------------------------------

#[testkit::test(migrations = false)]
async fn a_login_is_recorded_as_an_event_with_ip_user_agent_and_request_id(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    let response = app
        .admin(Method::POST, "/v1/admin/auth/login")
        .header("User-Agent", "admin-panel-test/1.0")
        .header("X-Request-Id", "req-login-42")
        .json(&json!({"email": ROOT_EMAIL, "password": ROOT_PASSWORD}))
        .send()
        .await
        .unwrap();
    let (status, body) = answer(response).await;
    assert_eq!(status, 200);
    let admin_id = body["data"]["user"]["id"].as_str().unwrap();
    let (aggregate_id, payload, metadata): (String, Value, Value) = sqlx::query_as(
        "SELECT aggregate_id, payload, metadata FROM events
          WHERE aggregate_type = 'AdminUser' AND event_type = 'AdminLoggedIn'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(aggregate_id, admin_id);
    assert_eq!(metadata["actor"], admin_id);
    assert_eq!(metadata["ip"], "127.0.0.1");
    assert_eq!(metadata["userAgent"], "admin-panel-test/1.0");
    assert_eq!(metadata["correlationId"], "req-login-42");
    assert_eq!(payload["AdminLoggedIn"]["ip"], "127.0.0.1");
    assert_eq!(
        payload["AdminLoggedIn"]["userAgent"],
        "admin-panel-test/1.0"
    );
    // Failed logins are not domain events.
    try_login(&app, ROOT_EMAIL, "Wrong-Password-1").await;
    let logins: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'AdminLoggedIn'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(logins, 1);
    app.stop().await.unwrap();
}

#[testkit::test(migrations = false)]
async fn too_many_admin_requests_in_a_minute_get_429_with_retry_after(pool: PgPool) {
    let app = TestApp::spawn_with(pool, &[("ADMIN_RATE_LIMIT_PER_MINUTE", "3")]).await;
    let (access, _) = login(&app).await;
    for _ in 0..3 {
        assert_eq!(me(&app, &access).await.0, 200);
    }
    let response = app
        .admin(Method::GET, "/v1/admin/auth/me")
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    let retry_header: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_header));
    let (status, body) = answer(response).await;
    assert_error(status, &body, 429, "RATE_LIMIT_EXCEEDED");
    assert_eq!(body["error"]["retryAfter"], retry_header);
    // Before login the client IP is counted: 1 login so far, 2 more pass, then 429.
    for expected in [401, 401, 429] {
        let status = try_login(&app, "x@example.com", "Wrong-Password-1")
            .await
            .status();
        assert_eq!(status, expected);
    }
    app.stop().await.unwrap();
}

#[testkit::test(migrations = false)]
async fn two_instances_starting_together_create_one_bootstrap_admin(pool: PgPool) {
    let (a, b) = tokio::join!(TestApp::spawn(pool.clone()), TestApp::spawn(pool.clone()));
    let created: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'AdminCreated'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(created, 1);
    login(&a).await;
    login(&b).await;
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}
