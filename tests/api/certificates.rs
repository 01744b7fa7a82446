//! Signed offline licenses (issue 12): `GET /v1/licenses/public-key` from a running gateway,
//! and certificates of that gateway's key checked by an independent Ed25519 implementation —
//! Node's own crypto (OpenSSL), through both `node:crypto` and WebCrypto, the way a desktop
//! developer would (README "Signed offline licenses"). Node must be on `PATH`; without it this
//! test fails rather than passing unchecked.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{TimeDelta, Utc};
use ed25519_dalek::SigningKey;
use gateway::licenses::certificate::{CertificateSubject, Certifier, key_id};
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::io::AsyncWriteExt;
use uuid::Uuid;

use crate::helpers::{TestApp, test_config};

/// Reads `{keys, certificates}` on stdin; for each certificate prints whether it verifies
/// with the served key of its `kid`, once through `node:crypto` with the SPKI DER form and
/// once through WebCrypto with the raw form, and the payload it carries.
const NODE_VERIFIER: &str = r#"
const crypto = require("node:crypto");
const strict = (part) => {
  const bytes = Buffer.from(part, "base64url");
  if (bytes.toString("base64url") !== part) throw new Error("not canonical base64url");
  return bytes;
};
async function check(keys, certificate) {
  try {
    const [h, p, s, ...rest] = certificate.split(".");
    if (s === undefined || rest.length) return { nodeCrypto: false, webCrypto: false };
    const header = JSON.parse(strict(h).toString("utf8"));
    const key = keys.find((k) => k.kid === header.kid);
    if (!key || header.alg !== "Ed25519" || header.typ !== "domizan-license.v1") {
      return { nodeCrypto: false, webCrypto: false };
    }
    const data = Buffer.from(`${h}.${p}`, "ascii");
    const signature = strict(s);
    const spki = crypto.createPublicKey({ key: Buffer.from(key.spki, "base64"), format: "der", type: "spki" });
    const nodeCrypto = crypto.verify(null, data, spki, signature);
    const raw = await crypto.webcrypto.subtle.importKey(
      "raw", strict(key.publicKey), { name: "Ed25519" }, false, ["verify"]);
    const webCrypto = await crypto.webcrypto.subtle.verify({ name: "Ed25519" }, raw, signature, data);
    return { nodeCrypto, webCrypto, payload: JSON.parse(strict(p).toString("utf8")) };
  } catch (e) {
    return { nodeCrypto: false, webCrypto: false, error: String(e) };
  }
}
let input = "";
process.stdin.on("data", (chunk) => (input += chunk));
process.stdin.on("end", async () => {
  const { keys, certificates } = JSON.parse(input);
  const results = [];
  for (const certificate of certificates) results.push(await check(keys, certificate));
  process.stdout.write(JSON.stringify(results));
});
"#;

/// Runs [`NODE_VERIFIER`] over `certificates` with the served `keys`.
async fn node_verify(keys: &Value, certificates: &[String]) -> Vec<Value> {
    let mut child = tokio::process::Command::new("node")
        .args(["--no-warnings", "-e", NODE_VERIFIER])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node (v18 or newer) must be on PATH: it is the independent Ed25519 verifier");
    let input = json!({"keys": keys, "certificates": certificates}).to_string();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.as_bytes()).await.unwrap();
    drop(stdin);
    let output = child.wait_with_output().await.unwrap();
    assert!(
        output.status.success(),
        "node failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("node prints a JSON array")
}

/// `certificate` with the character at `index` replaced by another base64url character.
fn change_char(certificate: &str, index: usize) -> String {
    let mut changed = certificate.to_string();
    let other = if &certificate[index..index + 1] == "Q" {
        "R"
    } else {
        "Q"
    };
    changed.replace_range(index..index + 1, other);
    changed
}

/// `certificate` with one byte of its decoded payload changed (a year of `validUntil`).
fn change_payload_byte(certificate: &str) -> String {
    let parts: Vec<&str> = certificate.split('.').collect();
    let mut payload = URL_SAFE_NO_PAD.decode(parts[1]).unwrap();
    let at = String::from_utf8_lossy(&payload)
        .find("\"validUntil\":\"20")
        .unwrap()
        + 17;
    payload[at] += 1;
    format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(payload),
        parts[2]
    )
}

#[testkit::test(migrations = false)]
async fn certificates_of_the_gateway_verify_with_node_against_the_served_keys_and_fail_when_changed(
    pool: PgPool,
) {
    // A key retired by a rotation: still served, so its certificates keep verifying.
    let retired = SigningKey::from_bytes(&[0x42; 32]);
    let retired_public = URL_SAFE_NO_PAD.encode(retired.verifying_key().as_bytes());
    let settings = [
        ("LICENSE_SIGNING_PREVIOUS_KEYS", retired_public.as_str()),
        ("LICENSE_OFFLINE_GRACE_DAYS", "3"),
    ];
    let app = TestApp::spawn_with(pool.clone(), &settings).await;

    let response = app
        .client
        .get(app.url("/v1/licenses/public-key"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["cache-control"],
        "public, max-age=3600",
        "the key list is cacheable"
    );
    assert_eq!(response.headers()["x-content-type-options"], "nosniff");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["success"], true);
    let keys = body["data"]["keys"].clone();

    // The gateway's certifier: built from the configuration the gateway was started with.
    let config = test_config(&pool, &settings);
    let certifier = &config.license_certifier;
    let served: Vec<(&str, bool)> = keys
        .as_array()
        .unwrap()
        .iter()
        .map(|k| (k["kid"].as_str().unwrap(), k["current"].as_bool().unwrap()))
        .collect();
    let retired_kid = key_id(&retired.verifying_key());
    assert_eq!(
        served,
        [(certifier.kid(), true), (retired_kid.as_str(), false)],
        "current key first, then the retired one"
    );
    for key in keys.as_array().unwrap() {
        assert_eq!(key["alg"], "Ed25519");
    }

    let now = Utc::now();
    let license_id = Uuid::now_v7();
    let fingerprint = "0123456789abcdef".repeat(4);
    let subject = CertificateSubject {
        license_id,
        device_id: "dev_certificate_test".into(),
        fingerprint: fingerprint.clone(),
        package: "pro".into(),
        features: vec!["documentAnalysis".into(), "multiDevice".into()],
        expires_at: now + TimeDelta::days(365),
    };
    let claims = certifier.claims(subject.clone(), now);
    let certificate = certifier.sign(&claims);
    let old = Certifier::new(retired, Vec::new(), TimeDelta::days(3));
    let before_rotation = old.sign(&old.claims(subject, now));
    let header_end = certificate.find('.').unwrap();
    let signature_start = certificate.rfind('.').unwrap() + 1;

    let certificates = vec![
        certificate.clone(),
        before_rotation,
        change_payload_byte(&certificate),
        change_char(&certificate, header_end / 2),
        change_char(&certificate, (header_end + signature_start) / 2),
        change_char(&certificate, (signature_start + certificate.len()) / 2),
        // A stranger's key, not served: refused however well-formed.
        {
            let stranger = Certifier::new(
                SigningKey::from_bytes(&[0x07; 32]),
                Vec::new(),
                TimeDelta::days(3),
            );
            stranger.sign(&claims)
        },
    ];
    let results = node_verify(&keys, &certificates).await;
    let verdicts: Vec<(bool, bool)> = results
        .iter()
        .map(|r| {
            (
                r["nodeCrypto"].as_bool().unwrap(),
                r["webCrypto"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        verdicts,
        [
            (true, true),
            (true, true),
            (false, false),
            (false, false),
            (false, false),
            (false, false),
            (false, false),
        ],
        "the gateway's and the retired key's certificates verify, every changed one fails: {results:#?}"
    );

    // What the desktop reads from the verified certificate.
    let payload = &results[0]["payload"];
    assert_eq!(payload["licenseId"], license_id.to_string());
    assert_eq!(payload["fingerprint"], fingerprint);
    assert_eq!(payload["deviceId"], "dev_certificate_test");
    assert_eq!(
        payload["validUntil"],
        (claims.issued_at + TimeDelta::days(3))
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "three days of offline grace, as configured"
    );
    app.stop().await.unwrap();
}

#[testkit::test(migrations = false)]
async fn the_public_key_route_needs_no_credentials_and_lists_only_the_current_key_by_default(
    pool: PgPool,
) {
    let app = TestApp::spawn(pool.clone()).await;
    let body: Value = app
        .client
        .get(app.url("/v1/licenses/public-key"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let keys = body["data"]["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(
        keys[0]["kid"],
        test_config(&pool, &[]).license_certifier.kid()
    );
    let wrong = app
        .client
        .post(app.url("/v1/licenses/public-key"))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 405);
    let body: Value = wrong.json().await.unwrap();
    assert_eq!(body["error"]["code"], "METHOD_NOT_ALLOWED");
    app.stop().await.unwrap();
}
