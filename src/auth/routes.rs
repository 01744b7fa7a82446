//! `/v1/admin/auth`: login, refresh, logout, me.

use aggregates::admin::{
    AdminCommand, AdminError, AdminUser, effective_permissions, normalize_email,
};
use axum::Extension;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::Utc;
use eventstore::{CommandError, CommandHandler};
use projections::admins::{self, AdminRow};
use secrecy::SecretString;
use serde::Deserialize;
use serde_json::{Value, json};

use super::sessions::{self, IssuedRefresh, Rotation};
use super::tokens::ACCESS_TOKEN_TTL_SECS;
use super::users::user_json;
use super::{AdminGate, AdminPrincipal, SessionId, errors, password};
use crate::error::{AppError, AppResult};
use crate::http::context::RequestContext;
use crate::http::extract::AppJson;
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/admin/auth/login", post(login))
        .route("/v1/admin/auth/refresh", post(refresh))
        .route("/v1/admin/auth/logout", post(logout))
        .route("/v1/admin/auth/me", get(me))
}

#[derive(Deserialize)]
struct LoginRequest {
    email: String,
    password: SecretString,
}

#[tracing::instrument(skip_all, fields(admin.id))]
async fn login(
    State(state): State<AppState>,
    gate: AdminGate,
    context: RequestContext,
    AppJson(body): AppJson<LoginRequest>,
) -> AppResult<Json<Value>> {
    let email = normalize_email(&body.email);
    let limits = &state.auth.limits;
    limits.login_allowed(&email, gate.ip)?;
    let admin = admins::find_by_email(&state.pool, &email).await?;
    let hash = admin.as_ref().map(|a| a.password_hash.clone());
    if !password::verify(body.password, hash).await? {
        limits.login_failed(&email, gate.ip);
        tracing::warn!(client.ip = %gate.ip, "admin login failed");
        return Err(errors::invalid_credentials());
    }
    let Some(admin) = admin else {
        return Err(errors::invalid_credentials());
    };
    tracing::Span::current().record("admin.id", tracing::field::display(admin.id));
    if !admin.active {
        return Err(errors::account_deactivated());
    }
    limits.login_succeeded(&email, gate.ip);

    // The audit trail: who logged in, from where.
    let now = Utc::now();
    let command = AdminCommand::RecordLogin {
        ip: Some(context.ip.to_string()),
        user_agent: context.user_agent.clone(),
        at: now,
    };
    CommandHandler::<AdminUser>::new(state.store.clone(), ())
        .execute(
            &admin.id.to_string(),
            command,
            &context.metadata(admin.id.to_string()),
        )
        .await
        .map_err(|e| match e {
            // The read model had not caught up with a deactivation yet.
            CommandError::Domain(AdminError::Deactivated) => errors::account_deactivated(),
            other => errors::from_command(other),
        })?;

    let refresh = sessions::start(&state.pool, admin.id, &context, now).await?;
    token_answer(&state, &admin, refresh)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RefreshRequest {
    refresh_token: String,
}

async fn refresh(
    State(state): State<AppState>,
    _gate: AdminGate,
    context: RequestContext,
    AppJson(body): AppJson<RefreshRequest>,
) -> AppResult<Json<Value>> {
    match sessions::rotate(&state.pool, &body.refresh_token, &context, Utc::now()).await? {
        Rotation::Rotated { admin, refresh } => token_answer(&state, &admin, refresh),
        Rotation::Invalid => Err(errors::invalid_token()),
        Rotation::Reused {
            family_id,
            admin_id,
        } => {
            tracing::warn!(
                admin.id = %admin_id,
                session.id = %family_id,
                client.ip = %context.ip,
                "a rotated refresh token was presented again; the session is revoked"
            );
            Err(errors::invalid_token())
        }
        Rotation::Expired(at) => Err(errors::token_expired(at)),
        Rotation::Deactivated => Err(errors::account_deactivated()),
    }
}

/// `{user, tokens: {accessToken, refreshToken, expiresIn}}` for a new or rotated session.
fn token_answer(
    state: &AppState,
    admin: &AdminRow,
    refresh: IssuedRefresh,
) -> AppResult<Json<Value>> {
    let access = state.auth.tokens.issue(
        admin.id,
        refresh.family_id,
        admin.role,
        &effective_permissions(admin.role, &admin.permissions),
        Utc::now(),
    )?;
    Ok(Json(json!({
        "success": true,
        "data": {
            "user": user_json(admin),
            "tokens": {
                "accessToken": access,
                "refreshToken": refresh.token,
                "expiresIn": ACCESS_TOKEN_TTL_SECS,
            },
        },
    })))
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct LogoutRequest {
    refresh_token: Option<String>,
}

/// Ends the session of the access token (and of `refreshToken`, if one of this admin's is
/// given). The body is optional, so it is read by hand rather than with `AppJson`.
async fn logout(
    State(state): State<AppState>,
    principal: AdminPrincipal,
    session: Option<Extension<SessionId>>,
    body: Bytes,
) -> AppResult<Json<Value>> {
    let request: LogoutRequest = if body.iter().all(u8::is_ascii_whitespace) {
        LogoutRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| AppError::invalid_json(e.to_string()))?
    };
    let now = Utc::now();
    let Some(Extension(SessionId(session))) = session else {
        return Err(AppError::internal("logout without a session id"));
    };
    sessions::revoke_family(&state.pool, principal.admin_id, session, now).await?;
    if let Some(token) = request.refresh_token
        && let Some(family) = sessions::family_of(&state.pool, principal.admin_id, &token).await?
    {
        sessions::revoke_family(&state.pool, principal.admin_id, family, now).await?;
    }
    Ok(Json(json!({
        "success": true,
        "data": {"message": "Oturum kapatıldı."},
    })))
}

async fn me(State(state): State<AppState>, principal: AdminPrincipal) -> AppResult<Json<Value>> {
    let admin = admins::find_by_id(&state.pool, principal.admin_id)
        .await?
        .ok_or_else(errors::invalid_token)?;
    Ok(Json(
        json!({"success": true, "data": {"user": user_json(&admin)}}),
    ))
}
