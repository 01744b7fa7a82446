//! The answers of admin access, and the one place where `AdminUser` refusals become HTTP.

use aggregates::admin::AdminError;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use eventstore::CommandError;

use crate::error::AppError;

pub fn invalid_admin_secret() -> AppError {
    AppError::new(
        StatusCode::UNAUTHORIZED,
        "INVALID_ADMIN_SECRET",
        "Geçersiz veya eksik yönetici anahtarı.",
    )
}

pub fn invalid_token() -> AppError {
    AppError::new(
        StatusCode::UNAUTHORIZED,
        "INVALID_TOKEN",
        "Geçersiz veya eksik oturum anahtarı. Lütfen tekrar giriş yapın.",
    )
}

pub fn token_expired(expired_at: DateTime<Utc>) -> AppError {
    AppError::new(
        StatusCode::UNAUTHORIZED,
        "TOKEN_EXPIRED",
        "Oturumunuzun süresi doldu. Lütfen tekrar giriş yapın.",
    )
    .with("expiredAt", crate::time::rfc3339(expired_at))
}

pub fn invalid_credentials() -> AppError {
    AppError::new(
        StatusCode::UNAUTHORIZED,
        "INVALID_CREDENTIALS",
        "E-posta adresi veya şifre hatalı.",
    )
}

pub fn account_deactivated() -> AppError {
    AppError::new(
        StatusCode::UNAUTHORIZED,
        "ACCOUNT_DEACTIVATED",
        "Bu yönetici hesabı devre dışı bırakılmış.",
    )
}

pub fn forbidden() -> AppError {
    AppError::new(
        StatusCode::FORBIDDEN,
        "FORBIDDEN",
        "Bu işlem için yetkiniz yok.",
    )
}

pub fn email_taken() -> AppError {
    AppError::new(
        StatusCode::CONFLICT,
        "EMAIL_TAKEN",
        "Bu e-posta adresiyle kayıtlı bir yönetici zaten var.",
    )
    .with("field", "email")
}

pub fn last_super_admin() -> AppError {
    AppError::new(
        StatusCode::CONFLICT,
        "LAST_SUPER_ADMIN",
        "Son aktif süper yönetici devre dışı bırakılamaz veya rolü düşürülemez.",
    )
}

pub fn admin_deactivated() -> AppError {
    AppError::new(
        StatusCode::CONFLICT,
        "ADMIN_DEACTIVATED",
        "Bu yönetici devre dışı. Değiştirmek için önce yeniden etkinleştirin.",
    )
}

/// An `AdminUser` command that did not go through.
pub fn from_command(error: CommandError<AdminError>) -> AppError {
    match error {
        CommandError::Domain(e) => from_domain(e),
        CommandError::Conflict(_) => AppError::concurrent_modification(),
        CommandError::Store(e) => e.into(),
    }
}

pub fn from_domain(error: AdminError) -> AppError {
    match error {
        AdminError::AlreadyExists => email_taken(),
        AdminError::NotFound => AppError::not_found(),
        AdminError::Deactivated => admin_deactivated(),
        AdminError::LastSuperAdmin => last_super_admin(),
        AdminError::InvalidEmail => {
            AppError::validation("email", "Geçerli bir e-posta adresi girin.")
        }
        AdminError::Forbidden => forbidden(),
        AdminError::InvalidName => {
            AppError::validation("name", "Ad 2 ile 100 karakter arasında olmalı.")
        }
        // The gateway always hashes before it asks; an empty hash is our bug.
        AdminError::MissingPasswordHash => AppError::internal("admin command without a hash"),
    }
}
