//! Start-to-healthy of llama-server through the app (`LlamaServer::start`: runtime cache check,
//! GGUF read, auto-configuration, spawn, health) against a bare start of the same argv polled
//! every 5 ms, alternating, for the tiny model and a ~40 MB one; and the app's memory estimate
//! against what the server's load log says it took.
//!
//! GENAI_TEST_LLAMA_SERVER=$(scripts/build-llama-server) cargo bench -p runtime --bench llm_start

use ipc::llm::LlmConfig;
use ipc::models::{ModelInfo, ModelKind};
use ipc::runtimes::RuntimeKind;
use ipc::StorageRootSource;
use runtime::binaries::{Binaries, BinariesConfig};
use runtime::llama::args::build_args;
use runtime::llama::{LlamaServer, ServerConfig};
use runtime::models::ModelStore;
use runtime::system::SystemProbe;
use runtime::{EventBus, StorageLayout, StorageRoot};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

async fn bare_start(exe: &std::path::Path, args: &[String], port: u16) -> Duration {
    let client = runtime::net::local_client().unwrap();
    let t = Instant::now();
    let mut cmd = runtime::process::command(exe, args);
    cmd.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
    let mut child = cmd.spawn().unwrap();
    loop {
        let ok = client
            .get(format!("http://127.0.0.1:{port}/health"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if ok {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let d = t.elapsed();
    runtime::process::terminate(&mut child, Duration::from_secs(10)).await.unwrap();
    d
}

fn main() {
    let Some(exe) = std::env::var_os("GENAI_TEST_LLAMA_SERVER") else {
        println!("skipped: set GENAI_TEST_LLAMA_SERVER=$(scripts/build-llama-server)");
        return;
    };
    let exe = std::path::PathBuf::from(exe);
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let root = std::env::temp_dir().join(format!("genai-bench-llm-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let storage = StorageLayout::create(StorageRoot::new(&root, StorageRootSource::Env)).unwrap();
        let events = EventBus::default();
        let binaries =
            Binaries::new(storage.clone(), events.clone(), BinariesConfig::from_env().unwrap()).unwrap();
        binaries.set_custom(RuntimeKind::Llama, Some(&exe)).await.unwrap();
        let models = ModelStore::new(storage.clone());
        let llm = LlamaServer::new(
            storage.clone(),
            events,
            binaries,
            models.clone(),
            Arc::new(SystemProbe::real()),
            ServerConfig::default(),
        );
        let shapes = [
            ("tiny", gguf::fixtures::TinyLlama::default()),
            (
                "medium",
                gguf::fixtures::TinyLlama { n_embd: 384, n_layer: 6, n_head: 6, n_ff: 1024, n_ctx: 2048, seed: 7 },
            ),
        ];
        for (id, shape) in shapes {
            let bytes = gguf::fixtures::tiny_llama(shape).to_bytes();
            let path = storage.llm_models().join(format!("{id}.gguf"));
            std::fs::write(&path, &bytes).unwrap();
            let p = path.display().to_string();
            let info = ModelInfo::local_file(id, id, ModelKind::Llm, &p, bytes.len() as u64);
            models.register(&info).await.unwrap();
            let cfg = LlmConfig { model_id: id.into(), ..Default::default() };
            let (mut app, mut bare) = (Vec::new(), Vec::new());
            let mut last = None;
            for _ in 0..7 {
                let t = Instant::now();
                let st = llm.start(cfg.clone()).await.unwrap();
                app.push(t.elapsed());
                llm.stop().await.unwrap();
                let mut s = st.settings.clone().unwrap();
                s.port = runtime::net::free_port().unwrap();
                bare.push(bare_start(&exe, &build_args(&s), s.port).await);
                last = Some(st);
            }
            let st = last.unwrap();
            let (a, b) = (median(app), median(bare));
            println!(
                "{id} ({:.1} MB): start-to-healthy app {:.1} ms, bare {:.1} ms (median of 7), ratio app / bare {:.3} (goal ≤ 1.05)",
                bytes.len() as f64 / 1e6,
                a.as_secs_f64() * 1e3,
                b.as_secs_f64() * 1e3,
                a.as_secs_f64() / b.as_secs_f64()
            );
            let s = st.settings.unwrap();
            let estimate = s.expected_ram_bytes + s.expected_vram_bytes;
            let measured: u64 = st.measured.iter().map(|d| d.total()).sum();
            let weights: u64 = st.measured.iter().map(|d| d.model_bytes + d.kv_bytes).sum();
            println!(
                "{id}: memory estimate {} vs measured {} ({:+.1} %); weights + KV alone measured {} ({:+.1} %); {}",
                ipc::format::bytes(estimate),
                ipc::format::bytes(measured),
                (estimate as f64 / measured as f64 - 1.0) * 100.0,
                ipc::format::bytes(weights),
                (estimate as f64 / weights as f64 - 1.0) * 100.0,
                st.measured.iter().map(|d| format!("{}: model {} KV {} compute {}", d.device, d.model_bytes, d.kv_bytes, d.compute_bytes)).collect::<Vec<_>>().join("; ")
            );
        }
        let _ = std::fs::remove_dir_all(&root);
    });
}
