//! Reads of many rows (the dashboard's week of per-minute rollups: ten thousand
//! rows of fifty columns) through rusqlite, on read-only connections of their
//! own, off the async workers.
//!
//! Through sqlx such a read cost ten times what SQLite itself spends on it
//! (120 ms against 12 ms for a week of minutes, `benches/dashboard.rs`): every
//! row crosses from the connection's worker thread in a message of its own and
//! every value is decoded through a type check. Here a value is one C call.
//! The connections (at most [`MAX_IDLE`] kept between reads) are opened on
//! first use, read-only, with the pool's busy timeout; in WAL mode a reader
//! never waits for the writer.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OpenFlags};

use super::StoreError;

/// Connections kept between reads.
const MAX_IDLE: usize = 2;

/// Read-only connections to one database file.
#[derive(Debug)]
pub(super) struct Readers {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl Readers {
    pub(super) fn new(path: PathBuf) -> Arc<Readers> {
        Arc::new(Readers {
            path,
            idle: Mutex::new(Vec::new()),
        })
    }

    /// Runs `read` on a connection of its own on a blocking thread.
    pub(super) async fn run<T, F>(self: &Arc<Self>, read: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let readers = self.clone();
        tokio::task::spawn_blocking(move || {
            let conn = match readers.idle.lock().ok().and_then(|mut idle| idle.pop()) {
                Some(conn) => conn,
                None => readers.open()?,
            };
            let out = read(&conn)?;
            if let Ok(mut idle) = readers.idle.lock() {
                if idle.len() < MAX_IDLE && conn.is_autocommit() {
                    idle.push(conn);
                }
            }
            Ok(out)
        })
        .await
        .map_err(|_| StoreError::ReadPanicked)?
    }

    fn open(&self) -> Result<Connection, StoreError> {
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(super::BUSY_TIMEOUT)?;
        Ok(conn)
    }

    /// Closes the idle connections.
    pub(super) fn close(&self) {
        if let Ok(mut idle) = self.idle.lock() {
            idle.clear();
        }
    }
}
