//! The live admin feed, `GET /ws/admin` (SPEC §4): what happens in the event log, pushed to
//! the admin panels as it happens.
//!
//! * [`feed`]: **one** event-store subscription per gateway instance ([`LiveFeed`], started
//!   by `startup::run`, kept in `AppState`, stopped on shutdown). It follows the log from its
//!   head at start-up, turns each event into a message once, and fans the messages out to
//!   every socket over a `tokio::sync::broadcast` channel. HTTP handlers push nothing: an
//!   event is pushed because it is in the log, whoever wrote it (this instance, another one,
//!   an import).
//! * [`mapping`]: event → message. Lead data is read from the `leads` read model after that
//!   projection has processed the event, so it reflects the event (and shows `[silindi]`
//!   once a lead is erased). Each message says which permission it needs.
//! * [`device`]: `GET /ws/device`, the desktops' sockets, fed from the same channel
//!   ([`FeedItem::Device`] items, which admin sockets skip).
//! * `socket`: one task per connection: the auth message, the optional replay from
//!   `since`, then the live loop, which filters by the admin's permissions and drops the
//!   socket rather than wait for it.
//!
//! # Protocol
//!
//! The client's first message, within [`AUTH_TIMEOUT`] (`WS_AUTH_TIMEOUT_MS`), is
//! `{"type": "auth", "token": "<accessToken>", "since"?: "<cursor>"}`; the answer is
//! `{"type": "AUTH_OK", "cursor"}`. Then, in log order, `{"type", "timestamp", "cursor",
//! "data"}` with `type` one of `NEW_LEAD`, `LEAD_UPDATED`, `LEAD_CONVERTED`, or `ERROR` (an
//! event whose lead the read model does not have: `data` is `{"code": "LEAD_MISSING",
//! "message", "leadId", "for"}`; the panel should reload that lead). After a `since` replay
//! and then every [`PROGRESS_INTERVAL`] (`WS_PROGRESS_INTERVAL_MS`) while the feed moved,
//! `{"type": "PROGRESS", "cursor"}`: the socket has dealt with everything up to there, also
//! with events this admin may not see. A client keeps the `cursor` of the last message it
//! handled (of any type, `AUTH_OK` included) and sends it as `since` when it reconnects.
//!
//! # Close codes
//!
//! | code | reason | when |
//! |---|---|---|
//! | 4401 | `AUTH_TIMEOUT`, `AUTH_REQUIRED`, `INVALID_TOKEN`, `TOKEN_EXPIRED`, `ACCOUNT_DEACTIVATED` | no or malformed auth message in time, a bad token, the token ran out while connected, the admin was deactivated or the session ended |
//! | 4400 | `INVALID_CURSOR` | `since` is not a cursor |
//! | 4400 | `CURSOR_STALE` | `since` is from an earlier epoch of the log (the database moved to another cluster or a standby was promoted, ADR 0008), or the feed found such a move while connected: events may have been lost or renumbered, so the panel reloads |
//! | 4400 | `CURSOR_TOO_OLD` | `since` is more than [`MAX_REPLAY_EVENTS`] (`WS_MAX_REPLAY_EVENTS`) events behind: the panel reloads instead of replaying |
//! | 4408 | `TOO_SLOW` | the socket fell [`CHANNEL_CAPACITY`] messages behind, or one send took longer than [`SEND_TIMEOUT`] |
//! | 1001 | `SERVER_SHUTTING_DOWN` | the gateway is stopping |
//! | 1011 | `INTERNAL_ERROR` | the database failed us |
//!
//! # Resuming without gaps or duplicates
//!
//! The feed moves its position (the cursor of the last event it has dealt with) only after
//! the event's messages are in the channel, and it does both under one lock; a socket
//! subscribes to the channel and reads that position under the same lock. So the receiver
//! holds exactly the messages after the position `P` it got. With `since`, the socket first
//! replays the log itself from `since` up to `P` (reading with `read_page` and mapping with
//! the same function), then reads the receiver, skipping any message at or below the last
//! cursor it sent. Cursors are totally ordered and the store's fence guarantees that every
//! event at or below `P` is visible to the replay, so nothing is missed and nothing is sent
//! twice; a `since` ahead of this instance (another instance gave it out) just skips.

pub mod device;
pub mod feed;
pub mod mapping;
mod socket;

use std::time::Duration;

use axum::Router;
use axum::routing::get;

pub use device::DeviceHub;
pub use feed::{LiveFeed, LiveStatus, start};
pub use mapping::{DeviceMessage, FeedItem, LiveMessage};

use crate::state::AppState;

/// SPEC §4: the auth message must arrive within 5 s (the default of `WS_AUTH_TIMEOUT_MS`).
pub const AUTH_TIMEOUT: Duration = Duration::from_secs(5);
/// Messages a socket may fall behind the feed before it is dropped.
pub const CHANNEL_CAPACITY: usize = 1024;
/// Longest a single send to one socket may take; a client that does not read for this
/// long (with its TCP buffers full) is dropped.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(2);
/// How often a connection re-checks its token against the database (logout, revoked
/// session); changes to the admin itself are noticed at once from the admin events.
pub const RECHECK_INTERVAL: Duration = Duration::from_secs(30);

/// How often a socket gets a `PROGRESS` frame (when its cursor moved) and the feed checks
/// the log's epoch (the default of `WS_PROGRESS_INTERVAL_MS`).
pub const PROGRESS_INTERVAL: Duration = Duration::from_secs(15);
/// Most events a `since` may be behind the feed (the default of `WS_MAX_REPLAY_EVENTS`).
pub const MAX_REPLAY_EVENTS: i64 = 10_000;

/// Close codes of `/ws/admin`.
pub mod close {
    /// Not authenticated (any more).
    pub const UNAUTHORIZED: u16 = 4401;
    /// A desktop that may no longer listen (blocked device, revoked license).
    pub const FORBIDDEN: u16 = 4403;
    /// A `since` that is malformed, from an earlier epoch, or too old.
    pub const BAD_REQUEST: u16 = 4400;
    /// The client does not keep up.
    pub const TOO_SLOW: u16 = 4408;
    pub const GOING_AWAY: u16 = axum::extract::ws::close_code::AWAY;
    pub const INTERNAL_ERROR: u16 = axum::extract::ws::close_code::ERROR;
}

/// `GET /ws/admin` and `GET /ws/device` ([`device`]). No `X-Admin-Secret` (browsers cannot set headers on a WebSocket): the
/// auth message is the authentication.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/ws/admin", get(socket::upgrade))
        .route("/ws/device", get(device::upgrade))
}
