//! The online learner in the daemon: feedback labels, joined to their logged
//! inputs, train an f32 master copy of the live model off the request path.
//!
//! - Feedback handlers hand each stored label to [`Learning::label`] without
//!   waiting; the queue is bounded (`online.queue`) and a full queue drops the
//!   label for learning and counts it (the label itself is already stored).
//! - Every `online.republish_every` steps, or every `online.republish_secs` with
//!   at least one step, the master copy becomes a new minor version: the weights
//!   keep the live model's pruning masks (masked weights stay zero), the int8
//!   form is quantized again when the base had one, and the model is checked
//!   (finite weights, shapes) before it is published and swapped in.
//! - The [`Guard`] scores each label with the online copy (before it learns) and
//!   with the base model (the last batch-trained version) and trips when the online
//!   copy falls more than `online.guard_margin` below over `online.guard_window`
//!   labels: the task goes back to the base version, raises `online_reverted`, and
//!   publishes nothing until another version goes live (a retrain or an activation).
//! - When another version goes live, the task starts again from it.
//! - After a `concept_drift` event the task adapts faster for the next
//!   `online.change_labels` labels: it publishes every
//!   `online.change_republish_every` steps, and its step size starts at
//!   `online.change_step_boost` times `online.step_size` and falls back to it
//!   linearly. A second event starts the schedule again. The guard watches as
//!   always.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::guard::{Guard, Scored};
use super::{Kind, Learning};
use crate::config::OnlineConfig;
use crate::live::LiveModel;
use crate::model::quant::QuantNetwork;
use crate::model::{Prediction, Task};
use crate::monitor::events::{Event, OnlineEvent};
use crate::store::registry;
use crate::train::online::{Label, Learner, OnlineParams};

/// One stored label and the input it labels.
#[derive(Debug, Clone)]
pub struct LabelItem {
    /// The logged input (JSON object).
    pub features: String,
    /// The label as stored (JSON text).
    pub label: String,
}

/// The task's settings.
#[derive(Debug, Clone)]
pub struct OnlineSettings {
    pub params: OnlineParams,
    pub republish_every: u64,
    pub republish: Duration,
    pub guard_window: usize,
    pub guard_margin: f64,
    /// The adaptation after a concept change (see the module header).
    pub change_labels: u64,
    pub change_republish_every: u64,
    pub change_step_boost: f32,
}

impl OnlineSettings {
    pub fn from_config(c: &OnlineConfig) -> OnlineSettings {
        OnlineSettings {
            params: OnlineParams {
                step_size: c.step_size,
                l2: c.l2,
                clip: c.clip,
            },
            republish_every: c.republish_every,
            republish: c.republish_secs.get(),
            guard_window: c.guard_window,
            guard_margin: c.guard_margin,
            change_labels: c.change_labels,
            change_republish_every: c.change_republish_every,
            change_step_boost: c.change_step_boost,
        }
    }

    /// Steps between publishes: fewer while a change is being learnt.
    fn publish_every(&self, adapting: u64) -> u64 {
        if adapting > 0 {
            self.change_republish_every.min(self.republish_every)
        } else {
            self.republish_every
        }
    }

    /// The step size with `adapting` of `change_labels` labels of a change left.
    fn step_size(&self, adapting: u64) -> f32 {
        if self.change_labels == 0 {
            return self.params.step_size;
        }
        let left = adapting.min(self.change_labels) as f32 / self.change_labels as f32;
        self.params.step_size * (1.0 + (self.change_step_boost - 1.0) * left)
    }
}

/// The learner's state between labels.
struct State {
    /// The version the master copy's weights belong to (the live one, unless
    /// another went live since).
    version: Arc<str>,
    /// The model the master copy started from (its metadata goes into new versions).
    start: Arc<LiveModel>,
    /// The last batch-trained version: what the guard compares with and reverts to.
    base: Arc<LiveModel>,
    learner: Learner,
    guard: Guard,
    /// Steps since the last publish.
    pending: u64,
    /// The guard tripped: no publishing until another version goes live.
    halted: bool,
    /// Labels left in the faster adaptation after a concept change.
    adapting: u64,
    x: Vec<f32>,
}

/// Runs the online learner until `stop`.
pub async fn task(
    learning: Arc<Learning>,
    rx: &mut mpsc::Receiver<LabelItem>,
    settings: OnlineSettings,
    stop: CancellationToken,
) {
    let live = learning.slot.load_full();
    let mut state = start_from(&learning, live, &settings).await;
    let mut events = learning.monitoring.events.subscribe();
    let mut tick = tokio::time::interval(settings.republish);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            item = rx.recv() => {
                let Some(item) = item else { return };
                let live = learning.slot.load_full();
                if live.version != state.version {
                    let adapting = state.adapting;
                    state = start_from(&learning, live, &settings).await;
                    state.adapting = adapting;
                }
                state.learner.set_step_size(settings.step_size(state.adapting));
                learn(&learning, &mut state, &item, &settings).await;
                state.adapting = state.adapting.saturating_sub(1);
                if state.pending >= settings.publish_every(state.adapting) && !state.halted {
                    republish(&learning, &mut state, &settings).await;
                    tick.reset();
                }
            }
            event = events.recv() => {
                match event {
                    Ok(Event::ConceptDrift(_)) if settings.change_labels > 0 => {
                        tracing::info!(
                            labels = settings.change_labels,
                            publish_every = settings.change_republish_every,
                            step_boost = settings.change_step_boost,
                            "online learner adapts faster to a concept change"
                        );
                        state.adapting = settings.change_labels;
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                        events = learning.monitoring.events.subscribe();
                    }
                    _ => {}
                }
            }
            _ = tick.tick() => {
                if state.pending > 0 && !state.halted
                    && learning.slot.load().version == state.version
                {
                    republish(&learning, &mut state, &settings).await;
                }
            }
            () = stop.cancelled() => return,
        }
    }
}

/// A fresh master copy of `live`; the base is its batch-trained major version.
async fn start_from(learning: &Learning, live: Arc<LiveModel>, settings: &OnlineSettings) -> State {
    let major = registry::major(&live.version);
    let base = if major == &*live.version {
        live.clone()
    } else {
        load_version(learning, major)
            .await
            .unwrap_or_else(|| live.clone())
    };
    tracing::info!(version = %live.version, base = %base.version, "online learner starts from the live model");
    State {
        version: live.version.clone(),
        learner: Learner::new(&live.model, settings.params),
        x: vec![0.0; live.model.schema.width()],
        start: live,
        base,
        guard: Guard::new(settings.guard_window, settings.guard_margin),
        pending: 0,
        halted: false,
        adapting: 0,
    }
}

/// The registered `version`, loaded, when its artifact is still there.
async fn load_version(learning: &Learning, version: &str) -> Option<Arc<LiveModel>> {
    match learning.load(version, Vec::new()).await {
        Ok(live) => Some(live),
        Err(e) => {
            tracing::warn!(version, error = %e, "cannot load the base version for the online guard; comparing with the live one");
            None
        }
    }
}

/// One step: score the label with both models, learn, watch the guard.
async fn learn(
    learning: &Learning,
    state: &mut State,
    item: &LabelItem,
    settings: &OnlineSettings,
) {
    let skipped = || {
        learning
            .stats
            .online_skipped
            .fetch_add(1, Ordering::Relaxed);
    };
    let model = &state.start.model;
    if model
        .schema
        .encode_text(&item.features, &mut state.x)
        .is_err()
    {
        return skipped();
    }
    let Ok(label) = serde_json::from_str::<Value>(&item.label) else {
        return skipped();
    };
    let base = state.base.predict_encoded(&state.x);
    let (label, truth) = match (model.meta.task, &label) {
        (Task::Classification, Value::String(s)) => {
            let Some(c) = model.meta.classes.iter().position(|k| k == s) else {
                return skipped();
            };
            (Label::Class(c), f64::NAN)
        }
        (Task::Regression, Value::Number(n)) => match n.as_f64() {
            Some(v) => (Label::Value(v), v),
            None => return skipped(),
        },
        _ => return skipped(),
    };
    let before = (
        state.learner.progress().correct(),
        state.learner.progress().sse(),
    );
    if state.learner.learn_one(&state.x, label).is_err() {
        return skipped();
    }
    let progress = state.learner.progress();
    let scored = match (base, label) {
        (Prediction::Class { label: b, .. }, Label::Class(c)) => Scored::Class {
            online: progress.correct() > before.0,
            base: model.meta.classes.get(c) == Some(&b),
        },
        (Prediction::Value(b), _) => Scored::Value {
            online: progress.sse() - before.1,
            base: (b - truth).powi(2),
            truth,
        },
        _ => return skipped(),
    };
    learning
        .stats
        .online_updates
        .fetch_add(1, Ordering::Relaxed);
    state.pending += 1;
    state.guard.observe(scored);
    if state.halted {
        return;
    }
    if let Some(m) = state.guard.tripped(model.meta.task) {
        revert(learning, state, m, settings).await;
    }
}

/// Publishes the master copy as the next minor version.
async fn republish(learning: &Learning, state: &mut State, settings: &OnlineSettings) {
    let mut model = match state.learner.to_model(&state.start.model, &state.version) {
        Ok(m) => m,
        Err(e) => {
            tracing::error!(error = %e, "online copy cannot be turned into a model; starting again from the live one");
            state.learner = Learner::new(&state.start.model, settings.params);
            state.pending = 0;
            return;
        }
    };
    if !super::finite_weights(&model) {
        tracing::error!(version = %state.version, "online copy has non-finite weights; not published, starting again from the live model");
        state.learner = Learner::new(&state.start.model, settings.params);
        state.pending = 0;
        return;
    }
    if state.start.model.quant.is_some() {
        model.quant = Some(QuantNetwork::quantize(&model.network));
    }
    let parent = state.version.to_string();
    match learning
        .publish(
            model,
            Kind::Minor {
                parent: parent.clone(),
            },
            "online",
        )
        .await
    {
        Ok(live) => {
            learning
                .stats
                .online_published
                .fetch_add(1, Ordering::Relaxed);
            tracing::info!(version = %live.version, parent, updates = state.pending, "online updates published");
            state.version = live.version.clone();
            state.pending = 0;
        }
        Err(super::LearningError::Stale { .. }) => {
            // Another version went live meanwhile: the next label starts from it.
        }
        Err(e) => {
            tracing::error!(error = %e, "publishing the online copy failed; the live model keeps serving")
        }
    }
}

/// The guard tripped: back to the base version, and no publishing.
async fn revert(
    learning: &Learning,
    state: &mut State,
    m: super::guard::Metrics,
    settings: &OnlineSettings,
) {
    state.halted = true;
    let from = state.version.to_string();
    if state.base.version != state.version {
        if let Err(e) = learning.restore(state.base.clone(), &state.version).await {
            tracing::error!(error = %e, "the online guard could not go back to the base version");
            return;
        }
        state.version = state.base.version.clone();
    }
    learning
        .stats
        .online_reverts
        .fetch_add(1, Ordering::Relaxed);
    let task = state.base.model.meta.task;
    learning
        .monitoring
        .publish(Event::OnlineReverted(OnlineEvent {
            from_version: from,
            to_version: state.base.version.to_string(),
            metric: match task {
                Task::Classification => "accuracy",
                Task::Regression => "r2",
            },
            online_metric: m.online,
            base_metric: m.base,
            margin: settings.guard_margin,
            window: m.rows,
            updates: state.learner.updates(),
            time: crate::time::now_millis(),
        }));
    state.start = state.base.clone();
    state.learner = Learner::new(&state.base.model, settings.params);
    state.guard.reset();
    state.pending = 0;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_concept_change_publishes_sooner_and_steps_larger_then_falls_back() {
        let s = OnlineSettings::from_config(&OnlineConfig::default());
        let base = s.params.step_size;
        // The defaults: 2,000 labels, every 100 steps, 4× the step size at first.
        assert_eq!(s.publish_every(0), 1_000);
        assert_eq!(s.publish_every(1), 100);
        assert!((s.step_size(2_000) - 4.0 * base).abs() < 1e-9);
        assert!((s.step_size(1_000) - 2.5 * base).abs() < 1e-9);
        assert!((s.step_size(0) - base).abs() < 1e-9);
        // Switched off: the usual cadence and step throughout.
        let off = OnlineSettings {
            change_labels: 0,
            ..s
        };
        assert!((off.step_size(500) - base).abs() < 1e-9);
    }
}
