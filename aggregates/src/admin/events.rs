//! What happened to an admin user. Versioned from the first day: `event_version()` is
//! "1.0" for all of them, and a changed shape gets a new version and an upcaster.
//!
//! `AdminCreated` and `AdminPasswordChanged` carry the bcrypt hash, because the read model
//! that logins check is rebuilt from events. The audit log must redact `passwordHash`
//! (SPEC §1: password hashes are never returned).

use chrono::{DateTime, Utc};
use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{Permission, Role};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all_fields = "camelCase")]
pub enum AdminEvent {
    AdminCreated {
        id: Uuid,
        email: String,
        name: String,
        role: Role,
        permissions: Vec<Permission>,
        password_hash: String,
        at: DateTime<Utc>,
    },
    AdminRenamed {
        name: String,
        at: DateTime<Utc>,
    },
    AdminRoleChanged {
        role: Role,
        permissions: Vec<Permission>,
        at: DateTime<Utc>,
    },
    AdminDeactivated {
        at: DateTime<Utc>,
    },
    AdminReactivated {
        at: DateTime<Utc>,
    },
    AdminPasswordChanged {
        password_hash: String,
        at: DateTime<Utc>,
    },
    AdminLoggedIn {
        ip: Option<String>,
        user_agent: Option<String>,
        at: DateTime<Utc>,
    },
}

impl AdminEvent {
    /// When it happened, by the caller's clock.
    pub fn at(&self) -> DateTime<Utc> {
        match self {
            AdminEvent::AdminCreated { at, .. }
            | AdminEvent::AdminRenamed { at, .. }
            | AdminEvent::AdminRoleChanged { at, .. }
            | AdminEvent::AdminDeactivated { at }
            | AdminEvent::AdminReactivated { at }
            | AdminEvent::AdminPasswordChanged { at, .. }
            | AdminEvent::AdminLoggedIn { at, .. } => *at,
        }
    }
}

impl DomainEvent for AdminEvent {
    fn event_type(&self) -> String {
        match self {
            AdminEvent::AdminCreated { .. } => "AdminCreated",
            AdminEvent::AdminRenamed { .. } => "AdminRenamed",
            AdminEvent::AdminRoleChanged { .. } => "AdminRoleChanged",
            AdminEvent::AdminDeactivated { .. } => "AdminDeactivated",
            AdminEvent::AdminReactivated { .. } => "AdminReactivated",
            AdminEvent::AdminPasswordChanged { .. } => "AdminPasswordChanged",
            AdminEvent::AdminLoggedIn { .. } => "AdminLoggedIn",
        }
        .to_string()
    }

    fn event_version(&self) -> String {
        "1.0".to_string()
    }
}
