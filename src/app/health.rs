//! Health: readiness (the database takes writes, the prediction log is being
//! written), the latest drift report, and read-only views of the counters that
//! `/metrics` shows.

use std::sync::Arc;

use tokio::sync::watch;

use crate::cluster::Role;
use crate::learning::{Learning, LearningStats};
use crate::live::{LiveModel, Slot};
use crate::monitoring::Monitoring;
use crate::store::writer::{LogHandle, LogStats};
use crate::store::{Store, StoreError};

/// Why the daemon is not ready.
#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    #[error("the database does not take writes: {0}")]
    DatabaseUnwritable(StoreError),
    #[error("prediction log writes are failing: {0}")]
    LogFailing(String),
}

/// The health service.
#[derive(Clone)]
pub struct Health {
    db: Store,
    slot: Slot,
    log: LogHandle,
    monitoring: Arc<Monitoring>,
    learning: Arc<Learning>,
    /// On PostgreSQL: this replica's name and its role, as the elector sees it.
    cluster: Option<(Arc<str>, watch::Receiver<Role>)>,
}

/// This replica's place in the cluster, for `GET /v1/model` and `/metrics`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ClusterView {
    pub replica: String,
    pub leader: bool,
    /// The epoch of the current (or last seen) term.
    pub epoch: i64,
    /// The replica that leads, when this one knows (itself when it leads).
    pub leader_replica: Option<String>,
}

impl Health {
    pub(super) fn new(
        db: Store,
        slot: Slot,
        log: LogHandle,
        monitoring: Arc<Monitoring>,
        learning: Arc<Learning>,
        cluster: Option<(Arc<str>, watch::Receiver<Role>)>,
    ) -> Self {
        Health {
            db,
            slot,
            log,
            monitoring,
            learning,
            cluster,
        }
    }

    /// Where this replica stands in the cluster; `None` on SQLite.
    pub fn cluster(&self) -> Option<ClusterView> {
        let (replica, role) = self.cluster.as_ref()?;
        let role = role.borrow().clone();
        Some(ClusterView {
            replica: replica.to_string(),
            leader: role.is_leader(),
            epoch: role.epoch(),
            leader_replica: match role {
                Role::Leader { .. } => Some(replica.to_string()),
                Role::Follower { leader, .. } => leader,
            },
        })
    }

    /// Ready to serve: a model is live (always, once built), the database takes
    /// a write, and the prediction log's writes succeed. Returns the live version.
    pub async fn ready(&self) -> Result<String, HealthError> {
        if let Err(e) = crate::store::heartbeat(&self.db).await {
            tracing::warn!(error = %e, "readiness: database not writable");
            return Err(HealthError::DatabaseUnwritable(e));
        }
        if let Some(e) = self.log.stats().error() {
            tracing::warn!(error = %e, "readiness: prediction log writes failing");
            return Err(HealthError::LogFailing(e));
        }
        Ok(self.live_version())
    }

    /// The latest drift report as stored (JSON text), if a check has run.
    pub async fn drift_report(&self) -> Result<Option<String>, StoreError> {
        crate::store::drift::latest(&self.db).await
    }

    /// Bytes SQLite holds in memory (every connection's page cache,
    /// statements and sorters).
    pub fn database_memory_bytes(&self) -> i64 {
        crate::store::sqlite_memory_bytes()
    }

    /// The live model's version.
    pub fn live_version(&self) -> String {
        self.slot.load().version.to_string()
    }

    /// The live model.
    pub fn live(&self) -> Arc<LiveModel> {
        self.slot.load_full()
    }

    /// The prediction log's counters.
    pub fn log_stats(&self) -> &LogStats {
        self.log.stats()
    }

    /// Prediction log rows waiting to be written.
    pub fn log_depth(&self) -> usize {
        self.log.depth()
    }

    /// Drift checks and monitoring events.
    pub fn monitoring(&self) -> &Monitoring {
        &self.monitoring
    }

    /// Swaps, online learning and retraining counters.
    pub fn learning(&self) -> &LearningStats {
        &self.learning.stats
    }

    /// Whether a retraining run holds the flight.
    pub fn retrain_running(&self) -> bool {
        self.learning.flight.busy()
    }
}
