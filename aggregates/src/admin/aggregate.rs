//! The admin user aggregate: decides commands against the state its events built.

use cqrs_es::Aggregate;
use cqrs_es::event_sink::EventSink;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{
    AdminCommand, AdminError, AdminEvent, AdminUpdate, Permission, Role, effective_permissions,
    is_valid_email, normalize_email,
};

/// One admin user. `Default` is "not created yet".
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AdminUser {
    profile: Option<Profile>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Profile {
    id: Uuid,
    email: String,
    name: String,
    role: Role,
    permissions: Vec<Permission>,
    active: bool,
}

impl AdminUser {
    pub fn exists(&self) -> bool {
        self.profile.is_some()
    }

    pub fn id(&self) -> Option<Uuid> {
        self.profile.as_ref().map(|p| p.id)
    }

    pub fn email(&self) -> Option<&str> {
        self.profile.as_ref().map(|p| p.email.as_str())
    }

    pub fn role(&self) -> Option<Role> {
        self.profile.as_ref().map(|p| p.role)
    }

    pub fn permissions(&self) -> &[Permission] {
        self.profile
            .as_ref()
            .map(|p| p.permissions.as_slice())
            .unwrap_or_default()
    }

    pub fn is_active(&self) -> bool {
        self.profile.as_ref().is_some_and(|p| p.active)
    }

    /// The events `command` produces, without applying them. An empty list means the
    /// command changes nothing (it is idempotent), not that it failed.
    pub fn decide(&self, command: AdminCommand) -> Result<Vec<AdminEvent>, AdminError> {
        match command {
            AdminCommand::Create {
                id,
                email,
                name,
                role,
                permissions,
                password_hash,
                at,
            } => {
                if self.profile.is_some() {
                    return Err(AdminError::AlreadyExists);
                }
                let email = normalize_email(&email);
                if !is_valid_email(&email) {
                    return Err(AdminError::InvalidEmail);
                }
                let name = valid_name(&name)?;
                if password_hash.is_empty() {
                    return Err(AdminError::MissingPasswordHash);
                }
                Ok(vec![AdminEvent::AdminCreated {
                    id,
                    email,
                    name,
                    role,
                    permissions: effective_permissions(role, &permissions),
                    password_hash,
                    at,
                }])
            }
            AdminCommand::Rename { name, at } => {
                let profile = self.active_profile()?;
                let name = valid_name(&name)?;
                if name == profile.name {
                    return Ok(vec![]);
                }
                Ok(vec![AdminEvent::AdminRenamed { name, at }])
            }
            AdminCommand::ChangeRole {
                role,
                permissions,
                active_super_admins,
                at,
            } => {
                let profile = self.active_profile()?;
                let permissions = effective_permissions(role, &permissions);
                if role == profile.role && permissions == profile.permissions {
                    return Ok(vec![]);
                }
                if profile.role == Role::SuperAdmin
                    && role != Role::SuperAdmin
                    && active_super_admins <= 1
                {
                    return Err(AdminError::LastSuperAdmin);
                }
                Ok(vec![AdminEvent::AdminRoleChanged {
                    role,
                    permissions,
                    at,
                }])
            }
            AdminCommand::Deactivate {
                active_super_admins,
                at,
            } => {
                let profile = self.profile.as_ref().ok_or(AdminError::NotFound)?;
                if !profile.active {
                    return Ok(vec![]);
                }
                if profile.role == Role::SuperAdmin && active_super_admins <= 1 {
                    return Err(AdminError::LastSuperAdmin);
                }
                Ok(vec![AdminEvent::AdminDeactivated { at }])
            }
            AdminCommand::Reactivate { at } => {
                let profile = self.profile.as_ref().ok_or(AdminError::NotFound)?;
                if profile.active {
                    return Ok(vec![]);
                }
                Ok(vec![AdminEvent::AdminReactivated { at }])
            }
            AdminCommand::ChangePassword { password_hash, at } => {
                self.active_profile()?;
                if password_hash.is_empty() {
                    return Err(AdminError::MissingPasswordHash);
                }
                Ok(vec![AdminEvent::AdminPasswordChanged { password_hash, at }])
            }
            AdminCommand::RecordLogin { ip, user_agent, at } => {
                self.active_profile()?;
                Ok(vec![AdminEvent::AdminLoggedIn { ip, user_agent, at }])
            }
            AdminCommand::Update(update) => self.decide_update(update),
        }
    }

    /// Decides the parts of an update one after another on a scratch copy, so later parts
    /// see earlier ones (a reactivation first, a deactivation last) and any refusal leaves
    /// nothing written.
    fn decide_update(&self, update: AdminUpdate) -> Result<Vec<AdminEvent>, AdminError> {
        let profile = self.profile.as_ref().ok_or(AdminError::NotFound)?;
        let AdminUpdate {
            name,
            role,
            permissions,
            active,
            password_hash,
            active_super_admins,
            at,
        } = update;
        let mut steps = Vec::new();
        if active == Some(true) {
            steps.push(AdminCommand::Reactivate { at });
        }
        if let Some(name) = name {
            steps.push(AdminCommand::Rename { name, at });
        }
        if role.is_some() || permissions.is_some() {
            steps.push(AdminCommand::ChangeRole {
                role: role.unwrap_or(profile.role),
                permissions: permissions.unwrap_or_else(|| profile.permissions.clone()),
                active_super_admins,
                at,
            });
        }
        if let Some(password_hash) = password_hash {
            steps.push(AdminCommand::ChangePassword { password_hash, at });
        }
        if active == Some(false) {
            steps.push(AdminCommand::Deactivate {
                active_super_admins,
                at,
            });
        }
        let mut scratch = self.clone();
        let mut events = Vec::new();
        for step in steps {
            for event in scratch.decide(step)? {
                scratch.apply_event(event.clone());
                events.push(event);
            }
        }
        Ok(events)
    }

    fn active_profile(&self) -> Result<&Profile, AdminError> {
        match &self.profile {
            None => Err(AdminError::NotFound),
            Some(p) if !p.active => Err(AdminError::Deactivated),
            Some(p) => Ok(p),
        }
    }

    fn apply_event(&mut self, event: AdminEvent) {
        if let AdminEvent::AdminCreated {
            id,
            email,
            name,
            role,
            permissions,
            ..
        } = event
        {
            self.profile = Some(Profile {
                id,
                email,
                name,
                role,
                permissions,
                active: true,
            });
            return;
        }
        let Some(profile) = self.profile.as_mut() else {
            // Events only ever follow AdminCreated in a stream; nothing to change otherwise.
            return;
        };
        match event {
            AdminEvent::AdminCreated { .. } => {}
            AdminEvent::AdminRenamed { name, .. } => profile.name = name,
            AdminEvent::AdminRoleChanged {
                role, permissions, ..
            } => {
                profile.role = role;
                profile.permissions = permissions;
            }
            AdminEvent::AdminDeactivated { .. } => profile.active = false,
            AdminEvent::AdminReactivated { .. } => profile.active = true,
            // The hash lives in the read model that logins check; no decision needs it.
            AdminEvent::AdminPasswordChanged { .. } => {}
            // Logins are an audit trail; no decision depends on them.
            AdminEvent::AdminLoggedIn { .. } => {}
        }
    }
}

fn valid_name(name: &str) -> Result<String, AdminError> {
    let name = name.trim();
    if super::is_valid_name(name) {
        Ok(name.to_string())
    } else {
        Err(AdminError::InvalidName)
    }
}

impl Aggregate for AdminUser {
    const TYPE: &'static str = super::AGGREGATE_TYPE;
    type Command = AdminCommand;
    type Event = AdminEvent;
    type Error = AdminError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        for event in self.decide(command)? {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        self.apply_event(event);
    }
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, TimeZone, Utc};
    use cqrs_es::test::TestFramework;

    use super::*;

    type AdminTest = TestFramework<AdminUser>;

    fn at(minute: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 2, 5, 16, minute, 0).unwrap()
    }

    fn id() -> Uuid {
        Uuid::from_u128(0x0123)
    }

    fn create(role: Role, permissions: Vec<Permission>) -> AdminCommand {
        AdminCommand::Create {
            id: id(),
            email: "  Ayse.Kaya@Example.COM ".into(),
            name: " Ayşe Kaya ".into(),
            role,
            permissions,
            password_hash: "$2b$12$hash".into(),
            at: at(0),
        }
    }

    fn created(role: Role, permissions: Vec<Permission>) -> AdminEvent {
        AdminEvent::AdminCreated {
            id: id(),
            email: "ayse.kaya@example.com".into(),
            name: "Ayşe Kaya".into(),
            role,
            permissions,
            password_hash: "$2b$12$hash".into(),
            at: at(0),
        }
    }

    fn super_admin() -> AdminEvent {
        created(Role::SuperAdmin, Permission::ALL.to_vec())
    }

    fn editor() -> AdminEvent {
        created(Role::Admin, vec![Permission::Leads])
    }

    fn deactivated() -> AdminEvent {
        AdminEvent::AdminDeactivated { at: at(1) }
    }

    // ---- create ---------------------------------------------------------------------------

    #[test]
    fn creating_an_admin_normalises_the_email_and_trims_the_name() {
        AdminTest::with(())
            .given_no_previous_events()
            .when(create(
                Role::Admin,
                vec![Permission::Users, Permission::Leads, Permission::Leads],
            ))
            .then_expect_events(vec![created(
                Role::Admin,
                vec![Permission::Leads, Permission::Users],
            )]);
    }

    #[test]
    fn a_super_admin_is_created_with_every_permission() {
        AdminTest::with(())
            .given_no_previous_events()
            .when(create(Role::SuperAdmin, vec![]))
            .then_expect_events(vec![super_admin()]);
    }

    #[test]
    fn creating_an_admin_twice_is_refused() {
        AdminTest::with(())
            .given(vec![editor()])
            .when(create(Role::Admin, vec![]))
            .then_expect_error(AdminError::AlreadyExists);
    }

    #[test]
    fn creating_an_admin_with_a_bad_email_name_or_no_hash_is_refused() {
        let with = |f: &dyn Fn(&mut AdminCommand)| {
            let mut command = create(Role::Admin, vec![]);
            f(&mut command);
            command
        };
        let cases: Vec<(AdminCommand, AdminError)> = vec![
            (
                with(&|c| {
                    if let AdminCommand::Create { email, .. } = c {
                        *email = "not-an-email".into()
                    }
                }),
                AdminError::InvalidEmail,
            ),
            (
                with(&|c| {
                    if let AdminCommand::Create { name, .. } = c {
                        *name = " x ".into()
                    }
                }),
                AdminError::InvalidName,
            ),
            (
                with(&|c| {
                    if let AdminCommand::Create { password_hash, .. } = c {
                        password_hash.clear()
                    }
                }),
                AdminError::MissingPasswordHash,
            ),
        ];
        for (command, error) in cases {
            AdminTest::with(())
                .given_no_previous_events()
                .when(command)
                .then_expect_error(error);
        }
    }

    // ---- rename ---------------------------------------------------------------------------

    #[test]
    fn renaming_an_admin_records_the_new_name_and_the_same_name_changes_nothing() {
        AdminTest::with(())
            .given(vec![editor()])
            .when(AdminCommand::Rename {
                name: "Ayşe Yılmaz".into(),
                at: at(2),
            })
            .then_expect_events(vec![AdminEvent::AdminRenamed {
                name: "Ayşe Yılmaz".into(),
                at: at(2),
            }]);
        AdminTest::with(())
            .given(vec![editor()])
            .when(AdminCommand::Rename {
                name: "Ayşe Kaya".into(),
                at: at(2),
            })
            .then_expect_events(vec![]);
    }

    // ---- change role ----------------------------------------------------------------------

    #[test]
    fn changing_the_role_records_role_and_permissions_together() {
        AdminTest::with(())
            .given(vec![editor()])
            .when(AdminCommand::ChangeRole {
                role: Role::Viewer,
                permissions: vec![Permission::Analytics, Permission::Leads],
                active_super_admins: 1,
                at: at(2),
            })
            .then_expect_events(vec![AdminEvent::AdminRoleChanged {
                role: Role::Viewer,
                permissions: vec![Permission::Leads, Permission::Analytics],
                at: at(2),
            }]);
    }

    #[test]
    fn the_last_active_super_admin_cannot_be_demoted() {
        AdminTest::with(())
            .given(vec![super_admin()])
            .when(AdminCommand::ChangeRole {
                role: Role::Admin,
                permissions: vec![Permission::Users],
                active_super_admins: 1,
                at: at(2),
            })
            .then_expect_error(AdminError::LastSuperAdmin);
    }

    #[test]
    fn a_super_admin_can_be_demoted_while_another_one_is_active() {
        AdminTest::with(())
            .given(vec![super_admin()])
            .when(AdminCommand::ChangeRole {
                role: Role::Admin,
                permissions: vec![Permission::Users],
                active_super_admins: 2,
                at: at(2),
            })
            .then_expect_events(vec![AdminEvent::AdminRoleChanged {
                role: Role::Admin,
                permissions: vec![Permission::Users],
                at: at(2),
            }]);
    }

    #[test]
    fn the_role_of_an_unknown_or_deactivated_admin_cannot_change() {
        let command = AdminCommand::ChangeRole {
            role: Role::Viewer,
            permissions: vec![],
            active_super_admins: 2,
            at: at(2),
        };
        AdminTest::with(())
            .given_no_previous_events()
            .when(command.clone())
            .then_expect_error(AdminError::NotFound);
        AdminTest::with(())
            .given(vec![editor(), deactivated()])
            .when(command)
            .then_expect_error(AdminError::Deactivated);
    }

    // ---- deactivate / reactivate ------------------------------------------------------------

    #[test]
    fn deactivating_an_admin_records_it_once() {
        let command = AdminCommand::Deactivate {
            active_super_admins: 1,
            at: at(1),
        };
        AdminTest::with(())
            .given(vec![editor()])
            .when(command.clone())
            .then_expect_events(vec![deactivated()]);
        AdminTest::with(())
            .given(vec![editor(), deactivated()])
            .when(command)
            .then_expect_events(vec![]);
    }

    #[test]
    fn the_last_active_super_admin_cannot_be_deactivated() {
        AdminTest::with(())
            .given(vec![super_admin()])
            .when(AdminCommand::Deactivate {
                active_super_admins: 1,
                at: at(1),
            })
            .then_expect_error(AdminError::LastSuperAdmin);
        AdminTest::with(())
            .given(vec![super_admin()])
            .when(AdminCommand::Deactivate {
                active_super_admins: 2,
                at: at(1),
            })
            .then_expect_events(vec![deactivated()]);
    }

    #[test]
    fn a_deactivated_admin_can_be_reactivated_and_an_active_one_is_left_alone() {
        AdminTest::with(())
            .given(vec![editor(), deactivated()])
            .when(AdminCommand::Reactivate { at: at(3) })
            .then_expect_events(vec![AdminEvent::AdminReactivated { at: at(3) }]);
        AdminTest::with(())
            .given(vec![editor()])
            .when(AdminCommand::Reactivate { at: at(3) })
            .then_expect_events(vec![]);
    }

    // ---- password ---------------------------------------------------------------------------

    #[test]
    fn changing_the_password_records_the_new_hash() {
        AdminTest::with(())
            .given(vec![editor()])
            .when(AdminCommand::ChangePassword {
                password_hash: "$2b$12$new".into(),
                at: at(4),
            })
            .then_expect_events(vec![AdminEvent::AdminPasswordChanged {
                password_hash: "$2b$12$new".into(),
                at: at(4),
            }]);
    }

    #[test]
    fn a_deactivated_admin_password_cannot_change_and_an_empty_hash_is_refused() {
        AdminTest::with(())
            .given(vec![editor(), deactivated()])
            .when(AdminCommand::ChangePassword {
                password_hash: "$2b$12$new".into(),
                at: at(4),
            })
            .then_expect_error(AdminError::Deactivated);
        AdminTest::with(())
            .given(vec![editor()])
            .when(AdminCommand::ChangePassword {
                password_hash: String::new(),
                at: at(4),
            })
            .then_expect_error(AdminError::MissingPasswordHash);
    }

    // ---- login ------------------------------------------------------------------------------

    #[test]
    fn a_login_is_recorded_with_ip_and_user_agent() {
        AdminTest::with(())
            .given(vec![editor()])
            .when(AdminCommand::RecordLogin {
                ip: Some("203.0.113.7".into()),
                user_agent: Some("Firefox".into()),
                at: at(5),
            })
            .then_expect_events(vec![AdminEvent::AdminLoggedIn {
                ip: Some("203.0.113.7".into()),
                user_agent: Some("Firefox".into()),
                at: at(5),
            }]);
    }

    #[test]
    fn a_deactivated_or_unknown_admin_cannot_log_in() {
        let login = AdminCommand::RecordLogin {
            ip: None,
            user_agent: None,
            at: at(5),
        };
        AdminTest::with(())
            .given(vec![editor(), deactivated()])
            .when(login.clone())
            .then_expect_error(AdminError::Deactivated);
        AdminTest::with(())
            .given_no_previous_events()
            .when(login)
            .then_expect_error(AdminError::NotFound);
    }

    // ---- update (PATCH) ---------------------------------------------------------------------

    #[test]
    fn an_update_records_each_change_in_a_fixed_order() {
        AdminTest::with(())
            .given(vec![editor()])
            .when(AdminCommand::Update(AdminUpdate {
                name: Some("Ayşe Yılmaz".into()),
                permissions: Some(vec![Permission::Leads, Permission::Audit]),
                password_hash: Some("$2b$12$new".into()),
                active: Some(false),
                active_super_admins: 1,
                at: at(6),
                ..AdminUpdate::default()
            }))
            .then_expect_events(vec![
                AdminEvent::AdminRenamed {
                    name: "Ayşe Yılmaz".into(),
                    at: at(6),
                },
                AdminEvent::AdminRoleChanged {
                    role: Role::Admin,
                    permissions: vec![Permission::Leads, Permission::Audit],
                    at: at(6),
                },
                AdminEvent::AdminPasswordChanged {
                    password_hash: "$2b$12$new".into(),
                    at: at(6),
                },
                AdminEvent::AdminDeactivated { at: at(6) },
            ]);
    }

    #[test]
    fn an_update_that_breaks_a_rule_writes_nothing() {
        AdminTest::with(())
            .given(vec![super_admin()])
            .when(AdminCommand::Update(AdminUpdate {
                name: Some("Yeni Ad".into()),
                active: Some(false),
                active_super_admins: 1,
                at: at(6),
                ..AdminUpdate::default()
            }))
            .then_expect_error(AdminError::LastSuperAdmin);
    }

    #[test]
    fn an_update_can_reactivate_and_change_in_one_go() {
        AdminTest::with(())
            .given(vec![editor(), deactivated()])
            .when(AdminCommand::Update(AdminUpdate {
                active: Some(true),
                role: Some(Role::Viewer),
                at: at(7),
                ..AdminUpdate::default()
            }))
            .then_expect_events(vec![
                AdminEvent::AdminReactivated { at: at(7) },
                AdminEvent::AdminRoleChanged {
                    role: Role::Viewer,
                    permissions: vec![Permission::Leads],
                    at: at(7),
                },
            ]);
    }

    #[test]
    fn an_update_of_a_deactivated_admin_without_reactivation_is_refused() {
        AdminTest::with(())
            .given(vec![editor(), deactivated()])
            .when(AdminCommand::Update(AdminUpdate {
                name: Some("Yeni Ad".into()),
                at: at(7),
                ..AdminUpdate::default()
            }))
            .then_expect_error(AdminError::Deactivated);
    }

    #[test]
    fn events_keep_their_names_versions_and_camel_case_payloads() {
        use cqrs_es::DomainEvent;
        let event = AdminEvent::AdminLoggedIn {
            ip: Some("203.0.113.7".into()),
            user_agent: Some("Firefox".into()),
            at: at(5),
        };
        assert_eq!(event.event_type(), "AdminLoggedIn");
        assert_eq!(event.event_version(), "1.0");
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(json["AdminLoggedIn"]["userAgent"], "Firefox");
        assert_eq!(serde_json::from_value::<AdminEvent>(json).unwrap(), event);
        assert_eq!(super_admin().event_type(), "AdminCreated");
    }
}
