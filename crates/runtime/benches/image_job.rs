//! One image through the app (`DiffusionServer::generate`: settings, offload flags from live
//! VRAM, sd-cli spawned in its own group, its output parsed for progress, events, the PNG read
//! back and base64-encoded) against the same sd-cli argv run directly (spawn, drain stdout, read
//! the PNG), alternating; and the same job through the HTTP API polled every 5 ms. The sd-cli is
//! the fake from `testkit` (20 steps of 20 ms, a 512×512 PNG): the overhead is the app's, not
//! the model's.
//!
//! cargo bench -p runtime --bench image_job

use ipc::diffusion::{DiffusionConfig, ImageRequest};
use ipc::models::{ModelInfo, ModelKind};
use ipc::runtimes::RuntimeKind;
use ipc::{AppEvent, StorageRootSource};
use runtime::binaries::{Binaries, BinariesConfig};
use runtime::diffusion::args::{build_args, Offload, SdImage, SdModel};
use runtime::diffusion::{DiffusionServer, DiffusionServerConfig};
use runtime::models::ModelStore;
use runtime::system::SystemProbe;
use runtime::{EventBus, StorageLayout, StorageRoot};
use std::sync::Arc;
use std::time::{Duration, Instant};

const RUNS: usize = 9;
const STEPS: u32 = 20;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    // The fake sd-cli re-runs this binary: play one generation and exit.
    testkit::fake_runtime::sd_cli_if_asked();
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let root = std::env::temp_dir().join(format!("genai-bench-sd-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let storage =
            StorageLayout::create(StorageRoot::new(&root, StorageRootSource::Env)).unwrap();
        let events = EventBus::default();
        let binaries =
            Binaries::new(storage.clone(), events.clone(), BinariesConfig::from_env().unwrap())
                .unwrap();
        let exe = testkit::fake_runtime::generating_sd_cli(&root, 20, false);
        binaries.set_custom(RuntimeKind::Diffusion, Some(&exe)).await.unwrap();
        let models = ModelStore::new(storage.clone());
        let model = storage.diffusion_models().join("sd.gguf");
        std::fs::write(&model, b"weights").unwrap();
        let p = model.display().to_string();
        models
            .register(&ModelInfo::local_file("sd", "SD", ModelKind::Diffusion, &p, 7))
            .await
            .unwrap();
        let server = DiffusionServer::new(
            storage,
            events.clone(),
            binaries,
            models,
            Arc::new(SystemProbe::real()),
            DiffusionServerConfig::default(),
        );
        let status = server
            .start(DiffusionConfig { model_id: "sd".into(), port: Some(0), ..Default::default() })
            .await
            .unwrap();
        let base = status.url.unwrap();
        let http = runtime::net::local_client().unwrap();
        let request = ImageRequest {
            prompt: "a lighthouse".into(),
            width: Some(512),
            height: Some(512),
            steps: Some(STEPS),
            seed: Some(42),
            sampler: Some("euler_a".into()),
            ..Default::default()
        };
        let out = root.join("direct.png");
        let direct_image = SdImage {
            model: SdModel::Single(p.clone()),
            prompt: "a lighthouse".into(),
            negative_prompt: None,
            width: 512,
            height: 512,
            steps: STEPS,
            cfg_scale: 7.5,
            seed: 42,
            sampler: Some("euler_a".into()),
            threads: None,
            // No GPU here: what the app chooses without one.
            offload: Offload { clip_on_cpu: true, ..Default::default() },
            output: out.display().to_string(),
        };
        let args = build_args(&direct_image);

        let (mut direct, mut job, mut api) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..RUNS {
            let t = Instant::now();
            let o = tokio::process::Command::new(&exe).args(&args).output().await.unwrap();
            assert!(o.status.success());
            let png = std::fs::read(&out).unwrap();
            std::fs::remove_file(&out).unwrap();
            assert!(png.starts_with(b"\x89PNG"));
            direct.push(t.elapsed());

            let mut rx = events.subscribe();
            let t = Instant::now();
            let id = server.generate(request.clone()).unwrap().id;
            loop {
                match rx.recv().await.unwrap() {
                    AppEvent::ImageJobFinished { job_id, .. } if job_id == id => break,
                    AppEvent::ImageJobFailed { error, .. } => panic!("{}", error.message),
                    _ => {}
                }
            }
            job.push(t.elapsed());
            assert!(server.job(&id).unwrap().result.is_some());
            wait_idle(&server).await;

            let t = Instant::now();
            let r = http
                .post(format!("{base}/v1/images/generations"))
                .header("content-type", "application/json")
                .body(serde_json::to_vec(&request).unwrap())
                .send()
                .await
                .unwrap();
            let created: serde_json::Value =
                serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
            let id = created["id"].as_str().unwrap().to_owned();
            loop {
                let r = http.get(format!("{base}/v1/images/generations/{id}")).send().await;
                let v: serde_json::Value =
                    serde_json::from_slice(&r.unwrap().bytes().await.unwrap()).unwrap();
                if v["status"] == "complete" {
                    break;
                }
                assert_ne!(v["status"], "error", "{v}");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            api.push(t.elapsed());
            wait_idle(&server).await;
        }
        server.stop().await.unwrap();
        let (d, j, a) = (median(direct), median(job), median(api));
        println!("image job, fake sd-cli ({STEPS} steps × 20 ms, 512×512 PNG), medians of {RUNS}:");
        println!("  direct sd-cli          {:>8.1} ms", d.as_secs_f64() * 1e3);
        println!(
            "  through a job          {:>8.1} ms   ratio {:.3} (goal ≤ 1.03)",
            j.as_secs_f64() * 1e3,
            j.as_secs_f64() / d.as_secs_f64()
        );
        println!(
            "  through the HTTP API   {:>8.1} ms   ratio {:.3} (polling every 5 ms)",
            a.as_secs_f64() * 1e3,
            a.as_secs_f64() / d.as_secs_f64()
        );
        let _ = std::fs::remove_dir_all(&root);
    });
}

async fn wait_idle(server: &DiffusionServer) {
    while server.status().busy {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}
