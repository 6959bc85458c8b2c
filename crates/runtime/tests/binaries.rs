//! Runtime setup against the fixture server as a release mirror, with archives the tests build
//! around fake builds (`testkit::fake_runtime`): variant choice, fallbacks, checksum, the
//! validation cache and custom binaries.

use ipc::runtimes::{RuntimeKind, Variant};
use ipc::system::{Backend, GpuInfo, GpuVendor};
use ipc::{AppEvent, ErrorCode, StorageRootSource};
use runtime::binaries::manifest::{Asset, ReleaseManifest, RuntimeRelease};
use runtime::binaries::{Binaries, BinariesConfig, How};
use runtime::download::DownloadConfig;
use runtime::{EventBus, StorageLayout, StorageRoot};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use testkit::archive::{self, zip};
use testkit::fake_runtime::{self, Scenario};
use testkit::http::{FixtureServer, Route};
use testkit::TempDir;

/// Fake llama-servers re-run this test binary in server mode.
#[test]
#[ignore = "entry point of the fake llama-server, not a test"]
fn fake_llama_server_entry() {
    fake_runtime::serve_if_asked();
}

const VERSION: &str = "b9860";

fn sha(bytes: &[u8]) -> String {
    archive::sha256_hex(bytes)
}

fn tar_gz(files: &[(&str, &[u8])]) -> Vec<u8> {
    // Mode 0644: the installer sets the run bit itself.
    let files: Vec<(&str, &[u8], u32)> = files.iter().map(|(n, d)| (*n, *d, 0o644)).collect();
    archive::tar_gz(&files)
}

fn gpu(vendor: GpuVendor, backend: Backend) -> GpuInfo {
    GpuInfo {
        id: "gpu0".into(),
        name: "Test GPU".into(),
        vendor,
        backend,
        vram: None,
        unified_memory: false,
        driver_version: None,
        compute_capability: None,
        uuid: None,
        pci_address: None,
    }
}

struct Setup {
    _dir: TempDir,
    root: PathBuf,
    server: FixtureServer,
    calls: PathBuf,
    assets: Vec<Asset>,
    sd_assets: Vec<Asset>,
    events: EventBus,
    version: String,
}

impl Setup {
    async fn new(name: &str) -> Self {
        let dir = TempDir::new(&format!("bin-{name}"));
        let root = dir.join("home");
        let calls = dir.join("calls.log");
        Self {
            root,
            server: FixtureServer::start().await,
            calls,
            _dir: dir,
            assets: Vec::new(),
            sd_assets: Vec::new(),
            events: EventBus::default(),
            version: VERSION.into(),
        }
    }

    fn script(&self, s: Scenario) -> Vec<u8> {
        let exe = std::env::current_exe().unwrap();
        fake_runtime::llama_server_script(&exe, s, &self.calls).into_bytes()
    }

    /// Serves a llama build of `variant` whose binary behaves as `s`, as a tar.gz nested
    /// under a folder the way llama.cpp's Linux archives are.
    fn llama(&mut self, variant: Variant, s: Scenario) -> &mut Self {
        let file = format!("llama-{VERSION}-bin-{}.tar.gz", variant.label());
        let script = self.script(s);
        let body = tar_gz(&[
            (&format!("llama-{VERSION}/llama-server"), &script),
            (&format!("llama-{VERSION}/libggml.so"), b"not really a library"),
        ]);
        self.serve(variant, file, body, None)
    }

    fn serve(
        &mut self,
        variant: Variant,
        file: String,
        body: Vec<u8>,
        pinned: Option<String>,
    ) -> &mut Self {
        let sha256 = pinned.unwrap_or_else(|| sha(&body));
        self.server.add(&format!("/rel/{file}"), Route::bytes(body));
        let order = self.assets.len() as u32 + 1;
        self.assets.push(Asset { variant, order, file, sha256, dependencies: Vec::new() });
        self
    }

    fn binaries(&self) -> Binaries {
        let manifest = ReleaseManifest {
            runtimes: vec![
                RuntimeRelease {
                    runtime: RuntimeKind::Llama,
                    version: self.version.clone(),
                    base_url: "http://127.0.0.1:9/never/".into(),
                    executables: vec!["llama-server".into(), "llama-cli".into()],
                    platforms: BTreeMap::from([("linux-x64".into(), self.assets.clone())]),
                },
                RuntimeRelease {
                    runtime: RuntimeKind::Diffusion,
                    version: "master-782-b290693".into(),
                    base_url: "http://127.0.0.1:9/never/".into(),
                    executables: vec!["sd-cli".into(), "sd".into()],
                    platforms: BTreeMap::from([("linux-x64".into(), self.sd_assets.clone())]),
                },
            ],
        };
        let storage =
            StorageLayout::create(StorageRoot::new(&self.root, StorageRootSource::Env)).unwrap();
        let config = BinariesConfig {
            manifest,
            platform: Some("linux-x64".into()),
            env_mirror: Some(self.server.url("/rel")),
            checks: Default::default(),
            download: DownloadConfig {
                stall_timeout: Duration::from_secs(5),
                max_retries: 1,
                backoff: Duration::from_millis(10),
            },
        };
        Binaries::new(storage, self.events.clone(), config).unwrap()
    }

    fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(&self.calls)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn fetched(&self, variant: Variant) -> usize {
        self.server.gets(&format!("/rel/llama-{VERSION}-bin-{}.tar.gz", variant.label())).len()
    }

    fn installed_dirs(&self) -> Vec<String> {
        let dir = self.root.join("binaries/llama").join(VERSION);
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        v.sort();
        v
    }
}

#[tokio::test]
async fn cpu_build_installs_with_both_phases_and_logs_each_step() {
    let mut s = Setup::new("cpu").await;
    s.llama(Variant::Cpu, Scenario::Cpu);
    let bins = s.binaries();
    let mut rx = s.events.subscribe();
    let got = bins.ensure(RuntimeKind::Llama, &[], false).await.unwrap();
    assert_eq!(got.how, How::Installed);
    let i = &got.installed;
    assert_eq!((i.variant, i.version.as_str()), (Variant::Cpu, VERSION));
    assert_eq!(i.reported_version, "version: 9860 (fake)");
    assert!(i.generation_checked, "phase 2 ran");
    let exe = s.root.join("binaries/llama/b9860/cpu/llama-b9860/llama-server");
    assert_eq!(Path::new(&i.path), exe);
    assert!(exe.parent().unwrap().join("libggml.so").is_file(), "the libraries came along");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&exe).unwrap().permissions().mode() & 0o111, 0o111);
    }
    assert_eq!(i.sha256, sha(&std::fs::read(&exe).unwrap()));
    // Phase 1 ran --version; phase 2 loaded the carried tiny model on 127.0.0.1 with -ngl 0.
    let calls: Vec<String> =
        s.calls().into_iter().filter(|c| !c.starts_with("server pid")).collect();
    assert_eq!(calls[0], "--version");
    assert!(calls[1].contains("test-model/tiny-llama.gguf") && calls[1].contains("-ngl 0"));
    assert!(calls[1].contains("--host 127.0.0.1"));
    assert_eq!(s.installed_dirs(), ["cpu"], "no staging folder left");
    assert!(!s.root.join("binaries/llama/downloads/llama-b9860-bin-CPU.tar.gz").exists());

    let mut stages = Vec::new();
    let mut log = Vec::new();
    while let Ok(e) = rx.try_recv() {
        match e {
            AppEvent::BinaryProgress(p) => stages.push(p.stage),
            AppEvent::BinaryLog { line, .. } => log.push(line.message),
            _ => {}
        }
    }
    use ipc::runtimes::SetupStage::*;
    for want in [Downloading, Verifying, Extracting, Testing, Done] {
        assert!(stages.contains(&want), "{want:?} in {stages:?}");
    }
    let log = log.join("\n");
    for want in [
        "downloading http://127.0.0.1",
        "SHA-256 matches",
        "unpacked 2 files",
        "Phase 1: ✓",
        "Phase 2: ✓",
        "installed llama-server b9860 (CPU)",
    ] {
        assert!(log.contains(want), "{want:?} in\n{log}");
    }
    let status = bins.status(RuntimeKind::Llama);
    assert_eq!(status.installed.as_ref(), Some(i));
    assert!(!status.busy && status.last_error.is_none());
    assert!(status.log.iter().any(|l| l.message.contains("Phase 2: ✓")));
}

#[tokio::test]
async fn cuda_is_not_even_downloaded_without_nvidia() {
    let mut s = Setup::new("nocuda").await;
    s.llama(Variant::Cuda, Scenario::GpuOk).llama(Variant::Cpu, Scenario::Cpu);
    let bins = s.binaries();
    let amd = gpu(GpuVendor::Amd, Backend::Vulkan);
    let got = bins.ensure(RuntimeKind::Llama, &[amd], false).await.unwrap();
    assert_eq!(got.installed.variant, Variant::Cpu);
    assert_eq!(s.fetched(Variant::Cuda), 0, "no CUDA download without an NVIDIA GPU");

    // With an NVIDIA GPU and its driver, CUDA comes first and sticks when it works.
    let mut s = Setup::new("cuda").await;
    s.llama(Variant::Cuda, Scenario::GpuOk).llama(Variant::Cpu, Scenario::Cpu);
    let nvidia = gpu(GpuVendor::Nvidia, Backend::Cuda);
    let got = s.binaries().ensure(RuntimeKind::Llama, &[nvidia], false).await.unwrap();
    assert_eq!(got.installed.variant, Variant::Cuda);
    assert_eq!(got.installed.devices, ["CUDA0: Fake GPU 24GB"]);
    assert_eq!(got.installed.offloaded_layers, Some((3, 3)));
    assert!(s.calls()[1].contains("-ngl 999"), "all layers on the GPU: {:?}", s.calls());
    assert_eq!(s.fetched(Variant::Cpu), 0);
}

#[tokio::test]
async fn phase1_failure_falls_back_to_the_next_variant() {
    let mut s = Setup::new("p1").await;
    s.llama(Variant::Vulkan, Scenario::Phase1Broken).llama(Variant::Cpu, Scenario::Cpu);
    let bins = s.binaries();
    let got = bins.ensure(RuntimeKind::Llama, &[gpu(GpuVendor::Amd, Backend::Vulkan)], false).await;
    let got = got.unwrap();
    assert_eq!(got.installed.variant, Variant::Cpu);
    assert_eq!(s.installed_dirs(), ["cpu"], "the broken build was not kept");
    let log: Vec<String> =
        bins.status(RuntimeKind::Llama).log.into_iter().map(|l| l.message).collect();
    assert!(
        log.iter().any(|l| l.contains("Vulkan build rejected") && l.contains("exit")),
        "{log:#?}"
    );
}

#[tokio::test]
async fn gpu_error_line_and_silent_cpu_fallback_each_move_on() {
    let mut s = Setup::new("gpuerr").await;
    s.llama(Variant::Cuda, Scenario::GpuError)
        .llama(Variant::Vulkan, Scenario::NoGpu)
        .llama(Variant::Cpu, Scenario::Cpu);
    let bins = s.binaries();
    let got =
        bins.ensure(RuntimeKind::Llama, &[gpu(GpuVendor::Nvidia, Backend::Cuda)], false).await;
    assert_eq!(got.unwrap().installed.variant, Variant::Cpu);
    let log: Vec<String> =
        bins.status(RuntimeKind::Llama).log.into_iter().map(|l| l.message).collect();
    assert!(
        log.iter().any(|l| l.contains("CUDA build rejected: GPU error detected: CUDA error")),
        "{log:#?}"
    );
    assert!(
        log.iter().any(|l| l.contains("Vulkan build rejected: silent CPU fallback")),
        "{log:#?}"
    );
    // Every fake server the checks started was stopped.
    let pids = fake_runtime::server_pids(&s.calls);
    assert_eq!(pids.len(), 3, "{:?}", s.calls());
    assert!(pids.iter().all(|p| !fake_runtime::alive(*p)), "a fake server was left: {pids:?}");
}

#[tokio::test]
async fn a_crash_while_loading_fails_fast_and_nothing_works() {
    let mut s = Setup::new("crash").await;
    s.llama(Variant::Cpu, Scenario::CrashOnLoad);
    let started = std::time::Instant::now();
    let err = s.binaries().ensure(RuntimeKind::Llama, &[], false).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(20), "not the whole timeout");
    assert_eq!(err.code(), ErrorCode::BinaryInvalid);
    let msg = err.to_string();
    assert!(msg.contains("CPU") && msg.contains("model load error"), "{msg}");
    assert!(err.to_ipc().remedy.contains("setup log"));
    assert!(s.installed_dirs().is_empty());
}

#[tokio::test]
async fn checksum_mismatch_installs_nothing() {
    let mut s = Setup::new("sha").await;
    let body = tar_gz(&[("llama-server", &s.script(Scenario::Cpu))]);
    s.serve(Variant::Cpu, "llama-b9860-bin-CPU.tar.gz".into(), body, Some("ab".repeat(32)));
    let bins = s.binaries();
    let err = bins.ensure(RuntimeKind::Llama, &[], false).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::BinaryInvalid);
    assert!(err.to_string().contains("SHA-256"), "{err}");
    assert!(s.calls().is_empty(), "the unverified binary never ran");
    assert!(s.installed_dirs().is_empty());
    assert!(bins.installed(RuntimeKind::Llama).is_none());
    let left: Vec<_> = std::fs::read_dir(s.root.join("binaries/llama/downloads"))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
    let status = bins.status(RuntimeKind::Llama);
    assert_eq!(status.last_error.unwrap().code, ErrorCode::BinaryInvalid);
}

#[tokio::test]
async fn hostile_archives_are_refused() {
    let mut s = Setup::new("hostile").await;
    let script = s.script(Scenario::Cpu);
    // zip-slip: the executable sits behind a `..` entry.
    let body = zip(&[("../llama-server", &script)]);
    s.serve(Variant::Vulkan, "llama-b9860-bin-vulkan.zip".into(), body, None);
    s.llama(Variant::Cpu, Scenario::Cpu);
    let bins = s.binaries();
    let got = bins.ensure(RuntimeKind::Llama, &[gpu(GpuVendor::Amd, Backend::Vulkan)], false).await;
    assert_eq!(got.unwrap().installed.variant, Variant::Cpu);
    let log = bins.status(RuntimeKind::Llama).log;
    assert!(log.iter().any(|l| l.message.contains("would land outside")), "{log:#?}");
    assert!(!s.root.join("binaries/llama/llama-server").exists());
    assert!(!s.root.join("binaries/llama/b9860/llama-server").exists());
}

/// A build whose archive carries shared-library version links (a link to a link) installs
/// through the mirror and passes both phases; one whose links chain out of the folder
/// (`a -> .`, `a/b -> ..`, `a/b/escaped.txt`) is refused before anything is written outside,
/// and the next variant is taken.
#[tokio::test]
async fn version_links_install_and_run_and_a_link_chain_falls_back() {
    use archive::Item::{File, Link};
    let mut s = Setup::new("links").await;
    let script = s.script(Scenario::Cpu);
    let chain = archive::tar_gz_items(&[
        File("llama-b9860/llama-server", &script, 0o755),
        Link("a", "."),
        Link("a/b", ".."),
        File("a/b/escaped.txt", b"outside", 0o644),
    ]);
    s.serve(Variant::Vulkan, "llama-b9860-bin-ubuntu-vulkan-x64.tar.gz".into(), chain, None);
    let benign = archive::tar_gz_items(&[
        File("llama-b9860/llama-server", &script, 0o755),
        File("llama-b9860/libggml-base.so.0.9.4", b"base library", 0o644),
        Link("llama-b9860/libggml-base.so.0", "libggml-base.so.0.9.4"),
        Link("llama-b9860/libggml-base.so", "libggml-base.so.0"),
    ]);
    s.serve(Variant::Cpu, "llama-b9860-bin-ubuntu-x64.tar.gz".into(), benign, None);
    let bins = s.binaries();
    let around = |root: &Path| {
        let mut v: Vec<String> = std::fs::read_dir(root.join("binaries/llama"))
            .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        v.sort();
        v
    };
    let amd = gpu(GpuVendor::Amd, Backend::Vulkan);
    let got = bins.ensure(RuntimeKind::Llama, &[amd], false).await.unwrap();

    assert_eq!(got.installed.variant, Variant::Cpu, "the chain's variant was refused");
    assert!(got.installed.generation_checked, "phase 2 ran the linked build");
    let dir = s.root.join("binaries/llama/b9860/cpu/llama-b9860");
    assert_eq!(std::fs::read(dir.join("libggml-base.so")).unwrap(), b"base library");
    assert!(std::fs::symlink_metadata(dir.join("libggml-base.so")).unwrap().is_symlink());
    let log = bins.status(RuntimeKind::Llama).log;
    assert!(
        log.iter().any(|l| l.message.contains("entry a/b/escaped.txt lies under the link a")),
        "{log:#?}"
    );
    for dir in [s.root.join("binaries/llama/b9860"), s.root.join("binaries/llama"), s.root.clone()]
    {
        assert!(!dir.join("escaped.txt").exists(), "escaped into {}", dir.display());
    }
    assert_eq!(s.installed_dirs(), ["cpu"], "no vulkan folder, no staging left");
    assert!(!around(&s.root).iter().any(|n| n.contains("unpacking")));
}

#[tokio::test]
async fn cache_hit_runs_and_hashes_nothing_and_a_changed_file_is_checked_again() {
    let mut s = Setup::new("cache").await;
    s.llama(Variant::Cpu, Scenario::Cpu);
    let bins = s.binaries();
    let first = bins.ensure(RuntimeKind::Llama, &[], false).await.unwrap();
    let hashed = bins.hashed_bytes();
    assert_eq!(hashed, first.installed.size, "hashed once, at install");
    let calls = s.calls().len();

    // A new app start: a fresh Binaries over the same storage.
    let bins = s.binaries();
    let again = bins.ensure(RuntimeKind::Llama, &[], false).await.unwrap();
    assert_eq!(again.how, How::Cache);
    assert_eq!(again.installed, first.installed);
    assert_eq!(bins.hashed_bytes(), 0, "no hashing on a cache hit");
    assert_eq!(s.calls().len(), calls, "the binary was not run");
    assert_eq!(s.server.gets("/rel/llama-b9860-bin-CPU.tar.gz").len(), 1);

    // The binary's mtime moves: checked again, not downloaded again.
    let exe = PathBuf::from(&first.installed.path);
    let f = std::fs::File::options().append(true).open(&exe).unwrap();
    f.set_modified(std::time::SystemTime::now() + Duration::from_secs(60)).unwrap();
    drop(f);
    let re = bins.ensure(RuntimeKind::Llama, &[], false).await.unwrap();
    assert_eq!(re.how, How::Rechecked);
    assert!(s.calls().len() >= calls + 2, "both phases ran again");
    assert_eq!(s.server.gets("/rel/llama-b9860-bin-CPU.tar.gz").len(), 1);
    assert_eq!(bins.ensure(RuntimeKind::Llama, &[], false).await.unwrap().how, How::Cache);

    // Forced: checked again even though nothing changed.
    let before = s.calls().len();
    let forced = bins.ensure(RuntimeKind::Llama, &[], true).await.unwrap();
    assert_eq!(forced.how, How::Rechecked);
    assert!(forced.installed.checked_at_ms >= re.installed.checked_at_ms);
    assert!(s.calls().len() >= before + 2);
}

#[tokio::test]
async fn a_broken_installed_binary_is_replaced_and_a_new_pin_keeps_the_old_until_it_passes() {
    let mut s = Setup::new("replace").await;
    s.llama(Variant::Cpu, Scenario::Cpu);
    let bins = s.binaries();
    let first = bins.ensure(RuntimeKind::Llama, &[], false).await.unwrap();
    // Damage the installed binary: the recheck fails, so a fresh copy is installed.
    std::fs::write(&first.installed.path, "#!/bin/sh\nexit 3\n").unwrap();
    let fixed = bins.ensure(RuntimeKind::Llama, &[], false).await.unwrap();
    assert_eq!(fixed.how, How::Installed);
    assert_eq!(s.server.gets("/rel/llama-b9860-bin-CPU.tar.gz").len(), 2);

    // The app moves to a newer pin whose only build is broken: the old install and its cache
    // stay in use.
    s.version = "b10001".into();
    s.assets.clear();
    let body = tar_gz(&[("llama-server", &s.script(Scenario::Phase1Broken))]);
    s.serve(Variant::Cpu, "llama-b10001-bin-CPU.tar.gz".into(), body, None);
    let bins = s.binaries();
    let err = bins.ensure(RuntimeKind::Llama, &[], false).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::BinaryInvalid);
    let kept = bins.installed(RuntimeKind::Llama).unwrap();
    assert_eq!(kept.version, VERSION);
    assert!(Path::new(&kept.path).is_file());
    assert!(!s.root.join("binaries/llama/b10001/cpu").exists());
    let log = bins.status(RuntimeKind::Llama).log;
    assert!(log.iter().any(|l| l.message.contains("stays until it passes")), "{log:#?}");
}

#[tokio::test]
async fn custom_binaries_are_checked_like_downloads() {
    let s = Setup::new("custom").await;
    let bins = s.binaries();
    let good = s.root.parent().unwrap().join("my-llama-server");
    fake_runtime::write_script(&good, &String::from_utf8(s.script(Scenario::Cpu)).unwrap());
    let got = bins.set_custom(RuntimeKind::Llama, Some(&good)).await.unwrap().unwrap();
    assert!(got.installed.custom && got.installed.variant == Variant::Custom);
    assert!(got.installed.generation_checked);
    assert_eq!(
        bins.status(RuntimeKind::Llama).custom_path.as_deref(),
        got.installed.path.as_str().into()
    );
    // The next start trusts it without a download (the manifest has no llama builds at all).
    assert_eq!(bins.ensure(RuntimeKind::Llama, &[], false).await.unwrap().how, How::Cache);

    // A file that is not llama-server is refused and the accepted one stays.
    let bad = s.root.parent().unwrap().join("not-llama");
    fake_runtime::write_script(&bad, "#!/bin/sh\necho hello\n");
    let err = bins.set_custom(RuntimeKind::Llama, Some(&bad)).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::BinaryInvalid);
    assert!(err.to_string().contains("no version"), "{err}");
    assert_eq!(bins.installed(RuntimeKind::Llama).unwrap().path, got.installed.path);
    let err = bins.set_custom(RuntimeKind::Llama, Some(Path::new("/no/such/llama-server"))).await;
    assert_eq!(err.unwrap_err().code(), ErrorCode::BinaryNotFound);

    // sd-cli: judged by its usage text even though it prints an error line first.
    let sd = s.root.parent().unwrap().join("sd-cli");
    fake_runtime::write_script(&sd, &fake_runtime::sd_cli_script(true, &s.calls));
    let got = bins.set_custom(RuntimeKind::Diffusion, Some(&sd)).await.unwrap().unwrap();
    assert_eq!(got.installed.reported_version, "usage: sd-cli [options]");
    assert!(got.installed.generation_checked, "it made the check's image");
    let broken = s.root.parent().unwrap().join("sd-broken");
    fake_runtime::write_script(&broken, &fake_runtime::sd_cli_script(false, &s.calls));
    let err = bins.set_custom(RuntimeKind::Diffusion, Some(&broken)).await.unwrap_err();
    assert!(err.to_string().contains("no usage text"), "{err}");
    // One that answers --help but makes no image is not installed (the check's 64×64 image).
    let help_only = s.root.parent().unwrap().join("sd-help-only");
    fake_runtime::write_script(
        &help_only,
        "#!/bin/sh\necho 'usage: sd-cli [options]'\necho 'Arguments:'\nexit 0\n",
    );
    let err = bins.set_custom(RuntimeKind::Diffusion, Some(&help_only)).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::BinaryInvalid);
    assert!(err.to_string().contains("wrote no PNG"), "{err}");
    assert_eq!(bins.installed(RuntimeKind::Diffusion).unwrap().path, got.installed.path);
    // A record from before that check (no image made) is checked again once, then trusted.
    let cache = runtime::binaries::cache::ValidationCache::new(s.root.join("binaries"));
    let stamp = runtime::binaries::cache::FileStamp::of(&sd).unwrap();
    let old =
        ipc::runtimes::InstalledRuntime { generation_checked: false, ..got.installed.clone() };
    cache.save(&old, stamp).await.unwrap();
    let images = |calls: Vec<String>| calls.iter().filter(|c| c.contains(" -o ")).count();
    let before = images(s.calls());
    let again = bins.ensure(RuntimeKind::Diffusion, &[], false).await.unwrap();
    assert_eq!(again.how, How::Rechecked);
    assert!(again.installed.generation_checked);
    assert_eq!(images(s.calls()), before + 1, "one more test image");
    let cached = bins.ensure(RuntimeKind::Diffusion, &[], false).await.unwrap();
    assert_eq!((cached.how, images(s.calls())), (How::Cache, before + 1));

    // Clearing the choice goes back to the release build.
    assert!(bins.set_custom(RuntimeKind::Llama, None).await.unwrap().is_none());
    assert!(bins.installed(RuntimeKind::Llama).is_none());
}

#[tokio::test]
async fn sd_cli_installs_from_a_zip() {
    let mut s = Setup::new("sd").await;
    // With an sd-server that cannot start: the check tries it first, then makes the image
    // through sd-cli, and the record says images come one sd-cli run each, and why.
    let server =
        "#!/bin/sh\necho 'error while loading shared libraries: libfoo.so' >&2\nexit 127\n";
    let body = zip(&[
        ("sd-cli", fake_runtime::sd_cli_script(true, &s.calls).as_bytes()),
        ("sd-server", server.as_bytes()),
    ]);
    let file = "sd-master-b290693-bin-Linux-x86_64.zip".to_owned();
    s.server.add(&format!("/rel/{file}"), Route::bytes(body.clone()));
    s.sd_assets.push(Asset {
        variant: Variant::Cpu,
        order: 1,
        file,
        sha256: sha(&body),
        dependencies: Vec::new(),
    });
    let bins = s.binaries();
    let got = bins.ensure(RuntimeKind::Diffusion, &[], false).await.unwrap();
    assert_eq!(got.installed.variant, Variant::Cpu);
    // Phase 1, then the functional check: a 64×64 image in one step from the tiny Flux.2 model.
    let calls = s.calls();
    assert_eq!(calls[0], "--help");
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert!(calls[1].contains("-W 64 -H 64 --steps 1"), "{calls:?}");
    for file in ["flux2-tiny/dit.gguf", "flux2-tiny/qwen3.gguf", "flux2-tiny/taef2.gguf"] {
        assert!(calls[1].contains(file), "{file}: {calls:?}");
    }
    match &got.installed.images {
        Some(ipc::runtimes::ImagePath::PerImage { why }) => {
            assert!(why.starts_with("its sd-server failed the check"), "{why}");
            assert!(why.contains("libfoo.so"), "its own words: {why}");
        }
        other => panic!("{other:?}"),
    }
    let installed = Path::new(&got.installed.path);
    assert!(runtime::process::is_executable(&installed.with_file_name("sd-server")));
    let log = bins.status(RuntimeKind::Diffusion).log;
    assert!(log.iter().any(|l| l.message.starts_with("images: one sd-cli run per image")));

    // A record from before the check chose the path is checked again once.
    let cache = runtime::binaries::cache::ValidationCache::new(s.root.join("binaries"));
    let stamp = runtime::binaries::cache::FileStamp::of(installed).unwrap();
    let old = ipc::runtimes::InstalledRuntime { images: None, ..got.installed.clone() };
    cache.save(&old, stamp).await.unwrap();
    let again = bins.ensure(RuntimeKind::Diffusion, &[], false).await.unwrap();
    assert_eq!(again.how, How::Rechecked);
    assert_eq!(again.installed.images, got.installed.images);
    let cached = bins.ensure(RuntimeKind::Diffusion, &[], false).await.unwrap();
    assert_eq!(cached.how, How::Cache);
}

/// Bytes gzip cannot shrink, so an archive is as large as asked.
fn noise(len: usize) -> Vec<u8> {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A runtime download that stalls half-way is cancelled from the card: Cancel keeps the
/// `.part` and the next Install continues it with `Range`; Cancel with discard deletes it.
#[tokio::test]
async fn a_runtime_download_can_be_cancelled_and_resumed_or_discarded() {
    for discard in [false, true] {
        let mut s = Setup::new(if discard { "cancel-discard" } else { "cancel-keep" }).await;
        let body = tar_gz(&[
            (&format!("llama-{VERSION}/llama-server"), &s.script(Scenario::Cpu)),
            (&format!("llama-{VERSION}/libggml.so"), &noise(256 * 1024)),
        ]);
        let file = format!("llama-{VERSION}-bin-CPU.tar.gz");
        let route = format!("/rel/{file}");
        s.serve(Variant::Cpu, file.clone(), body.clone(), None);
        s.server.add_fault(&route, testkit::http::Fault::StallAfter(100_000));
        let bins = s.binaries();
        let e = bins.cancel(RuntimeKind::Llama, discard).unwrap_err();
        assert_eq!(e.code(), ErrorCode::InvalidInput, "nothing to cancel yet: {e}");
        let mut rx = s.events.subscribe();
        let task = {
            let bins = bins.clone();
            tokio::spawn(async move { bins.ensure(RuntimeKind::Llama, &[], false).await })
        };
        // The card shows the download moving, then the bytes stop coming.
        loop {
            let ev = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.unwrap();
            if let Ok(AppEvent::BinaryProgress(p)) = ev {
                if p.stage == ipc::runtimes::SetupStage::Downloading && p.done > 0 {
                    break;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(bins.status(RuntimeKind::Llama).busy);
        let t = std::time::Instant::now();
        bins.cancel(RuntimeKind::Llama, discard).unwrap();
        let err = task.await.unwrap().unwrap_err();
        assert_eq!(err.code(), ErrorCode::Cancelled, "{err}");
        assert!(t.elapsed() < Duration::from_secs(3), "not only at the stall timeout");
        let status = bins.status(RuntimeKind::Llama);
        assert!(!status.busy && status.installed.is_none());
        assert_eq!(status.last_error.map(|e| e.code), Some(ErrorCode::Cancelled));
        let part = s.root.join(format!("binaries/llama/downloads/{file}.part"));
        let kept = std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
        let log: Vec<String> = status.log.iter().map(|l| l.message.clone()).collect();
        if discard {
            assert!(!part.exists(), "the partial archive is deleted");
            assert!(log.iter().any(|l| l.contains("partial download was deleted")), "{log:?}");
        } else {
            assert_eq!(kept, 100_000, "the bytes fetched are kept");
            assert!(log.iter().any(|l| l.contains("is kept")), "{log:?}");
        }
        assert!(s.calls().is_empty(), "nothing half-downloaded ran");

        // Install again: it continues (or starts over) and installs.
        let got = bins.ensure(RuntimeKind::Llama, &[], false).await.unwrap();
        assert_eq!(got.installed.variant, Variant::Cpu);
        let gets = s.server.gets(&route);
        let range = gets.last().unwrap().header("range").map(str::to_owned);
        if discard {
            assert_eq!(range, None, "started over");
        } else {
            assert_eq!(range.as_deref(), Some("bytes=100000-"), "continued where it stopped");
        }
    }
}
