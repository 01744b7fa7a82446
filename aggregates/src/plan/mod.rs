//! Plans (seed 003, SPEC §9): what a license package costs and what it gives — device and
//! token limits, features. A plan's id is derived from its slug (by the gateway), so the
//! event store's per-stream check keeps slugs unique, and the three default plans are
//! created once even when several instances start together.
//!
//! Prices are exact: minor units (kuruş) in commands, events and read models, never binary
//! floats.

mod aggregate;

pub use aggregate::Plan;

use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};

/// The stream type of plans.
pub const AGGREGATE_TYPE: &str = "plan";

/// What the desktop app may use; the keys of `features` in a verify answer (SPEC §5).
pub const FEATURES: [&str; 4] = [
    "documentAnalysis",
    "telegramIntegration",
    "multiDevice",
    "prioritySupport",
];

/// Everything about a plan except its slug, as `POST`/`PUT` set it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanSpec {
    pub name: String,
    pub description: Option<String>,
    /// Monthly price in kuruş (1 TRY = 100).
    pub price_monthly: i64,
    pub price_yearly: i64,
    pub max_devices: u32,
    pub monthly_token_limit: u64,
    pub features: Vec<String>,
    pub is_active: bool,
    pub is_visible: bool,
    pub sort_order: i32,
}

#[derive(Clone, Debug, PartialEq)]
pub enum PlanCommand {
    Create {
        slug: String,
        spec: PlanSpec,
    },
    /// `PUT`: the whole spec replaced (the slug stays).
    Update {
        spec: PlanSpec,
    },
    /// `licenses_using` is looked up by the caller: a plan in use is not deleted.
    Delete {
        licenses_using: u64,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum PlanEvent {
    PlanCreated { slug: String, spec: PlanSpec },
    PlanUpdated { spec: PlanSpec },
    PlanDeleted,
}

impl DomainEvent for PlanEvent {
    fn event_type(&self) -> String {
        match self {
            PlanEvent::PlanCreated { .. } => "PlanCreated",
            PlanEvent::PlanUpdated { .. } => "PlanUpdated",
            PlanEvent::PlanDeleted => "PlanDeleted",
        }
        .to_string()
    }

    fn event_version(&self) -> String {
        "1.0".to_string()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("a plan with this slug exists")]
    AlreadyExists,
    #[error("plan not found")]
    NotFound,
    #[error("the plan is used by {0} license(s)")]
    InUse(u64),
    #[error("invalid {0}")]
    Invalid(&'static str),
}

/// `[a-z0-9-]`, 2–40 characters, starting with a letter.
pub fn is_valid_slug(slug: &str) -> bool {
    (2..=40).contains(&slug.len())
        && slug.starts_with(|c: char| c.is_ascii_lowercase())
        && slug
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// Largest price: a trillion kuruş is beyond any plan and far within i64 and JavaScript.
pub const MAX_PRICE: i64 = 1_000_000_000_000;

impl PlanSpec {
    /// The first field that breaks a rule.
    pub fn check(&self) -> Result<(), PlanError> {
        let name_ok = (2..=100).contains(&self.name.trim().chars().count())
            && crate::text::check_single_line(&self.name).is_ok();
        if !name_ok {
            return Err(PlanError::Invalid("name"));
        }
        if let Some(d) = &self.description
            && (d.chars().count() > 1000 || crate::text::check_multi_line(d).is_err())
        {
            return Err(PlanError::Invalid("description"));
        }
        if !(0..=MAX_PRICE).contains(&self.price_monthly) {
            return Err(PlanError::Invalid("priceMonthly"));
        }
        if !(0..=MAX_PRICE).contains(&self.price_yearly) {
            return Err(PlanError::Invalid("priceYearly"));
        }
        if !(1..=1000).contains(&self.max_devices) {
            return Err(PlanError::Invalid("maxDevices"));
        }
        if self.monthly_token_limit > 1_000_000_000_000 {
            return Err(PlanError::Invalid("monthlyTokenLimit"));
        }
        if self
            .features
            .iter()
            .any(|f| !FEATURES.contains(&f.as_str()))
        {
            return Err(PlanError::Invalid("features"));
        }
        Ok(())
    }
}

/// The plans every installation starts with (SPEC §9): `basic`, `pro`, `enterprise`.
pub fn default_plans() -> Vec<(String, PlanSpec)> {
    let plan =
        |name: &str, monthly: i64, devices: u32, tokens: u64, features: &[&str], order| PlanSpec {
            name: name.to_string(),
            description: None,
            price_monthly: monthly,
            price_yearly: monthly * 10,
            max_devices: devices,
            monthly_token_limit: tokens,
            features: features.iter().map(|f| f.to_string()).collect(),
            is_active: true,
            is_visible: true,
            sort_order: order,
        };
    vec![
        (
            "basic".into(),
            plan("Basic", 49_900, 1, 100_000, &["documentAnalysis"], 1),
        ),
        (
            "pro".into(),
            plan(
                "Pro",
                149_900,
                5,
                500_000,
                &["documentAnalysis", "telegramIntegration", "multiDevice"],
                2,
            ),
        ),
        (
            "enterprise".into(),
            plan("Enterprise", 399_900, 20, 2_000_000, &FEATURES, 3),
        ),
    ]
}
