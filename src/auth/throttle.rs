//! The two limits of admin access, over [`crate::ratelimit::KeyedLimiter`] (in memory, per
//! instance):
//!
//! * requests: `ADMIN_RATE_LIMIT_PER_MINUTE` (default 100) per admin on authenticated
//!   routes, per client IP on login and refresh (SPEC §4);
//! * failed logins: 5 per e-mail and client IP in 15 minutes, then 429 until the window
//!   ends. Keyed by the pair so that a stranger cannot lock a known admin out from another
//!   address; a success clears the count.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::error::AppError;
use crate::http::client_ip::rate_key;
use crate::ratelimit::KeyedLimiter;

pub const LOGIN_FAILURES_ALLOWED: u32 = 5;
pub const LOGIN_FAILURE_WINDOW: Duration = Duration::from_secs(15 * 60);

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Caller {
    Admin(Uuid),
    Ip(IpAddr),
}

pub struct Limits {
    requests: KeyedLimiter<Caller>,
    login_failures: KeyedLimiter<(String, IpAddr)>,
}

impl Limits {
    pub fn new(requests_per_minute: u32) -> Self {
        Self {
            requests: KeyedLimiter::new(requests_per_minute, Duration::from_secs(60)),
            login_failures: KeyedLimiter::new(LOGIN_FAILURES_ALLOWED, LOGIN_FAILURE_WINDOW),
        }
    }

    /// Counts a request of an authenticated admin; 429 over the limit.
    pub fn admin_request(&self, admin_id: Uuid) -> Result<(), AppError> {
        self.requests
            .check(&Caller::Admin(admin_id), Instant::now())
            .map_err(AppError::rate_limited)
    }

    /// Counts a request before login (login, refresh) by client IP; 429 over the limit.
    pub fn anonymous_request(&self, ip: IpAddr) -> Result<(), AppError> {
        self.requests
            .check(&Caller::Ip(rate_key(ip)), Instant::now())
            .map_err(AppError::rate_limited)
    }

    /// 429 while `email` has used up its failed logins from `ip`.
    pub fn login_allowed(&self, email: &str, ip: IpAddr) -> Result<(), AppError> {
        self.login_failures
            .peek(&(email.to_string(), rate_key(ip)), Instant::now())
            .map_err(AppError::rate_limited)
    }

    pub fn login_failed(&self, email: &str, ip: IpAddr) {
        self.login_failures
            .record(&(email.to_string(), rate_key(ip)), Instant::now());
    }

    pub fn login_succeeded(&self, email: &str, ip: IpAddr) {
        self.login_failures
            .reset(&(email.to_string(), rate_key(ip)));
    }
}
