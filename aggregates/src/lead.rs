//! Leads (in progress).
