//! Leads: a prospective customer from the landing form, worked through the sales pipeline
//! until converted (to a license), lost, or erased (KVKK).
//!
//! Personal data (name, e-mail, phone, company, message, notes) never reaches this module
//! in clear: the caller seals it with the lead's own data key and the events carry the
//! [`SealedText`]. Erasure deletes that key, so the events stay immutable while the data
//! becomes unreadable.

mod aggregate;
mod commands;
mod error;
mod events;

pub use aggregate::Lead;
pub use commands::LeadCommand;
pub use error::LeadError;
pub use events::LeadEvent;

use serde::{Deserialize, Serialize};

/// Personal data encrypted by the caller; opaque here.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SealedText(pub String);

/// The pipeline stages (SPEC §4). `Converted` is reached only through conversion.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeadStatus {
    #[default]
    New,
    Contacted,
    DemoScheduled,
    Converted,
    Lost,
}

impl LeadStatus {
    pub const ALL: [LeadStatus; 5] = [
        LeadStatus::New,
        LeadStatus::Contacted,
        LeadStatus::DemoScheduled,
        LeadStatus::Converted,
        LeadStatus::Lost,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            LeadStatus::New => "new",
            LeadStatus::Contacted => "contacted",
            LeadStatus::DemoScheduled => "demo_scheduled",
            LeadStatus::Converted => "converted",
            LeadStatus::Lost => "lost",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// Open leads collect resubmissions of the same contact; closed ones do not.
    pub fn is_open(self) -> bool {
        !matches!(self, LeadStatus::Converted | LeadStatus::Lost)
    }
}

/// Where a lead came from. Only the landing page submits today.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeadSource {
    LandingPage,
}

impl LeadSource {
    pub fn as_str(self) -> &'static str {
        match self {
            LeadSource::LandingPage => "landing_page",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        (text == "landing_page").then_some(LeadSource::LandingPage)
    }
}

/// Timeline entry kinds (SPEC §4 activities).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ActivityKind {
    Call,
    Meeting,
    Email,
    Comment,
}

impl ActivityKind {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "CALL" => Some(Self::Call),
            "MEETING" => Some(Self::Meeting),
            "EMAIL" => Some(Self::Email),
            "COMMENT" => Some(Self::Comment),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Call => "CALL",
            Self::Meeting => "MEETING",
            Self::Email => "EMAIL",
            Self::Comment => "COMMENT",
        }
    }
}
