//! Helpers shared by the projection crate's integration tests.

pub mod cluster;
