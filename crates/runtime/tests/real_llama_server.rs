//! The LLM server on the real llama-server (`GENAI_TEST_LLAMA_SERVER`, built by
//! `scripts/build-llama-server`) and the tiny llama model `crates/gguf` writes: auto-configured
//! start, health, `/props`, a streamed chat, a three-turn conversation and a reply stopped
//! mid-stream, stop; a SIGKILL crash and the auto-restart; a hung
//! (SIGSTOP) server found by the watchdog, killed and restarted; a port
//! already taken; the default port taken and another llama-server beside it; a minimum context
//! that cannot fit; corrupt models; an orphan left by a crashed app. `scripts/test` runs these
//! with `--ignored`.

use ipc::event::ServerState;
use ipc::llm::{ChatArgs, ChatMessage, LlmConfig};
use ipc::models::{ModelInfo, ModelKind};
use ipc::runtimes::RuntimeKind;
use ipc::{AppEvent, ErrorCode, StorageRootSource};
use runtime::binaries::{Binaries, BinariesConfig};
use runtime::llama::{LlamaServer, ServerConfig};
use runtime::models::ModelStore;
use runtime::system::SystemProbe;
use runtime::{EventBus, StorageLayout, StorageRoot};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use testkit::fake_runtime::alive;
use testkit::TempDir;

fn real_llama_server() -> PathBuf {
    PathBuf::from(
        std::env::var_os("GENAI_TEST_LLAMA_SERVER").expect(
            "GENAI_TEST_LLAMA_SERVER must name a llama-server (scripts/build-llama-server)",
        ),
    )
}

struct World {
    dir: TempDir,
    events: EventBus,
    storage: StorageLayout,
    binaries: Binaries,
    models: ModelStore,
}

impl World {
    async fn new(name: &str) -> Self {
        let dir = TempDir::new(&format!("llm-{name}"));
        let storage =
            StorageLayout::create(StorageRoot::new(dir.join("home"), StorageRootSource::Env))
                .unwrap();
        let events = EventBus::default();
        let binaries =
            Binaries::new(storage.clone(), events.clone(), BinariesConfig::from_env().unwrap())
                .unwrap();
        binaries.set_custom(RuntimeKind::Llama, Some(&real_llama_server())).await.unwrap();
        let models = ModelStore::new(storage.clone());
        Self { dir, events, storage, binaries, models }
    }

    fn server(&self, config: ServerConfig) -> LlamaServer {
        LlamaServer::new(
            self.storage.clone(),
            self.events.clone(),
            self.binaries.clone(),
            self.models.clone(),
            Arc::new(SystemProbe::real()),
            config,
        )
    }

    /// Registers `bytes` as an LLM called `id`.
    async fn model(&self, id: &str, bytes: &[u8]) -> String {
        let path = self.storage.llm_models().join(format!("{id}.gguf"));
        std::fs::write(&path, bytes).unwrap();
        let p = path.display().to_string();
        let info = ModelInfo::local_file(id, id, ModelKind::Llm, &p, bytes.len() as u64);
        self.models.register(&info).await.unwrap();
        id.into()
    }

    async fn tiny(&self) -> String {
        self.model("tiny", &gguf::fixtures::tiny_llama(Default::default()).to_bytes()).await
    }
}

/// Tests run side by side: each server on a free port, and no look at 8080–8083 (where another
/// test's server may be); the port tests set these themselves.
fn quiet() -> ServerConfig {
    ServerConfig { default_port: 0, probe_ports: Vec::new(), ..Default::default() }
}

fn cfg(model_id: &str) -> LlmConfig {
    LlmConfig { model_id: model_id.into(), ..Default::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the real llama-server; scripts/test runs it"]
async fn start_auto_configured_chat_and_stop() {
    let w = World::new("happy").await;
    let id = w.tiny().await;
    let llm = w.server(quiet());
    let mut rx = w.events.subscribe();
    let st = llm.start(cfg(&id)).await.unwrap();
    assert_eq!(st.state, ServerState::Running);
    assert!(st.healthy);
    let s = st.settings.clone().unwrap();
    assert_eq!(s.host, "127.0.0.1");
    assert_eq!(s.native_context, 512);
    assert_eq!(st.effective_context, Some(s.context_size), "/props agrees with -c");
    assert_eq!(st.slots, Some(1));
    assert_eq!(st.cpu_fallback, None, "no GPU layers were asked for");
    assert!(s.explanation.contains("512 context"), "{}", s.explanation);
    // An OpenAI client sees the model by its id, not by its storage path.
    let body = runtime::net::local_client()
        .unwrap()
        .get(format!("http://127.0.0.1:{}/v1/models", st.port.unwrap()))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let models: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(models.pointer("/data/0/id").and_then(|v| v.as_str()), Some("tiny"), "{models}");
    let pid = st.pid.unwrap();
    assert!(alive(pid));
    assert!(w.storage.root().join("run/llama-server.json").exists(), "pidfile while running");
    // What the load log says the model took.
    let cpu = st.measured.iter().find(|d| d.device == "CPU").expect("CPU buffers measured");
    assert!(cpu.model_bytes > 300_000 && cpu.kv_bytes > 0, "{cpu:?}");

    let reply = llm
        .chat(
            ChatArgs {
                messages: vec![ChatMessage { role: "user".into(), content: "Hello".into() }],
                max_tokens: 8,
                temperature: 0.0,
                request_id: None,
            },
            "r1".into(),
        )
        .await
        .unwrap();
    assert!(reply.tokens >= 1, "{reply:?}");
    let mut deltas = 0;
    let mut done = false;
    while let Ok(e) = rx.try_recv() {
        match e {
            AppEvent::ChatDelta { request_id, done: d, .. } if request_id == "r1" => {
                if d {
                    done = true
                } else {
                    deltas += 1
                }
            }
            _ => {}
        }
    }
    assert_eq!(deltas, reply.tokens, "each piece arrived as an event");
    assert!(done);

    // A conversation: each turn sends the history, so the prompt the server counts grows.
    let first_prompt = reply.prompt_tokens.expect("the server counted the prompt");
    let mut history = vec![
        ChatMessage { role: "user".into(), content: "Hello".into() },
        ChatMessage { role: "assistant".into(), content: reply.content.clone() },
    ];
    let mut prompts = vec![first_prompt];
    for (turn, text) in ["How are you?", "And then?"].into_iter().enumerate() {
        history.push(ChatMessage { role: "user".into(), content: text.into() });
        let args = ChatArgs {
            messages: history.clone(),
            max_tokens: 8,
            temperature: 0.0,
            request_id: Some(format!("turn-{turn}")),
        };
        let r = llm.chat(args, "unused".into()).await.unwrap();
        assert_eq!(r.request_id, format!("turn-{turn}"), "the window's id is kept");
        assert_eq!(r.dropped_messages, 0);
        prompts.push(r.prompt_tokens.unwrap());
        history.push(ChatMessage { role: "assistant".into(), content: r.content });
    }
    assert!(
        prompts.windows(2).all(|w| w[1] > w[0]),
        "the history went with each turn: {prompts:?}"
    );

    // Stop while the reply streams: the reply ends as stopped, the server keeps running.
    let long = ChatArgs {
        messages: vec![ChatMessage { role: "user".into(), content: "Tell a long story".into() }],
        max_tokens: 400,
        temperature: 0.8,
        request_id: Some("long".into()),
    };
    let streaming = tokio::spawn({
        let llm = llm.clone();
        async move { llm.chat(long, "unused".into()).await }
    });
    let deadline = Instant::now() + Duration::from_secs(5);
    while !llm.stop_chat("long") {
        assert!(Instant::now() < deadline, "the reply never started");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let stopped = streaming.await.unwrap().unwrap();
    assert!(stopped.stopped && stopped.tokens < 400, "{stopped:?}");
    assert!(!llm.stop_chat("long"), "nothing of it is left to stop");
    assert_eq!(llm.status().state, ServerState::Running);
    assert!(llm.status().healthy);
    let after = ChatArgs {
        messages: vec![ChatMessage { role: "user".into(), content: "Hello".into() }],
        max_tokens: 4,
        temperature: 0.0,
        request_id: None,
    };
    assert!(llm.chat(after, "r2".into()).await.unwrap().tokens >= 1, "it still answers");
    assert!(llm.logs().iter().any(|l| l.message.contains("healthy after")));

    llm.stop().await.unwrap();
    assert_eq!(llm.status().state, ServerState::Stopped);
    assert!(!alive(pid), "no process left");
    assert!(!w.storage.root().join("run/llama-server.json").exists());
    let log = std::fs::read_to_string(w.storage.logs().join("llama-server.log")).unwrap();
    assert!(log.contains("[INFO ] spawning"), "the log file has the session");
    assert_eq!(llm.stop().await.unwrap_err().code(), ErrorCode::ServerNotRunning);
    drop(w.dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the real llama-server; scripts/test runs it"]
async fn a_killed_server_is_a_crash_and_comes_back() {
    let w = World::new("crash").await;
    let id = w.tiny().await;
    let llm = w.server(ServerConfig { restart_backoff: Duration::from_millis(200), ..quiet() });
    let mut rx = w.events.subscribe();
    let first = llm.start(LlmConfig { auto_restart: true, ..cfg(&id) }).await.unwrap();
    let pid = first.pid.unwrap();
    // The OOM killer's way: SIGKILL.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut crashed = None;
    loop {
        let e = tokio::time::timeout_at(deadline.into(), rx.recv()).await.expect("events").unwrap();
        if let AppEvent::ServerCrashed { signal, .. } = e {
            crashed = Some(signal);
        }
        if crashed.is_some() {
            if let AppEvent::ServerState { state: ServerState::Running, .. } = e {
                break;
            }
        }
    }
    assert_eq!(crashed, Some(Some(9)), "a signal kill is a crash, not a normal stop");
    let st = llm.status();
    assert_eq!(st.state, ServerState::Running);
    assert_eq!(st.restarts, 1);
    assert_ne!(st.pid, Some(pid));
    assert_eq!(st.crash.as_ref().unwrap().signal, Some(9));
    assert_eq!(st.port, first.port, "the restart reuses the resolved port");
    llm.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the real llama-server; scripts/test runs it"]
async fn a_hung_server_is_found_killed_restarted_and_healthy_again() {
    let w = World::new("hang").await;
    let id = w.tiny().await;
    let interval = Duration::from_secs(1);
    let llm = w.server(ServerConfig {
        restart_backoff: Duration::from_millis(200),
        health_interval: interval,
        ..quiet()
    });
    let mut rx = w.events.subscribe();
    let first = llm.start(LlmConfig { auto_restart: true, ..cfg(&id) }).await.unwrap();
    let pid = first.pid.unwrap();
    assert_eq!(first.max_restarts, 3);

    // While it answers, the checks stay quiet; its idle slots are announced once (the first
    // reading), not with every check.
    tokio::time::sleep(interval * 3).await;
    let mut busy = Vec::new();
    while let Ok(e) = rx.try_recv() {
        assert!(!matches!(e, AppEvent::LlmHealth { .. }), "a healthy server raised {e:?}");
        if let AppEvent::LlmBusy { busy_slots } = e {
            busy.push(busy_slots);
        }
    }
    assert_eq!(busy, [Some(0)], "busy slots announced on change only");
    assert!(llm.status().healthy);

    // Hung: the process is there but answers nothing.
    unsafe { libc::kill(pid as i32, libc::SIGSTOP) };
    let hung_at = Instant::now();
    let deadline = hung_at + Duration::from_secs(60);
    let (mut failures, mut crashed_after, mut not_responding_seen) = (Vec::new(), None, false);
    loop {
        let e = tokio::time::timeout_at(deadline.into(), rx.recv()).await.expect("events").unwrap();
        match e {
            AppEvent::LlmHealth { ok: false, failures: n, since_ms } => {
                assert!(since_ms.is_some());
                failures.push(n);
                let st = llm.status();
                if st.state == ServerState::Running {
                    assert!(!st.healthy && st.not_responding_since_ms.is_some(), "{st:?}");
                    not_responding_seen = true;
                }
            }
            AppEvent::ServerCrashed { signal, .. } => {
                assert_eq!(signal, Some(9), "a hung server is killed outright");
                crashed_after = Some(hung_at.elapsed());
            }
            AppEvent::ServerState { state: ServerState::Running, .. }
                if crashed_after.is_some() =>
            {
                break
            }
            _ => {}
        }
    }
    let crashed_after = crashed_after.unwrap();
    println!(
        "hang found and killed {} ms after SIGSTOP (interval {} ms)",
        crashed_after.as_millis(),
        interval.as_millis()
    );
    assert_eq!(failures, [1, 2, 3], "three failed checks in a row, each an event");
    assert!(not_responding_seen, "the status said Not responding before the restart");
    // Three checks, each due one interval after the last, and the last one's time-out.
    assert!(
        crashed_after < interval * 4 + Duration::from_secs(2),
        "found after {crashed_after:?}; the checks run every {interval:?}"
    );
    let st = llm.status();
    assert_eq!(st.state, ServerState::Running);
    assert!(st.healthy && st.not_responding_since_ms.is_none(), "{st:?}");
    assert_eq!(st.restarts, 1);
    assert_ne!(st.pid, Some(pid));
    let crash = st.crash.clone().unwrap();
    assert!(crash.reason.contains("stopped answering /health"), "{crash:?}");
    let mut gone = false;
    for _ in 0..100 {
        if !alive(pid) {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(gone, "the stopped process was left behind");
    let ok = local_health(st.port.unwrap()).await;
    assert!(ok, "the restarted server answers");
    llm.stop().await.unwrap();
}

async fn local_health(port: u16) -> bool {
    runtime::net::local_client()
        .unwrap()
        .get(format!("http://127.0.0.1:{port}/health"))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the real llama-server; scripts/test runs it"]
async fn gpu_layers_asked_of_a_build_that_finds_no_gpu_are_a_visible_cpu_fallback() {
    let w = World::new("fallback").await;
    let id = w.tiny().await;
    let llm = w.server(quiet());
    let mut rx = w.events.subscribe();
    let st = llm.start(LlmConfig { gpu_layers: Some(2), ..cfg(&id) }).await.unwrap();
    assert_eq!(st.state, ServerState::Running, "it still runs");
    let why = st.cpu_fallback.clone().expect("a CPU fallback is reported");
    assert!(why.contains("2 GPU layers were asked for") && why.contains("CPU"), "{why}");
    let mut event = None;
    while let Ok(e) = rx.try_recv() {
        if let AppEvent::LlmCpuFallback { message } = e {
            event = Some(message);
        }
    }
    assert_eq!(event.as_deref(), Some(why.as_str()));
    assert!(llm.logs().iter().any(|l| l.message == why));
    llm.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the real llama-server; scripts/test runs it"]
async fn port_in_use_and_corrupt_models_fail_fast_with_codes() {
    let w = World::new("faults").await;
    let id = w.tiny().await;
    let llm = w.server(quiet());
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let e = llm.start(LlmConfig { port: Some(port), ..cfg(&id) }).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::PortInUse);
    assert!(e.to_ipc().remedy.contains(&port.to_string()), "{:?}", e.to_ipc());
    assert_eq!(llm.status().state, ServerState::Stopped);

    // Not a GGUF at all: refused before anything is spawned.
    let junk = w.model("junk", b"this is not a model").await;
    let e = llm.start(cfg(&junk)).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::GgufInvalid);

    // A whole header with the tensor data cut off: refused from the header and the file's
    // length, before anything is spawned, with the byte counts.
    let mut bytes = gguf::fixtures::tiny_llama(Default::default()).to_bytes();
    bytes.truncate(bytes.len() / 2);
    let cut = w.model("cut", &bytes).await;
    let e = llm.start(cfg(&cut)).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::GgufInvalid, "{e}");
    assert!(e.to_string().contains(&format!("is {} bytes", bytes.len())), "{e}");
    assert_eq!(llm.status().state, ServerState::Stopped);

    // A whole, well-formed file that llama.cpp still cannot load (a tensor the architecture
    // needs is missing): llama-server itself fails, and the start says so at once instead of
    // waiting out the load timeout.
    let mut writer = gguf::fixtures::tiny_llama(Default::default());
    writer.tensors.retain(|t| t.name != "output_norm.weight");
    let missing = w.model("missing", &writer.to_bytes()).await;
    let started = Instant::now();
    let e = llm.start(cfg(&missing)).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(20), "{:?}", started.elapsed());
    assert_eq!(e.code(), ErrorCode::ModelUnsupported, "{e}");
    let st = llm.status();
    assert_eq!(st.state, ServerState::Stopped);
    assert_eq!(st.last_error.unwrap().code, ErrorCode::ModelUnsupported);
}

/// Plays the app in a child process: opens the storage `GENAI_ORPHAN_HOME`, starts the server,
/// says its pid, and waits to be killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "entry point of the app stand-in for the orphan test, not a test"]
async fn app_stand_in_entry() {
    let Some(home) = std::env::var_os("GENAI_ORPHAN_HOME") else { return };
    let storage =
        StorageLayout::create(StorageRoot::new(PathBuf::from(home), StorageRootSource::Env))
            .unwrap();
    let events = EventBus::default();
    let binaries =
        Binaries::new(storage.clone(), events.clone(), BinariesConfig::from_env().unwrap())
            .unwrap();
    let models = ModelStore::new(storage.clone());
    let llm =
        LlamaServer::new(storage, events, binaries, models, Arc::new(SystemProbe::real()), quiet());
    let st = llm.start(cfg("tiny")).await.unwrap();
    println!("server pid {}", st.pid.unwrap());
    tokio::time::sleep(Duration::from_secs(600)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the real llama-server; scripts/test runs it"]
async fn the_next_launch_stops_a_server_a_crashed_app_left() {
    use std::io::BufRead;
    let w = World::new("orphan").await;
    w.tiny().await;
    // The app, in a process of its own, starts a server and is then killed outright.
    let mut app = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["app_stand_in_entry", "--exact", "--ignored", "--nocapture", "--quiet"])
        .env("GENAI_ORPHAN_HOME", w.storage.root())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(app.stdout.take().unwrap());
    let pid = loop {
        let mut line = String::new();
        assert!(out.read_line(&mut line).unwrap() > 0, "the app stand-in ended early");
        if let Some(p) = line.trim().strip_prefix("server pid ") {
            break p.parse::<u32>().unwrap();
        }
    };
    app.kill().unwrap(); // SIGKILL: no clean-up runs
    app.wait().unwrap();
    assert!(alive(pid), "the server outlived its app (own process group)");

    // The next launch finds it through the pidfile and stops it.
    let llm = w.server(quiet());
    let deadline = Instant::now() + Duration::from_secs(10);
    while alive(pid) {
        assert!(Instant::now() < deadline, "the orphan was not stopped");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(llm.logs().iter().any(|l| l.message.contains("left running by an earlier session")));
    assert!(!w.storage.root().join("run/llama-server.json").exists());
}

/// Answers `/props` as a llama-server serving `other-model` does.
async fn fake_llama_server() -> (u16, tokio::task::JoinHandle<()>) {
    let app = axum::Router::new().route(
        "/props",
        axum::routing::get(|| async {
            axum::Json(serde_json::json!({
                "default_generation_settings": {"n_ctx": 4096},
                "total_slots": 1,
                "model_path": "/elsewhere/other-model.gguf",
            }))
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    (port, tokio::spawn(async move { axum::serve(l, app).await.unwrap() }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the real llama-server; scripts/test runs it"]
async fn a_taken_default_port_moves_the_server_and_another_llama_server_is_named() {
    let w = World::new("ports").await;
    let id = w.tiny().await;
    // The default port held by a plain listener; another llama-server on a probed port.
    let plain = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let default = plain.local_addr().unwrap().port();
    let (other, fake) = fake_llama_server().await;
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let nobody = free.local_addr().unwrap().port();
    drop(free);
    let llm = w.server(ServerConfig {
        default_port: default,
        probe_ports: vec![default, other, nobody],
        ..quiet()
    });

    let st = llm.start(cfg(&id)).await.unwrap();
    let port = st.port.unwrap();
    assert_ne!(port, default);
    let note = st.port_note.clone().expect("the tab says why");
    assert!(
        note.contains(&format!("Port {default} is in use by another program"))
            && note.contains(&format!("listens on {port}")),
        "{note}"
    );
    assert_eq!(st.neighbours, [format!("port {other}: llama-server with other-model.gguf")]);
    assert!(local_health(port).await);
    assert!(llm.logs().iter().any(|l| l.message.contains("another server is running")));
    // A restart keeps the port and the note.
    let again = llm.restart().await.unwrap();
    assert_eq!((again.port, again.port_note.as_deref()), (Some(port), Some(note.as_str())));
    llm.stop().await.unwrap();

    // Strict mode refuses to start beside the other llama-server, before spawning anything.
    let e = llm.start(LlmConfig { strict: Some(true), ..cfg(&id) }).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::ServerAlreadyRunning);
    assert!(e.to_string().contains("other-model.gguf"), "{e}");
    assert!(e.to_ipc().remedy.contains("strict mode"));
    let st = llm.status();
    assert_eq!((st.state, st.pid), (ServerState::Stopped, None));
    fake.abort();
    drop(plain);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the real llama-server; scripts/test runs it"]
async fn a_minimum_context_larger_than_memory_fails_before_launch_naming_what_fits() {
    use gguf::fixtures::{zero_model, ZeroArch, ZeroModel};
    let w = World::new("contract").await;
    // Trained for 2^27 tokens: its full f16 KV cache (512 bytes a token) is 64 GiB.
    let writer = zero_model(ZeroModel {
        arch: ZeroArch::Llama,
        n_vocab: 300,
        n_embd: 64,
        n_layer: 2,
        n_head: 4,
        n_head_kv: 4,
        head_dim: 16,
        n_ff: 128,
        n_ctx: 1 << 27,
    });
    let path = w.storage.llm_models().join("long.gguf");
    writer.write_sparse(&path).unwrap();
    let size = std::fs::metadata(&path).unwrap().len();
    let info =
        ModelInfo::local_file("long", "long", ModelKind::Llm, &path.display().to_string(), size);
    w.models.register(&info).await.unwrap();
    let llm = w.server(quiet());
    let mut rx = w.events.subscribe();

    let e = llm.start(LlmConfig { min_context: Some(1 << 27), ..cfg("long") }).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::ContextTooLarge);
    let msg = e.to_string();
    let largest: u32 = msg
        .split("largest that fits on this machine now is ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no largest context in {msg:?}"));
    assert!((8192..1 << 27).contains(&largest), "{msg}");
    let st = llm.status();
    assert_eq!((st.state, st.pid), (ServerState::Stopped, None), "nothing was launched");
    while let Ok(ev) = rx.try_recv() {
        assert!(!matches!(ev, AppEvent::ServerState { state: ServerState::Running, .. }), "{ev:?}");
    }
    // As a preference it is met with the most that fits (not started here: that much KV cache
    // would take most of this machine's memory).
    let s = llm.preview(&LlmConfig { context_size: Some(1 << 27), ..cfg("long") }).await.unwrap();
    assert!(s.context_size < 1 << 27 && s.context_size >= 8192, "{}", s.context_size);
    assert!(s.explanation.contains("you preferred"), "{}", s.explanation);
}

/// Every flag the app can put on llama-server's command line, `--n-cpu-moe` (which no start on
/// this GPU-less machine chooses) included, is one the real server takes: it loads a generated
/// mixture-of-experts model with all of them and answers `/health`. (Build 11434 refuses the
/// `--no-mmap` the app used to pass: a start with mmap off failed.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the real llama-server; scripts/test runs it"]
async fn the_real_server_takes_every_flag_the_app_emits() {
    use gguf::fixtures::{zero_model, ZeroArch, ZeroModel};
    use ipc::llm::{LlmSettings, Toggle};
    let dir = TempDir::new("llm-flags");
    let path = dir.join("moe.gguf");
    zero_model(ZeroModel {
        arch: ZeroArch::Qwen3Moe { experts: 8, used: 2, ff_exp: 32 },
        n_vocab: 300,
        n_embd: 64,
        n_layer: 4,
        n_head: 4,
        n_head_kv: 2,
        head_dim: 32, // q8_0 cache blocks are 32 values
        n_ff: 128,
        n_ctx: 2048,
    })
    .write_sparse(&path)
    .unwrap();
    let port = runtime::net::free_port().unwrap();
    let settings = LlmSettings {
        model_path: path.display().to_string(),
        mmproj: None,
        rpc: Vec::new(),
        split: Vec::new(),
        host: "127.0.0.1".into(),
        port,
        threads: 2,
        context_size: 1024,
        native_context: 2048,
        gpu_layers: 5,
        total_layers: 5,
        n_cpu_moe: 2,
        parallel: 2,
        flash_attention: Toggle::On,
        cache_type_k: "q8_0".into(),
        cache_type_v: "q8_0".into(),
        batch: Some(512),
        ubatch: Some(256),
        swa_full: true,
        mmap: Some(false),
        mlock: false,
        reasoning_format: Some("none".into()),
        alias: Some("moe".into()),
        llama_fit: false,
        cache_ram_mib: Some(0),
        jinja: false,
        embeddings: true,
        pooling: Some("mean".into()),
        expected_vram_bytes: 0,
        expected_ram_bytes: 0,
        estimate: Vec::new(),
        explanation: String::new(),
    };
    let args = runtime::llama::args::build_args(&settings);
    for flag in [
        "--n-cpu-moe",
        "-fit",
        "--cache-ram",
        "--no-jinja",
        "--swa-full",
        "-ub",
        "--alias",
        "--embeddings",
        "--pooling",
    ] {
        assert!(args.iter().any(|a| a == flag), "{flag} in {args:?}");
    }
    use runtime::process::{Flow, LoadDeadline, Ready, Supervised};
    // Loading without mmap: a variable each build generation reads (the flags changed).
    let env = runtime::llama::args::build_env(&settings);
    assert!(!env.is_empty());
    let mut child = Supervised::spawn_with_env(&real_llama_server(), &args, &env).unwrap();
    let mut said = Vec::new();
    let ready = child
        .wait_ready(
            || local_health(port),
            LoadDeadline::fixed(Duration::from_secs(60)),
            |l| {
                said.push(l.to_owned());
                Flow::<()>::Continue
            },
            std::future::pending(),
        )
        .await;
    let said: Vec<&String> = said
        .iter()
        .filter(|l| !l.contains(" I print_info") && !l.contains("llama_model_loader"))
        .collect();
    let said = said.iter().map(|l| l.as_str()).collect::<Vec<_>>().join("\n");
    assert!(matches!(ready, Ready::Ready), "llama-server refused the flags ({ready:?}):\n{said}");
    child.kill().await.unwrap();
}
