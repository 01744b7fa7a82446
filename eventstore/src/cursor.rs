//! The position of a reader in the log: the triple (epoch, transaction id, global position).
//!
//! `global_position` alone is not a safe checkpoint (a lower position can commit later); the
//! pair (transaction id, global position) is, because the reader only ever sees rows whose
//! transaction id lies below its snapshot's xmin, and every transaction that can still commit
//! has an id above that. Transaction ids belong to one Postgres cluster, though: after a
//! restore into another cluster or a failover that lost commits they start again lower, or
//! are handed out a second time. The log epoch leads the order and is opened anew whenever
//! the gateway finds itself on another cluster or timeline (ADR 0008), so events written
//! there sort after every earlier one.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An opaque, totally ordered position in the event log. Clients store its string form
/// (`"<epoch>-<tx>-<pos>"` in hex) and hand it back; they must not interpret it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cursor {
    epoch: i64,
    transaction_id: i64,
    global_position: i64,
}

impl Cursor {
    /// Before the first event.
    pub const START: Cursor = Cursor {
        epoch: 0,
        transaction_id: 0,
        global_position: 0,
    };

    pub fn new(epoch: i64, transaction_id: i64, global_position: i64) -> Self {
        Self {
            epoch,
            transaction_id,
            global_position,
        }
    }

    /// Before the first event of `epoch` (after every event of earlier epochs).
    pub fn epoch_start(epoch: i64) -> Self {
        Self::new(epoch, 0, 0)
    }

    pub fn epoch(&self) -> i64 {
        self.epoch
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
        write!(
            f,
            "{:x}-{:x}-{:x}",
            self.epoch, self.transaction_id, self.global_position
        )
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("not a valid cursor")]
pub struct CursorParseError;

impl FromStr for Cursor {
    type Err = CursorParseError;

    /// Also reads the `"<tx>-<pos>"` form given out before epochs existed, as epoch 0 (the
    /// epoch every log had then).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parse = |part: &str| {
            if part.is_empty() || part.len() > 16 {
                return Err(CursorParseError);
            }
            u64::from_str_radix(part, 16)
                .ok()
                .and_then(|v| i64::try_from(v).ok())
                .ok_or(CursorParseError)
        };
        let parts: Vec<&str> = s.split('-').collect();
        match parts[..] {
            [tx, pos] => Ok(Cursor::new(0, parse(tx)?, parse(pos)?)),
            [epoch, tx, pos] => Ok(Cursor::new(parse(epoch)?, parse(tx)?, parse(pos)?)),
            _ => Err(CursorParseError),
        }
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
        let c = Cursor::new(0x6553_f100, 0x1_0000_0abc, 42);
        assert_eq!(c.to_string().parse::<Cursor>(), Ok(c));
        assert_eq!(Cursor::START.to_string(), "0-0-0");
    }

    #[test]
    fn a_cursor_from_before_epochs_reads_as_epoch_zero() {
        assert_eq!("1a-2".parse::<Cursor>(), Ok(Cursor::new(0, 0x1a, 2)));
    }

    #[test]
    fn cursors_order_by_epoch_then_transaction() {
        assert!(Cursor::new(0, 5, 1) > Cursor::new(0, 4, 100));
        assert!(Cursor::new(0, 5, 2) > Cursor::new(0, 5, 1));
        assert!(Cursor::new(1, 1, 1) > Cursor::new(0, 1 << 40, 1 << 40));
        assert!(Cursor::epoch_start(1) > Cursor::new(0, i64::MAX, i64::MAX));
    }

    #[test]
    fn garbage_is_not_a_cursor() {
        for s in [
            "",
            "-",
            "1-",
            "x-1",
            "1-2-3-4",
            "1--3",
            "ffffffffffffffff-1",
            "11111111111111111-1",
            "0-ffffffffffffffff-1",
        ] {
            assert_eq!(s.parse::<Cursor>(), Err(CursorParseError), "{s}");
        }
    }
}
