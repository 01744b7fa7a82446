//! HTTP handlers for leads: `POST /v1/leads` (landing) and `/v1/admin/leads/*`.

use std::collections::HashMap;
use std::time::Instant;

use aggregates::admin::Permission;
use aggregates::lead::{ActivityKind, LeadSource, LeadStatus};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Datelike, NaiveDate, Utc};
use projections::leads::{self as read, LeadFilter, Personal, SortBy};
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::{Value, json};
use subtle::ConstantTimeEq;
use uuid::Uuid;

use super::{Submission, contact};
use crate::auth::AdminPrincipal;
use crate::error::{AppError, AppResult};
use crate::http::context::RequestContext;
use crate::http::extract::AppJson;
use crate::state::AppState;

const SUCCESS_MESSAGE: &str = "Talebiniz alındı. En kısa sürede sizinle iletişime geçeceğiz.";

/// `POST /v1/leads`, with the landing page's CORS.
pub fn landing_router() -> Router<AppState> {
    Router::new().route("/v1/leads", post(create_lead))
}

/// `/v1/admin/leads/*`.
pub fn admin_router() -> Router<AppState> {
    Router::new()
        .route("/v1/admin/leads", get(list_leads))
        .route("/v1/admin/leads/board", get(get_board))
        .route("/v1/admin/leads/export.csv", get(export_leads))
        .route("/v1/admin/leads/{id}", get(get_lead).patch(patch_lead))
        .route("/v1/admin/leads/{id}/activities", post(add_activity))
        .route("/v1/admin/leads/{id}/erase", post(erase_lead))
}

fn ok(data: Value) -> Json<Value> {
    Json(json!({"success": true, "data": data}))
}

// ---------------------------------------------------------------------------------------
// Landing.

/// Reads and checks the landing form field by field, so the first bad field is named.
fn validate(form: &Value) -> AppResult<Submission> {
    let Some(object) = form.as_object() else {
        return Err(AppError::validation("", "Form bir JSON nesnesi olmalı"));
    };
    // Also in fields the form does not read: a body with U+0000 anywhere is refused whole.
    if let Some(field) = crate::http::extract::nul_path(form, String::new()) {
        return Err(crate::http::extract::nul_in(&field));
    }
    let field = |names: &[&str]| -> AppResult<Option<String>> {
        let Some((name, value)) = names.iter().find_map(|n| object.get(*n).map(|v| (*n, v))) else {
            return Ok(None);
        };
        match value {
            Value::Null => Ok(None),
            Value::String(s) => Ok(Some(s.clone())),
            _ => Err(AppError::validation(name, format!("{name} metin olmalı"))),
        }
    };
    let required = |name: &str| -> AppResult<String> {
        field(&[name])?
            .ok_or_else(|| AppError::validation(name, format!("{name} alanı zorunludur")))
    };
    let name = contact::text("name", &required("name")?, 2, 100)?;
    if !aggregates::text::has_letter(&name) {
        return Err(AppError::validation("name", "name en az bir harf içermeli"));
    }
    let email = contact::normalise_email(&required("email")?)?;
    let phone = contact::normalise_phone(&required("phone")?)?;
    let company = contact::optional_text("company", field(&["company"])?.as_deref(), 200)?;
    let message = contact::optional_multiline("message", field(&["message"])?.as_deref(), 5000)?;
    let source = match field(&["source"])?.as_deref() {
        None | Some("") => LeadSource::LandingPage,
        Some(s) => LeadSource::parse(s)
            .ok_or_else(|| AppError::validation("source", "Bilinmeyen kaynak"))?,
    };
    let utm_source = contact::optional_text(
        "utm_source",
        field(&["utm_source", "utmSource"])?.as_deref(),
        200,
    )?;
    let utm_campaign = contact::optional_text(
        "utm_campaign",
        field(&["utm_campaign", "utmCampaign"])?.as_deref(),
        200,
    )?;
    Ok(Submission {
        // Random, not time-ordered: the answer tells the submitter nothing but that it landed.
        id: Uuid::new_v4(),
        personal: Personal {
            name,
            email,
            phone,
            company,
            message,
            ip: None,
            user_agent: None,
        },
        source,
        utm_source,
        utm_campaign,
    })
}

fn api_key_ok(state: &AppState, headers: &HeaderMap) -> bool {
    let Some(given) = headers.get("x-api-key").map(|v| v.as_bytes()) else {
        return false;
    };
    // Compare with every key in constant time, without stopping at the first match.
    state
        .config
        .landing_api_keys
        .iter()
        .fold(false, |found, key| {
            found | bool::from(key.expose_secret().as_bytes().ct_eq(given))
        })
}

async fn create_lead(
    State(state): State<AppState>,
    context: RequestContext,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> AppResult<Response> {
    if !api_key_ok(&state, &headers) {
        return Err(AppError::new(
            StatusCode::UNAUTHORIZED,
            "INVALID_API_KEY",
            "Geçersiz veya eksik API anahtarı",
        ));
    }
    state
        .landing_limiter
        .check(
            &crate::http::client_ip::rate_key(context.ip),
            Instant::now(),
        )
        .map_err(AppError::rate_limited)?;
    let idempotency = headers
        .get("idempotency-key")
        .map(|v| {
            v.to_str().map(str::to_string).map_err(|_| {
                AppError::validation(
                    "Idempotency-Key",
                    "Idempotency-Key 1–200 görünür ASCII karakter olmalı",
                )
            })
        })
        .transpose()?;
    if let Some(key) = &idempotency {
        if key.is_empty() || key.len() > 200 || !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(AppError::validation(
                "Idempotency-Key",
                "Idempotency-Key 1–200 görünür ASCII karakter olmalı",
            ));
        }
        let sealer = state.leads.sealer();
        if let Some(replay) =
            crate::idempotency::begin(&state.pool, sealer, "landing", key, &body).await?
        {
            return Ok(replay);
        }
    }
    let result = submit(&state, &headers, &context, &body).await;
    if let Some(key) = &idempotency {
        crate::idempotency::finish(&state.pool, "landing", key, &result).await?;
    }
    let (status, value) = result?;
    Ok((status, Json(value)).into_response())
}

async fn submit(
    state: &AppState,
    headers: &HeaderMap,
    context: &RequestContext,
    body: &[u8],
) -> AppResult<(StatusCode, Value)> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !is_json {
        return Err(AppError::unsupported_media_type());
    }
    let form: Value =
        serde_json::from_slice(body).map_err(|e| AppError::invalid_json(e.to_string()))?;
    let mut submission = validate(&form)?;
    submission.personal.ip = Some(context.ip.to_string());
    submission.personal.user_agent = context.user_agent.clone();
    let submitted = state
        .leads
        .submit(submission, &context.anonymous_metadata("landing"))
        .await?;
    // Every submission answers the same way, with its own id: the form must not reveal
    // whether an e-mail or phone is already known, nor anything about that lead.
    Ok((
        StatusCode::CREATED,
        json!({"success": true, "data": {"id": submitted.submission_id, "message": SUCCESS_MESSAGE}}),
    ))
}

// ---------------------------------------------------------------------------------------
// Admin.

fn parse_time(field: &str, text: &str) -> AppResult<DateTime<Utc>> {
    let invalid = || {
        AppError::validation(
            field,
            format!("{field} bir tarih olmalı (RFC 3339 veya YYYY-MM-DD, 1970–9999 yılları)"),
        )
    };
    let parsed = match DateTime::parse_from_rfc3339(text) {
        Ok(t) => t.with_timezone(&Utc),
        Err(_) => NaiveDate::parse_from_str(text, "%Y-%m-%d")
            .ok()
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .ok_or_else(invalid)?
            .and_utc(),
    };
    // Postgres and JavaScript both reach far, but not as far as chrono: keep to a range
    // every reader of the value can hold.
    if !(1970..=9999).contains(&parsed.year()) {
        return Err(invalid());
    }
    Ok(parsed)
}

fn filter_from(q: &HashMap<String, String>) -> AppResult<LeadFilter> {
    let get = |k: &str| q.get(k).map(|s| s.trim()).filter(|s| !s.is_empty());
    Ok(LeadFilter {
        status: get("status")
            .map(|s| {
                LeadStatus::parse(s)
                    .ok_or_else(|| AppError::validation("status", "Bilinmeyen durum"))
            })
            .transpose()?,
        search: get("search").map(str::to_string),
        assigned_to: get("assignedTo").map(str::to_lowercase),
        source: get("source").map(str::to_string),
        from: get("from").map(|t| parse_time("from", t)).transpose()?,
        to: get("to")
            .map(|t| {
                // A bare date as `to` includes that whole day.
                let end = parse_time("to", t)?;
                Ok::<_, AppError>(if t.len() == 10 {
                    end + chrono::Duration::days(1) - chrono::Duration::milliseconds(1)
                } else {
                    end
                })
            })
            .transpose()?,
    })
}

async fn list_leads(
    State(state): State<AppState>,
    admin: AdminPrincipal,
    Query(q): Query<HashMap<String, String>>,
) -> AppResult<Json<Value>> {
    admin.require(Permission::Leads, false)?;
    let filter = filter_from(&q)?;
    let (page, limit) = crate::http::extract::page_params(&q)?;
    let sort = match q.get("sortBy") {
        None => SortBy::CreatedAt,
        Some(s) => SortBy::parse(s)
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
    let (rows, total) = read::list(&state.pool, &filter, sort, descending, page, limit).await?;
    Ok(ok(json!({
        "leads": rows.iter().map(|r| r.to_json()).collect::<Vec<_>>(),
        "pagination": {"page": page, "limit": limit, "total": total, "totalPages": (total + limit - 1) / limit},
    })))
}

async fn get_board(State(state): State<AppState>, admin: AdminPrincipal) -> AppResult<Json<Value>> {
    admin.require(Permission::Leads, false)?;
    let columns = read::board(&state.pool, 50).await?;
    Ok(ok(json!({
        "columns": columns.iter().map(|(status, count, cards)| json!({
            "status": status.as_str(),
            "count": count,
            "cards": cards.iter().map(|r| r.to_json()).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })))
}

async fn export_leads(
    State(state): State<AppState>,
    admin: AdminPrincipal,
    Query(q): Query<HashMap<String, String>>,
) -> AppResult<Response> {
    admin.require(Permission::Leads, false)?;
    let delimiter = match q.get("delimiter") {
        None => super::csv::Delimiter::Comma,
        Some(text) => super::csv::Delimiter::parse(text).ok_or_else(|| {
            AppError::validation("delimiter", "delimiter comma veya semicolon olmalı")
        })?,
    };
    let rows = read::all(&state.pool, &filter_from(&q)?).await?;
    let body = super::csv::render(&rows, delimiter);
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    headers.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static("attachment; filename=\"leads.csv\""),
    );
    Ok(response)
}

fn lead_id(text: &str) -> AppResult<Uuid> {
    text.parse()
        .map_err(|_| super::lead_error(aggregates::lead::LeadError::NotFound))
}

/// The lead with its history, as `GET /v1/admin/leads/:id` answers.
pub async fn lead_detail(state: &AppState, id: Uuid) -> AppResult<Value> {
    let row = read::get(&state.pool, id)
        .await?
        .ok_or_else(|| super::lead_error(aggregates::lead::LeadError::NotFound))?;
    let history = read::history(&state.pool, id).await?;
    let mut value = row.to_json();
    value["history"] = history.iter().map(|h| h.to_json()).collect();
    Ok(value)
}

async fn get_lead(
    State(state): State<AppState>,
    admin: AdminPrincipal,
    Path(id): Path<String>,
) -> AppResult<Json<Value>> {
    admin.require(Permission::Leads, false)?;
    Ok(ok(lead_detail(&state, lead_id(&id)?).await?))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct LeadPatch {
    status: Option<String>,
    #[serde(default, deserialize_with = "crate::http::extract::double_option")]
    assigned_to: Option<Option<String>>,
    #[serde(default, deserialize_with = "crate::http::extract::double_option")]
    notes: Option<Option<String>>,
}

async fn patch_lead(
    State(state): State<AppState>,
    admin: AdminPrincipal,
    context: RequestContext,
    Path(id): Path<String>,
    AppJson(patch): AppJson<LeadPatch>,
) -> AppResult<Json<Value>> {
    admin.require(Permission::Leads, true)?;
    let id = lead_id(&id)?;
    let status = patch
        .status
        .as_deref()
        .map(|s| {
            LeadStatus::parse(s).ok_or_else(|| AppError::validation("status", "Bilinmeyen durum"))
        })
        .transpose()?;
    let assignee = match patch.assigned_to {
        Some(Some(email)) => {
            let email = contact::normalise_email(&email)
                .map_err(|_| AppError::validation("assignedTo", "Geçersiz e-posta"))?;
            let known: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM admin_users WHERE email = $1 AND active)",
            )
            .bind(&email)
            .fetch_one(&state.pool)
            .await?;
            if !known {
                return Err(AppError::validation(
                    "assignedTo",
                    "Bu e-posta ile etkin bir yönetici yok",
                ));
            }
            Some(Some(email))
        }
        other => other,
    };
    // Empty notes clear them, like `null`.
    let notes = match patch.notes {
        Some(Some(text)) => {
            let text = contact::multiline("notes", &text, 0, 10_000)?;
            Some((!text.is_empty()).then_some(text))
        }
        other => other,
    };
    let cursor = state
        .leads
        .update(
            id,
            status,
            assignee,
            notes,
            &context.metadata(admin.actor()),
        )
        .await?;
    if let Some(cursor) = cursor {
        state.wait_for(read::NAME, cursor).await?;
    }
    Ok(ok(lead_detail(&state, id).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ActivityForm {
    #[serde(rename = "type")]
    kind: String,
    note: String,
    at: Option<String>,
}

async fn add_activity(
    State(state): State<AppState>,
    admin: AdminPrincipal,
    context: RequestContext,
    Path(id): Path<String>,
    AppJson(form): AppJson<ActivityForm>,
) -> AppResult<(StatusCode, Json<Value>)> {
    admin.require(Permission::Leads, true)?;
    let id = lead_id(&id)?;
    let kind = ActivityKind::parse(&form.kind).ok_or_else(|| {
        AppError::validation("type", "type CALL, MEETING, EMAIL veya COMMENT olmalı")
    })?;
    let note = contact::multiline("note", &form.note, 1, 5000)?;
    let at = form
        .at
        .as_deref()
        .map(|t| parse_time("at", t))
        .transpose()?
        .unwrap_or_else(Utc::now);
    let cursor = state
        .leads
        .log_activity(id, kind, &note, at, &context.metadata(admin.actor()))
        .await?;
    if let Some(cursor) = cursor {
        state.wait_for(read::NAME, cursor).await?;
    }
    Ok((StatusCode::CREATED, ok(lead_detail(&state, id).await?)))
}

async fn erase_lead(
    State(state): State<AppState>,
    admin: AdminPrincipal,
    context: RequestContext,
    Path(id): Path<String>,
) -> AppResult<Json<Value>> {
    admin.require(Permission::Leads, true)?;
    let id = lead_id(&id)?;
    let cursor = state
        .leads
        .erase(id, &context.metadata(admin.actor()))
        .await?;
    if let Some(cursor) = cursor {
        state.wait_for(read::NAME, cursor).await?;
    }
    Ok(ok(lead_detail(&state, id).await?))
}
