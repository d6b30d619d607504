//! The spool's shipper (`spool`): a task that writes to PostgreSQL the batches
//! the writer has written to the spool, in order, retrying while the
//! database is away, and deletes each segment once all of it is stored. It
//! first writes the segments an earlier run left, skipping rows already stored.
//! Flushes (a feedback request waiting for its prediction to be in the
//! database, the drain at a stop) reach it behind the batches sent before them.
//!
//! At a stop it writes what is still queued with one try per batch; if the
//! database refuses, the rest stays in the spool for the next start (counted
//! neither as written nor as dropped).

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::postgres::PostgresSink;
use super::spool::{self, Leftover};
use super::{write_retrying, AtStop, Batches, LogStats, PredictionRow};
use crate::store::StoreError;

/// What the writer hands the shipper.
pub(super) enum Ship {
    /// A batch now written to segment `.1`, holding its rows' share of the
    /// shipper's room until it is dropped.
    Batch(Arc<Vec<PredictionRow>>, u64, OwnedSemaphorePermit),
    /// Answered once every batch sent before it is stored.
    Flush(oneshot::Sender<()>),
}

/// The running shipper: where to send, and the task to wait for at the stop.
pub(super) struct Shipper {
    tx: mpsc::UnboundedSender<Ship>,
    /// One permit per row the shipper may hold (`database.queue_capacity`): a
    /// writer with more to hand over waits, and its queue fills.
    room: Arc<Semaphore>,
    rows: u32,
    task: JoinHandle<()>,
}

/// The shipper's settings and shared state.
pub(super) struct ShipperConfig {
    pub(super) dir: PathBuf,
    pub(super) leftovers: Vec<Leftover>,
    /// Rows the shipper may hold.
    pub(super) capacity: usize,
    pub(super) batch_rows: usize,
    pub(super) stats: Arc<LogStats>,
    pub(super) cancel: CancellationToken,
}

impl Shipper {
    pub(super) fn spawn(url: &str, cfg: ShipperConfig) -> Shipper {
        let (tx, rx) = mpsc::unbounded_channel();
        let rows = u32::try_from(cfg.capacity.max(1)).unwrap_or(u32::MAX);
        let room = Arc::new(Semaphore::new(rows as usize));
        let pg = PostgresSink::new(url);
        let task = tokio::spawn(run(pg, cfg, rx));
        Shipper {
            tx,
            room,
            rows,
            task,
        }
    }

    /// Hands over `rows`, written to `segment`, once the shipper has room for them.
    pub(super) async fn send(
        &self,
        rows: &Arc<Vec<PredictionRow>>,
        segment: u64,
    ) -> Result<(), StoreError> {
        let n = u32::try_from(rows.len()).unwrap_or(u32::MAX).min(self.rows);
        let permit = self
            .room
            .clone()
            .acquire_many_owned(n)
            .await
            .map_err(|_| StoreError::WriterGone)?;
        self.tx
            .send(Ship::Batch(rows.clone(), segment, permit))
            .map_err(|_| StoreError::WriterGone)
    }

    /// Answers `flush` once the batches sent before it are stored (at once if
    /// the shipper is gone).
    pub(super) fn flush(&self, flush: oneshot::Sender<()>) {
        if let Err(mpsc::error::SendError(Ship::Flush(f))) = self.tx.send(Ship::Flush(flush)) {
            let _ = f.send(());
        }
    }

    /// Waits for the shipper to write (or keep) what it was sent; call it after
    /// every sender is dropped.
    pub(super) async fn finish(self) {
        drop(self.tx);
        let _ = self.task.await;
    }
}

/// A leftover batch: only its rows not already stored are written.
struct Missing<'a>(&'a mut PostgresSink);

impl Batches for Missing<'_> {
    async fn put(&mut self, rows: &Arc<Vec<PredictionRow>>) -> Result<u64, StoreError> {
        self.0.write_missing(rows).await
    }
}

impl Batches for PostgresSink {
    async fn put(&mut self, rows: &Arc<Vec<PredictionRow>>) -> Result<u64, StoreError> {
        self.write(rows).await.map(|()| rows.len() as u64)
    }
}

async fn run(mut pg: PostgresSink, cfg: ShipperConfig, mut rx: mpsc::UnboundedReceiver<Ship>) {
    let stats = &cfg.stats;
    // Set when a write failed at the stop: from then on everything is kept.
    let mut kept = 0u64;
    let mut keeping = false;
    for leftover in &cfg.leftovers {
        if keeping {
            break;
        }
        keeping = !replay(&mut pg, leftover, &cfg).await;
    }
    let mut current: Option<u64> = None;
    // A message taken while gathering a batch that does not belong in it.
    let mut next: Option<Ship> = None;
    loop {
        let m = match next.take() {
            Some(m) => m,
            None => match rx.recv().await {
                Some(m) => m,
                None => break,
            },
        };
        let (mut rows, first, room) = match m {
            Ship::Flush(f) => {
                let _ = f.send(());
                continue;
            }
            Ship::Batch(rows, segment, room) => (rows, segment, room),
        };
        // The writer's batches are as small as its answers need (a sync per
        // fsync); PostgreSQL gets them joined up to `batch_rows`, one
        // transaction for all the batches waiting.
        let mut last = first;
        let mut rooms = vec![room];
        while rows.len() < cfg.batch_rows {
            match rx.try_recv() {
                Ok(Ship::Batch(more, segment, room)) => {
                    Arc::make_mut(&mut rows).extend(more.iter().cloned());
                    last = segment;
                    rooms.push(room);
                }
                Ok(flush) => {
                    next = Some(flush);
                    break;
                }
                Err(_) => break,
            }
        }
        if keeping {
            kept += rows.len() as u64;
            continue;
        }
        if current.is_some_and(|c| first > c) {
            // Every batch of the earlier segments is stored.
            spool::remove_before(&cfg.dir, first);
        }
        current = Some(last);
        if !write_retrying(&mut pg, &rows, stats, &cfg.cancel, AtStop::Kept).await {
            keeping = true;
            kept += rows.len() as u64;
        }
        drop(rooms);
    }
    if keeping {
        tracing::warn!(
            rows = kept,
            dir = %cfg.dir.display(),
            "prediction log rows not stored at the stop are kept in the spool; they are written at the next start"
        );
    } else {
        // Everything sent is stored, and the writer has closed the spool.
        spool::remove_before(&cfg.dir, u64::MAX);
    }
    pg.close().await;
}

/// Writes the leftover segment's rows not stored yet, then deletes it; false
/// if the stop came first (the segment stays).
async fn replay(pg: &mut PostgresSink, leftover: &Leftover, cfg: &ShipperConfig) -> bool {
    let path = &leftover.path;
    let batches = match spool::read(path) {
        Ok(b) => b,
        Err(e) => {
            // Unreadable, not torn: set aside for a person, never deleted.
            let aside = path.with_extension("unreadable");
            tracing::error!(path = %path.display(), aside = %aside.display(), error = %e,
                "cannot read a spool segment left by the last run; it is set aside, its rows are not stored");
            let _ = std::fs::rename(path, &aside);
            return true;
        }
    };
    let rows: usize = batches.iter().map(Vec::len).sum();
    tracing::info!(path = %path.display(), rows, "writing prediction log rows the last run left in the spool");
    let before = cfg.stats.written.load(Ordering::Relaxed);
    for batch in &batches {
        for chunk in batch.chunks(cfg.batch_rows.max(1)) {
            let chunk = Arc::new(chunk.to_vec());
            let done = write_retrying(
                &mut Missing(pg),
                &chunk,
                &cfg.stats,
                &cfg.cancel,
                AtStop::Kept,
            )
            .await;
            if !done {
                return false;
            }
        }
    }
    let stored = cfg.stats.written.load(Ordering::Relaxed) - before;
    tracing::info!(
        path = %path.display(),
        rows,
        stored,
        already = rows as u64 - stored.min(rows as u64),
        "spool segment written; rows already stored were skipped"
    );
    if let Err(e) = std::fs::remove_file(path) {
        tracing::warn!(path = %path.display(), error = %e, "cannot delete a written spool segment");
    }
    true
}
