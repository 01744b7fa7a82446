//! Domizan Gateway: the event-sourced backend between the landing page, the admin panel, the
//! desktop app and the Intelligence service.
//!
//! This crate is the outer shell: configuration, the embedded Postgres default, HTTP (axum)
//! and WebSockets, authentication, and the CLI. Domain rules live in `aggregates`, the event
//! log in `eventstore`, read models in `projections`, rebuilds in `replay`.

pub mod auth;
pub mod config;
pub mod embedded;
pub mod error;
pub mod http;
pub mod idempotency;
pub mod integrations;
pub mod leads;
pub mod licenses;
pub mod live;
pub mod metrics;
pub mod migrate;
pub mod ratelimit;
pub mod startup;
pub mod state;
pub mod telemetry;
pub mod time;

/// Every migration of the product, embedded at build time (`migrations/`).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!();
