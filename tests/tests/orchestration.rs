//! The orchestration journey in the real window: the real llama-server runs the tiny model, the
//! margin is set (Resource Monitor) so that a large image cannot fit beside it, the Diffusion tab
//! says the LLM will be paused, the image is made with the fake sd-cli, and the Resource Monitor
//! shows the pause and the return on the chart and in the event log; the LLM Server tab is
//! healthy again on the same port.

use e2e::{installed_model, live_group_members, live_processes_matching, App, LaunchOptions};
use ipc::models::ModelKind;
use ipc::runtimes::RuntimeKind;
use ipc::StorageRootSource;
use runtime::binaries::{Binaries, BinariesConfig};
use runtime::{EventBus, StorageLayout, StorageRoot};
use testkit::fake_runtime;
use testkit::TempDir;

/// The fake sd-cli re-runs this test binary in sd-cli mode.
#[test]
#[ignore = "entry point of the fake sd-cli, not a test"]
fn fake_sd_cli_entry() {
    fake_runtime::sd_cli_if_asked();
}

/// Sets a field's value as typing would (an input event, or change for a select).
async fn set(app: &App, css: &str, value: &str) {
    app.script(&format!(
        "const e = document.querySelector({css:?}); e.value = {value:?}; \
         e.dispatchEvent(new Event(e.tagName === 'SELECT' ? 'change' : 'input'));"
    ))
    .await;
}

async fn count(app: &App, css: &str) -> u64 {
    app.script(&format!("return document.querySelectorAll({css:?}).length")).await.as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "real window: run scripts/test"]
async fn an_image_pauses_the_llm_and_the_monitor_shows_it() {
    let llama = std::env::var_os("GENAI_TEST_LLAMA_SERVER")
        .expect("GENAI_TEST_LLAMA_SERVER must name a llama-server (scripts/build-llama-server)");
    let dir = TempDir::new("e2e-orch");
    let home = dir.join("home");
    let storage = StorageLayout::create(StorageRoot::new(&home, StorageRootSource::Env)).unwrap();
    let tiny = gguf::fixtures::tiny_llama(Default::default()).to_bytes();
    installed_model(&home, ModelKind::Llm, "tiny-llama", "Tiny Llama", &tiny);
    installed_model(&home, ModelKind::Diffusion, "sd-tiny", "SD Tiny", &[7u8; 4096]);
    let sd = fake_runtime::generating_sd_cli(dir.path(), 200, false);
    let bins =
        Binaries::new(storage.clone(), EventBus::default(), BinariesConfig::from_env().unwrap())
            .unwrap();
    bins.set_custom(RuntimeKind::Llama, Some(llama.as_ref())).await.unwrap();
    bins.set_custom(RuntimeKind::Diffusion, Some(&sd)).await.unwrap();

    let app =
        App::launch_with(LaunchOptions { genai_home: Some(home.clone()), ..Default::default() })
            .await;
    // Orchestration: automatic, with a 10 % margin.
    app.click("#tab-btn-monitor").await;
    app.wait_visible("#orch-status").await;
    set(&app, "#orch-mode", "auto").await;
    set(&app, "#orch-margin", "10").await;
    app.click("#orch-save").await;
    app.wait_text("#orch-decision", |t| t == "none yet").await;

    // The LLM runs.
    app.click("#tab-btn-llm").await;
    app.wait_text("#llm-model option", |t| t == "Tiny Llama").await;
    app.click("#llm-start").await;
    app.wait_text("#llm-state", |t| t == "Running").await;
    let port = app.wait_text("#llm-port", |t| t.parse::<u16>().is_ok()).await;

    // The diffusion server, a 1536×1024 image: the tab says the LLM will be paused.
    app.click("#tab-btn-diffusion").await;
    app.wait_text("#sd-model option", |t| t.starts_with("SD Tiny")).await;
    set(&app, "#sd-port-input", "auto").await;
    app.click("#sd-start").await;
    app.wait_text("#sd-state", |t| t == "Running").await;
    set(&app, "#sd-size", "1536x1024").await;
    set(&app, "#sd-steps", "20").await;
    app.wait_visible("#sd-prompt").await.send_keys("a lighthouse at dusk").await.unwrap();
    let hint = app.wait_text("#sd-offload-hint", |t| t.contains("will be paused")).await;
    assert!(hint.contains("needs ") && hint.contains("RAM"), "{hint}");
    app.screenshot("orchestration-1-hint").await;
    app.click("#sd-generate").await;
    app.wait_text("#sd-job-status", |t| t == "Finished").await;

    // The Resource Monitor: both marks on the chart and both events in the log.
    app.click("#tab-btn-monitor").await;
    set(&app, "#chart-span", "60000").await;
    let log = app.wait_text("#event-log", |t| t.contains("LLM back on port")).await;
    assert!(log.contains("LLM paused for an image: The LLM will be paused"), "{log}");
    assert!(log.contains(&format!("LLM back on port {port}")), "{log}");
    assert!(log.contains("image(s) made"), "{log}");
    let cycle = app.wait_text("#orch-cycle", |t| !t.is_empty()).await;
    assert!(cycle.starts_with("stop ") && cycle.contains("restart"), "{cycle}");
    // The chart redraws with the next memory poll (every 2 s).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while count(&app, "#chart-ram .marker-reload").await == 0 {
        assert!(std::time::Instant::now() < deadline, "no reload mark on the RAM chart");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(count(&app, "#chart-ram .marker-offload").await, 1);
    assert_eq!(count(&app, "#chart-ram .marker-reload").await, 1);
    assert_eq!(count(&app, "#chart-ram .band-job").await, 1);
    // The marks sit where things happened (by the app's clock, not when the busy window read
    // the event): the LLM came back within a second of the image's end (60 s span: 10 units/s).
    let gap = app
        .script(
            "const b = document.querySelector('#chart-ram .band-job');              const r = document.querySelector('#chart-ram .marker-reload line');              return parseFloat(r.getAttribute('x1')) - parseFloat(b.getAttribute('x')) - parseFloat(b.getAttribute('width'));",
        )
        .await
        .as_f64()
        .unwrap();
    assert!((-1.0..10.0).contains(&gap), "reload mark {gap} units after the job's end");
    // The samples while the tab was hidden (it does not poll then) come from the app's own
    // sampler: the RAM line has points inside the image job's band.
    let inside = app
        .script(
            "const pts = document.querySelector('#chart-ram .chart-line').getAttribute('points')                .trim().split(' ').map(p => parseFloat(p.split(',')[0]));              const b = document.querySelector('#chart-ram .band-job');              const x0 = parseFloat(b.getAttribute('x')), x1 = x0 + parseFloat(b.getAttribute('width'));              return pts.filter(x => x >= x0 && x <= x1).length;",
        )
        .await
        .as_u64()
        .unwrap();
    assert!(inside >= 1, "no memory sample during the job (the tab was on the Diffusion tab)");
    // Axes: the time in minutes and seconds back from now, the memory in bytes.
    let x_axis = app.wait_text("#chart-ram .axis-x", |t| t.contains("now")).await;
    assert!(x_axis.contains("−1 min") && x_axis.contains("−30 s"), "{x_axis}");
    let y_axis = app.wait_text("#chart-ram .axis-y", |t| t.contains("iB")).await;
    assert!(y_axis.starts_with(|c: char| c.is_ascii_digit()) && y_axis.ends_with('0'), "{y_axis}");
    let grid = app.wait_text("#server-llm .server-state", |t| !t.is_empty()).await;
    assert_eq!(grid, "Running");
    // Busy: from llama-server's /slots (read with the health checks), idle now.
    let busy = app.wait_text("#server-llm .server-busy", |t| t.contains(" of ")).await;
    assert_eq!(busy, "0 of 1");
    app.screenshot("orchestration-2-monitor").await;
    app.script("document.querySelector('#orch-status').scrollIntoView()").await;
    app.screenshot("orchestration-3-decision-and-log").await;

    // The LLM Server tab: healthy again, same port.
    app.click("#tab-btn-llm").await;
    app.wait_text("#llm-state", |t| t == "Running").await;
    assert_eq!(app.wait_text("#llm-health", |t| !t.is_empty()).await, "Healthy");
    assert_eq!(app.wait_text("#llm-port", |t| !t.is_empty()).await, port);
    app.screenshot("orchestration-4-llm-back").await;

    // Clear on the log empties its file too, after a confirmation.
    let file = storage.logs().join("llama-server.log");
    let before = std::fs::read_to_string(&file).unwrap();
    assert!(before.contains("healthy after"), "{before}");
    app.click("#llm-log-clear").await;
    app.wait_visible("#llm-log-clear-ask").await;
    assert!(std::fs::read_to_string(&file).unwrap().contains("healthy after"), "asked first");
    app.click("#llm-log-clear-confirm").await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::fs::read_to_string(&file).unwrap().contains("healthy after") {
        assert!(std::time::Instant::now() < deadline, "the log file was not emptied");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let shown = app.wait_text("#llm-log", |t| !t.contains("healthy after")).await;
    assert!(!shown.contains("listening"), "{shown}");

    app.click("#llm-stop").await;
    app.wait_text("#llm-state", |t| t == "Stopped").await;
    app.click("#tab-btn-diffusion").await;
    app.click("#sd-stop").await;
    app.wait_text("#sd-state", |t| t == "Stopped").await;
    let left = live_processes_matching(&llama.to_string_lossy());
    assert!(left.is_empty(), "llama-server left running: {left:?}");
    let group = app.finish().await;
    let left = live_group_members(group);
    assert!(left.is_empty(), "processes left behind: {left:?}");
}
