//! What starts a retrain besides the API: the cron schedule (`training.schedule`)
//! and drift. A dataset-drift or concept-drift event starts a run when
//! `training.drift_retrain` is on and `training.drift_cooldown_secs` have passed
//! since the last run drift started, so that lasting drift does not start a
//! retrain storm. A trigger that finds a run in progress is logged and dropped;
//! it does not use up the cool-down.
//!
//! A concept-drift event is dated ([`ConceptEvent::change_time`]), and its run
//! trains on the new concept ([`after_change`]): it waits until
//! `training.min_rows_after_change` labelled rows were predicted after the change
//! (or `training.change_wait_secs` pass), trains on the rows from the change on,
//! and when the gate rejects the candidate while the live model is still below
//! its own level, tries again with twice the rows, up to
//! `training.change_retries` times. Each decision not to start a run is stored
//! as a skipped run with its reason. One change is handled at a time, and the
//! cool-down for concept changes counts from the last of these runs that
//! promoted a model: a false alarm whose runs changed nothing does not hold
//! back the real change that follows it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use super::retrain::{self, RetrainSettings, Started};
use super::Learning;
use crate::monitor::events::{ConceptEvent, Event};
use crate::scheduler::{self, Cron};
use crate::store::registry;
use crate::store::retrain::{self as runs, Finish, RunState, Trigger};
use crate::store::StoreError;
use crate::time::Clock;

/// How often a concept-drift run's wait looks at the labelled rows and the run.
const POLL: Duration = Duration::from_secs(2);
/// How far the live model may stay below its own metric and count as recovered.
const RECOVERED_MARGIN: f64 = 0.02;

/// Runs the cron schedule until `stop`.
pub async fn schedule(
    learning: Arc<Learning>,
    settings: Arc<RetrainSettings>,
    cron: Cron,
    clock: Clock,
    stop: CancellationToken,
) {
    scheduler::run(cron, clock, stop, move |due| {
        let (learning, settings) = (learning.clone(), settings.clone());
        tracing::info!(due = %crate::time::rfc3339(due), "scheduled retrain due");
        tokio::spawn(async move {
            if let Err(e) = retrain::start(learning, settings, Trigger::Schedule).await {
                tracing::error!(error = %e, "cannot start the scheduled retrain");
            }
        });
    })
    .await;
}

/// Starts retrains on drift events until `stop`.
pub async fn on_drift(
    learning: Arc<Learning>,
    settings: Arc<RetrainSettings>,
    mut events: broadcast::Receiver<Event>,
    cooldown: Duration,
    stop: CancellationToken,
) {
    let mut concept: Option<tokio::task::JoinHandle<()>> = None;
    let promoted = Arc::new(std::sync::Mutex::new(Cooldown::new(cooldown)));
    let mut cooldown = Cooldown::new(cooldown);
    loop {
        let event = tokio::select! {
            e = events.recv() => e,
            () = stop.cancelled() => return,
        };
        let (trigger, change) = match event {
            Ok(Event::DatasetDriftDetected(_)) => (Trigger::DatasetDrift, None),
            Ok(Event::ConceptDrift(c)) => (Trigger::ConceptDrift, Some(c)),
            Ok(_) => continue,
            Err(broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!(
                    missed = n,
                    "the drift trigger fell behind the event channel"
                );
                continue;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        if let Some(change) = change {
            // A concept change has its own guard: one task at a time, and the
            // cool-down counted from the last run that promoted a model, so a
            // false alarm whose run changed nothing does not hold back the real
            // change that follows it.
            if concept.as_ref().is_some_and(|h| !h.is_finished()) {
                tracing::info!(
                    change_time = %crate::time::rfc3339(change.change_time),
                    "drift retrain not started: the runs on the previous concept change are still going"
                );
                continue;
            }
            let left = promoted.lock().ok().and_then(|c| c.left());
            if let Some(left) = left {
                tracing::info!(
                    %trigger,
                    cooldown_left_secs = left.as_secs_f64(),
                    "drift retrain not started: a run on a concept change promoted a model less than training.drift_cooldown_secs ago"
                );
                continue;
            }
            let (learning, settings, stop) = (learning.clone(), settings.clone(), stop.clone());
            let promoted = promoted.clone();
            concept = Some(tokio::spawn(async move {
                match after_change(&learning, &settings, &change, &stop).await {
                    Ok(true) => {
                        if let Ok(mut c) = promoted.lock() {
                            c.started();
                        }
                    }
                    Ok(false) => {}
                    Err(e) => {
                        tracing::error!(error = %e, "the retrain after a concept change stopped")
                    }
                }
            }));
            continue;
        }
        if let Some(left) = cooldown.left() {
            tracing::info!(
                %trigger,
                cooldown_left_secs = left.as_secs_f64(),
                "drift retrain not started: training.drift_cooldown_secs has not passed"
            );
            continue;
        }
        match retrain::start(learning.clone(), settings.clone(), trigger).await {
            Ok(Started::Run(_)) => cooldown.started(),
            Ok(Started::Busy) => {}
            Err(e) => tracing::error!(error = %e, %trigger, "cannot start a drift retrain"),
        }
    }
}

/// The runs after one concept change: wait for rows of the new concept, train
/// on them, and try again with more while the gate rejects and the live model
/// stays below its level. Returns whether a run promoted a model.
pub async fn after_change(
    learning: &Arc<Learning>,
    settings: &Arc<RetrainSettings>,
    change: &ConceptEvent,
    stop: &CancellationToken,
) -> Result<bool, StoreError> {
    let db = &learning.db;
    let since = change.change_time;
    let mut want = settings.min_rows_after_change as u64;
    for attempt in 0..=settings.change_retries {
        let deadline = tokio::time::Instant::now() + settings.change_wait;
        let rows = loop {
            let rows = runs::count_labelled(db, since).await?;
            if rows >= want {
                break rows;
            }
            if tokio::time::Instant::now() >= deadline {
                if rows < settings.min_rows as u64 {
                    let reason = format!(
                        "not started: {rows} labelled rows after the change at {} within \
                         training.change_wait_secs, fewer than training.min_rows ({})",
                        crate::time::rfc3339(since),
                        settings.min_rows
                    );
                    return not_started(learning, since, reason).await.map(|()| false);
                }
                break rows;
            }
            tokio::select! {
                () = tokio::time::sleep(POLL) => {}
                () = stop.cancelled() => return Ok(false),
            }
        };
        let live = learning.slot.load_full();
        if registry::major(&live.version) != registry::major(&change.model_version) {
            let reason = format!(
                "not started: version {} went live after the change was detected on {}",
                live.version, change.model_version
            );
            return not_started(learning, since, reason).await.map(|()| false);
        }
        tracing::info!(
            attempt = attempt + 1,
            rows,
            change_time = %crate::time::rfc3339(since),
            "retrain on the new concept starting"
        );
        let id = loop {
            match retrain::start_from(
                learning.clone(),
                settings.clone(),
                Trigger::ConceptDrift,
                Some(since),
            )
            .await?
            {
                Started::Run(id) => break id,
                Started::Busy => tokio::select! {
                    () = tokio::time::sleep(POLL) => {}
                    () = stop.cancelled() => return Ok(false),
                },
            }
        };
        let finish = loop {
            match runs::get(db, id).await? {
                Some(run) if run.outcome.state != RunState::Running => break run.outcome,
                Some(_) => {}
                None => return Ok(false),
            }
            tokio::select! {
                () = tokio::time::sleep(POLL) => {}
                () = stop.cancelled() => return Ok(false),
            }
        };
        if finish.state != RunState::Rejected {
            return Ok(finish.state == RunState::Promoted);
        }
        if let Some(reason) = recovered(&live.model.meta.metrics, &finish) {
            return not_started(learning, since, format!("no further run: {reason}"))
                .await
                .map(|()| false);
        }
        if attempt == settings.change_retries {
            let reason = format!(
                "no further run: {} runs after the change were rejected (training.change_retries is {})",
                attempt + 1,
                settings.change_retries
            );
            return not_started(learning, since, reason).await.map(|()| false);
        }
        want = rows.max(want) * 2;
        tracing::info!(
            next_rows = want,
            "the retrain on the new concept was rejected and the live model is still below its level: trying again with more rows"
        );
    }
    Ok(false)
}

/// Whether the live model has come back to its level on the new concept: its
/// metric on the run's held-out rows (all after the change) against the one
/// recorded when it was made. `Some(why)` when it has.
fn recovered(metrics: &BTreeMap<String, f64>, finish: &Finish) -> Option<String> {
    let name = finish.metric.as_deref()?;
    let live = finish.live_metric?;
    let level = *metrics.get(name)?;
    (live >= level - RECOVERED_MARGIN).then(|| {
        format!(
            "the live model's {name} on the newest rows after the change is {live:.4}, within \
             {RECOVERED_MARGIN} of its level {level:.4}"
        )
    })
}

/// Stores a decision not to start a run after a change as a skipped run.
async fn not_started(learning: &Learning, since: i64, reason: String) -> Result<(), StoreError> {
    tracing::info!(reason = %reason, "retrain on the new concept");
    let now = crate::time::now_millis();
    let id = runs::start(&learning.db, Trigger::ConceptDrift, now, Some(since)).await?;
    let finish = Finish {
        state: RunState::Skipped,
        live_version: Some(learning.slot.load().version.to_string()),
        decision: Some(reason),
        ..Finish::default()
    };
    runs::finish(&learning.db, id, &finish, now).await
}

/// The drift trigger's cool-down: the time since the last run drift started.
#[derive(Debug, Clone)]
struct Cooldown {
    length: Duration,
    last: Option<tokio::time::Instant>,
}

impl Cooldown {
    fn new(length: Duration) -> Cooldown {
        Cooldown { length, last: None }
    }

    /// The time left, or `None` when a run may start.
    fn left(&self) -> Option<Duration> {
        let elapsed = self.last?.elapsed();
        (elapsed < self.length).then(|| self.length - elapsed)
    }

    /// A run started now.
    fn started(&mut self) {
        self.last = Some(tokio::time::Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_live_model_back_at_its_level_needs_no_further_run() {
        let metrics = BTreeMap::from([("accuracy".to_string(), 0.95)]);
        let rejected = |live: f64| Finish {
            state: RunState::Rejected,
            metric: Some("accuracy".into()),
            live_metric: Some(live),
            ..Finish::default()
        };
        // Within 0.02 of its level on the newest rows after the change: recovered.
        let why = recovered(&metrics, &rejected(0.94)).unwrap_or_default();
        assert!(why.contains("0.9400") && why.contains("0.9500"), "{why}");
        // Still well below: another run is worth trying.
        assert_eq!(recovered(&metrics, &rejected(0.90)), None);
        // Nothing to compare with: not recovered.
        assert_eq!(recovered(&BTreeMap::new(), &rejected(0.99)), None);
    }

    #[tokio::test(start_paused = true)]
    async fn the_cooldown_holds_drift_runs_apart() {
        let mut c = Cooldown::new(Duration::from_secs(3600));
        assert_eq!(c.left(), None, "the first drift starts a run");
        c.started();
        tokio::time::advance(Duration::from_secs(1800)).await;
        assert_eq!(c.left(), Some(Duration::from_secs(1800)));
        tokio::time::advance(Duration::from_secs(1799)).await;
        assert_eq!(c.left(), Some(Duration::from_secs(1)));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(c.left(), None);
    }
}
