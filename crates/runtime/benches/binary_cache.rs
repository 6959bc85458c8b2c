//! What trusting the validation cache costs at start-up, against hashing the binary (what
//! upstream did on every start), side by side on the same 15 MB file.
//!
//! cargo bench -p runtime --bench binary_cache
//! (`GENAI_TEST_LLAMA_SERVER` set: the real llama-server is used as the file.)

use ipc::runtimes::{InstalledRuntime, RuntimeKind, Variant};
use ipc::StorageRootSource;
use runtime::binaries::cache::{FileStamp, ValidationCache};
use runtime::binaries::{Binaries, BinariesConfig, How};
use runtime::{EventBus, StorageLayout, StorageRoot};
use std::time::{Duration, Instant};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let root = std::env::temp_dir().join(format!("genai-bench-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let storage = StorageLayout::create(StorageRoot::new(&root, StorageRootSource::Env)).unwrap();
    let exe = root.join("llama-server");
    match std::env::var_os("GENAI_TEST_LLAMA_SERVER") {
        Some(real) => {
            std::fs::copy(real, &exe).unwrap();
        }
        None => std::fs::write(&exe, vec![0x5a; 15 << 20]).unwrap(),
    }
    let stamp = FileStamp::of(&exe).unwrap();
    let installed = InstalledRuntime {
        runtime: RuntimeKind::Llama,
        version: "custom".into(),
        variant: Variant::Custom,
        path: exe.display().to_string(),
        reported_version: "version: bench".into(),
        size: stamp.size,
        sha256: runtime::models::sha256_file(&exe).unwrap(),
        checked_at_ms: 0,
        generation_checked: true,
        devices: vec![],
        offloaded_layers: None,
        custom: true,
        images: None,
    };
    rt.block_on(ValidationCache::new(storage.binaries()).save(&installed, stamp)).unwrap();
    let bins =
        Binaries::new(storage, EventBus::default(), BinariesConfig::from_env().unwrap()).unwrap();

    let runs = 200;
    let hit: Vec<Duration> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            let got = rt.block_on(bins.ensure(RuntimeKind::Llama, &[], false)).unwrap();
            let d = t.elapsed();
            assert_eq!(got.how, How::Cache);
            d
        })
        .collect();
    assert_eq!(bins.hashed_bytes(), 0);
    let hash: Vec<Duration> = (0..10)
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(runtime::models::sha256_file(&exe).unwrap());
            t.elapsed()
        })
        .collect();
    let (hit, hash) = (median(hit), median(hash));
    println!("binary: {} ({:.1} MB)", exe.display(), stamp.size as f64 / 1e6);
    println!("cache hit (ensure, size+mtime): {:.3} ms median of {runs}", hit.as_secs_f64() * 1e3);
    println!("hashing the binary (baseline): {:.1} ms median of 10", hash.as_secs_f64() * 1e3);
    println!("ratio cache hit / hashing: {:.4}", hit.as_secs_f64() / hash.as_secs_f64());
    println!(
        "goal 5 ms per cache hit: {}",
        if hit <= Duration::from_millis(5) { "met" } else { "MISSED" }
    );
    let _ = std::fs::remove_dir_all(&root);
}
