//! Licenses on the command side (SPEC §4 "Licenses", seed 000 §5, seed 001): creating one,
//! converting a lead into one, the lifecycle, encrypted secrets, the customer's Telegram
//! webhook and the license e-mail. Reads come from `projections::licenses`; every write
//! waits for it before answering (read-your-writes).
//!
//! A lead converts exactly once across the two aggregates (ADR 0009): the license created
//! from a lead gets an id derived from the lead's, so two concurrent conversions meet at one
//! stream and only one creates it; the lead's `LeadConverted` follows, and a crash between
//! the two is completed by [`LicenseService::complete_conversions`] at start and every few
//! minutes.

pub mod activity;
pub mod certificate;
pub mod devices;
pub mod keys;
pub mod mail;
pub mod plans;
mod routes;
pub mod view;

use std::time::Duration;

use aggregates::lead::{Lead, LeadCommand, LeadError, LeadStatus};
use aggregates::license::{
    GeminiKey, License, LicenseCommand, LicenseError, Owner, SealedText, SecretChange, TelegramBot,
};
use chrono::Utc;
use eventstore::sealing::Sealer;
use eventstore::{CommandError, CommandHandler, CommandOutcome, Cursor, EventStore, Metadata};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use uuid::Uuid;

use crate::error::AppError;
use crate::integrations::mail::Mailer;
use crate::integrations::telegram::{Telegram, new_webhook_secret};

pub use routes::{admin_router, license_detail};

/// How long a create waits for Telegram before answering `webhookSetup.success: false`.
pub const TELEGRAM_WAIT: Duration = Duration::from_secs(5);
/// How long a create waits for its e-mail to go out before answering `emailSent: false`.
pub const EMAIL_WAIT: Duration = Duration::from_secs(3);

/// The stream id of the license a lead converts into: the first 128 bits of
/// SHA-256("domizan:license-for-lead:" + lead id) as a custom (v8) UUID. Every conversion
/// of one lead aims at this one stream, so only one can create it.
pub fn license_id_for_lead(lead_id: Uuid) -> Uuid {
    let digest = Sha256::digest(format!("domizan:license-for-lead:{lead_id}"));
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

/// The stream id of the plan with `slug` (derived like an admin's from its e-mail).
pub fn plan_id_for_slug(slug: &str) -> Uuid {
    let digest = Sha256::digest(format!("domizan:plan:{slug}"));
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

/// Advisory lock class of plan usage (the projection runner uses 0x0D00001, the
/// super-admin lock 0x0D00002): creating a license holds its plan's key shared, deleting a
/// plan holds it exclusive, so no license is created with a plan being deleted.
const PLAN_LOCK_CLASS: i32 = 0x0D0_0003;

/// A plan's usage lock, held for the life of a transaction that does nothing else (it takes
/// no xid, so it never holds back the event store's read fence).
pub struct PlanLock {
    tx: sqlx::Transaction<'static, sqlx::Postgres>,
}

impl PlanLock {
    /// Shared (`exclusive: false`) for a license being created, exclusive for a deletion.
    pub async fn acquire(pool: &PgPool, slug: &str, exclusive: bool) -> Result<Self, AppError> {
        let mut tx = pool.begin().await?;
        let sql = if exclusive {
            "SELECT pg_advisory_xact_lock($1, hashtext($2))"
        } else {
            "SELECT pg_advisory_xact_lock_shared($1, hashtext($2))"
        };
        sqlx::query(sql)
            .bind(PLAN_LOCK_CLASS)
            .bind(slug)
            .execute(&mut *tx)
            .await?;
        Ok(Self { tx })
    }

    pub async fn release(self) -> Result<(), AppError> {
        self.tx.commit().await?;
        Ok(())
    }
}

/// A license to create, validated; secrets still in clear (sealed by [`LicenseService`]).
pub struct NewLicense {
    pub owner: Owner,
    pub package: String,
    pub max_devices: u32,
    pub monthly_token_limit: u64,
    pub duration_months: u32,
    pub gemini_api_key: Option<String>,
    pub telegram_bot_token: Option<String>,
    pub telegram_bot_username: Option<String>,
    pub lead_id: Option<Uuid>,
}

/// What a create did besides the license.
pub struct Created {
    pub license_id: Uuid,
    pub cursor: Option<Cursor>,
    pub webhook: Option<WebhookOutcome>,
}

#[derive(Clone, Debug)]
pub struct WebhookOutcome {
    pub success: bool,
    pub webhook_url: String,
}

/// Secret changes of an update, in clear.
#[derive(Default)]
pub struct SecretUpdate {
    /// `Some(None)` removes the key.
    pub gemini_api_key: Option<Option<String>>,
    pub telegram_bot_token: Option<Option<String>>,
    pub telegram_bot_username: Option<Option<String>>,
}

pub struct LicenseService {
    pool: PgPool,
    sealer: Sealer,
    licenses: CommandHandler<License>,
    leads: CommandHandler<Lead>,
    telegram: Telegram,
    mailer: Option<Mailer>,
    public_base_url: String,
    /// Wakes the mail worker when a license e-mail was queued.
    pub mail_wakeup: tokio::sync::Notify,
    /// Failed verifies per client network (brute-forcing keys).
    pub verify_guesses: devices::GuessLimiter,
    /// What verify answers from (ADR 0011).
    pub view: view::VerifyView,
    /// When desktops were last seen, waiting to be written.
    pub activity: activity::Activity,
}

impl LicenseService {
    pub fn new(
        pool: PgPool,
        store: EventStore,
        sealer: Sealer,
        telegram: Telegram,
        mailer: Option<Mailer>,
        public_base_url: String,
    ) -> Self {
        Self {
            pool,
            sealer,
            licenses: CommandHandler::new(store.clone(), ()),
            leads: CommandHandler::new(store, ()),
            telegram,
            mailer,
            public_base_url,
            mail_wakeup: tokio::sync::Notify::new(),
            verify_guesses: devices::GuessLimiter::default(),
            view: view::VerifyView::default(),
            activity: activity::Activity::default(),
        }
    }

    pub fn mailer(&self) -> Option<&Mailer> {
        self.mailer.as_ref()
    }

    pub fn sealer(&self) -> &Sealer {
        &self.sealer
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The webhook URL Telegram calls for `license_id`.
    pub fn webhook_url(&self, license_id: Uuid) -> String {
        format!("{}/v1/webhook/telegram/{license_id}", self.public_base_url)
    }

    fn seal(&self, secret: &str) -> SealedText {
        SealedText(self.sealer.encrypt_with_master(secret.as_bytes()))
    }

    pub fn open(&self, sealed: &str) -> Result<String, AppError> {
        let bytes = self
            .sealer
            .decrypt_with_master(sealed)
            .map_err(AppError::internal)?;
        String::from_utf8(bytes).map_err(AppError::internal)
    }

    fn telegram_bot(&self, token: &str, username: Option<String>) -> TelegramBot {
        TelegramBot {
            token: self.seal(token),
            token_mask: keys::mask(token),
            username,
            webhook_secret: self.seal(&new_webhook_secret()),
        }
    }

    /// Reserves a fresh, unique license key for `license_id`: (key, digest).
    async fn reserve_key(
        &self,
        license_id: Uuid,
        package: &str,
        max_devices: u32,
    ) -> Result<(String, String), AppError> {
        for _ in 0..8 {
            let key = keys::new_license_key(package, max_devices);
            let digest = self
                .sealer
                .digest(&format!("license-key:{}", keys::normalise_key(&key)));
            let inserted = sqlx::query(
                "INSERT INTO license_keys (digest, license_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            )
            .bind(&digest)
            .bind(license_id)
            .execute(&self.pool)
            .await?
            .rows_affected();
            if inserted == 1 {
                return Ok((key, digest));
            }
        }
        Err(AppError::internal("no free license key after 8 draws"))
    }

    /// The keyed digest a license key is looked up by.
    pub fn key_digest(&self, key: &str) -> String {
        self.sealer
            .digest(&format!("license-key:{}", keys::normalise_key(key)))
    }

    /// Creates the license (and converts its lead), sets up the Telegram webhook.
    pub async fn create(&self, new: NewLicense, metadata: &Metadata) -> Result<Created, AppError> {
        let license_id = match new.lead_id {
            Some(lead_id) => {
                self.convertible(lead_id).await?;
                license_id_for_lead(lead_id)
            }
            None => Uuid::now_v7(),
        };
        let (key, key_digest) = self
            .reserve_key(license_id, &new.package, new.max_devices)
            .await?;
        let gemini = new.gemini_api_key.as_deref().map(|k| GeminiKey {
            key: self.seal(k),
            mask: keys::mask(k),
        });
        let telegram = new
            .telegram_bot_token
            .as_deref()
            .map(|t| self.telegram_bot(t, new.telegram_bot_username.clone()));
        // The plan must still exist while its license is written (a deletion waits).
        let plan_lock = PlanLock::acquire(&self.pool, &new.package, false).await?;
        let (plan, _) =
            CommandHandler::<aggregates::plan::Plan>::new(self.licenses.store().clone(), ())
                .load(&plan_id_for_slug(&new.package).to_string())
                .await?;
        if !plan.exists() {
            let _ = plan_lock.release().await;
            return Err(AppError::validation(
                "packageType",
                "Bilinmeyen veya pasif paket",
            ));
        }
        let command = LicenseCommand::Create {
            key: self.seal(&key),
            key_digest: key_digest.clone(),
            owner: new.owner,
            package: new.package,
            max_devices: new.max_devices,
            monthly_token_limit: new.monthly_token_limit,
            duration_months: new.duration_months,
            gemini,
            telegram,
            lead_id: new.lead_id,
            now: Utc::now(),
        };
        let created = self
            .licenses
            .execute_new(&license_id.to_string(), command, metadata)
            .await;
        plan_lock.release().await?;
        let outcome = match created {
            Ok(outcome) => outcome,
            Err(e) => {
                let _ = sqlx::query("DELETE FROM license_keys WHERE digest = $1")
                    .bind(&key_digest)
                    .execute(&self.pool)
                    .await;
                return Err(match e {
                    // The lead's license exists already: another conversion won.
                    CommandError::Domain(LicenseError::AlreadyExists) if new.lead_id.is_some() => {
                        crate::leads::lead_error(LeadError::AlreadyConverted)
                    }
                    other => license_command_error(other),
                });
            }
        };
        let mut cursor = outcome.cursor();
        if let Some(lead_id) = new.lead_id {
            cursor = self
                .mark_converted(lead_id, license_id, metadata)
                .await?
                .or(cursor);
        }
        let mut webhook = None;
        if outcome.aggregate.has_telegram() {
            let (result, c) = self.setup_webhook(license_id, metadata).await?;
            webhook = Some(result);
            cursor = c.or(cursor);
        }
        self.mail_wakeup.notify_one();
        Ok(Created {
            license_id,
            cursor,
            webhook,
        })
    }

    /// Refuses a lead that cannot become a license.
    async fn convertible(&self, lead_id: Uuid) -> Result<(), AppError> {
        let (lead, _) = self.leads.load(&lead_id.to_string()).await?;
        if !lead.exists() {
            return Err(crate::leads::lead_error(LeadError::NotFound));
        }
        if lead.is_erased() {
            return Err(crate::leads::lead_error(LeadError::Erased));
        }
        match lead.status() {
            LeadStatus::Converted => Err(crate::leads::lead_error(LeadError::AlreadyConverted)),
            LeadStatus::Lost => Err(AppError::new(
                axum::http::StatusCode::CONFLICT,
                "LEAD_LOST",
                "Kaybedilen bir lead lisansa dönüştürülemez; önce yeniden açın.",
            )),
            _ => Ok(()),
        }
    }

    /// Records `LeadConverted`; a lead erased meanwhile stays erased (the license stands).
    async fn mark_converted(
        &self,
        lead_id: Uuid,
        license_id: Uuid,
        metadata: &Metadata,
    ) -> Result<Option<Cursor>, AppError> {
        match self
            .leads
            .execute(
                &lead_id.to_string(),
                LeadCommand::MarkConverted { license_id },
                metadata,
            )
            .await
        {
            Ok(outcome) => {
                // A converted lead no longer owns its contact: new submissions make a new lead.
                sqlx::query("DELETE FROM lead_contacts WHERE lead_id = $1")
                    .bind(lead_id)
                    .execute(&self.pool)
                    .await?;
                Ok(outcome.cursor())
            }
            Err(CommandError::Domain(LeadError::AlreadyConverted | LeadError::Erased)) => Ok(None),
            Err(CommandError::Domain(e)) => Err(crate::leads::lead_error(e)),
            Err(CommandError::Conflict(_)) => Err(AppError::concurrent_modification()),
            Err(CommandError::Store(e)) => Err(e.into()),
        }
    }

    /// Completes conversions a crash left half-done: a license created from a lead whose
    /// `LeadConverted` is missing. Returns how many were completed.
    pub async fn complete_conversions(&self) -> Result<usize, AppError> {
        let pending: Vec<(String, String)> = sqlx::query_as(
            "SELECT l.aggregate_id, l.payload->'LicenseCreated'->>'lead_id'
               FROM events l
              WHERE l.aggregate_type = 'license' AND l.event_type = 'LicenseCreated'
                AND l.payload->'LicenseCreated'->>'lead_id' IS NOT NULL
                AND NOT EXISTS (SELECT 1 FROM events c
                                 WHERE c.aggregate_type = 'lead'
                                   AND c.aggregate_id = l.payload->'LicenseCreated'->>'lead_id'
                                   AND c.event_type IN ('LeadConverted', 'LeadErased'))",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut completed = 0;
        for (license, lead) in pending {
            let (Ok(license), Ok(lead)) = (license.parse::<Uuid>(), lead.parse::<Uuid>()) else {
                continue;
            };
            if self
                .mark_converted(lead, license, &Metadata::actor("system"))
                .await?
                .is_some()
            {
                completed += 1;
            }
        }
        if completed > 0 {
            tracing::info!(completed, "half-done lead conversions completed");
        }
        Ok(completed)
    }

    /// `deleteWebhook`, best effort: a failure is logged (the bot then calls a URL that
    /// refuses it for want of the current secret).
    async fn delete_webhook(&self, license_id: Uuid, token: &str) {
        if let Err(e) = self.telegram.delete_webhook(token).await {
            tracing::warn!(license.id = %license_id, error = %e, "Telegram deleteWebhook failed");
        }
    }

    /// Revokes the license (final) and takes its bot's webhook down.
    pub async fn revoke(
        &self,
        license_id: Uuid,
        metadata: &Metadata,
    ) -> Result<CommandOutcome<License>, AppError> {
        let outcome = self
            .execute(
                license_id,
                LicenseCommand::Revoke { now: Utc::now() },
                metadata,
            )
            .await?;
        if let Some(bot) = self.telegram_from_stream(license_id).await? {
            let token = self.open(&bot.token.0)?;
            self.delete_webhook(license_id, &token).await;
        }
        Ok(outcome)
    }

    /// Calls `setWebhook` with the license's bot token and secret and records the outcome.
    pub async fn setup_webhook(
        &self,
        license_id: Uuid,
        metadata: &Metadata,
    ) -> Result<(WebhookOutcome, Option<Cursor>), AppError> {
        let webhook_url = self.webhook_url(license_id);
        // From the stream, not the read model: a PATCH that just set a new token must not
        // race its projection.
        let Some(bot) = self.telegram_from_stream(license_id).await? else {
            return Err(AppError::new(
                axum::http::StatusCode::CONFLICT,
                "TELEGRAM_BOT_MISSING",
                "Bu lisansın Telegram botu tanımlı değil.",
            ));
        };
        let (token, secret) = (bot.token.0, bot.webhook_secret.0);
        let (token, secret) = (self.open(&token)?, self.open(&secret)?);
        let result = self
            .telegram
            .set_webhook(&token, &webhook_url, &secret)
            .await;
        if let Err(e) = &result {
            tracing::warn!(license.id = %license_id, error = %e, "Telegram setWebhook failed");
        }
        let success = result.is_ok();
        let outcome = self
            .execute(
                license_id,
                LicenseCommand::RecordWebhook {
                    active: success,
                    now: Utc::now(),
                },
                metadata,
            )
            .await?;
        Ok((
            WebhookOutcome {
                success,
                webhook_url,
            },
            outcome.cursor(),
        ))
    }

    /// The bot as the stream last set it (for a webhook set-up racing its projection).
    async fn telegram_from_stream(
        &self,
        license_id: Uuid,
    ) -> Result<Option<TelegramBot>, AppError> {
        let stream = CommandHandler::<License>::stream(&license_id.to_string());
        let mut bot = None;
        for stored in self.licenses.store().read_stream(&stream).await? {
            match serde_json::from_value(stored.payload) {
                Ok(aggregates::license::LicenseEvent::LicenseCreated { telegram, .. }) => {
                    bot = telegram
                }
                Ok(aggregates::license::LicenseEvent::LicenseUpdated {
                    telegram: Some(change),
                    ..
                }) => {
                    bot = match change {
                        SecretChange::Set(b) => Some(b),
                        SecretChange::Removed => None,
                    }
                }
                _ => {}
            }
        }
        Ok(bot)
    }

    pub async fn load(&self, license_id: Uuid) -> Result<License, AppError> {
        Ok(self.licenses.load(&license_id.to_string()).await?.0)
    }

    pub async fn execute(
        &self,
        license_id: Uuid,
        command: LicenseCommand,
        metadata: &Metadata,
    ) -> Result<CommandOutcome<License>, AppError> {
        self.licenses
            .execute(&license_id.to_string(), command, metadata)
            .await
            .map_err(license_command_error)
    }

    /// `PATCH`: owner, limits and secrets. A new bot token gets a new webhook secret and
    /// `setWebhook`; removing the token calls `deleteWebhook` with the old one.
    pub async fn update(
        &self,
        license_id: Uuid,
        owner: Option<Owner>,
        max_devices: Option<u32>,
        monthly_token_limit: Option<u64>,
        secrets: SecretUpdate,
        metadata: &Metadata,
    ) -> Result<(Option<Cursor>, Option<WebhookOutcome>), AppError> {
        let old_token = match secrets.telegram_bot_token {
            Some(_) => self
                .telegram_from_stream(license_id)
                .await?
                .map(|bot| bot.token.0),
            None => None,
        };
        let gemini = secrets.gemini_api_key.map(|k| match k {
            Some(k) => SecretChange::Set(GeminiKey {
                key: self.seal(&k),
                mask: keys::mask(&k),
            }),
            None => SecretChange::Removed,
        });
        let telegram = match (secrets.telegram_bot_token, secrets.telegram_bot_username) {
            (Some(Some(token)), username) => Some(SecretChange::Set(
                self.telegram_bot(&token, username.flatten()),
            )),
            (Some(None), _) => Some(SecretChange::Removed),
            (None, Some(username)) => {
                // A new username alone keeps the bot and its secret.
                match self.telegram_from_stream(license_id).await? {
                    Some(mut bot) => {
                        bot.username = username;
                        Some(SecretChange::Set(bot))
                    }
                    None => None,
                }
            }
            (None, None) => None,
        };
        let new_bot = matches!(&telegram, Some(SecretChange::Set(_)));
        let removed = matches!(&telegram, Some(SecretChange::Removed));
        let outcome = self
            .execute(
                license_id,
                LicenseCommand::Update {
                    owner,
                    max_devices,
                    monthly_token_limit,
                    gemini,
                    telegram,
                    now: Utc::now(),
                },
                metadata,
            )
            .await?;
        let mut cursor = outcome.cursor();
        let mut webhook = None;
        // The old bot stops calling us: removed, or replaced by another bot.
        if let Some(old) = old_token {
            let old = self.open(&old)?;
            let replaced = match self.telegram_from_stream(license_id).await? {
                Some(bot) => self.open(&bot.token.0)? != old,
                None => true,
            };
            if removed || replaced {
                self.delete_webhook(license_id, &old).await;
            }
        }
        if new_bot {
            let (result, c) = self.setup_webhook(license_id, metadata).await?;
            webhook = Some(result);
            cursor = c.or(cursor);
        }
        Ok((cursor, webhook))
    }
}

/// The one place license errors become HTTP answers.
pub fn license_error(e: LicenseError) -> AppError {
    use axum::http::StatusCode;
    match e {
        LicenseError::NotFound => AppError::new(
            StatusCode::NOT_FOUND,
            "LICENSE_NOT_FOUND",
            "Lisans bulunamadı.",
        ),
        LicenseError::AlreadyExists => AppError::new(
            StatusCode::CONFLICT,
            "LICENSE_EXISTS",
            "Lisans zaten mevcut.",
        ),
        LicenseError::Revoked => AppError::new(
            StatusCode::CONFLICT,
            "LICENSE_REVOKED",
            "Lisans iptal edilmiş; değiştirilemez.",
        ),
        LicenseError::AlreadySuspended => AppError::new(
            StatusCode::CONFLICT,
            "LICENSE_ALREADY_SUSPENDED",
            "Lisans zaten askıya alınmış.",
        ),
        LicenseError::NotSuspended => AppError::new(
            StatusCode::CONFLICT,
            "LICENSE_NOT_SUSPENDED",
            "Lisans askıda değil.",
        ),
        LicenseError::Invalid(field) => AppError::validation(field, format!("{field} geçersiz")),
        LicenseError::DeviceNotFound => devices::device_not_found(),
        LicenseError::DeviceBlocked => devices::blocked(),
        LicenseError::DeviceLimitReached => AppError::new(
            StatusCode::CONFLICT,
            "DEVICE_LIMIT_REACHED",
            "Lisansın cihaz sınırına ulaşıldı; önce başka bir cihazı engelleyin veya bekletin.",
        ),
        LicenseError::MaxDevicesBelowApproved { approved } => AppError::validation(
            "maxDevices",
            format!(
                "Lisansta {approved} onaylı cihaz var; sınır bundan düşük olamaz. Önce cihaz engelleyin veya serbest bırakın."
            ),
        ),
        LicenseError::TooManyPendingDevices => AppError::new(
            StatusCode::CONFLICT,
            "TOO_MANY_PENDING_DEVICES",
            "Bu lisansta onay bekleyen çok fazla cihaz var; yöneticiniz bekleyenleri onaylamalı veya engellemeli.",
        ),
        LicenseError::MasterNotApproved => {
            AppError::validation("isMaster", "Yalnızca onaylı bir cihaz ana cihaz olabilir")
        }
        LicenseError::MasterRequired => AppError::validation(
            "isMaster",
            "Ana cihaz, başka bir cihaz ana cihaz yapılarak değiştirilir",
        ),
    }
}

fn license_command_error(e: CommandError<LicenseError>) -> AppError {
    match e {
        CommandError::Domain(e) => license_error(e),
        CommandError::Conflict(_) => AppError::concurrent_modification(),
        CommandError::Store(e) => e.into(),
    }
}

/// The answer of a create or convert: `{license, webhookSetup, emailSent}`.
pub fn created_json(license: Value, webhook: Option<&WebhookOutcome>, email_sent: bool) -> Value {
    json!({
        "license": license,
        "webhookSetup": webhook.map(|w| json!({"success": w.success, "webhookUrl": w.webhook_url})),
        "emailSent": email_sent,
    })
}
