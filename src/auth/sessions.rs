//! Admin sessions: the `refresh_tokens` table (session state, not events: ADR 0004).
//!
//! A login starts a family. Each refresh marks the presented token rotated and issues its
//! successor in the same family, inside one transaction that locks the presented row, so
//! two refreshes with the same token cannot both succeed. Presenting a rotated token again
//! means it was copied: the whole family is revoked, which also ends the access tokens
//! issued with it (they name the family as `sid`, and every request checks it is alive).

use chrono::{DateTime, Duration, Utc};
use projections::admins::{self, AdminRow};
use sqlx::PgPool;
use uuid::Uuid;

use super::tokens::{REFRESH_TOKEN_TTL_DAYS, new_refresh_token, refresh_token_hash};
use crate::error::AppError;
use crate::http::context::RequestContext;

/// How long a dead token is kept (for reuse detection) after it expired.
const KEEP_EXPIRED_DAYS: i64 = 1;

/// A refresh token just issued. `token` goes to the client once and is not stored.
#[derive(Debug)]
pub struct IssuedRefresh {
    pub token: String,
    pub family_id: Uuid,
    pub expires_at: DateTime<Utc>,
}

/// What a refresh attempt found.
#[derive(Debug)]
pub enum Rotation {
    Rotated {
        admin: Box<AdminRow>,
        refresh: IssuedRefresh,
    },
    /// Unknown or revoked token.
    Invalid,
    /// An already rotated token came back: its family is now revoked.
    Reused {
        family_id: Uuid,
        admin_id: Uuid,
    },
    Expired(DateTime<Utc>),
    /// The admin is gone or deactivated: the family is now revoked.
    Deactivated,
}

/// Starts a new session (family) for `admin_id`.
pub async fn start(
    pool: &PgPool,
    admin_id: Uuid,
    context: &RequestContext,
    now: DateTime<Utc>,
) -> Result<IssuedRefresh, AppError> {
    // Housekeeping on the login path: this admin's long-dead tokens go.
    sqlx::query("DELETE FROM refresh_tokens WHERE admin_id = $1 AND expires_at < $2")
        .bind(admin_id)
        .bind(now - Duration::days(KEEP_EXPIRED_DAYS))
        .execute(pool)
        .await?;
    let mut conn = pool.acquire().await?;
    insert(&mut conn, admin_id, Uuid::now_v7(), context, now).await
}

async fn insert(
    conn: &mut sqlx::PgConnection,
    admin_id: Uuid,
    family_id: Uuid,
    context: &RequestContext,
    now: DateTime<Utc>,
) -> Result<IssuedRefresh, AppError> {
    let (token, hash) = new_refresh_token();
    let expires_at = now + Duration::days(REFRESH_TOKEN_TTL_DAYS);
    sqlx::query(
        "INSERT INTO refresh_tokens
            (id, admin_id, family_id, token_hash, created_at, expires_at, ip, user_agent)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(Uuid::now_v7())
    .bind(admin_id)
    .bind(family_id)
    .bind(hash.as_slice())
    .bind(now)
    .bind(expires_at)
    .bind(context.ip.to_string())
    .bind(&context.user_agent)
    .execute(&mut *conn)
    .await?;
    Ok(IssuedRefresh {
        token,
        family_id,
        expires_at,
    })
}

/// Exchanges `token` for its successor (see the module docs for the rules).
pub async fn rotate(
    pool: &PgPool,
    token: &str,
    context: &RequestContext,
    now: DateTime<Utc>,
) -> Result<Rotation, AppError> {
    let hash = refresh_token_hash(token);
    let mut tx = pool.begin().await?;
    type Found = (
        Uuid,
        Uuid,
        Uuid,
        DateTime<Utc>,
        Option<DateTime<Utc>>,
        Option<DateTime<Utc>>,
    );
    let found: Option<Found> = sqlx::query_as(
        "SELECT id, admin_id, family_id, expires_at, rotated_at, revoked_at
           FROM refresh_tokens WHERE token_hash = $1 FOR UPDATE",
    )
    .bind(hash.as_slice())
    .fetch_optional(&mut *tx)
    .await?;
    let Some((id, admin_id, family_id, expires_at, rotated_at, revoked_at)) = found else {
        return Ok(Rotation::Invalid);
    };
    if revoked_at.is_some() {
        return Ok(Rotation::Invalid);
    }
    if rotated_at.is_some() {
        revoke_family_in(&mut tx, family_id, now).await?;
        tx.commit().await?;
        return Ok(Rotation::Reused {
            family_id,
            admin_id,
        });
    }
    if expires_at <= now {
        return Ok(Rotation::Expired(expires_at));
    }
    let admin = admins::find_by_id(&mut *tx, admin_id).await?;
    let Some(admin) = admin.filter(|a| a.active) else {
        revoke_family_in(&mut tx, family_id, now).await?;
        tx.commit().await?;
        return Ok(Rotation::Deactivated);
    };
    sqlx::query("UPDATE refresh_tokens SET rotated_at = $2 WHERE id = $1")
        .bind(id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
    let refresh = insert(&mut tx, admin_id, family_id, context, now).await?;
    tx.commit().await?;
    Ok(Rotation::Rotated {
        admin: Box::new(admin),
        refresh,
    })
}

async fn revoke_family_in(
    conn: &mut sqlx::PgConnection,
    family_id: Uuid,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE refresh_tokens SET revoked_at = $2 WHERE family_id = $1 AND revoked_at IS NULL",
    )
    .bind(family_id)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Ends session `family_id` of `admin_id` (logout). Another admin's family is left alone.
pub async fn revoke_family(
    pool: &PgPool,
    admin_id: Uuid,
    family_id: Uuid,
    now: DateTime<Utc>,
) -> Result<(), AppError> {
    sqlx::query(
        "UPDATE refresh_tokens SET revoked_at = $3
          WHERE family_id = $1 AND admin_id = $2 AND revoked_at IS NULL",
    )
    .bind(family_id)
    .bind(admin_id)
    .bind(now)
    .execute(pool)
    .await?;
    Ok(())
}

/// The family of a presented refresh token, if it is one of `admin_id`'s.
pub async fn family_of(
    pool: &PgPool,
    admin_id: Uuid,
    token: &str,
) -> Result<Option<Uuid>, AppError> {
    Ok(sqlx::query_scalar(
        "SELECT family_id FROM refresh_tokens WHERE token_hash = $1 AND admin_id = $2",
    )
    .bind(refresh_token_hash(token).as_slice())
    .bind(admin_id)
    .fetch_optional(pool)
    .await?)
}

/// Ends every session of `admin_id` (deactivation, password change).
pub async fn revoke_admin(
    pool: &PgPool,
    admin_id: Uuid,
    now: DateTime<Utc>,
) -> Result<(), AppError> {
    sqlx::query(
        "UPDATE refresh_tokens SET revoked_at = $2 WHERE admin_id = $1 AND revoked_at IS NULL",
    )
    .bind(admin_id)
    .bind(now)
    .execute(pool)
    .await?;
    Ok(())
}

/// Whether session `family_id` of `admin_id` is still alive (not logged out or revoked).
pub async fn is_alive(pool: &PgPool, admin_id: Uuid, family_id: Uuid) -> Result<bool, AppError> {
    Ok(sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM refresh_tokens
                         WHERE family_id = $1 AND admin_id = $2 AND revoked_at IS NULL)",
    )
    .bind(family_id)
    .bind(admin_id)
    .fetch_one(pool)
    .await?)
}
