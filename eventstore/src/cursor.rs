//! The position of a reader in the log: the pair (transaction id, global position).
//!
//! `global_position` alone is not a safe checkpoint (a lower position can commit later); the
//! pair is, because the reader only ever sees rows whose transaction id lies below its
//! snapshot's xmin, and every transaction that can still commit has an id above that.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An opaque, totally ordered position in the event log. Clients store its string form
/// (`"<tx>-<pos>"` in hex) and hand it back; they must not interpret it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cursor {
    transaction_id: i64,
    global_position: i64,
}

impl Cursor {
    /// Before the first event.
    pub const START: Cursor = Cursor {
        transaction_id: 0,
        global_position: 0,
    };

    pub fn new(transaction_id: i64, global_position: i64) -> Self {
        Self {
            transaction_id,
            global_position,
        }
    }

    pub fn transaction_id(&self) -> i64 {
        self.transaction_id
    }

    pub fn global_position(&self) -> i64 {
        self.global_position
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:x}-{:x}", self.transaction_id, self.global_position)
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("not a valid cursor")]
pub struct CursorParseError;

impl FromStr for Cursor {
    type Err = CursorParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (tx, pos) = s.split_once('-').ok_or(CursorParseError)?;
        let parse = |part: &str| {
            if part.is_empty() || part.len() > 16 {
                return Err(CursorParseError);
            }
            u64::from_str_radix(part, 16)
                .ok()
                .and_then(|v| i64::try_from(v).ok())
                .ok_or(CursorParseError)
        };
        Ok(Cursor::new(parse(tx)?, parse(pos)?))
    }
}

impl Serialize for Cursor {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Cursor {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_survives_its_string_form() {
        let c = Cursor::new(0x1_0000_0abc, 42);
        assert_eq!(c.to_string().parse::<Cursor>(), Ok(c));
        assert_eq!(Cursor::START.to_string(), "0-0");
    }

    #[test]
    fn cursors_order_by_transaction_first() {
        assert!(Cursor::new(5, 1) > Cursor::new(4, 100));
        assert!(Cursor::new(5, 2) > Cursor::new(5, 1));
    }

    #[test]
    fn garbage_is_not_a_cursor() {
        for s in [
            "",
            "-",
            "1-",
            "x-1",
            "1-2-3",
            "ffffffffffffffff-1",
            "11111111111111111-1",
        ] {
            assert_eq!(s.parse::<Cursor>(), Err(CursorParseError), "{s}");
        }
    }
}
