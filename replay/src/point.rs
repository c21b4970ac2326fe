//! A point in history: a sequence number or a wall-clock time.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, UNIX_EPOCH};

use engine::{Envelope, UnixMs};

/// Where in the log to stop: after record `Seq(n)`, or after the last record at or before a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Point {
    Seq(u64),
    Time(UnixMs),
}

impl Point {
    /// Whether `e` is at or before this point.
    pub fn includes(&self, e: &Envelope) -> bool {
        match *self {
            Point::Seq(n) => e.seq <= n,
            Point::Time(t) => e.at <= t,
        }
    }
}

impl FromStr for Point {
    type Err = String;
    /// A bare number is a sequence number; otherwise an RFC 3339 time (`2026-11-25T10:00:00Z`).
    fn from_str(s: &str) -> Result<Self, String> {
        if let Ok(n) = s.parse::<u64>() {
            return Ok(Point::Seq(n));
        }
        let t = humantime::parse_rfc3339_weak(s)
            .map_err(|e| format!("`{s}` is neither a sequence number nor a time like 2026-11-25T10:00:00Z: {e}"))?;
        let ms = t.duration_since(UNIX_EPOCH).map_err(|_| format!("`{s}` is before 1970"))?.as_millis();
        Ok(Point::Time(ms as UnixMs))
    }
}

impl fmt::Display for Point {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Point::Seq(n) => write!(f, "seq {n}"),
            Point::Time(t) => f.write_str(&format_time(*t)),
        }
    }
}

/// RFC 3339 with milliseconds, UTC.
pub fn format_time(ms: UnixMs) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_sequence_numbers_and_times_parse() {
        assert_eq!("42".parse::<Point>().unwrap(), Point::Seq(42));
        assert_eq!("1970-01-01T00:00:01Z".parse::<Point>().unwrap(), Point::Time(1000));
        assert!("yesterday".parse::<Point>().unwrap_err().contains("yesterday"));
        assert_eq!(format_time(1500), "1970-01-01T00:00:01.500Z");
    }
}
