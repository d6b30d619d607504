//! Checks of what a config points at on this machine: the files and directories
//! the daemon will read and write. `serve` runs them before it starts anything and
//! `check-config` runs the same ones, so a config that `check-config` passes is
//! not refused by `serve` for a reason either could have seen.
//!
//! Nothing here is left behind: a directory is checked the way the daemon will
//! use it, by creating it if it is missing and a file inside it, and both are
//! removed again. (`access(2)` would not do: for root it says yes to /proc.) What the config's values
//! mean on their own is `config`'s business; what the database holds is `store`'s.

use std::path::{Path, PathBuf};

use crate::alert::mail::{MailError, Mailer};
use crate::config::{Config, BUNDLED_DATA};
use crate::model::artifact::{self, ArtifactError};

/// A path the daemon cannot use, or a file it cannot read.
#[derive(Debug, thiserror::Error)]
pub enum PreflightError {
    #[error("{key} = {path}: {reason}")]
    Path {
        key: &'static str,
        path: String,
        reason: String,
    },
    #[error(transparent)]
    Mail(#[from] MailError),
    #[error("model.initial (needed on this first start): {0}")]
    Initial(#[from] ArtifactError),
}

/// Runs every check; the first failure is returned.
pub fn check(config: &Config) -> Result<(), PreflightError> {
    Mailer::from_config(config)?;
    if let Some(db) = config.database_at.sqlite_path() {
        let db_dir = db
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        writable_dir("database.url", db_dir)?;
    }
    let model = &config.model;
    writable_dir("model.dir", Path::new(&model.dir))?;
    if config.alerts.transport == crate::config::Transport::File {
        writable_dir("alerts.dir", Path::new(&config.alerts.dir))?;
    }
    // On a first start the first model comes from these; later they are unused.
    // Whether a PostgreSQL database is new is not known before connecting:
    // they are checked whenever they are set.
    let first_start = config
        .database_at
        .sqlite_path()
        .is_none_or(|db| !db.exists());
    if first_start {
        if !model.initial.is_empty() {
            artifact::load(Path::new(&model.initial))?;
        } else if model.bootstrap_data != BUNDLED_DATA {
            readable_file("model.bootstrap_data", Path::new(&model.bootstrap_data))?;
        }
    }
    Ok(())
}

fn writable_dir(key: &'static str, path: &Path) -> Result<(), PreflightError> {
    let fail = |reason: String| PreflightError::Path {
        key,
        path: path.display().to_string(),
        reason,
    };
    // The missing part of the path, to be removed again (deepest first).
    let mut missing = Vec::new();
    let mut at = path.to_path_buf();
    while !at.as_os_str().is_empty() && std::fs::symlink_metadata(&at).is_err() {
        missing.push(at.clone());
        at = at.parent().map(Path::to_path_buf).unwrap_or_default();
    }
    let result = probe(path, &missing);
    for dir in &missing {
        let _ = std::fs::remove_dir(dir);
    }
    result.map_err(fail)
}

/// Creates `path` if it is missing, then a file in it, as the daemon will.
fn probe(path: &Path, missing: &[PathBuf]) -> Result<(), String> {
    if missing.is_empty() && !path.is_dir() {
        return Err("exists and is not a directory".into());
    }
    std::fs::create_dir_all(path).map_err(|e| format!("cannot create it: {e}"))?;
    let file = path.join(format!(".steward-check-{}", std::process::id()));
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&file)
        .map_err(|e| format!("cannot write into it: {e}"))?;
    let _ = std::fs::remove_file(&file);
    Ok(())
}

fn readable_file(key: &'static str, path: &Path) -> Result<(), PreflightError> {
    let fail = |reason: String| PreflightError::Path {
        key,
        path: path.display().to_string(),
        reason,
    };
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => std::fs::File::open(path)
            .map(|_| ())
            .map_err(|e| fail(e.to_string())),
        Ok(_) => Err(fail("not a regular file".into())),
        Err(e) => Err(fail(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_is_usable_when_it_can_be_created_and_written_into() {
        let dir = tempfile::tempdir().unwrap();
        writable_dir("model.dir", dir.path()).unwrap();
        writable_dir("model.dir", &dir.path().join("a/b/c")).unwrap();
        // Nothing is left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        let file = dir.path().join("f");
        std::fs::write(&file, "x").unwrap();
        let err = writable_dir("model.dir", &file).unwrap_err();
        assert!(err.to_string().contains("is not a directory"), "{err}");
        let err = writable_dir("model.dir", &file.join("sub")).unwrap_err();
        assert!(err.to_string().contains("cannot create it"), "{err}");
        // Nobody can create a directory in /proc, root included.
        let err = writable_dir("model.dir", Path::new("/proc/steward-models")).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("model.dir = /proc/steward-models: cannot create it"),
            "{err}"
        );
    }
}
