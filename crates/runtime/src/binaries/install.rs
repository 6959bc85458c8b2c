//! [`Binaries`]: makes sure a working llama-server / sd-cli is installed, from the validation
//! cache when it still holds, else by downloading, unpacking and checking each variant that fits
//! the machine, best first.
//!
//! Layout under the storage root:
//! `binaries/<runtime>/<version>/<variant>/…` (the unpacked build), `binaries/<runtime>/
//! validation.json` (the cache), `binaries/<runtime>/downloads/` (archives while they download),
//! `binaries/test-model/tiny-llama.gguf` (the model phase 2 loads). A new build is unpacked and
//! checked in a staging folder and renamed into place only after it passes; the previous
//! install, and the cache pointing at it, stay until then.

use super::archive;
use super::cache::{FileStamp, ValidationCache};
use super::check::{self, CheckConfig, CheckFailure};
use super::manifest::{
    candidates, platform_key, Asset, ReleaseManifest, RuntimeRelease, ENV_MIRROR,
};
use crate::download::{
    Command as DlCommand, Control, DownloadConfig, DownloadSpec, Downloader, Outcome,
};
use crate::events::EventBus;
use crate::storage::StorageLayout;
use crate::{now_ms, Result, RuntimeError};
use ipc::event::{LogLevel, LogLine};
use ipc::runtimes::{
    BinaryProgress, ImagePath, InstalledRuntime, RuntimeKind, RuntimeStatus, SetupStage, Variant,
};
use ipc::system::GpuInfo;
use ipc::{AppEvent, IpcError};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Setup log lines kept per runtime for the card.
const LOG_LINES: usize = 300;

/// How [`Binaries::ensure`] got its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum How {
    /// The cache held: size and mtime matched, nothing was run or hashed.
    Cache,
    /// The installed binary was checked again (changed file, or forced).
    Rechecked,
    /// A build was downloaded, checked and installed.
    Installed,
}

/// What a build's checks found: its own version line, llama-server's load report, and how an
/// sd.cpp build makes images.
struct Passed {
    version: String,
    report: Option<super::scan::LoadReport>,
    images: Option<ImagePath>,
}

#[derive(Debug, Clone)]
pub struct Ensured {
    pub installed: InstalledRuntime,
    pub how: How,
}

#[derive(Debug, Clone)]
pub struct BinariesConfig {
    pub manifest: ReleaseManifest,
    /// The platform key to install for; `None` where no build is published.
    pub platform: Option<String>,
    /// `GENAI_RELEASE_MIRROR`, read once; it wins over the saved setting.
    pub env_mirror: Option<String>,
    pub checks: CheckConfig,
    pub download: DownloadConfig,
}

impl BinariesConfig {
    /// This machine, the manifest from `GENAI_RELEASE_MANIFEST` or the embedded one.
    pub fn from_env() -> Result<Self> {
        Ok(Self {
            manifest: ReleaseManifest::from_env()?,
            platform: platform_key(std::env::consts::OS, std::env::consts::ARCH).map(Into::into),
            env_mirror: std::env::var(ENV_MIRROR).ok().filter(|m| !m.trim().is_empty()),
            checks: CheckConfig::default(),
            download: DownloadConfig::default(),
        })
    }
}

/// Saved choices: `config/runtimes.json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Settings {
    mirror: Option<String>,
}

#[derive(Debug, Default)]
struct KindState {
    busy: bool,
    last_error: Option<IpcError>,
    log: std::collections::VecDeque<LogLine>,
}

struct Inner {
    storage: StorageLayout,
    events: EventBus,
    downloader: Downloader,
    config: BinariesConfig,
    cache: ValidationCache,
    state: [Mutex<KindState>; 2],
    locks: [tokio::sync::Mutex<()>; 2],
    control: [Control; 2],
    hashed_bytes: AtomicU64,
}

/// Cheap to clone; one per app.
#[derive(Clone)]
pub struct Binaries {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Binaries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Binaries").finish_non_exhaustive()
    }
}

fn idx(kind: RuntimeKind) -> usize {
    match kind {
        RuntimeKind::Llama => 0,
        RuntimeKind::Diffusion => 1,
    }
}

impl Binaries {
    pub fn new(storage: StorageLayout, events: EventBus, config: BinariesConfig) -> Result<Self> {
        let downloader = Downloader::new(config.download.clone())?;
        let cache = ValidationCache::new(storage.binaries());
        Ok(Self {
            inner: Arc::new(Inner {
                storage,
                events,
                downloader,
                config,
                cache,
                state: Default::default(),
                locks: Default::default(),
                control: Default::default(),
                hashed_bytes: AtomicU64::new(0),
            }),
        })
    }

    /// Bytes of executables hashed since start: a cache hit adds none.
    pub fn hashed_bytes(&self) -> u64 {
        self.inner.hashed_bytes.load(Ordering::Relaxed)
    }

    fn release(&self, kind: RuntimeKind) -> Result<&RuntimeRelease> {
        self.inner.config.manifest.release(kind).ok_or_else(|| {
            RuntimeError::Unsupported(format!("the release manifest has no {}", kind.program()))
        })
    }

    fn settings_path(&self) -> PathBuf {
        self.inner.storage.config().join("runtimes.json")
    }

    fn settings(&self) -> Settings {
        std::fs::read(self.settings_path())
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    /// The mirror in use: `GENAI_RELEASE_MIRROR`, else the saved setting.
    pub fn mirror(&self) -> Option<String> {
        self.inner.config.env_mirror.clone().or(self.settings().mirror)
    }

    /// Saves the mirror setting (`None` or blank: download from the release's own site).
    pub async fn set_mirror(&self, mirror: Option<String>) -> Result<()> {
        let mirror = mirror.map(|m| m.trim().to_owned()).filter(|m| !m.is_empty());
        if let Some(m) = &mirror {
            if !(m.starts_with("https://") || m.starts_with("http://")) {
                return Err(RuntimeError::InvalidInput(format!(
                    "the mirror {m:?} is not an http(s) URL"
                )));
            }
        }
        let mut s = self.settings();
        s.mirror = mirror;
        crate::storage::write_json_atomic(&self.settings_path(), &s).await
    }

    pub fn status(&self, kind: RuntimeKind) -> RuntimeStatus {
        let installed = self.inner.cache.load(kind).map(|r| r.installed);
        let st = self.inner.state[idx(kind)].lock().unwrap();
        RuntimeStatus {
            runtime: kind,
            pinned_version: self.release(kind).map(|r| r.version.clone()).unwrap_or_default(),
            custom_path: installed.as_ref().filter(|i| i.custom).map(|i| i.path.clone()),
            installed,
            busy: st.busy,
            last_error: st.last_error.clone(),
            log: st.log.iter().cloned().collect(),
            mirror: self.mirror(),
        }
    }

    /// The executable to run, if one passed its checks (no checks run here).
    pub fn installed(&self, kind: RuntimeKind) -> Option<InstalledRuntime> {
        self.inner.cache.load(kind).map(|r| r.installed)
    }

    fn log(&self, kind: RuntimeKind, level: LogLevel, message: impl Into<String>) {
        let line = LogLine { at_ms: now_ms(), level, message: message.into() };
        {
            let mut st = self.inner.state[idx(kind)].lock().unwrap();
            if st.log.len() == LOG_LINES {
                st.log.pop_front();
            }
            st.log.push_back(line.clone());
        }
        self.inner.events.emit(AppEvent::BinaryLog { runtime: kind, line });
    }

    fn progress(
        &self,
        kind: RuntimeKind,
        stage: SetupStage,
        variant: Option<Variant>,
        done: u64,
        total: Option<u64>,
    ) {
        self.inner.events.emit(AppEvent::BinaryProgress(BinaryProgress {
            runtime: kind,
            stage,
            variant,
            done,
            total,
        }));
    }

    /// Runs `job` as the one setup of `kind` at a time, keeping busy / last_error for the card.
    async fn exclusive<T>(
        &self,
        kind: RuntimeKind,
        job: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        let _guard = self.inner.locks[idx(kind)].lock().await;
        {
            let mut st = self.inner.state[idx(kind)].lock().unwrap();
            st.busy = true;
            st.last_error = None;
        }
        // A cancel meant for an earlier setup does not stop this one.
        self.inner.control[idx(kind)].resume();
        let out = job.await;
        if matches!(out, Err(RuntimeError::Cancelled)) {
            let kept = self.inner.control[idx(kind)].current() == DlCommand::Pause;
            self.log(
                kind,
                LogLevel::Warn,
                if kept {
                    "setup cancelled; what was downloaded is kept, and Install continues from there"
                } else {
                    "setup cancelled; the partial download was deleted"
                }
                .to_owned(),
            );
        }
        {
            let mut st = self.inner.state[idx(kind)].lock().unwrap();
            st.busy = false;
            st.last_error = out.as_ref().err().map(|e| e.to_ipc());
        }
        let stage = if out.is_ok() { SetupStage::Done } else { SetupStage::Failed };
        self.progress(kind, stage, None, 0, None);
        out
    }

    /// Stops the running setup of `kind` at its download (or before the next build variant).
    /// `discard`: the partial archive is deleted; otherwise it stays and the next Install resumes
    /// it with `Range`. The setup ends with `CANCELLED`.
    pub fn cancel(&self, kind: RuntimeKind, discard: bool) -> Result<()> {
        if !self.inner.state[idx(kind)].lock().unwrap().busy {
            return Err(RuntimeError::InvalidInput(format!(
                "no setup of {} is running",
                kind.program()
            )));
        }
        let control = &self.inner.control[idx(kind)];
        if discard {
            control.cancel();
        } else {
            control.pause();
        }
        Ok(())
    }

    /// Makes sure a checked build of `kind` is installed and answers it. `gpus` decides which
    /// variants are worth trying; `force` re-runs the checks even when the cache holds.
    pub async fn ensure(
        &self,
        kind: RuntimeKind,
        gpus: &[GpuInfo],
        force: bool,
    ) -> Result<Ensured> {
        self.exclusive(kind, self.ensure_locked(kind, gpus, force)).await
    }

    async fn ensure_locked(
        &self,
        kind: RuntimeKind,
        gpus: &[GpuInfo],
        force: bool,
    ) -> Result<Ensured> {
        let release = self.release(kind)?.clone();
        let program = kind.program();
        if let Some(rec) = self.inner.cache.load(kind) {
            let i = &rec.installed;
            let label = format!("{program} {} ({})", i.version, i.variant.label());
            let usable = i.custom || i.version == release.version;
            // A record from before sd.cpp's functional check, or from before that check chose
            // how images are made, is checked again once.
            let checked_fully =
                kind == RuntimeKind::Llama || (i.generation_checked && i.images.is_some());
            if usable && !force && rec.still_matches() && checked_fully {
                self.log(kind, LogLevel::Info, format!("✓ {label}: the cached check holds"));
                return Ok(Ensured { installed: rec.installed, how: How::Cache });
            }
            if usable && Path::new(&i.path).is_file() {
                let why = match (force, checked_fully) {
                    (true, _) => "checking again as asked",
                    (false, false) => "checked before it had to make a test image; checking again",
                    (false, true) => "the file changed",
                };
                self.log(kind, LogLevel::Info, format!("{label}: {why}"));
                let path = PathBuf::from(&i.path);
                match self.check_binary(kind, &path, i.variant, &i.version, i.custom).await? {
                    Ok(installed) => return Ok(Ensured { installed, how: How::Rechecked }),
                    Err(e) if i.custom => {
                        return Err(RuntimeError::BinaryRejected {
                            path: i.path.clone(),
                            detail: e.to_string(),
                        })
                    }
                    Err(_) => {
                        self.log(kind, LogLevel::Warn, format!("{label} failed; installing anew"))
                    }
                }
            } else if i.custom {
                return Err(RuntimeError::BinaryNotFound(format!(
                    "the custom {program} {} is gone",
                    i.path
                )));
            } else if i.version != release.version {
                self.log(
                    kind,
                    LogLevel::Info,
                    format!(
                        "the app now pins {program} {}; installing it (the {} build stays until it passes)",
                        release.version, i.version
                    ),
                );
            }
        }
        self.install(kind, &release, gpus).await
    }

    /// Points `kind` at a binary on disk after the same checks a download gets; `None` goes
    /// back to the app's own build (installed on the next [`Binaries::ensure`]).
    pub async fn set_custom(
        &self,
        kind: RuntimeKind,
        path: Option<&Path>,
    ) -> Result<Option<Ensured>> {
        self.exclusive(kind, async {
            let Some(path) = path else {
                if self.inner.cache.load(kind).is_some_and(|r| r.installed.custom) {
                    self.inner.cache.forget(kind)?;
                    self.log(kind, LogLevel::Info, "custom binary cleared");
                }
                return Ok(None);
            };
            let path = std::fs::canonicalize(path).map_err(|_| {
                RuntimeError::BinaryNotFound(format!("{} does not exist", path.display()))
            })?;
            if !path.is_file() {
                return Err(RuntimeError::BinaryNotFound(format!(
                    "{} is not a file",
                    path.display()
                )));
            }
            self.log(
                kind,
                LogLevel::Info,
                format!("checking the custom binary {}", path.display()),
            );
            match self.check_binary(kind, &path, Variant::Custom, "custom", true).await? {
                Ok(installed) => Ok(Some(Ensured { installed, how: How::Rechecked })),
                Err(e) => Err(RuntimeError::BinaryRejected {
                    path: path.display().to_string(),
                    detail: e.to_string(),
                }),
            }
        })
        .await
    }

    /// The model phase 2 loads, written from `crates/gguf` the first time it is needed.
    /// The tiny Flux.2 [klein] model of sd-cli's check (about 92 MB), written once into
    /// `binaries/test-model/flux2-tiny/` on a blocking thread; a stamp written last says it is
    /// whole.
    async fn sd_test_model(&self) -> Result<check::SdCheckModel> {
        // format 2: the TAESD file carries its encoder too (sd-server loads it).
        const STAMP: &str = "tiny_flux2_klein(7) format 2";
        let dir = self.inner.storage.binaries().join("test-model").join("flux2-tiny");
        let model = check::SdCheckModel {
            diffusion_model: dir.join("dit.gguf"),
            llm: dir.join("qwen3.gguf"),
            taesd: dir.join("taef2.gguf"),
        };
        let stamp = dir.join("stamp");
        if tokio::fs::read_to_string(&stamp).await.ok().as_deref() == Some(STAMP) {
            return Ok(model);
        }
        let files = model.clone();
        tokio::task::spawn_blocking(move || -> Result<()> {
            std::fs::create_dir_all(&dir)
                .map_err(|e| RuntimeError::io("creating folder", &dir, e))?;
            let m = gguf::fixtures::tiny_flux2_klein(7);
            for (w, path) in [
                (m.diffusion_model, &files.diffusion_model),
                (m.llm, &files.llm),
                (m.taesd, &files.taesd),
            ] {
                let tmp = crate::storage::tmp_beside(path);
                std::fs::write(&tmp, w.to_bytes())
                    .map_err(|e| RuntimeError::io("writing", &tmp, e))?;
                std::fs::rename(&tmp, path).map_err(|e| RuntimeError::io("renaming", &tmp, e))?;
            }
            std::fs::write(&stamp, STAMP).map_err(|e| RuntimeError::io("writing", &stamp, e))
        })
        .await
        .map_err(|e| RuntimeError::Internal(format!("writing the test model: {e}")))??;
        Ok(model)
    }

    async fn test_model(&self) -> Result<PathBuf> {
        let dir = self.inner.storage.binaries().join("test-model");
        let path = dir.join("tiny-llama.gguf");
        let bytes = gguf::fixtures::tiny_llama(Default::default()).to_bytes();
        if tokio::fs::read(&path).await.ok().as_deref() != Some(&bytes[..]) {
            tokio::fs::create_dir_all(&dir)
                .await
                .map_err(|e| RuntimeError::io("creating folder", &dir, e))?;
            let tmp = dir.join(format!(".tiny-llama.gguf.{}", std::process::id()));
            tokio::fs::write(&tmp, &bytes)
                .await
                .map_err(|e| RuntimeError::io("writing", &tmp, e))?;
            tokio::fs::rename(&tmp, &path)
                .await
                .map_err(|e| RuntimeError::io("renaming", &tmp, e))?;
        }
        Ok(path)
    }

    /// Phase 1 and (for llama-server) phase 2 on `exe`; on a pass, hashes it and saves the cache.
    async fn check_binary(
        &self,
        kind: RuntimeKind,
        exe: &Path,
        variant: Variant,
        version: &str,
        custom: bool,
    ) -> Result<std::result::Result<InstalledRuntime, CheckFailure>> {
        let report = match self.run_checks(kind, exe, variant).await? {
            Ok(r) => r,
            Err(e) => return Ok(Err(e)),
        };
        let installed = self.record(kind, exe, variant, version, custom, report).await?;
        Ok(Ok(installed))
    }

    async fn run_checks(
        &self,
        kind: RuntimeKind,
        exe: &Path,
        variant: Variant,
    ) -> Result<std::result::Result<Passed, CheckFailure>> {
        let checks = &self.inner.config.checks;
        self.progress(kind, SetupStage::Testing, Some(variant), 1, Some(2));
        let mut log = |level: LogLevel, msg: String| self.log(kind, level, msg);
        let version = match check::phase1(kind, exe, checks, &mut log).await? {
            Ok(v) => v,
            Err(e) => return Ok(Err(e)),
        };
        if kind == RuntimeKind::Diffusion {
            self.progress(kind, SetupStage::Testing, Some(variant), 2, Some(2));
            return Ok(self.sd_phase2(exe).await?.map(|images| Passed {
                version,
                report: None,
                images: Some(images),
            }));
        }
        self.progress(kind, SetupStage::Testing, Some(variant), 2, Some(2));
        let model = self.test_model().await?;
        let mut log = |level: LogLevel, msg: String| self.log(kind, level, msg);
        Ok(check::phase2(exe, &model, variant, checks, &mut log).await?.map(|r| Passed {
            version,
            report: Some(r),
            images: None,
        }))
    }

    /// Phase 2 for sd.cpp, the way the build will make images: through the sd-server beside
    /// `exe` when the build has one and it makes the test image, else through `exe` itself.
    async fn sd_phase2(&self, exe: &Path) -> Result<std::result::Result<ImagePath, CheckFailure>> {
        let kind = RuntimeKind::Diffusion;
        let checks = &self.inner.config.checks;
        let model = self.sd_test_model().await?;
        let mut log = |level: LogLevel, msg: String| self.log(kind, level, msg);
        let why = match crate::diffusion::warm::server_beside(exe) {
            Some(server) => {
                let loras = model.diffusion_model.with_file_name("check-loras");
                match check::sd_server_phase2(&server, &model, &loras, checks, &mut log).await? {
                    Ok(_) => {
                        let server = server.display().to_string();
                        log(LogLevel::Info, format!("images: a warm sd-server ({server})"));
                        return Ok(Ok(ImagePath::WarmServer { server }));
                    }
                    Err(e) => format!("its sd-server failed the check: {e}"),
                }
            }
            None => "this build has no sd-server".to_owned(),
        };
        log(LogLevel::Info, format!("images: one sd-cli run per image ({why})"));
        let out = model.diffusion_model.with_file_name(format!("check-{}.png", std::process::id()));
        Ok(check::sd_phase2(exe, &model, &out, checks, &mut log)
            .await?
            .map(|_| ImagePath::PerImage { why }))
    }

    async fn record(
        &self,
        kind: RuntimeKind,
        exe: &Path,
        variant: Variant,
        version: &str,
        custom: bool,
        Passed { version: reported_version, report, images }: Passed,
    ) -> Result<InstalledRuntime> {
        let stamp = FileStamp::of(exe)
            .ok_or_else(|| RuntimeError::BinaryNotFound(format!("{} vanished", exe.display())))?;
        let exe_owned = exe.to_path_buf();
        let sha256 = tokio::task::spawn_blocking(move || crate::models::sha256_file(&exe_owned))
            .await
            .map_err(|e| RuntimeError::Internal(e.to_string()))??;
        self.inner.hashed_bytes.fetch_add(stamp.size, Ordering::Relaxed);
        let installed = InstalledRuntime {
            runtime: kind,
            version: version.to_owned(),
            variant,
            path: exe.display().to_string(),
            reported_version,
            size: stamp.size,
            sha256,
            checked_at_ms: now_ms(),
            // sd-cli gets here only after making its test image.
            generation_checked: report.is_some() || kind == RuntimeKind::Diffusion,
            devices: report.as_ref().map(|r| r.gpus.clone()).unwrap_or_default(),
            offloaded_layers: report.as_ref().and_then(|r| r.offloaded),
            custom,
            images,
        };
        match self.inner.cache.save(&installed, stamp).await {
            // The build works; only the record cannot be kept (checked again at the next start).
            Err(e @ RuntimeError::NewerFormat { .. }) => {
                self.log(kind, LogLevel::Warn, e.to_string())
            }
            other => other?,
        }
        Ok(installed)
    }

    async fn install(
        &self,
        kind: RuntimeKind,
        release: &RuntimeRelease,
        gpus: &[GpuInfo],
    ) -> Result<Ensured> {
        let program = kind.program();
        let platform = self.inner.config.platform.clone().ok_or_else(|| {
            RuntimeError::Unsupported(format!(
                "no {program} build is published for {} {}",
                std::env::consts::OS,
                std::env::consts::ARCH
            ))
        })?;
        let assets = candidates(release, &platform, gpus)?;
        let names: Vec<&str> = assets.iter().map(|a| a.variant.label()).collect();
        self.log(
            kind,
            LogLevel::Info,
            format!("{program} {} for {platform}: trying {}", release.version, names.join(" → ")),
        );
        let mut tried = Vec::new();
        for asset in assets {
            let label = asset.variant.label();
            if self.inner.control[idx(kind)].current() != DlCommand::Run {
                return Err(RuntimeError::Cancelled);
            }
            match self.try_variant(kind, release, asset).await {
                Ok(Ok(installed)) => {
                    self.prune_versions(kind, &release.version);
                    self.log(
                        kind,
                        LogLevel::Info,
                        format!("✓ installed {program} {} ({label})", release.version),
                    );
                    return Ok(Ensured { installed, how: How::Installed });
                }
                Ok(Err(failure)) => {
                    self.log(kind, LogLevel::Warn, format!("{label} build rejected: {failure}"));
                    tried.push(format!("{label}: {failure}"));
                }
                Err(RuntimeError::Cancelled) => return Err(RuntimeError::Cancelled),
                Err(e) => {
                    self.log(kind, LogLevel::Error, format!("{label} build failed: {e}"));
                    tried.push(format!("{label}: {e}"));
                }
            }
        }
        Err(RuntimeError::NoWorkingBuild { program: program.to_owned(), tried })
    }

    fn kind_dir(&self, kind: RuntimeKind) -> PathBuf {
        self.inner.storage.binaries().join(kind.dir())
    }

    /// Downloads one release file into `binaries/<runtime>/downloads/` (resuming a `.part`),
    /// checking its SHA-256 as it streams.
    async fn fetch(
        &self,
        kind: RuntimeKind,
        release: &RuntimeRelease,
        variant: Variant,
        file: &str,
        sha256: &str,
    ) -> Result<PathBuf> {
        let name = crate::storage::relative_inside(file)?;
        if name.components().count() != 1 {
            return Err(RuntimeError::PathOutsideRoot { given: file.to_owned() });
        }
        let dest = self.kind_dir(kind).join("downloads").join(&name);
        let url = release.url(file, self.mirror().as_deref());
        self.log(kind, LogLevel::Info, format!("downloading {url}"));
        let spec = DownloadSpec {
            url,
            dest: dest.clone(),
            expected_sha256: Some(sha256.to_owned()),
            bearer_token: None,
        };
        let control = self.inner.control[idx(kind)].clone();
        let mut last_pct = None;
        let outcome = self
            .inner
            .downloader
            .download(&spec, &control, |snap| {
                self.progress(
                    kind,
                    SetupStage::Downloading,
                    Some(variant),
                    snap.downloaded,
                    snap.total,
                );
                if let Some(t) = snap.total.filter(|t| *t > 0) {
                    let pct = snap.downloaded * 100 / t;
                    if last_pct.is_none_or(|p| pct >= p + 25) {
                        last_pct = Some(pct);
                        self.log(
                            kind,
                            LogLevel::Debug,
                            format!(
                                "{file}: {} of {}",
                                ipc::format::bytes(snap.downloaded),
                                ipc::format::bytes(t)
                            ),
                        );
                    }
                }
            })
            .await;
        match outcome {
            Ok(Outcome::Done(d)) => {
                self.progress(kind, SetupStage::Verifying, Some(variant), d.bytes, Some(d.bytes));
                self.log(kind, LogLevel::Info, format!("✓ {file}: SHA-256 matches ({})", d.sha256));
                Ok(d.path)
            }
            Ok(Outcome::Paused { .. }) => Err(RuntimeError::Cancelled),
            Err(e) => Err(e),
        }
    }

    /// Downloads, unpacks and checks one variant; moves it into place when it passes.
    async fn try_variant(
        &self,
        kind: RuntimeKind,
        release: &RuntimeRelease,
        asset: &Asset,
    ) -> Result<std::result::Result<InstalledRuntime, CheckFailure>> {
        let variant = asset.variant;
        let version_dir = self.kind_dir(kind).join(
            crate::storage::relative_inside(&release.version)
                .map_err(|_| RuntimeError::InvalidInput("bad version tag".into()))?,
        );
        let staging =
            version_dir.join(format!(".staging-{}-{}", variant.label(), std::process::id()));
        let _ = tokio::fs::remove_dir_all(&staging).await;
        let mut archives = Vec::new();
        let result = async {
            // Dependencies first: a missing CUDA runtime fails fast, before the big archive.
            for dep in &asset.dependencies {
                archives.push(self.fetch(kind, release, variant, &dep.file, &dep.sha256).await?);
            }
            let main = self.fetch(kind, release, variant, &asset.file, &asset.sha256).await?;
            archives.push(main.clone());
            let main_dir = staging.join("build");
            self.unpack(kind, variant, &main, &main_dir).await?;
            let exe_rel = find_executable(&main_dir, &release.executables).ok_or_else(|| {
                RuntimeError::BadArchive {
                    archive: asset.file.clone(),
                    detail: format!("no {} inside", release.executables.join(" / ")),
                }
            })?;
            let exe = main_dir.join(&exe_rel);
            let exe_dir = exe.parent().unwrap_or(&main_dir).to_path_buf();
            for (i, dep) in asset.dependencies.iter().enumerate() {
                let dep_dir = staging.join(format!("dep{i}"));
                self.unpack(kind, variant, &archives[i], &dep_dir).await?;
                merge_flat(&dep_dir, &exe_dir, &dep.file)?;
            }
            set_executable(&exe)?;
            let server = exe.with_file_name(crate::diffusion::warm::SERVER_FILE);
            if kind == RuntimeKind::Diffusion && server.is_file() {
                set_executable(&server)?;
            }
            match self.run_checks(kind, &exe, variant).await? {
                Err(e) => Ok(Err(e)),
                Ok(mut report) => {
                    let target = version_dir.join(variant.label().to_ascii_lowercase());
                    swap_into_place(&main_dir, &target)?;
                    report.images = moved(report.images, &main_dir, &target);
                    let exe = target.join(&exe_rel);
                    let rec =
                        self.record(kind, &exe, variant, &release.version, false, report).await?;
                    Ok(Ok(rec))
                }
            }
        }
        .await;
        let _ = tokio::fs::remove_dir_all(&staging).await;
        for a in archives {
            let _ = tokio::fs::remove_file(a).await;
        }
        result
    }

    async fn unpack(
        &self,
        kind: RuntimeKind,
        variant: Variant,
        archive_path: &Path,
        dest: &Path,
    ) -> Result<()> {
        let name = archive_path.file_name().unwrap_or_default().to_string_lossy().into_owned();
        self.log(kind, LogLevel::Info, format!("unpacking {name}"));
        let (a, d, me) = (archive_path.to_path_buf(), dest.to_path_buf(), self.clone());
        let files = tokio::task::spawn_blocking(move || {
            let mut last = std::time::Instant::now();
            archive::extract_with_progress(&a, &d, &mut |done, total| {
                if last.elapsed() >= crate::download::progress::EMIT_EVERY {
                    last = std::time::Instant::now();
                    me.progress(kind, SetupStage::Extracting, Some(variant), done, total);
                }
            })
        })
        .await
        .map_err(|e| RuntimeError::Internal(e.to_string()))??;
        let n = files.len() as u64;
        self.progress(kind, SetupStage::Extracting, Some(variant), n, Some(n));
        self.log(
            kind,
            LogLevel::Info,
            format!("✓ unpacked {n} file{} from {name}", if n == 1 { "" } else { "s" }),
        );
        Ok(())
    }

    /// Removes other versions of `kind` once `keep` is installed and cached.
    fn prune_versions(&self, kind: RuntimeKind, keep: &str) {
        let Ok(dir) = std::fs::read_dir(self.kind_dir(kind)) else { return };
        for entry in dir.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name != keep && name != "downloads" && entry.path().is_dir() {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
}

/// The executable inside an unpacked build: the first of `names` (preferred first, compared
/// without case) found anywhere in the tree, nearest the top first. Answers a path relative to
/// `root`.
/// The image path of a build checked in `from` and since moved to `to`.
fn moved(images: Option<ImagePath>, from: &Path, to: &Path) -> Option<ImagePath> {
    match images {
        Some(ImagePath::WarmServer { server }) => {
            let p = Path::new(&server);
            let now = p.strip_prefix(from).map_or_else(|_| p.to_path_buf(), |rel| to.join(rel));
            Some(ImagePath::WarmServer { server: now.display().to_string() })
        }
        other => other,
    }
}

pub fn find_executable(root: &Path, names: &[String]) -> Option<PathBuf> {
    let mut files = walk_files(root, 8);
    files.sort();
    names.iter().find_map(|want| {
        files
            .iter()
            .find(|(_, p)| {
                p.file_name().is_some_and(|n| n.to_string_lossy().eq_ignore_ascii_case(want))
            })
            .and_then(|(_, p)| p.strip_prefix(root).ok().map(Path::to_path_buf))
    })
}

/// Every regular file under `root` (not following links) with its depth, down to `max_depth`.
fn walk_files(root: &Path, max_depth: usize) -> Vec<(usize, PathBuf)> {
    let mut files = Vec::new();
    let mut stack = vec![(root.to_path_buf(), 0usize)];
    while let Some((dir, depth)) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for e in entries.flatten() {
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() && depth < max_depth {
                stack.push((e.path(), depth + 1));
            } else if ft.is_file() {
                files.push((depth, e.path()));
            }
        }
    }
    files
}

/// Moves every file of an unpacked dependency archive (the CUDA runtime libraries) next to the
/// executable. A name the main build already has is refused: one of them would silently win.
fn merge_flat(from: &Path, into: &Path, archive_name: &str) -> Result<()> {
    let existing: Vec<String> = std::fs::read_dir(into)
        .map_err(|e| RuntimeError::io("reading", into, e))?
        .flatten()
        .map(|x| x.file_name().to_string_lossy().to_ascii_lowercase())
        .collect();
    for (_, path) in walk_files(from, 8) {
        let name = path.file_name().unwrap_or_default().to_os_string();
        if existing.contains(&name.to_string_lossy().to_ascii_lowercase()) {
            return Err(RuntimeError::BadArchive {
                archive: archive_name.to_owned(),
                detail: format!("{} is also in the build itself", name.to_string_lossy()),
            });
        }
        let to = into.join(&name);
        if to.exists() {
            return Err(RuntimeError::BadArchive {
                archive: archive_name.to_owned(),
                detail: format!("{} appears twice", name.to_string_lossy()),
            });
        }
        std::fs::rename(&path, &to).map_err(|e| RuntimeError::io("moving", &path, e))?;
    }
    Ok(())
}

fn set_executable(exe: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(exe, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| RuntimeError::io("setting the run bit on", exe, e))?;
    }
    #[cfg(not(unix))]
    let _ = exe;
    Ok(())
}

/// Puts `from` at `target`, replacing what is there with two renames; a failed second rename
/// puts the old build back.
fn swap_into_place(from: &Path, target: &Path) -> Result<()> {
    let old = {
        let mut s = target.as_os_str().to_owned();
        s.push(format!(".old-{}", std::process::id()));
        PathBuf::from(s)
    };
    let _ = std::fs::remove_dir_all(&old);
    let had_old = target.exists();
    if had_old {
        std::fs::rename(target, &old).map_err(|e| RuntimeError::io("moving aside", target, e))?;
    }
    if let Err(e) = std::fs::rename(from, target) {
        if had_old {
            let _ = std::fs::rename(&old, target);
        }
        return Err(RuntimeError::io("installing", target, e));
    }
    let _ = std::fs::remove_dir_all(&old);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checked_server_moves_with_its_build() {
        let (from, to) = (Path::new("/b/.staging-CPU-1/build"), Path::new("/b/cpu"));
        let warm = |s: &str| Some(ImagePath::WarmServer { server: s.into() });
        assert_eq!(
            moved(warm("/b/.staging-CPU-1/build/bin/sd-server"), from, to),
            warm("/b/cpu/bin/sd-server")
        );
        assert_eq!(moved(warm("/elsewhere/sd-server"), from, to), warm("/elsewhere/sd-server"));
        let per = Some(ImagePath::PerImage { why: "this build has no sd-server".into() });
        assert_eq!(moved(per.clone(), from, to), per);
        assert_eq!(moved(None, from, to), None);
    }

    #[test]
    fn finds_the_preferred_executable_nearest_the_top() {
        let root = std::env::temp_dir().join(format!("genai-find-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("llama-b1/bin/deep")).unwrap();
        std::fs::write(root.join("llama-b1/bin/llama-cli"), "").unwrap();
        std::fs::write(root.join("llama-b1/bin/deep/llama-server"), "").unwrap();
        std::fs::write(root.join("llama-b1/bin/LLAMA-SERVER"), "").unwrap();
        let names: Vec<String> = ["llama-server", "llama-cli"].map(String::from).to_vec();
        assert_eq!(
            find_executable(&root, &names),
            Some(PathBuf::from("llama-b1/bin/LLAMA-SERVER"))
        );
        assert_eq!(find_executable(&root, &["sd-cli".to_owned()]), None);
        std::fs::remove_dir_all(&root).unwrap();
    }
}
