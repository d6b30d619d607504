//! What starts a retrain besides the API: the cron schedule (`training.schedule`)
//! and drift. A dataset-drift or concept-drift event starts a run when
//! `training.drift_retrain` is on and `training.drift_cooldown_secs` have passed
//! since the last run drift started, so that lasting drift does not start a
//! retrain storm. A trigger that finds a run in progress is logged and dropped;
//! it does not use up the cool-down.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use super::retrain::{self, RetrainSettings, Started};
use super::Learning;
use crate::monitor::events::Event;
use crate::scheduler::{self, Cron};
use crate::store::retrain::Trigger;
use crate::time::Clock;

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
    let mut cooldown = Cooldown::new(cooldown);
    loop {
        let event = tokio::select! {
            e = events.recv() => e,
            () = stop.cancelled() => return,
        };
        let trigger = match event {
            Ok(Event::DatasetDriftDetected(_)) => Trigger::DatasetDrift,
            Ok(Event::ConceptDrift(_)) => Trigger::ConceptDrift,
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
