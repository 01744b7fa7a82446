//! Admin users: who may use the admin panel, with which role and permissions, and the audit
//! trail of their logins.
//!
//! The [`AdminUser`] aggregate is pure like every aggregate here: password hashes, ids, the
//! clock and the number of active super admins (a read-model count) all come in the
//! command. The rules it keeps:
//!
//! * an e-mail is stored trimmed and lower-cased ([`normalize_email`]);
//! * `super_admin` always holds every permission; `viewer` reads only (enforced by the
//!   gateway's [`Role::can_write`] check);
//! * the last active `super_admin` can neither be deactivated nor demoted;
//! * a deactivated admin refuses every command (log in, rename, role, password) except
//!   reactivation, and deactivating it again changes nothing. Its e-mail stays taken: bring
//!   the account back with reactivation instead of creating a new one.

mod aggregate;
mod commands;
mod error;
mod events;

pub use aggregate::AdminUser;
pub use commands::{AdminCommand, AdminUpdate};
pub use error::AdminError;
pub use events::AdminEvent;

/// The stream type of admin users in the event store (`events.aggregate_type`).
pub const AGGREGATE_TYPE: &str = "AdminUser";

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// SPEC §4 roles. `viewer` reads only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    SuperAdmin,
    Admin,
    Viewer,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::SuperAdmin, Role::Admin, Role::Viewer];

    /// The wire and database spelling (`super_admin`, `admin`, `viewer`).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::SuperAdmin => "super_admin",
            Role::Admin => "admin",
            Role::Viewer => "viewer",
        }
    }

    /// Viewers read only; everyone else may write where their permissions reach.
    pub fn can_write(self) -> bool {
        self != Role::Viewer
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A role or permission name that is not one of ours.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind}: {value:?}")]
pub struct UnknownName {
    pub kind: &'static str,
    pub value: String,
}

impl FromStr for Role {
    type Err = UnknownName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| UnknownName {
                kind: "role",
                value: s.to_string(),
            })
    }
}

/// SPEC §4 permissions: which areas of the panel an admin may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Permission {
    Leads,
    Licenses,
    Users,
    Analytics,
    Settings,
    Audit,
}

impl Permission {
    pub const ALL: [Permission; 6] = [
        Permission::Leads,
        Permission::Licenses,
        Permission::Users,
        Permission::Analytics,
        Permission::Settings,
        Permission::Audit,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Permission::Leads => "leads",
            Permission::Licenses => "licenses",
            Permission::Users => "users",
            Permission::Analytics => "analytics",
            Permission::Settings => "settings",
            Permission::Audit => "audit",
        }
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Permission {
    type Err = UnknownName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Permission::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| UnknownName {
                kind: "permission",
                value: s.to_string(),
            })
    }
}

/// The permissions an admin with `role` actually holds: a super admin holds all of them
/// whatever was asked for; everyone else holds the given set, sorted and without repeats.
pub fn effective_permissions(role: Role, permissions: &[Permission]) -> Vec<Permission> {
    if role == Role::SuperAdmin {
        return Permission::ALL.to_vec();
    }
    let mut permissions = permissions.to_vec();
    permissions.sort();
    permissions.dedup();
    permissions
}

/// The one spelling of an e-mail address that is stored and compared: trimmed and
/// lower-cased (the domain part is case-insensitive everywhere, and nobody relies on a
/// case-sensitive local part).
pub fn normalize_email(email: &str) -> String {
    email.trim().to_lowercase()
}

/// A deliberately small syntax check on the normalised form: one `@`, something on both
/// sides, at most 254 characters, and ASCII only — letters, digits and `.!#$%&'*+/=?^_`{|}~-`
/// in the local part, dotted labels of letters, digits and `-` in the domain (an
/// internationalised domain in its `xn--` form). Admin e-mails name who acts in lists,
/// assignments and the audit log, so a look-alike (a Cyrillic `а`, fullwidth letters, a
/// zero-width space) must not pass for a real one. `admin@localhost` (the development
/// default) passes. Deliverability is not our business here.
pub fn is_valid_email(email: &str) -> bool {
    let Some((local, domain)) = email.split_once('@') else {
        return false;
    };
    let local_ok = !local.is_empty()
        && local.len() <= 64
        && local.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b"._%+-!#$&'*/=?^`{|}~".contains(&b)
        })
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..");
    let domain_ok = domain.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    });
    local_ok && domain_ok && email.len() <= 254
}

/// A display name: 2 to 100 characters after trimming, single-line text
/// ([`crate::text::check_single_line`]).
pub fn is_valid_name(name: &str) -> bool {
    NAME_LENGTH.contains(&name.trim().chars().count())
        && crate::text::check_single_line(name).is_ok()
}

/// Display names: 2 to 100 characters after trimming.
pub const NAME_LENGTH: std::ops::RangeInclusive<usize> = 2..=100;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_and_permissions_round_trip_through_their_names() {
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>(), Ok(role));
            assert_eq!(
                serde_json::to_value(role).unwrap(),
                serde_json::json!(role.as_str())
            );
        }
        for permission in Permission::ALL {
            assert_eq!(permission.as_str().parse::<Permission>(), Ok(permission));
        }
        assert!("root".parse::<Role>().is_err());
    }

    #[test]
    fn a_super_admin_holds_every_permission_whatever_was_asked() {
        assert_eq!(
            effective_permissions(Role::SuperAdmin, &[Permission::Leads]),
            Permission::ALL.to_vec()
        );
        assert_eq!(
            effective_permissions(
                Role::Admin,
                &[Permission::Users, Permission::Leads, Permission::Users]
            ),
            vec![Permission::Leads, Permission::Users]
        );
    }

    #[test]
    fn emails_are_trimmed_and_lower_cased_and_checked_lightly() {
        assert_eq!(normalize_email("  Ayse@Example.COM "), "ayse@example.com");
        assert!(is_valid_email("admin@localhost"));
        assert!(is_valid_email("a.b+c@example.com.tr"));
        for bad in ["", "no-at", "@x.com", "a@", "a b@x.com", "a@b@c", "a@.com"] {
            assert!(!is_valid_email(bad), "{bad}");
        }
    }

    #[test]
    fn look_alike_and_invisible_characters_are_not_admin_emails() {
        for bad in [
            "\u{430}dmin@example.com",   // Cyrillic а
            "ａdmin@example.com",        // fullwidth a
            "ad\u{200B}min@example.com", // zero-width space
            "admin@exa\u{0}mple.com",
            "admin@ex\u{0435}mple.com",
        ] {
            assert!(!is_valid_email(bad), "{bad:?}");
        }
        assert!(is_valid_email("ops@xn--mnchen-3ya.de"));
    }

    #[test]
    fn names_are_single_line_text_of_two_to_a_hundred_characters() {
        assert!(is_valid_name("Ayşe Yılmaz"));
        assert!(!is_valid_name("A"));
        assert!(!is_valid_name("Nul\u{0}Name"));
        assert!(!is_valid_name("two\nlines"));
    }
}
