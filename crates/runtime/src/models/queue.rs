//! The download queue: at most `concurrency` downloads at once, each with a handle to pause,
//! resume or cancel it, progress on the event bus, and a model registered only at the end.

use super::{source, summarize, ModelStore};
use crate::download::{self, Control, DownloadConfig, DownloadSpec, Downloader, Outcome};
use crate::{EventBus, Result, RuntimeError};
use ipc::models::{
    DownloadRequest, DownloadState, DownloadStatus, ModelInfo, ModelKind, ModelSource,
};
use ipc::AppEvent;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::Semaphore;

pub const DEFAULT_CONCURRENCY: usize = 2;

struct Job {
    status: DownloadStatus,
    control: Control,
    request: DownloadRequest,
    dest: PathBuf,
}

struct Inner {
    downloader: Downloader,
    store: ModelStore,
    events: EventBus,
    slots: Semaphore,
    jobs: Mutex<Vec<Job>>,
    next_id: AtomicU64,
}

#[derive(Clone)]
pub struct DownloadQueue {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for DownloadQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DownloadQueue").finish_non_exhaustive()
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl DownloadQueue {
    pub fn new(
        store: ModelStore,
        events: EventBus,
        concurrency: usize,
        config: DownloadConfig,
    ) -> Result<Self> {
        Ok(Self {
            inner: Arc::new(Inner {
                downloader: Downloader::new(config)?,
                store,
                events,
                slots: Semaphore::new(concurrency.max(1)),
                jobs: Mutex::new(Vec::new()),
                next_id: AtomicU64::new(1),
            }),
        })
    }

    fn jobs(&self) -> std::sync::MutexGuard<'_, Vec<Job>> {
        self.inner.jobs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Checks the request, reserves its file name and starts it (or queues it behind others).
    pub fn enqueue(&self, request: DownloadRequest) -> Result<String> {
        if request.name.trim().is_empty() {
            return Err(RuntimeError::InvalidInput("give the model a name".into()));
        }
        if let Some(s) = &request.sha256 {
            if !s.trim().is_empty() && download::normalise_sha256(s).is_none() {
                return Err(RuntimeError::InvalidInput(format!(
                    "{s:?} is not a SHA-256 (64 hex digits)"
                )));
            }
        }
        source::url_of(&request.source)?;
        if let ModelSource::Local { path } = &request.source {
            if !std::path::Path::new(path).is_file() {
                return Err(RuntimeError::InvalidInput(format!("{path} is not a file")));
            }
        }
        let file = source::file_name(&request.source)?;
        let dest = self.inner.store.file_path(request.kind, &file)?;
        if dest.exists() {
            return Err(RuntimeError::AlreadyExists(dest.display().to_string()));
        }
        let id = format!("dl-{}", self.inner.next_id.fetch_add(1, Ordering::Relaxed));
        {
            let mut jobs = self.jobs();
            let busy =
                |j: &Job| !matches!(j.status.state, DownloadState::Done | DownloadState::Failed);
            if jobs.iter().any(|j| j.dest == dest && busy(j)) {
                return Err(RuntimeError::AlreadyExists(format!("a download of {file}")));
            }
            jobs.retain(|j| j.dest != dest);
            jobs.push(Job {
                status: DownloadStatus {
                    download_id: id.clone(),
                    name: request.name.trim().to_owned(),
                    kind: request.kind,
                    state: DownloadState::Queued,
                    downloaded_bytes: 0,
                    total_bytes: None,
                    bytes_per_sec: 0.0,
                    eta_secs: None,
                    error: None,
                    model_id: None,
                },
                control: Control::default(),
                request,
                dest,
            });
        }
        self.spawn(id.clone());
        Ok(id)
    }

    pub fn statuses(&self) -> Vec<DownloadStatus> {
        self.jobs().iter().map(|j| j.status.clone()).collect()
    }

    fn with_job<T>(&self, id: &str, f: impl FnOnce(&mut Job) -> T) -> Result<T> {
        let mut jobs = self.jobs();
        let job = jobs
            .iter_mut()
            .find(|j| j.status.download_id == id)
            .ok_or_else(|| RuntimeError::InvalidInput(format!("no download {id}")))?;
        Ok(f(job))
    }

    /// Stops a download and keeps what it fetched.
    pub fn pause(&self, id: &str) -> Result<()> {
        self.with_job(id, |j| {
            j.control.pause();
            if j.status.state == DownloadState::Queued {
                j.status.state = DownloadState::Paused;
            }
        })
    }

    /// Continues a paused or failed download from where it stopped.
    pub fn resume(&self, id: &str) -> Result<()> {
        let restart = self.with_job(id, |j| {
            j.control.resume();
            let again = matches!(j.status.state, DownloadState::Paused | DownloadState::Failed);
            if again {
                j.status.state = DownloadState::Queued;
                j.status.error = None;
            }
            again
        })?;
        if restart {
            self.spawn(id.to_owned());
        }
        Ok(())
    }

    /// Stops a download, deletes what it fetched and drops it from the list.
    pub fn cancel(&self, id: &str) -> Result<()> {
        let (running, dest) = self.with_job(id, |j| {
            j.control.cancel();
            (j.status.state == DownloadState::Running, j.dest.clone())
        })?;
        if !running {
            // Nothing is writing it: clean up here. A running one cleans up as it stops.
            let _ = std::fs::remove_file(download::part_path(&dest));
            let mut side = download::part_path(&dest).into_os_string();
            side.push(".json");
            let _ = std::fs::remove_file(side);
            self.jobs().retain(|j| j.status.download_id != id);
        }
        Ok(())
    }

    fn update(&self, id: &str, f: impl FnOnce(&mut DownloadStatus)) {
        let _ = self.with_job(id, |j| f(&mut j.status));
    }

    fn spawn(&self, id: String) {
        let q = self.clone();
        tokio::spawn(async move { q.run(id).await });
    }

    async fn run(&self, id: String) {
        let Ok(_permit) = self.inner.slots.acquire().await else {
            return;
        };
        let Ok((request, dest, control)) =
            self.with_job(&id, |j| (j.request.clone(), j.dest.clone(), j.control.clone()))
        else {
            return;
        };
        match control.current() {
            download::Command::Cancel => {
                let _ = self.cancel(&id);
                return;
            }
            download::Command::Pause => {
                self.update(&id, |s| s.state = DownloadState::Paused);
                return;
            }
            download::Command::Run => {}
        }
        self.update(&id, |s| s.state = DownloadState::Running);

        let result = self.fetch(&id, &request, &dest, &control).await;
        let result = match result {
            Ok(Some((sha, bytes))) => self.finish(&request, &dest, sha, bytes).await.map(Some),
            other => other.map(|_| None),
        };
        match result {
            Ok(Some(model_id)) => {
                self.update(&id, |s| {
                    s.state = DownloadState::Done;
                    s.model_id = Some(model_id.clone());
                    s.eta_secs = Some(0.0);
                });
                self.inner.events.emit(AppEvent::DownloadFinished { download_id: id, model_id });
            }
            Ok(None) => self.update(&id, |s| s.state = DownloadState::Paused),
            Err(RuntimeError::Cancelled) => {
                self.jobs().retain(|j| j.status.download_id != id);
            }
            Err(e) => {
                let error = e.to_ipc();
                self.update(&id, |s| {
                    s.state = DownloadState::Failed;
                    s.error = Some(error.clone());
                });
                self.inner.events.emit(AppEvent::DownloadFailed { download_id: id, error });
            }
        }
    }

    /// The bytes: downloaded, or copied from a local file. `None` when paused.
    async fn fetch(
        &self,
        id: &str,
        request: &DownloadRequest,
        dest: &std::path::Path,
        control: &Control,
    ) -> Result<Option<(String, u64)>> {
        if let ModelSource::Local { path } = &request.source {
            let (from, to) = (PathBuf::from(path), dest.to_path_buf());
            let bytes = tokio::task::spawn_blocking(move || -> Result<u64> {
                // A hard link costs nothing when both sit on one file system.
                if std::fs::hard_link(&from, &to).is_err() {
                    std::fs::copy(&from, &to).map_err(|e| RuntimeError::io("copying", &from, e))?;
                }
                Ok(std::fs::metadata(&to).map_err(|e| RuntimeError::io("reading", &to, e))?.len())
            })
            .await
            .map_err(|e| RuntimeError::Internal(e.to_string()))??;
            let sha = {
                let to = dest.to_path_buf();
                tokio::task::spawn_blocking(move || super::sha256_file(&to))
                    .await
                    .map_err(|e| RuntimeError::Internal(e.to_string()))??
            };
            if let Some(want) = request.sha256.as_deref().and_then(download::normalise_sha256) {
                if want != sha {
                    let _ = std::fs::remove_file(dest);
                    return Err(RuntimeError::ChecksumMismatch {
                        file: path.clone(),
                        expected: want,
                        actual: sha,
                    });
                }
            }
            return Ok(Some((sha, bytes)));
        }
        let url = source::url_of(&request.source)?.expect("not local");
        let token = match &request.source {
            ModelSource::HuggingFace { .. } => {
                std::env::var("HF_TOKEN").ok().filter(|t| !t.is_empty())
            }
            _ => None,
        };
        let spec = DownloadSpec {
            url,
            dest: dest.to_path_buf(),
            expected_sha256: request.sha256.clone().filter(|s| !s.trim().is_empty()),
            bearer_token: token,
        };
        let file_name = source::file_name(&request.source)?;
        let outcome = self
            .inner
            .downloader
            .download(&spec, control, |snap| {
                self.update(id, |s| {
                    s.downloaded_bytes = snap.downloaded;
                    s.total_bytes = snap.total;
                    s.bytes_per_sec = snap.bytes_per_sec;
                    s.eta_secs = snap.eta_secs;
                });
                self.inner.events.emit(AppEvent::DownloadProgress(ipc::event::DownloadProgress {
                    download_id: id.to_owned(),
                    file_name: file_name.clone(),
                    downloaded_bytes: snap.downloaded,
                    total_bytes: snap.total,
                    bytes_per_sec: snap.bytes_per_sec,
                    eta_secs: snap.eta_secs,
                }));
            })
            .await?;
        Ok(match outcome {
            Outcome::Done(d) => Some((d.sha256, d.bytes)),
            Outcome::Paused { .. } => None,
        })
    }

    /// Reads the GGUF header (an LLM must have one), then registers the model.
    async fn finish(
        &self,
        request: &DownloadRequest,
        dest: &std::path::Path,
        sha256: String,
        bytes: u64,
    ) -> Result<String> {
        let is_gguf = dest.extension().is_some_and(|e| e.eq_ignore_ascii_case("gguf"));
        let header = if is_gguf || request.kind == ModelKind::Llm {
            let p = dest.to_path_buf();
            match tokio::task::spawn_blocking(move || gguf::read_header_from_path(&p)).await {
                Ok(Ok(h)) => Some(h),
                Ok(Err(e)) if request.kind == ModelKind::Llm || is_gguf => {
                    // Not a model we can run: nothing is left registered or on disk.
                    let _ = tokio::fs::remove_file(dest).await;
                    return Err(RuntimeError::GgufInvalid {
                        path: dest.display().to_string(),
                        detail: e.to_string(),
                    });
                }
                _ => None,
            }
        } else {
            None
        };
        let name = request.name.trim().to_owned();
        let info = ModelInfo {
            id: self.inner.store.free_id(&name),
            supports_reasoning: source::supports_reasoning(&name)
                || source::supports_reasoning(
                    &dest.file_name().unwrap_or_default().to_string_lossy(),
                ),
            name,
            kind: request.kind,
            size_bytes: bytes,
            path: dest.display().to_string(),
            downloaded_at_ms: now_ms(),
            source: request.source.clone(),
            sha256: Some(sha256),
            gguf: header.as_ref().map(summarize),
        };
        self.inner.store.register(&info).await?;
        Ok(info.id)
    }
}
