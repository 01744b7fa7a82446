//! Admin passwords: the policy, bcrypt (cost 12) off the async threads, and a check that
//! takes as long for an unknown e-mail as for a known one.

use secrecy::{ExposeSecret, SecretString};

use crate::error::AppError;

/// SPEC §4: bcrypt cost 12 (about a quarter of a second per hash on a server core).
pub const BCRYPT_COST: u32 = 12;
/// Fewer characters are too easy to guess.
pub const MIN_PASSWORD_CHARS: usize = 10;
/// bcrypt reads at most 72 bytes; a longer password would be silently cut, so it is refused.
pub const MAX_PASSWORD_BYTES: usize = 72;

/// A cost-12 hash of a random password nobody knows. Checking a password against it costs
/// what checking a real hash costs, so "unknown e-mail" and "wrong password" cannot be
/// told apart by timing.
const DUMMY_HASH: &str = "$2b$12$zMc.i/FLUlc/dRTPJCbvi.YLovuBpDCICyaPveCx/Rh3NOhQgDKza";

/// 422 `VALIDATION_ERROR` (`field: password`) unless the password fits the policy.
pub fn check_policy(password: &str) -> Result<(), AppError> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(AppError::validation(
            "password",
            format!("Şifre en az {MIN_PASSWORD_CHARS} karakter olmalı."),
        ));
    }
    if password.chars().any(char::is_control) {
        return Err(AppError::validation(
            "password",
            "Şifre kontrol karakteri içeremez.",
        ));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(AppError::validation(
            "password",
            format!("Şifre en fazla {MAX_PASSWORD_BYTES} bayt olabilir."),
        ));
    }
    Ok(())
}

/// bcrypt-hashes `password` on the blocking pool (it takes long enough to stall a runtime
/// thread). bcrypt keys on at most 72 bytes; the crate's non-truncating variant counts a
/// terminator and so refuses exactly 72, which the policy allows — we refuse longer
/// passwords ourselves and hash the rest whole.
pub async fn hash(password: SecretString) -> Result<String, AppError> {
    if password.expose_secret().len() > MAX_PASSWORD_BYTES {
        return Err(AppError::validation(
            "password",
            format!("Şifre en fazla {MAX_PASSWORD_BYTES} bayt olabilir."),
        ));
    }
    tokio::task::spawn_blocking(move || bcrypt::hash(password.expose_secret(), BCRYPT_COST))
        .await
        .map_err(AppError::internal)?
        .map_err(AppError::internal)
}

/// Whether `password` matches `hash`. With no hash (unknown e-mail) the same work is done
/// against [`DUMMY_HASH`] and the answer is `false`.
pub async fn verify(password: SecretString, hash: Option<String>) -> Result<bool, AppError> {
    tokio::task::spawn_blocking(move || {
        let known = hash.is_some();
        let hash = hash.as_deref().unwrap_or(DUMMY_HASH);
        // A password over 72 bytes cannot match (we never hash one, and bcrypt would compare
        // only its first 72); an unreadable stored hash counts as a mismatch rather than an
        // error the client could tell apart.
        let secret = password.expose_secret();
        let too_long = secret.len() > MAX_PASSWORD_BYTES;
        let candidate = if too_long { "" } else { secret };
        let matched = bcrypt::verify(candidate, hash).unwrap_or_else(|e| {
            if known {
                tracing::error!(error = %e, "stored admin password hash is unreadable");
            }
            false
        }) && !too_long;
        known && matched
    })
    .await
    .map_err(AppError::internal)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dummy_hash_is_a_cost_12_bcrypt_hash() {
        let parts: Result<bcrypt::HashParts, _> = DUMMY_HASH.parse();
        assert_eq!(parts.map(|p| p.get_cost()).ok(), Some(BCRYPT_COST));
    }

    #[test]
    fn short_and_over_long_passwords_are_refused() {
        assert_eq!(check_policy("kısa").unwrap_err().code(), "VALIDATION_ERROR");
        assert!(check_policy("yeterince-uzun").is_ok());
        assert!(check_policy(&"ş".repeat(37)).is_err());
    }

    #[tokio::test]
    async fn a_password_of_exactly_72_bytes_is_hashed_whole() {
        let longest = "a".repeat(71) + "b";
        assert!(check_policy(&longest).is_ok());
        let hash = hash(SecretString::from(longest.clone())).await.unwrap();
        assert!(
            verify(SecretString::from(longest.clone()), Some(hash.clone()))
                .await
                .unwrap()
        );
        let last_differs = "a".repeat(72);
        assert!(
            !verify(SecretString::from(last_differs), Some(hash.clone()))
                .await
                .unwrap()
        );
        let longer = longest + "c";
        assert!(
            !verify(SecretString::from(longer), Some(hash))
                .await
                .unwrap()
        );
    }

    #[tokio::test]
    async fn a_hash_verifies_its_password_only() {
        let hash = hash(SecretString::from("Doğru-Şifre-1")).await.unwrap();
        assert!(hash.starts_with("$2b$12$"));
        assert!(
            verify(SecretString::from("Doğru-Şifre-1"), Some(hash.clone()))
                .await
                .unwrap()
        );
        assert!(
            !verify(SecretString::from("Yanlış-Şifre-1"), Some(hash))
                .await
                .unwrap()
        );
        assert!(
            !verify(SecretString::from("Doğru-Şifre-1"), None)
                .await
                .unwrap()
        );
    }
}
