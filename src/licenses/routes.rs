//! HTTP handlers for `/v1/admin/licenses/*`, `/v1/admin/customers` and
//! `POST /v1/admin/leads/:id/convert-to-license`. Every route needs the `licenses`
//! permission; writes are not for viewers.

use std::collections::HashMap;

use aggregates::admin::Permission;
use aggregates::license::{LicenseCommand, Owner};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::Utc;
use eventstore::Cursor;
use projections::licenses::{self as read, LicenseFilter, LicenseSort};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::{
    EMAIL_WAIT, LicenseService, NewLicense, SecretUpdate, WebhookOutcome, created_json, keys,
    license_error,
};
use crate::auth::AdminPrincipal;
use crate::error::{AppError, AppResult};
use crate::http::context::RequestContext;
use crate::http::extract::AppJson;
use crate::leads::contact;
use crate::state::AppState;

pub fn admin_router() -> Router<AppState> {
    Router::new()
        .route(
            "/v1/admin/licenses",
            get(list_licenses).post(create_license),
        )
        .route(
            "/v1/admin/licenses/{id}",
            get(get_license).patch(patch_license),
        )
        .route("/v1/admin/licenses/{id}/renew", post(renew_license))
        .route("/v1/admin/licenses/{id}/suspend", post(suspend_license))
        .route(
            "/v1/admin/licenses/{id}/reactivate",
            post(reactivate_license),
        )
        .route("/v1/admin/licenses/{id}/revoke", post(revoke_license))
        .route(
            "/v1/admin/licenses/{id}/telegram-webhook",
            post(retry_webhook),
        )
        .route("/v1/admin/licenses/{id}/resend-email", post(resend_email))
        .route(
            "/v1/admin/leads/{id}/convert-to-license",
            post(convert_lead),
        )
        .route("/v1/admin/customers", get(list_customers))
        .merge(super::plans::router())
}

fn ok(data: Value) -> Json<Value> {
    Json(json!({"success": true, "data": data}))
}

fn not_found() -> AppError {
    license_error(aggregates::license::LicenseError::NotFound)
}

fn license_id(text: &str) -> AppResult<Uuid> {
    text.parse().map_err(|_| not_found())
}

/// The license as `GET /v1/admin/licenses/:id` answers: masked secrets, the key itself,
/// the webhook URL and the history.
pub async fn license_detail(state: &AppState, id: Uuid) -> AppResult<Value> {
    let row = read::get(&state.pool, id).await?.ok_or_else(not_found)?;
    let key = state.licenses.open(&row.key_sealed)?;
    let mut value = row.to_json(&key, Utc::now());
    value["webhookUrl"] = state.licenses.webhook_url(id).into();
    value["history"] = read::history(&state.pool, id)
        .await?
        .iter()
        .map(read::HistoryRow::to_json)
        .collect();
    Ok(value)
}

async fn answer(state: &AppState, id: Uuid, cursor: Option<Cursor>) -> AppResult<Value> {
    if let Some(cursor) = cursor {
        state.license_written(id, cursor).await?;
    }
    license_detail(state, id).await
}

// ---- input ----------------------------------------------------------------------------

fn owner_email(raw: &str) -> AppResult<String> {
    contact::normalise_email(raw)
        .map_err(|_| AppError::validation("ownerEmail", "Geçersiz e-posta adresi"))
}

fn owner_phone(raw: &str) -> AppResult<String> {
    contact::normalise_phone(raw)
        .map_err(|_| AppError::validation("ownerPhone", "Geçersiz telefon numarası"))
}

fn person_name(field: &str, raw: &str) -> AppResult<String> {
    let name = contact::text(field, raw, 2, 100)?;
    if !aggregates::text::has_letter(&name) {
        return Err(AppError::validation(
            field,
            format!("{field} en az bir harf içermeli"),
        ));
    }
    Ok(name)
}

fn vkn(raw: &str) -> AppResult<String> {
    let value = raw.trim();
    if !keys::is_valid_tax_number(value) {
        return Err(AppError::validation(
            "companyVkn",
            "companyVkn geçerli bir 10 haneli VKN veya 11 haneli TCKN olmalı",
        ));
    }
    Ok(value.to_string())
}

fn gemini_key(raw: &str) -> AppResult<String> {
    let key = raw.trim();
    if !(10..=200).contains(&key.len()) || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(AppError::validation(
            "geminiApiKey",
            "geminiApiKey 10–200 görünür ASCII karakter olmalı",
        ));
    }
    Ok(key.to_string())
}

/// `<bot id>:<secret>` as BotFather hands it out.
fn bot_token(raw: &str) -> AppResult<String> {
    let token = raw.trim();
    let valid = token.len() <= 100
        && token.split_once(':').is_some_and(|(id, secret)| {
            (5..=15).contains(&id.len())
                && id.bytes().all(|b| b.is_ascii_digit())
                && secret.len() >= 20
                && secret
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        });
    if !valid {
        return Err(AppError::validation(
            "telegramBotToken",
            "telegramBotToken BotFather'ın verdiği biçimde olmalı (123456789:ABC…)",
        ));
    }
    Ok(token.to_string())
}

/// `@name_bot`: 5–32 of `[A-Za-z0-9_]`, ending in `bot`.
fn bot_username(raw: &str) -> AppResult<String> {
    let name = raw.trim().trim_start_matches('@');
    let valid = (5..=32).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && name.to_ascii_lowercase().ends_with("bot");
    if !valid {
        return Err(AppError::validation(
            "telegramBotUsername",
            "telegramBotUsername '@…bot' biçiminde olmalı",
        ));
    }
    Ok(format!("@{name}"))
}

/// The plan a license takes its defaults from; it must exist and be active.
async fn plan(state: &AppState, slug: &str) -> AppResult<projections::plans::PlanRow> {
    let plan = match projections::plans::by_slug(&state.pool, slug.trim()).await? {
        Some(plan) => Some(plan),
        None => {
            let stream = eventstore::CommandHandler::<aggregates::plan::Plan>::stream(
                &super::plan_id_for_slug(slug.trim()).to_string(),
            );
            if state
                .catch_up_with(projections::plans::NAME, &stream)
                .await?
            {
                projections::plans::by_slug(&state.pool, slug.trim()).await?
            } else {
                None
            }
        }
    };
    plan.filter(|p| p.is_active)
        .ok_or_else(|| AppError::validation("packageType", "Bilinmeyen veya pasif paket"))
}

/// The package part shared by a create and a conversion (flattened into both, so unknown
/// keys cannot be refused here: serde does not combine the two).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PackageBody {
    package_type: String,
    max_devices: Option<u32>,
    duration_months: u32,
    monthly_token_limit: Option<u64>,
    gemini_api_key: Option<String>,
    telegram_bot_token: Option<String>,
    telegram_bot_username: Option<String>,
}

async fn new_license(
    state: &AppState,
    owner: Owner,
    package: PackageBody,
    lead_id: Option<Uuid>,
) -> AppResult<NewLicense> {
    let plan = plan(state, &package.package_type).await?;
    Ok(NewLicense {
        owner,
        max_devices: package
            .max_devices
            .unwrap_or(u32::try_from(plan.max_devices).unwrap_or(1)),
        monthly_token_limit: package
            .monthly_token_limit
            .unwrap_or(u64::try_from(plan.monthly_token_limit).unwrap_or(0)),
        package: plan.slug,
        duration_months: package.duration_months,
        gemini_api_key: package
            .gemini_api_key
            .as_deref()
            .map(gemini_key)
            .transpose()?,
        telegram_bot_token: package
            .telegram_bot_token
            .as_deref()
            .map(bot_token)
            .transpose()?,
        telegram_bot_username: package
            .telegram_bot_username
            .as_deref()
            .map(bot_username)
            .transpose()?,
        lead_id,
    })
}

// ---- create and convert -------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreateBody {
    owner_name: String,
    owner_email: String,
    owner_phone: Option<String>,
    company_name: String,
    company_vkn: Option<String>,
    lead_id: Option<String>,
    #[serde(flatten)]
    package: PackageBody,
}

/// Creates, then reads the license and waits a little for its e-mail.
async fn create_and_answer(
    state: &AppState,
    new: NewLicense,
    context: &RequestContext,
    admin: &AdminPrincipal,
) -> AppResult<(Uuid, Value, Option<WebhookOutcome>, bool)> {
    let service: &LicenseService = &state.licenses;
    let converts = new.lead_id.is_some();
    let created = service
        .create(new, &context.metadata(admin.actor()))
        .await?;
    // A conversion also changed the lead: the lead read the next moment shows it converted.
    if converts && let Some(cursor) = created.cursor {
        state.wait_for(projections::leads::NAME, cursor).await?;
    }
    let license = answer(state, created.license_id, created.cursor).await?;
    let email_sent = match created.cursor {
        Some(cursor) if service.mailer().is_some() => {
            state.wait_for(read::MAIL_NAME, cursor).await?;
            super::mail::sent_within(service, created.license_id, 1, EMAIL_WAIT).await?
        }
        _ => false,
    };
    let license = if email_sent {
        license_detail(state, created.license_id)
            .await
            .unwrap_or(license)
    } else {
        license
    };
    Ok((created.license_id, license, created.webhook, email_sent))
}

async fn create_license(
    State(state): State<AppState>,
    admin: AdminPrincipal,
    context: RequestContext,
    AppJson(body): AppJson<CreateBody>,
) -> AppResult<(StatusCode, Json<Value>)> {
    admin.require(Permission::Licenses, true)?;
    let owner = Owner {
        name: person_name("ownerName", &body.owner_name)?,
        email: owner_email(&body.owner_email)?,
        phone: body.owner_phone.as_deref().map(owner_phone).transpose()?,
        company_name: contact::text("companyName", &body.company_name, 2, 200)?,
        company_vkn: body.company_vkn.as_deref().map(vkn).transpose()?,
    };
    let lead_id = body
        .lead_id
        .as_deref()
        .map(|id| {
            id.parse::<Uuid>()
                .map_err(|_| AppError::validation("leadId", "leadId bir UUID olmalı"))
        })
        .transpose()?;
    if lead_id.is_some() {
        admin.require(Permission::Leads, true)?;
    }
    let new = new_license(&state, owner, body.package, lead_id).await?;
    let (_, license, webhook, email_sent) =
        create_and_answer(&state, new, &context, &admin).await?;
    Ok((
        StatusCode::CREATED,
        ok(created_json(license, webhook.as_ref(), email_sent)),
    ))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ConvertBody {
    company_name: Option<String>,
    company_vkn: Option<String>,
    #[serde(flatten)]
    package: PackageBody,
}

async fn convert_lead(
    State(state): State<AppState>,
    admin: AdminPrincipal,
    context: RequestContext,
    Path(id): Path<String>,
    AppJson(body): AppJson<ConvertBody>,
) -> AppResult<(StatusCode, Json<Value>)> {
    admin.require(Permission::Licenses, true)?;
    admin.require(Permission::Leads, true)?;
    let lead_not_found = || crate::leads::lead_error(aggregates::lead::LeadError::NotFound);
    let lead_id: Uuid = id.parse().map_err(|_| lead_not_found())?;
    let lead = match projections::leads::get(&state.pool, lead_id).await? {
        Some(lead) => lead,
        None => {
            let stream =
                eventstore::CommandHandler::<aggregates::lead::Lead>::stream(&lead_id.to_string());
            if !state
                .catch_up_with(projections::leads::NAME, &stream)
                .await?
            {
                return Err(lead_not_found());
            }
            projections::leads::get(&state.pool, lead_id)
                .await?
                .ok_or_else(lead_not_found)?
        }
    };
    if lead.erased {
        return Err(crate::leads::lead_error(
            aggregates::lead::LeadError::Erased,
        ));
    }
    let company = match body.company_name.as_deref() {
        Some(name) => contact::text("companyName", name, 2, 200)?,
        None => lead.company.clone().unwrap_or_else(|| lead.name.clone()),
    };
    let owner = Owner {
        name: lead.name.clone(),
        email: lead.email.clone(),
        phone: Some(lead.phone.clone()),
        company_name: company,
        company_vkn: body.company_vkn.as_deref().map(vkn).transpose()?,
    };
    let new = new_license(&state, owner, body.package, Some(lead_id)).await?;
    let (_, license, webhook, email_sent) =
        create_and_answer(&state, new, &context, &admin).await?;
    Ok((
        StatusCode::CREATED,
        ok(json!({
            "license": license,
            "lead": {"id": lead_id, "status": "converted"},
            "webhookSetup": webhook.map(|w| json!({"success": w.success, "webhookUrl": w.webhook_url})),
            "emailSent": email_sent,
        })),
    ))
}

// ---- reads ------------------------------------------------------------------------------

async fn list_licenses(
    State(state): State<AppState>,
    admin: AdminPrincipal,
    Query(q): Query<HashMap<String, String>>,
) -> AppResult<Json<Value>> {
    admin.require(Permission::Licenses, false)?;
    let get = |k: &str| q.get(k).map(|s| s.trim()).filter(|s| !s.is_empty());
    let status = get("status")
        .map(|s| match s {
            "active" | "suspended" | "revoked" | "expired" => Ok(s.to_string()),
            _ => Err(AppError::validation(
                "status",
                "status active, suspended, revoked veya expired olmalı",
            )),
        })
        .transpose()?;
    let search = get("search").map(str::to_string);
    let filter = LicenseFilter {
        status,
        key_digest: search
            .as_deref()
            .filter(|s| keys::looks_like_key(s))
            .map(|s| state.licenses.key_digest(s)),
        search,
        package_type: get("packageType").map(str::to_string),
        expiring_within_days: get("expiringWithinDays")
            .map(|d| {
                d.parse::<i64>()
                    .ok()
                    .filter(|d| (0..=3650).contains(d))
                    .ok_or_else(|| {
                        AppError::validation(
                            "expiringWithinDays",
                            "expiringWithinDays 0 ile 3650 arasında olmalı",
                        )
                    })
            })
            .transpose()?,
    };
    let (page, limit) = crate::http::extract::page_params(&q)?;
    let sort = match q.get("sortBy") {
        None => LicenseSort::CreatedAt,
        Some(s) => LicenseSort::parse(s)
            .ok_or_else(|| AppError::validation("sortBy", "Bilinmeyen sıralama alanı"))?,
    };
    let descending = match q.get("sortOrder").map(String::as_str) {
        None | Some("desc") => true,
        Some("asc") => false,
        Some(_) => {
            return Err(AppError::validation(
                "sortOrder",
                "sortOrder asc veya desc olmalı",
            ));
        }
    };
    let now = Utc::now();
    let (rows, total) =
        read::list(&state.pool, &filter, sort, descending, page, limit, now).await?;
    let licenses = rows
        .iter()
        .map(|r| Ok(r.to_json(&state.licenses.open(&r.key_sealed)?, now)))
        .collect::<AppResult<Vec<_>>>()?;
    Ok(ok(json!({
        "licenses": licenses,
        "pagination": {"page": page, "limit": limit, "total": total, "totalPages": (total + limit - 1) / limit},
    })))
}

async fn get_license(
    State(state): State<AppState>,
    admin: AdminPrincipal,
    Path(id): Path<String>,
) -> AppResult<Json<Value>> {
    admin.require(Permission::Licenses, false)?;
    Ok(ok(license_detail(&state, license_id(&id)?).await?))
}

async fn list_customers(
    State(state): State<AppState>,
    admin: AdminPrincipal,
    Query(q): Query<HashMap<String, String>>,
) -> AppResult<Json<Value>> {
    admin.require(Permission::Licenses, false)?;
    // Customers come in one order (company name); asking for another is an error, not a
    // silent default (SPEC §1).
    if q.get("sortBy").is_some_and(|s| s != "companyName") {
        return Err(AppError::validation(
            "sortBy",
            "Müşteriler yalnızca companyName ile sıralanır",
        ));
    }
    if q.get("sortOrder").is_some_and(|s| s != "asc") {
        return Err(AppError::validation(
            "sortOrder",
            "Müşteriler yalnızca asc sıralanır",
        ));
    }
    let (page, limit) = crate::http::extract::page_params(&q)?;
    let search = q.get("search").map(|s| s.trim()).filter(|s| !s.is_empty());
    let (groups, total) = read::customers(&state.pool, search, page, limit).await?;
    let now = Utc::now();
    let customers = groups
        .iter()
        .map(|(key, licenses)| {
            let first = licenses.first();
            let items = licenses
                .iter()
                .map(|r| {
                    Ok(json!({
                        "id": r.id,
                        "licenseKey": state.licenses.open(&r.key_sealed)?,
                        "packageType": r.package_type,
                        "status": r.status(now),
                        "expiresAt": crate::time::rfc3339(r.expires_at),
                        "ownerName": r.owner_name,
                        "ownerEmail": r.owner_email,
                    }))
                })
                .collect::<AppResult<Vec<_>>>()?;
            Ok(json!({
                "id": key,
                "companyName": first.map(|r| r.company_name.clone()),
                "companyVkn": first.and_then(|r| r.company_vkn.clone()),
                "ownerName": first.map(|r| r.owner_name.clone()),
                "ownerEmail": first.map(|r| r.owner_email.clone()),
                "totalLicenses": licenses.len(),
                "activeLicenses": licenses.iter().filter(|r| r.status(now) == "active").count(),
                "licenses": items,
            }))
        })
        .collect::<AppResult<Vec<_>>>()?;
    Ok(ok(json!({
        "customers": customers,
        "pagination": {"page": page, "limit": limit, "total": total, "totalPages": (total + limit - 1) / limit},
    })))
}

// ---- changes ------------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PatchBody {
    owner_name: Option<String>,
    owner_email: Option<String>,
    #[serde(default, deserialize_with = "crate::http::extract::double_option")]
    owner_phone: Option<Option<String>>,
    company_name: Option<String>,
    #[serde(default, deserialize_with = "crate::http::extract::double_option")]
    company_vkn: Option<Option<String>>,
    max_devices: Option<u32>,
    monthly_token_limit: Option<u64>,
    #[serde(default, deserialize_with = "crate::http::extract::double_option")]
    gemini_api_key: Option<Option<String>>,
    #[serde(default, deserialize_with = "crate::http::extract::double_option")]
    telegram_bot_token: Option<Option<String>>,
    #[serde(default, deserialize_with = "crate::http::extract::double_option")]
    telegram_bot_username: Option<Option<String>>,
}

async fn patch_license(
    State(state): State<AppState>,
    admin: AdminPrincipal,
    context: RequestContext,
    Path(id): Path<String>,
    AppJson(body): AppJson<PatchBody>,
) -> AppResult<Json<Value>> {
    admin.require(Permission::Licenses, true)?;
    let id = license_id(&id)?;
    let current = read::get(&state.pool, id).await?.ok_or_else(not_found)?;
    let owner_changed = body.owner_name.is_some()
        || body.owner_email.is_some()
        || body.owner_phone.is_some()
        || body.company_name.is_some()
        || body.company_vkn.is_some();
    let owner = if owner_changed {
        Some(Owner {
            name: match &body.owner_name {
                Some(n) => person_name("ownerName", n)?,
                None => current.owner_name.clone(),
            },
            email: match &body.owner_email {
                Some(e) => owner_email(e)?,
                None => current.owner_email.clone(),
            },
            phone: match &body.owner_phone {
                Some(Some(p)) => Some(owner_phone(p)?),
                Some(None) => None,
                None => current.owner_phone.clone(),
            },
            company_name: match &body.company_name {
                Some(c) => contact::text("companyName", c, 2, 200)?,
                None => current.company_name.clone(),
            },
            company_vkn: match &body.company_vkn {
                Some(Some(v)) => Some(vkn(v)?),
                Some(None) => None,
                None => current.company_vkn.clone(),
            },
        })
    } else {
        None
    };
    let secrets = SecretUpdate {
        gemini_api_key: body
            .gemini_api_key
            .map(|k| k.as_deref().map(gemini_key).transpose())
            .transpose()?,
        telegram_bot_token: body
            .telegram_bot_token
            .map(|t| t.as_deref().map(bot_token).transpose())
            .transpose()?,
        telegram_bot_username: body
            .telegram_bot_username
            .map(|u| u.as_deref().map(bot_username).transpose())
            .transpose()?,
    };
    let (cursor, webhook) = state
        .licenses
        .update(
            id,
            owner,
            body.max_devices,
            body.monthly_token_limit,
            secrets,
            &context.metadata(admin.actor()),
        )
        .await?;
    let mut license = answer(&state, id, cursor).await?;
    if let Some(w) = webhook {
        license["webhookSetup"] = json!({"success": w.success, "webhookUrl": w.webhook_url});
    }
    Ok(ok(license))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RenewBody {
    duration_months: u32,
}

async fn renew_license(
    State(state): State<AppState>,
    admin: AdminPrincipal,
    context: RequestContext,
    Path(id): Path<String>,
    AppJson(body): AppJson<RenewBody>,
) -> AppResult<Json<Value>> {
    lifecycle(
        &state,
        &admin,
        &context,
        &id,
        LicenseCommand::Renew {
            months: body.duration_months,
            now: Utc::now(),
        },
    )
    .await
}

async fn lifecycle(
    state: &AppState,
    admin: &AdminPrincipal,
    context: &RequestContext,
    id: &str,
    command: LicenseCommand,
) -> AppResult<Json<Value>> {
    admin.require(Permission::Licenses, true)?;
    let id = license_id(id)?;
    let outcome = state
        .licenses
        .execute(id, command, &context.metadata(admin.actor()))
        .await?;
    Ok(ok(answer(state, id, outcome.cursor()).await?))
}

async fn suspend_license(
    State(state): State<AppState>,
    admin: AdminPrincipal,
    context: RequestContext,
    Path(id): Path<String>,
) -> AppResult<Json<Value>> {
    let now = Utc::now();
    lifecycle(
        &state,
        &admin,
        &context,
        &id,
        LicenseCommand::Suspend { now },
    )
    .await
}

async fn reactivate_license(
    State(state): State<AppState>,
    admin: AdminPrincipal,
    context: RequestContext,
    Path(id): Path<String>,
) -> AppResult<Json<Value>> {
    let now = Utc::now();
    lifecycle(
        &state,
        &admin,
        &context,
        &id,
        LicenseCommand::Reactivate { now },
    )
    .await
}

async fn revoke_license(
    State(state): State<AppState>,
    admin: AdminPrincipal,
    context: RequestContext,
    Path(id): Path<String>,
) -> AppResult<Json<Value>> {
    admin.require(Permission::Licenses, true)?;
    let id = license_id(&id)?;
    let outcome = state
        .licenses
        .revoke(id, &context.metadata(admin.actor()))
        .await?;
    Ok(ok(answer(&state, id, outcome.cursor()).await?))
}

async fn retry_webhook(
    State(state): State<AppState>,
    admin: AdminPrincipal,
    context: RequestContext,
    Path(id): Path<String>,
) -> AppResult<Json<Value>> {
    admin.require(Permission::Licenses, true)?;
    let id = license_id(&id)?;
    let license = state.licenses.load(id).await?;
    if !license.exists() {
        return Err(not_found());
    }
    if license.state() == aggregates::license::LicenseState::Revoked {
        return Err(license_error(aggregates::license::LicenseError::Revoked));
    }
    let (outcome, cursor) = state
        .licenses
        .setup_webhook(id, &context.metadata(admin.actor()))
        .await?;
    let license = answer(&state, id, cursor).await?;
    Ok(ok(json!({
        "license": license,
        "webhookSetup": {"success": outcome.success, "webhookUrl": outcome.webhook_url},
    })))
}

async fn resend_email(
    State(state): State<AppState>,
    admin: AdminPrincipal,
    context: RequestContext,
    Path(id): Path<String>,
) -> AppResult<Json<Value>> {
    admin.require(Permission::Licenses, true)?;
    let id = license_id(&id)?;
    if state.licenses.mailer().is_none() {
        return Err(AppError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "EMAIL_NOT_CONFIGURED",
            "E-posta gönderimi yapılandırılmamış (SMTP_URL).",
        ));
    }
    // One mail at a time, and not more than one a minute: the mail carries the key.
    let recent: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM license_mail_outbox WHERE license_id = $1
                          AND (sent_at IS NULL AND next_attempt_at < 'infinity'
                               OR sent_at > now() - interval '1 minute'))",
    )
    .bind(id)
    .fetch_one(&state.pool)
    .await?;
    if recent {
        return Err(AppError::new(
            StatusCode::CONFLICT,
            "EMAIL_RECENTLY_SENT",
            "Lisans e-postası az önce gönderildi ya da gönderilmek üzere; bir dakika sonra tekrar deneyin.",
        ));
    }
    let outcome = state
        .licenses
        .execute(
            id,
            LicenseCommand::RequestEmail { now: Utc::now() },
            &context.metadata(admin.actor()),
        )
        .await?;
    let mut email_sent = false;
    if let Some(cursor) = outcome.cursor() {
        state.wait_for(read::MAIL_NAME, cursor).await?;
        let sequence = i64::try_from(outcome.version).unwrap_or(i64::MAX);
        email_sent = super::mail::sent_within(&state.licenses, id, sequence, EMAIL_WAIT).await?;
    }
    Ok(ok(json!({
        "license": answer(&state, id, outcome.cursor()).await?,
        "emailSent": email_sent,
    })))
}
