//! The prediction log writer: one task that owns all writes to `predictions`, fed
//! by a bounded channel, committing one transaction per batch through a sink
//! (SQLite: `sqlite`, a connection of its own on a dedicated thread;
//! PostgreSQL: `postgres`, a connection of its own writing each batch by COPY).
//!
//! A batch is written when it reaches `database.batch_rows` rows or
//! `database.flush_secs` after its first row, whichever comes first.
//!
//! When the queue is full a request waits for room up to `database.queue_wait_secs`
//! (back-pressure: under normal load nothing is lost). If there is still no room,
//! the row is dropped, the request is still answered, and `dropped` counts it
//! (`steward_log_rows_dropped_total` on /metrics). When a write fails (database
//! locked, full, read-only) the writer logs an error, marks itself unhealthy
//! (readiness fails) and retries the same batch with back-off until it succeeds or
//! the daemon stops; rows still unwritten at the stop are counted as dropped.
//!
//! On PostgreSQL with a spool (`database.spool_dir`, `spool`), a batch is first
//! written to a local file (synced to the disk as `database.spool_sync_secs`
//! says); a request that waits for its rows to be kept ([`LogHandle::sync`],
//! every prediction's by default) is answered then, and the shipper (`ship`)
//! writes the batch to the database, retrying, while the writer goes on. Rows
//! not stored at a stop or a crash are written at the next start.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

mod postgres;
mod ship;
pub mod spool;
mod sqlite;

pub use postgres::PostgresLog;
pub(crate) use postgres::{
    connection_lost as postgres_connection_lost, unavailable as postgres_unavailable,
};
pub use spool::{Leftover, Spool};
pub use sqlite::SqliteLog;

use super::{Store, StoreError};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// One logged prediction.
#[derive(Debug, Clone)]
pub struct PredictionRow {
    pub id: String,
    /// Unix milliseconds.
    pub time: i64,
    pub model_version: Arc<str>,
    /// JSON object text.
    pub features: String,
    /// JSON text.
    pub output: String,
    pub latency_us: i64,
    pub anomaly_score: Option<f64>,
    /// Whether the answer said `anomaly: true` (the score over the model's
    /// threshold).
    pub anomaly: bool,
}

enum Msg {
    Row(PredictionRow),
    /// Answered once every row sent before it is committed.
    Flush(oneshot::Sender<()>),
    /// Answered once every row sent before it would outlive the process: in
    /// the spool if there is one, else committed.
    Sync(oneshot::Sender<()>),
}

/// Counters shared between the writer and its handles.
#[derive(Debug, Default)]
pub struct LogStats {
    pub written: AtomicU64,
    pub dropped: AtomicU64,
    pub failed_writes: AtomicU64,
    unhealthy: AtomicBool,
    last_error: Mutex<Option<String>>,
}

impl LogStats {
    /// `None` when the last write succeeded, else its error.
    pub fn error(&self) -> Option<String> {
        if !self.unhealthy.load(Ordering::Relaxed) {
            return None;
        }
        self.last_error.lock().ok().and_then(|e| e.clone())
    }
}

/// Tuning of the writer.
#[derive(Debug, Clone, Copy)]
pub struct WriterConfig {
    pub capacity: usize,
    pub batch_rows: usize,
    pub flush: Duration,
    pub queue_wait: Duration,
}

/// The sending side, cheap to clone.
#[derive(Clone)]
pub struct LogHandle {
    tx: mpsc::Sender<Msg>,
    stats: Arc<LogStats>,
    queue_wait: Duration,
    capacity: usize,
    spooled: bool,
}

impl LogHandle {
    /// Queues `row`; returns `false` if it had to be dropped.
    pub async fn log(&self, row: PredictionRow) -> bool {
        let msg = match self.tx.try_send(Msg::Row(row)) {
            Ok(()) => return true,
            Err(mpsc::error::TrySendError::Full(msg)) => msg,
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                return false;
            }
        };
        match self.tx.send_timeout(msg, self.queue_wait).await {
            Ok(()) => true,
            Err(_) => {
                let dropped = self.stats.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                if dropped.is_power_of_two() {
                    tracing::warn!(dropped, "prediction log queue full: rows dropped");
                }
                false
            }
        }
    }

    /// Waits until every row queued before this call is committed (or the writer
    /// is gone). Returns `false` if the writer is gone.
    pub async fn flush(&self) -> bool {
        self.wait(Msg::Flush).await
    }

    /// Waits until every row queued before this call would outlive the
    /// process: written to the spool, or committed where there is none.
    /// Returns `false` if the writer is gone.
    pub async fn sync(&self) -> bool {
        self.wait(Msg::Sync).await
    }

    async fn wait(&self, msg: fn(oneshot::Sender<()>) -> Msg) -> bool {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(msg(tx)).await.is_err() {
            return false;
        }
        rx.await.is_ok()
    }

    /// Whether rows go through a spool ([`LogHandle::sync`] is then quicker
    /// than [`LogHandle::flush`]).
    pub fn spooled(&self) -> bool {
        self.spooled
    }

    /// Rows waiting in the queue.
    pub fn depth(&self) -> usize {
        self.capacity - self.tx.capacity()
    }

    pub fn stats(&self) -> &LogStats {
        &self.stats
    }
}

/// Starts the writer task. It stops when `cancel` fires (after writing what is
/// queued, within one retry) or when every handle is dropped. `spool` (opened
/// by [`Spool::open`], with the segments it found) is used on PostgreSQL only.
pub fn spawn(
    store: Store,
    cfg: WriterConfig,
    spool: Option<(Spool, Vec<Leftover>)>,
    cancel: CancellationToken,
) -> (LogHandle, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(cfg.capacity);
    let stats = Arc::new(LogStats::default());
    let spool = spool.filter(|_| store.is_postgres());
    let handle = LogHandle {
        tx,
        stats: stats.clone(),
        queue_wait: cfg.queue_wait,
        capacity: cfg.capacity,
        spooled: spool.is_some(),
    };
    let task = tokio::spawn(async move {
        let started = Sink::start(&store, spool, &cfg, &stats, &cancel);
        let mut sink = match started {
            Ok(sink) => sink,
            Err(e) => {
                // Only a thread that cannot be spawned gets here: the rows are
                // counted as dropped and readiness fails.
                tracing::error!(error = %e, "the prediction log writer cannot start; rows are dropped");
                if let Ok(mut last) = stats.last_error.lock() {
                    *last = Some(e.to_string());
                }
                stats.unhealthy.store(true, Ordering::Relaxed);
                drop_all(rx, &stats, &cancel).await;
                return;
            }
        };
        run(&mut sink, rx, &stats, &cfg, &cancel).await;
        sink.close().await;
    });
    (handle, task)
}

/// Writes `rows` and their rollups in one transaction through a connection
/// opened for the purpose (for tests and benches that need rows in
/// `predictions`; the daemon's writer keeps its connection).
pub async fn insert(store: &Store, rows: Vec<PredictionRow>) -> Result<(), StoreError> {
    match store.postgres_url() {
        Some(url) => {
            let mut log = PostgresLog::connect(url).await?;
            let result = log.insert(&rows).await;
            log.close().await;
            result
        }
        None => sqlite::insert_once(store, rows).await,
    }
}

/// Where the batches go: the database's insert of a batch of rows, in one
/// transaction; or, with a spool, the spool, and from there the shipper.
enum Sink {
    Sqlite(sqlite::SqliteSink),
    Postgres(postgres::PostgresSink),
    Spooled {
        /// `None` only while an append runs on a blocking thread.
        spool: Option<Spool>,
        shipper: ship::Shipper,
    },
}

impl Sink {
    fn start(
        store: &Store,
        spool: Option<(Spool, Vec<Leftover>)>,
        cfg: &WriterConfig,
        stats: &Arc<LogStats>,
        cancel: &CancellationToken,
    ) -> Result<Sink, StoreError> {
        match (store.postgres_url(), spool) {
            (Some(url), Some((spool, leftovers))) => {
                let shipper = ship::Shipper::spawn(
                    url,
                    ship::ShipperConfig {
                        dir: spool.dir().to_path_buf(),
                        leftovers,
                        // As many rows as the queue holds (`queue_capacity`).
                        capacity: cfg.capacity,
                        batch_rows: cfg.batch_rows,
                        stats: stats.clone(),
                        cancel: cancel.clone(),
                    },
                );
                Ok(Sink::Spooled {
                    spool: Some(spool),
                    shipper,
                })
            }
            (Some(url), None) => Ok(Sink::Postgres(postgres::PostgresSink::new(url))),
            (None, _) => sqlite::SqliteSink::start(store).map(Sink::Sqlite),
        }
    }

    /// Answers `flushes` once the rows before them are committed: now, or
    /// behind the shipper's batches.
    fn flushed(&self, flushes: Vec<oneshot::Sender<()>>) {
        for f in flushes {
            match self {
                Sink::Spooled { shipper, .. } => shipper.flush(f),
                _ => {
                    let _ = f.send(());
                }
            }
        }
    }

    async fn close(self) {
        match self {
            Sink::Sqlite(s) => s.close().await,
            Sink::Postgres(s) => s.close().await,
            Sink::Spooled { spool, shipper } => {
                drop(spool);
                shipper.finish().await;
            }
        }
    }
}

/// Something a batch is written to, retried by [`write_retrying`].
trait Batches {
    /// Writes `rows`; the number of them now stored in the database (none for
    /// a batch only spooled).
    async fn put(&mut self, rows: &Arc<Vec<PredictionRow>>) -> Result<u64, StoreError>;
}

impl Batches for Sink {
    async fn put(&mut self, rows: &Arc<Vec<PredictionRow>>) -> Result<u64, StoreError> {
        match self {
            Sink::Sqlite(s) => s.write(rows).await.map(|()| rows.len() as u64),
            Sink::Postgres(s) => s.put(rows).await,
            Sink::Spooled { spool, shipper } => {
                let mut open = spool.take().ok_or(StoreError::WriterGone)?;
                let batch = rows.clone();
                let (open, appended) = tokio::task::spawn_blocking(move || {
                    let appended = open.append(&batch);
                    (open, appended)
                })
                .await
                .map_err(|_| StoreError::WriterGone)?;
                *spool = Some(open);
                shipper.send(rows, appended?).await?;
                Ok(0)
            }
        }
    }
}

/// What a batch not written when the stop comes is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum AtStop {
    /// Lost: counted as dropped.
    Lost,
    /// Kept in the spool, for the next start.
    Kept,
}

/// Counts every row sent as dropped and answers every flush, until the stop or
/// until every handle is gone (when the writer cannot run at all).
async fn drop_all(mut rx: mpsc::Receiver<Msg>, stats: &LogStats, cancel: &CancellationToken) {
    loop {
        let m = tokio::select! {
            m = rx.recv() => m,
            () = cancel.cancelled() => rx.try_recv().ok(),
        };
        let Some(m) = m else { return };
        match m {
            Msg::Row(_) => {
                stats.dropped.fetch_add(1, Ordering::Relaxed);
            }
            Msg::Flush(f) | Msg::Sync(f) => {
                let _ = f.send(());
            }
        }
    }
}

async fn run(
    sink: &mut Sink,
    mut rx: mpsc::Receiver<Msg>,
    stats: &LogStats,
    cfg: &WriterConfig,
    cancel: &CancellationToken,
) {
    let mut msgs: Vec<Msg> = Vec::with_capacity(cfg.batch_rows);
    loop {
        msgs.clear();
        let stopping = tokio::select! {
            n = rx.recv_many(&mut msgs, cfg.batch_rows) => n == 0,
            () = cancel.cancelled() => true,
        };
        if stopping {
            // Take whatever is still queued, write it, and leave.
            while let Ok(m) = rx.try_recv() {
                msgs.push(m);
            }
            write_all(sink, std::mem::take(&mut msgs), stats, cfg, cancel).await;
            return;
        }
        // Then gather the rest of the batch by looking at the queue every
        // `GATHER_POLL` rather than waking on each row: under load rows arrive
        // one per request, and a wake-up per row (a task scheduled, often a
        // parked worker thread woken) cost more CPU than writing the row.
        let deadline = Instant::now() + cfg.flush;
        loop {
            let rows = rows_in(&msgs);
            let waited = |m: &Msg| matches!(m, Msg::Flush(_) | Msg::Sync(_));
            if rows >= cfg.batch_rows || msgs.iter().any(waited) {
                break;
            }
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            tokio::time::sleep_until(deadline.min(now + GATHER_POLL)).await;
            let mut room = cfg.batch_rows - rows;
            while room > 0 {
                match rx.try_recv() {
                    Ok(m) => {
                        room -= usize::from(matches!(m, Msg::Row(_)));
                        msgs.push(m);
                    }
                    Err(_) => break,
                }
            }
        }
        write_all(sink, std::mem::take(&mut msgs), stats, cfg, cancel).await;
        msgs = Vec::with_capacity(cfg.batch_rows);
    }
}

/// How often a batch being gathered looks at the queue.
const GATHER_POLL: Duration = Duration::from_millis(1);

fn rows_in(msgs: &[Msg]) -> usize {
    msgs.iter().filter(|m| matches!(m, Msg::Row(_))).count()
}

/// Writes the rows of `msgs` (retrying until success or cancellation), then answers
/// the syncs and flushes among them.
async fn write_all(
    sink: &mut Sink,
    msgs: Vec<Msg>,
    stats: &LogStats,
    cfg: &WriterConfig,
    cancel: &CancellationToken,
) {
    let mut batches: Vec<Vec<PredictionRow>> = Vec::new();
    let (mut flushes, mut syncs) = (Vec::new(), Vec::new());
    for m in msgs {
        match m {
            Msg::Row(r) => match batches.last_mut() {
                Some(b) if b.len() < cfg.batch_rows => b.push(r),
                _ => {
                    let mut b = Vec::with_capacity(cfg.batch_rows);
                    b.push(r);
                    batches.push(b);
                }
            },
            Msg::Flush(f) => flushes.push(f),
            Msg::Sync(f) => syncs.push(f),
        }
    }
    for batch in batches {
        write_retrying(sink, &Arc::new(batch), stats, cancel, AtStop::Lost).await;
    }
    for f in syncs {
        let _ = f.send(());
    }
    sink.flushed(flushes);
}

/// Writes `batch` to `sink`, retrying with back-off until it succeeds or the
/// stop comes; true once written. While it fails the log is unhealthy (readiness
/// fails) and the error is logged, again every 5 s.
async fn write_retrying(
    sink: &mut impl Batches,
    batch: &Arc<Vec<PredictionRow>>,
    stats: &LogStats,
    cancel: &CancellationToken,
    at_stop: AtStop,
) -> bool {
    let mut backoff = Duration::from_millis(50);
    loop {
        match sink.put(batch).await {
            Ok(stored) => {
                stats.written.fetch_add(stored, Ordering::Relaxed);
                if stats.unhealthy.swap(false, Ordering::Relaxed) {
                    tracing::info!("prediction log writes succeed again");
                }
                return true;
            }
            Err(e) => {
                stats.failed_writes.fetch_add(1, Ordering::Relaxed);
                if !stats.unhealthy.swap(true, Ordering::Relaxed)
                    || backoff >= Duration::from_secs(5)
                {
                    tracing::error!(error = %e, rows = batch.len(), retry_in_ms = backoff.as_millis() as u64,
                        "cannot write the prediction log (database locked, full, read-only or away?); serving continues, rows are held and retried");
                }
                if let Ok(mut last) = stats.last_error.lock() {
                    *last = Some(e.to_string());
                }
                if cancel.is_cancelled() {
                    if at_stop == AtStop::Lost {
                        stats
                            .dropped
                            .fetch_add(batch.len() as u64, Ordering::Relaxed);
                        tracing::error!(
                            rows = batch.len(),
                            "stopping with unwritten prediction log rows: they are lost"
                        );
                    }
                    return false;
                }
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = cancel.cancelled() => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use std::sync::Arc;

    use super::*;

    /// Rows `from..from + n`, with two versions, some scores and anomalies.
    pub(super) fn rows(n: usize, from: usize) -> Vec<PredictionRow> {
        (from..from + n)
            .map(|i| PredictionRow {
                id: format!("id-{i}"),
                time: 1_700_000_000_000 + i as i64,
                model_version: Arc::from(if i % 2 == 0 { "1" } else { "2" }),
                features: format!("{{\"a\":{i}}}"),
                output: "{\"prediction\":\"Adelie\"}".into(),
                latency_us: i as i64,
                anomaly_score: (i % 3 == 0).then_some(i as f64 / 7.0),
                anomaly: i % 5 == 0,
            })
            .collect()
    }

    /// Batches of every size leave SQLite's memory bounded: a prepared
    /// statement cached for each distinct row count would grow it with every
    /// new size the writer happens to flush (an hour's soak sees hundreds).
    #[tokio::test]
    async fn batches_of_every_size_keep_sqlites_memory_bounded() {
        let _alone = crate::store::tests::SQLITE_MEMORY.lock().await;
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::open(&dir.path().join("t.db")).await.unwrap();
        let mut log = SqliteLog::open(&store).unwrap();
        let mut next = 0;
        for n in 1..=20 {
            log.insert(&rows(n, next)).unwrap();
            next += n;
        }
        let before = crate::store::sqlite_memory_bytes();
        for n in 21..=400 {
            log.insert(&rows(n, next)).unwrap();
            next += n;
        }
        let after = crate::store::sqlite_memory_bytes();
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM predictions")
            .fetch_one(store.sqlite_pool().unwrap())
            .await
            .unwrap();
        assert_eq!(count as usize, next);
        // One multi-row statement per size took it up by 42 MB here; five
        // standard sizes by about 1 MB; one single-row statement by less (other
        // tests' databases share the count).
        assert!(after < before + 16_000_000, "{before} -> {after}");
    }

    /// Every row sent is written, a flush is answered once the rows before it
    /// are committed, and cancelling writes what is still queued.
    #[tokio::test]
    async fn every_queued_row_is_written_by_flush_and_by_the_stop() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::open(&dir.path().join("t.db")).await.unwrap();
        let count = || async {
            sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM predictions")
                .fetch_one(store.sqlite_pool().unwrap())
                .await
                .unwrap() as usize
        };
        let cancel = CancellationToken::new();
        let cfg = WriterConfig {
            capacity: 10_000,
            batch_rows: 300,
            flush: Duration::from_secs(60),
            queue_wait: Duration::from_secs(1),
        };
        let (handle, task) = spawn(store.clone(), cfg, None, cancel.clone());
        for r in rows(1_000, 0) {
            assert!(handle.log(r).await);
        }
        assert!(handle.flush().await);
        assert_eq!(count().await, 1_000);
        for r in rows(2_345, 1_000) {
            assert!(handle.log(r).await);
        }
        cancel.cancel();
        task.await.unwrap();
        assert_eq!(count().await, 3_345);
        let stats = handle.stats();
        assert_eq!(stats.written.load(Ordering::Relaxed), 3_345);
        assert_eq!(stats.dropped.load(Ordering::Relaxed), 0);
        assert_eq!(stats.error(), None);
    }
}
