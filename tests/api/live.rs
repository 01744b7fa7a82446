//! The live admin feed `GET /ws/admin` (SPEC §4) with a real WebSocket client: auth and its
//! close codes, lead messages, `since` resume, permissions, slow clients, fan-out.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aggregates::lead::{Lead, LeadCommand, LeadSource, SealedText};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use eventstore::sealing::Sealer;
use eventstore::{CommandHandler, Cursor, EventStore, Metadata};
use futures_util::{SinkExt, StreamExt};
use projections::leads::{Personal, subject};
use reqwest::{Method, StatusCode};
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};
use uuid::Uuid;

use crate::helpers::{
    JWT_SECRET, LANDING_KEY, TestApp, create_admin, lead_of_submission, login, test_config,
};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Longest any single expected message may take in these tests.
const PATIENCE: Duration = Duration::from_secs(5);

async fn connect(app: &TestApp) -> Socket {
    let url = format!("{}/ws/admin", app.base.replace("http://", "ws://"));
    connect_async(url).await.expect("the upgrade succeeds").0
}

async fn send_json(socket: &mut Socket, value: Value) {
    socket
        .send(Message::text(value.to_string()))
        .await
        .expect("the socket takes the message");
}

/// A connected, authenticated panel and the cursor of its `AUTH_OK`.
async fn panel(app: &TestApp, token: &str, since: Option<&str>) -> (Socket, String) {
    let mut socket = connect(app).await;
    let mut auth = json!({"type": "auth", "token": token});
    if let Some(since) = since {
        auth["since"] = since.into();
    }
    send_json(&mut socket, auth).await;
    let ok = next_json(&mut socket).await;
    assert_eq!(ok["type"], "AUTH_OK", "{ok}");
    let cursor = ok["cursor"]
        .as_str()
        .expect("AUTH_OK has a cursor")
        .to_string();
    (socket, cursor)
}

/// The next message other than `PROGRESS`, as JSON; panics if the socket closes or stays
/// silent too long. (`PROGRESS` frames come after a replay and periodically; the tests
/// about them read with [`next_frame`].)
async fn next_json(socket: &mut Socket) -> Value {
    loop {
        let frame = next_frame(socket).await;
        if frame["type"] != "PROGRESS" {
            return frame;
        }
    }
}

/// The next message of any type, as JSON.
async fn next_frame(socket: &mut Socket) -> Value {
    loop {
        let message = tokio::time::timeout(PATIENCE, socket.next())
            .await
            .expect("a message in time")
            .expect("the socket is open")
            .expect("no transport error");
        match message {
            Message::Text(text) => return serde_json::from_str(&text).expect("JSON"),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("expected a JSON message, got {other:?}"),
        }
    }
}

/// Nothing arrives for `quiet`.
async fn assert_silent(socket: &mut Socket, quiet: Duration) {
    if let Ok(message) = tokio::time::timeout(quiet, socket.next()).await {
        panic!("expected silence, got {message:?}");
    }
}

/// The server's close frame: (code, reason). Panics on a data message other than `PROGRESS`.
async fn close_of(socket: &mut Socket) -> (u16, String) {
    loop {
        let message = tokio::time::timeout(PATIENCE, socket.next())
            .await
            .expect("closed in time");
        match message {
            Some(Ok(Message::Close(Some(frame)))) => {
                return (frame.code.into(), frame.reason.to_string());
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            // Progress frames may come at any time.
            Some(Ok(Message::Text(text))) if text.contains(r#""type":"PROGRESS""#) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

fn seed_lead(n: usize) -> Value {
    json!({
        "name": "Ahmet Kaya",
        "email": format!("ahmet{n}@kayasmmm.com"),
        "phone": format!("+90532123{n:04}"),
        "company": "Kaya SMMM",
        "message": "Demo talep ediyorum, muhasebe ofisimiz için AI asistan arıyoruz.",
        "source": "landing_page",
        "utm_source": "google",
        "utm_campaign": "smmm_2026"
    })
}

/// `POST /v1/leads` as the landing page; the id of the lead it landed on.
async fn post_lead(app: &TestApp, body: &Value) -> String {
    let response = app
        .client
        .post(app.url("/v1/leads"))
        .header("X-API-Key", LANDING_KEY)
        .json(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let body: Value = response.json().await.unwrap();
    lead_of_submission(&app.pool, body["data"]["id"].as_str().unwrap()).await
}

async fn admin_json(
    app: &TestApp,
    method: Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> Value {
    let mut request = app.admin(method, path).bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    assert!(
        response.status().is_success(),
        "{path}: {}",
        response.status()
    );
    response.json::<Value>().await.unwrap()["data"].clone()
}

async fn live_status(app: &TestApp) -> Value {
    let ready: Value = app
        .client
        .get(app.url("/ready"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    ready["data"]["liveFeed"].clone()
}

fn cursor(message: &Value) -> Cursor {
    message["cursor"]
        .as_str()
        .expect("a cursor")
        .parse()
        .expect("a valid cursor")
}

/// The claims of a token the server issued (to forge one for the same session).
fn claims_of(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

/// A token signed with the test key, for the session of `genuine`, expiring at `exp`.
fn token_expiring_at(genuine: &str, exp: i64) -> String {
    let mut claims = claims_of(genuine);
    claims["exp"] = exp.into();
    claims["iat"] = (exp - 900).into();
    gateway::auth::tokens::install_crypto_provider();
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .unwrap()
}

// ---- messages ------------------------------------------------------------------------------

#[testkit::test(migrations = false)]
async fn a_new_lead_arrives_on_an_authenticated_socket(pool: PgPool) {
    // How fast is the bench's business (ops/bench, live phase), not a timed test's: under a
    // loaded CI machine a latency bound here only flakes. `next_json` still gives up after
    // PATIENCE.
    let app = TestApp::spawn(pool).await;
    let (access, _) = login(&app).await;
    let (mut socket, start) = panel(&app, &access, None).await;

    let id = post_lead(&app, &seed_lead(1)).await;
    let message = next_json(&mut socket).await;

    assert_eq!(message["type"], "NEW_LEAD");
    assert!(cursor(&message) > start.parse().unwrap());
    let timestamp = message["timestamp"].as_str().unwrap();
    assert!(
        timestamp.ends_with('Z') && timestamp.len() == "2026-02-05T16:15:30.000Z".len(),
        "{timestamp}"
    );
    let data = &message["data"];
    assert_eq!(data["id"], id);
    assert_eq!(data["name"], "Ahmet Kaya");
    assert_eq!(data["email"], "ahmet1@kayasmmm.com");
    assert_eq!(data["phone"], "+905321230001");
    assert_eq!(data["company"], "Kaya SMMM");
    assert_eq!(
        data["message"],
        "Demo talep ediyorum, muhasebe ofisimiz için AI asistan arıyoruz."
    );
    assert_eq!(data["source"], "landing_page");
    assert_eq!(data["status"], "new");
    assert_eq!(data["createdAt"], timestamp, "the event's recorded time");
    app.stop().await.unwrap();
}

#[testkit::test(migrations = false)]
async fn a_patch_is_pushed_as_lead_updated(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (access, _) = login(&app).await;
    let (mut socket, _) = panel(&app, &access, None).await;
    let id = post_lead(&app, &seed_lead(1)).await;
    assert_eq!(next_json(&mut socket).await["type"], "NEW_LEAD");

    let path = format!("/v1/admin/leads/{id}");
    let patched = admin_json(
        &app,
        Method::PATCH,
        &path,
        &access,
        Some(json!({"status": "contacted"})),
    )
    .await;
    let message = next_json(&mut socket).await;
    assert_eq!(message["type"], "LEAD_UPDATED");
    assert_eq!(message["data"]["status"], "contacted");
    // The shape (and content) of the admin GET, history included.
    assert_eq!(message["data"], patched);
    assert_eq!(
        message["data"],
        admin_json(&app, Method::GET, &path, &access, None).await
    );

    // Erasure is an update too, and the pushed lead is already erased.
    admin_json(&app, Method::POST, &format!("{path}/erase"), &access, None).await;
    let message = next_json(&mut socket).await;
    assert_eq!(message["type"], "LEAD_UPDATED");
    assert_eq!(message["data"]["name"], "[silindi]");
    assert_eq!(message["data"]["email"], "[silindi]");
    app.stop().await.unwrap();
}

// ---- auth ------------------------------------------------------------------------------------

#[testkit::test(migrations = false)]
async fn a_bad_token_closes_with_4401(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let mut socket = connect(&app).await;
    send_json(&mut socket, json!({"type": "auth", "token": "garbage"})).await;
    assert_eq!(close_of(&mut socket).await, (4401, "INVALID_TOKEN".into()));

    // Anything but an auth message first is refused the same way.
    let mut socket = connect(&app).await;
    send_json(&mut socket, json!({"type": "subscribe"})).await;
    assert_eq!(close_of(&mut socket).await, (4401, "AUTH_REQUIRED".into()));
    app.stop().await.unwrap();
}

#[testkit::test(migrations = false)]
async fn a_malformed_since_closes_with_4400(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (access, _) = login(&app).await;
    let mut socket = connect(&app).await;
    send_json(
        &mut socket,
        json!({"type": "auth", "token": access, "since": "not-a-cursor"}),
    )
    .await;
    assert_eq!(close_of(&mut socket).await, (4400, "INVALID_CURSOR".into()));
    app.stop().await.unwrap();
}

#[testkit::test(migrations = false)]
async fn a_since_beyond_the_end_of_the_log_closes_with_4400(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (access, _) = login(&app).await;
    let (_, now) = panel(&app, &access, None).await;
    // Same epoch, a transaction far in the future: no instance has given this out.
    let parts: Vec<&str> = now.split('-').collect();
    assert_eq!(parts.len(), 3, "{now}");
    let tx = u64::from_str_radix(parts[1], 16).unwrap();
    let ahead = format!("{}-{:x}-{}", parts[0], tx + 1_000_000, parts[2]);
    let mut socket = connect(&app).await;
    send_json(
        &mut socket,
        json!({"type": "auth", "token": access, "since": ahead}),
    )
    .await;
    assert_eq!(close_of(&mut socket).await, (4400, "INVALID_CURSOR".into()));
    app.stop().await.unwrap();
}

#[testkit::test(migrations = false)]
async fn an_expired_token_closes_with_4401(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (access, _) = login(&app).await;
    let now = chrono::Utc::now().timestamp();

    let expired = token_expiring_at(&access, now - 60);
    let mut socket = connect(&app).await;
    send_json(&mut socket, json!({"type": "auth", "token": expired})).await;
    assert_eq!(close_of(&mut socket).await, (4401, "TOKEN_EXPIRED".into()));

    // A token that runs out while connected closes the socket then.
    let short = token_expiring_at(&access, now + 2);
    let (mut socket, _) = panel(&app, &short, None).await;
    assert_eq!(close_of(&mut socket).await, (4401, "TOKEN_EXPIRED".into()));
    assert!(
        chrono::Utc::now().timestamp() >= now + 2,
        "not before expiry"
    );
    app.stop().await.unwrap();
}

#[testkit::test(migrations = false)]
async fn no_auth_message_in_time_closes_with_4401(pool: PgPool) {
    let app = TestApp::spawn_with(pool, &[("WS_AUTH_TIMEOUT_MS", "300")]).await;
    let opened = Instant::now();
    let mut socket = connect(&app).await;
    assert_eq!(close_of(&mut socket).await, (4401, "AUTH_TIMEOUT".into()));
    let waited = opened.elapsed();
    assert!(
        waited >= Duration::from_millis(300) && waited < Duration::from_secs(2),
        "{waited:?}"
    );
    app.stop().await.unwrap();
}

#[testkit::test(migrations = false)]
async fn a_deactivated_admin_is_disconnected_at_once(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (root, _) = login(&app).await;
    let token = create_admin(&app, &root, "seller@example.com", "admin", &["leads"]).await;
    let me = admin_json(&app, Method::GET, "/v1/admin/auth/me", &token, None).await;
    let id = me["user"]["id"].as_str().unwrap().to_string();
    let (mut socket, _) = panel(&app, &token, None).await;

    admin_json(
        &app,
        Method::PATCH,
        &format!("/v1/admin/users/{id}"),
        &root,
        Some(json!({"active": false})),
    )
    .await;
    assert_eq!(
        close_of(&mut socket).await,
        (4401, "ACCOUNT_DEACTIVATED".into())
    );
    app.stop().await.unwrap();
}

// ---- resume, permissions -----------------------------------------------------------------------

#[testkit::test(migrations = false)]
async fn a_reconnecting_panel_gets_what_it_missed_with_since(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (access, _) = login(&app).await;
    // Stays connected throughout: when it has a lead, so has the feed.
    let (mut observer, _) = panel(&app, &access, None).await;
    let (mut socket, _) = panel(&app, &access, None).await;

    let first = post_lead(&app, &seed_lead(1)).await;
    let received = next_json(&mut socket).await;
    assert_eq!(received["data"]["id"], first);
    let last_seen = received["cursor"].as_str().unwrap().to_string();
    socket.close(None).await.unwrap();
    assert_eq!(next_json(&mut observer).await["data"]["id"], first);

    // Missed while away: already pushed by the feed, so they must come from the replay.
    let second = post_lead(&app, &seed_lead(2)).await;
    let third = post_lead(&app, &seed_lead(3)).await;
    assert_eq!(next_json(&mut observer).await["data"]["id"], second);
    assert_eq!(next_json(&mut observer).await["data"]["id"], third);

    let (mut socket, start) = panel(&app, &access, Some(&last_seen)).await;
    assert_eq!(start, last_seen);
    let replayed = [next_json(&mut socket).await, next_json(&mut socket).await];
    assert_eq!(replayed[0]["type"], "NEW_LEAD");
    assert_eq!(replayed[0]["data"]["id"], second);
    assert_eq!(replayed[1]["data"]["id"], third);
    assert!(cursor(&replayed[0]) > last_seen.parse().unwrap());
    assert!(cursor(&replayed[1]) > cursor(&replayed[0]));

    // Then live, with no duplicate in between.
    let fourth = post_lead(&app, &seed_lead(4)).await;
    let live = next_json(&mut socket).await;
    assert_eq!(live["data"]["id"], fourth);
    assert!(cursor(&live) > cursor(&replayed[1]));
    assert_silent(&mut socket, Duration::from_millis(300)).await;

    // Without `since` only new events come.
    let (mut fresh, _) = panel(&app, &access, None).await;
    assert_silent(&mut fresh, Duration::from_millis(300)).await;
    app.stop().await.unwrap();
}

#[testkit::test(migrations = false)]
async fn an_admin_without_the_leads_permission_gets_no_lead_events(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (root, _) = login(&app).await;
    let analyst = create_admin(&app, &root, "analyst@example.com", "admin", &["analytics"]).await;
    let (mut analyst_socket, _) = panel(&app, &analyst, None).await;
    let (mut root_socket, _) = panel(&app, &root, None).await;

    let id = post_lead(&app, &seed_lead(1)).await;
    assert_eq!(next_json(&mut root_socket).await["data"]["id"], id);
    assert_silent(&mut analyst_socket, Duration::from_millis(500)).await;
    app.stop().await.unwrap();
}

// ---- fan-out and slow clients -----------------------------------------------------------------

/// Appends `n` lead creations straight to the store (the landing form allows 10 a minute and
/// 200 characters of `utm_source`), from 8 writers at once, each with `utm_source`. Their ids.
async fn append_leads(pool: PgPool, n: usize, utm_source: String) -> HashSet<String> {
    let key = *test_config(&pool, &[]).encryption_key.expose_secret();
    let sealer = Sealer::new(pool.clone(), key);
    let handler = Arc::new(CommandHandler::<Lead>::new(
        EventStore::new(pool.clone()),
        (),
    ));
    let mut writers = tokio::task::JoinSet::new();
    for writer in 0..8 {
        let (sealer, handler, utm_source) = (sealer.clone(), handler.clone(), utm_source.clone());
        writers.spawn(async move {
            let mut ids = Vec::new();
            for i in (writer..n).step_by(8) {
                let id = Uuid::now_v7();
                let personal = Personal {
                    name: format!("Lead {i}"),
                    email: format!("lead{i}@example.com"),
                    phone: format!("+90532{i:07}"),
                    company: None,
                    message: None,
                    ip: None,
                    user_agent: None,
                };
                let sealed = sealer.seal_json(&subject(id), &personal).await.unwrap();
                let command = LeadCommand::Create {
                    personal: SealedText(sealed.into_string()),
                    source: LeadSource::LandingPage,
                    utm_source: Some(utm_source.clone()),
                    utm_campaign: None,
                    submission_id: None,
                };
                handler
                    .execute(&id.to_string(), command, &Metadata::actor("landing"))
                    .await
                    .unwrap();
                ids.push(id.to_string());
            }
            ids
        });
    }
    writers.join_all().await.into_iter().flatten().collect()
}

#[testkit::test(migrations = false)]
async fn a_slow_socket_is_dropped_and_others_still_receive(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    let (access, _) = login(&app).await;
    let (mut fast, _) = panel(&app, &access, None).await;
    // Authenticated, then never read: its TCP buffers fill and the server's sends stall.
    let (mut slow, _) = panel(&app, &access, None).await;

    // 128 KiB per message (in `utmSource`, which is not encrypted), 8 MiB in all: twice
    // what the loopback socket buffers held here, so the slow socket's sends stall.
    const LEADS: usize = 64;
    let writers = tokio::spawn(append_leads(pool.clone(), LEADS, "x".repeat(128 * 1024)));
    let mut received = HashSet::new();
    let mut previous = Cursor::START;
    while received.len() < LEADS {
        let message = next_json(&mut fast).await;
        assert_eq!(message["type"], "NEW_LEAD");
        assert!(cursor(&message) > previous, "in log order");
        previous = cursor(&message);
        received.insert(message["data"]["id"].as_str().unwrap().to_string());
    }
    assert_eq!(received, writers.await.unwrap());

    // The slow socket goes while the fast one stays.
    let deadline = Instant::now() + Duration::from_secs(10);
    while live_status(&app).await["sockets"] != 1 {
        assert!(
            Instant::now() < deadline,
            "the slow socket was never dropped"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // What reached the slow client's buffers before it was cut off, then the end: a
    // 4408 close frame if it got through, else a dropped connection.
    let mut delivered = 0;
    loop {
        match tokio::time::timeout(PATIENCE, slow.next()).await.unwrap() {
            Some(Ok(Message::Text(_))) => delivered += 1,
            Some(Ok(Message::Close(frame))) => {
                if let Some(frame) = frame {
                    assert_eq!(u16::from(frame.code), 4408);
                }
                break;
            }
            Some(Ok(_)) => {}
            Some(Err(_)) | None => break,
        }
    }
    assert!(delivered < LEADS, "the slow socket got everything");
    app.stop().await.unwrap();
}

#[testkit::test(migrations = false)]
async fn many_sockets_share_one_subscription(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (access, _) = login(&app).await;
    let mut sockets = Vec::new();
    for _ in 0..20 {
        sockets.push(panel(&app, &access, None).await.0);
    }
    let status = live_status(&app).await;
    assert_eq!(status["sockets"], 20);
    assert_eq!(status["subscriptions"], 1, "{status}");

    let id = post_lead(&app, &seed_lead(1)).await;
    let mut cursors = HashSet::new();
    for socket in &mut sockets {
        let message = next_json(socket).await;
        assert_eq!(message["type"], "NEW_LEAD");
        assert_eq!(message["data"]["id"], id);
        cursors.insert(message["cursor"].as_str().unwrap().to_string());
    }
    assert_eq!(cursors.len(), 1, "one event, one cursor");
    assert_eq!(live_status(&app).await["subscriptions"], 1);
    app.stop().await.unwrap();
}

#[testkit::test(migrations = false)]
async fn stopping_the_gateway_closes_sockets_with_1001(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (access, _) = login(&app).await;
    let (mut socket, _) = panel(&app, &access, None).await;
    let stopped = tokio::spawn(app.stop());
    assert_eq!(
        close_of(&mut socket).await,
        (1001, "SERVER_SHUTTING_DOWN".into())
    );
    stopped.await.unwrap().unwrap();
}

// ---- progress, bounds on `since`, the log's epochs, missing leads --------------------------

/// Waits until the feed has dealt with everything up to `cursor`.
async fn feed_reaches(app: &TestApp, cursor: Cursor) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let status = live_status(app).await;
        let position: Cursor = status["cursor"].as_str().unwrap().parse().unwrap();
        if position >= cursor {
            return;
        }
        assert!(Instant::now() < deadline, "the feed stays at {position}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Appends `n` events of an aggregate the feed does not push; the last one's cursor.
async fn append_unpushed(pool: &PgPool, n: usize) -> Cursor {
    let store = EventStore::new(pool.clone());
    let events: Vec<_> = (0..n)
        .map(|i| eventstore::NewEvent::new("Noted", "1", json!({"i": i}), Metadata::actor("test")))
        .collect();
    store
        .append(
            &eventstore::StreamId::new("note", Uuid::new_v4().to_string()),
            0,
            &events,
        )
        .await
        .unwrap()
        .cursor()
        .unwrap()
}

#[testkit::test(migrations = false)]
async fn an_admin_who_sees_nothing_still_gets_newer_cursors_in_progress_frames(pool: PgPool) {
    let app = TestApp::spawn_with(pool, &[("WS_PROGRESS_INTERVAL_MS", "100")]).await;
    let (root, _) = login(&app).await;
    let analyst = create_admin(&app, &root, "analyst@example.com", "admin", &["analytics"]).await;
    let (mut watcher, start) = panel(&app, &analyst, None).await;

    let id = post_lead(&app, &seed_lead(1)).await;
    let last = append_unpushed(&app.pool, 2).await;
    feed_reaches(&app, last).await;
    // While connected: the feed moved past events this admin may not see.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let frame = next_frame(&mut watcher).await;
        assert_eq!(
            frame["type"], "PROGRESS",
            "only progress for this admin: {frame}"
        );
        if cursor(&frame) >= last {
            break;
        }
        assert!(Instant::now() < deadline);
    }

    // Reconnecting from the old point: the replay has nothing for this admin, and says how
    // far it went, so the next reconnect starts from there.
    let (mut again, auth_cursor) = panel(&app, &analyst, Some(&start)).await;
    assert_eq!(auth_cursor, start);
    let frame = next_frame(&mut again).await;
    assert_eq!(frame["type"], "PROGRESS", "{frame}");
    assert!(cursor(&frame) >= last, "{frame}");

    // A panel that may see the lead gets it in the replay, then the progress frame.
    let (mut root_socket, _) = panel(&app, &root, Some(&start)).await;
    let replayed = next_frame(&mut root_socket).await;
    assert_eq!(replayed["data"]["id"], id);
    let frame = next_frame(&mut root_socket).await;
    assert_eq!(frame["type"], "PROGRESS", "{frame}");
    assert!(cursor(&frame) >= last);
    app.stop().await.unwrap();
}

#[testkit::test(migrations = false)]
async fn a_since_too_far_behind_closes_with_4400_cursor_too_old(pool: PgPool) {
    let app = TestApp::spawn_with(pool, &[("WS_MAX_REPLAY_EVENTS", "5")]).await;
    let (access, _) = login(&app).await;
    // The login's own event is behind the feed before the start is taken.
    feed_reaches(&app, append_unpushed(&app.pool, 1).await).await;
    let (_socket, start) = panel(&app, &access, None).await;
    let within = append_unpushed(&app.pool, 5).await;
    feed_reaches(&app, within).await;
    // Five behind: replayed.
    let (mut socket, _) = panel(&app, &access, Some(&start)).await;
    let frame = next_frame(&mut socket).await;
    assert_eq!(frame["type"], "PROGRESS");
    assert_eq!(cursor(&frame), within);

    let beyond = append_unpushed(&app.pool, 1).await;
    feed_reaches(&app, beyond).await;
    let mut socket = connect(&app).await;
    send_json(
        &mut socket,
        json!({"type": "auth", "token": access, "since": start}),
    )
    .await;
    assert_eq!(close_of(&mut socket).await, (4400, "CURSOR_TOO_OLD".into()));
    app.stop().await.unwrap();
}

#[testkit::test(migrations = false)]
async fn after_the_database_moves_the_feed_restarts_and_stale_cursors_close_with_4400(
    pool: PgPool,
) {
    let app = TestApp::spawn_with(pool, &[("WS_PROGRESS_INTERVAL_MS", "100")]).await;
    let (access, _) = login(&app).await;
    let (mut connected, _) = panel(&app, &access, None).await;
    post_lead(&app, &seed_lead(1)).await;
    let before = next_json(&mut connected).await;
    let stale = cursor(&before);

    // What a promoted standby or a restore into another cluster looks like to the gateway:
    // the cluster no longer matches the one the log's epoch was opened on.
    sqlx::query(
        "UPDATE event_log_epochs SET timeline = timeline + 1
          WHERE epoch = (SELECT max(epoch) FROM event_log_epochs)",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        close_of(&mut connected).await,
        (4400, "CURSOR_STALE".into())
    );

    let mut socket = connect(&app).await;
    send_json(
        &mut socket,
        json!({"type": "auth", "token": access, "since": stale.to_string()}),
    )
    .await;
    assert_eq!(close_of(&mut socket).await, (4400, "CURSOR_STALE".into()));

    // A reloaded panel starts in the new epoch and gets new events.
    let (mut fresh, start) = panel(&app, &access, None).await;
    let start: Cursor = start.parse().unwrap();
    assert!(start.epoch() > stale.epoch());
    let id = post_lead(&app, &seed_lead(2)).await;
    let message = next_json(&mut fresh).await;
    assert_eq!(message["data"]["id"], id);
    assert!(cursor(&message) > start);
    app.stop().await.unwrap();
}

#[testkit::test(migrations = false)]
async fn a_lead_missing_from_the_read_model_is_pushed_as_an_error_and_counted(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (access, _) = login(&app).await;
    let (mut socket, _) = panel(&app, &access, None).await;
    // An update of a lead the read model never had (a damaged read model looks the same).
    let ghost = Uuid::new_v4();
    let event = aggregates::lead::LeadEvent::LeadStatusChanged {
        from: aggregates::lead::LeadStatus::New,
        to: aggregates::lead::LeadStatus::Contacted,
    };
    let appended = EventStore::new(app.pool.clone())
        .append(
            &eventstore::StreamId::new("lead", ghost.to_string()),
            0,
            &[eventstore::NewEvent::new(
                "LeadStatusChanged",
                "1.0",
                serde_json::to_value(&event).unwrap(),
                Metadata::actor("test"),
            )],
        )
        .await
        .unwrap();

    let message = next_json(&mut socket).await;
    assert_eq!(message["type"], "ERROR", "{message}");
    assert_eq!(message["data"]["code"], "LEAD_MISSING");
    assert_eq!(message["data"]["leadId"], ghost.to_string());
    assert_eq!(message["data"]["for"], "LEAD_UPDATED");
    assert_eq!(cursor(&message), appended.cursor().unwrap());
    let metrics = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("live_feed_missing_leads_total 1"),
        "{metrics}"
    );
    app.stop().await.unwrap();
}

#[testkit::test(migrations = false)]
async fn a_gateway_started_on_a_moved_database_opens_a_new_epoch_before_it_appends(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    let (access, _) = login(&app).await;
    let (_, before) = panel(&app, &access, None).await;
    let before: Cursor = before.parse().unwrap();
    app.stop().await.unwrap();

    // The database was restored into another cluster while the gateway was down.
    sqlx::query(
        "UPDATE event_log_epochs SET system_identifier = system_identifier + 1
          WHERE epoch = (SELECT max(epoch) FROM event_log_epochs)",
    )
    .execute(&pool)
    .await
    .unwrap();
    let app = TestApp::spawn(pool.clone()).await;
    let (epoch, reason): (i64, String) =
        sqlx::query_as("SELECT epoch, reason FROM event_log_epochs ORDER BY epoch DESC LIMIT 1")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(epoch > before.epoch());
    assert!(reason.starts_with("cluster"), "{reason}");
    // The first thing appended after the start (this login) is in the new epoch.
    login(&app).await;
    let newest: i64 = sqlx::query_scalar(
        "SELECT epoch FROM events ORDER BY epoch DESC, transaction_id DESC LIMIT 1",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(newest, epoch);
    app.stop().await.unwrap();
}
