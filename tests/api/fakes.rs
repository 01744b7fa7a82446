//! Loopback stand-ins for the services outside the gateway: a Telegram Bot API and an SMTP
//! server. Each listens on 127.0.0.1 port 0, records what it receives, and can be told to
//! fail, so tests see exactly what the gateway sent and how it copes when the far side is
//! down or slow. Nothing here reaches the network.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceExt;

// ---------------------------------------------------------------------------------------
// Telegram
// ---------------------------------------------------------------------------------------

/// How the fake Bot API answers the next requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// 200 `{"ok": true, "result": true}`, as Telegram answers setWebhook/deleteWebhook.
    Ok,
    /// This status with `{"ok": false, "error_code", "description"}`.
    Fail(u16),
    /// Records the request, then waits this long before answering as `Ok`.
    Slow(Duration),
    /// Accepts connections and closes them at once: no answer at all.
    Down,
}

/// The description the fake gives with `Mode::Fail`, so tests can look for it.
pub const FAKE_TELEGRAM_DESCRIPTION: &str = "Bad Request: the fake refuses";

/// One request as received: HTTP method, path (with the `bot<token>` segment as sent), and
/// the JSON body (`Value::Null` when the body is not JSON).
pub type TelegramRequest = (String, String, Value);

#[derive(Clone)]
pub struct FakeTelegram {
    /// `http://127.0.0.1:<port>`: what TELEGRAM_API_BASE is set to.
    pub base: String,
    state: Arc<TelegramState>,
}

struct TelegramState {
    mode: Mutex<Mode>,
    requests: Mutex<Vec<TelegramRequest>>,
}

impl FakeTelegram {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(TelegramState {
            mode: Mutex::new(Mode::Ok),
            requests: Mutex::new(Vec::new()),
        });
        let app = Router::new()
            .fallback(answer_bot_api)
            .with_state(state.clone());
        tokio::spawn(serve_telegram(listener, app, state.clone()));
        Self { base, state }
    }

    /// Every request received so far, oldest first.
    pub fn requests(&self) -> Vec<TelegramRequest> {
        self.state.requests.lock().unwrap().clone()
    }

    pub fn set_mode(&self, mode: Mode) {
        *self.state.mode.lock().unwrap() = mode;
    }
}

/// A hand-driven accept loop rather than `axum::serve`, so that `Down` can drop a connection
/// before a byte is answered. One request per connection (no keep-alive): a client never
/// reuses a connection accepted before the mode changed.
async fn serve_telegram(listener: TcpListener, app: Router, state: Arc<TelegramState>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        if *state.mode.lock().unwrap() == Mode::Down {
            drop(stream);
            continue;
        }
        let app = app.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
                let app = app.clone();
                async move { app.oneshot(request).await }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn answer_bot_api(
    State(state): State<Arc<TelegramState>>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> Response {
    let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
    state
        .requests
        .lock()
        .unwrap()
        .push((method.to_string(), uri.path().to_owned(), json));
    let mode = *state.mode.lock().unwrap();
    let ok = || axum::Json(json!({"ok": true, "result": true, "description": "Webhook was set"}));
    match mode {
        Mode::Ok | Mode::Down => ok().into_response(),
        Mode::Slow(wait) => {
            tokio::time::sleep(wait).await;
            ok().into_response()
        }
        Mode::Fail(status) => (
            StatusCode::from_u16(status).unwrap(),
            axum::Json(json!({
                "ok": false,
                "error_code": status,
                "description": FAKE_TELEGRAM_DESCRIPTION,
            })),
        )
            .into_response(),
    }
}

// ---------------------------------------------------------------------------------------
// SMTP
// ---------------------------------------------------------------------------------------

/// One message as received: the envelope and the message text (dot-stuffing undone, CRLF
/// line ends kept, without the terminating `.` line).
#[derive(Debug, Clone)]
pub struct Received {
    pub from: String,
    pub to: Vec<String>,
    pub data: String,
}

#[derive(Clone)]
pub struct FakeSmtp {
    /// `smtp://127.0.0.1:<port>`: what SMTP_URL is set to (plain SMTP, no AUTH).
    pub url: String,
    state: Arc<SmtpState>,
}

struct SmtpState {
    up: AtomicBool,
    messages: Mutex<Vec<Received>>,
}

impl FakeSmtp {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("smtp://{}", listener.local_addr().unwrap());
        let state = Arc::new(SmtpState {
            up: AtomicBool::new(true),
            messages: Mutex::new(Vec::new()),
        });
        let accepting = state.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                tokio::spawn(serve_smtp(stream, accepting.clone()));
            }
        });
        Self { url, state }
    }

    /// Every message accepted so far, oldest first.
    pub fn messages(&self) -> Vec<Received> {
        self.state.messages.lock().unwrap().clone()
    }

    /// Down: every new connection is greeted with `421` (service not available, a transient
    /// reply) and closed, as a server that is shutting down or overloaded does.
    pub fn set_up(&self, up: bool) {
        self.state.up.store(up, Ordering::SeqCst);
    }
}

/// Just enough of RFC 5321 for one client: no extensions are advertised, so the client
/// neither starts TLS nor authenticates.
async fn serve_smtp(stream: TcpStream, state: Arc<SmtpState>) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    if !state.up.load(Ordering::SeqCst) {
        write
            .write_all(b"421 4.3.2 fake SMTP is down, try again later\r\n")
            .await?;
        return write.shutdown().await;
    }
    write.write_all(b"220 fake.smtp.test ESMTP\r\n").await?;
    let mut from = String::new();
    let mut to = Vec::new();
    loop {
        let Some(line) = read_line(&mut read).await? else {
            return Ok(());
        };
        let verb = line
            .split(' ')
            .next()
            .unwrap_or_default()
            .to_ascii_uppercase();
        let reply: &[u8] = match verb.as_str() {
            "EHLO" | "HELO" => b"250 fake.smtp.test\r\n",
            "MAIL" => {
                from = angle_address(&line);
                to.clear();
                b"250 2.1.0 OK\r\n"
            }
            "RCPT" => {
                to.push(angle_address(&line));
                b"250 2.1.5 OK\r\n"
            }
            "DATA" => {
                write
                    .write_all(b"354 end data with <CR><LF>.<CR><LF>\r\n")
                    .await?;
                let mut data = String::new();
                loop {
                    let Some(line) = read_line(&mut read).await? else {
                        return Ok(());
                    };
                    if line == "." {
                        break;
                    }
                    data.push_str(line.strip_prefix('.').unwrap_or(&line));
                    data.push_str("\r\n");
                }
                state.messages.lock().unwrap().push(Received {
                    from: std::mem::take(&mut from),
                    to: std::mem::take(&mut to),
                    data,
                });
                b"250 2.0.0 queued\r\n"
            }
            "RSET" => {
                from.clear();
                to.clear();
                b"250 2.0.0 OK\r\n"
            }
            "NOOP" => b"250 2.0.0 OK\r\n",
            "QUIT" => {
                write.write_all(b"221 2.0.0 bye\r\n").await?;
                return write.shutdown().await;
            }
            _ => b"502 5.5.2 not implemented\r\n",
        };
        write.write_all(reply).await?;
    }
}

/// One line without its CRLF (lossy UTF-8), or `None` at the end of the stream.
async fn read_line(
    read: &mut BufReader<tokio::net::tcp::OwnedReadHalf>,
) -> std::io::Result<Option<String>> {
    let mut bytes = Vec::new();
    if read.read_until(b'\n', &mut bytes).await? == 0 {
        return Ok(None);
    }
    let line = String::from_utf8_lossy(&bytes);
    Ok(Some(line.trim_end_matches(['\r', '\n']).to_owned()))
}

/// `a@b` from `MAIL FROM:<a@b> BODY=8BITMIME` or `RCPT TO:<a@b>`.
fn angle_address(line: &str) -> String {
    let start = line.find('<').map_or(0, |i| i + 1);
    let end = line[start..].find('>').map_or(line.len(), |i| start + i);
    line[start..end].to_owned()
}

// ---------------------------------------------------------------------------------------
// Reading a received message
// ---------------------------------------------------------------------------------------

/// The text of every leaf part of the message, transfer encoding (base64, quoted-printable)
/// undone, as `(content type, text)`, in order.
pub fn decoded_parts(message: &Received) -> Vec<(String, String)> {
    let (headers, body) = split_entity(&message.data);
    let mut parts = Vec::new();
    collect_parts(&headers, body, &mut parts);
    parts
}

/// All decoded parts joined: enough to find the license key whatever encoding lettre chose
/// (a quoted-printable soft line break may otherwise split it).
pub fn decoded_body(message: &Received) -> String {
    decoded_parts(message)
        .into_iter()
        .map(|(_, text)| text)
        .collect::<Vec<_>>()
        .join("\n")
}

/// The decoded part whose content type starts with `mime` (`text/plain`, `text/html`).
pub fn decoded_part(message: &Received, mime: &str) -> Option<String> {
    decoded_parts(message)
        .into_iter()
        .find(|(content_type, _)| content_type.to_ascii_lowercase().starts_with(mime))
        .map(|(_, text)| text)
}

/// A top-level header, unfolded, with RFC 2047 encoded words (`=?utf-8?b?…?=`) decoded.
pub fn decoded_header(message: &Received, name: &str) -> Option<String> {
    let (headers, _) = split_entity(&message.data);
    header(&headers, name).map(|value| decode_words(&value))
}

/// Unfolded header lines and the body of one MIME entity.
fn split_entity(entity: &str) -> (Vec<String>, &str) {
    let (head, body) = match entity.find("\r\n\r\n") {
        Some(i) => (&entity[..i], &entity[i + 4..]),
        None => (entity, ""),
    };
    let mut headers: Vec<String> = Vec::new();
    for line in head.split("\r\n") {
        if line.starts_with([' ', '\t']) {
            if let Some(last) = headers.last_mut() {
                last.push(' ');
                last.push_str(line.trim_start());
            }
        } else if !line.is_empty() {
            headers.push(line.to_owned());
        }
    }
    (headers, body)
}

fn header(headers: &[String], name: &str) -> Option<String> {
    headers.iter().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.trim()
            .eq_ignore_ascii_case(name)
            .then(|| value.trim().to_owned())
    })
}

fn collect_parts(headers: &[String], body: &str, parts: &mut Vec<(String, String)>) {
    let content_type = header(headers, "Content-Type").unwrap_or_else(|| "text/plain".into());
    if content_type.to_ascii_lowercase().starts_with("multipart/") {
        let boundary = parameter(&content_type, "boundary").expect("a multipart has a boundary");
        let delimiter = format!("--{boundary}");
        for part in body.split(delimiter.as_str()).skip(1) {
            if part.starts_with("--") {
                break;
            }
            let part = part.strip_prefix("\r\n").unwrap_or(part);
            let (part_headers, part_body) = split_entity(part);
            collect_parts(&part_headers, part_body, parts);
        }
        return;
    }
    let encoding = header(headers, "Content-Transfer-Encoding")
        .unwrap_or_default()
        .to_ascii_lowercase();
    let bytes = match encoding.as_str() {
        "base64" => {
            let compact: String = body.chars().filter(|c| !c.is_whitespace()).collect();
            STANDARD.decode(compact).expect("a base64 part decodes")
        }
        "quoted-printable" => decode_quoted_printable(body),
        _ => body.as_bytes().to_vec(),
    };
    parts.push((
        content_type,
        String::from_utf8(bytes).expect("parts are UTF-8"),
    ));
}

/// `value` of `name=value` or `name="value"` in a header like Content-Type.
fn parameter(header: &str, name: &str) -> Option<String> {
    header.split(';').skip(1).find_map(|param| {
        let (key, value) = param.split_once('=')?;
        key.trim()
            .eq_ignore_ascii_case(name)
            .then(|| value.trim().trim_matches('"').to_owned())
    })
}

fn decode_quoted_printable(body: &str) -> Vec<u8> {
    let bytes = body.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'=' if bytes[i + 1..].starts_with(b"\r\n") => i += 3,
            b'=' if bytes[i + 1..].starts_with(b"\n") => i += 2,
            b'=' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
                out.push(u8::from_str_radix(hex, 16).expect("=XX is hex"));
                i += 3;
            }
            byte => {
                out.push(byte);
                i += 1;
            }
        }
    }
    out
}

/// RFC 2047: `=?charset?B|Q?text?=` words decoded (charset assumed UTF-8), whitespace between
/// two encoded words dropped as the RFC says.
fn decode_words(value: &str) -> String {
    let mut out = String::new();
    let mut previous_encoded = false;
    for (n, word) in value.split_whitespace().enumerate() {
        let decoded = decode_word(word);
        if n > 0 && !(previous_encoded && decoded.is_some()) {
            out.push(' ');
        }
        previous_encoded = decoded.is_some();
        out.push_str(decoded.as_deref().unwrap_or(word));
    }
    out
}

fn decode_word(word: &str) -> Option<String> {
    let inner = word.strip_prefix("=?")?.strip_suffix("?=")?;
    let mut pieces = inner.splitn(3, '?');
    let (_charset, encoding, text) = (pieces.next()?, pieces.next()?, pieces.next()?);
    let bytes = match encoding {
        "B" | "b" => STANDARD.decode(text).ok()?,
        "Q" | "q" => decode_quoted_printable(&text.replace('_', " ")),
        _ => return None,
    };
    String::from_utf8(bytes).ok()
}
