//! The real sd-server (built beside sd-cli by `scripts/build-sd-server`, path in
//! `GENAI_TEST_SD_SERVER`) as the app's warm image backend, with the tiny Flux.2 [klein] model:
//! it accepts every flag the app emits, two images in a row come from one process with the model
//! loaded once, a batch is one request, and a cancel of a running image ends the process at once.
//! `scripts/test` runs these with `--ignored`.

use runtime::diffusion::args::{Offload, SdImage, SdModel};
use runtime::diffusion::progress::{Stage, Tracker};
use runtime::diffusion::sd_server::{build_server_args, Backend, ServerSpec};
use runtime::process::LoadDeadline;
use runtime::RuntimeError;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

fn sd_server() -> PathBuf {
    PathBuf::from(
        std::env::var_os("GENAI_TEST_SD_SERVER")
            .expect("GENAI_TEST_SD_SERVER must name an sd-server (scripts/build-sd-server)"),
    )
}

/// Writes the tiny Flux.2 [klein] model's three files into `dir`.
fn tiny_model(dir: &std::path::Path) -> SdModel {
    let files = gguf::fixtures::tiny_flux2_klein(7).write_to(dir).unwrap();
    SdModel::Components(files.into_iter().map(|(role, path, _)| (role, path)).collect())
}

fn image(model: SdModel, steps: u32, seed: i64) -> SdImage {
    SdImage {
        model,
        prompt: "a lighthouse".into(),
        negative_prompt: None,
        width: 64,
        height: 64,
        steps,
        cfg_scale: 1.0,
        seed,
        sampler: Some("euler".into()),
        threads: Some(2),
        offload: Offload::default(),
        output: String::new(),
    }
}

fn decode_png(bytes: &[u8]) -> (u32, u32) {
    let mut reader = png::Decoder::new(std::io::Cursor::new(bytes)).read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    (info.width, info.height)
}

fn spec(model: SdModel, dir: &testkit::TempDir) -> ServerSpec {
    ServerSpec {
        model,
        offload: Offload::default(),
        threads: Some(2),
        port: runtime::net::free_port().unwrap(),
        lora_dir: dir.join("loras").display().to_string(),
    }
}

const LOAD: LoadDeadline =
    LoadDeadline { quiet: Duration::from_secs(60), max: Duration::from_secs(300) };

/// Every flag the app can emit is accepted: with model files that do not exist, sd-server
/// complains about the model and never about an argument.
#[tokio::test]
#[ignore = "needs the real sd-server; scripts/test builds it and runs this"]
async fn every_flag_the_app_emits_is_accepted() {
    let dir = testkit::TempDir::new("real-sd-server-flags");
    let missing = dir.join("no-such-dit.gguf").display().to_string();
    let mut s = spec(
        SdModel::Components(vec![
            ("diffusion_model".into(), missing.clone()),
            ("llm".into(), dir.join("no-llm.gguf").display().to_string()),
            ("vae".into(), dir.join("no-vae.gguf").display().to_string()),
        ]),
        &dir,
    );
    s.offload =
        Offload { clip_on_cpu: true, vae_on_cpu: true, offload_to_cpu: true, diffusion_fa: true };
    let args = build_server_args(&s);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let out =
        runtime::process::run(&sd_server(), &refs, Duration::from_secs(30), |_| {}).await.unwrap();
    let text = out.text();
    assert!(out.status.is_some_and(|s| !s.success()), "it must fail on the missing model: {text}");
    let lower = text.to_ascii_lowercase();
    for bad in ["unknown argument", "invalid argument", "usage:"] {
        assert!(!lower.contains(bad), "sd-server refused an argument ({bad}):\n{text}");
    }
    assert!(text.contains("new_sd_ctx_t failed") || text.contains(&missing), "{text}");

    // And a start through the backend says why, with a code.
    let e = Backend::start(&sd_server(), s, LOAD, |_| {}, std::future::pending()).await;
    let e = e.expect_err("no model, no backend");
    assert!(
        matches!(&e, RuntimeError::ServerFailed { message, .. } if message.contains("sd-server")),
        "{e:?}"
    );
}

/// Two images in a row: one process, the model loaded once (no loading line during the second
/// image), sampling of the second begins at once; then a batch of two in one request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the real sd-server; scripts/test builds it and runs this"]
async fn the_model_stays_loaded_between_images() {
    let dir = testkit::TempDir::new("real-sd-server-warm");
    let model = tiny_model(dir.path());
    let load_lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let seen = load_lines.clone();
    let mut backend = Backend::start(
        &sd_server(),
        spec(model.clone(), &dir),
        LOAD,
        move |l| seen.lock().unwrap().push(l.to_owned()),
        std::future::pending(),
    )
    .await
    .unwrap();
    let pid = backend.pid();
    assert!(
        load_lines.lock().unwrap().iter().any(|l| l.contains("loading")),
        "the load is seen: {:?}",
        load_lines.lock().unwrap()
    );

    let (_tx, rx) = watch::channel(false);
    let mut runs = Vec::new();
    for seed in [42, 43] {
        let mut lines = Vec::new();
        let mut stages = Vec::new();
        let t = Instant::now();
        let out = backend
            .generate(
                &image(model.clone(), 2, seed),
                1,
                rx.clone(),
                &mut Tracker::new(2, 1),
                |s| stages.push(s),
                |l| lines.push(l.to_owned()),
            )
            .await
            .unwrap();
        assert_eq!(out.images.len(), 1);
        assert_eq!(decode_png(&out.images[0].png), (64, 64));
        assert_eq!((out.images[0].width, out.images[0].height, out.images[0].seed), (64, 64, seed));
        assert!(stages.iter().any(|s| s.stage == Stage::Diffusion && s.step == 2), "{stages:?}");
        assert!(stages.windows(2).all(|w| w[0].percent <= w[1].percent), "{stages:?}");
        assert_eq!(backend.pid(), pid, "the same process");
        assert!(!backend.is_gone());
        runs.push((t.elapsed(), lines));
    }
    for (i, (took, lines)) in runs.iter().enumerate() {
        let loads: Vec<&String> = lines
            .iter()
            .filter(|l| l.contains("loading tensors") || l.contains("loading diffusion model"))
            .collect();
        assert!(loads.is_empty(), "image {} loaded the model again ({took:?}): {loads:?}", i + 1);
        assert!(lines.iter().any(|l| l.contains("generating image: 1/1")), "{lines:?}");
    }

    // A batch is one request: two images, seeds in order, one process still.
    let out = backend
        .generate(
            &image(model.clone(), 1, 100),
            2,
            rx.clone(),
            &mut Tracker::new(1, 2),
            |_| {},
            |_| {},
        )
        .await
        .unwrap();
    let seeds: Vec<i64> = out.images.iter().map(|i| i.seed).collect();
    assert_eq!(seeds, [100, 101]);
    assert!(out.images.iter().all(|i| decode_png(&i.png) == (64, 64)));
    assert_eq!(backend.pid(), pid);

    let info = backend.release(Duration::from_secs(10)).await.unwrap();
    assert!(backend.is_gone(), "{info:?}");
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists(), "the process ended");
}

/// A running image cannot be stopped through sd-server's API: the cancel ends the process within
/// a second, answers `Cancelled`, and a new backend makes the next image.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the real sd-server; scripts/test builds it and runs this"]
async fn a_cancel_while_running_ends_the_process_at_once() {
    let dir = testkit::TempDir::new("real-sd-server-cancel");
    let model = tiny_model(dir.path());
    let mut backend = Backend::start(
        &sd_server(),
        spec(model.clone(), &dir),
        LOAD,
        |_| {},
        std::future::pending(),
    )
    .await
    .unwrap();
    let pid = backend.pid();
    let (tx, rx) = watch::channel(false);
    let (sampling_tx, sampling_rx) = tokio::sync::oneshot::channel::<()>();
    let mut sampling_tx = Some(sampling_tx);
    let canceller = tokio::spawn(async move {
        let _ = sampling_rx.await;
        let at = Instant::now();
        tx.send(true).unwrap();
        (at, tx)
    });
    let r = backend
        .generate(
            &image(model.clone(), 100, 1),
            1,
            rx,
            &mut Tracker::new(100, 1),
            |s| {
                if s.stage == Stage::Diffusion && s.step >= 1 {
                    if let Some(t) = sampling_tx.take() {
                        let _ = t.send(());
                    }
                }
            },
            |_| {},
        )
        .await;
    let (asked, _tx) = canceller.await.unwrap();
    assert!(matches!(r, Err(RuntimeError::Cancelled)), "{r:?}");
    assert!(asked.elapsed() < Duration::from_secs(1), "cancelled in {:?}", asked.elapsed());
    assert!(backend.is_gone());
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists(), "the process ended");

    let mut fresh = Backend::start(
        &sd_server(),
        spec(model.clone(), &dir),
        LOAD,
        |_| {},
        std::future::pending(),
    )
    .await
    .unwrap();
    assert_ne!(fresh.pid(), pid);
    let (_tx, rx) = watch::channel(false);
    let out = fresh
        .generate(&image(model, 1, 5), 1, rx, &mut Tracker::new(1, 1), |_| {}, |_| {})
        .await
        .unwrap();
    assert_eq!(decode_png(&out.images[0].png), (64, 64));
    fresh.release(Duration::from_secs(10)).await.unwrap();
}

/// The whole path in the app's runtime: a build with sd-server beside its sd-cli makes images on
/// a warm backend (one process for two jobs, the model loaded by the first), a cancel while
/// sampling ends that process and the job as `cancelled`, the next job starts a new one, and
/// Release ends it with the memory back. Each change is an event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the real sd-server; scripts/test builds it and runs this"]
async fn the_diffusion_server_keeps_one_warm_backend() {
    use ipc::diffusion::{BackendState, JobStatus, ReleaseReason};
    use ipc::AppEvent;

    let dir = testkit::TempDir::new("real-sd-server-runtime");
    let rt = warm_runtime(&dir).await;
    let status = start_images(&rt, None).await;
    assert!(status.warm, "sd-server lies beside this sd-cli");
    // Chosen by the install check, which made its image through that sd-server.
    let installed = rt.binaries().installed(ipc::runtimes::RuntimeKind::Diffusion).unwrap();
    let server = std::fs::canonicalize(sd_server()).unwrap().display().to_string();
    assert_eq!(installed.images, Some(ipc::runtimes::ImagePath::WarmServer { server }));
    let setup = rt.binaries().status(ipc::runtimes::RuntimeKind::Diffusion).log;
    assert!(
        setup.iter().any(|l| l.message == "Phase 2: ✓ sd-server made a 64×64 image"),
        "{:?}",
        setup.iter().map(|l| &l.message).collect::<Vec<_>>()
    );
    assert_eq!(status.backend.state, BackendState::Absent, "loaded by the first image, not before");

    let mut rx = rt.events().subscribe();
    let req = small;
    let mut states = Vec::new();
    let cold = rt.diffusion().footprint_for(&req(2, 1)).unwrap();
    let mut pids = Vec::new();
    for seed in [1, 2] {
        let id = rt.diffusion().generate(req(2, seed)).unwrap().id;
        assert_eq!(wait_end(&id, &mut rx, &mut states).await, "finished");
        let view = rt.diffusion().job(&id).unwrap();
        assert_eq!(view.status, JobStatus::Complete);
        let b = rt.diffusion().status().backend;
        assert_eq!(b.state, BackendState::Ready, "stays loaded after the image");
        pids.push(b.pid.unwrap());
        assert!(b.load_ms.unwrap() > 0 && b.last_used_ms.is_some(), "{b:?}");
    }
    assert_eq!(pids[0], pids[1], "one backend for both images");
    // With the model held, the next image needs only its own buffers.
    let warm_need = rt.diffusion().footprint_for(&req(2, 1)).unwrap();
    assert!(
        warm_need.ram_bytes > 0 && warm_need.ram_bytes < cold.ram_bytes / 2,
        "{warm_need:?} beside the backend, {cold:?} cold"
    );
    use BackendState::*;
    assert_eq!(states, [Starting, Ready, Busy, Ready, Busy, Ready], "one load, two images");

    // Cancel while sampling: the process ends, the job is cancelled (never an error).
    let id = rt.diffusion().generate(req(100, 3)).unwrap().id;
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(60), rx.recv()).await.unwrap().unwrap();
        if let AppEvent::ImageProgress { step, .. } = ev {
            if step >= 1 {
                break;
            }
        }
    }
    rt.diffusion().cancel(&id).unwrap();
    states.clear();
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let AppEvent::DiffusionBackend { state: Absent, reason, .. } =
                rx.recv().await.unwrap()
            {
                return reason;
            }
        }
    })
    .await
    .expect("the backend ends within seconds of the cancel");
    assert_eq!(ended, Some(ReleaseReason::Cancel));
    assert_eq!(rt.diffusion().job(&id).unwrap().status, JobStatus::Cancelled);
    assert!(!std::path::Path::new(&format!("/proc/{}", pids[0])).exists());

    // The next image (once the cancelled job has let go of the server) starts a new backend;
    // Release ends it.
    let t = std::time::Instant::now();
    while rt.diffusion().status().busy {
        assert!(t.elapsed() < Duration::from_secs(5), "the cancelled job still holds the server");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let id = rt.diffusion().generate(req(1, 4)).unwrap().id;
    assert_eq!(wait_end(&id, &mut rx, &mut states).await, "finished");
    let b = rt.diffusion().status().backend;
    let pid = b.pid.unwrap();
    assert_ne!(pid, pids[0]);
    assert!(rt.diffusion().release_backend().await.unwrap(), "one was resident");
    let b = rt.diffusion().status().backend;
    assert_eq!((b.state, b.pid, b.last_release), (Absent, None, Some(ReleaseReason::Explicit)));
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists(), "the process ended");
    assert!(!rt.diffusion().release_backend().await.unwrap(), "nothing left to release");
    let released_need = rt.diffusion().footprint_for(&req(2, 1)).unwrap();
    assert!(released_need.ram_bytes > cold.ram_bytes / 2, "all of it again: {released_need:?}");
    rt.diffusion().stop().await.unwrap();
}

/// A port taken between the choice and the bind: sd-server loads, then ends without a word
/// (exit 0); the start says which port.
#[tokio::test]
#[ignore = "needs the real sd-server; scripts/test builds it and runs this"]
async fn a_port_taken_before_the_bind_is_named() {
    let dir = testkit::TempDir::new("real-sd-server-port");
    let model = tiny_model(dir.path());
    let holder = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
    let port = holder.local_addr().unwrap().port();
    let s = ServerSpec { port, ..spec(model, &dir) };
    let e = Backend::start(&sd_server(), s, LOAD, |_| {}, std::future::pending()).await;
    assert!(matches!(e, Err(RuntimeError::PortInUse(p)) if p == port), "{e:?}");
}

/// Events until job `id` ends ("finished" or "cancelled"), keeping the backend's states.
async fn wait_end(
    id: &str,
    rx: &mut tokio::sync::broadcast::Receiver<ipc::AppEvent>,
    states: &mut Vec<ipc::diffusion::BackendState>,
) -> &'static str {
    use ipc::AppEvent;
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(180), rx.recv()).await.unwrap().unwrap();
        match ev {
            AppEvent::DiffusionBackend { state, .. } => states.push(state),
            AppEvent::ImageJobFinished { job_id, .. } if job_id == id => return "finished",
            AppEvent::ImageJobCancelled { job_id } if job_id == id => return "cancelled",
            AppEvent::ImageJobFailed { error, .. } => panic!("{}", error.message),
            _ => {}
        }
    }
}

/// The app's runtime on a fresh storage folder, with the sd-cli that has sd-server beside it
/// chosen as the image runtime and the tiny Flux.2 model registered as "tiny-flux2".
async fn warm_runtime(dir: &testkit::TempDir) -> runtime::Runtime {
    use ipc::models::{ModelInfo, ModelKind};
    use ipc::runtimes::RuntimeKind;
    use ipc::StorageRootSource;
    use runtime::system::SystemProbe;
    use runtime::{EventBus, Runtime, StorageRoot};

    let rt = Runtime::open(
        StorageRoot::new(dir.join("home"), StorageRootSource::Env),
        EventBus::default(),
        Arc::new(SystemProbe::real()),
    )
    .unwrap();
    let cli = sd_server().with_file_name("sd-cli");
    rt.binaries().set_custom(RuntimeKind::Diffusion, Some(&cli)).await.unwrap();
    let folder = rt.storage().diffusion_models().join("tiny-flux2");
    std::fs::create_dir_all(&folder).unwrap();
    let files = gguf::fixtures::tiny_flux2_klein(7).write_to(&folder).unwrap();
    let info = ModelInfo::local_files("tiny-flux2", "Tiny Flux.2", ModelKind::Diffusion, &files);
    rt.models().register(&info).await.unwrap();
    rt
}

/// The real llama-server (`GENAI_TEST_LLAMA_SERVER`) as the LLM runtime of `rt`, with the tiny
/// model registered as "tiny".
async fn with_tiny_llm(rt: &runtime::Runtime) {
    use ipc::models::{ModelInfo, ModelKind};
    use ipc::runtimes::RuntimeKind;
    let llama =
        PathBuf::from(std::env::var_os("GENAI_TEST_LLAMA_SERVER").expect(
            "GENAI_TEST_LLAMA_SERVER must name a llama-server (scripts/build-llama-server)",
        ));
    rt.binaries().set_custom(RuntimeKind::Llama, Some(&llama)).await.unwrap();
    let llm = rt.storage().llm_models().join("tiny.gguf");
    let bytes = gguf::fixtures::tiny_llama(Default::default()).to_bytes();
    std::fs::write(&llm, &bytes).unwrap();
    let p = llm.display().to_string();
    let info = ModelInfo::local_file("tiny", "Tiny", ModelKind::Llm, &p, bytes.len() as u64);
    rt.models().register(&info).await.unwrap();
}

/// Starts the image server of `rt` on the tiny model (any port, two threads), with `usage`.
async fn start_images(
    rt: &runtime::Runtime,
    usage: Option<ipc::diffusion::UsageMode>,
) -> ipc::diffusion::DiffusionStatus {
    rt.diffusion()
        .start(ipc::diffusion::DiffusionConfig {
            model_id: "tiny-flux2".into(),
            port: Some(0),
            threads: Some(2),
            usage_mode: usage,
            ..Default::default()
        })
        .await
        .unwrap()
}

/// A 64×64 request of `steps` steps with `seed`, as the job API takes it.
fn small(steps: u32, seed: i64) -> ipc::diffusion::ImageRequest {
    ipc::diffusion::ImageRequest {
        prompt: "a lighthouse".into(),
        width: Some(64),
        height: Some(64),
        steps: Some(steps),
        cfg_scale: Some(1.0),
        seed: Some(seed),
        sampler: Some("euler".into()),
        ..Default::default()
    }
}

/// Live memory as a test sets it: `free` bytes of RAM available, no GPU.
struct FreeRam(std::sync::atomic::AtomicU64);

impl runtime::system::MemorySource for FreeRam {
    fn memory_now(&self) -> runtime::Result<ipc::system::MemoryNow> {
        let free = self.0.load(std::sync::atomic::Ordering::SeqCst);
        Ok(ipc::system::MemoryNow {
            memory: ipc::system::MemoryInfo { total_bytes: 64 << 30, available_bytes: free },
            gpus: Vec::new(),
        })
    }

    fn gpu_names(&self) -> Vec<(String, String)> {
        Vec::new()
    }
}

/// Starting the LLM (the real llama-server with the tiny model) beside a resident backend:
/// with room for both it stays; when the LLM would not fit beside it (memory scripted), the
/// backend is released first, with that reason, and the LLM starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the real sd-server and llama-server; scripts/test builds them and runs this"]
async fn an_llm_start_releases_the_backend_only_when_both_do_not_fit() {
    use ipc::diffusion::{BackendState, ReleaseReason};
    use ipc::llm::LlmConfig;
    use ipc::AppEvent;

    let dir = testkit::TempDir::new("real-sd-server-llm");
    let rt = warm_runtime(&dir).await;
    with_tiny_llm(&rt).await;
    let free = Arc::new(FreeRam(std::sync::atomic::AtomicU64::new(64 << 30)));
    rt.diffusion().set_memory(free.clone());
    start_images(&rt, None).await;
    let mut rx = rt.events().subscribe();
    let id = rt.diffusion().generate(small(1, 1)).unwrap().id;
    assert_eq!(wait_end(&id, &mut rx, &mut Vec::new()).await, "finished");
    let pid = rt.diffusion().status().backend.pid.expect("resident");
    let cfg = LlmConfig { model_id: "tiny".into(), port: Some(0), ..Default::default() };

    // Room for both: the backend stays.
    rt.llm().start(cfg.clone()).await.unwrap();
    let b = rt.diffusion().status().backend;
    assert_eq!((b.state, b.pid), (BackendState::Ready, Some(pid)));
    rt.llm().stop().await.unwrap();

    // No room beside it: released before the LLM starts, and the LLM runs.
    free.0.store(1 << 20, std::sync::atomic::Ordering::SeqCst);
    let mut rx = rt.events().subscribe();
    rt.llm().start(cfg).await.unwrap();
    let b = rt.diffusion().status().backend;
    assert_eq!((b.state, b.last_release), (BackendState::Absent, Some(ReleaseReason::LlmStart)));
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists(), "its process ended");
    let logs = rt.diffusion().logs();
    assert!(
        logs.iter().any(|l| l.message.starts_with("releasing the image backend: the LLM needs")),
        "the log says why"
    );
    let mut released = false;
    loop {
        match rx.try_recv() {
            Ok(AppEvent::DiffusionBackend { reason: Some(ReleaseReason::LlmStart), .. }) => {
                released = true;
            }
            Ok(_) | Err(tokio::sync::broadcast::error::TryRecvError::Lagged(_)) => {}
            Err(_) => break,
        }
    }
    assert!(released, "an event with the reason");
    rt.llm().stop().await.unwrap();
    rt.diffusion().stop().await.unwrap();
}

/// A backend that stops answering and printing mid-image (SIGSTOP, as a hung driver would) is
/// caught within seconds, long before the watchdog's time: its polls go unanswered, the job
/// fails with `BACKEND_JOB_STUCK` and the process is ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the real sd-server; scripts/test builds it and runs this"]
async fn the_watchdog_ends_a_backend_that_stops_moving() {
    let dir = testkit::TempDir::new("real-sd-server-stuck");
    let model = tiny_model(dir.path());
    let mut backend = Backend::start(
        &sd_server(),
        spec(model.clone(), &dir),
        LOAD,
        |_| {},
        std::future::pending(),
    )
    .await
    .unwrap();
    // Far longer than the quiet prompt encoding before the first step on a busy machine.
    backend.set_watchdog(Duration::from_secs(300));
    let pid = backend.pid();
    let (_tx, rx) = watch::channel(false);
    let mut stopped = None;
    let r = backend
        .generate(
            &image(model, 100, 1),
            1,
            rx,
            &mut Tracker::new(100, 1),
            |s| {
                if s.stage == Stage::Diffusion && s.step >= 1 && stopped.is_none() {
                    stopped = Some(Instant::now());
                    // SAFETY: stops the test's own child.
                    unsafe { libc::kill(pid as i32, libc::SIGSTOP) };
                }
            },
            |_| {},
        )
        .await;
    let stopped = stopped.expect("sampling began");
    assert!(
        matches!(&r, Err(RuntimeError::ServerFailed { code: ipc::ErrorCode::JobStuck, .. })),
        "{r:?}"
    );
    assert!(stopped.elapsed() < Duration::from_secs(30), "caught after {:?}", stopped.elapsed());
    assert!(backend.is_gone());
    assert!(!runtime::process::is_running(pid), "the stopped process was ended");
}

/// Burst use keeps the backend after an image until the idle release; an image in between
/// starts the wait again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the real sd-server; scripts/test builds it and runs this"]
async fn an_idle_backend_is_released_after_the_idle_time() {
    use ipc::diffusion::{BackendState, ReleaseReason, UsageMode};
    use runtime::diffusion::warm::Warm;

    let dir = testkit::TempDir::new("real-sd-server-idle");
    let model = tiny_model(dir.path());
    let events = runtime::EventBus::default();
    let warm = Warm::new(sd_server(), dir.join("run"), events);
    let idle = Duration::from_millis(1500);
    let make = |seed| {
        let warm = warm.clone();
        let model = model.clone();
        async move {
            let (_tx, rx) = watch::channel(false);
            let i = image(model, 1, seed);
            let t = &mut Tracker::new(1, 1);
            warm.generate(&i, 1, rx, t, Duration::ZERO, |_| {}, |_| {}).await.unwrap();
            warm.settle(UsageMode::Burst, false, idle).await;
        }
    };
    make(1).await;
    let pid = warm.info().pid.unwrap();
    tokio::time::sleep(Duration::from_millis(900)).await;
    make(2).await; // within the idle time: the wait starts again
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert_eq!(
        warm.info().state,
        BackendState::Ready,
        "1.8 s after the first image, 0.9 s after the second"
    );
    assert_eq!(warm.info().pid, Some(pid));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let info = warm.info();
    assert_eq!(
        (info.state, info.last_release),
        (BackendState::Absent, Some(ReleaseReason::IdleTimeout))
    );
    assert!(!runtime::process::is_running(pid));

    // Single use releases right after the request.
    let (_tx, rx) = watch::channel(false);
    let t = &mut Tracker::new(1, 1);
    warm.generate(&image(model, 1, 3), 1, rx, t, Duration::ZERO, |_| {}, |_| {}).await.unwrap();
    warm.settle(UsageMode::Single, false, idle).await;
    let info = warm.info();
    assert_eq!(
        (info.state, info.last_release),
        (BackendState::Absent, Some(ReleaseReason::Single))
    );
}

/// The PIDs of sd-server processes whose command line names `dir` (the test's own folder).
fn servers_in(dir: &std::path::Path) -> Vec<u32> {
    let needle = dir.display().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmd = String::from_utf8_lossy(&cmd);
            cmd.contains("sd-server") && cmd.contains(&needle)
        })
        .collect()
}

/// The backend states announced so far on `rx`.
fn backend_states(rx: &mut tokio::sync::broadcast::Receiver<ipc::AppEvent>) -> Vec<String> {
    let mut out = Vec::new();
    while let Ok(ev) = rx.try_recv() {
        if let ipc::AppEvent::DiffusionBackend { state, .. } = ev {
            out.push(format!("{state:?}"));
        }
    }
    out
}

/// A cancel at each moment before an image is done ends it as `Cancelled` within a second and
/// leaves neither a stray process nor a broken backend: during the backend's load (the process
/// ends), while the request waits for the backend another image holds (the other image goes
/// on), and while queued inside sd-server (taken back through its API; the backend stays).
/// A cancel while sampling is in the tests above.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the real sd-server; scripts/test builds it and runs this"]
async fn a_cancel_during_the_load_before_start_or_while_queued_ends_as_cancelled() {
    use ipc::diffusion::BackendState;
    use runtime::diffusion::sd_server::img_gen_body;
    use runtime::diffusion::warm::Warm;

    // An image that takes many seconds: the most steps the app allows, at 128×128.
    let slow = |model, seed| SdImage { width: 128, height: 128, ..image(model, 150, seed) };
    let dir = testkit::TempDir::new("real-sd-server-cancel-moments");
    let model = tiny_model(dir.path());
    let events = runtime::EventBus::default();
    let mut rx = events.subscribe();
    let warm = Warm::new(sd_server(), dir.join("run"), events);

    // During the load: cancelled at the first line the starting backend prints.
    let (tx, cancel) = watch::channel(false);
    let mut asked = None;
    let r = warm
        .generate(
            &image(model.clone(), 1, 1),
            1,
            cancel,
            &mut Tracker::new(1, 1),
            Duration::ZERO,
            |_| {},
            |_| {
                if asked.is_none() {
                    asked = Some(Instant::now());
                    tx.send(true).unwrap();
                }
            },
        )
        .await;
    let asked = asked.expect("the backend printed while loading");
    assert!(matches!(r, Err(RuntimeError::Cancelled)), "{r:?}");
    assert!(asked.elapsed() < Duration::from_secs(1), "cancelled in {:?}", asked.elapsed());
    assert_eq!(backend_states(&mut rx), ["Starting", "Absent"]);
    assert_eq!(warm.info().state, BackendState::Absent);
    assert_eq!(servers_in(dir.path()), Vec::<u32>::new(), "the loading process ended");

    // Before start: a request waiting for the backend that a long image holds.
    let (long_tx, long_cancel) = watch::channel(false);
    let long = {
        let (warm, model) = (warm.clone(), model.clone());
        tokio::spawn(async move {
            let t = &mut Tracker::new(150, 1);
            warm.generate(&slow(model, 2), 1, long_cancel, t, Duration::ZERO, |_| {}, |_| {}).await
        })
    };
    let t = Instant::now();
    while warm.info().state != BackendState::Busy {
        assert!(!long.is_finished(), "the long image ended: {:?}", long.await);
        assert!(t.elapsed() < Duration::from_secs(120), "the long image never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pid = warm.info().pid.unwrap();
    let (tx, cancel) = watch::channel(false);
    let waiting = {
        let (warm, model) = (warm.clone(), model.clone());
        tokio::spawn(async move {
            let t = &mut Tracker::new(1, 1);
            warm.generate(&image(model, 1, 3), 1, cancel, t, Duration::ZERO, |_| {}, |_| {}).await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let asked = Instant::now();
    tx.send(true).unwrap();
    let r = tokio::time::timeout(Duration::from_secs(1), waiting)
        .await
        .expect("the waiting request ends within a second")
        .unwrap();
    assert!(matches!(r, Err(RuntimeError::Cancelled)), "{r:?}");
    assert!(asked.elapsed() < Duration::from_secs(1));
    let info = warm.info();
    assert_eq!((info.state, info.pid), (BackendState::Busy, Some(pid)), "the long image goes on");
    long_tx.send(true).unwrap();
    let r = long.await.unwrap();
    assert!(matches!(r, Err(RuntimeError::Cancelled)), "{r:?}");
    assert!(!runtime::process::is_running(pid));

    // While queued inside sd-server: behind a long job given to its API directly.
    let mut backend = Backend::start(
        &sd_server(),
        spec(model.clone(), &dir),
        LOAD,
        |_| {},
        std::future::pending(),
    )
    .await
    .unwrap();
    let base = format!("http://127.0.0.1:{}", backend.spec().port);
    let client = runtime::net::local_client().unwrap();
    let blocker = client
        .post(format!("{base}/sdcpp/v1/img_gen"))
        .header("content-type", "application/json")
        .body(img_gen_body(&slow(model.clone(), 4), 1).to_string())
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let blocker: serde_json::Value = serde_json::from_slice(&blocker).unwrap();
    let blocker = blocker["id"].as_str().expect("a job id").to_owned();
    let (tx, cancel) = watch::channel(false);
    let canceller = tokio::spawn(async move {
        // Several polls of the queued job first.
        tokio::time::sleep(Duration::from_millis(700)).await;
        let at = Instant::now();
        tx.send(true).unwrap();
        (at, tx)
    });
    let r = backend
        .generate(&image(model, 1, 5), 1, cancel, &mut Tracker::new(1, 1), |_| {}, |_| {})
        .await;
    let (asked, _tx) = canceller.await.unwrap();
    assert!(matches!(r, Err(RuntimeError::Cancelled)), "{r:?}");
    assert!(asked.elapsed() < Duration::from_secs(1), "cancelled in {:?}", asked.elapsed());
    assert!(!backend.is_gone(), "taken back through the API: the backend stays");
    assert!(runtime::process::is_running(backend.pid()));
    let job = client
        .get(format!("{base}/sdcpp/v1/jobs/{blocker}"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let job: serde_json::Value = serde_json::from_slice(&job).unwrap();
    let status = job["status"].as_str().unwrap_or_default().to_owned();
    assert!(!["cancelled", "failed"].contains(&status.as_str()), "the job ahead goes on: {job}");
    backend.release(Duration::from_secs(10)).await.unwrap();
}

/// After an image that needed the LLM paused (orchestrator mode "always", usage "auto"), the
/// backend is released before the LLM is started again, and the LLM comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the real sd-server and llama-server; scripts/test builds them and runs this"]
async fn the_llm_comes_back_only_after_the_backend_is_released() {
    use ipc::diffusion::{BackendState, ReleaseReason, UsageMode};
    use ipc::event::{ServerKind, ServerState};
    use ipc::llm::LlmConfig;
    use ipc::orchestrator::{OffloadMode, OrchestratorSettings};
    use ipc::AppEvent;

    let dir = testkit::TempDir::new("real-sd-server-reload");
    let rt = warm_runtime(&dir).await;
    with_tiny_llm(&rt).await;
    let settings = OrchestratorSettings { mode: OffloadMode::Always, ..Default::default() };
    rt.orchestrator().set_settings(settings).await.unwrap();
    start_images(&rt, Some(UsageMode::Auto)).await;
    rt.llm()
        .start(LlmConfig { model_id: "tiny".into(), port: Some(0), ..Default::default() })
        .await
        .unwrap();
    let mut rx = rt.events().subscribe();
    let id = rt.diffusion().generate(small(1, 1)).unwrap().id;
    let mut seen = Vec::new();
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(180), rx.recv()).await.unwrap().unwrap();
        match ev {
            AppEvent::LlmOffloaded { .. } => seen.push("llm paused".to_owned()),
            AppEvent::DiffusionBackend { state, .. } => seen.push(format!("backend {state:?}")),
            AppEvent::ImageJobFinished { job_id, .. } if job_id == id => {
                seen.push("image".to_owned())
            }
            AppEvent::ImageJobFailed { error, .. } => panic!("{}", error.message),
            AppEvent::ServerState { server: ServerKind::Llm, state, .. } => {
                seen.push(format!("llm {state:?}"))
            }
            AppEvent::LlmReloaded { .. } => break,
            AppEvent::LlmReloadFailed { error, .. } => panic!("{}", error.message),
            _ => {}
        }
    }
    let at =
        |s: &str| seen.iter().position(|x| x == s).unwrap_or_else(|| panic!("{s} in {seen:?}"));
    assert!(at("llm paused") < at("backend Starting"), "{seen:?}");
    assert!(at("image") < at("backend Absent"), "{seen:?}");
    let restart = seen.iter().rposition(|x| x == "llm Starting").expect("the LLM restarted");
    assert!(at("backend Absent") < restart, "released before the LLM starts again: {seen:?}");
    let b = rt.diffusion().status().backend;
    assert_eq!((b.state, b.last_release), (BackendState::Absent, Some(ReleaseReason::Single)));
    assert_eq!(rt.llm().status().state, ServerState::Running);
    rt.llm().stop().await.unwrap();
    rt.diffusion().stop().await.unwrap();
}
