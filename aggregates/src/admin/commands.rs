//! What can be asked of an admin user. Everything the decision needs is in the command: the
//! caller hashes passwords, picks ids, reads the clock and counts the active super admins.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{Permission, Role};

#[derive(Clone, Debug, PartialEq)]
pub enum AdminCommand {
    /// Creates the admin. The e-mail is normalised (trimmed, lower-cased) here too.
    Create {
        id: Uuid,
        email: String,
        name: String,
        role: Role,
        permissions: Vec<Permission>,
        /// A bcrypt hash; the plain password never reaches the domain.
        password_hash: String,
        at: DateTime<Utc>,
    },
    Rename {
        name: String,
        at: DateTime<Utc>,
    },
    /// Changes the role and the permissions together (a super admin's permissions follow
    /// from its role).
    ChangeRole {
        role: Role,
        permissions: Vec<Permission>,
        /// Active super admins right now, this one included if it is one.
        active_super_admins: u32,
        at: DateTime<Utc>,
    },
    Deactivate {
        /// Active super admins right now, this one included if it is one.
        active_super_admins: u32,
        at: DateTime<Utc>,
    },
    Reactivate {
        at: DateTime<Utc>,
    },
    /// The admin's own change or a reset by another admin (the actor in the metadata tells
    /// which).
    ChangePassword {
        password_hash: String,
        at: DateTime<Utc>,
    },
    /// A successful login, for the audit trail; the password was checked by the caller.
    RecordLogin {
        ip: Option<String>,
        user_agent: Option<String>,
        at: DateTime<Utc>,
    },
    /// Several changes at once (`PATCH /v1/admin/users/:id`): all are decided before any
    /// event is written, so the request applies completely or not at all.
    Update(AdminUpdate),
}

/// The parts of [`AdminCommand::Update`]; `None` leaves a field alone.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AdminUpdate {
    pub name: Option<String>,
    /// With `permissions: None` the current permissions are kept.
    pub role: Option<Role>,
    pub permissions: Option<Vec<Permission>>,
    pub active: Option<bool>,
    pub password_hash: Option<String>,
    pub active_super_admins: u32,
    /// Who asks, when it is another admin: the change is refused unless they hold at least
    /// the role and permissions the target holds *now* — decided here, against the stream's
    /// state, so a concurrent grant to the target cannot slip between check and write.
    pub actor: Option<ActorRights>,
    pub at: DateTime<Utc>,
}

/// The rights of the admin who issues a command.
#[derive(Clone, Debug, PartialEq)]
pub struct ActorRights {
    pub role: Role,
    pub permissions: Vec<Permission>,
}

impl ActorRights {
    /// Whether these rights cover everything an admin with `role` and `permissions` holds.
    pub fn cover(&self, role: Role, permissions: &[Permission]) -> bool {
        if self.role == Role::SuperAdmin {
            return true;
        }
        role != Role::SuperAdmin
            && super::effective_permissions(role, permissions)
                .iter()
                .all(|p| self.permissions.contains(p))
    }
}
