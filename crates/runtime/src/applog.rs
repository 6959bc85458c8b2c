//! The app's own log: what the runtime and the app did and why, written through `tracing` to
//! `<storage>/logs/app.log` (rotated at 5 MiB, two old files kept), so that a bug report has
//! something to attach. The level (default info) is a setting kept in `config/app-log.json`
//! and changed from the window without a restart.
//!
//! [`AppLog::new`] only prepares the subscriber; the app installs it for the whole process with
//! [`AppLog::install_global`], a test runs code under it with [`AppLog::dispatch`].

use crate::logfile::{RotatingFile, ROTATE_AT};
use crate::storage::{newer_format, read_versioned, write_json_atomic, StorageLayout};
use crate::stored::{applog as stored, Conv};
use crate::{Result, RuntimeError};
use ipc::event::LogLevel;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tracing::level_filters::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::{fmt, reload, Registry};

pub const FILE_NAME: &str = "app.log";

type Handle = reload::Handle<LevelFilter, Registry>;

/// The app's log: its file, its level and the subscriber that writes it.
#[derive(Clone)]
pub struct AppLog {
    inner: Arc<Inner>,
}

struct Inner {
    folder: PathBuf,
    settings_path: PathBuf,
    handle: Handle,
    dispatch: tracing::Dispatch,
}

impl std::fmt::Debug for AppLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppLog").field("folder", &self.inner.folder).finish_non_exhaustive()
    }
}

/// Whole formatted events into the rotating file (the fmt layer writes one event per call).
struct Writer(Arc<Mutex<RotatingFile>>);

impl std::io::Write for Writer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).write(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn filter(level: LogLevel) -> LevelFilter {
    match level {
        LogLevel::Debug => LevelFilter::DEBUG,
        LogLevel::Info => LevelFilter::INFO,
        LogLevel::Warn => LevelFilter::WARN,
        LogLevel::Error => LevelFilter::ERROR,
    }
}

impl AppLog {
    pub fn new(storage: &StorageLayout) -> Self {
        Self::with_limit(storage, ROTATE_AT)
    }

    /// [`Self::new`] with the file rotated at `rotate_at` bytes.
    pub fn with_limit(storage: &StorageLayout, rotate_at: u64) -> Self {
        let folder = storage.logs();
        let settings_path = storage.config().join("app-log.json");
        // A damaged or newer file: the default level (and a newer one is never written over).
        let level = read_versioned::<stored::Settings>(&settings_path, stored::FORMAT)
            .ok()
            .flatten()
            .map_or(LogLevel::Info, |s| s.level.conv());
        let file = Arc::new(Mutex::new(RotatingFile::new(folder.join(FILE_NAME), rotate_at)));
        let (level_layer, handle) = reload::Layer::new(filter(level));
        let writes = fmt::layer()
            .with_ansi(false)
            .with_target(true)
            .with_writer(move || Writer(file.clone()));
        let subscriber = Registry::default().with(level_layer).with(writes);
        let inner =
            Inner { folder, settings_path, handle, dispatch: tracing::Dispatch::new(subscriber) };
        Self { inner: Arc::new(inner) }
    }

    /// Makes this log the process's: every `tracing` event from then on lands in its file.
    /// Only the first call in a process takes effect.
    pub fn install_global(&self) -> bool {
        tracing::dispatcher::set_global_default(self.inner.dispatch.clone()).is_ok()
    }

    /// The subscriber, for running code under it (`tracing::dispatcher::with_default`).
    pub fn dispatch(&self) -> &tracing::Dispatch {
        &self.inner.dispatch
    }

    /// The folder of `app.log` and its rotated copies (made again if it was removed).
    pub fn folder(&self) -> Result<PathBuf> {
        let dir = &self.inner.folder;
        std::fs::create_dir_all(dir).map_err(|e| RuntimeError::io("creating folder", dir, e))?;
        Ok(dir.clone())
    }

    /// The level in force: what the subscriber filters by.
    pub fn level(&self) -> LogLevel {
        let current = self.inner.handle.clone_current().unwrap_or(LevelFilter::INFO);
        [LogLevel::Debug, LogLevel::Info, LogLevel::Warn, LogLevel::Error]
            .into_iter()
            .find(|l| filter(*l) == current)
            .unwrap_or(LogLevel::Info)
    }

    /// What the footer shows.
    pub fn view(&self) -> ipc::AppLogView {
        let path = self.inner.folder.join(FILE_NAME).display().to_string();
        ipc::AppLogView { level: self.level(), path }
    }

    /// Changes the level at once and keeps it for the next launch.
    pub async fn set_level(&self, level: LogLevel) -> Result<()> {
        let path = &self.inner.settings_path;
        if let Some(found) = newer_format(path, stored::FORMAT) {
            return Err(RuntimeError::NewerFormat {
                path: path.clone(),
                found,
                reads: stored::FORMAT,
            });
        }
        write_json_atomic(path, &stored::Settings::of(level)).await?;
        self.inner
            .handle
            .reload(filter(level))
            .map_err(|e| RuntimeError::Internal(format!("changing the log level: {e}")))?;
        tracing::info!(?level, "log level changed");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::StorageRoot;
    use ipc::StorageRootSource;

    #[tokio::test]
    async fn events_land_in_the_file_at_the_chosen_level_and_rotate() {
        let dir = std::env::temp_dir().join(format!("genai-applog-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let layout = StorageLayout::create(StorageRoot::new(&dir, StorageRootSource::Env)).unwrap();
        let log = AppLog::with_limit(&layout, 600);
        assert_eq!(log.level(), LogLevel::Info);
        assert!(log.view().path.ends_with("logs/app.log"), "{:?}", log.view());
        let file = log.folder().unwrap().join(FILE_NAME);
        let read = || std::fs::read_to_string(&file).unwrap_or_default();
        let bus = crate::EventBus::default();
        tracing::dispatcher::with_default(log.dispatch(), || {
            tracing::info!(model = "tiny", "server started");
            tracing::debug!("not at info");
            // What the app tells the window is in the file too, failures as warnings; progress
            // is not.
            bus.emit(ipc::AppEvent::DownloadFailed {
                download_id: "dl-1".into(),
                error: ipc::IpcError::new(ipc::ErrorCode::ChecksumMismatch, "sha differs"),
            });
            bus.emit(ipc::AppEvent::DownloadProgress(ipc::event::DownloadProgress {
                download_id: "dl-2".into(),
                file_name: "m.gguf".into(),
                downloaded_bytes: 1,
                total_bytes: Some(2),
                bytes_per_sec: 1.0,
                eta_secs: None,
            }));
        });
        let text = read();
        assert!(text.contains("INFO") && text.contains("server started model=\"tiny\""), "{text}");
        assert!(!text.contains("not at info"), "{text}");
        let events: Vec<&str> = text.lines().filter(|l| l.contains("genai::event")).collect();
        assert_eq!(events.len(), 1, "only the failure: {text}");
        assert!(events[0].contains("WARN") && events[0].contains("sha differs"), "{text}");

        // Debug from now on, and kept for the next launch.
        let dispatch = log.dispatch().clone();
        let _guard = tracing::dispatcher::set_default(&dispatch);
        log.set_level(LogLevel::Debug).await.unwrap();
        tracing::debug!("now at debug");
        assert!(read().contains("now at debug"), "{}", read());
        assert_eq!(AppLog::new(&layout).level(), LogLevel::Debug);

        // Rotated at the limit, two old files kept.
        for i in 0..40 {
            tracing::warn!(i, "a line long enough to rotate the file quickly");
        }
        assert!(std::fs::metadata(&file).unwrap().len() <= 600);
        assert!(log.folder().unwrap().join("app.log.1").exists());
        assert!(log.folder().unwrap().join("app.log.2").exists());
        assert!(!log.folder().unwrap().join("app.log.3").exists());
        assert!(read().contains("i=39"), "the newest line is in the file");
        drop(_guard);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
