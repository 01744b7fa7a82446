//! Admin authentication and authorisation (SPEC §4 "Auth"): the admin secret, login,
//! access and refresh tokens, throttling, and the [`AdminPrincipal`] extractor that every
//! admin route uses.
//!
//! * [`tokens`]: HS256 access JWTs (15 min) and opaque refresh tokens (7 days).
//! * [`sessions`]: the refresh-token families (rotation, reuse detection, logout).
//! * [`password`]: bcrypt cost 12 on the blocking pool, timing-safe unknown e-mails.
//! * [`throttle`]: 100 requests/min per admin (per IP before login), 5 failed logins per
//!   e-mail and IP in 15 minutes.
//! * `routes`: `/v1/admin/auth/{login,refresh,logout,me}`; [`users`]: `/v1/admin/users`.
//! * [`errors`]: the codes of this module and the mapping of `AdminUser` refusals.
//!
//! Every `/v1/admin/*` request carries `X-Admin-Secret` (compared in constant time); all
//! but login and refresh also carry `Authorization: Bearer <accessToken>`. The principal is
//! loaded from the `admin_users` read model on every request, so deactivation, role changes
//! and logout take effect immediately, not when the token expires.

pub mod errors;
pub mod password;
mod routes;
pub mod sessions;
pub mod throttle;
pub mod tokens;
pub mod users;

use std::sync::Arc;
use std::time::Duration;

use aggregates::admin::{AGGREGATE_TYPE, Permission, Role, effective_permissions};
use axum::Router;
use axum::extract::FromRequestParts;
use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use chrono::{DateTime, Utc};
use projections::Projection;
use projections::admins::{self, AdminsProjection};
use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use uuid::Uuid;

use crate::config::Config;
use crate::error::AppError;
use crate::http::client_ip::ClientIp;
use crate::state::AppState;

/// The header every admin request carries.
pub const ADMIN_SECRET_HEADER: &str = "x-admin-secret";

/// How long the start waits for the admins read model to show the bootstrap admin.
const BOOTSTRAP_WAIT: Duration = Duration::from_secs(120);

/// What admin access keeps in memory for the life of the process: signing keys, the
/// digest of the admin secret, and the rate-limit counters.
pub struct AuthRuntime {
    pub tokens: tokens::AccessTokens,
    /// SHA-256 of `ADMIN_SECRET`: comparing digests in constant time also hides the
    /// secret's length.
    admin_secret_digest: [u8; 32],
    pub limits: throttle::Limits,
}

impl AuthRuntime {
    pub fn new(config: &Config) -> Self {
        Self {
            tokens: tokens::AccessTokens::new(config.jwt_secret.expose_secret().as_bytes()),
            admin_secret_digest: Sha256::digest(config.admin_secret.expose_secret().as_bytes())
                .into(),
            limits: throttle::Limits::new(config.admin_rate_limit_per_minute),
        }
    }

    fn admin_secret_matches(&self, presented: &[u8]) -> bool {
        let digest: [u8; 32] = Sha256::digest(presented).into();
        digest.ct_eq(&self.admin_secret_digest).into()
    }
}

/// The admin behind a request: X-Admin-Secret and the bearer token both checked, the admin
/// active, the per-admin rate limit passed.
#[derive(Clone, Debug)]
pub struct AdminPrincipal {
    pub admin_id: Uuid,
    pub email: String,
    pub role: Role,
    pub permissions: Vec<Permission>,
    /// When the presented access token runs out (the live feed closes its socket then).
    pub expires_at: DateTime<Utc>,
}

impl AdminPrincipal {
    /// 403 `FORBIDDEN` unless this admin has `permission`; `write` additionally refuses
    /// viewers.
    pub fn require(&self, permission: Permission, write: bool) -> Result<(), AppError> {
        if !self.permissions.contains(&permission) || (write && !self.role.can_write()) {
            return Err(errors::forbidden());
        }
        Ok(())
    }

    /// The `actor` written into event metadata.
    pub fn actor(&self) -> String {
        self.admin_id.to_string()
    }
}

impl FromRequestParts<AppState> for AdminPrincipal {
    type Rejection = AppError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        check_admin_secret(parts, state)?;
        let token = bearer_token(&parts.headers).ok_or_else(errors::invalid_token)?;
        let claims = state.auth.tokens.verify(token, Utc::now())?;
        // Counted before the database is asked, after the signature proved who it is.
        state.auth.limits.admin_request(claims.sub)?;
        let principal = load_principal(state, &claims).await?;
        // For handlers that need the session too (logout); extractors share `parts`.
        parts.extensions.insert(SessionId(claims.sid));
        Ok(principal)
    }
}

/// The session (refresh token family) of the request's access token; present in the
/// request extensions once [`AdminPrincipal`] has been extracted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionId(pub Uuid);

/// Verifies an access token outside HTTP (the WebSocket auth message).
pub async fn verify_access_token(
    state: &AppState,
    token: &str,
) -> Result<AdminPrincipal, AppError> {
    let claims = state.auth.tokens.verify(token, Utc::now())?;
    load_principal(state, &claims).await
}

/// The admin and session a genuine token names, as they are now.
async fn load_principal(
    state: &AppState,
    claims: &tokens::AccessClaims,
) -> Result<AdminPrincipal, AppError> {
    let (admin_id, session) = (claims.sub, claims.sid);
    let Some(admin) = admins::find_by_id(&state.pool, admin_id).await? else {
        return Err(errors::invalid_token());
    };
    if !admin.active {
        return Err(errors::account_deactivated());
    }
    if !sessions::is_alive(&state.pool, admin_id, session).await? {
        return Err(errors::invalid_token());
    }
    Ok(AdminPrincipal {
        admin_id,
        permissions: effective_permissions(admin.role, &admin.permissions),
        email: admin.email,
        role: admin.role,
        expires_at: DateTime::from_timestamp(claims.exp, 0).unwrap_or_else(Utc::now),
    })
}

/// Login and refresh: the admin secret checked and the request counted against the
/// client IP (there is no admin yet).
pub struct AdminGate {
    pub ip: std::net::IpAddr,
}

impl FromRequestParts<AppState> for AdminGate {
    type Rejection = AppError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        check_admin_secret(parts, state)?;
        let Ok(ClientIp(ip)) = ClientIp::from_request_parts(parts, state).await;
        state.auth.limits.anonymous_request(ip)?;
        Ok(AdminGate { ip })
    }
}

fn check_admin_secret(parts: &Parts, state: &AppState) -> Result<(), AppError> {
    match parts.headers.get(ADMIN_SECRET_HEADER) {
        Some(value) if state.auth.admin_secret_matches(value.as_bytes()) => Ok(()),
        _ => Err(errors::invalid_admin_secret()),
    }
}

/// The token of `Authorization: Bearer <token>` (scheme case-insensitive).
fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Routes under `/v1/admin/auth` and `/v1/admin/users`.
pub fn router() -> Router<AppState> {
    Router::new().merge(routes::router()).merge(users::router())
}

/// Read models this module needs (admin users).
pub fn projections() -> Vec<Arc<dyn Projection>> {
    vec![Arc::new(projections::Adapter(AdminsProjection))]
}

/// Creates the bootstrap super admin from the configuration when no admin exists.
///
/// "No admin exists" is read from the event log, not the read model, so the start does not
/// wait for a projection to catch up. Two instances starting together are safe: the admin's
/// id is derived from its e-mail, so both try to create the same stream and the event
/// store lets exactly one win; the other sees `AlreadyExists` and carries on.
pub async fn bootstrap(state: &AppState) -> anyhow::Result<()> {
    let Some(bootstrap) = &state.config.bootstrap_admin else {
        return Ok(());
    };
    let any_admin: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM events WHERE aggregate_type = $1)")
            .bind(AGGREGATE_TYPE)
            .fetch_one(&state.pool)
            .await?;
    if any_admin {
        return Ok(());
    }
    let password_hash = password::hash(bootstrap.password.clone())
        .await
        .map_err(|e| anyhow::anyhow!("hashing the bootstrap admin password: {e}"))?;
    let new = users::NewAdmin {
        email: bootstrap.email.clone(),
        name: users::BOOTSTRAP_ADMIN_NAME.to_string(),
        role: Role::SuperAdmin,
        permissions: Permission::ALL.to_vec(),
        password_hash,
    };
    let metadata = eventstore::Metadata::actor("system");
    match users::create_admin(&state.store, new, &metadata).await {
        Ok(outcome) => {
            tracing::info!(admin.email = %bootstrap.email, "bootstrap super admin created");
            if let (Some(cursor), Some(projection)) =
                (outcome.cursor(), state.projection(admins::NAME))
                && let Err(e) = projection.wait_for(cursor, BOOTSTRAP_WAIT).await
            {
                tracing::warn!(error = %e, "the bootstrap admin is not in the read model yet");
            }
            Ok(())
        }
        Err(eventstore::CommandError::Domain(aggregates::admin::AdminError::AlreadyExists)) => {
            Ok(())
        }
        Err(e) => Err(anyhow::anyhow!("creating the bootstrap admin: {e}")),
    }
}
