//! Why an admin command was refused. The gateway maps each variant to one HTTP answer.

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AdminError {
    /// The stream already holds an admin (ids are derived from the e-mail, so this is also
    /// "the e-mail is taken").
    #[error("an admin with this id already exists")]
    AlreadyExists,
    #[error("no such admin")]
    NotFound,
    #[error("the admin is deactivated")]
    Deactivated,
    #[error("the last active super admin cannot be deactivated or demoted")]
    LastSuperAdmin,
    #[error("the e-mail address is not valid")]
    InvalidEmail,
    #[error("the name must be 2 to 100 characters")]
    InvalidName,
    #[error("the actor holds less than the admin they would change")]
    Forbidden,
    #[error("a password hash is required")]
    MissingPasswordHash,
}
