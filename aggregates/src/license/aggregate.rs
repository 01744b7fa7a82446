//! The license's decisions. State holds only what the rules need.

use chrono::{DateTime, Utc};
use cqrs_es::Aggregate;
use cqrs_es::event_sink::EventSink;
use serde::{Deserialize, Serialize};

/// Devices that may wait for approval at once, per license.
pub const MAX_PENDING_DEVICES: usize = 10;

use super::{
    DeviceStatus, LicenseCommand, LicenseError, LicenseEvent, LicenseState, MAX_DEVICES,
    MAX_DURATION_MONTHS, MAX_TOKEN_LIMIT, extended,
};
use uuid::Uuid;

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct License {
    created: bool,
    state: LicenseState,
    expires_at: Option<DateTime<Utc>>,
    has_telegram: bool,
    lead_id: Option<uuid::Uuid>,
    max_devices: u32,
    /// Every device the license ever saw, in order of registration.
    devices: Vec<Device>,
    /// Whether a new device may take a free seat by itself: on a license that never had a
    /// device, or after the desktop released its own seat (moving to a new computer). Not
    /// after an admin blocked or set back the only approved device — a new fingerprint must
    /// not undo that.
    #[serde(default)]
    seat_released_by_device: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Device {
    id: Uuid,
    fingerprint: String,
    status: DeviceStatus,
    master: bool,
}

impl License {
    pub fn exists(&self) -> bool {
        self.created
    }

    pub fn state(&self) -> LicenseState {
        self.state
    }

    pub fn lead_id(&self) -> Option<uuid::Uuid> {
        self.lead_id
    }

    pub fn has_telegram(&self) -> bool {
        self.has_telegram
    }

    /// Approved devices: the seats taken.
    pub fn approved_devices(&self) -> usize {
        self.devices
            .iter()
            .filter(|d| d.status == DeviceStatus::Approved)
            .count()
    }

    /// The device holding `fingerprint`, released ones included: (id, status, master).
    pub fn device_by_fingerprint(&self, fingerprint: &str) -> Option<(Uuid, DeviceStatus, bool)> {
        self.devices
            .iter()
            .find(|d| d.fingerprint == fingerprint)
            .map(|d| (d.id, d.status, d.master))
    }

    fn device(&self, id: Uuid) -> Result<&Device, LicenseError> {
        self.devices
            .iter()
            .find(|d| d.id == id)
            .ok_or(LicenseError::DeviceNotFound)
    }

    fn master(&self) -> Option<Uuid> {
        self.devices.iter().find(|d| d.master).map(|d| d.id)
    }

    /// The master after `leaving` stops being approved: the earliest other approved device.
    fn successor(&self, leaving: Uuid) -> Option<Uuid> {
        self.devices
            .iter()
            .find(|d| d.id != leaving && d.status == DeviceStatus::Approved)
            .map(|d| d.id)
    }

    fn decide_device(&self, command: LicenseCommand) -> Result<Vec<LicenseEvent>, LicenseError> {
        use LicenseCommand as C;
        use LicenseEvent as E;
        Ok(match command {
            C::RegisterDevice {
                device_id,
                fingerprint,
                details,
                now,
            } => {
                let known = self.devices.iter().find(|d| d.fingerprint == fingerprint);
                if known.is_some_and(|d| d.status != DeviceStatus::Released) {
                    // Two first verifies of one desktop: the second finds it registered.
                    return Ok(vec![]);
                }
                let first = self.approved_devices() == 0
                    && (self.devices.is_empty() || self.seat_released_by_device);
                // A key holder cannot flood the panels (and the stream) with new devices.
                let pending = self
                    .devices
                    .iter()
                    .filter(|d| d.status == DeviceStatus::Pending)
                    .count();
                if !first && pending >= MAX_PENDING_DEVICES {
                    return Err(LicenseError::TooManyPendingDevices);
                }
                vec![E::DeviceRegistered {
                    device_id: known.map_or(device_id, |d| d.id),
                    fingerprint,
                    details,
                    status: if first {
                        DeviceStatus::Approved
                    } else {
                        DeviceStatus::Pending
                    },
                    master: first,
                    at: now,
                }]
            }
            C::UpdateDeviceDetails {
                device_id,
                details,
                now,
            } => {
                self.device(device_id)?;
                vec![E::DeviceDetailsUpdated {
                    device_id,
                    details,
                    at: now,
                }]
            }
            C::ReleaseDevice { device_id, now } => {
                let device = self.device(device_id)?;
                match device.status {
                    DeviceStatus::Released => return Ok(vec![]),
                    DeviceStatus::Blocked => return Err(LicenseError::DeviceBlocked),
                    _ => {}
                }
                let mut events = vec![E::DeviceStatusChanged {
                    device_id,
                    status: DeviceStatus::Released,
                    at: now,
                }];
                if device.master {
                    events.push(E::DeviceMasterMoved {
                        from: Some(device_id),
                        to: self.successor(device_id),
                        at: now,
                    });
                }
                events
            }
            C::SetDevice {
                device_id,
                status,
                master,
                now,
            } => {
                let device = self.device(device_id)?;
                let new_status = status.unwrap_or(device.status);
                let mut events = Vec::new();
                if new_status != device.status {
                    if new_status == DeviceStatus::Approved
                        && self.approved_devices() >= self.max_devices as usize
                    {
                        return Err(LicenseError::DeviceLimitReached);
                    }
                    events.push(E::DeviceStatusChanged {
                        device_id,
                        status: new_status,
                        at: now,
                    });
                }
                let approved = new_status == DeviceStatus::Approved;
                match master {
                    Some(true) if !approved => return Err(LicenseError::MasterNotApproved),
                    Some(false) if device.master && approved => {
                        return Err(LicenseError::MasterRequired);
                    }
                    _ => {}
                }
                let current = self.master();
                let new_master = if device.master && !approved {
                    self.successor(device_id)
                } else if master == Some(true) || (approved && current.is_none()) {
                    Some(device_id)
                } else {
                    current
                };
                if new_master != current {
                    events.push(E::DeviceMasterMoved {
                        from: current,
                        to: new_master,
                        at: now,
                    });
                }
                events
            }
            _ => unreachable!("only device commands come here"),
        })
    }

    /// Exists and is not revoked: every change but the record of an e-mail needs this.
    fn changeable(&self) -> Result<(), LicenseError> {
        if !self.created {
            Err(LicenseError::NotFound)
        } else if self.state == LicenseState::Revoked {
            Err(LicenseError::Revoked)
        } else {
            Ok(())
        }
    }

    fn decide(&self, command: LicenseCommand) -> Result<Vec<LicenseEvent>, LicenseError> {
        use LicenseCommand as C;
        use LicenseEvent as E;
        if let C::Create {
            key,
            key_digest,
            owner,
            package,
            max_devices,
            monthly_token_limit,
            duration_months,
            gemini,
            telegram,
            lead_id,
            now,
        } = command
        {
            if self.created {
                return Err(LicenseError::AlreadyExists);
            }
            check_limits(Some(max_devices), Some(monthly_token_limit))?;
            if !(1..=MAX_DURATION_MONTHS).contains(&duration_months) {
                return Err(LicenseError::Invalid("durationMonths"));
            }
            let expires_at = extended(now, now, duration_months)
                .ok_or(LicenseError::Invalid("durationMonths"))?;
            return Ok(vec![E::LicenseCreated {
                key,
                key_digest,
                owner,
                package,
                max_devices,
                monthly_token_limit,
                expires_at,
                gemini,
                telegram,
                lead_id,
                at: now,
            }]);
        }
        if let C::RecordEmailSent { to, now } = command {
            // A mail that went out is a fact, whatever happened to the license since.
            if !self.created {
                return Err(LicenseError::NotFound);
            }
            return Ok(vec![E::LicenseEmailSent { to, at: now }]);
        }
        self.changeable()?;
        if matches!(
            command,
            C::RegisterDevice { .. }
                | C::UpdateDeviceDetails { .. }
                | C::SetDevice { .. }
                | C::ReleaseDevice { .. }
        ) {
            return self.decide_device(command);
        }
        Ok(match command {
            C::Create { .. }
            | C::RecordEmailSent { .. }
            | C::RegisterDevice { .. }
            | C::UpdateDeviceDetails { .. }
            | C::SetDevice { .. }
            | C::ReleaseDevice { .. } => unreachable!("handled above"),
            C::Update {
                owner,
                max_devices,
                monthly_token_limit,
                gemini,
                telegram,
                now,
            } => {
                check_limits(max_devices, monthly_token_limit)?;
                let approved = self.approved_devices();
                if max_devices.is_some_and(|max| (max as usize) < approved) {
                    return Err(LicenseError::MaxDevicesBelowApproved { approved });
                }
                if owner.is_none()
                    && max_devices.is_none()
                    && monthly_token_limit.is_none()
                    && gemini.is_none()
                    && telegram.is_none()
                {
                    return Ok(vec![]);
                }
                vec![E::LicenseUpdated {
                    owner,
                    max_devices,
                    monthly_token_limit,
                    gemini,
                    telegram,
                    at: now,
                }]
            }
            C::Renew { months, now } => {
                if !(1..=MAX_DURATION_MONTHS).contains(&months) {
                    return Err(LicenseError::Invalid("durationMonths"));
                }
                // Never beyond ten years from now, however often it is renewed: an expiry
                // that far out is a mistake, and years past 9999 are not RFC 3339.
                let current = self.expires_at.unwrap_or(now);
                let limit = extended(now, now, MAX_DURATION_MONTHS);
                let expires_at = extended(current, now, months)
                    .filter(|e| Some(*e) <= limit)
                    .ok_or(LicenseError::Invalid("durationMonths"))?;
                vec![E::LicenseRenewed {
                    months,
                    expires_at,
                    at: now,
                }]
            }
            C::Suspend { now } => {
                if self.state == LicenseState::Suspended {
                    return Err(LicenseError::AlreadySuspended);
                }
                vec![E::LicenseSuspended { at: now }]
            }
            C::Reactivate { now } => {
                if self.state != LicenseState::Suspended {
                    return Err(LicenseError::NotSuspended);
                }
                vec![E::LicenseReactivated { at: now }]
            }
            C::Revoke { now } => vec![E::LicenseRevoked { at: now }],
            C::RecordWebhook { active, now } => {
                vec![E::LicenseWebhookConfigured { active, at: now }]
            }
            C::RequestEmail { now } => vec![E::LicenseEmailRequested { at: now }],
        })
    }
}

fn check_limits(max_devices: Option<u32>, tokens: Option<u64>) -> Result<(), LicenseError> {
    if max_devices.is_some_and(|d| !(1..=MAX_DEVICES).contains(&d)) {
        return Err(LicenseError::Invalid("maxDevices"));
    }
    if tokens.is_some_and(|t| t > MAX_TOKEN_LIMIT) {
        return Err(LicenseError::Invalid("monthlyTokenLimit"));
    }
    Ok(())
}

impl Aggregate for License {
    const TYPE: &'static str = super::AGGREGATE_TYPE;
    type Command = LicenseCommand;
    type Event = LicenseEvent;
    type Error = LicenseError;
    type Services = ();

    async fn handle(
        &mut self,
        command: LicenseCommand,
        _services: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), LicenseError> {
        for event in self.decide(command)? {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: LicenseEvent) {
        use super::SecretChange;
        match event {
            LicenseEvent::LicenseCreated {
                expires_at,
                telegram,
                lead_id,
                max_devices,
                ..
            } => {
                self.created = true;
                self.max_devices = max_devices;
                self.expires_at = Some(expires_at);
                self.has_telegram = telegram.is_some();
                self.lead_id = lead_id;
            }
            LicenseEvent::LicenseUpdated {
                telegram,
                max_devices,
                ..
            } => {
                if let Some(max) = max_devices {
                    self.max_devices = max;
                }
                match telegram {
                    Some(SecretChange::Set(_)) => self.has_telegram = true,
                    Some(SecretChange::Removed) => self.has_telegram = false,
                    None => {}
                }
            }
            LicenseEvent::DeviceRegistered {
                device_id,
                fingerprint,
                status,
                master,
                ..
            } => {
                let device = Device {
                    id: device_id,
                    fingerprint,
                    status,
                    master,
                };
                if status == DeviceStatus::Approved {
                    self.seat_released_by_device = false;
                }
                match self.devices.iter_mut().find(|d| d.id == device_id) {
                    Some(known) => *known = device,
                    None => self.devices.push(device),
                }
            }
            LicenseEvent::DeviceStatusChanged {
                device_id, status, ..
            } => {
                if let Some(d) = self.devices.iter_mut().find(|d| d.id == device_id) {
                    match status {
                        // The desktop gave its seat back: the next computer may take it.
                        DeviceStatus::Released if d.status == DeviceStatus::Approved => {
                            self.seat_released_by_device = true;
                        }
                        // An admin decided about seats: nothing takes one by itself.
                        DeviceStatus::Approved | DeviceStatus::Blocked | DeviceStatus::Pending => {
                            self.seat_released_by_device = false;
                        }
                        DeviceStatus::Released => {}
                    }
                    d.status = status;
                }
            }
            LicenseEvent::DeviceMasterMoved { to, .. } => {
                for d in &mut self.devices {
                    d.master = Some(d.id) == to;
                }
            }
            LicenseEvent::DeviceDetailsUpdated { .. } => {}
            LicenseEvent::LicenseRenewed { expires_at, .. } => self.expires_at = Some(expires_at),
            LicenseEvent::LicenseSuspended { .. } => self.state = LicenseState::Suspended,
            LicenseEvent::LicenseReactivated { .. } => self.state = LicenseState::Active,
            LicenseEvent::LicenseRevoked { .. } => self.state = LicenseState::Revoked,
            LicenseEvent::LicenseWebhookConfigured { .. }
            | LicenseEvent::LicenseEmailRequested { .. }
            | LicenseEvent::LicenseEmailSent { .. } => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use cqrs_es::test::TestFramework;

    use super::*;
    use crate::license::{Owner, SealedText, status_at};

    type Given = TestFramework<License>;

    fn at(y: i32, m: u32, d: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, 0, 0, 0).unwrap()
    }

    fn created(expires_at: DateTime<Utc>) -> LicenseEvent {
        LicenseEvent::LicenseCreated {
            key: SealedText("v1.k.x".into()),
            key_digest: "d".into(),
            owner: Owner {
                name: "Ahmet Kaya".into(),
                email: "ahmet@kayasmmm.com".into(),
                phone: None,
                company_name: "Kaya SMMM".into(),
                company_vkn: None,
            },
            package: "pro".into(),
            max_devices: 5,
            monthly_token_limit: 500_000,
            expires_at,
            gemini: None,
            telegram: None,
            lead_id: None,
            at: at(2026, 2, 5),
        }
    }

    #[test]
    fn renewal_counts_from_the_later_of_now_and_the_expiry() {
        // Not yet expired: from the expiry.
        Given::with(())
            .given(vec![created(at(2027, 2, 5))])
            .when(LicenseCommand::Renew {
                months: 12,
                now: at(2026, 12, 1),
            })
            .then_expect_events(vec![LicenseEvent::LicenseRenewed {
                months: 12,
                expires_at: at(2028, 2, 5),
                at: at(2026, 12, 1),
            }]);
        // Long expired: from now.
        Given::with(())
            .given(vec![created(at(2025, 1, 1))])
            .when(LicenseCommand::Renew {
                months: 1,
                now: at(2026, 3, 10),
            })
            .then_expect_events(vec![LicenseEvent::LicenseRenewed {
                months: 1,
                expires_at: at(2026, 4, 10),
                at: at(2026, 3, 10),
            }]);
    }

    #[test]
    fn renewals_never_reach_beyond_ten_years_from_now() {
        let now = at(2026, 6, 1);
        Given::with(())
            .given(vec![created(at(2035, 1, 1))])
            .when(LicenseCommand::Renew { months: 120, now })
            .then_expect_error(LicenseError::Invalid("durationMonths"));
    }

    #[test]
    fn suspend_reactivate_and_revoke_follow_the_lifecycle() {
        let now = at(2026, 6, 1);
        Given::with(())
            .given(vec![
                created(at(2027, 1, 1)),
                LicenseEvent::LicenseSuspended { at: now },
            ])
            .when(LicenseCommand::Suspend { now })
            .then_expect_error(LicenseError::AlreadySuspended);
        Given::with(())
            .given(vec![created(at(2027, 1, 1))])
            .when(LicenseCommand::Reactivate { now })
            .then_expect_error(LicenseError::NotSuspended);
        Given::with(())
            .given(vec![
                created(at(2027, 1, 1)),
                LicenseEvent::LicenseRevoked { at: now },
            ])
            .when(LicenseCommand::Reactivate { now })
            .then_expect_error(LicenseError::Revoked);
        Given::with(())
            .given(vec![
                created(at(2027, 1, 1)),
                LicenseEvent::LicenseRevoked { at: now },
            ])
            .when(LicenseCommand::Renew { months: 1, now })
            .then_expect_error(LicenseError::Revoked);
    }

    #[test]
    fn a_license_past_its_expiry_is_expired_unless_suspended_or_revoked() {
        let now = at(2026, 6, 1);
        assert_eq!(
            status_at(LicenseState::Active, at(2026, 5, 31), now),
            "expired"
        );
        assert_eq!(
            status_at(LicenseState::Active, at(2026, 6, 2), now),
            "active"
        );
        assert_eq!(
            status_at(LicenseState::Suspended, at(2026, 5, 31), now),
            "suspended"
        );
        assert_eq!(
            status_at(LicenseState::Revoked, at(2026, 5, 31), now),
            "revoked"
        );
    }

    #[test]
    fn limits_out_of_range_name_their_field() {
        Given::with(())
            .given(vec![created(at(2027, 1, 1))])
            .when(LicenseCommand::Update {
                owner: None,
                max_devices: Some(0),
                monthly_token_limit: None,
                gemini: None,
                telegram: None,
                now: at(2026, 6, 1),
            })
            .then_expect_error(LicenseError::Invalid("maxDevices"));
    }

    fn details() -> crate::license::DeviceDetails {
        crate::license::DeviceDetails {
            name: "PC".into(),
            os_type: "windows".into(),
            os_version: "11".into(),
            app_version: "1.1.0".into(),
            ip_address: None,
        }
    }

    fn registered(n: u128, status: DeviceStatus, master: bool) -> LicenseEvent {
        LicenseEvent::DeviceRegistered {
            device_id: Uuid::from_u128(n),
            fingerprint: format!("{n:064x}"),
            details: details(),
            status,
            master,
            at: at(2026, 6, 1),
        }
    }

    #[test]
    fn the_first_device_is_approved_master_and_the_next_waits() {
        let now = at(2026, 6, 1);
        let register = |n: u128| LicenseCommand::RegisterDevice {
            device_id: Uuid::from_u128(n),
            fingerprint: format!("{n:064x}"),
            details: details(),
            now,
        };
        Given::with(())
            .given(vec![created(at(2027, 1, 1))])
            .when(register(1))
            .then_expect_events(vec![registered(1, DeviceStatus::Approved, true)]);
        Given::with(())
            .given(vec![
                created(at(2027, 1, 1)),
                registered(1, DeviceStatus::Approved, true),
            ])
            .when(register(2))
            .then_expect_events(vec![registered(2, DeviceStatus::Pending, false)]);
        // The same fingerprint again changes nothing.
        Given::with(())
            .given(vec![
                created(at(2027, 1, 1)),
                registered(1, DeviceStatus::Approved, true),
            ])
            .when(register(1))
            .then_expect_events(vec![]);
    }

    #[test]
    fn a_new_fingerprint_does_not_undo_an_admins_block() {
        let now = at(2026, 6, 1);
        let register = |n: u128| LicenseCommand::RegisterDevice {
            device_id: Uuid::from_u128(n),
            fingerprint: format!("{n:064x}"),
            details: details(),
            now,
        };
        let blocked = LicenseEvent::DeviceStatusChanged {
            device_id: Uuid::from_u128(1),
            status: DeviceStatus::Blocked,
            at: now,
        };
        Given::with(())
            .given(vec![
                created(at(2027, 1, 1)),
                registered(1, DeviceStatus::Approved, true),
                blocked,
            ])
            .when(register(3))
            .then_expect_events(vec![registered(3, DeviceStatus::Pending, false)]);
        // After the desktop released its own seat, the next computer takes it.
        let released = LicenseEvent::DeviceStatusChanged {
            device_id: Uuid::from_u128(1),
            status: DeviceStatus::Released,
            at: now,
        };
        Given::with(())
            .given(vec![
                created(at(2027, 1, 1)),
                registered(1, DeviceStatus::Approved, true),
                released,
            ])
            .when(register(3))
            .then_expect_events(vec![registered(3, DeviceStatus::Approved, true)]);
    }

    #[test]
    fn approvals_stop_at_max_devices() {
        let mut given = vec![created(at(2027, 1, 1))];
        given.push(registered(1, DeviceStatus::Approved, true));
        for n in 2..=6 {
            given.push(registered(n, DeviceStatus::Pending, false));
        }
        for n in 2..=5 {
            given.push(LicenseEvent::DeviceStatusChanged {
                device_id: Uuid::from_u128(n),
                status: DeviceStatus::Approved,
                at: at(2026, 6, 1),
            });
        }
        Given::with(())
            .given(given)
            .when(LicenseCommand::SetDevice {
                device_id: Uuid::from_u128(6),
                status: Some(DeviceStatus::Approved),
                master: None,
                now: at(2026, 6, 2),
            })
            .then_expect_error(LicenseError::DeviceLimitReached);
    }

    #[test]
    fn the_device_limit_cannot_drop_below_the_approved_devices() {
        let given = vec![
            created(at(2027, 1, 1)),
            registered(1, DeviceStatus::Approved, true),
            registered(2, DeviceStatus::Pending, false),
            LicenseEvent::DeviceStatusChanged {
                device_id: Uuid::from_u128(2),
                status: DeviceStatus::Approved,
                at: at(2026, 6, 1),
            },
        ];
        let limit = |max| LicenseCommand::Update {
            owner: None,
            max_devices: Some(max),
            monthly_token_limit: None,
            gemini: None,
            telegram: None,
            now: at(2026, 6, 2),
        };
        Given::with(())
            .given(given.clone())
            .when(limit(1))
            .then_expect_error(LicenseError::MaxDevicesBelowApproved { approved: 2 });
        let events = Given::with(()).given(given).when(limit(2)).inspect_result();
        assert!(events.is_ok());
    }

    #[test]
    fn releasing_the_master_hands_the_flag_on() {
        let now = at(2026, 6, 2);
        Given::with(())
            .given(vec![
                created(at(2027, 1, 1)),
                registered(1, DeviceStatus::Approved, true),
                registered(2, DeviceStatus::Pending, false),
                LicenseEvent::DeviceStatusChanged {
                    device_id: Uuid::from_u128(2),
                    status: DeviceStatus::Approved,
                    at: now,
                },
            ])
            .when(LicenseCommand::ReleaseDevice {
                device_id: Uuid::from_u128(1),
                now,
            })
            .then_expect_events(vec![
                LicenseEvent::DeviceStatusChanged {
                    device_id: Uuid::from_u128(1),
                    status: DeviceStatus::Released,
                    at: now,
                },
                LicenseEvent::DeviceMasterMoved {
                    from: Some(Uuid::from_u128(1)),
                    to: Some(Uuid::from_u128(2)),
                    at: now,
                },
            ]);
    }
}
