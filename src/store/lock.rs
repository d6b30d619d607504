//! One daemon per database: an exclusive lock on a file beside it
//! (`<database>.lock`, holding the owner's pid), taken before the database is
//! opened and held until the daemon exits. The operating system releases it when
//! the process ends however it ends, so a crash leaves no stale lock. A second
//! `serve` on the same database stops at once, naming the running one, before it
//! changes anything (it used to mark the running daemon's retrain as failed).
//!
//! This lock protects the daemon's own files; other processes may still open
//! the database (SQLite's locking keeps that safe), as `steward` tests do.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

/// Why the lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "database {database} is in use by another steward (pid {pid}, lock file {lock}): stop it \
         first, or give this one another database.url"
    )]
    Held {
        database: String,
        lock: String,
        pid: String,
    },
    #[error("database {database}: cannot use the lock file {lock}: {source}")]
    Io {
        database: String,
        lock: String,
        source: std::io::Error,
    },
}

/// The held lock; dropping it releases the lock.
#[derive(Debug)]
pub struct InstanceLock {
    _file: File,
    pub path: PathBuf,
}

impl InstanceLock {
    /// Takes the lock of the database at `database`, or says who holds it.
    pub fn acquire(database: &Path) -> Result<InstanceLock, LockError> {
        let mut name = database.as_os_str().to_owned();
        name.push(".lock");
        let path = PathBuf::from(name);
        let io = |source| LockError::Io {
            database: database.display().to_string(),
            lock: path.display().to_string(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut pid = String::new();
                let _ = file.read_to_string(&mut pid);
                let pid = pid.trim();
                return Err(LockError::Held {
                    database: database.display().to_string(),
                    lock: path.display().to_string(),
                    pid: if pid.is_empty() { "unknown" } else { pid }.to_string(),
                });
            }
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        file.flush().map_err(io)?;
        Ok(InstanceLock { _file: file, path })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_database_names_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("data/s.db");
        let held = InstanceLock::acquire(&db).unwrap();
        assert_eq!(held.path, dir.path().join("data/s.db.lock"));
        let err = InstanceLock::acquire(&db).unwrap_err().to_string();
        assert!(
            err.contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        drop(held);
        InstanceLock::acquire(&db).unwrap();
    }
}
