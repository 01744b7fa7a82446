//! `Idempotency-Key`: the first answer to a keyed request is stored and replayed for
//! retries of the same request; the same key with a different body is refused.
//!
//! A request is recognised by a keyed digest of its body (the sealer's HMAC key): an unkeyed
//! hash of a landing form would let anyone holding a dump confirm a guessed e-mail and
//! phone. Keys live for [`KEY_TTL_HOURS`]; [`purge_expired`] forgets older ones.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use eventstore::sealing::Sealer;
use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::PgPool;

use crate::error::{AppError, AppResult};

/// A request still unanswered after this long is presumed dead.
const STALE_CLAIM_SECS: u64 = 60;
/// How long a key replays its answer. Clients retry within minutes; a day is generous.
pub const KEY_TTL_HOURS: u64 = 24;

/// The keyed digest that recognises a retry of the same request.
fn fingerprint(sealer: &Sealer, scope: &str, body: &[u8]) -> String {
    let body_hash: String = Sha256::digest(body)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    sealer.digest(&format!("idempotency:{scope}:{body_hash}"))
}

/// Forgets keys older than [`KEY_TTL_HOURS`]; returns how many.
pub async fn purge_expired(pool: &PgPool) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query(
        "DELETE FROM idempotency_keys WHERE created_at < now() - make_interval(hours => $1)",
    )
    .bind(KEY_TTL_HOURS as i32)
    .execute(pool)
    .await?
    .rows_affected())
}

/// Claims `key` for this request. `Some(response)`: a retry; answer with it and do nothing.
pub async fn begin(
    pool: &PgPool,
    sealer: &Sealer,
    scope: &str,
    key: &str,
    body: &[u8],
) -> AppResult<Option<Response>> {
    let request_hash = fingerprint(sealer, scope, body);
    let claimed = sqlx::query(
        "INSERT INTO idempotency_keys (scope, key, request_hash) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
    )
    .bind(scope)
    .bind(key)
    .bind(&request_hash)
    .execute(pool)
    .await?
    .rows_affected()
        == 1;
    if claimed {
        return Ok(None);
    }
    // A claim whose request never finished (the process died, a panic) is taken over after
    // a while, so the key is not blocked for good; an expired key starts afresh.
    let taken_over = sqlx::query(
        "UPDATE idempotency_keys SET created_at = now(), request_hash = $3, status = NULL, body = NULL
          WHERE scope = $1 AND key = $2
            AND ((status IS NULL AND created_at < now() - make_interval(secs => $4))
                 OR created_at < now() - make_interval(hours => $5))",
    )
    .bind(scope)
    .bind(key)
    .bind(&request_hash)
    .bind(STALE_CLAIM_SECS as f64)
    .bind(KEY_TTL_HOURS as i32)
    .execute(pool)
    .await?
    .rows_affected()
        == 1;
    if taken_over {
        return Ok(None);
    }
    let (stored_hash, status, stored): (String, Option<i32>, Option<Value>) = sqlx::query_as(
        "SELECT request_hash, status, body FROM idempotency_keys WHERE scope = $1 AND key = $2",
    )
    .bind(scope)
    .bind(key)
    .fetch_one(pool)
    .await?;
    if stored_hash != request_hash {
        return Err(AppError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "IDEMPOTENCY_KEY_REUSED",
            "Bu Idempotency-Key farklı bir istek için kullanıldı.",
        ));
    }
    match (status, stored) {
        (Some(status), Some(body)) => {
            let status = StatusCode::from_u16(status as u16).unwrap_or(StatusCode::OK);
            Ok(Some((status, Json(body)).into_response()))
        }
        _ => Err(AppError::new(
            StatusCode::CONFLICT,
            "REQUEST_IN_PROGRESS",
            "Aynı istek hâlâ işleniyor; lütfen biraz sonra tekrar deneyin.",
        )),
    }
}

/// Stores a success for replay; forgets the key after a failure so the client may retry.
pub async fn finish(
    pool: &PgPool,
    scope: &str,
    key: &str,
    result: &AppResult<(StatusCode, Value)>,
) -> AppResult<()> {
    match result {
        Ok((status, body)) => {
            sqlx::query(
                "UPDATE idempotency_keys SET status = $3, body = $4 WHERE scope = $1 AND key = $2",
            )
            .bind(scope)
            .bind(key)
            .bind(status.as_u16() as i32)
            .bind(body)
            .execute(pool)
            .await?;
        }
        Err(_) => {
            sqlx::query(
                "DELETE FROM idempotency_keys WHERE scope = $1 AND key = $2 AND status IS NULL",
            )
            .bind(scope)
            .bind(key)
            .execute(pool)
            .await?;
        }
    }
    Ok(())
}
