//! Wall-clock helpers: Unix milliseconds and RFC 3339 text (UTC), without a date
//! crate. Storage keeps times as integer Unix milliseconds.
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

/// Unix milliseconds as RFC 3339 UTC.
pub fn rfc3339(millis: i64) -> String {
    let secs = millis.div_euclid(1000);
    let ms = millis.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Parses RFC 3339 (`2026-11-28T21:31:00Z`, optional fraction, `Z` or `±HH:MM`)
/// into Unix milliseconds.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let n = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        t.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| t.parse().ok())?
    };
    let (y, mo, d) = (n(0..4)?, n(5..7)?, n(8..10)?);
    let (h, mi, sec) = (n(11..13)?, n(14..16)?, n(17..19)?);
    if b[13] != b':' || b[16] != b':' || !(1..=12).contains(&mo) || !(1..=31).contains(&d) {
        return None;
    }
    if h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut rest = &s[19..];
    let mut ms = 0;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let padded = format!("{:0<3}", &frac[..digits.min(3)]);
        ms = padded.parse::<i64>().ok()?;
        rest = &frac[digits..];
    }
    let offset_min = match rest {
        "Z" | "z" => 0,
        _ if rest.len() == 6
            && matches!(rest.as_bytes()[0], b'+' | b'-')
            && rest.as_bytes()[3] == b':' =>
        {
            let two = |r: std::ops::Range<usize>| -> Option<i64> {
                let t = rest.get(r)?;
                t.bytes()
                    .all(|c| c.is_ascii_digit())
                    .then(|| t.parse().ok())?
            };
            let (oh, om) = (two(1..3)?, two(4..6)?);
            if oh > 23 || om > 59 {
                return None;
            }
            let sign = if rest.starts_with('-') { -1 } else { 1 };
            sign * (oh * 60 + om)
        }
        _ => return None,
    };
    let days = days_from_civil(y, mo as u32, d as u32);
    Some(((days * 86_400 + h * 3600 + mi * 60 + sec - offset_min * 60) * 1000) + ms)
}

/// Howard Hinnant's civil-to-days algorithm.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Howard Hinnant's days-to-civil algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
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
        ] {
            assert_eq!(super::parse_rfc3339(bad), None, "{bad}");
        }
    }
}
