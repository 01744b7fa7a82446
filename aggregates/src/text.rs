//! What free text may hold before it reaches an event. An event is forever, so text is
//! checked on the way in: no control characters (U+0000 above all, which Postgres cannot
//! store), no line or paragraph separators in single-line fields, no bidirectional
//! overrides that make a value read differently from what it is, no byte-order marks or
//! noncharacters. Multi-line fields (messages, notes) also allow tab and newline; a CR LF
//! pair is folded to LF by [`normalise_newlines`] first.

/// Why a text was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TextProblem {
    #[error("contains a control or invisible formatting character (U+{0:04X})")]
    ForbiddenCharacter(u32),
}

/// Single-line text: names, companies, campaign tags.
pub fn check_single_line(text: &str) -> Result<(), TextProblem> {
    check(text, false)
}

/// Multi-line text: messages, notes. Tab and LF are allowed.
pub fn check_multi_line(text: &str) -> Result<(), TextProblem> {
    check(text, true)
}

/// CR LF and lone CR become LF, so browsers' form encodings all land the same way.
pub fn normalise_newlines(text: &str) -> String {
    text.replace("\r\n", "\n").replace('\r', "\n")
}

fn check(text: &str, multi_line: bool) -> Result<(), TextProblem> {
    match text.chars().find(|&c| forbidden(c, multi_line)) {
        Some(c) => Err(TextProblem::ForbiddenCharacter(c as u32)),
        None => Ok(()),
    }
}

fn forbidden(c: char, multi_line: bool) -> bool {
    if multi_line && (c == '\n' || c == '\t') {
        return false;
    }
    c.is_control()
        || matches!(c,
            // Line and paragraph separators.
            '\u{2028}' | '\u{2029}'
            // Bidirectional embeddings, overrides and isolates ("Trojan Source").
            | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
            // Byte-order mark / zero-width no-break space, interlinear annotations.
            | '\u{FEFF}' | '\u{FFF9}'..='\u{FFFB}')
        || is_noncharacter(c)
}

fn is_noncharacter(c: char) -> bool {
    let v = c as u32;
    (0xFDD0..=0xFDEF).contains(&v) || (v & 0xFFFE) == 0xFFFE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nul_and_other_control_characters_are_refused_everywhere() {
        for text in [
            "Nul\u{0}Name",
            "bell\u{7}",
            "esc\u{1b}[31m",
            "del\u{7f}",
            "c1\u{85}",
        ] {
            assert!(check_single_line(text).is_err(), "{text:?}");
            assert!(check_multi_line(text).is_err(), "{text:?}");
        }
    }

    #[test]
    fn tab_and_newline_are_only_for_multi_line_fields() {
        assert!(check_multi_line("line one\n\tline two").is_ok());
        assert!(check_single_line("line one\nline two").is_err());
        assert!(check_single_line("a\tb").is_err());
    }

    #[test]
    fn invisible_formatting_that_disguises_text_is_refused() {
        for text in [
            "abc\u{202E}fed",
            "\u{FEFF}name",
            "a\u{2028}b",
            "x\u{FFFF}",
            "\u{2066}y",
        ] {
            assert!(check_single_line(text).is_err(), "{text:?}");
        }
    }

    #[test]
    fn ordinary_turkish_text_and_emoji_pass() {
        assert!(check_single_line("Çağlar Işık — KAYA SMMM Ltd. Şti. 👩‍💼").is_ok());
        assert!(check_multi_line("Merhaba,\nDemo rica ederim.").is_ok());
    }

    #[test]
    fn carriage_returns_become_newlines() {
        assert_eq!(normalise_newlines("a\r\nb\rc\n"), "a\nb\nc\n");
    }
}
