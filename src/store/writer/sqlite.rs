//! The prediction log's SQLite insert: a connection of the writer's own (rusqlite,
//! on the bundled SQLite that sqlx links too), used from one dedicated thread.
//!
//! Each batch is one `BEGIN IMMEDIATE` transaction in which one prepared
//! single-row INSERT is bound and stepped once per row. Through sqlx every
//! statement crossed to its connection's worker thread and back, and every bound
//! string was copied once more on the way, so the writer sent few, long multi-row
//! statements (and had to keep their sizes few: each distinct one stayed prepared,
//! about half a megabyte for 256 rows). Here a statement costs a function call, so
//! one short statement serves every batch size and SQLite holds one small
//! prepared statement for the log, whatever the load.
//!
//! The same transaction adds the batch's per-minute counts to
//! `prediction_rollups` (`store::rollups`): the rows are tallied in memory while
//! they are inserted, then one upsert per (minute, model version) of the batch,
//! so the rollups never count a row that is not stored, nor miss one that is.
//!
//! The async writer talks to the thread through [`SqliteSink`]: one hand-off per
//! batch, not per statement.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rusqlite::{Connection, OpenFlags, TransactionBehavior};
use tokio::sync::{mpsc, oneshot};

use super::PredictionRow;
use crate::store::rollups::{self, Tally};
use crate::store::{Store, StoreError};

const INSERT: &str = "INSERT INTO predictions \
    (id, time, model_version, features, output, latency_us, anomaly_score, anomaly) \
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)";

/// A connection that writes prediction rows (blocking: call it from a thread
/// that may block, as [`SqliteSink`] does).
pub struct SqliteLog {
    conn: Connection,
}

impl SqliteLog {
    /// Opens a connection to the database of `store`, with the settings
    /// `store::open` gives the pool's: `synchronous = NORMAL` (the journal is
    /// already WAL: that is a property of the file), foreign keys on, and a 5 s
    /// busy timeout.
    pub fn open(store: &Store) -> Result<SqliteLog, StoreError> {
        SqliteLog::open_path(&db_path(store))
    }

    fn open_path(path: &Path) -> Result<SqliteLog, StoreError> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(crate::store::BUSY_TIMEOUT)?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", true)?;
        Ok(SqliteLog { conn })
    }

    /// Writes `rows` and their rollups in one transaction: all of them or none.
    pub fn insert(&mut self, rows: &[PredictionRow]) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut tally = Tally::default();
        {
            let mut stmt = tx.prepare_cached(INSERT)?;
            for r in rows {
                stmt.execute((
                    &r.id,
                    r.time,
                    &*r.model_version,
                    &r.features,
                    &r.output,
                    r.latency_us,
                    r.anomaly_score,
                    r.anomaly,
                ))?;
                tally.add(r.time, &r.model_version, r.latency_us, r.anomaly);
            }
        }
        add_rollups(&tx, &tally)?;
        tx.commit()?;
        Ok(())
    }

    /// Whether the connection is outside any transaction, as it must be between
    /// batches. A failed statement's transaction is rolled back when it is
    /// dropped; when SQLite has already rolled it back by itself (SQLITE_FULL,
    /// SQLITE_IOERR), that ROLLBACK fails harmlessly. Should one ever be left
    /// open, the caller closes the connection and opens a new one (see
    /// `store::open` on what a connection stuck in a transaction did).
    fn is_clean(&self) -> bool {
        self.conn.is_autocommit()
    }
}

/// Adds a batch's counts to `prediction_rollups`: one upsert per (minute,
/// model version).
fn add_rollups(tx: &rusqlite::Transaction<'_>, tally: &Tally) -> rusqlite::Result<()> {
    let mut stmt = tx.prepare_cached(rollups::prediction_upsert_sql())?;
    for (minute, version, c) in tally.entries() {
        stmt.raw_bind_parameter(1, minute)?;
        stmt.raw_bind_parameter(2, &**version)?;
        stmt.raw_bind_parameter(3, c.predictions)?;
        stmt.raw_bind_parameter(4, c.anomalies)?;
        stmt.raw_bind_parameter(5, c.latency_us_sum)?;
        for (i, n) in c.latency.iter().enumerate() {
            stmt.raw_bind_parameter(6 + i, n)?;
        }
        stmt.raw_execute()?;
    }
    Ok(())
}

/// `store`'s database file (an empty path for a store that is not SQLite's:
/// opening it fails).
fn db_path(store: &Store) -> PathBuf {
    store
        .sqlite_pool()
        .map(|pool| pool.connect_options().get_filename().to_path_buf())
        .unwrap_or_default()
}

struct Job {
    rows: Arc<Vec<PredictionRow>>,
    reply: oneshot::Sender<Result<(), StoreError>>,
}

/// The async side of the writer's thread.
pub(super) struct SqliteSink {
    path: PathBuf,
    jobs: mpsc::Sender<Job>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SqliteSink {
    /// Starts the thread. It opens its connection at the first batch (and again
    /// after a failure that left it unusable), so an unavailable database is a
    /// failed write, retried like any other.
    pub(super) fn start(store: &Store) -> Result<SqliteSink, StoreError> {
        let path = db_path(store);
        let (jobs, thread) = spawn_thread(path.clone())?;
        Ok(SqliteSink {
            path,
            jobs,
            thread: Some(thread),
        })
    }

    /// Writes `rows` in one transaction on the writer's thread. The caller keeps
    /// the rows (to retry them) until this returns.
    pub(super) async fn write(&mut self, rows: &Arc<Vec<PredictionRow>>) -> Result<(), StoreError> {
        if self.jobs.is_closed() {
            // The thread ended (it can only panic): start another.
            tracing::error!("the log writer's thread ended: started again");
            let (jobs, thread) = spawn_thread(self.path.clone())?;
            self.jobs = jobs;
            self.thread = Some(thread);
        }
        let (reply, answer) = oneshot::channel();
        let job = Job {
            rows: rows.clone(),
            reply,
        };
        if self.jobs.send(job).await.is_err() {
            return Err(StoreError::WriterGone);
        }
        answer.await.unwrap_or(Err(StoreError::WriterGone))
    }

    /// Ends the thread after its last batch and closes its connection.
    pub(super) async fn close(mut self) {
        let thread = self.thread.take();
        drop(self.jobs);
        if let Some(t) = thread {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
    }
}

fn spawn_thread(
    path: PathBuf,
) -> Result<(mpsc::Sender<Job>, std::thread::JoinHandle<()>), StoreError> {
    let (jobs, mut rx) = mpsc::channel::<Job>(1);
    let thread = std::thread::Builder::new()
        .name("steward-log".into())
        .spawn(move || {
            let mut log: Option<SqliteLog> = None;
            while let Some(job) = rx.blocking_recv() {
                let result = match &mut log {
                    Some(l) => l.insert(&job.rows),
                    None => {
                        SqliteLog::open_path(&path).and_then(|l| log.insert(l).insert(&job.rows))
                    }
                };
                if log.as_ref().is_some_and(|l| !l.is_clean()) {
                    tracing::warn!(
                        "the log writer's connection was left inside a failed transaction: reopened"
                    );
                    log = None;
                }
                // The writer waits for every reply; if it is gone, so is the daemon.
                let _ = job.reply.send(result);
            }
        })
        .map_err(StoreError::Thread)?;
    Ok((jobs, thread))
}

/// Writes `rows` in one transaction through a connection opened for the purpose.
pub(super) async fn insert_once(store: &Store, rows: Vec<PredictionRow>) -> Result<(), StoreError> {
    let path = db_path(store);
    tokio::task::spawn_blocking(move || SqliteLog::open_path(&path)?.insert(&rows))
        .await
        .map_err(|_| StoreError::WriterGone)?
}
