//! The Telegram Bot API, as far as the gateway uses it: registering and removing the webhook
//! through which a license's bot delivers its updates, and minting the secret Telegram echoes
//! in `X-Telegram-Bot-Api-Secret-Token` so the webhook can tell Telegram from anyone else.
//!
//! The bot token is a credential that the Bot API puts in the request path (`/bot<token>/…`).
//! It never leaves this module: transport errors are rendered from reqwest's error *without*
//! its URL and then scrubbed of the token, Telegram's own descriptions are scrubbed too, the
//! spans name the API method only, and `Debug` shows the base URL and the timeout.

use std::fmt;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use reqwest::Url;
use serde::Deserialize;
use serde_json::json;

/// What stands in for the bot token wherever a text could have carried it.
const REDACTED: &str = "<redacted>";
/// Telegram's answers are a few hundred bytes; a larger body is not the Bot API talking.
const MAX_ANSWER_BYTES: usize = 64 * 1024;
/// Enough of Telegram's `description` to say what went wrong, not enough to flood a log line.
const MAX_DESCRIPTION_CHARS: usize = 200;

/// A Bot API client. Cheap to clone (the connection pool is shared); one serves every bot,
/// since the bot is chosen by the token of each call.
#[derive(Clone)]
pub struct Telegram {
    client: reqwest::Client,
    base: String,
    timeout: Duration,
}

impl fmt::Debug for Telegram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Telegram")
            .field("base", &self.base)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// Why a Bot API call did not succeed. No variant's text ever contains the bot token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TelegramError {
    /// No complete answer within the client's timeout.
    #[error("the Telegram Bot API did not answer in time")]
    Timeout,
    /// No answer at all: the connection failed or was closed, or the base URL is unusable.
    #[error("the Telegram Bot API could not be reached: {0}")]
    Unreachable(String),
    /// Telegram answered, but not with success: a non-2xx status or `"ok": false` (an invalid
    /// token gives 401, an unusable webhook URL 400, flooding 429).
    #[error("the Telegram Bot API refused the call (HTTP {status}): {description}")]
    Refused { status: u16, description: String },
}

impl TelegramError {
    /// Whether the same call may succeed later without anyone changing anything: the network
    /// and Telegram's own trouble (5xx, 429) pass; a refused token or URL stays refused.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Timeout | Self::Unreachable(_) => true,
            Self::Refused { status, .. } => *status == 429 || *status >= 500,
        }
    }
}

/// The envelope of every Bot API answer (`{"ok": true, "result": …}` or
/// `{"ok": false, "error_code": …, "description": …}`).
#[derive(Deserialize)]
struct Answer {
    ok: bool,
    #[serde(default)]
    description: Option<String>,
}

impl Telegram {
    /// `base` = TELEGRAM_API_BASE (no trailing slash); every call waits at most `timeout`.
    pub fn new(base: &str, timeout: Duration) -> Self {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            // The Bot API answers directly; following a redirect would hand the token-bearing
            // path to whichever host the redirect names.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            // Only fails when the TLS backend cannot initialise, which is a build defect, not
            // a runtime condition (rustls with bundled roots needs nothing from the system).
            .expect("the HTTP client for the Telegram Bot API builds");
        Self {
            client,
            base: base.trim_end_matches('/').to_owned(),
            timeout,
        }
    }

    /// POST {base}/bot<token>/setWebhook with JSON `{url, secret_token}`; Ok only when
    /// Telegram answers 2xx with `{"ok": true}`.
    ///
    /// `allowed_updates` is left out, so Telegram keeps its default set (every update type
    /// except the chat-member ones), and a re-run replaces the previous URL and secret.
    #[tracing::instrument(skip_all, fields(telegram.method = "setWebhook"))]
    pub async fn set_webhook(
        &self,
        bot_token: &str,
        url: &str,
        secret_token: &str,
    ) -> Result<(), TelegramError> {
        let body = json!({ "url": url, "secret_token": secret_token });
        self.call(bot_token, "setWebhook", &body).await
    }

    /// POST {base}/bot<token>/deleteWebhook. Telegram answers ok when no webhook was set, so
    /// removing twice is harmless.
    #[tracing::instrument(skip_all, fields(telegram.method = "deleteWebhook"))]
    pub async fn delete_webhook(&self, bot_token: &str) -> Result<(), TelegramError> {
        self.call(bot_token, "deleteWebhook", &json!({})).await
    }

    async fn call(
        &self,
        bot_token: &str,
        method: &str,
        body: &serde_json::Value,
    ) -> Result<(), TelegramError> {
        let url = self.method_url(bot_token, method)?;
        let mut response = self
            .client
            .post(url)
            .json(body)
            .send()
            .await
            .map_err(|e| transport_error(e, bot_token))?;
        let status = response.status();
        let mut bytes = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| transport_error(e, bot_token))?
        {
            if bytes.len() + chunk.len() > MAX_ANSWER_BYTES {
                break;
            }
            bytes.extend_from_slice(&chunk);
        }
        let answer = serde_json::from_slice::<Answer>(&bytes).ok();
        match answer {
            Some(Answer { ok: true, .. }) if status.is_success() => Ok(()),
            answer => {
                let description = answer
                    .and_then(|a| a.description)
                    .unwrap_or_else(|| "no Bot API answer in the body".to_owned());
                let description: String = redact(&description, bot_token)
                    .chars()
                    .take(MAX_DESCRIPTION_CHARS)
                    .collect();
                tracing::debug!(http.status = status.as_u16(), %description, "Telegram refused");
                Err(TelegramError::Refused {
                    status: status.as_u16(),
                    description,
                })
            }
        }
    }

    /// `{base}/bot<token>/<method>`, the token pushed as one path segment so that whatever it
    /// contains is percent-encoded and cannot reach another path or the query.
    fn method_url(&self, bot_token: &str, method: &str) -> Result<Url, TelegramError> {
        let unusable =
            || TelegramError::Unreachable("TELEGRAM_API_BASE is not a usable base URL".into());
        let mut url = Url::parse(&self.base).map_err(|_| unusable())?;
        url.path_segments_mut()
            .map_err(|()| unusable())?
            .pop_if_empty()
            .push(&format!("bot{bot_token}"))
            .push(method);
        Ok(url)
    }
}

/// 32 random bytes rendered in `[A-Za-z0-9_-]` (base64url, no padding = 43 chars) from a
/// CSPRNG (the thread-local ChaCha generator seeded by the OS), within the 1–256 characters
/// of that alphabet Telegram accepts as `secret_token`.
pub fn new_webhook_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A reqwest error as a token-free text: the URL is dropped and the cause chain appended
/// (reqwest's own text is only "error sending request"), then any trace of the token removed.
fn transport_error(error: reqwest::Error, bot_token: &str) -> TelegramError {
    if error.is_timeout() {
        return TelegramError::Timeout;
    }
    let error = error.without_url();
    let mut text = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    tracing::debug!(error = %redact(&text, bot_token), "Telegram unreachable");
    TelegramError::Unreachable(redact(&text, bot_token))
}

/// `text` with the token, raw and as it appears percent-encoded in a URL, replaced.
fn redact(text: &str, bot_token: &str) -> String {
    if bot_token.is_empty() {
        return text.to_owned();
    }
    let mut out = text.replace(bot_token, REDACTED);
    let mut probe = Url::parse("http://x/").expect("a literal URL parses");
    probe
        .path_segments_mut()
        .expect("an http URL has path segments")
        .push(bot_token);
    let encoded = &probe.path()[1..];
    if encoded != bot_token {
        out = out.replace(encoded, REDACTED);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "7123456789:ABCdefGHIjklMNOpqrsTUVwxyz";

    #[test]
    fn the_token_is_one_path_segment_after_the_base() {
        let telegram = Telegram::new("http://127.0.0.1:9/tg/", Duration::from_secs(1));
        let url = telegram.method_url(TOKEN, "setWebhook").unwrap();
        assert_eq!(
            url.as_str(),
            format!("http://127.0.0.1:9/tg/bot{TOKEN}/setWebhook")
        );

        let url = telegram
            .method_url("1:a/../x?y#z", "deleteWebhook")
            .unwrap();
        assert_eq!(url.path(), "/tg/bot1:a%2F..%2Fx%3Fy%23z/deleteWebhook");
        assert_eq!(url.query(), None);
    }

    #[test]
    fn redaction_removes_the_token_raw_and_percent_encoded() {
        let text = format!("failed for /bot{TOKEN}/x and /bot1:a%2Fb/x and 1:a/b");
        let redacted = redact(&text, TOKEN);
        assert!(!redacted.contains(TOKEN), "{redacted}");
        let redacted = redact(&text, "1:a/b");
        assert!(
            !redacted.contains("1:a/b") && !redacted.contains("1:a%2Fb"),
            "{redacted}"
        );
    }

    #[test]
    fn an_unusable_base_is_reported_without_the_token() {
        let telegram = Telegram::new("not a url", Duration::from_secs(1));
        let error = telegram.method_url(TOKEN, "setWebhook").unwrap_err();
        assert!(matches!(error, TelegramError::Unreachable(_)));
        assert!(!error.to_string().contains(TOKEN));
    }

    #[test]
    fn debug_shows_no_token_because_it_holds_none() {
        let telegram = Telegram::new("https://api.telegram.org", Duration::from_secs(3));
        assert_eq!(
            format!("{telegram:?}"),
            "Telegram { base: \"https://api.telegram.org\", timeout: 3s, .. }"
        );
    }
}
