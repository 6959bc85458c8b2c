//! The Runtime card in the real window: install llama-server from a release mirror (the fixture
//! server, serving the real llama-server this repo builds), see its version, build and setup
//! log, and no check process left running.

use e2e::{live_group_members, live_processes_matching, llama_release_mirror, App, LaunchOptions};
use testkit::http::FixtureServer;
use testkit::TempDir;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "real window: run scripts/test"]
async fn install_llama_server_from_a_mirror() {
    let server = FixtureServer::start().await;
    let dir = TempDir::new("e2e-runtime");
    let (env, archive) = llama_release_mirror(&server, dir.path());

    let app = App::launch_with(LaunchOptions { env, ..Default::default() }).await;
    app.click("#tab-btn-llm").await;
    let missing = app.wait_text("#runtime-llama .runtime-missing", |t| !t.is_empty()).await;
    assert!(missing.contains("b9860"), "{missing}");
    app.click("#runtime-llama .runtime-install").await;
    let version = app.wait_text("#runtime-llama .runtime-version", |t| !t.is_empty()).await;
    assert_eq!(version, "b9860");
    assert_eq!(app.wait_text("#runtime-llama .runtime-variant", |t| !t.is_empty()).await, "CPU");
    let devices = app.wait_text("#runtime-llama .runtime-devices", |t| !t.is_empty()).await;
    assert!(devices.starts_with("none"), "{devices}");
    let log = app.wait_text("#runtime-llama .runtime-log", |t| t.contains("installed")).await;
    for want in ["downloading http://127.0.0.1", "SHA-256 matches", "Phase 1: ✓", "Phase 2: ✓"]
    {
        assert!(log.contains(want), "{want:?} in the log:\n{log}");
    }
    assert_eq!(
        app.wait_text("#runtime-llama .runtime-install", |t| t == "Re-check").await,
        "Re-check"
    );
    app.screenshot("runtime-installed").await;
    assert_eq!(server.gets(&archive).len(), 1);
    let installed = app.genai_home().join("binaries/llama/b9860/cpu/llama-b9860/llama-server");
    assert!(installed.is_file());

    // The phase-2 server ran in its own process group: it must be gone, not merely detached.
    let pattern = app.genai_home().join("binaries").display().to_string();
    let left = live_processes_matching(&pattern);
    assert!(left.is_empty(), "a check process was left: {left:?}");

    let group = app.finish().await;
    let left = live_group_members(group);
    assert!(left.is_empty(), "processes left behind: {left:?}");
}
