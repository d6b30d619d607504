//! The two alerting tasks of the daemon.
//!
//! - [`rules_task`] reads monitoring events, keeps the [`Rules`] (saved to SQLite
//!   after every change, so a restart neither repeats nor forgets a
//!   notification), and at each group's due time writes the notifications into
//!   the outbox, before anything tries to send them. Past `alerts.max_per_hour`
//!   they are stored `held`.
//! - [`mailer_task`] sends due outbox rows: sent, or failed for good on a 5xx
//!   answer, or retried with exponential back-off and jitter. When held rows
//!   exist and the hour allows, it writes one summary mail naming them. Delivery
//!   is at least once: a crash between a server's "250 OK" and the row's update
//!   sends that mail again after the restart.
//!
//! Both read wall time from a [`Clock`] that advances with tokio's clock, so that
//! their sleeps and their timestamps agree. The decisions themselves ([`flush`],
//! [`send_due`], [`backoff`] and `rules::Rules`) take the time as an argument and
//! are tested on exact times: a paused tokio clock would also fire sqlx's
//! connection-pool timeouts (`PoolTimedOut`) while a query waits on SQLite's
//! thread.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use rand::Rng;
use tokio::sync::{broadcast, Notify};
use tokio_util::sync::CancellationToken;

use super::compose::{compose, Context};
use super::mail::Mailer;
use super::rules::{from_event, GroupBy, Rules, Silence, Timing};
use crate::monitor::events::Event;
use crate::store::alerts::{self as outbox, MailState, NewMail};
use crate::store::{Store, StoreError};
/// Re-exported: the clock moved to `crate::time`; `daemon` names it here.
pub use crate::time::Clock;

/// Mails sent, refused for good, and held by the hourly cap since the daemon
/// started: counters for `/metrics` that only go up (the outbox's rows are
/// deleted by retention, so counting rows could go down).
#[derive(Debug, Default)]
pub struct MailCounters {
    pub sent: AtomicU64,
    pub failed: AtomicU64,
    pub held: AtomicU64,
}

/// What the alerting tasks need to know.
#[derive(Debug, Clone)]
pub struct AlertSettings {
    /// Where the tasks count what they did.
    pub counters: Arc<MailCounters>,
    pub timing: Timing,
    pub context: Context,
    pub recipients: Vec<String>,
    pub max_per_hour: i64,
    pub retry_initial_ms: u64,
    pub retry_max_ms: u64,
}

impl AlertSettings {
    pub fn from_config(c: &crate::config::Config) -> AlertSettings {
        let a = &c.alerts;
        let ms = |s: crate::config::Seconds| i64::try_from(s.as_millis()).unwrap_or(i64::MAX);
        AlertSettings {
            counters: Arc::default(),
            timing: Timing {
                group_wait: ms(a.group_wait_secs),
                group_interval: ms(a.group_interval_secs),
                repeat_interval: ms(a.repeat_interval_secs),
                send_resolved: a.send_resolved,
                // Checked by the config's validation; a name it let through
                // cannot be unknown here.
                group_by: GroupBy::from_names(&a.group_by).unwrap_or_default(),
            },
            context: Context {
                base_url: c.base_url(),
                interval_secs: c.drift.interval_secs.get().as_secs_f64(),
                confirm_checks: c.drift.confirm_checks,
                drift_retrain: c.training.drift_retrain,
                drift_cooldown_secs: c.training.drift_cooldown_secs.get().as_secs_f64(),
            },
            recipients: a.to.clone(),
            max_per_hour: i64::from(a.max_per_hour),
            retry_initial_ms: a.retry_initial_secs.as_millis(),
            retry_max_ms: a.retry_max_secs.as_millis(),
        }
    }
}

/// The delay before retry number `attempt` (1 = the first retry):
/// `initial · 2^(attempt−1)`, at most `max`, times a jitter factor in [½, 1)
/// drawn from `u` ∈ [0, 1) ("equal jitter": never less than half the step, so
/// retries spread out without collapsing to zero).
pub fn backoff(attempt: u32, initial_ms: u64, max_ms: u64, u: f64) -> u64 {
    let step = initial_ms
        .saturating_mul(1u64 << attempt.saturating_sub(1).min(40))
        .min(max_ms);
    (step as f64 * (0.5 + 0.5 * u.clamp(0.0, 1.0))) as u64
}

/// Reads events into the rules and writes due notifications to the outbox.
pub async fn rules_task(
    db: Store,
    mut events: broadcast::Receiver<Event>,
    settings: AlertSettings,
    domain: String,
    wake_mailer: Arc<Notify>,
    clock: Clock,
    stop: CancellationToken,
) {
    let mut rules = match outbox::load_rules(&db).await {
        Ok(Some(json)) => serde_json::from_str(&json).unwrap_or_else(|e| {
            tracing::error!(error = %e, "the saved alert state is unreadable; starting afresh");
            Rules::default()
        }),
        Ok(None) => Rules::default(),
        Err(e) => {
            tracing::error!(error = %e, "cannot read the saved alert state; starting afresh");
            Rules::default()
        }
    };
    rules.regroup(settings.timing.group_by);
    loop {
        let due = rules.next_due();
        let sleep = async {
            match due {
                Some(at) => tokio::time::sleep_until(clock.instant(at)).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = stop.cancelled() => return,
            received = events.recv() => match received {
                Ok(event) => {
                    rules.ingest(from_event(&event, clock.now()), &settings.timing, clock.now());
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::error!(missed = n, "alerting fell behind the monitoring events; some were lost");
                    continue;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
            () = sleep => {
                if let Err(e) = flush(&db, &mut rules, &settings, &domain, clock.now()).await {
                    tracing::error!(error = %e, "cannot store alert notifications; will retry");
                }
                wake_mailer.notify_one();
            }
        }
        if let Err(e) = save(&db, &rules).await {
            tracing::error!(error = %e, "cannot save the alert state");
        }
    }
}

async fn save(db: &Store, rules: &Rules) -> Result<(), StoreError> {
    outbox::save_rules(db, &serde_json::to_string(rules).unwrap_or_default()).await
}

/// Writes the notifications due at `now` into the outbox.
pub async fn flush(
    db: &Store,
    rules: &mut Rules,
    settings: &AlertSettings,
    domain: &str,
    now: i64,
) -> Result<(), StoreError> {
    let silences: Vec<Silence> = outbox::silences(db, now)
        .await?
        .into_iter()
        .filter_map(|s| super::silence_from_row(&s))
        .collect();
    // Decide on a copy: if the outbox cannot take the rows, nothing is lost and
    // the same notifications come due again.
    let mut next = rules.clone();
    let notifications = next.flush(&settings.timing, &silences, now);
    for n in &notifications {
        let m = compose(n, &settings.context);
        let message_id = format!("{}@{domain}", uuid::Uuid::now_v7());
        let counted = outbox::counted_since(db, now - 3_600_000).await?;
        let state = if counted >= settings.max_per_hour {
            tracing::warn!(subject = %m.subject, max_per_hour = settings.max_per_hour, "alert mail held: the hourly cap is reached");
            settings.counters.held.fetch_add(1, Ordering::Relaxed);
            MailState::Held
        } else {
            MailState::Pending
        };
        let alerts: Vec<&super::rules::Alert> = n.firing.iter().chain(&n.resolved).collect();
        let row = NewMail {
            group_key: n.group.clone(),
            kind: m.kind.to_string(),
            subject: m.subject.clone(),
            body_text: m.text,
            body_html: m.html,
            images: m.images,
            message_id: message_id.clone(),
            thread: n.thread.clone(),
            recipients: settings.recipients.clone(),
            alerts: serde_json::to_value(&alerts).unwrap_or_default(),
            state,
        };
        let id = outbox::insert(db, &row, now).await?;
        tracing::info!(id, subject = %m.subject, state = state.as_str(), "alert notification stored");
        next.sent(&n.group, &message_id);
    }
    *rules = next;
    Ok(())
}

/// Sends due outbox rows until `stop`.
pub async fn mailer_task(
    db: Store,
    mailer: Mailer,
    settings: AlertSettings,
    wake: Arc<Notify>,
    clock: Clock,
    stop: CancellationToken,
) {
    loop {
        if let Err(e) = send_due(&db, &mailer, &settings, clock.now()).await {
            tracing::error!(error = %e, "alert outbox unreadable; will retry");
        }
        let next = outbox::next_attempt(&db).await.ok().flatten();
        // Look again at the next attempt, or within a minute (held rows, a row
        // another process added).
        let at = next.map_or(clock.now() + 60_000, |t| t.min(clock.now() + 60_000));
        tokio::select! {
            () = stop.cancelled() => return,
            () = wake.notified() => {}
            () = tokio::time::sleep_until(clock.instant(at)) => {}
        }
    }
}

/// One pass: send what is due, then summarise held rows if the hour allows.
pub async fn send_due(
    db: &Store,
    mailer: &Mailer,
    settings: &AlertSettings,
    now: i64,
) -> Result<(), StoreError> {
    for mail in outbox::due(db, now, 50).await? {
        match mailer.send(&mail).await {
            Ok(()) => {
                outbox::mark_sent(db, mail.id, now).await?;
                settings.counters.sent.fetch_add(1, Ordering::Relaxed);
                tracing::info!(id = mail.id, subject = %mail.subject, via = %mailer.describe, "alert mail sent");
            }
            Err(e) if e.permanent => {
                outbox::mark_failed_attempt(db, mail.id, &e.message, None).await?;
                settings.counters.failed.fetch_add(1, Ordering::Relaxed);
                tracing::error!(id = mail.id, subject = %mail.subject, error = %e.message, "alert mail refused for good; not retrying");
            }
            Err(e) => {
                let attempt = u32::try_from(mail.attempts + 1).unwrap_or(u32::MAX);
                let delay = backoff(
                    attempt,
                    settings.retry_initial_ms,
                    settings.retry_max_ms,
                    rand::thread_rng().gen(),
                );
                let next = now + i64::try_from(delay).unwrap_or(i64::MAX / 2);
                outbox::mark_failed_attempt(db, mail.id, &e.message, Some(next)).await?;
                tracing::warn!(id = mail.id, attempt, retry_in_ms = delay, error = %e.message, "alert mail not sent; will retry");
            }
        }
    }
    let held = outbox::held(db).await?;
    if !held.is_empty() && outbox::counted_since(db, now - 3_600_000).await? < settings.max_per_hour
    {
        let lines: Vec<String> = held.iter().map(|(_, s)| format!("- {s}")).collect();
        let subject = format!(
            "[steward] {} alert mails held back by the hourly cap",
            held.len()
        );
        let text = format!(
            "{subject}\n\nalerts.max_per_hour is {}. These notifications were stored but not sent:\n\n{}\n\n\
             Their alerts are still tracked: a group that is still firing is mailed again at its next \
             change or repeat. All notifications: {}/v1/alerts\n",
            settings.max_per_hour,
            lines.join("\n"),
            settings.context.base_url
        );
        let html = format!(
            "<html><body><h2>{}</h2><ul>{}</ul><p><a href=\"{}/v1/alerts\">All notifications</a></p></body></html>\n",
            super::compose::esc(&subject),
            held.iter()
                .map(|(_, s)| format!("<li>{}</li>", super::compose::esc(s)))
                .collect::<String>(),
            super::compose::esc(&settings.context.base_url)
        );
        let row = NewMail {
            group_key: "summary".into(),
            kind: "summary".into(),
            subject,
            body_text: text,
            body_html: html,
            message_id: format!("{}@{}", uuid::Uuid::now_v7(), mailer.domain()),
            thread: Vec::new(),
            recipients: settings.recipients.clone(),
            alerts: serde_json::Value::Array(Vec::new()),
            state: MailState::Pending,
            images: Vec::new(),
        };
        outbox::insert(db, &row, now).await?;
        let ids: Vec<i64> = held.iter().map(|(id, _)| *id).collect();
        outbox::mark_summarized(db, &ids).await?;
        tracing::info!(held = ids.len(), "summary of held alert mails stored");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::rules::Alert;
    use crate::config::Config;
    use std::collections::BTreeMap;

    #[test]
    fn fractional_durations_reach_the_mail_context_unrounded() {
        let env = [(
            "STEWARD_DRIFT__INTERVAL_SECS".to_string(),
            "0.5".to_string(),
        )];
        let c = Config::from_parts("t", "", &env).unwrap();
        let s = AlertSettings::from_config(&c);
        assert_eq!(s.context.interval_secs, 0.5);
        assert_eq!(s.context.drift_cooldown_secs, 3600.0);
    }

    fn settings(max_per_hour: i64) -> AlertSettings {
        AlertSettings {
            counters: Arc::default(),
            timing: Timing {
                group_wait: 1000,
                group_interval: 60_000,
                repeat_interval: 3_600_000,
                send_resolved: true,
                // One group per rule: these tests need several mails quickly.
                group_by: GroupBy::from_names(&["rule"]).unwrap(),
            },
            context: Context {
                base_url: "http://x".into(),
                interval_secs: 60.0,
                confirm_checks: 2,
                drift_retrain: true,
                drift_cooldown_secs: 3600.0,
            },
            recipients: vec!["ops@example.org".into()],
            max_per_hour,
            retry_initial_ms: 1000,
            retry_max_ms: 8000,
        }
    }

    fn alert(rule: &str, now: i64) -> Alert {
        Alert {
            rule: rule.into(),
            labels: BTreeMap::new(),
            details: serde_json::json!({}),
            starts_at: now,
            ends_at: None,
            model_version: "1".into(),
        }
    }

    fn mailer(config: &str) -> Mailer {
        Mailer::from_config(&Config::from_parts("t.toml", config, &[]).unwrap()).unwrap()
    }

    #[tokio::test]
    async fn past_the_hourly_cap_mails_are_held_then_named_in_one_summary() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::store::open(&dir.path().join("s.db")).await.unwrap();
        let out = dir.path().join("out");
        let m = mailer(&format!("[alerts]\ndir = \"{}\"\n", out.display()));
        let s = settings(2);
        let mut rules = Rules::default();
        let t0 = 1_000_000_000;
        for (i, rule) in [
            "feature_drift",
            "anomaly_rate",
            "dataset_drift",
            "concept_drift",
        ]
        .into_iter()
        .enumerate()
        {
            let now = t0 + i as i64 * 10_000;
            rules.ingest(alert(rule, now), &s.timing, now);
            flush(&db, &mut rules, &s, "example.org", now + 1000)
                .await
                .unwrap();
        }
        let states: Vec<&str> = outbox::recent(&db, 10)
            .await
            .unwrap()
            .into_iter()
            .rev()
            .map(|m| m.state.as_str())
            .collect();
        assert_eq!(states, vec!["pending", "pending", "held", "held"]);
        // Within the hour: the two are sent, the held ones wait.
        send_due(&db, &m, &s, t0 + 60_000).await.unwrap();
        assert_eq!(std::fs::read_dir(&out).unwrap().count(), 2);
        assert_eq!(outbox::held(&db).await.unwrap().len(), 2);
        // An hour later: one summary naming both, sent at the next pass.
        send_due(&db, &m, &s, t0 + 3_700_000).await.unwrap();
        send_due(&db, &m, &s, t0 + 3_700_001).await.unwrap();
        let rows = outbox::recent(&db, 10).await.unwrap();
        let summary = &rows[0];
        assert_eq!(summary.kind, "summary");
        assert_eq!(summary.state, MailState::Sent);
        assert!(
            summary.body_text.contains("dataset drift")
                && summary.body_text.contains("concept drift")
        );
        assert!(outbox::held(&db).await.unwrap().is_empty());
        assert_eq!(std::fs::read_dir(&out).unwrap().count(), 3);
        // The counters /metrics shows: two held, three sent (the summary too).
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
        assert_eq!((n(&s.counters.held), n(&s.counters.sent)), (2, 3));
        assert_eq!(n(&s.counters.failed), 0);
    }

    /// The retry schedule, on exact times: each pass runs at the row's
    /// `next_attempt` (what the mailer task sleeps until), against a port nothing
    /// listens on. sqlx's pool keeps real-time timeouts, so the schedule is driven
    /// by explicit times rather than a paused tokio clock.
    #[tokio::test]
    async fn the_mailer_retries_on_the_backoff_schedule() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::store::open(&dir.path().join("s.db")).await.unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let m = mailer(&format!(
            "[alerts]\ntransport = \"smtp\"\nsmtp_host = \"127.0.0.1\"\nsmtp_port = {port}\n\
             tls = \"none\"\nto = [\"ops@example.org\"]\n"
        ));
        let row = NewMail {
            group_key: "feature_drift".into(),
            kind: "firing".into(),
            subject: "s".into(),
            body_text: "t".into(),
            body_html: "h".into(),
            message_id: "m@example.org".into(),
            thread: vec![],
            recipients: vec!["ops@example.org".into()],
            alerts: serde_json::json!([]),
            state: MailState::Pending,
            images: Vec::new(),
        };
        let s = settings(20);
        let mut now = 1_000_000_000;
        outbox::insert(&db, &row, now).await.unwrap();
        for attempt in 1..=6i64 {
            // Not due a millisecond early.
            send_due(&db, &m, &s, now - 1).await.unwrap();
            let mail = outbox::recent(&db, 1).await.unwrap().remove(0);
            assert_eq!(mail.attempts, attempt - 1);
            send_due(&db, &m, &s, now).await.unwrap();
            let mail = outbox::recent(&db, 1).await.unwrap().remove(0);
            assert_eq!((mail.attempts, mail.state.as_str()), (attempt, "pending"));
            assert!(mail.last_error.as_deref().unwrap().starts_with("SMTP:"));
            // min(1 s · 2^(k−1), 8 s) times [½, 1).
            let step = (1000i64 << (attempt - 1)).min(8000);
            let wait = mail.next_attempt - now;
            assert!(
                wait >= step / 2 && wait < step,
                "attempt {attempt}: next in {wait} ms, step {step}"
            );
            now = mail.next_attempt;
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_with_equal_jitter() {
        let d: Vec<u64> = (1..=8).map(|a| backoff(a, 1000, 30_000, 0.0)).collect();
        assert_eq!(d, vec![500, 1000, 2000, 4000, 8000, 15_000, 15_000, 15_000]);
        let top: Vec<u64> = (1..=3)
            .map(|a| backoff(a, 1000, 30_000, 0.999_999))
            .collect();
        assert_eq!(top, vec![999, 1999, 3999]);
        assert_eq!(backoff(200, 1000, 30_000, 1.0), 30_000);
    }
}
