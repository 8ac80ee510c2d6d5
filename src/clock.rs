//! Wall-clock time behind a trait, so token expiry can be tested without waiting.
//! (Pending flows and timeouts use `tokio::time`, which tests pause instead.) This is the one
//! place that reads the system clock.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

/// A source of wall-clock time in Unix seconds.
pub trait Clock: std::fmt::Debug + Send + Sync + 'static {
    fn now_unix(&self) -> i64;
}

/// The real clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[expect(
        clippy::disallowed_methods,
        reason = "the one place that reads the system clock"
    )]
    fn now_unix(&self) -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
            .unwrap_or(0)
    }
}

/// A clock that only moves when told to: for tests of expiry.
#[derive(Debug, Default)]
pub struct ManualClock(std::sync::atomic::AtomicI64);

impl ManualClock {
    pub fn at(unix: i64) -> Self {
        Self(std::sync::atomic::AtomicI64::new(unix))
    }

    pub fn advance(&self, seconds: i64) {
        self.0
            .fetch_add(seconds, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_unix(&self) -> i64 {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// `secs` after the Unix epoch in RFC 3339, UTC: `2026-12-03T08:00:00Z`, or with `micros`
/// `2026-12-03T08:00:00.123456Z`.
pub fn write_rfc3339(w: &mut impl fmt::Write, secs: u64, micros: Option<u32>) -> fmt::Result {
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil(days);
    if year <= 9999 && micros.is_none_or(|us| us < 1_000_000) {
        // Digits placed by hand: this stamps every log line, where `write!` cost more than the
        // rest of the line's fixed parts.
        let mut out = *b"0000-00-00T00:00:00.000000Z";
        for (at, n) in [
            (0..4, year),
            (5..7, month),
            (8..10, day),
            (11..13, rem / 3600),
            (14..16, rem / 60 % 60),
            (17..19, rem % 60),
            (20..26, micros.map_or(0, u64::from)),
        ] {
            digits(&mut out[at], n);
        }
        let text = if micros.is_some() {
            &out[..]
        } else {
            out[19] = b'Z';
            &out[..20]
        };
        return w.write_str(std::str::from_utf8(text).map_err(|_| fmt::Error)?);
    }
    write!(
        w,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )?;
    match micros {
        Some(us) => write!(w, ".{us:06}Z"),
        None => w.write_char('Z'),
    }
}

/// `n` in decimal, zero-padded to fill `into`.
fn digits(into: &mut [u8], mut n: u64) {
    for d in into.iter_mut().rev() {
        *d = b"0123456789"[(n % 10) as usize];
        n /= 10;
    }
}

/// The calendar date `days` after 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_renders_calendar_dates_in_utc() {
        let render = |secs, micros| {
            let mut s = String::new();
            write_rfc3339(&mut s, secs, micros).unwrap();
            s
        };
        assert_eq!(render(0, None), "1970-01-01T00:00:00Z");
        // A leap day, and the last second of a year.
        assert_eq!(render(951_825_600, None), "2000-02-29T12:00:00Z");
        assert_eq!(
            render(1_798_761_599, Some(7)),
            "2026-12-31T23:59:59.000007Z"
        );
        assert_eq!(
            render(4_102_444_799, Some(999_999)),
            "2099-12-31T23:59:59.999999Z"
        );
        // Past year 9999 the year takes five digits.
        assert_eq!(render(253_402_300_800, None), "10000-01-01T00:00:00Z");
        assert_eq!(
            render(253_402_300_799, Some(1)),
            "9999-12-31T23:59:59.000001Z"
        );
    }
}
