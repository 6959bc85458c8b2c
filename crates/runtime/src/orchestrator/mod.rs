//! [`Orchestrator`]: decides who gets the memory when an image is made, and makes room.
//!
//! Every image job (batches included) passes through [`Orchestrator::run`] (the diffusion
//! server's [`JobGate`]). One async lock serialises decide → pause → job → reload, so a second
//! job waits for the first's whole cycle and the LLM is never stopped twice. When the decision
//! ([`decision::decide`], on *live* free memory) says the two do not fit and the LLM runs:
//! its resolved settings are pinned and written to `config/llm-paused.json`, manual starts are
//! held, it is stopped (state `Offloaded`), the orchestrator polls live memory until the LLM's
//! share is back (bounded), runs the job, and restarts the LLM with the saved settings — also
//! after a failed or cancelled job — retrying with backoff and reporting each failure. A launch
//! that finds the file (the app died during a job) brings the LLM back ([`Orchestrator::recover`]).
//!
//! The LLM and the memory figures come through traits ([`LlmControl`], [`MemorySource`]) so tests
//! can drive every path with scripted numbers and fake servers.

pub mod decision;

use crate::diffusion::server::{JobGate, JobTicket};
use crate::events::EventBus;
use crate::llama::LlamaServer;
use crate::stored::orchestrator as stored;
use crate::{now_ms, Result, RuntimeError};
use decision::{decide, DecisionInput, LlmUse};
use futures_util::future::BoxFuture;
use ipc::event::ServerState;
use ipc::llm::{DeviceMemory, LlmConfig, MemoryPlace};
use ipc::orchestrator::{
    CycleTimes, Footprint, OffloadDecision, OrchestratorPhase, OrchestratorSettings,
    OrchestratorStatus, SavedLlmState,
};
use ipc::AppEvent;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use crate::system::MemorySource;

/// The LLM as the orchestrator sees it while it runs.
#[derive(Debug, Clone, PartialEq)]
pub struct RunningLlm {
    /// Every setting pinned to what the running server resolved.
    pub config: LlmConfig,
    pub port: u16,
    pub context_size: u32,
    pub usage: LlmUse,
}

/// What the orchestrator needs of the LLM server.
pub trait LlmControl: Send + Sync {
    /// `Some` while the server runs (healthy or not yet).
    fn running(&self) -> Option<RunningLlm>;
    /// Refuse (`Some(reason)`) or allow manual starts.
    fn hold(&self, reason: Option<String>);
    /// Stop it to make room.
    fn pause(&self) -> BoxFuture<'_, Result<()>>;
    /// Start it with `config`; answers its port once healthy.
    fn resume(&self, config: LlmConfig) -> BoxFuture<'_, Result<u16>>;
    /// A line in the LLM server's log (what the orchestrator did to it).
    fn log(&self, level: ipc::event::LogLevel, message: String);
}

impl LlmControl for LlamaServer {
    fn running(&self) -> Option<RunningLlm> {
        let status = self.status();
        if !matches!(status.state, ServerState::Running | ServerState::Starting) {
            return None;
        }
        let s = status.settings.as_ref()?;
        let last = self.last_config();
        let usage = if status.measured.is_empty() {
            LlmUse { ram: s.expected_ram_bytes, vram: s.expected_vram_bytes, measured: false }
        } else {
            // An RPC worker's buffers are another machine's memory: not counted here.
            let sum = |place| DeviceMemory::sum_at(&status.measured, place);
            LlmUse { ram: sum(MemoryPlace::Ram), vram: sum(MemoryPlace::Vram), measured: true }
        };
        let config = LlmConfig {
            model_id: status.model_id.clone().unwrap_or_default(),
            port: Some(s.port),
            host: Some(s.host.clone()),
            context_size: Some(s.context_size),
            gpu_layers: Some(s.gpu_layers),
            threads: Some(s.threads),
            parallel: Some(s.parallel),
            flash_attention: Some(s.flash_attention),
            cache_type_k: Some(s.cache_type_k.clone()),
            cache_type_v: Some(s.cache_type_v.clone()),
            batch: s.batch,
            ubatch: s.ubatch,
            swa_full: Some(s.swa_full),
            mmap: s.mmap,
            mlock: Some(s.mlock),
            reasoning_format: s.reasoning_format.clone(),
            alias: s.alias.clone(),
            llama_fit: Some(s.llama_fit),
            cache_ram_mib: s.cache_ram_mib,
            jinja: Some(s.jinja),
            embeddings: Some(s.embeddings),
            auto_restart: last.as_ref().is_some_and(|c| c.auto_restart),
            max_restarts: last.as_ref().and_then(|c| c.max_restarts),
            startup_timeout_secs: last.as_ref().and_then(|c| c.startup_timeout_secs),
            health_interval_secs: last.as_ref().and_then(|c| c.health_interval_secs),
            min_context: last.as_ref().and_then(|c| c.min_context),
            max_context: last.as_ref().and_then(|c| c.max_context),
            n_cpu_moe: Some(s.n_cpu_moe),
            strict: last.and_then(|c| c.strict),
            rpc_workers: s.rpc.clone(),
        };
        Some(RunningLlm { config, port: s.port, context_size: s.context_size, usage })
    }

    fn hold(&self, reason: Option<String>) {
        self.set_hold(reason);
    }

    fn pause(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(self.offload())
    }

    fn log(&self, level: ipc::event::LogLevel, message: String) {
        LlamaServer::log(self, level, message);
    }

    fn resume(&self, config: LlmConfig) -> BoxFuture<'_, Result<u16>> {
        Box::pin(async move {
            let status = self.start(config).await?;
            status.port.ok_or_else(|| RuntimeError::Internal("started without a port".into()))
        })
    }
}

#[derive(Debug, Clone)]
pub struct OrchestratorConfig {
    /// Longest wait for the LLM's memory to show up as free after it stopped.
    pub memory_wait: Duration,
    pub memory_poll: Duration,
    /// First delay between reload tries; doubles each time.
    pub reload_backoff: Duration,
    pub reload_tries: u32,
}

impl Default for OrchestratorConfig {
    fn default() -> Self {
        Self {
            memory_wait: Duration::from_secs(10),
            memory_poll: Duration::from_millis(100),
            reload_backoff: Duration::from_secs(1),
            reload_tries: 3,
        }
    }
}

/// How much free memory may drift for other reasons while waiting for the LLM's to come back.
pub const MEMORY_NOISE: u64 = 64 << 20;

/// The reason manual starts are refused while the LLM is paused.
pub const HOLD_REASON: &str =
    "The LLM is paused while an image is made; it comes back by itself when the image is done.";

struct State {
    settings: OrchestratorSettings,
    phase: OrchestratorPhase,
    last_decision: Option<OffloadDecision>,
    saved: Option<SavedLlmState>,
    reload_error: Option<ipc::IpcError>,
    last_cycle: Option<CycleTimes>,
    paused_last: bool,
}

struct Inner {
    llm: Arc<dyn LlmControl>,
    memory: Arc<dyn MemorySource>,
    events: EventBus,
    settings_path: PathBuf,
    saved_path: PathBuf,
    config: OrchestratorConfig,
    lock: tokio::sync::Mutex<()>,
    state: Mutex<State>,
    /// The app is closing: a paused LLM stays stopped.
    closing: std::sync::atomic::AtomicBool,
    /// The user said "Keep it stopped" during this pause: no reload after the job.
    keep_stopped: std::sync::atomic::AtomicBool,
}

#[derive(Clone)]
pub struct Orchestrator {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Orchestrator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Orchestrator").finish_non_exhaustive()
    }
}

/// The live figures the decision needs: the GPU with the most free VRAM, and free RAM.
struct Live {
    gpu: Option<(String, String, u64)>,
    free_ram: u64,
}

/// A kept file of the orchestrator's: `Ok(None)` when there is none or it is damaged (the
/// defaults then, and the next save replaces it); a newer version's is an error.
fn read_kept<T: serde::de::DeserializeOwned>(path: &std::path::Path) -> Result<Option<T>> {
    match crate::storage::read_versioned(path, stored::FORMAT) {
        Err(e @ RuntimeError::NewerFormat { .. }) => Err(e),
        other => Ok(other.unwrap_or(None)),
    }
}

/// Refuses to write over `path` when a newer version of the app wrote it.
fn refuse_newer(path: &std::path::Path) -> Result<()> {
    match crate::storage::newer_format(path, stored::FORMAT) {
        Some(found) => {
            Err(RuntimeError::NewerFormat { path: path.to_owned(), found, reads: stored::FORMAT })
        }
        None => Ok(()),
    }
}

impl Orchestrator {
    /// `config_dir` holds `orchestrator.json` (mode, margin) and, while the LLM is paused,
    /// `llm-paused.json`.
    pub fn new(
        config_dir: PathBuf,
        events: EventBus,
        llm: Arc<dyn LlmControl>,
        memory: Arc<dyn MemorySource>,
        config: OrchestratorConfig,
    ) -> Self {
        let settings_path = config_dir.join("orchestrator.json");
        let saved_path = config_dir.join("llm-paused.json");
        // A newer version's settings: the defaults for now (and Save refuses to write over them).
        let settings = read_kept::<stored::SettingsFile>(&settings_path)
            .ok()
            .flatten()
            .map_or_else(OrchestratorSettings::default, |f| f.get());
        let (saved, refused) = match read_kept::<stored::PausedFile>(&saved_path) {
            Ok(f) => (f.map(|f| f.get()), None),
            Err(e) => (None, Some(e.to_ipc())),
        };
        Self {
            inner: Arc::new(Inner {
                llm,
                memory,
                events,
                settings_path,
                saved_path,
                config,
                lock: tokio::sync::Mutex::new(()),
                state: Mutex::new(State {
                    settings,
                    phase: OrchestratorPhase::Idle,
                    last_decision: None,
                    saved,
                    reload_error: refused,
                    last_cycle: None,
                    paused_last: false,
                }),
                closing: std::sync::atomic::AtomicBool::new(false),
                keep_stopped: std::sync::atomic::AtomicBool::new(false),
            }),
        }
    }

    pub fn status(&self) -> OrchestratorStatus {
        let st = self.inner.state.lock().unwrap();
        OrchestratorStatus {
            settings: st.settings,
            phase: st.phase,
            last_decision: st.last_decision.clone(),
            saved: st.saved.clone(),
            reload_error: st.reload_error.clone(),
            last_cycle: st.last_cycle,
        }
    }

    pub async fn set_settings(&self, s: OrchestratorSettings) -> Result<OrchestratorStatus> {
        if !(0.1..=1.0).contains(&s.margin) || !s.margin.is_finite() {
            return Err(RuntimeError::InvalidInput(format!(
                "the margin must be 0.1 to 1.0 (10 to 100 %), not {}",
                s.margin
            )));
        }
        refuse_newer(&self.inner.settings_path)?;
        let file = stored::SettingsFile::of(stored::FORMAT, &s);
        crate::storage::write_json_atomic(&self.inner.settings_path, &file).await?;
        self.inner.state.lock().unwrap().settings = s;
        Ok(self.status())
    }

    fn set_phase(&self, phase: OrchestratorPhase) {
        self.inner.state.lock().unwrap().phase = phase;
    }

    fn live(&self, want_gpu: bool) -> Result<Live> {
        let now = self.inner.memory.memory_now()?;
        let gpu = if want_gpu {
            let names = self.inner.memory.gpu_names();
            now.gpus.iter().max_by_key(|g| g.vram.free_bytes).map(|g| {
                let name = names
                    .iter()
                    .find(|(id, _)| *id == g.id)
                    .map_or_else(|| g.id.clone(), |(_, n)| n.clone());
                (g.id.clone(), name, g.vram.free_bytes)
            })
        } else {
            None
        };
        Ok(Live { gpu, free_ram: now.memory.available_bytes })
    }

    /// The decision for `need`, and the live figures it was made on.
    fn decision(
        &self,
        need: Footprint,
        llm: Option<&RunningLlm>,
    ) -> Result<(OffloadDecision, Live)> {
        let (settings, paused_last) = {
            let st = self.inner.state.lock().unwrap();
            (st.settings, st.paused_last)
        };
        let uses_gpu = need.vram_bytes > 0 || llm.is_some_and(|l| l.usage.vram > 0);
        let live = self.live(uses_gpu)?;
        let decision = decide(&DecisionInput {
            mode: settings.mode,
            margin: settings.margin,
            llm: llm.map(|l| l.usage),
            image: need,
            gpu: live.gpu.as_ref().map(|(_, name, free)| (name.clone(), *free)),
            free_ram: live.free_ram,
            paused_last,
            at_ms: now_ms(),
        });
        Ok((decision, live))
    }

    /// What a job needing `need` would decide now; nothing changes.
    pub fn check(&self, need: Footprint) -> Result<OffloadDecision> {
        Ok(self.decision(need, self.inner.llm.running().as_ref())?.0)
    }

    /// Runs `job`, pausing the LLM around it when the decision says so.
    pub async fn run<T: Send>(
        &self,
        job_id: &str,
        need: Footprint,
        making_room: impl FnOnce() + Send,
        job: impl std::future::Future<Output = Result<T>> + Send,
    ) -> Result<T> {
        let _cycle = self.inner.lock.lock().await;
        let llm = self.inner.llm.running();
        // `before`: the figures the decision used, against which the LLM's memory coming back
        // is measured.
        let (decision, before) = self.decision(need, llm.as_ref())?;
        {
            let mut st = self.inner.state.lock().unwrap();
            st.last_decision = Some(decision.clone());
            st.paused_last = decision.offload && llm.is_some();
        }
        let Some(llm) = llm.filter(|_| decision.offload) else {
            self.inner.events.emit(AppEvent::OffloadNotNeeded { decision: Box::new(decision) });
            self.set_phase(OrchestratorPhase::RunningJob);
            let out = job.await;
            self.set_phase(OrchestratorPhase::Idle);
            return out;
        };

        // Make room: save, hold manual starts, stop, wait for the memory.
        making_room();
        self.inner.keep_stopped.store(false, std::sync::atomic::Ordering::SeqCst);
        self.set_phase(OrchestratorPhase::MakingRoom);
        let saved = SavedLlmState {
            config: llm.config.clone(),
            port: llm.port,
            context_size: llm.context_size,
            saved_at_ms: now_ms(),
            job_id: Some(job_id.to_owned()),
        };
        if let Err(e) = self.write_paused(&saved).await {
            self.set_phase(OrchestratorPhase::Idle);
            return Err(e);
        }
        {
            let mut st = self.inner.state.lock().unwrap();
            st.saved = Some(saved.clone());
            st.reload_error = None;
        }
        self.inner.llm.hold(Some(HOLD_REASON.to_owned()));
        let t = Instant::now();
        if let Err(e) = self.inner.llm.pause().await {
            if !matches!(e, RuntimeError::ServerNotRunning) {
                // Still running: nothing to bring back, and no room was made.
                self.inner.llm.hold(None);
                self.forget_saved();
                self.set_phase(OrchestratorPhase::Idle);
                return Err(e);
            }
        }
        let stop_ms = t.elapsed().as_millis() as u64;
        self.inner.events.emit(AppEvent::LlmOffloaded {
            decision: Box::new(decision.clone()),
            saved: Box::new(saved.clone()),
        });
        let t = Instant::now();
        self.wait_for_memory(&before, llm.usage).await;
        let wait_ms = t.elapsed().as_millis() as u64;

        self.set_phase(OrchestratorPhase::RunningJob);
        let t = Instant::now();
        let out = job.await;
        let job_ms = t.elapsed().as_millis() as u64;

        if self.inner.closing.load(std::sync::atomic::Ordering::SeqCst) {
            // Closing the app stops the LLM anyway: no restart only to stop it, and nothing for
            // the next launch to restore (a normal close never restarts the LLM either).
            self.inner.llm.hold(None);
            self.forget_saved();
            self.set_phase(OrchestratorPhase::Idle);
            return out;
        }
        if self.inner.keep_stopped.swap(false, std::sync::atomic::Ordering::SeqCst) {
            self.let_go();
            self.set_phase(OrchestratorPhase::Idle);
            return out;
        }
        // Bring the LLM back, whatever the job's outcome.
        let t = Instant::now();
        let reloaded = self.reload(&saved).await;
        let restart_ms = t.elapsed().as_millis() as u64;
        let times = CycleTimes { stop_ms, wait_ms, job_ms, restart_ms };
        self.inner.state.lock().unwrap().last_cycle = Some(times);
        if let Ok((port, attempts)) = reloaded {
            self.inner.events.emit(AppEvent::LlmReloaded { port, attempts, times });
        }
        self.set_phase(OrchestratorPhase::Idle);
        out
    }

    /// Polls live memory until the LLM's share of each memory it used is back (80 % of it,
    /// less [`MEMORY_NOISE`] for what other programs do meanwhile), at most `memory_wait`.
    async fn wait_for_memory(&self, before: &Live, llm: LlmUse) {
        let deadline = Instant::now() + self.inner.config.memory_wait;
        let back = |before: u64, now: u64, used: u64| now + MEMORY_NOISE >= before + used / 10 * 8;
        loop {
            let Ok(now) = self.live(before.gpu.is_some()) else { return };
            let vram_ok = match (&before.gpu, &now.gpu) {
                (Some((_, _, b)), Some((_, _, n))) => back(*b, *n, llm.vram),
                _ => true,
            };
            let ram_ok = back(before.free_ram, now.free_ram, llm.ram);
            if vram_ok && ram_ok {
                return;
            }
            if Instant::now() >= deadline {
                self.inner.llm.log(
                    ipc::event::LogLevel::Warn,
                    format!(
                        "the LLM's memory did not show up as free within {:?}; the image starts anyway",
                        self.inner.config.memory_wait
                    ),
                );
                return;
            }
            tokio::time::sleep(self.inner.config.memory_poll).await;
        }
    }

    /// Keeps what to bring back, unless a newer version's paused state is in the way.
    async fn write_paused(&self, saved: &SavedLlmState) -> Result<()> {
        refuse_newer(&self.inner.saved_path)?;
        let file = stored::PausedFile::of(stored::FORMAT, saved);
        crate::storage::write_json_atomic(&self.inner.saved_path, &file).await
    }

    fn forget_saved(&self) {
        let _ = std::fs::remove_file(&self.inner.saved_path);
        self.inner.state.lock().unwrap().saved = None;
    }

    /// Starts the LLM with `saved`, retrying with backoff; every failure is reported. On the
    /// last failure the saved state stays (shown, and retried by [`Self::reload_now`] or the
    /// next launch).
    async fn reload(&self, saved: &SavedLlmState) -> Result<(u16, u32)> {
        self.set_phase(OrchestratorPhase::Reloading);
        self.inner.llm.hold(None);
        let tries = self.inner.config.reload_tries.max(1);
        let mut delay = self.inner.config.reload_backoff;
        for attempt in 1..=tries {
            let result = match self.inner.llm.resume(saved.config.clone()).await {
                // Someone started it in the moment between the hold and this start.
                Err(RuntimeError::ServerAlreadyRunning) => self
                    .inner
                    .llm
                    .running()
                    .map(|r| r.port)
                    .ok_or(RuntimeError::ServerAlreadyRunning),
                other => other,
            };
            match result {
                Ok(port) => {
                    self.forget_saved();
                    self.inner.state.lock().unwrap().reload_error = None;
                    return Ok((port, attempt));
                }
                Err(e) => {
                    let will_retry = attempt < tries;
                    self.inner.events.emit(AppEvent::LlmReloadFailed {
                        error: e.to_ipc(),
                        attempt,
                        will_retry,
                    });
                    if !will_retry {
                        self.inner.state.lock().unwrap().reload_error = Some(e.to_ipc());
                        return Err(e);
                    }
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
            }
        }
        unreachable!("the loop returns on its last try")
    }

    /// Brings a paused LLM back now (after a reload that failed); nothing when none is saved.
    pub async fn reload_now(&self) -> Result<()> {
        let _cycle = self.inner.lock.lock().await;
        let Some(saved) = self.inner.state.lock().unwrap().saved.clone() else { return Ok(()) };
        let t = Instant::now();
        let (port, attempts) = self.reload(&saved).await?;
        let times = CycleTimes { restart_ms: t.elapsed().as_millis() as u64, ..Default::default() };
        self.inner.events.emit(AppEvent::LlmReloaded { port, attempts, times });
        self.set_phase(OrchestratorPhase::Idle);
        Ok(())
    }

    /// "Keep it stopped": the paused LLM is not brought back (after the running job, or now
    /// when a reload already failed). Manual starts are allowed again once the job ends.
    pub fn keep_stopped(&self) -> Result<()> {
        if self.inner.state.lock().unwrap().saved.is_none() {
            return Err(RuntimeError::InvalidInput(
                "the LLM is not paused for an image, so there is nothing to keep stopped".into(),
            ));
        }
        self.inner.keep_stopped.store(true, std::sync::atomic::Ordering::SeqCst);
        // No cycle running (its reload failed earlier): let go at once.
        if let Ok(_idle) = self.inner.lock.try_lock() {
            self.inner.keep_stopped.store(false, std::sync::atomic::Ordering::SeqCst);
            self.let_go();
        }
        Ok(())
    }

    /// Forgets the paused LLM: nothing to restore, manual starts allowed, the window told.
    fn let_go(&self) {
        self.inner.llm.hold(None);
        self.forget_saved();
        self.inner.state.lock().unwrap().reload_error = None;
        self.inner.llm.log(
            ipc::event::LogLevel::Info,
            "left stopped after the image, as asked (Keep it stopped)".to_owned(),
        );
        self.inner.events.emit(AppEvent::LlmKeptStopped);
    }

    /// The app is closing: a job that ends from now on does not bring the LLM back.
    pub fn shutting_down(&self) {
        self.inner.closing.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// At launch: if the app died while the LLM was paused, bring it back as it was.
    pub async fn recover(&self) -> Result<bool> {
        if self.inner.state.lock().unwrap().saved.is_none() {
            return Ok(false);
        }
        self.reload_now().await.map(|_| true)
    }
}

impl JobGate for Orchestrator {
    fn run<'a>(&'a self, ticket: JobTicket, job: BoxFuture<'a, ()>) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let JobTicket { job_id, need, making_room } = ticket;
            Orchestrator::run(self, &job_id, need, making_room, async move {
                job.await;
                Ok(())
            })
            .await
        })
    }

    fn check(&self, need: Footprint) -> Result<OffloadDecision> {
        Orchestrator::check(self, need)
    }

    fn margin(&self) -> f64 {
        self.status().settings.margin
    }
}
