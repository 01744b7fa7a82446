//! The `admin_users` read model: one row per admin, built from the `AdminUser` stream, and
//! the queries the gateway asks of it (log in by e-mail, load the admin behind a token,
//! list for the panel, count active super admins).
//!
//! The row keeps the password hash because login checks it here; it never leaves the
//! gateway ([`AdminRow`]'s `Debug` hides it too).

use std::fmt;

use aggregates::admin::{AGGREGATE_TYPE, AdminEvent, Permission, Role};
use chrono::{DateTime, Utc};
use eventstore::StoredEvent;
use sqlx::postgres::PgRow;
use sqlx::{FromRow, PgConnection, PgExecutor, Row};
use uuid::Uuid;

use crate::adapter::EventProjection;
use crate::{BoxFuture, ProjectionError};

/// The projection's name (its checkpoint key; `wait_for("admins", …)`).
pub const NAME: &str = "admins";

/// Projects admin events into `admin_users` (run it as `Adapter(AdminsProjection)`).
pub struct AdminsProjection;

impl EventProjection for AdminsProjection {
    type Event = AdminEvent;
    type Page = ();
    const NAME: &'static str = NAME;
    const AGGREGATE_TYPE: &'static str = AGGREGATE_TYPE;

    fn apply<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        stored: &'a StoredEvent,
        event: AdminEvent,
        _page: &'a mut (),
    ) -> BoxFuture<'a, Result<(), ProjectionError>> {
        Box::pin(apply_one(tx, stored, event))
    }
}

async fn apply_one(
    tx: &mut PgConnection,
    stored: &StoredEvent,
    event: AdminEvent,
) -> Result<(), ProjectionError> {
    let version = stored.sequence as i64;
    let position = stored.global_position();
    let id: Uuid = stored
        .stream
        .aggregate_id
        .parse()
        .map_err(|e| ProjectionError::event(stored, format!("aggregate id: {e}")))?;
    let changed = match event {
        AdminEvent::AdminCreated {
            id: created_id,
            email,
            name,
            role,
            permissions,
            password_hash,
            at,
        } => {
            if created_id != id {
                return Err(ProjectionError::event(
                    stored,
                    "AdminCreated id differs from its stream",
                ));
            }
            sqlx::query(
                "INSERT INTO admin_users
                    (id, email, name, role, permissions, active, password_hash,
                     created_at, updated_at, version, last_position)
                 VALUES ($1, $2, $3, $4, $5, true, $6, $7, $7, $8, $9)",
            )
            .bind(id)
            .bind(crate::pg_text(&email))
            .bind(crate::pg_text(&name))
            .bind(role.as_str())
            .bind(permission_names(&permissions))
            .bind(password_hash)
            .bind(at)
            .bind(version)
            .bind(position)
            .execute(&mut *tx)
            .await?
        }
        AdminEvent::AdminRenamed { name, at } => {
            let name = crate::pg_text(&name).into_owned();
            update(tx, id, version, position, at, "name = $5", name).await?
        }
        AdminEvent::AdminRoleChanged {
            role,
            permissions,
            at,
        } => {
            sqlx::query(
                "UPDATE admin_users
                    SET role = $5, permissions = $6, updated_at = $4,
                        version = $2, last_position = $3
                  WHERE id = $1",
            )
            .bind(id)
            .bind(version)
            .bind(position)
            .bind(at)
            .bind(role.as_str())
            .bind(permission_names(&permissions))
            .execute(&mut *tx)
            .await?
        }
        AdminEvent::AdminDeactivated { at } => {
            update(tx, id, version, position, at, "active = $5", false).await?
        }
        AdminEvent::AdminReactivated { at } => {
            update(tx, id, version, position, at, "active = $5", true).await?
        }
        AdminEvent::AdminPasswordChanged { password_hash, at } => {
            update(
                tx,
                id,
                version,
                position,
                at,
                "password_hash = $5",
                password_hash,
            )
            .await?
        }
        AdminEvent::AdminLoggedIn { ip, at, .. } => {
            // A login is not an edit of the admin: `updated_at` stays.
            sqlx::query(
                "UPDATE admin_users
                    SET last_login_at = $4, last_login_ip = $5,
                        version = $2, last_position = $3
                  WHERE id = $1",
            )
            .bind(id)
            .bind(version)
            .bind(position)
            .bind(at)
            .bind(crate::pg_text_opt(ip.as_deref()))
            .execute(&mut *tx)
            .await?
        }
    };
    if changed.rows_affected() != 1 {
        return Err(ProjectionError::event(
            stored,
            "no admin_users row for this admin",
        ));
    }
    Ok(())
}

/// `UPDATE admin_users SET <set>, updated_at, version, last_position WHERE id`, where `set`
/// names `$5` for `value`. Only called with fixed column names from this file.
async fn update<T>(
    tx: &mut PgConnection,
    id: Uuid,
    version: i64,
    position: i64,
    at: DateTime<Utc>,
    set: &'static str,
    value: T,
) -> Result<sqlx::postgres::PgQueryResult, sqlx::Error>
where
    T: 'static + Send + for<'q> sqlx::Encode<'q, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
{
    let sql = format!(
        "UPDATE admin_users SET {set}, updated_at = $4, version = $2, last_position = $3 WHERE id = $1"
    );
    sqlx::query(&sql)
        .bind(id)
        .bind(version)
        .bind(position)
        .bind(at)
        .bind(value)
        .execute(&mut *tx)
        .await
}

fn permission_names(permissions: &[Permission]) -> Vec<String> {
    permissions.iter().map(|p| p.as_str().to_string()).collect()
}

// ---- queries ------------------------------------------------------------------------------

/// One admin as the read model holds it.
#[derive(Clone, PartialEq)]
pub struct AdminRow {
    pub id: Uuid,
    pub email: String,
    pub name: String,
    pub role: Role,
    pub permissions: Vec<Permission>,
    pub active: bool,
    pub password_hash: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub last_login_at: Option<DateTime<Utc>>,
}

impl fmt::Debug for AdminRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminRow")
            .field("id", &self.id)
            .field("email", &self.email)
            .field("name", &self.name)
            .field("role", &self.role)
            .field("permissions", &self.permissions)
            .field("active", &self.active)
            .field("password_hash", &"[redacted]")
            .field("created_at", &self.created_at)
            .field("updated_at", &self.updated_at)
            .field("last_login_at", &self.last_login_at)
            .finish()
    }
}

impl<'r> FromRow<'r, PgRow> for AdminRow {
    fn from_row(row: &'r PgRow) -> Result<Self, sqlx::Error> {
        let decode = |column: &str, e: aggregates::admin::UnknownName| sqlx::Error::ColumnDecode {
            index: column.to_string(),
            source: Box::new(e),
        };
        let role: String = row.try_get("role")?;
        let permissions: Vec<String> = row.try_get("permissions")?;
        Ok(AdminRow {
            id: row.try_get("id")?,
            email: row.try_get("email")?,
            name: row.try_get("name")?,
            role: role.parse().map_err(|e| decode("role", e))?,
            permissions: permissions
                .iter()
                .map(|p| p.parse().map_err(|e| decode("permissions", e)))
                .collect::<Result<_, _>>()?,
            active: row.try_get("active")?,
            password_hash: row.try_get("password_hash")?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
            last_login_at: row.try_get("last_login_at")?,
        })
    }
}

const COLUMNS: &str = "id, email, name, role, permissions, active, password_hash, \
                       created_at, updated_at, last_login_at";

/// The admin with this (already normalised) e-mail.
pub async fn find_by_email(
    db: impl PgExecutor<'_>,
    email: &str,
) -> Result<Option<AdminRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM admin_users WHERE email = $1"
    ))
    .bind(email)
    .fetch_optional(db)
    .await
}

pub async fn find_by_id(
    db: impl PgExecutor<'_>,
    id: Uuid,
) -> Result<Option<AdminRow>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM admin_users WHERE id = $1"))
        .bind(id)
        .fetch_optional(db)
        .await
}

/// Active super admins: the number the "last super admin" rule needs in its command.
pub async fn count_active_super_admins(db: impl PgExecutor<'_>) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM admin_users WHERE active AND role = $1")
        .bind(Role::SuperAdmin.as_str())
        .fetch_one(db)
        .await
}

/// The orders the admin list offers (`sortBy`); the SQL is fixed per variant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdminSort {
    CreatedAt,
    UpdatedAt,
    Email,
    Name,
    LastLoginAt,
}

impl AdminSort {
    /// Parses the API's `sortBy` value.
    pub fn from_api(name: &str) -> Option<Self> {
        Some(match name {
            "createdAt" => AdminSort::CreatedAt,
            "updatedAt" => AdminSort::UpdatedAt,
            "email" => AdminSort::Email,
            "name" => AdminSort::Name,
            "lastLoginAt" => AdminSort::LastLoginAt,
            _ => return None,
        })
    }

    fn column(self) -> &'static str {
        match self {
            AdminSort::CreatedAt => "created_at",
            AdminSort::UpdatedAt => "updated_at",
            AdminSort::Email => "email",
            AdminSort::Name => "name",
            AdminSort::LastLoginAt => "last_login_at",
        }
    }
}

/// One page of admins in the given order (ties broken by id, so pages never overlap) and
/// the total count.
pub async fn list(
    db: &sqlx::PgPool,
    offset: i64,
    limit: i64,
    sort: AdminSort,
    descending: bool,
) -> Result<(Vec<AdminRow>, i64), sqlx::Error> {
    let direction = if descending {
        "DESC NULLS LAST"
    } else {
        "ASC NULLS LAST"
    };
    let rows = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM admin_users ORDER BY {} {direction}, id LIMIT $1 OFFSET $2",
        sort.column()
    ))
    .bind(limit)
    .bind(offset)
    .fetch_all(db)
    .await?;
    let total = sqlx::query_scalar("SELECT count(*) FROM admin_users")
        .fetch_one(db)
        .await?;
    Ok((rows, total))
}
