//! The prediction log's local spool, for a replica on PostgreSQL
//! (`database.spool_dir`; docs/CLUSTER.md, "What happens on each failure"). Each
//! batch is written to a file in the spool directory before its predictions
//! are answered; a shipper task then writes it to PostgreSQL, and a file whose
//! every batch is in the database is deleted. A written batch outlives the
//! process (it is in the operating system's cache); it is synced to the disk
//! (`fdatasync`) before the answer too when `database.spool_sync_secs` is 0,
//! else at the first append after that long since the last sync, so that a
//! power loss loses at most about that long of answers not yet in PostgreSQL.
//! A replica killed with -9, or stopped while PostgreSQL is down, finds its
//! files at the next start and writes them first, skipping the rows already
//! stored (a batch may have been committed just before the kill), so what it
//! answered is stored once.
//!
//! The files are segments `<number>.spool`, a new one every
//! [`SEGMENT_BYTES`]. A segment is a sequence of records, one per batch:
//! its payload's length and CRC-32 (little-endian u32s), then the payload: the
//! row count (u32), then per row its id, time, model version, features,
//! output, latency, anomaly score and flag (strings as a u32 length and UTF-8,
//! integers and floats as 8 little-endian bytes, the score after a presence
//! byte). A record cut short or failing its checksum ends the segment: only a
//! crash in the middle of an append leaves one, and the batch it held was
//! never answered.
//!
//! One process owns a spool directory: `spool.lock` in it is locked while the
//! spool is open, so two replicas given the same directory stop at the second.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{ErrorKind, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::PredictionRow;
use crate::store::StoreError;

/// A segment is closed, and the next begun, once it holds this many bytes.
pub const SEGMENT_BYTES: u64 = 16 << 20;

/// The open spool: the segment being appended to, and the directory's lock.
pub struct Spool {
    dir: PathBuf,
    file: File,
    segment: u64,
    bytes: u64,
    buf: Vec<u8>,
    /// Sync at most this long after the last sync; zero: at every append.
    sync_every: Duration,
    synced: Instant,
    _lock: File,
}

/// A segment left by an earlier run, to be written before anything new.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leftover {
    pub path: PathBuf,
    pub segment: u64,
}

fn spool_error(path: &Path, source: std::io::Error) -> StoreError {
    StoreError::Spool {
        path: path.display().to_string(),
        source,
    }
}

/// The path of segment `segment` in `dir`.
fn segment_path(dir: &Path, segment: u64) -> PathBuf {
    dir.join(format!("{segment:016}.spool"))
}

/// The segments in `dir`, oldest first.
fn segments(dir: &Path) -> Result<Vec<Leftover>, StoreError> {
    let mut found = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| spool_error(dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| spool_error(dir, e))?;
        let name = entry.file_name();
        let Some(number) = name.to_str().and_then(|n| n.strip_suffix(".spool")) else {
            continue;
        };
        if let Ok(segment) = number.parse::<u64>() {
            found.push(Leftover {
                path: entry.path(),
                segment,
            });
        }
    }
    found.sort_by_key(|l| l.segment);
    Ok(found)
}

impl Spool {
    /// Opens the spool in `dir` (created if missing), syncing it to the disk
    /// at most `sync_every` after the last sync (zero: at every append): locks
    /// it, and begins a new segment after any left by an earlier run, which it
    /// returns, oldest first.
    pub fn open(dir: &Path, sync_every: Duration) -> Result<(Spool, Vec<Leftover>), StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| spool_error(dir, e))?;
        let lock_path = dir.join("spool.lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| spool_error(&lock_path, e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(spool_error(
                    &lock_path,
                    std::io::Error::new(
                        ErrorKind::WouldBlock,
                        "another steward uses this spool directory: give each replica its own \
                         database.spool_dir",
                    ),
                ))
            }
            Err(TryLockError::Error(e)) => return Err(spool_error(&lock_path, e)),
        }
        let leftovers = segments(dir)?;
        let segment = leftovers.last().map_or(1, |l| l.segment + 1);
        let (file, _) = Spool::create(dir, segment)?;
        Ok((
            Spool {
                dir: dir.to_path_buf(),
                file,
                segment,
                bytes: 0,
                buf: Vec::new(),
                sync_every,
                synced: Instant::now(),
                _lock: lock,
            },
            leftovers,
        ))
    }

    /// Creates segment `segment` and makes its name durable (the directory is
    /// synced), so that a batch synced into it is found after a crash.
    fn create(dir: &Path, segment: u64) -> Result<(File, PathBuf), StoreError> {
        let path = segment_path(dir, segment);
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)
            .map_err(|e| spool_error(&path, e))?;
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| spool_error(dir, e))?;
        Ok((file, path))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Appends `rows` as one record (synced to the disk as `sync_every` says);
    /// returns the segment that holds it. Blocking: call it off the async
    /// threads.
    pub fn append(&mut self, rows: &[PredictionRow]) -> Result<u64, StoreError> {
        if self.bytes >= SEGMENT_BYTES {
            let next = self.segment + 1;
            let (file, _) = Spool::create(&self.dir, next)?;
            self.file = file;
            self.segment = next;
            self.bytes = 0;
        }
        encode(rows, &mut self.buf)?;
        let path = || segment_path(&self.dir, self.segment);
        if let Err(e) = self.file.write_all(&self.buf) {
            // Cut off what part of the record was written, so that the next
            // record follows the last whole one; failing that, begin anew.
            if self.file.set_len(self.bytes).is_err() {
                self.bytes = SEGMENT_BYTES;
            }
            return Err(spool_error(&path(), e));
        }
        self.bytes += self.buf.len() as u64;
        if self.synced.elapsed() >= self.sync_every {
            self.file.sync_data().map_err(|e| spool_error(&path(), e))?;
            self.synced = Instant::now();
        }
        Ok(self.segment)
    }
}

impl Drop for Spool {
    /// A spool closed (at the stop) is synced: what it holds then is what
    /// PostgreSQL did not take.
    fn drop(&mut self) {
        if let Err(e) = self.file.sync_data() {
            tracing::warn!(dir = %self.dir.display(), error = %e, "cannot sync the spool at the stop");
        }
    }
}

/// Deletes the segments in `dir` numbered below `until` (their batches are all
/// in the database). A failure is logged: the rows would be written again,
/// and skipped, at the next start.
pub fn remove_before(dir: &Path, until: u64) {
    let Ok(found) = segments(dir) else { return };
    for l in found.into_iter().filter(|l| l.segment < until) {
        if let Err(e) = std::fs::remove_file(&l.path) {
            tracing::warn!(path = %l.path.display(), error = %e, "cannot delete a shipped spool segment");
        }
    }
}

/// The batches of the segment at `path`, in order. A torn or corrupt record
/// ends it, with a warning naming the file and offset.
pub fn read(path: &Path) -> Result<Vec<Vec<PredictionRow>>, StoreError> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(|e| spool_error(path, e))?;
    let mut batches = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        match record(&bytes[at..]) {
            Some((rows, used)) => {
                batches.push(rows);
                at += used;
            }
            None => {
                tracing::warn!(
                    path = %path.display(),
                    offset = at,
                    bytes = bytes.len() - at,
                    "spool segment ends in an incomplete record (a crash during an append); \
                     its batch was never answered and is skipped"
                );
                break;
            }
        }
    }
    Ok(batches)
}

/// One record at the start of `bytes`: its rows and its length, or `None` if
/// it is cut short or fails its checksum.
fn record(bytes: &[u8]) -> Option<(Vec<PredictionRow>, usize)> {
    let mut r = Reader(bytes);
    let len = r.u32()? as usize;
    let crc = r.u32()?;
    let payload = r.take(len)?;
    if crc32fast::hash(payload) != crc {
        return None;
    }
    Some((decode(payload)?, 8 + len))
}

fn encode(rows: &[PredictionRow], buf: &mut Vec<u8>) -> Result<(), StoreError> {
    buf.clear();
    buf.extend_from_slice(&[0; 8]);
    let count = u32::try_from(rows.len()).map_err(|_| too_large("batch"))?;
    buf.extend_from_slice(&count.to_le_bytes());
    for r in rows {
        text(buf, &r.id)?;
        buf.extend_from_slice(&r.time.to_le_bytes());
        text(buf, &r.model_version)?;
        text(buf, &r.features)?;
        text(buf, &r.output)?;
        buf.extend_from_slice(&r.latency_us.to_le_bytes());
        match r.anomaly_score {
            Some(s) => {
                buf.push(1);
                buf.extend_from_slice(&s.to_le_bytes());
            }
            None => buf.push(0),
        }
        buf.push(u8::from(r.anomaly));
    }
    let len = u32::try_from(buf.len() - 8).map_err(|_| too_large("batch"))?;
    let crc = crc32fast::hash(&buf[8..]);
    buf[..4].copy_from_slice(&len.to_le_bytes());
    buf[4..8].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

fn too_large(what: &str) -> StoreError {
    StoreError::Decode(format!("a spool {what} over 4 GiB"))
}

fn text(buf: &mut Vec<u8>, s: &str) -> Result<(), StoreError> {
    let len = u32::try_from(s.len()).map_err(|_| too_large("field"))?;
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(s.as_bytes());
    Ok(())
}

fn decode(payload: &[u8]) -> Option<Vec<PredictionRow>> {
    let mut r = Reader(payload);
    let count = r.u32()? as usize;
    let mut rows = Vec::with_capacity(count.min(1 << 20));
    let mut versions: Vec<Arc<str>> = Vec::new();
    for _ in 0..count {
        let id = r.text()?;
        let time = r.i64()?;
        let version = r.text()?;
        // Rows of a batch share a few versions: one allocation each.
        let model_version = match versions.iter().find(|v| ***v == *version) {
            Some(v) => v.clone(),
            None => {
                let v: Arc<str> = Arc::from(version);
                versions.push(v.clone());
                v
            }
        };
        let features = r.text()?;
        let output = r.text()?;
        let latency_us = r.i64()?;
        let anomaly_score = match r.take(1)?[0] {
            0 => None,
            _ => Some(f64::from_le_bytes(r.take(8)?.try_into().ok()?)),
        };
        let anomaly = r.take(1)?[0] != 0;
        rows.push(PredictionRow {
            id,
            time,
            model_version,
            features,
            output,
            latency_us,
            anomaly_score,
            anomaly,
        });
    }
    r.0.is_empty().then_some(rows)
}

/// Reads fields off the front of a byte slice; `None` when it runs out.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }

    fn i64(&mut self) -> Option<i64> {
        Some(i64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }

    fn text(&mut self) -> Option<String> {
        let len = self.u32()? as usize;
        String::from_utf8(self.take(len)?.to_vec()).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::writer::tests::rows;

    fn same(a: &[PredictionRow], b: &[PredictionRow]) {
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            assert_eq!(
                (
                    &x.id,
                    x.time,
                    &*x.model_version,
                    &x.features,
                    &x.output,
                    x.latency_us,
                    x.anomaly_score,
                    x.anomaly
                ),
                (
                    &y.id,
                    y.time,
                    &*y.model_version,
                    &y.features,
                    &y.output,
                    y.latency_us,
                    y.anomaly_score,
                    y.anomaly
                )
            );
        }
    }

    /// Batches appended come back whole and in order from the segment, and a
    /// reopened spool lists the segment as left over and begins the next.
    #[test]
    fn appended_batches_read_back_and_are_left_over_at_the_next_open() {
        let dir = tempfile::tempdir().unwrap();
        let (mut spool, left) = Spool::open(dir.path(), Duration::ZERO).unwrap();
        assert!(left.is_empty());
        let (a, b) = (rows(3, 0), rows(250, 3));
        assert_eq!(spool.append(&a).unwrap(), 1);
        assert_eq!(spool.append(&b).unwrap(), 1);
        drop(spool);
        let (spool, left) = Spool::open(dir.path(), Duration::ZERO).unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].segment, 1);
        assert_eq!(spool.segment, 2);
        let batches = read(&left[0].path).unwrap();
        assert_eq!(batches.len(), 2);
        same(&batches[0], &a);
        same(&batches[1], &b);
    }

    /// A record cut short by a crash, or with a flipped byte, ends the
    /// segment: the batches before it are read, nothing after.
    #[test]
    fn a_torn_or_corrupt_record_ends_the_segment() {
        let dir = tempfile::tempdir().unwrap();
        let (mut spool, _) = Spool::open(dir.path(), Duration::ZERO).unwrap();
        spool.append(&rows(5, 0)).unwrap();
        spool.append(&rows(5, 5)).unwrap();
        drop(spool);
        let path = segment_path(dir.path(), 1);
        let whole = std::fs::read(&path).unwrap();
        std::fs::write(&path, &whole[..whole.len() - 3]).unwrap();
        let batches = read(&path).unwrap();
        assert_eq!(batches.len(), 1);
        same(&batches[0], &rows(5, 0));

        let mut flipped = whole.clone();
        let last = flipped.len() - 10;
        flipped[last] ^= 0x40;
        std::fs::write(&path, &flipped).unwrap();
        assert_eq!(read(&path).unwrap().len(), 1);
    }

    /// A second spool on the same directory is refused, naming the key.
    #[test]
    fn one_process_per_spool_directory() {
        let dir = tempfile::tempdir().unwrap();
        let (_spool, _) = Spool::open(dir.path(), Duration::ZERO).unwrap();
        let Err(e) = Spool::open(dir.path(), Duration::ZERO) else {
            panic!("a second spool opened");
        };
        assert!(e.to_string().contains("database.spool_dir"), "{e}");
    }

    /// A full segment gives way to the next, and removing the shipped ones
    /// leaves the rest.
    #[test]
    fn segments_roll_over_and_shipped_ones_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let (mut spool, _) = Spool::open(dir.path(), Duration::ZERO).unwrap();
        spool.bytes = SEGMENT_BYTES;
        assert_eq!(spool.append(&rows(1, 0)).unwrap(), 2);
        spool.bytes = SEGMENT_BYTES;
        assert_eq!(spool.append(&rows(1, 1)).unwrap(), 3);
        remove_before(dir.path(), 3);
        let left: Vec<u64> = segments(dir.path())
            .unwrap()
            .iter()
            .map(|l| l.segment)
            .collect();
        assert_eq!(left, [3]);
    }
}
