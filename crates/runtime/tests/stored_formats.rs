//! The files the app keeps, in the formats earlier versions wrote (fixtures in
//! `tests/fixtures/stored/`), load with every value; what this version writes reads back the
//! same; a file from a newer version is refused with a message and left byte for byte as it was.

use futures_util::future::BoxFuture;
use ipc::llm::{LlmConfig, Toggle};
use ipc::models::{GgufSummary, ModelFile, ModelInfo, ModelKind, ModelSource};
use ipc::orchestrator::{OffloadMode, OrchestratorSettings, SavedLlmState};
use ipc::runtimes::{InstalledRuntime, RuntimeKind, Variant};
use ipc::system::{MemoryInfo, MemoryNow};
use ipc::{ErrorCode, StorageRootSource};
use runtime::binaries::cache::{FileStamp, ValidationCache};
use runtime::models::ModelStore;
use runtime::orchestrator::{
    LlmControl, MemorySource, Orchestrator, OrchestratorConfig, RunningLlm,
};
use runtime::{EventBus, Result, StorageLayout, StorageRoot};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use testkit::TempDir;

fn fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/stored").join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn layout(dir: &TempDir) -> StorageLayout {
    StorageLayout::create(StorageRoot::new(dir.join("home"), StorageRootSource::Env)).unwrap()
}

/// A file written by a version of the app from the future.
const NEWER: &[u8] = br#"{"format": 99, "renamed_everything": true}"#;

fn qwen() -> ModelInfo {
    let path = "/home/u/.local/share/genai-control-panel/models/llm/Qwen3-0.6B-Q8_0.gguf";
    let sha = "9465e63a22add5354d9bb4b99e90117043c7124007664907259bd16d043bb031";
    ModelInfo {
        id: "qwen3-0-6b".into(),
        name: "Qwen3 0.6B".into(),
        kind: ModelKind::Llm,
        size_bytes: 639_446_688,
        path: path.into(),
        downloaded_at_ms: 1_764_590_000_123,
        source: ModelSource::HuggingFace {
            repo: "Qwen/Qwen3-0.6B-GGUF".into(),
            file: "Qwen3-0.6B-Q8_0.gguf".into(),
            revision: "main".into(),
        },
        sha256: Some(sha.into()),
        supports_reasoning: true,
        gguf: Some(GgufSummary {
            version: 3,
            architecture: Some("qwen3".into()),
            name: Some("Qwen3 0.6B".into()),
            block_count: Some(28),
            context_length: Some(40960),
            embedding_length: Some(1024),
            feed_forward_length: Some(3072),
            head_count: Some(16),
            head_count_kv: Some(8),
            expert_count: None,
            file_type: Some(7),
            tensor_count: 310,
            kv_count: 28,
            raw: vec![
                ("general.architecture".into(), "qwen3".into()),
                ("tokenizer.ggml.tokens".into(), "[151936 items]".into()),
            ],
        }),
        files: vec![ModelFile {
            role: "model".into(),
            path: path.into(),
            size_bytes: 639_446_688,
            sha256: Some(sha.into()),
        }],
    }
}

fn flux() -> ModelInfo {
    let dir = "/data/models/diffusion/flux-schnell";
    ModelInfo {
        id: "flux-schnell".into(),
        name: "Flux Schnell".into(),
        kind: ModelKind::Diffusion,
        size_bytes: 6_780_000_000,
        path: format!("{dir}/flux1-schnell-Q4_K_S.gguf"),
        downloaded_at_ms: 1_764_591_000_000,
        source: ModelSource::Url { url: "https://example.org/flux1-schnell-Q4_K_S.gguf".into() },
        sha256: None,
        supports_reasoning: false,
        gguf: None,
        files: vec![
            ModelFile {
                role: "diffusion_model".into(),
                path: format!("{dir}/flux1-schnell-Q4_K_S.gguf"),
                size_bytes: 6_780_000_000,
                sha256: None,
            },
            ModelFile {
                role: "vae".into(),
                path: format!("{dir}/ae.safetensors"),
                size_bytes: 335_304_388,
                sha256: Some(
                    "afc8e28272cd15db3919bacdb6918ce9c1ed22e96cb12c4d5ed0fba823529e38".into(),
                ),
            },
        ],
    }
}

#[tokio::test]
async fn model_records_of_the_old_format_load_and_a_newer_one_is_named_and_kept() {
    let dir = TempDir::new("stored-models");
    let layout = layout(&dir);
    let store = ModelStore::new(layout.clone());
    std::fs::write(layout.llm_models().join("qwen3-0-6b.json"), fixture("model-record-0.json"))
        .unwrap();
    std::fs::write(
        layout.diffusion_models().join("flux-schnell.json"),
        fixture("model-record-0-diffusion.json"),
    )
    .unwrap();
    // A download's sidecar beside the models is not a record, nor a problem.
    std::fs::write(layout.llm_models().join("x.gguf.part.json"), br#"{"url": "http://h/x"}"#)
        .unwrap();
    let list = store.list().await.unwrap();
    assert_eq!(list.models, vec![flux(), qwen()], "newest first, every field as it was");
    assert!(list.unreadable.is_empty(), "{:?}", list.unreadable);

    // What this version writes reads back the same, and says its format.
    let mut again = qwen();
    again.id = "qwen-again".into();
    again.downloaded_at_ms = 1;
    store.register(&again).await.unwrap();
    let written = std::fs::read(layout.llm_models().join("qwen-again.json")).unwrap();
    let json: serde_json::Value = serde_json::from_slice(&written).unwrap();
    assert_eq!(json["format"], 1, "{json}");
    assert_eq!(store.get("qwen-again").await.unwrap(), again);

    // A newer version's record: not listed, named with a remedy, its id not reused, untouched.
    let newer = layout.llm_models().join("future.json");
    std::fs::write(&newer, NEWER).unwrap();
    let list = store.list().await.unwrap();
    assert_eq!(list.models.len(), 3);
    assert_eq!(list.unreadable.len(), 1, "{:?}", list.unreadable);
    let e = &list.unreadable[0];
    assert_eq!(e.code, ErrorCode::FileSystem);
    assert!(e.message.contains("future.json") && e.message.contains("newer version"), "{e:?}");
    assert!(e.remedy.contains("newer version"), "{e:?}");
    assert_eq!(store.free_id("future"), "future-2");
    assert_eq!(std::fs::read(&newer).unwrap(), NEWER);
}

fn installed(path: &Path) -> InstalledRuntime {
    InstalledRuntime {
        runtime: RuntimeKind::Llama,
        version: "b6527".into(),
        variant: Variant::Cuda,
        path: path.display().to_string(),
        reported_version: "version: 6527 (abc1234)".into(),
        size: 15_312_345,
        sha256: "0f343b0931126a20f133d67c2b018a3b1e3a9e2f8f0a6e1c1d8d1e0b2f3c4d5e".into(),
        checked_at_ms: 1_764_590_001_000,
        generation_checked: true,
        devices: vec!["CUDA0: NVIDIA H100 80GB HBM3".into()],
        offloaded_layers: Some((3, 3)),
        images: None,
        custom: false,
    }
}

#[tokio::test]
async fn the_validation_cache_of_format_1_loads_and_a_newer_one_is_not_written_over() {
    let dir = TempDir::new("stored-validation");
    let layout = layout(&dir);
    let cache = ValidationCache::new(layout.binaries());
    let file = cache.path(RuntimeKind::Llama);
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(&file, fixture("validation-1.json")).unwrap();
    let exe = PathBuf::from(
        "/home/u/.local/share/genai-control-panel/binaries/llama/b6527-cuda/llama-server",
    );
    let rec = cache.load(RuntimeKind::Llama).expect("the record loads");
    assert_eq!(rec.installed, installed(&exe));
    assert_eq!(rec.mtime_ns, 1_764_590_000_999_888_777);
    assert!(cache.load(RuntimeKind::Diffusion).is_none());

    // Written by this version: the same back.
    let stamp = FileStamp { size: 15_312_345, mtime_ns: 42 };
    cache.save(&installed(&exe), stamp).await.unwrap();
    let rec = cache.load(RuntimeKind::Llama).unwrap();
    assert_eq!((rec.installed, rec.mtime_ns), (installed(&exe), 42));

    // A newer version's: not trusted (the build is checked again), and not written over.
    std::fs::write(&file, NEWER).unwrap();
    assert!(cache.load(RuntimeKind::Llama).is_none());
    let e = cache.save(&installed(&exe), stamp).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::FileSystem, "{e}");
    assert!(e.to_string().contains("newer version"), "{e}");
    assert_eq!(std::fs::read(&file).unwrap(), NEWER);
}

/// An LLM that is not running and is never asked to do anything here.
struct NoLlm;

impl LlmControl for NoLlm {
    fn running(&self) -> Option<RunningLlm> {
        None
    }
    fn hold(&self, _: Option<String>) {}
    fn pause(&self) -> BoxFuture<'_, Result<()>> {
        unreachable!("nothing runs")
    }
    fn resume(&self, _: LlmConfig) -> BoxFuture<'_, Result<u16>> {
        unreachable!("nothing is resumed")
    }
    fn log(&self, _: ipc::event::LogLevel, _: String) {}
}

struct NoGpu;

impl MemorySource for NoGpu {
    fn memory_now(&self) -> Result<MemoryNow> {
        Ok(MemoryNow {
            memory: MemoryInfo { total_bytes: 16 << 30, available_bytes: 8 << 30 },
            gpus: vec![],
        })
    }
    fn gpu_names(&self) -> Vec<(String, String)> {
        vec![]
    }
}

fn orchestrator(config_dir: PathBuf) -> Orchestrator {
    Orchestrator::new(
        config_dir,
        EventBus::default(),
        Arc::new(NoLlm),
        Arc::new(NoGpu),
        OrchestratorConfig::default(),
    )
}

fn paused_config() -> LlmConfig {
    LlmConfig {
        model_id: "qwen3-0-6b".into(),
        port: Some(8080),
        host: None,
        context_size: Some(8192),
        min_context: Some(2048),
        max_context: None,
        n_cpu_moe: None,
        strict: Some(false),
        gpu_layers: Some(29),
        threads: Some(6),
        parallel: Some(1),
        flash_attention: Some(Toggle::On),
        cache_type_k: Some("q8_0".into()),
        cache_type_v: Some("q8_0".into()),
        batch: Some(2048),
        ubatch: Some(512),
        swa_full: None,
        mmap: Some(true),
        mlock: Some(false),
        reasoning_format: Some("deepseek".into()),
        alias: None,
        llama_fit: Some(false),
        cache_ram_mib: Some(1024),
        jinja: Some(true),
        embeddings: None,
        auto_restart: true,
        max_restarts: Some(3),
        startup_timeout_secs: Some(60),
        health_interval_secs: Some(5),
        rpc_workers: Vec::new(),
    }
}

#[tokio::test]
async fn orchestrator_settings_and_the_paused_llm_of_the_old_format_load() {
    let dir = TempDir::new("stored-orchestrator");
    let config = dir.join("config");
    std::fs::create_dir_all(&config).unwrap();
    std::fs::write(config.join("orchestrator.json"), fixture("orchestrator-0.json")).unwrap();
    std::fs::write(config.join("llm-paused.json"), fixture("llm-paused-0.json")).unwrap();
    let status = orchestrator(config.clone()).status();
    assert_eq!(status.settings, OrchestratorSettings { mode: OffloadMode::Always, margin: 0.6 });
    let want = SavedLlmState {
        config: paused_config(),
        port: 8080,
        context_size: 8192,
        saved_at_ms: 1_764_590_002_000,
        job_id: Some("gen-1764590001999-1".into()),
    };
    assert_eq!(status.saved, Some(want));
    assert_eq!(status.reload_error, None);

    // The first release's paused state, before the later settings existed: they read as unset.
    std::fs::write(config.join("llm-paused.json"), fixture("llm-paused-0-first-release.json"))
        .unwrap();
    let saved = orchestrator(config.clone()).status().saved.unwrap();
    let first = LlmConfig {
        model_id: "tiny".into(),
        port: Some(41234),
        context_size: Some(4096),
        ..Default::default()
    };
    assert_eq!((saved.config, saved.port, saved.job_id), (first, 41234, None));

    // Saved by this version: with its format, and the same back.
    let orch = orchestrator(config.clone());
    let s = OrchestratorSettings { mode: OffloadMode::Never, margin: 0.9 };
    orch.set_settings(s).await.unwrap();
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(config.join("orchestrator.json")).unwrap()).unwrap();
    assert_eq!(json["format"], 1, "{json}");
    assert_eq!(orchestrator(config).status().settings, s);
}

#[tokio::test]
async fn a_newer_versions_orchestrator_files_are_refused_and_left_as_they_are() {
    let dir = TempDir::new("stored-orchestrator-newer");
    let config = dir.join("config");
    std::fs::create_dir_all(&config).unwrap();
    std::fs::write(config.join("orchestrator.json"), NEWER).unwrap();
    std::fs::write(config.join("llm-paused.json"), NEWER).unwrap();
    let orch = orchestrator(config.clone());
    let status = orch.status();
    // The defaults meanwhile; the paused state is not guessed at but reported.
    assert_eq!(status.settings, OrchestratorSettings::default());
    assert_eq!(status.saved, None);
    let e = status.reload_error.expect("the paused-LLM file is reported");
    assert_eq!(e.code, ErrorCode::FileSystem);
    assert!(e.message.contains("llm-paused.json") && e.message.contains("newer version"), "{e:?}");
    assert!(!e.remedy.is_empty());
    assert!(!orch.recover().await.unwrap(), "nothing to bring back");
    let e = orch
        .set_settings(OrchestratorSettings { mode: OffloadMode::Never, margin: 0.5 })
        .await
        .unwrap_err();
    assert!(e.to_string().contains("orchestrator.json"), "{e}");
    for f in ["orchestrator.json", "llm-paused.json"] {
        assert_eq!(std::fs::read(config.join(f)).unwrap(), NEWER, "{f} was written over");
    }
}

/// How an sd.cpp build makes images is kept with its check, in words of the file's own; a record
/// without it (written before the choice existed) loads with none, so the build is checked again.
#[tokio::test]
async fn the_image_path_of_an_sd_build_is_kept_and_an_older_record_has_none() {
    use ipc::runtimes::ImagePath;
    let dir = TempDir::new("stored-validation-images");
    let cache = ValidationCache::new(layout(&dir).binaries());
    let exe = PathBuf::from("/b/diffusion/master-cpu/sd-cli");
    let sd = |images| InstalledRuntime {
        runtime: RuntimeKind::Diffusion,
        variant: Variant::Cpu,
        images,
        ..installed(&exe)
    };
    let stamp = FileStamp { size: 1, mtime_ns: 2 };
    let warm = ImagePath::WarmServer { server: "/b/diffusion/master-cpu/sd-server".into() };
    cache.save(&sd(Some(warm.clone())), stamp).await.unwrap();
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(cache.path(RuntimeKind::Diffusion)).unwrap())
            .unwrap();
    assert_eq!(
        json["images"],
        serde_json::json!({"kind": "warm_server", "server": "/b/diffusion/master-cpu/sd-server"})
    );
    assert_eq!(cache.load(RuntimeKind::Diffusion).unwrap().installed.images, Some(warm));
    let per = ImagePath::PerImage { why: "this build has no sd-server".into() };
    cache.save(&sd(Some(per.clone())), stamp).await.unwrap();
    assert_eq!(cache.load(RuntimeKind::Diffusion).unwrap().installed.images, Some(per));

    // As an earlier version wrote it: no `images`.
    let mut older = json;
    older.as_object_mut().unwrap().remove("images");
    std::fs::write(cache.path(RuntimeKind::Diffusion), older.to_string()).unwrap();
    assert_eq!(cache.load(RuntimeKind::Diffusion).unwrap().installed.images, None);
}

/// The endpoint's settings (`config/endpoint.json`): written in the file's own names with its
/// format, read back by the next launch; a newer version's file is not written over.
#[tokio::test]
async fn the_endpoint_settings_are_kept_in_their_own_names_and_a_newer_file_is_left_alone() {
    use ipc::endpoint::EndpointSettings;
    use runtime::system::SystemProbe;
    let dir = TempDir::new("stored-endpoint");
    let open = || {
        runtime::Runtime::open(
            StorageRoot::new(dir.join("home"), StorageRootSource::Env),
            EventBus::default(),
            Arc::new(SystemProbe::real()),
        )
        .unwrap()
    };
    let rt = open();
    let settings = EndpointSettings {
        enabled: false,
        port: Some(9100),
        host: None,
        token: Some("s3cret-token".into()),
        wait_secs: 30,
        idle_unload_mins: Some(15),
    };
    rt.endpoint().set(settings.clone()).await.unwrap();
    let path = rt.storage().config().join("endpoint.json");
    let written: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(
        written,
        serde_json::json!({"format": 1, "enabled": false, "port": 9100, "host": null,
            "token": "s3cret-token", "wait_secs": 30, "idle_unload_mins": 15})
    );
    assert_eq!(open().endpoint().status().settings, settings, "read back at the next launch");

    std::fs::write(&path, NEWER).unwrap();
    let rt = open();
    assert_eq!(rt.endpoint().status().settings, EndpointSettings::default(), "defaults meanwhile");
    let e = rt.endpoint().set(settings).await.unwrap_err();
    assert!(e.to_string().contains("endpoint.json"), "{e}");
    assert_eq!(std::fs::read(&path).unwrap(), NEWER, "written over");
}
