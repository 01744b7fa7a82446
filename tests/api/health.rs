//! Liveness, readiness and graceful shutdown.

use serde_json::Value;
use sqlx::PgPool;

use crate::helpers::TestApp;

#[testkit::test(migrations = false)]
async fn health_answers_healthy_with_a_millisecond_timestamp(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let response = app.client.get(app.url("/health")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers().contains_key("x-request-id"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "healthy");
    assert_eq!(body["service"], "domizan-gateway");
    let ts = body["timestamp"].as_str().unwrap();
    assert!(
        ts.ends_with('Z') && ts.len() == "2026-02-05T16:15:30.000Z".len(),
        "{ts}"
    );
    app.stop().await.unwrap();
}

#[testkit::test(migrations = false)]
async fn ready_reports_database_and_migrations(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let body: Value = app
        .client
        .get(app.url("/ready"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["success"], true);
    assert_eq!(body["data"]["database"]["ok"], true);
    assert_eq!(body["data"]["migrations"]["ok"], true);
    app.stop().await.unwrap();
}

#[testkit::test(migrations = false)]
async fn ready_fails_when_a_migration_is_missing(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    // Pretend the newest migration was never applied.
    sqlx::query(
        "DELETE FROM _sqlx_migrations WHERE version = (SELECT max(version) FROM _sqlx_migrations)",
    )
    .execute(&pool)
    .await
    .unwrap();
    let response = app.client.get(app.url("/ready")).send().await.unwrap();
    assert_eq!(response.status(), 503);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["success"], false);
    assert_eq!(body["error"]["code"], "NOT_READY");
    assert_eq!(body["error"]["checks"]["migrations"]["ok"], false);
    app.stop().await.unwrap();
}

#[testkit::test(migrations = false)]
async fn a_request_in_flight_finishes_during_graceful_shutdown(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let client = app.client.clone();
    let url = app.url("/ready");
    let stopped = tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        app.stop().await
    });
    let response = client.get(url).send().await;
    // Either the request made it before the listener closed and was answered in full, or it
    // was refused at connect; it is never cut off half-way.
    if let Ok(response) = response {
        assert!(response.json::<Value>().await.is_ok());
    }
    stopped.await.unwrap().unwrap();
}

#[testkit::test(migrations = false)]
async fn metrics_show_latency_appends_projection_lag_fence_and_sockets(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let created = app
        .client
        .post(app.url("/v1/leads"))
        .header("X-API-Key", crate::helpers::LANDING_KEY)
        .json(&serde_json::json!({"name": "Metrik Deneme", "email": "m@ornek.com", "phone": "05321112233"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let response = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = response.text().await.unwrap();
    for needle in [
        "http_request_duration_seconds_bucket{method=\"POST\",route=\"/v1/leads\",status=\"201\"",
        "eventstore_events_appended_total",
        "projection_lag_events{projection=\"leads\"}",
        "projection_lag_seconds{projection=\"admins\"}",
        "eventstore_oldest_xact_age_seconds",
        "eventstore_events_held_by_fence",
        "eventstore_prepared_xacts",
        "websocket_connections",
    ] {
        assert!(text.contains(needle), "{needle} missing from:\n{text}");
    }
    app.stop().await.unwrap();
}
