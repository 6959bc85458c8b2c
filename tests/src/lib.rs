//! Drives the built app in a real window, the way a person would, over WebDriver.
//!
//! `App::launch` starts (when no `DISPLAY` is set) an Xvfb server, then `tauri-driver` in a
//! process group of its own, which starts WebKitWebDriver, which starts the app. Dropping the
//! `App`, also while a failed assertion unwinds, ends that whole group and the Xvfb server, so no
//! test leaves a process behind.

use fantoccini::{elements::Element, Client, ClientBuilder, Locator};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long to wait for the window to show something before failing.
pub const WAIT: Duration = Duration::from_secs(15);

/// The workspace's target folder (CARGO_TARGET_DIR when set).
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
}

/// The app binary under test: `GENAI_APP_BIN`, else the debug build in the target folder.
pub fn app_binary() -> PathBuf {
    let path = std::env::var_os("GENAI_APP_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| target_dir().join("debug/genai-control-panel"));
    assert!(
        path.is_file(),
        "the app binary {} does not exist: build it with `scripts/test` (or `cd ui && trunk build` \
         then `cargo build -p genai-control-panel`), or point GENAI_APP_BIN at one",
        path.display()
    );
    path.canonicalize().expect("canonical app path")
}

/// A child process that is ended, with its whole process group, when dropped.
struct Guarded {
    child: Child,
    what: &'static str,
}

impl Guarded {
    fn spawn(mut cmd: Command, what: &'static str) -> Self {
        #[cfg(unix)]
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let child = cmd
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("could not start {what}: {e} (run scripts/setup)"));
        Self { child, what }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        let group = -(self.child.id() as i32);
        // SIGTERM first: tauri-driver only ends WebKitWebDriver (and so the app) on SIGTERM; a
        // SIGKILL orphans them with the native port still bound.
        unsafe { libc::kill(group, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // Whatever of the group is still there (the app, its WebKit processes) goes now.
        unsafe { libc::kill(group, libc::SIGKILL) };
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = self.what;
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port()
}

fn wait_until(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !ready() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Starts Xvfb on a display number it finds free itself (`-displayfd`) and returns once it
/// accepts connections. Choosing the number here by the files in /tmp/.X11-unix missed servers
/// of other mount namespaces (a chroot's, a container's), which hold the same abstract socket:
/// two runs side by side then picked the same display and one Xvfb could not start.
fn start_xvfb() -> (Guarded, String) {
    use std::io::BufRead;
    let mut cmd = Command::new("Xvfb");
    // Xvfb writes the display number to fd 1 when it is ready.
    cmd.args(["-displayfd", "1", "-screen", "0", "1280x860x24", "-nolisten", "tcp", "-noreset"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut xvfb = Guarded::spawn(cmd, "Xvfb");
    let out = xvfb.child.stdout.take().expect("Xvfb's standard output");
    let mut line = String::new();
    std::io::BufReader::new(out).read_line(&mut line).expect("reading Xvfb's display number");
    let n: u32 = line.trim().parse().unwrap_or_else(|_| {
        panic!("Xvfb did not start (it printed {line:?} for its display number; run scripts/setup)")
    });
    (xvfb, format!(":{n}"))
}

/// Options for [`App::launch_with`].
#[derive(Default)]
pub struct LaunchOptions {
    /// `GENAI_HOME` for the app; a fresh temporary folder when `None`.
    pub genai_home: Option<PathBuf>,
    /// More environment for the app (a release mirror, a manifest).
    pub env: Vec<(String, String)>,
    /// Another Tauri binary than the app under test (the idle benchmark's plain window).
    pub binary: Option<PathBuf>,
}

/// The app running in a real window, with a WebDriver session on it.
pub struct App {
    pub client: Client,
    genai_home: PathBuf,
    temp_home: Option<PathBuf>,
    // Dropped after `client`, driver before Xvfb (fields drop in declaration order).
    driver: Guarded,
    binary: PathBuf,
    _xvfb: Option<Guarded>,
}

impl App {
    pub async fn launch() -> Self {
        Self::launch_with(LaunchOptions::default()).await
    }

    pub async fn launch_with(opts: LaunchOptions) -> Self {
        let binary = opts.binary.clone().unwrap_or_else(app_binary);
        let (xvfb, display) = match std::env::var("DISPLAY") {
            Ok(d) if !d.is_empty() => (None, d),
            _ => {
                let (x, d) = start_xvfb();
                (Some(x), d)
            }
        };
        let (genai_home, temp_home) = match opts.genai_home {
            Some(h) => (h, None),
            None => {
                let h = std::env::temp_dir().join(format!(
                    "genai-e2e-{}-{}",
                    std::process::id(),
                    free_port()
                ));
                (h.clone(), Some(h))
            }
        };
        let mut caps = serde_json::Map::new();
        caps.insert("browserName".into(), "wry".into());
        caps.insert(
            "tauri:options".into(),
            serde_json::json!({ "application": binary.display().to_string() }),
        );
        // tauri-driver sometimes drops the first session request while WebKitWebDriver starts
        // (seen once in CI as "SendRequest"): a fresh driver on fresh ports gets another try.
        let mut attempt = 0;
        let (client, driver) = loop {
            attempt += 1;
            let port = free_port();
            let native_port = free_port();
            let mut cmd = Command::new("tauri-driver");
            cmd.args(["--port", &port.to_string(), "--native-port", &native_port.to_string()])
                .env("DISPLAY", &display)
                .env("GENAI_HOME", &genai_home)
                .envs(opts.env.iter().map(|(k, v)| (k, v)))
                .stdout(Stdio::null());
            let driver = Guarded::spawn(cmd, "tauri-driver");
            wait_until("tauri-driver to listen", || {
                std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
            });
            match ClientBuilder::native()
                .capabilities(caps.clone())
                .connect(&format!("http://127.0.0.1:{port}"))
                .await
            {
                Ok(client) => break (client, driver),
                Err(e) if attempt < 3 => {
                    eprintln!("no WebDriver session (try {attempt}): {e}; retrying");
                    drop(driver);
                }
                Err(e) => panic!("no WebDriver session on {}: {e}", binary.display()),
            }
        };
        Self { client, genai_home, temp_home, driver, binary, _xvfb: xvfb }
    }

    /// The app's own process and every process under it (its WebKit processes, the servers it
    /// started): not tauri-driver or WebKitWebDriver, which only drive it.
    pub fn app_tree(&self) -> Vec<u32> {
        let exe = self.binary.display().to_string();
        let group = self.driver_pid();
        let roots: Vec<u32> = live_processes()
            .filter(|p| p.pgrp == group && p.cmdline.starts_with(&exe))
            .map(|p| p.pid)
            .collect();
        fn under(pid: u32, out: &mut Vec<u32>) {
            out.push(pid);
            let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).into_iter().flatten();
            for t in tasks.flatten() {
                let children =
                    std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
                for c in children.split_whitespace().filter_map(|c| c.parse().ok()) {
                    under(c, out);
                }
            }
        }
        let mut out = Vec::new();
        for r in roots {
            under(r, &mut out);
        }
        out
    }

    /// The `GENAI_HOME` the app was started with.
    pub fn genai_home(&self) -> &Path {
        &self.genai_home
    }

    /// The process id of tauri-driver, the root of the app's process group.
    pub fn driver_pid(&self) -> u32 {
        self.driver.pid()
    }

    /// The proportional set size of the app's processes named `comm` (as /proc shows it,
    /// `WebKitWebProces` for the web process), in MiB.
    pub fn pss_mib(&self, comm: &str) -> u64 {
        self.pids_named(comm).into_iter().map(|p| smaps_kb(p, "Pss")).sum::<u64>() / 1024
    }

    /// The app's processes named `comm` (as /proc shows it, `WebKitWebProces` for the web
    /// process).
    pub fn pids_named(&self, comm: &str) -> Vec<u32> {
        let named = |pid: &u32| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default().trim() == comm
        };
        self.app_tree().into_iter().filter(named).collect()
    }

    /// Waits until an element matching `css` exists and is displayed.
    pub async fn wait_visible(&self, css: &str) -> Element {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok(el) = self.client.find(Locator::Css(css)).await {
                if el.is_displayed().await.unwrap_or(false) {
                    return el;
                }
            }
            assert!(Instant::now() < deadline, "{css} did not become visible within {WAIT:?}");
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    }

    /// Waits until `css` is displayed with text for which `ok` holds; returns that text.
    pub async fn wait_text(&self, css: &str, ok: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + WAIT;
        let mut last = String::new();
        loop {
            if let Ok(el) = self.client.find(Locator::Css(css)).await {
                if let Ok(text) = el.text().await {
                    if ok(&text) {
                        return text;
                    }
                    last = text;
                }
            }
            assert!(
                Instant::now() < deadline,
                "{css} never showed the expected text; last: {last:?}"
            );
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    }

    pub async fn click(&self, css: &str) {
        self.wait_visible(css).await.click().await.unwrap_or_else(|e| panic!("click {css}: {e}"));
    }

    pub async fn is_displayed(&self, css: &str) -> bool {
        match self.client.find(Locator::Css(css)).await {
            Ok(el) => el.is_displayed().await.unwrap_or(false),
            Err(_) => false,
        }
    }

    pub async fn script(&self, js: &str) -> serde_json::Value {
        self.client.execute(js, vec![]).await.unwrap_or_else(|e| panic!("script failed: {e}"))
    }

    /// Saves a PNG of the window under `target/e2e/<name>.png` and returns its bytes.
    ///
    /// WebKit's snapshot waits for the page's next rendering update after it is asked for, and
    /// a page at rest (the app runs no timers) has none until something changes: while the
    /// snapshot is taken, one pixel in the bottom-right corner changes colour every 30 ms.
    pub async fn screenshot(&self, name: &str) -> Vec<u8> {
        self.script(
            "let p = document.getElementById('e2e-paint'); \
             if (!p) { p = document.createElement('div'); p.id = 'e2e-paint'; \
               p.style.cssText = 'position:fixed;right:0;bottom:0;width:1px;height:1px;pointer-events:none;z-index:2147483647'; \
               document.body.appendChild(p); } \
             window.__e2ePaint = setInterval(() => { p.style.background = \
               p.style.background === 'rgb(1, 1, 1)' ? 'rgb(2, 2, 2)' : 'rgb(1, 1, 1)'; }, 30);",
        )
        .await;
        let png = self.client.screenshot().await.expect("screenshot");
        self.script("clearInterval(window.__e2ePaint);").await;
        let dir = target_dir().join("e2e");
        std::fs::create_dir_all(&dir).expect("create target/e2e");
        std::fs::write(dir.join(format!("{name}.png")), &png).expect("write screenshot");
        png
    }

    /// Kills the app with SIGKILL, as a crash or `kill -9` would (nothing is saved on the way
    /// out), then ends the driver and the rest of its processes.
    pub fn kill(self) {
        let app = self.binary.display().to_string();
        let group = self.driver_pid();
        for p in live_processes().filter(|p| p.pgrp == group && p.cmdline.contains(&app)) {
            unsafe { libc::kill(p.pid as i32, libc::SIGKILL) };
        }
        drop(self);
    }

    /// Ends the WebDriver session cleanly (the app quits), then the processes; returns the
    /// process group they ran in, so a test can check that nothing of it is left.
    pub async fn finish(self) -> u32 {
        let _ = self.client.clone().close().await;
        self.driver_pid()
    }
}

impl Drop for App {
    fn drop(&mut self) {
        // A test that failed half-way leaves the app's children that run in their own process
        // groups (llama-server, sd-cli) behind when the app is killed: end them, so that one
        // failure does not leave servers running on 8080–8083 for the tests after it. (A passing
        // journey asserts they are gone before this runs.)
        let home = self.genai_home.display().to_string();
        for p in live_processes().filter(|p| p.cmdline.contains(&home)) {
            unsafe { libc::kill(p.pid as i32, libc::SIGKILL) };
        }
        if let Some(h) = &self.temp_home {
            let _ = std::fs::remove_dir_all(h);
        }
    }
}

/// A field of `/proc/<pid>/smaps_rollup` (`Rss`, `Pss`…) in kB; 0 when the process is gone.
pub fn smaps_kb(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            let rest = l.strip_prefix(key)?.strip_prefix(':')?;
            rest.trim().trim_end_matches("kB").trim().parse().ok()
        })
        .unwrap_or(0)
}

/// A model already downloaded, as the Models tab leaves it: `<home>/models/<kind>/<id>.gguf` and
/// its record beside it. Returns the file's path.
pub fn installed_model(
    home: &Path,
    kind: ipc::models::ModelKind,
    id: &str,
    name: &str,
    bytes: &[u8],
) -> PathBuf {
    let folder = home.join("models").join(kind.dir());
    std::fs::create_dir_all(&folder).expect("create the models folder");
    let path = folder.join(format!("{id}.gguf"));
    std::fs::write(&path, bytes).expect("write the model");
    let p = path.display().to_string();
    let info = ipc::models::ModelInfo::local_file(id, name, kind, &p, bytes.len() as u64);
    std::fs::write(folder.join(format!("{id}.json")), serde_json::to_vec(&info).unwrap())
        .expect("write the model's record");
    path
}

/// The tiny real llama model (`gguf::fixtures::tiny_llama`) installed as "Tiny Llama".
pub fn installed_tiny_llama(home: &Path) -> PathBuf {
    let bytes = gguf::fixtures::tiny_llama(Default::default()).to_bytes();
    installed_model(home, ipc::models::ModelKind::Llm, "tiny-llama", "Tiny Llama", &bytes)
}

/// Live (non-zombie) processes in process group `pgid`, as `(pid, command name)`, once they have
/// had up to 5 s to go: a SIGKILL is delivered at once but a big process (a WebKit renderer)
/// takes a moment to exit on a busy machine. What is still there then is left behind.
pub fn live_group_members(pgid: u32) -> Vec<(u32, String)> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left: Vec<(u32, String)> =
            live_processes().filter(|p| p.pgrp == pgid).map(|p| (p.pid, p.comm)).collect();
        if left.is_empty() || Instant::now() > deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Live (not zombie) processes whose command line contains `needle`: for children that run in
/// their own process group, such as the runtime checks' llama-server.
pub fn live_processes_matching(needle: &str) -> Vec<(u32, String)> {
    live_processes().filter(|p| p.cmdline.contains(needle)).map(|p| (p.pid, p.cmdline)).collect()
}

struct Proc {
    pid: u32,
    pgrp: u32,
    comm: String,
    cmdline: String,
}

/// Every process in /proc that is not a zombie.
fn live_processes() -> impl Iterator<Item = Proc> {
    let dir = std::fs::read_dir("/proc").into_iter().flatten().flatten();
    dir.filter_map(|entry| {
        let pid = entry.file_name().to_str()?.parse::<u32>().ok()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // pid (comm) state ppid pgrp ...; comm may hold spaces, so split after the last ')'.
        let (head, rest) = stat.rsplit_once(')')?;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.first() == Some(&"Z") {
            return None;
        }
        let pgrp = fields.get(2)?.parse().ok()?;
        let comm = head.split_once('(').map(|(_, c)| c.to_owned()).unwrap_or_default();
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
            .unwrap_or_default();
        Some(Proc { pid, pgrp, comm, cmdline })
    })
}

/// The app launched with the tiny llama installed and llama-server on a release mirror served
/// by `server`, its home under `dir`: the start of every LLM journey.
pub async fn launch_with_tiny_llama(server: &testkit::http::FixtureServer, dir: &Path) -> App {
    let (env, _) = llama_release_mirror(server, dir);
    let home = dir.join("home");
    installed_tiny_llama(&home);
    App::launch_with(LaunchOptions { genai_home: Some(home), env, ..Default::default() }).await
}

/// Environment that makes the app install llama-server from a release mirror: the fixture
/// `server` serves the real llama-server (`GENAI_TEST_LLAMA_SERVER`) and its RPC worker as the
/// Linux CPU build of b9860, and a manifest in `dir` lists it with its SHA-256. Answers the env
/// and the archive's URL path.
pub fn llama_release_mirror(
    server: &testkit::http::FixtureServer,
    dir: &Path,
) -> (Vec<(String, String)>, String) {
    use runtime::binaries::manifest::{Asset, ReleaseManifest};
    let real = std::env::var_os("GENAI_TEST_LLAMA_SERVER")
        .expect("GENAI_TEST_LLAMA_SERVER must name a llama-server (scripts/build-llama-server)");
    // The RPC worker rides along, as in llama.cpp's own release archives.
    let worker = std::path::Path::new(&real).with_file_name("ggml-rpc-server");
    let worker = std::fs::read(&worker).unwrap_or_else(|e| {
        panic!("{} ({e}): rebuild with scripts/build-llama-server", worker.display())
    });
    let exe = std::fs::read(real).unwrap();
    let files = [
        ("llama-b9860/llama-server", exe.as_slice(), 0o755),
        ("llama-b9860/ggml-rpc-server", worker.as_slice(), 0o755),
    ];
    let body = testkit::archive::tar_gz(&files);
    let file = "llama-b9860-bin-ubuntu-x64.tar.gz";
    let cpu = Asset {
        variant: ipc::runtimes::Variant::Cpu,
        order: 1,
        file: file.into(),
        sha256: testkit::archive::sha256_hex(&body),
        dependencies: vec![],
    };
    let manifest = ReleaseManifest::single(
        ipc::runtimes::RuntimeKind::Llama,
        "b9860",
        "linux-x64",
        &["llama-server"],
        vec![cpu],
    );
    let path = format!("/mirror/{file}");
    server.add(&path, testkit::http::Route::bytes(body));
    let manifest_path = dir.join("releases.json");
    std::fs::write(&manifest_path, serde_json::to_vec(&manifest).unwrap()).unwrap();
    let env = vec![
        ("GENAI_RELEASE_MANIFEST".into(), manifest_path.display().to_string()),
        ("GENAI_RELEASE_MIRROR".into(), server.url("/mirror")),
    ];
    (env, path)
}
