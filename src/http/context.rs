//! The request facts that go into event metadata (SPEC §8): client IP, user agent, and the
//! request id as correlation id.

use std::net::IpAddr;

use axum::extract::FromRequestParts;
use axum::http::header::USER_AGENT;
use axum::http::request::Parts;
use eventstore::Metadata;

use super::REQUEST_ID;
use super::client_ip::{client_ip, peer_addr};
use crate::state::AppState;

/// User agents are free text from the client; keep what fits a log line.
const MAX_USER_AGENT_CHARS: usize = 512;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestContext {
    pub ip: IpAddr,
    pub user_agent: Option<String>,
    /// `x-request-id` (set by the request-id layer when the client sent none).
    pub request_id: Option<String>,
}

impl RequestContext {
    /// Event metadata for a command this request caused on behalf of `actor`.
    pub fn metadata(&self, actor: impl Into<String>) -> Metadata {
        Metadata {
            actor: Some(actor.into()),
            ip: Some(self.ip.to_string()),
            user_agent: self.user_agent.clone(),
            correlation_id: self.request_id.clone(),
            causation_id: None,
        }
    }
}

impl RequestContext {
    /// Event metadata without the client's address and browser: for commands whose client
    /// is a member of the public (the landing form), whose IP is personal data that must be
    /// sealed with their other data, not kept in clear forever.
    pub fn anonymous_metadata(&self, actor: impl Into<String>) -> Metadata {
        Metadata {
            ip: None,
            user_agent: None,
            ..self.metadata(actor)
        }
    }
}

impl FromRequestParts<AppState> for RequestContext {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let header = |name| {
            parts
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
                .filter(|v| !v.is_empty())
        };
        Ok(RequestContext {
            ip: client_ip(parts, peer_addr(parts), &state.config.trusted_proxies),
            user_agent: header(USER_AGENT)
                .map(|ua| ua.chars().take(MAX_USER_AGENT_CHARS).collect()),
            request_id: header(REQUEST_ID).map(str::to_string),
        })
    }
}
