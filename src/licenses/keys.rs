//! License keys, masks and Turkish tax numbers: pure functions.

use rand::Rng;

/// The characters of a license key's random part: no `0`/`O`, `1`/`I`/`L`, so a key read
/// over the phone or copied by hand survives.
pub const KEY_ALPHABET: &[u8] = b"ABCDEFGHJKMNPQRSTUVWXYZ23456789";

/// `DOMIZAN-<PKG><maxDevices>-XXXX-XXXX` (seed 001): `PKG` is `BAS`, `PRO` or `ENT` for the
/// default plans, the slug's first three letters for others; the rest is drawn from
/// [`KEY_ALPHABET`] by the operating system's CSPRNG (40 bits).
pub fn new_license_key(package: &str, max_devices: u32) -> String {
    let code = package_code(package);
    let mut rng = rand::rng();
    let mut part = || -> String {
        (0..4)
            .map(|_| KEY_ALPHABET[rng.random_range(0..KEY_ALPHABET.len())] as char)
            .collect()
    };
    format!("DOMIZAN-{code}{max_devices}-{}-{}", part(), part())
}

fn package_code(package: &str) -> String {
    match package {
        "basic" => "BAS".into(),
        "pro" => "PRO".into(),
        "enterprise" => "ENT".into(),
        other => other
            .chars()
            .filter(char::is_ascii_alphabetic)
            .take(3)
            .collect::<String>()
            .to_ascii_uppercase(),
    }
}

/// The one spelling of a key that is digested: trimmed, upper-case.
pub fn normalise_key(key: &str) -> String {
    key.trim().to_ascii_uppercase()
}

/// Whether `text` looks like a license key (worth digesting for a lookup).
pub fn looks_like_key(text: &str) -> bool {
    let key = normalise_key(text);
    key.starts_with("DOMIZAN-")
        && key.len() <= 40
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// What an admin may see of a secret: its first four and last three characters
/// (`AIza…3xQ`); nothing of a short one.
pub fn mask(secret: &str) -> String {
    let chars: Vec<char> = secret.chars().collect();
    if chars.len() < 12 {
        return "…".into();
    }
    let head: String = chars[..4].iter().collect();
    let tail: String = chars[chars.len() - 3..].iter().collect();
    format!("{head}…{tail}")
}

/// A 10-digit VKN (vergi kimlik numarası) or an 11-digit TCKN (T.C. kimlik numarası) with
/// valid check digits.
pub fn is_valid_tax_number(text: &str) -> bool {
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    let d: Vec<u32> = text.bytes().map(|b| u32::from(b - b'0')).collect();
    match d.len() {
        10 => {
            let mut sum = 0;
            for (i, digit) in d.iter().take(9).enumerate() {
                let tmp = (digit + (9 - i as u32)) % 10;
                let mut value = (tmp * 2u32.pow(9 - i as u32)) % 9;
                if tmp != 0 && value == 0 {
                    value = 9;
                }
                sum += value;
            }
            (10 - sum % 10) % 10 == d[9]
        }
        11 => {
            if d[0] == 0 {
                return false;
            }
            let odd: u32 = d[0] + d[2] + d[4] + d[6] + d[8];
            let even: u32 = d[1] + d[3] + d[5] + d[7];
            let tenth = (odd * 7 + 10 * 10 - even) % 10;
            let eleventh = d[..10].iter().sum::<u32>() % 10;
            d[9] == tenth && d[10] == eleventh
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_the_seed_pattern_from_the_unambiguous_alphabet() {
        let key = new_license_key("pro", 5);
        assert!(key.starts_with("DOMIZAN-PRO5-"), "{key}");
        let random: Vec<&str> = key.split('-').skip(2).collect();
        assert_eq!(random.len(), 2);
        for part in random {
            assert_eq!(part.len(), 4);
            assert!(part.bytes().all(|b| KEY_ALPHABET.contains(&b)), "{part}");
        }
        assert!(new_license_key("enterprise", 20).starts_with("DOMIZAN-ENT20-"));
        assert!(new_license_key("basic", 1).starts_with("DOMIZAN-BAS1-"));
        assert_ne!(new_license_key("pro", 5), new_license_key("pro", 5));
        assert!(looks_like_key(" domizan-pro5-abcd-efgh "));
    }

    #[test]
    fn masks_show_four_and_three_characters() {
        assert_eq!(mask("AIzaSyB1234567890abc3xQ"), "AIza…3xQ");
        assert_eq!(mask("short"), "…");
    }

    #[test]
    fn tax_numbers_need_valid_check_digits() {
        // The seed's VKN, a known-valid TCKN, and each with its last digit changed.
        assert!(is_valid_tax_number("1234567890"));
        assert!(!is_valid_tax_number("1234567891"));
        assert!(is_valid_tax_number("9876543217"));
        assert!(is_valid_tax_number("10000000146"));
        assert!(!is_valid_tax_number("10000000147"));
        assert!(!is_valid_tax_number("00000000000"));
        assert!(!is_valid_tax_number("12345"));
        assert!(!is_valid_tax_number("12345678a0"));
    }
}
