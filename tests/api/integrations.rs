//! The Telegram Bot API and SMTP clients against the loopback fakes: what goes on the wire,
//! and how each failure of the far side is reported.

use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use gateway::integrations::mail::{LICENSE_SUBJECT, LicenseMail, MailError, Mailer};
use gateway::integrations::telegram::{Telegram, TelegramError, new_webhook_secret};
use serde_json::json;

use crate::fakes::{
    FAKE_TELEGRAM_DESCRIPTION, FakeSmtp, FakeTelegram, Mode, decoded_body, decoded_header,
    decoded_part,
};

/// The seed's bot token (001 "Lisans Yönetimi").
const BOT_TOKEN: &str = "7123456789:ABCdefGHIjklMNOpqrsTUVwxyz";
const WEBHOOK_URL: &str =
    "https://api.domizan.com/v1/webhook/telegram/660e8500-f39c-52e5-b827-557766550001";
/// Far longer than any test waits: a client bounded by `SHORT` never sees the answer.
const SLOW: Duration = Duration::from_secs(120);
const SHORT: Duration = Duration::from_millis(300);

fn telegram(fake: &FakeTelegram) -> Telegram {
    Telegram::new(&fake.base, Duration::from_secs(5))
}

fn assert_no_token(error: &TelegramError) {
    for text in [error.to_string(), format!("{error:?}")] {
        assert!(!text.contains(BOT_TOKEN), "the bot token leaked: {text}");
        assert!(
            !text.contains("ABCdefGHIjklMNOpqrsTUVwxyz"),
            "the bot token leaked: {text}"
        );
    }
}

#[tokio::test]
async fn set_webhook_posts_the_url_and_secret_to_the_bots_path_and_succeeds() {
    let fake = FakeTelegram::start().await;
    let secret = new_webhook_secret();

    telegram(&fake)
        .set_webhook(BOT_TOKEN, WEBHOOK_URL, &secret)
        .await
        .unwrap();

    let requests = fake.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    let (method, path, body) = &requests[0];
    assert_eq!(method, "POST");
    assert_eq!(path, &format!("/bot{BOT_TOKEN}/setWebhook"));
    assert_eq!(body["url"], WEBHOOK_URL);
    assert_eq!(body["secret_token"], json!(secret));
}

#[tokio::test]
async fn delete_webhook_posts_to_the_bots_delete_webhook() {
    let fake = FakeTelegram::start().await;

    telegram(&fake).delete_webhook(BOT_TOKEN).await.unwrap();

    let requests = fake.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_eq!(requests[0].0, "POST");
    assert_eq!(requests[0].1, format!("/bot{BOT_TOKEN}/deleteWebhook"));
}

#[tokio::test]
async fn a_refusal_is_reported_with_telegrams_status_and_description_but_not_the_token() {
    let fake = FakeTelegram::start().await;
    let telegram = telegram(&fake);

    fake.set_mode(Mode::Fail(401));
    let error = telegram
        .set_webhook(BOT_TOKEN, WEBHOOK_URL, &new_webhook_secret())
        .await
        .unwrap_err();
    assert_eq!(
        error,
        TelegramError::Refused {
            status: 401,
            description: FAKE_TELEGRAM_DESCRIPTION.into()
        }
    );
    assert!(!error.is_retryable(), "a refused token stays refused");
    assert_no_token(&error);

    fake.set_mode(Mode::Fail(502));
    let error = telegram.delete_webhook(BOT_TOKEN).await.unwrap_err();
    assert!(
        matches!(error, TelegramError::Refused { status: 502, .. }),
        "{error:?}"
    );
    assert!(error.is_retryable(), "Telegram's own trouble may pass");

    fake.set_mode(Mode::Ok);
    telegram.delete_webhook(BOT_TOKEN).await.unwrap();
}

#[tokio::test]
async fn a_slow_telegram_gives_a_timeout_once_the_bound_has_passed() {
    let fake = FakeTelegram::start().await;
    fake.set_mode(Mode::Slow(SLOW));
    let telegram = Telegram::new(&fake.base, SHORT);

    let started = Instant::now();
    let error = telegram
        .set_webhook(BOT_TOKEN, WEBHOOK_URL, &new_webhook_secret())
        .await
        .unwrap_err();

    assert_eq!(error, TelegramError::Timeout);
    assert!(error.is_retryable());
    // Loose on purpose: only that the client gave up instead of waiting for the answer.
    assert!(
        started.elapsed() < SLOW / 4,
        "waited {:?}",
        started.elapsed()
    );
    assert_eq!(fake.requests().len(), 1, "the request did arrive");
}

#[tokio::test]
async fn a_telegram_that_closes_the_connection_is_unreachable_and_the_error_hides_the_token() {
    let fake = FakeTelegram::start().await;
    fake.set_mode(Mode::Down);

    let error = telegram(&fake)
        .set_webhook(BOT_TOKEN, WEBHOOK_URL, &new_webhook_secret())
        .await
        .unwrap_err();

    assert!(matches!(error, TelegramError::Unreachable(_)), "{error:?}");
    assert!(error.is_retryable());
    assert_no_token(&error);
    assert!(fake.requests().is_empty());

    fake.set_mode(Mode::Ok);
    telegram(&fake)
        .set_webhook(BOT_TOKEN, WEBHOOK_URL, &new_webhook_secret())
        .await
        .unwrap();
}

#[tokio::test]
async fn a_telegram_nobody_listens_for_is_unreachable() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);

    let error = Telegram::new(&base, Duration::from_secs(5))
        .delete_webhook(BOT_TOKEN)
        .await
        .unwrap_err();

    assert!(matches!(error, TelegramError::Unreachable(_)), "{error:?}");
    assert_no_token(&error);
}

#[test]
fn webhook_secrets_are_43_base64url_characters_and_never_repeat() {
    let secrets: Vec<String> = (0..64).map(|_| new_webhook_secret()).collect();
    for secret in &secrets {
        assert_eq!(secret.len(), 43, "{secret}");
        assert!(
            secret
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'),
            "{secret}"
        );
    }
    let distinct: std::collections::HashSet<_> = secrets.iter().collect();
    assert_eq!(distinct.len(), secrets.len());
}

// ---------------------------------------------------------------------------------------
// The license e-mail
// ---------------------------------------------------------------------------------------

const FROM: &str = "Domizan Lisans <lisans@domizan.com>";
const KEY: &str = "DOMIZAN-PRO5-K4Y4-SMMM";

fn seed_mail() -> LicenseMail {
    LicenseMail {
        to: "ahmet@kayasmmm.com".into(),
        owner_name: "Ahmet Kaya".into(),
        company_name: "Kaya SMMM".into(),
        license_key: KEY.into(),
        package_name: "Pro".into(),
        max_devices: 5,
        expires_at: Utc.with_ymd_and_hms(2027, 2, 5, 0, 0, 0).unwrap(),
    }
}

fn mailer(smtp: &FakeSmtp) -> Mailer {
    Mailer::from_config(Some(&smtp.url), Some(FROM))
        .unwrap()
        .expect("SMTP_URL is set")
}

#[tokio::test]
async fn the_license_mail_reaches_the_owner_in_turkish_with_the_key() {
    let smtp = FakeSmtp::start().await;

    mailer(&smtp).send_license_key(&seed_mail()).await.unwrap();

    let messages = smtp.messages();
    assert_eq!(messages.len(), 1);
    let message = &messages[0];
    assert_eq!(message.from, "lisans@domizan.com");
    assert_eq!(message.to, vec!["ahmet@kayasmmm.com".to_string()]);
    assert_eq!(
        decoded_header(message, "Subject").as_deref(),
        Some(LICENSE_SUBJECT)
    );
    assert_eq!(LICENSE_SUBJECT, "Domizan lisans anahtarınız");
    let to = decoded_header(message, "To").unwrap();
    assert!(
        to.contains("Ahmet Kaya") && to.contains("<ahmet@kayasmmm.com>"),
        "{to}"
    );
    assert!(decoded_header(message, "Date").is_some());
    let message_id = decoded_header(message, "Message-ID").unwrap();
    assert!(message_id.ends_with("@domizan.com>"), "{message_id}");
    let content_type = decoded_header(message, "Content-Type").unwrap();
    assert!(
        content_type.starts_with("multipart/alternative"),
        "{content_type}"
    );

    let plain = decoded_part(message, "text/plain").expect("a plain-text alternative");
    let html = decoded_part(message, "text/html").expect("an HTML alternative");
    for text in [&plain, &html] {
        for expected in [
            "Sayın Ahmet Kaya",
            "Kaya SMMM",
            KEY,
            "Pro",
            "en fazla 5 cihaz",
            "05.02.2027",
            "etkinleştirmek",
            "masaüstü uygulamasını",
        ] {
            assert!(
                text.contains(expected),
                "{expected:?} missing from:\n{text}"
            );
        }
    }
    assert!(decoded_body(message).contains(KEY));
    let charset_utf8 = message
        .data
        .to_ascii_lowercase()
        .matches("charset=utf-8")
        .count();
    assert_eq!(
        charset_utf8, 2,
        "both alternatives say UTF-8:\n{}",
        message.data
    );
}

#[tokio::test]
async fn every_value_in_the_html_is_escaped_and_none_can_add_a_header() {
    let smtp = FakeSmtp::start().await;
    let mail = LicenseMail {
        owner_name: r#"<script>alert("x")</script> & 'Co'"#.into(),
        company_name: "<img src=x onerror=alert(1)>".into(),
        package_name: "Pro</td><td>".into(),
        ..seed_mail()
    };

    mailer(&smtp).send_license_key(&mail).await.unwrap();

    let message = &smtp.messages()[0];
    let html = decoded_part(message, "text/html").unwrap();
    assert!(
        html.contains("Sayın &lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;Co&#39;"),
        "{html}"
    );
    assert!(
        html.contains("&lt;img src=x onerror=alert(1)&gt;"),
        "{html}"
    );
    assert!(html.contains("Pro&lt;/td&gt;&lt;td&gt;"), "{html}");
    for raw in ["<script>", "<img", "Pro</td>"] {
        assert!(!html.contains(raw), "{raw} reached the HTML:\n{html}");
    }
    // The plain-text alternative is not markup: the name stands as typed.
    let plain = decoded_part(message, "text/plain").unwrap();
    assert!(
        plain.contains(r#"Sayın <script>alert("x")</script> & 'Co'"#),
        "{plain}"
    );

    // A line break in a name must not start a header of its own.
    let mail = LicenseMail {
        owner_name: "Ahmet\r\nBcc: victim@example.com".into(),
        ..seed_mail()
    };
    mailer(&smtp).send_license_key(&mail).await.unwrap();
    let message = &smtp.messages()[1];
    assert_eq!(message.to, vec!["ahmet@kayasmmm.com".to_string()]);
    let head = message.data.split("\r\n\r\n").next().unwrap();
    assert!(
        !head.to_ascii_lowercase().contains("\r\nbcc:"),
        "a header was injected:\n{head}"
    );
}

#[tokio::test]
async fn smtp_down_is_a_retryable_failure_and_once_up_the_mail_goes_out_once() {
    let smtp = FakeSmtp::start().await;
    let mailer = mailer(&smtp);
    smtp.set_up(false);

    let error = mailer.send_license_key(&seed_mail()).await.unwrap_err();
    assert!(matches!(error, MailError::Unavailable(_)), "{error:?}");
    assert!(error.is_retryable());
    assert!(smtp.messages().is_empty());

    smtp.set_up(true);
    mailer.send_license_key(&seed_mail()).await.unwrap();
    let messages = smtp.messages();
    assert_eq!(messages.len(), 1);
    assert!(decoded_body(&messages[0]).contains(KEY));
}

#[tokio::test]
async fn a_server_nobody_listens_on_is_unavailable_not_rejected() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("smtp://{}", listener.local_addr().unwrap());
    drop(listener);
    let mailer = Mailer::from_config(Some(&url), Some(FROM))
        .unwrap()
        .unwrap();

    let error = mailer.send_license_key(&seed_mail()).await.unwrap_err();

    assert!(matches!(error, MailError::Unavailable(_)), "{error:?}");
    assert!(error.is_retryable());
}

#[tokio::test]
async fn a_recipient_that_is_not_an_address_is_rejected_for_good_and_nothing_is_sent() {
    let smtp = FakeSmtp::start().await;
    let mail = LicenseMail {
        to: "ahmet at kayasmmm".into(),
        ..seed_mail()
    };

    let error = mailer(&smtp).send_license_key(&mail).await.unwrap_err();

    assert!(matches!(error, MailError::Rejected(_)), "{error:?}");
    assert!(!error.is_retryable());
    assert!(
        !error.to_string().contains("ahmet"),
        "no personal data in errors: {error}"
    );
    assert!(smtp.messages().is_empty());
}

#[test]
fn without_smtp_url_there_is_no_mailer() {
    assert!(Mailer::from_config(None, Some(FROM)).unwrap().is_none());
    assert!(Mailer::from_config(Some("smtp://127.0.0.1:25"), None).is_err());
    assert!(Mailer::from_config(Some("smtp://127.0.0.1:25"), Some("nobody")).is_err());
}
