//! The LLM Server journey in the real window: with a tiny model on disk and llama-server on a
//! release mirror, choose the model, Start (the runtime installs itself), see Healthy and the
//! auto-configured settings and the estimate's parts, the port it took when 8080 is held by
//! another program and why, the measured parts, chat and see the reply arrive, see the log; the server hangs
//! (SIGSTOP) and the health badge says Not responding, then Healthy again after the watchdog's
//! restart; Stop, and no server process left.

use e2e::{live_group_members, live_processes_matching, llama_release_mirror, App, LaunchOptions};
use ipc::models::{ModelInfo, ModelKind};
use testkit::http::FixtureServer;
use testkit::TempDir;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "real window: run scripts/test"]
async fn start_chat_and_stop_the_llm_server() {
    let server = FixtureServer::start().await;
    let dir = TempDir::new("e2e-llm");
    let (env, _) = llama_release_mirror(&server, dir.path());
    // A model already downloaded: the file and its metadata, as the Models tab leaves them.
    let home = dir.join("home");
    let llm_dir = home.join("models/llm");
    std::fs::create_dir_all(&llm_dir).unwrap();
    let bytes = gguf::fixtures::tiny_llama(Default::default()).to_bytes();
    let path = llm_dir.join("tiny-llama.gguf");
    std::fs::write(&path, &bytes).unwrap();
    let p = path.display().to_string();
    let info =
        ModelInfo::local_file("tiny-llama", "Tiny Llama", ModelKind::Llm, &p, bytes.len() as u64);
    std::fs::write(llm_dir.join("tiny-llama.json"), serde_json::to_vec(&info).unwrap()).unwrap();

    let app = App::launch_with(LaunchOptions { genai_home: Some(home.clone()), env }).await;
    app.click("#tab-btn-llm").await;
    app.wait_text("#llm-model option", |t| t == "Tiny Llama").await;
    let preview = app.wait_text("#llm-preview", |t| t.contains("context")).await;
    assert!(preview.contains("512 context (trained for 512)"), "{preview}");
    // The estimate's parts before Start.
    assert!(preview.contains("CPU: weights") && preview.contains("KV"), "{preview}");
    // 8080, the default, is held by another program: the server takes the next free port and
    // the tab says which and why.
    let _held = std::net::TcpListener::bind("127.0.0.1:8080");
    // Health checks every second, so that a hang shows within seconds.
    app.wait_visible("#llm-health-interval").await.send_keys("1").await.unwrap();
    app.click("#llm-start").await;
    app.wait_text("#llm-state", |t| t == "Running").await;
    assert_eq!(app.wait_text("#llm-health", |t| !t.is_empty()).await, "Healthy");
    assert_eq!(app.wait_text("#llm-context", |t| !t.is_empty()).await, "512 tokens (1 slot(s))");
    let port = app.wait_text("#llm-port", |t| t.parse::<u16>().is_ok()).await;
    assert_ne!(port, "8080");
    let note = app.wait_text("#llm-port-note", |t| !t.is_empty()).await;
    assert!(note.contains("Port 8080 is in use") && note.contains(&port), "{note}");
    // The measured parts beside the estimate after load.
    let measured = app.wait_text("#llm-measured", |t| t.contains("measured")).await;
    assert!(measured.contains("CPU") && measured.contains("KV"), "{measured}");
    assert!(app.wait_text("#llm-estimate", |t| t.contains("expected")).await.contains("KV"));
    app.screenshot("llm-1-running").await;

    app.wait_visible("#chat-input").await.send_keys("Hello").await.unwrap();
    app.click("#chat-send").await;
    let reply = app.wait_text("#chat-reply", |t| !t.trim().is_empty()).await;
    assert!(!reply.is_empty());
    app.wait_text("#chat-send", |t| t == "Send").await;
    let log = app.wait_text("#llm-log", |t| t.contains("healthy after")).await;
    assert!(log.contains("spawning"), "{log}");
    app.screenshot("llm-2-chat").await;

    // The server hangs: the badge says so, the watchdog kills and restarts it, and it is healthy.
    let pid: i32 = app.wait_text("#llm-pid", |t| t.parse::<i32>().is_ok()).await.parse().unwrap();
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let badge = app.wait_text("#llm-health", |t| t.starts_with("Not responding")).await;
    assert!(badge.contains("failed check"), "{badge}");
    app.screenshot("llm-3-not-responding").await;
    app.wait_text("#llm-pid", |t| t.parse::<i32>().is_ok_and(|p| p != pid)).await;
    app.wait_text("#llm-state", |t| t == "Running").await;
    app.wait_text("#llm-health", |t| t == "Healthy").await;
    let crash = app.wait_text("#llm-crash", |t| !t.is_empty()).await;
    assert!(crash.contains("stopped answering /health"), "{crash}");
    assert!(!testkit::fake_runtime::alive(pid as u32), "the hung server was left behind");

    app.click("#llm-stop").await;
    app.wait_text("#llm-state", |t| t == "Stopped").await;
    let left = live_processes_matching(&home.join("binaries").display().to_string());
    assert!(left.is_empty(), "llama-server left running: {left:?}");
    let group = app.finish().await;
    let left = live_group_members(group);
    assert!(left.is_empty(), "processes left behind: {left:?}");
}
