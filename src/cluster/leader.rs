//! The leader election (docs/CLUSTER.md, "Leader election"). An [`Elector`] owns
//! one dedicated PostgreSQL connection, opened by itself and never pooled, since
//! an advisory lock belongs to a session: the replica whose session holds
//! `pg_try_advisory_lock(LOCK_KEY)` may lead. In the one row of `cluster_leader`
//! (migration 0008) it then, in one transaction, increments the epoch and
//! records itself and its lease; it renews the lease every tick, pings its
//! connection every 100 ms in between, and steps down the moment a ping or a
//! renewal fails (its role turns Follower before anything else).
//! A replica that wins the lock while the row holds another replica's live
//! lease waits for that lease to run out first, so that two replicas never
//! both believe they lead: the old leader gives up at the end of its lease by
//! its own clock even if it never hears from the database again.
//! Lease times are the database's clock (`clock_timestamp()`), so replicas'
//! clocks need not agree; each replica measures its own deadline from before
//! it sent the renewal, which is never later than the database's.
//!
//! [`fence`] is the other half: a writer that must not write from an old epoch
//! (a model publish) checks its epoch inside its own transaction.
//!
//! Running or stopping the singleton work on a change of role is the caller's
//! (`app::Leadership` subscribes to [`Elector::subscribe`]); the settings come
//! from `[cluster]`.

use std::future::Future;
use std::str::FromStr;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgConnection, Postgres};
use sqlx::{ConnectOptions, Connection, Transaction};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{ClusterError, ClusterSettings, Role};
use crate::store::StoreError;

/// The advisory lock whose holder leads: the ASCII bytes of "steward" followed by
/// 0x01 (lock number 1), as one 64-bit key (8319385975070548993). Advisory locks are per database, so
/// two deployments on separate databases of one server do not collide; another
/// application on the same database must not use this key.
pub const LOCK_KEY: i64 = 0x7374_6577_6172_6401;

/// How often a leader checks its connection between renewals (a ping, one
/// round trip): the bound on how long it leads on a session the server ended.
const WATCH: Duration = Duration::from_millis(100);

/// The database's clock, in Unix ms.
const NOW_MS: &str = "(extract(epoch FROM clock_timestamp()) * 1000)::bigint";

/// Elects this replica leader, or not, and publishes its [`Role`]. Build it with
/// [`Elector::new`], run [`Elector::run`] as a task, and read the role from
/// [`Elector::subscribe`].
pub struct Elector {
    options: PgConnectOptions,
    settings: ClusterSettings,
    role: watch::Sender<Role>,
    /// The backend process id of the dedicated connection, 0 while there is none.
    pid: AtomicI32,
}

/// Why a leader stopped leading.
enum StepDown {
    /// The elector is shutting down.
    Shutdown,
    /// The row shows another epoch or holder: someone else leads.
    Deposed,
    /// The renewal failed: the connection is lost or the database refused it.
    Failed(ClusterError),
    /// No renewal succeeded within the lease.
    LeaseExpired,
}

/// What one attempt at the lock gave.
enum Attempt {
    /// This replica leads in `epoch`, until `deadline` unless it renews.
    Won { epoch: i64, deadline: Instant },
    /// Another session holds the lock.
    Lost { leader: Option<String>, epoch: i64 },
    /// The elector was cancelled during the attempt.
    Cancelled,
}

/// The row of `cluster_leader`, with the database's clock at the time it was read.
#[derive(sqlx::FromRow)]
struct Row {
    epoch: i64,
    holder: String,
    lease_until: i64,
    now: i64,
}

impl Row {
    /// The holder, if its lease is still running.
    fn live_holder(&self) -> Option<String> {
        (self.lease_until > self.now && !self.holder.is_empty()).then(|| self.holder.clone())
    }
}

impl ClusterError {
    /// Whether this error means the elector's session is gone or unreachable: a
    /// timeout, or a database error that
    /// `store::writer::postgres_connection_lost` recognises.
    pub fn is_connection_loss(&self) -> bool {
        match self {
            ClusterError::Timeout(_) => true,
            ClusterError::Database(e) => crate::store::writer::postgres_connection_lost(e),
            _ => false,
        }
    }
}

/// `future`, or [`ClusterError::Timeout`] after `limit`.
async fn within<T>(
    limit: Duration,
    future: impl Future<Output = Result<T, sqlx::Error>>,
) -> Result<T, ClusterError> {
    match tokio::time::timeout(limit, future).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(ClusterError::Timeout(limit)),
    }
}

async fn read_row(conn: &mut PgConnection, lock: &str) -> Result<Row, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT epoch, holder, lease_until, {NOW_MS} AS now FROM cluster_leader {lock}"
    ))
    .fetch_one(conn)
    .await
}

impl Elector {
    /// An elector for the database at `url` (`postgres://user@host:port/db`),
    /// as a follower until [`Elector::run`] wins.
    pub fn new(url: &str, settings: ClusterSettings) -> Result<Elector, ClusterError> {
        settings.check()?;
        // The application name shows the session in pg_stat_activity.
        let options = PgConnectOptions::from_str(url)?
            .application_name(&format!("steward elector {}", settings.replica_id));
        let (role, _) = watch::channel(Role::Follower {
            leader: None,
            epoch: 0,
        });
        Ok(Elector {
            options,
            settings,
            role,
            pid: AtomicI32::new(0),
        })
    }

    /// This replica's role, now and as it changes.
    pub fn subscribe(&self) -> watch::Receiver<Role> {
        self.role.subscribe()
    }

    /// This replica's role now.
    pub fn role(&self) -> Role {
        self.role.borrow().clone()
    }

    /// The backend process id of the elector's connection, if it has one: the
    /// session to look for in `pg_stat_activity` (and to end, in tests).
    pub fn backend_pid(&self) -> Option<i32> {
        Some(self.pid.load(Ordering::Relaxed)).filter(|pid| *pid != 0)
    }

    pub fn settings(&self) -> &ClusterSettings {
        &self.settings
    }

    /// Publishes `role`, waking subscribers only if it changed.
    fn publish(&self, role: Role) {
        self.role.send_if_modified(|current| {
            let changed = *current != role;
            *current = role;
            changed
        });
    }

    /// Campaigns and leads until `cancel`: tries the lock every tick, leads while
    /// it renews, steps down at the first failure and tries again. A leader
    /// cancelled ends its lease at once (so that a successor need not wait for it)
    /// and closes its connection, which releases the lock.
    pub async fn run(&self, cancel: CancellationToken) {
        let mut conn: Option<PgConnection> = None;
        // The epoch this elector last led in: the row still showing it (after a
        // restart of the database, say) is a term this elector knows it ended.
        let mut last_led: Option<i64> = None;
        // Whether the last attempt failed: an outage is logged once.
        let mut failing = false;
        loop {
            match self.attempt(&mut conn, last_led, &cancel).await {
                Ok(Attempt::Won { epoch, deadline }) => {
                    failing = false;
                    last_led = Some(epoch);
                    self.publish(Role::Leader { epoch });
                    info!(
                        epoch,
                        replica = %self.settings.replica_id,
                        lease_ms = self.settings.lease.as_millis() as u64,
                        "became leader"
                    );
                    let why = match conn.as_mut() {
                        Some(c) => self.lead(c, epoch, deadline, &cancel).await,
                        None => StepDown::LeaseExpired,
                    };
                    // Before anything else: this replica no longer leads.
                    self.publish(Role::Follower {
                        leader: None,
                        epoch,
                    });
                    if matches!(&why, StepDown::Failed(e) if e.is_connection_loss()) {
                        failing = true;
                    }
                    if self.stepped_down(epoch, why, &mut conn).await {
                        break;
                    }
                    // One tick more than a follower's period before campaigning
                    // again, so that a healthy follower, which tries every tick,
                    // takes over before this replica could win back the lock.
                    tokio::select! {
                        _ = cancel.cancelled() => break,
                        _ = tokio::time::sleep(self.settings.tick()) => {}
                    }
                }
                Ok(Attempt::Lost { leader, epoch }) => {
                    if failing {
                        info!("the database is reachable again");
                        failing = false;
                    }
                    self.publish(Role::Follower { leader, epoch });
                }
                Ok(Attempt::Cancelled) => break,
                Err(e) => {
                    let epoch = self.role.borrow().epoch();
                    self.publish(Role::Follower {
                        leader: None,
                        epoch,
                    });
                    if !failing && e.is_connection_loss() {
                        warn!(error = %e, "lost the connection to the database");
                    } else if !failing {
                        warn!(error = %e, "the election failed; retrying every tick");
                    }
                    failing = true;
                    self.disconnect(&mut conn);
                }
            }
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tokio::time::sleep(self.settings.tick()) => {}
            }
        }
        self.disconnect(&mut conn);
    }

    /// Logs why this replica stepped down from `epoch` and lets the lock go
    /// (resigning on shutdown, else dropping the connection); true on shutdown.
    async fn stepped_down(
        &self,
        epoch: i64,
        why: StepDown,
        conn: &mut Option<PgConnection>,
    ) -> bool {
        let shutdown = matches!(why, StepDown::Shutdown);
        match why {
            StepDown::Shutdown => {
                if let Some(c) = conn.take() {
                    self.resign(c, epoch).await;
                }
                info!(epoch, reason = "shutting down", "stepped down");
            }
            StepDown::Deposed => {
                warn!(
                    epoch,
                    reason = "another replica holds the epoch",
                    "stepped down"
                );
            }
            StepDown::Failed(e) => {
                warn!(epoch, reason = "the lease could not be renewed", error = %e, "stepped down");
                if e.is_connection_loss() {
                    warn!(error = %e, "lost the connection to the database");
                }
            }
            StepDown::LeaseExpired => {
                warn!(
                    epoch,
                    reason = "no renewal succeeded within the lease",
                    "stepped down"
                );
            }
        }
        // A lost connection is useless, and a deposed one's lock must go.
        self.disconnect(conn);
        shutdown
    }

    /// Drops the connection (a lost one, or one whose lock must go).
    fn disconnect(&self, conn: &mut Option<PgConnection>) {
        *conn = None;
        self.pid.store(0, Ordering::Relaxed);
    }

    /// Connects if needed, then tries the lock once; on winning it, takes the
    /// epoch (after the previous leader's lease, if another's is still live).
    async fn attempt(
        &self,
        conn: &mut Option<PgConnection>,
        last_led: Option<i64>,
        cancel: &CancellationToken,
    ) -> Result<Attempt, ClusterError> {
        let limit = self.settings.lease;
        let c = match conn {
            Some(c) => c,
            None => {
                let mut c = within(limit, self.options.connect()).await?;
                let pid: i32 = within(
                    limit,
                    sqlx::query_scalar("SELECT pg_backend_pid()").fetch_one(&mut c),
                )
                .await?;
                self.pid.store(pid, Ordering::Relaxed);
                conn.insert(c)
            }
        };
        let won: bool = within(
            limit,
            sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                .bind(LOCK_KEY)
                .fetch_one(&mut *c),
        )
        .await?;
        if !won {
            let row = within(limit, read_row(c, "")).await?;
            return Ok(Attempt::Lost {
                leader: row.live_holder(),
                epoch: row.epoch,
            });
        }
        loop {
            // Measured before the row is locked: the database's lease ends after it.
            let started = Instant::now();
            let mut tx = within(limit, c.begin()).await?;
            let row = within(limit, read_row(&mut tx, "FOR UPDATE")).await?;
            let ours = row.holder == self.settings.replica_id && Some(row.epoch) == last_led;
            if row.lease_until > row.now && !ours {
                within(limit, tx.rollback()).await?;
                let wait = Duration::from_millis((row.lease_until - row.now).unsigned_abs());
                info!(
                    previous = %row.holder,
                    epoch = row.epoch,
                    wait_ms = wait.as_millis() as u64,
                    "won the lock; waiting for the previous leader's lease to end"
                );
                self.publish(Role::Follower {
                    leader: Some(row.holder),
                    epoch: row.epoch,
                });
                tokio::select! {
                    _ = cancel.cancelled() => return Ok(Attempt::Cancelled),
                    _ = tokio::time::sleep(wait) => continue,
                }
            }
            let lease_ms = self.settings.lease.as_millis() as i64;
            let epoch: i64 = within(
                limit,
                sqlx::query_scalar(&format!(
                    "UPDATE cluster_leader SET epoch = epoch + 1, holder = $1, \
                     lease_until = {NOW_MS} + $2 RETURNING epoch"
                ))
                .bind(&self.settings.replica_id)
                .bind(lease_ms)
                .fetch_one(&mut *tx),
            )
            .await?;
            within(limit, tx.commit()).await?;
            return Ok(Attempt::Won {
                epoch,
                deadline: started + self.settings.lease,
            });
        }
    }

    /// Leads in `epoch`: renews the lease every tick until a renewal fails, the
    /// lease runs out without one, or `cancel`.
    async fn lead(
        &self,
        conn: &mut PgConnection,
        epoch: i64,
        mut deadline: Instant,
        cancel: &CancellationToken,
    ) -> StepDown {
        let tick = self.settings.tick();
        let lease_ms = self.settings.lease.as_millis() as i64;
        let renew = format!(
            "UPDATE cluster_leader SET lease_until = {NOW_MS} + $1 \
             WHERE epoch = $2 AND holder = $3"
        );
        loop {
            let next = (Instant::now() + tick).min(deadline);
            if let Some(why) = self.watch(conn, next, cancel).await {
                return why;
            }
            let sent = Instant::now();
            if sent >= deadline {
                return StepDown::LeaseExpired;
            }
            // A renewal may take until the lease ends, not longer: then this
            // replica must already have stepped down.
            let renewal = tokio::time::timeout(
                deadline - sent,
                sqlx::query(&renew)
                    .bind(lease_ms)
                    .bind(epoch)
                    .bind(&self.settings.replica_id)
                    .execute(&mut *conn),
            );
            let result = tokio::select! {
                _ = cancel.cancelled() => return StepDown::Shutdown,
                result = renewal => result,
            };
            match result {
                Ok(Ok(done)) if done.rows_affected() == 1 => deadline = sent + self.settings.lease,
                Ok(Ok(_)) => return StepDown::Deposed,
                Ok(Err(e)) => return StepDown::Failed(e.into()),
                Err(_) => return StepDown::LeaseExpired,
            }
        }
    }

    /// Waits until `until`, pinging the connection every [`WATCH`] on the way:
    /// a session the server ended, or a socket that closed, fails the next ping,
    /// and the leader steps down then rather than at its next renewal. `None`
    /// when `until` came with the connection alive.
    async fn watch(
        &self,
        conn: &mut PgConnection,
        until: Instant,
        cancel: &CancellationToken,
    ) -> Option<StepDown> {
        loop {
            let now = Instant::now();
            if now >= until {
                return None;
            }
            tokio::select! {
                _ = cancel.cancelled() => return Some(StepDown::Shutdown),
                _ = tokio::time::sleep_until(until.min(now + WATCH)) => {}
            }
            if Instant::now() >= until {
                return None;
            }
            // A ping that does not come back within the rest of the period is
            // left to the renewal, which has the lease's own deadline.
            let ping = tokio::time::timeout(until - Instant::now(), conn.ping());
            let result = tokio::select! {
                _ = cancel.cancelled() => return Some(StepDown::Shutdown),
                result = ping => result,
            };
            if let Ok(Err(e)) = result {
                return Some(StepDown::Failed(e.into()));
            }
        }
    }

    /// Ends this leader's lease now (so a successor need not wait for it) and
    /// closes the connection, which releases the lock; best effort, bounded by a
    /// tick: a leader that cannot do it leaves a lease that runs out by itself.
    async fn resign(&self, mut conn: PgConnection, epoch: i64) {
        let sql = format!(
            "UPDATE cluster_leader SET lease_until = {NOW_MS} WHERE epoch = $1 AND holder = $2"
        );
        let end = sqlx::query(&sql)
            .bind(epoch)
            .bind(&self.settings.replica_id)
            .execute(&mut conn);
        if let Err(e) = within(self.settings.tick(), end).await {
            warn!(epoch, error = %e, "could not end the lease on stepping down");
        }
        let _ = within(self.settings.tick(), conn.close()).await;
    }
}

/// Fences the writer's transaction `tx` at `epoch`, the epoch in which this
/// replica leads ([`Role::Leader`]): refuses with [`ClusterError::Deposed`] if the
/// cluster has moved on to another epoch. Call it in the transaction that makes
/// the write, before committing; until then the epoch cannot change (the row is
/// read `FOR KEY SHARE`, which a takeover's `FOR UPDATE` waits for, while a
/// leader's renewal, a no-key update, does not), so a write committed after
/// `fence` is from the cluster's current epoch.
/// The check is `store::fence`'s, which the registry's writes use too.
pub async fn fence(tx: &mut Transaction<'_, Postgres>, epoch: i64) -> Result<(), ClusterError> {
    crate::store::fence(tx, epoch).await.map_err(|e| match e {
        StoreError::Deposed { mine, current } => ClusterError::Deposed { mine, current },
        StoreError::NoLeaderRow => ClusterError::NoRow,
        StoreError::Sql(e) => ClusterError::Database(e),
        other => ClusterError::Database(sqlx::Error::Protocol(other.to_string())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lock_key_is_steward_then_one() {
        assert_eq!(LOCK_KEY.to_be_bytes(), *b"steward\x01");
        assert_eq!(LOCK_KEY, 8_319_385_975_070_548_993);
    }
}
