//! From stored events to what the panels receive. The feed and the `since` replay both map
//! with [`items`], so a replayed message is the message that was pushed live (with data as
//! the read model has it now).

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use aggregates::admin::{self, AdminEvent, Permission};
use aggregates::lead::LeadEvent;
use aggregates::license::LicenseEvent;
use axum::extract::ws::Utf8Bytes;
use eventstore::{Cursor, StoredEvent};
use projections::leads as read;
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::error::AppError;
use crate::state::AppState;
use crate::time::rfc3339;

/// The stream type of leads (`aggregates::lead::Lead::TYPE`).
const LEAD: &str = "lead";

/// What goes through the feed's channel.
#[derive(Clone, Debug)]
pub enum FeedItem {
    /// For every socket whose admin holds the message's permission.
    Message(LiveMessage),
    /// This admin's account changed (role, permissions, deactivation, password): their
    /// sockets re-check the token now rather than at the next periodic check. Never sent.
    AdminChanged(Uuid),
    /// For the desktops of one license (`/ws/device`); admin sockets skip it.
    Device(DeviceMessage),
}

/// A notice to the desktop sockets of `license_id`: all of them, or only `device_id`'s.
#[derive(Clone, Debug)]
pub struct DeviceMessage {
    pub cursor: Cursor,
    pub license_id: Uuid,
    pub device_id: Option<Uuid>,
    pub text: Utf8Bytes,
    /// After delivering it, the socket closes with this (code, reason): the device lost
    /// its right to listen (blocked, released, license revoked).
    pub ends: Option<(u16, &'static str)>,
}

/// One message for the panels, serialised once for all sockets (cloning is a reference
/// count).
#[derive(Clone, Debug)]
pub struct LiveMessage {
    pub cursor: Cursor,
    /// Admins holding any of these receive it.
    pub permission: &'static [Permission],
    pub text: Utf8Bytes,
}

/// The message types this gateway pushes so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Kind {
    NewLead,
    LeadUpdated,
    LeadConverted,
    LicenseCreated,
    LicenseUpdated,
    NewDevicePending,
    DeviceStatusChanged,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::NewLead => "NEW_LEAD",
            Kind::LeadUpdated => "LEAD_UPDATED",
            Kind::LeadConverted => "LEAD_CONVERTED",
            Kind::LicenseCreated => "LICENSE_CREATED",
            Kind::LicenseUpdated => "LICENSE_UPDATED",
            Kind::NewDevicePending => "NEW_DEVICE_PENDING",
            Kind::DeviceStatusChanged => "DEVICE_STATUS_CHANGED",
        }
    }

    /// What an admin needs to receive it: any one of these. A conversion is news for the
    /// sales side and for the license desk alike.
    fn permission(self) -> &'static [Permission] {
        match self {
            Kind::NewLead | Kind::LeadUpdated => &[Permission::Leads],
            Kind::LeadConverted => &[Permission::Leads, Permission::Licenses],
            Kind::LicenseCreated
            | Kind::LicenseUpdated
            | Kind::NewDevicePending
            | Kind::DeviceStatusChanged => &[Permission::Licenses],
        }
    }
}

/// What one event means for the feed.
enum Meaning {
    Lead {
        id: Uuid,
        kind: Kind,
    },
    /// A license, pushed as `GET /v1/admin/licenses/:id` answers.
    License {
        id: Uuid,
        kind: Kind,
    },
    AdminChanged(Uuid),
    /// A device of a license: to the admins (`NEW_DEVICE_PENDING` or
    /// `DEVICE_STATUS_CHANGED`) and, for a status change, to that desktop.
    Device {
        license: Uuid,
        device: Uuid,
        kind: Kind,
    },
    /// The license changed in a way its desktops care about (`LICENSE_UPDATED`).
    LicenseToDesktops(Uuid),
}

impl Meaning {
    /// The read model that must include the event before it is pushed: lead data is read
    /// from `leads`, and a socket re-checks its admin against `admins`.
    fn projection(&self) -> &'static str {
        match self {
            Meaning::Lead { .. } => read::NAME,
            Meaning::License { .. } | Meaning::Device { .. } | Meaning::LicenseToDesktops(_) => {
                projections::licenses::NAME
            }
            Meaning::AdminChanged(_) => projections::admins::NAME,
        }
    }
}

/// The feed's items for `events`, in their order. Waits until each read model involved has
/// processed the batch's last event for it, then reads each lead once per batch and shape.
pub async fn items(state: &AppState, events: &[StoredEvent]) -> Result<Vec<FeedItem>, AppError> {
    let meanings: Vec<(&StoredEvent, Meaning)> = events
        .iter()
        .flat_map(|event| meaning(event).into_iter().map(move |m| (event, m)))
        .collect();
    let mut waits: HashMap<&'static str, Cursor> = HashMap::new();
    for (event, meaning) in &meanings {
        waits.insert(meaning.projection(), event.cursor);
    }
    for (projection, cursor) in waits {
        state.wait_for(projection, cursor).await?;
    }
    // NEW_LEAD carries the list row (seed 000), the others the admin GET shape; a lead
    // changed twice in one batch reads the same either time.
    let mut leads: HashMap<(Uuid, bool), Option<Value>> = HashMap::new();
    let new_leads: Vec<Uuid> = meanings
        .iter()
        .filter_map(|(_, m)| match m {
            Meaning::Lead {
                id,
                kind: Kind::NewLead,
            } => Some(*id),
            _ => None,
        })
        .collect();
    if !new_leads.is_empty() {
        // One query for all list rows of the batch; ids it does not return stay unread and
        // are looked up (and reported missing) one by one below.
        for row in read::get_many(&state.pool, &new_leads).await? {
            leads.insert((row.id, false), Some(row.to_json()));
        }
    }
    let mut items = Vec::with_capacity(meanings.len());
    for (event, meaning) in meanings {
        let (id, kind) = match meaning {
            Meaning::AdminChanged(id) => {
                items.push(FeedItem::AdminChanged(id));
                continue;
            }
            Meaning::Device {
                license,
                device,
                kind,
            } => {
                items.extend(device_items(state, event, license, device, kind).await?);
                continue;
            }
            Meaning::LicenseToDesktops(id) => {
                if let Some(row) = projections::licenses::get(&state.pool, id).await? {
                    let now = chrono::Utc::now();
                    let ends = (row.status(now) == "revoked")
                        .then_some((super::close::FORBIDDEN, "LICENSE_REVOKED"));
                    let data = json!({"license": {
                        "status": row.status(now),
                        "expiresAt": rfc3339(row.expires_at),
                        "daysRemaining": crate::licenses::devices::days_remaining(row.expires_at, now),
                        "packageType": row.package_type,
                    }});
                    items.push(FeedItem::Device(DeviceMessage {
                        cursor: event.cursor,
                        license_id: id,
                        device_id: None,
                        text: frame(Kind::LicenseUpdated, event, data).into(),
                        ends,
                    }));
                }
                continue;
            }
            Meaning::License { id, kind } => {
                match crate::licenses::license_detail(state, id).await {
                    Ok(data) => items.push(FeedItem::Message(message(kind, event, data))),
                    Err(e) if e.status() == axum::http::StatusCode::NOT_FOUND => {
                        tracing::error!(license.id = %id, "license missing from the read model");
                        metrics::counter!("live_feed_missing_licenses_total").increment(1);
                    }
                    Err(e) => return Err(e),
                }
                continue;
            }
            Meaning::Lead { id, kind } => (id, kind),
        };
        let detail = kind != Kind::NewLead;
        let data = match leads.entry((id, detail)) {
            Entry::Occupied(known) => known.get().clone(),
            Entry::Vacant(slot) => slot.insert(lead_json(state, id, detail).await?).clone(),
        };
        let Some(data) = data else {
            // The read model has processed the event but has no such lead: a bug or a
            // damaged read model. The panel is told, so it can reload rather than miss it.
            tracing::error!(
                lead.id = %id,
                event.cursor = %event.cursor,
                "lead missing from the read model; pushing an ERROR instead"
            );
            metrics::counter!("live_feed_missing_leads_total").increment(1);
            items.push(FeedItem::Message(missing_lead(kind, event, id)));
            continue;
        };
        items.push(FeedItem::Message(message(kind, event, data)));
    }
    Ok(items)
}

/// Which events are pushed, and as what. Other aggregates (and events that cannot be
/// decoded, which the projections refuse loudly anyway) push nothing.
fn meaning(event: &StoredEvent) -> Vec<Meaning> {
    meanings(event).unwrap_or_default()
}

fn meanings(event: &StoredEvent) -> Option<Vec<Meaning>> {
    let id: Uuid = event.stream.aggregate_id.parse().ok()?;
    let one = |m: Meaning| Some(vec![m]);
    match event.stream.aggregate_type.as_str() {
        LEAD => {
            let kind = match LeadEvent::deserialize(&event.payload).ok()? {
                LeadEvent::LeadCreated { .. } | LeadEvent::LeadResubmitted { .. } => Kind::NewLead,
                LeadEvent::LeadStatusChanged { .. }
                | LeadEvent::LeadAssigned { .. }
                | LeadEvent::LeadNotesSet { .. }
                | LeadEvent::LeadActivityLogged { .. }
                | LeadEvent::LeadErased => Kind::LeadUpdated,
                LeadEvent::LeadConverted { .. } => Kind::LeadConverted,
            };
            one(Meaning::Lead { id, kind })
        }
        aggregates::license::AGGREGATE_TYPE => {
            let device = |device: Uuid, kind: Kind| Meaning::Device {
                license: id,
                device,
                kind,
            };
            let license = |kind: Kind| Meaning::License { id, kind };
            Some(match LicenseEvent::deserialize(&event.payload).ok()? {
                LicenseEvent::LicenseCreated { .. } => vec![license(Kind::LicenseCreated)],
                LicenseEvent::DeviceRegistered {
                    device_id, status, ..
                } => match status {
                    aggregates::license::DeviceStatus::Pending => {
                        vec![device(device_id, Kind::NewDevicePending)]
                    }
                    _ => vec![device(device_id, Kind::DeviceStatusChanged)],
                },
                LicenseEvent::DeviceStatusChanged { device_id, .. } => {
                    vec![device(device_id, Kind::DeviceStatusChanged)]
                }
                LicenseEvent::DeviceMasterMoved { from, to, .. } => from
                    .into_iter()
                    .chain(to)
                    .map(|d| device(d, Kind::DeviceStatusChanged))
                    .collect(),
                // Telemetry-like details are shown on the device list, not pushed.
                LicenseEvent::DeviceDetailsUpdated { .. } => vec![],
                LicenseEvent::LicenseUpdated { .. }
                | LicenseEvent::LicenseRenewed { .. }
                | LicenseEvent::LicenseSuspended { .. }
                | LicenseEvent::LicenseReactivated { .. }
                | LicenseEvent::LicenseRevoked { .. } => vec![
                    license(Kind::LicenseUpdated),
                    Meaning::LicenseToDesktops(id),
                ],
                LicenseEvent::LicenseWebhookConfigured { .. }
                | LicenseEvent::LicenseEmailRequested { .. }
                | LicenseEvent::LicenseEmailSent { .. } => vec![license(Kind::LicenseUpdated)],
            })
        }
        admin::AGGREGATE_TYPE => match AdminEvent::deserialize(&event.payload).ok()? {
            AdminEvent::AdminRoleChanged { .. }
            | AdminEvent::AdminDeactivated { .. }
            | AdminEvent::AdminReactivated { .. }
            | AdminEvent::AdminPasswordChanged { .. } => one(Meaning::AdminChanged(id)),
            AdminEvent::AdminCreated { .. }
            | AdminEvent::AdminRenamed { .. }
            | AdminEvent::AdminLoggedIn { .. } => None,
        },
        _ => None,
    }
}

/// The lead as the list shows it, or with `detail` as `GET /v1/admin/leads/:id` answers;
/// `None` if the read model does not have it.
async fn lead_json(state: &AppState, id: Uuid, detail: bool) -> Result<Option<Value>, AppError> {
    if !detail {
        return Ok(read::get(&state.pool, id).await?.map(|row| row.to_json()));
    }
    match crate::leads::lead_detail(state, id).await {
        Ok(value) => Ok(Some(value)),
        Err(e) if e.status() == axum::http::StatusCode::NOT_FOUND => Ok(None),
        Err(e) => Err(e),
    }
}

/// `ERROR` with `LEAD_MISSING` in place of the message `kind` that could not be built.
fn missing_lead(kind: Kind, event: &StoredEvent, id: Uuid) -> LiveMessage {
    let text = json!({
        "type": "ERROR",
        "timestamp": rfc3339(event.recorded_at),
        "cursor": event.cursor,
        "data": {
            "code": "LEAD_MISSING",
            "message": "The lead of this event is missing from the read model; reload it.",
            "leadId": id,
            "for": kind.as_str(),
        },
    })
    .to_string();
    LiveMessage {
        cursor: event.cursor,
        permission: kind.permission(),
        text: text.into(),
    }
}

/// The admin message and the desktop notice of a device event.
async fn device_items(
    state: &AppState,
    event: &StoredEvent,
    license: Uuid,
    device: Uuid,
    kind: Kind,
) -> Result<Vec<FeedItem>, AppError> {
    let Some(row) = projections::licenses::device(&state.pool, device).await? else {
        tracing::error!(device.id = %device, "device missing from the read model");
        metrics::counter!("live_feed_missing_devices_total").increment(1);
        return Ok(vec![]);
    };
    let data = if kind == Kind::NewDevicePending {
        let Some(owner) = projections::licenses::get(&state.pool, license).await? else {
            return Ok(vec![]);
        };
        json!({
            "license": {"id": license, "key": state.licenses.open(&owner.key_sealed)?, "ownerName": owner.owner_name},
            "device": {"id": projections::licenses::device_id_text(device), "name": row.device_name, "os": row.os_type},
        })
    } else {
        row.to_json()
    };
    let mut items = vec![FeedItem::Message(message(kind, event, data))];
    if kind == Kind::DeviceStatusChanged {
        let notice = json!({"device": {
            "id": projections::licenses::device_id_text(device),
            "status": row.status,
            "isMaster": row.is_master,
        }});
        let ends = match row.status.as_str() {
            "blocked" => Some((super::close::FORBIDDEN, "DEVICE_BLOCKED")),
            "released" => Some((super::close::UNAUTHORIZED, "LICENSE_NOT_FOUND")),
            _ => None,
        };
        items.push(FeedItem::Device(DeviceMessage {
            cursor: event.cursor,
            license_id: license,
            device_id: Some(device),
            text: frame(kind, event, notice).into(),
            ends,
        }));
    }
    Ok(items)
}

fn frame(kind: Kind, event: &StoredEvent, data: Value) -> String {
    json!({
        "type": kind.as_str(),
        "timestamp": rfc3339(event.recorded_at),
        "cursor": event.cursor,
        "data": data,
    })
    .to_string()
}

fn message(kind: Kind, event: &StoredEvent, data: Value) -> LiveMessage {
    let text = frame(kind, event, data);
    LiveMessage {
        cursor: event.cursor,
        permission: kind.permission(),
        text: text.into(),
    }
}
