//! The cost of pausing the LLM for an image: from the job request to the LLM healthy again,
//! split into stop, wait-for-memory, job and restart, with the real llama-server (tiny model)
//! and the fake sd-cli (10 steps × 50 ms, 512²), wired as the app wires them. Medians of 5.
//!
//! GENAI_TEST_LLAMA_SERVER=$(scripts/build-llama-server) cargo bench -p runtime --bench orchestrate

use ipc::diffusion::{DiffusionConfig, ImageRequest};
use ipc::llm::LlmConfig;
use ipc::models::{ModelInfo, ModelKind};
use ipc::orchestrator::{CycleTimes, OffloadMode, OrchestratorSettings};
use ipc::runtimes::RuntimeKind;
use ipc::{AppEvent, StorageRootSource};
use runtime::system::SystemProbe;
use runtime::{EventBus, Runtime, StorageRoot};
use std::sync::Arc;
use std::time::{Duration, Instant};

const RUNS: usize = 5;

fn median(mut v: Vec<u64>) -> u64 {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    testkit::fake_runtime::sd_cli_if_asked();
    let Some(llama) = std::env::var_os("GENAI_TEST_LLAMA_SERVER") else {
        println!("skipped: set GENAI_TEST_LLAMA_SERVER=$(scripts/build-llama-server)");
        return;
    };
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let root = std::env::temp_dir().join(format!("genai-bench-orch-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let app = Runtime::open(
            StorageRoot::new(root.join("home"), StorageRootSource::Env),
            EventBus::default(),
            Arc::new(SystemProbe::real()),
        )
        .unwrap();
        app.binaries().set_custom(RuntimeKind::Llama, Some(llama.as_ref())).await.unwrap();
        let sd = testkit::fake_runtime::generating_sd_cli(&root, 50, false);
        app.binaries().set_custom(RuntimeKind::Diffusion, Some(&sd)).await.unwrap();
        let llm = app.storage().llm_models().join("tiny.gguf");
        let bytes = gguf::fixtures::tiny_llama(Default::default()).to_bytes();
        std::fs::write(&llm, &bytes).unwrap();
        let p = llm.display().to_string();
        app.models()
            .register(&ModelInfo::local_file("tiny", "Tiny", ModelKind::Llm, &p, bytes.len() as u64))
            .await
            .unwrap();
        let model = app.storage().diffusion_models().join("sd.gguf");
        std::fs::write(&model, b"weights").unwrap();
        let p = model.display().to_string();
        app.models()
            .register(&ModelInfo::local_file("sd", "SD", ModelKind::Diffusion, &p, 7))
            .await
            .unwrap();
        app.llm().start(LlmConfig { model_id: "tiny".into(), ..Default::default() }).await.unwrap();
        app.orchestrator()
            .set_settings(OrchestratorSettings { mode: OffloadMode::Always, margin: 0.75 })
            .await
            .unwrap();
        app.diffusion()
            .start(DiffusionConfig { model_id: "sd".into(), port: Some(0), ..Default::default() })
            .await
            .unwrap();
        let req = ImageRequest {
            prompt: "a lighthouse".into(),
            steps: Some(10),
            seed: Some(1),
            ..Default::default()
        };
        let mut cycles: Vec<(u64, CycleTimes)> = Vec::new();
        for _ in 0..RUNS {
            let mut rx = app.events().subscribe();
            let t = Instant::now();
            app.diffusion().generate(req.clone()).unwrap();
            let times = loop {
                match rx.recv().await.unwrap() {
                    AppEvent::LlmReloaded { times, .. } => break times,
                    AppEvent::LlmReloadFailed { error, .. } => panic!("{}", error.message),
                    _ => {}
                }
            };
            cycles.push((t.elapsed().as_millis() as u64, times));
            assert!(app.llm().status().healthy);
            while app.diffusion().status().busy {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        let m = |f: fn(&CycleTimes) -> u64| median(cycles.iter().map(|(_, c)| f(c)).collect());
        let total = median(cycles.iter().map(|(t, _)| *t).collect());
        let (stop, wait, job, restart) =
            (m(|c| c.stop_ms), m(|c| c.wait_ms), m(|c| c.job_ms), m(|c| c.restart_ms));
        println!("job request → LLM healthy again (real llama-server, tiny model; fake sd-cli 10 × 50 ms), medians of {RUNS}:");
        println!("  stop LLM          {stop:>6} ms");
        println!("  wait for memory   {wait:>6} ms");
        println!("  image job         {job:>6} ms");
        println!("  restart LLM       {restart:>6} ms");
        println!("  total             {total:>6} ms   (pausing costs {} ms over the job alone)", total.saturating_sub(job));
        app.diffusion().stop().await.unwrap();
        app.llm().stop().await.unwrap();
        let _ = std::fs::remove_dir_all(&root);
    });
}
