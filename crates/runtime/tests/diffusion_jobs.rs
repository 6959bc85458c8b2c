//! One job's images through a fake sd-cli that prints real-shaped output and writes real PNGs:
//! progress through the stages, seeds per image, the PNGs of the asked size, cancel that ends the
//! process at once, and a failure with its reason.

use runtime::diffusion::args::{Offload, SdImage, SdModel};
use runtime::diffusion::job;
use runtime::diffusion::progress::Stage;
use std::time::{Duration, Instant};
use testkit::fake_runtime::{self, alive};
use testkit::TempDir;
use tokio::sync::watch;

/// Fake sd-clis re-run this test binary in sd-cli mode.
#[test]
#[ignore = "entry point of the fake sd-cli, not a test"]
fn fake_sd_cli_entry() {
    fake_runtime::sd_cli_if_asked();
}

fn image() -> SdImage {
    SdImage {
        model: SdModel::Single("/m/model.gguf".into()),
        prompt: "a lighthouse".into(),
        negative_prompt: None,
        width: 128,
        height: 64,
        steps: 6,
        cfg_scale: 7.0,
        seed: 100,
        sampler: Some("euler_a".into()),
        threads: None,
        offload: Offload::default(),
        output: String::new(),
    }
}

fn fake(dir: &TempDir, step_ms: u64, fail: bool) -> std::path::PathBuf {
    fake_runtime::generating_sd_cli(dir.path(), step_ms, fail)
}

#[tokio::test]
async fn a_batch_of_two_with_progress_and_seeds() {
    let dir = TempDir::new("sdjob");
    let exe = fake(&dir, 10, false);
    let (_tx, rx) = watch::channel(false);
    let mut snaps = Vec::new();
    let out = job::run(&exe, &image(), 2, &dir.join("temp"), rx, |s| snaps.push(s), |_| {})
        .await
        .unwrap();
    assert_eq!(out.images.len(), 2);
    for (i, img) in out.images.iter().enumerate() {
        assert_eq!(img.seed, 100 + i as i64);
        assert_eq!(testkit::png::size(&img.png), Some((128, 64)), "a real PNG of the asked size");
    }
    assert_ne!(out.images[0].png, out.images[1].png);
    let calls = std::fs::read_to_string(dir.join("calls.log")).unwrap();
    assert!(
        calls.lines().next().unwrap().contains("-s 100")
            && calls.lines().nth(1).unwrap().contains("-s 101")
    );
    assert!(snaps.iter().any(|s| s.stage == Stage::Loading));
    assert!(snaps
        .iter()
        .any(|s| s.stage == Stage::Diffusion && s.step == 3 && s.eta_secs.is_some()));
    assert!(snaps.iter().any(|s| s.stage == Stage::Decoding));
    assert!(snaps.windows(2).all(|w| w[0].percent <= w[1].percent), "progress never goes back");
    let last = snaps.last().unwrap();
    assert!(last.image == 1 && last.percent > 50.0, "{last:?}");
    // Temporary outputs are gone.
    assert_eq!(std::fs::read_dir(dir.join("temp")).unwrap().count(), 0);
}

#[tokio::test]
async fn cancel_ends_the_process_within_a_second() {
    let dir = TempDir::new("sdcancel");
    let exe = fake(&dir, 500, false); // 6 steps × 0.5 s
    let (tx, rx) = watch::channel(false);
    let handle = tokio::spawn({
        let (exe, temp) = (exe.clone(), dir.join("temp"));
        async move { job::run(&exe, &image(), 1, &temp, rx, |_| {}, |_| {}).await }
    });
    // Find the fake's process, then let it get into sampling.
    let deadline = Instant::now() + Duration::from_secs(10);
    let pid = loop {
        if let Some(pid) = find_fake(&dir) {
            break pid;
        }
        assert!(Instant::now() < deadline, "the fake sd-cli never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    tokio::time::sleep(Duration::from_millis(700)).await;
    let t = Instant::now();
    tx.send(true).unwrap();
    let err = handle.await.unwrap().unwrap_err();
    assert_eq!(err.code(), ipc::ErrorCode::Cancelled);
    while alive(pid) {
        assert!(t.elapsed() < Duration::from_secs(1), "sd-cli still running 1 s after cancel");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(std::fs::read_dir(dir.join("temp")).unwrap().count(), 0, "no output left");
}

fn find_fake(dir: &TempDir) -> Option<u32> {
    fake_runtime::fake_sd_cli_pid(&dir.join("temp").display().to_string())
}

#[tokio::test]
async fn a_failure_says_why() {
    let dir = TempDir::new("sdfail");
    let exe = fake(&dir, 5, true);
    let (_tx, rx) = watch::channel(false);
    let err = job::run(&exe, &image(), 1, &dir.join("temp"), rx, |_| {}, |_| {}).await.unwrap_err();
    assert_eq!(err.code(), ipc::ErrorCode::InsufficientMemory);
    assert!(err.to_string().contains("out of memory"), "{err}");
    let bad = SdImage { width: 100, ..image() };
    let (_tx, rx) = watch::channel(false);
    let err = job::run(&exe, &bad, 1, &dir.join("temp"), rx, |_| {}, |_| {}).await.unwrap_err();
    assert_eq!(err.code(), ipc::ErrorCode::InvalidInput);
}
