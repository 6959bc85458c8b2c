//! Several machines for one model (#18), on loopback: tokens per second with a model split over
//! two llama.cpp RPC workers against the same model all on this computer, and the load time
//! with the workers' tensor cache warm against cold: straight over loopback (where sending is
//! nearly free), and through a proxy that passes 1 Gbit/s, as a wired LAN would.
//!
//! Each worker runs one thread held to a core of its own (the split server beside the first), so
//! each stands for a machine of one core. The model all local is timed twice: on one core with
//! one thread (one of those machines alone: the ratio is what the split itself costs), and on
//! both cores with two threads (this whole computer: the split runs its halves one after the
//! other, one core busy at a time, so this ratio also counts the core left idle; on one 2-core
//! computer, workers of two threads each spin against each other: 0.41 was measured that way).
//! Each figure is the median of three runs, side by side in one run of this program.
//!
//! GENAI_TEST_LLAMA_SERVER=$(scripts/build-llama-server) cargo bench -p runtime --bench rpc_split
//!
//! The model: a llama of width 1024, 8 blocks with a feed-forward of 8192 (its 16 MiB tensors
//! are over the 10 MiB the worker caches), about 600 MB of small pseudo-random f16 weights: the
//! worker's cache is keyed by the data's hash, so zero weights (every tensor of one size alike)
//! would be found in a "cold" cache after the first one and hide what the cache saves.

use gguf::fixtures::{zero_model, ZeroArch, ZeroModel};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// A command for `exe`, held to one `core` (through `taskset`) when one is given and this
/// computer has more than one.
fn on_core(exe: &Path, core: Option<usize>) -> Command {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    match core.filter(|_| cores > 1) {
        Some(c) => {
            let mut cmd = Command::new("taskset");
            cmd.args(["-c", &c.to_string()]).arg(exe);
            cmd
        }
        None => Command::new(exe),
    }
}

fn worker(exe: &Path, cache: &Path, core: usize) -> (Child, String) {
    let port = runtime::net::free_port().unwrap();
    let child = on_core(exe, Some(core))
        .args(["-H", "127.0.0.1", "-p", &port.to_string(), "-t", "1", "-c"])
        .env("LLAMA_CACHE", cache)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    (child, format!("127.0.0.1:{port}"))
}

/// Starts llama-server on `model` (over `rpc` when given, on `core` when given); answers it and
/// the seconds from spawn to healthy.
async fn serve(
    llama: &Path,
    model: &Path,
    rpc: Option<&str>,
    threads: u32,
    core: Option<usize>,
) -> (Child, u16, f64) {
    let port = runtime::net::free_port().unwrap();
    let mut cmd = on_core(llama, core);
    cmd.args(["-m", model.to_str().unwrap(), "-c", "512", "-np", "1", "-fit", "off"])
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--threads", &threads.to_string()]);
    match rpc {
        Some(r) => cmd.args(["--rpc", r, "-ngl", "99"]),
        None => cmd.args(["-ngl", "0"]),
    };
    let started = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let http = runtime::net::local_client().unwrap();
    loop {
        let ok = http
            .get(format!("http://127.0.0.1:{port}/health"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200);
        if ok {
            return (child, port, started.elapsed().as_secs_f64());
        }
        assert!(child.try_wait().unwrap().is_none(), "llama-server exited while loading");
        assert!(started.elapsed() < Duration::from_secs(300), "no load in 5 minutes");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Tokens per second generating 48 tokens, as llama-server times them.
async fn speed(port: u16) -> f64 {
    let answer: serde_json::Value = runtime::net::local_client()
        .unwrap()
        .post(format!("http://127.0.0.1:{port}/completion"))
        .json(&serde_json::json!({"prompt": "Hello", "n_predict": 48, "ignore_eos": true, "temperature": 0}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    answer["timings"]["predicted_per_second"].as_f64().expect("timings")
}

/// Writes small pseudo-random f16 values (finite, under 1 in size; every tensor different) over
/// everything after the header.
fn fill_weights(path: &Path, header: u64) {
    use std::io::{Seek, SeekFrom, Write};
    let mut f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    let len = f.metadata().unwrap().len();
    f.seek(SeekFrom::Start(header)).unwrap();
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut buf = vec![0u8; 1 << 20];
    let mut left = len - header;
    while left > 0 {
        for pair in buf.chunks_exact_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            // Four f16s with the exponent held low (0x33ff: magnitude under 1, never NaN).
            let v = state & 0x33ff_33ff_33ff_33ff;
            pair.copy_from_slice(&v.to_le_bytes());
        }
        let n = left.min(buf.len() as u64) as usize;
        f.write_all(&buf[..n]).unwrap();
        left -= n as u64;
    }
}

/// Bytes a second through [`proxy`]: 1 Gbit/s.
const LAN: f64 = 125e6;

/// A TCP proxy on a free loopback port to `to`, passing at most [`LAN`] bytes a second each way
/// (no added latency); its address.
async fn proxy(to: String) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let at = listener.local_addr().unwrap().to_string();
    async fn pipe(
        mut from: tokio::net::tcp::OwnedReadHalf,
        mut to: tokio::net::tcp::OwnedWriteHalf,
    ) {
        let mut buf = vec![0u8; 256 << 10];
        let started = Instant::now();
        let mut sent = 0f64;
        while let Ok(n) = from.read(&mut buf).await {
            if n == 0 || to.write_all(&buf[..n]).await.is_err() {
                break;
            }
            sent += n as f64;
            let due = Duration::from_secs_f64(sent / LAN);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                tokio::time::sleep(wait).await;
            }
        }
        let _ = to.shutdown().await;
    }
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = tokio::net::TcpStream::connect(&to).await else { continue };
            let _ = (client.set_nodelay(true), server.set_nodelay(true));
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            tokio::spawn(pipe(cr, sw));
            tokio::spawn(pipe(sr, cw));
        }
    });
    at
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let Some(llama) = std::env::var_os("GENAI_TEST_LLAMA_SERVER").map(PathBuf::from) else {
        println!("skipped: set GENAI_TEST_LLAMA_SERVER=$(scripts/build-llama-server)");
        return;
    };
    let exe = llama.with_file_name("ggml-rpc-server");
    let dir = testkit::TempDir::new("bench-rpc");
    let model = dir.join("split.gguf");
    let w = zero_model(ZeroModel {
        arch: ZeroArch::Llama,
        n_vocab: 32000,
        n_embd: 1024,
        n_layer: 8,
        n_head: 8,
        n_head_kv: 8,
        head_dim: 128,
        n_ff: 8192,
        n_ctx: 2048,
    });
    w.write_sparse(&model).unwrap();
    fill_weights(&model, w.header_bytes().0.len() as u64);
    println!("model: {:.0} MB, 8 blocks", w.file_len() as f64 / 1e6);

    let (mut local, mut local_one, mut split) = (Vec::new(), Vec::new(), Vec::new());
    // (cold, warm) load seconds: straight, and through the 1 Gbit/s proxy.
    let (mut direct, mut lan) = (Vec::new(), Vec::new());
    for run in 0..3 {
        // All on this computer.
        let (mut s, port, _) = serve(&llama, &model, None, 2, None).await;
        local.push(speed(port).await);
        s.kill().await.unwrap();
        let _ = s.wait().await;
        // All on one core: one of the two "machines" below, alone.
        let (mut s, port, _) = serve(&llama, &model, None, 1, Some(0)).await;
        local_one.push(speed(port).await);
        s.kill().await.unwrap();
        let _ = s.wait().await;
        for through_lan in [false, true] {
            // Two workers with fresh caches: a cold load, then a warm one.
            let tag = if through_lan { "lan" } else { "direct" };
            // One core each, the server beside the first: two one-core "machines".
            let (mut w1, a1) = worker(&exe, &dir.join(format!("c{run}{tag}1")), 0);
            let (mut w2, a2) = worker(&exe, &dir.join(format!("c{run}{tag}2")), 1);
            for a in [&a1, &a2] {
                let until = Instant::now() + Duration::from_secs(15);
                while runtime::rpc::probe::version(a, Duration::from_millis(500)).await.is_none() {
                    assert!(Instant::now() < until, "worker {a} did not answer");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            let rpc = if through_lan {
                format!("{},{}", proxy(a1).await, proxy(a2).await)
            } else {
                format!("{a1},{a2}")
            };
            let (mut s, port, cold) = serve(&llama, &model, Some(&rpc), 1, Some(0)).await;
            if !through_lan {
                split.push(speed(port).await);
            }
            s.kill().await.unwrap();
            let _ = s.wait().await;
            let (mut s, _, warm) = serve(&llama, &model, Some(&rpc), 1, Some(0)).await;
            s.kill().await.unwrap();
            let _ = s.wait().await;
            w1.kill().await.unwrap();
            w2.kill().await.unwrap();
            if through_lan {
                lan.push((cold, warm))
            } else {
                direct.push((cold, warm))
            }
        }
        println!(
            "run {run}: local {:.1} tok/s (one core {:.1}), split {:.1} tok/s; load cold/warm: loopback {:.2}/{:.2} s, 1 Gbit/s {:.2}/{:.2} s",
            local[run], local_one[run], split[run], direct[run].0, direct[run].1, lan[run].0, lan[run].1
        );
    }
    let (l, l1, s) = (median(local), median(local_one), median(split));
    println!(
        "tokens/s: split over two loopback workers {s:.1} / all local on both cores {l:.1} = {:.2}",
        s / l
    );
    println!(
        "tokens/s, a core standing for a machine: split over two one-core workers {s:.1} / all \
         local on one core {l1:.1} = {:.2}",
        s / l1
    );
    for (name, loads) in [("loopback", &direct), ("1 Gbit/s", &lan)] {
        let c = median(loads.iter().map(|x| x.0).collect());
        let w = median(loads.iter().map(|x| x.1).collect());
        println!("load over {name}: warm tensor cache {w:.2} s / cold {c:.2} s = {:.2}", w / c);
    }
}
