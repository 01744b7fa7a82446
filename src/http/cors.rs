//! CORS per client group (SPEC §3, §4): the landing page's origins for `/v1/leads`, the
//! admin panel's for `/v1/admin/*` and `/ws/admin`; nothing else is offered to browsers of
//! other origins. Development allows any localhost origin. One layer in front of the router
//! decides by path, so preflights work for every route of a group.

use std::time::Duration;

use axum::http::{HeaderName, HeaderValue, Method, header};
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::config::{Config, Origins};

pub fn layer(config: &Config) -> CorsLayer {
    let landing = config.landing_origins.clone();
    let admin = config.admin_origins.clone();
    let allow = AllowOrigin::predicate(move |origin: &HeaderValue, request| {
        let path = request.uri.path();
        let group = if path == "/v1/leads" {
            &landing
        } else if path.starts_with("/v1/admin/") || path == "/ws/admin" {
            &admin
        } else {
            return false;
        };
        allowed(group, origin)
    });
    CorsLayer::new()
        .allow_origin(allow)
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
        ])
        .allow_headers([
            header::CONTENT_TYPE,
            header::AUTHORIZATION,
            HeaderName::from_static("x-api-key"),
            HeaderName::from_static("x-admin-secret"),
            HeaderName::from_static("idempotency-key"),
            HeaderName::from_static("x-request-id"),
        ])
        .expose_headers([header::RETRY_AFTER, HeaderName::from_static("x-request-id")])
        .max_age(Duration::from_secs(600))
}

fn allowed(origins: &Origins, origin: &HeaderValue) -> bool {
    match origins {
        Origins::AnyLocalhost => is_localhost(origin),
        Origins::List(list) => list.iter().any(|o| o.as_bytes() == origin.as_bytes()),
    }
}

fn is_localhost(origin: &HeaderValue) -> bool {
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    let Some(rest) = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
    else {
        return false;
    };
    let host = rest.rsplit_once(':').map_or(rest, |(host, port)| {
        if port.chars().all(|c| c.is_ascii_digit()) {
            host
        } else {
            rest
        }
    });
    matches!(host, "localhost" | "127.0.0.1" | "[::1]")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_localhost_origins_pass_the_development_default() {
        for ok in [
            "http://localhost:5173",
            "https://localhost",
            "http://127.0.0.1:3000",
            "http://[::1]:8080",
        ] {
            assert!(is_localhost(&HeaderValue::from_static(ok)), "{ok}");
        }
        for bad in [
            "http://localhost.evil.com",
            "https://evil.com",
            "http://127.0.0.2",
            "null",
        ] {
            assert!(!is_localhost(&HeaderValue::from_static(bad)), "{bad}");
        }
    }
}
