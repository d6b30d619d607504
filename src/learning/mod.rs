//! The continuous-learning loop: the one place that makes a new model version
//! live ([`Learning::publish`], [`Learning::activate`]), the online learner fed by
//! feedback ([`online`]), retraining behind a gate ([`retrain`], [`gate`]) and the
//! drift trigger.
//!
//! A swap goes: save the artifact (temporary file, fsync, rename), time the
//! model's forms on recent logged inputs and pick the one to serve, register the
//! version as active (one transaction), then store it in the live slot. Requests
//! load the slot once, so one in flight finishes on the model it started with and
//! never waits for a swap. Swaps are serialised by a lock that requests never
//! take, so the registry's active version and the slot change in the same order.
//! The replaced model is dropped on a blocking thread, not on a request's.

pub mod gate;
pub mod guard;
pub mod online;
pub mod retrain;
pub mod trigger;

use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::live::{LiveModel, Slot};
use crate::model::{artifact, Model};
use crate::monitoring::{outcome_of, Labelled, Monitoring};
use crate::scheduler::Flight;
use crate::store::registry;
use crate::store::{self, Store, StoreError};

/// Why a version could not go live.
#[derive(Debug, thiserror::Error)]
pub enum LearningError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Artifact(#[from] artifact::ArtifactError),
    #[error("no model version `{0}` in the registry")]
    Unknown(String),
    #[error("model version `{0}` is retired: model.keep_versions deleted its artifact")]
    Retired(String),
    #[error("the model is not valid: {0}")]
    Invalid(String),
    #[error("version {live} went live while version {expected} was being replaced")]
    Stale { expected: String, live: String },
    #[error("a blocking task panicked or was cancelled")]
    Join,
}

/// How a new version is numbered.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// A batch-trained model: the next integer version.
    Major,
    /// Online updates of `parent`: the next minor version of its major.
    Minor { parent: String },
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct LearningStats {
    pub swaps: AtomicU64,
    pub online_updates: AtomicU64,
    pub online_published: AtomicU64,
    pub online_skipped: AtomicU64,
    pub online_dropped: AtomicU64,
    pub online_reverts: AtomicU64,
    /// Retrain runs by end state: promoted, rejected, skipped, failed.
    pub retrain_promoted: AtomicU64,
    pub retrain_rejected: AtomicU64,
    pub retrain_skipped: AtomicU64,
    pub retrain_failed: AtomicU64,
    /// When the last run that reached a decision (promoted or rejected) ended
    /// (Unix ms; 0 before any, restored from `retrain_runs` at start).
    pub retrain_last_decided_ms: AtomicI64,
}

/// What publishing and activation need.
#[derive(Debug)]
pub struct Learning {
    pub db: Store,
    pub slot: Slot,
    pub monitoring: Arc<Monitoring>,
    pub stats: LearningStats,
    /// Single flight of retraining runs.
    pub flight: Flight,
    dir: PathBuf,
    budget: f64,
    keep: usize,
    swap: tokio::sync::Mutex<()>,
    /// Labels for the online learner; `None` when `online.enabled` is false.
    online: Option<mpsc::Sender<online::LabelItem>>,
    /// On PostgreSQL, this replica's role: while it leads, its registry writes
    /// are fenced by its epoch, and its learner takes labels from the database
    /// ([`Learning::clustered`]).
    role: Option<tokio::sync::watch::Receiver<crate::cluster::Role>>,
}

/// A finished activation.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Activation {
    pub model_version: String,
    pub previous: String,
    /// False when the version was already live.
    pub changed: bool,
}

impl Learning {
    /// The shared state, and the receiving end of the online learner's queue
    /// when online learning is enabled.
    pub fn new(
        db: Store,
        slot: Slot,
        monitoring: Arc<Monitoring>,
        config: &crate::config::Config,
    ) -> (Learning, Option<mpsc::Receiver<online::LabelItem>>) {
        let (online, rx) = if config.online.enabled {
            let (tx, rx) = mpsc::channel(config.online.queue);
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        let learning = Learning {
            db,
            slot,
            monitoring,
            stats: LearningStats::default(),
            flight: Flight::new(),
            dir: PathBuf::from(&config.model.dir),
            budget: config.compression.max_metric_drop,
            keep: config.model.keep_versions,
            swap: tokio::sync::Mutex::new(()),
            role: None,
            online,
        };
        (learning, rx)
    }

    /// Whether the labels this daemon stores go to its own online learner
    /// ([`Learning::label`]): not when online learning is off, nor on a replica
    /// of a cluster, whose leader's learner reads every replica's labels from
    /// the database ([`Learning::feed`]).
    pub fn learns_own_labels(&self) -> bool {
        self.online.is_some() && !self.is_clustered()
    }

    /// Whether this is a replica of a cluster ([`Learning::clustered`]): then
    /// labels reach the online learner and the concept-drift detectors through
    /// the leader's [`Learning::feed`], not from the requests it answers.
    pub fn is_clustered(&self) -> bool {
        self.role.is_some()
    }

    /// Hands a stored label to the online learner without waiting (a full queue
    /// drops it for learning and counts it).
    pub fn label(&self, item: online::LabelItem) {
        if let Some(tx) = &self.online {
            if tx.try_send(item).is_err() {
                self.stats.online_dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Registers `model` as a new version, makes it live and returns it.
    pub async fn publish(
        &self,
        model: Model,
        kind: Kind,
        source: &str,
    ) -> Result<Arc<LiveModel>, LearningError> {
        model.check().map_err(LearningError::Invalid)?;
        let _swap = self.swap.lock().await;
        let previous = self.slot.load_full();
        let (version, parent) = match &kind {
            Kind::Major => (
                registry::next_version(&self.db).await?,
                previous.version.to_string(),
            ),
            Kind::Minor { parent } if *parent != *previous.version => {
                return Err(LearningError::Stale {
                    expected: parent.clone(),
                    live: previous.version.to_string(),
                })
            }
            Kind::Minor { parent } => (
                registry::next_minor(&self.db, registry::major(parent)).await?,
                parent.clone(),
            ),
        };
        let mut model = model;
        model.meta.parent = Some(parent.clone());
        model.meta.created = Some(crate::time::now_rfc3339());
        let path = self.dir.join(format!("v{version}.safetensors"));
        let record = crate::live::record_for(&model, &version, &path, source);
        let started = Instant::now();
        let warm = self.warm_up_inputs().await;
        let budget = self.budget;
        let rec = record.clone();
        let (live, bytes) = tokio::task::spawn_blocking(move || {
            artifact::save(&model, &path)?;
            let bytes = std::fs::read(&path).map_err(|e| artifact::ArtifactError::Read {
                path: path.display().to_string(),
                source: e,
            })?;
            let warm = encode_logged(&model, &warm);
            let live = LiveModel::with_warm_up(model, rec, budget, &warm);
            Ok::<_, artifact::ArtifactError>((live, bytes))
        })
        .await
        .map_err(|_| LearningError::Join)??;
        let prepared_ms = started.elapsed().as_secs_f64() * 1e3;
        registry::insert_active(&self.db, &record, &bytes, self.fence()).await?;
        let live = Arc::new(live);
        self.swap_in(live.clone(), &previous, prepared_ms, source);
        self.retire().await;
        Ok(live)
    }

    /// Registers `model` as a new major version without making it live; the
    /// artifact is written before the registry row, so a listed version loads.
    pub async fn register(
        &self,
        model: Model,
        source: &str,
    ) -> Result<registry::ModelRecord, LearningError> {
        model.check().map_err(LearningError::Invalid)?;
        let _swap = self.swap.lock().await;
        let version = registry::next_version(&self.db).await?;
        let mut model = model;
        // As for every major version: the parent is the version live when it was made.
        model.meta.parent = Some(self.slot.load().version.to_string());
        model.meta.created = Some(crate::time::now_rfc3339());
        let path = self.dir.join(format!("v{version}.safetensors"));
        let mut record = crate::live::record_for(&model, &version, &path, source);
        record.status = registry::ModelStatus::Inactive;
        let bytes = tokio::task::spawn_blocking(move || {
            artifact::save(&model, &path)?;
            std::fs::read(&path).map_err(|e| artifact::ArtifactError::Read {
                path: path.display().to_string(),
                source: e,
            })
        })
        .await
        .map_err(|_| LearningError::Join)??;
        registry::insert_inactive(&self.db, &record, &bytes).await?;
        Ok(record)
    }

    /// Makes the registered `version` live again (a rollback or roll-forward).
    pub async fn activate(&self, version: &str) -> Result<Activation, LearningError> {
        let _swap = self.swap.lock().await;
        let previous = self.slot.load_full();
        if &*previous.version == version {
            return Ok(Activation {
                model_version: version.into(),
                previous: version.into(),
                changed: false,
            });
        }
        let started = Instant::now();
        let warm = self.warm_up_inputs().await;
        let live = self.load(version, warm).await?;
        let prepared_ms = started.elapsed().as_secs_f64() * 1e3;
        if !registry::activate(
            &self.db,
            version,
            registry::Reactivation::Operator,
            self.fence(),
        )
        .await?
        {
            return Err(LearningError::Unknown(version.into()));
        }
        self.swap_in(live, &previous, prepared_ms, "activate");
        Ok(Activation {
            model_version: version.into(),
            previous: previous.version.to_string(),
            changed: true,
        })
    }

    /// Loads the registered, not retired `version` as a live model timed on
    /// `warm` (logged inputs; its reference sample when empty), without making it live.
    pub async fn load(
        &self,
        version: &str,
        warm: Vec<String>,
    ) -> Result<Arc<LiveModel>, LearningError> {
        let record = registry::get(&self.db, version)
            .await?
            .ok_or_else(|| LearningError::Unknown(version.into()))?;
        if record.status == registry::ModelStatus::Retired {
            return Err(LearningError::Retired(version.into()));
        }
        let budget = self.budget;
        let path = crate::live::local_artifact(&self.db, &self.dir, &record)
            .await
            .map_err(|e| {
                LearningError::Artifact(artifact::ArtifactError::Read {
                    path: record.path.clone(),
                    source: std::io::Error::other(e.to_string()),
                })
            })?;
        let live = tokio::task::spawn_blocking(move || {
            let model = artifact::load(&path)?;
            let warm = encode_logged(&model, &warm);
            Ok::<_, artifact::ArtifactError>(LiveModel::with_warm_up(model, record, budget, &warm))
        })
        .await
        .map_err(|_| LearningError::Join)??;
        Ok(Arc::new(live))
    }

    /// Makes this a replica of a cluster: its registry writes are fenced by
    /// the epoch it leads in, while it leads (a deposed leader's publish is
    /// refused: docs/CLUSTER.md), and labels reach the online learner from the
    /// database ([`Learning::feed`]) rather than from the requests this replica
    /// answers, so that a label sent to any replica is learned once.
    pub fn clustered(&mut self, role: tokio::sync::watch::Receiver<crate::cluster::Role>) {
        self.role = Some(role);
    }

    /// Hands labels stored by any replica to the concept-drift detectors and
    /// the online learner (when enabled): each call takes the labels after
    /// the learner's cursor, stored at least `settle` ago (a label whose
    /// transaction is still committing has not yet got its place), as many as
    /// the learner has room for, and moves the cursor past them. Returns how
    /// many it took.
    pub async fn feed(&self, settle: Duration) -> Result<usize, LearningError> {
        let (time, id) = crate::store::feedback::learner_cursor(&self.db).await?;
        let until = crate::time::now_millis() - i64::try_from(settle.as_millis()).unwrap_or(0);
        let room = match &self.online {
            Some(tx) => i64::try_from(tx.capacity()).unwrap_or(0).min(1_000),
            None => 1_000,
        };
        let labels =
            crate::store::feedback::labels_after(&self.db, (time, &id), until, room).await?;
        let Some(last) = labels.last() else {
            return Ok(0);
        };
        let at = (last.time, last.prediction_id.clone());
        let n = labels.len();
        let live = self.slot.load();
        for l in labels {
            let outcome = serde_json::from_str(&l.label)
                .ok()
                .and_then(|label| outcome_of(&live.model.meta, &l.output, &label));
            if let Some(outcome) = outcome {
                self.monitoring.labelled(Labelled {
                    model_version: l.model_version,
                    outcome,
                    predicted: l.predicted,
                });
            }
            let Some(tx) = &self.online else { continue };
            if tx
                .try_send(online::LabelItem {
                    features: l.features,
                    label: l.label,
                })
                .is_err()
            {
                self.stats.online_dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
        crate::store::feedback::set_learner_cursor(&self.db, (at.0, &at.1)).await?;
        Ok(n)
    }

    /// The epoch to fence a registry write with: this replica's while it
    /// believes it leads; none on SQLite or on a follower (an operator's
    /// upload or activation through a follower is not singleton work).
    fn fence(&self) -> Option<i64> {
        match *self.role.as_ref()?.borrow() {
            crate::cluster::Role::Leader { epoch } => Some(epoch),
            crate::cluster::Role::Follower { .. } => None,
        }
    }

    /// Makes the registry's active version live here when another replica
    /// changed it (several replicas on one PostgreSQL database): loads it (from
    /// the registry's bytes when its file is not here), warms it up and swaps it
    /// in as [`Learning::activate`] does, without writing the registry. Returns
    /// the version made live, or `None` when this replica already serves it.
    pub async fn follow_registry(&self) -> Result<Option<String>, LearningError> {
        let Some(active) = registry::active(&self.db).await? else {
            return Ok(None);
        };
        if *self.slot.load().version == active.version {
            return Ok(None);
        }
        let _swap = self.swap.lock().await;
        let previous = self.slot.load_full();
        if *previous.version == active.version {
            return Ok(None);
        }
        let started = Instant::now();
        let warm = self.warm_up_inputs().await;
        let live = self.load(&active.version, warm).await?;
        let prepared_ms = started.elapsed().as_secs_f64() * 1e3;
        self.swap_in(live, &previous, prepared_ms, "follow");
        Ok(Some(active.version))
    }

    /// Makes an already loaded model live again in place of `expected` (the
    /// online guard's revert).
    pub async fn restore(&self, live: Arc<LiveModel>, expected: &str) -> Result<(), LearningError> {
        let _swap = self.swap.lock().await;
        let previous = self.slot.load_full();
        if previous.version == live.version {
            return Ok(());
        }
        if &*previous.version != expected {
            return Err(LearningError::Stale {
                expected: expected.into(),
                live: previous.version.to_string(),
            });
        }
        if !registry::activate(
            &self.db,
            &live.version,
            registry::Reactivation::Revert,
            self.fence(),
        )
        .await?
        {
            return Err(LearningError::Unknown(live.version.to_string()));
        }
        self.swap_in(live, &previous, 0.0, "revert");
        Ok(())
    }

    fn swap_in(
        &self,
        live: Arc<LiveModel>,
        previous: &Arc<LiveModel>,
        prepared_ms: f64,
        why: &str,
    ) {
        let at = Instant::now();
        let old = self.slot.swap(live.clone());
        let swap_us = at.elapsed().as_secs_f64() * 1e6;
        self.stats.swaps.fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            version = %live.version,
            previous = %previous.version,
            why,
            form = live.form.form.as_str(),
            f32_ns = live.form.f32_ns,
            int8_ns = live.form.int8_ns,
            prepared_ms,
            swap_us,
            "model swapped"
        );
        // The last reference may be a request in flight; otherwise free it here,
        // off the async workers.
        tokio::task::spawn_blocking(move || drop(old));
    }

    /// Up to 64 recent logged inputs (JSON objects), for timing a new model.
    async fn warm_up_inputs(&self) -> Vec<String> {
        match store::drift::recent(&self.db, 64).await {
            Ok(rows) => rows.into_iter().map(|r| r.features).collect(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read logged inputs for warm-up; timing on the reference sample");
                Vec::new()
            }
        }
    }

    /// Applies `model.keep_versions`: retires old versions and deletes their artifacts.
    async fn retire(&self) {
        let keep_major = registry::major(&self.slot.load().version).to_string();
        match registry::retire(&self.db, self.keep, &keep_major).await {
            Ok(retired) => {
                for r in retired {
                    match std::fs::remove_file(&r.path) {
                        Ok(()) => {
                            tracing::info!(version = %r.version, path = %r.path, "old model version retired")
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => {
                            tracing::warn!(version = %r.version, path = %r.path, error = %e, "cannot delete a retired artifact")
                        }
                    }
                }
            }
            Err(e) => tracing::error!(error = %e, "model retention failed"),
        }
    }
}

/// Whether every weight and bias of `model`'s f32 network is finite.
fn finite_weights(model: &Model) -> bool {
    model
        .network
        .layers()
        .iter()
        .all(|l| l.weight.iter().chain(l.bias.iter()).all(|w| w.is_finite()))
}

/// Encodes logged JSON inputs with `model`'s schema, leaving out any that do not fit.
fn encode_logged(model: &Model, inputs: &[String]) -> Vec<Vec<f32>> {
    let width = model.schema.width();
    inputs
        .iter()
        .filter_map(|text| {
            let mut x = vec![0.0; width];
            model.schema.encode_text(text, &mut x).ok()?;
            Some(x)
        })
        .collect()
}
