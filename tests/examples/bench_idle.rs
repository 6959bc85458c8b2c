//! What an open, idle window costs: CPU (% of one core) and memory (RSS, PSS) of the whole
//! process tree, for a plain Tauri + Leptos window built with the same toolchain in the same run
//! (the baseline), then for the app on each of its five tabs with nothing running, and on the
//! Resource Monitor with the LLM server running. Each figure is taken after a settle, over a
//! window of seconds, and printed with its ratio to the baseline.
//!
//! `scripts/bench-idle` builds the release binaries and runs this; by hand:
//!   GENAI_APP_BIN=<release app> BENCH_PLAIN_BIN=<plain window> GENAI_TEST_LLAMA_SERVER=<llama-server>
//!   cargo run -p e2e --example bench_idle [-- <settle s> <window s>]      (default 10 and 60)
//! The windows are driven over WebDriver, as the journeys are; tauri-driver and WebKitWebDriver
//! are not counted (they are not part of the app).

use e2e::{installed_tiny_llama, llama_release_mirror, smaps_kb, App, LaunchOptions};
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use testkit::http::FixtureServer;
use testkit::TempDir;

/// One measurement of a process tree.
#[derive(Clone, Debug, Default)]
struct Figures {
    /// Of one core, over the window.
    cpu_pct: f64,
    rss_mb: f64,
    pss_mb: f64,
    /// PSS by process name, largest first.
    parts: Vec<(String, f64)>,
}

/// utime + stime of a process (all its threads), in clock ticks.
fn ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields are counted after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default().trim().to_owned()
}

/// The processes of `app`'s tree for which `keep` holds, by pid.
fn tree(app: &App, keep: &dyn Fn(&str) -> bool) -> Vec<u32> {
    app.app_tree().into_iter().filter(|p| keep(&comm(*p))).collect()
}

/// CPU over `window` and memory at its end, of the processes of `app`'s tree that `keep` names
/// (a process that starts during the window counts from its start).
async fn measure(app: &App, window: Duration, keep: &dyn Fn(&str) -> bool) -> Figures {
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let before: HashMap<u32, u64> =
        tree(app, keep).into_iter().filter_map(|p| Some((p, ticks(p)?))).collect();
    let t0 = Instant::now();
    tokio::time::sleep(window).await;
    let pids = tree(app, keep);
    let secs = t0.elapsed().as_secs_f64();
    let used: u64 = pids
        .iter()
        .filter_map(|p| Some(ticks(*p)?.saturating_sub(*before.get(p).unwrap_or(&0))))
        .sum();
    let sum = |key| pids.iter().map(|p| smaps_kb(*p, key)).sum::<u64>() as f64 / 1024.0;
    let mut parts: Vec<(String, f64)> = Vec::new();
    for p in &pids {
        let (name, mb) = (comm(*p), smaps_kb(*p, "Pss") as f64 / 1024.0);
        match parts.iter_mut().find(|(n, _)| *n == name) {
            Some((_, total)) => *total += mb,
            None => parts.push((name, mb)),
        }
    }
    parts.sort_by(|a, b| b.1.total_cmp(&a.1));
    Figures {
        cpu_pct: used as f64 / hz / secs * 100.0,
        rss_mb: sum("Rss"),
        pss_mb: sum("Pss"),
        parts,
    }
}

fn row(name: &str, f: &Figures, base: &Figures) {
    println!(
        "{name:<48} {:>7.2} % {:>7.0} MB {:>7.0} MB   rss {:>4.2}x  pss {:>4.2}x",
        f.cpu_pct,
        f.rss_mb,
        f.pss_mb,
        f.rss_mb / base.rss_mb,
        f.pss_mb / base.pss_mb,
    );
    let parts: Vec<String> = f.parts.iter().map(|(n, mb)| format!("{n} {mb:.0}")).collect();
    println!("{:<48}   PSS MB: {}", "", parts.join(", "));
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<u64> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let settle = Duration::from_secs(*args.first().unwrap_or(&10));
    let window = Duration::from_secs(*args.get(1).unwrap_or(&60));
    let plain = PathBuf::from(
        std::env::var_os("BENCH_PLAIN_BIN").expect("BENCH_PLAIN_BIN: the plain window's binary"),
    );
    let everything = |_: &str| true;
    let not_server = |c: &str| c != "llama-server";
    let only_server = |c: &str| c == "llama-server";
    println!(
        "{:<48} {:>9} {:>10} {:>10}   (CPU: % of one core over {} s after {} s; memory: whole tree)",
        "",
        "CPU",
        "RSS",
        "PSS",
        window.as_secs(),
        settle.as_secs()
    );

    // The baseline: a window that shows a heading and does nothing else, with Tauri's defaults,
    // and again with the settings the app gives its own window: the JIT off
    // (src-tauri/src/engine.rs) and, on a machine without a GPU render node, compositing off
    // (src-tauri/src/drawing.rs). The ratios are taken against the plain window set up as the
    // app is, so that they weigh the app's own content; the others are printed beside it.
    let plain_run = |env: Vec<(&str, &str)>| {
        let plain = plain.clone();
        let env = env.into_iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect();
        async move {
            let app =
                App::launch_with(LaunchOptions { binary: Some(plain), env, ..Default::default() })
                    .await;
            app.wait_visible("h1").await;
            tokio::time::sleep(settle).await;
            let f = measure(&app, window, &everything).await;
            app.finish().await;
            f
        }
    };
    let render_node = runtime::system::has_render_node();
    let no_jit = ("JSC_useJIT", "0");
    let no_compositing = ("WEBKIT_DISABLE_COMPOSITING_MODE", "1");
    let defaults = plain_run(vec![]).await;
    row("plain window, Tauri's defaults", &defaults, &defaults);
    let as_the_app = if render_node {
        plain_run(vec![no_jit]).await
    } else {
        let drawn_so = plain_run(vec![no_compositing]).await;
        row("plain window, no compositing", &drawn_so, &defaults);
        plain_run(vec![no_compositing, no_jit]).await
    };
    row("plain window, set up as the app (the baseline)", &as_the_app, &as_the_app);
    let base = as_the_app;
    println!(
        "(ratios above the baseline are to Tauri's defaults; this machine has {} GPU render node: \
         the app's window runs without the JIT{}; the app's ratios are to the plain window set up so)",
        if render_node { "a" } else { "no" },
        if render_node { "" } else { " and without compositing" }
    );

    // The app, with a model on disk and llama-server on a local release mirror.
    let server = FixtureServer::start().await;
    let dir = TempDir::new("bench-idle");
    let (env, _) = llama_release_mirror(&server, dir.path());
    let home = dir.join("home");
    installed_tiny_llama(&home);
    let app =
        App::launch_with(LaunchOptions { genai_home: Some(home), env, ..Default::default() }).await;
    app.wait_visible("#cpu-model").await;
    let mut worst = 0.0f64;
    for (id, label) in [
        ("system", "System Info"),
        ("models", "Models"),
        ("llm", "LLM Server"),
        ("diffusion", "Diffusion Server"),
        ("monitor", "Resource Monitor"),
    ] {
        app.click(&format!("#tab-btn-{id}")).await;
        app.wait_visible(&format!("#tab-{id} .tab-heading")).await;
        tokio::time::sleep(settle).await;
        let f = measure(&app, window, &everything).await;
        worst = worst.max(f.cpu_pct);
        row(&format!("app, {label}, nothing running"), &f, &base);
    }

    // The LLM server running (health checks and /slots reads go on); the Monitor on screen.
    app.click("#tab-btn-llm").await;
    app.wait_text("#llm-model option", |t| t == "Tiny Llama").await;
    app.click("#llm-start").await;
    let deadline = Instant::now() + Duration::from_secs(120);
    while app.wait_text("#llm-state", |t| !t.is_empty()).await != "Running" {
        assert!(Instant::now() < deadline, "the LLM server did not start");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    app.click("#tab-btn-monitor").await;
    app.wait_visible("#server-llm").await;
    tokio::time::sleep(settle).await;
    let sample = measure(&app, window, &not_server);
    let server_side = measure(&app, window, &only_server);
    let (f, s) = tokio::join!(sample, server_side);
    row("app, Resource Monitor, LLM running", &f, &base);
    println!(
        "{:<48} {:>7.2} % {:>7.0} MB {:>7.0} MB   (the server itself, not counted above)",
        "  llama-server (tiny model)", s.cpu_pct, s.rss_mb, s.pss_mb
    );
    app.click("#tab-btn-llm").await;
    app.click("#llm-stop").await;
    app.wait_text("#llm-state", |t| t == "Stopped").await;
    app.finish().await;
    println!(
        "\nworst idle tab: {worst:.2} % of a core; Monitor with the LLM running: {:.2} %",
        f.cpu_pct
    );
}
