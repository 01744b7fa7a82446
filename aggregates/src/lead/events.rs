//! What happened to a lead. Versioned from day one; personal data only sealed.

use chrono::{DateTime, Utc};
use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{ActivityKind, LeadSource, LeadStatus, SealedText};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum LeadEvent {
    LeadCreated {
        personal: SealedText,
        source: LeadSource,
        utm_source: Option<String>,
        utm_campaign: Option<String>,
        /// The id the landing form was answered with: it names the submission, never the
        /// lead (absent in events recorded before it existed).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        submission_id: Option<Uuid>,
    },
    LeadResubmitted {
        personal: SealedText,
        utm_source: Option<String>,
        utm_campaign: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        submission_id: Option<Uuid>,
    },
    LeadStatusChanged {
        from: LeadStatus,
        to: LeadStatus,
    },
    LeadAssigned {
        assignee: Option<String>,
    },
    LeadNotesSet {
        notes: Option<SealedText>,
    },
    LeadActivityLogged {
        kind: ActivityKind,
        note: SealedText,
        occurred_at: DateTime<Utc>,
    },
    LeadConverted {
        license_id: Uuid,
    },
    LeadErased,
}

impl DomainEvent for LeadEvent {
    fn event_type(&self) -> String {
        match self {
            LeadEvent::LeadCreated { .. } => "LeadCreated",
            LeadEvent::LeadResubmitted { .. } => "LeadResubmitted",
            LeadEvent::LeadStatusChanged { .. } => "LeadStatusChanged",
            LeadEvent::LeadAssigned { .. } => "LeadAssigned",
            LeadEvent::LeadNotesSet { .. } => "LeadNotesSet",
            LeadEvent::LeadActivityLogged { .. } => "LeadActivityLogged",
            LeadEvent::LeadConverted { .. } => "LeadConverted",
            LeadEvent::LeadErased => "LeadErased",
        }
        .to_string()
    }

    fn event_version(&self) -> String {
        "1.0".to_string()
    }
}
