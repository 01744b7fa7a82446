//! What can be asked of a lead. Sealed values, ids and times are prepared by the caller.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{ActivityKind, LeadSource, LeadStatus, SealedText};

#[derive(Clone, Debug, PartialEq)]
pub enum LeadCommand {
    /// A first submission from the landing form.
    Create {
        personal: SealedText,
        source: LeadSource,
        utm_source: Option<String>,
        utm_campaign: Option<String>,
        /// The id the submitter is answered with (see `LeadEvent::LeadCreated`).
        submission_id: Option<Uuid>,
    },
    /// The same contact submitted again while the lead is open.
    Resubmit {
        personal: SealedText,
        utm_source: Option<String>,
        utm_campaign: Option<String>,
        submission_id: Option<Uuid>,
    },
    ChangeStatus {
        status: LeadStatus,
    },
    /// Assign to an admin (by e-mail), or unassign with `None`.
    Assign {
        assignee: Option<String>,
    },
    /// Replace the lead's notes (`None` clears them).
    SetNotes {
        notes: Option<SealedText>,
    },
    LogActivity {
        kind: ActivityKind,
        note: SealedText,
        occurred_at: DateTime<Utc>,
    },
    /// The admin panel's PATCH: any of status, assignee and notes, applied together or not
    /// at all. `Some(None)` clears the assignee or the notes.
    Update {
        status: Option<LeadStatus>,
        assignee: Option<Option<String>>,
        notes: Option<Option<SealedText>>,
    },
    /// Conversion into a license (the licensing flow issues this).
    MarkConverted {
        license_id: Uuid,
    },
    /// KVKK erasure: the caller shreds the data key after this lands.
    Erase,
}
