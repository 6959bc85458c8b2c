//! [`LlamaServer`]: starts, watches, restarts and stops llama-server.
//!
//! A start resolves the settings (auto-configuration), spawns the server in its own process
//! group, and polls `/health` while racing the process's exit, so a server that dies while
//! loading fails at once with its last lines and a classified code. The load deadline moves
//! while the log shows progress. A monitor task owns the child: it feeds the log (levels, a
//! rotated file, a ring, window events), reads the memory each device took, and turns any exit
//! nobody asked for into a crash, with optional restarts (1 s, 2 s, 4 s). A pidfile lets the next
//! launch stop a server that a crashed app left behind.

use super::args::build_args;
use super::autoconfig::{self, MachineFacts, ModelFacts};
use super::log::{self as llog, MemoryLog};
use crate::binaries::Binaries;
use crate::events::EventBus;
use crate::logfile::ServerLog;
use crate::models::ModelStore;
use crate::net::{free_port, local_client};
use crate::process;
use crate::storage::StorageLayout;
use crate::system::SystemProbe;
use crate::{now_ms, Result, RuntimeError};
use ipc::event::{LogLevel, LogLine, ServerKind, ServerState};
use ipc::llm::{ChatArgs, ChatReply, CrashInfo, LlmConfig, LlmSettings, LlmStatus};
use ipc::models::ModelKind;
use ipc::runtimes::{RuntimeKind, Variant};
use ipc::system::Backend;
use ipc::{AppEvent, ErrorCode};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::process::Child;
use tokio::sync::{mpsc, oneshot, watch};

const TAIL_LINES: usize = 20;

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
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            stop_grace: Duration::from_secs(10),
            load_timeout: Duration::from_secs(60),
            max_load: Duration::from_secs(15 * 60),
            restart_backoff: Duration::from_secs(1),
            max_restarts: 3,
        }
    }
}

/// How a child ended.
#[derive(Debug, Clone)]
struct ExitInfo {
    code: Option<i32>,
    signal: Option<i32>,
    requested: bool,
}

/// `run/llama-server.json`: what the next launch needs to find a server this one left.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct PidFile {
    pid: u32,
    exe: String,
    started_at_ms: u64,
}

struct Shared {
    status: LlmStatus,
    /// The request of the last start, port made concrete: what a restart reuses.
    config: Option<LlmConfig>,
    stop_tx: Option<mpsc::Sender<oneshot::Sender<ExitInfo>>>,
    memory: MemoryLog,
    tail: VecDeque<String>,
    last_line: Instant,
}

struct Inner {
    storage: StorageLayout,
    events: EventBus,
    binaries: Binaries,
    models: ModelStore,
    system: Arc<SystemProbe>,
    config: ServerConfig,
    shared: Mutex<Shared>,
    logs: ServerLog,
    /// One start or restart at a time.
    op: tokio::sync::Mutex<()>,
    /// Rung when the log says the server listens: the health check goes at once instead of
    /// waiting for its next poll (start-to-healthy then matches a bare start).
    listening: tokio::sync::Notify,
    /// Bumped by every manual start and stop: a pending auto-restart of an older epoch is void.
    epoch: AtomicU64,
    /// Set while the orchestrator has paused the server for an image: starts are refused with
    /// this reason.
    hold: Mutex<Option<String>>,
}

#[derive(Clone)]
pub struct LlamaServer {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for LlamaServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlamaServer").finish_non_exhaustive()
    }
}

fn stopped_status() -> LlmStatus {
    LlmStatus {
        state: ServerState::Stopped,
        model_id: None,
        settings: None,
        pid: None,
        port: None,
        healthy: false,
        load_time_ms: None,
        started_at_ms: None,
        effective_context: None,
        slots: None,
        measured: Vec::new(),
        last_error: None,
        crash: None,
        restarts: 0,
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
                system,
                config,
                shared: Mutex::new(Shared {
                    status: stopped_status(),
                    config: None,
                    stop_tx: None,
                    memory: MemoryLog::default(),
                    tail: VecDeque::new(),
                    last_line: Instant::now(),
                }),
                logs,
                op: tokio::sync::Mutex::new(()),
                listening: tokio::sync::Notify::new(),
                epoch: AtomicU64::new(0),
                hold: Mutex::new(None),
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

    pub fn status(&self) -> LlmStatus {
        let sh = self.inner.shared.lock().unwrap();
        let mut s = sh.status.clone();
        s.measured = sh.memory.devices.clone();
        s
    }

    pub fn logs(&self) -> Vec<LogLine> {
        self.inner.logs.recent()
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

    /// The settings a start with `cfg` would use now (nothing is started).
    pub async fn preview(&self, cfg: &LlmConfig) -> Result<LlmSettings> {
        let port = cfg.port.unwrap_or(0);
        let (settings, _) = self.resolve(cfg, port).await?;
        Ok(settings)
    }

    async fn resolve(&self, cfg: &LlmConfig, port: u16) -> Result<(LlmSettings, PathBuf)> {
        let model = self.inner.models.get(&cfg.model_id).await?;
        if model.kind != ModelKind::Llm {
            return Err(RuntimeError::InvalidInput(format!(
                "{} is a diffusion model; choose an LLM",
                model.name
            )));
        }
        let files: Vec<PathBuf> =
            model.all_files().iter().map(|f| PathBuf::from(&f.path)).collect();
        let first = files.first().cloned().unwrap_or_else(|| PathBuf::from(&model.path));
        // Each shard whole and loadable, checked from its header and length before llama-server
        // is asked to load it.
        let header = tokio::task::spawn_blocking(move || -> Result<gguf::Header> {
            let mut h = crate::models::read_gguf(&files[0])?;
            for shard in &files[1..] {
                h.tensors.extend(crate::models::read_gguf(shard)?.tensors);
            }
            Ok(h)
        })
        .await
        .map_err(|e| RuntimeError::Internal(e.to_string()))??;
        let facts = ModelFacts::from_header(&first.display().to_string(), &header)?;
        let machine = self.machine_facts()?;
        let settings = autoconfig::resolve(cfg, &facts, &machine, port)?;
        Ok((settings, first))
    }

    /// Free memory now, and the GPU the installed build can use.
    fn machine_facts(&self) -> Result<MachineFacts> {
        let info = self.inner.system.system_info()?;
        let now = self.inner.system.memory_now()?;
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
        let gpu = info
            .gpus
            .iter()
            .filter(|g| usable(g))
            .filter_map(|g| {
                let free = now.gpus.iter().find(|m| m.id == g.id).map(|m| m.vram.free_bytes)?;
                Some((g.name.clone(), free))
            })
            .max_by_key(|(_, free)| *free);
        Ok(MachineFacts {
            physical_cores: info.cpu.physical_cores.unwrap_or(info.cpu.logical_cores),
            ram_available: now.memory.available_bytes,
            gpu,
        })
    }

    /// Refuses (or again allows) starts while the orchestrator has paused the server.
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
        self.start(cfg).await
    }

    async fn start_locked(&self, cfg: LlmConfig, epoch: u64, auto: bool) -> Result<LlmStatus> {
        {
            let mut sh = self.inner.shared.lock().unwrap();
            let restarts = sh.status.restarts;
            let crash = if auto { sh.status.crash.clone() } else { None };
            sh.status = LlmStatus {
                restarts,
                crash,
                model_id: Some(cfg.model_id.clone()),
                ..stopped_status()
            };
            sh.memory = MemoryLog::default();
            sh.tail.clear();
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
        let gpus = self.inner.system.system_info().map(|s| s.gpus).unwrap_or_default();
        let runtime = self.inner.binaries.ensure(RuntimeKind::Llama, &gpus, false).await?.installed;
        let host =
            cfg.host.clone().filter(|h| !h.trim().is_empty()).unwrap_or_else(|| "127.0.0.1".into());
        let port = match cfg.port {
            Some(p) => p,
            None => free_port()?,
        };
        if std::net::TcpListener::bind((host.as_str(), port)).is_err() {
            return Err(RuntimeError::PortInUse(port));
        }
        cfg.port = Some(port);
        let (settings, _) = self.resolve(&cfg, port).await?;
        let args = build_args(&settings);
        let exe = PathBuf::from(&runtime.path);
        self.log(LogLevel::Info, format!("settings: {}", settings.explanation));
        self.log(LogLevel::Info, format!("spawning {} {}", exe.display(), args.join(" ")));
        let spawned_at = Instant::now();
        let mut child = process::spawn(process::command(&exe, &args), &exe)?;
        let pid = child.id().unwrap_or(0);
        let lines = process::lines(&mut child);
        let pidfile = PidFile { pid, exe: runtime.path.clone(), started_at_ms: now_ms() };
        let pid_path = self.pidfile();
        if let Some(dir) = pid_path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        if let Err(e) = crate::storage::write_json_atomic(&pid_path, &pidfile).await {
            self.log(
                LogLevel::Warn,
                format!("no pidfile ({e}); a crash of the app would leave this server running"),
            );
        }
        let (stop_tx, stop_rx) = mpsc::channel(1);
        let (exit_tx, mut exit_rx) = watch::channel(None::<ExitInfo>);
        {
            let mut sh = self.inner.shared.lock().unwrap();
            sh.status.pid = Some(pid);
            sh.status.port = Some(port);
            sh.status.settings = Some(settings.clone());
            sh.config = Some(cfg.clone());
            sh.stop_tx = Some(stop_tx);
            sh.last_line = Instant::now();
        }
        self.set_state(ServerState::Starting);
        tokio::spawn(self.clone().monitor(child, lines, stop_rx, exit_tx, epoch));

        // Healthy, or dead, or silent for too long: whichever comes first.
        let client = local_client()?;
        let base = format!("http://127.0.0.1:{port}");
        let mut delay = Duration::from_millis(100);
        let healthy = loop {
            tokio::select! {
                _ = exit_rx.changed() => {
                    let info = exit_rx.borrow().clone();
                    break Err(self.classify_exit(info));
                }
                _ = tokio::time::sleep(delay) => {}
                _ = self.inner.listening.notified() => {}
            }
            delay = (delay * 3 / 2).min(Duration::from_secs(1));
            let ok = client
                .get(format!("{base}/health"))
                .timeout(Duration::from_secs(2))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ok {
                break Ok(());
            }
            let last_line = self.inner.shared.lock().unwrap().last_line;
            let deadline = (last_line.max(spawned_at) + self.inner.config.load_timeout)
                .min(spawned_at + self.inner.config.max_load);
            if Instant::now() > deadline {
                break Err(RuntimeError::ServerFailed {
                    code: ErrorCode::ServerStartFailed,
                    message: format!(
                        "llama-server was not healthy after {} s and its log went quiet: {}",
                        spawned_at.elapsed().as_secs(),
                        self.tail(4).join(" | ")
                    ),
                });
            }
        };
        if let Err(e) = healthy {
            self.stop_child().await;
            return Err(e);
        }
        let load_time_ms = spawned_at.elapsed().as_millis() as u64;
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
        {
            let mut sh = self.inner.shared.lock().unwrap();
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
        self.inner.system.invalidate();
        self.inner.events.emit(AppEvent::SystemChanged);
        Ok(self.status())
    }

    fn tail(&self, n: usize) -> Vec<String> {
        let sh = self.inner.shared.lock().unwrap();
        sh.tail.iter().rev().take(n).rev().cloned().collect()
    }

    /// Why a server died while loading, from its last lines.
    fn classify_exit(&self, info: Option<ExitInfo>) -> RuntimeError {
        let info = info.unwrap_or(ExitInfo { code: None, signal: None, requested: false });
        if info.requested {
            return RuntimeError::Cancelled;
        }
        let tail = self.tail(TAIL_LINES);
        let text = tail.join("\n").to_ascii_lowercase();
        let how = match (info.code, info.signal) {
            (_, Some(s)) => format!("was killed by signal {s}"),
            (Some(c), _) => format!("exited with code {c}"),
            _ => "exited".to_owned(),
        };
        let code = if crate::binaries::scan::out_of_memory(&text) || info.signal == Some(9) {
            ErrorCode::InsufficientMemory
        } else if ["address already in use", "couldn't bind", "failed to bind", "bind failed"]
            .iter()
            .any(|p| text.contains(p))
        {
            ErrorCode::PortInUse
        } else if [
            "error loading model",
            "failed to load model",
            "unknown model architecture",
            "gguf",
            "tensor",
        ]
        .iter()
        .any(|p| text.contains(p))
        {
            ErrorCode::ModelUnsupported
        } else {
            ErrorCode::ServerStartFailed
        };
        let last: Vec<&String> =
            tail.iter().rev().take(3).collect::<Vec<_>>().into_iter().rev().collect();
        RuntimeError::ServerFailed {
            code,
            message: format!(
                "llama-server {how} while loading: {}",
                last.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" | ")
            ),
        }
    }

    /// Asks the monitor to stop the child and waits for it.
    async fn stop_child(&self) -> Option<ExitInfo> {
        let tx = self.inner.shared.lock().unwrap().stop_tx.take()?;
        let (reply_tx, reply_rx) = oneshot::channel();
        tx.send(reply_tx).await.ok()?;
        reply_rx.await.ok()
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
        let has_child = self.inner.shared.lock().unwrap().stop_tx.is_some();
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
    async fn monitor(
        self,
        mut child: Child,
        mut lines: mpsc::UnboundedReceiver<(process::Stream, String)>,
        mut stop_rx: mpsc::Receiver<oneshot::Sender<ExitInfo>>,
        exit_tx: watch::Sender<Option<ExitInfo>>,
        epoch: u64,
    ) {
        let mut open = true;
        let (info, reply) = loop {
            tokio::select! {
                line = lines.recv(), if open => match line {
                    Some((_, l)) => self.on_line(l),
                    None => open = false,
                },
                req = stop_rx.recv() => {
                    let status = process::terminate(&mut child, self.inner.config.stop_grace).await;
                    break (exit_info(status.ok(), true), req);
                }
                status = child.wait() => {
                    break (exit_info(status.ok(), false), None);
                }
            }
        };
        // What it printed on the way out belongs to the log and to the crash report.
        while let Ok(Some((_, l))) =
            tokio::time::timeout(Duration::from_millis(200), lines.recv()).await
        {
            self.on_line(l);
        }
        let _ = std::fs::remove_file(self.pidfile());
        self.inner.shared.lock().unwrap().stop_tx = None;
        let _ = exit_tx.send(Some(info.clone()));
        if let Some(reply) = reply {
            self.log(LogLevel::Info, "stopped");
            let _ = reply.send(info);
            return;
        }
        self.on_unexpected_exit(info, epoch);
    }

    fn on_line(&self, line: String) {
        let level = llog::level(&line);
        if line.contains("listening on") || line.contains("server is listening") {
            self.inner.listening.notify_one();
        }
        {
            let mut sh = self.inner.shared.lock().unwrap();
            sh.memory.feed(&line);
            sh.last_line = Instant::now();
            if sh.tail.len() == TAIL_LINES {
                sh.tail.pop_front();
            }
            sh.tail.push_back(line.clone());
        }
        self.log(level, line);
    }

    fn on_unexpected_exit(&self, info: ExitInfo, epoch: u64) {
        let was = self.state();
        if was != ServerState::Running {
            // Dying while starting is the start's error; the start reports it.
            return;
        }
        let crashed = info.signal.is_some() || info.code.is_some_and(|c| c != 0);
        let tail = self.tail(TAIL_LINES);
        {
            let mut sh = self.inner.shared.lock().unwrap();
            sh.status.pid = None;
            sh.status.healthy = false;
            if crashed {
                sh.status.crash = Some(CrashInfo {
                    code: info.code,
                    signal: info.signal,
                    at_ms: now_ms(),
                    stderr_tail: tail.clone(),
                });
            }
        }
        self.inner.system.invalidate();
        if !crashed {
            self.log(LogLevel::Warn, "llama-server exited on its own (code 0)");
            self.set_state(ServerState::Stopped);
            return;
        }
        self.log(
            LogLevel::Error,
            format!("llama-server crashed (code {:?}, signal {:?})", info.code, info.signal),
        );
        self.set_state(ServerState::Crashed);
        self.inner.events.emit(AppEvent::ServerCrashed {
            server: ServerKind::Llm,
            code: info.code,
            signal: info.signal,
            stderr_tail: tail,
        });
        self.inner.events.emit(AppEvent::SystemChanged);
        let (auto, restarts, cfg) = {
            let sh = self.inner.shared.lock().unwrap();
            (
                sh.config.as_ref().is_some_and(|c| c.auto_restart),
                sh.status.restarts,
                sh.config.clone(),
            )
        };
        if let (true, Some(cfg)) = (auto && restarts < self.inner.config.max_restarts, cfg) {
            let delay = self.inner.config.restart_backoff * 2u32.pow(restarts);
            self.log(
                LogLevel::Info,
                format!(
                    "restarting in {} ms (try {} of {})",
                    delay.as_millis(),
                    restarts + 1,
                    self.inner.config.max_restarts
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
        let path = self.pidfile();
        let pf: PidFile = serde_json::from_slice(&std::fs::read(&path).ok()?).ok()?;
        let _ = std::fs::remove_file(&path);
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
            while Instant::now() < deadline && process::is_running(pf.pid) {
                std::thread::sleep(Duration::from_millis(50));
            }
            if process::is_running(pf.pid) {
                // SAFETY: as above.
                unsafe { libc::kill(group, libc::SIGKILL) };
            }
        }
        Some(pf.pid)
    }

    /// A test chat: streams `/v1/chat/completions`, each piece as a `ChatDelta` event.
    pub async fn chat(&self, args: ChatArgs, request_id: String) -> Result<ChatReply> {
        use futures_util::StreamExt;
        let port = {
            let sh = self.inner.shared.lock().unwrap();
            match (sh.status.state, sh.status.port) {
                (ServerState::Running, Some(p)) => p,
                _ => return Err(RuntimeError::ServerNotRunning),
            }
        };
        let body = serde_json::json!({
            "messages": args.messages,
            "max_tokens": args.max_tokens,
            "temperature": args.temperature,
            "stream": true,
        });
        let url = format!("http://127.0.0.1:{port}/v1/chat/completions");
        let resp = local_client()?
            .post(&url)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .map_err(|e| RuntimeError::Network { url: url.clone(), detail: e.to_string() })?;
        if !resp.status().is_success() {
            return Err(RuntimeError::HttpStatus { url, status: resp.status().as_u16() });
        }
        let mut reply = ChatReply {
            request_id: request_id.clone(),
            content: String::new(),
            reasoning: String::new(),
            tokens: 0,
        };
        let mut buf = Vec::new();
        let mut stream = resp.bytes_stream();
        'read: while let Some(chunk) = stream.next().await {
            let chunk = chunk
                .map_err(|e| RuntimeError::Network { url: url.clone(), detail: e.to_string() })?;
            buf.extend_from_slice(&chunk);
            while let Some(nl) = buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = buf.drain(..=nl).collect();
                let line = String::from_utf8_lossy(&line);
                let Some(data) = line.trim().strip_prefix("data:") else { continue };
                let data = data.trim();
                if data == "[DONE]" {
                    break 'read;
                }
                let Ok(v) = serde_json::from_str::<serde_json::Value>(data) else { continue };
                let delta = v.pointer("/choices/0/delta");
                let text = |k: &str| {
                    delta.and_then(|d| d.get(k)).and_then(|s| s.as_str()).unwrap_or("").to_owned()
                };
                let (content, reasoning) = (text("content"), text("reasoning_content"));
                if content.is_empty() && reasoning.is_empty() {
                    continue;
                }
                reply.tokens += 1;
                reply.content.push_str(&content);
                reply.reasoning.push_str(&reasoning);
                self.inner.events.emit(AppEvent::ChatDelta {
                    request_id: request_id.clone(),
                    content,
                    reasoning,
                    done: false,
                });
            }
        }
        self.inner.events.emit(AppEvent::ChatDelta {
            request_id,
            content: String::new(),
            reasoning: String::new(),
            done: true,
        });
        Ok(reply)
    }
}

fn exit_info(status: Option<std::process::ExitStatus>, requested: bool) -> ExitInfo {
    #[cfg(unix)]
    let signal = {
        use std::os::unix::process::ExitStatusExt;
        status.and_then(|s| s.signal())
    };
    #[cfg(not(unix))]
    let signal = None;
    ExitInfo { code: status.and_then(|s| s.code()), signal, requested }
}
