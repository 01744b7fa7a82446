//! Configuration from the environment (SPEC §2).
//!
//! Secrets are `secrecy` types: their `Debug` is redacted and reading one takes an explicit
//! `expose_secret()`. In production (`GATEWAY_ENV=production`) a missing or weak secret stops
//! the start with a list of every problem; in development missing secrets are generated once
//! and kept in `DATA_DIR/dev-secrets.json` (mode 0600), so restarts keep the same logins.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ed25519_dalek::{SigningKey, VerifyingKey};
use ipnet::IpNet;
use rand::RngCore;
use secrecy::{ExposeSecret, SecretBox, SecretString};
use serde::{Deserialize, Serialize};

use crate::licenses::certificate::{Certifier, DEFAULT_GRACE_DAYS};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Environment {
    Development,
    Production,
}

/// Which browser origins may call a group of routes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origins {
    /// Development default: any `http(s)://localhost[:port]` or `127.0.0.1` origin.
    AnyLocalhost,
    List(Vec<String>),
}

#[derive(Debug)]
pub struct Config {
    pub environment: Environment,
    /// `None`: run the embedded cluster under `data_dir`.
    pub database_url: Option<SecretString>,
    pub data_dir: PathBuf,
    pub bind: SocketAddr,
    pub admin_secret: SecretString,
    pub jwt_secret: SecretString,
    pub encryption_key: SecretBox<[u8; 32]>,
    pub landing_api_keys: Vec<SecretString>,
    pub bootstrap_admin: Option<BootstrapAdmin>,
    pub intelligence_url: Option<String>,
    pub internal_service_key: Option<SecretString>,
    pub telegram_api_base: String,
    pub public_base_url: String,
    pub landing_origins: Origins,
    pub admin_origins: Origins,
    pub trusted_proxies: Vec<IpNet>,
    pub smtp_url: Option<SecretString>,
    pub mail_from: Option<String>,
    /// Admin requests per minute per admin (per client IP before login); SPEC §4 says 100.
    pub admin_rate_limit_per_minute: u32,
    /// How long a new `/ws/admin` socket may take to send its auth message
    /// (`WS_AUTH_TIMEOUT_MS`; SPEC §4 says 5 s, [`crate::live::AUTH_TIMEOUT`]).
    pub ws_auth_timeout: Duration,
    /// How often a `/ws/admin` socket is sent a `PROGRESS` frame with its newest cursor (and
    /// the live feed checks that the database is still on the log's cluster)
    /// (`WS_PROGRESS_INTERVAL_MS`, [`crate::live::PROGRESS_INTERVAL`]).
    pub ws_progress_interval: Duration,
    /// Most events a `since` may be behind the feed; an older one is refused with 4400
    /// `CURSOR_TOO_OLD` and the panel reloads (`WS_MAX_REPLAY_EVENTS`,
    /// [`crate::live::MAX_REPLAY_EVENTS`]).
    pub ws_max_replay_events: i64,
    /// How long a connection may take to send a request's headers, and may sit idle
    /// between requests (`HTTP_IDLE_TIMEOUT_MS`, 30 s): silent sockets are closed.
    pub http_idle_timeout: Duration,
    /// Signs offline license certificates (`LICENSE_SIGNING_KEY`) and knows the retired keys
    /// that still verify them (`LICENSE_SIGNING_PREVIOUS_KEYS`), with the offline grace
    /// (`LICENSE_OFFLINE_GRACE_DAYS`).
    pub license_certifier: Certifier,
    /// Where generated development credentials were written, if any were.
    pub dev_secrets_file: Option<PathBuf>,
}

#[derive(Debug)]
pub struct BootstrapAdmin {
    pub email: String,
    pub password: SecretString,
}

/// Everything wrong with the environment, so one failed start shows all of it.
#[derive(Debug, thiserror::Error)]
#[error("configuration refused:\n  - {}", .problems.join("\n  - "))]
pub struct ConfigError {
    pub problems: Vec<String>,
}

/// Development credentials generated on first start.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DevSecrets {
    admin_secret: String,
    jwt_secret: String,
    encryption_key: String,
    landing_api_key: String,
    bootstrap_admin_email: String,
    bootstrap_admin_password: String,
    /// Added after the first release of this file: empty in an older one, then generated and
    /// written back.
    #[serde(default)]
    license_signing_key: String,
}

impl DevSecrets {
    fn generate() -> Self {
        Self {
            admin_secret: random_token(32),
            jwt_secret: random_token(48),
            encryption_key: STANDARD.encode(random_bytes(32)),
            landing_api_key: format!("lk_{}", random_token(24)),
            bootstrap_admin_email: "admin@localhost".into(),
            bootstrap_admin_password: random_token(18),
            license_signing_key: STANDARD.encode(random_bytes(32)),
        }
    }
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// Reads configuration through `var`, so tests can pass a map.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let var = |name: &str| {
            var(name)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let mut problems = Vec::new();
        let environment = match var("GATEWAY_ENV").as_deref() {
            None | Some("development") | Some("dev") => Environment::Development,
            Some("production") | Some("prod") => Environment::Production,
            Some(other) => {
                problems.push(format!(
                    "GATEWAY_ENV must be development or production, not {other:?}"
                ));
                Environment::Development
            }
        };
        let production = environment == Environment::Production;
        let data_dir = PathBuf::from(var("DATA_DIR").unwrap_or_else(|| "./data".into()));

        // Development fills gaps from the persisted file (created on first need).
        let needs_dev = [
            "ADMIN_SECRET",
            "JWT_SECRET",
            "ENCRYPTION_KEY",
            "LANDING_API_KEYS",
            "LICENSE_SIGNING_KEY",
        ]
        .iter()
        .any(|n| var(n).is_none())
            || (var("BOOTSTRAP_ADMIN_EMAIL").is_none()
                && var("BOOTSTRAP_ADMIN_PASSWORD").is_none());
        let (dev, dev_secrets_file) = if !production && needs_dev {
            match load_or_create_dev_secrets(&data_dir) {
                Ok((secrets, path)) => (Some(secrets), Some(path)),
                Err(e) => {
                    problems.push(format!(
                        "cannot keep development secrets under {}: {e}",
                        data_dir.display()
                    ));
                    (None, None)
                }
            }
        } else {
            (None, None)
        };
        let dev_value = |pick: fn(&DevSecrets) -> &String| dev.as_ref().map(|d| pick(d).clone());

        let mut secret = |name: &str, min_len: usize, fallback: Option<String>| -> SecretString {
            match var(name) {
                Some(value) => {
                    if production && let Some(why) = weakness(&value, min_len) {
                        problems.push(format!("{name} is weak: {why}"));
                    }
                    SecretString::from(value)
                }
                None => match fallback {
                    Some(v) if !production => SecretString::from(v),
                    _ => {
                        problems.push(format!("{name} is required"));
                        SecretString::from(String::new())
                    }
                },
            }
        };
        let admin_secret = secret("ADMIN_SECRET", 32, dev_value(|d| &d.admin_secret));
        let jwt_secret = secret("JWT_SECRET", 32, dev_value(|d| &d.jwt_secret));
        let raw_key = secret("ENCRYPTION_KEY", 0, dev_value(|d| &d.encryption_key));
        let landing = secret("LANDING_API_KEYS", 0, dev_value(|d| &d.landing_api_key));
        let raw_signing_key = secret(
            "LICENSE_SIGNING_KEY",
            0,
            dev_value(|d| &d.license_signing_key),
        );

        let encryption_key = match parse_key(raw_key.expose_secret()) {
            Some(key) => {
                if production && key.iter().all(|b| *b == key[0]) {
                    problems.push("ENCRYPTION_KEY is weak: all bytes are equal".into());
                }
                SecretBox::new(Box::new(key))
            }
            None => {
                if !raw_key.expose_secret().is_empty() {
                    problems
                        .push("ENCRYPTION_KEY must be 32 bytes, as base64 or 64 hex digits".into());
                }
                SecretBox::new(Box::new([0; 32]))
            }
        };
        let license_signing_key = match parse_key(raw_signing_key.expose_secret()) {
            Some(seed) => {
                if production && seed.iter().all(|b| *b == seed[0]) {
                    problems.push("LICENSE_SIGNING_KEY is weak: all bytes are equal".into());
                }
                if production && seed == *encryption_key.expose_secret() {
                    problems.push("LICENSE_SIGNING_KEY must not be the ENCRYPTION_KEY".into());
                }
                SigningKey::from_bytes(&seed)
            }
            None => {
                if !raw_signing_key.expose_secret().is_empty() {
                    problems.push(
                        "LICENSE_SIGNING_KEY must be a 32-byte Ed25519 seed, as base64 or 64 hex digits"
                            .into(),
                    );
                }
                SigningKey::from_bytes(&[0; 32])
            }
        };
        let mut previous_keys = Vec::new();
        for (i, text) in var("LICENSE_SIGNING_PREVIOUS_KEYS")
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .enumerate()
        {
            match parse_key(text)
                .and_then(|bytes| VerifyingKey::from_bytes(&bytes).ok())
                .filter(|key| !key.is_weak())
            {
                Some(key) => previous_keys.push(key),
                None => problems.push(format!(
                    "LICENSE_SIGNING_PREVIOUS_KEYS entry {} is not an Ed25519 public key \
                     (32 bytes, base64 or 64 hex digits)",
                    i + 1
                )),
            }
        }
        let offline_grace_days = match var("LICENSE_OFFLINE_GRACE_DAYS") {
            None => DEFAULT_GRACE_DAYS,
            Some(text) => match text.parse::<i64>() {
                Ok(days) if (1..=MAX_OFFLINE_GRACE_DAYS).contains(&days) => days,
                _ => {
                    problems.push(format!(
                        "LICENSE_OFFLINE_GRACE_DAYS must be a whole number of days from 1 to \
                         {MAX_OFFLINE_GRACE_DAYS}"
                    ));
                    DEFAULT_GRACE_DAYS
                }
            },
        };
        let license_certifier = Certifier::new(
            license_signing_key,
            previous_keys,
            chrono::TimeDelta::days(offline_grace_days),
        );

        let landing_api_keys: Vec<SecretString> = landing
            .expose_secret()
            .split(',')
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .map(|k| {
                if production && let Some(why) = weakness(k, 24) {
                    problems.push(format!("a LANDING_API_KEYS entry is weak: {why}"));
                }
                SecretString::from(k.to_string())
            })
            .collect();

        let bootstrap_admin = match (
            var("BOOTSTRAP_ADMIN_EMAIL"),
            var("BOOTSTRAP_ADMIN_PASSWORD"),
        ) {
            (Some(email), Some(password)) => {
                if production && let Some(why) = weakness(&password, 12) {
                    problems.push(format!("BOOTSTRAP_ADMIN_PASSWORD is weak: {why}"));
                }
                Some(BootstrapAdmin {
                    email,
                    password: SecretString::from(password),
                })
            }
            (None, None) => dev.as_ref().map(|d| BootstrapAdmin {
                email: d.bootstrap_admin_email.clone(),
                password: SecretString::from(d.bootstrap_admin_password.clone()),
            }),
            _ => {
                problems
                    .push("BOOTSTRAP_ADMIN_EMAIL and BOOTSTRAP_ADMIN_PASSWORD go together".into());
                None
            }
        };

        let bind = match var("BIND")
            .unwrap_or_else(|| "127.0.0.1:3001".into())
            .parse()
        {
            Ok(addr) => addr,
            Err(_) => {
                problems.push("BIND must be an address like 127.0.0.1:3001".into());
                SocketAddr::from(([127, 0, 0, 1], 3001))
            }
        };
        let intelligence_url = var("INTELLIGENCE_URL").map(|u| u.trim_end_matches('/').to_string());
        let internal_service_key = var("INTERNAL_SERVICE_KEY").map(SecretString::from);
        if production && intelligence_url.is_some() {
            match &internal_service_key {
                None => {
                    problems.push("INTERNAL_SERVICE_KEY is required with INTELLIGENCE_URL".into())
                }
                Some(k) => {
                    if let Some(why) = weakness(k.expose_secret(), 16) {
                        problems.push(format!("INTERNAL_SERVICE_KEY is weak: {why}"));
                    }
                }
            }
        }
        let origins = |name: &str| match var(name) {
            Some(list) => Origins::List(
                list.split(',')
                    .map(|o| o.trim().trim_end_matches('/').to_string())
                    .filter(|o| !o.is_empty())
                    .collect(),
            ),
            None if production => Origins::List(Vec::new()),
            None => Origins::AnyLocalhost,
        };
        let mut trusted_proxies = Vec::new();
        for cidr in var("TRUSTED_PROXIES")
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|c| !c.is_empty())
        {
            match cidr
                .parse::<IpNet>()
                .or_else(|_| cidr.parse::<IpAddr>().map(IpNet::from))
            {
                Ok(net) => trusted_proxies.push(net),
                Err(_) => problems.push(format!(
                    "TRUSTED_PROXIES entry {cidr:?} is not a CIDR or address"
                )),
            }
        }

        let admin_rate_limit_per_minute = match var("ADMIN_RATE_LIMIT_PER_MINUTE") {
            None => 100,
            Some(text) => match text.parse::<u32>() {
                Ok(n) if n > 0 => n,
                _ => {
                    problems.push("ADMIN_RATE_LIMIT_PER_MINUTE must be a positive number".into());
                    100
                }
            },
        };

        let ws_auth_timeout = match var("WS_AUTH_TIMEOUT_MS") {
            None => crate::live::AUTH_TIMEOUT,
            Some(text) => match text.parse::<u64>() {
                Ok(ms) if ms > 0 => Duration::from_millis(ms),
                _ => {
                    problems.push("WS_AUTH_TIMEOUT_MS must be a positive number".into());
                    crate::live::AUTH_TIMEOUT
                }
            },
        };

        let ws_progress_interval = match var("WS_PROGRESS_INTERVAL_MS") {
            None => crate::live::PROGRESS_INTERVAL,
            Some(text) => match text.parse::<u64>() {
                Ok(ms) if ms > 0 => Duration::from_millis(ms),
                _ => {
                    problems.push("WS_PROGRESS_INTERVAL_MS must be a positive number".into());
                    crate::live::PROGRESS_INTERVAL
                }
            },
        };
        let ws_max_replay_events = match var("WS_MAX_REPLAY_EVENTS") {
            None => crate::live::MAX_REPLAY_EVENTS,
            Some(text) => match text.parse::<i64>() {
                Ok(n) if n > 0 => n,
                _ => {
                    problems.push("WS_MAX_REPLAY_EVENTS must be a positive number".into());
                    crate::live::MAX_REPLAY_EVENTS
                }
            },
        };
        let http_idle_timeout = match var("HTTP_IDLE_TIMEOUT_MS") {
            None => DEFAULT_HTTP_IDLE_TIMEOUT,
            Some(text) => match text.parse::<u64>() {
                Ok(ms) if ms > 0 => Duration::from_millis(ms),
                _ => {
                    problems.push("HTTP_IDLE_TIMEOUT_MS must be a positive number".into());
                    DEFAULT_HTTP_IDLE_TIMEOUT
                }
            },
        };

        if !problems.is_empty() {
            return Err(ConfigError { problems });
        }
        Ok(Config {
            environment,
            database_url: var("DATABASE_URL").map(SecretString::from),
            data_dir,
            bind,
            admin_secret,
            jwt_secret,
            encryption_key,
            landing_api_keys,
            bootstrap_admin,
            intelligence_url,
            internal_service_key,
            telegram_api_base: var("TELEGRAM_API_BASE")
                .unwrap_or_else(|| "https://api.telegram.org".into())
                .trim_end_matches('/')
                .to_string(),
            public_base_url: var("PUBLIC_BASE_URL")
                .unwrap_or_else(|| format!("http://{bind}"))
                .trim_end_matches('/')
                .to_string(),
            landing_origins: origins("LANDING_ORIGINS"),
            admin_origins: origins("ADMIN_ORIGINS"),
            trusted_proxies,
            smtp_url: var("SMTP_URL").map(SecretString::from),
            mail_from: var("MAIL_FROM"),
            admin_rate_limit_per_minute,
            ws_auth_timeout,
            ws_progress_interval,
            ws_max_replay_events,
            http_idle_timeout,
            license_certifier,
            dev_secrets_file,
        })
    }

    pub fn is_production(&self) -> bool {
        self.environment == Environment::Production
    }
}

/// Why a secret is too weak to run production with, if it is.
fn weakness(value: &str, min_len: usize) -> Option<String> {
    const KNOWN_WEAK: [&str; 6] = ["changeme", "secret", "password", "admin", "test", "default"];
    let lower = value.to_lowercase();
    if KNOWN_WEAK.iter().any(|w| lower.contains(w)) {
        return Some("it contains a well-known placeholder word".into());
    }
    if value.chars().count() < min_len {
        return Some(format!("shorter than {min_len} characters"));
    }
    let distinct: std::collections::HashSet<char> = value.chars().collect();
    if min_len > 0 && distinct.len() < 8 {
        return Some("too few distinct characters".into());
    }
    None
}

/// A 32-byte key from base64 (standard or URL-safe) or 64 hex digits.
pub fn parse_key(text: &str) -> Option<[u8; 32]> {
    let text = text.trim();
    let bytes = if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        (0..32)
            .map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok())
            .collect::<Option<Vec<u8>>>()?
    } else {
        STANDARD
            .decode(text)
            .or_else(|_| URL_SAFE_NO_PAD.decode(text.trim_end_matches('=')))
            .ok()?
    };
    bytes.try_into().ok()
}

fn random_bytes(n: usize) -> Vec<u8> {
    let mut bytes = vec![0; n];
    rand::rng().fill_bytes(&mut bytes);
    bytes
}

/// `n` random bytes as URL-safe text.
pub fn random_token(n: usize) -> String {
    URL_SAFE_NO_PAD.encode(random_bytes(n))
}

fn load_or_create_dev_secrets(data_dir: &Path) -> std::io::Result<(DevSecrets, PathBuf)> {
    let path = data_dir.join("dev-secrets.json");
    if let Ok(text) = std::fs::read_to_string(&path) {
        let mut secrets: DevSecrets = serde_json::from_str(&text).map_err(std::io::Error::other)?;
        if secrets.license_signing_key.is_empty() {
            // A file from before license certificates: add a key, keep everything else.
            secrets.license_signing_key = STANDARD.encode(random_bytes(32));
            let text = serde_json::to_string_pretty(&secrets).map_err(std::io::Error::other)?;
            let staged = data_dir.join("dev-secrets.json.new");
            match std::fs::remove_file(&staged) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
            write_private(&staged, text.as_bytes())?;
            std::fs::rename(&staged, &path)?;
        }
        return Ok((secrets, path));
    }
    std::fs::create_dir_all(data_dir)?;
    let secrets = DevSecrets::generate();
    let text = serde_json::to_string_pretty(&secrets).map_err(std::io::Error::other)?;
    write_private(&path, text.as_bytes())?;
    Ok((secrets, path))
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)
}

/// One environment variable the gateway reads, with what it means (and its default).
#[derive(Clone, Copy, Debug)]
pub struct Variable {
    pub name: &'static str,
    pub meaning: &'static str,
}

/// Every environment variable `gateway serve` reads: this module's, plus `PG_BIN_DIR`
/// (embedded cluster), `RUST_LOG` and `LOG_FORMAT` (logging). `gateway --help` lists them and
/// tests hold this list, the code and the README's configuration table to each other.
pub const VARIABLES: &[Variable] = &[
    Variable {
        name: "GATEWAY_ENV",
        meaning: "development (default) or production; production refuses missing or weak secrets",
    },
    Variable {
        name: "DATABASE_URL",
        meaning: "Postgres URL; unset: a private cluster under DATA_DIR",
    },
    Variable {
        name: "DATA_DIR",
        meaning: "embedded cluster, postgres.log, generated dev secrets (default ./data)",
    },
    Variable {
        name: "BIND",
        meaning: "listen address (default 127.0.0.1:3001)",
    },
    Variable {
        name: "ADMIN_SECRET",
        meaning: "X-Admin-Secret of the admin routes (development: generated)",
    },
    Variable {
        name: "JWT_SECRET",
        meaning: "HS256 key of admin tokens (development: generated)",
    },
    Variable {
        name: "ENCRYPTION_KEY",
        meaning: "32 bytes as base64 or 64 hex digits, for data at rest (development: generated)",
    },
    Variable {
        name: "LANDING_API_KEYS",
        meaning: "comma-separated X-API-Key values (development: one generated)",
    },
    Variable {
        name: "BOOTSTRAP_ADMIN_EMAIL",
        meaning: "super admin created at start if none exists (development: admin@localhost)",
    },
    Variable {
        name: "BOOTSTRAP_ADMIN_PASSWORD",
        meaning: "its password (development: generated)",
    },
    Variable {
        name: "INTELLIGENCE_URL",
        meaning: "Intelligence service base URL (unset: none)",
    },
    Variable {
        name: "INTERNAL_SERVICE_KEY",
        meaning: "X-Internal-Key for the Intelligence service",
    },
    Variable {
        name: "TELEGRAM_API_BASE",
        meaning: "Telegram Bot API base (default https://api.telegram.org)",
    },
    Variable {
        name: "PUBLIC_BASE_URL",
        meaning: "public URL of this gateway (default http://<BIND>)",
    },
    Variable {
        name: "LANDING_ORIGINS",
        meaning: "CORS allow-list of /v1/leads, comma-separated (development: any localhost)",
    },
    Variable {
        name: "ADMIN_ORIGINS",
        meaning: "CORS allow-list of the admin routes and /ws/admin (development: any localhost)",
    },
    Variable {
        name: "TRUSTED_PROXIES",
        meaning: "CIDRs or addresses whose X-Forwarded-For is believed (default none)",
    },
    Variable {
        name: "SMTP_URL",
        meaning: "outgoing mail server (unset: none)",
    },
    Variable {
        name: "MAIL_FROM",
        meaning: "sender address of outgoing mail",
    },
    Variable {
        name: "ADMIN_RATE_LIMIT_PER_MINUTE",
        meaning: "admin requests per minute per admin, per instance (default 100)",
    },
    Variable {
        name: "WS_AUTH_TIMEOUT_MS",
        meaning: "how long a new /ws/admin socket may take to authenticate (default 5000)",
    },
    Variable {
        name: "WS_PROGRESS_INTERVAL_MS",
        meaning: "how often a /ws/admin socket gets a PROGRESS frame and the live feed checks the log's epoch (default 15000)",
    },
    Variable {
        name: "WS_MAX_REPLAY_EVENTS",
        meaning: "most events a since may be behind before 4400 CURSOR_TOO_OLD (default 10000)",
    },
    Variable {
        name: "HTTP_IDLE_TIMEOUT_MS",
        meaning: "how long a connection may take to send request headers or sit idle (default 30000)",
    },
    Variable {
        name: "LICENSE_SIGNING_KEY",
        meaning: "Ed25519 seed (32 bytes, base64 or 64 hex digits) signing offline license certificates (development: generated)",
    },
    Variable {
        name: "LICENSE_SIGNING_PREVIOUS_KEYS",
        meaning: "comma-separated public keys of retired signing keys, still served for verification (default none)",
    },
    Variable {
        name: "LICENSE_OFFLINE_GRACE_DAYS",
        meaning: "how long a license certificate lets the desktop work offline, at most the license's expiry (default 7, 1-90)",
    },
    Variable {
        name: "PG_BIN_DIR",
        meaning: "Postgres binaries for the embedded cluster (default newest /usr/lib/postgresql/*/bin)",
    },
    Variable {
        name: "RUST_LOG",
        meaning: "log filter (default info)",
    },
    Variable {
        name: "LOG_FORMAT",
        meaning: "json for JSON lines (always in production)",
    },
];

/// The longest offline grace: beyond a few weeks a revocation would take too long to reach a
/// desktop that stays offline on purpose.
pub const MAX_OFFLINE_GRACE_DAYS: i64 = 90;

/// Header reading and keep-alive idleness: long enough for a slow mobile link, short enough
/// that idle sockets do not pile up.
pub const DEFAULT_HTTP_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    fn strong_production() -> Vec<(&'static str, &'static str)> {
        vec![
            ("GATEWAY_ENV", "production"),
            ("ADMIN_SECRET", "k3J9x-Qp2mZv8Lr4Tw7Ny1Bc6Hd0Fs5G"),
            ("JWT_SECRET", "Zq8Wm3Kt6Yp1Rv9Lc2Nx5Hb7Df4Gs0Ja"),
            (
                "ENCRYPTION_KEY",
                "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
            ),
            ("LANDING_API_KEYS", "lk_R4t8Yq2Wn6Mz0Xc3Vb7Pa9Ls"),
            ("LICENSE_SIGNING_KEY", SIGNING_SEED),
        ]
    }

    const SIGNING_SEED: &str = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";

    fn with<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
        let mut all = strong_production();
        all.retain(|(name, _)| !extra.iter().any(|(n, _)| n == name));
        all.extend_from_slice(extra);
        all
    }

    #[test]
    fn production_with_strong_secrets_starts() {
        let config = Config::from_vars(vars(&strong_production())).unwrap();
        assert!(config.is_production());
        assert_eq!(config.encryption_key.expose_secret()[31], 0x1f);
        assert_eq!(config.landing_origins, Origins::List(vec![]));
        assert!(config.dev_secrets_file.is_none());
    }

    #[test]
    fn production_refuses_missing_and_weak_secrets_and_names_each() {
        let err = Config::from_vars(vars(&[
            ("GATEWAY_ENV", "production"),
            ("ADMIN_SECRET", "changeme"),
            ("ENCRYPTION_KEY", "c2hvcnQ="),
            ("LANDING_API_KEYS", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"),
        ]))
        .unwrap_err();
        let text = err.to_string();
        for needle in [
            "ADMIN_SECRET is weak",
            "JWT_SECRET is required",
            "ENCRYPTION_KEY must be 32 bytes",
            "LANDING_API_KEYS entry is weak",
            "LICENSE_SIGNING_KEY is required",
        ] {
            assert!(text.contains(needle), "{needle} missing from {text}");
        }
    }

    #[test]
    fn secrets_never_show_in_debug_output() {
        let config = Config::from_vars(vars(&strong_production())).unwrap();
        let debug = format!("{config:?}");
        assert!(!debug.contains("k3J9x"), "{debug}");
        assert!(!debug.contains("lk_R4t8"), "{debug}");
    }

    #[test]
    fn development_generates_secrets_once_and_keeps_them() {
        let dir = std::env::temp_dir().join(format!("gw-config-{}", uuid::Uuid::new_v4()));
        let dir_text = dir.to_string_lossy().to_string();
        let first = Config::from_vars(vars(&[("DATA_DIR", &dir_text)])).unwrap();
        let second = Config::from_vars(vars(&[("DATA_DIR", &dir_text)])).unwrap();
        assert_eq!(
            first.admin_secret.expose_secret(),
            second.admin_secret.expose_secret()
        );
        assert_eq!(
            first.bootstrap_admin.as_ref().unwrap().email,
            "admin@localhost"
        );
        let path = first.dev_secrets_file.clone().unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(first.landing_origins, Origins::AnyLocalhost);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn every_variable_the_configuration_reads_is_listed() {
        let dir = std::env::temp_dir().join(format!("gw-config-{}", uuid::Uuid::new_v4()));
        let dir_text = dir.to_string_lossy().to_string();
        let read = std::sync::Mutex::new(std::collections::BTreeSet::new());
        for given in [vec![("DATA_DIR", dir_text.as_str())], strong_production()] {
            let given = vars(&given);
            let _ = Config::from_vars(|name| {
                read.lock().unwrap().insert(name.to_string());
                given(name)
            });
        }
        let _ = std::fs::remove_dir_all(dir);
        let listed: Vec<&str> = VARIABLES.iter().map(|v| v.name).collect();
        for name in read.into_inner().unwrap() {
            assert!(
                listed.contains(&name.as_str()),
                "{name} is not in VARIABLES"
            );
        }
    }

    #[test]
    fn the_readme_configuration_table_lists_exactly_the_variables() {
        let readme = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"));
        let section = readme
            .split("## Configuration")
            .nth(1)
            .and_then(|rest| rest.split("\n## ").next())
            .expect("README has a Configuration section");
        // The first cell of each row: `NAME` or `NAME`, `OTHER` (`LOG_FORMAT=json` counts).
        let mut documented: Vec<String> = section
            .lines()
            .filter(|l| l.starts_with("| `"))
            .flat_map(|l| {
                l.split('|').nth(1).unwrap().split(',').map(|cell| {
                    let name = cell.trim().trim_matches('`');
                    name.split('=').next().unwrap().to_string()
                })
            })
            .collect();
        documented.sort();
        let mut listed: Vec<String> = VARIABLES.iter().map(|v| v.name.to_string()).collect();
        listed.sort();
        assert_eq!(documented, listed);
    }

    #[test]
    fn the_license_signing_key_comes_from_its_seed_with_a_seven_day_grace() {
        let config = Config::from_vars(vars(&strong_production())).unwrap();
        let certifier = &config.license_certifier;
        // RFC 8032 §7.1 test 1: this seed's public key.
        let keys = certifier.public_keys_json();
        assert_eq!(
            keys["keys"][0]["publicKey"],
            URL_SAFE_NO_PAD.encode(
                (0..32)
                    .map(|i| {
                        let hex =
                            "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";
                        u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap()
                    })
                    .collect::<Vec<u8>>()
            )
        );
        assert_eq!(keys["keys"].as_array().unwrap().len(), 1);
        assert_eq!(certifier.grace(), chrono::TimeDelta::days(7));
        assert!(!format!("{config:?}").contains("9d61b19d"));
    }

    #[test]
    fn retired_public_keys_and_the_grace_are_configurable() {
        let retired = URL_SAFE_NO_PAD.encode(SigningKey::from_bytes(&[5; 32]).verifying_key());
        let config = Config::from_vars(vars(&with(&[
            ("LICENSE_SIGNING_PREVIOUS_KEYS", retired.as_str()),
            ("LICENSE_OFFLINE_GRACE_DAYS", "14"),
        ])))
        .unwrap();
        let keys = config.license_certifier.public_keys_json();
        assert_eq!(keys["keys"][1]["publicKey"], retired);
        assert_eq!(
            config.license_certifier.grace(),
            chrono::TimeDelta::days(14)
        );
    }

    #[test]
    fn bad_license_signing_settings_are_each_named() {
        let err = Config::from_vars(vars(&with(&[
            ("LICENSE_SIGNING_KEY", "c2hvcnQ="),
            ("LICENSE_SIGNING_PREVIOUS_KEYS", "not-a-key, also not"),
            ("LICENSE_OFFLINE_GRACE_DAYS", "0"),
        ])))
        .unwrap_err();
        let text = err.to_string();
        for needle in [
            "LICENSE_SIGNING_KEY must be a 32-byte Ed25519 seed",
            "LICENSE_SIGNING_PREVIOUS_KEYS entry 1 is not an Ed25519 public key",
            "LICENSE_SIGNING_PREVIOUS_KEYS entry 2 is not an Ed25519 public key",
            "LICENSE_OFFLINE_GRACE_DAYS must be a whole number of days from 1 to 90",
        ] {
            assert!(text.contains(needle), "{needle} missing from {text}");
        }
        let same_as_encryption = strong_production()
            .iter()
            .find(|(n, _)| *n == "ENCRYPTION_KEY")
            .unwrap()
            .1;
        let err = Config::from_vars(vars(&with(&[
            ("LICENSE_SIGNING_KEY", same_as_encryption),
            ("LICENSE_OFFLINE_GRACE_DAYS", "91"),
        ])))
        .unwrap_err()
        .to_string();
        assert!(err.contains("must not be the ENCRYPTION_KEY"), "{err}");
        assert!(err.contains("LICENSE_OFFLINE_GRACE_DAYS"), "{err}");
    }

    #[test]
    fn development_generates_a_license_signing_key_once_and_keeps_it() {
        let dir = std::env::temp_dir().join(format!("gw-config-{}", uuid::Uuid::new_v4()));
        let dir_text = dir.to_string_lossy().to_string();
        let first = Config::from_vars(vars(&[("DATA_DIR", &dir_text)])).unwrap();
        let second = Config::from_vars(vars(&[("DATA_DIR", &dir_text)])).unwrap();
        assert_eq!(
            first.license_certifier.kid(),
            second.license_certifier.kid()
        );
        let file: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("dev-secrets.json")).unwrap())
                .unwrap();
        assert!(parse_key(file["licenseSigningKey"].as_str().unwrap()).is_some());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn an_older_dev_secrets_file_gets_a_license_signing_key_and_keeps_the_rest() {
        let dir = std::env::temp_dir().join(format!("gw-config-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let old = serde_json::json!({
            "adminSecret": "kept-admin-secret-0123456789abcdef",
            "jwtSecret": "kept-jwt-secret-0123456789abcdef0123",
            "encryptionKey": STANDARD.encode([3u8; 32]),
            "landingApiKey": "lk_kept_0123456789abcdef",
            "bootstrapAdminEmail": "admin@localhost",
            "bootstrapAdminPassword": "kept-password-123",
        });
        write_private(&dir.join("dev-secrets.json"), old.to_string().as_bytes()).unwrap();
        let dir_text = dir.to_string_lossy().to_string();
        let first = Config::from_vars(vars(&[("DATA_DIR", &dir_text)])).unwrap();
        assert_eq!(
            first.admin_secret.expose_secret(),
            "kept-admin-secret-0123456789abcdef"
        );
        let second = Config::from_vars(vars(&[("DATA_DIR", &dir_text)])).unwrap();
        assert_eq!(
            first.license_certifier.kid(),
            second.license_certifier.kid()
        );
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join("dev-secrets.json");
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(!dir.join("dev-secrets.json.new").exists());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn keys_parse_from_base64_or_hex() {
        let hex = "ff".repeat(32);
        assert_eq!(parse_key(&hex), Some([0xff; 32]));
        assert_eq!(parse_key(&STANDARD.encode([7u8; 32])), Some([7; 32]));
        assert_eq!(parse_key("abc"), None);
    }

    #[test]
    fn trusted_proxies_take_cidrs_and_plain_addresses() {
        let mut v = strong_production();
        v.push(("TRUSTED_PROXIES", "10.0.0.0/8, 127.0.0.1"));
        let config = Config::from_vars(vars(&v)).unwrap();
        assert_eq!(config.trusted_proxies.len(), 2);
        assert!(config.trusted_proxies[1].contains(&"127.0.0.1".parse::<IpAddr>().unwrap()));
    }
}
