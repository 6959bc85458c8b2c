//! Several machines for one model (#18), in the real window: after a first run on this computer
//! alone (which installs llama.cpp), two llama.cpp RPC workers on loopback (the worker built
//! beside llama-server) are listed in the LLM tab; the preview shows the planned layers per
//! worker before Start; after Start each worker shows ready with its memory, the plan stays
//! shown and the measured buffers name each worker. Then this computer is shared as a worker
//! itself (another address refused until confirmed), shown with what it lends and in the
//! Monitor's servers; Stop leaves no server behind.

use e2e::{launch_with_tiny_llama, live_group_members, live_processes_matching};
use std::process::{Child, Command, Stdio};
use testkit::http::FixtureServer;
use testkit::TempDir;

/// A worker on a free loopback port, killed when dropped.
struct Worker(Child, String);

impl Worker {
    fn start() -> Self {
        let llama = std::env::var_os("GENAI_TEST_LLAMA_SERVER").expect(
            "GENAI_TEST_LLAMA_SERVER must name a llama-server (scripts/build-llama-server)",
        );
        let exe = std::path::Path::new(&llama).with_file_name("ggml-rpc-server");
        let port = runtime::net::free_port().unwrap();
        let child = Command::new(exe)
            .args(["-H", "127.0.0.1", "-p", &port.to_string(), "-t", "1"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Worker(child, format!("127.0.0.1:{port}"))
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "real window: run scripts/test"]
async fn two_workers_hold_the_model_and_the_window_shows_the_split() {
    let server = FixtureServer::start().await;
    let dir = TempDir::new("e2e-rpc");
    let (w1, w2) = (Worker::start(), Worker::start());
    let app = launch_with_tiny_llama(&server, dir.path()).await;
    app.click("#tab-btn-llm").await;
    app.wait_text("#llm-model option", |t| t == "Tiny Llama").await;
    // Run once on this computer alone (the first start installs llama.cpp), then stop.
    app.click("#llm-start").await;
    app.wait_text("#llm-state", |t| t == "Running").await;
    app.click("#llm-stop").await;
    app.wait_text("#llm-state", |t| t == "Stopped").await;
    // A worker that is not there: the start names it and offers to go on without it.
    let closed = format!("127.0.0.1:{}", runtime::net::free_port().unwrap());
    app.script(&format!(
        "const i = document.querySelector('#llm-rpc-workers'); i.value = '{}, {closed}'; \
         i.dispatchEvent(new Event('change', {{ bubbles: true }}));",
        w1.1
    ))
    .await;
    app.click("#llm-start").await;
    let refused = app.wait_text(".error-box", |t| t.contains("unreachable")).await;
    assert!(refused.contains(&closed) && !refused.contains(&w1.1), "{refused}");
    let offer = app.wait_text("#llm-start-without", |t| !t.is_empty()).await;
    assert_eq!(offer, format!("Start without {closed}"));
    app.click("#llm-start-without").await;
    app.wait_text("#llm-state", |t| t == "Running").await;
    let left = app.wait_text("#llm-workers", |t| !t.is_empty()).await;
    assert!(left.contains(&w1.1) && !left.contains(&closed), "{left}");
    app.click("#llm-stop").await;
    app.wait_text("#llm-state", |t| t == "Stopped").await;

    let list = format!("{}, {}", w1.1, w2.1);
    app.script(&format!(
        "const i = document.querySelector('#llm-rpc-workers'); i.value = '{list}'; \
         i.dispatchEvent(new Event('change', {{ bubbles: true }}));"
    ))
    .await;
    // Before Start: the planned layers per worker (3 layers, equal memory: 2 and 1).
    let planned = format!("RPC0 ({}): 2 layers · RPC1 ({}): 1 layer", w1.1, w2.1);
    let preview = app.wait_text("#llm-preview", |t| t.contains("layers: RPC0")).await;
    assert!(preview.contains(&planned), "{preview}");
    assert!(preview.contains("2 RPC workers"), "{preview}");

    app.click("#llm-start").await;
    app.wait_text("#llm-state", |t| t == "Running").await;
    for w in [&w1.1, &w2.1] {
        let row =
            app.wait_text(&format!("#llm-workers li[data-worker='{w}']"), |t| !t.is_empty()).await;
        assert!(row.contains("ready") && row.contains("free of"), "{row}");
    }
    let plan = app.wait_text("#llm-split-planned", |t| !t.is_empty()).await;
    assert_eq!(plan, format!("planned: {planned}"));
    let measured = app.wait_text("#llm-measured", |t| t.contains("measured")).await;
    assert!(measured.contains(&format!("RPC0[{}]", w1.1)), "{measured}");
    app.screenshot("rpc-1-split").await;

    app.click("#llm-stop").await;
    app.wait_text("#llm-state", |t| t == "Stopped").await;

    // Share this computer: another address needs the user's confirmation first; on loopback it
    // lends at once, shows what it lends, and the Monitor lists it among the servers.
    let set = |id: &str, value: &str| {
        format!(
            "const i = document.querySelector('#{id}'); i.value = '{value}'; \
             i.dispatchEvent(new Event('input', {{ bubbles: true }}));"
        )
    };
    app.script(&set("share-host", "0.0.0.0")).await;
    app.wait_visible("#share-exposed-ok").await;
    app.click("#share-start").await;
    let refused = app.wait_text(".error-box", |t| t.contains("no authentication")).await;
    assert!(refused.contains("trusted network"), "{refused}");
    app.script(&set("share-host", "127.0.0.1")).await;
    let port = runtime::net::free_port().unwrap();
    app.script(&set("share-port", &port.to_string())).await;
    // The devices it can lend are offered by llama.cpp's names: this build, the processor.
    let offered = app.wait_text("#share-devices", |t| t.contains("CPU")).await;
    assert!(offered.contains("CPU (the processor and its RAM)"), "{offered}");
    app.click("#share-devices input[data-device='CPU']").await;
    app.click("#share-start").await;
    let lending = app.wait_text("#share-status", |t| t.contains("protocol")).await;
    let log = app.wait_text("#share-log", |t| t.contains("spawning")).await;
    assert!(log.contains(" -d CPU"), "the ticked device was not lent by name: {log}");
    assert!(
        lending.contains(&format!("127.0.0.1:{port}")) && lending.contains("free of"),
        "{lending}"
    );
    app.click("#tab-btn-monitor").await;
    let row = app.wait_text("#server-rpc-worker", |t| !t.is_empty()).await;
    assert!(row.contains("lending") && row.contains(&port.to_string()), "{row}");
    app.click("#tab-btn-llm").await;
    app.click("#share-stop").await;
    let until = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while app.is_displayed("#share-status").await {
        assert!(std::time::Instant::now() < until, "still sharing after Stop sharing");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // The worker runs in its own process group: looked for by its program's path.
    let binaries = app.genai_home().join("binaries").display().to_string();
    let left = live_processes_matching(&binaries);
    assert!(left.is_empty(), "the worker was left running: {left:?}");
    let group = app.finish().await;
    let left = live_group_members(group);
    assert!(left.is_empty(), "processes left behind: {left:?}");
}
