//! Admin authentication and authorisation (SPEC §4 "Auth"): the admin secret, login,
//! access and refresh tokens, throttling, and the [`AdminPrincipal`] extractor that every
//! admin route uses.

use std::sync::Arc;

use aggregates::admin::{Permission, Role};
use axum::Router;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use projections::Projection;
use uuid::Uuid;

use crate::error::AppError;
use crate::state::AppState;

/// The admin behind a request: X-Admin-Secret and the bearer token both checked, the admin
/// active, the per-admin rate limit passed.
#[derive(Clone, Debug)]
pub struct AdminPrincipal {
    pub admin_id: Uuid,
    pub email: String,
    pub role: Role,
    pub permissions: Vec<Permission>,
}

impl AdminPrincipal {
    /// 403 `FORBIDDEN` unless this admin has `permission`; `write` additionally refuses
    /// viewers.
    pub fn require(&self, permission: Permission, write: bool) -> Result<(), AppError> {
        let _ = (permission, write);
        Err(AppError::internal("auth not built yet"))
    }

    /// The `actor` written into event metadata.
    pub fn actor(&self) -> String {
        self.admin_id.to_string()
    }
}

impl FromRequestParts<AppState> for AdminPrincipal {
    type Rejection = AppError;

    async fn from_request_parts(
        _parts: &mut Parts,
        _state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Err(AppError::internal("auth not built yet"))
    }
}

/// Verifies an access token outside HTTP (the WebSocket auth message).
pub async fn verify_access_token(
    _state: &AppState,
    _token: &str,
) -> Result<AdminPrincipal, AppError> {
    Err(AppError::internal("auth not built yet"))
}

/// Routes under `/v1/admin/auth` and `/v1/admin/users`.
pub fn router() -> Router<AppState> {
    Router::new()
}

/// Read models this module needs (admin users).
pub fn projections() -> Vec<Arc<dyn Projection>> {
    Vec::new()
}

/// Creates the bootstrap super admin from the configuration when no admin exists.
pub async fn bootstrap(_state: &AppState) -> anyhow::Result<()> {
    Ok(())
}
