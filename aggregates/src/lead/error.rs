//! Why a lead refuses a command.

use super::LeadStatus;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeadError {
    #[error("lead not found")]
    NotFound,
    #[error("lead already exists")]
    AlreadyExists,
    #[error("lead was erased")]
    Erased,
    #[error("lead is already converted")]
    AlreadyConverted,
    #[error("a lead becomes converted only through conversion")]
    ConvertedOnlyThroughConversion,
    #[error("cannot move a lead from {from:?} to {to:?}")]
    InvalidTransition { from: LeadStatus, to: LeadStatus },
    #[error("the lead is closed ({0:?}) and takes no resubmissions")]
    Closed(LeadStatus),
}
