//! Admin users: who may use the admin panel, with which role and permissions.

use serde::{Deserialize, Serialize};

/// SPEC §4 roles. `viewer` reads only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    SuperAdmin,
    Admin,
    Viewer,
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
