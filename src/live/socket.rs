//! One admin connection: the auth message, the replay from `since`, then the live loop.
//!
//! A `since` must be of the log's current epoch (ADR 0008) and at most
//! `WS_MAX_REPLAY_EVENTS` behind; otherwise the socket closes with 4400 and the panel
//! reloads. `PROGRESS` frames hand the panel a newer cursor after the replay and while the
//! feed moves, so an admin who may see none of the recent events does not replay from the
//! same old point on every reconnect.

use aggregates::admin::Permission;
use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use chrono::Utc;
use eventstore::Cursor;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::sync::watch;
use tokio::time::{Instant, sleep_until, timeout};
use tracing::Instrument;

use super::feed::FeedSubscription;
use super::mapping::{self, FeedItem};
use super::{RECHECK_INTERVAL, SEND_TIMEOUT, close};
use crate::auth::{AdminPrincipal, verify_access_token};
use crate::error::AppError;
use crate::http::context::RequestContext;
use crate::state::AppState;

/// The client sends one small message; nothing bigger is accepted.
const MAX_CLIENT_MESSAGE: usize = 16 * 1024;
/// Events per page of a `since` replay.
const REPLAY_PAGE: i64 = 500;
/// How long the close frame (and the client's answer to it) may take.
const CLOSE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// `GET /ws/admin`: upgrades and serves the socket in a span that names the admin once known.
pub(super) async fn upgrade(
    ws: WebSocketUpgrade,
    State(state): State<AppState>,
    context: RequestContext,
) -> Response {
    let span = tracing::info_span!(
        "ws.admin",
        client.ip = %context.ip,
        request.id = context.request_id.as_deref().unwrap_or("-"),
        admin.id = tracing::field::Empty,
    );
    ws.max_message_size(MAX_CLIENT_MESSAGE)
        .on_upgrade(move |socket| serve(socket, state).instrument(span))
}

/// Why a connection ends.
enum End {
    /// The client closed or went away; there is nobody to tell.
    ClientLeft,
    /// We close with this code and reason.
    Close(u16, &'static str),
}

/// `{"type": "auth", "token", "since"?}`
#[derive(Deserialize)]
struct AuthMessage {
    #[serde(rename = "type")]
    kind: String,
    token: String,
    since: Option<String>,
}

/// An authenticated connection.
struct Connection {
    principal: AdminPrincipal,
    /// Kept to re-check the session while connected.
    token: String,
}

async fn serve(mut socket: WebSocket, state: AppState) {
    tracing::debug!("admin socket opened");
    let end = session(&mut socket, &state).await;
    match end {
        End::ClientLeft => tracing::info!("admin socket closed by the client"),
        End::Close(code, reason) => {
            tracing::info!(
                close.code = code,
                close.reason = reason,
                "closing admin socket"
            );
            close_with(socket, code, reason).await;
        }
    }
}

async fn session(socket: &mut WebSocket, state: &AppState) -> End {
    let (mut connection, since) = match authenticate(socket, state).await {
        Ok(authenticated) => authenticated,
        Err(end) => return end,
    };
    tracing::Span::current().record(
        "admin.id",
        tracing::field::display(connection.principal.admin_id),
    );
    // Subscribe before replaying, so that nothing between the replay and the live stream is lost.
    let FeedSubscription {
        receiver: live,
        position,
        restarts,
    } = state.live.subscribe();
    if let Some(since) = since
        && let Err(end) = check_since(state, since, position).await
    {
        return end;
    }
    let start = since.unwrap_or(position);
    let auth_ok = json!({"type": "AUTH_OK", "cursor": start}).to_string();
    if let Err(end) = send(socket, auth_ok.into()).await {
        return end;
    }
    let sent = match since {
        Some(since) => match replay(socket, state, &connection.principal, since, position).await {
            Ok(sent) => sent,
            Err(end) => return end,
        },
        None => position,
    };
    if since.is_some()
        && let Err(end) = send(socket, progress(sent)).await
    {
        return end;
    }
    connection.follow(socket, state, live, restarts, sent).await
}

/// A `since` the feed can honour: of the current epoch (an earlier one may name events
/// that a failover lost, or sort wrongly against the new cluster's), and not so far behind
/// that the replay would be a reload in disguise.
async fn check_since(state: &AppState, since: Cursor, position: Cursor) -> Result<(), End> {
    if since.epoch() != position.epoch() {
        return Err(End::Close(close::BAD_REQUEST, "CURSOR_STALE"));
    }
    if since == position {
        return Ok(());
    }
    if since > position {
        // Another instance may be ahead of this one, but nobody is ahead of the log: a
        // made-up cursor would otherwise silence the socket for good.
        let head = state
            .store
            .head()
            .await
            .map_err(|e| internal(AppError::from(e)))?;
        if since > head {
            return Err(End::Close(close::BAD_REQUEST, "INVALID_CURSOR"));
        }
        return Ok(());
    }
    let limit = state.config.ws_max_replay_events;
    let behind = state
        .store
        .count_between(since, position, limit + 1)
        .await
        .map_err(|e| internal(AppError::from(e)))?;
    if behind > limit {
        return Err(End::Close(close::BAD_REQUEST, "CURSOR_TOO_OLD"));
    }
    Ok(())
}

/// `{"type": "PROGRESS", "cursor"}`: everything up to `cursor` has been dealt with.
fn progress(cursor: Cursor) -> Utf8Bytes {
    json!({"type": "PROGRESS", "cursor": cursor})
        .to_string()
        .into()
}

/// Waits for the auth message and checks it: the admin, and where to start.
async fn authenticate(
    socket: &mut WebSocket,
    state: &AppState,
) -> Result<(Connection, Option<Cursor>), End> {
    let first = match timeout(state.config.ws_auth_timeout, first_message(socket)).await {
        Err(_) => return Err(End::Close(close::UNAUTHORIZED, "AUTH_TIMEOUT")),
        Ok(None) => return Err(End::ClientLeft),
        Ok(Some(message)) => message,
    };
    let auth = match &first {
        Message::Text(text) => serde_json::from_str::<AuthMessage>(text).ok(),
        _ => None,
    }
    .filter(|auth| auth.kind == "auth")
    .ok_or(End::Close(close::UNAUTHORIZED, "AUTH_REQUIRED"))?;
    let principal = verify_access_token(state, &auth.token)
        .await
        .map_err(refused)?;
    let since = auth
        .since
        .map(|since| since.parse::<Cursor>())
        .transpose()
        .map_err(|_| End::Close(close::BAD_REQUEST, "INVALID_CURSOR"))?;
    let connection = Connection {
        principal,
        token: auth.token,
    };
    Ok((connection, since))
}

/// The first data message (pings do not count); `None` if the client leaves first.
async fn first_message(socket: &mut WebSocket) -> Option<Message> {
    while let Some(Ok(message)) = socket.recv().await {
        match message {
            Message::Ping(_) | Message::Pong(_) => continue,
            Message::Close(_) => return None,
            other => return Some(other),
        }
    }
    None
}

/// A token that does not (or no longer) pass: 4401 with the API's error code as reason.
fn refused(error: AppError) -> End {
    if error.status().is_server_error() {
        tracing::error!(
            error.detail = error.internal_detail().unwrap_or(""),
            "cannot check an admin socket's token"
        );
        return End::Close(close::INTERNAL_ERROR, "INTERNAL_ERROR");
    }
    End::Close(close::UNAUTHORIZED, error.code())
}

/// Sends what the admin may see of the log after `since`, up to `until` (where the live
/// receiver starts). Returns the cursor the live stream continues after.
async fn replay(
    socket: &mut WebSocket,
    state: &AppState,
    principal: &AdminPrincipal,
    since: Cursor,
    until: Cursor,
) -> Result<Cursor, End> {
    let mut after = since;
    while after < until {
        let mut page = state
            .store
            .read_page(after, REPLAY_PAGE)
            .await
            .map_err(|e| internal(AppError::from(e)))?;
        // Later events arrive through the live receiver.
        page.retain(|event| event.cursor <= until);
        let Some(last) = page.last() else {
            // Cannot happen: every event up to `until` had settled when the feed read it. Were
            // it to, a close (and a reconnect with `since`) beats a silent gap.
            tracing::error!(live.after = %after, live.until = %until, "replay stopped short");
            return Err(End::Close(close::INTERNAL_ERROR, "INTERNAL_ERROR"));
        };
        after = last.cursor;
        for item in mapping::items(state, &page).await.map_err(internal)? {
            if let FeedItem::Message(message) = item
                && may_see(principal, message.permission)
            {
                send(socket, message.text).await?;
            }
        }
    }
    Ok(after)
}

impl Connection {
    /// The live loop: feed messages out, watch the token and the client, until one ends it.
    async fn follow(
        &mut self,
        socket: &mut WebSocket,
        state: &AppState,
        mut live: broadcast::Receiver<FeedItem>,
        mut restarts: watch::Receiver<u64>,
        mut sent: Cursor,
    ) -> End {
        let expires_in = (self.principal.expires_at - Utc::now())
            .to_std()
            .unwrap_or_default();
        let expiry = sleep_until(Instant::now() + expires_in);
        tokio::pin!(expiry);
        let mut recheck =
            tokio::time::interval_at(Instant::now() + RECHECK_INTERVAL, RECHECK_INTERVAL);
        let stopping = state.live.stopping();
        tokio::pin!(stopping);
        let every = state.config.ws_progress_interval;
        let mut progress_tick = tokio::time::interval_at(Instant::now() + every, every);
        let mut reported = sent;
        loop {
            tokio::select! {
                () = &mut expiry => return End::Close(close::UNAUTHORIZED, "TOKEN_EXPIRED"),
                () = &mut stopping => return End::Close(close::GOING_AWAY, "SERVER_SHUTTING_DOWN"),
                Ok(()) = restarts.changed() => {
                    return End::Close(close::BAD_REQUEST, "CURSOR_STALE");
                }
                _ = progress_tick.tick() => {
                    if let Some(position) = state.live.drained_position(&live) {
                        sent = sent.max(position);
                    }
                    if sent > reported {
                        reported = sent;
                        if let Err(end) = send(socket, progress(sent)).await {
                            return end;
                        }
                    }
                }
                _ = recheck.tick() => {
                    if let Err(end) = self.recheck(state).await {
                        return end;
                    }
                }
                incoming = socket.recv() => match incoming {
                    // Nothing else is expected from the client; pings are answered for us.
                    Some(Ok(Message::Close(_)) | Err(_)) | None => return End::ClientLeft,
                    Some(Ok(_)) => {}
                },
                item = live.recv() => match item {
                    Ok(FeedItem::Message(message)) => {
                        // At or below `sent`: already replayed.
                        if message.cursor > sent {
                            sent = message.cursor;
                            if may_see(&self.principal, message.permission)
                                && let Err(end) = send(socket, message.text).await
                            {
                                return end;
                            }
                        }
                    }
                    // For desktops (`/ws/device`), never for panels.
                    Ok(FeedItem::Device(_)) => {}
                    Ok(FeedItem::AdminChanged(id)) => {
                        if id == self.principal.admin_id
                            && let Err(end) = self.recheck(state).await
                        {
                            return end;
                        }
                    }
                    Err(RecvError::Lagged(missed)) => {
                        tracing::info!(live.missed = missed, "admin socket fell behind");
                        return End::Close(close::TOO_SLOW, "TOO_SLOW");
                    }
                    Err(RecvError::Closed) => {
                        return End::Close(close::GOING_AWAY, "SERVER_SHUTTING_DOWN");
                    }
                },
            }
        }
    }

    /// Loads the admin and session again: a deactivation, a logout or a revoked session
    /// closes the socket; a role change takes effect on the next message. A database hiccup
    /// keeps what we had.
    async fn recheck(&mut self, state: &AppState) -> Result<(), End> {
        match verify_access_token(state, &self.token).await {
            Ok(principal) => {
                self.principal = principal;
                Ok(())
            }
            Err(e) if e.status().is_server_error() => {
                tracing::warn!(
                    error.detail = e.internal_detail().unwrap_or(""),
                    "cannot re-check an admin socket's token; keeping it"
                );
                Ok(())
            }
            Err(e) => Err(refused(e)),
        }
    }
}

/// Whether the admin holds any of the permissions a message is pushed for.
fn may_see(principal: &AdminPrincipal, permissions: &[Permission]) -> bool {
    permissions
        .iter()
        .any(|p| principal.permissions.contains(p))
}

/// One message, or the end of a client that does not take it within [`SEND_TIMEOUT`].
async fn send(socket: &mut WebSocket, text: Utf8Bytes) -> Result<(), End> {
    match timeout(SEND_TIMEOUT, socket.send(Message::Text(text))).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(End::ClientLeft),
        Err(_) => Err(End::Close(close::TOO_SLOW, "TOO_SLOW")),
    }
}

fn internal(error: AppError) -> End {
    tracing::error!(
        error.detail = error.internal_detail().unwrap_or(""),
        "admin socket replay failed"
    );
    End::Close(close::INTERNAL_ERROR, "INTERNAL_ERROR")
}

/// Sends the close frame and waits briefly for the client's answer. A client that does not
/// read gets neither: after [`CLOSE_TIMEOUT`] the connection is dropped.
async fn close_with(mut socket: WebSocket, code: u16, reason: &'static str) {
    let frame = CloseFrame {
        code,
        reason: Utf8Bytes::from_static(reason),
    };
    if let Ok(Ok(())) = timeout(CLOSE_TIMEOUT, socket.send(Message::Close(Some(frame)))).await {
        let _ = timeout(CLOSE_TIMEOUT, async {
            while let Some(Ok(_)) = socket.recv().await {}
        })
        .await;
    }
}
