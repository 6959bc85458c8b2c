//! The orchestrator with a scripted LLM and scripted memory figures: pause → wait for memory →
//! job → reload in that order; reload after a failed and a cancelled job; reload failures
//! reported and retried; concurrent requests never overlap; a batch through the diffusion server
//! pauses once; the saved state brings the LLM back after the app died mid-job.

use futures_util::future::BoxFuture;
use ipc::diffusion::DiffusionConfig;
use ipc::event::ImageStage;
use ipc::llm::LlmConfig;
use ipc::models::{ModelInfo, ModelKind};
use ipc::orchestrator::{Footprint, OffloadMode, OrchestratorPhase, OrchestratorSettings};
use ipc::runtimes::RuntimeKind;
use ipc::system::{GpuMemory, MemoryInfo, MemoryNow, VramInfo};
use ipc::{AppEvent, ErrorCode, StorageRootSource};
use runtime::orchestrator::decision::LlmUse;
use runtime::orchestrator::{
    LlmControl, MemorySource, Orchestrator, OrchestratorConfig, RunningLlm,
};
use runtime::{EventBus, Result, RuntimeError};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use testkit::TempDir;

const GIB: u64 = 1 << 30;

/// VRAM that the LLM gives back only some polls after it stopped (a driver's lag).
struct FakeMemory {
    free_vram: AtomicU64,
    free_ram: AtomicU64,
    pending: AtomicU64,
    lag: AtomicU32,
    polls: AtomicU32,
}

impl FakeMemory {
    fn new(free_vram: u64) -> Arc<Self> {
        Arc::new(Self {
            free_vram: AtomicU64::new(free_vram),
            free_ram: AtomicU64::new(32 * GIB),
            pending: AtomicU64::new(0),
            lag: AtomicU32::new(0),
            polls: AtomicU32::new(0),
        })
    }

    fn free_vram(&self) -> u64 {
        self.free_vram.load(Ordering::SeqCst)
    }
}

impl MemorySource for FakeMemory {
    fn memory_now(&self) -> Result<MemoryNow> {
        self.polls.fetch_add(1, Ordering::SeqCst);
        if self.pending.load(Ordering::SeqCst) > 0 {
            if self.lag.load(Ordering::SeqCst) == 0 {
                let p = self.pending.swap(0, Ordering::SeqCst);
                self.free_vram.fetch_add(p, Ordering::SeqCst);
            } else {
                self.lag.fetch_sub(1, Ordering::SeqCst);
            }
        }
        Ok(MemoryNow {
            memory: MemoryInfo {
                total_bytes: 64 * GIB,
                available_bytes: self.free_ram.load(Ordering::SeqCst),
            },
            gpus: vec![GpuMemory {
                id: "gpu0".into(),
                vram: VramInfo {
                    total_bytes: 24 * GIB,
                    used_bytes: 24 * GIB - self.free_vram(),
                    free_bytes: self.free_vram(),
                },
            }],
        })
    }

    fn gpu_names(&self) -> Vec<(String, String)> {
        vec![("gpu0".into(), "Test GPU".into())]
    }
}

/// An LLM server that takes 6 GiB of VRAM and 1 GiB of RAM while it runs, and records what is
/// done to it.
struct FakeLlm {
    memory: Arc<FakeMemory>,
    running: Mutex<Option<LlmConfig>>,
    ops: Arc<Mutex<Vec<String>>>,
    fail_resumes: AtomicU32,
    pausing: AtomicU32,
    /// Polls before the stopped LLM's VRAM shows up as free.
    lag_polls: AtomicU32,
    /// What the orchestrator wrote to the LLM's log.
    log: Mutex<Vec<String>>,
}

const LLM_VRAM: u64 = 6 * GIB;

impl FakeLlm {
    fn new(memory: Arc<FakeMemory>, running: bool, ops: Arc<Mutex<Vec<String>>>) -> Arc<Self> {
        Arc::new(Self {
            memory,
            running: Mutex::new(running.then(config)),
            ops,
            fail_resumes: AtomicU32::new(0),
            pausing: AtomicU32::new(0),
            lag_polls: AtomicU32::new(3),
            log: Mutex::new(Vec::new()),
        })
    }

    fn op(&self, s: impl Into<String>) {
        self.ops.lock().unwrap().push(s.into());
    }

    fn is_running(&self) -> bool {
        self.running.lock().unwrap().is_some()
    }
}

fn config() -> LlmConfig {
    LlmConfig {
        model_id: "chat".into(),
        port: Some(41234),
        context_size: Some(8192),
        gpu_layers: Some(33),
        auto_restart: true,
        ..Default::default()
    }
}

impl LlmControl for FakeLlm {
    fn running(&self) -> Option<RunningLlm> {
        let c = self.running.lock().unwrap().clone()?;
        Some(RunningLlm {
            port: c.port.unwrap(),
            context_size: c.context_size.unwrap(),
            config: c,
            usage: LlmUse { ram: GIB, vram: LLM_VRAM, measured: true },
        })
    }

    fn hold(&self, reason: Option<String>) {
        self.op(if reason.is_some() { "hold" } else { "unhold" });
    }

    fn pause(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            assert_eq!(self.pausing.fetch_add(1, Ordering::SeqCst), 0, "two stops at once");
            assert!(self.is_running(), "stopped an LLM that was not running");
            tokio::time::sleep(Duration::from_millis(20)).await;
            *self.running.lock().unwrap() = None;
            self.memory.free_ram.fetch_add(GIB, Ordering::SeqCst);
            self.memory.lag.store(self.lag_polls.load(Ordering::SeqCst), Ordering::SeqCst);
            self.memory.pending.store(LLM_VRAM, Ordering::SeqCst);
            self.op("pause");
            self.pausing.fetch_sub(1, Ordering::SeqCst);
            Ok(())
        })
    }

    fn log(&self, _: ipc::event::LogLevel, message: String) {
        self.log.lock().unwrap().push(message);
    }

    fn resume(&self, config: LlmConfig) -> BoxFuture<'_, Result<u16>> {
        Box::pin(async move {
            self.op("resume");
            if self.fail_resumes.load(Ordering::SeqCst) > 0 {
                self.fail_resumes.fetch_sub(1, Ordering::SeqCst);
                return Err(RuntimeError::PortInUse(config.port.unwrap()));
            }
            self.memory.free_vram.fetch_sub(LLM_VRAM, Ordering::SeqCst);
            self.memory.free_ram.fetch_sub(GIB, Ordering::SeqCst);
            let port = config.port.unwrap();
            *self.running.lock().unwrap() = Some(config);
            Ok(port)
        })
    }
}

struct World {
    dir: TempDir,
    events: EventBus,
    memory: Arc<FakeMemory>,
    llm: Arc<FakeLlm>,
    ops: Arc<Mutex<Vec<String>>>,
    orch: Orchestrator,
}

fn quick() -> OrchestratorConfig {
    OrchestratorConfig {
        memory_wait: Duration::from_secs(5),
        memory_poll: Duration::from_millis(10),
        reload_backoff: Duration::from_millis(10),
        reload_tries: 3,
    }
}

impl World {
    /// An LLM running with 6 GiB of VRAM and `free` VRAM left.
    fn new(name: &str, free: u64) -> Self {
        let dir = TempDir::new(&format!("orch-{name}"));
        std::fs::create_dir_all(dir.join("config")).unwrap();
        let events = EventBus::default();
        let memory = FakeMemory::new(free);
        let ops = Arc::new(Mutex::new(Vec::new()));
        let llm = FakeLlm::new(memory.clone(), true, ops.clone());
        let orch = Orchestrator::new(
            dir.join("config"),
            events.clone(),
            llm.clone(),
            memory.clone(),
            quick(),
        );
        Self { dir, events, memory, llm, ops, orch }
    }

    fn ops(&self) -> Vec<String> {
        self.ops.lock().unwrap().clone()
    }

    fn saved_file(&self) -> std::path::PathBuf {
        self.dir.join("config/llm-paused.json")
    }
}

fn need(vram: u64) -> Footprint {
    Footprint { ram_bytes: GIB, vram_bytes: vram }
}

fn drain(rx: &mut tokio::sync::broadcast::Receiver<AppEvent>) -> Vec<AppEvent> {
    let mut v = Vec::new();
    while let Ok(e) = rx.try_recv() {
        v.push(e);
    }
    v
}

#[tokio::test]
async fn pause_wait_job_reload_in_that_order() {
    // 6 GiB LLM + 5 GiB image > 0.75 × (8 + 6): the LLM must go.
    let w = World::new("order", 8 * GIB);
    let mut rx = w.events.subscribe();
    let ops = w.ops.clone();
    let (llm, memory, saved) = (w.llm.clone(), w.memory.clone(), w.saved_file());
    let mut made_room = false;
    let out = w
        .orch
        .run("job-1", need(5 * GIB), || made_room = true, async move {
            // While the job runs: the LLM is stopped, its VRAM is back, its settings are saved.
            assert!(!llm.is_running());
            assert_eq!(memory.free_vram(), 14 * GIB);
            let s: ipc::orchestrator::SavedLlmState =
                serde_json::from_slice(&std::fs::read(&saved).unwrap()).unwrap();
            assert_eq!(s.config, config());
            assert_eq!((s.port, s.context_size, s.job_id.as_deref()), (41234, 8192, Some("job-1")));
            ops.lock().unwrap().push("job".into());
            Ok::<_, RuntimeError>(7)
        })
        .await
        .unwrap();
    assert_eq!(out, 7);
    assert!(made_room);
    assert_eq!(w.ops(), ["hold", "pause", "job", "unhold", "resume"]);
    assert!(w.llm.is_running() && w.llm.running().unwrap().config == config());
    assert!(!w.saved_file().exists(), "the saved state is gone once the LLM is back");
    assert!(w.memory.polls.load(Ordering::SeqCst) >= 4, "polled until the VRAM came back");

    let events = drain(&mut rx);
    let (decision, times) = match (&events[0], &events[1]) {
        (
            AppEvent::LlmOffloaded { decision, saved },
            AppEvent::LlmReloaded { port: 41234, attempts: 1, times },
        ) => {
            assert_eq!(saved.config, config());
            (decision.clone(), *times)
        }
        other => panic!("{other:?}"),
    };
    assert!(decision.offload && decision.llm_running && decision.llm_measured);
    assert_eq!(decision.device, "VRAM (Test GPU)");
    assert_eq!(
        (decision.llm_bytes, decision.image_bytes, decision.free_bytes),
        (LLM_VRAM, 5 * GIB, 8 * GIB)
    );
    assert!(decision.reason.contains("will be paused"), "{}", decision.reason);
    assert!(times.stop_ms >= 20 && times.wait_ms >= 20, "{times:?}");
    let st = w.orch.status();
    assert_eq!(st.phase, OrchestratorPhase::Idle);
    assert!(st.saved.is_none() && st.last_cycle == Some(times));
    assert_eq!(st.last_decision.unwrap(), *decision);
}

#[tokio::test]
async fn no_pause_when_both_fit_and_the_numbers_say_why() {
    let w = World::new("fits", 16 * GIB);
    let mut rx = w.events.subscribe();
    w.orch.run("j", need(5 * GIB), || panic!("no room to make"), async { Ok(()) }).await.unwrap();
    assert!(w.ops().is_empty(), "{:?}", w.ops());
    match &drain(&mut rx)[..] {
        [AppEvent::OffloadNotNeeded { decision }] => {
            assert!(!decision.offload);
            assert_eq!(decision.budget_bytes, (0.75 * (22 * GIB) as f64) as u64);
            assert!(decision.reason.starts_with("The LLM keeps running"), "{}", decision.reason);
        }
        other => panic!("{other:?}"),
    }
    // A stricter margin makes the same job pause the LLM: 11 > 0.4 × (16 + 6).
    let s = OrchestratorSettings { mode: OffloadMode::Auto, margin: 0.4 };
    w.orch.set_settings(s).await.unwrap();
    assert!(w.orch.check(need(5 * GIB)).unwrap().offload);
    assert!(w.ops().is_empty(), "check changes nothing");
    let bad = OrchestratorSettings { margin: 1.5, ..s };
    assert_eq!(w.orch.set_settings(bad).await.unwrap_err().code(), ErrorCode::InvalidInput);
    // The settings survive a restart of the app.
    let again = Orchestrator::new(
        w.dir.join("config"),
        EventBus::default(),
        w.llm.clone(),
        w.memory.clone(),
        quick(),
    );
    assert_eq!(again.status().settings, s);
}

#[tokio::test]
async fn the_llm_comes_back_after_a_failed_or_cancelled_job() {
    let w = World::new("fail", 8 * GIB);
    let err = w
        .orch
        .run("j1", need(5 * GIB), || {}, async {
            Err::<(), _>(RuntimeError::ServerFailed {
                code: ErrorCode::InsufficientMemory,
                message: "sd-cli: out of memory".into(),
            })
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::InsufficientMemory, "the job's error is kept");
    assert!(w.llm.is_running());
    let err =
        w.orch.run("j2", need(5 * GIB), || {}, async { Err::<(), _>(RuntimeError::Cancelled) });
    assert_eq!(err.await.unwrap_err().code(), ErrorCode::Cancelled);
    assert!(w.llm.is_running());
    assert_eq!(w.ops(), ["hold", "pause", "unhold", "resume", "hold", "pause", "unhold", "resume"]);
}

#[tokio::test]
async fn reload_failures_are_reported_and_retried() {
    let w = World::new("retry", 8 * GIB);
    let mut rx = w.events.subscribe();
    w.llm.fail_resumes.store(2, Ordering::SeqCst);
    w.orch.run("j", need(5 * GIB), || {}, async { Ok(()) }).await.unwrap();
    assert!(w.llm.is_running());
    let tries: Vec<(u32, bool)> = drain(&mut rx)
        .into_iter()
        .filter_map(|e| match e {
            AppEvent::LlmReloadFailed { attempt, will_retry, error } => {
                assert_eq!(error.code, ErrorCode::PortInUse);
                Some((attempt, will_retry))
            }
            AppEvent::LlmReloaded { attempts, .. } => Some((attempts, false)),
            _ => None,
        })
        .collect();
    assert_eq!(tries, [(1, true), (2, true), (3, false)]);

    // Every try fails: the failure stays visible with the saved settings, and a later
    // reload (the user's Retry, or the next launch) brings it back.
    w.llm.fail_resumes.store(5, Ordering::SeqCst);
    w.orch.run("j", need(5 * GIB), || {}, async { Ok(()) }).await.unwrap();
    assert!(!w.llm.is_running());
    let st = w.orch.status();
    assert_eq!(st.reload_error.unwrap().code, ErrorCode::PortInUse);
    assert_eq!(st.saved.unwrap().config, config());
    assert!(w.saved_file().exists());
    let last = drain(&mut rx);
    assert!(
        matches!(
            last.last(),
            Some(AppEvent::LlmReloadFailed { attempt: 3, will_retry: false, .. })
        ),
        "{last:?}"
    );
    w.llm.fail_resumes.store(0, Ordering::SeqCst);
    w.orch.reload_now().await.unwrap();
    assert!(w.llm.is_running() && !w.saved_file().exists());
    assert!(w.orch.status().reload_error.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_never_overlap() {
    let w = World::new("concurrent", 8 * GIB);
    let active = Arc::new(AtomicU32::new(0));
    let job = |ops: Arc<Mutex<Vec<String>>>, active: Arc<AtomicU32>| async move {
        assert_eq!(active.fetch_add(1, Ordering::SeqCst), 0, "two jobs at once");
        ops.lock().unwrap().push("job".into());
        tokio::time::sleep(Duration::from_millis(50)).await;
        active.fetch_sub(1, Ordering::SeqCst);
        Ok::<_, RuntimeError>(())
    };
    let (a, b) = tokio::join!(
        w.orch.run("a", need(5 * GIB), || {}, job(w.ops.clone(), active.clone())),
        w.orch.run("b", need(5 * GIB), || {}, job(w.ops.clone(), active.clone())),
    );
    a.unwrap();
    b.unwrap();
    // Each job had the LLM stopped once and brought back before the next one stopped it.
    let cycle = ["hold", "pause", "job", "unhold", "resume"];
    assert_eq!(w.ops(), [cycle, cycle].concat());
    assert!(w.llm.is_running());
}

#[tokio::test]
async fn the_app_dying_mid_job_leaves_a_state_the_next_launch_restores() {
    let w = World::new("crash", 8 * GIB);
    let mut rx = w.events.subscribe();
    let orch = w.orch.clone();
    let task = tokio::spawn(async move {
        orch.run("j", need(5 * GIB), || {}, std::future::pending::<Result<()>>()).await
    });
    loop {
        if let AppEvent::LlmOffloaded { .. } = rx.recv().await.unwrap() {
            break;
        }
    }
    task.abort(); // the app dies with the job running
    let _ = task.await;
    assert!(w.saved_file().exists());

    // The next launch: a fresh server (not running) and orchestrator on the same folder.
    let ops = Arc::new(Mutex::new(Vec::new()));
    let llm = FakeLlm::new(w.memory.clone(), false, ops.clone());
    let next = Orchestrator::new(
        w.dir.join("config"),
        EventBus::default(),
        llm.clone(),
        w.memory.clone(),
        quick(),
    );
    assert_eq!(next.status().saved.unwrap().config, config());
    assert!(next.recover().await.unwrap());
    assert_eq!(llm.running().unwrap().config, config(), "back with the same port and context");
    assert!(!w.saved_file().exists());
    assert!(!next.recover().await.unwrap(), "nothing to restore the second time");
    assert_eq!(*ops.lock().unwrap(), ["unhold", "resume"]);
}

/// Fake sd-clis re-run this test binary in sd-cli mode.
#[test]
#[ignore = "entry point of the fake sd-cli, not a test"]
fn fake_sd_cli_entry() {
    testkit::fake_runtime::sd_cli_if_asked();
}

/// A started image server (a fake sd-cli that writes real PNGs, a one-byte model) whose jobs
/// pass through `w`'s orchestrator, set to pause the LLM for every job.
async fn image_server(w: &World) -> runtime::diffusion::DiffusionServer {
    use runtime::binaries::{Binaries, BinariesConfig};
    use runtime::diffusion::{DiffusionServer, DiffusionServerConfig};
    use runtime::models::ModelStore;
    use runtime::system::SystemProbe;
    use runtime::{StorageLayout, StorageRoot};

    // Always: the fake sd-cli's model is tiny, but the rule says pause.
    w.orch
        .set_settings(OrchestratorSettings { mode: OffloadMode::Always, margin: 0.75 })
        .await
        .unwrap();
    let storage =
        StorageLayout::create(StorageRoot::new(w.dir.join("home"), StorageRootSource::Env))
            .unwrap();
    let binaries =
        Binaries::new(storage.clone(), w.events.clone(), BinariesConfig::from_env().unwrap())
            .unwrap();
    let exe = testkit::fake_runtime::generating_sd_cli(w.dir.path(), 5, false);
    binaries.set_custom(RuntimeKind::Diffusion, Some(&exe)).await.unwrap();
    // The install check's runs (--help, its 64×64 image) are not the jobs these tests count.
    std::fs::remove_file(w.dir.join("calls.log")).unwrap();
    let models = ModelStore::new(storage.clone());
    let path = storage.diffusion_models().join("sd.gguf");
    std::fs::write(&path, b"w").unwrap();
    let p = path.display().to_string();
    models.register(&ModelInfo::local_file("sd", "SD", ModelKind::Diffusion, &p, 1)).await.unwrap();
    let sd = DiffusionServer::new(
        storage,
        w.events.clone(),
        binaries,
        models,
        Arc::new(SystemProbe::real()),
        DiffusionServerConfig::default(),
    );
    sd.set_gate(Arc::new(w.orch.clone()));
    sd.start(DiffusionConfig { model_id: "sd".into(), port: Some(0), ..Default::default() })
        .await
        .unwrap();
    sd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_through_the_diffusion_server_pauses_the_llm_once() {
    let w = World::new("batch", 8 * GIB);
    let sd = image_server(&w).await;
    let decision = sd.would_need_offload(&Default::default()).unwrap().unwrap();
    assert!(decision.offload, "{}", decision.reason);
    let mut rx = w.events.subscribe();
    let req = ipc::diffusion::ImageRequest {
        prompt: "x".into(),
        width: Some(64),
        height: Some(64),
        steps: Some(3),
        count: Some(3),
        ..Default::default()
    };
    let id = sd.generate(req).unwrap().id;
    let mut seen = Vec::new();
    loop {
        let e = rx.recv().await.unwrap();
        let done = matches!(e, AppEvent::LlmReloaded { .. });
        seen.push(e);
        if done {
            break;
        }
    }
    let offloads = seen.iter().filter(|e| matches!(e, AppEvent::LlmOffloaded { .. })).count();
    assert_eq!(offloads, 1, "one pause for the whole batch");
    assert!(seen
        .iter()
        .any(|e| matches!(e, AppEvent::ImageProgress { stage: ImageStage::MakingRoom, .. })));
    let finished =
        seen.iter().position(|e| matches!(e, AppEvent::ImageJobFinished { images: 3, .. }));
    let reloaded = seen.len() - 1;
    assert!(finished.is_some_and(|f| f < reloaded), "all three images, then the LLM");
    let calls = std::fs::read_to_string(w.dir.join("calls.log")).unwrap();
    assert_eq!(calls.lines().filter(|l| l.contains(" -o ")).count(), 3);
    assert_eq!(w.ops(), ["hold", "pause", "unhold", "resume"]);
    assert_eq!(sd.job(&id).unwrap().status, ipc::diffusion::JobStatus::Complete);
    sd.stop().await.unwrap();
}

#[tokio::test]
async fn the_wait_for_memory_is_bounded() {
    let w = World::new("bounded", 8 * GIB);
    let orch = Orchestrator::new(
        w.dir.join("config"),
        w.events.clone(),
        w.llm.clone(),
        w.memory.clone(),
        OrchestratorConfig { memory_wait: Duration::from_millis(150), ..quick() },
    );
    // The driver never reports the VRAM as free: the job starts anyway after the bound.
    w.llm.lag_polls.store(u32::MAX, Ordering::SeqCst);
    orch.run("j", need(5 * GIB), || {}, async { Ok(()) }).await.unwrap();
    // The LLM's own log says why the image did not wait longer.
    let log = w.llm.log.lock().unwrap().clone();
    assert!(log.iter().any(|l| l.contains("did not show up as free")), "{log:?}");
    let times = orch.status().last_cycle.unwrap();
    assert!((150..2000).contains(&times.wait_ms), "{times:?}");
    assert!(w.llm.is_running(), "and the LLM still comes back");
}

#[tokio::test]
async fn closing_the_app_mid_job_leaves_the_llm_stopped_and_nothing_to_restore() {
    let w = World::new("closing", 8 * GIB);
    let mut rx = w.events.subscribe();
    let (release, wait) = tokio::sync::oneshot::channel::<()>();
    let orch = w.orch.clone();
    let task = tokio::spawn(async move {
        orch.run("j", need(5 * GIB), || {}, async move {
            let _ = wait.await;
            Err::<(), _>(RuntimeError::Cancelled)
        })
        .await
    });
    while !matches!(rx.recv().await.unwrap(), AppEvent::LlmOffloaded { .. }) {}
    w.orch.shutting_down();
    release.send(()).unwrap();
    assert_eq!(task.await.unwrap().unwrap_err().code(), ErrorCode::Cancelled);
    assert_eq!(w.ops(), ["hold", "pause", "unhold"], "no restart only to stop it");
    assert!(!w.llm.is_running());
    assert!(!w.saved_file().exists() && w.orch.status().saved.is_none());
    assert!(!drain(&mut rx).iter().any(|e| matches!(e, AppEvent::LlmReloaded { .. })));
}

/// The offload flags are decided after the pause: with 4 GiB free CLIP would go to the CPU (under
/// 6 GiB of headroom); the 6 GiB the paused LLM gives back keep it on the GPU. Without a pause
/// the same request on the same 4 GiB keeps CLIP on the CPU.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_offload_flags_follow_the_memory_the_pause_freed() {
    for mode in [OffloadMode::Always, OffloadMode::Never] {
        let w = World::new(&format!("refit-{mode:?}"), 4 * GIB);
        let sd = image_server(&w).await;
        sd.set_memory(w.memory.clone());
        w.orch.set_settings(OrchestratorSettings { mode, margin: 0.75 }).await.unwrap();
        let req = ipc::diffusion::ImageRequest {
            prompt: "x".into(),
            width: Some(64),
            height: Some(64),
            steps: Some(2),
            ..Default::default()
        };
        let id = sd.generate(req).unwrap().id;
        // Done once the job has ended and the gate has let go (the LLM back, or never paused).
        for _ in 0..500 {
            let idle = w.orch.status().phase == OrchestratorPhase::Idle;
            if sd.job(&id).unwrap().status.is_finished() && idle {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(sd.job(&id).unwrap().status, ipc::diffusion::JobStatus::Complete);
        let calls = std::fs::read_to_string(w.dir.join("calls.log")).unwrap();
        let run = calls.lines().find(|l| l.contains(" -o ")).expect("sd-cli ran");
        let logs: Vec<String> = sd.logs().into_iter().map(|l| l.message).collect();
        let refit = "offload flags now all on the GPU (were CLIP on CPU)";
        if mode == OffloadMode::Always {
            assert!(w.llm.is_running(), "the LLM came back");
            assert!(!run.contains("--clip-on-cpu"), "CLIP kept on the CPU after the pause: {run}");
            assert!(logs.iter().any(|l| l.contains(refit)), "{logs:?}");
        } else {
            assert!(run.contains("--clip-on-cpu"), "{run}");
            assert!(!logs.iter().any(|l| l.contains(refit)), "{logs:?}");
        }
        sd.stop().await.unwrap();
    }
}

/// "Keep it stopped" during the pause: the job finishes, the LLM is not brought back, manual
/// starts are allowed again and nothing is left to restore; with nothing paused it says so.
#[tokio::test]
async fn keep_it_stopped_cancels_the_reload() {
    let w = World::new("keep", 8 * GIB);
    let e = w.orch.keep_stopped().unwrap_err();
    assert_eq!(e.code(), ErrorCode::InvalidInput, "{e}");
    let mut rx = w.events.subscribe();
    let orch = w.orch.clone();
    w.orch
        .run("job-1", need(5 * GIB), || {}, async move {
            orch.keep_stopped().unwrap();
            Ok::<_, RuntimeError>(())
        })
        .await
        .unwrap();
    assert_eq!(w.ops(), ["hold", "pause", "unhold"], "no resume");
    assert!(!w.llm.is_running());
    assert!(!w.saved_file().exists(), "nothing for the next launch to restore");
    let st = w.orch.status();
    assert!(st.saved.is_none() && st.phase == OrchestratorPhase::Idle, "{st:?}");
    let events = drain(&mut rx);
    assert!(matches!(events.last(), Some(AppEvent::LlmKeptStopped)), "{events:?}");
    assert!(!events.iter().any(|e| matches!(e, AppEvent::LlmReloaded { .. })));
    assert!(w.llm.log.lock().unwrap().iter().any(|l| l.contains("Keep it stopped")));

    // The next pause brings the LLM back again as usual.
    *w.llm.running.lock().unwrap() = Some(config());
    w.memory.free_vram.store(8 * GIB, Ordering::SeqCst);
    w.orch.run("job-2", need(5 * GIB), || {}, async { Ok::<_, RuntimeError>(()) }).await.unwrap();
    assert!(w.llm.is_running(), "a new pause is not kept stopped");
}

/// After a reload that failed for good, "Keep it stopped" lets go at once.
#[tokio::test]
async fn keep_it_stopped_after_a_failed_reload_forgets_the_saved_llm() {
    let w = World::new("keep-failed", 8 * GIB);
    w.llm.fail_resumes.store(100, Ordering::SeqCst);
    w.orch.run("job-1", need(5 * GIB), || {}, async { Ok::<_, RuntimeError>(()) }).await.unwrap();
    assert!(w.orch.status().reload_error.is_some() && w.saved_file().exists());
    w.orch.keep_stopped().unwrap();
    let st = w.orch.status();
    assert!(st.saved.is_none() && st.reload_error.is_none(), "{st:?}");
    assert!(!w.saved_file().exists());
    assert_eq!(w.ops().last().map(String::as_str), Some("unhold"));
}
