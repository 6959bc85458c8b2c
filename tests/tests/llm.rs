//! The LLM Server journey in the real window: with a tiny model on disk and llama-server on a
//! release mirror, choose the model, Start (the runtime installs itself), see Healthy and the
//! auto-configured settings and the estimate's parts, the port it took when 8080 is held by
//! another program and why, the measured parts, chat and see the reply arrive, a conversation of
//! three turns (Enter sends), Stop while it answers, Clear, see the log; the server hangs
//! (SIGSTOP) and the health badge says Not responding, then Healthy again after the watchdog's
//! restart; Stop, and no server process left.

use e2e::{launch_with_tiny_llama, live_group_members, live_processes_matching, App};
use testkit::http::FixtureServer;
use testkit::TempDir;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "real window: run scripts/test"]
async fn start_chat_and_stop_the_llm_server() {
    let server = FixtureServer::start().await;
    let dir = TempDir::new("e2e-llm");
    // A model already downloaded: the file and its metadata, as the Models tab leaves them.
    let app = launch_with_tiny_llama(&server, dir.path()).await;
    let home = dir.join("home");
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
    let web_before = app.pss_mib("WebKitWebProces");
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
    // The server's few hundred start-up lines in the log card cost the window little memory
    // (each line once formatted, with one cached time formatter: a new ICU formatter per line
    // per re-render grew the web process by about 700 MB here).
    let web_after = app.pss_mib("WebKitWebProces");
    assert!(
        web_after < web_before + 150,
        "the web process grew from {web_before} to {web_after} MiB when the server started"
    );

    // Short replies, so that three turns fit the tiny model's 512 tokens without trimming.
    let max = app.wait_visible("#chat-max-tokens").await;
    max.clear().await.unwrap();
    max.send_keys("8").await.unwrap();
    app.wait_visible("#chat-input").await.send_keys("Hello").await.unwrap();
    app.click("#chat-send").await;
    let reply = app.wait_text("#chat-reply", |t| !t.trim().is_empty()).await;
    assert!(!reply.is_empty());
    app.wait_text("#chat-send", |t| t == "Send").await;
    let log = app.wait_text("#llm-log", |t| t.contains("healthy after")).await;
    assert!(log.contains("spawning"), "{log}");

    // A conversation of three turns, the next two sent with Enter: each turn sends the
    // history, so the prompt the server counted grows from reply to reply.
    for (n, text) in [(2, "How are you?"), (3, "And then?")] {
        let input = app.wait_visible("#chat-input").await;
        input.send_keys(text).await.unwrap();
        input.send_keys("\u{E007}").await.unwrap(); // Enter
        app.wait_text("#chat-send", |t| t == "Send").await;
        let replies = chat_meta(&app).await;
        assert_eq!(replies.len(), n, "{replies:?}");
    }
    let left = app.script("return document.getElementById('chat-input').value").await;
    assert_eq!(left, serde_json::json!(""), "the box empties on send");
    let prompts: Vec<u32> = chat_meta(&app).await.iter().map(|m| prompt_tokens(m)).collect();
    assert!(
        prompts.windows(2).all(|w| w[1] > w[0]),
        "the history went with each turn: {prompts:?}"
    );
    app.screenshot("llm-2-chat").await;

    // Stop while it answers: the server is held (SIGSTOP) so that the reply is still pending
    // when Stop is pressed; the reply ends as stopped and the server, let go, answers again.
    let pid: i32 = app.wait_text("#llm-pid", |t| t.parse::<i32>().is_ok()).await.parse().unwrap();
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    app.wait_visible("#chat-input").await.send_keys("Tell a long story").await.unwrap();
    app.click("#chat-send").await;
    app.wait_text("#chat-send", |t| t == "Answering…").await;
    app.click("#chat-stop").await;
    app.wait_text("#chat-send", |t| t == "Send").await;
    unsafe { libc::kill(pid, libc::SIGCONT) };
    let last = chat_meta(&app).await.pop().unwrap();
    assert!(last.contains("stopped"), "{last}");
    app.wait_text("#llm-health", |t| t == "Healthy").await;
    assert_eq!(
        app.wait_text("#llm-pid", |t| !t.is_empty()).await,
        pid.to_string(),
        "not restarted"
    );
    app.wait_visible("#chat-input").await.send_keys("Hello again").await.unwrap();
    app.click("#chat-send").await;
    app.wait_text("#chat-send", |t| t == "Send").await;
    let after = chat_meta(&app).await;
    assert!(after.len() == 5 && !after[4].contains("stopped"), "{after:?}");
    app.click("#chat-clear").await;
    assert!(chat_meta(&app).await.is_empty(), "Clear empties the conversation");

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

/// The line under each reply in the test chat, oldest first.
async fn chat_meta(app: &App) -> Vec<String> {
    let v = app
        .script("return Array.from(document.querySelectorAll('#chat-log .chat-msg.assistant .chat-meta')).map(e => e.textContent)")
        .await;
    serde_json::from_value(v).unwrap()
}

/// "12 tokens · prompt 31 tokens" → 31.
fn prompt_tokens(meta: &str) -> u32 {
    let rest = meta.split("prompt ").nth(1).unwrap_or_else(|| panic!("no prompt count: {meta}"));
    rest.split(' ').next().unwrap().parse().unwrap()
}
