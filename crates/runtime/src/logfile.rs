//! A server's log: the newest lines in memory for the window, and a file rotated at 5 MiB with
//! two old files kept (`.log.1`, `.log.2`). [`ServerLog`] adds the window's `ServerLog` events,
//! so the LLM and diffusion servers (and the orchestrator, through the LLM) log the same way.

use crate::events::EventBus;
use ipc::event::{LogLevel, LogLine, ServerKind};
use ipc::AppEvent;
use std::collections::VecDeque;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;

/// One managed server's log: each line goes to the ring, the file and the window.
pub struct ServerLog {
    server: ServerKind,
    events: EventBus,
    sink: Mutex<LogSink>,
}

impl ServerLog {
    pub fn new(server: ServerKind, path: PathBuf, events: EventBus) -> Self {
        Self { server, events, sink: Mutex::new(LogSink::new(path)) }
    }

    pub fn log(&self, level: LogLevel, message: impl Into<String>) {
        let line = LogLine { at_ms: crate::now_ms(), level, message: message.into() };
        self.sink.lock().unwrap().push(&line);
        self.events.emit(AppEvent::ServerLog { server: self.server, line });
    }

    pub fn recent(&self) -> Vec<LogLine> {
        self.sink.lock().unwrap().recent()
    }

    /// Forgets every line: the ring, the file (emptied) and its rotated copies (removed).
    pub fn clear(&self) -> crate::Result<()> {
        self.sink.lock().unwrap().clear()
    }
}

const RING: usize = 2000;
pub const ROTATE_AT: u64 = 5 << 20;

pub struct LogSink {
    file: RotatingFile,
    ring: VecDeque<LogLine>,
}

impl LogSink {
    pub fn new(path: PathBuf) -> Self {
        Self::with_limit(path, ROTATE_AT)
    }

    pub fn with_limit(path: PathBuf, rotate_at: u64) -> Self {
        Self { file: RotatingFile::new(path, rotate_at), ring: VecDeque::new() }
    }

    pub fn recent(&self) -> Vec<LogLine> {
        self.ring.iter().cloned().collect()
    }

    /// Keeps the line; writing the file is best effort (a full disk must not stop the server).
    pub fn push(&mut self, line: &LogLine) {
        if self.ring.len() == RING {
            self.ring.pop_front();
        }
        self.ring.push_back(line.clone());
        let text =
            format!("[{}] [{:<5}] {}\n", iso_time(line.at_ms), tag(line.level), line.message);
        self.file.write(text.as_bytes());
    }

    pub fn clear(&mut self) -> crate::Result<()> {
        self.ring.clear();
        self.file.clear()
    }
}

/// A log file rotated at a size, with two old files kept (`<name>.1`, `<name>.2`). Opened on
/// the first write (its folder made then); writing is best effort.
pub struct RotatingFile {
    path: PathBuf,
    file: Option<std::fs::File>,
    size: u64,
    rotate_at: u64,
}

impl RotatingFile {
    pub fn new(path: PathBuf, rotate_at: u64) -> Self {
        Self { path, file: None, size: 0, rotate_at }
    }

    /// Appends `text` (whole lines), rotating first when it would pass the limit.
    pub fn write(&mut self, text: &[u8]) {
        if self.size + text.len() as u64 > self.rotate_at {
            self.rotate();
        }
        if self.file.is_none() {
            if let Some(dir) = self.path.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            self.file = std::fs::OpenOptions::new().create(true).append(true).open(&self.path).ok();
            self.size = std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0);
        }
        if let Some(f) = &mut self.file {
            if f.write_all(text).is_ok() {
                self.size += text.len() as u64;
            }
        }
    }

    /// Empties the file and removes the old ones.
    pub fn clear(&mut self) -> crate::Result<()> {
        self.file = None;
        self.size = 0;
        for n in 1..=2 {
            let old = self.rotated(n);
            match std::fs::remove_file(&old) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(crate::RuntimeError::io("removing", &old, e))
                }
                _ => {}
            }
        }
        match std::fs::OpenOptions::new().write(true).truncate(true).open(&self.path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(crate::RuntimeError::io("emptying", &self.path, e))
            }
            _ => Ok(()),
        }
    }

    fn rotated(&self, n: u32) -> PathBuf {
        let mut s = self.path.as_os_str().to_owned();
        s.push(format!(".{n}"));
        PathBuf::from(s)
    }

    fn rotate(&mut self) {
        self.file = None;
        let _ = std::fs::rename(self.rotated(1), self.rotated(2));
        let _ = std::fs::rename(&self.path, self.rotated(1));
        self.size = 0;
    }
}

fn tag(l: LogLevel) -> &'static str {
    match l {
        LogLevel::Debug => "DEBUG",
        LogLevel::Info => "INFO",
        LogLevel::Warn => "WARN",
        LogLevel::Error => "ERROR",
    }
}

/// `2026-11-26T18:44:21.123Z` from Unix milliseconds (civil-from-days, no time crate).
pub fn iso_time(ms: u64) -> String {
    let secs = ms / 1000;
    let days = (secs / 86400) as i64;
    let rem = secs % 86400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_times() {
        assert_eq!(iso_time(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso_time(1_795_718_661_123), "2026-11-26T18:44:21.123Z");
        assert_eq!(iso_time(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn rotates_keeping_two_old_files() {
        let dir = std::env::temp_dir().join(format!("genai-logsink-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("llama-server.log");
        let mut sink = LogSink::with_limit(path.clone(), 200);
        for i in 0..40 {
            sink.push(&LogLine { at_ms: 0, level: LogLevel::Info, message: format!("line {i}") });
        }
        let read = |p: &str| std::fs::read_to_string(dir.join(p)).unwrap();
        assert!(read("llama-server.log").contains("line 39"));
        assert!(read("llama-server.log.1").contains("[INFO ] line"));
        assert!(dir.join("llama-server.log.2").exists());
        assert!(!dir.join("llama-server.log.3").exists());
        assert!(std::fs::metadata(&path).unwrap().len() <= 200);
        assert_eq!(sink.recent().len(), 40);
        // Clear empties the file, removes the old ones and the ring; new lines start afresh.
        sink.clear().unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
        assert!(!dir.join("llama-server.log.1").exists());
        assert!(!dir.join("llama-server.log.2").exists());
        assert!(sink.recent().is_empty());
        sink.push(&LogLine { at_ms: 0, level: LogLevel::Warn, message: "after".into() });
        assert_eq!(read("llama-server.log"), "[1970-01-01T00:00:00.000Z] [WARN ] after\n");
        assert_eq!(sink.recent().len(), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
