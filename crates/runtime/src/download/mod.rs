//! Resumable, verified HTTP downloads, shared by models now and runtimes later.
//!
//! A download writes `<dest>.part` and a small sidecar `<dest>.part.json` (URL, validators,
//! total) that survives an app restart; the next attempt asks for the rest with `Range` and
//! `If-Range`. A server that ignores `Range`, or whose file changed, restarts cleanly from zero.
//! Network errors and 5xx answers are retried with backoff, from where the bytes stopped; a
//! stall (no bytes for `stall_timeout`) counts as a network error. SHA-256 is computed while the
//! bytes stream in; a file becomes `<dest>` only after the checksum matches, and a mismatch
//! deletes it, so a retry starts clean.

pub mod disk;
pub mod progress;

use crate::{Result, RuntimeError};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

pub use progress::Snapshot;

#[derive(Debug, Clone)]
pub struct DownloadConfig {
    /// No bytes for this long: the connection is dropped and the download retried.
    pub stall_timeout: Duration,
    /// Attempts in a row that brought no new bytes before giving up.
    pub max_retries: u32,
    /// First retry delay; doubles each time, capped at 30 s.
    pub backoff: Duration,
}

impl Default for DownloadConfig {
    fn default() -> Self {
        Self {
            stall_timeout: Duration::from_secs(30),
            max_retries: 5,
            backoff: Duration::from_millis(500),
        }
    }
}

/// One file to fetch.
#[derive(Debug, Clone)]
pub struct DownloadSpec {
    pub url: String,
    /// Where the finished file goes (the caller has checked it lies inside the storage root).
    pub dest: PathBuf,
    /// Hex SHA-256 the file must have, with or without a `sha256:` prefix.
    pub expected_sha256: Option<String>,
    /// Sent as `Authorization: Bearer …` (a Hugging Face token).
    pub bearer_token: Option<String>,
}

/// What the running download is told to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Run,
    /// Stop and keep the `.part`, to continue later.
    Pause,
    /// Stop and delete the `.part`.
    Cancel,
}

/// The handle a queue keeps to pause or cancel a running download.
#[derive(Debug, Clone)]
pub struct Control {
    tx: watch::Sender<Command>,
}

impl Default for Control {
    fn default() -> Self {
        Self { tx: watch::channel(Command::Run).0 }
    }
}

impl Control {
    pub fn pause(&self) {
        self.tx.send_replace(Command::Pause);
    }

    pub fn cancel(&self) {
        self.tx.send_replace(Command::Cancel);
    }

    pub fn resume(&self) {
        self.tx.send_replace(Command::Run);
    }

    pub fn current(&self) -> Command {
        *self.tx.borrow()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Downloaded {
    pub path: PathBuf,
    pub bytes: u64,
    /// Lower-case hex.
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Done(Downloaded),
    /// Paused; `<dest>.part` holds `bytes` and the next call continues from there.
    Paused {
        bytes: u64,
    },
}

const WRITE_BATCH: usize = 1 << 20;

/// What survives a restart next to the `.part` file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Sidecar {
    url: String,
    etag: Option<String>,
    last_modified: Option<String>,
    total: Option<u64>,
    /// A checksum the server announced (Hugging Face's `x-linked-etag`), kept for the end.
    server_sha256: Option<String>,
}

pub fn part_path(dest: &Path) -> PathBuf {
    let mut s = dest.as_os_str().to_owned();
    s.push(".part");
    PathBuf::from(s)
}

fn sidecar_path(dest: &Path) -> PathBuf {
    let mut s = dest.as_os_str().to_owned();
    s.push(".part.json");
    PathBuf::from(s)
}

/// `sha256:ABC…` or `abc…` -> `abc…`, if it is 64 hex digits.
pub fn normalise_sha256(s: &str) -> Option<String> {
    let hex = s.trim().trim_matches('"');
    let hex = hex.strip_prefix("sha256:").unwrap_or(hex).to_ascii_lowercase();
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit())).then_some(hex)
}

/// Why an attempt ended, when it did not finish.
enum Interrupted {
    /// Worth another attempt (network error, 5xx, stall, short body).
    Retry(String),
    Fatal(RuntimeError),
    Paused,
    Cancelled,
}

impl From<RuntimeError> for Interrupted {
    fn from(e: RuntimeError) -> Self {
        Interrupted::Fatal(e)
    }
}

#[derive(Debug, Clone)]
pub struct Downloader {
    client: reqwest::Client,
    /// For reading headers a redirect carries (Hugging Face's `x-linked-etag`).
    no_redirect: reqwest::Client,
    config: DownloadConfig,
}

/// The most a remote GGUF header read fetches before giving up.
const MAX_REMOTE_HEADER: usize = 128 << 20;

/// Bytes a remote header read asks for past the least the header can span: at most this much
/// is fetched past its end.
pub const HEADER_READ_AHEAD: u64 = 64 << 10;

impl Downloader {
    pub fn new(config: DownloadConfig) -> Result<Self> {
        crate::net::install_crypto_provider();
        let build = |redirects: reqwest::redirect::Policy| {
            reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(15))
                .user_agent(concat!("genai-control-panel/", env!("CARGO_PKG_VERSION")))
                .redirect(redirects)
                .build()
                .map_err(|e| RuntimeError::Internal(format!("HTTP client: {e}")))
        };
        Ok(Self {
            client: build(reqwest::redirect::Policy::limited(10))?,
            no_redirect: build(reqwest::redirect::Policy::none())?,
            config,
        })
    }

    /// The SHA-256 a server announces for a file before redirecting to its storage: Hugging
    /// Face puts it in `x-linked-etag` on the redirect itself, which a following client never
    /// sees. Best effort: any failure means "nothing announced".
    async fn announced_sha256(&self, spec: &DownloadSpec) -> Option<String> {
        let mut req = self.no_redirect.head(&spec.url).timeout(Duration::from_secs(15));
        if let Some(token) = &spec.bearer_token {
            req = req.bearer_auth(token);
        }
        let resp = req.send().await.ok()?;
        let v = resp.headers().get("x-linked-etag")?.to_str().ok()?;
        normalise_sha256(v)
    }

    /// The size a server gives for a file (HEAD, following redirects); `None` if it will not say.
    pub async fn remote_size(&self, url: &str, bearer_token: Option<&str>) -> Option<u64> {
        let mut req = self.client.head(url).timeout(Duration::from_secs(15));
        if let Some(token) = bearer_token {
            req = req.bearer_auth(token);
        }
        let resp = req.send().await.ok()?;
        if !resp.status().is_success() {
            return None;
        }
        resp.headers().get(reqwest::header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
    }

    /// Reads a remote GGUF file's header without downloading the file, in a few `Range`
    /// requests: each asks up to the least the header can span by what was read so far
    /// ([`gguf::read_header_prefix`]) and one read-ahead block more, so at most
    /// [`HEADER_READ_AHEAD`] bytes past the header's end are fetched, and a large vocabulary
    /// takes a handful of requests. A header over 128 MiB (by its own counts) is refused.
    pub async fn read_gguf_header(
        &self,
        url: &str,
        bearer_token: Option<&str>,
    ) -> Result<gguf::Header> {
        let limits =
            gguf::Limits { max_header_bytes: MAX_REMOTE_HEADER as u64, ..Default::default() };
        let invalid = |detail: String| RuntimeError::GgufInvalid { path: url.to_owned(), detail };
        let mut buf: Vec<u8> = Vec::new();
        let mut ended = false;
        loop {
            let at_least = match gguf::read_header_prefix(&buf, limits) {
                Ok(h) => return Ok(h),
                Err(gguf::Prefix::Invalid(e)) => return Err(invalid(e.to_string())),
                Err(gguf::Prefix::More(_)) if ended => {
                    return Err(invalid(gguf::Error::Truncated(buf.len() as u64).to_string()))
                }
                Err(gguf::Prefix::More(n)) => n,
            };
            let to = at_least + HEADER_READ_AHEAD;
            ended = self.read_range(url, bearer_token, &mut buf, to, limits).await?;
        }
    }

    /// Appends the file's bytes from `buf.len()` up to `to` (exclusive); true when the file
    /// ended first. A server that ignores `Range` sends the whole file: that answer is read on
    /// past `to`, parsing at doubling sizes, until the header parses, and dropped then.
    async fn read_range(
        &self,
        url: &str,
        bearer_token: Option<&str>,
        buf: &mut Vec<u8>,
        to: u64,
        limits: gguf::Limits,
    ) -> Result<bool> {
        let from = buf.len() as u64;
        let range = format!("bytes={from}-{}", to - 1);
        let mut req = self.client.get(url).header(reqwest::header::RANGE, range);
        if let Some(token) = bearer_token {
            req = req.bearer_auth(token);
        }
        let net =
            |e: reqwest::Error| RuntimeError::Network { url: url.to_owned(), detail: describe(&e) };
        let resp = req.send().await.map_err(net)?;
        let status = resp.status().as_u16();
        if status == 416 {
            return Ok(true); // the file ends before `from`
        }
        if !(200..300).contains(&status) {
            return Err(RuntimeError::HttpStatus { url: url.to_owned(), status });
        }
        let whole = status != 206;
        let mut skip = if whole { from as usize } else { 0 };
        let mut next_parse = to;
        let mut stream = resp.bytes_stream();
        loop {
            let chunk =
                tokio::time::timeout(self.config.stall_timeout, stream.next()).await.map_err(
                    |_| RuntimeError::Network { url: url.to_owned(), detail: "stalled".into() },
                )?;
            let Some(chunk) = chunk else { return Ok(true) };
            let chunk = chunk.map_err(net)?;
            let fresh = &chunk[skip.min(chunk.len())..];
            skip -= chunk.len() - fresh.len();
            if !whole {
                let take = ((to - buf.len() as u64) as usize).min(fresh.len());
                buf.extend_from_slice(&fresh[..take]);
                if buf.len() as u64 >= to {
                    return Ok(false);
                }
                continue;
            }
            buf.extend_from_slice(fresh);
            if buf.len() as u64 >= next_parse {
                let more =
                    matches!(gguf::read_header_prefix(buf, limits), Err(gguf::Prefix::More(_)));
                if !more || buf.len() as u64 > limits.max_header_bytes {
                    return Ok(false);
                }
                next_parse = (buf.len() as u64 * 2).min(limits.max_header_bytes + 1);
            }
        }
    }

    /// Fetches `spec.url` into `spec.dest`, resuming what an earlier attempt left.
    pub async fn download(
        &self,
        spec: &DownloadSpec,
        control: &Control,
        mut on_progress: impl FnMut(Snapshot),
    ) -> Result<Outcome> {
        let expected = match &spec.expected_sha256 {
            None => None,
            Some(s) => Some(normalise_sha256(s).ok_or_else(|| {
                RuntimeError::InvalidInput(format!("{s:?} is not a SHA-256 (64 hex digits)"))
            })?),
        };
        if let Some(dir) = spec.dest.parent() {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(|e| RuntimeError::io("creating folder", dir, e))?;
        }
        let mut state = Resume::load(spec).await?;
        if expected.is_none() && state.sidecar.server_sha256.is_none() {
            state.sidecar.server_sha256 = self.announced_sha256(spec).await;
        }
        let mut failures = 0u32;
        loop {
            let before = state.offset;
            match self.attempt(spec, control, &mut state, &mut on_progress).await {
                Ok(()) => break,
                Err(Interrupted::Paused) => return Ok(Outcome::Paused { bytes: state.offset }),
                Err(Interrupted::Cancelled) => {
                    remove_part(&spec.dest).await;
                    return Err(RuntimeError::Cancelled);
                }
                Err(Interrupted::Fatal(e)) => return Err(e),
                Err(Interrupted::Retry(why)) => {
                    // New bytes mean the network works: only attempts in a row without progress
                    // count towards giving up.
                    failures = if state.offset > before { 1 } else { failures + 1 };
                    if failures > self.config.max_retries {
                        return Err(RuntimeError::Network { url: spec.url.clone(), detail: why });
                    }
                    let delay =
                        (self.config.backoff * 2u32.pow(failures - 1)).min(Duration::from_secs(30));
                    let mut rx = control.tx.subscribe();
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = rx.wait_for(|c| *c != Command::Run) => {}
                    }
                    match control.current() {
                        Command::Run => {}
                        Command::Pause => return Ok(Outcome::Paused { bytes: state.offset }),
                        Command::Cancel => {
                            remove_part(&spec.dest).await;
                            return Err(RuntimeError::Cancelled);
                        }
                    }
                }
            }
        }

        let actual = hex(state.hasher.clone().finalize().as_slice());
        let wanted = expected.or_else(|| state.sidecar.server_sha256.clone());
        if let Some(wanted) = wanted {
            if wanted != actual {
                remove_part(&spec.dest).await;
                return Err(RuntimeError::ChecksumMismatch {
                    file: spec.dest.display().to_string(),
                    expected: wanted,
                    actual,
                });
            }
        }
        let part = part_path(&spec.dest);
        tokio::fs::rename(&part, &spec.dest)
            .await
            .map_err(|e| RuntimeError::io("renaming", &part, e))?;
        let _ = tokio::fs::remove_file(sidecar_path(&spec.dest)).await;
        Ok(Outcome::Done(Downloaded {
            path: spec.dest.clone(),
            bytes: state.offset,
            sha256: actual,
        }))
    }

    async fn attempt(
        &self,
        spec: &DownloadSpec,
        control: &Control,
        state: &mut Resume,
        on_progress: &mut impl FnMut(Snapshot),
    ) -> Result<(), Interrupted> {
        match control.current() {
            Command::Run => {}
            Command::Pause => return Err(Interrupted::Paused),
            Command::Cancel => return Err(Interrupted::Cancelled),
        }
        let mut req = self.client.get(&spec.url);
        if let Some(token) = &spec.bearer_token {
            req = req.bearer_auth(token);
        }
        if state.offset > 0 {
            req = req.header(reqwest::header::RANGE, format!("bytes={}-", state.offset));
            // Only continue if it is still the same file; otherwise the server sends it whole.
            if let Some(v) = state.sidecar.etag.as_ref().or(state.sidecar.last_modified.as_ref()) {
                req = req.header(reqwest::header::IF_RANGE, v);
            }
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => return Err(Interrupted::Retry(describe(&e))),
        };
        let status = resp.status().as_u16();
        match status {
            200 => {
                if state.offset > 0 {
                    // Range ignored, or the file changed: start over.
                    state.restart(spec).await?;
                }
            }
            206 => {
                let start = resp
                    .headers()
                    .get(reqwest::header::CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("bytes "))
                    .and_then(|v| v.split('-').next())
                    .and_then(|v| v.parse::<u64>().ok());
                if start != Some(state.offset) {
                    state.restart(spec).await?;
                    return Err(Interrupted::Retry(format!(
                        "server resumed at {start:?}, not {}",
                        state.offset
                    )));
                }
            }
            416 if state.sidecar.total == Some(state.offset) => return Ok(()),
            416 => {
                state.restart(spec).await?;
                return Err(Interrupted::Retry("range not satisfiable; starting over".into()));
            }
            408 | 429 | 500..=599 => return Err(Interrupted::Retry(format!("HTTP {status}"))),
            _ => {
                return Err(Interrupted::Fatal(RuntimeError::HttpStatus {
                    url: spec.url.clone(),
                    status,
                }));
            }
        }

        let header =
            |name: &str| resp.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let remaining = resp.content_length();
        let total = remaining.map(|n| n + state.offset);
        state.sidecar.url = spec.url.clone();
        state.sidecar.total = total.or(state.sidecar.total);
        state.sidecar.etag = header("etag").or(state.sidecar.etag.take());
        state.sidecar.last_modified =
            header("last-modified").or(state.sidecar.last_modified.take());
        if let Some(sha) = header("x-linked-etag").as_deref().and_then(normalise_sha256) {
            state.sidecar.server_sha256 = Some(sha);
        }
        if let (Some(need), Some(dir)) = (remaining, spec.dest.parent()) {
            if let Some(free) = disk::available_bytes(dir) {
                if free < need {
                    return Err(Interrupted::Fatal(RuntimeError::InsufficientDisk {
                        dir: dir.display().to_string(),
                        needed: need,
                        available: free,
                    }));
                }
            }
        }
        state.save(spec).await?;

        let part = part_path(&spec.dest);
        let mut file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&part)
            .await
            .map_err(|e| RuntimeError::io("opening", &part, e))?;
        let mut meter = progress::Meter::new(state.offset);
        let total = state.sidecar.total;
        on_progress(meter.tick(Instant::now(), state.offset, total, true).unwrap());
        let mut stream = resp.bytes_stream();
        let mut rx = control.tx.subscribe();
        // Network chunks are small (about 16 KiB); writing them one by one through tokio's
        // blocking pool costs more than the hashing. Batch them into 1 MiB writes (and write
        // what is pending at each progress tick).
        let mut pending: Vec<u8> = Vec::with_capacity(WRITE_BATCH);
        // Progress goes out on a clock, not per chunk: when bytes stop (a stall, a slow
        // server), the window still learns how far the download got and that its speed fell.
        let mut ticker = tokio::time::interval(progress::EMIT_EVERY);
        let mut last_data = tokio::time::Instant::now();
        let result = loop {
            tokio::select! {
                next = stream.next() => match next {
                    None => break Ok(()),
                    Some(Err(e)) => break Err(Interrupted::Retry(describe(&e))),
                    Some(Ok(chunk)) => {
                        last_data = tokio::time::Instant::now();
                        pending.extend_from_slice(&chunk);
                        if pending.len() >= WRITE_BATCH {
                            if let Err(e) = file.write_all(&pending).await {
                                break Err(Interrupted::Fatal(RuntimeError::io("writing", &part, e)));
                            }
                            pending.clear();
                        }
                        state.hasher.update(&chunk);
                        state.offset += chunk.len() as u64;
                    }
                },
                _ = tokio::time::sleep_until(last_data + self.config.stall_timeout) => {
                    break Err(Interrupted::Retry(format!(
                        "no data for {} s",
                        self.config.stall_timeout.as_secs_f32()
                    )));
                }
                _ = ticker.tick() => {
                    // What arrived goes to the file before it is reported, so a kill loses
                    // nothing the window has shown (the next start resumes from the .part).
                    if !pending.is_empty() {
                        if let Err(e) = file.write_all(&pending).await {
                            break Err(Interrupted::Fatal(RuntimeError::io("writing", &part, e)));
                        }
                        pending.clear();
                    }
                    if let Some(s) = meter.tick(Instant::now(), state.offset, total, false) {
                        on_progress(s);
                    }
                }
                // The watch guard is dropped inside, so this future stays Send.
                _ = async { rx.wait_for(|c| *c != Command::Run).await.map(|_| ()) } => {
                    break match control.current() {
                        Command::Cancel => Err(Interrupted::Cancelled),
                        _ => Err(Interrupted::Paused),
                    };
                }
            }
        };
        // Whatever happened, what arrived is kept for the next attempt. (After a crash the
        // .part's real length is what counts: Resume::load hashes exactly that.)
        if let Err(e) = file.write_all(&pending).await {
            return Err(Interrupted::Fatal(RuntimeError::io("writing", &part, e)));
        }
        let _ = file.flush().await;
        let _ = file.sync_data().await;
        result?;
        if let Some(t) = total {
            if state.offset < t {
                return Err(Interrupted::Retry(format!(
                    "connection closed at {} of {t} bytes",
                    state.offset
                )));
            }
        }
        on_progress(meter.tick(Instant::now(), state.offset, total, true).unwrap());
        Ok(())
    }
}

/// Where a download stands: bytes in the `.part`, their running hash, the sidecar.
struct Resume {
    offset: u64,
    hasher: Sha256,
    sidecar: Sidecar,
}

impl Resume {
    /// Picks up a `.part` left by an earlier run when its sidecar names the same URL. Its bytes
    /// are hashed once to restore the running SHA-256 (the hash state itself is not saved).
    async fn load(spec: &DownloadSpec) -> Result<Self> {
        let part = part_path(&spec.dest);
        let sidecar: Option<Sidecar> = tokio::fs::read(sidecar_path(&spec.dest))
            .await
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .filter(|s: &Sidecar| s.url == spec.url);
        let mut state = Self { offset: 0, hasher: Sha256::new(), sidecar: Sidecar::default() };
        match (sidecar, tokio::fs::File::open(&part).await) {
            (Some(sc), Ok(mut f)) => {
                let mut buf = vec![0u8; 1 << 20];
                loop {
                    let n = f
                        .read(&mut buf)
                        .await
                        .map_err(|e| RuntimeError::io("reading", &part, e))?;
                    if n == 0 {
                        break;
                    }
                    state.hasher.update(&buf[..n]);
                    state.offset += n as u64;
                }
                state.sidecar = sc;
            }
            _ => remove_part(&spec.dest).await,
        }
        Ok(state)
    }

    async fn restart(&mut self, spec: &DownloadSpec) -> Result<(), Interrupted> {
        remove_part(&spec.dest).await;
        self.offset = 0;
        self.hasher = Sha256::new();
        self.sidecar = Sidecar { url: spec.url.clone(), ..Sidecar::default() };
        Ok(())
    }

    async fn save(&self, spec: &DownloadSpec) -> Result<()> {
        crate::storage::write_json_atomic(&sidecar_path(&spec.dest), &self.sidecar).await
    }
}

/// Deletes what an unfinished download of `dest` left: its `.part` and its sidecar. The one
/// place that knows both names; the queue calls it too.
pub fn discard_partial(dest: &Path) {
    let _ = std::fs::remove_file(part_path(dest));
    let _ = std::fs::remove_file(sidecar_path(dest));
}

async fn remove_part(dest: &Path) {
    let dest = dest.to_path_buf();
    let _ = tokio::task::spawn_blocking(move || discard_partial(&dest)).await;
}

fn describe(e: &reqwest::Error) -> String {
    use std::error::Error as _;
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_forms() {
        let h = "a".repeat(64);
        assert_eq!(normalise_sha256(&format!("sha256:{h}")), Some(h.clone()));
        assert_eq!(normalise_sha256(&format!("\"{}\"", h.to_uppercase())), Some(h.clone()));
        assert_eq!(normalise_sha256("abc"), None);
        assert_eq!(normalise_sha256(&"g".repeat(64)), None);
    }

    #[test]
    fn part_names() {
        assert_eq!(part_path(Path::new("/m/x.gguf")), PathBuf::from("/m/x.gguf.part"));
        assert_eq!(sidecar_path(Path::new("/m/x.gguf")), PathBuf::from("/m/x.gguf.part.json"));
    }
}
