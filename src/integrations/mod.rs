//! Clients for the services outside the gateway that the license flow talks to: the Telegram
//! Bot API (registering a license's bot webhook) and an SMTP server (the license e-mail).
//!
//! Each module is a small, self-contained client: it knows the wire protocol, bounds every
//! call by a timeout and reports failures as a typed error that says whether trying again can
//! help. When to call them, how often to retry and what to record is the license domain's
//! business, not theirs. Neither ever puts a secret (bot token, SMTP password) in an error,
//! a `Debug` rendering or a log line.

pub mod mail;
pub mod telegram;
