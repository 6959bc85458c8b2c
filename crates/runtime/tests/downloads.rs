//! Downloads against the loopback fixture server: every fault a real network shows, resume
//! after a kill, and checksums that delete a bad file so a retry works.

use runtime::download::{
    part_path, Control, DownloadConfig, DownloadSpec, Downloader, Outcome, Snapshot,
    HEADER_READ_AHEAD,
};
use runtime::RuntimeError;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::time::Duration;
use testkit::http::{Body, Fault, FixtureServer, Route};

const LEN: u64 = 3 * 1024 * 1024 + 17;

fn sha(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

fn body() -> Vec<u8> {
    Body::pattern_bytes(LEN)
}

fn fast() -> DownloadConfig {
    DownloadConfig {
        stall_timeout: Duration::from_millis(400),
        max_retries: 3,
        backoff: Duration::from_millis(20),
    }
}

struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Self {
        let p = std::env::temp_dir().join(format!("genai-dl-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }

    fn spec(&self, url: String, sha: Option<String>) -> DownloadSpec {
        DownloadSpec {
            url,
            dest: self.0.join("model.gguf"),
            expected_sha256: sha,
            bearer_token: None,
        }
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

async fn run(
    spec: &DownloadSpec,
    config: DownloadConfig,
) -> (Result<Outcome, RuntimeError>, Vec<Snapshot>) {
    let mut seen = Vec::new();
    let r = Downloader::new(config)
        .unwrap()
        .download(spec, &Control::default(), |s| seen.push(s))
        .await;
    (r, seen)
}

fn done(r: Result<Outcome, RuntimeError>) -> runtime::download::Downloaded {
    match r {
        Ok(Outcome::Done(d)) => d,
        other => panic!("expected a finished download, got {other:?}"),
    }
}

#[tokio::test]
async fn plain_download_verifies_and_reports_progress() {
    let server = FixtureServer::start().await;
    server.add("/m.gguf", Route::bytes(body()));
    let dir = Dir::new("plain");
    let spec = dir.spec(server.url("/m.gguf"), Some(format!("sha256:{}", sha(&body()))));
    let (r, progress) = run(&spec, fast()).await;
    let d = done(r);
    assert_eq!(d.bytes, LEN);
    assert_eq!(d.sha256, sha(&body()));
    assert_eq!(std::fs::read(&spec.dest).unwrap(), body());
    assert_eq!(leftovers(&dir.0), ["model.gguf"], "no .part or sidecar left");
    let last = progress.last().unwrap();
    assert_eq!((last.downloaded, last.total), (LEN, Some(LEN)));
    assert!(progress.len() < 50, "progress is throttled: {} events", progress.len());
}

#[tokio::test]
async fn dropped_connection_resumes_with_range() {
    let server = FixtureServer::start().await;
    server.add(
        "/m.gguf",
        Route::bytes(body()).header("ETag", "\"v1\"").fault(Fault::DropAfter(1_000_000)),
    );
    let dir = Dir::new("drop");
    let d = done(run(&dir.spec(server.url("/m.gguf"), Some(sha(&body()))), fast()).await.0);
    assert_eq!(d.sha256, sha(&body()));
    let seen = server.gets("/m.gguf");
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[1].header("range"), Some("bytes=1000000-"));
    assert_eq!(seen[1].header("if-range"), Some("\"v1\""));
}

#[tokio::test]
async fn server_without_range_support_restarts_from_zero() {
    let server = FixtureServer::start().await;
    server.add("/m.gguf", Route::bytes(body()).without_ranges().fault(Fault::DropAfter(500_000)));
    let dir = Dir::new("norange");
    let d = done(run(&dir.spec(server.url("/m.gguf"), Some(sha(&body()))), fast()).await.0);
    assert_eq!(d.bytes, LEN, "the whole file once, not the first half twice");
    assert_eq!(std::fs::read(&d.path).unwrap(), body());
}

#[tokio::test]
async fn stall_is_detected_and_retried() {
    let server = FixtureServer::start().await;
    server.add("/m.gguf", Route::bytes(body()).fault(Fault::StallAfter(700_000)));
    let dir = Dir::new("stall");
    let d = done(run(&dir.spec(server.url("/m.gguf"), Some(sha(&body()))), fast()).await.0);
    assert_eq!(d.sha256, sha(&body()));
    assert_eq!(server.gets("/m.gguf")[1].header("range"), Some("bytes=700000-"));
}

#[tokio::test]
async fn server_errors_are_retried_then_reported() {
    let server = FixtureServer::start().await;
    server.add("/flaky", Route::bytes(body()).fault(Fault::Status(503)).fault(Fault::Status(500)));
    let dir = Dir::new("5xx");
    done(run(&dir.spec(server.url("/flaky"), None), fast()).await.0);
    assert_eq!(server.gets("/flaky").len(), 3);

    let mut down = Route::bytes(body());
    for _ in 0..10 {
        down = down.fault(Fault::Status(502));
    }
    server.add("/down", down);
    let dir = Dir::new("down");
    let e = run(&dir.spec(server.url("/down"), None), fast()).await.0.unwrap_err();
    assert_eq!(e.code(), ipc::ErrorCode::Network, "{e}");
    assert!(e.to_string().contains("502"), "{e}");
    assert_eq!(server.gets("/down").len(), 4, "one try and max_retries (3) retries");
}

#[tokio::test]
async fn not_found_fails_at_once_with_a_remedy() {
    let server = FixtureServer::start().await;
    let dir = Dir::new("404");
    let e = run(&dir.spec(server.url("/missing.gguf"), None), fast()).await.0.unwrap_err();
    assert_eq!(e.code(), ipc::ErrorCode::DownloadFailed);
    assert!(e.to_ipc().remedy.contains("repository"), "{}", e.to_ipc().remedy);
    assert_eq!(server.gets("/missing.gguf").len(), 1, "no retries for a 404");
    assert!(leftovers(&dir.0).is_empty());
}

#[tokio::test]
async fn checksum_mismatch_deletes_the_file_and_a_retry_succeeds() {
    let server = FixtureServer::start().await;
    // The server announces a wrong checksum (as Hugging Face's x-linked-etag would).
    let wrong = "0".repeat(64);
    server.add("/m.gguf", Route::bytes(body()).header("x-linked-etag", &format!("\"{wrong}\"")));
    let dir = Dir::new("badsum");
    let spec = dir.spec(server.url("/m.gguf"), None);
    let e = run(&spec, fast()).await.0.unwrap_err();
    assert_eq!(e.code(), ipc::ErrorCode::ChecksumMismatch);
    let msg = e.to_string();
    assert!(msg.contains(&wrong) && msg.contains(&sha(&body())), "expected and actual: {msg}");
    assert!(leftovers(&dir.0).is_empty(), "bad file left: {:?}", leftovers(&dir.0));

    // The server is fixed; the retry starts clean and succeeds.
    server.add("/m.gguf", Route::bytes(body()).header("x-linked-etag", &sha(&body())));
    let d = done(run(&spec, fast()).await.0);
    assert_eq!(d.sha256, sha(&body()));

    // A user-given checksum that does not match is refused the same way.
    let dir = Dir::new("badsum-user");
    let spec = dir.spec(server.url("/m.gguf"), Some("sha256:".to_owned() + &"ab".repeat(32)));
    assert!(matches!(run(&spec, fast()).await.0, Err(RuntimeError::ChecksumMismatch { .. })));
    assert!(leftovers(&dir.0).is_empty());
}

#[tokio::test]
async fn pause_keeps_the_part_and_resume_continues() {
    let server = FixtureServer::start().await;
    server.add("/m.gguf", Route::bytes(body()).fault(Fault::StallAfter(1_200_000)));
    let dir = Dir::new("pause");
    let spec = dir.spec(server.url("/m.gguf"), Some(sha(&body())));
    let dl = Downloader::new(DownloadConfig { stall_timeout: Duration::from_secs(30), ..fast() })
        .unwrap();
    let control = Control::default();
    let c2 = control.clone();
    // Pause once the progress says the server has stopped sending at 1.2 MB.
    let got = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let got2 = got.clone();
    let watcher = tokio::spawn(async move {
        while got2.load(std::sync::atomic::Ordering::SeqCst) < 1_200_000 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        c2.pause();
    });
    let mut seen = Vec::new();
    let r = dl
        .download(&spec, &control, |s| {
            got.store(s.downloaded, std::sync::atomic::Ordering::SeqCst);
            seen.push(s.downloaded)
        })
        .await
        .unwrap();
    watcher.await.unwrap();
    // While no bytes came (the server stalled), the window was still told how far it got.
    assert_eq!(seen.last(), Some(&1_200_000), "{seen:?}");
    assert_eq!(r, Outcome::Paused { bytes: 1_200_000 });
    assert_eq!(std::fs::metadata(part_path(&spec.dest)).unwrap().len(), 1_200_000);

    control.resume();
    let d = done(dl.download(&spec, &control, |_| {}).await);
    assert_eq!(d.sha256, sha(&body()));
    assert_eq!(server.gets("/m.gguf").last().unwrap().header("range"), Some("bytes=1200000-"));
}

#[tokio::test]
async fn cancel_removes_everything() {
    let server = FixtureServer::start().await;
    server.add("/m.gguf", Route::bytes(body()).fault(Fault::StallAfter(400_000)));
    let dir = Dir::new("cancel");
    let spec = dir.spec(server.url("/m.gguf"), None);
    let control = Control::default();
    let c2 = control.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        c2.cancel();
    });
    let dl = Downloader::new(DownloadConfig { stall_timeout: Duration::from_secs(30), ..fast() })
        .unwrap();
    let e = dl.download(&spec, &control, |_| {}).await.unwrap_err();
    assert_eq!(e.code(), ipc::ErrorCode::Cancelled);
    assert!(leftovers(&dir.0).is_empty(), "{:?}", leftovers(&dir.0));
}

#[tokio::test]
async fn not_enough_disk_space_is_refused_before_writing() {
    let server = FixtureServer::start().await;
    // A petabyte: more than any test machine has free.
    server.add("/huge.gguf", Route::new(Body::Pattern(1 << 50)));
    let dir = Dir::new("disk");
    let e = run(&dir.spec(server.url("/huge.gguf"), None), fast()).await.0.unwrap_err();
    assert_eq!(e.code(), ipc::ErrorCode::InsufficientDisk, "{e}");
    assert_eq!(
        std::fs::metadata(part_path(&dir.0.join("model.gguf"))).map(|m| m.len()).unwrap_or(0),
        0
    );
}

/// Run by `killed_process_resumes_on_the_next_start` in a child process, which it then kills.
#[tokio::test]
#[ignore = "helper: runs in a child process"]
async fn child_download() {
    let (Ok(url), Ok(dest)) = (std::env::var("GENAI_CHILD_URL"), std::env::var("GENAI_CHILD_DEST"))
    else {
        return;
    };
    let spec = DownloadSpec { url, dest: dest.into(), expected_sha256: None, bearer_token: None };
    let _ = Downloader::new(DownloadConfig::default())
        .unwrap()
        .download(&spec, &Control::default(), |_| {})
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_process_resumes_on_the_next_start() {
    let server = FixtureServer::start().await;
    // The first request stops sending after 2 MB, so the child is mid-download when killed.
    server.add(
        "/m.gguf",
        Route::bytes(body()).header("ETag", "\"k1\"").fault(Fault::StallAfter(2_000_000)),
    );
    let dir = Dir::new("kill");
    let spec = dir.spec(server.url("/m.gguf"), Some(sha(&body())));
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_download", "--ignored", "--quiet"])
        .env("GENAI_CHILD_URL", &spec.url)
        .env("GENAI_CHILD_DEST", &spec.dest)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // The downloader writes in 1 MiB batches, so the first batch on disk means it is under way.
    let part = part_path(&spec.dest);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0) < 1 << 20 {
        assert!(std::time::Instant::now() < deadline, "child never wrote its first MiB");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let kept = std::fs::metadata(&part).unwrap().len();
    assert!(!spec.dest.exists(), "nothing is a model before it is verified");

    // A new start (this process) picks up the .part and its sidecar.
    let d = done(run(&spec, fast()).await.0);
    assert_eq!(d.sha256, sha(&body()));
    let last = server.gets("/m.gguf").pop().unwrap();
    assert_eq!(last.header("range"), Some(format!("bytes={kept}-").as_str()));
    assert_eq!(last.header("if-range"), Some("\"k1\""));
}

#[tokio::test]
async fn checksum_announced_on_a_redirect_is_checked() {
    // Hugging Face answers /resolve/ with a 302 carrying x-linked-etag, then the CDN serves it.
    let server = FixtureServer::start().await;
    server.add("/cdn/m.gguf", Route::bytes(body()));
    let good = sha(&body());
    let cdn = server.url("/cdn/m.gguf");
    server.add(
        "/good/resolve/main/m.gguf",
        Route::redirect(&cdn).header("x-linked-etag", &format!("\"{good}\"")),
    );
    server.add(
        "/bad/resolve/main/m.gguf",
        Route::redirect(&cdn).header("x-linked-etag", &"1".repeat(64)),
    );

    let dir = Dir::new("redirect-good");
    let d = done(run(&dir.spec(server.url("/good/resolve/main/m.gguf"), None), fast()).await.0);
    assert_eq!(d.sha256, good);

    let dir = Dir::new("redirect-bad");
    let e =
        run(&dir.spec(server.url("/bad/resolve/main/m.gguf"), None), fast()).await.0.unwrap_err();
    assert_eq!(e.code(), ipc::ErrorCode::ChecksumMismatch, "{e}");
    assert!(leftovers(&dir.0).is_empty());
}

#[tokio::test]
async fn remote_gguf_header_reads_only_the_start() {
    use gguf::TensorData;
    // A model whose weights are 16 MiB: the header read must not fetch them.
    let w = gguf::fixtures::tiny_llama(Default::default()).tensor(TensorData {
        name: "big".into(),
        dims: vec![4 << 20],
        ggml_type: gguf::GgmlType::F32,
        data: vec![0; 16 << 20],
    });
    let bytes = w.to_bytes();
    let server = FixtureServer::start().await;
    server.add("/m.gguf", Route::bytes(bytes.clone()));
    server.add("/norange.gguf", Route::bytes(bytes.clone()).without_ranges());
    server.add("/not.gguf", Route::bytes(b"<html>not found</html>".to_vec()));
    let dl = Downloader::new(fast()).unwrap();
    for path in ["/m.gguf", "/norange.gguf"] {
        let h = dl.read_gguf_header(&server.url(path), None).await.unwrap();
        assert_eq!(h.architecture(), Some("llama"));
        assert_eq!(h.tensors.last().unwrap().name, "big");
    }
    // Only the header and at most one read-ahead block past it were fetched, in few requests.
    let header = gguf::read_header(&bytes[..], gguf::Limits::default()).unwrap().header_bytes;
    assert_eq!(server.gets("/m.gguf")[0].header("range"), Some("bytes=0-65539"));
    assert!(server.sent("/m.gguf") <= header + HEADER_READ_AHEAD, "{}", server.sent("/m.gguf"));
    assert!(server.gets("/m.gguf").len() <= 2);
    // A vocabulary of 150k tokens (a 3.6 MB header, like a real model's) in a handful.
    use gguf::fixtures::{zero_model, ZeroModel};
    let (big, _) = zero_model(ZeroModel::big_vocabulary(150_000)).header_bytes();
    let end = gguf::read_header(&big[..], gguf::Limits::default()).unwrap().header_bytes;
    let mut padded = big.clone();
    padded.resize(big.len() + (8 << 20), 0); // the weights that follow, never asked for
    server.add("/big.gguf", Route::bytes(padded));
    let h = dl.read_gguf_header(&server.url("/big.gguf"), None).await.unwrap();
    assert_eq!(h.header_bytes, end);
    let (sent, asks) = (server.sent("/big.gguf"), server.gets("/big.gguf").len());
    eprintln!("{end} header bytes: {asks} requests, {} bytes past the header", sent - end);
    assert!(sent >= end && sent <= end + HEADER_READ_AHEAD, "{sent} for {end}");
    assert!(asks <= 10, "{asks} requests");
    let e = dl.read_gguf_header(&server.url("/not.gguf"), None).await.unwrap_err();
    assert_eq!(e.code(), ipc::ErrorCode::GgufInvalid, "{e}");
    let e = dl.read_gguf_header(&server.url("/missing.gguf"), None).await.unwrap_err();
    assert_eq!(e.code(), ipc::ErrorCode::DownloadFailed, "{e}");
}
