//! The Diffusion Server journey in the real window: a diffusion model on disk and a fake sd-cli
//! (it prints sd-cli's output and writes a real PNG) chosen as the runtime; start the job API,
//! generate, watch the progress bar go from 0 % through the diffusion steps to the finished
//! image, save it, then cancel a second job and see its sd-cli gone.

use e2e::{live_group_members, App, LaunchOptions};
use ipc::models::{ModelInfo, ModelKind};
use ipc::runtimes::RuntimeKind;
use ipc::StorageRootSource;
use runtime::binaries::{Binaries, BinariesConfig};
use runtime::{EventBus, StorageLayout, StorageRoot};
use std::time::{Duration, Instant};
use testkit::fake_runtime;
use testkit::TempDir;

/// The fake sd-cli re-runs this test binary in sd-cli mode.
#[test]
#[ignore = "entry point of the fake sd-cli, not a test"]
fn fake_sd_cli_entry() {
    fake_runtime::sd_cli_if_asked();
}

/// The app's storage folder in `dir` with a diffusion model `id` on disk, as the Models tab
/// leaves a downloaded one, and the fake sd-cli chosen as a custom binary (checked like any
/// other). Answers the folder.
async fn model_and_fake_sd_cli(dir: &TempDir, id: &str, name: &str) -> std::path::PathBuf {
    let home = dir.join("home");
    let storage = StorageLayout::create(StorageRoot::new(&home, StorageRootSource::Env)).unwrap();
    let model = storage.diffusion_models().join(format!("{id}.gguf"));
    std::fs::write(&model, vec![7u8; 4096]).unwrap();
    let p = model.display().to_string();
    let info = ModelInfo::local_file(id, name, ModelKind::Diffusion, &p, 4096);
    std::fs::write(
        storage.diffusion_models().join(format!("{id}.json")),
        serde_json::to_vec(&info).unwrap(),
    )
    .unwrap();
    let exe = fake_runtime::generating_sd_cli(dir.path(), 150, false);
    let bins =
        Binaries::new(storage, EventBus::default(), BinariesConfig::from_env().unwrap()).unwrap();
    bins.set_custom(RuntimeKind::Diffusion, Some(&exe)).await.unwrap();
    home
}

/// Stops the image server from its tab, closes the app and checks no process of its is left.
async fn stop_and_leave_nothing(app: App) {
    app.click("#sd-stop").await;
    app.wait_text("#sd-state", |t| t == "Stopped").await;
    let group = app.finish().await;
    let left = live_group_members(group);
    assert!(left.is_empty(), "processes left behind: {left:?}");
}

async fn percent(app: &App) -> Option<(String, f64)> {
    let v = app
        .script(
            "const e = document.querySelector('#sd-progress'); \
             return e ? [e.dataset.stage, e.dataset.percent] : null;",
        )
        .await;
    let a = v.as_array()?;
    Some((a[0].as_str()?.to_owned(), a[1].as_str()?.parse().ok()?))
}

/// Waits until the progress bar shows `ok(stage, percent)`.
async fn wait_progress(app: &App, what: &str, ok: impl Fn(&str, f64) -> bool) -> (String, f64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some((stage, pct)) = percent(app).await {
            if ok(&stage, pct) {
                return (stage, pct);
            }
        }
        assert!(Instant::now() < deadline, "progress never showed {what}");
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "real window: run scripts/test"]
async fn generate_an_image_and_cancel_another() {
    let dir = TempDir::new("e2e-sd");
    let home = model_and_fake_sd_cli(&dir, "sdxl-tiny", "SDXL Tiny").await;

    let env = vec![(fake_runtime::ENV_SD_LOAD_MS.to_owned(), "2500".to_owned())];
    let app = App::launch_with(LaunchOptions {
        genai_home: Some(home.clone()),
        env,
        ..Default::default()
    })
    .await;
    app.click("#tab-btn-diffusion").await;
    app.wait_text("#sd-model option", |t| t.starts_with("SDXL Tiny")).await;
    // The SDXL preset was chosen from the name; Apply fills the form with it.
    app.click("#sd-preset-apply").await;
    let steps = app.script("return document.querySelector('#sd-steps').value").await;
    assert_eq!(steps, "30");
    let size = app.script("return document.querySelector('#sd-size').value").await;
    assert_eq!(size, "1024x1024");
    // A quicker job for the test: 512², 12 steps, and a free port.
    app.script(
        "const set = (sel, v) => { const e = document.querySelector(sel); e.value = v; \
           e.dispatchEvent(new Event(e.tagName === 'SELECT' ? 'change' : 'input')); }; \
         set('#sd-size', '512x512'); set('#sd-steps', '12'); set('#sd-port-input', 'auto');",
    )
    .await;
    app.click("#sd-start").await;
    app.wait_text("#sd-state", |t| t == "Running").await;
    app.wait_text("#sd-url", |t| t.starts_with("http://127.0.0.1:")).await;

    app.wait_visible("#sd-prompt").await.send_keys("a lighthouse at dusk").await.unwrap();
    app.click("#sd-generate").await;
    wait_progress(&app, "loading at 0 %", |s, p| s == "Loading" && p == 0.0).await;
    let caption = app.wait_text("#sd-progress .bar-caption", |t| !t.is_empty()).await;
    assert_eq!(caption, "Loading · 0%");
    app.screenshot("diffusion-1-started").await;
    let (stage, pct) =
        wait_progress(&app, "mid-way diffusion", |s, p| s == "Diffusion" && p > 30.0).await;
    let caption = app.wait_text("#sd-progress .bar-caption", |t| t.contains("step")).await;
    assert!(caption.starts_with("Diffusion · step ") && caption.contains("/12"), "{caption}");
    assert!(pct < 100.0, "{stage} {pct}");
    app.screenshot("diffusion-2-midway").await;

    let status = app.wait_text("#sd-job-status", |t| t == "Finished").await;
    assert_eq!(status, "Finished");
    let info = app.wait_text("#sd-image-info-0", |t| !t.is_empty()).await;
    assert!(info.starts_with("512 × 512 · seed "), "{info}");
    let natural = app
        .script("const i = document.querySelector('#sd-image-0'); return [i.complete, i.naturalWidth, i.naturalHeight];")
        .await;
    assert_eq!(natural, serde_json::json!([true, 512, 512]), "the PNG decodes in the window");
    app.click("#sd-save-0").await;
    let saved = app.wait_text("#sd-saved", |t| t.contains(".png")).await;
    let path = saved.trim_start_matches("Saved to ").trim();
    assert!(path.starts_with(&home.join("images").display().to_string()), "{path}");
    assert!(std::fs::read(path).unwrap().starts_with(b"\x89PNG"));
    app.screenshot("diffusion-3-finished").await;

    // A second job, cancelled while it runs: its sd-cli is gone and the form is free again.
    app.click("#sd-generate").await;
    wait_progress(&app, "diffusion", |s, _| s == "Diffusion").await;
    let needle = home.display().to_string();
    let pid = fake_runtime::fake_sd_cli_pid(&needle).expect("the second job's sd-cli runs");
    app.click("#sd-cancel").await;
    app.wait_text("#sd-job-status", |t| t == "Cancelled").await;
    let t = Instant::now();
    while fake_runtime::alive(pid) {
        assert!(t.elapsed() < Duration::from_secs(2), "sd-cli still running after Cancel");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    app.wait_text("#sd-generate", |t| t == "Generate").await;
    let log = app.wait_text("#sd-log", |t| t.contains("cancelled")).await;
    assert!(log.contains("job API listening on http://127.0.0.1:"), "{log}");
    app.screenshot("diffusion-4-cancelled").await;

    stop_and_leave_nothing(app).await;
}

/// A plain HTTP/1.1 POST over a socket, as any other program on this computer could send it:
/// answers the status and the body.
fn post_json(base: &str, path: &str, body: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let addr = base.trim_start_matches("http://").trim_end_matches('/');
    let mut s = std::net::TcpStream::connect(addr).expect("the job API accepts connections");
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    let status = answer.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = answer.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "real window: run scripts/test"]
async fn a_job_from_another_program_shows_here_and_a_failed_one_says_what_to_do() {
    let dir = TempDir::new("e2e-sd-api");
    let home = model_and_fake_sd_cli(&dir, "sd-tiny", "SD Tiny").await;
    // "Save as…" answers with this place instead of a native dialog (which WebDriver cannot
    // click through); the writing after it is the app's own.
    let chosen = dir.join("elsewhere").join("harbour.png");
    std::fs::create_dir_all(chosen.parent().unwrap()).unwrap();
    let env = vec![
        (fake_runtime::ENV_SD_LOAD_MS.to_owned(), "1000".to_owned()),
        ("GENAI_TEST_SAVE_AS".to_owned(), chosen.display().to_string()),
    ];
    let app = App::launch_with(LaunchOptions {
        genai_home: Some(home.clone()),
        env,
        ..Default::default()
    })
    .await;
    app.click("#tab-btn-diffusion").await;
    app.wait_text("#sd-model option", |t| t.starts_with("SD Tiny")).await;
    app.script(
        "const e = document.querySelector('#sd-port-input'); e.value = 'auto'; \
         e.dispatchEvent(new Event('input'));",
    )
    .await;
    app.click("#sd-start").await;
    app.wait_text("#sd-state", |t| t == "Running").await;
    let base = app.wait_text("#sd-url", |t| t.starts_with("http://127.0.0.1:")).await;

    // Another program posts a job; the tab shows it with its live stage, step and percent.
    let job = r#"{"prompt": "a harbour at noon", "width": 256, "height": 256, "steps": 12}"#;
    let b = base.clone();
    let (code, created) =
        tokio::task::spawn_blocking(move || post_json(&b, "/v1/images/generations", job))
            .await
            .unwrap();
    assert_eq!(code, 201, "{created}");
    let (stage, pct) =
        wait_progress(&app, "mid-way diffusion", |s, p| s == "Diffusion" && p > 20.0).await;
    assert!(pct < 100.0, "{stage} {pct}");
    let caption = app.wait_text("#sd-progress .bar-caption", |t| t.contains("step")).await;
    assert!(caption.starts_with("Diffusion · step ") && caption.contains("/12"), "{caption}");
    assert_eq!(app.wait_text("#sd-job-status", |t| !t.is_empty()).await, "Generating");
    app.screenshot("diffusion-api-1-foreign-job").await;
    app.wait_text("#sd-job-status", |t| t == "Finished").await;
    let info = app.wait_text("#sd-image-info-0", |t| !t.is_empty()).await;
    assert!(info.starts_with("256 × 256 · seed "), "{info}");

    // Save as…: to the place the user chose, not the app's folder.
    app.click("#sd-save-as-0").await;
    let saved = app.wait_text("#sd-saved", |t| t.contains(".png")).await;
    assert_eq!(saved.trim_start_matches("Saved to ").trim(), chosen.display().to_string());
    assert!(std::fs::read(&chosen).unwrap().starts_with(b"\x89PNG"));
    assert!(!home.join("images").join("harbour.png").exists());

    // A job that fails: the usual error box, with a title and what to do.
    let failing = format!(r#"{{"prompt": "{}", "steps": 8}}"#, fake_runtime::FAIL_WORD);
    let b = base.clone();
    let (code, _) =
        tokio::task::spawn_blocking(move || post_json(&b, "/v1/images/generations", &failing))
            .await
            .unwrap();
    assert_eq!(code, 201);
    app.wait_text("#sd-job-status", |t| t == "Failed").await;
    let title = app.wait_text("#sd-job-error .error-title", |t| !t.is_empty()).await;
    assert_eq!(title, ipc::ErrorCode::InsufficientMemory.title());
    let remedy = app.wait_text("#sd-job-error .error-remedy", |t| !t.is_empty()).await;
    assert!(remedy.len() > 20, "{remedy}");
    let message = app.wait_text("#sd-job-error .error-message", |t| !t.is_empty()).await;
    assert!(message.contains("out of memory"), "{message}");
    app.screenshot("diffusion-api-2-failed-job").await;

    stop_and_leave_nothing(app).await;
}

/// The warm backend in the real window, with the real sd-server and sd-cli built by
/// `scripts/build-sd-server` (`GENAI_TEST_SD_SERVER`) and the tiny Flux.2 [klein] model: the
/// Runtime card names the warm sd-server the install check chose, the server card shows the
/// backend loading, Busy and Ready with one PID across two images, and Release returns it to
/// "Not loaded" with its process gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "real window: run scripts/test"]
async fn a_warm_backend_serves_two_images_and_release_ends_it() {
    let server = std::path::PathBuf::from(
        std::env::var_os("GENAI_TEST_SD_SERVER")
            .expect("GENAI_TEST_SD_SERVER must name an sd-server (scripts/build-sd-server)"),
    );
    let dir = TempDir::new("e2e-sd-warm");
    let home = dir.join("home");
    let storage = StorageLayout::create(StorageRoot::new(&home, StorageRootSource::Env)).unwrap();
    let folder = storage.diffusion_models().join("tiny-flux2");
    std::fs::create_dir_all(&folder).unwrap();
    let files = gguf::fixtures::tiny_flux2_klein(7).write_to(&folder).unwrap();
    let info = ModelInfo::local_files("tiny-flux2", "Tiny Flux.2", ModelKind::Diffusion, &files);
    std::fs::write(
        storage.diffusion_models().join("tiny-flux2.json"),
        serde_json::to_vec(&info).unwrap(),
    )
    .unwrap();
    let bins =
        Binaries::new(storage, EventBus::default(), BinariesConfig::from_env().unwrap()).unwrap();
    bins.set_custom(RuntimeKind::Diffusion, Some(&server.with_file_name("sd-cli"))).await.unwrap();

    let app =
        App::launch_with(LaunchOptions { genai_home: Some(home.clone()), ..Default::default() })
            .await;
    app.click("#tab-btn-diffusion").await;
    app.wait_text("#sd-model option", |t| t.starts_with("Tiny Flux.2")).await;
    let set = |pairs: &str| {
        format!(
            "const set = (sel, v) => {{ const e = document.querySelector(sel); e.value = v; \
               e.dispatchEvent(new Event(e.tagName === 'SELECT' ? 'change' : 'input')); }}; {pairs}"
        )
    };
    app.script(&set("set('#sd-port-input', 'auto');")).await;
    app.click("#sd-start").await;
    app.wait_text("#sd-state", |t| t == "Running").await;
    let from = app.wait_text("#sd-images-from", |t| !t.is_empty()).await;
    assert!(from.starts_with("warm sd-server"), "{from}");
    // The Runtime card names the path its check chose, and the sd-server it made the image with.
    let images = app.wait_text("#runtime-diffusion .runtime-images", |t| !t.is_empty()).await;
    let expect = std::fs::canonicalize(&server).unwrap().display().to_string();
    assert_eq!(images, format!("warm sd-server ({expect})"));
    app.wait_text("#sd-backend-state", |t| t == "Not loaded").await;

    app.wait_visible("#sd-prompt").await.send_keys("a lighthouse").await.unwrap();
    app.script(&set("set('#sd-size', 'custom');")).await;
    app.script(&set("set('#sd-width', '64'); set('#sd-height', '64'); set('#sd-steps', '2');"))
        .await;
    let mut pids = Vec::new();
    for round in 1..=2 {
        app.click("#sd-generate").await;
        app.wait_text("#sd-backend-state", |t| t == "Busy").await;
        app.screenshot(&format!("diffusion-warm-{round}-busy")).await;
        app.wait_text("#sd-job-status", |t| t == "Finished").await;
        app.wait_text("#sd-backend-state", |t| t == "Ready").await;
        let pid = app.wait_text("#sd-backend-pid", |t| t.parse::<u32>().is_ok()).await;
        let load = app.wait_text("#sd-backend-load", |t| t.ends_with(" s")).await;
        assert!(load != "0.0 s", "{load}");
        pids.push(pid.parse::<u32>().unwrap());
        let natural = app
            .script(
                "const i = document.querySelector('#sd-image-0'); \
                 return [i.complete, i.naturalWidth];",
            )
            .await;
        assert_eq!(natural, serde_json::json!([true, 64]));
    }
    assert_eq!(pids[0], pids[1], "one backend for both images");
    assert!(fake_runtime::alive(pids[0]));
    app.screenshot("diffusion-warm-3-ready").await;

    app.click("#sd-backend-release").await;
    app.wait_text("#sd-backend-state", |t| t == "Not loaded").await;
    let why = app.wait_text("#sd-backend-released", |t| !t.is_empty()).await;
    assert_eq!(why, "released by you");
    assert!(!fake_runtime::alive(pids[0]), "the backend's process ended");
    assert_eq!(app.wait_text("#sd-backend-pid", |_| true).await, "—");
    app.screenshot("diffusion-warm-4-released").await;

    stop_and_leave_nothing(app).await;
}
