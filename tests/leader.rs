//! Leader election on PostgreSQL (`steward::cluster`, issue 19 item 3): electors
//! on one throwaway server (tests/common/pg.rs), with a 2 s lease and a 0.5 s
//! poll. Times are real (PostgreSQL is), but no test sleeps a fixed time: each
//! waits on the role's watch channel, with a limit. A referee watches every pair
//! of electors and counts the moments both say they lead.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::{Connection, PgConnection};
use steward::cluster::{fence, ClusterError, ClusterSettings, Elector, Role};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::common::eventually;
use crate::common::pg::Postgres;

const LEASE: Duration = Duration::from_secs(2);
const POLL: Duration = Duration::from_millis(500);

fn settings(id: &str) -> ClusterSettings {
    ClusterSettings {
        lease: LEASE,
        poll: POLL,
        replica_id: id.to_string(),
    }
}

/// A server with a database `name` at migration 0008; `None` where PostgreSQL
/// is not installed (the test skips).
async fn database(name: &str) -> Option<(Postgres, String)> {
    let pg = Postgres::launch()?;
    let url = pg.database(name);
    let mut conn = PgConnection::connect(&url).await.unwrap();
    sqlx::migrate!("./migrations/postgres")
        .run(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    Some((pg, url))
}

/// One replica's elector, running as a task.
struct Replica {
    id: String,
    elector: Arc<Elector>,
    role: watch::Receiver<Role>,
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

impl Replica {
    fn start(url: &str, id: &str) -> Replica {
        Replica::start_with(url, settings(id))
    }

    fn start_with(url: &str, settings: ClusterSettings) -> Replica {
        let id = settings.replica_id.clone();
        let elector = Arc::new(Elector::new(url, settings).unwrap());
        let cancel = CancellationToken::new();
        let task = tokio::spawn({
            let (elector, cancel) = (elector.clone(), cancel.clone());
            async move { elector.run(cancel).await }
        });
        Replica {
            id,
            role: elector.subscribe(),
            elector,
            cancel,
            task,
        }
    }

    /// Waits up to `limit` for a role that satisfies `what`.
    async fn until(&mut self, limit: Duration, what: impl FnMut(&Role) -> bool) -> Role {
        let role = tokio::time::timeout(limit, self.role.wait_for(what)).await;
        let role = role.unwrap_or_else(|_| {
            panic!(
                "{}: no such role within {limit:?}; it is {:?}",
                self.id,
                self.elector.role()
            )
        });
        role.unwrap().clone()
    }

    /// Whether a role that satisfies `what` comes within `limit`.
    async fn comes(&mut self, limit: Duration, what: impl FnMut(&Role) -> bool) -> bool {
        let found = tokio::time::timeout(limit, self.role.wait_for(what)).await;
        matches!(found, Ok(Ok(_)))
    }

    /// Waits up to a lease for this replica to follow `leader` in `epoch`.
    async fn follows(&mut self, leader: &str, epoch: i64) {
        let expected = Role::Follower {
            leader: Some(leader.to_string()),
            epoch,
        };
        self.until(LEASE, |r| *r == expected).await;
    }

    async fn leads(&mut self, limit: Duration) -> i64 {
        self.until(limit, Role::is_leader).await.epoch()
    }

    /// Cancels the elector and waits for it to end.
    async fn stop(self) {
        self.cancel.cancel();
        tokio::time::timeout(LEASE, self.task)
            .await
            .expect("the elector did not end within the lease")
            .unwrap();
    }
}

/// Counts the moments at which two electors both say they lead.
fn referee(a: &Replica, b: &Replica) -> Arc<AtomicUsize> {
    let both = Arc::new(AtomicUsize::new(0));
    let (mut a, mut b) = (a.role.clone(), b.role.clone());
    tokio::spawn({
        let both = both.clone();
        async move {
            loop {
                if a.borrow().is_leader() && b.borrow().is_leader() {
                    both.fetch_add(1, Ordering::Relaxed);
                }
                tokio::select! {
                    r = a.changed() => if r.is_err() { break },
                    r = b.changed() => if r.is_err() { break },
                }
            }
        }
    });
    both
}

/// The first of `replicas` to lead, its index and epoch.
async fn first_leader(replicas: &mut [Replica; 2], limit: Duration) -> (usize, i64) {
    let [a, b] = replicas;
    let (mut ra, mut rb) = (a.role.clone(), b.role.clone());
    let wait = async {
        tokio::select! {
            r = ra.wait_for(Role::is_leader) => (0, r.unwrap().epoch()),
            r = rb.wait_for(Role::is_leader) => (1, r.unwrap().epoch()),
        }
    };
    tokio::time::timeout(limit, wait)
        .await
        .expect("nobody leads")
}

/// Replicas "a" and "b" on `url`, once one leads: (the leader, the other, the
/// epoch, their referee's count).
async fn elect(url: &str) -> (Replica, Replica, i64, Arc<AtomicUsize>) {
    let mut replicas = [Replica::start(url, "a"), Replica::start(url, "b")];
    let both = referee(&replicas[0], &replicas[1]);
    let (i, epoch) = first_leader(&mut replicas, LEASE).await;
    let [a, b] = replicas;
    if i == 0 {
        (a, b, epoch, both)
    } else {
        (b, a, epoch, both)
    }
}

/// Ends the session `pid` from the server's side (`pg_terminate_backend`), as
/// a crash of its backend or a cut connection would.
async fn end_session(admin: &mut PgConnection, pid: i32) {
    let ended: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
        .bind(pid)
        .fetch_one(admin)
        .await
        .unwrap();
    assert!(ended, "backend {pid} not ended");
}

/// The row of `cluster_leader`.
async fn row(url: &str) -> (i64, String) {
    let mut conn = PgConnection::connect(url).await.unwrap();
    let row = sqlx::query_as("SELECT epoch, holder FROM cluster_leader")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    row
}

/// Two electors: exactly one leads, in epoch 1, and the other names it. The
/// leader stopped cleanly ends its lease, so the other leads at its next try
/// (within a tick, not a lease), in epoch 2; a third replica then takes over
/// from it in epoch 3.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_electors_one_leader_and_the_epoch_counts_the_changes() {
    let Some((_pg, url)) = database("two").await else {
        return;
    };
    let (leader, mut follower, epoch, both) = elect(&url).await;
    assert_eq!(epoch, 1);
    follower.follows(&leader.id, 1).await;
    // A few ticks later still one leader, and the row names it.
    assert!(
        !follower.comes(4 * POLL, Role::is_leader).await,
        "the follower took over from a live leader"
    );
    assert_eq!(leader.elector.role(), Role::Leader { epoch: 1 });
    assert_eq!(row(&url).await, (1, leader.id.clone()));

    let stopped = Instant::now();
    let old = leader.id.clone();
    leader.stop().await;
    assert_eq!(follower.leads(LEASE).await, 2);
    let handover = stopped.elapsed();
    eprintln!("handover after a clean stop: {handover:?}");
    assert!(
        handover < POLL + Duration::from_millis(500),
        "a resigned lease is not waited for: {handover:?}"
    );
    assert_eq!(row(&url).await, (2, follower.id.clone()));

    let mut third = Replica::start(&url, "c");
    let both_late = referee(&follower, &third);
    third
        .until(
            LEASE,
            |r| matches!(r, Role::Follower { leader: Some(l), epoch: 2 } if *l != old),
        )
        .await;
    follower.stop().await;
    assert_eq!(third.leads(LEASE).await, 3);
    third.stop().await;
    assert_eq!(both.load(Ordering::Relaxed), 0, "two leaders at once");
    assert_eq!(both_late.load(Ordering::Relaxed), 0, "two leaders at once");
}

/// The leader's session is ended by the server (`pg_terminate_backend`): the
/// leader reports Follower at its next ping, and the other leads
/// once the old lease has run out: within the lease (plus a poll) of the kill.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_connection_is_killed_steps_down_and_the_other_leads_within_the_lease() {
    let Some((_pg, url)) = database("killed").await else {
        return;
    };
    let (mut leader, mut follower, epoch, both) = elect(&url).await;
    assert_eq!(epoch, 1);
    let pid = leader
        .elector
        .backend_pid()
        .expect("the leader's backend pid");

    let mut admin = PgConnection::connect(&url).await.unwrap();
    let killed = Instant::now();
    end_session(&mut admin, pid).await;
    leader.until(LEASE, |r| !r.is_leader()).await;
    let stepped_down = killed.elapsed();
    assert_eq!(follower.leads(LEASE + POLL).await, 2);
    let failover = killed.elapsed();
    eprintln!("killed session: the leader stepped down after {stepped_down:?}, the other led after {failover:?}");
    assert!(
        stepped_down < POLL + Duration::from_millis(300),
        "the leader noticed late: {stepped_down:?}"
    );
    assert!(failover < LEASE + POLL, "failover took {failover:?}");
    // The old leader, back on a new session, follows the new one.
    leader.follows(&follower.id, 2).await;
    assert_ne!(leader.elector.backend_pid(), Some(pid));
    assert_eq!(both.load(Ordering::Relaxed), 0, "two leaders at once");
    leader.stop().await;
    follower.stop().await;
}

/// A leader whose session the server ends steps down within a ping (100 ms),
/// not at its next renewal: with a 3 s tick, the session is ended just after a
/// renewal (the lease in the row moved), so the next renewal is 3 s away, and
/// the leader reports Follower well before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_steps_down_as_soon_as_its_session_ends_not_at_its_next_renewal() {
    let Some((_pg, url)) = database("watch").await else {
        return;
    };
    let tick = Duration::from_secs(3);
    let settings = ClusterSettings {
        lease: tick * 3,
        poll: tick,
        replica_id: "a".into(),
    };
    assert_eq!(settings.tick(), tick);
    let mut leader = Replica::start_with(&url, settings);
    assert_eq!(leader.leads(tick).await, 1);
    let pid = leader
        .elector
        .backend_pid()
        .expect("the leader's backend pid");

    let mut admin = PgConnection::connect(&url).await.unwrap();
    let lease = || async {
        sqlx::query_scalar::<_, i64>("SELECT lease_until FROM cluster_leader")
            .fetch_one(&mut PgConnection::connect(&url).await.unwrap())
            .await
            .unwrap()
    };
    let first = lease().await;
    eventually("a renewal", tick * 2, || async { lease().await != first }).await;
    let killed = Instant::now();
    end_session(&mut admin, pid).await;
    leader.until(tick, |r| !r.is_leader()).await;
    let stepped_down = killed.elapsed();
    eprintln!(
        "session ended right after a renewal: stepped down after {stepped_down:?} (tick {tick:?})"
    );
    assert!(
        stepped_down < tick / 3,
        "stepped down after {stepped_down:?}: at the renewal, not at the ping"
    );
    leader.stop().await;
}

/// A write fenced with a deposed leader's epoch is refused with `Deposed` (and
/// not made); the current leader's is made. A fenced transaction held open longer
/// than the lease does not stop the leader renewing it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deposed_leaders_fenced_write_is_refused() {
    let Some((_pg, url)) = database("fence").await else {
        return;
    };
    let mut writer = PgConnection::connect(&url).await.unwrap();
    sqlx::query("CREATE TABLE published (epoch BIGINT NOT NULL)")
        .execute(&mut writer)
        .await
        .unwrap();
    async fn publish(conn: &mut PgConnection, epoch: i64) -> Result<(), ClusterError> {
        let mut tx = conn.begin().await?;
        fence(&mut tx, epoch).await?;
        sqlx::query("INSERT INTO published (epoch) VALUES ($1)")
            .bind(epoch)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    let (mut leader, mut follower, first, both) = elect(&url).await;
    publish(&mut writer, first).await.unwrap();

    // A fenced transaction open for longer than the lease: the leader keeps
    // renewing (FOR KEY SHARE does not block its no-key update).
    let mut tx = writer.begin().await.unwrap();
    fence(&mut tx, first).await.unwrap();
    assert!(
        !leader.comes(LEASE + POLL, |r| !r.is_leader()).await,
        "the leader lost its lease to an open fence"
    );
    tx.commit().await.unwrap();

    // Depose the leader: its session ends, the other leads in a new epoch.
    let pid = leader.elector.backend_pid().unwrap();
    let mut admin = PgConnection::connect(&url).await.unwrap();
    end_session(&mut admin, pid).await;
    let second = follower.leads(LEASE + POLL).await;
    assert_eq!(second, first + 1);

    match publish(&mut writer, first).await {
        Err(ClusterError::Deposed { mine, current }) => {
            assert_eq!((mine, current), (first, second));
        }
        other => panic!("a deposed leader's write: {other:?}"),
    }
    publish(&mut writer, second).await.unwrap();
    let written: Vec<i64> = sqlx::query_scalar("SELECT epoch FROM published ORDER BY epoch")
        .fetch_all(&mut writer)
        .await
        .unwrap();
    assert_eq!(written, [first, second]);
    let e = ClusterError::Deposed {
        mine: first,
        current: second,
    };
    assert_eq!(
        e.to_string(),
        "deposed: this replica led in epoch 1, the cluster is in epoch 2"
    );
    assert_eq!(both.load(Ordering::Relaxed), 0, "two leaders at once");
    leader.stop().await;
    follower.stop().await;
}

/// PostgreSQL stopped: the leader steps down at its next renewal and nobody
/// leads while it is down; started again, a replica leads again, in the next
/// epoch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarted_the_leader_steps_down_and_someone_leads_again() {
    let Some((mut pg, url)) = database("restart").await else {
        return;
    };
    let mut replicas = [Replica::start(&url, "a"), Replica::start(&url, "b")];
    let both = referee(&replicas[0], &replicas[1]);
    let (i, first) = first_leader(&mut replicas, LEASE).await;
    assert_eq!(first, 1);

    let stopping = Instant::now();
    tokio::task::block_in_place(|| pg.stop());
    replicas[i]
        .until(LEASE + POLL, |r| {
            *r == Role::Follower {
                leader: None,
                epoch: 1,
            }
        })
        .await;
    eprintln!(
        "database stopped: the leader stepped down {:?} after the stop began",
        stopping.elapsed()
    );
    // Down for more than a lease: nobody leads.
    let nobody = tokio::time::timeout(LEASE + POLL, first_leader(&mut replicas, LEASE * 10)).await;
    assert!(nobody.is_err(), "a replica led without the database");

    tokio::task::block_in_place(|| pg.start());
    let started = Instant::now();
    let (_, epoch) = first_leader(&mut replicas, LEASE + 2 * POLL).await;
    eprintln!("database started: a leader after {:?}", started.elapsed());
    assert_eq!(epoch, 2);
    assert_eq!(both.load(Ordering::Relaxed), 0, "two leaders at once");
    let [a, b] = replicas;
    a.stop().await;
    b.stop().await;
}
