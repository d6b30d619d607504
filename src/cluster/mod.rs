//! Several replicas on one PostgreSQL (issue 19, docs/CLUSTER.md). This module
//! owns the choice of the one replica that runs singleton work (the online
//! learner, the retrain schedule, the drift job, retention, the mailer):
//! [`leader::Elector`] takes a PostgreSQL advisory lock on a dedicated connection,
//! behind a lease and an epoch, and publishes this replica's [`Role`] on a watch
//! channel; [`leader::fence`] refuses, inside a writer's transaction, a write
//! from a deposed leader's epoch.
//!
//! It does not start or stop singleton work (whoever runs it subscribes to the
//! role), and it does not read the config: [`ClusterSettings`] is what the
//! `[cluster]` section will give it. Unlike the rest of steward, which reaches
//! the database only through `store`, the election is PostgreSQL's own
//! mechanism (a session's advisory lock), so this module speaks sqlx's
//! PostgreSQL types directly; on SQLite there is one process and no election.

pub mod leader;

use std::time::Duration;

pub use leader::{fence, Elector, LOCK_KEY};

/// The election's timing and this replica's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSettings {
    /// How long a leader's term lasts without a renewal (`cluster.lease_secs`).
    /// A leader renews it every [`ClusterSettings::tick`]; one that has not
    /// renewed for this long steps down, and a successor waits this long after
    /// the last renewal before it takes over.
    pub lease: Duration,
    /// How often a replica polls the cluster (`cluster.poll_secs`); the elector
    /// retries and renews every [`ClusterSettings::tick`], at most this.
    pub poll: Duration,
    /// This replica's name, recorded as the leader's `holder`: unique among the
    /// replicas of one database (a host name, or host name and port).
    pub replica_id: String,
}

impl ClusterSettings {
    /// The default lease: 10 s.
    pub const DEFAULT_LEASE: Duration = Duration::from_secs(10);
    /// The default poll: 5 s.
    pub const DEFAULT_POLL: Duration = Duration::from_secs(5);
    /// The shortest lease accepted (`config::MIN_LEASE`): the lease is kept in
    /// milliseconds and renewed three times per lease.
    pub const MIN_LEASE: Duration = crate::config::MIN_LEASE;

    /// The default timing for replica `replica_id`.
    pub fn new(replica_id: impl Into<String>) -> ClusterSettings {
        ClusterSettings {
            lease: Self::DEFAULT_LEASE,
            poll: Self::DEFAULT_POLL,
            replica_id: replica_id.into(),
        }
    }

    /// The elector's period: a leader renews its lease, and a follower tries to
    /// take the lock, this often: a third of the lease, or the poll if shorter.
    pub fn tick(&self) -> Duration {
        self.poll.min(self.lease / 3)
    }

    /// Refuses a lease shorter than [`ClusterSettings::MIN_LEASE`], a zero poll
    /// and an empty replica id.
    pub fn check(&self) -> Result<(), ClusterError> {
        if self.lease < Self::MIN_LEASE {
            return Err(ClusterError::Settings(format!(
                "lease {:?} is shorter than {:?}",
                self.lease,
                Self::MIN_LEASE
            )));
        }
        if self.poll.is_zero() {
            return Err(ClusterError::Settings("poll must be positive".into()));
        }
        if self.replica_id.trim().is_empty() {
            return Err(ClusterError::Settings("replica_id is empty".into()));
        }
        Ok(())
    }
}

/// This replica's part in the cluster, as the elector last saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// This replica leads, in `epoch`: it runs the singleton work, and fences its
    /// writes with this epoch.
    Leader { epoch: i64 },
    /// Another replica leads (`leader`, if one holds a live lease), or none can be
    /// seen (the database is unreachable, or a new leader is not yet elected);
    /// `epoch` is the last one seen (0 before any).
    Follower { leader: Option<String>, epoch: i64 },
}

impl Role {
    /// Whether this replica leads.
    pub fn is_leader(&self) -> bool {
        matches!(self, Role::Leader { .. })
    }

    /// The epoch this role was seen in.
    pub fn epoch(&self) -> i64 {
        match self {
            Role::Leader { epoch } | Role::Follower { epoch, .. } => *epoch,
        }
    }
}

/// What the election and the fence can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// A write from epoch `mine` while the cluster is in epoch `current`: another
    /// replica has led since, so this write must not happen.
    #[error("deposed: this replica led in epoch {mine}, the cluster is in epoch {current}")]
    Deposed { mine: i64, current: i64 },
    #[error("cluster settings: {0}")]
    Settings(String),
    #[error("cluster: database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("cluster: the database did not answer within {0:?}")]
    Timeout(Duration),
    /// The table `cluster_leader` has no row (migration 0008 inserts it).
    #[error("cluster: the table cluster_leader has no row")]
    NoRow,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tick_is_a_third_of_the_lease_or_the_poll() {
        let mut s = ClusterSettings::new("a");
        assert_eq!(s.tick(), Duration::from_secs(10) / 3);
        s.poll = Duration::from_secs(1);
        assert_eq!(s.tick(), Duration::from_secs(1));
        assert!(s.check().is_ok());
    }

    #[test]
    fn bad_settings_are_refused() {
        let ok = ClusterSettings::new("a");
        let short = ClusterSettings {
            lease: Duration::from_millis(299),
            ..ok.clone()
        };
        let no_poll = ClusterSettings {
            poll: Duration::ZERO,
            ..ok.clone()
        };
        let no_id = ClusterSettings::new(" ");
        for bad in [short, no_poll, no_id] {
            assert!(
                matches!(bad.check(), Err(ClusterError::Settings(_))),
                "{bad:?}"
            );
        }
    }
}
