//! The model registry and the download queue, end to end against the fixture server.

use gguf::fixtures::{tiny_llama, TinyLlama};
use ipc::models::{
    ComponentRequest, ComponentRole, DownloadRequest, DownloadState, DownloadStatus, ModelKind,
    ModelSource,
};
use ipc::{AppEvent, ErrorCode, StorageRootSource};
use runtime::download::DownloadConfig;
use runtime::models::hf::{HfEnv, HfSettings};
use runtime::models::queue::DownloadQueue;
use runtime::models::ModelStore;
use runtime::{EventBus, StorageLayout, StorageRoot};
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use std::time::Duration;
use testkit::http::{Fault, FixtureServer, Route};
use tokio::sync::broadcast;

struct Home {
    root: PathBuf,
    store: ModelStore,
    queue: DownloadQueue,
    events: broadcast::Receiver<AppEvent>,
}

impl Home {
    fn new(name: &str) -> Self {
        Self::with_hf(name, HfEnv::default())
    }

    /// With Hugging Face reached as `hf` says (an endpoint on a fixture server, a token).
    fn with_hf(name: &str, hf: HfEnv) -> Self {
        let root = std::env::temp_dir().join(format!("genai-models-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let layout =
            StorageLayout::create(StorageRoot::new(&root, StorageRootSource::Env)).unwrap();
        let store = ModelStore::new(layout);
        let bus = EventBus::default();
        let events = bus.subscribe();
        let config = DownloadConfig {
            stall_timeout: Duration::from_secs(30),
            max_retries: 2,
            backoff: Duration::from_millis(20),
        };
        let hf = HfSettings::open(&root.join("config"), hf);
        let queue = DownloadQueue::new(store.clone(), bus, 2, config, hf).unwrap();
        Self { root, store, queue, events }
    }

    /// Waits for the download's final event.
    async fn outcome(&mut self, id: &str) -> AppEvent {
        loop {
            let e = tokio::time::timeout(Duration::from_secs(20), self.events.recv())
                .await
                .expect("an event")
                .unwrap();
            match &e {
                AppEvent::DownloadFinished { download_id, .. }
                | AppEvent::DownloadFailed { download_id, .. }
                    if download_id == id =>
                {
                    return e
                }
                _ => {}
            }
        }
    }

    fn files(&self, kind: &str) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.root.join("models").join(kind))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }
}

impl Drop for Home {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn url_request(name: &str, url: String, sha: Option<String>) -> DownloadRequest {
    DownloadRequest {
        name: name.into(),
        kind: ModelKind::Llm,
        source: ModelSource::Url { url },
        sha256: sha,
        shard_sha256: Vec::new(),
        components: vec![],
        directory: None,
    }
}

fn sha(b: &[u8]) -> String {
    Sha256::digest(b).iter().map(|x| format!("{x:02x}")).collect()
}

#[tokio::test]
async fn download_registers_lists_verifies_and_deletes() {
    let model = tiny_llama(TinyLlama::default()).to_bytes();
    let server = FixtureServer::start().await;
    server.add("/tiny.gguf", Route::bytes(model.clone()));
    let mut home = Home::new("cycle");

    let id = home
        .queue
        .enqueue(url_request("Tiny Llama", server.url("/tiny.gguf"), Some(sha(&model))))
        .unwrap();
    let AppEvent::DownloadFinished { model_id, .. } = home.outcome(&id).await else {
        panic!("download failed")
    };
    assert_eq!(model_id, "tiny-llama");
    let status = home.queue.statuses().into_iter().find(|s| s.download_id == id).unwrap();
    assert_eq!(status.state, DownloadState::Done);
    assert_eq!(status.downloaded_bytes, model.len() as u64);

    let list = home.store.list().await.unwrap();
    assert_eq!(list.models.len(), 1);
    let m = &list.models[0];
    assert_eq!((m.kind, m.size_bytes), (ModelKind::Llm, model.len() as u64));
    assert_eq!(list.total_bytes, model.len() as u64);
    let g = m.gguf.as_ref().unwrap();
    assert_eq!(g.architecture.as_deref(), Some("llama"));
    assert_eq!((g.block_count, g.context_length, g.head_count), (Some(2), Some(512), Some(4)));
    let tokens = g.raw.iter().find(|(k, _)| k == "tokenizer.ggml.tokens").unwrap();
    assert_eq!(tokens.1, "[259 items]", "the tokenizer is not stored whole");
    assert!(!m.supports_reasoning);
    assert_eq!(home.files("llm"), ["tiny-llama.json", "tiny.gguf"]);

    let v = home.store.verify(&model_id).await.unwrap();
    assert!(v.had_checksum);
    assert_eq!(v.sha256, sha(&model));
    // Damage a weight: verify says the checksum differs.
    let mut damaged = model.clone();
    *damaged.last_mut().unwrap() ^= 1;
    std::fs::write(&m.path, &damaged).unwrap();
    let e = home.store.verify(&model_id).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::ChecksumMismatch);
    // Cut it: verify says so from the header and the length, with the byte counts.
    std::fs::write(&m.path, &model[..model.len() - 1000]).unwrap();
    let e = home.store.verify(&model_id).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::GgufInvalid, "{e}");
    assert!(e.to_string().contains("cut short by 1000 bytes"), "{e}");

    home.store.delete(&model_id).await.unwrap();
    assert!(home.files("llm").is_empty());
    assert_eq!(home.store.delete(&model_id).await.unwrap_err().code(), ErrorCode::ModelNotFound);
}

#[tokio::test]
async fn a_corrupt_gguf_is_never_registered() {
    let server = FixtureServer::start().await;
    server.add("/bad.gguf", Route::bytes(b"GGUF\x03\0\0\0 then garbage".to_vec()));
    let mut home = Home::new("corrupt");
    let id = home.queue.enqueue(url_request("Bad", server.url("/bad.gguf"), None)).unwrap();
    let AppEvent::DownloadFailed { error, .. } = home.outcome(&id).await else {
        panic!("accepted a corrupt file")
    };
    assert_eq!(error.code, ErrorCode::GgufInvalid);
    assert!(!error.remedy.is_empty());
    assert!(home.files("llm").is_empty(), "{:?}", home.files("llm"));
    assert!(home.store.list().await.unwrap().models.is_empty());
}

#[tokio::test]
async fn checksum_failure_leaves_nothing_and_says_expected_and_actual() {
    let model = tiny_llama(TinyLlama::default()).to_bytes();
    let server = FixtureServer::start().await;
    server.add("/m.gguf", Route::bytes(model.clone()));
    let mut home = Home::new("sum");
    let wrong = "f".repeat(64);
    let id =
        home.queue.enqueue(url_request("M", server.url("/m.gguf"), Some(wrong.clone()))).unwrap();
    let AppEvent::DownloadFailed { error, .. } = home.outcome(&id).await else { panic!() };
    assert_eq!(error.code, ErrorCode::ChecksumMismatch);
    assert!(error.message.contains(&wrong) && error.message.contains(&sha(&model)));
    assert!(home.files("llm").is_empty());
}

#[tokio::test]
async fn local_import_and_duplicate_refusal() {
    let model = tiny_llama(TinyLlama { seed: 7, ..Default::default() }).to_bytes();
    let mut home = Home::new("local");
    let src = home.root.join("elsewhere.gguf");
    std::fs::write(&src, &model).unwrap();
    let req = DownloadRequest {
        name: "Qwen3 Local".into(),
        kind: ModelKind::Llm,
        source: ModelSource::Local { path: src.display().to_string() },
        sha256: None,
        shard_sha256: Vec::new(),
        components: vec![],
        directory: None,
    };
    let id = home.queue.enqueue(req.clone()).unwrap();
    let AppEvent::DownloadFinished { model_id, .. } = home.outcome(&id).await else { panic!() };
    let m = home.store.get(&model_id).await.unwrap();
    assert!(m.supports_reasoning, "Qwen3 is flagged as reasoning");
    assert_eq!(std::fs::read(&m.path).unwrap(), model);
    let e = home.queue.enqueue(req).unwrap_err();
    assert!(e.to_string().contains("already exists"), "{e}");
}

#[tokio::test]
async fn at_most_two_run_at_once_and_cancel_cleans_up() {
    let server = FixtureServer::start().await;
    let body = testkit::http::Body::pattern_bytes(2 << 20);
    for name in ["a", "b", "c"] {
        server.add(
            &format!("/{name}.gguf"),
            Route::bytes(body.clone()).fault(Fault::StallAfter(1 << 20)),
        );
    }
    let home = Home::new("queue");
    let ids: Vec<String> = ["a", "b", "c"]
        .iter()
        .map(|n| {
            home.queue.enqueue(url_request(n, server.url(&format!("/{n}.gguf")), None)).unwrap()
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let states: Vec<DownloadState> = home.queue.statuses().iter().map(|s| s.state).collect();
    assert_eq!(states.iter().filter(|s| **s == DownloadState::Running).count(), 2, "{states:?}");
    assert_eq!(states.iter().filter(|s| **s == DownloadState::Queued).count(), 1, "{states:?}");

    for id in &ids {
        home.queue.cancel(id).unwrap();
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !home.queue.statuses().is_empty() {
        assert!(std::time::Instant::now() < deadline, "{:?}", home.queue.statuses());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(home.files("llm").is_empty(), "{:?}", home.files("llm"));
}

/// The window keeps the queue by events alone (it polls nothing): every change a user sees in a
/// row (running, paused, running again, gone after Cancel) is announced with `DownloadsChanged`,
/// and by the time it arrives `statuses()` shows it.
#[tokio::test]
async fn every_change_of_a_row_is_announced() {
    let server = FixtureServer::start().await;
    let body = testkit::http::Body::pattern_bytes(2 << 20);
    server.add("/slow.gguf", Route::bytes(body).fault(Fault::StallAfter(1 << 20)));
    let mut home = Home::new("announced");
    let id = home.queue.enqueue(url_request("slow", server.url("/slow.gguf"), None)).unwrap();

    async fn announced(home: &mut Home, id: &str, want: Option<DownloadState>) {
        loop {
            let e = tokio::time::timeout(Duration::from_secs(10), home.events.recv())
                .await
                .unwrap_or_else(|_| panic!("no DownloadsChanged showing {want:?}"))
                .unwrap();
            if e != AppEvent::DownloadsChanged {
                continue;
            }
            let now = home.queue.statuses().into_iter().find(|s| s.download_id == id);
            if now.map(|s| s.state) == want {
                return;
            }
        }
    }
    announced(&mut home, &id, Some(DownloadState::Running)).await;
    home.queue.pause(&id).unwrap();
    announced(&mut home, &id, Some(DownloadState::Paused)).await;
    home.queue.resume(&id).unwrap();
    announced(&mut home, &id, Some(DownloadState::Running)).await;
    home.queue.cancel(&id).unwrap();
    announced(&mut home, &id, None).await;
}

/// The queue as the app opens it: stored in the home's config folder.
fn stored_queue(store: &ModelStore, root: &std::path::Path, bus: EventBus) -> DownloadQueue {
    let config = DownloadConfig {
        stall_timeout: Duration::from_secs(30),
        max_retries: 2,
        backoff: Duration::from_millis(20),
    };
    let hf = HfSettings::open(&root.join("config"), HfEnv::default());
    DownloadQueue::open(store.clone(), bus, 2, config, hf, &root.join("config")).unwrap()
}

async fn wait_for(queue: &DownloadQueue, id: &str, ok: impl Fn(&DownloadStatus) -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let s = queue.statuses().into_iter().find(|s| s.download_id == id);
        if s.as_ref().is_some_and(&ok) {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "{s:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The app killed half-way through a download (its whole async runtime gone at once, as in a
/// kill): the next start lists the download as Paused at its percent; Resume asks the server for
/// the rest with `Range` and the model is registered, checksum verified; the finished row can
/// then be cleared, and stays cleared after another start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_download_survives_a_restart_and_resumes_with_range() {
    let model = tiny_llama(TinyLlama::default()).to_bytes();
    let half = model.len() as u64 / 2;
    let server = FixtureServer::start().await;
    server.add("/tiny.gguf", Route::bytes(model.clone()).fault(Fault::StallAfter(half)));
    let home = Home::new("restart");
    let request = url_request("Tiny Llama", server.url("/tiny.gguf"), Some(sha(&model)));

    // The first run: its own runtime, shut down while the server holds the download at half.
    let first = {
        let (store, root) = (home.store.clone(), home.root.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let q = stored_queue(&store, &root, EventBus::default());
                let id = q.enqueue(request).unwrap();
                wait_for(&q, &id, |s| s.downloaded_bytes == half).await;
                id
            })
            // `rt` dropped here: every task ends where it stands, nothing is saved on the way out.
        })
        .join()
        .unwrap()
    };

    let bus = EventBus::default();
    let mut events = bus.subscribe();
    let queue = stored_queue(&home.store, &home.root, bus);
    let rows = queue.statuses();
    assert_eq!(rows.len(), 1, "{rows:?}");
    let row = &rows[0];
    assert_eq!((row.download_id.as_str(), row.state), (first.as_str(), DownloadState::Paused));
    assert_eq!(row.downloaded_bytes, half, "shown at its percent");
    assert_eq!(row.total_bytes, Some(model.len() as u64), "of its size");
    assert_eq!(row.name, "Tiny Llama");
    assert!(home.store.list().await.unwrap().models.is_empty(), "nothing registered yet");

    queue.resume(&first).unwrap();
    let outcome = loop {
        let e =
            tokio::time::timeout(Duration::from_secs(20), events.recv()).await.unwrap().unwrap();
        if matches!(e, AppEvent::DownloadFinished { .. } | AppEvent::DownloadFailed { .. }) {
            break e;
        }
    };
    let AppEvent::DownloadFinished { model_id, .. } = outcome else { panic!("{outcome:?}") };
    assert_eq!(
        server.gets("/tiny.gguf").last().unwrap().header("range"),
        Some(format!("bytes={half}-").as_str()),
        "resumed from the .part, not restarted"
    );
    let m = home.store.get(&model_id).await.unwrap();
    assert_eq!(m.sha256.as_deref(), Some(sha(&model).as_str()));
    assert_eq!(std::fs::read(&m.path).unwrap(), model);

    // A new id never repeats one the stored rows hold.
    let again = queue.enqueue(url_request("Other", server.url("/none.gguf"), None)).unwrap();
    assert_ne!(again, first);
    wait_for(&queue, &again, |s| s.state == DownloadState::Failed).await;

    // Finished and failed rows stay (also across a start) until cleared.
    drop(queue);
    let queue = stored_queue(&home.store, &home.root, EventBus::default());
    let states: Vec<DownloadState> = queue.statuses().iter().map(|s| s.state).collect();
    assert_eq!(states, [DownloadState::Done, DownloadState::Failed]);
    let e = queue.clear("dl-999").unwrap_err();
    assert!(e.to_string().contains("dl-999"), "{e}");
    queue.clear(&first).unwrap();
    queue.clear(&again).unwrap();
    assert!(queue.statuses().is_empty());
    drop(queue);
    assert!(
        stored_queue(&home.store, &home.root, EventBus::default()).statuses().is_empty(),
        "cleared for good"
    );
    assert!(home.store.get(&model_id).await.is_ok(), "clearing a row keeps the model");
}

/// A queue file from a newer version of the app is left as it is: the queue starts empty and
/// does not write over it.
#[tokio::test]
async fn a_queue_file_from_a_newer_version_is_left_alone() {
    let model = tiny_llama(TinyLlama::default()).to_bytes();
    let server = FixtureServer::start().await;
    server.add("/tiny.gguf", Route::bytes(model));
    let mut home = Home::new("newer-queue");
    let file = home.root.join("config/downloads.json");
    let future = br#"{"format": 7, "rows": [{"something": "new"}]}"#;
    std::fs::write(&file, future).unwrap();
    let bus = EventBus::default();
    home.events = bus.subscribe();
    let queue = stored_queue(&home.store, &home.root, bus);
    assert!(queue.statuses().is_empty());
    let id = queue.enqueue(url_request("Tiny", server.url("/tiny.gguf"), None)).unwrap();
    assert!(matches!(home.outcome(&id).await, AppEvent::DownloadFinished { .. }));
    assert_eq!(std::fs::read(&file).unwrap(), future, "never overwritten");
}

#[tokio::test]
async fn hostile_names_stay_inside_the_models_folder() {
    let model = tiny_llama(TinyLlama::default()).to_bytes();
    let server = FixtureServer::start().await;
    server.add("/x/..%2F..%2Fescape.gguf", Route::bytes(model));
    let mut home = Home::new("hostile");
    let id = home
        .queue
        .enqueue(url_request("Escape", server.url("/x/..%2F..%2Fescape.gguf"), None))
        .unwrap();
    let AppEvent::DownloadFinished { model_id, .. } = home.outcome(&id).await else { panic!() };
    let m = home.store.get(&model_id).await.unwrap();
    assert!(
        PathBuf::from(&m.path).starts_with(home.root.canonicalize().unwrap().join("models/llm")),
        "{}",
        m.path
    );
    assert!(!home.root.join("escape.gguf").exists());
}

fn local_request(name: &str, path: &std::path::Path) -> DownloadRequest {
    DownloadRequest {
        name: name.into(),
        kind: ModelKind::Llm,
        source: ModelSource::Local { path: path.display().to_string() },
        sha256: None,
        shard_sha256: Vec::new(),
        components: vec![],
        directory: None,
    }
}

/// Cut at every 4 KiB, in its header or in its weights: refused at import with GGUF_INVALID (the
/// byte counts once the header is whole), nothing registered or left in the models folder, the
/// user's own file untouched. The whole file is registered.
#[tokio::test]
async fn a_cut_gguf_is_refused_at_every_4k_and_the_whole_one_registers() {
    let model = tiny_llama(TinyLlama::default()).to_bytes();
    let header_len = gguf::read_header(&model[..], gguf::Limits::default()).unwrap().header_bytes;
    let mut home = Home::new("cuts");
    let incoming = home.root.join("incoming");
    std::fs::create_dir_all(&incoming).unwrap();
    let mut cuts = 0;
    for cut in (4096..model.len()).step_by(4096) {
        let path = incoming.join(format!("cut-{cut}.gguf"));
        std::fs::write(&path, &model[..cut]).unwrap();
        let id = home.queue.enqueue(local_request(&format!("Cut {cut}"), &path)).unwrap();
        let AppEvent::DownloadFailed { error, .. } = home.outcome(&id).await else {
            panic!("the model cut at byte {cut} was registered")
        };
        assert_eq!(error.code, ErrorCode::GgufInvalid, "cut {cut}: {}", error.message);
        if cut as u64 > header_len {
            let counts = format!("is {cut} bytes, but its tensors end at byte {}", model.len());
            assert!(error.message.contains(&counts), "cut {cut}: {}", error.message);
        }
        assert!(!error.remedy.is_empty());
        assert_eq!(std::fs::read(&path).unwrap().len(), cut, "the user's file is left as it was");
        cuts += 1;
    }
    assert!(cuts >= 100, "{cuts} cuts");
    assert!(home.store.list().await.unwrap().models.is_empty());
    assert!(home.files("llm").is_empty(), "{:?}", home.files("llm"));

    let whole = incoming.join("whole.gguf");
    std::fs::write(&whole, &model).unwrap();
    let id = home.queue.enqueue(local_request("Whole", &whole)).unwrap();
    let AppEvent::DownloadFinished { model_id, .. } = home.outcome(&id).await else {
        panic!("the whole model was refused")
    };
    assert_eq!(home.store.list().await.unwrap().models.len(), 1);
    assert!(home.store.verify(&model_id).await.is_ok());
}

fn shard(no: u16, count: u16, values: usize) -> Vec<u8> {
    gguf::fixtures::split_shard(no, count, values).to_bytes()
}

#[tokio::test]
async fn split_gguf_with_a_cut_shard_is_refused_and_leaves_nothing() {
    let shard1 = tiny_llama(TinyLlama::default()).to_bytes();
    let shard2 = shard(1, 3, 1000);
    let shard3 = shard(2, 3, 1000);
    let server = FixtureServer::start().await;
    server.add("/q/Cut-Model-00001-of-00003.gguf", Route::bytes(shard1));
    server.add("/q/Cut-Model-00002-of-00003.gguf", Route::bytes(shard2));
    server.add("/q/Cut-Model-00003-of-00003.gguf", Route::bytes(shard3[..3000].to_vec()));
    let mut home = Home::new("cut-shard");
    let id = home
        .queue
        .enqueue(url_request("Cut Model", server.url("/q/Cut-Model-00001-of-00003.gguf"), None))
        .unwrap();
    let AppEvent::DownloadFailed { error, .. } = home.outcome(&id).await else {
        panic!("a split model with a cut shard was registered")
    };
    assert_eq!(error.code, ErrorCode::GgufInvalid);
    assert!(error.message.contains("Cut-Model-00003-of-00003.gguf"), "{}", error.message);
    assert!(error.message.contains("is 3000 bytes"), "{}", error.message);
    assert!(home.store.list().await.unwrap().models.is_empty());
    assert!(home.files("llm").is_empty(), "every shard removed: {:?}", home.files("llm"));
}

#[tokio::test]
async fn split_gguf_downloads_every_shard_into_its_folder() {
    let shard1 = tiny_llama(TinyLlama::default()).to_bytes();
    let (shard2, shard3) = (shard(1, 3, 75_000), shard(2, 3, 50_000));
    let server = FixtureServer::start().await;
    server.add("/q/Big-Model-00001-of-00003.gguf", Route::bytes(shard1.clone()));
    server.add("/q/Big-Model-00002-of-00003.gguf", Route::bytes(shard2.clone()));
    server.add("/q/Big-Model-00003-of-00003.gguf", Route::bytes(shard3.clone()));
    let mut home = Home::new("shards");
    let id = home
        .queue
        .enqueue(url_request("Big Model", server.url("/q/Big-Model-00001-of-00003.gguf"), None))
        .unwrap();
    let AppEvent::DownloadFinished { model_id, .. } = home.outcome(&id).await else {
        panic!("failed")
    };
    let total = (shard1.len() + shard2.len() + shard3.len()) as u64;
    let status = home.queue.statuses().into_iter().find(|s| s.download_id == id).unwrap();
    assert_eq!(
        (status.downloaded_bytes, status.total_bytes),
        (total, Some(total)),
        "progress covers all shards"
    );

    let m = home.store.get(&model_id).await.unwrap();
    assert_eq!(m.size_bytes, total);
    assert_eq!(m.files.len(), 3);
    assert_eq!(m.files[1].role, "shard 2/3");
    assert!(m.path.ends_with("big-model/Big-Model-00001-of-00003.gguf"), "{}", m.path);
    assert_eq!(m.gguf.as_ref().unwrap().architecture.as_deref(), Some("llama"));
    assert_eq!(std::fs::read(&m.files[2].path).unwrap(), shard3);
    assert_eq!(home.store.list().await.unwrap().total_bytes, total);
    assert!(home.store.verify(&model_id).await.unwrap().had_checksum);

    home.store.delete(&model_id).await.unwrap();
    assert_eq!(home.files("llm"), Vec::<String>::new(), "shards and their folder are gone");
}

#[tokio::test]
async fn diffusion_variants_share_components_and_delete_keeps_what_is_shared() {
    let server = FixtureServer::start().await;
    let q8 = gguf::Writer::new()
        .kv("general.architecture", gguf::Value::String("flux".into()))
        .to_bytes();
    let q4 = gguf::Writer::new()
        .kv("general.architecture", gguf::Value::String("flux".into()))
        .kv("v", gguf::Value::U8(4))
        .to_bytes();
    let vae = vec![9u8; 400_000];
    server.add("/flux-q8.gguf", Route::bytes(q8.clone()));
    server.add("/flux-q4.gguf", Route::bytes(q4.clone()));
    server.add("/vae.safetensors", Route::bytes(vae.clone()));
    let mut home = Home::new("components");
    let request = |name: &str, file: &str| DownloadRequest {
        name: name.into(),
        kind: ModelKind::Diffusion,
        source: ModelSource::Url { url: server.url(file) },
        sha256: None,
        shard_sha256: Vec::new(),
        components: vec![ComponentRequest {
            role: ComponentRole::Vae,
            source: ModelSource::Url { url: server.url("/vae.safetensors") },
            sha256: Some(sha(&vae)),
        }],
        directory: Some("Flux Klein".into()),
    };
    let a = home.queue.enqueue(request("Flux Klein Q8", "/flux-q8.gguf")).unwrap();
    let AppEvent::DownloadFinished { model_id: q8_id, .. } = home.outcome(&a).await else {
        panic!()
    };
    let b = home.queue.enqueue(request("Flux Klein Q4", "/flux-q4.gguf")).unwrap();
    let AppEvent::DownloadFinished { model_id: q4_id, .. } = home.outcome(&b).await else {
        panic!()
    };
    assert_eq!(server.gets("/vae.safetensors").len(), 1, "the shared VAE is fetched once");
    let m = home.store.get(&q4_id).await.unwrap();
    assert_eq!(
        m.files.iter().map(|f| f.role.as_str()).collect::<Vec<_>>(),
        ["diffusion_model", "vae"]
    );
    assert!(m.files[1].path.ends_with("flux-klein/vae.safetensors"), "{}", m.files[1].path);
    assert_eq!(
        home.store.list().await.unwrap().total_bytes,
        (q8.len() + q4.len() + vae.len()) as u64,
        "the VAE counts once"
    );

    home.store.delete(&q8_id).await.unwrap();
    assert!(std::path::Path::new(&m.files[1].path).exists(), "VAE still used by the Q4 variant");
    home.store.delete(&q4_id).await.unwrap();
    assert_eq!(home.files("diffusion"), Vec::<String>::new(), "folder gone with the last variant");
}

/// Hugging Face's layout on two loopback servers: `resolve` answers 302 with `x-linked-etag` to
/// a storage host on another port. The token goes to the first host only; a gated repository's
/// 401 says AUTH_REQUIRED with the page where the licence is accepted.
#[tokio::test]
async fn the_hugging_face_token_reaches_its_own_host_only_and_a_gated_repo_says_what_to_do() {
    let model = tiny_llama(TinyLlama::default()).to_bytes();
    let cdn = FixtureServer::start().await;
    cdn.add("/repos/ab/cd/blob", Route::bytes(model.clone()));
    let hub = FixtureServer::start().await;
    let resolve = "/org/tiny-GGUF/resolve/main/tiny-Q8_0.gguf";
    hub.add(
        resolve,
        Route::redirect(&cdn.url("/repos/ab/cd/blob"))
            .header("x-linked-etag", &format!("\"{}\"", sha(&model))),
    );
    let endpoint = hub.url("");
    let mut home = Home::with_hf(
        "hf-token",
        HfEnv { endpoint: Some(format!("{endpoint}/")), token: Some("hf_secret_token".into()) },
    );
    let request = |repo: &str, file: &str| DownloadRequest {
        name: format!("{repo} tiny"),
        kind: ModelKind::Llm,
        source: ModelSource::HuggingFace {
            repo: repo.into(),
            file: file.into(),
            revision: "main".into(),
        },
        sha256: None,
        shard_sha256: Vec::new(),
        components: vec![],
        directory: None,
    };
    let id = home.queue.enqueue(request("org/tiny-GGUF", "tiny-Q8_0.gguf")).unwrap();
    let AppEvent::DownloadFinished { model_id, .. } = home.outcome(&id).await else {
        panic!("the download through the endpoint failed")
    };
    let m = home.store.get(&model_id).await.unwrap();
    assert_eq!(m.sha256.as_deref(), Some(sha(&model).as_str()), "verified against x-linked-etag");
    let to_hub = hub.seen(resolve);
    assert!(!to_hub.is_empty());
    for s in &to_hub {
        assert_eq!(s.header("authorization"), Some("Bearer hf_secret_token"), "{s:?}");
    }
    let to_cdn = cdn.seen("/repos/ab/cd/blob");
    assert!(!to_cdn.is_empty());
    for s in &to_cdn {
        assert_eq!(s.header("authorization"), None, "the token leaked to the storage host: {s:?}");
    }

    // A gated repository: 401 without the licence accepted.
    let gated = "/org/gated-GGUF/resolve/main/gated-Q8_0.gguf";
    let mut route = Route::bytes(model.clone());
    for _ in 0..3 {
        route = route.fault(Fault::Status(401)); // the HEAD for x-linked-etag, the GET, spare
    }
    hub.add(gated, route);
    let id = home.queue.enqueue(request("org/gated-GGUF", "gated-Q8_0.gguf")).unwrap();
    let AppEvent::DownloadFailed { error, .. } = home.outcome(&id).await else {
        panic!("a 401 registered a model")
    };
    assert_eq!(error.code, ErrorCode::AuthRequired, "{error:?}");
    assert!(error.remedy.contains(&format!("{endpoint}/org/gated-GGUF")), "{error:?}");
    assert!(error.remedy.contains("Hugging Face access"), "{error:?}");
    assert!(
        !error.message.contains("hf_secret_token") && !error.remedy.contains("hf_secret_token")
    );
    assert_eq!(home.files("llm"), [format!("{model_id}.json"), "tiny-Q8_0.gguf".to_owned()]);
}

/// An LLM takes one component, its vision projector; a diffusion model takes no projector; a
/// shard's checksum that is not one is refused before anything is fetched.
#[tokio::test]
async fn components_go_with_the_kind_of_model_they_serve() {
    let home = Home::new("component-kinds");
    let url = |f: &str| ModelSource::Url { url: format!("http://127.0.0.1:9/{f}") };
    let comp = |role| ComponentRequest { role, source: url("c.gguf"), sha256: None };
    let request = |kind, components| DownloadRequest {
        name: "M".into(),
        kind,
        source: url("M-00001-of-00002.gguf"),
        sha256: None,
        shard_sha256: Vec::new(),
        components,
        directory: None,
    };
    let refused = [
        (ModelKind::Llm, vec![comp(ComponentRole::Vae)]),
        (ModelKind::Diffusion, vec![comp(ComponentRole::Projector)]),
        (ModelKind::Llm, vec![comp(ComponentRole::Projector), comp(ComponentRole::Projector)]),
    ];
    for (kind, components) in refused {
        let e = home.queue.enqueue(request(kind, components)).unwrap_err();
        assert!(e.to_string().contains("vision projector"), "{kind:?}: {e}");
    }
    let bad_shard = DownloadRequest {
        shard_sha256: vec![None, Some("not hex".into())],
        ..request(ModelKind::Llm, Vec::new())
    };
    let e = home.queue.enqueue(bad_shard).unwrap_err();
    assert!(e.to_string().contains("is not a SHA-256"), "{e}");
    assert!(home.queue.statuses().is_empty());
}
