//! Start-to-healthy of llama-server through the app (`LlamaServer::start`: runtime cache check,
//! GGUF read, auto-configuration, spawn, health) against a bare start of the same argv polled
//! every 5 ms, alternating, for the tiny model and a ~40 MB one; and the app's memory estimate,
//! part by part (weights, KV cache, compute + output buffers), against what the server's load
//! log says it took, for four generated models (the tiny llama, a 107 MB llama with a 32k
//! vocabulary, a qwen3moe mixture of experts, a gemma2 with sliding-window layers), each at two
//! contexts and two ubatch sizes.
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
            for _ in 0..7 {
                let t = Instant::now();
                let st = llm.start(cfg.clone()).await.unwrap();
                app.push(t.elapsed());
                llm.stop().await.unwrap();
                let mut s = st.settings.clone().unwrap();
                s.port = runtime::net::free_port().unwrap();
                bare.push(bare_start(&exe, &build_args(&s), s.port).await);
            }
            let (a, b) = (median(app), median(bare));
            println!(
                "{id} ({:.1} MB): start-to-healthy app {:.1} ms, bare {:.1} ms (median of 7), ratio app / bare {:.3} (goal ≤ 1.05)",
                bytes.len() as f64 / 1e6,
                a.as_secs_f64() * 1e3,
                b.as_secs_f64() * 1e3,
                a.as_secs_f64() / b.as_secs_f64()
            );
        }
        memory_table(&llm, &storage, &models).await;
        let _ = std::fs::remove_dir_all(&root);
    });
}

/// Estimate against measured, per part and in total, for each model and setting.
async fn memory_table(llm: &LlamaServer, storage: &StorageLayout, models: &ModelStore) {
    use gguf::fixtures::{zero_model, ZeroArch, ZeroModel};
    let big = |arch| ZeroModel {
        arch,
        n_vocab: 32000,
        n_embd: 256,
        n_layer: 4,
        n_head: 8,
        n_head_kv: 4,
        head_dim: 64,
        n_ff: 1024,
        n_ctx: 8192,
    };
    let llama32k = ZeroModel { n_embd: 512, n_layer: 8, n_ff: 1408, ..big(ZeroArch::Llama) };
    let moe = big(ZeroArch::Qwen3Moe { experts: 16, used: 4, ff_exp: 128 });
    let gemma2 = ZeroModel { n_head: 4, n_head_kv: 2, ..big(ZeroArch::Gemma2 { window: 512 }) };
    let tiny = gguf::fixtures::tiny_llama(Default::default());
    let cases = [
        ("tiny llama", tiny, [256u32, 512]),
        ("llama 32k vocab", zero_model(llama32k), [2048, 4096]),
        ("qwen3moe 16x4", zero_model(moe), [2048, 4096]),
        ("gemma2 swa 512", zero_model(gemma2), [2048, 4096]),
    ];
    println!();
    println!("| model | context | ubatch | weights est / measured | KV est / measured | compute + output est / measured | total est / measured | error |");
    println!("|---|---|---|---|---|---|---|---|");
    let mib = |b: u64| b as f64 / 1048576.0;
    let mut worst: f64 = 0.0;
    for (name, writer, contexts) in cases {
        let id = name.replace(' ', "-");
        let path = storage.llm_models().join(format!("{id}.gguf"));
        if writer.tensors.iter().all(|t| t.data.is_empty()) {
            writer.write_sparse(&path).unwrap();
        } else {
            std::fs::write(&path, writer.to_bytes()).unwrap();
        }
        let len = std::fs::metadata(&path).unwrap().len();
        let p = path.display().to_string();
        models.register(&ModelInfo::local_file(&id, &id, ModelKind::Llm, &p, len)).await.unwrap();
        for context in contexts {
            for ubatch in [256u32, 512] {
                let cfg = LlmConfig {
                    model_id: id.clone(),
                    context_size: Some(context),
                    ubatch: Some(ubatch),
                    ..Default::default()
                };
                let st = llm.start(cfg).await.unwrap();
                llm.stop().await.unwrap();
                let s = st.settings.unwrap();
                let sum = |f: fn(&ipc::llm::DeviceMemory) -> u64, v: &[ipc::llm::DeviceMemory]| {
                    v.iter().map(f).sum::<u64>()
                };
                let (e, m) = (&s.estimate, &st.measured);
                let (ew, mw) = (sum(|d| d.model_bytes, e), sum(|d| d.model_bytes, m));
                let (ek, mk) = (sum(|d| d.kv_bytes, e), sum(|d| d.kv_bytes, m));
                let (ec, mc) = (sum(|d| d.compute_bytes, e), sum(|d| d.compute_bytes, m));
                let (et, mt) = (ew + ek + ec, mw + mk + mc);
                let err = (et as f64 / mt as f64 - 1.0) * 100.0;
                worst = worst.max(err.abs());
                println!(
                    "| {name} | {context} | {ubatch} | {:.2} / {:.2} MiB | {:.2} / {:.2} MiB | {:.2} / {:.2} MiB | {:.2} / {:.2} MiB | {err:+.1} % |",
                    mib(ew), mib(mw), mib(ek), mib(mk), mib(ec), mib(mc), mib(et), mib(mt)
                );
            }
        }
    }
    println!("largest total error: {worst:.1} % (goal ≤ 10 %)");
}
