//! The desktop's side of a license (SPEC §5, seed 002 §4) and the admin's device routes
//! (SPEC §4 "Devices", seed 001 "Cihaz Yönetimi").
//!
//! Verify is the hot path: the in-memory verify view ([`super::view`], ADR 0011) answers it,
//! falling back to one indexed query over the `licenses` read model (license by the key's
//! keyed digest, device by fingerprint, plan features); a write happens only for a new
//! device, changed details (events) or stale `lastActiveAt` (a throttled plain UPDATE, at
//! most once a minute per device and instance). A revoke, suspension or block is seen by the
//! next verify on the instance that made it, and on the others once their live feed has
//! read it (one poll of the log).
//!
//! Keys cannot be brute-forced: lookups count per client network
//! ([`VERIFY_FAILURES_PER_MINUTE`], taken back for a valid key) and a malformed key answers
//! exactly like an unknown one.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aggregates::admin::Permission;
use aggregates::license::{DeviceDetails, DeviceStatus, LicenseCommand, LicenseError};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Datelike, TimeZone, Utc};
use eventstore::Metadata;
use projections::licenses::{self as read, VerifyRow};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::view::Entry;
use super::{keys, license_error};
use crate::auth::AdminPrincipal;
use crate::error::{AppError, AppResult};
use crate::http::context::RequestContext;
use crate::http::extract::AppJson;
use crate::leads::contact;
use crate::ratelimit::{Attempt, KeyedLimiter};
use crate::state::AppState;

/// Key lookups a client network (IPv4 address, IPv6 /64) may make per minute, beyond those
/// for valid keys.
pub const VERIFY_FAILURES_PER_MINUTE: u32 = 20;
/// The same for a whole IPv6 /48 (one site's allocation, e.g. a free tunnel broker's): an
/// attacker holding one has 65 536 /64s, each with its own budget.
pub const VERIFY_FAILURES_PER_SITE_MINUTE: u32 = 100;
/// How long an admin's device change waits for a connected desktop to receive it.
const NOTIFY_WAIT: Duration = Duration::from_secs(2);
/// The message a pending device shows (seed 002 §4).
pub const PENDING_MESSAGE: &str =
    "Bu cihaz onay bekliyor. Admin onayladıktan sonra kullanabilirsiniz.";

/// The budget of key lookups per client network and, for IPv6, per /48 (per instance).
pub struct GuessLimiter {
    network: KeyedLimiter<IpAddr>,
    site: KeyedLimiter<IpAddr>,
}

/// A lookup counted by [`GuessLimiter::attempt`].
#[derive(Clone, Copy, Debug)]
pub struct Guess {
    network: (IpAddr, Attempt),
    site: Option<(IpAddr, Attempt)>,
}

impl Default for GuessLimiter {
    fn default() -> Self {
        let minute = Duration::from_secs(60);
        Self {
            network: KeyedLimiter::new(VERIFY_FAILURES_PER_MINUTE, minute),
            site: KeyedLimiter::new(VERIFY_FAILURES_PER_SITE_MINUTE, minute),
        }
    }
}

impl GuessLimiter {
    /// Counts a lookup from `network` (a [`crate::http::client_ip::rate_key`]); `Err`
    /// (seconds to wait) when the network or its /48 has used its budget.
    pub fn attempt(&self, network: IpAddr, now: Instant) -> Result<Guess, u64> {
        let counted = self.network.attempt(&network, now)?;
        let site = match network {
            IpAddr::V6(v6) => {
                let site = IpAddr::V6(std::net::Ipv6Addr::from(
                    u128::from(v6) & !((1u128 << 80) - 1),
                ));
                match self.site.attempt(&site, now) {
                    Ok(attempt) => Some((site, attempt)),
                    Err(retry_after) => {
                        self.network.refund(&network, counted);
                        return Err(retry_after);
                    }
                }
            }
            IpAddr::V4(_) => None,
        };
        Ok(Guess {
            network: (network, counted),
            site,
        })
    }

    /// Takes a lookup back (the key was valid).
    pub fn refund(&self, guess: Guess) {
        self.network.refund(&guess.network.0, guess.network.1);
        if let Some((site, attempt)) = guess.site {
            self.site.refund(&site, attempt);
        }
    }
}

pub fn desktop_router() -> Router<AppState> {
    Router::new()
        .route("/v1/licenses/verify", post(verify))
        .route("/v1/licenses/devices/release", post(release))
}

pub fn admin_router() -> Router<AppState> {
    Router::new()
        .route("/v1/admin/licenses/{id}/devices", get(list_devices))
        .route(
            "/v1/admin/licenses/{id}/devices/{device}",
            axum::routing::patch(patch_device),
        )
}

fn ok(data: Value) -> Json<Value> {
    Json(json!({"success": true, "data": data}))
}

// ---- desktop errors (checked in this order, SPEC §5) ------------------------------------

pub fn not_found() -> AppError {
    AppError::new(
        StatusCode::UNAUTHORIZED,
        "LICENSE_NOT_FOUND",
        "Geçersiz veya bulunamayan lisans anahtarı.",
    )
}

fn revoked() -> AppError {
    AppError::new(
        StatusCode::FORBIDDEN,
        "LICENSE_REVOKED",
        "Lisansınız iptal edilmiş. Bilgi için bizimle iletişime geçin.",
    )
}

fn suspended() -> AppError {
    AppError::new(
        StatusCode::FORBIDDEN,
        "LICENSE_SUSPENDED",
        "Lisansınız askıya alınmış. Bilgi için bizimle iletişime geçin.",
    )
}

fn expired(at: DateTime<Utc>) -> AppError {
    AppError::new(
        StatusCode::FORBIDDEN,
        "LICENSE_EXPIRED",
        "Lisansınız sona ermiş. Yenilemek için bizimle iletişime geçin.",
    )
    .with("expiredAt", crate::time::rfc3339(at))
}

pub fn blocked() -> AppError {
    AppError::new(
        StatusCode::FORBIDDEN,
        "DEVICE_BLOCKED",
        "Bu cihaz engellenmiş. Bilgi için bizimle iletişime geçin.",
    )
}

pub fn device_not_found() -> AppError {
    AppError::new(
        StatusCode::NOT_FOUND,
        "DEVICE_NOT_FOUND",
        "Cihaz bulunamadı.",
    )
}

/// License errors a desktop command can meet, in the desktop's vocabulary.
fn desktop_error(e: AppError) -> AppError {
    match e.code() {
        "LICENSE_REVOKED" => revoked(),
        "LICENSE_NOT_FOUND" => not_found(),
        _ => e,
    }
}

// ---- input --------------------------------------------------------------------------------

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// 64 hex characters, lower-cased.
pub fn fingerprint(field: &str, raw: &str) -> AppResult<String> {
    let value = raw.trim();
    if value.len() != 64 || !value.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(AppError::validation(
            field,
            format!("{field} 64 onaltılık (hex) karakter olmalı"),
        ));
    }
    Ok(value.to_ascii_lowercase())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct VerifyBody {
    fingerprint: Option<String>,
    device_name: Option<String>,
    os_type: Option<String>,
    os_version: Option<String>,
    app_version: Option<String>,
}

fn required(field: &str, value: Option<&str>, max: usize) -> AppResult<String> {
    match value {
        Some(v) => contact::text(field, v, 1, max),
        None => Err(AppError::validation(field, format!("{field} zorunludur"))),
    }
}

/// The body checked against itself and the headers: (fingerprint, details).
fn verify_input(
    headers: &HeaderMap,
    body: &VerifyBody,
    ip: IpAddr,
) -> AppResult<(String, DeviceDetails)> {
    let print = match body.fingerprint.as_deref() {
        Some(f) => fingerprint("fingerprint", f)?,
        None => {
            return Err(AppError::validation(
                "fingerprint",
                "fingerprint zorunludur",
            ));
        }
    };
    if let Some(h) = header(headers, "x-device-fingerprint")
        && fingerprint("X-Device-Fingerprint", h)? != print
    {
        return Err(AppError::validation(
            "fingerprint",
            "fingerprint X-Device-Fingerprint başlığıyla aynı olmalı",
        ));
    }
    let details = DeviceDetails {
        name: required("deviceName", body.device_name.as_deref(), 100)?,
        os_type: required("osType", body.os_type.as_deref(), 50)?,
        os_version: required("osVersion", body.os_version.as_deref(), 100)?,
        app_version: required("appVersion", body.app_version.as_deref(), 50)?,
        ip_address: Some(ip.to_string()),
    };
    if let Some(h) = header(headers, "x-app-version")
        && h != details.app_version
    {
        return Err(AppError::validation(
            "appVersion",
            "appVersion X-App-Version başlığıyla aynı olmalı",
        ));
    }
    Ok((print, details))
}

/// What a desktop's key and fingerprint found.
struct Found {
    /// The normalised key.
    key: String,
    entry: Arc<Entry>,
}

/// A device the license knows and has not released: a desktop that has been here before.
pub fn known_device(row: &VerifyRow) -> bool {
    row.device_id.is_some()
        && row
            .device_status
            .as_deref()
            .is_some_and(|s| s != "released")
}

/// The license and device behind the request's key (from the verify view, else the read
/// model), or `LICENSE_NOT_FOUND`. With `known_only`, a device the license does not know
/// (or released) is not found either.
///
/// Every lookup counts against the client's network before it is made, so a burst cannot
/// try more than [`VERIFY_FAILURES_PER_MINUTE`] keys, and is taken back when the key is
/// valid. A network over its limit is answered only for a device its license already knows
/// (the key and that device's 64-hex fingerprint, as hard to guess as a key); anything else
/// from it gets 429 whether or not the key exists, so the limit tells a guesser nothing.
/// While the view holds every known device, a limited network's lookups never reach the
/// database: a flood of guesses costs memory lookups only.
async fn lookup(
    state: &AppState,
    headers: &HeaderMap,
    fingerprint: &str,
    limiter_key: IpAddr,
    known_only: bool,
) -> AppResult<Found> {
    let limiter = &state.licenses.verify_guesses;
    let attempt = limiter.attempt(limiter_key, Instant::now());
    let key = header(headers, "x-license-key")
        .filter(|k| keys::looks_like_key(k))
        .map(keys::normalise_key);
    let view = &state.licenses.view;
    let found = match key {
        Some(key) => {
            let digest = state.licenses.key_digest(&key);
            let entry = match view.get(&digest, fingerprint) {
                Some(entry) => Some(entry),
                // Limited, and the view knows every device: nothing to look up.
                None if attempt.is_err() && view.is_following() => None,
                None => {
                    let ticket = view.ticket();
                    read::for_verify(&state.pool, &digest, fingerprint)
                        .await?
                        .map(|row| {
                            if known_device(&row) {
                                view.fill(ticket, &digest, fingerprint, row)
                            } else {
                                Arc::new(Entry::uncached(row))
                            }
                        })
                }
            };
            entry
                .filter(|e| !known_only || known_device(&e.row))
                .map(|entry| Found { key, entry })
        }
        None => None,
    };
    match (found, attempt) {
        (Some(found), Ok(attempt)) => {
            limiter.refund(attempt);
            Ok(found)
        }
        (Some(found), Err(_)) if known_device(&found.entry.row) => Ok(found),
        (_, Err(retry_after)) => Err(AppError::rate_limited(retry_after)),
        (None, Ok(_)) => Err(not_found()),
    }
}

/// Revoked, suspended, expired, in this order.
fn check_license(row: &VerifyRow, now: DateTime<Utc>) -> AppResult<()> {
    match row.state() {
        aggregates::license::LicenseState::Revoked => Err(revoked()),
        aggregates::license::LicenseState::Suspended => Err(suspended()),
        _ if row.expires_at <= now => Err(expired(row.expires_at)),
        _ => Ok(()),
    }
}

/// 00:00 UTC on the first of the next month.
pub fn reset_date(now: DateTime<Utc>) -> DateTime<Utc> {
    let (year, month) = if now.month() == 12 {
        (now.year() + 1, 1)
    } else {
        (now.year(), now.month() + 1)
    };
    Utc.with_ymd_and_hms(year, month, 1, 0, 0, 0)
        .single()
        .unwrap_or(now)
}

/// Whole days left, a started day counting as one.
pub fn days_remaining(expires_at: DateTime<Utc>, now: DateTime<Utc>) -> i64 {
    let seconds = (expires_at - now).num_seconds().max(0);
    (seconds + 86_399) / 86_400
}

/// The signed offline certificate of an approved device (ADR 0010, README "Signed offline
/// licenses"), issued at `now`; `None` for any other device.
fn certificate(state: &AppState, row: &VerifyRow, now: DateTime<Utc>) -> Option<String> {
    let device_id = row
        .device_id
        .filter(|_| row.device_status.as_deref() == Some("approved"))?;
    let certifier = &state.config.license_certifier;
    let subject = super::certificate::CertificateSubject {
        license_id: row.license_id,
        device_id: read::device_id_text(device_id),
        fingerprint: row.fingerprint.clone()?,
        package: row.package_type.clone(),
        features: row.features.clone().unwrap_or_default(),
        expires_at: row.expires_at,
    };
    Some(certifier.sign(&certifier.claims(subject, now)))
}

fn verify_answer(
    key: &str,
    row: &VerifyRow,
    certificate: Option<String>,
    now: DateTime<Utc>,
) -> Value {
    let status = row.device_status.as_deref().unwrap_or("pending");
    let approved = status == "approved";
    let mut device = json!({
        "id": row.device_id.map(read::device_id_text),
        "status": status,
        "isMaster": row.is_master.unwrap_or(false),
    });
    if !approved {
        device["message"] = PENDING_MESSAGE.into();
    }
    let (usage, features) = if approved {
        let limit = row.monthly_token_limit;
        let used = row.tokens_used_this_month;
        (
            json!({
                "tokensUsed": used,
                "tokensLimit": limit,
                "tokensRemaining": (limit - used).max(0),
                "resetDate": crate::time::rfc3339(reset_date(now)),
            }),
            json!({
                "documentAnalysis": row.has("documentAnalysis"),
                "telegramIntegration": row.has("telegramIntegration"),
                "multiDevice": row.has("multiDevice"),
                "prioritySupport": row.has("prioritySupport"),
            }),
        )
    } else {
        (Value::Null, Value::Null)
    };
    json!({
        "valid": true,
        "license": {
            "key": key,
            "ownerName": row.owner_name,
            "companyName": row.company_name,
            "packageType": row.package_type,
            "expiresAt": crate::time::rfc3339(row.expires_at),
            "daysRemaining": days_remaining(row.expires_at, now),
        },
        "device": device,
        "usage": usage,
        "features": features,
        // The signed offline certificate of an approved device; null otherwise.
        "certificate": certificate,
    })
}

fn desktop_metadata(context: &RequestContext, fingerprint: &str) -> Metadata {
    context.metadata(format!("device:{}", &fingerprint[..16]))
}

/// `POST /v1/licenses/verify`.
async fn verify(
    State(state): State<AppState>,
    context: RequestContext,
    headers: HeaderMap,
    AppJson(body): AppJson<VerifyBody>,
) -> AppResult<Response> {
    let (print, details) = verify_input(&headers, &body, context.ip)?;
    let limiter_key = crate::http::client_ip::rate_key(context.ip);
    let Found { key, mut entry } = lookup(&state, &headers, &print, limiter_key, false).await?;
    let now = Utc::now();
    check_license(&entry.row, now)?;
    let metadata = desktop_metadata(&context, &print);
    let row = &entry.row;
    match (row.device_id, row.device_status.as_deref()) {
        (_, Some("blocked")) => return Err(blocked()),
        (Some(device_id), Some("pending" | "approved")) => {
            // The IP is telemetry, recorded with the activity below: a desktop moving between
            // networks (or a key holder alternating addresses) must not write an event per
            // verify. It goes into the next event with the other details.
            let known = |field: &Option<String>, value: &str| field.as_deref() == Some(value);
            let unchanged = known(&row.device_name, &details.name)
                && known(&row.os_type, &details.os_type)
                && known(&row.os_version, &details.os_version)
                && known(&row.app_version, &details.app_version);
            let ip = details.ip_address.clone();
            if !unchanged {
                // Rare (an update, a new network): worth read-your-writes for the device list.
                let outcome = state
                    .licenses
                    .execute(
                        row.license_id,
                        LicenseCommand::UpdateDeviceDetails {
                            device_id,
                            details,
                            now,
                        },
                        &metadata,
                    )
                    .await
                    .map_err(desktop_error)?;
                if let Some(cursor) = outcome.cursor() {
                    state.license_written(row.license_id, cursor).await?;
                }
            }
            if entry.mark_active(now) {
                state
                    .licenses
                    .activity
                    .record(row.license_id, device_id, now, ip);
            }
        }
        // Unknown here, or released: registers (first device approved and master).
        _ => {
            let license_id = row.license_id;
            let outcome = state
                .licenses
                .execute(
                    license_id,
                    LicenseCommand::RegisterDevice {
                        device_id: Uuid::now_v7(),
                        fingerprint: print.clone(),
                        details,
                        now,
                    },
                    &metadata,
                )
                .await
                .map_err(desktop_error)?;
            match outcome.cursor() {
                Some(cursor) => state.license_written(license_id, cursor).await?,
                // A concurrent verify of this desktop registered it: wait for the license
                // stream's last event (the log's head may still be fenced below it).
                None => {
                    let stream = eventstore::CommandHandler::<aggregates::license::License>::stream(
                        &license_id.to_string(),
                    );
                    state.catch_up_with(read::NAME, &stream).await?;
                }
            }
            let view = &state.licenses.view;
            let key_digest = state.licenses.key_digest(&key);
            let ticket = view.ticket();
            let row = read::for_verify(&state.pool, &key_digest, &print)
                .await?
                .ok_or_else(not_found)?;
            entry = view.fill(ticket, &key_digest, &print, row);
            if let Some(device_id) = entry.row.device_id {
                // The license's own `lastActiveAt` too (the throttle is in the statement).
                entry.mark_active(now);
                read::touch_device(&state.pool, license_id, device_id, now).await?;
            }
        }
    }
    // Everything in the answer but the days left and the reset date is fixed for the
    // entry's life: the bytes (and the certificate in them) are made once, and again when
    // either would change, at most a day later.
    let body = entry.answer(now, || {
        let certificate = certificate(&state, &entry.row, now);
        let answer =
            json!({"success": true, "data": verify_answer(&key, &entry.row, certificate, now)});
        // Serialising a `Value` cannot fail.
        let body = serde_json::to_vec(&answer).unwrap_or_default();
        (body.into(), answer_changes(entry.row.expires_at, now))
    });
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// The next time after `now` at which `daysRemaining` or `resetDate` changes.
fn answer_changes(expires_at: DateTime<Utc>, now: DateTime<Utc>) -> DateTime<Utc> {
    let days = days_remaining(expires_at, now);
    let next_day = if days > 0 {
        expires_at - chrono::Duration::days(days - 1)
    } else {
        DateTime::<Utc>::MAX_UTC
    };
    // `next_day` is after `now` unless the clock went backwards; never cache for the past.
    next_day
        .min(reset_date(now))
        .max(now + chrono::Duration::seconds(1))
}

/// `POST /v1/licenses/devices/release`: the desktop gives its seat back (moving to a new
/// computer). Recorded as `released`, never deleted; the seat is free when this answers.
async fn release(
    State(state): State<AppState>,
    context: RequestContext,
    headers: HeaderMap,
) -> AppResult<Json<Value>> {
    let print = match header(&headers, "x-device-fingerprint") {
        Some(h) => fingerprint("X-Device-Fingerprint", h)?,
        None => {
            return Err(AppError::validation(
                "X-Device-Fingerprint",
                "X-Device-Fingerprint zorunludur",
            ));
        }
    };
    let limiter_key = crate::http::client_ip::rate_key(context.ip);
    // A device the license does not know answers like an unknown key: release must not
    // confirm a key without the device's fingerprint.
    let Found { entry, .. } = lookup(&state, &headers, &print, limiter_key, true).await?;
    let row = &entry.row;
    let device_id = row.device_id.ok_or_else(not_found)?;
    // A blocked device stays blocked: releasing would let it queue again as new.
    if row.device_status.as_deref() == Some("blocked") {
        return Err(blocked());
    }
    let outcome = state
        .licenses
        .execute(
            row.license_id,
            LicenseCommand::ReleaseDevice {
                device_id,
                now: Utc::now(),
            },
            &desktop_metadata(&context, &print),
        )
        .await
        .map_err(desktop_error)?;
    if let Some(cursor) = outcome.cursor() {
        state.license_written(row.license_id, cursor).await?;
    }
    Ok(ok(json!({
        "device": {"id": read::device_id_text(device_id), "status": "released", "isMaster": false},
    })))
}

// ---- admin --------------------------------------------------------------------------------

/// A device id with or without its `dev_` prefix.
pub fn parse_device_id(text: &str) -> Option<Uuid> {
    text.strip_prefix("dev_").unwrap_or(text).parse().ok()
}

async fn list_devices(
    State(state): State<AppState>,
    admin: AdminPrincipal,
    Path(id): Path<String>,
) -> AppResult<Json<Value>> {
    admin.require(Permission::Licenses, false)?;
    let not_found = || license_error(LicenseError::NotFound);
    let id: Uuid = id.parse().map_err(|_| not_found())?;
    let license = read::get(&state.pool, id).await?.ok_or_else(not_found)?;
    let devices = read::devices(&state.pool, id).await?;
    let count = |s: &str| devices.iter().filter(|d| d.status == s).count();
    Ok(ok(json!({
        "devices": devices.iter().map(read::DeviceRow::to_json).collect::<Vec<_>>(),
        "maxDevices": license.max_devices,
        "approvedCount": count("approved"),
        "pendingCount": count("pending"),
    })))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PatchDeviceBody {
    status: Option<String>,
    is_master: Option<bool>,
}

async fn patch_device(
    State(state): State<AppState>,
    admin: AdminPrincipal,
    context: RequestContext,
    Path((id, device)): Path<(String, String)>,
    AppJson(body): AppJson<PatchDeviceBody>,
) -> AppResult<Json<Value>> {
    admin.require(Permission::Licenses, true)?;
    let license_id: Uuid = id
        .parse()
        .map_err(|_| license_error(LicenseError::NotFound))?;
    let device_id = parse_device_id(&device).ok_or_else(device_not_found)?;
    let status = body
        .status
        .as_deref()
        .map(|s| match DeviceStatus::parse(s) {
            Some(s) if s != DeviceStatus::Released => Ok(s),
            _ => Err(AppError::validation(
                "status",
                "status approved, blocked veya pending olmalı",
            )),
        })
        .transpose()?;
    if read::device(&state.pool, device_id)
        .await?
        .is_none_or(|d| d.license_id != license_id)
    {
        return Err(device_not_found());
    }
    let outcome = state
        .licenses
        .execute(
            license_id,
            LicenseCommand::SetDevice {
                device_id,
                status,
                master: body.is_master,
                now: Utc::now(),
            },
            &context.metadata(admin.actor()),
        )
        .await?;
    if let Some(cursor) = outcome.cursor() {
        state.license_written(license_id, cursor).await?;
    }
    let row = read::device(&state.pool, device_id)
        .await?
        .ok_or_else(device_not_found)?;
    let notification_sent = match outcome.stored.first() {
        Some(first) => {
            state
                .live
                .devices
                .delivered(device_id, first.cursor, NOTIFY_WAIT)
                .await
        }
        None => false,
    };
    Ok(ok(json!({
        "device": row.to_json(),
        "notificationSent": notification_sent,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_resets_on_the_next_first_of_the_month() {
        let at = |y, m, d| Utc.with_ymd_and_hms(y, m, d, 13, 5, 0).unwrap();
        assert_eq!(
            reset_date(at(2026, 2, 5)),
            Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap()
        );
        assert_eq!(
            reset_date(at(2026, 12, 31)),
            Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0).unwrap()
        );
    }

    #[test]
    fn a_cached_answer_holds_until_the_days_left_or_the_reset_date_change() {
        let now = Utc.with_ymd_and_hms(2026, 3, 10, 12, 0, 0).unwrap();
        // 2 days and 6 hours left: "3 days" until 6 hours from now.
        let expires = now + chrono::Duration::hours(54);
        assert_eq!(days_remaining(expires, now), 3);
        let until = answer_changes(expires, now);
        assert_eq!(until, now + chrono::Duration::hours(6));
        assert_eq!(days_remaining(expires, until), 2);
        // The day count moves at the latest a day later; the reset date at the month's end.
        let until = answer_changes(now + chrono::Duration::days(400), now);
        assert_eq!(until, now + chrono::Duration::days(1));
        let late = Utc.with_ymd_and_hms(2026, 3, 31, 23, 0, 0).unwrap();
        let until = answer_changes(late + chrono::Duration::days(400), late);
        assert_eq!(until, Utc.with_ymd_and_hms(2026, 4, 1, 0, 0, 0).unwrap());
        // Expired: never in the past.
        assert!(answer_changes(now - chrono::Duration::days(1), now) > now);
    }

    #[test]
    fn an_ipv6_site_has_one_budget_across_its_networks() {
        let limiter = GuessLimiter::default();
        let now = Instant::now();
        let network = |n: u16| IpAddr::V6(std::net::Ipv6Addr::new(0x2001, 0xdb8, 7, n, 0, 0, 0, 0));
        // Five /64s of one /48, twenty guesses each: the /48's hundred.
        for n in 0..5 {
            for _ in 0..VERIFY_FAILURES_PER_MINUTE {
                assert!(limiter.attempt(network(n), now).is_ok());
            }
        }
        assert!(limiter.attempt(network(6), now).is_err());
        // A refunded (valid) lookup gives its place back to both.
        let other = IpAddr::V6(std::net::Ipv6Addr::new(0x2001, 0xdb8, 8, 0, 0, 0, 0, 0));
        let guess = limiter.attempt(other, now).unwrap();
        limiter.refund(guess);
        for _ in 0..VERIFY_FAILURES_PER_MINUTE {
            assert!(limiter.attempt(other, now).is_ok());
        }
        // IPv4 addresses count alone.
        let v4: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..VERIFY_FAILURES_PER_MINUTE {
            assert!(limiter.attempt(v4, now).is_ok());
        }
        assert!(limiter.attempt(v4, now).is_err());
    }

    #[test]
    fn fingerprints_are_64_hex_characters() {
        assert!(fingerprint("fingerprint", &"aB".repeat(32)).is_ok());
        assert!(fingerprint("fingerprint", &"g".repeat(64)).is_err());
        assert!(fingerprint("fingerprint", &"a".repeat(63)).is_err());
    }
}
