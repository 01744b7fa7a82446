//! Timestamps as the API writes them: RFC 3339, UTC, milliseconds (SPEC §1).

pub use projections::rfc3339;
