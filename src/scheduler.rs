//! The cron scheduler of retraining: when to run, and never two runs at once.
//!
//! - [`Cron`] is a parsed `training.schedule` (the `cron` crate's syntax, seconds
//!   first: `"0 0 3 * * *"` is 03:00:00 every day), evaluated in UTC on Unix
//!   milliseconds.
//! - [`run`] sleeps until each due time on a [`Clock`] and calls its `fire`
//!   callback with the scheduled time. It does not wait for the job: a run that
//!   outlasts the interval overlaps the next due time, and `fire` decides what
//!   to do then. When it wakes late past several due times (a suspended
//!   machine, a starved runtime), it fires once, not once per missed time.
//! - [`Flight`] is the single-flight guard `fire` uses for that decision: a run
//!   holds a [`FlightGuard`] until it finishes, and a due time that finds it
//!   held is skipped.
//!
//! What a run does (training, the gate, swapping the live model) is not here:
//! the daemon's `fire` starts it.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::time::{now_millis, rfc3339, Clock};

/// Errors of the scheduler.
#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    /// The expression does not parse, or names no time from now on.
    #[error(
        "`{expr}` is not a usable cron expression (seconds minutes hours \
         day-of-month month day-of-week [year], e.g. \"0 0 3 * * *\"): {reason}"
    )]
    Cron { expr: String, reason: String },
}

/// A parsed cron schedule, evaluated in UTC.
#[derive(Debug, Clone)]
pub struct Cron {
    schedule: cron::Schedule,
}

impl Cron {
    /// Parses `expr` (seconds first). Rejects a schedule with no time after now,
    /// such as one whose years are all past: it would never run.
    pub fn parse(expr: &str) -> Result<Cron, SchedulerError> {
        let err = |reason: String| SchedulerError::Cron {
            expr: expr.to_string(),
            reason,
        };
        let schedule: cron::Schedule = expr
            .parse()
            .map_err(|e| err(one_line(expr, &format!("{e}"))))?;
        let cron = Cron { schedule };
        if cron.next_after(now_millis()).is_none() {
            return Err(err("it names no time in the future".into()));
        }
        Ok(cron)
    }

    /// The first scheduled time strictly after `wall_ms`, Unix milliseconds
    /// (UTC); `None` when there is none (or past chrono's range).
    pub fn next_after(&self, wall_ms: i64) -> Option<i64> {
        let after = DateTime::<Utc>::from_timestamp_millis(wall_ms)?;
        self.schedule
            .after(&after)
            .next()
            .map(|t| t.timestamp_millis())
    }
}

/// The `cron` crate's parse error on one line. It reads "EXPR\n   ^\nWHY" (WHY
/// may be empty): keep WHY and say where the caret points.
fn one_line(expr: &str, message: &str) -> String {
    let lines: Vec<&str> = message.lines().collect();
    let why = || {
        let rest: Vec<&str> = lines[2..]
            .iter()
            .map(|l| l.trim())
            .filter(|l| !l.is_empty())
            .collect();
        rest.join(" ")
    };
    match lines.as_slice() {
        [first, caret, ..] if *first == expr && caret.trim() == "^" => {
            let at = caret.find('^').unwrap_or(0);
            let why = why();
            match (why.is_empty(), at >= expr.len()) {
                (false, _) => format!("{why} (at character {})", at + 1),
                (true, true) => "it ends too early (6 or 7 fields are needed)".into(),
                (true, false) => format!("unexpected text at character {}", at + 1),
            }
        }
        _ => lines
            .iter()
            .map(|l| l.trim())
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join(" "),
    }
}

/// The expression as written.
impl fmt::Display for Cron {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.schedule.source())
    }
}

/// A single-flight guard: at most one [`FlightGuard`] exists at a time. Clones
/// share the guard.
#[derive(Debug, Clone, Default)]
pub struct Flight {
    busy: Arc<AtomicBool>,
}

/// Proof that a run holds the [`Flight`]; dropping it (also by a panic's
/// unwinding) releases the flight.
#[derive(Debug)]
pub struct FlightGuard {
    busy: Arc<AtomicBool>,
}

impl Flight {
    pub fn new() -> Flight {
        Flight::default()
    }

    /// The guard, or `None` while another run holds it.
    #[must_use = "the flight is released as soon as the guard is dropped"]
    pub fn try_start(&self) -> Option<FlightGuard> {
        self.busy
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .ok()
            .map(|_| FlightGuard {
                busy: Arc::clone(&self.busy),
            })
    }

    /// Whether a run holds the guard now.
    pub fn busy(&self) -> bool {
        self.busy.load(Ordering::Acquire)
    }
}

impl Drop for FlightGuard {
    fn drop(&mut self) {
        self.busy.store(false, Ordering::Release);
    }
}

/// Calls `fire(t)` at each due time `t` of `cron` (wall time read from `clock`)
/// until `stop` is cancelled. `fire` runs on this task, so it must return
/// quickly: it starts the job elsewhere (or skips it) and returns. A late wake
/// past several due times fires once, with the first missed time, and the next
/// due time is then the first one after the wake.
pub async fn run<F>(cron: Cron, clock: Clock, stop: CancellationToken, mut fire: F)
where
    F: FnMut(i64),
{
    let Some(mut due) = cron.next_after(clock.now()) else {
        tracing::warn!(schedule = %cron, "the schedule names no time in the future; nothing will run");
        return;
    };
    tracing::info!(schedule = %cron, next = %rfc3339(due), "scheduler started");
    loop {
        tokio::select! {
            biased;
            () = stop.cancelled() => return,
            () = tokio::time::sleep_until(clock.instant(due)) => {}
        }
        let now = clock.now();
        if now < due {
            // Not reached with tokio's timers, which never fire early; sleep again.
            continue;
        }
        let next = cron.next_after(now);
        if cron.next_after(due).is_some_and(|t| t <= now) {
            tracing::warn!(
                due = %rfc3339(due),
                now = %rfc3339(now),
                "the scheduler woke late, past later due times; firing once"
            );
        }
        fire(due);
        match next {
            Some(t) => {
                due = t;
                tracing::debug!(next = %rfc3339(due), "next scheduled run");
            }
            None => {
                tracing::warn!(schedule = %cron, "the schedule names no later time; nothing more will run");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::time::Duration;

    const MINUTE: i64 = 60_000;

    /// `(clock.now(), t)` for each call of `fire(t)`.
    type Fired = Arc<Mutex<Vec<(i64, i64)>>>;

    /// Runs the scheduler on its own task, recording what `fire` was called with.
    fn spawn_recording(
        expr: &str,
        clock: Clock,
        stop: &CancellationToken,
    ) -> (Fired, tokio::task::JoinHandle<()>) {
        let fired = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&fired);
        let task = tokio::spawn(run(
            Cron::parse(expr).unwrap(),
            clock,
            stop.clone(),
            move |t| log.lock().unwrap().push((clock.now(), t)),
        ));
        (fired, task)
    }

    #[tokio::test(start_paused = true)]
    async fn fires_exactly_at_each_due_time() {
        let clock = Clock::start();
        let cron = Cron::parse("0 * * * * *").unwrap();
        let first = cron.next_after(clock.now()).unwrap();
        assert_eq!(first % MINUTE, 0);
        assert!(first > clock.now() && first <= clock.now() + MINUTE);
        let stop = CancellationToken::new();
        let (fired, task) = spawn_recording("0 * * * * *", clock, &stop);

        // Up to half a minute past the fifth due time.
        tokio::time::sleep_until(clock.instant(first + 4 * MINUTE + 30_000)).await;
        stop.cancel();
        task.await.unwrap();

        let expected: Vec<(i64, i64)> = (0..5)
            .map(|k| (first + k * MINUTE, first + k * MINUTE))
            .collect();
        assert_eq!(*fired.lock().unwrap(), expected);
    }

    #[tokio::test(start_paused = true)]
    async fn runs_never_overlap_and_busy_due_times_are_skipped() {
        let clock = Clock::start();
        let first = Cron::parse("0 * * * * *")
            .unwrap()
            .next_after(clock.now())
            .unwrap();
        let flight = Flight::new();
        let runs = Arc::new(Mutex::new(Vec::new()));
        let skipped = Arc::new(Mutex::new(Vec::new()));
        let stop = CancellationToken::new();
        let task = tokio::spawn(run(
            Cron::parse("0 * * * * *").unwrap(),
            clock,
            stop.clone(),
            {
                let (flight, runs, skipped) =
                    (flight.clone(), Arc::clone(&runs), Arc::clone(&skipped));
                move |t| match flight.try_start() {
                    Some(guard) => {
                        let runs = Arc::clone(&runs);
                        tokio::spawn(async move {
                            let start = clock.now();
                            tokio::time::sleep(Duration::from_secs(90)).await;
                            runs.lock().unwrap().push((start, clock.now()));
                            drop(guard);
                        });
                    }
                    None => skipped.lock().unwrap().push(t),
                }
            },
        ));

        // Ten due times: first + 0 s … first + 540 s; the last run ends at +570 s.
        tokio::time::sleep_until(clock.instant(first + 10 * MINUTE - 1)).await;
        stop.cancel();
        task.await.unwrap();
        assert!(!flight.busy());

        let runs = runs.lock().unwrap().clone();
        for pair in runs.windows(2) {
            assert!(pair[0].1 <= pair[1].0, "runs overlap: {runs:?}");
        }
        let s = 1000;
        let expected_runs: Vec<(i64, i64)> = [0, 120, 240, 360, 480]
            .into_iter()
            .map(|at| (first + at * s, first + (at + 90) * s))
            .collect();
        assert_eq!(runs, expected_runs);
        let expected_skips: Vec<i64> = [60, 180, 300, 420, 540]
            .into_iter()
            .map(|at| first + at * s)
            .collect();
        assert_eq!(*skipped.lock().unwrap(), expected_skips);
    }

    #[tokio::test(start_paused = true)]
    async fn a_late_wake_fires_once_for_all_missed_times() {
        let clock = Clock::start();
        let first = Cron::parse("0 * * * * *")
            .unwrap()
            .next_after(clock.now())
            .unwrap();
        let stop = CancellationToken::new();
        let (fired, task) = spawn_recording("0 * * * * *", clock, &stop);
        tokio::task::yield_now().await;

        // Jump past five due times at once, as after a suspend.
        let jump = first + 4 * MINUTE + 30_000 - clock.now();
        tokio::time::advance(Duration::from_millis(u64::try_from(jump).unwrap())).await;
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert_eq!(
            *fired.lock().unwrap(),
            vec![(first + 4 * MINUTE + 30_000, first)]
        );

        // Then back on the minute.
        tokio::time::sleep_until(clock.instant(first + 5 * MINUTE + 1)).await;
        stop.cancel();
        task.await.unwrap();
        assert_eq!(
            *fired.lock().unwrap(),
            vec![
                (first + 4 * MINUTE + 30_000, first),
                (first + 5 * MINUTE, first + 5 * MINUTE)
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn stop_ends_the_loop_at_once() {
        let clock = Clock::start();
        let stop = CancellationToken::new();
        let (fired, task) = spawn_recording("0 0 3 * * *", clock, &stop);
        tokio::time::sleep(Duration::from_secs(10)).await;
        let before = tokio::time::Instant::now();
        stop.cancel();
        task.await.unwrap();
        assert_eq!(tokio::time::Instant::now(), before);
        assert!(fired.lock().unwrap().is_empty());

        // Cancelled before it starts: returns without firing either.
        let (fired, task) = spawn_recording("* * * * * *", clock, &stop);
        task.await.unwrap();
        assert_eq!(tokio::time::Instant::now(), before);
        assert!(fired.lock().unwrap().is_empty());
    }

    #[test]
    fn parse_rejects_bad_expressions_naming_them_on_one_line() {
        for (expr, why) in [
            ("not a cron", "does not support using names"),
            ("61 * * * * *", "'61' specified"),
            ("0 3 * * *", "6 or 7 fields"),
            ("", "6 or 7 fields"),
            ("0 0 3 * * * 2001", "no time in the future"),
        ] {
            let e = Cron::parse(expr).unwrap_err().to_string();
            assert!(e.starts_with(&format!("`{expr}` is not")), "{e}");
            assert!(e.contains(why), "{e}");
            assert!(!e.contains('\n'), "{e}");
        }
    }

    #[test]
    fn next_after_is_in_utc() {
        // 2026-11-29T10:00:00Z: 20 786 days since 1970-01-01 (56 years, 14 of
        // them leap: 1972 … 2024; then Jan … Oct of 2026 is 304 days, plus 28).
        let days = 56 * 365 + 14 + 304 + 28;
        assert_eq!(days, 20_786);
        let at = (days * 86_400 + 10 * 3600) * 1000;
        assert_eq!(rfc3339(at), "2026-11-29T10:00:00.000Z");
        let cron = Cron::parse("0 0 3 * * *").unwrap();
        // 2026-11-30T03:00:00Z: the next day, 03:00.
        let next = ((days + 1) * 86_400 + 3 * 3600) * 1000;
        assert_eq!(cron.next_after(at), Some(next));
        assert_eq!(rfc3339(next), "2026-11-30T03:00:00.000Z");
        // Strictly after: at 03:00:00.000 itself, the next is a day later.
        assert_eq!(cron.next_after(next), Some(next + 86_400_000));
        assert_eq!(cron.next_after(next - 1), Some(next));
        assert_eq!(cron.to_string(), "0 0 3 * * *");
    }

    #[tokio::test]
    async fn a_flight_admits_one_run_and_its_guard_moves_into_blocking_work() {
        let flight = Flight::new();
        let guard = flight.try_start().unwrap();
        assert!(flight.busy());
        assert!(flight.clone().try_start().is_none());
        tokio::task::spawn_blocking(move || drop(guard))
            .await
            .unwrap();
        assert!(!flight.busy());
        let guard = flight.try_start().unwrap();
        // A panicking run releases it too.
        let _ = tokio::task::spawn_blocking(move || {
            let _guard = guard;
            panic!("training failed");
        })
        .await;
        assert!(!flight.busy());
    }
}
