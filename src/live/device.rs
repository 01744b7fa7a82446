//! `GET /ws/device` (SPEC §6): live notices to one desktop, from the instance's one feed.
//!
//! The desktop authenticates like verify, by license key and fingerprint, in its first
//! message (as `/ws/admin` does with its token, and because a header-less client must be
//! able to use it): `{"type": "auth", "licenseKey", "fingerprint"}` within
//! `WS_AUTH_TIMEOUT_MS`. The device must have verified once (pending is enough: waiting for
//! approval is what the socket is for); a blocked device or a revoked license is refused.
//! The answer is `{"type": "AUTH_OK", "device": {id, status, isMaster}}`; then
//! `DEVICE_STATUS_CHANGED` (`data: {device: {id, status, isMaster}}`) for this device and
//! `LICENSE_UPDATED` (`data: {license: {status, expiresAt, daysRemaining, packageType}}`)
//! for its license, as `{"type", "timestamp", "cursor", "data"}`. Nothing is replayed: the
//! next verify shows the same facts.
//!
//! | code | reason |
//! |---|---|
//! | 4401 | `AUTH_TIMEOUT`, `AUTH_REQUIRED`, `LICENSE_NOT_FOUND` (unknown key or device, alike) |
//! | 4429 | `RATE_LIMIT_EXCEEDED` (the network used up verify's budget of failed attempts, and the desktop is not one its license knows) |
//! | 4429 | `TOO_MANY_CONNECTIONS` (the device already has [`MAX_SOCKETS_PER_DEVICE`] sockets on this instance, or its network [`MAX_AUTHENTICATING_PER_NETWORK`] sockets waiting for their auth message) |
//! | 4403 | `LICENSE_REVOKED`, `DEVICE_BLOCKED` |
//! | 4408 | `TOO_SLOW` |
//! | 1001 | `SERVER_SHUTTING_DOWN` |
//!
//! [`DeviceHub`] counts this instance's device sockets and what each received, so the
//! admin's `PATCH` can answer `notificationSent`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use eventstore::Cursor;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::watch;
use tokio::time::timeout;
use uuid::Uuid;

use super::mapping::FeedItem;
use super::{SEND_TIMEOUT, close};

/// Close code when the network has used up its failed attempts (verify's budget).
const TOO_MANY_ATTEMPTS: u16 = 4429;
use crate::state::AppState;

const MAX_CLIENT_MESSAGE: usize = 4 * 1024;
/// Sockets one client network (as verify's limit counts it) may have waiting for their auth
/// message at once: each is held up to `WS_AUTH_TIMEOUT_MS` for nothing.
pub const MAX_AUTHENTICATING_PER_NETWORK: usize = 16;
/// Sockets one device may hold open on one instance: the app and a restart's overlap, with
/// room to spare; more would only be a way to hold the server's memory.
pub const MAX_SOCKETS_PER_DEVICE: usize = 4;
/// Close code for a refused (known but not allowed) desktop.
const FORBIDDEN: u16 = close::FORBIDDEN;

/// This instance's device sockets and what they were sent.
#[derive(Default)]
pub struct DeviceHub {
    inner: Mutex<Hub>,
    /// Bumped on every delivery, so [`DeviceHub::delivered`] can wait without polling.
    changed: watch::Sender<u64>,
}

#[derive(Default)]
struct Hub {
    /// Sockets per client network still waiting for their auth message.
    authenticating: HashMap<std::net::IpAddr, usize>,
    connected: HashMap<Uuid, usize>,
    /// The last cursor a socket of the device was sent.
    delivered: HashMap<Uuid, Cursor>,
}

impl DeviceHub {
    fn lock(&self) -> std::sync::MutexGuard<'_, Hub> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts a socket of `network` waiting for its auth message; false (and not counted)
    /// when the network has [`MAX_AUTHENTICATING_PER_NETWORK`] already.
    fn start_auth(&self, network: std::net::IpAddr) -> bool {
        let mut hub = self.lock();
        let waiting = hub.authenticating.entry(network).or_default();
        if *waiting >= MAX_AUTHENTICATING_PER_NETWORK {
            return false;
        }
        *waiting += 1;
        true
    }

    fn end_auth(&self, network: std::net::IpAddr) {
        let mut hub = self.lock();
        if let Some(waiting) = hub.authenticating.get_mut(&network) {
            *waiting -= 1;
            if *waiting == 0 {
                hub.authenticating.remove(&network);
            }
        }
    }

    /// Counts a socket of `device`; false (and not counted) when it has its maximum.
    fn connect(&self, device: Uuid) -> bool {
        let mut hub = self.lock();
        let sockets = hub.connected.entry(device).or_default();
        if *sockets >= MAX_SOCKETS_PER_DEVICE {
            return false;
        }
        *sockets += 1;
        true
    }

    fn disconnect(&self, device: Uuid) {
        let mut hub = self.lock();
        if let Some(n) = hub.connected.get_mut(&device) {
            *n -= 1;
            if *n == 0 {
                hub.connected.remove(&device);
                hub.delivered.remove(&device);
            }
        }
    }

    fn record(&self, device: Uuid, cursor: Cursor) {
        {
            let mut hub = self.lock();
            let last = hub.delivered.entry(device).or_insert(cursor);
            *last = (*last).max(cursor);
        }
        self.changed.send_modify(|n| *n += 1);
    }

    /// Whether a socket of `device` on this instance was sent a message at or after
    /// `cursor`, waiting up to `wait` for it; false at once when none is connected.
    pub async fn delivered(&self, device: Uuid, cursor: Cursor, wait: Duration) -> bool {
        let mut changed = self.changed.subscribe();
        let done = |hub: &Hub| hub.delivered.get(&device).is_some_and(|c| *c >= cursor);
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            {
                let hub = self.lock();
                if done(&hub) {
                    return true;
                }
                if !hub.connected.contains_key(&device) {
                    return false;
                }
            }
            match tokio::time::timeout_at(deadline, changed.changed()).await {
                Ok(Ok(())) => {}
                _ => return false,
            }
        }
    }
}

/// `{"type": "auth", "licenseKey", "fingerprint"}`
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AuthMessage {
    #[serde(rename = "type")]
    kind: String,
    license_key: String,
    fingerprint: String,
}

pub(super) async fn upgrade(
    ws: WebSocketUpgrade,
    State(state): State<AppState>,
    crate::http::client_ip::ClientIp(ip): crate::http::client_ip::ClientIp,
) -> Response {
    let limiter_key = crate::http::client_ip::rate_key(ip);
    ws.max_message_size(MAX_CLIENT_MESSAGE)
        .on_upgrade(move |socket| serve(socket, state, limiter_key))
}

async fn serve(mut socket: WebSocket, state: AppState, limiter_key: std::net::IpAddr) {
    let end = session(&mut socket, &state, limiter_key).await;
    if let Some((code, reason)) = end {
        let frame = CloseFrame {
            code,
            reason: Utf8Bytes::from_static(reason),
        };
        let _ = timeout(SEND_TIMEOUT, socket.send(Message::Close(Some(frame)))).await;
    }
}

/// `None`: the client left.
async fn session(
    socket: &mut WebSocket,
    state: &AppState,
    limiter_key: std::net::IpAddr,
) -> Option<(u16, &'static str)> {
    let hub = &state.live.devices;
    if !hub.start_auth(limiter_key) {
        return Some((TOO_MANY_ATTEMPTS, "TOO_MANY_CONNECTIONS"));
    }
    let first = timeout(state.config.ws_auth_timeout, first_text(socket)).await;
    hub.end_auth(limiter_key);
    let first = match first {
        Err(_) => return Some((close::UNAUTHORIZED, "AUTH_TIMEOUT")),
        Ok(None) => return None,
        Ok(Some(text)) => text,
    };
    let Some(auth) = serde_json::from_str::<AuthMessage>(&first)
        .ok()
        .filter(|a| a.kind == "auth")
    else {
        return Some((close::UNAUTHORIZED, "AUTH_REQUIRED"));
    };
    // The same per-network budget of attempts as verify, counted before the lookup and
    // taken back for a known desktop: a socket is no way around it to test license keys, and
    // a limited network's known desktops still connect. Only a known device learns the
    // state of its license (revoked, blocked).
    let failures = &state.licenses.verify_guesses;
    let attempt = failures.attempt(limiter_key, std::time::Instant::now());
    // Subscribe before reading the device, so nothing between the two is missed.
    let mut subscription = state.live.subscribe();
    let known = match authenticate(state, &auth, attempt.is_err()).await {
        Ok(known) => known,
        Err(internal) => return Some(internal),
    };
    let Some(known) = known else {
        return Some(match attempt {
            Ok(_) => (close::UNAUTHORIZED, "LICENSE_NOT_FOUND"),
            Err(_) => (TOO_MANY_ATTEMPTS, "RATE_LIMIT_EXCEEDED"),
        });
    };
    if let Ok(attempt) = attempt {
        failures.refund(attempt);
    }
    if known.revoked {
        return Some((FORBIDDEN, "LICENSE_REVOKED"));
    }
    if known.status == "blocked" {
        return Some((FORBIDDEN, "DEVICE_BLOCKED"));
    }
    let (license_id, device_id, status, master) = (
        known.license_id,
        known.device_id,
        known.status,
        known.master,
    );
    if !hub.connect(device_id) {
        return Some((TOO_MANY_ATTEMPTS, "TOO_MANY_CONNECTIONS"));
    }
    let ok = json!({
        "type": "AUTH_OK",
        "device": {"id": projections::licenses::device_id_text(device_id), "status": status, "isMaster": master},
    })
    .to_string();
    if send(socket, ok.into()).await.is_err() {
        hub.disconnect(device_id);
        return None;
    }
    let end = follow(
        socket,
        state,
        &mut subscription.receiver,
        license_id,
        device_id,
    )
    .await;
    hub.disconnect(device_id);
    end
}

async fn follow(
    socket: &mut WebSocket,
    state: &AppState,
    live: &mut tokio::sync::broadcast::Receiver<FeedItem>,
    license_id: Uuid,
    device_id: Uuid,
) -> Option<(u16, &'static str)> {
    let stopping = state.live.stopping();
    tokio::pin!(stopping);
    loop {
        tokio::select! {
            () = &mut stopping => return Some((close::GOING_AWAY, "SERVER_SHUTTING_DOWN")),
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Close(_)) | Err(_)) | None => return None,
                Some(Ok(_)) => {}
            },
            item = live.recv() => match item {
                Ok(FeedItem::Device(message)) => {
                    if message.license_id == license_id
                        && message.device_id.is_none_or(|d| d == device_id)
                    {
                        if send(socket, message.text).await.is_err() {
                            return Some((close::TOO_SLOW, "TOO_SLOW"));
                        }
                        state.live.devices.record(device_id, message.cursor);
                        // Told of its block, release or revocation: nothing more to hear.
                        if let Some(end) = message.ends {
                            return Some(end);
                        }
                    }
                }
                Ok(_) => {}
                Err(RecvError::Lagged(_)) => return Some((close::TOO_SLOW, "TOO_SLOW")),
                Err(RecvError::Closed) => {
                    return Some((close::GOING_AWAY, "SERVER_SHUTTING_DOWN"));
                }
            },
        }
    }
}

/// A device its license knows (not released), as the socket's auth found it.
struct KnownDevice {
    license_id: Uuid,
    device_id: Uuid,
    status: String,
    master: bool,
    revoked: bool,
}

/// The device behind an auth message, `None` for an unknown key or a device its license does
/// not know (alike: the socket must not tell which keys exist). From the verify view; from
/// the read model on a miss, unless `limited` and the view holds every device (a limited
/// network's guesses cost no query).
async fn authenticate(
    state: &AppState,
    auth: &AuthMessage,
    limited: bool,
) -> Result<Option<KnownDevice>, (u16, &'static str)> {
    let key = auth.license_key.trim();
    if !crate::licenses::keys::looks_like_key(key) {
        return Ok(None);
    }
    let Ok(print) = crate::licenses::devices::fingerprint("fingerprint", &auth.fingerprint) else {
        return Ok(None);
    };
    let digest = state.licenses.key_digest(key);
    let view = &state.licenses.view;
    let entry = match view.get(&digest, &print) {
        Some(entry) => entry,
        None if limited && view.is_following() => return Ok(None),
        None => match projections::licenses::for_verify(&state.pool, &digest, &print)
            .await
            .map_err(|_| (close::INTERNAL_ERROR, "INTERNAL_ERROR"))?
        {
            Some(row) => std::sync::Arc::new(crate::licenses::view::Entry::uncached(row)),
            None => return Ok(None),
        },
    };
    let row = &entry.row;
    Ok(row
        .device_id
        .filter(|_| crate::licenses::devices::known_device(row))
        .map(|id| KnownDevice {
            license_id: row.license_id,
            device_id: id,
            status: row.device_status.clone().unwrap_or_default(),
            master: row.is_master.unwrap_or(false),
            revoked: row.state() == aggregates::license::LicenseState::Revoked,
        }))
}

async fn first_text(socket: &mut WebSocket) -> Option<String> {
    while let Some(Ok(message)) = socket.recv().await {
        match message {
            Message::Ping(_) | Message::Pong(_) => continue,
            Message::Text(text) => return Some(text.to_string()),
            Message::Close(_) => return None,
            Message::Binary(_) => return Some(String::new()),
        }
    }
    None
}

async fn send(socket: &mut WebSocket, text: Utf8Bytes) -> Result<(), ()> {
    match timeout(SEND_TIMEOUT, socket.send(Message::Text(text))).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(()),
    }
}
