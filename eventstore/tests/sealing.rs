//! Crypto-shredding against a real Postgres: data keys per subject, wrapped at rest, bound to
//! their subject, created once under concurrency, and gone for good after a shred.

use std::sync::Arc;

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, KeyInit};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use eventstore::sealing::{SealError, Sealed, Sealer};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use tokio::sync::Barrier;

const MASTER: [u8; 32] = *b"integration master key: 32 bytes";
const OTHER_MASTER: [u8; 32] = *b"a different master key: 32 bytes";

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Personal {
    name: String,
    email: String,
}

fn personal() -> Personal {
    Personal {
        name: "Ayşe Yılmaz".into(),
        email: "ayse@example.com".into(),
    }
}

async fn key_rows(pool: &PgPool, subject: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM data_keys WHERE subject = $1")
        .bind(subject)
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn wrapped_key(pool: &PgPool, subject: &str) -> Vec<u8> {
    sqlx::query_scalar("SELECT wrapped_key FROM data_keys WHERE subject = $1")
        .bind(subject)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// The sealed value with its bytes (nonce ‖ ciphertext ‖ tag) changed by `change`.
fn altered(sealed: &Sealed, change: impl FnOnce(&mut Vec<u8>)) -> Sealed {
    let (head, body) = sealed.as_str().rsplit_once('.').unwrap();
    let mut bytes = URL_SAFE_NO_PAD.decode(body).unwrap();
    change(&mut bytes);
    Sealed::from(format!("{head}.{}", URL_SAFE_NO_PAD.encode(bytes)))
}

#[testkit::test(migrations = "../migrations")]
async fn a_sealed_value_opens_to_its_plaintext(pool: PgPool) {
    let sealer = Sealer::new(pool, MASTER);

    let sealed = sealer.seal("lead:1", b"0532 123 45 67").await.unwrap();
    assert!(sealed.as_str().starts_with("v1."));
    assert!(!sealed.as_str().contains("0532"));
    assert_eq!(
        sealer.open("lead:1", &sealed).await.unwrap().as_deref(),
        Some(&b"0532 123 45 67"[..])
    );

    let sealed = sealer.seal_json("lead:1", &personal()).await.unwrap();
    let opened: Option<Personal> = sealer.open_json("lead:1", &sealed).await.unwrap();
    assert_eq!(opened, Some(personal()));
}

#[testkit::test(migrations = "../migrations")]
async fn projections_open_sealed_values_inside_their_transaction(pool: PgPool) {
    let sealer = Sealer::new(pool.clone(), MASTER);
    let sealed = sealer.seal_json("lead:1", &personal()).await.unwrap();

    let mut tx = pool.begin().await.unwrap();
    let opened: Option<Personal> = sealer
        .open_json_with(&mut tx, "lead:1", &sealed)
        .await
        .unwrap();
    assert_eq!(opened, Some(personal()));
    // The transaction stays usable afterwards.
    sqlx::query("SELECT 1").execute(&mut *tx).await.unwrap();
    tx.commit().await.unwrap();
}

#[testkit::test(migrations = "../migrations")]
async fn a_key_minted_in_a_transaction_exists_only_if_it_commits(pool: PgPool) {
    let sealer = Sealer::new(pool.clone(), MASTER);

    let mut tx = pool.begin().await.unwrap();
    sealer
        .seal_json_new_in(&mut tx, "lead:1", &personal())
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(
        key_rows(&pool, "lead:1").await,
        0,
        "a rolled-back key survived"
    );

    let mut tx = pool.begin().await.unwrap();
    let sealed = sealer
        .seal_json_new_in(&mut tx, "lead:1", &personal())
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let opened: Option<Personal> = sealer.open_json("lead:1", &sealed).await.unwrap();
    assert_eq!(opened, Some(personal()));

    // A subject that has a key keeps it: the value opens with the existing key.
    let mut tx = pool.begin().await.unwrap();
    let again = sealer
        .seal_json_new_in(&mut tx, "lead:1", &personal())
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(again.key_id(), sealed.key_id());
    assert_eq!(key_rows(&pool, "lead:1").await, 1);
}

#[testkit::test(migrations = "../migrations")]
async fn a_key_ring_opens_a_page_of_subjects_like_open_does(pool: PgPool) {
    let sealer = Sealer::new(pool.clone(), MASTER);
    let kept = sealer.seal_json("lead:kept", &personal()).await.unwrap();
    let gone = sealer.seal_json("lead:gone", &personal()).await.unwrap();
    let foreign = sealer.seal_json("lead:other", &personal()).await.unwrap();
    sealer.shred("lead:gone").await.unwrap();

    let subjects: Vec<String> = ["lead:kept", "lead:gone", "lead:none"]
        .map(String::from)
        .to_vec();
    let mut conn = pool.acquire().await.unwrap();
    let ring = sealer.key_ring(&mut conn, &subjects).await.unwrap();
    let opened: Option<Personal> = ring.open_json("lead:kept", &kept).unwrap();
    assert_eq!(opened, Some(personal()));
    assert_eq!(ring.open("lead:gone", &gone).unwrap(), None, "shredded");
    // Sealed for another subject, or a subject without keys: an error, never garbage.
    assert!(matches!(
        ring.open("lead:kept", &foreign),
        Err(SealError::KeyMismatch { .. })
    ));
    assert!(matches!(
        ring.open("lead:none", &kept),
        Err(SealError::KeyMismatch { .. })
    ));
    let empty = sealer.key_ring(&mut conn, &[]).await.unwrap();
    assert!(empty.open("lead:kept", &kept).is_err());
}

#[testkit::test(migrations = "../migrations")]
async fn each_subject_gets_its_own_data_key_and_keeps_it(pool: PgPool) {
    let sealer = Sealer::new(pool.clone(), MASTER);

    let a1 = sealer.seal("lead:a", b"same text").await.unwrap();
    let a2 = sealer.seal("lead:a", b"same text").await.unwrap();
    let b = sealer.seal("lead:b", b"same text").await.unwrap();

    assert_eq!(a1.key_id(), a2.key_id(), "a subject keeps its key");
    assert_ne!(a1.key_id(), b.key_id(), "subjects do not share keys");
    assert_ne!(a1, a2, "every seal draws a fresh nonce");
    assert_ne!(
        wrapped_key(&pool, "lead:a").await,
        wrapped_key(&pool, "lead:b").await
    );
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM data_keys")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(total, 2);
}

#[testkit::test(migrations = "../migrations")]
async fn a_value_sealed_for_one_subject_does_not_open_as_another(pool: PgPool) {
    let sealer = Sealer::new(pool.clone(), MASTER);
    let for_a = sealer.seal("lead:a", b"Ayse").await.unwrap();

    // B has a key of its own: the value names a key B never had.
    sealer.seal("lead:b", b"Burak").await.unwrap();
    assert!(matches!(
        sealer.open("lead:b", &for_a).await,
        Err(SealError::KeyMismatch { .. })
    ));
    // C has no key at all: still an error, not "erased".
    assert!(matches!(
        sealer.open("lead:c", &for_a).await,
        Err(SealError::KeyMismatch { .. })
    ));

    // Even A's very key row copied over to B does not help: the wrapping is bound to A.
    sqlx::query(
        "UPDATE data_keys SET key_id = a.key_id, wrapped_key = a.wrapped_key
           FROM data_keys a WHERE a.subject = 'lead:a' AND data_keys.subject = 'lead:b'",
    )
    .execute(&pool)
    .await
    .unwrap();
    assert!(matches!(
        sealer.open("lead:b", &for_a).await,
        Err(SealError::Decrypt)
    ));
    assert_eq!(
        sealer.open("lead:a", &for_a).await.unwrap().as_deref(),
        Some(&b"Ayse"[..])
    );
}

#[testkit::test(migrations = "../migrations")]
async fn after_a_shred_the_key_row_is_gone_and_values_open_to_nothing(pool: PgPool) {
    let sealer = Sealer::new(pool.clone(), MASTER);
    let sealed = sealer.seal_json("lead:1", &personal()).await.unwrap();
    let other = sealer.seal("lead:2", b"kept").await.unwrap();

    assert!(sealer.shred("lead:1").await.unwrap());
    assert!(
        !sealer.shred("lead:1").await.unwrap(),
        "a second shred finds nothing"
    );

    assert_eq!(key_rows(&pool, "lead:1").await, 0);
    assert_eq!(sealer.open("lead:1", &sealed).await.unwrap(), None);
    let opened: Option<Personal> = sealer.open_json("lead:1", &sealed).await.unwrap();
    assert_eq!(opened, None);
    let mut conn = pool.acquire().await.unwrap();
    let opened: Option<Personal> = sealer
        .open_json_with(&mut conn, "lead:1", &sealed)
        .await
        .unwrap();
    assert_eq!(opened, None);

    // Other subjects are untouched.
    assert_eq!(
        sealer.open("lead:2", &other).await.unwrap().as_deref(),
        Some(&b"kept"[..])
    );
}

#[testkit::test(migrations = "../migrations")]
async fn sealing_after_a_shred_starts_a_new_key_and_old_values_stay_shredded(pool: PgPool) {
    let sealer = Sealer::new(pool.clone(), MASTER);
    let old = sealer.seal("lead:1", b"before erasure").await.unwrap();
    sealer.shred("lead:1").await.unwrap();

    let new = sealer.seal("lead:1", b"after erasure").await.unwrap();
    assert_ne!(old.key_id(), new.key_id());
    assert_eq!(sealer.open("lead:1", &old).await.unwrap(), None);
    assert_eq!(
        sealer.open("lead:1", &new).await.unwrap().as_deref(),
        Some(&b"after erasure"[..])
    );
}

#[testkit::test(migrations = "../migrations")]
async fn the_data_keys_table_holds_only_wrapped_keys(pool: PgPool) {
    let sealer = Sealer::new(pool.clone(), MASTER);
    let sealed = sealer.seal("lead:1", b"secret").await.unwrap();
    let wrapped = wrapped_key(&pool, "lead:1").await;
    assert_eq!(wrapped.len(), 12 + 32 + 16, "nonce, wrapped key, tag");

    // No 32-byte window of the stored row is the key that sealed the value.
    let body = URL_SAFE_NO_PAD
        .decode(sealed.as_str().rsplit_once('.').unwrap().1)
        .unwrap();
    let (nonce, ciphertext) = body.split_first_chunk::<12>().unwrap();
    for window in wrapped.windows(32) {
        let cipher = Aes256Gcm::new_from_slice(window).unwrap();
        let payload = Payload {
            msg: ciphertext,
            aad: b"lead:1",
        };
        assert!(cipher.decrypt(nonce.into(), payload).is_err());
    }

    // Another master key cannot unwrap it: first it is told the row needs another key…
    let stranger = Sealer::new(pool.clone(), OTHER_MASTER);
    assert!(matches!(
        stranger.open("lead:1", &sealed).await,
        Err(SealError::UnknownMasterKey { .. })
    ));
    // …and if the row claimed the stranger's id, authentication would still fail.
    sqlx::query("UPDATE data_keys SET master_key_id = $1 WHERE subject = 'lead:1'")
        .bind(stranger.key_id())
        .execute(&pool)
        .await
        .unwrap();
    assert!(matches!(
        stranger.open("lead:1", &sealed).await,
        Err(SealError::Decrypt)
    ));
}

#[testkit::test(migrations = "../migrations")]
async fn an_altered_value_fails_instead_of_opening_to_garbage(pool: PgPool) {
    let sealer = Sealer::new(pool, MASTER);
    let sealed = sealer.seal("lead:1", b"Ayse").await.unwrap();

    let flipped_tag_bit = altered(&sealed, |b| *b.last_mut().unwrap() ^= 0x01);
    let flipped_text_bit = altered(&sealed, |b| b[12] ^= 0x80);
    let truncated = altered(&sealed, |b| {
        b.pop();
    });
    let extended = altered(&sealed, |b| b.push(0));
    for bad in [flipped_tag_bit, flipped_text_bit, truncated, extended] {
        assert!(
            matches!(sealer.open("lead:1", &bad).await, Err(SealError::Decrypt)),
            "{bad} opened"
        );
    }
    let not_sealed = Sealed::from("Ayse".to_owned());
    assert!(matches!(
        sealer.open("lead:1", &not_sealed).await,
        Err(SealError::Malformed(_))
    ));
}

#[testkit::test(migrations = "../migrations")]
async fn concurrent_first_seals_create_exactly_one_key(pool: PgPool) {
    let sealer = Sealer::new(pool.clone(), MASTER);
    let barrier = Arc::new(Barrier::new(8));
    let tasks: Vec<_> = (0..8u8)
        .map(|i| {
            let sealer = sealer.clone();
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                let sealed = sealer.seal("lead:new", &[i]).await.unwrap();
                (i, sealed)
            })
        })
        .collect();
    let mut sealed = Vec::new();
    for task in tasks {
        sealed.push(task.await.unwrap());
    }

    assert_eq!(key_rows(&pool, "lead:new").await, 1);
    for (i, value) in &sealed {
        assert_eq!(value.key_id(), sealed[0].1.key_id());
        assert_eq!(
            sealer.open("lead:new", value).await.unwrap().as_deref(),
            Some(&[*i][..])
        );
    }
}

#[testkit::test(migrations = "../migrations")]
async fn digests_are_stable_and_keyed_by_the_master_key(pool: PgPool) {
    let sealer = Sealer::new(pool.clone(), MASTER);
    let again = Sealer::new(pool.clone(), MASTER);
    let stranger = Sealer::new(pool, OTHER_MASTER);

    let digest = sealer.digest("ayse@example.com");
    assert_eq!(digest, again.digest("ayse@example.com"));
    assert_ne!(digest, sealer.digest("burak@example.com"));
    assert_ne!(digest, stranger.digest("ayse@example.com"));
    assert_eq!(sealer.key_id(), again.key_id());
    assert_ne!(sealer.key_id(), stranger.key_id());
}

#[testkit::test(migrations = "../migrations")]
async fn master_secrets_round_trip_and_never_repeat(pool: PgPool) {
    let sealer = Sealer::new(pool.clone(), MASTER);
    let token = b"123456:AAE-telegram-bot-token";

    let first = sealer.encrypt_with_master(token);
    let second = sealer.encrypt_with_master(token);
    assert_ne!(first, second);
    assert!(first.starts_with(&format!("v1.{}.", sealer.key_id())));
    assert_eq!(sealer.decrypt_with_master(&first).unwrap(), token);
    assert_eq!(sealer.decrypt_with_master(&second).unwrap(), token);

    // Secrets at rest need no database and no data key.
    assert_eq!(key_rows(&pool, "").await, 0);
    let stranger = Sealer::new(pool, OTHER_MASTER);
    assert!(matches!(
        stranger.decrypt_with_master(&first),
        Err(SealError::UnknownMasterKey { .. })
    ));
}

#[testkit::test(migrations = "../migrations")]
async fn sealing_for_a_new_subject_creates_its_key_or_reuses_an_existing_one(pool: PgPool) {
    let sealer = Sealer::new(pool.clone(), MASTER);
    let fresh = sealer
        .seal_json_new("lead:fresh", &personal())
        .await
        .unwrap();
    assert_eq!(key_rows(&pool, "lead:fresh").await, 1);
    assert_eq!(
        sealer
            .open_json::<Personal>("lead:fresh", &fresh)
            .await
            .unwrap(),
        Some(personal())
    );

    // Not new after all: the existing key seals, and older values still open.
    let older = sealer.seal_json("lead:old", &personal()).await.unwrap();
    let newer = sealer.seal_json_new("lead:old", &personal()).await.unwrap();
    assert_eq!(key_rows(&pool, "lead:old").await, 1);
    assert_eq!(older.key_id(), newer.key_id());
    assert_eq!(
        sealer
            .open_json::<Personal>("lead:old", &older)
            .await
            .unwrap(),
        Some(personal())
    );
}
