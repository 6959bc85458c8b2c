//! llama.cpp's RPC workers for real (#18): two `ggml-rpc-server`s on loopback (CPU backend,
//! built beside llama-server by `scripts/build-llama-server`) answer the app's probe with their
//! protocol version and devices, and the real llama-server splits a generated model across
//! them (`--rpc`): its load log shows a model buffer on each worker, and a completion comes
//! back. `scripts/test` runs these with `--ignored`.

use gguf::fixtures::{tiny_llama, TinyLlama};
use ipc::rpc::WorkerState;
use runtime::rpc::probe::{probe, PROBE_LIMIT};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};
use testkit::TempDir;
use tokio::process::{Child, Command};

fn real_llama_server() -> PathBuf {
    PathBuf::from(
        std::env::var_os("GENAI_TEST_LLAMA_SERVER").expect(
            "GENAI_TEST_LLAMA_SERVER must name a llama-server (scripts/build-llama-server)",
        ),
    )
}

/// The worker built beside llama-server.
fn real_worker() -> PathBuf {
    let w = real_llama_server().with_file_name("ggml-rpc-server");
    assert!(w.is_file(), "{} is missing: rebuild with scripts/build-llama-server", w.display());
    w
}

/// A worker on a free loopback port with its tensor cache in `cache`; its address.
fn start_worker(cache: &std::path::Path, log: &std::path::Path) -> (Child, String) {
    let port = runtime::net::free_port().unwrap();
    let log = std::fs::File::create(log).unwrap();
    let child = Command::new(real_worker())
        .args(["-H", "127.0.0.1", "-p", &port.to_string(), "-t", "1", "-c"])
        .env("LLAMA_CACHE", cache)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    (child, format!("127.0.0.1:{port}"))
}

/// Four greedy tokens from the llama-server on `port`: how many came.
async fn complete(port: u16) -> u64 {
    let answer: serde_json::Value = runtime::net::local_client()
        .unwrap()
        .post(format!("http://127.0.0.1:{port}/completion"))
        .json(&serde_json::json!({"prompt": "Hello", "n_predict": 4, "temperature": 0, "seed": 1}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(answer["content"].is_string(), "{answer}");
    answer["tokens_predicted"].as_u64().unwrap_or(0)
}

/// A storage root under a new temp folder, with the real llama-server installed as a custom
/// build (its worker beside it).
async fn home(
    name: &str,
) -> (TempDir, runtime::StorageLayout, runtime::EventBus, runtime::binaries::Binaries) {
    use runtime::binaries::{Binaries, BinariesConfig};
    use runtime::{EventBus, StorageLayout, StorageRoot};
    let dir = TempDir::new(name);
    let root = StorageRoot::new(dir.join("home"), ipc::StorageRootSource::Env);
    let storage = StorageLayout::create(root).unwrap();
    let events = EventBus::default();
    let config = BinariesConfig::from_env().unwrap();
    let binaries = Binaries::new(storage.clone(), events.clone(), config).unwrap();
    let llama = ipc::runtimes::RuntimeKind::Llama;
    binaries.set_custom(llama, Some(&real_llama_server())).await.unwrap();
    (dir, storage, events, binaries)
}

/// Probes until the worker is ready (it prints its banner before it listens).
async fn ready(address: &str) -> WorkerState {
    let ours = ipc::rpc::RpcVersion { major: 7, minor: 0, patch: 0 };
    let until = Instant::now() + Duration::from_secs(15);
    loop {
        let p = probe(address, ours, PROBE_LIMIT).await;
        if matches!(p.state, WorkerState::Ready { .. }) || Instant::now() > until {
            return p.state;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the real llama-server and ggml-rpc-server; scripts/test builds them and runs this"]
async fn two_loopback_workers_hold_a_split_model_and_it_answers() {
    let dir = TempDir::new("real-rpc");
    let (mut w1, a1) = start_worker(&dir.join("cache1"), &dir.join("w1.log"));
    let (mut w2, a2) = start_worker(&dir.join("cache2"), &dir.join("w2.log"));
    for (a, log) in [(&a1, "w1.log"), (&a2, "w2.log")] {
        let WorkerState::Ready { version, devices } = ready(a).await else {
            panic!("{a} is not ready: {}", std::fs::read_to_string(dir.join(log)).unwrap())
        };
        // This build's protocol, and its one CPU device with the machine's memory.
        assert_eq!(version.major, 7, "{version}");
        assert_eq!(devices.len(), 1, "{devices:?}");
        assert!(devices[0].total_bytes > 1 << 30, "{devices:?}");
        assert!(devices[0].free_bytes <= devices[0].total_bytes, "{devices:?}");
    }

    // A worker serves one client at a time: held by one, it is Busy to a probe, and the probe's
    // late HELLO, answered once the first client leaves, does not kill it (its answer to a
    // vanished client would end it with SIGPIPE).
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut holder = tokio::net::TcpStream::connect(&a1).await.unwrap();
        holder.write_all(&runtime::rpc::probe::request(14, &[0; 24])).await.unwrap();
        let mut answer = [0u8; 36];
        holder.read_exact(&mut answer).await.unwrap();
        let ours = ipc::rpc::RpcVersion { major: 7, minor: 0, patch: 0 };
        let busy = probe(&a1, ours, Duration::from_millis(300)).await;
        assert_eq!(busy.state, WorkerState::Busy);
        holder.shutdown().await.unwrap();
        drop(holder);
        tokio::time::sleep(Duration::from_millis(800)).await;
        assert!(w1.try_wait().unwrap().is_none(), "the worker died after the busy probe");
        assert!(matches!(ready(&a1).await, WorkerState::Ready { .. }));
    }

    let model = dir.join("tiny.gguf");
    std::fs::write(&model, tiny_llama(TinyLlama { n_layer: 4, ..Default::default() }).to_bytes())
        .unwrap();
    let port = runtime::net::free_port().unwrap();
    let log_path = dir.join("llama-server.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let rpc = format!("{a1},{a2}");
    let mut server = Command::new(real_llama_server())
        .args(["-m", model.to_str().unwrap(), "--rpc", &rpc, "-ngl", "99", "-fit", "off"])
        .args(["-c", "512", "--host", "127.0.0.1", "--port", &port.to_string(), "-lv", "4"])
        .args(["--threads", "1", "-np", "1"])
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let http = runtime::net::local_client().unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let ok = http.get(format!("{base}/health")).send().await.is_ok_and(|r| r.status() == 200);
        if ok {
            break;
        }
        assert!(
            Instant::now() < until && server.try_wait().unwrap().is_none(),
            "llama-server did not come up: {}",
            std::fs::read_to_string(&log_path).unwrap()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(complete(port).await > 0);

    // The load log names a model buffer on each worker.
    let text = std::fs::read_to_string(&log_path).unwrap();
    for a in [&a1, &a2] {
        let line = format!("RPC0[{a}] model buffer size");
        assert!(text.contains(&line), "no '{line}' in:\n{text}");
    }
    server.kill().await.unwrap();
    w1.kill().await.unwrap();
    w2.kill().await.unwrap();
}

/// Through the app: the LLM start probes the workers it is given, passes the ready ones to
/// llama-server (`--rpc`), offloads every layer to the memory they lend, and the measured
/// buffers name each worker; a worker on a closed port or of another protocol version stops
/// the start before anything is launched, saying which and why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the real llama-server and ggml-rpc-server; scripts/test builds them and runs this"]
async fn the_llm_starts_split_over_two_workers_and_refuses_one_it_cannot_use() {
    use ipc::event::ServerState;
    use ipc::llm::LlmConfig;
    use ipc::models::{ModelInfo, ModelKind};
    use ipc::ErrorCode;
    use runtime::llama::{LlamaServer, ServerConfig};
    use runtime::models::ModelStore;

    let (dir, storage, events, binaries) = home("real-rpc-app").await;
    let models = ModelStore::new(storage.clone());
    let bytes = tiny_llama(TinyLlama { n_layer: 4, ..Default::default() }).to_bytes();
    let path = storage.llm_models().join("tiny.gguf");
    std::fs::write(&path, &bytes).unwrap();
    let info = ModelInfo::local_file(
        "tiny",
        "tiny",
        ModelKind::Llm,
        &path.display().to_string(),
        bytes.len() as u64,
    );
    models.register(&info).await.unwrap();
    let mut rx = events.subscribe();
    let llm = LlamaServer::new(
        storage,
        events,
        binaries,
        models,
        std::sync::Arc::new(runtime::system::SystemProbe::real()),
        ServerConfig { default_port: 0, probe_ports: Vec::new(), ..Default::default() },
    );
    let (mut w1, a1) = start_worker(&dir.join("cache1"), &dir.join("w1.log"));
    let (mut w2, a2) = start_worker(&dir.join("cache2"), &dir.join("w2.log"));
    for a in [&a1, &a2] {
        assert!(matches!(ready(a).await, WorkerState::Ready { .. }), "{a}");
    }
    let cfg = |workers: Vec<String>| LlmConfig {
        model_id: "tiny".into(),
        threads: Some(1),
        auto_restart: true,
        rpc_workers: workers,
        ..Default::default()
    };

    let st = llm.start(cfg(vec![a1.clone(), a2.clone()])).await.unwrap();
    assert_eq!(st.state, ServerState::Running);
    let s = st.settings.clone().unwrap();
    assert_eq!(s.rpc, [a1.clone(), a2.clone()]);
    assert_eq!(s.gpu_layers, s.total_layers, "{}", s.explanation);
    assert!(s.explanation.contains("2 RPC workers"), "{}", s.explanation);
    assert_eq!(st.workers.len(), 2);
    assert!(st.workers.iter().all(|w| matches!(w.state, WorkerState::Ready { .. })));
    // Each worker holds part of the model, as the load log measured it, and the blocks went
    // where the app planned them: each block's KV cache lives with it, so the KV buffers are
    // in the plan's proportion (the output layer, the last of the plan, has none).
    let st = llm.status();
    assert_eq!(s.split.len(), 2, "{:?}", s.split);
    let kv = |a: &str| {
        let device = format!("RPC0[{a}]");
        let held = st.measured.iter().find(|d| d.device == device);
        assert!(held.is_some_and(|d| d.model_bytes > 0), "{device}: {:?}", st.measured);
        held.map_or(0, |d| d.kv_bytes)
    };
    let blocks: Vec<u64> = (s.split.iter().enumerate())
        .map(|(i, l)| u64::from(l.layers) - u64::from(i + 1 == s.split.len()))
        .collect();
    assert_eq!(s.split[0].worker.as_deref(), Some(a1.as_str()));
    assert_eq!(s.split[1].worker.as_deref(), Some(a2.as_str()));
    let (kv1, kv2) = (kv(&a1), kv(&a2));
    assert!(kv1 > 0 && kv2 > 0, "{:?}", st.measured);
    // The log gives sizes to 0.01 MiB: blocks counted from a block's share of the cache.
    let per_block = (kv1 + kv2) as f64 / (blocks[0] + blocks[1]) as f64;
    let measured = [kv1, kv2].map(|k| (k as f64 / per_block).round() as u64);
    assert_eq!(measured.to_vec(), blocks, "plan {:?}, measured {:?}", s.split, st.measured);
    // What the app expected each worker to hold, against its measured buffers: weights (the
    // last worker's with the output layer, not the token embedding) and KV cache within 10 %;
    // none of it counted as this machine's VRAM.
    for (i, a) in [&a1, &a2].into_iter().enumerate() {
        let planned = s.estimate.iter().find(|d| d.device == format!("RPC{i}"));
        let planned = planned.unwrap_or_else(|| panic!("no RPC{i} in {:?}", s.estimate));
        let held = st.measured.iter().find(|d| d.device == format!("RPC0[{a}]")).unwrap();
        for (what, want, got) in [
            ("weights", planned.model_bytes, held.model_bytes),
            ("KV", planned.kv_bytes, held.kv_bytes),
        ] {
            let off = (want as f64 - got as f64).abs() / got as f64;
            assert!(off <= 0.10, "{a}: {what} expected {want}, measured {got}");
        }
    }
    assert_eq!(s.expected_vram_bytes, 0, "{}", s.explanation);
    assert!(s.explanation.contains("on the RPC workers"), "{}", s.explanation);
    assert!(!s.explanation.contains("VRAM"), "{}", s.explanation);
    assert!(complete(st.port.unwrap()).await > 0);

    // The second worker killed mid-reply: llama-server aborts; the crash names the worker, and
    // the restart goes on with the first alone, which holds the model.
    let port = st.port.unwrap();
    let long = tokio::spawn(async move {
        runtime::net::local_client()
            .unwrap()
            .post(format!("http://127.0.0.1:{port}/completion"))
            .json(&serde_json::json!({"prompt": "Hello", "n_predict": 100000, "ignore_eos": true}))
            .send()
            .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    w2.kill().await.unwrap();
    // Should the long reply have ended before the kill, the next one needs the dead worker.
    let again = tokio::spawn(async move {
        let _ = runtime::net::local_client()
            .unwrap()
            .post(format!("http://127.0.0.1:{port}/completion"))
            .json(&serde_json::json!({"prompt": "Hi", "n_predict": 4}))
            .send()
            .await;
    });
    let crash = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if let Ok(ipc::AppEvent::ServerCrashed { reason, .. }) = rx.recv().await {
                return reason;
            }
        }
    })
    .await
    .expect("a crash event");
    assert!(crash.contains(&format!("RPC worker {a2} no longer answers")), "{crash}");
    let _ = long.await;
    let _ = again.await;
    let until = Instant::now() + Duration::from_secs(60);
    while !(llm.status().state == ServerState::Running && llm.status().healthy) {
        assert!(Instant::now() < until, "no restart: {:?}", llm.status());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let st = llm.status();
    assert_eq!(st.settings.as_ref().unwrap().rpc, std::slice::from_ref(&a1));
    assert!(st.crash.as_ref().is_some_and(|c| c.reason.contains(&a2)), "{:?}", st.crash);
    assert_eq!(st.restarts, 1);
    llm.stop().await.unwrap();

    // A worker on a closed port: refused at once, nothing launched.
    let closed = format!("127.0.0.1:{}", runtime::net::free_port().unwrap());
    let started = Instant::now();
    let e = llm.start(cfg(vec![a1.clone(), closed.clone()])).await.unwrap_err().to_ipc();
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    assert_eq!(e.code, ErrorCode::ServerStartFailed, "{e:?}");
    assert!(e.message.contains(&format!("{closed} is unreachable")), "{}", e.message);
    assert!(!e.message.contains(&a1), "the ready worker is not blamed: {}", e.message);
    assert!(e.remedy.contains("without it"), "{}", e.remedy);
    assert_eq!(llm.status().pid, None);

    // A worker of another protocol version: named with both versions, nothing launched.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let old = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut s, _)) = listener.accept().await {
            let mut hello = [0u8; 33];
            if s.read_exact(&mut hello).await.is_ok() {
                let mut answer = 28u64.to_le_bytes().to_vec();
                answer.extend_from_slice(&[6, 1, 0, 0]);
                answer.extend_from_slice(&[0; 24]);
                let _ = s.write_all(&answer).await;
            }
        }
    });
    let e = llm.start(cfg(vec![old.clone()])).await.unwrap_err().to_ipc();
    assert!(
        e.message.contains(&format!("{old} speaks RPC protocol 6.1.0, this llama.cpp build 7.")),
        "{}",
        e.message
    );
    assert_eq!(llm.status().pid, None);
    w1.kill().await.unwrap();
}

/// This computer as a worker, from the app: the installed build's worker on 127.0.0.1 (another
/// address only once confirmed), its tensor cache in the app's storage trimmed oldest-first under
/// the cap before it starts, ready once it answers its own probe; a taken port is refused; Stop
/// ends it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the real llama-server and ggml-rpc-server; scripts/test builds them and runs this"]
async fn this_computer_is_lent_as_a_worker_with_its_cache_under_the_cap() {
    use ipc::rpc::ShareArgs;
    use runtime::rpc::local::LocalWorker;

    let (_dir, storage, events, binaries) = home("real-rpc-share").await;
    let worker = LocalWorker::new(storage, events, binaries);
    // A cache left over 1 GiB (sparse files, oldest first): two must go.
    let cache = worker.cache_root().join("rpc");
    std::fs::create_dir_all(&cache).unwrap();
    let now = std::time::SystemTime::now();
    for (i, name) in ["000000000000000a", "000000000000000b", "000000000000000c"].iter().enumerate()
    {
        let f = std::fs::File::create(cache.join(name)).unwrap();
        f.set_len(600 << 20).unwrap();
        f.set_modified(now - Duration::from_secs(300 - 100 * i as u64)).unwrap();
    }

    // Another address needs the user's confirmation.
    let exposed = ShareArgs { host: "0.0.0.0".into(), ..Default::default() };
    let e = worker.start(exposed).await.unwrap_err().to_ipc();
    assert!(e.message.contains("no authentication"), "{e:?}");

    // A device this computer does not have is refused before anything starts, naming those
    // it can lend (this build: the CPU alone).
    assert!(worker.status().lendable.iter().any(|d| d.name == "CPU"));
    let gpu = ShareArgs { devices: vec!["CUDA0".into()], ..Default::default() };
    let e = worker.start(gpu).await.unwrap_err().to_ipc();
    assert!(e.message.contains("no device CUDA0") && e.message.contains("CPU"), "{e:?}");

    // A port another program holds is refused, and says so.
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = ShareArgs { port: Some(held.local_addr().unwrap().port()), ..Default::default() };
    let e = worker.start(taken).await.unwrap_err().to_ipc();
    assert_eq!(e.code, ipc::ErrorCode::PortInUse, "{e:?}");
    assert!(!worker.status().running);

    let port = runtime::net::free_port().unwrap();
    // The CPU chosen by name, as the window's device choice sends it (`-d CPU`).
    let args = ShareArgs {
        port: Some(port),
        cache_cap_gib: Some(1),
        devices: vec!["CPU".into()],
        ..Default::default()
    };
    let st = worker.start(args.clone()).await.unwrap();
    assert!(st.running, "{st:?}");
    assert_eq!(st.address.as_deref(), Some(format!("127.0.0.1:{port}").as_str()));
    assert_eq!(st.trimmed, (2, 1200 << 20));
    let left: Vec<String> = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, ["000000000000000c"]);
    assert!(matches!(st.probe.as_ref().map(|p| &p.state), Some(WorkerState::Ready { .. })));
    // Other machines see it ready.
    assert!(matches!(ready(&format!("127.0.0.1:{port}")).await, WorkerState::Ready { .. }));
    assert!(worker.logs().iter().any(|l| l.message.contains("lending this computer")));
    assert!(worker.logs().iter().any(|l| l.message.contains(" -d CPU")));

    let pid = st.pid.unwrap();
    let st = worker.stop().await;
    assert!(!st.running && st.pid.is_none(), "{st:?}");
    assert!(!runtime::process::is_running(pid), "the worker was left running");
}
