//! The OpenAI-compatible endpoint against the same real llama-server reached directly, with
//! models `crates/gguf` writes (a 6-layer llama for text, the tiny Flux.2 for images):
//!   1. a streamed reply (same prompt, seed and length, prompt cache off), through the endpoint
//!      and straight to llama-server, alternated: tokens per second of each and their ratio
//!      (target ≥ 0.98), and the extra time to the first piece;
//!   2. a swap (a request for model B while A runs, to B's first piece) against a bare start of
//!      B (the app's start, then the same request straight to it) (target ≤ 1.10);
//!   3. 64 short chat requests and 4 image requests at once: all answered, p50/p99 latency, and
//!      this process's memory (the app's part: the endpoint and the servers' glue) before and after.
//!
//! GENAI_TEST_LLAMA_SERVER=$(scripts/build-llama-server) GENAI_TEST_SD_SERVER=$(scripts/build-sd-server) \
//!   cargo bench -p runtime --bench endpoint

use futures_util::StreamExt;
use ipc::llm::LlmConfig;
use ipc::models::{ModelInfo, ModelKind};
use ipc::runtimes::RuntimeKind;
use ipc::StorageRootSource;
use runtime::endpoint::EndpointConfig;
use runtime::system::SystemProbe;
use runtime::{EventBus, Runtime, StorageRoot};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

const ROUNDS: usize = 10;
const TOKENS: u32 = 300;
const SWAPS: usize = 11;

fn env_path(var: &str) -> PathBuf {
    PathBuf::from(std::env::var_os(var).unwrap_or_else(|| panic!("{var} must name a binary")))
}

async fn world(dir: &std::path::Path) -> Runtime {
    let rt = Runtime::open(
        StorageRoot::new(dir.join("home"), StorageRootSource::Env),
        EventBus::default(),
        Arc::new(SystemProbe::real()),
    )
    .unwrap();
    let llama = env_path("GENAI_TEST_LLAMA_SERVER");
    rt.binaries().set_custom(RuntimeKind::Llama, Some(&llama)).await.unwrap();
    let cli = env_path("GENAI_TEST_SD_SERVER").with_file_name("sd-cli");
    rt.binaries().set_custom(RuntimeKind::Diffusion, Some(&cli)).await.unwrap();
    let six = gguf::fixtures::TinyLlama {
        n_embd: 384,
        n_layer: 6,
        n_ff: 1024,
        n_ctx: 2048,
        ..Default::default()
    };
    for (id, seed) in [("a", 1), ("b", 2)] {
        let path = rt.storage().llm_models().join(format!("{id}.gguf"));
        let bytes =
            gguf::fixtures::tiny_llama(gguf::fixtures::TinyLlama { seed, ..six }).to_bytes();
        std::fs::write(&path, &bytes).unwrap();
        let info = ModelInfo::local_file(
            id,
            id,
            ModelKind::Llm,
            &path.display().to_string(),
            bytes.len() as u64,
        );
        rt.models().register(&info).await.unwrap();
    }
    let folder = rt.storage().diffusion_models().join("flux");
    std::fs::create_dir_all(&folder).unwrap();
    let files = gguf::fixtures::tiny_flux2_klein(7).write_to(&folder).unwrap();
    let info = ModelInfo::local_files("flux", "flux", ModelKind::Diffusion, &files);
    rt.models().register(&info).await.unwrap();
    rt.endpoint().configure(EndpointConfig {
        default_port: 0,
        llm_port: Some(0),
        images_port: Some(0),
        ..Default::default()
    });
    rt
}

fn chat(model: &str, max_tokens: u32, stream: bool) -> Value {
    json!({
        "model": model,
        "messages": [{"role": "user", "content": "Tell me a long story about a lighthouse"}],
        "max_tokens": max_tokens,
        "temperature": 0.0,
        "seed": 3,
        "stream": stream,
        "cache_prompt": false,
        "ignore_eos": true,
    })
}

/// One streamed reply: seconds to the first piece of content, seconds from it to the last, and
/// the pieces of content.
async fn stream(client: &reqwest::Client, url: &str, body: &Value) -> (f64, f64, usize) {
    let began = Instant::now();
    let r = client
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut s = r.bytes_stream();
    let (mut first, mut last, mut pieces) = (None, began, 0);
    while let Some(piece) = s.next().await {
        let piece = piece.unwrap();
        let n = String::from_utf8_lossy(&piece).matches("\"content\":\"").count();
        if n > 0 {
            first.get_or_insert_with(Instant::now);
            last = Instant::now();
            pieces += n;
        }
    }
    let first = first.expect("some content");
    ((first - began).as_secs_f64(), (last - first).as_secs_f64(), pieces)
}

async fn post(client: &reqwest::Client, url: &str, body: &Value) -> u16 {
    let r = client
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let _ = r.bytes().await;
    status
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0);
    kb / 1024.0
}

fn main() {
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let dir = std::env::temp_dir().join(format!("genai-bench-endpoint-{}", std::process::id()));
    rt.block_on(async {
        let app = world(&dir).await;
        let base = app.endpoint().open().await.base_url.unwrap();
        // A new connection per request each way (llama-server closes kept-alive ones early).
        let client = runtime::net::forwarding_client().unwrap();
        let through = format!("{base}/chat/completions");

        // 1. Streamed tokens per second, through the endpoint and straight to llama-server.
        // llama-server on one thread: on this 2-core machine, two compute threads would share
        // both cores with the client and the proxy, and the ratio would measure that contention
        // rather than the endpoint (a desktop has cores to spare).
        let one = LlmConfig { model_id: "a".into(), port: Some(0), threads: Some(1), ..Default::default() };
        let port = app.llm().start(one).await.unwrap().port.unwrap();
        assert_eq!(post(&client, &through, &chat("a", 4, false)).await, 200, "a runs");
        let direct = format!("http://127.0.0.1:{port}/v1/chat/completions");
        let body = chat("a", TOKENS, true);
        let (mut rate, mut ttfp) = ([Vec::new(), Vec::new()], [Vec::new(), Vec::new()]);
        for round in 0..ROUNDS * 2 {
            // Alternate which goes first, so neither gains from a warmer machine.
            let which = (round + round / 2) % 2;
            let url = if which == 0 { &through } else { &direct };
            let (first, rest, pieces) = stream(&client, url, &body).await;
            rate[which].push((pieces.saturating_sub(1)) as f64 / rest);
            ttfp[which].push(first * 1000.0);
        }
        let (r_ep, r_direct) = (median(rate[0].clone()), median(rate[1].clone()));
        let (t_ep, t_direct) = (median(ttfp[0].clone()), median(ttfp[1].clone()));
        println!("streamed reply, {TOKENS} tokens, median of {ROUNDS} each (llama-server on 1 thread):");
        println!("  through the endpoint {r_ep:8.1} tokens/s, first piece {t_ep:6.1} ms");
        println!("  straight to llama-server {r_direct:4.1} tokens/s, first piece {t_direct:6.1} ms");
        println!(
            "  ratio {:.3} (target >= 0.98); extra time to the first piece {:+.1} ms",
            r_ep / r_direct,
            t_ep - t_direct
        );

        // 2. A swap to b's first piece against a bare start of b and the same request.
        let short = |m: &str| chat(m, 8, true);
        let (mut swaps, mut bares, mut stops) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..SWAPS {
            assert_eq!(post(&client, &through, &chat("a", 2, false)).await, 200);
            let (first, _, _) = stream(&client, &through, &short("b")).await;
            swaps.push(first);
            app.llm().stop().await.unwrap();
            let began = Instant::now();
            let cfg = LlmConfig { model_id: "b".into(), port: Some(0), auto_restart: true, ..Default::default() };
            let st = app.llm().start(cfg).await.unwrap();
            let started = began.elapsed().as_secs_f64();
            let url = format!("http://127.0.0.1:{}/v1/chat/completions", st.port.unwrap());
            let (first, _, _) = stream(&client, &url, &short("b")).await;
            bares.push(started + first);
            let t = Instant::now();
            app.llm().stop().await.unwrap();
            stops.push(t.elapsed().as_secs_f64());
        }
        let (swap, bare) = (median(swaps), median(bares));
        println!("swap a -> b to b's first piece (median of {SWAPS}): {:.0} ms; bare start of b to its first piece: {:.0} ms", swap * 1000.0, bare * 1000.0);
        println!(
            "  ratio {:.3} (target <= 1.10); stopping the old server (part of a swap, not of a bare start) takes {:.0} ms",
            swap / bare,
            median(stops) * 1000.0
        );

        // 3. 64 short chats and 4 images at once.
        assert_eq!(post(&client, &through, &chat("a", 2, false)).await, 200);
        let before = rss_mib();
        let began = Instant::now();
        let chats = (0..64).map(|i| {
            let (client, url) = (client.clone(), through.clone());
            tokio::spawn(async move {
                let t = Instant::now();
                let body = json!({"model": "a", "messages": [{"role": "user", "content": format!("Hi {i}")}], "max_tokens": 8});
                (post(&client, &url, &body).await, t.elapsed().as_secs_f64())
            })
        });
        let chats: Vec<_> = chats.collect();
        let images: Vec<_> = (0..4)
            .map(|i| {
                let (client, url) = (client.clone(), format!("{base}/images/generations"));
                tokio::spawn(async move {
                    let t = Instant::now();
                    let body = json!({"model": "flux", "prompt": "a lighthouse", "size": "64x64", "steps": 2, "seed": i});
                    (post(&client, &url, &body).await, t.elapsed().as_secs_f64())
                })
            })
            .collect();
        let mut chat_times = Vec::new();
        let mut ok = 0;
        for c in chats {
            let (status, t) = c.await.unwrap();
            ok += usize::from(status == 200);
            chat_times.push(t * 1000.0);
        }
        let mut image_times = Vec::new();
        let mut images_ok = 0;
        for i in images {
            let (status, t) = i.await.unwrap();
            images_ok += usize::from(status == 200);
            image_times.push(t);
        }
        let all = began.elapsed().as_secs_f64();
        chat_times.sort_by(|a, b| a.total_cmp(b));
        let p = |q: f64| chat_times[((chat_times.len() - 1) as f64 * q).round() as usize];
        tokio::time::sleep(Duration::from_secs(1)).await;
        let after = rss_mib();
        println!("64 chats + 4 images at once: {ok}/64 chats and {images_ok}/4 images answered in {all:.1} s");
        println!("  chat latency p50 {:.0} ms, p99 {:.0} ms; images {:.1}-{:.1} s", p(0.5), p(0.99),
            image_times.iter().cloned().fold(f64::MAX, f64::min), image_times.iter().cloned().fold(0.0, f64::max));
        println!("  this process's memory: {before:.1} MiB before, {after:.1} MiB after");
        let log = app.endpoint().status().requests;
        println!("  request log: {} lines, {} not 200", log.len(), log.iter().filter(|r| r.status != 200).count());
        let _ = app.llm().stop().await;
        let _ = app.diffusion().stop().await;
        app.endpoint().close().await;
    });
    let _ = std::fs::remove_dir_all(&dir);
}
