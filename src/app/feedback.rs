//! Feedback: labels for logged predictions. All or nothing: if any id is unknown
//! the answer names it and nothing is stored; a batch that labels one id twice is
//! refused. A prediction answered a moment ago may still be in the log queue, so
//! an id not found is looked up again after a flush of the queue before it is
//! called unknown; while the log cannot be written (disk full), or is not written
//! within two seconds (a daemon far behind), the answer is
//! [`FeedbackError::LogFailing`] or [`FeedbackError::LogBehind`] instead, since
//! the id may well be one of the rows waiting. A second, different label for the same id replaces the first;
//! the same label again changes nothing (see `store::feedback`).
//!
//! A label that is new for its prediction sends the outcome (wrong class, or
//! absolute error) to the concept-drift detectors, which count each prediction
//! once; a new or replaced label goes with its logged input to the online learner.
//! An unchanged one goes nowhere, so a retried request is never learned twice.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use serde_json::Value;

use super::Settings;
use crate::learning::online::LabelItem;
use crate::learning::Learning;
use crate::live::Slot;
use crate::model::Task;
use crate::monitoring::{outcome_of, Labelled, Monitoring};
use crate::store::feedback::{self, Committer, FeedbackRow, LabelOutcome, Logged};
use crate::store::writer::LogHandle;
use crate::store::{Store, StoreError};

/// Why labels were not stored.
#[derive(Debug, thiserror::Error)]
pub enum FeedbackError {
    #[error("`feedback` is empty")]
    Empty,
    #[error("{given} labels, server.max_batch is {max}")]
    TooMany { given: usize, max: usize },
    /// A label of the wrong kind for the model's task; `at` is its position
    /// in a batch.
    #[error("{}{message}", at.map(|i| format!("feedback[{i}]: ")).unwrap_or_default())]
    InvalidLabel { at: Option<usize>, message: String },
    #[error(
        "feedback[{first}] and feedback[{again}] both label prediction `{id}`; \
         send one label per prediction"
    )]
    Duplicate {
        first: usize,
        again: usize,
        id: String,
    },
    #[error("no prediction with id `{first}`{}", if *more > 0 { format!(" (and {more} more)") } else { String::new() })]
    Unknown { first: String, more: usize },
    #[error(
        "some of these predictions may not be in the database yet: its writes are \
         failing (disk full, locked or read-only); nothing was stored, retry later"
    )]
    LogFailing,
    /// The log queue was not written within the wait (a daemon under heavy load).
    #[error(
        "some of these predictions may not be in the database yet: the prediction log \
         is behind; nothing was stored, retry in a moment"
    )]
    LogBehind,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One label as given: a prediction id and its true class or value.
#[derive(Debug, Clone)]
pub struct Label {
    pub id: String,
    pub label: Value,
}

/// What happened to the labels of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Counts {
    /// Labels accepted (all of them, or the request was refused).
    pub accepted: usize,
    /// Labels that replaced a different stored label.
    pub replaced: usize,
    /// Labels equal to the stored one: nothing written or learned.
    pub unchanged: usize,
}

/// The feedback service.
///
/// Built by `App::build` (the fields are private to `app`); the counters start
/// at zero.
#[derive(Clone)]
pub struct Feedback {
    pub(super) db: Store,
    pub(super) slot: Slot,
    pub(super) log: LogHandle,
    pub(super) committer: Committer,
    pub(super) monitoring: Arc<Monitoring>,
    pub(super) learning: Arc<Learning>,
    pub(super) settings: Arc<ArcSwap<Settings>>,
    pub(super) stored: Arc<AtomicU64>,
    pub(super) unchanged: Arc<AtomicU64>,
}

impl Feedback {
    /// Labels stored since start (new, or replacing a different label).
    pub fn stored(&self) -> u64 {
        self.stored.load(Ordering::Relaxed)
    }

    /// Labels since start that repeated the stored label.
    pub fn unchanged(&self) -> u64 {
        self.unchanged.load(Ordering::Relaxed)
    }

    /// Validates `items`, finds their predictions, stores the labels (one
    /// transaction, answered once committed) and hands them on to the concept
    /// detectors and the online learner.
    pub async fn submit(&self, items: Vec<Label>) -> Result<Counts, FeedbackError> {
        let rows = self.validate(&items)?;
        let ids: Vec<&str> = items.iter().map(|i| i.id.as_str()).collect();
        let known = self.find_logged(&ids).await?;
        let outcomes = self.committer.store(rows.clone()).await?;
        let count = |o: LabelOutcome| outcomes.iter().filter(|x| **x == o).count();
        let counts = Counts {
            accepted: rows.len(),
            replaced: count(LabelOutcome::Replaced),
            unchanged: count(LabelOutcome::Unchanged),
        };
        self.stored.fetch_add(
            (count(LabelOutcome::New) + counts.replaced) as u64,
            Ordering::Relaxed,
        );
        self.unchanged
            .fetch_add(counts.unchanged as u64, Ordering::Relaxed);
        self.hand_on(&items, rows, &outcomes, &known);
        Ok(counts)
    }

    /// The rows to store, or why the request is refused: empty, over
    /// `server.max_batch`, a label of the wrong kind, or one id labelled twice.
    fn validate(&self, items: &[Label]) -> Result<Vec<FeedbackRow>, FeedbackError> {
        if items.is_empty() {
            return Err(FeedbackError::Empty);
        }
        let max = self.settings.load().max_batch;
        if items.len() > max {
            return Err(FeedbackError::TooMany {
                given: items.len(),
                max,
            });
        }
        let task = self.slot.load().model.meta.task;
        let mut rows = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let label =
                check_label(task, &item.label).map_err(|message| FeedbackError::InvalidLabel {
                    at: (items.len() > 1).then_some(i),
                    message,
                })?;
            rows.push(FeedbackRow {
                prediction_id: item.id.clone(),
                label,
            });
        }
        if let Some((first, again)) = first_duplicate(items) {
            return Err(FeedbackError::Duplicate {
                first,
                again,
                id: items[first].id.clone(),
            });
        }
        Ok(rows)
    }

    /// The logged predictions of `ids`, by id; those not found are looked up
    /// again once the log queue is written, and are unknown after that.
    async fn find_logged(&self, ids: &[&str]) -> Result<HashMap<String, Logged>, FeedbackError> {
        let mut known = logged(&self.db, ids).await?;
        let mut unknown: Vec<String> = missing(&known, ids);
        if !unknown.is_empty() {
            flush_log(&self.log).await?;
            let again: Vec<&str> = unknown.iter().map(String::as_str).collect();
            known.extend(logged(&self.db, &again).await?);
            unknown = missing(&known, ids);
        }
        match unknown.first() {
            Some(first) => Err(FeedbackError::Unknown {
                first: first.clone(),
                more: unknown.len() - 1,
            }),
            None => Ok(known),
        }
    }

    /// A new label goes to the concept detectors (each prediction counted
    /// once); a new or replaced one, with its logged input, to the online
    /// learner; an unchanged one nowhere.
    fn hand_on(
        &self,
        items: &[Label],
        rows: Vec<FeedbackRow>,
        outcomes: &[LabelOutcome],
        known: &HashMap<String, Logged>,
    ) {
        let live = self.slot.load();
        for ((item, row), outcome) in items.iter().zip(rows).zip(outcomes) {
            let Some(p) = known.get(&item.id) else {
                continue;
            };
            // In a cluster the leader's label feed hands every replica's
            // labels to the detectors (`Learning::feed`).
            if *outcome == LabelOutcome::New && !self.learning.is_clustered() {
                if let Some(outcome) = outcome_of(&live.model.meta, &p.output, &item.label) {
                    self.monitoring.labelled(Labelled {
                        model_version: p.model_version.clone(),
                        outcome,
                        predicted: p.time,
                    });
                }
            }
            if *outcome != LabelOutcome::Unchanged && self.learning.learns_own_labels() {
                self.learning.label(LabelItem {
                    features: p.features.clone(),
                    label: row.label,
                });
            }
        }
    }
}

/// The positions of the first two items that label the same prediction.
fn first_duplicate(items: &[Label]) -> Option<(usize, usize)> {
    let mut seen: HashMap<&str, usize> = HashMap::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        if let Some(first) = seen.insert(item.id.as_str(), i) {
            return Some((first, i));
        }
    }
    None
}

/// How long a feedback request waits for the prediction log to commit what it
/// holds before its ids are looked up again.
const FLUSH_WAIT: Duration = Duration::from_secs(2);

/// Waits until the predictions answered so far are in the database. While the
/// log cannot be written, an id not found may be one of the rows held for retry:
/// that is a 503 to retry, not an unknown prediction.
async fn flush_log(log: &LogHandle) -> Result<(), FeedbackError> {
    if log.stats().error().is_some() {
        return Err(FeedbackError::LogFailing);
    }
    match tokio::time::timeout(FLUSH_WAIT, log.flush()).await {
        Ok(true) => Ok(()),
        Ok(false) => Err(FeedbackError::LogFailing),
        Err(_) => {
            tracing::warn!(
                wait_ms = FLUSH_WAIT.as_millis() as u64,
                queued = log.depth(),
                "feedback answered 503: the prediction log was not written within the wait"
            );
            Err(FeedbackError::LogBehind)
        }
    }
}

/// The logged predictions among `ids`, by id.
async fn logged(db: &Store, ids: &[&str]) -> Result<HashMap<String, Logged>, StoreError> {
    Ok(feedback::logged(db, ids)
        .await?
        .into_iter()
        .map(|l| (l.id.clone(), l))
        .collect())
}

/// The ids of `ids` that are not logged predictions, in request order.
fn missing(known: &HashMap<String, Logged>, ids: &[&str]) -> Vec<String> {
    ids.iter()
        .filter(|id| !known.contains_key(**id))
        .map(|id| id.to_string())
        .collect()
}

/// A class label is a string or a number; a regression label a finite number.
/// Returns the label as JSON text.
fn check_label(task: Task, label: &Value) -> Result<String, String> {
    match (task, label) {
        (Task::Classification, Value::String(s)) if !s.is_empty() => Ok(label.to_string()),
        (Task::Classification, Value::Number(n)) => Ok(Value::String(n.to_string()).to_string()),
        (Task::Classification, _) => Err(format!(
            "a class label must be a non-empty string or a number, got {label}"
        )),
        (Task::Regression, Value::Number(n)) if n.as_f64().is_some_and(f64::is_finite) => {
            Ok(label.to_string())
        }
        (Task::Regression, _) => Err(format!("a regression label must be a number, got {label}")),
    }
}
