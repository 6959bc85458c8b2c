//! `run/<server>.json`: the child process a server started, written when it starts and removed
//! when it ends, so that the next launch stops one that a crashed app left running (holding its
//! port and gigabytes of memory). Shared by llama-server and sd-server.

use crate::{now_ms, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct PidFile {
    pid: u32,
    exe: String,
    started_at_ms: u64,
}

/// Records `pid`, started from `exe`, at `path` (its folder made).
pub async fn write(path: &Path, pid: u32, exe: &str) -> Result<()> {
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let pf = PidFile { pid, exe: exe.to_owned(), started_at_ms: now_ms() };
    crate::storage::write_json_atomic(path, &pf).await
}

/// The child ended: nothing is left to stop.
pub fn remove(path: &Path) {
    let _ = std::fs::remove_file(path);
}

/// Stops the process group the pidfile at `path` names, if that pid still runs the same
/// program (a pid reused by something else is left alone), and removes the file. Answers the
/// pid that was stopped.
pub fn stop_orphan(path: &Path) -> Option<u32> {
    let pf: PidFile = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    remove(path);
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", pf.pid)).ok()?;
    let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
    if !cmdline.starts_with(&pf.exe) {
        return None; // the pid now belongs to something else
    }
    #[cfg(unix)]
    {
        let group = -(pf.pid as i32);
        // SAFETY: signals the process group the app itself created for that server.
        unsafe { libc::kill(group, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && super::is_running(pf.pid) {
            std::thread::sleep(Duration::from_millis(50));
        }
        if super::is_running(pf.pid) {
            // SAFETY: as above.
            unsafe { libc::kill(group, libc::SIGKILL) };
        }
    }
    Some(pf.pid)
}
