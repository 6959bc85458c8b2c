//! The download queue: at most `concurrency` downloads at once, each with a handle to pause,
//! resume or cancel it, progress on the event bus, and a model registered only at the end.
//! Its rows are stored (`queue_file`), so a download interrupted by a restart, or by the app
//! being killed, is listed again as Paused and resumes from its `.part`.

use super::hf::{HfAccess, HfSettings};
use super::queue_file::{self as stored, QueueFile, Row};
use super::{source, summarize, ModelStore};
use crate::download::{self, Control, DownloadConfig, DownloadSpec, Downloader, Outcome};
use crate::now_ms;
use crate::stored::Conv;
use crate::{EventBus, Result, RuntimeError};
use ipc::models::{
    ComponentRequest, ComponentRole, DownloadRequest, DownloadState, DownloadStatus, ModelFile,
    ModelInfo, ModelKind, ModelSource,
};
use ipc::AppEvent;
use std::path::{Path, PathBuf};
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
    /// Where the model comes from (what the registry records).
    source: ModelSource,
    tasks: Vec<FileTask>,
    /// A folder made for this model (shards, components), removed again if left empty.
    dir: Option<PathBuf>,
    model_id: String,
}

impl Job {
    fn active(&self) -> bool {
        !matches!(self.status.state, DownloadState::Done | DownloadState::Failed)
    }

    fn to_row(&self) -> Row {
        let s = &self.status;
        Row {
            id: s.download_id.clone(),
            name: s.name.clone(),
            kind: s.kind.conv(),
            state: stored::stored_state(s.state),
            source: self.source.conv(),
            model_id: self.model_id.clone(),
            dir: self.dir.clone(),
            tasks: self
                .tasks
                .iter()
                .map(|t| stored::Task {
                    role: t.role.clone(),
                    source: t.source.conv(),
                    dest: t.dest.clone(),
                    sha256: t.sha256.clone(),
                    preexisting: t.preexisting,
                    done: t.done.clone().map(|(sha256, bytes)| stored::TaskDone { sha256, bytes }),
                    size: t.size,
                })
                .collect(),
            total_bytes: s.total_bytes,
            done_bytes: if s.state == DownloadState::Done { s.downloaded_bytes } else { 0 },
            error: s.error.as_ref().map(Into::into),
            registered: s.model_id.clone(),
        }
    }

    /// A stored row as it shows after a restart: what was waiting or running is paused, at the
    /// bytes its files and `.part`s hold now.
    fn from_row(row: &Row) -> Self {
        let state = stored::restored_state(row.state);
        let downloaded_bytes = if state == DownloadState::Done {
            row.done_bytes
        } else {
            stored::bytes_on_disk(&row.tasks)
        };
        Job {
            status: DownloadStatus {
                download_id: row.id.clone(),
                name: row.name.clone(),
                kind: row.kind.conv(),
                state,
                downloaded_bytes,
                total_bytes: row.total_bytes,
                bytes_per_sec: 0.0,
                eta_secs: None,
                error: row.error.as_ref().map(Into::into),
                model_id: row.registered.clone(),
            },
            control: Control::default(),
            source: row.source.conv(),
            tasks: row
                .tasks
                .iter()
                .map(|t| FileTask {
                    role: t.role.clone(),
                    source: t.source.conv(),
                    dest: t.dest.clone(),
                    sha256: t.sha256.clone(),
                    preexisting: t.preexisting,
                    done: t.done.clone().map(|d| (d.sha256, d.bytes)),
                    size: t.size,
                })
                .collect(),
            dir: row.dir.clone(),
            model_id: row.model_id.clone(),
        }
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
    /// Where the rows are stored; `None` in tests that need no file, and when the file there
    /// could not be read (a newer version's: it is then left as it is).
    state_file: Option<PathBuf>,
    /// Held while a snapshot is taken and written, so the last write is the newest state.
    save_lock: Mutex<()>,
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
    /// A queue that keeps its rows in memory only.
    pub fn new(
        store: ModelStore,
        events: EventBus,
        concurrency: usize,
        config: DownloadConfig,
        hf: HfSettings,
    ) -> Result<Self> {
        Self::build(store, events, concurrency, config, hf, None, Vec::new())
    }

    /// A queue stored in `config_dir`: the rows left by the last run come back (unfinished ones
    /// paused). A file that cannot be read is reported and left alone, and the queue starts
    /// empty without writing over it.
    pub fn open(
        store: ModelStore,
        events: EventBus,
        concurrency: usize,
        config: DownloadConfig,
        hf: HfSettings,
        config_dir: &Path,
    ) -> Result<Self> {
        let path = config_dir.join(stored::FILE_NAME);
        let (jobs, state_file) =
            match crate::storage::read_versioned::<QueueFile>(&path, stored::FORMAT) {
                Ok(file) => {
                    let rows = file.map(|f| f.rows).unwrap_or_default();
                    (rows.iter().map(Job::from_row).collect(), Some(path))
                }
                Err(e) => {
                    tracing::warn!("download queue: {e}");
                    (Vec::new(), None)
                }
            };
        Self::build(store, events, concurrency, config, hf, state_file, jobs)
    }

    fn build(
        store: ModelStore,
        events: EventBus,
        concurrency: usize,
        config: DownloadConfig,
        hf: HfSettings,
        state_file: Option<PathBuf>,
        jobs: Vec<Job>,
    ) -> Result<Self> {
        let next = jobs
            .iter()
            .filter_map(|j| j.status.download_id.strip_prefix("dl-")?.parse::<u64>().ok())
            .max()
            .unwrap_or(0)
            + 1;
        Ok(Self {
            inner: Arc::new(Inner {
                downloader: Downloader::new(config)?,
                store,
                hf,
                events,
                slots: Semaphore::new(concurrency.max(1)),
                jobs: Mutex::new(jobs),
                next_id: AtomicU64::new(next),
                state_file,
                save_lock: Mutex::new(()),
            }),
        })
    }

    /// Writes the rows as they are now (states and finished files; not every progress tick) and
    /// tells the window, which reads the rows again (it polls nothing). Every change of a row's
    /// state or of the list passes here. A failed write is reported and the queue goes on: the
    /// downloads themselves are intact.
    fn save(&self) {
        self.write_rows();
        self.inner.events.emit(AppEvent::DownloadsChanged);
    }

    fn write_rows(&self) {
        let Some(path) = &self.inner.state_file else { return };
        let _writing = self.inner.save_lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut rows: Vec<Row> = self.jobs().iter().map(Job::to_row).collect();
        stored::trim_finished(&mut rows);
        let file = QueueFile { format: stored::FORMAT, rows };
        if let Err(e) = crate::storage::write_json_atomic_sync(path, &file) {
            tracing::warn!("download queue: {e}");
        }
    }

    fn jobs(&self) -> std::sync::MutexGuard<'_, Vec<Job>> {
        self.inner.jobs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The files a request stands for: one, every shard of a split GGUF (and an LLM's vision
    /// projector, in a folder of its own), or a diffusion model and its components (in a folder
    /// variants share).
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
        let given = |s: &Option<String>| s.clone().filter(|s| !s.trim().is_empty());
        let sha = given(&request.sha256);
        let projector = |c: &ComponentRequest| c.role == ComponentRole::Projector;
        let components_fit = match request.kind {
            ModelKind::Llm => request.components.iter().all(projector),
            ModelKind::Diffusion => !request.components.iter().any(projector),
        };
        if !components_fit || (request.kind == ModelKind::Llm && request.components.len() > 1) {
            return Err(RuntimeError::InvalidInput(
                "an LLM takes one component, its vision projector; a diffusion model takes \
                 encoders and decoders"
                    .into(),
            ));
        }
        let shards = match (request.kind, source::shard_of(&primary)) {
            (ModelKind::Llm, Some((_, count))) if count > 1 => count,
            _ => 1,
        };
        if shards > 512 {
            return Err(RuntimeError::InvalidInput(format!("{shards} shards is more than 512")));
        }
        // One plain file goes in the models folder; anything more in a folder of its own, which
        // variants of a diffusion model share. For an LLM, `model_id` is free (no model has it),
        // so a folder by that name can only be left by an interrupted download of these files:
        // its finished files are kept and the rest resumes.
        if shards == 1 && request.components.is_empty() {
            let dest = store.file_path(request.kind, &primary)?;
            if dest.exists() {
                return Err(RuntimeError::AlreadyExists(dest.display().to_string()));
            }
            return Ok((vec![task("model".into(), request.source.clone(), dest, sha)], None));
        }
        let dir = match request.kind {
            ModelKind::Llm => store.file_path(ModelKind::Llm, model_id)?,
            ModelKind::Diffusion => store.file_path(
                ModelKind::Diffusion,
                &source::slug(request.directory.as_deref().unwrap_or(model_id)),
            )?,
        };
        let mut tasks = Vec::new();
        if shards > 1 {
            for i in 1..=shards {
                let src = source::shard_source(&request.source, i, shards);
                let dest = store.layout_join(&dir, &source::file_name(&src)?)?;
                // Each shard's own checksum when given, else the one given is the first's (the
                // file the user named).
                let sum = match request.shard_sha256.get(i as usize - 1) {
                    Some(s) => given(s),
                    None if i == 1 => sha.clone(),
                    None => None,
                };
                tasks.push(task(format!("shard {i}/{shards}"), src, dest, sum));
            }
        } else {
            let role = match request.kind {
                ModelKind::Llm => "model",
                ModelKind::Diffusion => "diffusion_model",
            };
            let dest = store.layout_join(&dir, &primary)?;
            tasks.push(task(role.into(), request.source.clone(), dest, sha));
        }
        for c in &request.components {
            let dest = store.layout_join(&dir, &source::file_name(&c.source)?)?;
            tasks.push(task(c.role.as_str().into(), c.source.clone(), dest, given(&c.sha256)));
        }
        Ok((tasks, Some(dir)))
    }

    /// Checks the request, reserves its files and id, and starts it (or queues it behind others).
    pub fn enqueue(&self, request: DownloadRequest) -> Result<String> {
        if request.name.trim().is_empty() {
            return Err(RuntimeError::InvalidInput("give the model a name".into()));
        }
        let sums = std::iter::once(&request.sha256)
            .chain(&request.shard_sha256)
            .chain(request.components.iter().map(|c| &c.sha256));
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
        jobs.push(Job {
            status: DownloadStatus::queued(
                id.clone(),
                request.name.trim().to_owned(),
                request.kind,
            ),
            control: Control::default(),
            source: request.source,
            tasks,
            dir,
            model_id,
        });
        drop(jobs);
        self.save();
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
        })?;
        self.save();
        Ok(())
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
            self.save();
            self.spawn(id.to_owned());
        }
        Ok(())
    }

    /// Forgets a finished or failed row (a failed one's partial files are deleted with it).
    /// One still downloading or paused is stopped with Cancel instead.
    pub fn clear(&self, id: &str) -> Result<()> {
        let state = self.with_job(id, |j| j.status.state)?;
        match state {
            DownloadState::Done => {
                self.jobs().retain(|j| j.status.download_id != id);
                self.save();
                Ok(())
            }
            DownloadState::Failed => {
                self.discard(id);
                Ok(())
            }
            _ => Err(RuntimeError::InvalidInput(
                "this download is not finished: Cancel stops it and deletes what it fetched".into(),
            )),
        }
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
        drop(jobs);
        self.save();
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
                self.update(&id, |s| s.state = DownloadState::Paused);
                return self.save();
            }
            download::Command::Run => {}
        }
        self.update(&id, |s| s.state = DownloadState::Running);
        self.save();

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
                self.save();
                self.inner.events.emit(AppEvent::DownloadFinished { download_id: id, model_id });
            }
            Ok(None) => {
                self.update(&id, |s| s.state = DownloadState::Paused);
                self.save();
            }
            Err(RuntimeError::Cancelled) => self.discard(&id),
            Err(e) => {
                let error = e.to_ipc();
                self.update(&id, |s| {
                    s.state = DownloadState::Failed;
                    s.error = Some(error.clone());
                });
                self.save();
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
            self.save();
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
                // The size is stored when it becomes known, so that a row restored after a
                // kill shows its percent (bytes themselves are read back from the disk).
                let sized = self.with_job(id, |j| j.status.total_bytes != total).unwrap_or(false);
                self.update(id, |s| {
                    s.downloaded_bytes = downloaded;
                    s.total_bytes = total;
                    s.bytes_per_sec = snap.bytes_per_sec;
                    s.eta_secs = eta;
                });
                if sized {
                    self.save();
                }
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
        let (name, kind, model_source, tasks, model_id) = self.with_job(id, |j| {
            (
                j.status.name.clone(),
                j.status.kind,
                j.source.clone(),
                j.tasks.clone(),
                j.model_id.clone(),
            )
        })?;
        let primary = &tasks[0];
        let dest = &primary.dest;
        let primary_is_gguf = super::is_gguf_path(dest) || kind == ModelKind::Llm;
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
        let info = ModelInfo {
            id: model_id,
            supports_reasoning: source::supports_reasoning(&name)
                || source::supports_reasoning(
                    &dest.file_name().unwrap_or_default().to_string_lossy(),
                ),
            name,
            kind,
            size_bytes: files.iter().map(|f| f.size_bytes).sum(),
            path: dest.display().to_string(),
            downloaded_at_ms: now_ms(),
            source: model_source,
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
