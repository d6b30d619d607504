//! Wall-clock helpers: Unix milliseconds and RFC 3339 text (UTC, through chrono).
//! Storage keeps times as integer Unix milliseconds.
//!
//! [`Clock`] is the wall time of the daemon's background tasks: it advances with
//! tokio's clock, so their sleeps and their timestamps agree, and a test on a
//! paused tokio clock sees exact times. Parsing cron expressions is not here (see
//! `scheduler`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch.
pub fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Wall-clock milliseconds that advance with tokio's clock: the real time when
/// [`Clock::start`] ran, plus tokio's time elapsed since. Under a paused tokio
/// clock it moves only when tokio's does.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    wall0: i64,
    t0: tokio::time::Instant,
}

impl Clock {
    /// Reads the wall clock and tokio's clock once.
    pub fn start() -> Clock {
        Clock {
            wall0: now_millis(),
            t0: tokio::time::Instant::now(),
        }
    }

    /// The current wall time, Unix milliseconds.
    pub fn now(&self) -> i64 {
        self.wall0 + i64::try_from(self.t0.elapsed().as_millis()).unwrap_or(i64::MAX / 2)
    }

    /// The tokio instant of wall time `at` (now, if `at` is past): what to give
    /// `tokio::time::sleep_until`. On waking there, [`Clock::now`] is at least `at`.
    pub fn instant(&self, at: i64) -> tokio::time::Instant {
        let ahead = u64::try_from(at - self.now()).unwrap_or(0);
        tokio::time::Instant::now() + Duration::from_millis(ahead)
    }
}

/// The current time as RFC 3339 UTC, e.g. `2026-11-28T21:31:00.123Z`.
pub fn now_rfc3339() -> String {
    rfc3339(now_millis())
}

/// Unix milliseconds as RFC 3339 UTC (milliseconds shown). A time chrono
/// cannot represent (beyond ±262,000 years) is written as its milliseconds.
pub fn rfc3339(millis: i64) -> String {
    chrono::DateTime::from_timestamp_millis(millis).map_or_else(
        || millis.to_string(),
        |t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    )
}

/// Parses RFC 3339 (`2026-11-28T21:31:00Z`, optional fraction, `Z` or `±HH:MM`)
/// into Unix milliseconds; `None` for anything else, an impossible date such as
/// 31 February included.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.timestamp_millis())
}

#[cfg(test)]
mod tests {
    #[test]
    fn known_instants() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00.000Z");
        // `date -u -d @1795901460.123 +%FT%T` gives 2026-11-28T21:31:00
        assert_eq!(
            super::rfc3339(1_795_901_460_123),
            "2026-11-28T21:31:00.123Z"
        );
        assert_eq!(super::rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn parses_what_it_prints_and_offsets() {
        for ms in [0, 1_795_901_460_123, 951_782_400_000, -86_400_000] {
            assert_eq!(super::parse_rfc3339(&super::rfc3339(ms)), Some(ms));
        }
        assert_eq!(
            super::parse_rfc3339("2026-11-28T23:31:00+02:00"),
            Some(1_795_901_460_000)
        );
        assert_eq!(
            super::parse_rfc3339("2026-11-28T21:31:00.5Z"),
            Some(1_795_901_460_500)
        );
        for bad in [
            "",
            "2026-11-28",
            "2026-13-01T00:00:00Z",
            "2026-11-28T21:31:00",
            "2026-11-28T21:31:00+2",
            "2026-11-28T21:31:00+99:00",
            "2026-11-28T21:31:00+05:60",
            "2026-11-28T21:31:00++1:00",
            "2026-02-31T00:00:00Z",
            "2026-04-31T00:00:00Z",
        ] {
            assert_eq!(super::parse_rfc3339(bad), None, "{bad}");
        }
    }
}
