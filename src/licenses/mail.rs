//! The license e-mail worker: drains `license_mail_outbox`, which the `license_mail`
//! projection fills exactly once per `LicenseCreated` / `LicenseEmailRequested`.
//!
//! Every instance runs one worker; a row is claimed with `FOR UPDATE SKIP LOCKED` and
//! leased for longer than a send may take, so two instances never send the same mail at
//! once. A failed send is retried with exponential backoff (2 s doubling to 5 min); a
//! recipient the server refuses for good is not retried. What went out is recorded as
//! `LicenseEmailSent`. A crash between the server's "250 OK" and our record can send one
//! mail twice — SMTP offers no way to make delivery and bookkeeping one step.

use std::sync::Arc;
use std::time::Duration;

use aggregates::license::LicenseCommand;
use chrono::Utc;
use eventstore::Metadata;
use uuid::Uuid;

use super::LicenseService;
use crate::error::AppError;
use crate::integrations::mail::LicenseMail;

/// Longer than any send may take (the mailer gives up after 10 s).
const LEASE_SECS: f64 = 60.0;
const MAX_BACKOFF_SECS: f64 = 300.0;
/// How often an idle worker looks for due mail without being woken.
const IDLE_POLL: Duration = Duration::from_secs(1);

/// Runs until the task is aborted. Does nothing without `SMTP_URL`.
pub async fn run_worker(service: Arc<LicenseService>) {
    if service.mailer().is_none() {
        return;
    }
    loop {
        match deliver_one(&service).await {
            Ok(true) => continue,
            Ok(false) => {
                let _ = tokio::time::timeout(IDLE_POLL, service.mail_wakeup.notified()).await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "license mail worker");
                tokio::time::sleep(IDLE_POLL).await;
            }
        }
    }
}

/// Sends one due mail; `false` when none is due.
async fn deliver_one(service: &LicenseService) -> Result<bool, AppError> {
    let Some(mailer) = service.mailer() else {
        return Ok(false);
    };
    let pool = service.pool();
    let claimed: Option<(Uuid, i64, i32)> = sqlx::query_as(
        "UPDATE license_mail_outbox
            SET attempts = attempts + 1, next_attempt_at = now() + make_interval(secs => $1)
          WHERE (license_id, sequence) = (
                SELECT license_id, sequence FROM license_mail_outbox
                 WHERE sent_at IS NULL AND next_attempt_at <= now()
                 ORDER BY next_attempt_at LIMIT 1 FOR UPDATE SKIP LOCKED)
         RETURNING license_id, sequence, attempts",
    )
    .bind(LEASE_SECS)
    .fetch_optional(pool)
    .await?;
    let Some((license_id, sequence, attempts)) = claimed else {
        return Ok(false);
    };
    let Some(row) = projections::licenses::get(pool, license_id).await? else {
        // The read model has not caught up with the license yet: try again shortly,
        // without counting an attempt.
        sqlx::query(
            "UPDATE license_mail_outbox SET attempts = attempts - 1,
                    next_attempt_at = now() + interval '200 milliseconds'
              WHERE license_id = $1 AND sequence = $2",
        )
        .bind(license_id)
        .bind(sequence)
        .execute(pool)
        .await?;
        return Ok(true);
    };
    let package_name = projections::plans::by_slug(pool, &row.package_type)
        .await?
        .map_or_else(|| row.package_type.clone(), |p| p.name);
    let mail = LicenseMail {
        to: row.owner_email.clone(),
        owner_name: row.owner_name.clone(),
        company_name: row.company_name.clone(),
        license_key: service.open(&row.key_sealed)?,
        package_name,
        max_devices: u32::try_from(row.max_devices).unwrap_or(0),
        expires_at: row.expires_at,
    };
    match mailer.send_license_key(&mail).await {
        Ok(()) => {
            sqlx::query(
                "UPDATE license_mail_outbox SET sent_at = now(), last_error = NULL
                  WHERE license_id = $1 AND sequence = $2",
            )
            .bind(license_id)
            .bind(sequence)
            .execute(pool)
            .await?;
            service
                .execute(
                    license_id,
                    LicenseCommand::RecordEmailSent {
                        to: mail.to,
                        now: Utc::now(),
                    },
                    &Metadata::actor("system"),
                )
                .await?;
            tracing::info!(license.id = %license_id, "license e-mail sent");
        }
        Err(e) => {
            let retry = e.is_retryable();
            let backoff = (2f64.powi(attempts.min(16))).min(MAX_BACKOFF_SECS);
            tracing::warn!(license.id = %license_id, attempts, retry, error = %e, "license e-mail not sent");
            sqlx::query(
                "UPDATE license_mail_outbox
                    SET last_error = $3,
                        next_attempt_at = CASE WHEN $4 THEN now() + make_interval(secs => $5)
                                               ELSE 'infinity' END
                  WHERE license_id = $1 AND sequence = $2",
            )
            .bind(license_id)
            .bind(sequence)
            .bind(e.to_string())
            .bind(retry)
            .bind(backoff)
            .execute(pool)
            .await?;
        }
    }
    Ok(true)
}

/// Whether the mail queued by the license's event `sequence` went out within `wait`.
pub async fn sent_within(
    service: &LicenseService,
    license_id: Uuid,
    sequence: i64,
    wait: Duration,
) -> Result<bool, AppError> {
    if service.mailer().is_none() {
        return Ok(false);
    }
    service.mail_wakeup.notify_one();
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let sent: Option<bool> = sqlx::query_scalar(
            "SELECT sent_at IS NOT NULL FROM license_mail_outbox WHERE license_id = $1 AND sequence = $2",
        )
        .bind(license_id)
        .bind(sequence)
        .fetch_optional(service.pool())
        .await?;
        if sent == Some(true) {
            return Ok(true);
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
