//! Fit badges before download, against a loopback fixture with Hugging Face's routes: a repo's
//! tree, and each GGUF file behind `resolve` with `Range`. Only the headers are fetched (at most
//! 64 KiB past each), a second look reads nothing again, files that are not GGUF, cut short or
//! hostile get "cannot read" and nothing else, and the badges and the best fit follow the
//! machine.

use gguf::fixtures::{zero_model, ZeroArch, ZeroModel};
use ipc::models::FitBadge;
use runtime::download::{DownloadConfig, HEADER_READ_AHEAD};
use runtime::llama::fit::{FitAsk, FitMachine};
use runtime::models::catalog::{badges, Catalog, Facts};
use runtime::models::hf::{HfEnv, HfSettings};
use testkit::http::{FixtureServer, Route};
use testkit::TempDir;

const MIB: u64 = 1 << 20;

/// A llama of width `n_embd`, 8 blocks.
fn llama_of(n_embd: u64) -> gguf::Writer {
    zero_model(ZeroModel {
        arch: ZeroArch::Llama,
        n_vocab: 32000,
        n_embd,
        n_layer: 8,
        n_head: 4,
        n_head_kv: 2,
        head_dim: n_embd / 4,
        n_ff: n_embd * 4,
        n_ctx: 4096,
    })
}

/// The start of a llama-shaped file of width `n_embd` (its weights: about 47, 125 and 370 MiB
/// at 256, 512 and 1024): its header and 2 MiB of the weights; the header's length; the whole
/// file's length, as the repo tree gives it.
fn model(n_embd: u64) -> (Vec<u8>, u64, u64) {
    let writer = llama_of(n_embd);
    let (mut bytes, _) = writer.header_bytes();
    let header = gguf::read_header(&bytes[..], gguf::Limits::default()).unwrap().header_bytes;
    // The start of the weights: never to be fetched.
    bytes.resize(bytes.len() + 2 * MIB as usize, 0);
    (bytes, header, writer.file_len())
}

#[tokio::test]
async fn a_repo_gets_badges_from_its_headers_alone() {
    let server = FixtureServer::start().await;
    let dir = TempDir::new("catalog");
    let env = HfEnv { endpoint: Some(server.url("")), token: None };
    let catalog =
        Catalog::new(HfSettings::open(dir.path(), env), DownloadConfig::default()).unwrap();

    let files = [("M-Q2_K.gguf", 256), ("M-Q4_K_M.gguf", 512), ("M-Q8_0.gguf", 1024)];
    let mut tree = Vec::new();
    let mut headers = Vec::new();
    for (name, width) in files {
        let (bytes, header, size) = model(width);
        tree.push(format!(r#"{{"type": "file", "path": "{name}", "size": {size}}}"#));
        server.add(&format!("/acme/M-GGUF/resolve/main/{name}"), Route::bytes(bytes));
        headers.push((name, header));
    }
    // Not GGUF; cut short inside its header; a count far over the limits.
    let (whole, _, _) = model(256);
    let mut hostile = b"GGUF".to_vec();
    hostile.extend_from_slice(&3u32.to_le_bytes());
    hostile.extend_from_slice(&(1u64 << 40).to_le_bytes());
    hostile.extend_from_slice(&[0; 64]);
    let bad = [
        ("M-IQ1_S.gguf", b"<html>not a model</html>".to_vec()),
        ("M-IQ2_XS.gguf", whole[..2000].to_vec()),
        ("M-IQ3_XXS.gguf", hostile),
    ];
    for (name, bytes) in &bad {
        tree.push(format!(r#"{{"type": "file", "path": "{name}", "size": 3000000000}}"#));
        server.add(&format!("/acme/M-GGUF/resolve/main/{name}"), Route::bytes(bytes.clone()));
    }
    let tree = format!("[{}]", tree.join(","));
    server.add("/api/models/acme/M-GGUF/tree/main?recursive=true", Route::bytes(tree.into_bytes()));

    let view = catalog.open("acme/M-GGUF", "").await.unwrap();
    let names: Vec<&str> = view.entries.iter().map(|(e, _)| e.quant.as_deref().unwrap()).collect();
    assert_eq!(names, ["Q2_K", "Q4_K_M", "Q8_0", "IQ1_S", "IQ2_XS", "IQ3_XXS"]);
    for (e, facts) in &view.entries[3..] {
        assert!(matches!(facts, Facts::Unreadable(_)), "{}: {facts:?}", e.name);
    }
    // Only each header, and at most one read-ahead block past it, was fetched.
    for (name, header) in &headers {
        let sent = server.sent(&format!("/acme/M-GGUF/resolve/main/{name}"));
        assert!(
            sent >= *header && sent <= header + HEADER_READ_AHEAD,
            "{name}: {sent} for {header}"
        );
    }

    // No GPU, 250 MiB of RAM to spare (1 GiB is kept): the two smaller files fit, the largest
    // does not even at the least context; the best fit is the larger of the two.
    let machine = FitMachine { ram_available: (1 << 30) + 250 * MIB, ..Default::default() };
    let ask = FitAsk { context: 4096, kv_type: "f16".into() };
    let (reports, best) = badges(&view, &machine, &ask);
    let got: Vec<FitBadge> = reports.iter().map(|r| r.badge).collect();
    assert_eq!(
        got,
        [
            FitBadge::Cpu,
            FitBadge::Cpu,
            FitBadge::TooBig,
            FitBadge::Unreadable,
            FitBadge::Unreadable,
            FitBadge::Unreadable
        ],
        "{reports:#?}"
    );
    assert_eq!(best, Some(1), "{reports:#?}");
    assert!(reports[3].why.contains("not a GGUF file"), "{}", reports[3].why);
    // A GPU that holds the largest: every file on it, the largest the best fit.
    let gpu = FitMachine { gpus_free: vec![2 << 30], ..machine };
    let (reports, best) = badges(&view, &gpu, &ask);
    assert!(reports[..3].iter().all(|r| r.badge == FitBadge::Gpu), "{reports:#?}");
    assert_eq!(best, Some(2));

    // Opening it again reads the tree, not the headers.
    let gets = |name: &str| server.gets(&format!("/acme/M-GGUF/resolve/main/{name}")).len();
    let before: Vec<usize> = files.iter().map(|(n, _)| gets(n)).collect();
    let again = catalog.open("acme/M-GGUF", "main").await.unwrap();
    assert_eq!(again.entries.len(), 6);
    assert_eq!(files.iter().map(|(n, _)| gets(n)).collect::<Vec<_>>(), before);
}

/// Installed models get the same badge: read from their files' headers on disk, weighed against
/// the machine now (no llama-server installed here, so no GPU it could use: CPU), and a diffusion
/// model gets none.
#[tokio::test]
async fn installed_llms_get_the_same_badge() {
    use ipc::models::{FitArgs, ModelInfo, ModelKind};
    use runtime::system::SystemProbe;
    use runtime::{EventBus, Runtime, StorageRoot};
    let dir = TempDir::new("catalog-installed");
    let rt = Runtime::open(
        StorageRoot::new(dir.join("home"), ipc::StorageRootSource::Env),
        EventBus::default(),
        std::sync::Arc::new(SystemProbe::real()),
    )
    .unwrap();
    let tiny = gguf::fixtures::tiny_llama(Default::default()).to_bytes();
    for (id, kind) in [("tiny", ModelKind::Llm), ("pic", ModelKind::Diffusion)] {
        let folder = match kind {
            ModelKind::Llm => rt.storage().llm_models(),
            ModelKind::Diffusion => rt.storage().diffusion_models(),
        };
        let path = folder.join(format!("{id}.gguf"));
        std::fs::write(&path, &tiny).unwrap();
        let p = path.display().to_string();
        rt.models()
            .register(&ModelInfo::local_file(id, id, kind, &p, tiny.len() as u64))
            .await
            .unwrap();
    }
    let fits = rt.installed_fit(&FitArgs { context: 8192, kv_type: "f16".into() }).await.unwrap();
    assert_eq!(fits.len(), 1, "{fits:?}");
    assert_eq!((fits[0].id.as_str(), fits[0].fit.badge), ("tiny", FitBadge::Cpu), "{fits:?}");
    // The model was trained for 512 tokens: judged at that, as a start would use.
    assert_eq!(fits[0].fit.asked_context, 512);
}

/// A repo as the Hub serves it (its tree in pages, each file's `resolve` a redirect to storage
/// with `x-linked-etag`): a model split in two shards and a vision projector, one entry with the
/// projector as an add-on. Downloading the entry from the view fetches every shard and the
/// projector, each verified against its own SHA-256 from the tree (a tree whose second shard's
/// checksum does not match fails the download and leaves nothing); the model is registered
/// with its projector beside it, which an LLM start passes as `--mmproj` and counts.
#[tokio::test]
async fn a_split_model_and_its_projector_download_from_the_view_each_verified() {
    use ipc::models::{DownloadState, HfRepoArgs, HfSettingsArgs};
    use runtime::system::SystemProbe;
    use runtime::{EventBus, Runtime, StorageRoot};
    use testkit::hub::{serve_repo, storage_path, HubFile};
    let server = FixtureServer::start().await;
    let files = vec![
        HubFile::whole(
            "Big-Q4_K_M-00001-of-00002.gguf",
            gguf::fixtures::tiny_llama(Default::default()).to_bytes(),
        ),
        HubFile::whole(
            "Big-Q4_K_M-00002-of-00002.gguf",
            gguf::fixtures::split_shard(1, 2, 60_000).to_bytes(),
        ),
        HubFile::whole("mmproj-Big-F16.gguf", gguf::fixtures::tiny_projector(100_000).to_bytes()),
    ];
    // Two entries a page: the tree comes in two pages.
    serve_repo(&server, "acme/Big-GGUF", "main", &files, 2);
    // The same files, the tree claiming another checksum for the second shard.
    let mut lying = files.clone();
    lying[1] = lying[1].clone().claiming(&"ab".repeat(32));
    serve_repo(&server, "acme/Lying-GGUF", "main", &lying, 10);

    let dir = TempDir::new("catalog-download");
    let events = EventBus::default();
    let mut rx = events.subscribe();
    let rt = Runtime::open(
        StorageRoot::new(dir.join("home"), ipc::StorageRootSource::Env),
        events,
        std::sync::Arc::new(SystemProbe::real()),
    )
    .unwrap();
    rt.hf().set(HfSettingsArgs { endpoint: server.url(""), token: None }).await.unwrap();
    let args = |repo: &str| HfRepoArgs {
        repo: repo.into(),
        revision: None,
        context: 512,
        kv_type: "f16".into(),
        projector_bytes: 0,
    };
    let view = rt.hf_repo(&args("acme/Big-GGUF"), true).await.unwrap();
    assert_eq!(view.entries.len(), 1, "{view:#?}");
    let entry = &view.entries[0];
    assert_eq!(
        (entry.quant.as_deref(), entry.files.len(), entry.complete),
        (Some("Q4_K_M"), 2, true)
    );
    assert_eq!(view.projectors.len(), 1);
    assert_eq!(entry.files[1].sha256, files[1].sha256);
    assert_ne!(entry.fit.badge, FitBadge::Unreadable, "{:?}", entry.fit);
    // A projector chosen to go with it is weighed too (one larger than any machine's memory:
    // nothing is left for the model), from the kept view.
    let with_projector = HfRepoArgs { projector_bytes: u64::MAX / 2, ..args("acme/Big-GGUF") };
    let weighed = rt.hf_repo(&with_projector, false).await.unwrap();
    assert_eq!(weighed.entries[0].fit.badge, FitBadge::TooBig, "{:?}", weighed.entries[0].fit);
    // Only headers so far: the second shard and the projector were not fetched at all, or in
    // part.
    for f in &files {
        let sent = server.sent(&storage_path(&files, &f.path));
        assert!(sent <= f.size.min(HEADER_READ_AHEAD * 2), "{}: {sent}", f.path);
    }

    let request = entry.download_request(&view.repo, &view.revision, view.projectors.first());
    let id = rt.downloads().enqueue(request).unwrap();
    let ipc::AppEvent::DownloadFinished { model_id, .. } = outcome(&mut rx, &id).await else {
        panic!("the download failed")
    };
    let m = rt.models().get(&model_id).await.unwrap();
    let roles: Vec<&str> = m.files.iter().map(|f| f.role.as_str()).collect();
    assert_eq!(roles, ["shard 1/2", "shard 2/2", "mmproj"]);
    for (got, want) in m.files.iter().zip(&files) {
        assert_eq!(got.sha256, want.sha256, "{}", got.path);
        assert_eq!(std::fs::read(&got.path).unwrap(), want.bytes, "{}", got.path);
    }
    let projector = m.projector().unwrap();
    assert!(projector.path.ends_with("/mmproj-Big-F16.gguf"), "{}", projector.path);
    assert_eq!(m.weight_files().len(), 2);
    // A start would load the projector beside the model and count it.
    let cfg = ipc::llm::LlmConfig { model_id: model_id.clone(), ..Default::default() };
    let settings = rt.llm().preview(&cfg).await.unwrap();
    assert_eq!(settings.mmproj.as_deref(), Some(projector.path.as_str()));
    assert!(settings.explanation.contains("vision projector"), "{}", settings.explanation);
    // The installed badge weighs the model's shards, not the projector as a shard.
    let fits = rt
        .installed_fit(&ipc::models::FitArgs { context: 512, kv_type: "f16".into() })
        .await
        .unwrap();
    assert_eq!(fits.len(), 1);
    assert_ne!(fits[0].fit.badge, FitBadge::Unreadable, "{:?}", fits[0].fit);

    // A second shard that does not match the tree's checksum: failed, nothing registered or
    // left on disk of it.
    let view = rt.hf_repo(&args("acme/Lying-GGUF"), true).await.unwrap();
    let request =
        view.entries[0].download_request(&view.repo, &view.revision, view.projectors.first());
    let id = rt.downloads().enqueue(request).unwrap();
    let ipc::AppEvent::DownloadFailed { error, .. } = outcome(&mut rx, &id).await else {
        panic!("a shard that does not match its checksum was accepted")
    };
    assert_eq!(error.code, ipc::ErrorCode::ChecksumMismatch, "{error:?}");
    let status = rt.downloads().statuses().into_iter().find(|s| s.download_id == id).unwrap();
    assert_eq!(status.state, DownloadState::Failed);
    assert_eq!(rt.models().list().await.unwrap().models.len(), 1);
    // The shard that did not match is not kept; clearing the failed row removes the rest.
    let folder = |name: &str| -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(rt.storage().llm_models().join(name))
            .map(|d| d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        names.sort();
        names
    };
    let failed_folder = format!("{model_id}-2");
    assert!(
        !folder(&failed_folder).iter().any(|n| n.starts_with("Big-Q4_K_M-00002")),
        "{:?}",
        folder(&failed_folder)
    );
    rt.downloads().clear(&id).unwrap();
    assert!(!rt.storage().llm_models().join(&failed_folder).exists());
    assert_eq!(folder(&model_id).len(), 3, "the first model's files untouched");
}

/// The download's last event: finished or failed.
async fn outcome(
    rx: &mut tokio::sync::broadcast::Receiver<ipc::AppEvent>,
    id: &str,
) -> ipc::AppEvent {
    use ipc::AppEvent::{DownloadFailed, DownloadFinished};
    loop {
        let e = tokio::time::timeout(std::time::Duration::from_secs(20), rx.recv())
            .await
            .expect("an outcome in 20 s")
            .unwrap();
        match &e {
            DownloadFinished { download_id, .. } | DownloadFailed { download_id, .. }
                if download_id == id =>
            {
                return e
            }
            _ => {}
        }
    }
}

/// An installed model's facts are kept while its file is unchanged, and read again (the old
/// version forgotten) once the file is replaced, as a new download under the same name does.
#[tokio::test]
async fn an_installed_file_replaced_is_read_again() {
    let dir = TempDir::new("catalog-local");
    let env = HfEnv { endpoint: None, token: None };
    let catalog =
        Catalog::new(HfSettings::open(dir.path(), env), DownloadConfig::default()).unwrap();
    let path = dir.join("m.gguf");
    let width = |facts: Facts| match facts {
        Facts::Read(f) => f.shape.n_embd,
        Facts::Unreadable(why) => panic!("{why}"),
    };
    // Whole (sparse) files, as a finished download leaves them.
    let write = |n_embd: u64| {
        let _ = std::fs::remove_file(&path);
        llama_of(n_embd).write_sparse(&path).unwrap();
    };
    write(256);
    assert_eq!(width(catalog.local_facts(vec![path.clone()]).await), 256);
    assert_eq!(width(catalog.local_facts(vec![path.clone()]).await), 256);
    write(512);
    assert_eq!(width(catalog.local_facts(vec![path.clone()]).await), 512);
}
