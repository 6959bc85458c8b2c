//! [`DiffusionServer`]: the local image-job API and the jobs behind it.
//!
//! "Running" means the model is chosen, the runtime is installed and checked, and the HTTP job
//! API ([`super::api`]) listens. Images come from a warm sd-server ([`super::warm`]) when the
//! installed build has one beside its sd-cli: started by the first image, kept loaded for the
//! next ones as the usage mode says; otherwise from one sd-cli run per image ([`super::job`]).
//! One job runs at a time; a second request while one runs is answered "busy" (HTTP 503
//! `SERVER_BUSY`, as the original), never queued behind the user's back. Once the running job is
//! cancelled the next request is taken at once: it waits for the cancelled one to let go of its
//! process before it starts (the client need not poll until "busy" clears). Finished jobs keep
//! their result for a while (5 minutes by default) and are then forgotten.

use super::args::{offload_for, validate, Offload, SdImage, SdModel};
use super::estimate::{image_footprint, Weights, PROCESS_BASE};
use super::job::{self, JobOut};
use super::ledger::{Allocation, BufferLines, Ledger};
use super::progress::{Snapshot, Stage, Tracker};
use super::warm::{self, Warm};
use crate::binaries::Binaries;
use crate::events::EventBus;
use crate::logfile::ServerLog;
use crate::models::ModelStore;
use crate::storage::StorageLayout;
use crate::system::{MemorySource, SystemProbe};
use crate::{now_ms, Result, RuntimeError};
use base64::Engine as _;
use futures_util::future::BoxFuture;
use ipc::diffusion::{
    DiffusionConfig, DiffusionStatus, ImageRequest, JobError, JobImage, JobProgress, JobResult,
    JobStatus, JobView, DEFAULT_CFG, DEFAULT_PORT, DEFAULT_SIZE, DEFAULT_STEPS, MAX_COUNT,
};
use ipc::event::{ImageStage, LogLevel, LogLine, ServerKind, ServerState};
use ipc::format::bytes;
use ipc::models::{ModelInfo, ModelKind};
use ipc::orchestrator::{Footprint, OffloadDecision};
use ipc::runtimes::RuntimeKind;
use ipc::AppEvent;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

#[derive(Debug, Clone)]
pub struct DiffusionServerConfig {
    /// How long a finished job's result stays available.
    pub result_ttl: Duration,
    /// Largest request body the job API reads.
    pub body_limit: usize,
    /// The API's port when a start names none (0: any free port).
    pub default_port: u16,
}

impl Default for DiffusionServerConfig {
    fn default() -> Self {
        Self {
            result_ttl: Duration::from_secs(5 * 60),
            body_limit: 64 * 1024,
            default_port: DEFAULT_PORT,
        }
    }
}

/// What a job asks of the gate every job passes through.
pub struct JobTicket {
    pub job_id: String,
    /// The job's memory estimate ([`super::estimate`]).
    pub need: Footprint,
    /// Called when the gate starts making room (the job shows "Making room").
    pub making_room: Box<dyn FnOnce() + Send>,
}

/// Something every image job passes through (the orchestrator): it may make room first and
/// clean up after. Without one, jobs run as they come.
pub trait JobGate: Send + Sync {
    /// Runs `job` (which records its own outcome); an error is the gate's own (the job may not
    /// have run).
    fn run<'a>(&'a self, ticket: JobTicket, job: BoxFuture<'a, ()>) -> BoxFuture<'a, Result<()>>;
    /// What a job needing `need` would decide now; nothing changes.
    fn check(&self, need: Footprint) -> Result<OffloadDecision>;
    /// The share of free memory the two servers may take together.
    fn margin(&self) -> f64 {
        ipc::orchestrator::OrchestratorSettings::default().margin
    }
}

/// Everything a job needs that the start decided.
#[derive(Debug, Clone)]
struct Running {
    exe: PathBuf,
    model: ModelInfo,
    config: DiffusionConfig,
    /// sd-cli runs on a GPU (a GPU build on a machine with one).
    gpu: bool,
    /// The runtime that started the server runs its jobs (a caller of `generate` may be on a
    /// thread without one, e.g. a window's synchronous command).
    tasks: tokio::runtime::Handle,
    /// The warm backend, when the build has sd-server.
    warm: Option<Arc<Warm>>,
}

struct Job {
    view: JobView,
    cancel: watch::Sender<bool>,
    finished_at: Option<Instant>,
}

struct Shared {
    status: DiffusionStatus,
    running: Option<Running>,
    /// Shuts the HTTP listener down, and its task.
    listener: Option<(oneshot::Sender<()>, JoinHandle<()>)>,
    jobs: HashMap<String, Job>,
    /// The job that holds the server (from its request until it ends) and its task.
    active: Option<(String, JoinHandle<()>)>,
}

struct Inner {
    storage: StorageLayout,
    events: EventBus,
    binaries: Binaries,
    models: ModelStore,
    system: Arc<SystemProbe>,
    /// Live memory for the offload flags (the probe; tests script it).
    memory: Mutex<Arc<dyn MemorySource>>,
    config: DiffusionServerConfig,
    shared: Mutex<Shared>,
    logs: ServerLog,
    /// One start or stop at a time.
    op: tokio::sync::Mutex<()>,
    counter: AtomicU64,
    gate: Mutex<Option<Arc<dyn JobGate>>>,
    /// What sd-cli allocated for each model and size so far (`config/image-memory.json`).
    ledger: Mutex<Ledger>,
}

#[derive(Clone)]
pub struct DiffusionServer {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for DiffusionServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiffusionServer").finish_non_exhaustive()
    }
}

/// [`DiffusionServer::before_llm_start`].
struct RoomForLlm(std::sync::Weak<Inner>);

impl crate::llama::BeforeStart for RoomForLlm {
    fn before_start(&self, need: Footprint) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let Some(inner) = self.0.upgrade() else { return };
            let server = DiffusionServer { inner };
            let Some(warm) = server.warm() else { return };
            if warm.info().state == ipc::diffusion::BackendState::Absent {
                return;
            }
            let margin = server
                .inner
                .gate
                .lock()
                .unwrap()
                .as_ref()
                .map_or(ipc::orchestrator::OrchestratorSettings::default().margin, |g| g.margin());
            let memory = server.inner.memory.lock().unwrap().clone();
            let Ok(now) = memory.memory_now() else { return };
            let free_vram = now.gpus.iter().map(|g| g.vram.free_bytes).max();
            if warm::llm_fits(need, now.memory.available_bytes, free_vram, margin) {
                return;
            }
            server.log(
                LogLevel::Info,
                format!(
                    "releasing the image backend: the LLM needs {} RAM + {} VRAM, more than fits beside it",
                    bytes(need.ram_bytes),
                    bytes(need.vram_bytes)
                ),
            );
            if let Err(e) = warm.release(ipc::diffusion::ReleaseReason::LlmStart).await {
                server.log(LogLevel::Error, format!("the image backend did not end: {e}"));
            }
        })
    }
}

pub use crate::net::is_loopback;

impl DiffusionServer {
    pub fn new(
        storage: StorageLayout,
        events: EventBus,
        binaries: Binaries,
        models: ModelStore,
        system: Arc<SystemProbe>,
        config: DiffusionServerConfig,
    ) -> Self {
        let logs = ServerLog::new(
            ServerKind::Diffusion,
            storage.logs().join("diffusion-server.log"),
            events.clone(),
        );
        // A warm backend that a crashed run of the app left holds its memory: stopped now.
        crate::process::pidfile::stop_orphan(&warm::pidfile_in(&storage.root().join("run")));
        // A missing or unreadable ledger only means first-run estimates until the next job.
        let ledger = std::fs::read(ledger_path(&storage))
            .ok()
            .and_then(|b| serde_json::from_slice::<Ledger>(&b).ok())
            .unwrap_or_default();
        Self {
            inner: Arc::new(Inner {
                storage,
                events,
                binaries,
                models,
                memory: Mutex::new(system.clone() as Arc<dyn MemorySource>),
                system,
                config,
                shared: Mutex::new(Shared {
                    status: DiffusionStatus::stopped(),
                    running: None,
                    listener: None,
                    jobs: HashMap::new(),
                    active: None,
                }),
                logs,
                op: tokio::sync::Mutex::new(()),
                counter: AtomicU64::new(0),
                gate: Mutex::new(None),
                ledger: Mutex::new(ledger),
            }),
        }
    }

    /// Reads live memory (for the offload flags) from `memory` instead of the probe.
    pub fn set_memory(&self, memory: Arc<dyn MemorySource>) {
        *self.inner.memory.lock().unwrap() = memory;
    }

    /// Every job from now on passes through `gate`.
    pub fn set_gate(&self, gate: Arc<dyn JobGate>) {
        *self.inner.gate.lock().unwrap() = Some(gate);
    }

    pub fn status(&self) -> DiffusionStatus {
        let sh = self.inner.shared.lock().unwrap();
        let mut s = sh.status.clone();
        if let Some(w) = sh.running.as_ref().and_then(|r| r.warm.as_ref()) {
            s.backend = w.info();
        }
        s
    }

    /// The settings the image server runs with (`None` while it is stopped).
    pub fn config(&self) -> Option<DiffusionConfig> {
        self.inner.shared.lock().unwrap().running.as_ref().map(|r| r.config.clone())
    }

    /// Ends the warm backend now (the next image loads the model again); answers whether one
    /// was resident. Waits for an image in progress to end first.
    pub async fn release_backend(&self) -> Result<bool> {
        let warm = self.warm();
        match warm {
            Some(w) => w.release(ipc::diffusion::ReleaseReason::Explicit).await,
            None => Ok(false),
        }
    }

    /// What the LLM server asks before each start: a resident backend that leaves too little
    /// memory for the LLM is released first (a manual start waits for that; a reload after an
    /// image cannot fail for it). Holds the server weakly: the LLM server outlives no cycle.
    pub fn before_llm_start(&self) -> Arc<dyn crate::llama::BeforeStart> {
        Arc::new(RoomForLlm(Arc::downgrade(&self.inner)))
    }

    fn warm(&self) -> Option<Arc<Warm>> {
        self.inner.shared.lock().unwrap().running.as_ref().and_then(|r| r.warm.clone())
    }

    pub fn logs(&self) -> Vec<LogLine> {
        self.inner.logs.recent()
    }

    /// Empties the log: the window's lines and the files.
    pub fn clear_logs(&self) -> Result<()> {
        self.inner.logs.clear()
    }

    pub(crate) fn body_limit(&self) -> usize {
        self.inner.config.body_limit
    }

    /// The token requests must carry, when the API is open to other hosts.
    pub(crate) fn required_token(&self) -> Option<String> {
        let sh = self.inner.shared.lock().unwrap();
        let cfg = &sh.running.as_ref()?.config;
        let host = cfg.host.as_deref().unwrap_or("127.0.0.1");
        if is_loopback(host) {
            None
        } else {
            cfg.token.clone()
        }
    }

    fn log(&self, level: LogLevel, message: impl Into<String>) {
        self.inner.logs.log(level, message);
    }

    fn set_state(&self, state: ServerState) {
        let port = {
            let mut sh = self.inner.shared.lock().unwrap();
            sh.status.state = state;
            sh.status.port
        };
        self.inner.events.emit(AppEvent::ServerState {
            server: ServerKind::Diffusion,
            state,
            pid: None,
            port,
        });
    }

    /// Chooses the model, installs sd-cli if needed, and opens the job API.
    pub async fn start(&self, cfg: DiffusionConfig) -> Result<DiffusionStatus> {
        let _op = self.inner.op.lock().await;
        if self.status().state != ServerState::Stopped {
            return Err(RuntimeError::ServerAlreadyRunning);
        }
        let host = cfg.host.clone().unwrap_or_else(|| "127.0.0.1".to_owned());
        crate::net::check_exposure(&host, cfg.token.as_deref(), "the job API")?;
        let model = self.inner.models.get(&cfg.model_id).await?;
        if model.kind != ModelKind::Diffusion {
            return Err(RuntimeError::InvalidInput(format!(
                "{} is an LLM; choose a diffusion model",
                model.name
            )));
        }
        for f in model.all_files() {
            if !std::path::Path::new(&f.path).is_file() {
                return Err(RuntimeError::ModelNotFound(format!(
                    "{} ({} is missing)",
                    model.id, f.path
                )));
            }
        }
        self.inner.shared.lock().unwrap().status.last_error = None;
        self.set_state(ServerState::Starting);
        match self.open(cfg, host, model).await {
            Ok(s) => Ok(s),
            Err(e) => {
                self.log(LogLevel::Error, format!("start failed: {e}"));
                self.inner.shared.lock().unwrap().status.last_error = Some(e.to_ipc());
                self.set_state(ServerState::Stopped);
                Err(e)
            }
        }
    }

    /// The sd-server to keep warm: the one the build's check made its image through, while it
    /// is still there (else one sd-cli per image, as for a build without one).
    fn image_server(&self, installed: &ipc::runtimes::InstalledRuntime) -> Option<PathBuf> {
        match &installed.images {
            Some(ipc::runtimes::ImagePath::WarmServer { server }) => {
                let p = PathBuf::from(server);
                if crate::process::is_executable(&p) {
                    return Some(p);
                }
                self.log(
                    LogLevel::Warn,
                    format!(
                        "{server} is gone; each image runs sd-cli until the build is checked again"
                    ),
                );
                None
            }
            _ => None,
        }
    }

    async fn open(
        &self,
        cfg: DiffusionConfig,
        host: String,
        model: ModelInfo,
    ) -> Result<DiffusionStatus> {
        let gpus = self.inner.system.gpus();
        let ensured = self.inner.binaries.ensure(RuntimeKind::Diffusion, &gpus, false).await?;
        let exe = PathBuf::from(&ensured.installed.path);
        let warm = self.image_server(&ensured.installed).map(|server| {
            Warm::new(server, self.inner.storage.root().join("run"), self.inner.events.clone())
        });
        let (listener, port, port_note) =
            crate::net::listen(&host, cfg.port, self.inner.config.default_port, "the image API")
                .await?;
        let (tx, serve) = crate::net::serve(listener, super::api::router(self.clone()));
        let url_host = if host.contains(':') { format!("[{host}]") } else { host.clone() };
        let status = {
            let mut sh = self.inner.shared.lock().unwrap();
            sh.status = DiffusionStatus {
                state: ServerState::Running,
                model_id: Some(model.id.clone()),
                model_name: Some(model.name.clone()),
                model_bytes: Some(model.all_files().iter().map(|f| f.size_bytes).sum()),
                host: Some(host.clone()),
                port: Some(port),
                url: Some(format!("http://{url_host}:{port}")),
                busy: false,
                active_job: None,
                sd_cli: Some(if ensured.installed.custom {
                    format!("custom binary {}", ensured.installed.path)
                } else {
                    format!(
                        "{}, {} build",
                        ensured.installed.version,
                        ensured.installed.variant.label()
                    )
                }),
                started_at_ms: Some(now_ms()),
                last_error: None,
                port_note,
                warm: warm.is_some(),
                backend: Default::default(),
            };
            let tasks = tokio::runtime::Handle::current();
            let gpu = ensured.installed.variant != ipc::runtimes::Variant::Cpu
                && self.best_gpu().is_some();
            sh.running = Some(Running { exe, model, config: cfg, gpu, tasks, warm });
            sh.listener = Some((tx, serve));
            sh.status.clone()
        };
        self.log(
            LogLevel::Info,
            format!(
                "job API listening on {} for {}; images from {}",
                status.url.as_deref().unwrap_or_default(),
                status.model_name.as_deref().unwrap_or_default(),
                if status.warm {
                    "a warm sd-server, loaded by the first image"
                } else {
                    "one sd-cli run per image (this build has no sd-server)"
                }
            ),
        );
        self.set_state(ServerState::Running);
        Ok(status)
    }

    /// Cancels the running job (its sd-cli is gone when this returns) and closes the job API.
    pub async fn stop(&self) -> Result<()> {
        let _op = self.inner.op.lock().await;
        let (listener, active, warm) = {
            let mut sh = self.inner.shared.lock().unwrap();
            let Some(run) = sh.running.take() else { return Ok(()) };
            (sh.listener.take(), sh.active.take(), run.warm)
        };
        self.set_state(ServerState::Stopping);
        if let Some((id, task)) = active {
            let _ = self.cancel(&id);
            let _ = task.await;
        }
        if let Some(w) = warm {
            if let Err(e) = w.release(ipc::diffusion::ReleaseReason::Stop).await {
                self.log(LogLevel::Error, format!("the image backend did not end: {e}"));
            }
        }
        if let Some((tx, mut serve)) = listener {
            let _ = tx.send(());
            if tokio::time::timeout(Duration::from_secs(2), &mut serve).await.is_err() {
                serve.abort();
            }
        }
        {
            let mut sh = self.inner.shared.lock().unwrap();
            sh.jobs.clear();
            sh.status = DiffusionStatus::stopped();
        }
        self.log(LogLevel::Info, "job API closed");
        self.set_state(ServerState::Stopped);
        Ok(())
    }

    /// The sd-cli settings for one request: defaults filled, the seed chosen, the offload flags
    /// from the GPU's free memory now (the user's overrides win).
    fn image_for(&self, req: &ImageRequest, run: &Running) -> Result<(SdImage, u32, Footprint)> {
        let count = req.count.unwrap_or(1);
        if !(1..=MAX_COUNT).contains(&count) {
            return Err(RuntimeError::InvalidInput(format!(
                "count must be 1 to {MAX_COUNT}, not {count}"
            )));
        }
        let files = run.model.all_files();
        let model = if files.len() == 1 {
            SdModel::Single(files[0].path.clone())
        } else {
            SdModel::Components(
                files
                    .iter()
                    .map(|f| {
                        let role = if f.role == "model" { "diffusion_model" } else { &f.role };
                        (role.to_owned(), f.path.clone())
                    })
                    .collect(),
            )
        };
        let offload = self.offload(run);
        let c = &run.config;
        let seed = match req.seed {
            Some(s) if s >= 0 => s,
            _ => (self.random() % (i32::MAX as u64)) as i64,
        };
        let image = SdImage {
            model,
            prompt: req.prompt.clone(),
            negative_prompt: req.negative_prompt.clone().filter(|n| !n.trim().is_empty()),
            width: req.width.unwrap_or(DEFAULT_SIZE),
            height: req.height.unwrap_or(DEFAULT_SIZE),
            steps: req.steps.unwrap_or(DEFAULT_STEPS),
            cfg_scale: req.cfg_scale.unwrap_or(DEFAULT_CFG),
            seed,
            sampler: req.sampler.clone().filter(|s| !s.is_empty()),
            threads: c.threads,
            offload,
            output: String::new(),
        };
        validate(&image)?;
        let need = self.need_now(run, &image);
        Ok((image, count, need))
    }

    /// The offload flags for a job now: from the GPU's free memory, the user's overrides win.
    fn offload(&self, run: &Running) -> Offload {
        let files = run.model.all_files();
        let has_llm = files.iter().any(|f| f.role == "llm");
        let bytes: u64 = files.iter().map(|f| f.size_bytes).sum();
        let auto = offload_for(bytes, self.best_gpu(), has_llm);
        let c = &run.config;
        Offload {
            clip_on_cpu: c.clip_on_cpu.unwrap_or(auto.clip_on_cpu),
            vae_on_cpu: c.vae_on_cpu.unwrap_or(auto.vae_on_cpu),
            offload_to_cpu: c.offload_to_cpu.unwrap_or(auto.offload_to_cpu),
            diffusion_fa: c.diffusion_fa.unwrap_or(auto.diffusion_fa),
        }
    }

    /// What a job of `width` × `height` takes: what sd-cli allocated for this model, flags and
    /// size before (or scaled from the nearest size measured), plus the process itself; the
    /// first-run estimate when nothing was measured yet.
    fn need_of(&self, run: &Running, offload: Offload, width: u32, height: u32) -> Footprint {
        let ledger = self.inner.ledger.lock().unwrap();
        match ledger.predict(&run.model.id, offload, run.gpu, width, height) {
            Some((a, _)) => {
                let f = a.footprint();
                Footprint { ram_bytes: f.ram_bytes + PROCESS_BASE, vram_bytes: f.vram_bytes }
            }
            None => estimate_of(run, offload, width, height),
        }
    }

    /// What `image` needs on top of what is already in use: all of it, or, when the warm
    /// backend already holds this model with these flags, only the buffers of the image.
    fn need_now(&self, run: &Running, image: &SdImage) -> Footprint {
        let full = self.need_of(run, image.offload, image.width, image.height);
        self.beside_backend(run, full, image.offload, image.threads)
    }

    /// `full` less what a resident backend started with `offload` and `threads` already holds.
    fn beside_backend(
        &self,
        run: &Running,
        full: Footprint,
        offload: Offload,
        threads: Option<u32>,
    ) -> Footprint {
        match &run.warm {
            Some(w) if w.holds(offload, threads) => {
                warm::beside_resident(full, self.held_by_backend(run, offload))
            }
            _ => full,
        }
    }

    /// What a resident backend of the running model holds: its weights as measured (the
    /// ledger), else as estimated (the footprint of no pixels), and the process.
    fn held_by_backend(&self, run: &Running, offload: Offload) -> Footprint {
        let ledger = self.inner.ledger.lock().unwrap();
        match ledger.predict(&run.model.id, offload, run.gpu, 64, 64) {
            Some((a, _)) => {
                let on =
                    |vram| a.params.iter().filter(|b| b.vram == vram).map(|b| b.bytes).sum::<u64>();
                Footprint { ram_bytes: on(false) + PROCESS_BASE, vram_bytes: on(true) }
            }
            None => estimate_of(run, offload, 0, 0),
        }
    }

    /// Keeps what a finished job allocated for the next decision about this model.
    async fn record_allocation(&self, run: &Running, offload: Offload, a: Allocation) {
        let before = self.need_of(run, offload, a.width, a.height);
        let f = a.footprint();
        let biggest = a.compute.iter().max_by_key(|b| b.bytes).map(|b| b.runner.clone());
        self.log(
            LogLevel::Info,
            format!(
                "sd-cli allocated {} RAM + {} VRAM at {}×{} (weights and the {} compute buffer); \
                 sized beforehand at {} RAM + {} VRAM",
                bytes(f.ram_bytes + PROCESS_BASE),
                bytes(f.vram_bytes),
                a.width,
                a.height,
                biggest.as_deref().unwrap_or("largest"),
                bytes(before.ram_bytes),
                bytes(before.vram_bytes),
            ),
        );
        self.change_ledger(|l| l.record(&run.model.id, offload, run.gpu, a)).await;
    }

    /// Drops what was measured for a model (deleted, or replaced under the same id).
    pub async fn forget_model(&self, model_id: &str) {
        self.change_ledger(|l| l.forget(model_id)).await;
    }

    /// Changes the ledger and writes it to `config/image-memory.json`.
    async fn change_ledger(&self, change: impl FnOnce(&mut Ledger)) {
        let snapshot = {
            let mut l = self.inner.ledger.lock().unwrap();
            change(&mut l);
            l.clone()
        };
        let path = ledger_path(&self.inner.storage);
        if let Err(e) = crate::storage::write_json_atomic(&path, &snapshot).await {
            self.log(LogLevel::Warn, format!("image memory not saved: {e}"));
        }
    }

    /// The memory a job for `req` would take (the server must run: the model is its).
    pub fn footprint_for(&self, req: &ImageRequest) -> Result<Footprint> {
        let run = self.inner.shared.lock().unwrap().running.clone();
        let run = run.ok_or(RuntimeError::ServerNotRunning)?;
        let (w, h) = (req.width.unwrap_or(DEFAULT_SIZE), req.height.unwrap_or(DEFAULT_SIZE));
        let offload = self.offload(&run);
        let full = self.need_of(&run, offload, w, h);
        Ok(self.beside_backend(&run, full, offload, run.config.threads))
    }

    /// Whether a job for `req` would pause the LLM now (no gate: never).
    pub fn would_need_offload(&self, req: &ImageRequest) -> Result<Option<OffloadDecision>> {
        let need = self.footprint_for(req)?;
        let gate = self.inner.gate.lock().unwrap().clone();
        gate.map(|g| g.check(need)).transpose()
    }

    /// (total, free) VRAM of the GPU with the most free memory, if any.
    fn best_gpu(&self) -> Option<(u64, u64)> {
        let memory = self.inner.memory.lock().unwrap().clone();
        let now = memory.memory_now().ok()?;
        now.gpus.iter().map(|g| (g.vram.total_bytes, g.vram.free_bytes)).max_by_key(|g| g.1)
    }

    /// A fresh pseudo-random number (time, process and a counter mixed; not for secrets).
    fn random(&self) -> u64 {
        let n = self.inner.counter.fetch_add(1, Ordering::Relaxed);
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let mut x =
            t ^ (u64::from(std::process::id()) << 32) ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        // splitmix64 finaliser
        x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        x ^ (x >> 31)
    }

    fn new_id(&self) -> String {
        const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
        let mut r = self.random();
        let tail: String = (0..9)
            .map(|_| {
                let d = DIGITS[(r % 36) as usize] as char;
                r /= 36;
                d
            })
            .collect();
        format!("gen_{}_{tail}", now_ms())
    }

    /// Forgets finished jobs older than the result lifetime.
    fn prune(&self, sh: &mut Shared) {
        let ttl = self.inner.config.result_ttl;
        sh.jobs.retain(|_, j| j.finished_at.is_none_or(|t| t.elapsed() < ttl));
    }

    /// Starts a job for `req`, or says why not (not running, busy, a bad value).
    pub fn generate(&self, req: ImageRequest) -> Result<JobView> {
        let mut sh = self.inner.shared.lock().unwrap();
        let Some(run) = sh.running.clone() else { return Err(RuntimeError::ServerNotRunning) };
        let (image, count, need) = self.image_for(&req, &run)?;
        self.prune(&mut sh);
        // A cancelled job still ending (its process being stopped) does not hold the next one
        // back: the next waits for it inside its own task.
        let before = match sh.active.take() {
            Some((id, task)) if !sh.jobs.get(&id).is_some_and(|j| j.view.status.is_finished()) => {
                let busy = format!(
                    "the server is busy with image job {id}; poll it, cancel it, or retry when it ends"
                );
                sh.active = Some((id, task));
                return Err(RuntimeError::Busy(busy));
            }
            other => other.map(|(_, task)| task),
        };
        let id = self.new_id();
        let now = now_ms();
        let view = JobView {
            id: id.clone(),
            status: JobStatus::Pending,
            created_at: now,
            updated_at: now,
            progress: None,
            result: None,
            error: None,
        };
        let (cancel, cancel_rx) = watch::channel(false);
        sh.jobs.insert(id.clone(), Job { view: view.clone(), cancel, finished_at: None });
        let me = self.clone();
        let job_id = id.clone();
        let usage = req.usage_mode;
        let task = run.tasks.spawn(async move {
            if let Some(before) = before {
                let _ = before.await;
            }
            me.run_job(job_id, run.exe, image, count, need, usage, cancel_rx).await
        });
        sh.active = Some((id.clone(), task));
        sh.status.busy = true;
        sh.status.active_job = Some(id);
        Ok(view)
    }

    /// One job as the API shows it.
    pub fn job(&self, id: &str) -> Result<JobView> {
        let mut sh = self.inner.shared.lock().unwrap();
        self.prune(&mut sh);
        sh.jobs
            .get(id)
            .map(|j| j.view.clone())
            .ok_or_else(|| RuntimeError::GenerationNotFound(id.to_owned()))
    }

    /// Cancels a pending or running job (its sd-cli ends at once). Cancelling a cancelled job
    /// answers it again; a completed or failed one is an error.
    pub fn cancel(&self, id: &str) -> Result<JobView> {
        let view = {
            let mut sh = self.inner.shared.lock().unwrap();
            self.prune(&mut sh);
            let job = sh
                .jobs
                .get_mut(id)
                .ok_or_else(|| RuntimeError::GenerationNotFound(id.to_owned()))?;
            match job.view.status {
                JobStatus::Cancelled => return Ok(job.view.clone()),
                JobStatus::Complete | JobStatus::Error => {
                    return Err(RuntimeError::AlreadyFinished {
                        id: id.to_owned(),
                        status: format!("{:?}", job.view.status).to_lowercase(),
                    })
                }
                JobStatus::Pending | JobStatus::InProgress => {}
            }
            job.view.status = JobStatus::Cancelled;
            job.view.updated_at = now_ms();
            job.view.progress = None;
            job.finished_at = Some(Instant::now());
            let _ = job.cancel.send(true);
            job.view.clone()
        };
        self.log(LogLevel::Info, format!("image job {id} cancelled"));
        self.inner.events.emit(AppEvent::ImageJobCancelled { job_id: id.to_owned() });
        Ok(view)
    }

    fn update(&self, id: &str, f: impl FnOnce(&mut Job)) {
        let mut sh = self.inner.shared.lock().unwrap();
        if let Some(j) = sh.jobs.get_mut(id) {
            if !j.view.status.is_finished() {
                f(j);
                j.view.updated_at = now_ms();
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn run_job(
        self,
        id: String,
        exe: PathBuf,
        image: SdImage,
        count: u32,
        need: Footprint,
        usage: Option<ipc::diffusion::UsageMode>,
        cancel: watch::Receiver<bool>,
    ) {
        self.update(&id, |j| j.view.status = JobStatus::InProgress);
        self.inner.events.emit(AppEvent::ImageJobStarted {
            job_id: id.clone(),
            count,
            width: image.width,
            height: image.height,
            steps: image.steps,
        });
        self.log(
            LogLevel::Info,
            format!(
                "image job {id}: {count} × {}×{}, {} steps, seed {}",
                image.width, image.height, image.steps, image.seed
            ),
        );
        let temp = self.inner.storage.root().join("temp");
        // Whether the gate paused the LLM for this job (auto usage then releases the backend).
        let paused = Arc::new(std::sync::atomic::AtomicBool::new(false));
        // The job records its result as soon as the images are made: they show while the gate
        // still brings the LLM back. A backend to release goes before the LLM comes back.
        let job = async {
            let image = self.refit_offload(&id, image);
            let out = self.execute(&id, &exe, &image, count, &temp, cancel).await;
            self.finish(&id, out);
            self.settle_backend(usage, paused.load(Ordering::SeqCst)).await;
        };
        let gate = self.inner.gate.lock().unwrap().clone();
        match gate {
            Some(gate) => {
                let me = self.clone();
                let job_id = id.clone();
                let was_paused = paused.clone();
                let making_room = Box::new(move || {
                    was_paused.store(true, Ordering::SeqCst);
                    me.making_room(&job_id)
                });
                let ticket = JobTicket { job_id: id.clone(), need, making_room };
                if let Err(e) = gate.run(ticket, Box::pin(job)).await {
                    self.finish(&id, Err(e));
                }
            }
            None => job.await,
        }
    }

    /// After a request on the warm backend: release it or arm its idle release, as the settings
    /// say.
    async fn settle_backend(&self, usage: Option<ipc::diffusion::UsageMode>, llm_paused: bool) {
        let (warm, config) = {
            let sh = self.inner.shared.lock().unwrap();
            match sh.running.as_ref() {
                Some(r) => (r.warm.clone(), r.config.clone()),
                None => return,
            }
        };
        let Some(warm) = warm else { return };
        let mode = usage.or(config.usage_mode).unwrap_or_default();
        let idle = config.idle_release_secs.unwrap_or(ipc::diffusion::DEFAULT_IDLE_RELEASE_SECS);
        warm.settle(mode, llm_paused, Duration::from_secs(idle)).await;
    }

    /// The offload flags decided again just before sd-cli starts, from the memory free then: the
    /// request chose them before the gate paused the LLM, and VRAM it gave back keeps CLIP and
    /// the VAE on the GPU. The user's overrides still win.
    fn refit_offload(&self, id: &str, mut image: SdImage) -> SdImage {
        let run = self.inner.shared.lock().unwrap().running.clone();
        if let Some(run) = run {
            let now = self.offload(&run);
            if now != image.offload {
                self.log(
                    LogLevel::Info,
                    format!(
                        "image job {id}: offload flags now {} (were {}), from the memory free after making room",
                        describe_offload(now),
                        describe_offload(image.offload)
                    ),
                );
                image.offload = now;
            }
        }
        image
    }

    /// The job waits while the LLM is paused and its memory comes back.
    fn making_room(&self, id: &str) {
        let mut p = None;
        self.update(id, |j| {
            let mut progress = j.view.progress.clone().unwrap_or(JobProgress::at_start(
                ImageStage::MakingRoom,
                0,
                1,
            ));
            progress.stage = ImageStage::MakingRoom;
            j.view.progress = Some(progress.clone());
            p = Some(progress);
        });
        if let Some(p) = p {
            self.log(LogLevel::Info, format!("image job {id}: pausing the LLM to make room"));
            self.inner.events.emit(AppEvent::ImageProgress {
                job_id: id.to_owned(),
                stage: p.stage,
                step: 0,
                total_steps: p.total_steps,
                percent: 0.0,
                image: p.current_image,
                images: p.total_images,
                eta_secs: None,
            });
        }
    }

    /// Runs the images of job `id`, feeding its progress and the log.
    async fn execute(
        &self,
        id: &str,
        exe: &std::path::Path,
        image: &SdImage,
        count: u32,
        temp: &std::path::Path,
        cancel: watch::Receiver<bool>,
    ) -> Result<JobOut> {
        let mut last_event = Instant::now() - Duration::from_secs(1);
        let mut last_stage = None;
        let mut buffers = BufferLines::default();
        // sd-cli runs with `-v` for its buffer lines; the rest of its debug output (which
        // spans lines) stays out of the log.
        let mut in_debug = false;
        let warm = self.warm();
        let on_progress = |s: Snapshot| {
            let p = progress_of(&s);
            self.update(id, |j| j.view.progress = Some(p.clone()));
            // Every stage change and at most ~20 progress events a second reach the window.
            if last_stage != Some(s.stage) || last_event.elapsed() >= Duration::from_millis(50) {
                last_stage = Some(s.stage);
                last_event = Instant::now();
                self.inner.events.emit(AppEvent::ImageProgress {
                    job_id: id.to_owned(),
                    stage: p.stage,
                    step: p.current_step,
                    total_steps: p.total_steps,
                    percent: p.percentage,
                    image: p.current_image,
                    images: p.total_images,
                    eta_secs: p.eta_secs,
                });
            }
        };
        let on_line = |line: &str| {
            // Every line but the step bars (the progress shows those) and debug output.
            let clean = super::progress::strip_ansi(line);
            let t = clean.trim_start();
            if buffers.feed(&clean) {
                let what = t.split_once(" - ").map_or(t, |(_, w)| w).trim();
                self.log(LogLevel::Info, what.to_owned());
                return;
            }
            if t.starts_with('[') {
                in_debug = t.starts_with("[DEBUG");
            }
            if !in_debug && !t.trim().is_empty() && !t.starts_with('|') {
                self.log(LogLevel::Info, clean);
            }
        };
        let out = match warm {
            Some(w) => {
                let mut tracker = Tracker::new(image.steps, count.max(1));
                let stuck = self
                    .inner
                    .shared
                    .lock()
                    .unwrap()
                    .running
                    .as_ref()
                    .and_then(|r| r.config.stuck_after_secs);
                let watchdog =
                    Duration::from_secs(stuck.unwrap_or(ipc::diffusion::DEFAULT_STUCK_AFTER_SECS));
                w.generate(image, count, cancel, &mut tracker, watchdog, on_progress, on_line).await
            }
            None => job::run(exe, image, count, temp, cancel, on_progress, on_line).await,
        };
        // A warm backend names its weights only when it loads them: the ledger learns from the
        // images that loaded the model.
        if out.is_ok() && buffers.has_weights() {
            let run = self.inner.shared.lock().unwrap().running.clone();
            if let (Some(run), Some(a)) = (run, buffers.allocation(image.width, image.height)) {
                self.record_allocation(&run, image.offload, a).await;
            }
        }
        out
    }

    fn finish(&self, id: &str, out: Result<JobOut>) {
        let event = {
            let mut sh = self.inner.shared.lock().unwrap();
            if sh.active.as_ref().is_some_and(|(a, _)| a == id) {
                sh.active = None;
                sh.status.busy = false;
                sh.status.active_job = None;
            }
            let Some(job) = sh.jobs.get_mut(id) else { return };
            if job.view.status.is_finished() {
                None
            } else {
                job.finished_at = Some(Instant::now());
                job.view.updated_at = now_ms();
                job.view.progress = None;
                match out {
                    Ok(out) => {
                        let b64 = base64::engine::general_purpose::STANDARD;
                        let seeds = out.images.iter().map(|i| i.seed).collect();
                        job.view.status = JobStatus::Complete;
                        job.view.result = Some(JobResult {
                            images: out
                                .images
                                .iter()
                                .map(|i| JobImage {
                                    image: b64.encode(&i.png),
                                    seed: i.seed,
                                    width: i.width,
                                    height: i.height,
                                })
                                .collect(),
                            format: "png".into(),
                            time_taken: out.time_taken.as_millis() as u64,
                        });
                        Some(AppEvent::ImageJobFinished {
                            job_id: id.to_owned(),
                            images: out.images.len() as u32,
                            seeds,
                            time_taken_ms: out.time_taken.as_millis() as u64,
                        })
                    }
                    Err(e) => {
                        job.view.status = JobStatus::Error;
                        let error = e.to_ipc();
                        job.view.error = Some(JobError::from_ipc(&error));
                        Some(AppEvent::ImageJobFailed { job_id: id.to_owned(), error })
                    }
                }
            }
        };
        match &event {
            Some(e @ AppEvent::ImageJobFailed { .. }) => self.log(LogLevel::Error, e.summary()),
            Some(e) => self.log(LogLevel::Info, e.summary()),
            None => {}
        }
        if let Some(e) = event {
            self.inner.events.emit(e);
        }
        self.set_state(self.status().state);
    }

    /// Writes image `index` of a finished job to `<storage>/images/` and answers the path.
    pub fn save_image(&self, id: &str, index: u32) -> Result<PathBuf> {
        let img = self.finished_image(id, index)?;
        let path = self.images_folder()?.join(suggested_name(id, index, &img));
        self.write_png(&img, &path)?;
        Ok(path)
    }

    /// Where [`Self::save_image`] writes, created if missing.
    pub fn images_folder(&self) -> Result<PathBuf> {
        let dir = self.inner.storage.root().join("images");
        std::fs::create_dir_all(&dir).map_err(|e| RuntimeError::io("creating folder", &dir, e))?;
        Ok(dir)
    }

    /// The file name a save dialog suggests for image `index` of job `id`.
    pub fn suggested_file_name(&self, id: &str, index: u32) -> Result<String> {
        Ok(suggested_name(id, index, &self.finished_image(id, index)?))
    }

    /// Writes image `index` of a finished job to `path`, a place the user chose in the save
    /// dialog (not a path from the window): written beside it first, then renamed, so a failed
    /// write never leaves half a picture under the chosen name.
    pub fn save_image_to(&self, id: &str, index: u32, path: &Path) -> Result<PathBuf> {
        let img = self.finished_image(id, index)?;
        self.write_png(&img, path)?;
        Ok(path.to_owned())
    }

    fn write_png(&self, img: &JobImage, path: &Path) -> Result<()> {
        let png = base64::engine::general_purpose::STANDARD
            .decode(&img.image)
            .map_err(|e| RuntimeError::Internal(format!("stored image: {e}")))?;
        let tmp = crate::storage::tmp_beside(path);
        std::fs::write(&tmp, png).map_err(|e| RuntimeError::io("writing", &tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            RuntimeError::io("writing", path, e)
        })?;
        self.log(LogLevel::Info, format!("saved {}", path.display()));
        Ok(())
    }

    fn finished_image(&self, id: &str, index: u32) -> Result<JobImage> {
        let img = {
            let view = self.job(id)?;
            let result = view.result.ok_or_else(|| {
                RuntimeError::InvalidInput(format!("image job {id} has no finished image"))
            })?;
            result.images.get(index as usize).cloned().ok_or_else(|| {
                RuntimeError::InvalidInput(format!("image job {id} has no image {index}"))
            })?
        };
        Ok(img)
    }
}

fn suggested_name(id: &str, index: u32, img: &JobImage) -> String {
    format!("{id}-{}-seed{}.png", index + 1, img.seed)
}

/// `config/image-memory.json`: the image ledger.
fn ledger_path(storage: &StorageLayout) -> PathBuf {
    storage.config().join("image-memory.json")
}

fn describe_offload(o: Offload) -> String {
    let parts: Vec<&str> = [
        (o.clip_on_cpu, "CLIP on CPU"),
        (o.vae_on_cpu, "VAE on CPU"),
        (o.offload_to_cpu, "weights offloaded"),
    ]
    .iter()
    .filter(|(on, _)| *on)
    .map(|(_, w)| *w)
    .collect();
    if parts.is_empty() {
        "all on the GPU".to_owned()
    } else {
        parts.join(", ")
    }
}

/// The first-run estimate of a job of `width` × `height` with `offload` on the running model.
fn estimate_of(run: &Running, offload: Offload, width: u32, height: u32) -> Footprint {
    let files = run.model.all_files();
    let weights = Weights::from_files(files.iter().map(|f| (f.role.as_str(), f.size_bytes)));
    image_footprint(weights, offload, width, height, run.gpu)
}

fn progress_of(s: &Snapshot) -> JobProgress {
    JobProgress {
        stage: match s.stage {
            Stage::Loading => ImageStage::Loading,
            Stage::Diffusion => ImageStage::Diffusion,
            Stage::Decoding => ImageStage::Decoding,
            Stage::Done => ImageStage::Done,
        },
        current_step: s.step,
        total_steps: s.steps,
        percentage: s.percent,
        current_image: s.image + 1,
        total_images: s.images,
        eta_secs: s.eta_secs,
    }
}
