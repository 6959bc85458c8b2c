//! The real llama-server (built by `scripts/build-llama-server`, path in
//! `GENAI_TEST_LLAMA_SERVER`) installed from a release archive on the fixture mirror: it passes
//! phase 1 and a real one-token generation on the tiny model the app carries, and is cached.
//! `scripts/test` runs these with `--ignored`.

use ipc::runtimes::{RuntimeKind, Variant};
use ipc::StorageRootSource;
use runtime::binaries::manifest::{Asset, ReleaseManifest};
use runtime::binaries::{Binaries, BinariesConfig, How};
use runtime::{EventBus, StorageLayout, StorageRoot};
use std::path::PathBuf;
use testkit::http::{FixtureServer, Route};
use testkit::TempDir;

fn real_llama_server() -> PathBuf {
    let p = std::env::var_os("GENAI_TEST_LLAMA_SERVER")
        .expect("GENAI_TEST_LLAMA_SERVER must name a llama-server (scripts/build-llama-server)");
    PathBuf::from(p)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the real llama-server; scripts/test builds it and runs this"]
async fn the_real_llama_server_installs_passes_both_phases_and_is_cached() {
    let exe = std::fs::read(real_llama_server()).unwrap();
    let body = testkit::archive::tar_gz(&[("llama-b9860/llama-server", &exe, 0o755)]);
    let sha = testkit::archive::sha256_hex(&body);

    let server = FixtureServer::start().await;
    let file = "llama-b9860-bin-ubuntu-x64.tar.gz";
    server.add(&format!("/mirror/{file}"), Route::bytes(body));
    let cpu = Asset {
        variant: Variant::Cpu,
        order: 1,
        file: file.into(),
        sha256: sha,
        dependencies: vec![],
    };
    let manifest = ReleaseManifest::single(
        RuntimeKind::Llama,
        "b9860",
        "linux-x64",
        &["llama-server"],
        vec![cpu],
    );
    let dir = TempDir::new("real-llama");
    let open = || {
        let storage =
            StorageLayout::create(StorageRoot::new(dir.path(), StorageRootSource::Env)).unwrap();
        let config = BinariesConfig {
            manifest: manifest.clone(),
            platform: Some("linux-x64".into()),
            env_mirror: Some(server.url("/mirror")),
            checks: Default::default(),
            download: Default::default(),
        };
        Binaries::new(storage, EventBus::default(), config).unwrap()
    };
    let bins = open();
    let got = bins.ensure(RuntimeKind::Llama, &[], false).await.unwrap();
    let log: Vec<String> =
        bins.status(RuntimeKind::Llama).log.into_iter().map(|l| l.message).collect();
    assert_eq!(got.how, How::Installed, "{log:#?}");
    let i = &got.installed;
    assert!(i.reported_version.starts_with("version:"), "{}", i.reported_version);
    assert!(i.generation_checked);
    assert!(i.devices.is_empty(), "the CPU build found no GPU: {:?}", i.devices);
    assert!(log.iter().any(|l| l.starts_with("Phase 1: ✓")), "{log:#?}");
    assert!(log.iter().any(|l| l.starts_with("Phase 2: ✓ generated a token")), "{log:#?}");

    // The next app start trusts the cache: nothing run, nothing hashed.
    let bins = open();
    let again = bins.ensure(RuntimeKind::Llama, &[], false).await.unwrap();
    assert_eq!(again.how, How::Cache);
    assert_eq!(bins.hashed_bytes(), 0);
    assert_eq!(again.installed, got.installed);
}
