//! The plans read model (`plans`): the admin list and what a new license takes as defaults.

use aggregates::plan::{PlanEvent, PlanSpec};
use chrono::{DateTime, Utc};
use eventstore::StoredEvent;
use serde_json::{Value, json};
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use crate::adapter::EventProjection;
use crate::{BoxFuture, ProjectionError, pg_text, pg_text_opt, rfc3339};

pub const NAME: &str = "plans";

pub struct PlansProjection;

impl EventProjection for PlansProjection {
    type Event = PlanEvent;
    type Page = ();
    const NAME: &'static str = NAME;
    const AGGREGATE_TYPE: &'static str = aggregates::plan::AGGREGATE_TYPE;

    fn apply<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        stored: &'a StoredEvent,
        event: PlanEvent,
        _page: &'a mut (),
    ) -> BoxFuture<'a, Result<(), ProjectionError>> {
        Box::pin(async move {
            let id: Uuid = stored
                .stream
                .aggregate_id
                .parse()
                .map_err(|e| ProjectionError::event(stored, e))?;
            let at = stored.recorded_at;
            let position = stored.global_position();
            match event {
                PlanEvent::PlanCreated { slug, spec } => {
                    sqlx::query(
                        "INSERT INTO plans (id, slug, name, description, price_monthly, price_yearly,
                                            max_devices, monthly_token_limit, features, is_active,
                                            is_visible, sort_order, created_at, updated_at, last_position)
                         VALUES ($1, $2, '', NULL, 0, 0, 0, 0, '{}', false, false, 0, $3, $3, $4)
                         ON CONFLICT (id) DO NOTHING",
                    )
                    .bind(id)
                    .bind(pg_text(&slug))
                    .bind(at)
                    .bind(position)
                    .execute(&mut *tx)
                    .await?;
                    write_spec(tx, id, &spec, at, position).await?;
                }
                PlanEvent::PlanUpdated { spec } => write_spec(tx, id, &spec, at, position).await?,
                PlanEvent::PlanDeleted => {
                    sqlx::query("DELETE FROM plans WHERE id = $1")
                        .bind(id)
                        .execute(&mut *tx)
                        .await?;
                }
            }
            Ok(())
        })
    }
}

async fn write_spec(
    tx: &mut PgConnection,
    id: Uuid,
    spec: &PlanSpec,
    at: DateTime<Utc>,
    position: i64,
) -> Result<(), sqlx::Error> {
    let features: Vec<String> = spec
        .features
        .iter()
        .map(|f| pg_text(f).into_owned())
        .collect();
    sqlx::query(
        "UPDATE plans SET name = $2, description = $3, price_monthly = $4, price_yearly = $5,
                          max_devices = $6, monthly_token_limit = $7, features = $8, is_active = $9,
                          is_visible = $10, sort_order = $11, updated_at = $12, last_position = $13
          WHERE id = $1",
    )
    .bind(id)
    .bind(pg_text(&spec.name))
    .bind(pg_text_opt(spec.description.as_deref()))
    .bind(spec.price_monthly)
    .bind(spec.price_yearly)
    .bind(i64::from(spec.max_devices))
    .bind(i64::try_from(spec.monthly_token_limit).unwrap_or(i64::MAX))
    .bind(features)
    .bind(spec.is_active)
    .bind(spec.is_visible)
    .bind(spec.sort_order)
    .bind(at)
    .bind(position)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Queries.

#[derive(Clone, Debug, PartialEq, sqlx::FromRow)]
pub struct PlanRow {
    pub id: Uuid,
    pub slug: String,
    pub name: String,
    pub description: Option<String>,
    pub price_monthly: i64,
    pub price_yearly: i64,
    pub max_devices: i32,
    pub monthly_token_limit: i64,
    pub features: Vec<String>,
    pub is_active: bool,
    pub is_visible: bool,
    pub sort_order: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Kuruş as the exact decimal string the API shows (`149900` → `"1499.00"`).
pub fn amount(kurus: i64) -> String {
    let sign = if kurus < 0 { "-" } else { "" };
    let abs = kurus.unsigned_abs();
    format!("{sign}{}.{:02}", abs / 100, abs % 100)
}

impl PlanRow {
    pub fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "slug": self.slug,
            "name": self.name,
            "description": self.description,
            "priceMonthly": amount(self.price_monthly),
            "priceYearly": amount(self.price_yearly),
            "currency": "TRY",
            "maxDevices": self.max_devices,
            "monthlyTokenLimit": self.monthly_token_limit,
            "features": self.features,
            "isActive": self.is_active,
            "isVisible": self.is_visible,
            "sortOrder": self.sort_order,
            "createdAt": rfc3339(self.created_at),
            "updatedAt": rfc3339(self.updated_at),
        })
    }

    /// Whether the plan grants `feature` (one of [`aggregates::plan::FEATURES`]).
    pub fn has(&self, feature: &str) -> bool {
        self.features.iter().any(|f| f == feature)
    }
}

const PLAN_COLUMNS: &str = "id, slug, name, description, price_monthly, price_yearly, max_devices,
    monthly_token_limit, features, is_active, is_visible, sort_order, created_at, updated_at";

pub async fn list<'e>(db: impl PgExecutor<'e>) -> Result<Vec<PlanRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {PLAN_COLUMNS} FROM plans ORDER BY sort_order, slug"
    ))
    .fetch_all(db)
    .await
}

pub async fn by_slug<'e>(
    db: impl PgExecutor<'e>,
    slug: &str,
) -> Result<Option<PlanRow>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {PLAN_COLUMNS} FROM plans WHERE slug = $1"))
        .bind(slug)
        .fetch_optional(db)
        .await
}

pub async fn by_id<'e>(db: impl PgExecutor<'e>, id: Uuid) -> Result<Option<PlanRow>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {PLAN_COLUMNS} FROM plans WHERE id = $1"))
        .bind(id)
        .fetch_optional(db)
        .await
}

#[cfg(test)]
mod tests {
    use super::amount;

    #[test]
    fn amounts_are_exact_decimal_strings() {
        assert_eq!(amount(149_900), "1499.00");
        assert_eq!(amount(5), "0.05");
        assert_eq!(amount(0), "0.00");
    }
}
