//! Managing admins: `GET/POST /v1/admin/users`, `GET/PATCH /v1/admin/users/{id}` (needs
//! the `users` permission), and the creation path shared with the bootstrap and the
//! `gateway admin create` command.
//!
//! An admin's id is derived from its normalised e-mail ([`admin_id_for_email`]), so the
//! event store's per-stream version check keeps e-mails unique across concurrent requests
//! and instances; no read-model lookup has to be trusted for that.
//!
//! Beyond the permission check, three rules keep `users` from being a way up: only a super
//! admin may grant the `super_admin` role or change a super admin, nobody may grant a
//! permission they do not hold themselves, and nobody may change (rename, re-role, strip,
//! deactivate, reset the password of) an admin who holds a permission they lack.

use aggregates::admin::{
    AdminCommand, AdminError, AdminUpdate, AdminUser, Permission, Role, effective_permissions,
    is_valid_email, is_valid_name, normalize_email,
};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use chrono::Utc;
use eventstore::{CommandError, CommandHandler, CommandOutcome, EventStore, Metadata};
use projections::admins::{self, AdminRow, AdminSort};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use super::{AdminPrincipal, errors, password, sessions};
use crate::error::{AppError, AppResult};
use crate::http::context::RequestContext;
use crate::http::extract::AppJson;
use crate::state::AppState;

/// The display name of the admin created from `BOOTSTRAP_ADMIN_*`.
pub const BOOTSTRAP_ADMIN_NAME: &str = "Sistem Yöneticisi";

/// Advisory lock (class, key) that serialises commands which may remove a super admin, so
/// two of them cannot both count "2 active" and leave none. The class differs from the
/// projection runner's (0x0D00001).
const LOCK_CLASS: i32 = 0x0D0_0002;
const LOCK_SUPER_ADMINS: i32 = 1;

const DEFAULT_PAGE_SIZE: i64 = 20;
const MAX_PAGE_SIZE: i64 = 100;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/admin/users", get(list_users).post(create_user))
        .route("/v1/admin/users/{id}", get(get_user).patch(update_user))
}

/// The stream id of the admin with `email`: a UUID made of the first 128 bits of
/// SHA-256("domizan:admin:" + normalised e-mail), marked as a custom (v8) UUID.
pub fn admin_id_for_email(email: &str) -> Uuid {
    let digest = Sha256::digest(format!("domizan:admin:{}", normalize_email(email)));
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

/// An admin to create; the password is already hashed.
pub struct NewAdmin {
    pub email: String,
    pub name: String,
    pub role: Role,
    pub permissions: Vec<Permission>,
    pub password_hash: String,
}

/// Appends `AdminCreated` for `new` (the one creation path: API, bootstrap, CLI).
/// `AlreadyExists` means the e-mail is taken.
pub async fn create_admin(
    store: &EventStore,
    new: NewAdmin,
    metadata: &Metadata,
) -> Result<CommandOutcome<AdminUser>, CommandError<AdminError>> {
    let id = admin_id_for_email(&new.email);
    let command = AdminCommand::Create {
        id,
        email: new.email,
        name: new.name,
        role: new.role,
        permissions: new.permissions,
        password_hash: new.password_hash,
        at: Utc::now(),
    };
    CommandHandler::<AdminUser>::new(store.clone(), ())
        .execute(&id.to_string(), command, metadata)
        .await
}

/// What `gateway admin create` was given.
pub struct CliAdmin {
    pub email: String,
    pub name: String,
    pub role: String,
    pub permissions: Vec<String>,
    pub password: SecretString,
}

/// `gateway admin create`: the same checks and the same command as `POST
/// /v1/admin/users`, with `system` as the actor. Returns the new admin's id.
pub async fn create_from_cli(store: &EventStore, admin: CliAdmin) -> anyhow::Result<Uuid> {
    let refused = |e: AppError| anyhow::anyhow!("{e}");
    let role = parse_role(&admin.role).map_err(refused)?;
    let permissions = parse_permissions(&admin.permissions).map_err(refused)?;
    password::check_policy(admin.password.expose_secret()).map_err(refused)?;
    let email = normalize_email(&admin.email);
    if !is_valid_email(&email) {
        anyhow::bail!("{email:?} is not an e-mail address");
    }
    let new = NewAdmin {
        email: email.clone(),
        name: admin.name,
        role,
        permissions,
        password_hash: password::hash(admin.password).await.map_err(refused)?,
    };
    match create_admin(store, new, &Metadata::actor("system")).await {
        Ok(_) => Ok(admin_id_for_email(&email)),
        Err(CommandError::Domain(AdminError::AlreadyExists)) => {
            anyhow::bail!("an admin with the e-mail {email} already exists")
        }
        Err(CommandError::Domain(e)) => Err(refused(errors::from_domain(e))),
        Err(e) => Err(e.into()),
    }
}

/// An admin as the API shows it: never the password hash.
pub fn user_json(admin: &AdminRow) -> Value {
    json!({
        "id": admin.id,
        "email": admin.email,
        "name": admin.name,
        "role": admin.role,
        "permissions": effective_permissions(admin.role, &admin.permissions),
        "active": admin.active,
        "createdAt": crate::time::rfc3339(admin.created_at),
        "updatedAt": crate::time::rfc3339(admin.updated_at),
        "lastLoginAt": admin.last_login_at.map(crate::time::rfc3339),
    })
}

// ---- list and read ------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListParams {
    page: Option<String>,
    limit: Option<String>,
    sort_by: Option<String>,
    sort_order: Option<String>,
}

async fn list_users(
    State(state): State<AppState>,
    principal: AdminPrincipal,
    params: Result<Query<ListParams>, QueryRejection>,
) -> AppResult<Json<Value>> {
    principal.require(Permission::Users, false)?;
    let Query(params) =
        params.map_err(|_| AppError::validation("query", "Sorgu parametreleri okunamadı."))?;
    let number = |field: &str, value: Option<String>, default: i64, max: i64| {
        let Some(value) = value else {
            return Ok(default);
        };
        value
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=max).contains(n))
            .ok_or_else(|| {
                AppError::validation(
                    field,
                    format!("{field} 1 ile {max} arasında bir sayı olmalı."),
                )
            })
    };
    let page = number("page", params.page, 1, i64::from(i32::MAX))?;
    let limit = number("limit", params.limit, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)?;
    let sort = match params.sort_by.as_deref() {
        None => AdminSort::CreatedAt,
        Some(name) => AdminSort::from_api(name).ok_or_else(|| {
            AppError::validation(
                "sortBy",
                "Geçersiz sıralama alanı. Geçerli alanlar: createdAt, updatedAt, email, name, lastLoginAt.",
            )
        })?,
    };
    let descending = match params.sort_order.as_deref() {
        None | Some("asc") => false,
        Some("desc") => true,
        Some(_) => {
            return Err(AppError::validation(
                "sortOrder",
                "Sıralama yönü asc veya desc olmalı.",
            ));
        }
    };
    let (rows, total) =
        admins::list(&state.pool, (page - 1) * limit, limit, sort, descending).await?;
    Ok(Json(json!({
        "success": true,
        "data": {
            "users": rows.iter().map(user_json).collect::<Vec<_>>(),
            "pagination": {
                "page": page,
                "limit": limit,
                "total": total,
                "totalPages": (total + limit - 1) / limit,
            },
        },
    })))
}

async fn get_user(
    State(state): State<AppState>,
    principal: AdminPrincipal,
    Path(id): Path<String>,
) -> AppResult<Json<Value>> {
    principal.require(Permission::Users, false)?;
    let admin = find(&state.pool, &id).await?;
    Ok(Json(
        json!({"success": true, "data": {"user": user_json(&admin)}}),
    ))
}

async fn find(pool: &PgPool, id: &str) -> AppResult<AdminRow> {
    let id: Uuid = id.parse().map_err(|_| AppError::not_found())?;
    admins::find_by_id(pool, id)
        .await?
        .ok_or_else(AppError::not_found)
}

// ---- create ---------------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreateUserRequest {
    email: String,
    name: String,
    password: SecretString,
    role: String,
    #[serde(default)]
    permissions: Vec<String>,
}

async fn create_user(
    State(state): State<AppState>,
    principal: AdminPrincipal,
    context: RequestContext,
    AppJson(body): AppJson<CreateUserRequest>,
) -> AppResult<(StatusCode, Json<Value>)> {
    principal.require(Permission::Users, true)?;
    // Everything the client can get wrong is checked before the (slow) hash.
    let email = normalize_email(&body.email);
    if !is_valid_email(&email) {
        return Err(errors::from_domain(AdminError::InvalidEmail));
    }
    if !is_valid_name(&body.name) {
        return Err(errors::from_domain(AdminError::InvalidName));
    }
    let role = parse_role(&body.role)?;
    let permissions = parse_permissions(&body.permissions)?;
    password::check_policy(body.password.expose_secret())?;
    may_grant(&principal, role, &permissions)?;
    let new = NewAdmin {
        email,
        name: body.name,
        role,
        permissions,
        password_hash: password::hash(body.password).await?,
    };
    let outcome = create_admin(&state.store, new, &context.metadata(principal.actor()))
        .await
        .map_err(errors::from_command)?;
    let id = outcome
        .aggregate
        .id()
        .ok_or_else(|| AppError::internal("created admin has no id"))?;
    if let Some(cursor) = outcome.cursor() {
        state.wait_for(admins::NAME, cursor).await?;
    }
    let admin = admins::find_by_id(&state.pool, id)
        .await?
        .ok_or_else(|| AppError::internal("created admin missing from the read model"))?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"success": true, "data": {"user": user_json(&admin)}})),
    ))
}

// ---- update ---------------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UpdateUserRequest {
    name: Option<String>,
    role: Option<String>,
    permissions: Option<Vec<String>>,
    active: Option<bool>,
    password: Option<SecretString>,
}

async fn update_user(
    State(state): State<AppState>,
    principal: AdminPrincipal,
    context: RequestContext,
    Path(id): Path<String>,
    AppJson(body): AppJson<UpdateUserRequest>,
) -> AppResult<Json<Value>> {
    principal.require(Permission::Users, true)?;
    let target = find(&state.pool, &id).await?;
    if let Some(name) = &body.name
        && !is_valid_name(name)
    {
        return Err(errors::from_domain(AdminError::InvalidName));
    }
    let role = body.role.as_deref().map(parse_role).transpose()?;
    let permissions = body
        .permissions
        .as_deref()
        .map(parse_permissions)
        .transpose()?;
    if let Some(password) = &body.password {
        password::check_policy(password.expose_secret())?;
    }
    may_manage(&principal, &target)?;
    if role.is_some() || permissions.is_some() {
        may_grant(
            &principal,
            role.unwrap_or(target.role),
            permissions.as_deref().unwrap_or(&target.permissions),
        )?;
    }
    let password_hash = match body.password {
        Some(password) => Some(password::hash(password).await?),
        None => None,
    };
    let ends_sessions = password_hash.is_some() || body.active == Some(false);

    let (lock, active_super_admins) = SuperAdminLock::acquire(&state.pool).await?;
    let update = AdminUpdate {
        name: body.name,
        role,
        permissions,
        active: body.active,
        password_hash,
        active_super_admins,
        at: Utc::now(),
    };
    let outcome = CommandHandler::<AdminUser>::new(state.store.clone(), ())
        .execute(
            &target.id.to_string(),
            AdminCommand::Update(update),
            &context.metadata(principal.actor()),
        )
        .await
        .map_err(errors::from_command)?;
    if let Some(cursor) = outcome.cursor() {
        // Still holding the lock: the next counter must see this change.
        state.wait_for(admins::NAME, cursor).await?;
    }
    lock.release().await?;

    if ends_sessions && !outcome.events.is_empty() {
        sessions::revoke_admin(&state.pool, target.id, Utc::now()).await?;
    }
    let admin = admins::find_by_id(&state.pool, target.id)
        .await?
        .ok_or_else(AppError::not_found)?;
    Ok(Json(
        json!({"success": true, "data": {"user": user_json(&admin)}}),
    ))
}

/// Holds the super-admin advisory lock for the life of a transaction that does nothing
/// else (it takes no xid, so it never holds back the event store's read fence).
struct SuperAdminLock {
    tx: Transaction<'static, Postgres>,
}

impl SuperAdminLock {
    /// Takes the lock and counts the active super admins under it.
    async fn acquire(pool: &PgPool) -> AppResult<(Self, u32)> {
        let mut tx = pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1, $2)")
            .bind(LOCK_CLASS)
            .bind(LOCK_SUPER_ADMINS)
            .execute(&mut *tx)
            .await?;
        let count = admins::count_active_super_admins(&mut *tx).await?;
        Ok((Self { tx }, u32::try_from(count).unwrap_or(u32::MAX)))
    }

    async fn release(self) -> AppResult<()> {
        self.tx.commit().await?;
        Ok(())
    }
}

// ---- input ----------------------------------------------------------------------------------

fn parse_role(value: &str) -> AppResult<Role> {
    value.parse().map_err(|_| {
        AppError::validation(
            "role",
            "Geçersiz rol. Geçerli roller: super_admin, admin, viewer.",
        )
    })
}

fn parse_permissions(values: &[String]) -> AppResult<Vec<Permission>> {
    values
        .iter()
        .map(|v| v.parse())
        .collect::<Result<Vec<Permission>, _>>()
        .map_err(|_| {
            AppError::validation(
                "permissions",
                "Geçersiz yetki. Geçerli yetkiler: leads, licenses, users, analytics, settings, audit.",
            )
        })
}

/// 403 unless `actor` holds at least everything `target` holds: changing an admin's name,
/// role, permissions, activity or password is a way into their rights (a reset password
/// logs in as them), so nobody may do it to an admin above them. A super admin may manage
/// everyone; an admin may manage only admins and viewers whose permissions they all hold.
fn may_manage(actor: &AdminPrincipal, target: &AdminRow) -> AppResult<()> {
    if actor.role == Role::SuperAdmin {
        return Ok(());
    }
    let held = effective_permissions(target.role, &target.permissions);
    if target.role == Role::SuperAdmin || held.iter().any(|p| !actor.permissions.contains(p)) {
        return Err(errors::forbidden());
    }
    Ok(())
}

/// 403 unless `actor` may hand out `role` with `permissions`.
fn may_grant(actor: &AdminPrincipal, role: Role, permissions: &[Permission]) -> AppResult<()> {
    if actor.role == Role::SuperAdmin {
        return Ok(());
    }
    if role == Role::SuperAdmin || permissions.iter().any(|p| !actor.permissions.contains(p)) {
        return Err(errors::forbidden());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_admin_id_depends_on_the_normalised_email_only() {
        let id = admin_id_for_email("root@example.com");
        assert_eq!(id, admin_id_for_email("  ROOT@Example.com "));
        assert_ne!(id, admin_id_for_email("other@example.com"));
        assert_eq!(id.get_version_num(), 8);
    }

    #[test]
    fn nobody_but_a_super_admin_grants_more_than_they_hold() {
        let admin = AdminPrincipal {
            admin_id: Uuid::nil(),
            email: "a@example.com".into(),
            role: Role::Admin,
            permissions: vec![Permission::Users, Permission::Leads],
            expires_at: Utc::now(),
        };
        assert!(may_grant(&admin, Role::Viewer, &[Permission::Leads]).is_ok());
        assert!(may_grant(&admin, Role::Admin, &[Permission::Settings]).is_err());
        assert!(may_grant(&admin, Role::SuperAdmin, &[]).is_err());
    }
}
