//! The app shell in a real window: five tabs that switch without losing state, the footer fed by
//! the `app_info` command, and errors shown with their remedy.
//!
//! Ignored by a plain `cargo test`, since it needs the built app, tauri-driver and Xvfb;
//! `scripts/test` builds those and runs it.

use e2e::{live_group_members, App, LaunchOptions};

const TABS: [(&str, &str); 5] = [
    ("system", "System Info"),
    ("models", "Models"),
    ("llm", "LLM Server"),
    ("diffusion", "Diffusion Server"),
    ("monitor", "Resource Monitor"),
];

#[tokio::test]
#[ignore = "real window: run scripts/test"]
async fn five_tabs_switch_without_losing_state() {
    let app = App::launch().await;

    // The footer shows what app_info answered: this version and the GENAI_HOME we gave the app.
    let want_root = {
        std::fs::create_dir_all(app.genai_home()).unwrap();
        app.genai_home().canonicalize().unwrap().display().to_string()
    };
    let root = app.wait_text("#storage-root", |t| !t.is_empty()).await;
    assert_eq!(root, want_root, "footer storage root");
    let version = app.wait_text("#app-version", |t| !t.is_empty()).await;
    assert_eq!(version, format!("GenAI Control Panel v{}", env!("CARGO_PKG_VERSION")));
    let platform = app.wait_text("#app-platform", |t| !t.is_empty()).await;
    assert_eq!(platform, format!("{} {}", std::env::consts::OS, std::env::consts::ARCH));
    // The app created its storage layout under that root.
    for sub in ["models/llm", "models/diffusion", "binaries", "logs", "config", "downloads"] {
        assert!(app.genai_home().join(sub).is_dir(), "{sub} was not created");
    }

    // The app's own log: it says the app started; the footer's level goes to debug and is kept.
    let log = app.genai_home().join("logs/app.log");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !std::fs::read_to_string(&log).unwrap_or_default().contains("the app started") {
        assert!(
            std::time::Instant::now() < deadline,
            "{} says nothing of the start",
            log.display()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    app.wait_text("#app-log-level", |t| !t.is_empty()).await;
    app.script(
        "const s = document.querySelector('#app-log-level'); s.value = 'debug'; \
         s.dispatchEvent(new Event('change'));",
    )
    .await;
    let kept = app.genai_home().join("config/app-log.json");
    while !std::fs::read_to_string(&kept).unwrap_or_default().contains("\"debug\"") {
        assert!(
            std::time::Instant::now() < deadline + std::time::Duration::from_secs(5),
            "level not kept"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // The settings file is written before the change is logged: wait for the line, not just the file.
    while !std::fs::read_to_string(&log).unwrap_or_default().contains("log level changed") {
        assert!(
            std::time::Instant::now() < deadline + std::time::Duration::from_secs(10),
            "{} does not say the level changed",
            log.display()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    // Mark every panel's DOM node: if switching tabs re-created a panel, its mark would be gone.
    app.script(
        "document.querySelectorAll('.tab-panel').forEach((p, i) => p.dataset.probe = 'kept-' + i)",
    )
    .await;

    let mut shots: Vec<Vec<u8>> = Vec::new();
    for (i, (id, label)) in TABS.iter().enumerate() {
        app.click(&format!("#tab-btn-{id}")).await;
        let heading = app.wait_visible(&format!("#tab-{id} .tab-heading")).await;
        assert_eq!(heading.text().await.unwrap(), *label, "heading of tab {id}");
        for (other, _) in TABS {
            assert_eq!(
                app.is_displayed(&format!("#tab-{other}")).await,
                other == *id,
                "with {id} active, panel {other} has the wrong visibility"
            );
        }
        let selected = app
            .script(&format!(
                "return document.getElementById('tab-btn-{id}').getAttribute('aria-selected')"
            ))
            .await;
        assert_eq!(selected, "true", "tab button {id} is not marked selected");
        shots.push(app.screenshot(&format!("{}-{id}", i + 1)).await);
    }

    let probes = app
        .script(
            "return Array.from(document.querySelectorAll('.tab-panel')).map(p => p.dataset.probe)",
        )
        .await;
    assert_eq!(
        probes,
        serde_json::json!(["kept-0", "kept-1", "kept-2", "kept-3", "kept-4"]),
        "a tab panel was re-created while switching"
    );
    for i in 0..shots.len() {
        for j in i + 1..shots.len() {
            assert_ne!(
                shots[i],
                shots[j],
                "screenshots of tabs {} and {} are identical",
                i + 1,
                j + 1
            );
        }
    }

    let group = app.finish().await;
    let left = live_group_members(group);
    assert!(left.is_empty(), "processes left behind: {left:?}");
}

#[tokio::test]
#[ignore = "real window: run scripts/test"]
async fn unusable_storage_folder_is_explained_with_a_remedy() {
    // A folder cannot be created under a regular file.
    let file = std::env::temp_dir().join(format!("genai-e2e-not-a-dir-{}", std::process::id()));
    std::fs::write(&file, b"x").unwrap();
    let app = App::launch_with(LaunchOptions {
        genai_home: Some(file.join("home")),
        ..Default::default()
    })
    .await;

    let title = app.wait_text("#app-footer .error-title", |t| !t.is_empty()).await;
    assert_eq!(title, "File system error");
    let code = app.wait_text("#app-footer .error-code", |t| !t.is_empty()).await;
    assert_eq!(code, "FILE_SYSTEM");
    let message = app.wait_text("#app-footer .error-message", |t| !t.is_empty()).await;
    assert!(message.contains(&file.display().to_string()), "message names the path: {message}");
    let remedy = app.wait_text("#app-footer .error-remedy", |t| !t.is_empty()).await;
    assert!(!remedy.is_empty());
    // The tabs still work.
    app.click("#tab-btn-models").await;
    app.wait_visible("#tab-models .tab-heading").await;
    app.screenshot("storage-error").await;

    // Once the cause is gone, Retry opens the storage folder without restarting the app.
    std::fs::remove_file(&file).unwrap();
    app.click("#app-footer .error-box button").await;
    let root = app.wait_text("#storage-root", |t| !t.is_empty()).await;
    assert_eq!(root, file.join("home").display().to_string());
    assert!(file.join("home/models/llm").is_dir());

    let group = app.finish().await;
    let left = live_group_members(group);
    assert!(left.is_empty(), "processes left behind: {left:?}");
    std::fs::remove_dir_all(&file).unwrap();
}

/// Turns the app log to debug with the footer's select, where each command the window calls is
/// logged by name; returns the log's path once the change is in it.
async fn log_every_call(app: &App) -> std::path::PathBuf {
    let log = app.genai_home().join("logs/app.log");
    app.wait_text("#app-log-level", |t| !t.is_empty()).await;
    app.script(
        "const s = document.querySelector('#app-log-level'); s.value = 'debug'; \
         s.dispatchEvent(new Event('change'));",
    )
    .await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while !std::fs::read_to_string(&log).unwrap_or_default().contains("log level changed") {
        assert!(std::time::Instant::now() < deadline, "the log level did not change");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    log
}

/// The commands the window called so far, in order.
fn calls(log: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("the window called"))
        .filter_map(|l| l.split("command=\"").nth(1)?.split('"').next().map(str::to_owned))
        .collect()
}

/// What the window calls while `secs` pass.
async fn calls_during(log: &std::path::Path, secs: u64) -> Vec<String> {
    let before = calls(log).len();
    tokio::time::sleep(std::time::Duration::from_secs(secs)).await;
    calls(log).split_off(before)
}

/// Sets what `document.hidden` says (as WebKit does when the window is minimised) and tells the
/// page, as WebKit would.
async fn set_page_hidden(app: &App, hidden: bool) {
    app.script(&format!(
        "Object.defineProperty(document, 'hidden', {{ configurable: true, get: () => {hidden} }}); \
         document.dispatchEvent(new Event('visibilitychange', {{ bubbles: true }}));"
    ))
    .await;
}

/// Takes (and touches) a few percent of this machine's RAM: max(4 % of it, 512 MiB), at most a
/// quarter of what is available. Freed when dropped.
fn take_memory() -> Vec<u8> {
    let field = |name: &str| -> u64 {
        std::fs::read_to_string("/proc/meminfo")
            .unwrap()
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .unwrap()
            * 1024
    };
    let n = (field("MemTotal:") / 25).max(512 << 20).min(field("MemAvailable:") / 4) as usize;
    let mut v = vec![0u8; n];
    for i in (0..n).step_by(4096) {
        v[i] = 1;
    }
    v
}

/// An app left open costs next to nothing: a tab without live figures calls nothing at all, the
/// Monitor polls nothing either (the app announces visible changes of memory while it is on
/// screen), and a hidden window calls nothing. Seen
/// from the app's own log at debug level, which names every command the window calls.
#[tokio::test]
#[ignore = "real window: run scripts/test"]
async fn hidden_tabs_and_a_hidden_window_call_nothing() {
    let app = App::launch().await;
    app.wait_visible("#cpu-model").await;
    let log = log_every_call(&app).await;

    // The Models tab opened once, then the LLM tab: nothing is polled on either (the download
    // queue is kept by its events; the LLM tab has no live figure while no server runs).
    app.click("#tab-btn-models").await;
    app.wait_visible("#tab-models .tab-heading").await;
    app.click("#tab-btn-llm").await;
    app.wait_visible("#tab-llm .tab-heading").await;
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let idle = calls_during(&log, 5).await;
    assert!(idle.is_empty(), "the LLM tab, idle, called {idle:?}");

    // The Monitor on screen: it asks to be told of memory changes and reads the figures and the
    // past once (the control that the log sees the window's calls at all), then polls nothing.
    let before = calls(&log).len();
    app.click("#tab-btn-monitor").await;
    app.wait_visible("#monitor-ram").await;
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let opened = calls(&log).split_off(before);
    for want in ["memory_watch", "memory_now", "memory_history"] {
        assert!(opened.iter().any(|c| c == want), "the Monitor opened without {want}: {opened:?}");
    }
    let shown = calls_during(&log, 5).await;
    assert!(shown.is_empty(), "the Monitor at rest called {shown:?}");

    // A visible change of memory (this test takes a few percent of the machine's RAM) reaches
    // the Monitor by announcement, with no call from the window.
    let before_text = app.wait_text("#monitor-ram-available", |t| !t.is_empty()).await;
    let before = calls(&log).len();
    let ballast = take_memory();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let after_text = loop {
        let t = app.wait_text("#monitor-ram-available", |t| !t.is_empty()).await;
        if t != before_text {
            break t;
        }
        assert!(std::time::Instant::now() < deadline, "the Monitor still shows {t} available");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    drop(ballast);
    let during = calls(&log).split_off(before);
    assert!(during.is_empty(), "{before_text} -> {after_text} came with calls {during:?}");

    // Minimised: nothing at all.
    set_page_hidden(&app, true).await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let hidden = calls_during(&log, 5).await;
    assert!(hidden.is_empty(), "a hidden window called {hidden:?}");

    // Back on screen: the figures and the past are read at once.
    let before = calls(&log).len();
    set_page_hidden(&app, false).await;
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let back = calls(&log).split_off(before);
    for want in ["memory_now", "memory_history"] {
        assert!(back.iter().any(|c| c == want), "back on screen, no {want}: {back:?}");
    }

    let group = app.finish().await;
    let left = live_group_members(group);
    assert!(left.is_empty(), "processes left behind: {left:?}");
}

/// The window's scripts run without the JIT (src-tauri/src/engine.rs: it saves 8–23 MB of the
/// idle window), unless the user asks for it: the setting reaches the web process, which
/// WebKit starts with the app's environment.
#[tokio::test]
#[ignore = "real window: run scripts/test"]
async fn the_window_runs_without_the_jit_unless_asked() {
    let web_env = |app: &App| {
        let web = *app.pids_named("WebKitWebProces").first().expect("the web process");
        let environ = std::fs::read(format!("/proc/{web}/environ")).unwrap();
        environ
            .split(|b| *b == 0)
            .map(|kv| String::from_utf8_lossy(kv).into_owned())
            .filter(|kv| kv.starts_with("JSC_useJIT="))
            .collect::<Vec<_>>()
    };
    let app = App::launch().await;
    app.wait_visible("#cpu-model").await;
    assert_eq!(web_env(&app), ["JSC_useJIT=0"], "the web process's JIT setting");
    app.finish().await;

    let asked = vec![("GENAI_JIT".to_owned(), "on".to_owned())];
    let app = App::launch_with(LaunchOptions { env: asked, ..Default::default() }).await;
    app.wait_visible("#cpu-model").await;
    assert!(web_env(&app).is_empty(), "GENAI_JIT=on still set {:?}", web_env(&app));
    app.finish().await;
}
