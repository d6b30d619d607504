//! The application layer: the daemon's services, built once from the config.
//!
//! [`App::build`] opens the database, makes a model live and starts the two
//! writers (the prediction log and the feedback committer); [`App::start_jobs`]
//! starts the background work (drift checks, concept drift, alert rules and mail,
//! online learning, scheduled and drift-triggered retraining, retention);
//! [`App::drain`] stops it all in the order that loses nothing. In between, the
//! HTTP layer (`server`) holds an [`App`] and calls one service method per
//! request:
//!
//! | service | what it does |
//! | --- | --- |
//! | [`App::predictions`] | encode, predict, score, queue the log row ([`predict`]) |
//! | [`App::feedback`] | validate labels, find their predictions, store, learn ([`feedback`]) |
//! | [`App::models`] | the live card, the registry, activation, retraining runs ([`models`]) |
//! | [`App::alerts`] | the outbox and silences ([`alerts`]) |
//! | [`App::health`] | readiness, the latest drift report, the counters `/metrics` shows ([`health`]) |
//! | [`App::dashboard`] | the dashboard's overview and drift history, from rollups ([`dashboard`]) |
//!
//! Services own their state privately and answer with their own error enums,
//! which the HTTP layer maps to status codes in one place each. Nothing above
//! this layer touches the database.

pub mod alerts;
pub mod dashboard;
pub mod feedback;
pub mod health;
pub mod models;
pub mod predict;

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::alert::mail::Mailer;
use crate::alert::service::{self as alerting, AlertSettings, Clock};
use crate::cluster::{ClusterSettings, Elector, Role};
use crate::config::Config;
use crate::learning::online::{LabelItem, OnlineSettings};
use crate::learning::retrain::RetrainSettings;
use crate::learning::{self, Learning};
use crate::live::{self, LiveError, Slot};
use crate::monitoring::{self, Labelled, Monitoring};
use crate::scheduler::Cron;
use crate::store::Store;
use crate::store::{self, feedback::Committer, writer, writer::LogHandle, StoreError};

/// Why the application could not be built.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Live(#[from] LiveError),
    #[error(transparent)]
    Mail(#[from] crate::alert::mail::MailError),
    #[error(transparent)]
    Cluster(#[from] crate::cluster::ClusterError),
}

/// Settings that a SIGHUP can change without a restart.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// The bearer token for write endpoints; `None`: no auth.
    pub token: Option<String>,
    pub max_batch: usize,
    pub retention_days: u32,
    /// `database.answer_after_commit`.
    pub answer_after_commit: bool,
}

impl Settings {
    pub fn from_config(config: &Config) -> Settings {
        Settings {
            token: config.token(),
            max_batch: config.server.max_batch,
            retention_days: config.database.retention_days,
            answer_after_commit: config.database.answer_after_commit,
        }
    }
}

/// The services; cheap to clone (every field is shared).
#[derive(Clone)]
pub struct App {
    predictions: predict::Predictions,
    feedback: feedback::Feedback,
    models: models::Models,
    alerts: alerts::Alerts,
    health: health::Health,
    dashboard: dashboard::Dashboard,
    settings: Arc<ArcSwap<Settings>>,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App").finish_non_exhaustive()
    }
}

/// What [`App::start_jobs`] and [`App::drain`] need besides the services: the
/// ends of the queues the jobs read, the writers' tasks, and the parts the jobs
/// are built from.
pub struct Parts {
    db: Store,
    slot: Slot,
    monitoring: Arc<Monitoring>,
    learning: Arc<Learning>,
    retrain: Arc<RetrainSettings>,
    mailer: Option<Mailer>,
    outcomes: Option<mpsc::Receiver<Labelled>>,
    labels: Option<mpsc::Receiver<LabelItem>>,
    log: LogHandle,
    stop_writer: CancellationToken,
    writer_task: tokio::task::JoinHandle<()>,
    committer: Option<Committer>,
    committer_task: tokio::task::JoinHandle<()>,
    /// On PostgreSQL: the leader election, whose leader alone runs the
    /// singleton jobs.
    elector: Option<Arc<Elector>>,
}

/// Whether this daemon may run the singleton jobs (the online learner, drift
/// checks, alert rules and mail, retraining, retention): always on SQLite (one
/// daemon per file, `store::lock`), and on PostgreSQL while it leads.
#[derive(Clone)]
enum Leadership {
    Alone,
    Elected(watch::Receiver<Role>),
}

impl Leadership {
    /// Runs `job` on `tracker` whenever this daemon may: at once and until
    /// `stop` when alone; when elected, in each term it leads, the job's own
    /// token cancelled the moment the term ends (the elector publishes the
    /// step-down before anything else), and started afresh in the next term.
    fn spawn<F, Fut>(
        &self,
        tracker: &TaskTracker,
        stop: &CancellationToken,
        name: &'static str,
        job: F,
    ) where
        F: Fn(CancellationToken) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let mut role = match self {
            Leadership::Alone => {
                tracker.spawn(job(stop.clone()));
                return;
            }
            Leadership::Elected(role) => role.clone(),
        };
        let stop = stop.clone();
        tracker.spawn(async move {
            loop {
                tokio::select! {
                    led = role.wait_for(Role::is_leader) => if led.is_err() { return },
                    () = stop.cancelled() => return,
                }
                let term = stop.child_token();
                let mut watching = role.clone();
                let ended = term.clone();
                let watcher = tokio::spawn(async move {
                    let _ = watching.wait_for(|r| !r.is_leader()).await;
                    ended.cancel();
                });
                tracing::info!(job = name, "leading: job started");
                job(term.clone()).await;
                watcher.abort();
                if stop.is_cancelled() {
                    return;
                }
                tracing::info!(job = name, "no longer leading: job stopped");
                // A job that ended by itself waits for the term's end.
                term.cancelled().await;
            }
        });
    }
}

impl App {
    /// Opens the database (migrations), makes a model live (the registry's
    /// active version, `model.initial`, or one trained on `model.bootstrap_data`),
    /// marks runs cut short by the last stop as failed and starts the writers.
    /// The caller holds the instance lock (`store::lock`) before calling this.
    pub async fn build(config: &Config) -> Result<(App, Parts), AppError> {
        let mailer = Mailer::from_config(config)?;
        let db = store::open_at(&config.database_at).await?;
        let slot: Slot = Arc::new(ArcSwap::from_pointee(live::start(&db, config).await?));
        let interrupted = store::retrain::interrupted(&db, crate::time::now_millis()).await?;
        if interrupted > 0 {
            tracing::warn!(
                runs = interrupted,
                "retrain runs cut short by the last stop are marked failed"
            );
        }
        let db_cfg = &config.database;
        let stop_writer = CancellationToken::new();
        // On PostgreSQL, answered predictions are written to a local spool
        // first (a kill -9 then loses none); an empty spool_dir opts out.
        let spool = match (db.is_postgres(), db_cfg.spool_dir.as_str()) {
            (true, dir) if !dir.is_empty() => Some(writer::Spool::open(
                Path::new(dir),
                db_cfg.spool_sync_secs.get(),
            )?),
            _ => None,
        };
        if let Some((spool, leftovers)) = &spool {
            tracing::info!(
                dir = %spool.dir().display(),
                leftover_segments = leftovers.len(),
                "prediction log spool open"
            );
        }
        let (log, writer_task) = writer::spawn(
            db.clone(),
            writer::WriterConfig {
                capacity: db_cfg.queue_capacity,
                batch_rows: db_cfg.batch_rows,
                flush: db_cfg.flush_secs.get(),
                queue_wait: db_cfg.queue_wait_secs.get(),
            },
            spool,
            stop_writer.clone(),
        );
        let (committer, committer_task) = Committer::spawn(db.clone());
        let elector = match db.postgres_url() {
            Some(url) => Some(Arc::new(Elector::new(url, cluster_settings(config))?)),
            None => None,
        };
        let settings = Arc::new(ArcSwap::from_pointee(Settings::from_config(config)));
        let (monitoring, outcomes) = Monitoring::new();
        let (mut learning, labels) =
            Learning::new(db.clone(), slot.clone(), monitoring.clone(), config);
        if let Some(elector) = &elector {
            learning.clustered(elector.subscribe());
        }
        restore_last_successes(&db, &monitoring, &learning).await?;
        let learning = Arc::new(learning);
        let retrain = Arc::new(RetrainSettings::from_config(config));
        let app = App {
            predictions: predict::Predictions::new(slot.clone(), log.clone(), settings.clone()),
            feedback: feedback::Feedback {
                db: db.clone(),
                slot: slot.clone(),
                log: log.clone(),
                committer: committer.clone(),
                monitoring: monitoring.clone(),
                learning: learning.clone(),
                settings: settings.clone(),
                stored: Arc::default(),
                unchanged: Arc::default(),
            },
            models: models::Models::new(
                db.clone(),
                slot.clone(),
                learning.clone(),
                retrain.clone(),
            ),
            alerts: alerts::Alerts::new(db.clone()),
            health: health::Health::new(
                db.clone(),
                slot.clone(),
                log.clone(),
                monitoring.clone(),
                learning.clone(),
                elector
                    .as_ref()
                    .map(|e| (Arc::from(e.settings().replica_id.as_str()), e.subscribe())),
            ),
            dashboard: dashboard::Dashboard::new(db.clone(), slot.clone()),
            settings,
        };
        let parts = Parts {
            db,
            slot,
            monitoring,
            learning,
            retrain,
            mailer: Some(mailer),
            outcomes: Some(outcomes),
            labels,
            log,
            stop_writer,
            writer_task,
            committer: Some(committer),
            committer_task,
            elector,
        };
        Ok((app, parts))
    }

    pub fn predictions(&self) -> &predict::Predictions {
        &self.predictions
    }

    pub fn feedback(&self) -> &feedback::Feedback {
        &self.feedback
    }

    pub fn models(&self) -> &models::Models {
        &self.models
    }

    pub fn alerts(&self) -> &alerts::Alerts {
        &self.alerts
    }

    pub fn health(&self) -> &health::Health {
        &self.health
    }

    pub fn dashboard(&self) -> &dashboard::Dashboard {
        &self.dashboard
    }

    /// The settings in force (the token, the batch limit, the retention).
    /// A guard, not a clone of the `Arc`: the token check reads it on every
    /// write request.
    pub fn settings(&self) -> arc_swap::Guard<Arc<Settings>> {
        self.settings.load()
    }

    /// Applies reloaded settings (SIGHUP).
    pub fn set_settings(&self, settings: Settings) {
        self.settings.store(Arc::new(settings));
    }

    /// Starts the background jobs on `tracker`; they end when `stop` is cancelled.
    pub fn start_jobs(
        &self,
        config: &Config,
        parts: &mut Parts,
        tracker: &TaskTracker,
        stop: &CancellationToken,
    ) {
        let clock = Clock::start();
        let lead = match &parts.elector {
            Some(elector) => {
                let role = elector.subscribe();
                let (elector, stopping) = (elector.clone(), stop.clone());
                tracker.spawn(async move { elector.run(stopping).await });
                Leadership::Elected(role)
            }
            None => Leadership::Alone,
        };
        if parts.db.is_postgres() {
            tracker.spawn(follow_registry(
                parts.db.clone(),
                parts.learning.clone(),
                config.cluster.poll_secs.get(),
                stop.clone(),
            ));
        }
        let (db, settings) = (parts.db.clone(), self.settings.clone());
        lead.spawn(tracker, stop, "retention", move |stop| {
            retention_job(db.clone(), settings.clone(), stop)
        });
        let (db, slot, monitoring) = (
            parts.db.clone(),
            parts.slot.clone(),
            parts.monitoring.clone(),
        );
        let drift = monitoring::JobSettings::from_config(&config.drift);
        lead.spawn(tracker, stop, "drift checks", move |stop| {
            monitoring::drift_job(
                db.clone(),
                slot.clone(),
                monitoring.clone(),
                drift.clone(),
                stop,
            )
        });
        if let Some(mailer) = parts.mailer.take() {
            let settings = AlertSettings {
                counters: self.alerts.counters(),
                ..AlertSettings::from_config(config)
            };
            let wake_mailer = Arc::new(tokio::sync::Notify::new());
            let (db, monitoring, rules) =
                (parts.db.clone(), parts.monitoring.clone(), settings.clone());
            let (domain, wake) = (mailer.domain(), wake_mailer.clone());
            lead.spawn(tracker, stop, "alert rules", move |stop| {
                alerting::rules_task(
                    db.clone(),
                    monitoring.events.subscribe(),
                    rules.clone(),
                    domain.clone(),
                    wake.clone(),
                    clock,
                    stop,
                )
            });
            tracing::info!(via = %mailer.describe, recipients = ?config.alerts.to, "alert mail");
            let db = parts.db.clone();
            lead.spawn(tracker, stop, "alert mail", move |stop| {
                alerting::mailer_task(
                    db.clone(),
                    mailer.clone(),
                    settings.clone(),
                    wake_mailer.clone(),
                    clock,
                    stop,
                )
            });
        }
        if let Some(outcomes) = parts.outcomes.take() {
            tracker.spawn(monitoring::concept_task(
                outcomes,
                parts.monitoring.clone(),
                stop.clone(),
            ));
        }
        if let Some(labels) = parts.labels.take() {
            let labels = Arc::new(tokio::sync::Mutex::new(labels));
            let learning = parts.learning.clone();
            let online = OnlineSettings::from_config(&config.online);
            lead.spawn(tracker, stop, "online learner", move |stop| {
                let (learning, labels, online) = (learning.clone(), labels.clone(), online.clone());
                async move {
                    let mut labels = labels.lock().await;
                    learning::online::task(learning, &mut labels, online, stop).await;
                }
            });
        }
        if parts.db.is_postgres() {
            let learning = parts.learning.clone();
            lead.spawn(tracker, stop, "label feed", move |stop| {
                feed_labels(learning.clone(), stop)
            });
        }
        match Cron::parse(&config.training.schedule) {
            Ok(cron) => {
                let (learning, retrain) = (parts.learning.clone(), parts.retrain.clone());
                lead.spawn(tracker, stop, "retrain schedule", move |stop| {
                    learning::trigger::schedule(
                        learning.clone(),
                        retrain.clone(),
                        cron.clone(),
                        clock,
                        stop,
                    )
                });
            }
            Err(e) => tracing::error!(error = %e, "training.schedule: no scheduled retraining"),
        }
        if config.training.drift_retrain {
            let (learning, retrain, monitoring) = (
                parts.learning.clone(),
                parts.retrain.clone(),
                parts.monitoring.clone(),
            );
            let cooldown = config.training.drift_cooldown_secs.get();
            lead.spawn(tracker, stop, "drift retraining", move |stop| {
                learning::trigger::on_drift(
                    learning.clone(),
                    retrain.clone(),
                    monitoring.events.subscribe(),
                    cooldown,
                    stop,
                )
            });
        }
    }

    /// After the server has stopped answering: waits for the feedback committer,
    /// writes every queued prediction, stops the log writer, waits for the jobs
    /// (`tracker`, already cancelled), marks a retrain still running as failed
    /// and closes the database.
    pub async fn drain(self, mut parts: Parts, tracker: &TaskTracker) {
        // Feedback requests are answered only once committed: none is waiting
        // now. Every clone of the committer must go for its task to end.
        drop(self);
        drop(parts.committer.take());
        let _ = (&mut parts.committer_task).await;
        // Every answered prediction is queued by now: write them all.
        let flushed = tokio::time::timeout(Duration::from_secs(5), parts.log.flush())
            .await
            .unwrap_or(false);
        parts.stop_writer.cancel();
        let _ = (&mut parts.writer_task).await;
        let stats = parts.log.stats();
        tracing::info!(
            written = stats.written.load(Ordering::Relaxed),
            dropped = stats.dropped.load(Ordering::Relaxed),
            flushed,
            "stopped"
        );
        tracker.wait().await;
        if parts.learning.flight.busy() {
            // A training thread cannot be interrupted; it is left behind when the
            // process exits, so its run is recorded as failed now.
            match store::retrain::interrupted(&parts.db, crate::time::now_millis()).await {
                Ok(n) => tracing::warn!(
                    runs = n,
                    "a retraining run was still going at the stop: marked failed, not waited for"
                ),
                Err(e) => {
                    tracing::error!(error = %e, "cannot mark the interrupted retrain as failed")
                }
            }
        }
        parts.db.close().await;
    }

    /// The live model's version (for the start-up log line).
    pub fn live_version(&self) -> String {
        self.health.live_version()
    }
}

/// On every replica of a cluster: serves the registry's active version once
/// another replica makes it active, on its announcement (`store::notify`) or at
/// the next poll, whichever comes first (an announcement can be lost while the
/// listening connection reconnects).
async fn follow_registry(
    db: Store,
    learning: Arc<Learning>,
    poll: Duration,
    stop: CancellationToken,
) {
    let mut changes = None;
    // An outage is logged when it starts and when it ends, not at every poll.
    let (mut deaf, mut behind) = (Outage::default(), Outage::default());
    loop {
        if changes.is_none() {
            match store::notify::Changes::listen(&db).await {
                Ok(c) => {
                    changes = c;
                    deaf.over("listening for model changes again");
                }
                Err(e) => deaf.began(
                    &e,
                    "cannot listen for model changes; polling only until it can",
                ),
            }
        }
        let announced = async {
            match changes.as_mut() {
                Some(c) => c.next().await.map(Some),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            heard = announced => {
                if let Err(e) = heard {
                    tracing::warn!(error = %e, "model change listener failed; reconnecting");
                    changes = None;
                }
            }
            () = tokio::time::sleep(poll) => {}
            () = stop.cancelled() => return,
        }
        match learning.follow_registry().await {
            Ok(Some(version)) => {
                behind.over("reading the registry again");
                tracing::info!(%version, "serving the version another replica made active")
            }
            Ok(None) => behind.over("reading the registry again"),
            Err(e) => behind.began(
                &e,
                "cannot serve the registry's active version yet; retrying at every poll",
            ),
        }
    }
}

/// A failure that repeats at every poll while it lasts (the database away):
/// warned of once when it begins, and noted once when it is over.
#[derive(Default)]
struct Outage {
    since: Option<std::time::Instant>,
}

impl Outage {
    fn began(&mut self, error: &dyn std::fmt::Display, what: &str) {
        if self.since.is_none() {
            self.since = Some(std::time::Instant::now());
            tracing::warn!(error = %error, "{what}");
        }
    }

    fn over(&mut self, what: &str) {
        if let Some(since) = self.since.take() {
            tracing::info!(after_ms = since.elapsed().as_millis() as u64, "{what}");
        }
    }
}

/// How often the leader looks for labels stored by any replica, and how long
/// a label must have been stored before it is taken (its transaction may still
/// be committing; replicas' clocks must agree within this).
const FEED_POLL: Duration = Duration::from_millis(50);
const FEED_SETTLE: Duration = Duration::from_millis(200);

/// On the leader of a cluster: hands the labels every replica stores to the
/// concept-drift detectors and the online learner (`Learning::feed`) until
/// `stop`.
async fn feed_labels(learning: Arc<Learning>, stop: CancellationToken) {
    let mut failing = Outage::default();
    loop {
        match learning.feed(FEED_SETTLE).await {
            // A full page: more may be waiting.
            Ok(1_000..) => {
                failing.over("reading labels again");
                continue;
            }
            Ok(_) => failing.over("reading labels again"),
            Err(e) => failing.began(
                &e,
                "cannot read labels for the online learner and the concept detectors; retrying",
            ),
        }
        tokio::select! {
            () = tokio::time::sleep(FEED_POLL) => {}
            () = stop.cancelled() => return,
        }
    }
}

/// The election's settings from `[cluster]`; the replica's name defaults to the
/// host name and the listen port (and the process id when the port is chosen
/// by the system).
fn cluster_settings(config: &Config) -> ClusterSettings {
    let c = &config.cluster;
    let replica_id = if c.replica_id.is_empty() {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "steward".into());
        match config.listen.port() {
            0 => format!("{host}:{}", std::process::id()),
            port => format!("{host}:{port}"),
        }
    } else {
        c.replica_id.clone()
    };
    ClusterSettings {
        lease: c.lease_secs.get(),
        poll: c.poll_secs.get(),
        replica_id,
    }
}

/// Deletes old predictions hourly, keeping `database.retention_days`.
async fn retention_job(db: Store, settings: Arc<ArcSwap<Settings>>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => return,
        }
        let days = settings.load().retention_days;
        match store::apply_retention(&db, days).await {
            Ok(0) => {}
            Ok(deleted) => {
                tracing::info!(deleted, retention_days = days, "old predictions deleted")
            }
            Err(e) => tracing::error!(error = %e, "retention cleanup failed"),
        }
    }
}

/// Restores when the drift check and a retrain last succeeded from the store,
/// so `/metrics`' `_last_success_timestamp_seconds` survive a restart (an alert
/// on a stalled job must not fire because the daemon restarted).
async fn restore_last_successes(
    db: &Store,
    monitoring: &Monitoring,
    learning: &Learning,
) -> Result<(), StoreError> {
    if let Some(t) = store::drift::last_time(db).await? {
        monitoring.last_check_ms.store(t, Ordering::Relaxed);
    }
    if let Some(t) = store::retrain::last_decided(db).await? {
        learning
            .stats
            .retrain_last_decided_ms
            .store(t, Ordering::Relaxed);
    }
    Ok(())
}
