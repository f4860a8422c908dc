//! `audit backup --to PATH`: a consistent copy of the trail taken with SQLite's online backup
//! API while the proxy keeps serving, verified before it is given its name.
//!
//! The copy is made in one backup step under one read transaction: in WAL mode that never
//! blocks the writer, and the copy is the trail exactly as it stood at one commit. It is
//! written to `PATH.partial`, switched to a self-contained rollback-journal file (no `-wal`
//! beside it), verified, synced and only then renamed to `PATH`; a copy that does not verify
//! is removed and the command fails. Restoring is copying the file back (README).

use super::verify::{self, Broken, Verified};
use super::{query, AuditError};
use rusqlite::backup::{Backup, StepResult};
use rusqlite::Connection;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long a backup waits for the database while another connection holds it exclusively
/// (a migration, a checkpoint in progress).
const BUSY_FOR: Duration = Duration::from_secs(30);

#[derive(Debug)]
pub enum BackupError {
    /// The source or destination could not be opened, read or written.
    Io(String),
    /// The copy was made but does not verify (so neither, probably, does the source).
    NotVerified(Broken),
}

impl std::fmt::Display for BackupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BackupError::Io(e) => write!(f, "{e}"),
            BackupError::NotVerified(b) => write!(f, "the backup does not verify: {b}"),
        }
    }
}

/// Backs the trail at `source` up to `to` (which must not exist) and verifies the copy.
pub fn backup(
    source: &Path,
    to: &Path,
    opts: verify::Options<'_>,
) -> Result<Verified, BackupError> {
    let io = |what: &str, e: &dyn std::fmt::Display| BackupError::Io(format!("{what}: {e}"));
    if to.exists() {
        return Err(BackupError::Io(format!(
            "{} exists; a backup never overwrites a file",
            to.display()
        )));
    }
    let partial = partial_path(to);
    let _ = std::fs::remove_file(&partial);
    let src = query::open_read_only(source).map_err(|e: AuditError| io("source", &e))?;
    let result = copy_and_verify(&src, &partial, opts);
    let verified = match result {
        Ok(v) => v,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            return Err(e);
        }
    };
    std::fs::rename(&partial, to).map_err(|e| io(&to.display().to_string(), &e))?;
    if let Some(dir) = to.parent().filter(|d| !d.as_os_str().is_empty()) {
        // The rename is durable once the directory is synced.
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(verified)
}

fn partial_path(to: &Path) -> PathBuf {
    let mut p = to.as_os_str().to_owned();
    p.push(".partial");
    PathBuf::from(p)
}

fn copy_and_verify(
    src: &Connection,
    partial: &Path,
    opts: verify::Options<'_>,
) -> Result<Verified, BackupError> {
    let shown = partial.display().to_string();
    let io = |e: rusqlite::Error| BackupError::Io(format!("{shown}: {e}"));
    let mut dst = Connection::open(partial).map_err(io)?;
    {
        let backup = Backup::new(src, &mut dst).map_err(io)?;
        let started = Instant::now();
        loop {
            match backup.step(-1).map_err(io)? {
                StepResult::Done => break,
                // More (not returned for -1), Busy, Locked: try again, for a bounded time.
                _ if started.elapsed() < BUSY_FOR => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                _ => {
                    return Err(BackupError::Io(format!(
                        "the trail stayed locked for {}s",
                        BUSY_FOR.as_secs()
                    )))
                }
            }
        }
    }
    // One self-contained file: the pages the copy left in its own WAL are checkpointed into it.
    let mode: String = dst
        .query_row("PRAGMA journal_mode = DELETE", [], |r| r.get(0))
        .map_err(io)?;
    if !mode.eq_ignore_ascii_case("delete") {
        return Err(BackupError::Io(format!(
            "{shown}: cannot leave WAL mode ({mode})"
        )));
    }
    let verified = verify::verify_with(&dst, opts).map_err(BackupError::NotVerified)?;
    drop(dst);
    std::fs::File::open(partial)
        .and_then(|f| f.sync_all())
        .map_err(|e| BackupError::Io(format!("{shown}: {e}")))?;
    Ok(verified)
}
