//! The licenses read models: the admin list and detail (`licenses`, with `license_history`
//! and the license's `devices`), the customers view grouped from them, the row verify
//! answers from, and the license e-mail outbox (`license_mail`).
//!
//! Devices are written by the same projection as their license (ADR 0010): one transaction
//! keeps `current_devices` equal to the approved rows, and one `wait_for` covers both.
//!
//! Secrets stay ciphertext here (`*_sealed` columns); only their masks are plain. The
//! gateway decrypts the license key for the admin, who hands it to the customer.

use aggregates::license::{LicenseEvent, LicenseState, SecretChange, status_at};
use chrono::{DateTime, Utc};
use eventstore::StoredEvent;
use serde_json::{Value, json};
use sqlx::{PgConnection, PgExecutor, PgPool, Postgres, QueryBuilder};
use uuid::Uuid;

use crate::adapter::EventProjection;
use crate::leads::fold;
use crate::{BoxFuture, ProjectionError, pg_json, pg_text, pg_text_opt, rfc3339};

pub const NAME: &str = "licenses";
pub const MAIL_NAME: &str = "license_mail";

pub struct LicensesProjection;

fn search_text(
    name: &str,
    email: &str,
    company: &str,
    vkn: Option<&str>,
    phone: Option<&str>,
) -> String {
    fold(&format!(
        "{name} {email} {company} {} {}",
        vkn.unwrap_or(""),
        phone.unwrap_or("")
    ))
}

impl EventProjection for LicensesProjection {
    type Event = LicenseEvent;
    type Page = ();
    const NAME: &'static str = NAME;
    const AGGREGATE_TYPE: &'static str = aggregates::license::AGGREGATE_TYPE;

    fn apply<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        stored: &'a StoredEvent,
        event: LicenseEvent,
        _page: &'a mut (),
    ) -> BoxFuture<'a, Result<(), ProjectionError>> {
        Box::pin(async move {
            let id: Uuid = stored
                .stream
                .aggregate_id
                .parse()
                .map_err(|e| ProjectionError::event(stored, e))?;
            let at = stored.recorded_at;
            let position = stored.global_position();
            let (action, details) = apply_one(tx, id, event, at, position).await?;
            sqlx::query(
                "INSERT INTO license_history (license_id, sequence, action, at, actor, details)
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
            )
            .bind(id)
            .bind(stored.sequence as i64)
            .bind(action)
            .bind(at)
            .bind(pg_text_opt(stored.metadata.actor.as_deref()))
            .bind(pg_json(details))
            .execute(&mut *tx)
            .await?;
            Ok(())
        })
    }
}

/// Writes one event to `licenses`; returns its timeline entry.
async fn apply_one(
    tx: &mut PgConnection,
    id: Uuid,
    event: LicenseEvent,
    at: DateTime<Utc>,
    position: i64,
) -> Result<(&'static str, Value), sqlx::Error> {
    let touch = |sql: &'static str| sqlx::query(sql).bind(id).bind(at).bind(position);
    Ok(match event {
        LicenseEvent::LicenseCreated {
            key,
            key_digest,
            owner,
            package,
            max_devices,
            monthly_token_limit,
            expires_at,
            gemini,
            telegram,
            lead_id,
            ..
        } => {
            let search = search_text(
                &owner.name,
                &owner.email,
                &owner.company_name,
                owner.company_vkn.as_deref(),
                owner.phone.as_deref(),
            );
            sqlx::query(
                "INSERT INTO licenses (id, key_sealed, key_digest, owner_name, owner_email, owner_phone,
                     company_name, company_vkn, package_type, max_devices, monthly_token_limit, state,
                     expires_at, lead_id, gemini_key_sealed, gemini_key_mask, telegram_token_sealed,
                     telegram_token_mask, telegram_bot_username, webhook_secret_sealed, search,
                     created_at, updated_at, last_position)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 'active', $12, $13, $14, $15,
                         $16, $17, $18, $19, $20, $21, $21, $22)
                 ON CONFLICT (id) DO NOTHING",
            )
            .bind(id)
            .bind(pg_text(&key.0))
            .bind(pg_text(&key_digest))
            .bind(pg_text(&owner.name))
            .bind(pg_text(&owner.email))
            .bind(pg_text_opt(owner.phone.as_deref()))
            .bind(pg_text(&owner.company_name))
            .bind(pg_text_opt(owner.company_vkn.as_deref()))
            .bind(pg_text(&package))
            .bind(i64::from(max_devices))
            .bind(i64::try_from(monthly_token_limit).unwrap_or(i64::MAX))
            .bind(expires_at)
            .bind(lead_id)
            .bind(gemini.as_ref().map(|g| pg_text(&g.key.0).into_owned()))
            .bind(gemini.as_ref().map(|g| pg_text(&g.mask).into_owned()))
            .bind(telegram.as_ref().map(|t| pg_text(&t.token.0).into_owned()))
            .bind(telegram.as_ref().map(|t| pg_text(&t.token_mask).into_owned()))
            .bind(telegram.as_ref().and_then(|t| t.username.as_deref().map(|u| pg_text(u).into_owned())))
            .bind(telegram.as_ref().map(|t| pg_text(&t.webhook_secret.0).into_owned()))
            .bind(search)
            .bind(at)
            .bind(position)
            .execute(&mut *tx)
            .await?;
            (
                "created",
                json!({"packageType": package, "maxDevices": max_devices,
                       "monthlyTokenLimit": monthly_token_limit, "expiresAt": rfc3339(expires_at),
                       "leadId": lead_id, "hasGeminiApiKey": gemini.is_some(),
                       "hasTelegramBot": telegram.is_some()}),
            )
        }
        LicenseEvent::LicenseUpdated {
            owner,
            max_devices,
            monthly_token_limit,
            gemini,
            telegram,
            ..
        } => {
            let mut changed: Vec<&str> = Vec::new();
            let mut q: QueryBuilder<'_, Postgres> =
                QueryBuilder::new("UPDATE licenses SET updated_at = ");
            q.push_bind(at)
                .push(", last_position = ")
                .push_bind(position);
            if let Some(owner) = &owner {
                changed.extend([
                    "ownerName",
                    "ownerEmail",
                    "ownerPhone",
                    "companyName",
                    "companyVkn",
                ]);
                q.push(", owner_name = ")
                    .push_bind(pg_text(&owner.name).into_owned());
                q.push(", owner_email = ")
                    .push_bind(pg_text(&owner.email).into_owned());
                q.push(", owner_phone = ")
                    .push_bind(owner.phone.as_deref().map(|p| pg_text(p).into_owned()));
                q.push(", company_name = ")
                    .push_bind(pg_text(&owner.company_name).into_owned());
                q.push(", company_vkn = ").push_bind(
                    owner
                        .company_vkn
                        .as_deref()
                        .map(|v| pg_text(v).into_owned()),
                );
                q.push(", search = ").push_bind(search_text(
                    &owner.name,
                    &owner.email,
                    &owner.company_name,
                    owner.company_vkn.as_deref(),
                    owner.phone.as_deref(),
                ));
            }
            if let Some(devices) = max_devices {
                changed.push("maxDevices");
                q.push(", max_devices = ").push_bind(i64::from(devices));
            }
            if let Some(tokens) = monthly_token_limit {
                changed.push("monthlyTokenLimit");
                q.push(", monthly_token_limit = ")
                    .push_bind(i64::try_from(tokens).unwrap_or(i64::MAX));
            }
            match &gemini {
                Some(SecretChange::Set(g)) => {
                    changed.push("geminiApiKey");
                    q.push(", gemini_key_sealed = ")
                        .push_bind(pg_text(&g.key.0).into_owned());
                    q.push(", gemini_key_mask = ")
                        .push_bind(pg_text(&g.mask).into_owned());
                }
                Some(SecretChange::Removed) => {
                    changed.push("geminiApiKey");
                    q.push(", gemini_key_sealed = NULL, gemini_key_mask = NULL");
                }
                None => {}
            }
            match &telegram {
                Some(SecretChange::Set(t)) => {
                    changed.push("telegramBot");
                    q.push(", telegram_token_sealed = ")
                        .push_bind(pg_text(&t.token.0).into_owned());
                    q.push(", telegram_token_mask = ")
                        .push_bind(pg_text(&t.token_mask).into_owned());
                    q.push(", telegram_bot_username = ")
                        .push_bind(t.username.as_deref().map(|u| pg_text(u).into_owned()));
                    q.push(", webhook_secret_sealed = ")
                        .push_bind(pg_text(&t.webhook_secret.0).into_owned());
                    q.push(", telegram_webhook_active = false");
                }
                Some(SecretChange::Removed) => {
                    changed.push("telegramBot");
                    q.push(", telegram_token_sealed = NULL, telegram_token_mask = NULL, telegram_bot_username = NULL, webhook_secret_sealed = NULL, telegram_webhook_active = false");
                }
                None => {}
            }
            q.push(" WHERE id = ").push_bind(id);
            q.build().execute(&mut *tx).await?;
            ("updated", json!({"changed": changed}))
        }
        LicenseEvent::LicenseRenewed {
            months, expires_at, ..
        } => {
            sqlx::query("UPDATE licenses SET expires_at = $4, updated_at = $2, last_position = $3 WHERE id = $1")
                .bind(id)
                .bind(at)
                .bind(position)
                .bind(expires_at)
                .execute(&mut *tx)
                .await?;
            (
                "renewed",
                json!({"months": months, "expiresAt": rfc3339(expires_at)}),
            )
        }
        LicenseEvent::LicenseSuspended { .. } => {
            touch("UPDATE licenses SET state = 'suspended', updated_at = $2, last_position = $3 WHERE id = $1")
                .execute(&mut *tx)
                .await?;
            ("suspended", json!({}))
        }
        LicenseEvent::LicenseReactivated { .. } => {
            touch("UPDATE licenses SET state = 'active', updated_at = $2, last_position = $3 WHERE id = $1")
                .execute(&mut *tx)
                .await?;
            ("reactivated", json!({}))
        }
        LicenseEvent::LicenseRevoked { .. } => {
            // The gateway deletes the bot's webhook when it revokes a license.
            touch("UPDATE licenses SET state = 'revoked', telegram_webhook_active = false, updated_at = $2, last_position = $3 WHERE id = $1")
                .execute(&mut *tx)
                .await?;
            ("revoked", json!({}))
        }
        LicenseEvent::LicenseWebhookConfigured { active, .. } => {
            sqlx::query("UPDATE licenses SET telegram_webhook_active = $4, last_position = $3, updated_at = $2 WHERE id = $1")
                .bind(id)
                .bind(at)
                .bind(position)
                .bind(active)
                .execute(&mut *tx)
                .await?;
            ("webhook_configured", json!({"active": active}))
        }
        LicenseEvent::DeviceRegistered {
            device_id,
            fingerprint,
            details,
            status,
            master,
            ..
        } => {
            sqlx::query(
                "INSERT INTO devices (id, license_id, fingerprint, device_name, os_type, os_version,
                     app_version, ip_address, status, is_master, last_active_at, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11, $11)
                 ON CONFLICT (id) DO UPDATE SET device_name = $4, os_type = $5, os_version = $6,
                     app_version = $7, ip_address = $8, status = $9, is_master = $10,
                     last_active_at = $11, updated_at = $11",
            )
            .bind(device_id)
            .bind(id)
            .bind(pg_text(&fingerprint))
            .bind(pg_text(&details.name))
            .bind(pg_text(&details.os_type))
            .bind(pg_text(&details.os_version))
            .bind(pg_text(&details.app_version))
            .bind(pg_text_opt(details.ip_address.as_deref()))
            .bind(status.as_str())
            .bind(master)
            .bind(at)
            .execute(&mut *tx)
            .await?;
            count_devices(tx, id, position).await?;
            (
                "device_registered",
                json!({"deviceId": device_id, "deviceName": details.name,
                       "status": status.as_str(), "isMaster": master}),
            )
        }
        LicenseEvent::DeviceDetailsUpdated {
            device_id, details, ..
        } => {
            sqlx::query(
                "UPDATE devices SET device_name = $2, os_type = $3, os_version = $4, app_version = $5,
                     ip_address = $6, updated_at = $7 WHERE id = $1",
            )
            .bind(device_id)
            .bind(pg_text(&details.name))
            .bind(pg_text(&details.os_type))
            .bind(pg_text(&details.os_version))
            .bind(pg_text(&details.app_version))
            .bind(pg_text_opt(details.ip_address.as_deref()))
            .bind(at)
            .execute(&mut *tx)
            .await?;
            (
                "device_details_updated",
                json!({"deviceId": device_id, "deviceName": details.name,
                       "appVersion": details.app_version}),
            )
        }
        LicenseEvent::DeviceStatusChanged {
            device_id, status, ..
        } => {
            sqlx::query("UPDATE devices SET status = $2, updated_at = $3 WHERE id = $1")
                .bind(device_id)
                .bind(status.as_str())
                .bind(at)
                .execute(&mut *tx)
                .await?;
            count_devices(tx, id, position).await?;
            (
                "device_status_changed",
                json!({"deviceId": device_id, "status": status.as_str()}),
            )
        }
        LicenseEvent::DeviceMasterMoved { from, to, .. } => {
            sqlx::query(
                "UPDATE devices SET is_master = coalesce(id = $2, false), updated_at = $3
                  WHERE license_id = $1 AND (is_master OR id = $2)",
            )
            .bind(id)
            .bind(to)
            .bind(at)
            .execute(&mut *tx)
            .await?;
            ("device_master_moved", json!({"from": from, "to": to}))
        }
        LicenseEvent::LicenseEmailRequested { .. } => ("email_requested", json!({})),
        LicenseEvent::LicenseEmailSent { to, .. } => {
            touch("UPDATE licenses SET email_sent_at = $2, last_position = $3 WHERE id = $1")
                .execute(&mut *tx)
                .await?;
            ("email_sent", json!({"to": to}))
        }
    })
}

/// `current_devices` as the approved rows say.
async fn count_devices(tx: &mut PgConnection, id: Uuid, position: i64) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE licenses SET last_position = $2, current_devices =
             (SELECT count(*) FROM devices WHERE license_id = $1 AND status = 'approved')
          WHERE id = $1",
    )
    .bind(id)
    .bind(position)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// The license e-mail outbox: one row per mail to send, written exactly once per event in
/// the same transaction as this projection's checkpoint.
pub struct LicenseMailProjection;

impl EventProjection for LicenseMailProjection {
    type Event = LicenseEvent;
    type Page = ();
    const NAME: &'static str = MAIL_NAME;
    const AGGREGATE_TYPE: &'static str = aggregates::license::AGGREGATE_TYPE;

    fn apply<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        stored: &'a StoredEvent,
        event: LicenseEvent,
        _page: &'a mut (),
    ) -> BoxFuture<'a, Result<(), ProjectionError>> {
        Box::pin(async move {
            if !matches!(
                event,
                LicenseEvent::LicenseCreated { .. } | LicenseEvent::LicenseEmailRequested { .. }
            ) {
                return Ok(());
            }
            let id: Uuid = stored
                .stream
                .aggregate_id
                .parse()
                .map_err(|e| ProjectionError::event(stored, e))?;
            sqlx::query(
                "INSERT INTO license_mail_outbox (license_id, sequence) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            )
            .bind(id)
            .bind(stored.sequence as i64)
            .execute(&mut *tx)
            .await?;
            Ok(())
        })
    }
}

// ---------------------------------------------------------------------------------------
// Queries.

#[derive(Clone, Debug, PartialEq, sqlx::FromRow)]
pub struct LicenseRow {
    pub id: Uuid,
    pub key_sealed: String,
    pub owner_name: String,
    pub owner_email: String,
    pub owner_phone: Option<String>,
    pub company_name: String,
    pub company_vkn: Option<String>,
    pub package_type: String,
    pub max_devices: i32,
    pub monthly_token_limit: i64,
    pub state: String,
    pub expires_at: DateTime<Utc>,
    pub lead_id: Option<Uuid>,
    pub gemini_key_mask: Option<String>,
    pub telegram_token_mask: Option<String>,
    pub telegram_bot_username: Option<String>,
    pub telegram_webhook_active: bool,
    pub email_sent_at: Option<DateTime<Utc>>,
    pub current_devices: i32,
    pub tokens_used_this_month: i64,
    pub last_active_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl LicenseRow {
    pub fn state(&self) -> LicenseState {
        match self.state.as_str() {
            "suspended" => LicenseState::Suspended,
            "revoked" => LicenseState::Revoked,
            _ => LicenseState::Active,
        }
    }

    /// The status at `now` (`expired` derived from `expiresAt`).
    pub fn status(&self, now: DateTime<Utc>) -> &'static str {
        status_at(self.state(), self.expires_at, now)
    }

    /// The list item (seed 001), with the license key the caller decrypted.
    pub fn to_json(&self, license_key: &str, now: DateTime<Utc>) -> Value {
        json!({
            "id": self.id,
            "licenseKey": license_key,
            "ownerName": self.owner_name,
            "ownerEmail": self.owner_email,
            "ownerPhone": self.owner_phone,
            "companyName": self.company_name,
            "companyVkn": self.company_vkn,
            "packageType": self.package_type,
            "status": self.status(now),
            "currentDevices": self.current_devices,
            "maxDevices": self.max_devices,
            "tokensUsedThisMonth": self.tokens_used_this_month,
            "monthlyTokenLimit": self.monthly_token_limit,
            "expiresAt": rfc3339(self.expires_at),
            "lastActiveAt": self.last_active_at.map(rfc3339),
            "leadId": self.lead_id,
            "geminiApiKey": self.gemini_key_mask,
            "hasGeminiApiKey": self.gemini_key_mask.is_some(),
            "telegramBotToken": self.telegram_token_mask,
            "hasTelegramBotToken": self.telegram_token_mask.is_some(),
            "telegramBotUsername": self.telegram_bot_username,
            "telegramWebhookActive": self.telegram_webhook_active,
            "emailSentAt": self.email_sent_at.map(rfc3339),
            "createdAt": rfc3339(self.created_at),
            "updatedAt": rfc3339(self.updated_at),
        })
    }
}

const LICENSE_COLUMNS: &str = "id, key_sealed, owner_name, owner_email, owner_phone, company_name,
    company_vkn, package_type, max_devices, monthly_token_limit, state, expires_at, lead_id,
    gemini_key_mask, telegram_token_mask, telegram_bot_username, telegram_webhook_active,
    email_sent_at, current_devices, tokens_used_this_month, last_active_at, created_at, updated_at";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LicenseSort {
    CreatedAt,
    UpdatedAt,
    ExpiresAt,
    OwnerName,
    CompanyName,
}

impl LicenseSort {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "createdAt" => Some(Self::CreatedAt),
            "updatedAt" => Some(Self::UpdatedAt),
            "expiresAt" => Some(Self::ExpiresAt),
            "ownerName" => Some(Self::OwnerName),
            "companyName" => Some(Self::CompanyName),
            _ => None,
        }
    }

    fn column(self) -> &'static str {
        match self {
            Self::CreatedAt => "created_at",
            Self::UpdatedAt => "updated_at",
            Self::ExpiresAt => "expires_at",
            Self::OwnerName => "lower(owner_name)",
            Self::CompanyName => "lower(company_name)",
        }
    }
}

/// Filters of the admin list. `status` is the derived status (`expired` included).
#[derive(Clone, Debug, Default)]
pub struct LicenseFilter {
    pub status: Option<String>,
    pub search: Option<String>,
    /// A whole license key in the search box, as its keyed digest.
    pub key_digest: Option<String>,
    pub package_type: Option<String>,
    pub expiring_within_days: Option<i64>,
}

impl LicenseFilter {
    fn push_where(&self, q: &mut QueryBuilder<'_, Postgres>, now: DateTime<Utc>) {
        q.push(" WHERE true");
        match self.status.as_deref() {
            Some("active") => {
                q.push(" AND state = 'active' AND expires_at > ")
                    .push_bind(now);
            }
            Some("expired") => {
                q.push(" AND state = 'active' AND expires_at <= ")
                    .push_bind(now);
            }
            Some(other) => {
                q.push(" AND state = ").push_bind(other.to_string());
            }
            None => {}
        }
        if let Some(pattern) = self.search.as_deref().and_then(crate::contains_pattern) {
            q.push(" AND (search LIKE ").push_bind(pattern);
            if let Some(digest) = &self.key_digest {
                q.push(" OR key_digest = ").push_bind(digest.clone());
            }
            q.push(")");
        }
        if let Some(package) = &self.package_type {
            q.push(" AND package_type = ").push_bind(package.clone());
        }
        if let Some(days) = self.expiring_within_days {
            q.push(" AND state = 'active' AND expires_at > ")
                .push_bind(now)
                .push(" AND expires_at <= ")
                .push_bind(now + chrono::Duration::days(days));
        }
    }
}

pub async fn list(
    pool: &PgPool,
    filter: &LicenseFilter,
    sort: LicenseSort,
    descending: bool,
    page: i64,
    limit: i64,
    now: DateTime<Utc>,
) -> Result<(Vec<LicenseRow>, i64), sqlx::Error> {
    let mut count = QueryBuilder::new("SELECT count(*) FROM licenses");
    filter.push_where(&mut count, now);
    let total: i64 = count.build_query_scalar().fetch_one(pool).await?;
    let mut q = QueryBuilder::new(format!("SELECT {LICENSE_COLUMNS} FROM licenses"));
    filter.push_where(&mut q, now);
    let order = if descending { "DESC" } else { "ASC" };
    q.push(format!(" ORDER BY {} {order}, id {order}", sort.column()));
    q.push(" LIMIT ").push_bind(limit);
    q.push(" OFFSET ").push_bind((page - 1) * limit);
    let rows = q.build_query_as::<LicenseRow>().fetch_all(pool).await?;
    Ok((rows, total))
}

pub async fn get<'e>(db: impl PgExecutor<'e>, id: Uuid) -> Result<Option<LicenseRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {LICENSE_COLUMNS} FROM licenses WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(db)
    .await
}

#[derive(Clone, Debug, PartialEq, sqlx::FromRow)]
pub struct HistoryRow {
    pub sequence: i64,
    pub action: String,
    pub at: DateTime<Utc>,
    pub actor: Option<String>,
    pub details: Value,
}

impl HistoryRow {
    pub fn to_json(&self) -> Value {
        json!({"action": self.action, "at": rfc3339(self.at), "by": self.actor, "details": self.details})
    }
}

pub async fn history(pool: &PgPool, id: Uuid) -> Result<Vec<HistoryRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT sequence, action, at, actor, details FROM license_history WHERE license_id = $1 ORDER BY sequence",
    )
    .bind(id)
    .fetch_all(pool)
    .await
}

/// License owners grouped by VKN, else by company name (case- and Turkish-letter-folded).
pub async fn customers(
    pool: &PgPool,
    search: Option<&str>,
    page: i64,
    limit: i64,
) -> Result<(Vec<(String, Vec<LicenseRow>)>, i64), sqlx::Error> {
    let group = "coalesce('vkn:' || company_vkn, 'company:' || lower(company_name))";
    let pattern = search.and_then(crate::contains_pattern);
    let total: i64 = sqlx::query_scalar(&format!(
        "SELECT count(DISTINCT {group}) FROM licenses WHERE $1::text IS NULL OR search LIKE $1"
    ))
    .bind(&pattern)
    .fetch_one(pool)
    .await?;
    let keys: Vec<String> = sqlx::query_scalar(&format!(
        "SELECT {group} AS k FROM licenses WHERE $1::text IS NULL OR search LIKE $1
          GROUP BY k ORDER BY min(lower(company_name)), k LIMIT $2 OFFSET $3"
    ))
    .bind(&pattern)
    .bind(limit)
    .bind((page - 1) * limit)
    .fetch_all(pool)
    .await?;
    let rows: Vec<(String, LicenseRow)> = if keys.is_empty() {
        Vec::new()
    } else {
        let found: Vec<LicenseRowWithGroup> = sqlx::query_as(&format!(
            "SELECT {group} AS customer, {LICENSE_COLUMNS} FROM licenses WHERE {group} = ANY($1) ORDER BY created_at"
        ))
        .bind(&keys)
        .fetch_all(pool)
        .await?;
        found.into_iter().map(|r| (r.customer, r.row)).collect()
    };
    let grouped = keys
        .into_iter()
        .map(|k| {
            let licenses = rows
                .iter()
                .filter(|(g, _)| *g == k)
                .map(|(_, r)| r.clone())
                .collect();
            (k, licenses)
        })
        .collect();
    Ok((grouped, total))
}

#[derive(sqlx::FromRow)]
struct LicenseRowWithGroup {
    customer: String,
    #[sqlx(flatten)]
    row: LicenseRow,
}

// ---------------------------------------------------------------------------------------
// Devices.

#[derive(Clone, Debug, PartialEq, sqlx::FromRow)]
pub struct DeviceRow {
    pub id: Uuid,
    pub license_id: Uuid,
    pub fingerprint: String,
    pub device_name: String,
    pub os_type: String,
    pub os_version: String,
    pub app_version: String,
    pub ip_address: Option<String>,
    pub status: String,
    pub is_master: bool,
    pub last_active_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

/// Device ids carry a readable prefix in the API (SPEC §1).
pub fn device_id_text(id: Uuid) -> String {
    format!("dev_{id}")
}

impl DeviceRow {
    /// As `GET /v1/admin/licenses/:id/devices` lists it.
    pub fn to_json(&self) -> Value {
        json!({
            "id": device_id_text(self.id),
            "licenseId": self.license_id,
            "fingerprint": self.fingerprint,
            "deviceName": self.device_name,
            "osType": self.os_type,
            "osVersion": self.os_version,
            "appVersion": self.app_version,
            "ipAddress": self.ip_address,
            "isMaster": self.is_master,
            "status": self.status,
            "lastActiveAt": self.last_active_at.map(rfc3339),
            "createdAt": rfc3339(self.created_at),
        })
    }
}

const DEVICE_COLUMNS: &str = "id, license_id, fingerprint, device_name, os_type, os_version,
    app_version, ip_address, status, is_master, last_active_at, created_at";

pub async fn devices(pool: &PgPool, license_id: Uuid) -> Result<Vec<DeviceRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {DEVICE_COLUMNS} FROM devices WHERE license_id = $1 ORDER BY created_at, id"
    ))
    .bind(license_id)
    .fetch_all(pool)
    .await
}

pub async fn device(pool: &PgPool, id: Uuid) -> Result<Option<DeviceRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {DEVICE_COLUMNS} FROM devices WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await
}

/// What verify needs, in one indexed query: the license by its key's keyed digest, the
/// device by fingerprint (if the license holds it), and the plan's features.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct VerifyRow {
    pub license_id: Uuid,
    pub key_digest: String,
    pub owner_name: String,
    pub company_name: String,
    pub package_type: String,
    pub state: String,
    pub expires_at: DateTime<Utc>,
    pub monthly_token_limit: i64,
    pub tokens_used_this_month: i64,
    pub features: Option<Vec<String>>,
    pub device_id: Option<Uuid>,
    pub fingerprint: Option<String>,
    pub device_status: Option<String>,
    pub is_master: Option<bool>,
    pub device_name: Option<String>,
    pub os_type: Option<String>,
    pub os_version: Option<String>,
    pub app_version: Option<String>,
    pub ip_address: Option<String>,
    pub last_active_at: Option<DateTime<Utc>>,
}

impl VerifyRow {
    pub fn state(&self) -> LicenseState {
        match self.state.as_str() {
            "suspended" => LicenseState::Suspended,
            "revoked" => LicenseState::Revoked,
            _ => LicenseState::Active,
        }
    }

    pub fn has(&self, feature: &str) -> bool {
        self.features
            .as_ref()
            .is_some_and(|f| f.iter().any(|x| x == feature))
    }
}

const VERIFY_COLUMNS: &str = "l.id AS license_id, l.key_digest, l.owner_name, l.company_name,
    l.package_type, l.state, l.expires_at, l.monthly_token_limit, l.tokens_used_this_month,
    p.features, d.id AS device_id, d.fingerprint, d.status AS device_status, d.is_master,
    d.device_name, d.os_type, d.os_version, d.app_version, d.ip_address, d.last_active_at";

pub async fn for_verify(
    pool: &PgPool,
    key_digest: &str,
    fingerprint: &str,
) -> Result<Option<VerifyRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {VERIFY_COLUMNS}
               FROM licenses l
               LEFT JOIN devices d ON d.license_id = l.id AND d.fingerprint = $2
               LEFT JOIN plans p ON p.slug = l.package_type
              WHERE l.key_digest = $1"
    ))
    .bind(key_digest)
    .bind(fingerprint)
    .fetch_optional(pool)
    .await
}

/// Every device a license knows (released ones aside) with its license, as
/// [`for_verify`] reads one, of the licenses in `only` or of all: what the gateway's verify
/// view holds.
pub async fn all_for_verify(
    pool: &PgPool,
    only: Option<&[Uuid]>,
) -> Result<Vec<VerifyRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {VERIFY_COLUMNS}
           FROM licenses l
           JOIN devices d ON d.license_id = l.id AND d.status <> 'released'
           LEFT JOIN plans p ON p.slug = l.package_type
          WHERE $1::uuid[] IS NULL OR l.id = ANY($1)"
    ))
    .bind(only)
    .fetch_all(pool)
    .await
}

/// A device seen by verify: when, and from which address.
#[derive(Clone, Debug)]
pub struct DeviceSeen {
    pub license_id: Uuid,
    pub device_id: Uuid,
    pub at: DateTime<Utc>,
    pub ip_address: Option<String>,
}

/// Device activity seen by verify, written in one statement: each device's and each
/// license's `last_active_at` moves to the latest time given for it (never back), and a
/// device's `ip_address` to the one of that sighting.
pub async fn touch_devices(pool: &PgPool, seen: &[DeviceSeen]) -> Result<(), sqlx::Error> {
    let licenses: Vec<Uuid> = seen.iter().map(|s| s.license_id).collect();
    let devices: Vec<Uuid> = seen.iter().map(|s| s.device_id).collect();
    let times: Vec<DateTime<Utc>> = seen.iter().map(|s| s.at).collect();
    let ips: Vec<Option<String>> = seen.iter().map(|s| s.ip_address.clone()).collect();
    sqlx::query(
        "WITH seen AS (
              SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::timestamptz[], $4::text[])
                AS s(license_id, device_id, at, ip)),
         d AS (UPDATE devices SET last_active_at = s.at, ip_address = coalesce(s.ip, devices.ip_address)
                 FROM (SELECT DISTINCT ON (device_id) device_id, at, ip FROM seen
                        ORDER BY device_id, at DESC) s
                WHERE devices.id = s.device_id
                  AND (devices.last_active_at IS NULL OR devices.last_active_at < s.at))
         UPDATE licenses SET last_active_at = s.at
           FROM (SELECT license_id, max(at) AS at FROM seen GROUP BY license_id) s
          WHERE licenses.id = s.license_id
            AND (licenses.last_active_at IS NULL OR licenses.last_active_at < s.at)",
    )
    .bind(licenses)
    .bind(devices)
    .bind(times)
    .bind(ips)
    .execute(pool)
    .await?;
    Ok(())
}

/// Throttled telemetry: the device (and its license) was seen at `now`; writes only when
/// the last record is older than a minute, so a busy desktop costs one write a minute.
pub async fn touch_device(
    pool: &PgPool,
    license_id: Uuid,
    device_id: Uuid,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    let stale = now - chrono::Duration::minutes(1);
    sqlx::query(
        "WITH d AS (UPDATE devices SET last_active_at = $3
                     WHERE id = $2 AND (last_active_at IS NULL OR last_active_at < $4))
         UPDATE licenses SET last_active_at = $3
          WHERE id = $1 AND (last_active_at IS NULL OR last_active_at < $4)",
    )
    .bind(license_id)
    .bind(device_id)
    .bind(now)
    .bind(stale)
    .execute(pool)
    .await?;
    Ok(())
}
