//! Orchestration with the real llama-server (`GENAI_TEST_LLAMA_SERVER`, `scripts/test` builds
//! it) running the tiny model, and the fake sd-cli, wired as the app wires them (`Runtime`):
//! with the margin set so that an image does not fit beside the LLM, the real server is stopped
//! during the job (its process gone, manual starts refused), and is healthy again afterwards on
//! the same port with the same context. And a client with genai-lite's default settings finds
//! the LLM on 8080 and the image API on 8081.

use ipc::diffusion::{DiffusionConfig, ImageRequest, JobStatus};
use ipc::event::ServerState;
use ipc::llm::LlmConfig;
use ipc::models::{ModelInfo, ModelKind};
use ipc::orchestrator::{OffloadMode, OrchestratorSettings};
use ipc::runtimes::RuntimeKind;
use ipc::{AppEvent, ErrorCode, StorageRootSource};
use runtime::system::SystemProbe;
use runtime::{EventBus, Runtime, StorageRoot};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use testkit::fake_runtime::{self, alive};
use testkit::TempDir;

/// The fake sd-cli re-runs this test binary in sd-cli mode.
#[test]
#[ignore = "entry point of the fake sd-cli, not a test"]
fn fake_sd_cli_entry() {
    fake_runtime::sd_cli_if_asked();
}

fn real_llama_server() -> PathBuf {
    PathBuf::from(
        std::env::var_os("GENAI_TEST_LLAMA_SERVER").expect(
            "GENAI_TEST_LLAMA_SERVER must name a llama-server (scripts/build-llama-server)",
        ),
    )
}

/// The app's runtime on a fresh storage folder with the real llama-server, the fake sd-cli
/// (`step_ms` per step), the tiny LLM and a diffusion model.
pub async fn world(dir: &TempDir, step_ms: u64) -> Runtime {
    let rt = Runtime::open(
        StorageRoot::new(dir.join("home"), StorageRootSource::Env),
        EventBus::default(),
        Arc::new(SystemProbe::real()),
    )
    .unwrap();
    rt.binaries().set_custom(RuntimeKind::Llama, Some(&real_llama_server())).await.unwrap();
    let sd = fake_runtime::generating_sd_cli(dir.path(), step_ms, false);
    rt.binaries().set_custom(RuntimeKind::Diffusion, Some(&sd)).await.unwrap();
    let llm = rt.storage().llm_models().join("tiny.gguf");
    let bytes = gguf::fixtures::tiny_llama(Default::default()).to_bytes();
    std::fs::write(&llm, &bytes).unwrap();
    let p = llm.display().to_string();
    let info = ModelInfo::local_file("tiny", "Tiny", ModelKind::Llm, &p, bytes.len() as u64);
    rt.models().register(&info).await.unwrap();
    let model = rt.storage().diffusion_models().join("sd.gguf");
    std::fs::write(&model, b"weights").unwrap();
    let p = model.display().to_string();
    let info = ModelInfo::local_file("sd", "SD", ModelKind::Diffusion, &p, 7);
    rt.models().register(&info).await.unwrap();
    rt
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the real llama-server; scripts/test runs it"]
async fn the_real_llm_is_paused_for_an_image_and_comes_back_the_same() {
    let dir = TempDir::new("real-orch");
    let rt = world(&dir, 100).await;
    // Any free port: the default ports belong to the test below.
    let cfg = LlmConfig { model_id: "tiny".into(), port: Some(0), ..Default::default() };
    let before = rt.llm().start(cfg.clone()).await.unwrap();
    let (port, ctx, pid) = (before.port.unwrap(), before.effective_context, before.pid.unwrap());
    // 10 % of (free RAM + the LLM): a 1024² image (over 4 GiB by the first-run estimate) cannot fit.
    rt.orchestrator()
        .set_settings(OrchestratorSettings { mode: OffloadMode::Auto, margin: 0.1 })
        .await
        .unwrap();
    rt.diffusion()
        .start(DiffusionConfig { model_id: "sd".into(), port: Some(0), ..Default::default() })
        .await
        .unwrap();
    let req = ImageRequest {
        prompt: "a lighthouse".into(),
        width: Some(1024),
        height: Some(1024),
        steps: Some(10),
        ..Default::default()
    };
    let check = rt.diffusion().would_need_offload(&req).unwrap().unwrap();
    assert!(check.offload && check.device == "RAM", "{check:?}");
    assert!(check.llm_measured, "the running server's measured memory is used");

    let mut rx = rt.events().subscribe();
    let id = rt.diffusion().generate(req).unwrap().id;
    let decision = loop {
        if let AppEvent::LlmOffloaded { decision, saved } = rx.recv().await.unwrap() {
            assert_eq!((saved.port, Some(saved.context_size)), (port, ctx));
            assert!(rt.storage().config().join("llm-paused.json").exists());
            break decision;
        }
    };
    assert!(decision.offload, "{decision:?}");
    // During the job: the server process is gone, the tab says paused, starts are refused.
    assert!(!alive(pid), "llama-server still running during the image");
    assert_eq!(rt.llm().status().state, ServerState::Offloaded);
    let refused = rt.llm().start(cfg.clone()).await.unwrap_err();
    assert_eq!(refused.code(), ErrorCode::Busy);
    assert!(refused.to_string().contains("paused while an image is made"), "{refused}");

    let mut finished = false;
    let times = loop {
        match tokio::time::timeout(Duration::from_secs(60), rx.recv()).await.unwrap().unwrap() {
            AppEvent::ImageJobFinished { job_id, .. } if job_id == id => finished = true,
            AppEvent::LlmReloaded { port: p, times, attempts } => {
                assert_eq!((p, attempts), (port, 1));
                break times;
            }
            AppEvent::LlmReloadFailed { error, .. } => panic!("reload failed: {}", error.message),
            _ => {}
        }
    };
    assert!(finished, "the image was recorded before the LLM came back");
    assert!(times.job_ms >= 1000 && times.restart_ms > 0, "{times:?}");
    let after = rt.llm().status();
    assert_eq!(after.state, ServerState::Running);
    assert!(after.healthy);
    assert_eq!(after.port, Some(port), "same port");
    assert_eq!(after.effective_context, ctx, "same context");
    assert_ne!(after.pid, Some(pid), "a new process");
    assert!(!rt.storage().config().join("llm-paused.json").exists());
    assert_eq!(rt.diffusion().job(&id).unwrap().status, JobStatus::Complete);
    // Manual control is back.
    rt.llm().restart().await.unwrap();
    rt.diffusion().stop().await.unwrap();
    rt.llm().stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the real llama-server; scripts/test runs it"]
async fn a_client_with_default_settings_finds_the_llm_on_8080_and_the_image_api_on_8081() {
    for p in [8080, 8081] {
        assert!(
            runtime::net::port_free("127.0.0.1", p),
            "port {p} is in use on this machine; this test needs it free (stop what holds it)"
        );
    }
    let dir = TempDir::new("default-ports");
    let rt = world(&dir, 5).await;
    let llm = rt.llm().start(LlmConfig { model_id: "tiny".into(), ..Default::default() }).await;
    let llm = llm.unwrap();
    assert_eq!((llm.port, llm.port_note.as_deref()), (Some(8080), None));
    let sd = rt.diffusion().start(DiffusionConfig { model_id: "sd".into(), ..Default::default() });
    let sd = sd.await.unwrap();
    assert_eq!((sd.port, sd.port_note.as_deref()), (Some(8081), None));

    // genai-lite's defaults: llama.cpp at http://localhost:8080, images at http://localhost:8081.
    let client = runtime::net::local_client().unwrap();
    let models = client.get("http://localhost:8080/v1/models").send().await.unwrap();
    assert!(models.status().is_success());
    let body = models.text().await.unwrap();
    assert!(body.contains("\"tiny\""), "the model by its id: {body}");
    let health = client.get("http://localhost:8081/health").send().await.unwrap();
    assert!(health.status().is_success());
    assert!(health.text().await.unwrap().contains("ok"));

    rt.diffusion().stop().await.unwrap();
    rt.llm().stop().await.unwrap();
}
