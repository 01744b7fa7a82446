//! Crypto-shredding: personal data in events, sealed with a key per subject (SPEC §8).
//!
//! Events are immutable, yet KVKK requires that a lead's personal data can be erased. So
//! personal fields never enter an event in clear: [`Sealer::seal`] encrypts them with a data
//! key that belongs to one subject (e.g. `lead:<uuid>`). Data keys live apart from the events,
//! in `data_keys` (migrations/0003_data_keys.sql), each one encrypted ("wrapped") with the
//! master `ENCRYPTION_KEY`. Erasure deletes the subject's key ([`Sealer::shred`]); from then
//! on every copy of that subject's sealed values — in the log, in a backup of the log, in a
//! replay years later — is noise, [`Sealer::open`] answers `None` and readers show
//! [`SHREDDED`].
//!
//! Formats. Every encryption is AES-256-GCM with a fresh random 96-bit nonce, laid out as
//! `nonce ‖ ciphertext ‖ tag` (the crates.io token encryption does the same):
//!
//! * a sealed value, as it appears in event payloads: `v1.<key id>.<base64url>`, encrypted
//!   with the subject's data key, associated data = the subject, so a value copied into
//!   another subject's event does not open;
//! * a wrapped data key: the raw bytes in `data_keys.wrapped_key`, encrypted with the master
//!   key, associated data = `domizan/data-key/v1:<subject>`, so a key row copied to another
//!   subject does not unwrap; the master key's id is stored beside it;
//! * a secret at rest that belongs to no subject (Gemini key, Telegram token):
//!   [`Sealer::encrypt_with_master`], the sealed-value format under the master key.
//!
//! A key id is the first 8 hex digits of SHA-256 of the key. It tells which key a value
//! needs without revealing anything usable about it: the master key can rotate by rewrapping
//! the `data_keys` rows (events never change), and a data key created after a shred is told
//! apart from the shredded one.
//!
//! Unwrapped data keys are not cached. A `shred` on one gateway instance cannot evict another
//! instance's cache, which would go on opening an erased lead's data; a lookup costs one
//! primary-key read and one AES-GCM of 32 bytes.

use std::fmt;
use std::sync::Arc;

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, KeyInit};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use rand::RngCore;
use secrecy::zeroize::{Zeroize, Zeroizing};
use secrecy::{ExposeSecret, SecretBox};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::{PgConnection, PgExecutor, PgPool};

/// What a reader shows in place of a value whose key has been shredded.
pub const SHREDDED: &str = "[silindi]";

/// Format version, the first part of every sealed value and master-encrypted secret.
const VERSION: &str = "v1";
const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
const KEY_ID_LEN: usize = 8;
/// Associated data of a wrapped data key: the label keeps the master key's two uses (wrapping
/// data keys, encrypting secrets) from being swapped for each other; the subject follows.
const WRAP_AAD_PREFIX: &str = "domizan/data-key/v1:";
const MASTER_SECRET_AAD: &[u8] = b"domizan/secret/v1";
/// The lookup-digest key is derived from, not equal to, the master key: the same key should
/// never serve as both an AES key and an HMAC key.
const DIGEST_KEY_LABEL: &[u8] = b"domizan/lookup-digest/v1";
/// How often `seal` tries to get a key that a concurrent `shred` keeps deleting.
const KEY_ATTEMPTS: usize = 3;

// ---------------------------------------------------------------------------------------
// Sealed values and errors

/// A sealed value as it appears in event payloads: `v1.<key id>.<base64url(nonce ‖ ciphertext
/// ‖ tag)>`. Serialises as that plain JSON string; only [`Sealer::open`] checks it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Sealed(String);

impl Sealed {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }

    /// The id of the data key the value was sealed with (`None` if the value is malformed).
    pub fn key_id(&self) -> Option<&str> {
        parse(&self.0).ok().map(|(key_id, _)| key_id)
    }
}

impl From<String> for Sealed {
    fn from(text: String) -> Self {
        Self(text)
    }
}

impl fmt::Display for Sealed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a value could not be sealed or opened. No variant carries key material or plaintext.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// Not a `v1.<key id>.<base64url>` string, or too short to hold nonce and tag.
    #[error("sealed value is malformed: {0}")]
    Malformed(&'static str),
    /// Encrypted under a master key this gateway does not hold (a rotated or foreign
    /// `ENCRYPTION_KEY`).
    #[error("value needs master key {key_id}, this gateway holds {holds}")]
    UnknownMasterKey { key_id: String, holds: String },
    /// The value names a data key that the subject neither has nor had: it was sealed for
    /// another subject, or the subject's keys were lost.
    #[error("value was sealed with key {key_id}, which subject {subject} neither has nor had")]
    KeyMismatch { subject: String, key_id: String },
    /// Authentication failed: the value was altered or belongs to another subject.
    #[error("decryption failed: the value was altered or belongs elsewhere")]
    Decrypt,
    /// A concurrent `shred` deleted the subject's key every time `seal` fetched it.
    #[error("data key of subject {0} keeps being shredded while sealing")]
    KeyChurn(String),
    #[error("sealed JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

// ---------------------------------------------------------------------------------------
// The master key: no I/O

/// The master `ENCRYPTION_KEY`, ready to use: wraps data keys, encrypts secrets at rest and
/// keys the lookup digests. `Debug` shows the key id only.
pub struct MasterKey {
    cipher: Aes256Gcm,
    id: String,
    digest_key: SecretBox<[u8; KEY_LEN]>,
}

impl MasterKey {
    pub fn new(mut key: [u8; KEY_LEN]) -> Self {
        let mut mac = hmac_sha256(&key);
        mac.update(DIGEST_KEY_LABEL);
        let digest_key = SecretBox::new(Box::new(mac.finalize().into_bytes().into()));
        let master = Self {
            cipher: Aes256Gcm::new((&key).into()),
            id: key_id(&key),
            digest_key,
        };
        // Our copy only; the caller owns theirs.
        key.zeroize();
        master
    }

    /// First 8 hex digits of SHA-256 of the key.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// `v1.<master key id>.<base64url(nonce ‖ ciphertext ‖ tag)>`, fresh nonce every time.
    pub fn encrypt(&self, plaintext: &[u8]) -> String {
        format_sealed(
            &self.id,
            &encrypt(&self.cipher, MASTER_SECRET_AAD, plaintext),
        )
    }

    pub fn decrypt(&self, text: &str) -> Result<Vec<u8>, SealError> {
        let (key_id, bytes) = parse(text)?;
        self.check_id(key_id)?;
        decrypt(&self.cipher, MASTER_SECRET_AAD, &bytes)
    }

    /// HMAC-SHA256 of `value` under a key derived from the master key, as 64 lowercase hex
    /// digits. Normalise first (trim, lower-case an e-mail, E.164 a phone): equal inputs give
    /// equal digests, nothing else does. Rotating the master key changes every digest, so a
    /// rotation must recompute the lookup tables.
    pub fn digest(&self, value: &str) -> String {
        let mut mac = hmac_sha256(self.digest_key.expose_secret());
        mac.update(value.as_bytes());
        hex(&mac.finalize().into_bytes())
    }

    fn wrap(&self, subject: &str, data_key: &[u8; KEY_LEN]) -> Vec<u8> {
        encrypt(&self.cipher, wrap_aad(subject).as_bytes(), data_key)
    }

    fn unwrap(&self, subject: &str, stored: StoredKey) -> Result<DataKey, SealError> {
        self.check_id(&stored.master_key_id)?;
        let key = Zeroizing::new(decrypt(
            &self.cipher,
            wrap_aad(subject).as_bytes(),
            &stored.wrapped_key,
        )?);
        let key: &[u8; KEY_LEN] = key
            .as_slice()
            .try_into()
            .map_err(|_| SealError::Malformed("wrapped data key has the wrong length"))?;
        let key = DataKey::new(key);
        // The id column is outside the wrapping's authentication: a row whose id does not
        // match its key is corrupt, and values sealed with it would name the wrong key.
        if key.id != stored.key_id {
            return Err(SealError::Malformed(
                "data key does not match its stored id",
            ));
        }
        Ok(key)
    }

    fn check_id(&self, key_id: &str) -> Result<(), SealError> {
        if key_id == self.id {
            Ok(())
        } else {
            Err(SealError::UnknownMasterKey {
                key_id: key_id.to_owned(),
                holds: self.id.clone(),
            })
        }
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MasterKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// One subject's data key, unwrapped. Lives for one seal or open, never longer.
struct DataKey {
    id: String,
    cipher: Aes256Gcm,
}

impl DataKey {
    fn new(key: &[u8; KEY_LEN]) -> Self {
        Self {
            id: key_id(key),
            cipher: Aes256Gcm::new(key.into()),
        }
    }

    fn seal(&self, subject: &str, plaintext: &[u8]) -> Sealed {
        Sealed(format_sealed(
            &self.id,
            &encrypt(&self.cipher, subject.as_bytes(), plaintext),
        ))
    }

    fn open(&self, subject: &str, bytes: &[u8]) -> Result<Vec<u8>, SealError> {
        decrypt(&self.cipher, subject.as_bytes(), bytes)
    }
}

// ---------------------------------------------------------------------------------------
// The sealer: data keys in Postgres

/// Seals and opens personal data per subject, and shreds a subject's key. Cheap to clone.
#[derive(Clone)]
pub struct Sealer {
    pool: PgPool,
    master: Arc<MasterKey>,
}

/// A `data_keys` row.
#[derive(Clone, sqlx::FromRow)]
struct StoredKey {
    key_id: String,
    master_key_id: String,
    wrapped_key: Vec<u8>,
}

/// The subject's current key, and whether the key a value names was shredded — one
/// statement, so a concurrent shred (delete + tombstone in one transaction) is seen whole.
const LOOKUP_FOR_OPEN: &str = r#"
SELECT k.key_id, k.master_key_id, k.wrapped_key,
       EXISTS (SELECT 1 FROM shredded_data_keys s
                WHERE s.subject = $1 AND s.key_id = $2) AS shredded
  FROM (VALUES (1)) AS one (x)
  LEFT JOIN data_keys k ON k.subject = $1
"#;

/// Deletes the key and leaves a tombstone naming it (no key material), so that `open` can
/// tell "shredded" (`None`) from "sealed for someone else" (an error).
const SHRED: &str = r#"
WITH gone AS (
    DELETE FROM data_keys WHERE subject = $1 RETURNING subject, key_id
), tombstone AS (
    INSERT INTO shredded_data_keys (subject, key_id)
    SELECT subject, key_id FROM gone
    ON CONFLICT DO NOTHING
)
SELECT count(*) FROM gone
"#;

impl Sealer {
    pub fn new(pool: PgPool, master_key: [u8; KEY_LEN]) -> Self {
        Self {
            pool,
            master: Arc::new(MasterKey::new(master_key)),
        }
    }

    pub fn master(&self) -> &MasterKey {
        &self.master
    }

    /// The master key's id: first 8 hex digits of SHA-256 of `ENCRYPTION_KEY`. Stored beside
    /// each wrapped data key and in each master-encrypted secret (not in sealed values: those
    /// name their data key, and a master rotation only rewraps `data_keys`).
    pub fn key_id(&self) -> &str {
        self.master.id()
    }

    /// Encrypts `plaintext` with the subject's data key, creating the key on first use.
    #[tracing::instrument(skip_all, fields(sealing.subject = subject))]
    pub async fn seal(&self, subject: &str, plaintext: &[u8]) -> Result<Sealed, SealError> {
        let key = self.data_key_for_sealing(subject, false).await?;
        Ok(key.seal(subject, plaintext))
    }

    /// [`Sealer::seal_json`] for a subject that is almost surely new (a lead being created):
    /// it tries to create the key before looking for one, one round trip instead of two.
    #[tracing::instrument(skip_all, fields(sealing.subject = subject))]
    pub async fn seal_json_new<T: Serialize + ?Sized>(
        &self,
        subject: &str,
        value: &T,
    ) -> Result<Sealed, SealError> {
        let json = Zeroizing::new(serde_json::to_vec(value)?);
        let key = self.data_key_for_sealing(subject, true).await?;
        Ok(key.seal(subject, &json))
    }

    pub async fn seal_json<T: Serialize + ?Sized>(
        &self,
        subject: &str,
        value: &T,
    ) -> Result<Sealed, SealError> {
        let json = Zeroizing::new(serde_json::to_vec(value)?);
        self.seal(subject, &json).await
    }

    /// The plaintext, or `Ok(None)` when the key the value was sealed with has been shredded.
    /// A value sealed for another subject, altered, or malformed is an error, never garbage.
    pub async fn open(&self, subject: &str, sealed: &Sealed) -> Result<Option<Vec<u8>>, SealError> {
        self.open_on(&self.pool, subject, sealed).await
    }

    /// [`Sealer::open`] on the caller's connection or transaction (projections open sealed
    /// values inside the transaction that writes their read model).
    pub async fn open_with(
        &self,
        conn: &mut PgConnection,
        subject: &str,
        sealed: &Sealed,
    ) -> Result<Option<Vec<u8>>, SealError> {
        self.open_on(conn, subject, sealed).await
    }

    pub async fn open_json<T: DeserializeOwned>(
        &self,
        subject: &str,
        sealed: &Sealed,
    ) -> Result<Option<T>, SealError> {
        from_json(self.open(subject, sealed).await?)
    }

    pub async fn open_json_with<T: DeserializeOwned>(
        &self,
        conn: &mut PgConnection,
        subject: &str,
        sealed: &Sealed,
    ) -> Result<Option<T>, SealError> {
        from_json(self.open_with(conn, subject, sealed).await?)
    }

    /// [`Sealer::seal_json_new`] inside the caller's transaction: the new subject's key is
    /// inserted there, so it commits with whatever the transaction writes (a lead's first
    /// event) or not at all. A rolled-back or crashed creation leaves no orphan key, and no
    /// separate commit is spent on the key. If the subject has a key already (only a stale
    /// subject, never a freshly minted id), that key is used.
    #[tracing::instrument(skip_all, fields(sealing.subject = subject))]
    pub async fn seal_json_new_in<T: Serialize + ?Sized>(
        &self,
        conn: &mut PgConnection,
        subject: &str,
        value: &T,
    ) -> Result<Sealed, SealError> {
        let json = Zeroizing::new(serde_json::to_vec(value)?);
        let mut fresh = Zeroizing::new([0u8; KEY_LEN]);
        rand::rng().fill_bytes(fresh.as_mut_slice());
        let minted = DataKey::new(&fresh);
        // One statement: insert the key, or (the subject had one) return the existing row.
        let stored: Option<StoredKey> = sqlx::query_as(
            "WITH ins AS (
                 INSERT INTO data_keys (subject, key_id, master_key_id, wrapped_key)
                 VALUES ($1, $2, $3, $4)
                 ON CONFLICT (subject) DO NOTHING
                 RETURNING 1
             )
             SELECT key_id, master_key_id, wrapped_key FROM data_keys
              WHERE subject = $1 AND NOT EXISTS (SELECT 1 FROM ins)",
        )
        .bind(subject)
        .bind(&minted.id)
        .bind(self.master.id())
        .bind(self.master.wrap(subject, &fresh))
        .fetch_optional(&mut *conn)
        .await?;
        let key = match stored {
            None => minted,
            Some(stored) => self.master.unwrap(subject, stored)?,
        };
        Ok(key.seal(subject, &json))
    }

    /// The keys and tombstones of many subjects, read with one query on the caller's
    /// connection (a projection opens a whole page of events with it). Opening through the
    /// ring answers exactly like [`Sealer::open`] did at the moment of the read.
    pub async fn key_ring(
        &self,
        conn: &mut PgConnection,
        subjects: &[String],
    ) -> Result<KeyRing, SealError> {
        let mut ring = KeyRing {
            master: Arc::clone(&self.master),
            current: std::collections::HashMap::new(),
            shredded: std::collections::HashSet::new(),
        };
        if subjects.is_empty() {
            return Ok(ring);
        }
        // (subject, key id, master key id, wrapped key): the last two only for a live key.
        type RingRow = (String, String, Option<String>, Option<Vec<u8>>);
        let rows: Vec<RingRow> = sqlx::query_as(
            "SELECT subject, key_id, master_key_id, wrapped_key
               FROM data_keys WHERE subject = ANY($1)
             UNION ALL
             SELECT subject, key_id, NULL, NULL
               FROM shredded_data_keys WHERE subject = ANY($1)",
        )
        .bind(subjects)
        .fetch_all(&mut *conn)
        .await?;
        for (subject, key_id, master_key_id, wrapped_key) in rows {
            match (master_key_id, wrapped_key) {
                (Some(master_key_id), Some(wrapped_key)) => {
                    ring.current.insert(
                        subject,
                        StoredKey {
                            key_id,
                            master_key_id,
                            wrapped_key,
                        },
                    );
                }
                _ => {
                    ring.shredded.insert((subject, key_id));
                }
            }
        }
        Ok(ring)
    }

    /// Deletes the subject's data key; returns whether there was one. Idempotent.
    ///
    /// Erasure shreds first and records the erasure event after: if the append fails, the
    /// data is already unreadable and a retry finds no key (`false`) and appends; the other
    /// order could leave an "erased" lead whose key survives.
    #[tracing::instrument(skip_all, fields(sealing.subject = subject))]
    pub async fn shred(&self, subject: &str) -> Result<bool, SealError> {
        let deleted: i64 = sqlx::query_scalar(SHRED)
            .bind(subject)
            .fetch_one(&self.pool)
            .await?;
        if deleted > 0 {
            tracing::info!("data key shredded");
        }
        Ok(deleted > 0)
    }

    /// Keyed digest for lookups of normalised values: see [`MasterKey::digest`].
    pub fn digest(&self, value: &str) -> String {
        self.master.digest(value)
    }

    /// For secrets at rest that belong to no subject: see [`MasterKey::encrypt`].
    pub fn encrypt_with_master(&self, plaintext: &[u8]) -> String {
        self.master.encrypt(plaintext)
    }

    pub fn decrypt_with_master(&self, text: &str) -> Result<Vec<u8>, SealError> {
        self.master.decrypt(text)
    }

    /// Get-or-create. Reads first (the common case writes nothing); a first use inserts with
    /// `ON CONFLICT DO NOTHING`, which waits for a concurrent creator and then does nothing,
    /// so the next read — a new statement, hence a new snapshot — finds the winner's key.
    /// `insert_first` skips the first read for subjects expected to be new.
    async fn data_key_for_sealing(
        &self,
        subject: &str,
        insert_first: bool,
    ) -> Result<DataKey, SealError> {
        for attempt in 0..KEY_ATTEMPTS {
            if !(insert_first && attempt == 0) {
                let stored = sqlx::query_as::<_, StoredKey>(
                    "SELECT key_id, master_key_id, wrapped_key FROM data_keys WHERE subject = $1",
                )
                .bind(subject)
                .fetch_optional(&self.pool)
                .await?;
                if let Some(stored) = stored {
                    return self.master.unwrap(subject, stored);
                }
            }

            let mut fresh = Zeroizing::new([0u8; KEY_LEN]);
            rand::rng().fill_bytes(fresh.as_mut_slice());
            let key = DataKey::new(&fresh);
            let inserted = sqlx::query(
                "INSERT INTO data_keys (subject, key_id, master_key_id, wrapped_key)
                 VALUES ($1, $2, $3, $4)
                 ON CONFLICT (subject) DO NOTHING",
            )
            .bind(subject)
            .bind(&key.id)
            .bind(self.master.id())
            .bind(self.master.wrap(subject, &fresh))
            .execute(&self.pool)
            .await?
            .rows_affected();
            if inserted == 1 {
                tracing::debug!(sealing.key_id = %key.id, "data key created");
                return Ok(key);
            }
            // Lost the race to another creator; the next round reads its key. (Only a shred
            // landing in between makes that read come back empty.)
        }
        Err(SealError::KeyChurn(subject.to_owned()))
    }

    async fn open_on<'e>(
        &self,
        executor: impl PgExecutor<'e>,
        subject: &str,
        sealed: &Sealed,
    ) -> Result<Option<Vec<u8>>, SealError> {
        // Parse before any I/O: a malformed value fails the same whatever the database says.
        let (key_id, bytes) = parse(sealed.as_str())?;
        let (current_id, master_key_id, wrapped_key, shredded): (
            Option<String>,
            Option<String>,
            Option<Vec<u8>>,
            bool,
        ) = sqlx::query_as(LOOKUP_FOR_OPEN)
            .bind(subject)
            .bind(key_id)
            .fetch_one(executor)
            .await?;
        match (current_id, master_key_id, wrapped_key) {
            (Some(current_id), Some(master_key_id), Some(wrapped_key)) if current_id == key_id => {
                let stored = StoredKey {
                    key_id: current_id,
                    master_key_id,
                    wrapped_key,
                };
                let key = self.master.unwrap(subject, stored)?;
                key.open(subject, &bytes).map(Some)
            }
            _ if shredded => Ok(None),
            _ => Err(SealError::KeyMismatch {
                subject: subject.to_owned(),
                key_id: key_id.to_owned(),
            }),
        }
    }
}

/// Wrapped keys and tombstones of a set of subjects, read at one moment
/// ([`Sealer::key_ring`]). Keys are unwrapped per value and dropped at once, as in
/// [`Sealer::open`]; the ring holds wrapped keys only.
pub struct KeyRing {
    master: Arc<MasterKey>,
    current: std::collections::HashMap<String, StoredKey>,
    shredded: std::collections::HashSet<(String, String)>,
}

impl KeyRing {
    /// Like [`Sealer::open`]: the plaintext, `Ok(None)` for a shredded key, an error for a
    /// value the subject's keys never sealed. A subject outside the ring reads as having no
    /// key and no tombstone (an error).
    pub fn open(&self, subject: &str, sealed: &Sealed) -> Result<Option<Vec<u8>>, SealError> {
        let (key_id, bytes) = parse(sealed.as_str())?;
        match self.current.get(subject) {
            Some(stored) if stored.key_id == key_id => {
                let key = self.master.unwrap(subject, stored.clone())?;
                key.open(subject, &bytes).map(Some)
            }
            _ if self
                .shredded
                .contains(&(subject.to_owned(), key_id.to_owned())) =>
            {
                Ok(None)
            }
            _ => Err(SealError::KeyMismatch {
                subject: subject.to_owned(),
                key_id: key_id.to_owned(),
            }),
        }
    }

    pub fn open_json<T: DeserializeOwned>(
        &self,
        subject: &str,
        sealed: &Sealed,
    ) -> Result<Option<T>, SealError> {
        from_json(self.open(subject, sealed)?)
    }
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRing")
            .field("subjects", &self.current.len())
            .field("tombstones", &self.shredded.len())
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sealer")
            .field("master", &self.master)
            .finish_non_exhaustive()
    }
}

// ---------------------------------------------------------------------------------------
// Helpers

fn from_json<T: DeserializeOwned>(plaintext: Option<Vec<u8>>) -> Result<Option<T>, SealError> {
    plaintext
        .map(|bytes| {
            let bytes = Zeroizing::new(bytes);
            serde_json::from_slice(&bytes)
        })
        .transpose()
        .map_err(SealError::from)
}

/// `nonce ‖ ciphertext ‖ tag` under a fresh random nonce. Random 96-bit nonces are safe for
/// far more than the 2^32 messages per key that NIST allows; a data key seals a handful.
fn encrypt(cipher: &Aes256Gcm, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
    let mut nonce = [0u8; NONCE_LEN];
    rand::rng().fill_bytes(&mut nonce);
    let ciphertext = cipher
        .encrypt(
            (&nonce).into(),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .expect("AES-GCM encrypts any message shorter than 64 GiB");
    let mut out = Vec::with_capacity(NONCE_LEN + ciphertext.len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ciphertext);
    out
}

fn decrypt(cipher: &Aes256Gcm, aad: &[u8], bytes: &[u8]) -> Result<Vec<u8>, SealError> {
    let Some((nonce, ciphertext)) = bytes.split_first_chunk::<NONCE_LEN>() else {
        return Err(SealError::Malformed("too short"));
    };
    if ciphertext.len() < TAG_LEN {
        return Err(SealError::Malformed("too short"));
    }
    cipher
        .decrypt(
            nonce.into(),
            Payload {
                msg: ciphertext,
                aad,
            },
        )
        .map_err(|_| SealError::Decrypt)
}

fn format_sealed(key_id: &str, bytes: &[u8]) -> String {
    format!("{VERSION}.{key_id}.{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// Splits `v1.<key id>.<base64url>` into the key id and the decoded bytes.
fn parse(text: &str) -> Result<(&str, Vec<u8>), SealError> {
    let mut parts = text.splitn(3, '.');
    let (Some(version), Some(key_id), Some(body)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(SealError::Malformed("expected v1.<key id>.<data>"));
    };
    if version != VERSION {
        return Err(SealError::Malformed("unknown format version"));
    }
    if key_id.len() != KEY_ID_LEN
        || !key_id
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        return Err(SealError::Malformed("key id is not 8 hex digits"));
    }
    let bytes = URL_SAFE_NO_PAD
        .decode(body)
        .map_err(|_| SealError::Malformed("data is not base64url"))?;
    Ok((key_id, bytes))
}

fn wrap_aad(subject: &str) -> String {
    format!("{WRAP_AAD_PREFIX}{subject}")
}

fn key_id(key: &[u8; KEY_LEN]) -> String {
    let mut id = hex(&Sha256::digest(key));
    id.truncate(KEY_ID_LEN);
    id
}

fn hmac_sha256(key: &[u8]) -> Hmac<Sha256> {
    <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes a key of any length")
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0x0f)] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const MASTER: [u8; KEY_LEN] = *b"test master key, 32 bytes long!!";
    const OTHER_MASTER: [u8; KEY_LEN] = *b"another master key, also 32 byte";

    fn flip_last_byte(text: &str) -> String {
        let (key_id, mut bytes) = parse(text).unwrap();
        *bytes.last_mut().unwrap() ^= 1;
        format_sealed(key_id, &bytes)
    }

    #[test]
    fn a_key_id_is_the_first_8_hex_digits_of_its_sha256() {
        // SHA-256 of 32 zero bytes is 66687aad f862bd77 …
        assert_eq!(key_id(&[0; KEY_LEN]), "66687aad");
        assert_eq!(MasterKey::new([0; KEY_LEN]).id(), "66687aad");
    }

    #[test]
    fn master_secrets_round_trip_under_a_fresh_nonce_each_time() {
        let master = MasterKey::new(MASTER);
        let first = master.encrypt(b"AIzaSy-secret");
        let second = master.encrypt(b"AIzaSy-secret");
        assert_ne!(first, second);
        assert!(first.starts_with(&format!("v1.{}.", master.id())));
        assert!(!first.contains("AIzaSy"));
        assert_eq!(master.decrypt(&first).unwrap(), b"AIzaSy-secret");
        assert_eq!(master.decrypt(&second).unwrap(), b"AIzaSy-secret");
        assert_eq!(master.decrypt(&master.encrypt(b"")).unwrap(), b"");
    }

    #[test]
    fn another_master_key_is_named_not_tried() {
        let text = MasterKey::new(MASTER).encrypt(b"token");
        let other = MasterKey::new(OTHER_MASTER);
        assert!(matches!(
            other.decrypt(&text),
            Err(SealError::UnknownMasterKey { holds, .. }) if holds == other.id()
        ));
    }

    #[test]
    fn an_altered_master_secret_fails_to_decrypt() {
        let master = MasterKey::new(MASTER);
        let tampered = flip_last_byte(&master.encrypt(b"token"));
        assert!(matches!(master.decrypt(&tampered), Err(SealError::Decrypt)));
    }

    #[test]
    fn malformed_texts_are_rejected_before_decryption() {
        let master = MasterKey::new(MASTER);
        let id = master.id().to_owned();
        for text in [
            String::new(),
            "plain text".into(),
            format!("v2.{id}.AAAA"),
            "v1.ABCDEF12.AAAA".into(),
            format!("v1.{id}.not base64!"),
            format!(
                "v1.{id}.{}",
                URL_SAFE_NO_PAD.encode([0u8; NONCE_LEN + TAG_LEN - 1])
            ),
        ] {
            assert!(
                matches!(master.decrypt(&text), Err(SealError::Malformed(_))),
                "{text:?} was not rejected as malformed"
            );
        }
    }

    #[test]
    fn digests_are_stable_hex_and_depend_on_value_and_master_key() {
        let master = MasterKey::new(MASTER);
        let digest = master.digest("ayse@example.com");
        assert_eq!(digest.len(), 64);
        assert!(
            digest
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        assert_eq!(digest, MasterKey::new(MASTER).digest("ayse@example.com"));
        assert_ne!(digest, master.digest("ayse@example.org"));
        assert_ne!(
            digest,
            MasterKey::new(OTHER_MASTER).digest("ayse@example.com")
        );
        // Keyed with a derived key, not the master key itself.
        let mut plain = hmac_sha256(&MASTER);
        plain.update(b"ayse@example.com");
        assert_ne!(digest, hex(&plain.finalize().into_bytes()));
    }

    #[test]
    fn a_sealed_value_opens_only_for_its_subject() {
        let key = DataKey::new(&[7; KEY_LEN]);
        let sealed = key.seal("lead:a", b"Ayse Yilmaz");
        assert_eq!(sealed.key_id(), Some(key.id.as_str()));
        let (_, bytes) = parse(sealed.as_str()).unwrap();
        assert_eq!(key.open("lead:a", &bytes).unwrap(), b"Ayse Yilmaz");
        assert!(matches!(
            key.open("lead:b", &bytes),
            Err(SealError::Decrypt)
        ));
    }

    #[test]
    fn a_wrapped_data_key_unwraps_only_for_its_subject_and_master() {
        let master = MasterKey::new(MASTER);
        let data_key = [9; KEY_LEN];
        let stored = || StoredKey {
            key_id: key_id(&data_key),
            master_key_id: master.id().to_owned(),
            wrapped_key: master.wrap("lead:a", &data_key),
        };
        assert_eq!(stored().wrapped_key.len(), NONCE_LEN + KEY_LEN + TAG_LEN);
        assert_eq!(
            master.unwrap("lead:a", stored()).unwrap().id,
            key_id(&data_key)
        );
        assert!(matches!(
            master.unwrap("lead:b", stored()),
            Err(SealError::Decrypt)
        ));
        // A master secret is not a wrapped key, even under the same master key.
        let (_, secret) = parse(&master.encrypt(&data_key)).unwrap();
        let swapped = StoredKey {
            wrapped_key: secret,
            ..stored()
        };
        assert!(matches!(
            master.unwrap("lead:a", swapped),
            Err(SealError::Decrypt)
        ));
    }

    #[test]
    fn sealed_values_serialise_as_plain_strings() {
        let sealed = Sealed::from("v1.0123abcd.AAAA".to_owned());
        let json = serde_json::to_value(&sealed).unwrap();
        assert_eq!(json, serde_json::json!("v1.0123abcd.AAAA"));
        assert_eq!(serde_json::from_value::<Sealed>(json).unwrap(), sealed);
    }

    #[test]
    fn debug_output_names_the_key_id_only() {
        let shown = format!("{:?}", MasterKey::new(MASTER));
        assert_eq!(
            shown,
            format!("MasterKey {{ id: {:?}, .. }}", key_id(&MASTER))
        );
    }
}
