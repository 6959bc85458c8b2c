//! The validation cache: which build of each runtime passed its checks, and the file facts that
//! let a later start trust it without hashing the binary again.
//!
//! A start compares the executable's size and modification time with the record (a `stat`,
//! microseconds); only when they differ, when the pinned version moved, or when the user asks
//! are the checks run again. Upstream hashed the whole binary on every start.

use crate::storage::{newer_format, read_versioned, write_json_atomic};
use crate::stored::runtime::{self as stored, FORMAT};
use crate::{Result, RuntimeError};
use ipc::runtimes::{InstalledRuntime, RuntimeKind};
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

/// A build that passed its checks, with the modification time it had then (the file's own
/// format is [`crate::stored::runtime::ValidationRecord`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationRecord {
    pub installed: InstalledRuntime,
    /// The executable's modification time, nanoseconds since the Unix epoch.
    pub mtime_ns: u64,
}

/// Size and modification time of a file, the two facts the cache compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStamp {
    pub size: u64,
    pub mtime_ns: u64,
}

impl FileStamp {
    pub fn of(path: &Path) -> Option<Self> {
        let meta = std::fs::metadata(path).ok()?;
        if !meta.is_file() {
            return None;
        }
        let mtime_ns = meta
            .modified()
            .ok()?
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        Some(Self { size: meta.len(), mtime_ns })
    }
}

#[derive(Debug, Clone)]
pub struct ValidationCache {
    binaries: PathBuf,
}

impl ValidationCache {
    pub fn new(binaries: PathBuf) -> Self {
        Self { binaries }
    }

    pub fn path(&self, kind: RuntimeKind) -> PathBuf {
        self.binaries.join(kind.dir()).join("validation.json")
    }

    /// The record, if there is a readable one of this format. One of an older format is not
    /// trusted (the build is checked again); a newer version's is not read.
    pub fn load(&self, kind: RuntimeKind) -> Option<ValidationRecord> {
        let rec = read_versioned::<stored::ValidationRecord>(&self.path(kind), FORMAT).ok()??;
        let installed = rec.installed();
        (rec.format == FORMAT && installed.runtime == kind)
            .then_some(ValidationRecord { installed, mtime_ns: rec.mtime_ns })
    }

    pub async fn save(&self, installed: &InstalledRuntime, stamp: FileStamp) -> Result<()> {
        let path = self.path(installed.runtime);
        if let Some(dir) = path.parent() {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(|e| RuntimeError::io("creating folder", dir, e))?;
        }
        if let Some(found) = newer_format(&path, FORMAT) {
            // A newer version's record stays as it is; this version checks again next time.
            return Err(RuntimeError::NewerFormat { path, found, reads: FORMAT });
        }
        write_json_atomic(&path, &stored::ValidationRecord::of(installed, stamp.mtime_ns)).await
    }

    pub fn forget(&self, kind: RuntimeKind) -> Result<()> {
        let path = self.path(kind);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(RuntimeError::io("deleting", path, e)),
        }
    }
}

impl ValidationRecord {
    /// The executable is the one that was checked: same size and modification time.
    pub fn still_matches(&self) -> bool {
        FileStamp::of(Path::new(&self.installed.path))
            .is_some_and(|s| s.size == self.installed.size && s.mtime_ns == self.mtime_ns)
    }
}
