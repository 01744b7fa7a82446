//! Admin tokens: short-lived HS256 access JWTs and opaque refresh tokens.
//!
//! * The access token (15 minutes) names the admin (`sub`), the session (`sid`, the refresh
//!   token family), the role and permissions at issue time, `iat`, `exp` and a `jti`. Every
//!   request still loads the admin and the session from the database, so a deactivation, a
//!   role change or a logout takes effect at once rather than when the token runs out.
//! * The refresh token is 32 random bytes, base64url: not a JWT, since nothing but this
//!   service ever reads it and it must be revocable. Only its SHA-256 is stored.
//!
//! jsonwebtoken 10+ needs a crypto provider. Its built-in ones pull either the whole
//! RustCrypto RSA/ECDSA/EdDSA stack or aws-lc; we need HMAC-SHA256 only, so this module
//! installs a provider that does exactly that with the `hmac`/`sha2` crates sqlx already
//! links, and refuses every other algorithm.

use std::sync::Once;

use aggregates::admin::{Permission, Role};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use jsonwebtoken::crypto::{CryptoProvider, JwtSigner, JwtVerifier, KeyUtils};
use jsonwebtoken::errors::{ErrorKind, new_error};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::errors;
use crate::error::AppError;

/// Access token lifetime (the `expiresIn: 900` of the login answer).
pub const ACCESS_TOKEN_TTL_SECS: i64 = 15 * 60;
/// Refresh token lifetime; each rotation starts a new one.
pub const REFRESH_TOKEN_TTL_DAYS: i64 = 7;

const ISSUER: &str = "domizan-gateway";
const AUDIENCE: &str = "domizan-admin";

/// What an access token says.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AccessClaims {
    /// The admin id.
    pub sub: Uuid,
    /// The session: the refresh token family this token was issued with.
    pub sid: Uuid,
    pub role: Role,
    pub permissions: Vec<Permission>,
    pub iat: i64,
    pub exp: i64,
    pub jti: Uuid,
    pub iss: String,
    pub aud: String,
}

/// Signs and checks access tokens with `JWT_SECRET`.
pub struct AccessTokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl AccessTokens {
    pub fn new(secret: &[u8]) -> Self {
        install_crypto_provider();
        let mut validation = Validation::new(Algorithm::HS256);
        // Expiry is checked below, by us, so an expired token can be told apart (with
        // `expiredAt`) from a forged one; jsonwebtoken would also allow 60 s of leeway.
        validation.validate_exp = false;
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "sub", "iss", "aud"]);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
        }
    }

    /// A fresh access token for `admin_id` in session `sid`, valid from `now`.
    pub fn issue(
        &self,
        admin_id: Uuid,
        sid: Uuid,
        role: Role,
        permissions: &[Permission],
        now: DateTime<Utc>,
    ) -> Result<String, AppError> {
        let claims = AccessClaims {
            sub: admin_id,
            sid,
            role,
            permissions: permissions.to_vec(),
            iat: now.timestamp(),
            exp: now.timestamp() + ACCESS_TOKEN_TTL_SECS,
            jti: Uuid::new_v4(),
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(AppError::internal)
    }

    /// The claims of a genuine, unexpired token: else 401 `INVALID_TOKEN`, or
    /// `TOKEN_EXPIRED` with `expiredAt` for a genuine token past its `exp`.
    pub fn verify(&self, token: &str, now: DateTime<Utc>) -> Result<AccessClaims, AppError> {
        let claims = jsonwebtoken::decode::<AccessClaims>(token, &self.decoding, &self.validation)
            .map_err(|_| errors::invalid_token())?
            .claims;
        if claims.exp <= now.timestamp() {
            let expired_at = DateTime::from_timestamp(claims.exp, 0).unwrap_or(now);
            return Err(errors::token_expired(expired_at));
        }
        Ok(claims)
    }
}

/// A new refresh token and the SHA-256 that is stored in its place.
pub fn new_refresh_token() -> (String, [u8; 32]) {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let token = URL_SAFE_NO_PAD.encode(bytes);
    let hash = refresh_token_hash(&token);
    (token, hash)
}

/// What a presented refresh token is looked up by. 256 random bits need no salt or slow
/// hash: the digest only keeps a database leak from handing out live sessions.
pub fn refresh_token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

// ---- the HS256-only crypto provider ---------------------------------------------------

type HmacSha256 = Hmac<Sha256>;

struct Hs256Signer(HmacSha256);

impl jsonwebtoken::signature::Signer<Vec<u8>> for Hs256Signer {
    fn try_sign(&self, message: &[u8]) -> Result<Vec<u8>, jsonwebtoken::signature::Error> {
        let mut mac = self.0.clone();
        mac.update(message);
        Ok(mac.finalize().into_bytes().to_vec())
    }
}

impl JwtSigner for Hs256Signer {
    fn algorithm(&self) -> Algorithm {
        Algorithm::HS256
    }
}

struct Hs256Verifier(HmacSha256);

impl jsonwebtoken::signature::Verifier<Vec<u8>> for Hs256Verifier {
    fn verify(
        &self,
        message: &[u8],
        signature: &Vec<u8>,
    ) -> Result<(), jsonwebtoken::signature::Error> {
        let mut mac = self.0.clone();
        mac.update(message);
        // `verify_slice` compares in constant time.
        mac.verify_slice(signature)
            .map_err(|_| jsonwebtoken::signature::Error::new())
    }
}

impl JwtVerifier for Hs256Verifier {
    fn algorithm(&self) -> Algorithm {
        Algorithm::HS256
    }
}

fn hs256_signer(
    algorithm: &Algorithm,
    key: &EncodingKey,
) -> jsonwebtoken::errors::Result<Box<dyn JwtSigner>> {
    if *algorithm != Algorithm::HS256 || key.family() != AlgorithmFamily::Hmac {
        return Err(new_error(ErrorKind::InvalidAlgorithm));
    }
    let mac = HmacSha256::new_from_slice(key.as_bytes())
        .map_err(|_| new_error(ErrorKind::InvalidKeyFormat))?;
    Ok(Box::new(Hs256Signer(mac)))
}

fn hs256_verifier(
    algorithm: &Algorithm,
    key: &DecodingKey,
) -> jsonwebtoken::errors::Result<Box<dyn JwtVerifier>> {
    if *algorithm != Algorithm::HS256 || key.family() != AlgorithmFamily::Hmac {
        return Err(new_error(ErrorKind::InvalidAlgorithm));
    }
    let mac = HmacSha256::new_from_slice(key.try_get_as_bytes()?)
        .map_err(|_| new_error(ErrorKind::InvalidKeyFormat))?;
    Ok(Box::new(Hs256Verifier(mac)))
}

static HS256_ONLY: CryptoProvider = CryptoProvider {
    signer_factory: hs256_signer,
    verifier_factory: hs256_verifier,
    // JWK helpers are for asymmetric keys; we have none.
    key_utils: KeyUtils::new_unimplemented(),
};

/// Makes the HS256 provider jsonwebtoken's process-wide default. Idempotent; must run
/// before the first encode or decode (every [`AccessTokens::new`] does it). Tests that
/// forge tokens with jsonwebtoken call it too.
pub fn install_crypto_provider() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        if HS256_ONLY.install_default().is_err() {
            tracing::warn!("a jsonwebtoken crypto provider was installed before ours");
        }
    });
}

#[cfg(test)]
mod tests {
    use chrono::Duration;

    use super::*;

    fn tokens() -> AccessTokens {
        AccessTokens::new(b"unit-test-secret-0123456789abcdef")
    }

    #[test]
    fn an_issued_token_verifies_with_its_claims() {
        let now = Utc::now();
        let (admin, sid) = (Uuid::new_v4(), Uuid::new_v4());
        let token = tokens()
            .issue(admin, sid, Role::Admin, &[Permission::Leads], now)
            .unwrap();
        let claims = tokens().verify(&token, now).unwrap();
        assert_eq!((claims.sub, claims.sid), (admin, sid));
        assert_eq!(claims.exp - claims.iat, 900);
        assert_eq!(claims.permissions, vec![Permission::Leads]);
    }

    #[test]
    fn a_token_past_its_expiry_is_expired_not_invalid() {
        let then = Utc::now() - Duration::minutes(20);
        let token = tokens()
            .issue(Uuid::new_v4(), Uuid::new_v4(), Role::Viewer, &[], then)
            .unwrap();
        let error = tokens().verify(&token, Utc::now()).unwrap_err();
        assert_eq!(error.code(), "TOKEN_EXPIRED");
    }

    #[test]
    fn a_token_signed_with_another_key_or_tampered_with_is_invalid() {
        let now = Utc::now();
        let other = AccessTokens::new(b"another-secret-0123456789abcdefgh");
        let token = other
            .issue(Uuid::new_v4(), Uuid::new_v4(), Role::Admin, &[], now)
            .unwrap();
        assert_eq!(
            tokens().verify(&token, now).unwrap_err().code(),
            "INVALID_TOKEN"
        );
        let mine = tokens()
            .issue(Uuid::new_v4(), Uuid::new_v4(), Role::Viewer, &[], now)
            .unwrap();
        let mut parts: Vec<String> = mine.split('.').map(str::to_string).collect();
        let claims = String::from_utf8(URL_SAFE_NO_PAD.decode(&parts[1]).unwrap())
            .unwrap()
            .replace("viewer", "super_admin");
        parts[1] = URL_SAFE_NO_PAD.encode(claims);
        assert_eq!(
            tokens().verify(&parts.join("."), now).unwrap_err().code(),
            "INVALID_TOKEN"
        );
        assert_eq!(
            tokens().verify("garbage", now).unwrap_err().code(),
            "INVALID_TOKEN"
        );
    }

    #[test]
    fn an_unsigned_or_other_algorithm_token_is_invalid() {
        let now = Utc::now();
        let claims = serde_json::json!({
            "sub": Uuid::new_v4(), "sid": Uuid::new_v4(), "role": "super_admin",
            "permissions": [], "iat": now.timestamp(), "exp": now.timestamp() + 60,
            "jti": Uuid::new_v4(), "iss": ISSUER, "aud": AUDIENCE,
        });
        let body = URL_SAFE_NO_PAD.encode(claims.to_string());
        for header in [
            r#"{"alg":"none","typ":"JWT"}"#,
            r#"{"alg":"HS512","typ":"JWT"}"#,
        ] {
            let token = format!("{}.{body}.", URL_SAFE_NO_PAD.encode(header));
            assert_eq!(
                tokens().verify(&token, now).unwrap_err().code(),
                "INVALID_TOKEN"
            );
        }
    }

    #[test]
    fn refresh_tokens_are_random_and_only_their_digest_is_kept() {
        let (a, hash_a) = new_refresh_token();
        let (b, _) = new_refresh_token();
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        assert_eq!(refresh_token_hash(&a), hash_a);
    }
}
