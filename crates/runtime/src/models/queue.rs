//! The download queue: at most `concurrency` downloads at once, each with a handle to pause,
//! resume or cancel it, progress on the event bus, and a model registered only at the end.

use super::hf::{HfAccess, HfSettings};
use super::{source, summarize, ModelStore};
use crate::download::{self, Control, DownloadConfig, DownloadSpec, Downloader, Outcome};
use crate::now_ms;
use crate::{EventBus, Result, RuntimeError};
use ipc::models::{
    DownloadRequest, DownloadState, DownloadStatus, ModelFile, ModelInfo, ModelKind, ModelSource,
};
use ipc::AppEvent;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::Semaphore;

pub const DEFAULT_CONCURRENCY: usize = 2;

/// A 401/403 from the Hugging Face host is a gated repository or a token problem: said so, with
/// the page where the licence is accepted.
fn gated(e: RuntimeError, task: &FileTask, hf: &HfAccess) -> RuntimeError {
    match (e, &task.source) {
        (
            RuntimeError::HttpStatus { url, status: status @ (401 | 403) },
            ModelSource::HuggingFace { repo, .. },
        ) => RuntimeError::AuthRequired {
            token_sent: hf.token_for(&url).is_some(),
            page: hf.repo_page(repo),
            url,
            status,
        },
        (e, _) => e,
    }
}

/// One file of a download: the model itself, a shard, or a component.
#[derive(Clone)]
struct FileTask {
    role: String,
    source: ModelSource,
    dest: PathBuf,
    sha256: Option<String>,
    /// On disk before this download began (a component shared with another model): kept on
    /// cancel and failure.
    preexisting: bool,
    /// (sha256 when known, bytes) once fetched.
    done: Option<(Option<String>, u64)>,
    size: Option<u64>,
}

struct Job {
    status: DownloadStatus,
    control: Control,
    request: DownloadRequest,
    tasks: Vec<FileTask>,
    /// A folder made for this model (shards, components), removed again if left empty.
    dir: Option<PathBuf>,
    model_id: String,
}

impl Job {
    fn active(&self) -> bool {
        !matches!(self.status.state, DownloadState::Done | DownloadState::Failed)
    }
}

struct Inner {
    downloader: Downloader,
    store: ModelStore,
    hf: HfSettings,
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

impl DownloadQueue {
    pub fn new(
        store: ModelStore,
        events: EventBus,
        concurrency: usize,
        config: DownloadConfig,
        hf: HfSettings,
    ) -> Result<Self> {
        Ok(Self {
            inner: Arc::new(Inner {
                downloader: Downloader::new(config)?,
                store,
                hf,
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

    /// The files a request stands for: one, every shard of a split GGUF, or a diffusion model
    /// and its components (in a folder variants share).
    fn plan(
        &self,
        request: &DownloadRequest,
        model_id: &str,
    ) -> Result<(Vec<FileTask>, Option<PathBuf>)> {
        let store = &self.inner.store;
        let primary = source::file_name(&request.source)?;
        let task =
            |role: String, source: ModelSource, dest: PathBuf, sha256: Option<String>| FileTask {
                preexisting: dest.exists(),
                role,
                source,
                dest,
                sha256,
                done: None,
                size: None,
            };
        let sha = request.sha256.clone().filter(|s| !s.trim().is_empty());
        if let (ModelKind::Llm, Some((_, count))) = (request.kind, source::shard_of(&primary)) {
            if count > 1 {
                if count > 512 {
                    return Err(RuntimeError::InvalidInput(format!(
                        "{count} shards is more than 512"
                    )));
                }
                // `model_id` is free (no model has it), so a folder by that name can only be
                // left by an interrupted download of these shards: its finished files are kept
                // and the rest resumes.
                let dir = store.file_path(ModelKind::Llm, model_id)?;
                let tasks = (1..=count)
                    .map(|i| {
                        let src = source::shard_source(&request.source, i, count);
                        let dest = store.layout_join(&dir, &source::file_name(&src)?)?;
                        // A given checksum is the first shard's (the file the user named).
                        Ok(task(
                            format!("shard {i}/{count}"),
                            src,
                            dest,
                            if i == 1 { sha.clone() } else { None },
                        ))
                    })
                    .collect::<Result<Vec<_>>>()?;
                return Ok((tasks, Some(dir)));
            }
        }
        if !request.components.is_empty() {
            if request.kind != ModelKind::Diffusion {
                return Err(RuntimeError::InvalidInput(
                    "only diffusion models have components".into(),
                ));
            }
            let folder = source::slug(request.directory.as_deref().unwrap_or(model_id));
            let dir = store.file_path(ModelKind::Diffusion, &folder)?;
            let mut tasks = vec![task(
                "diffusion_model".into(),
                request.source.clone(),
                store.layout_join(&dir, &primary)?,
                sha,
            )];
            for c in &request.components {
                let dest = store.layout_join(&dir, &source::file_name(&c.source)?)?;
                tasks.push(task(c.role.as_str().into(), c.source.clone(), dest, c.sha256.clone()));
            }
            return Ok((tasks, Some(dir)));
        }
        let dest = store.file_path(request.kind, &primary)?;
        if dest.exists() {
            return Err(RuntimeError::AlreadyExists(dest.display().to_string()));
        }
        Ok((vec![task("model".into(), request.source.clone(), dest, sha)], None))
    }

    /// Checks the request, reserves its files and id, and starts it (or queues it behind others).
    pub fn enqueue(&self, request: DownloadRequest) -> Result<String> {
        if request.name.trim().is_empty() {
            return Err(RuntimeError::InvalidInput("give the model a name".into()));
        }
        let sums =
            std::iter::once(&request.sha256).chain(request.components.iter().map(|c| &c.sha256));
        for s in sums.flatten() {
            if !s.trim().is_empty() && download::normalise_sha256(s).is_none() {
                return Err(RuntimeError::InvalidInput(format!(
                    "{s:?} is not a SHA-256 (64 hex digits)"
                )));
            }
        }
        let sources =
            std::iter::once(&request.source).chain(request.components.iter().map(|c| &c.source));
        let endpoint = self.inner.hf.access().endpoint;
        for src in sources {
            source::url_of(src, &endpoint)?;
            if let ModelSource::Local { path } = src {
                if !std::path::Path::new(path).is_file() {
                    return Err(RuntimeError::InvalidInput(format!("{path} is not a file")));
                }
            }
        }
        let id = format!("dl-{}", self.inner.next_id.fetch_add(1, Ordering::Relaxed));
        let mut jobs = self.jobs();
        // The id is reserved now, so two downloads of one name cannot take the same folder.
        let reserved: Vec<&str> =
            jobs.iter().filter(|j| j.active()).map(|j| j.model_id.as_str()).collect();
        let model_id = self.inner.store.free_id_avoiding(&request.name, &reserved);
        let (tasks, dir) = self.plan(&request, &model_id)?;
        let clash = jobs.iter().filter(|j| j.active()).any(|j| {
            j.tasks.iter().any(|a| {
                tasks.iter().any(|b| a.dest == b.dest && !(a.preexisting && b.preexisting))
            })
        });
        if clash {
            return Err(RuntimeError::AlreadyExists("a download of the same file".into()));
        }
        jobs.retain(|j| j.active());
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
            tasks,
            dir,
            model_id,
        });
        drop(jobs);
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

    /// Stops a download, deletes what it fetched (not files it found already there) and drops
    /// it from the list.
    pub fn cancel(&self, id: &str) -> Result<()> {
        let running = self.with_job(id, |j| {
            j.control.cancel();
            j.status.state == DownloadState::Running
        })?;
        if !running {
            // Nothing is writing: clean up here. A running one cleans up as it stops.
            self.discard(id);
        }
        Ok(())
    }

    /// Deletes the job's own files and folder, and forgets it.
    fn discard(&self, id: &str) {
        let mut jobs = self.jobs();
        if let Some(j) = jobs.iter().find(|j| j.status.download_id == id) {
            remove_job_files(j);
        }
        jobs.retain(|j| j.status.download_id != id);
    }

    fn update(&self, id: &str, f: impl FnOnce(&mut DownloadStatus)) {
        let _ = self.with_job(id, |j| f(&mut j.status));
    }

    fn spawn(&self, id: String) {
        let q = self.clone();
        tokio::spawn(async move { q.run(id).await });
    }

    async fn run(&self, id: String) {
        let Ok(_permit) = self.inner.slots.acquire().await else { return };
        let Ok(control) = self.with_job(&id, |j| j.control.clone()) else { return };
        match control.current() {
            download::Command::Cancel => return self.discard(&id),
            download::Command::Pause => {
                return self.update(&id, |s| s.state = DownloadState::Paused)
            }
            download::Command::Run => {}
        }
        self.update(&id, |s| s.state = DownloadState::Running);

        let result = match self.fetch_all(&id, &control).await {
            Ok(true) => self.finish(&id).await.map(Some),
            Ok(false) => Ok(None),
            Err(e) => Err(e),
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
            Err(RuntimeError::Cancelled) => self.discard(&id),
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

    /// Fetches every file not fetched yet. `Ok(false)` when paused.
    async fn fetch_all(&self, id: &str, control: &Control) -> Result<bool> {
        let tasks = self.with_job(id, |j| j.tasks.clone())?;
        // Read once per run: a token saved while it runs applies from the next resume.
        let hf = self.inner.hf.access();
        // Sizes first, so progress covers the whole model (best effort: HEAD may be refused).
        if tasks.len() > 1 {
            for (i, t) in tasks.iter().enumerate() {
                if t.size.is_some() || t.done.is_some() {
                    continue;
                }
                let size = match source::url_of(&t.source, &hf.endpoint)? {
                    Some(url) => self.inner.downloader.remote_size(&url, hf.token_for(&url)).await,
                    None => std::fs::metadata(local_path(&t.source)).ok().map(|m| m.len()),
                };
                self.with_job(id, |j| j.tasks[i].size = size)?;
            }
        }
        for i in 0..tasks.len() {
            let task = self.with_job(id, |j| j.tasks[i].clone())?;
            if task.done.is_some() {
                continue;
            }
            let fetched = if task.preexisting && task.dest.exists() {
                Some(self.check_existing(&task).await?)
            } else {
                self.fetch_one(id, &task, control, &hf).await.map_err(|e| gated(e, &task, &hf))?
            };
            let Some(done) = fetched else { return Ok(false) };
            self.with_job(id, |j| j.tasks[i].done = Some(done))?;
        }
        Ok(true)
    }

    /// A file that was already there (a component another variant downloaded): kept as it is,
    /// unless a given checksum says it is not the wanted file, in which case it is fetched anew.
    async fn check_existing(&self, task: &FileTask) -> Result<(Option<String>, u64)> {
        let bytes = std::fs::metadata(&task.dest).map(|m| m.len()).unwrap_or(0);
        let Some(want) = task.sha256.as_deref().and_then(download::normalise_sha256) else {
            return Ok((None, bytes));
        };
        let p = task.dest.clone();
        let actual = tokio::task::spawn_blocking(move || super::sha256_file(&p))
            .await
            .map_err(|e| RuntimeError::Internal(e.to_string()))??;
        if actual == want {
            return Ok((Some(actual), bytes));
        }
        Err(RuntimeError::ChecksumMismatch {
            file: task.dest.display().to_string(),
            expected: want,
            actual,
        })
    }

    /// One file: downloaded, or copied from a local file. `None` when paused.
    async fn fetch_one(
        &self,
        id: &str,
        task: &FileTask,
        control: &Control,
        hf: &HfAccess,
    ) -> Result<Option<(Option<String>, u64)>> {
        let dest = &task.dest;
        if let Some(dir) = dest.parent() {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(|e| RuntimeError::io("creating folder", dir, e))?;
        }
        if let ModelSource::Local { path } = &task.source {
            let (from, to) = (PathBuf::from(path), dest.to_path_buf());
            let bytes = tokio::task::spawn_blocking(move || -> Result<u64> {
                // A hard link costs nothing when both sit on one file system.
                if std::fs::hard_link(&from, &to).is_err() {
                    std::fs::copy(&from, &to).map_err(|e| RuntimeError::io("copying", &from, e))?;
                }
                // A cut or unloadable GGUF is refused from its header before gigabytes are hashed
                // (`finish` checks again, as for downloads); the user's own file stays.
                if super::is_gguf_path(&to) {
                    if let Err(e) = super::read_gguf(&to) {
                        let _ = std::fs::remove_file(&to);
                        return Err(e);
                    }
                }
                Ok(std::fs::metadata(&to).map_err(|e| RuntimeError::io("reading", &to, e))?.len())
            })
            .await
            .map_err(|e| RuntimeError::Internal(e.to_string()))??;
            let to = dest.to_path_buf();
            let sha = tokio::task::spawn_blocking(move || super::sha256_file(&to))
                .await
                .map_err(|e| RuntimeError::Internal(e.to_string()))??;
            if let Some(want) = task.sha256.as_deref().and_then(download::normalise_sha256) {
                if want != sha {
                    let _ = std::fs::remove_file(dest);
                    return Err(RuntimeError::ChecksumMismatch {
                        file: path.clone(),
                        expected: want,
                        actual: sha,
                    });
                }
            }
            return Ok(Some((Some(sha), bytes)));
        }
        let url = source::url_of(&task.source, &hf.endpoint)?.expect("not local");
        let spec = DownloadSpec {
            bearer_token: hf.token_for(&url).map(str::to_owned),
            url,
            dest: dest.to_path_buf(),
            expected_sha256: task.sha256.clone().filter(|s| !s.trim().is_empty()),
        };
        let file_name = dest.file_name().unwrap_or_default().to_string_lossy().into_owned();
        // Progress over the whole model: files done, plus this one, of all known sizes.
        let (base, others_total, all_known) = self.with_job(id, |j| {
            let base: u64 = j.tasks.iter().filter_map(|t| t.done.as_ref().map(|d| d.1)).sum();
            let others = j.tasks.iter().filter(|t| t.dest != task.dest);
            let known = others.clone().all(|t| t.done.is_some() || t.size.is_some());
            let total: u64 =
                others.map(|t| t.done.as_ref().map(|d| d.1).or(t.size).unwrap_or(0)).sum();
            (base, total, known)
        })?;
        let outcome = self
            .inner
            .downloader
            .download(&spec, control, |snap| {
                let total = match (snap.total, all_known) {
                    (Some(t), true) => Some(t + others_total),
                    _ => None,
                };
                let downloaded = base + snap.downloaded;
                let eta = match total {
                    Some(t) if snap.bytes_per_sec > 0.0 => {
                        Some(t.saturating_sub(downloaded) as f64 / snap.bytes_per_sec)
                    }
                    _ => snap.eta_secs,
                };
                self.update(id, |s| {
                    s.downloaded_bytes = downloaded;
                    s.total_bytes = total;
                    s.bytes_per_sec = snap.bytes_per_sec;
                    s.eta_secs = eta;
                });
                self.inner.events.emit(AppEvent::DownloadProgress(ipc::event::DownloadProgress {
                    download_id: id.to_owned(),
                    file_name: file_name.clone(),
                    downloaded_bytes: downloaded,
                    total_bytes: total,
                    bytes_per_sec: snap.bytes_per_sec,
                    eta_secs: eta,
                }));
            })
            .await?;
        Ok(match outcome {
            Outcome::Done(d) => Some((Some(d.sha256), d.bytes)),
            Outcome::Paused { .. } => None,
        })
    }

    /// Checks every GGUF file of the model (the primary one, which an LLM must have, each shard
    /// of a split model, each GGUF component) against its length, then registers the model.
    async fn finish(&self, id: &str) -> Result<String> {
        let (request, tasks, model_id) =
            self.with_job(id, |j| (j.request.clone(), j.tasks.clone(), j.model_id.clone()))?;
        let primary = &tasks[0];
        let dest = &primary.dest;
        let primary_is_gguf = super::is_gguf_path(dest) || request.kind == ModelKind::Llm;
        let ggufs: Vec<PathBuf> = tasks
            .iter()
            .enumerate()
            .filter(|(i, t)| (*i == 0 && primary_is_gguf) || super::is_gguf_path(&t.dest))
            .map(|(_, t)| t.dest.clone())
            .collect();
        let checked = tokio::task::spawn_blocking(move || {
            ggufs.iter().map(|p| super::read_gguf(p)).collect::<Result<Vec<_>>>()
        })
        .await
        .map_err(|e| RuntimeError::Internal(e.to_string()))?;
        let header = match checked {
            Ok(mut headers) if primary_is_gguf => Some(headers.swap_remove(0)),
            Ok(_) => None,
            Err(e) => {
                // Not a model we can run: nothing is left registered or on disk.
                let _ = self.with_job(id, |j| remove_job_files(j));
                return Err(e);
            }
        };
        let files: Vec<ModelFile> = tasks
            .iter()
            .map(|t| {
                let (sha, bytes) = t.done.clone().unwrap_or((None, 0));
                ModelFile {
                    role: t.role.clone(),
                    path: t.dest.display().to_string(),
                    size_bytes: bytes,
                    sha256: sha,
                }
            })
            .collect();
        let name = request.name.trim().to_owned();
        let info = ModelInfo {
            id: model_id,
            supports_reasoning: source::supports_reasoning(&name)
                || source::supports_reasoning(
                    &dest.file_name().unwrap_or_default().to_string_lossy(),
                ),
            name,
            kind: request.kind,
            size_bytes: files.iter().map(|f| f.size_bytes).sum(),
            path: dest.display().to_string(),
            downloaded_at_ms: now_ms(),
            source: request.source.clone(),
            sha256: files[0].sha256.clone(),
            gguf: header.as_ref().map(summarize),
            files,
        };
        self.inner.store.register(&info).await?;
        Ok(info.id)
    }
}

fn local_path(source: &ModelSource) -> PathBuf {
    match source {
        ModelSource::Local { path } => PathBuf::from(path),
        _ => PathBuf::new(),
    }
}

/// Removes what a job itself wrote: its finished files, `.part`s and sidecars, and its folder
/// when that is left empty. Files it found already there stay.
fn remove_job_files(job: &Job) {
    for t in job.tasks.iter().filter(|t| !t.preexisting) {
        let _ = std::fs::remove_file(&t.dest);
        download::discard_partial(&t.dest);
    }
    if let Some(dir) = &job.dir {
        let _ = std::fs::remove_dir(dir); // only succeeds when empty
    }
}
