//! Licenses (SPEC §4, seed 001 "Lisans Yönetimi"): who bought which package, for how long,
//! with which limits and integration secrets, and where the license stands in its life —
//! active, suspended, revoked (final); "expired" follows from `expires_at` and the clock.
//!
//! Secrets (the license key itself, the customer's Gemini key, the Telegram bot token and
//! webhook secret) never reach this module in clear: the caller encrypts them and passes
//! [`SealedText`]; the key also comes with its keyed digest for lookups. Owner and company
//! data are contract data kept for the legal retention period, not crypto-shredded (ADR
//! 0008). The clock comes in every command.
//!
//! A license's devices live in its stream (ADR 0010): the seat limit and the one master
//! are rules over all devices of a license, and the stream's version check makes two
//! approvals racing for the last seat meet at one decision.

mod aggregate;

pub use aggregate::License;

use chrono::{DateTime, Utc};
use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub use crate::lead::SealedText;

/// The stream type of licenses.
pub const AGGREGATE_TYPE: &str = "license";

/// Longest renewal or first term, in months.
pub const MAX_DURATION_MONTHS: u32 = 120;
/// Most devices a license may allow.
pub const MAX_DEVICES: u32 = 1000;
/// Largest monthly token limit.
pub const MAX_TOKEN_LIMIT: u64 = 1_000_000_000_000;

/// The license owner and company, as seed 001 names them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    pub name: String,
    pub email: String,
    pub phone: Option<String>,
    pub company_name: String,
    pub company_vkn: Option<String>,
}

/// The customer's Gemini key: encrypted, and the mask the admin may see (`AIza…3xQ`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GeminiKey {
    pub key: SealedText,
    pub mask: String,
}

/// The customer's Telegram bot: encrypted token (and its mask), the public username, and
/// the secret Telegram must send back on every webhook call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TelegramBot {
    pub token: SealedText,
    pub token_mask: String,
    pub username: Option<String>,
    pub webhook_secret: SealedText,
}

/// A secret set or removed by an update.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SecretChange<T> {
    Set(T),
    Removed,
}

/// Where the license stands, as stored. `expired` is not stored: see [`status_at`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LicenseState {
    #[default]
    Active,
    Suspended,
    Revoked,
}

impl LicenseState {
    pub fn as_str(self) -> &'static str {
        match self {
            LicenseState::Active => "active",
            LicenseState::Suspended => "suspended",
            LicenseState::Revoked => "revoked",
        }
    }
}

/// The status the API shows at `now`: revoked and suspended win; otherwise a license past
/// its expiry is `expired`, never `active`.
pub fn status_at(
    state: LicenseState,
    expires_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> &'static str {
    match state {
        LicenseState::Revoked => "revoked",
        LicenseState::Suspended => "suspended",
        LicenseState::Active if expires_at <= now => "expired",
        LicenseState::Active => "active",
    }
}

/// `expires_at` moved on by `months` from the later of now and the current expiry.
pub fn extended(
    expires_at: DateTime<Utc>,
    now: DateTime<Utc>,
    months: u32,
) -> Option<DateTime<Utc>> {
    expires_at
        .max(now)
        .checked_add_months(chrono::Months::new(months))
}

/// Where a device stands. `released` is a seat the device gave back itself; it is kept,
/// not deleted, and the device queues as pending if it comes back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceStatus {
    Pending,
    Approved,
    Blocked,
    Released,
}

impl DeviceStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceStatus::Pending => "pending",
            DeviceStatus::Approved => "approved",
            DeviceStatus::Blocked => "blocked",
            DeviceStatus::Released => "released",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "pending" => Some(DeviceStatus::Pending),
            "approved" => Some(DeviceStatus::Approved),
            "blocked" => Some(DeviceStatus::Blocked),
            "released" => Some(DeviceStatus::Released),
            _ => None,
        }
    }
}

/// What a desktop reports about itself on every verify; recorded when it changes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceDetails {
    pub name: String,
    pub os_type: String,
    pub os_version: String,
    pub app_version: String,
    pub ip_address: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum LicenseCommand {
    Create {
        key: SealedText,
        key_digest: String,
        owner: Owner,
        package: String,
        max_devices: u32,
        monthly_token_limit: u64,
        duration_months: u32,
        gemini: Option<GeminiKey>,
        telegram: Option<TelegramBot>,
        lead_id: Option<Uuid>,
        now: DateTime<Utc>,
    },
    /// `PATCH`: only what is `Some` changes.
    Update {
        owner: Option<Owner>,
        max_devices: Option<u32>,
        monthly_token_limit: Option<u64>,
        gemini: Option<SecretChange<GeminiKey>>,
        telegram: Option<SecretChange<TelegramBot>>,
        now: DateTime<Utc>,
    },
    Renew {
        months: u32,
        now: DateTime<Utc>,
    },
    Suspend {
        now: DateTime<Utc>,
    },
    Reactivate {
        now: DateTime<Utc>,
    },
    Revoke {
        now: DateTime<Utc>,
    },
    /// The outcome of a Telegram `setWebhook` / `deleteWebhook`.
    RecordWebhook {
        active: bool,
        now: DateTime<Utc>,
    },
    /// An admin asks for the license e-mail again.
    RequestEmail {
        now: DateTime<Utc>,
    },
    /// The license e-mail went out.
    RecordEmailSent {
        to: String,
        now: DateTime<Utc>,
    },
    /// A desktop verified with a fingerprint the license does not hold (or holds as
    /// released): the first device of a license without an approved one is approved and
    /// master, any other queues as pending. A fingerprint already held changes nothing.
    RegisterDevice {
        device_id: Uuid,
        fingerprint: String,
        details: DeviceDetails,
        now: DateTime<Utc>,
    },
    /// The desktop reported other details than recorded.
    UpdateDeviceDetails {
        device_id: Uuid,
        details: DeviceDetails,
        now: DateTime<Utc>,
    },
    /// An admin's `PATCH`: only what is `Some` changes.
    SetDevice {
        device_id: Uuid,
        status: Option<DeviceStatus>,
        master: Option<bool>,
        now: DateTime<Utc>,
    },
    /// The desktop gives its seat back.
    ReleaseDevice {
        device_id: Uuid,
        now: DateTime<Utc>,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum LicenseEvent {
    LicenseCreated {
        key: SealedText,
        key_digest: String,
        owner: Owner,
        package: String,
        max_devices: u32,
        monthly_token_limit: u64,
        expires_at: DateTime<Utc>,
        gemini: Option<GeminiKey>,
        telegram: Option<TelegramBot>,
        lead_id: Option<Uuid>,
        at: DateTime<Utc>,
    },
    LicenseUpdated {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        owner: Option<Owner>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max_devices: Option<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        monthly_token_limit: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        gemini: Option<SecretChange<GeminiKey>>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        telegram: Option<SecretChange<TelegramBot>>,
        at: DateTime<Utc>,
    },
    LicenseRenewed {
        months: u32,
        expires_at: DateTime<Utc>,
        at: DateTime<Utc>,
    },
    LicenseSuspended {
        at: DateTime<Utc>,
    },
    LicenseReactivated {
        at: DateTime<Utc>,
    },
    LicenseRevoked {
        at: DateTime<Utc>,
    },
    LicenseWebhookConfigured {
        active: bool,
        at: DateTime<Utc>,
    },
    LicenseEmailRequested {
        at: DateTime<Utc>,
    },
    LicenseEmailSent {
        to: String,
        at: DateTime<Utc>,
    },
    DeviceRegistered {
        device_id: Uuid,
        fingerprint: String,
        details: DeviceDetails,
        status: DeviceStatus,
        master: bool,
        at: DateTime<Utc>,
    },
    DeviceDetailsUpdated {
        device_id: Uuid,
        details: DeviceDetails,
        at: DateTime<Utc>,
    },
    DeviceStatusChanged {
        device_id: Uuid,
        status: DeviceStatus,
        at: DateTime<Utc>,
    },
    /// The master flag moved from `from` to `to` (either may be none: the first master, or
    /// the last approved device left).
    DeviceMasterMoved {
        from: Option<Uuid>,
        to: Option<Uuid>,
        at: DateTime<Utc>,
    },
}

impl DomainEvent for LicenseEvent {
    fn event_type(&self) -> String {
        match self {
            LicenseEvent::LicenseCreated { .. } => "LicenseCreated",
            LicenseEvent::LicenseUpdated { .. } => "LicenseUpdated",
            LicenseEvent::LicenseRenewed { .. } => "LicenseRenewed",
            LicenseEvent::LicenseSuspended { .. } => "LicenseSuspended",
            LicenseEvent::LicenseReactivated { .. } => "LicenseReactivated",
            LicenseEvent::LicenseRevoked { .. } => "LicenseRevoked",
            LicenseEvent::LicenseWebhookConfigured { .. } => "LicenseWebhookConfigured",
            LicenseEvent::LicenseEmailRequested { .. } => "LicenseEmailRequested",
            LicenseEvent::LicenseEmailSent { .. } => "LicenseEmailSent",
            LicenseEvent::DeviceRegistered { .. } => "DeviceRegistered",
            LicenseEvent::DeviceDetailsUpdated { .. } => "DeviceDetailsUpdated",
            LicenseEvent::DeviceStatusChanged { .. } => "DeviceStatusChanged",
            LicenseEvent::DeviceMasterMoved { .. } => "DeviceMasterMoved",
        }
        .to_string()
    }

    fn event_version(&self) -> String {
        "1.0".to_string()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LicenseError {
    #[error("license not found")]
    NotFound,
    #[error("license already exists")]
    AlreadyExists,
    #[error("the license is revoked")]
    Revoked,
    #[error("the license is already suspended")]
    AlreadySuspended,
    #[error("the license is not suspended")]
    NotSuspended,
    #[error("invalid {0}")]
    Invalid(&'static str),
    #[error("device not found")]
    DeviceNotFound,
    /// A blocked device cannot release its seat (and come back as pending).
    #[error("the device is blocked")]
    DeviceBlocked,
    #[error("every seat of the license is taken")]
    DeviceLimitReached,
    /// A device limit below the devices already approved: they would hold seats the
    /// license no longer has. The admin blocks (or the desktops release) some first.
    #[error("{approved} devices are approved, more than the new limit")]
    MaxDevicesBelowApproved { approved: usize },
    #[error("too many devices wait for approval")]
    TooManyPendingDevices,
    #[error("only an approved device can be master")]
    MasterNotApproved,
    #[error("the master flag moves by making another device master")]
    MasterRequired,
}
