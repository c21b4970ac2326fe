//! A point in history: a sequence number or a wall-clock time — an RFC 3339 time with its
//! offset (`Z`, `+02:00`), or a duration before now (`15m`, `2h 30m`). A time without an offset
//! is refused: which zone was meant cannot be known.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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

impl Point {
    /// A bare number is a sequence number; otherwise a time ([`parse_time`]), relative ones
    /// counted back from `now`.
    pub fn parse_at(s: &str, now: SystemTime) -> Result<Self, String> {
        match s.trim().parse::<u64>() {
            Ok(n) => Ok(Point::Seq(n)),
            Err(_) => parse_time(s, now).map(Point::Time),
        }
    }
}

impl FromStr for Point {
    type Err = String;
    /// [`Point::parse_at`] on the wall clock.
    fn from_str(s: &str) -> Result<Self, String> {
        Point::parse_at(s, SystemTime::now())
    }
}

/// A time: RFC 3339 with any offset (`2026-11-25T10:00:00Z`, `2026-11-25T12:00:00+02:00`), or a
/// duration before `now` (`15m`, `2h`, `1day 3h`). A time with no offset is refused.
pub fn parse_time(s: &str, now: SystemTime) -> Result<UnixMs, String> {
    let s = s.trim();
    if let Ok(ago) = humantime::parse_duration(s) {
        let at = now.checked_sub(ago).ok_or_else(|| format!("`{s}` ago is before 1970"))?;
        return unix_ms(s, at);
    }
    match time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339) {
        Ok(t) => {
            let ms = t.unix_timestamp_nanos() / 1_000_000;
            UnixMs::try_from(ms).map_err(|_| format!("`{s}` is before 1970"))
        }
        Err(_) if humantime::parse_rfc3339_weak(s).is_ok() => Err(format!(
            "`{s}` has no UTC offset: add one (`Z` for UTC, or e.g. `+02:00`), or give a duration before now such as `15m`"
        )),
        Err(e) => Err(format!(
            "`{s}` is neither a sequence number, an RFC 3339 time (2026-11-25T10:00:00Z, 2026-11-25T12:00:00+02:00) \
             nor a duration before now (15m, 2h): {e}"
        )),
    }
}

fn unix_ms(s: &str, t: SystemTime) -> Result<UnixMs, String> {
    let ms = t.duration_since(UNIX_EPOCH).map_err(|_| format!("`{s}` is before 1970"))?.as_millis();
    UnixMs::try_from(ms).map_err(|_| format!("`{s}` is too far in the future"))
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

    #[test]
    fn any_offset_is_honoured() {
        let now = SystemTime::now();
        let utc = Point::parse_at("2026-11-25T10:00:00Z", now).unwrap();
        assert_eq!(Point::parse_at("2026-11-25T12:00:00+02:00", now).unwrap(), utc);
        assert_eq!(Point::parse_at("2026-11-25T05:30:00-04:30", now).unwrap(), utc);
        assert_eq!(Point::parse_at("2026-11-25T10:00:00.250+00:00", now).unwrap(), Point::Time(1_795_600_800_250));
        assert_eq!(utc, Point::Time(1_795_600_800_000));
    }

    #[test]
    fn times_without_an_offset_are_refused_saying_so() {
        for s in ["2026-11-25T10:00:00", "2026-11-25 10:00:00"] {
            let e = Point::parse_at(s, SystemTime::now()).unwrap_err();
            assert!(e.contains("no UTC offset") && e.contains(s), "{e}");
        }
    }

    #[test]
    fn durations_count_back_from_now() {
        let now = UNIX_EPOCH + Duration::from_secs(10_000);
        assert_eq!(Point::parse_at("15m", now).unwrap(), Point::Time((10_000 - 900) * 1000));
        assert_eq!(Point::parse_at("2h", now).unwrap(), Point::Time((10_000 - 7200) * 1000));
        assert_eq!(Point::parse_at("1h 30m", now).unwrap(), Point::Time((10_000 - 5400) * 1000));
        assert!(Point::parse_at("5h", now).unwrap_err().contains("before 1970"));
    }
}
