//! Fit badges before download (#17): a repo of 20 GGUF entries (vocabularies of 32k to 262k
//! tokens, as real models have: headers of 0.5 to 6 MB) on the loopback fixture with 20 ms added
//! to every request, a distant server's round trip:
//!   1. opening the repo until every badge can be shown (the tree, then every header in a few
//!      `Range` requests, 4 entries at a time), against the same headers read one entry after
//!      another, alternated, 3 rounds; target: ≤ 1.5 s;
//!   2. bytes fetched per entry past its header (target ≤ 64 KiB) and requests per entry;
//!   3. opening it again (headers kept: the tree only), and every badge weighed again for
//!      another context (the slider), no request.
//!
//! cargo bench -p runtime --bench fit_badges

use gguf::fixtures::{zero_model, ZeroArch, ZeroModel};
use runtime::download::{DownloadConfig, Downloader};
use runtime::llama::fit::{FitAsk, FitMachine};
use runtime::models::catalog::{badges, Catalog};
use runtime::models::hf::{HfEnv, HfSettings};
use std::sync::Arc;
use std::time::{Duration, Instant};
use testkit::http::{FixtureServer, Route};

const REPO: &str = "acme/Bench-GGUF";
const LATENCY: Duration = Duration::from_millis(20);
const ROUNDS: usize = 3;
const QUANTS: [&str; 20] = [
    "Q2_K", "Q3_K_S", "Q3_K_M", "Q3_K_L", "Q4_0", "Q4_1", "Q4_K_S", "Q4_K_M", "Q5_0", "Q5_1",
    "Q5_K_S", "Q5_K_M", "Q6_K", "Q8_0", "IQ2_XXS", "IQ2_XS", "IQ3_XXS", "IQ3_S", "IQ4_XS",
    "IQ4_NL",
];
const VOCABULARIES: [u64; 4] = [32_000, 128_256, 151_936, 262_144];

/// Entry `i`: its file name, its first bytes (header and 1 MiB of weights), its header length.
fn entry(i: usize) -> (String, Vec<u8>, u64) {
    let w = zero_model(ZeroModel {
        arch: ZeroArch::Llama,
        n_embd: 256 + 64 * i as u64,
        n_layer: 8,
        n_head: 4,
        n_head_kv: 2,
        head_dim: 64,
        ..ZeroModel::big_vocabulary(VOCABULARIES[i % 4])
    });
    let (mut bytes, _) = w.header_bytes();
    let header = gguf::read_header(&bytes[..], gguf::Limits::default()).unwrap().header_bytes;
    bytes.resize(bytes.len() + (1 << 20), 0);
    (format!("Bench-{}.gguf", QUANTS[i]), bytes, header)
}

fn main() {
    let entries: Vec<(String, Vec<u8>, u64)> = (0..QUANTS.len()).map(entry).collect();
    let tree: Vec<String> = entries
        .iter()
        .map(|(name, bytes, _)| {
            format!(r#"{{"type": "file", "path": "{name}", "size": {}}}"#, bytes.len() * 100)
        })
        .collect();
    let tree = format!("[{}]", tree.join(","));
    // The server runs on a thread and runtime of its own, so it serves alike for both readers.
    let (tx, rx) = std::sync::mpsc::channel();
    let served = entries.iter().map(|(n, b, _)| (n.clone(), b.clone())).collect::<Vec<_>>();
    std::thread::spawn(move || {
        let srt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        srt.block_on(async {
            let s = Arc::new(FixtureServer::start().await);
            for (name, bytes) in served {
                s.add(&format!("/{REPO}/resolve/main/{name}"), Route::bytes(bytes));
            }
            s.add(
                &format!("/api/models/{REPO}/tree/main?recursive=true"),
                Route::bytes(tree.into_bytes()),
            );
            s.set_latency(LATENCY);
            tx.send(s.clone()).unwrap();
            std::future::pending::<()>().await;
        });
    });
    let server = rx.recv().unwrap();
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let dir = std::env::temp_dir().join(format!("genai-bench-fit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let env = HfEnv { endpoint: Some(server.url("")), token: None };
    let hf = HfSettings::open(&dir, env);
    let url = |name: &str| server.url(&format!("/{REPO}/resolve/main/{name}"));
    let sent = || -> Vec<u64> {
        entries.iter().map(|(n, _, _)| server.sent(&format!("/{REPO}/resolve/main/{n}"))).collect()
    };
    let gets = || -> usize {
        entries
            .iter()
            .map(|(n, _, _)| server.gets(&format!("/{REPO}/resolve/main/{n}")).len())
            .sum()
    };

    let (mut ours, mut one_by_one) = (Vec::new(), Vec::new());
    let mut past = Vec::new();
    let mut requests = 0;
    for _ in 0..ROUNDS {
        let before = sent();
        let asked = gets();
        let catalog = Catalog::new(hf.clone(), DownloadConfig::default()).unwrap();
        let t = Instant::now();
        let view = rt.block_on(catalog.open(REPO, "main")).unwrap();
        ours.push(t.elapsed());
        assert_eq!(view.entries.len(), 20);
        requests = gets() - asked;
        past = sent()
            .iter()
            .zip(&before)
            .zip(&entries)
            .map(|((after, before), (_, _, header))| after - before - header)
            .collect();

        let dl = Downloader::new(DownloadConfig::default()).unwrap();
        let t = Instant::now();
        rt.block_on(async {
            for (name, _, _) in &entries {
                dl.read_gguf_header(&url(name), None).await.unwrap();
            }
        });
        one_by_one.push(t.elapsed());
    }
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let (a, b) = (median(&mut ours), median(&mut one_by_one));
    let headers: Vec<u64> = entries.iter().map(|(_, _, h)| *h).collect();
    println!(
        "fit_badges: 20 entries, headers {:.1}-{:.1} MB, {} ms added per request",
        *headers.iter().min().unwrap() as f64 / 1e6,
        *headers.iter().max().unwrap() as f64 / 1e6,
        LATENCY.as_millis()
    );
    println!(
        "  open to every badge: {:.2} s (target <= 1.5 s); one entry after another: {:.2} s; ratio {:.2}",
        a.as_secs_f64(),
        b.as_secs_f64(),
        a.as_secs_f64() / b.as_secs_f64()
    );
    println!(
        "  fetched past each header: max {} B, mean {} B (target <= 65536); {:.1} requests an entry",
        past.iter().max().unwrap(),
        past.iter().sum::<u64>() / past.len() as u64,
        requests as f64 / 20.0
    );

    let catalog = Catalog::new(hf, DownloadConfig::default()).unwrap();
    let view = rt.block_on(catalog.open(REPO, "main")).unwrap();
    let asked = gets();
    let t = Instant::now();
    rt.block_on(catalog.open(REPO, "main")).unwrap();
    let again = t.elapsed();
    assert_eq!(gets(), asked, "opening again read no header");
    let machine = FitMachine { ram_available: 32 << 30, gpus_free: vec![8 << 30], llm_holds: None };
    let t = Instant::now();
    let n = 200;
    for k in 0..n {
        let ask = FitAsk { context: 2048 << (k % 8), kv_type: "f16".into() };
        std::hint::black_box(badges(&view, &machine, &ask));
    }
    println!(
        "  opening again (headers kept): {:.0} ms; every badge weighed again for another context: {:.2} ms",
        again.as_secs_f64() * 1e3,
        t.elapsed().as_secs_f64() * 1e3 / n as f64
    );
    let _ = std::fs::remove_dir_all(&dir);
}
