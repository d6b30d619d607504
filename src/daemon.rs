//! The composition root: start-up order, signals, systemd notification, shutdown.
//!
//! Start-up: open the database (migrations), make a model live, mark retrain runs
//! cut short by the last stop as failed, start the log writer, the drift job, the
//! concept-drift task, the two alerting tasks (rules into the outbox, the mailer),
//! the online learner, the retrain schedule and the drift trigger, bind the
//! listener, then tell systemd READY=1. SIGTERM/SIGINT: STOPPING=1,
//! stop accepting, let in-flight requests finish, flush the log queue, exit, all
//! within `server.shutdown_timeout_secs`. SIGHUP re-reads the config file and applies
//! the keys that can change at run time (`server.max_batch`, `log.level`,
//! `database.retention_days`); any other changed key is logged as needing a restart.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::alert::mail::Mailer;
use crate::alert::service::{self, AlertSettings, Clock};
use crate::config::{Config, ConfigError};
use crate::learning::online::OnlineSettings;
use crate::learning::retrain::RetrainSettings;
use crate::learning::{self, Learning};
use crate::live::{self, LiveError};
use crate::logging::LevelHandle;
use crate::monitoring::{self, Monitoring};
use crate::scheduler::Cron;
use crate::server::{self, listen, metrics::Metrics, AppState, Limits, Settings};
use crate::store::{self, writer, StoreError};

/// Everything that can stop the daemon from starting or running.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Live(#[from] LiveError),
    #[error("cannot listen on {addr} (server.listen): {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("server failed: {0}")]
    Serve(std::io::Error),
    #[error(transparent)]
    Instance(#[from] store::lock::LockError),
    #[error(transparent)]
    Preflight(#[from] crate::preflight::PreflightError),
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
    #[error(transparent)]
    Mail(#[from] crate::alert::mail::MailError),
}

/// Runs the daemon until SIGTERM or SIGINT.
pub async fn run(
    config: Config,
    config_path: Option<PathBuf>,
    levels: LevelHandle,
) -> Result<(), DaemonError> {
    // What check-config checks, serve checks first; then, before anything touches
    // the database, one daemon per database.
    crate::preflight::check(&config)?;
    let mailer = Mailer::from_config(&config)?;
    let _instance = store::lock::InstanceLock::acquire(&config.database_path)?;
    let pool = store::open(&config.database_path).await?;
    let first = live::start(&pool, &config).await?;
    let version = first.version.clone();
    let slot: live::Slot = Arc::new(ArcSwap::from_pointee(first));

    let tracker = TaskTracker::new();
    let stop = CancellationToken::new();
    let stop_writer = CancellationToken::new();
    let db = &config.raw.database;
    let (log, writer_task) = writer::spawn(
        pool.clone(),
        writer::WriterConfig {
            capacity: db.queue_capacity,
            batch_rows: db.batch_rows,
            flush: Duration::from_millis(db.flush_ms),
            queue_wait: Duration::from_millis(db.queue_wait_ms),
        },
        stop_writer.clone(),
    );
    let settings = Arc::new(ArcSwap::from_pointee(Settings {
        token: config.token(),
        max_batch: config.raw.server.max_batch,
    }));
    let retention = Arc::new(AtomicU32::new(db.retention_days));
    let (monitoring, outcomes) = Monitoring::new();
    let interrupted = store::retrain::interrupted(&pool, crate::time::now_millis()).await?;
    if interrupted > 0 {
        tracing::warn!(
            runs = interrupted,
            "retrain runs cut short by the last stop are marked failed"
        );
    }
    let (learning, labels) = Learning::new(pool.clone(), slot.clone(), monitoring.clone(), &config);
    let learning = Arc::new(learning);
    let retrain = Arc::new(RetrainSettings::from_config(&config));
    let (feedback, feedback_task) = store::feedback::Committer::spawn(pool.clone());
    let metrics = Arc::new(Metrics::default());
    let state = AppState {
        live: slot.clone(),
        log: log.clone(),
        pool: pool.clone(),
        metrics: metrics.clone(),
        settings: settings.clone(),
        monitoring: monitoring.clone(),
        learning: learning.clone(),
        retrain: retrain.clone(),
        feedback: feedback.clone(),
    };
    let limits = Limits {
        max_body_bytes: config.raw.server.max_body_bytes,
        request_timeout: Duration::from_millis(config.raw.server.request_timeout_ms),
    };
    let app = server::router(state, limits);
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| DaemonError::Bind {
            addr: config.listen.to_string(),
            source,
        })?;
    let addr = listener.local_addr().map_err(DaemonError::Serve)?;
    let server_cfg = &config.raw.server;
    let (max_connections, nofile) = listen::fit_to_file_limit(server_cfg.max_connections);
    if max_connections < server_cfg.max_connections {
        tracing::warn!(
            max_connections,
            configured = server_cfg.max_connections,
            open_file_limit = nofile,
            "server.max_connections lowered to fit the open-file limit (raise LimitNOFILE)"
        );
    }
    let conn_limits = listen::ConnLimits {
        max_connections,
        header_timeout: Duration::from_millis(server_cfg.header_timeout_ms),
        max_header_bytes: server_cfg.max_header_bytes,
    };

    tracker.spawn(signals(
        stop.clone(),
        config.clone(),
        config_path,
        settings,
        levels,
        retention.clone(),
    )?);
    tracker.spawn(retention_job(pool.clone(), retention, stop.clone()));
    tracker.spawn(watchdog(stop.clone()));
    tracker.spawn(memory_job(stop.clone()));
    tracker.spawn(monitoring::drift_job(
        pool.clone(),
        slot.clone(),
        monitoring.clone(),
        monitoring::JobSettings::from_config(&config.raw.drift),
        stop.clone(),
    ));
    let alerting = AlertSettings::from_config(&config);
    let wake_mailer = Arc::new(tokio::sync::Notify::new());
    let clock = Clock::start();
    tracker.spawn(service::rules_task(
        pool.clone(),
        monitoring.events.subscribe(),
        alerting.clone(),
        mailer.domain(),
        wake_mailer.clone(),
        clock,
        stop.clone(),
    ));
    tracing::info!(via = %mailer.describe, recipients = ?config.raw.alerts.to, "alert mail");
    tracker.spawn(service::mailer_task(
        pool.clone(),
        mailer,
        alerting,
        wake_mailer,
        clock,
        stop.clone(),
    ));
    tracker.spawn(monitoring::concept_task(
        outcomes,
        monitoring.clone(),
        stop.clone(),
    ));
    if let Some(labels) = labels {
        tracker.spawn(learning::online::task(
            learning.clone(),
            labels,
            OnlineSettings::from_config(&config.raw.online),
            stop.clone(),
        ));
    }
    match Cron::parse(&config.raw.training.schedule) {
        Ok(cron) => {
            tracker.spawn(learning::trigger::schedule(
                learning.clone(),
                retrain.clone(),
                cron,
                clock,
                stop.clone(),
            ));
        }
        Err(e) => tracing::error!(error = %e, "training.schedule: no scheduled retraining"),
    }
    if config.raw.training.drift_retrain {
        tracker.spawn(learning::trigger::on_drift(
            learning.clone(),
            retrain.clone(),
            monitoring.events.subscribe(),
            Duration::from_secs(config.raw.training.drift_cooldown_secs),
            stop.clone(),
        ));
    }
    tracker.close();

    tracing::info!(%addr, model_version = %version, database = %config.database_path.display(),
        max_connections, open_file_limit = nofile, "listening");
    notify(&[
        NotifyState::Ready,
        NotifyState::Status(&format!("serving model version {version} on {addr}")),
    ]);

    let deadline = Duration::from_secs(config.raw.server.shutdown_timeout_secs);
    let serve = listen::serve(
        listener,
        app,
        conn_limits,
        metrics.connections.clone(),
        stop.clone(),
    );
    let drained = tokio::select! {
        () = serve => true,
        () = async { stop.cancelled().await; tokio::time::sleep(deadline).await } => false,
    };
    if !drained {
        tracing::warn!(
            deadline_secs = deadline.as_secs(),
            "in-flight requests did not finish before the shutdown deadline"
        );
    }
    // Feedback requests are answered only once committed: none is waiting now.
    drop(feedback);
    let _ = feedback_task.await;
    // Every answered prediction is queued by now: write them all.
    let flushed = tokio::time::timeout(Duration::from_secs(5), log.flush())
        .await
        .unwrap_or(false);
    stop_writer.cancel();
    let _ = writer_task.await;
    let stats = log.stats();
    tracing::info!(
        written = stats.written.load(Ordering::Relaxed),
        dropped = stats.dropped.load(Ordering::Relaxed),
        flushed,
        "stopped"
    );
    tracker.wait().await;
    if learning.flight.busy() {
        // A training thread cannot be interrupted; it is left behind when the
        // process exits, so its run is recorded as failed now.
        match store::retrain::interrupted(&pool, crate::time::now_millis()).await {
            Ok(n) => tracing::warn!(
                runs = n,
                "a retraining run was still going at the stop: marked failed, not waited for"
            ),
            Err(e) => tracing::error!(error = %e, "cannot mark the interrupted retrain as failed"),
        }
    }
    pool.close().await;
    Ok(())
}

fn notify(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(false, states) {
        tracing::debug!(error = %e, "sd_notify failed");
    }
}

/// Pings the systemd watchdog at half its interval, when systemd asks for it.
async fn watchdog(stop: CancellationToken) {
    let Some(usec) = watchdog_usec() else { return };
    let mut tick = tokio::time::interval(Duration::from_micros(usec / 2));
    loop {
        tokio::select! {
            _ = tick.tick() => notify(&[NotifyState::Watchdog]),
            () = stop.cancelled() => return,
        }
    }
}

/// The watchdog interval systemd asks for, as `sd_watchdog_enabled(3)` reads it:
/// `WATCHDOG_USEC` set, and `WATCHDOG_PID` unset or ours. (sd-notify's helper
/// also requires `WATCHDOG_PID`, which systemd documents as optional.)
fn watchdog_usec() -> Option<u64> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    match std::env::var("WATCHDOG_PID").ok().map(|p| p.parse::<u32>()) {
        Some(Ok(pid)) if pid != std::process::id() => None,
        Some(Err(_)) => None,
        _ if usec == 0 => None,
        _ => Some(usec),
    }
}

/// Hands memory freed inside malloc's arenas back to the system (see `memory`).
async fn memory_job(stop: CancellationToken) {
    let mut tick = tokio::time::interval(crate::memory::TRIM_EVERY);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => return,
        }
        let _ = tokio::task::spawn_blocking(crate::memory::trim).await;
    }
}

/// Deletes old predictions hourly.
async fn retention_job(pool: sqlx::SqlitePool, days: Arc<AtomicU32>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => return,
        }
        let days = days.load(Ordering::Relaxed);
        match store::apply_retention(&pool, days).await {
            Ok(0) => {}
            Ok(deleted) => {
                tracing::info!(deleted, retention_days = days, "old predictions deleted")
            }
            Err(e) => tracing::error!(error = %e, "retention cleanup failed"),
        }
    }
}

/// Handles SIGTERM/SIGINT (stop) and SIGHUP (reload).
fn signals(
    stop: CancellationToken,
    mut config: Config,
    path: Option<PathBuf>,
    settings: Arc<ArcSwap<Settings>>,
    levels: LevelHandle,
    retention: Arc<AtomicU32>,
) -> Result<impl std::future::Future<Output = ()>, DaemonError> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).map_err(DaemonError::Signals)?;
    let mut int = signal(SignalKind::interrupt()).map_err(DaemonError::Signals)?;
    let mut hup = signal(SignalKind::hangup()).map_err(DaemonError::Signals)?;
    Ok(async move {
        loop {
            tokio::select! {
                _ = term.recv() => break,
                _ = int.recv() => break,
                () = stop.cancelled() => return,
                _ = hup.recv() => {
                    notify(&[NotifyState::Reloading]);
                    match Config::load(path.as_deref()) {
                        Ok(new) => {
                            apply_reload(&config, &new, &settings, &levels, &retention);
                            config = new;
                        }
                        Err(e) => tracing::error!(error = %e, "SIGHUP: the new config is invalid; keeping the running one"),
                    }
                    notify(&[NotifyState::Ready]);
                }
            }
        }
        tracing::info!("stop signal received: draining in-flight requests and the log queue");
        notify(&[NotifyState::Stopping]);
        stop.cancel();
    })
}

/// Applies what can change at run time and names what cannot.
fn apply_reload(
    old: &Config,
    new: &Config,
    settings: &ArcSwap<Settings>,
    levels: &LevelHandle,
    retention: &AtomicU32,
) {
    settings.store(Arc::new(Settings {
        token: new.token(),
        max_batch: new.raw.server.max_batch,
    }));
    retention.store(new.raw.database.retention_days, Ordering::Relaxed);
    if let Err(e) = levels.set(&new.raw.log.level) {
        tracing::error!(error = %e, "SIGHUP: cannot apply log.level");
    }
    let reloadable = ["server.max_batch", "database.retention_days", "log.level"];
    let changed = changed_keys(old, new);
    let (applied, ignored): (Vec<_>, Vec<_>) = changed
        .into_iter()
        .partition(|k| reloadable.contains(&k.as_str()));
    tracing::info!(applied = ?applied, "SIGHUP: config reloaded");
    if !ignored.is_empty() {
        tracing::warn!(keys = ?ignored, "SIGHUP: these keys changed but take effect only after a restart");
    }
}

/// `section.key` names whose values differ.
pub fn changed_keys(old: &Config, new: &Config) -> Vec<String> {
    let (Ok(toml::Value::Table(a)), Ok(toml::Value::Table(b))) = (
        toml::Value::try_from(&old.raw),
        toml::Value::try_from(&new.raw),
    ) else {
        return Vec::new();
    };
    let mut changed = Vec::new();
    for (section, av) in &a {
        let (Some(toml::Value::Table(at)), Some(toml::Value::Table(bt))) =
            (Some(av), b.get(section))
        else {
            continue;
        };
        for (key, v) in at {
            if bt.get(key) != Some(v) {
                changed.push(format!("{section}.{key}"));
            }
        }
    }
    changed
}
