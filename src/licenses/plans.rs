//! Plans (seed 003, SPEC §9): `GET /v1/admin/plans` (needs `licenses`), `POST`, `PUT`,
//! `DELETE` (need `settings`), and the default plans created at start.

use aggregates::admin::Permission;
use aggregates::plan::{Plan, PlanCommand, PlanError, PlanSpec, default_plans};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use eventstore::{CommandError, CommandHandler, Metadata};
use projections::plans::{self as read};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::plan_id_for_slug;
use crate::auth::AdminPrincipal;
use crate::error::{AppError, AppResult};
use crate::http::context::RequestContext;
use crate::http::extract::AppJson;
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/admin/plans", get(list_plans).post(create_plan))
        .route(
            "/v1/admin/plans/{id}",
            get(get_plan).put(update_plan).delete(delete_plan),
        )
}

/// Creates `basic`, `pro` and `enterprise` unless they were ever created. Their ids come from
/// their slugs, so instances starting together create each once.
pub async fn ensure_default_plans(state: &AppState) -> anyhow::Result<()> {
    let handler = CommandHandler::<Plan>::new(state.store.clone(), ());
    let mut created = None;
    for (slug, spec) in default_plans() {
        let id = plan_id_for_slug(&slug);
        match handler
            .execute(
                &id.to_string(),
                PlanCommand::Create { slug, spec },
                &Metadata::actor("system"),
            )
            .await
        {
            Ok(outcome) => created = outcome.cursor().or(created),
            Err(CommandError::Domain(PlanError::AlreadyExists)) => {}
            Err(e) => return Err(anyhow::anyhow!("creating a default plan: {e}")),
        }
    }
    // On a first start the log is short: let the plans be readable before the first
    // request. Later starts created nothing and wait for nothing.
    if let Some(cursor) = created
        && let Err(e) = state.wait_for(read::NAME, cursor).await
    {
        tracing::warn!(error = %e, "default plans not yet in the read model");
    }
    Ok(())
}

fn ok(data: Value) -> Json<Value> {
    Json(json!({"success": true, "data": data}))
}

fn plan_error(e: PlanError) -> AppError {
    match e {
        PlanError::AlreadyExists => AppError::new(
            StatusCode::CONFLICT,
            "PLAN_SLUG_TAKEN",
            "Bu slug ile bir plan zaten var (silinmiş olsa bile).",
        )
        .with("field", "slug"),
        PlanError::NotFound => plan_not_found(),
        PlanError::InUse(n) => AppError::new(
            StatusCode::CONFLICT,
            "PLAN_IN_USE",
            format!("Bu planı {n} lisans kullanıyor; silinemez, pasifleştirin."),
        )
        .with("licenses", n),
        PlanError::Invalid(field) => AppError::validation(field, format!("{field} geçersiz")),
    }
}

fn plan_not_found() -> AppError {
    AppError::new(StatusCode::NOT_FOUND, "PLAN_NOT_FOUND", "Plan bulunamadı.")
}

fn command_error(e: CommandError<PlanError>) -> AppError {
    match e {
        CommandError::Domain(e) => plan_error(e),
        CommandError::Conflict(_) => AppError::concurrent_modification(),
        CommandError::Store(e) => e.into(),
    }
}

async fn list_plans(
    State(state): State<AppState>,
    admin: AdminPrincipal,
) -> AppResult<Json<Value>> {
    admin.require(Permission::Licenses, false)?;
    let plans = read::list(&state.pool).await?;
    Ok(ok(
        json!({"plans": plans.iter().map(read::PlanRow::to_json).collect::<Vec<_>>()}),
    ))
}

fn plan_id(text: &str) -> AppResult<Uuid> {
    text.parse().map_err(|_| plan_not_found())
}

async fn get_plan(
    State(state): State<AppState>,
    admin: AdminPrincipal,
    Path(id): Path<String>,
) -> AppResult<Json<Value>> {
    admin.require(Permission::Licenses, false)?;
    let plan = read::by_id(&state.pool, plan_id(&id)?)
        .await?
        .ok_or_else(plan_not_found)?;
    Ok(ok(json!({"plan": plan.to_json()})))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PlanBody {
    slug: Option<String>,
    name: String,
    description: Option<String>,
    price_monthly: Value,
    price_yearly: Value,
    max_devices: u32,
    monthly_token_limit: u64,
    #[serde(default)]
    features: Vec<String>,
    is_active: Option<bool>,
    is_visible: Option<bool>,
    sort_order: Option<i32>,
}

/// A TRY amount as a JSON number or string with at most two decimals, in kuruş — read from
/// its decimal text, never through a binary float.
pub fn parse_amount(field: &str, value: &Value) -> AppResult<i64> {
    let invalid = || {
        AppError::validation(
            field,
            format!("{field} en fazla iki ondalıklı, negatif olmayan bir TL tutarı olmalı"),
        )
    };
    let text = match value {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.trim().to_string(),
        _ => return Err(invalid()),
    };
    let (whole, fraction) = text.split_once('.').unwrap_or((&text, ""));
    let fraction = fraction.trim_end_matches('0');
    if whole.is_empty()
        || whole.len() > 12
        || fraction.len() > 2
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || !fraction.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(invalid());
    }
    let whole: i64 = whole.parse().map_err(|_| invalid())?;
    let cents: i64 = format!("{fraction:0<2}").parse().map_err(|_| invalid())?;
    whole
        .checked_mul(100)
        .and_then(|w| w.checked_add(cents))
        .filter(|k| *k <= aggregates::plan::MAX_PRICE)
        .ok_or_else(invalid)
}

fn spec_of(body: PlanBody, current: Option<&read::PlanRow>) -> AppResult<PlanSpec> {
    let name = crate::leads::contact::text("name", &body.name, 2, 100)?;
    let description = crate::leads::contact::optional_multiline(
        "description",
        body.description.as_deref(),
        1000,
    )?;
    Ok(PlanSpec {
        name,
        description,
        price_monthly: parse_amount("priceMonthly", &body.price_monthly)?,
        price_yearly: parse_amount("priceYearly", &body.price_yearly)?,
        max_devices: body.max_devices,
        monthly_token_limit: body.monthly_token_limit,
        features: body.features,
        is_active: body
            .is_active
            .or(current.map(|c| c.is_active))
            .unwrap_or(true),
        is_visible: body
            .is_visible
            .or(current.map(|c| c.is_visible))
            .unwrap_or(true),
        sort_order: body
            .sort_order
            .or(current.map(|c| c.sort_order))
            .unwrap_or(0),
    })
}

async fn respond(
    state: &AppState,
    id: Uuid,
    cursor: Option<eventstore::Cursor>,
) -> AppResult<Value> {
    if let Some(cursor) = cursor {
        state.wait_for(read::NAME, cursor).await?;
        // A plan's features are part of every verify answer of its licenses.
        state.licenses.view.reload_or_warn(&state.pool, None).await;
    }
    let plan = read::by_id(&state.pool, id)
        .await?
        .ok_or_else(plan_not_found)?;
    Ok(json!({"plan": plan.to_json()}))
}

async fn create_plan(
    State(state): State<AppState>,
    admin: AdminPrincipal,
    context: RequestContext,
    AppJson(body): AppJson<PlanBody>,
) -> AppResult<(StatusCode, Json<Value>)> {
    admin.require(Permission::Settings, true)?;
    let slug = body.slug.clone().unwrap_or_default();
    if !aggregates::plan::is_valid_slug(&slug) {
        return Err(AppError::validation(
            "slug",
            "slug 2–40 karakter, küçük harf ile başlayan [a-z0-9-] olmalı",
        ));
    }
    let spec = spec_of(body, None)?;
    let id = plan_id_for_slug(&slug);
    let outcome = CommandHandler::<Plan>::new(state.store.clone(), ())
        .execute_new(
            &id.to_string(),
            PlanCommand::Create { slug, spec },
            &context.metadata(admin.actor()),
        )
        .await
        .map_err(command_error)?;
    Ok((
        StatusCode::CREATED,
        ok(respond(&state, id, outcome.cursor()).await?),
    ))
}

async fn update_plan(
    State(state): State<AppState>,
    admin: AdminPrincipal,
    context: RequestContext,
    Path(id): Path<String>,
    AppJson(body): AppJson<PlanBody>,
) -> AppResult<Json<Value>> {
    admin.require(Permission::Settings, true)?;
    let id = plan_id(&id)?;
    let current = read::by_id(&state.pool, id)
        .await?
        .ok_or_else(plan_not_found)?;
    if body.slug.as_ref().is_some_and(|s| *s != current.slug) {
        return Err(AppError::validation(
            "slug",
            "Bir planın slug'ı değiştirilemez",
        ));
    }
    let spec = spec_of(body, Some(&current))?;
    let outcome = CommandHandler::<Plan>::new(state.store.clone(), ())
        .execute(
            &id.to_string(),
            PlanCommand::Update { spec },
            &context.metadata(admin.actor()),
        )
        .await
        .map_err(command_error)?;
    Ok(ok(respond(&state, id, outcome.cursor()).await?))
}

async fn delete_plan(
    State(state): State<AppState>,
    admin: AdminPrincipal,
    context: RequestContext,
    Path(id): Path<String>,
) -> AppResult<Json<Value>> {
    admin.require(Permission::Settings, true)?;
    let id = plan_id(&id)?;
    let current = read::by_id(&state.pool, id)
        .await?
        .ok_or_else(plan_not_found)?;
    // Under the plan's exclusive lock no license with it is being created, and the log (not
    // a read model that may trail it) says how many exist.
    let lock = super::PlanLock::acquire(&state.pool, &current.slug, true).await?;
    let using: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events
          WHERE aggregate_type = 'license' AND event_type = 'LicenseCreated'
            AND payload->'LicenseCreated'->>'package' = $1",
    )
    .bind(&current.slug)
    .fetch_one(&state.pool)
    .await?;
    let outcome = CommandHandler::<Plan>::new(state.store.clone(), ())
        .execute(
            &id.to_string(),
            PlanCommand::Delete {
                licenses_using: u64::try_from(using).unwrap_or(u64::MAX),
            },
            &context.metadata(admin.actor()),
        )
        .await
        .map_err(command_error);
    lock.release().await?;
    if let Some(cursor) = outcome?.cursor() {
        state.wait_for(read::NAME, cursor).await?;
    }
    Ok(ok(json!({"deleted": true, "id": id})))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::parse_amount;

    #[test]
    fn amounts_are_read_exactly_from_their_decimal_text() {
        assert_eq!(parse_amount("p", &json!(1499.9)).unwrap(), 149_990);
        assert_eq!(parse_amount("p", &json!("1499.90")).unwrap(), 149_990);
        assert_eq!(parse_amount("p", &json!(0.1)).unwrap(), 10);
        assert_eq!(parse_amount("p", &json!(29.99)).unwrap(), 2_999);
        assert_eq!(parse_amount("p", &json!(100)).unwrap(), 10_000);
        for bad in [
            json!(-1),
            json!("1.234"),
            json!("abc"),
            json!(null),
            json!("1e3"),
        ] {
            assert!(parse_amount("p", &bad).is_err(), "{bad}");
        }
    }
}
