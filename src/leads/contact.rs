//! Validating and normalising what the landing form sends: e-mail, Turkish phone numbers to
//! E.164, lengths. Pure functions; the first bad field wins (SPEC §1).

use crate::error::AppError;

/// `name@domain.tld`, lower-cased. Deliberately simple: one `@`, a dotted domain, no spaces.
pub fn normalise_email(raw: &str) -> Result<String, AppError> {
    let email = raw.trim().to_lowercase();
    let invalid = || AppError::validation("email", "Geçersiz email formatı");
    if email.len() > 254
        || email.chars().any(char::is_whitespace)
        || aggregates::text::check_single_line(&email).is_err()
    {
        return Err(invalid());
    }
    let (local, domain) = email.split_once('@').ok_or_else(invalid)?;
    let labels: Vec<&str> = domain.split('.').collect();
    let domain_ok = labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty()
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_alphanumeric() || c == '-')
        })
        && labels.last().is_some_and(|tld| tld.chars().count() >= 2);
    if local.is_empty()
        || local.len() > 64
        || local.contains('@')
        || !domain_ok
        || local.starts_with('.')
        || local.ends_with('.')
        || local.contains("..")
    {
        return Err(invalid());
    }
    Ok(email)
}

/// Turkish numbers in any common spelling become `+90XXXXXXXXXX`; other countries must
/// already be E.164 (`+` and 8–15 digits).
pub fn normalise_phone(raw: &str) -> Result<String, AppError> {
    let invalid = || AppError::validation("phone", "Geçersiz telefon numarası");
    let trimmed = raw.trim();
    let plus = trimmed.starts_with('+') || trimmed.starts_with("00");
    if trimmed
        .chars()
        .any(|c| !(c.is_ascii_digit() || " -().+/".contains(c)))
    {
        return Err(invalid());
    }
    let mut digits: String = trimmed.chars().filter(|c| c.is_ascii_digit()).collect();
    if trimmed.starts_with("00") {
        digits.drain(..2);
    }
    let national = if plus {
        digits.strip_prefix("90").map(str::to_string)
    } else if digits.len() == 11 && digits.starts_with('0') {
        Some(digits[1..].to_string())
    } else if digits.len() == 12 && digits.starts_with("90") {
        Some(digits[2..].to_string())
    } else if digits.len() == 10 {
        Some(digits.clone())
    } else {
        None
    };
    match national {
        // Turkish subscriber numbers: 10 digits, area/operator codes start with 2–5 or 8.
        Some(n) if n.len() == 10 && matches!(n.as_bytes()[0], b'2'..=b'5' | b'8') => {
            Ok(format!("+90{n}"))
        }
        Some(_) => Err(invalid()),
        None if plus && (8..=15).contains(&digits.len()) && !digits.starts_with('0') => {
            Ok(format!("+{digits}"))
        }
        None => Err(invalid()),
    }
}

/// Trimmed single-line text of `min..=max` characters (names, companies, campaign tags).
pub fn text(field: &str, raw: &str, min: usize, max: usize) -> Result<String, AppError> {
    checked(field, raw.trim().to_string(), min, max, false)
}

/// Trimmed multi-line text of `min..=max` characters (messages, notes): tab and newline are
/// allowed, CR LF becomes LF.
pub fn multiline(field: &str, raw: &str, min: usize, max: usize) -> Result<String, AppError> {
    let value = aggregates::text::normalise_newlines(raw.trim());
    checked(field, value, min, max, true)
}

fn checked(
    field: &str,
    value: String,
    min: usize,
    max: usize,
    multi_line: bool,
) -> Result<String, AppError> {
    let check = if multi_line {
        aggregates::text::check_multi_line(&value)
    } else {
        aggregates::text::check_single_line(&value)
    };
    if let Err(aggregates::text::TextProblem::ForbiddenCharacter(code)) = check {
        return Err(AppError::validation(
            field,
            format!("{field} izin verilmeyen bir karakter içeriyor (U+{code:04X})"),
        ));
    }
    let len = value.chars().count();
    if len < min {
        return Err(AppError::validation(
            field,
            format!("{field} en az {min} karakter olmalı"),
        ));
    }
    if len > max {
        return Err(AppError::validation(
            field,
            format!("{field} en fazla {max} karakter olabilir"),
        ));
    }
    Ok(value)
}

/// Like [`text`], but empty or missing is `None`.
pub fn optional_text(
    field: &str,
    raw: Option<&str>,
    max: usize,
) -> Result<Option<String>, AppError> {
    match raw.map(str::trim).filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(value) => text(field, value, 0, max).map(Some),
    }
}

/// Like [`multiline`], but empty or missing is `None`.
pub fn optional_multiline(
    field: &str,
    raw: Option<&str>,
    max: usize,
) -> Result<Option<String>, AppError> {
    match raw.map(str::trim).filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(value) => multiline(field, value, 0, max).map(Some),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turkish_numbers_in_every_spelling_become_e164() {
        for raw in [
            "0532 123 4567",
            "+90 532 123 45 67",
            "05321234567",
            "5321234567",
            "(0532) 123-45-67",
            "905321234567",
            "0090 532 123 45 67",
        ] {
            assert_eq!(normalise_phone(raw).unwrap(), "+905321234567", "{raw}");
        }
        assert_eq!(normalise_phone("0212 555 00 11").unwrap(), "+902125550011");
    }

    #[test]
    fn foreign_numbers_are_accepted_in_e164_only() {
        assert_eq!(normalise_phone("+49 30 1234567").unwrap(), "+49301234567");
        assert!(normalise_phone("030 1234567").is_err());
    }

    #[test]
    fn bad_phones_name_the_field() {
        for raw in [
            "",
            "abc",
            "123",
            "+90 132 123 45 67",
            "0532 123 456",
            "+1 2",
        ] {
            let e = normalise_phone(raw).unwrap_err();
            assert_eq!(e.code(), "VALIDATION_ERROR", "{raw}");
        }
    }

    #[test]
    fn emails_are_checked_and_lower_cased() {
        assert_eq!(
            normalise_email(" Ahmet@KayaSMMM.com ").unwrap(),
            "ahmet@kayasmmm.com"
        );
        for raw in [
            "",
            "ahmet",
            "ahmet@",
            "@x.com",
            "a b@x.com",
            "a@x",
            "a@x.c",
            "a@@x.com",
            "a@-x.com",
            "a..b@x.com",
        ] {
            assert!(normalise_email(raw).is_err(), "{raw}");
        }
    }

    #[test]
    fn text_lengths_are_enforced_in_characters() {
        assert!(text("name", "A", 2, 100).is_err());
        assert_eq!(text("name", " Şü ", 2, 100).unwrap(), "Şü");
        assert!(text("name", &"ş".repeat(101), 2, 100).is_err());
        assert_eq!(optional_text("company", Some("  "), 10).unwrap(), None);
    }

    #[test]
    fn control_characters_are_refused_with_the_field_named() {
        let e = text("name", "Nul\u{0}Name", 2, 100).unwrap_err();
        assert_eq!((e.code(), e.status().as_u16()), ("VALIDATION_ERROR", 422));
        assert!(text("company", "a\nb", 0, 200).is_err());
        assert!(multiline("message", "a\u{0}b", 0, 5000).is_err());
        assert_eq!(
            multiline("message", "a\r\nb\tc", 0, 5000).unwrap(),
            "a\nb\tc"
        );
    }
}
