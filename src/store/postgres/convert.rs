//! Between the store's Rust values and PostgreSQL's columns, as the SQLite store has them.
//!
//! Instants are kept to the millisecond, as SQLite keeps them (`timestamp_millis`): an instant
//! read back, a comparison with a bound instant, a duration between two, all come out the same
//! on both engines. Counts that SQLite keeps in 64 bits are `integer` here: read back, a
//! negative value is corrupt; written, one past `i32::MAX` is held at it.

use chrono::DateTime;

use crate::model::Time;
use crate::store::{NEVER_MS, Result, StoreError};

/// `t` as stored: to the millisecond, rounded down (as `timestamp_millis`).
pub(super) fn at(t: Time) -> Time {
    // Always in range: the milliseconds of a valid instant are a valid instant.
    DateTime::from_timestamp_millis(t.timestamp_millis()).unwrap_or(t)
}

/// [`NEVER_MS`] as an instant: 9999-12-31T23:59:59Z.
pub(super) fn never() -> Time {
    // Always in range (chrono reaches year 262143).
    DateTime::from_timestamp_millis(NEVER_MS).unwrap_or(DateTime::<chrono::Utc>::MAX_UTC)
}

/// A non-negative `integer` column.
pub(super) fn unsigned(v: i32, what: &str) -> Result<u32> {
    u32::try_from(v).map_err(|_| StoreError::Corrupt(format!("{what} {v}")))
}

/// A count (`count(*)`, `sum(…)`): never negative, as SQLite's `.max(0) as u64`.
pub(super) fn count(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// A count for an `integer` column, held at `i32::MAX`.
pub(super) fn small(v: u64) -> i32 {
    i32::try_from(v).unwrap_or(i32::MAX)
}

/// A `LIMIT`.
pub(super) fn limit(v: u32) -> i64 {
    i64::from(v)
}

/// A JSON column read back as text-keyed values, or corrupt.
pub(super) fn from_json<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> Result<T> {
    serde_json::from_value(v).map_err(|e| StoreError::Corrupt(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_are_kept_to_the_millisecond_rounded_down() {
        let t = DateTime::from_timestamp(1_800_000_000, 123_456_789).unwrap();
        assert_eq!(at(t).timestamp_millis(), t.timestamp_millis());
        assert_eq!(at(t).timestamp_subsec_nanos(), 123_000_000);
        let before = DateTime::from_timestamp(-1, 999_999_999).unwrap();
        assert_eq!(at(before).timestamp_millis(), -1);
        assert_eq!(never().timestamp_millis(), NEVER_MS);
        assert!(crate::store::is_never(never()));
    }

    #[test]
    fn counts_convert_without_wrapping() {
        assert_eq!(small(5), 5);
        assert_eq!(small(u64::MAX), i32::MAX);
        assert_eq!(count(-3), 0);
        assert!(unsigned(-1, "attempts").is_err());
        assert_eq!(unsigned(7, "attempts").unwrap(), 7);
    }
}
