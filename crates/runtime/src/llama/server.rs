//! [`LlamaServer`]: starts, watches, restarts and stops llama-server.
//!
//! A start resolves the settings (auto-configuration) and runs the server on the supervised-child
//! core ([`process::Supervised`]): `/health` is polled while racing the process's exit, so a
//! server that dies while loading fails at once with its last lines and a code from
//! [`process::classify_failure`]. The load deadline moves while the log shows progress. Once
//! healthy, a monitor task owns the child: it feeds the log (levels, a rotated file, a ring,
//! window events), reads the memory each device took, and turns any exit nobody asked for into a
//! crash, with optional restarts (1 s, 2 s, 4 s, …). A watchdog task checks `/health` on an
//! interval; three failures in a row (a hung server) count as a crash: the monitor kills it and
//! the restart follows. A pidfile lets the next launch stop a server that a crashed app left.

use super::args::{build_args, build_env};
use super::autoconfig::{self, MachineFacts, ModelFacts};
use super::health::{HealthVerdict, Watchdog, HANG_AFTER};
use super::log::{self as llog, MemoryLog};
use crate::binaries::Binaries;
use crate::events::EventBus;
use crate::logfile::ServerLog;
use crate::models::ModelStore;
use crate::net::{choose_port, free_port, local_client, port_free};
use crate::process::{self, ExitInfo, Supervised};
use crate::storage::StorageLayout;
use crate::system::{MemorySource, SystemProbe};
use crate::{now_ms, Result, RuntimeError};
use ipc::event::{LogLevel, LogLine, ServerKind, ServerState};
use ipc::llm::{ChatArgs, ChatReply, CrashInfo, LlmConfig, LlmSettings, LlmStatus};
use ipc::models::ModelKind;
use ipc::runtimes::{RuntimeKind, Variant};
use ipc::system::Backend;
use ipc::{AppEvent, ErrorCode};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// SIGTERM, then SIGKILL after this.
    pub stop_grace: Duration,
    /// Spawn to healthy with a silent log; each new log line moves the deadline this far out.
    pub load_timeout: Duration,
    /// No start waits longer than this, log or not.
    pub max_load: Duration,
    /// First auto-restart delay; doubles for each try.
    pub restart_backoff: Duration,
    pub max_restarts: u32,
    /// Between `/health` checks while running (a start's `health_interval_secs` wins).
    pub health_interval: Duration,
    /// The port of a start that names none (0: any free port).
    pub default_port: u16,
    /// Where another llama-server is looked for before each start.
    pub probe_ports: Vec<u16>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            stop_grace: Duration::from_secs(10),
            load_timeout: Duration::from_secs(60),
            max_load: Duration::from_secs(15 * 60),
            restart_backoff: Duration::from_secs(1),
            max_restarts: 3,
            health_interval: Duration::from_secs(5),
            default_port: ipc::llm::DEFAULT_PORT,
            probe_ports: ipc::llm::PROBE_PORTS.collect(),
        }
    }
}

/// What the monitor is asked to do with the child.
enum Ctl {
    /// Stop it (SIGTERM, then SIGKILL) and answer how it ended.
    Stop(oneshot::Sender<Option<ExitInfo>>),
    /// The watchdog found it hung: kill it at once and treat that as a crash.
    Kill,
}

struct Shared {
    status: LlmStatus,
    /// The request of the last start, port made concrete: what a restart reuses.
    config: Option<LlmConfig>,
    ctl: Option<mpsc::Sender<Ctl>>,
    memory: MemoryLog,
    /// Devices and offloaded layers, from this start's load log.
    load: crate::binaries::scan::LoadReport,
    /// Since when `/health` failed, when the watchdog killed the server for it.
    hung_since_ms: Option<u64>,
}

struct Inner {
    storage: StorageLayout,
    events: EventBus,
    binaries: Binaries,
    models: ModelStore,
    system: Arc<SystemProbe>,
    /// Where live memory is read (the app's one feed; the probe itself until one is set).
    memory: Mutex<Arc<dyn MemorySource>>,
    config: ServerConfig,
    shared: Mutex<Shared>,
    logs: ServerLog,
    /// One start or restart at a time.
    op: tokio::sync::Mutex<()>,
    /// Bumped by every manual start and stop: a pending auto-restart of an older epoch is void.
    epoch: AtomicU64,
    /// Set while the orchestrator has paused the server for an image: starts are refused with
    /// this reason.
    hold: Mutex<Option<String>>,
    /// Test-chat replies streaming now, by request id: the way to stop each.
    chats: Mutex<HashMap<String, oneshot::Sender<()>>>,
    /// Asked before every start (manual, restart or reload) with what the server will take.
    before_start: Mutex<Option<Arc<dyn BeforeStart>>>,
    /// The RPC protocol of the installed build's worker program, read once per program.
    rpc_version: tokio::sync::Mutex<Option<(PathBuf, ipc::rpc::RpcVersion)>>,
    /// The last probe of each RPC worker, and when: a preview reuses a recent one.
    probes: Mutex<HashMap<String, (Instant, ipc::rpc::WorkerProbe)>>,
}

/// Why workers are probed: a start (afresh, recorded) or a preview (reusing, recording nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Probing {
    Start,
    Preview,
}

/// How long a preview reuses a worker's probe.
const PROBE_REUSE: Duration = Duration::from_secs(5);

/// Something that may hold memory an LLM about to start needs (the warm image backend): asked
/// before each start with the expected use, it makes room first. It must not wait on the LLM.
pub trait BeforeStart: Send + Sync {
    fn before_start(
        &self,
        need: ipc::orchestrator::Footprint,
    ) -> futures_util::future::BoxFuture<'_, ()>;
}

/// Test-chat replies that may stream at once (the window sends one at a time).
const MAX_CHATS: usize = 4;

#[derive(Clone)]
pub struct LlamaServer {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for LlamaServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlamaServer").finish_non_exhaustive()
    }
}

impl LlamaServer {
    /// Also stops a server an earlier run of the app left behind (found by its pidfile).
    pub fn new(
        storage: StorageLayout,
        events: EventBus,
        binaries: Binaries,
        models: ModelStore,
        system: Arc<SystemProbe>,
        config: ServerConfig,
    ) -> Self {
        let logs = ServerLog::new(
            ServerKind::Llm,
            storage.logs().join("llama-server.log"),
            events.clone(),
        );
        let me = Self {
            inner: Arc::new(Inner {
                storage,
                events,
                binaries,
                models,
                memory: Mutex::new(system.clone() as Arc<dyn MemorySource>),
                system,
                config,
                shared: Mutex::new(Shared {
                    status: LlmStatus::stopped(),
                    config: None,
                    ctl: None,
                    memory: MemoryLog::default(),
                    load: Default::default(),
                    hung_since_ms: None,
                }),
                logs,
                op: tokio::sync::Mutex::new(()),
                epoch: AtomicU64::new(0),
                hold: Mutex::new(None),
                chats: Mutex::new(HashMap::new()),
                before_start: Mutex::new(None),
                rpc_version: tokio::sync::Mutex::new(None),
                probes: Mutex::new(HashMap::new()),
            }),
        };
        if let Some(pid) = me.stop_orphan() {
            me.log(
                LogLevel::Warn,
                format!("stopped llama-server (pid {pid}) left running by an earlier session"),
            );
        }
        me
    }

    /// Reads live memory from `memory` (the app's one feed) instead of the probe.
    pub fn set_memory(&self, memory: Arc<dyn MemorySource>) {
        *self.inner.memory.lock().unwrap_or_else(|p| p.into_inner()) = memory;
    }

    /// The machine now: cached static facts with one live reading of the feed.
    fn system_info(&self) -> Result<(ipc::system::SystemInfo, ipc::system::MemoryNow)> {
        let memory = self.inner.memory.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let now = memory.memory_now()?;
        Ok((self.inner.system.system_info_with(now.clone()), now))
    }

    pub fn status(&self) -> LlmStatus {
        let sh = self.inner.shared.lock().unwrap();
        let mut s = sh.status.clone();
        s.measured = sh.memory.devices.clone();
        s
    }

    pub fn logs(&self) -> Vec<LogLine> {
        self.inner.logs.recent()
    }

    /// Empties the log: the window's lines and the files.
    pub fn clear_logs(&self) -> Result<()> {
        self.inner.logs.clear()
    }

    fn pidfile(&self) -> PathBuf {
        self.inner.storage.root().join("run").join("llama-server.json")
    }

    pub(crate) fn log(&self, level: LogLevel, message: impl Into<String>) {
        self.inner.logs.log(level, message);
    }

    fn set_state(&self, state: ServerState) {
        let (pid, port) = {
            let mut sh = self.inner.shared.lock().unwrap();
            sh.status.state = state;
            (sh.status.pid, sh.status.port)
        };
        self.inner.events.emit(AppEvent::ServerState { server: ServerKind::Llm, state, pid, port });
    }

    fn state(&self) -> ServerState {
        self.inner.shared.lock().unwrap().status.state
    }

    /// The settings a start with `cfg` would use now (nothing is started or logged; RPC
    /// workers are probed, or their probe of the last few seconds reused).
    pub async fn preview(&self, cfg: &LlmConfig) -> Result<LlmSettings> {
        let port = cfg.port.unwrap_or(self.inner.config.default_port);
        let installed = self.inner.binaries.installed(RuntimeKind::Llama);
        let workers = match &installed {
            Some(r) => self.probe_workers(cfg, Path::new(&r.path), Probing::Preview).await?,
            None => Vec::new(),
        };
        let (mut settings, _) = self.resolve(cfg, port, &workers).await?;
        if installed.is_none() && !cfg.rpc_workers.is_empty() {
            // Their protocol is checked against the build, which the first start installs.
            settings
                .explanation
                .push_str(", RPC workers checked at Start (once llama.cpp is installed)");
        }
        Ok(settings)
    }

    /// The RPC protocol of the installed build's worker program, read once per program.
    async fn rpc_version(&self, llama_server: &Path) -> Result<ipc::rpc::RpcVersion> {
        let Some(worker) = crate::rpc::worker_beside(llama_server) else {
            return Err(RuntimeError::BinaryNotFound(format!(
                "the installed llama.cpp build ({}) has no RPC backend: no ggml-rpc-server beside \
                 it. Install a build made with GGML_RPC, or start without workers.",
                llama_server.display()
            )));
        };
        let mut known = self.inner.rpc_version.lock().await;
        match known.as_ref() {
            Some((path, v)) if *path == worker => Ok(*v),
            _ => {
                let v = crate::rpc::version_of(&worker).await?;
                *known = Some((worker, v));
                Ok(v)
            }
        }
    }

    /// Probes the RPC workers `cfg` asks for (at once, each bounded in time) against the
    /// protocol of `llama_server`'s build, and refuses when one cannot take part, saying which
    /// and why. A start probes afresh and keeps the probes in the status (and the log); a
    /// preview reuses a probe of the last [`PROBE_REUSE`], or the running server's own (its
    /// workers would answer as busy with it), and records nothing.
    async fn probe_workers(
        &self,
        cfg: &LlmConfig,
        llama_server: &Path,
        probing: Probing,
    ) -> Result<Vec<ipc::rpc::WorkerProbe>> {
        let addresses = crate::rpc::addresses(&cfg.rpc_workers)?;
        if addresses.is_empty() {
            return Ok(Vec::new());
        }
        let ours = self.rpc_version(llama_server).await?;
        let status = self.status();
        let held = |a: &str| {
            let running = status.state == ServerState::Running;
            let used = status.settings.as_ref().is_some_and(|s| s.rpc.iter().any(|r| r == a));
            (running && used).then(|| status.workers.iter().find(|p| p.address == a)).flatten()
        };
        let recent = |a: &str| {
            let kept = self.inner.probes.lock().unwrap();
            kept.get(a).filter(|(at, _)| at.elapsed() < PROBE_REUSE).map(|(_, p)| p.clone())
        };
        let probes = futures_util::future::join_all(addresses.iter().map(|a| async {
            let known = match probing {
                Probing::Start => None,
                Probing::Preview => held(a).cloned().or_else(|| recent(a)),
            };
            match known {
                Some(p) => p,
                None => {
                    let limit = crate::rpc::probe::PROBE_LIMIT;
                    let p = crate::rpc::probe::probe(a, ours, limit).await;
                    self.inner
                        .probes
                        .lock()
                        .unwrap()
                        .insert(a.clone(), (Instant::now(), p.clone()));
                    p
                }
            }
        }))
        .await;
        if probing == Probing::Start {
            self.inner.shared.lock().unwrap().status.workers = probes.clone();
        }
        let problems: Vec<String> = probes.iter().filter_map(|p| p.problem()).collect();
        if !problems.is_empty() {
            return Err(RuntimeError::RpcWorkers(problems));
        }
        if probing == Probing::Start {
            for p in &probes {
                let lent = ipc::format::bytes(crate::rpc::lent(std::slice::from_ref(p)));
                self.log(LogLevel::Info, format!("RPC worker {} ready: {lent} free", p.address));
            }
        }
        Ok(probes)
    }

    async fn resolve(
        &self,
        cfg: &LlmConfig,
        port: u16,
        workers: &[ipc::rpc::WorkerProbe],
    ) -> Result<(LlmSettings, PathBuf)> {
        let model = self.inner.models.get(&cfg.model_id).await?;
        if model.kind != ModelKind::Llm {
            return Err(RuntimeError::InvalidInput(format!(
                "{} is a diffusion model; choose an LLM",
                model.name
            )));
        }
        let files: Vec<PathBuf> =
            model.weight_files().iter().map(|f| PathBuf::from(&f.path)).collect();
        let first = files.first().cloned().unwrap_or_else(|| PathBuf::from(&model.path));
        let projector_path = model.projector().map(|p| PathBuf::from(&p.path));
        // Each shard (and the projector) whole and loadable, checked from its header and length
        // before llama-server is asked to load it.
        let header = tokio::task::spawn_blocking(move || {
            if let Some(p) = projector_path {
                crate::models::read_gguf(&p)?;
            }
            crate::models::read_gguf_split(&files)
        })
        .await
        .map_err(|e| RuntimeError::Internal(e.to_string()))??;
        let facts = ModelFacts::from_header(&first.display().to_string(), &header)?;
        let mut machine = self.machine_facts()?;
        // Workers lend their devices: the layers offloaded are split across them and this
        // machine's GPU by free memory.
        let local_gpu = machine.gpu.clone();
        machine.gpu = crate::rpc::pooled(machine.gpu.take(), workers);
        let projector = model.projector().map(|p| (p.path.as_str(), p.size_bytes));
        let mut settings =
            autoconfig::resolve_with_projector(cfg, &facts, &machine, port, projector)?;
        settings.rpc = workers.iter().map(|w| w.address.clone()).collect();
        if !workers.is_empty() {
            let blocks = settings.total_layers.saturating_sub(1);
            let here = local_gpu.as_ref().map(|g| g.0.clone());
            let pool = machine.gpu.as_ref().map_or(String::new(), |g| g.0.clone());
            let devices = crate::rpc::devices(workers, local_gpu);
            settings.split = crate::rpc::layer_split(blocks, settings.gpu_layers, &devices);
            let tail = autoconfig::offloaded(&facts, &settings);
            crate::rpc::apportion(&mut settings, &pool, here.as_deref(), tail);
        }
        Ok((settings, first))
    }

    /// Other llama-servers on the probe ports ("port 8080: llama-server with qwen3-8b"); a port
    /// nothing listens on is not asked.
    async fn neighbours(&self) -> Vec<String> {
        let listening: Vec<u16> = (self.inner.config.probe_ports.iter().copied())
            .filter(|&p| !port_free("127.0.0.1", p))
            .collect();
        // No client (a few ms to build) when nothing listens: the usual start.
        if listening.is_empty() {
            return Vec::new();
        }
        let Ok(client) = local_client() else { return Vec::new() };
        let mut found = Vec::new();
        for p in listening {
            if let Some(who) = crate::net::llama_server_on(&client, p).await {
                found.push(format!("port {p}: {who}"));
            }
        }
        found
    }

    /// Free memory now, and the GPU the installed build can use.
    fn machine_facts(&self) -> Result<MachineFacts> {
        let (info, now) = self.system_info()?;
        let gpu = self.usable_gpus(&info, &now).into_iter().max_by_key(|(_, free)| *free);
        Ok(MachineFacts {
            physical_cores: info.cpu.physical_cores.unwrap_or(info.cpu.logical_cores),
            ram_available: now.memory.available_bytes,
            gpu,
        })
    }

    /// What a fit badge weighs a model against now (#17): RAM available, the free VRAM of every
    /// GPU the installed build can drive, and what the running server holds (as measured from
    /// its load log, else its start estimate), given back were it stopped.
    pub fn fit_machine(&self) -> Result<crate::llama::fit::FitMachine> {
        let (info, now) = self.system_info()?;
        let gpus_free = self.usable_gpus(&info, &now).into_iter().map(|(_, free)| free).collect();
        let status = self.status();
        let running = matches!(status.state, ServerState::Running | ServerState::Starting);
        let llm_holds = running.then(|| {
            if status.measured.is_empty() {
                let s = status.settings.as_ref();
                (s.map_or(0, |s| s.expected_vram_bytes), s.map_or(0, |s| s.expected_ram_bytes))
            } else {
                use ipc::llm::{DeviceMemory, MemoryPlace};
                // An RPC worker's buffers are another machine's memory: not given back here.
                let sum = |place| DeviceMemory::sum_at(&status.measured, place);
                (sum(MemoryPlace::Vram), sum(MemoryPlace::Ram))
            }
        });
        Ok(crate::llama::fit::FitMachine {
            ram_available: now.memory.available_bytes,
            gpus_free,
            llm_holds,
        })
    }

    /// The GPUs the installed llama-server build can drive, with their free VRAM now.
    fn usable_gpus(
        &self,
        info: &ipc::system::SystemInfo,
        now: &ipc::system::MemoryNow,
    ) -> Vec<(String, u64)> {
        let installed = self.inner.binaries.installed(RuntimeKind::Llama);
        // Which GPUs the installed build can drive: those of its backend (any GPU runs Vulkan);
        // a custom build, any GPU its check found; the CPU build, none.
        let usable = |g: &ipc::system::GpuInfo| match installed.as_ref().map(|i| i.variant) {
            Some(Variant::Cuda) => g.backend == Backend::Cuda,
            Some(Variant::Metal) => g.backend == Backend::Metal,
            Some(Variant::Vulkan) => true,
            Some(Variant::Custom) => installed.as_ref().is_some_and(|i| !i.devices.is_empty()),
            _ => false,
        };
        info.gpus
            .iter()
            .filter(|g| usable(g))
            .filter_map(|g| {
                let free = now.gpus.iter().find(|m| m.id == g.id).map(|m| m.vram.free_bytes)?;
                Some((g.name.clone(), free))
            })
            .collect()
    }

    /// Refuses (or again allows) starts while the orchestrator has paused the server.
    /// Every start from now on first asks `hook` to make room.
    pub fn set_before_start(&self, hook: Arc<dyn BeforeStart>) {
        *self.inner.before_start.lock().unwrap() = Some(hook);
    }

    pub fn set_hold(&self, reason: Option<String>) {
        *self.inner.hold.lock().unwrap() = reason;
    }

    fn check_hold(&self) -> Result<()> {
        match self.inner.hold.lock().unwrap().clone() {
            Some(reason) => Err(RuntimeError::Busy(reason)),
            None => Ok(()),
        }
    }

    /// The request of the last start, its port made concrete.
    pub fn last_config(&self) -> Option<LlmConfig> {
        self.inner.shared.lock().unwrap().config.clone()
    }

    /// Starts the server and answers once it is healthy. A manual start resets the restart count.
    pub async fn start(&self, cfg: LlmConfig) -> Result<LlmStatus> {
        self.check_hold()?;
        let _op = self.inner.op.lock().await;
        if matches!(
            self.state(),
            ServerState::Running | ServerState::Starting | ServerState::Stopping
        ) {
            return Err(RuntimeError::ServerAlreadyRunning);
        }
        let epoch = self.inner.epoch.fetch_add(1, Ordering::SeqCst) + 1;
        self.inner.shared.lock().unwrap().status.restarts = 0;
        self.start_locked(cfg, epoch, false).await
    }

    /// Stops (if running) and starts again with the settings of the last start.
    pub async fn restart(&self) -> Result<LlmStatus> {
        self.check_hold()?;
        let cfg = self
            .inner
            .shared
            .lock()
            .unwrap()
            .config
            .clone()
            .ok_or(RuntimeError::ServerNotRunning)?;
        if matches!(self.state(), ServerState::Running | ServerState::Starting) {
            self.stop().await?;
        }
        let note = self.inner.shared.lock().unwrap().status.port_note.clone();
        self.start(cfg).await?;
        self.inner.shared.lock().unwrap().status.port_note = note;
        Ok(self.status())
    }

    async fn start_locked(&self, cfg: LlmConfig, epoch: u64, auto: bool) -> Result<LlmStatus> {
        {
            let mut sh = self.inner.shared.lock().unwrap();
            let restarts = sh.status.restarts;
            let crash = if auto { sh.status.crash.clone() } else { None };
            // A restart keeps the port, and so why it is not the default.
            let port_note = if auto { sh.status.port_note.clone() } else { None };
            sh.status = LlmStatus {
                restarts,
                crash,
                port_note,
                model_id: Some(cfg.model_id.clone()),
                ..LlmStatus::stopped()
            };
            sh.status.max_restarts = if cfg.auto_restart { self.max_restarts(&cfg) } else { 0 };
            sh.memory = MemoryLog::default();
            sh.load = Default::default();
            sh.hung_since_ms = None;
        }
        self.set_state(ServerState::Starting);
        match self.launch(cfg, epoch).await {
            Ok(status) => Ok(status),
            Err(e) => {
                let cancelled = matches!(e, RuntimeError::Cancelled);
                {
                    let mut sh = self.inner.shared.lock().unwrap();
                    sh.status.pid = None;
                    sh.status.healthy = false;
                    if !cancelled {
                        sh.status.last_error = Some(e.to_ipc());
                    }
                }
                if !cancelled {
                    self.log(LogLevel::Error, format!("failed to start: {e}"));
                }
                self.set_state(if auto && !cancelled {
                    ServerState::Crashed
                } else {
                    ServerState::Stopped
                });
                Err(e)
            }
        }
    }

    async fn launch(&self, mut cfg: LlmConfig, epoch: u64) -> Result<LlmStatus> {
        let gpus = self.inner.system.gpus();
        let runtime = self.inner.binaries.ensure(RuntimeKind::Llama, &gpus, false).await?.installed;
        let host =
            cfg.host.clone().filter(|h| !h.trim().is_empty()).unwrap_or_else(|| "127.0.0.1".into());
        // Other llama-servers hold memory this app cannot count: named, or refused in strict mode.
        let neighbours = self.neighbours().await;
        if cfg.strict == Some(true) && !neighbours.is_empty() {
            return Err(RuntimeError::AnotherServer(neighbours.join("; ")));
        }
        for n in &neighbours {
            self.log(LogLevel::Warn, format!("another server is running: {n}"));
        }
        let (port, taken) = choose_port(
            cfg.port,
            self.inner.config.default_port,
            ipc::diffusion::DEFAULT_PORT,
            |p| port_free(&host, p),
            free_port,
        )?;
        let note = taken.map(|d| {
            let by = neighbours
                .iter()
                .find(|n| n.starts_with(&format!("port {d}:")))
                .map_or("another program".to_owned(), |n| {
                    n.split_once(": ").map_or(n.clone(), |(_, who)| who.to_owned())
                });
            crate::net::port_note(d, port, &by, "this server")
        });
        if let Some(n) = &note {
            self.log(LogLevel::Warn, n.clone());
        }
        {
            let mut sh = self.inner.shared.lock().unwrap();
            sh.status.neighbours = neighbours;
            if cfg.port.is_none() {
                sh.status.port_note = note;
            }
        }
        cfg.port = Some(port);
        let workers = self.probe_workers(&cfg, Path::new(&runtime.path), Probing::Start).await?;
        let (settings, _) = self.resolve(&cfg, port, &workers).await?;
        let hook = self.inner.before_start.lock().unwrap().clone();
        if let Some(hook) = hook {
            let need = ipc::orchestrator::Footprint {
                ram_bytes: settings.expected_ram_bytes,
                vram_bytes: settings.expected_vram_bytes,
            };
            hook.before_start(need).await;
        }
        let args = build_args(&settings);
        let env = build_env(&settings);
        let exe = PathBuf::from(&runtime.path);
        self.log(LogLevel::Info, format!("settings: {}", settings.explanation));
        let vars: String = env.iter().map(|(k, v)| format!("{k}={v} ")).collect();
        self.log(LogLevel::Info, format!("spawning {vars}{} {}", exe.display(), args.join(" ")));
        let mut child = Supervised::spawn_with_env(&exe, &args, &env)?;
        let pid = child.pid();
        if let Err(e) = process::pidfile::write(&self.pidfile(), pid, &runtime.path).await {
            self.log(
                LogLevel::Warn,
                format!("no pidfile ({e}); a crash of the app would leave this server running"),
            );
        }
        let (ctl_tx, mut ctl_rx) = mpsc::channel(4);
        {
            let mut sh = self.inner.shared.lock().unwrap();
            sh.status.pid = Some(pid);
            sh.status.port = Some(port);
            sh.status.settings = Some(settings.clone());
            sh.config = Some(cfg.clone());
            sh.ctl = Some(ctl_tx);
        }
        self.set_state(ServerState::Starting);

        // Healthy, or dead, or silent for too long, or stopped: whichever comes first.
        let client = local_client()?;
        let base = format!("http://127.0.0.1:{port}");
        let health = format!("{base}/health");
        let quiet = cfg
            .startup_timeout_secs
            .map(|s| Duration::from_secs(u64::from(s.max(1))))
            .unwrap_or(self.inner.config.load_timeout);
        let deadline = process::LoadDeadline { quiet, max: self.inner.config.max_load.max(quiet) };
        let ready = child
            .wait_ready(
                || crate::net::answers(&client, &health, Duration::from_secs(2)),
                deadline,
                |l| {
                    if self.on_line(l) {
                        process::Flow::ProbeNow
                    } else {
                        process::Flow::Continue
                    }
                },
                async { ctl_rx.recv().await },
            )
            .await;
        let failed = match ready {
            process::Ready::Ready => None,
            process::Ready::Exited(info) => Some((self.load_failure(&child, Some(info)), None)),
            process::Ready::TimedOut => Some((
                RuntimeError::ServerFailed {
                    code: ErrorCode::ServerStartFailed,
                    message: format!(
                        "llama-server was not healthy after {} s and its log went quiet: {}",
                        child.spawned_at().elapsed().as_secs(),
                        child.tail().joined(4)
                    ),
                },
                None,
            )),
            process::Ready::Stopped(req) => Some((RuntimeError::Cancelled, req)),
        };
        if let Some((err, req)) = failed {
            let info = child.terminate(self.inner.config.stop_grace).await.ok();
            child
                .drain(|l| {
                    self.on_line(l);
                })
                .await;
            self.child_gone();
            if let Some(Ctl::Stop(reply)) = req {
                self.log(LogLevel::Info, "stopped while loading");
                let _ = reply.send(info);
            }
            return Err(err);
        }
        let load_time_ms = child.spawned_at().elapsed().as_millis() as u64;
        tokio::spawn(self.clone().monitor(child, ctl_rx, epoch));

        // The context and slots the server really has.
        let props: Option<serde_json::Value> = match client
            .get(format!("{base}/props"))
            .timeout(Duration::from_secs(5))
            .send()
            .await
        {
            Ok(r) if r.status().is_success() => {
                r.bytes().await.ok().and_then(|b| serde_json::from_slice(&b).ok())
            }
            _ => None,
        };
        let n_ctx = props
            .as_ref()
            .and_then(|p| p.pointer("/default_generation_settings/n_ctx"))
            .and_then(|v| v.as_u64())
            .map(|v| v as u32);
        let slots = props
            .as_ref()
            .and_then(|p| p.get("total_slots"))
            .and_then(|v| v.as_u64())
            .map(|v| v as u32);
        if let Some(got) = slots.filter(|&n| n != settings.parallel) {
            self.stop_child().await;
            return Err(RuntimeError::ServerFailed {
                code: ErrorCode::ServerStartFailed,
                message: format!(
                    "llama-server runs {got} slot(s) but {} were asked for (-np {}); this build \
                     does not honour the setting",
                    settings.parallel, settings.parallel
                ),
            });
        }
        // A silent CPU fallback, checked at every start (a driver update can cause one).
        let fallback = {
            let sh = self.inner.shared.lock().unwrap();
            let asked = settings.gpu_layers;
            (sh.load.cpu_fallback(asked))
                .or_else(|| llog::buffers_fallback(asked, &sh.memory.devices))
        };
        if let Some(message) = &fallback {
            self.log(LogLevel::Warn, message.clone());
            self.inner.events.emit(AppEvent::LlmCpuFallback { message: message.clone() });
        }
        {
            let mut sh = self.inner.shared.lock().unwrap();
            sh.status.cpu_fallback = fallback;
            sh.status.healthy = true;
            sh.status.load_time_ms = Some(load_time_ms);
            sh.status.started_at_ms = Some(now_ms());
            sh.status.effective_context = n_ctx;
            sh.status.slots = slots;
        }
        self.log(
            LogLevel::Info,
            format!("healthy after {load_time_ms} ms; context {n_ctx:?}, slots {slots:?}"),
        );
        self.set_state(ServerState::Running);
        // A zero interval (the setting's 0) means no checks.
        let interval = cfg
            .health_interval_secs
            .map_or(self.inner.config.health_interval, |s| Duration::from_secs(u64::from(s)));
        if !interval.is_zero() {
            tokio::spawn(self.clone().watch_health(epoch, pid, port, interval));
        }
        self.inner.system.invalidate();
        self.inner.events.emit(AppEvent::SystemChanged);
        Ok(self.status())
    }

    fn max_restarts(&self, cfg: &LlmConfig) -> u32 {
        cfg.max_restarts.unwrap_or(self.inner.config.max_restarts)
    }

    /// Why a server died while loading: the code from its last lines and exit, and the message.
    fn load_failure(&self, child: &Supervised, info: Option<ExitInfo>) -> RuntimeError {
        let program = process::Program::LlamaServer;
        RuntimeError::ServerFailed {
            code: process::classify_failure(&child.tail().lines(), info, program),
            message: process::failure_message(program, info, "while loading", child.tail()),
        }
    }

    /// The child is gone: no pidfile, nothing to send a stop to.
    fn child_gone(&self) {
        process::pidfile::remove(&self.pidfile());
        self.inner.shared.lock().unwrap().ctl = None;
    }

    /// Asks the monitor (or the start that is loading) to stop the child and waits for it.
    async fn stop_child(&self) -> Option<ExitInfo> {
        let tx = self.inner.shared.lock().unwrap().ctl.take()?;
        let (reply_tx, reply_rx) = oneshot::channel();
        tx.send(Ctl::Stop(reply_tx)).await.ok()?;
        reply_rx.await.ok().flatten()
    }

    /// Stops the server: SIGTERM to its process group, SIGKILL after the grace period. Also
    /// cancels a pending auto-restart of a crashed server.
    pub async fn stop(&self) -> Result<()> {
        self.stop_as(ServerState::Stopped).await
    }

    /// Stops the server to make room for an image: like [`Self::stop`], but the state says it
    /// is paused (`Offloaded`) and will come back.
    pub async fn offload(&self) -> Result<()> {
        self.stop_as(ServerState::Offloaded).await
    }

    async fn stop_as(&self, final_state: ServerState) -> Result<()> {
        self.inner.epoch.fetch_add(1, Ordering::SeqCst);
        let state = self.state();
        let has_child = self.inner.shared.lock().unwrap().ctl.is_some();
        if !has_child {
            if state == ServerState::Crashed {
                self.set_state(ServerState::Stopped);
                return Ok(());
            }
            return Err(RuntimeError::ServerNotRunning);
        }
        self.set_state(ServerState::Stopping);
        self.log(LogLevel::Info, "stopping");
        self.stop_child().await;
        {
            let mut sh = self.inner.shared.lock().unwrap();
            sh.status.pid = None;
            sh.status.healthy = false;
        }
        self.set_state(final_state);
        self.inner.system.invalidate();
        self.inner.events.emit(AppEvent::SystemChanged);
        Ok(())
    }

    /// Owns the child until it exits: its lines go to the log, and an exit nobody asked for is a
    /// crash.
    async fn monitor(self, mut child: Supervised, mut ctl: mpsc::Receiver<Ctl>, epoch: u64) {
        enum End {
            Exited,
            Stopped(Option<oneshot::Sender<Option<ExitInfo>>>),
            Hung,
        }
        let (info, end) = loop {
            tokio::select! {
                ev = child.next() => match ev {
                    process::Event::Line(_, l) => {
                        self.on_line(&l);
                    }
                    process::Event::Exited(info) => break (Some(info), End::Exited),
                },
                req = ctl.recv() => match req {
                    Some(Ctl::Kill) => break (child.kill().await.ok(), End::Hung),
                    Some(Ctl::Stop(reply)) => {
                        break (child.terminate(self.inner.config.stop_grace).await.ok(), End::Stopped(Some(reply)));
                    }
                    // The server itself is gone: nothing may outlive it.
                    None => break (child.terminate(self.inner.config.stop_grace).await.ok(), End::Stopped(None)),
                }
            }
        };
        // What it printed on the way out belongs to the log and to the crash report.
        child
            .drain(|l| {
                self.on_line(l);
            })
            .await;
        self.child_gone();
        match end {
            End::Stopped(reply) => {
                self.log(LogLevel::Info, "stopped");
                if let Some(reply) = reply {
                    let _ = reply.send(info);
                }
            }
            End::Exited => self.on_unexpected_exit(info.unwrap_or_default(), false, &child, epoch),
            End::Hung => self.on_unexpected_exit(info.unwrap_or_default(), true, &child, epoch),
        }
    }

    /// Feeds a line to the log and the memory figures; true when it says the server listens.
    fn on_line(&self, line: &str) -> bool {
        let level = llog::level(line);
        {
            let mut sh = self.inner.shared.lock().unwrap();
            sh.memory.feed(line);
            sh.load.feed(line);
        }
        self.log(level, line.to_owned());
        line.contains("listening on") || line.contains("server is listening")
    }

    /// Checks `/health` every `interval` while this start's server runs; after
    /// [`HANG_AFTER`] failures in a row it asks the monitor to kill it, which counts as a crash.
    async fn watch_health(self, epoch: u64, pid: u32, port: u16, interval: Duration) {
        let Ok(client) = local_client() else { return };
        let url = format!("http://127.0.0.1:{port}/health");
        let slots_url = format!("http://127.0.0.1:{port}/slots");
        let mut read_slots = true;
        // Each check ends before the next is due, so a hang is found within HANG_AFTER ticks.
        let timeout = (interval * 9 / 10).max(Duration::from_millis(100));
        let mut dog = Watchdog::new(HANG_AFTER);
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let current = |me: &Self| {
            let sh = me.inner.shared.lock().unwrap();
            me.inner.epoch.load(Ordering::SeqCst) == epoch
                && sh.status.state == ServerState::Running
                && sh.status.pid == Some(pid)
        };
        loop {
            tick.tick().await;
            if !current(&self) {
                return;
            }
            let ok = crate::net::answers(&client, &url, timeout).await;
            if !current(&self) {
                return;
            }
            if ok && read_slots {
                match read_busy_slots(&client, &slots_url, timeout).await {
                    Ok(busy) => {
                        let changed = {
                            let mut sh = self.inner.shared.lock().unwrap();
                            std::mem::replace(&mut sh.status.busy_slots, busy) != busy
                        };
                        if changed {
                            self.inner.events.emit(AppEvent::LlmBusy { busy_slots: busy });
                        }
                    }
                    // Started with --no-slots: no figure, and no more asking.
                    Err(false) => read_slots = false,
                    Err(true) => {}
                }
            }
            match dog.record(ok, now_ms()) {
                HealthVerdict::Steady => {}
                HealthVerdict::Recovered => {
                    {
                        let mut sh = self.inner.shared.lock().unwrap();
                        sh.status.healthy = true;
                        sh.status.not_responding_since_ms = None;
                        sh.status.health_failures = 0;
                    }
                    self.log(LogLevel::Info, "answers /health again");
                    self.inner.events.emit(AppEvent::LlmHealth {
                        ok: true,
                        failures: 0,
                        since_ms: None,
                    });
                }
                HealthVerdict::Failing { failures, since_ms } => {
                    {
                        let mut sh = self.inner.shared.lock().unwrap();
                        sh.status.healthy = false;
                        sh.status.not_responding_since_ms = Some(since_ms);
                        sh.status.health_failures = failures;
                    }
                    self.log(
                        LogLevel::Warn,
                        format!("not responding: /health check {failures} of {HANG_AFTER} failed"),
                    );
                    self.inner.events.emit(AppEvent::LlmHealth {
                        ok: false,
                        failures,
                        since_ms: Some(since_ms),
                    });
                }
                HealthVerdict::Hung { failures, since_ms } => {
                    let ctl = {
                        let mut sh = self.inner.shared.lock().unwrap();
                        sh.status.healthy = false;
                        sh.status.not_responding_since_ms = Some(since_ms);
                        sh.status.health_failures = failures;
                        sh.hung_since_ms = Some(since_ms);
                        sh.ctl.clone()
                    };
                    self.inner.events.emit(AppEvent::LlmHealth {
                        ok: false,
                        failures,
                        since_ms: Some(since_ms),
                    });
                    self.log(
                        LogLevel::Error,
                        format!(
                            "hung: {failures} /health checks in a row failed over {} s; killing it",
                            now_ms().saturating_sub(since_ms) / 1000
                        ),
                    );
                    if let Some(ctl) = ctl {
                        let _ = ctl.send(Ctl::Kill).await;
                    }
                    return;
                }
            }
        }
    }

    fn on_unexpected_exit(&self, info: ExitInfo, hung: bool, child: &Supervised, epoch: u64) {
        let was = self.state();
        if was != ServerState::Running {
            // Dying while starting is the start's error; the start reports it.
            return;
        }
        let crashed = hung || !info.success();
        let tail = child.tail().lines();
        let reason = {
            let sh = self.inner.shared.lock().unwrap();
            match sh.hung_since_ms {
                Some(since) if hung => format!(
                    "stopped answering /health for {} s ({HANG_AFTER} checks in a row); killed",
                    now_ms().saturating_sub(since) / 1000
                ),
                _ => {
                    let program = process::Program::LlamaServer;
                    let code = process::classify_failure(&tail, Some(info), program);
                    format!(
                        "{} ({})",
                        process::failure_message(
                            program,
                            Some(info),
                            "while running",
                            child.tail()
                        ),
                        code.title()
                    )
                }
            }
        };
        {
            let mut sh = self.inner.shared.lock().unwrap();
            sh.status.pid = None;
            sh.status.healthy = false;
            sh.status.not_responding_since_ms = None;
            sh.status.health_failures = 0;
            if crashed {
                sh.status.crash = Some(CrashInfo {
                    code: info.code,
                    signal: info.signal,
                    at_ms: now_ms(),
                    stderr_tail: tail.clone(),
                    reason: reason.clone(),
                });
            }
        }
        self.inner.system.invalidate();
        if !crashed {
            self.log(LogLevel::Warn, "llama-server exited on its own (code 0)");
            self.set_state(ServerState::Stopped);
            return;
        }
        self.set_state(ServerState::Crashed);
        let with_workers = {
            let sh = self.inner.shared.lock().unwrap();
            sh.config.as_ref().is_some_and(|c| !c.rpc_workers.is_empty())
        };
        if !with_workers {
            self.after_crash(info, tail, reason, Vec::new(), epoch);
            return;
        }
        // llama-server aborts when a worker goes away without saying which: each is asked again
        // (bounded in time), and those that no longer answer are named and left out of the
        // restart.
        let me = self.clone();
        tokio::spawn(async move {
            let gone = me.gone_workers().await;
            me.after_crash(info, tail, reason, gone, epoch);
        });
    }

    /// The RPC workers of the last start that no longer answer as ready, asked again now.
    async fn gone_workers(&self) -> Vec<String> {
        // The workers the crashed server used, as its start cleaned them.
        let asked = {
            let sh = self.inner.shared.lock().unwrap();
            sh.status.settings.as_ref().map(|s| s.rpc.clone()).unwrap_or_default()
        };
        let Some(ours) = self.inner.rpc_version.lock().await.as_ref().map(|(_, v)| *v) else {
            return Vec::new();
        };
        let probes = futures_util::future::join_all(
            asked.iter().map(|a| crate::rpc::probe::probe(a, ours, crate::rpc::probe::PROBE_LIMIT)),
        )
        .await;
        let gone = probes.iter().filter(|p| !p.is_ready()).map(|p| p.address.clone()).collect();
        self.inner.shared.lock().unwrap().status.workers = probes;
        gone
    }

    /// Tells of a crash (naming the RPC workers that went away) and schedules the restart, if
    /// any, without those workers.
    fn after_crash(
        &self,
        info: ExitInfo,
        tail: Vec<String>,
        mut reason: String,
        gone: Vec<String>,
        epoch: u64,
    ) {
        if !gone.is_empty() {
            reason = format!("RPC worker {} no longer answers; {reason}", gone.join(", "));
            if let Some(c) = self.inner.shared.lock().unwrap().status.crash.as_mut() {
                c.reason = reason.clone();
            }
        }
        self.log(LogLevel::Error, format!("llama-server crashed: {reason}"));
        self.inner.events.emit(AppEvent::ServerCrashed {
            server: ServerKind::Llm,
            code: info.code,
            signal: info.signal,
            stderr_tail: tail,
            reason,
        });
        self.inner.events.emit(AppEvent::SystemChanged);
        let (auto, restarts, max_restarts, cfg) = {
            let sh = self.inner.shared.lock().unwrap();
            (
                sh.config.as_ref().is_some_and(|c| c.auto_restart),
                sh.status.restarts,
                sh.status.max_restarts,
                sh.config.clone(),
            )
        };
        if let (true, Some(mut cfg)) = (auto && restarts < max_restarts, cfg) {
            if !gone.is_empty() {
                cfg.rpc_workers.retain(|w| !gone.iter().any(|g| g == w.trim()));
                self.log(
                    LogLevel::Warn,
                    format!(
                        "restarting without RPC worker {}: the rest must hold the model, else the \
                         start says why",
                        gone.join(", ")
                    ),
                );
            }
            let delay = self.inner.config.restart_backoff * 2u32.saturating_pow(restarts.min(16));
            self.log(
                LogLevel::Info,
                format!(
                    "restarting in {} ms (try {} of {})",
                    delay.as_millis(),
                    restarts + 1,
                    max_restarts
                ),
            );
            let me = self.clone();
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let _op = me.inner.op.lock().await;
                if me.inner.epoch.load(Ordering::SeqCst) != epoch
                    || me.state() != ServerState::Crashed
                {
                    return; // a manual start or stop happened meanwhile
                }
                me.inner.shared.lock().unwrap().status.restarts += 1;
                let _ = me.start_locked(cfg, epoch, true).await;
            });
        }
    }

    /// Stops a llama-server the pidfile names, if it is still that program.
    fn stop_orphan(&self) -> Option<u32> {
        process::pidfile::stop_orphan(&self.pidfile())
    }

    /// A test chat: the conversation in `args`, trimmed to the context of one slot, streamed
    /// from `/v1/chat/completions`, each piece as a `ChatDelta` event (see [`super::chat`]).
    /// [`Self::stop_chat`] ends it early; the server keeps running.
    pub async fn chat(&self, args: ChatArgs, request_id: String) -> Result<ChatReply> {
        let (port, context) = {
            let sh = self.inner.shared.lock().unwrap();
            match (sh.status.state, sh.status.port) {
                (ServerState::Running, Some(p)) => {
                    let configured = sh
                        .status
                        .settings
                        .as_ref()
                        .map(|s| s.context_size / s.parallel.max(1))
                        .unwrap_or(512);
                    (p, sh.status.effective_context.unwrap_or(configured))
                }
                _ => return Err(RuntimeError::ServerNotRunning),
            }
        };
        if args.messages.last().is_none_or(|m| m.content.trim().is_empty()) {
            return Err(RuntimeError::InvalidInput("write a message first".into()));
        }
        let request_id = args.request_id.clone().unwrap_or(request_id);
        let (tx, rx) = oneshot::channel();
        {
            let mut chats = self.inner.chats.lock().unwrap_or_else(|p| p.into_inner());
            if chats.contains_key(&request_id) {
                return Err(RuntimeError::InvalidInput(format!(
                    "a reply with id {request_id} is already streaming"
                )));
            }
            if chats.len() >= MAX_CHATS {
                return Err(RuntimeError::Busy(format!(
                    "{MAX_CHATS} test-chat replies are streaming already; stop one first"
                )));
            }
            chats.insert(request_id.clone(), tx);
        }
        // However the reply ends (also when this future is dropped), its stop goes with it.
        struct Forget<'a>(&'a Mutex<HashMap<String, oneshot::Sender<()>>>, String);
        impl Drop for Forget<'_> {
            fn drop(&mut self) {
                self.0.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.1);
            }
        }
        let _forget = Forget(&self.inner.chats, request_id.clone());
        super::chat::stream_reply(port, context, args, request_id, &self.inner.events, rx).await
    }

    /// Stops a streaming test-chat reply; false when none of that id is streaming (it may have
    /// just ended).
    pub fn stop_chat(&self, request_id: &str) -> bool {
        let tx = self.inner.chats.lock().unwrap_or_else(|p| p.into_inner()).remove(request_id);
        tx.is_some_and(|tx| tx.send(()).is_ok())
    }
}

/// Busy slots from `/slots`: `Err(true)` when this read failed (try again), `Err(false)` when
/// the server has no `/slots` (404, or 501 when started with `--no-slots`).
async fn read_busy_slots(
    client: &reqwest::Client,
    url: &str,
    timeout: Duration,
) -> std::result::Result<Option<u32>, bool> {
    let r = client.get(url).timeout(timeout).send().await.map_err(|_| true)?;
    let status = r.status().as_u16();
    if status == 404 || status == 501 {
        return Err(false);
    }
    if !r.status().is_success() {
        return Err(true);
    }
    let body = r.bytes().await.map_err(|_| true)?;
    let body: serde_json::Value = serde_json::from_slice(&body).map_err(|_| true)?;
    Ok(super::health::busy_slots(&body))
}
