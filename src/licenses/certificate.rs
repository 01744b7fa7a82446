//! Signed offline license certificates (issue 12; the anchor is Keygen's signed license
//! files): what a successful verify of an approved device hands the desktop so it keeps
//! working through an internet outage until `validUntil`, and `GET /v1/licenses/public-key`,
//! the keys that check them.
//!
//! A certificate is a JWS in compact serialization (RFC 7515) signed with Ed25519, its
//! algorithm named `Ed25519` as RFC 9864 fully specifies it:
//!
//! ```text
//! base64url(header) "." base64url(payload) "." base64url(Ed25519(header_b64 "." payload_b64))
//! header  = {"alg":"Ed25519","kid":"<8 hex>","typ":"domizan-license.v1"}
//! payload = {"licenseId","deviceId","fingerprint","package","features","expiresAt","issuedAt","validUntil"}
//! ```
//!
//! It is deliberately **not a JWT**: the payload has no `exp`/`iat`/`aud` claims a JWT
//! library would check, so such a library would call a lapsed certificate valid; and a
//! certificate is never a credential for the API. The explicit `typ` (RFC 8725 §3.11) keeps it
//! from being taken for anything else. WebCrypto (`crypto.subtle.verify({name: "Ed25519"})`)
//! or `node:crypto` (`crypto.verify(null, …)`) check it with no library; the README shows how.
//!
//! The key id is the first 8 hex digits of SHA-256 of the raw 32-byte public key, so anyone
//! holding a public key can compute it. Retired keys (`LICENSE_SIGNING_PREVIOUS_KEYS`) stay
//! listed after the current one, so certificates signed before a rotation still verify until
//! their `validUntil`.

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use chrono::{DateTime, SecondsFormat, SubsecRound, TimeDelta, Utc};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::state::AppState;

/// The JWS `alg` of every certificate (RFC 9864: Ed25519, pure, no pre-hash).
pub const ALGORITHM: &str = "Ed25519";
/// The JWS `typ` of every certificate; a new payload format gets a new one.
pub const TYPE: &str = "domizan-license.v1";
/// Offline grace when `LICENSE_OFFLINE_GRACE_DAYS` is unset.
pub const DEFAULT_GRACE_DAYS: i64 = 7;
/// The DER prefix that makes a raw Ed25519 public key a SubjectPublicKeyInfo
/// (RFC 8410: SEQUENCE { SEQUENCE { OID 1.3.101.112 }, BIT STRING (32 bytes) }).
const SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];
/// How long clients may cache the key list: rotations are planned days ahead.
const PUBLIC_KEY_CACHE: &str = "public, max-age=3600";

/// Signs certificates with the current key and knows every key that may still verify one.
pub struct Certifier {
    signing: SigningKey,
    kid: String,
    /// Retired keys, newest first, without the current one.
    previous: Vec<(String, VerifyingKey)>,
    grace: TimeDelta,
}

/// What a certificate says. Timestamps are whole milliseconds (SPEC §1), so a certificate
/// read back equals the claims it was signed from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CertificateClaims {
    pub license_id: Uuid,
    pub device_id: String,
    /// The device fingerprint (64 hex digits) the desktop checks against its own.
    pub fingerprint: String,
    pub package: String,
    pub features: Vec<String>,
    /// When the license itself expires.
    #[serde(serialize_with = "millis")]
    pub expires_at: DateTime<Utc>,
    #[serde(serialize_with = "millis")]
    pub issued_at: DateTime<Utc>,
    /// The earlier of `expires_at` and `issued_at` + the offline grace: the desktop stops
    /// here unless it has verified online again.
    #[serde(serialize_with = "millis")]
    pub valid_until: DateTime<Utc>,
}

/// Whom and what a certificate is for; [`Certifier::claims`] adds the times.
#[derive(Clone, Debug)]
pub struct CertificateSubject {
    pub license_id: Uuid,
    pub device_id: String,
    pub fingerprint: String,
    pub package: String,
    pub features: Vec<String>,
    pub expires_at: DateTime<Utc>,
}

/// Why a certificate was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum CertificateError {
    #[error("not a certificate: {0}")]
    Malformed(&'static str),
    #[error("the certificate's header is not {{alg: Ed25519, typ: {TYPE}}}")]
    UnsupportedHeader,
    #[error("the certificate was signed with an unknown key {0:?}")]
    UnknownKey(String),
    #[error("the certificate's signature does not match")]
    BadSignature,
}

#[derive(Serialize)]
struct Header<'a> {
    alg: &'a str,
    kid: &'a str,
    typ: &'a str,
}

impl Certifier {
    /// `previous_public_keys`: retired keys still accepted, newest first; the current key
    /// and repeats are dropped.
    pub fn new(
        signing_key: SigningKey,
        previous_public_keys: Vec<VerifyingKey>,
        grace: TimeDelta,
    ) -> Self {
        let current = signing_key.verifying_key();
        let mut previous: Vec<(String, VerifyingKey)> = Vec::new();
        for key in previous_public_keys {
            if key != current && !previous.iter().any(|(_, k)| *k == key) {
                previous.push((key_id(&key), key));
            }
        }
        Self {
            kid: key_id(&current),
            signing: signing_key,
            previous,
            grace,
        }
    }

    /// The id of the current signing key.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn grace(&self) -> TimeDelta {
        self.grace
    }

    /// The claims of a certificate issued at `now`: `valid_until` is the earlier of the
    /// license's expiry and `now` + the offline grace.
    pub fn claims(&self, subject: CertificateSubject, now: DateTime<Utc>) -> CertificateClaims {
        let issued_at = now.trunc_subsecs(3);
        let expires_at = subject.expires_at.trunc_subsecs(3);
        let valid_until = expires_at.min(issued_at + self.grace);
        CertificateClaims {
            license_id: subject.license_id,
            device_id: subject.device_id,
            fingerprint: subject.fingerprint,
            package: subject.package,
            features: subject.features,
            expires_at,
            issued_at,
            valid_until,
        }
    }

    /// The compact certificate `header.payload.signature`.
    pub fn sign(&self, claims: &CertificateClaims) -> String {
        let header = Header {
            alg: ALGORITHM,
            kid: &self.kid,
            typ: TYPE,
        };
        // Serialising these plain structs cannot fail.
        let header = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header).expect("header"));
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).expect("claims"));
        let signing_input = format!("{header}.{payload}");
        let signature = self.signing.sign(signing_input.as_bytes());
        format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature.to_bytes())
        )
    }

    /// Checks a certificate against the current and retired keys and returns its claims.
    /// Does not judge `valid_until`: that is the holder's clock's business.
    pub fn verify(&self, certificate: &str) -> Result<CertificateClaims, CertificateError> {
        let mut parts = certificate.split('.');
        let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(CertificateError::Malformed("not three dot-separated parts"));
        };
        // Strict base64url: no padding, and unused trailing bits must be zero, so each
        // certificate has exactly one spelling.
        let decode = |part: &str| {
            URL_SAFE_NO_PAD
                .decode(part)
                .map_err(|_| CertificateError::Malformed("a part is not base64url"))
        };
        let header: Value = serde_json::from_slice(&decode(header_b64)?)
            .map_err(|_| CertificateError::Malformed("the header is not JSON"))?;
        let field = |name: &str| header.get(name).and_then(Value::as_str);
        // No extension is understood, so any `crit` is refused (RFC 7515 §4.1.11).
        if field("alg") != Some(ALGORITHM)
            || field("typ") != Some(TYPE)
            || header.get("crit").is_some()
        {
            return Err(CertificateError::UnsupportedHeader);
        }
        let kid = field("kid").ok_or(CertificateError::Malformed("the header names no kid"))?;
        let key = self
            .verifying_keys()
            .find(|(known, _)| *known == kid)
            .map(|(_, key)| key)
            .ok_or_else(|| CertificateError::UnknownKey(kid.to_string()))?;
        let signature = Signature::from_slice(&decode(signature_b64)?)
            .map_err(|_| CertificateError::Malformed("the signature is not 64 bytes"))?;
        let signing_input = &certificate[..header_b64.len() + 1 + payload_b64.len()];
        key.verify_strict(signing_input.as_bytes(), &signature)
            .map_err(|_| CertificateError::BadSignature)?;
        serde_json::from_slice(&decode(payload_b64)?)
            .map_err(|_| CertificateError::Malformed("the payload is not the expected JSON"))
    }

    /// Every key that may verify a certificate, current first: (kid, key).
    fn verifying_keys(&self) -> impl Iterator<Item = (&str, VerifyingKey)> {
        std::iter::once((self.kid.as_str(), self.signing.verifying_key()))
            .chain(self.previous.iter().map(|(kid, key)| (kid.as_str(), *key)))
    }

    /// `{keys: [{kid, alg, publicKey, spki, current}]}`, current key first. `publicKey` is the
    /// raw key in base64url (WebCrypto `importKey("raw")`); `spki` the same key as standard
    /// base64 DER SubjectPublicKeyInfo (`importKey("spki")`, `crypto.createPublicKey`).
    pub fn public_keys_json(&self) -> Value {
        let keys: Vec<Value> = self
            .verifying_keys()
            .enumerate()
            .map(|(i, (kid, key))| {
                json!({
                    "kid": kid,
                    "alg": ALGORITHM,
                    "publicKey": URL_SAFE_NO_PAD.encode(key.as_bytes()),
                    "spki": STANDARD.encode(spki(&key)),
                    "current": i == 0,
                })
            })
            .collect();
        json!({ "keys": keys })
    }
}

impl std::fmt::Debug for Certifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the signing key.
        f.debug_struct("Certifier")
            .field("kid", &self.kid)
            .field(
                "previous",
                &self.previous.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            )
            .field("grace", &self.grace)
            .finish_non_exhaustive()
    }
}

/// First 8 hex digits of SHA-256 of the raw public key.
pub fn key_id(key: &VerifyingKey) -> String {
    Sha256::digest(key.as_bytes())[..4]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The key as DER SubjectPublicKeyInfo.
fn spki(key: &VerifyingKey) -> Vec<u8> {
    [&SPKI_PREFIX[..], key.as_bytes()].concat()
}

fn millis<S: serde::Serializer>(at: &DateTime<Utc>, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&at.to_rfc3339_opts(SecondsFormat::Millis, true))
}

/// `GET /v1/licenses/public-key`: public, no credentials.
pub fn router() -> Router<AppState> {
    Router::new().route("/v1/licenses/public-key", get(get_public_keys))
}

async fn get_public_keys(State(state): State<AppState>) -> impl IntoResponse {
    let keys = state.config.license_certifier.public_keys_json();
    (
        // The security-headers layer adds `no-store` only where a handler set nothing.
        [(
            header::CACHE_CONTROL,
            HeaderValue::from_static(PUBLIC_KEY_CACHE),
        )],
        Json(json!({"success": true, "data": keys})),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn certifier(seed: u8) -> Certifier {
        Certifier::new(key(seed), Vec::new(), TimeDelta::days(7))
    }

    fn now() -> DateTime<Utc> {
        "2026-12-02T10:00:00.123456Z".parse().unwrap()
    }

    fn subject(expires_at: &str) -> CertificateSubject {
        CertificateSubject {
            license_id: Uuid::from_u128(0x0194_0000_0000_7000_8000_0000_0000_0001),
            device_id: "dev_0001".into(),
            fingerprint: "ab".repeat(32),
            package: "professional".into(),
            features: vec!["ocr".into(), "telegram".into()],
            expires_at: expires_at.parse().unwrap(),
        }
    }

    #[test]
    fn a_signed_certificate_verifies_to_the_claims_it_was_signed_from() {
        let certifier = certifier(1);
        let claims = certifier.claims(subject("2027-12-02T00:00:00Z"), now());
        let certificate = certifier.sign(&claims);
        assert_eq!(certificate.split('.').count(), 3);
        assert_eq!(certifier.verify(&certificate), Ok(claims.clone()));
        assert_eq!(
            claims.issued_at.to_rfc3339(),
            "2026-12-02T10:00:00.123+00:00"
        );
    }

    #[test]
    fn the_header_and_payload_are_the_documented_json() {
        let certifier = certifier(1);
        let claims = certifier.claims(subject("2027-12-02T00:00:00Z"), now());
        let certificate = certifier.sign(&claims);
        let parts: Vec<&str> = certificate.split('.').collect();
        let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap())
            .expect("header JSON");
        assert_eq!(
            header,
            json!({"alg": "Ed25519", "kid": certifier.kid(), "typ": "domizan-license.v1"})
        );
        let payload: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(
            payload,
            json!({
                "licenseId": "01940000-0000-7000-8000-000000000001",
                "deviceId": "dev_0001",
                "fingerprint": "ab".repeat(32),
                "package": "professional",
                "features": ["ocr", "telegram"],
                "expiresAt": "2027-12-02T00:00:00.000Z",
                "issuedAt": "2026-12-02T10:00:00.123Z",
                "validUntil": "2026-12-09T10:00:00.123Z",
            })
        );
    }

    #[test]
    fn valid_until_is_now_plus_grace_while_the_license_runs_longer() {
        let claims = certifier(1).claims(subject("2027-12-02T00:00:00Z"), now());
        assert_eq!(claims.valid_until, claims.issued_at + TimeDelta::days(7));
    }

    #[test]
    fn valid_until_is_the_expiry_when_the_license_ends_within_the_grace() {
        let claims = certifier(1).claims(subject("2026-12-04T08:30:00Z"), now());
        assert_eq!(
            claims.valid_until,
            "2026-12-04T08:30:00Z".parse::<DateTime<Utc>>().unwrap()
        );
        let longer = Certifier::new(key(1), Vec::new(), TimeDelta::days(30))
            .claims(subject("2026-12-20T00:00:00Z"), now());
        assert_eq!(longer.valid_until, longer.expires_at);
    }

    #[test]
    fn any_changed_character_is_refused() {
        let certifier = certifier(1);
        let certificate = certifier.sign(&certifier.claims(subject("2027-12-02T00:00:00Z"), now()));
        for (i, c) in certificate.char_indices() {
            // Another base64url character (or, for a dot, a letter): still well-formed text.
            let other = match c {
                'A' => 'B',
                '.' => 'A',
                _ => 'A',
            };
            let mut changed = certificate.clone();
            changed.replace_range(i..i + 1, &other.to_string());
            assert!(
                certifier.verify(&changed).is_err(),
                "character {i} ({c} → {other}) changed and still verified"
            );
        }
    }

    #[test]
    fn a_changed_payload_byte_is_refused_as_a_bad_signature() {
        let certifier = certifier(1);
        let claims = certifier.claims(subject("2027-12-02T00:00:00Z"), now());
        let certificate = certifier.sign(&claims);
        let parts: Vec<&str> = certificate.split('.').collect();
        let payload = String::from_utf8(URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        let forged = payload.replace("2026-12-09", "2036-12-09");
        assert_ne!(forged, payload);
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            URL_SAFE_NO_PAD.encode(forged),
            parts[2]
        );
        assert_eq!(
            certifier.verify(&forged),
            Err(CertificateError::BadSignature)
        );
    }

    #[test]
    fn a_certificate_of_an_unknown_key_is_refused() {
        let stranger = certifier(2);
        let certificate = stranger.sign(&stranger.claims(subject("2027-12-02T00:00:00Z"), now()));
        assert_eq!(
            certifier(1).verify(&certificate),
            Err(CertificateError::UnknownKey(stranger.kid().into()))
        );
    }

    #[test]
    fn a_certificate_claiming_a_known_kid_but_signed_by_another_key_is_refused() {
        let ours = certifier(1);
        let claims = ours.claims(subject("2027-12-02T00:00:00Z"), now());
        let theirs = certifier(2).sign(&claims);
        let parts: Vec<&str> = theirs.split('.').collect();
        let header = URL_SAFE_NO_PAD.encode(format!(
            r#"{{"alg":"Ed25519","kid":"{}","typ":"domizan-license.v1"}}"#,
            ours.kid()
        ));
        let signing_input = format!("{header}.{}", parts[1]);
        let signature = key(2).sign(signing_input.as_bytes());
        let forged = format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature.to_bytes())
        );
        assert_eq!(ours.verify(&forged), Err(CertificateError::BadSignature));
    }

    #[test]
    fn other_algorithms_types_and_critical_extensions_are_refused() {
        let certifier = certifier(1);
        let claims = certifier.claims(subject("2027-12-02T00:00:00Z"), now());
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap());
        for header in [
            json!({"alg": "EdDSA", "kid": certifier.kid(), "typ": TYPE}),
            json!({"alg": "none", "kid": certifier.kid(), "typ": TYPE}),
            json!({"alg": "Ed25519", "kid": certifier.kid(), "typ": "JWT"}),
            json!({"alg": "Ed25519", "kid": certifier.kid(), "typ": TYPE, "crit": ["exp"]}),
            json!({"alg": "Ed25519", "kid": certifier.kid(), "typ": TYPE, "crit": null}),
        ] {
            let header = URL_SAFE_NO_PAD.encode(header.to_string());
            let signing_input = format!("{header}.{payload}");
            let signature = key(1).sign(signing_input.as_bytes());
            let token = format!(
                "{signing_input}.{}",
                URL_SAFE_NO_PAD.encode(signature.to_bytes())
            );
            assert_eq!(
                certifier.verify(&token),
                Err(CertificateError::UnsupportedHeader)
            );
        }
        assert!(matches!(
            certifier.verify("a.b"),
            Err(CertificateError::Malformed(_))
        ));
        assert!(matches!(
            certifier.verify("a.b.c.d"),
            Err(CertificateError::Malformed(_))
        ));
    }

    #[test]
    fn after_a_rotation_certificates_of_the_retired_key_still_verify() {
        let old = certifier(1);
        let before = old.sign(&old.claims(subject("2027-12-02T00:00:00Z"), now()));
        let rotated = Certifier::new(key(2), vec![key(1).verifying_key()], TimeDelta::days(7));
        assert!(rotated.verify(&before).is_ok());
        let after = rotated.sign(&rotated.claims(subject("2027-12-02T00:00:00Z"), now()));
        assert!(rotated.verify(&after).is_ok());
        assert_eq!(
            old.verify(&after),
            Err(CertificateError::UnknownKey(rotated.kid().into()))
        );
        // Once the retired key is dropped, its certificates are refused.
        assert_eq!(
            certifier(2).verify(&before),
            Err(CertificateError::UnknownKey(old.kid().into()))
        );
    }

    #[test]
    fn the_key_list_names_the_current_key_first_with_its_sha256_id() {
        let rotated = Certifier::new(
            key(2),
            vec![
                key(1).verifying_key(),
                key(2).verifying_key(),
                key(1).verifying_key(),
            ],
            TimeDelta::days(7),
        );
        let keys = rotated.public_keys_json()["keys"]
            .as_array()
            .unwrap()
            .clone();
        assert_eq!(keys.len(), 2, "the current key and repeats are listed once");
        let current = key(2).verifying_key();
        assert_eq!(keys[0]["kid"], rotated.kid());
        assert_eq!(keys[0]["current"], true);
        assert_eq!(keys[1]["current"], false);
        assert_eq!(keys[1]["kid"], key_id(&key(1).verifying_key()));
        assert_eq!(
            rotated.kid(),
            &format!("{:x}", Sha256::digest(current.as_bytes()))[..8]
        );
        assert_eq!(
            URL_SAFE_NO_PAD
                .decode(keys[0]["publicKey"].as_str().unwrap())
                .unwrap(),
            current.as_bytes()
        );
        let der = STANDARD.decode(keys[0]["spki"].as_str().unwrap()).unwrap();
        assert_eq!(der.len(), 44);
        assert_eq!(&der[12..], current.as_bytes());
    }

    #[test]
    fn the_readme_example_certificate_and_pinned_key_are_what_this_code_makes() {
        let readme = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"));
        let section = readme
            .split("### Signed offline licenses")
            .nth(1)
            .and_then(|rest| rest.split("\n### ").next())
            .expect("README has a Signed offline licenses section");
        // RFC 8032 §7.1, test 1.
        let seed = crate::config::parse_key(
            "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
        )
        .unwrap();
        let certifier = Certifier::new(
            SigningKey::from_bytes(&seed),
            Vec::new(),
            TimeDelta::days(7),
        );
        let example = certifier.sign(&certifier.claims(
            CertificateSubject {
                license_id: "0193f4a2-7c1e-7b3a-9d2f-5e8c1a4b6d70".parse().unwrap(),
                device_id: "dev_01JEXAMPLE".into(),
                fingerprint:
                    "3f9a1c0e7b5d2a8f4e6c1b9d0a7e5c3f2b8d6a4e1c9f7b5d3a0e8c6f4b2d1a9e".into(),
                package: "pro".into(),
                features: vec![
                    "documentAnalysis".into(),
                    "telegramIntegration".into(),
                    "multiDevice".into(),
                ],
                expires_at: "2027-12-02T00:00:00Z".parse().unwrap(),
            },
            "2026-12-02T09:30:00Z".parse().unwrap(),
        ));
        assert!(
            section.contains(&format!("\n{example}\n")),
            "README example is not {example}"
        );
        let key = &certifier.public_keys_json()["keys"][0];
        let pinned = format!(
            "\"{}\": \"{}\"",
            key["kid"].as_str().unwrap(),
            key["publicKey"].as_str().unwrap()
        );
        assert!(section.contains(&pinned), "README does not pin {pinned}");
        assert!(section.contains(&format!("\"typ\":\"{TYPE}\"")));
        assert!(section.contains(&format!("header.typ !== \"{TYPE}\"")));
    }

    #[test]
    fn debug_output_never_shows_the_signing_key() {
        let certifier = certifier(7);
        let debug = format!("{certifier:?}");
        assert!(debug.contains(certifier.kid()), "{debug}");
        let seed_hex = "07".repeat(32);
        assert!(
            !debug.contains(&seed_hex) && !debug.contains("[7, 7"),
            "{debug}"
        );
    }
}
