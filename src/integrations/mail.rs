//! Outgoing e-mail over SMTP (lettre): the license e-mail that hands a customer their key.
//!
//! A [`Mailer`] exists only when `SMTP_URL` is set; without it the gateway sends nothing and
//! says so (`emailSent: false`). The message is Turkish, UTF-8, with plain-text and HTML
//! alternatives; every value put into the HTML is escaped, and header values go through
//! lettre's encoder, so no owner or company name can add markup or a header.
//!
//! Errors say whether a retry can help ([`MailError::is_retryable`]) and carry no personal
//! data: a server's reply text can echo the recipient's address, so only its code is kept,
//! and the result can be logged or recorded in an event that outlives a KVKK erasure.
//! Neither the SMTP password nor anything else from `SMTP_URL` beyond the host is shown.

use std::fmt;
use std::time::Duration;

use anyhow::{Context, anyhow};
use chrono::{DateTime, FixedOffset, Utc};
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp;
use lettre::{Address, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

/// The longest one license e-mail may take, from connecting to the server's final answer.
/// The same bound is given to lettre per command; ours also covers the sum of them.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// The subject of the license e-mail.
pub const LICENSE_SUBJECT: &str = "Domizan lisans anahtarınız";

/// Sends the gateway's e-mails through one SMTP server as one sender. Cheap to clone.
#[derive(Clone)]
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    /// `host:port` and how TLS is used, for `Debug` (never the credentials).
    server: String,
}

impl fmt::Debug for Mailer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mailer")
            .field("server", &self.server)
            .field("from", &self.from.to_string())
            .finish_non_exhaustive()
    }
}

/// What the license e-mail says. The caller supplies the license key in clear: handing it to
/// the customer is the point of this mail.
#[derive(Clone)]
pub struct LicenseMail {
    pub to: String,
    pub owner_name: String,
    pub company_name: String,
    pub license_key: String,
    pub package_name: String,
    pub max_devices: u32,
    pub expires_at: DateTime<Utc>,
}

impl fmt::Debug for LicenseMail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The key is a credential of the customer's, the rest personal data: neither belongs
        // in a log line that a stray `{:?}` could write.
        f.debug_struct("LicenseMail")
            .field("package_name", &self.package_name)
            .field("max_devices", &self.max_devices)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// Why a mail did not go out. The texts hold no personal data and no credentials.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MailError {
    /// The server could not be reached, dropped the connection, spoke garbage or answered
    /// with a transient (4xx) code: the same mail may go out later.
    #[error("the mail server is unavailable: {0}")]
    Unavailable(String),
    /// No final answer within [`SEND_TIMEOUT`]: may go out later.
    #[error("the mail server did not answer within {SEND_TIMEOUT:?}")]
    Timeout,
    /// Refused for good: a permanent (5xx) answer such as an unknown recipient or failed
    /// authentication, an address that is not one, or a capability the server lacks. Sending
    /// the same mail again will fail the same way until someone changes something.
    #[error("the mail was rejected: {0}")]
    Rejected(String),
}

impl MailError {
    /// Whether sending the same mail again later can succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Unavailable(_) | Self::Timeout)
    }
}

impl Mailer {
    /// SMTP_URL (`smtp://user:pass@host:port`, `smtps://…`, `smtp://…?tls=required` for
    /// STARTTLS, with lettre's URL rules) and MAIL_FROM (`Name <address>` or `address`);
    /// `None` when SMTP_URL is unset or blank. Err on a malformed URL or sender, or a URL
    /// without MAIL_FROM.
    pub fn from_config(
        smtp_url: Option<&str>,
        mail_from: Option<&str>,
    ) -> anyhow::Result<Option<Mailer>> {
        let Some(smtp_url) = smtp_url.map(str::trim).filter(|url| !url.is_empty()) else {
            return Ok(None);
        };
        let from = mail_from
            .map(str::trim)
            .filter(|from| !from.is_empty())
            .context("MAIL_FROM must be set when SMTP_URL is (the sender of license e-mails)")?;
        // See `display_name`: a line break in a mailbox would make every send panic.
        anyhow::ensure!(
            !from.chars().any(char::is_control),
            "MAIL_FROM must not contain control characters"
        );
        let from: Mailbox = from.parse().map_err(|e| {
            anyhow!("MAIL_FROM is not a mailbox (`Name <address>` or `address`): {e}")
        })?;
        // lettre's texts name the part that is wrong, never the URL or its password.
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(smtp_url)
            .map_err(|e| anyhow!("SMTP_URL is not a usable SMTP URL: {e}"))?
            .timeout(Some(SEND_TIMEOUT))
            .build();
        let server = describe_server(smtp_url);
        Ok(Some(Mailer {
            transport,
            from,
            server,
        }))
    }

    /// The license e-mail (Turkish, plain-text and HTML alternatives, UTF-8): greets the
    /// owner, gives the license key, package, max devices, expiry date (dd.MM.yyyy, Turkish
    /// time), short how-to-activate steps in the desktop app. Bounded by [`SEND_TIMEOUT`].
    #[tracing::instrument(skip_all, fields(mail.kind = "license_key"))]
    pub async fn send_license_key(&self, mail: &LicenseMail) -> Result<(), MailError> {
        let message = self.license_message(mail)?;
        let result = match tokio::time::timeout(SEND_TIMEOUT, self.transport.send(message)).await {
            Err(_elapsed) => Err(MailError::Timeout),
            Ok(Ok(_response)) => Ok(()),
            Ok(Err(e)) => Err(classify(&e)),
        };
        if let Err(e) = &result {
            tracing::debug!(error = %e, "license e-mail not sent");
        }
        result
    }

    fn license_message(&self, mail: &LicenseMail) -> Result<Message, MailError> {
        let address: Address =
            mail.to.trim().parse().map_err(|_| {
                MailError::Rejected("the recipient address is not an address".into())
            })?;
        let to = Mailbox::new(display_name(&mail.owner_name), address);
        let content = LicenseContent::new(mail);
        Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(LICENSE_SUBJECT)
            // Without one lettre names a `localhost` Message-ID, which spam filters dislike.
            .message_id(Some(format!(
                "<{}@{}>",
                uuid::Uuid::new_v4(),
                self.from.email.domain()
            )))
            .multipart(MultiPart::alternative_plain_html(
                content.plain(),
                content.html(),
            ))
            .map_err(|e| MailError::Rejected(format!("the message could not be built: {e}")))
    }
}

/// A lettre error as a [`MailError`] without the server's free text (see the module doc).
fn classify(e: &smtp::Error) -> MailError {
    if e.is_timeout() {
        return MailError::Timeout;
    }
    if let Some(code) = e.status() {
        let text = format!("the server answered {code}");
        return if e.is_permanent() {
            MailError::Rejected(text)
        } else {
            MailError::Unavailable(text)
        };
    }
    if e.is_response() {
        // A reply cut short (the server closed the connection) or one that is not SMTP.
        return MailError::Unavailable("the server's reply was incomplete or not SMTP".into());
    }
    if e.is_client() {
        // Our side cannot do what the server requires (e.g. no common AUTH mechanism).
        return MailError::Rejected(e.to_string());
    }
    // Network, connection and TLS errors: their sources are I/O and rustls texts.
    MailError::Unavailable(e.to_string())
}

/// A name fit for a mailbox header: control characters become spaces. lettre cannot encode a
/// CR or LF in a display name and its header rendering then panics instead of failing, so
/// the name is made safe here rather than trusting every caller to have refused it.
fn display_name(name: &str) -> Option<String> {
    let name: String = name
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let name = name.split_whitespace().collect::<Vec<_>>().join(" ");
    (!name.is_empty()).then_some(name)
}

/// `scheme://host:port` of an SMTP URL, dropping credentials, path and query.
fn describe_server(smtp_url: &str) -> String {
    match url_parts(smtp_url) {
        Some((scheme, host_port)) => format!("{scheme}://{host_port}"),
        None => "smtp".into(),
    }
}

fn url_parts(smtp_url: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = smtp_url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    Some((scheme, host_port))
}

/// Turkey keeps UTC+3 all year (no daylight saving since 2016); a date shown to a Turkish
/// customer is the date on their calendar.
fn turkish_date(at: DateTime<Utc>) -> String {
    let turkey = FixedOffset::east_opt(3 * 3600).expect("UTC+3 is a valid offset");
    at.with_timezone(&turkey).format("%d.%m.%Y").to_string()
}

/// The values of one license e-mail, rendered twice.
struct LicenseContent<'a> {
    mail: &'a LicenseMail,
    expires: String,
}

impl<'a> LicenseContent<'a> {
    fn new(mail: &'a LicenseMail) -> Self {
        Self {
            mail,
            expires: turkish_date(mail.expires_at),
        }
    }

    fn plain(&self) -> String {
        let m = self.mail;
        format!(
            "Sayın {owner},\n\
             \n\
             {company} için Domizan lisansınız hazır. Lisans bilgileriniz:\n\
             \n\
             Lisans anahtarı: {key}\n\
             Paket: {package}\n\
             Cihaz sınırı: en fazla {devices} cihaz\n\
             Geçerlilik: {expires} tarihine kadar\n\
             \n\
             Lisansınızı etkinleştirmek için:\n\
             1. Domizan masaüstü uygulamasını bilgisayarınıza kurun ve açın.\n\
             2. Lisans ekranında lisans anahtarınızı girin (kopyalayıp yapıştırabilirsiniz).\n\
             3. \"Etkinleştir\" düğmesine tıklayın; bu bilgisayar lisansınıza eklenir.\n\
             Aynı anahtarla en fazla {devices} cihazı etkinleştirebilirsiniz.\n\
             \n\
             Lisans anahtarınız size özeldir, lütfen kimseyle paylaşmayın.\n\
             \n\
             Saygılarımızla,\n\
             Domizan Ekibi\n",
            owner = m.owner_name,
            company = m.company_name,
            key = m.license_key,
            package = m.package_name,
            devices = m.max_devices,
            expires = self.expires,
        )
    }

    fn html(&self) -> String {
        let m = self.mail;
        let owner = escape_html(&m.owner_name);
        let company = escape_html(&m.company_name);
        let key = escape_html(&m.license_key);
        let package = escape_html(&m.package_name);
        let expires = escape_html(&self.expires);
        let devices = m.max_devices;
        format!(
            r#"<!DOCTYPE html>
<html lang="tr">
<head><meta charset="utf-8"><title>Domizan lisans anahtarınız</title></head>
<body style="font-family: Arial, Helvetica, sans-serif; color: #1f2937; line-height: 1.5;">
<p>Sayın {owner},</p>
<p>{company} için Domizan lisansınız hazır. Lisans bilgileriniz:</p>
<table style="border-collapse: collapse;">
<tr><td style="padding: 4px 12px 4px 0;">Lisans anahtarı</td><td style="padding: 4px 0;"><strong style="font-family: 'Courier New', monospace; font-size: 1.15em;">{key}</strong></td></tr>
<tr><td style="padding: 4px 12px 4px 0;">Paket</td><td style="padding: 4px 0;">{package}</td></tr>
<tr><td style="padding: 4px 12px 4px 0;">Cihaz sınırı</td><td style="padding: 4px 0;">en fazla {devices} cihaz</td></tr>
<tr><td style="padding: 4px 12px 4px 0;">Geçerlilik</td><td style="padding: 4px 0;">{expires} tarihine kadar</td></tr>
</table>
<p>Lisansınızı etkinleştirmek için:</p>
<ol>
<li>Domizan masaüstü uygulamasını bilgisayarınıza kurun ve açın.</li>
<li>Lisans ekranında lisans anahtarınızı girin (kopyalayıp yapıştırabilirsiniz).</li>
<li>&quot;Etkinleştir&quot; düğmesine tıklayın; bu bilgisayar lisansınıza eklenir.</li>
</ol>
<p>Aynı anahtarla en fazla {devices} cihazı etkinleştirebilirsiniz.</p>
<p>Lisans anahtarınız size özeldir, lütfen kimseyle paylaşmayın.</p>
<p>Saygılarımızla,<br>Domizan Ekibi</p>
</body>
</html>
"#
        )
    }
}

/// Text made safe for HTML element content and quoted attribute values.
fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn html_escaping_covers_markup_and_both_quotes() {
        assert_eq!(
            escape_html(r#"<a href="x" onclick='y'>&</a>"#),
            "&lt;a href=&quot;x&quot; onclick=&#39;y&#39;&gt;&amp;&lt;/a&gt;"
        );
        assert_eq!(escape_html("Şükrü Öz"), "Şükrü Öz");
    }

    #[test]
    fn the_expiry_date_is_the_day_on_a_turkish_calendar() {
        let late_evening_utc = Utc.with_ymd_and_hms(2027, 2, 4, 22, 30, 0).unwrap();
        assert_eq!(turkish_date(late_evening_utc), "05.02.2027");
        let midnight_utc = Utc.with_ymd_and_hms(2027, 2, 5, 0, 0, 0).unwrap();
        assert_eq!(turkish_date(midnight_utc), "05.02.2027");
    }

    #[test]
    fn display_names_lose_line_breaks_and_blank_ones_are_dropped() {
        assert_eq!(
            display_name("Ahmet\r\nBcc: x@y.z\t Kaya").as_deref(),
            Some("Ahmet Bcc: x@y.z Kaya")
        );
        assert_eq!(display_name(" \r\n "), None);
        assert_eq!(display_name("Şükrü Öz").as_deref(), Some("Şükrü Öz"));
    }

    #[test]
    fn the_server_description_drops_credentials_path_and_query() {
        assert_eq!(
            describe_server("smtps://user:p%40ss@mail.example.com:465/helo?x=1"),
            "smtps://mail.example.com:465"
        );
        assert_eq!(
            describe_server("smtp://127.0.0.1:2525"),
            "smtp://127.0.0.1:2525"
        );
    }

    #[test]
    fn no_smtp_url_means_no_mailer_and_a_bad_one_is_an_error() {
        assert!(Mailer::from_config(None, Some("a@b.c")).unwrap().is_none());
        assert!(Mailer::from_config(Some("  "), None).unwrap().is_none());
        assert!(Mailer::from_config(Some("smtp://127.0.0.1:25"), None).is_err());
        assert!(Mailer::from_config(Some("smtp://127.0.0.1:25"), Some("not an address")).is_err());
        assert!(Mailer::from_config(Some("smtp://127.0.0.1:25"), Some("A\r\nB <a@b.c>")).is_err());
        assert!(Mailer::from_config(Some("http://127.0.0.1:25"), Some("a@b.c")).is_err());
        let error = Mailer::from_config(Some("ftp://user:s3cret@h:25"), Some("a@b.c")).unwrap_err();
        assert!(!format!("{error:#}").contains("s3cret"), "{error:#}");
        let mailer = Mailer::from_config(
            Some("smtps://user:s3cret@mail.example.com"),
            Some("Domizan <lisans@domizan.com>"),
        )
        .unwrap()
        .unwrap();
        let debug = format!("{mailer:?}");
        assert!(
            !debug.contains("s3cret") && debug.contains("mail.example.com"),
            "{debug}"
        );
    }

    #[test]
    fn debug_of_a_license_mail_shows_neither_key_nor_person() {
        let mail = LicenseMail {
            to: "ahmet@kayasmmm.com".into(),
            owner_name: "Ahmet Kaya".into(),
            company_name: "Kaya SMMM".into(),
            license_key: "DOMIZAN-PRO5-K4Y4-SMMM".into(),
            package_name: "Pro".into(),
            max_devices: 5,
            expires_at: Utc.with_ymd_and_hms(2027, 2, 5, 0, 0, 0).unwrap(),
        };
        let debug = format!("{mail:?}");
        for secret in ["ahmet", "Ahmet", "Kaya", "DOMIZAN-"] {
            assert!(!debug.contains(secret), "{debug}");
        }
    }
}
