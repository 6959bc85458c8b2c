//! The two checks a build must pass before the app uses it.
//!
//! Phase 1 runs `llama-server --version` / `sd-cli --help` (stdin closed, with a timeout).
//! Phase 2 for sd.cpp makes a 64×64 image in one step from the tiny Flux.2 [klein] model the app
//! writes ([`SdCheckModel`]), the way the build will make images: through the `sd-server` beside
//! sd-cli when the build has one ([`sd_server_phase2`], a warm backend asked over its job API),
//! else through sd-cli ([`sd_phase2`]), which must exit cleanly and leave a PNG of that size.
//! Phase 2 for llama-server loads the tiny model the app carries, asks for one token over
//! HTTP, and reads the load log: a GPU error line fails the build, and a GPU build that found no
//! GPU is a silent CPU fallback, which also fails it so the next variant is tried. The test
//! model is a few hundred KB, so a slow disk or a large user model cannot push a good GPU build
//! off the machine (as a 15 s budget with the user's own model did upstream).

use super::scan::{self, LoadReport};
use crate::net::{free_port, local_client};
use crate::process;
use crate::{Result, RuntimeError};
use ipc::event::LogLevel;
use ipc::runtimes::{RuntimeKind, Variant};
use std::path::Path;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct CheckConfig {
    pub phase1_timeout: Duration,
    /// From start to a generated token; the tiny model loads in well under a second.
    pub phase2_timeout: Duration,
}

impl Default for CheckConfig {
    fn default() -> Self {
        Self { phase1_timeout: Duration::from_secs(10), phase2_timeout: Duration::from_secs(60) }
    }
}

/// Why a build was turned down.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckFailure {
    /// It did not run, timed out, or said something that is not what the program says.
    Broken(String),
    /// It printed a line that means its GPU failed.
    GpuError { label: String, line: String },
    /// A GPU build that found no GPU and would quietly run on the CPU.
    SilentCpuFallback(String),
}

impl std::fmt::Display for CheckFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Broken(m) => f.write_str(m),
            Self::GpuError { label, line } => write!(f, "GPU error detected: {label} ({line})"),
            Self::SilentCpuFallback(m) => write!(f, "silent CPU fallback: {m}"),
        }
    }
}

pub type Log<'a> = &'a mut (dyn FnMut(LogLevel, String) + Send);

/// Phase 1. Answers the build's own version line.
pub async fn phase1(
    kind: RuntimeKind,
    exe: &Path,
    config: &CheckConfig,
    log: Log<'_>,
) -> Result<std::result::Result<String, CheckFailure>> {
    let flag = match kind {
        RuntimeKind::Llama => "--version",
        RuntimeKind::Diffusion => "--help",
    };
    log(LogLevel::Info, format!("Phase 1: running {} {flag}", exe.display()));
    let out = match process::run(exe, &[flag], config.phase1_timeout, |_| {}).await {
        Ok(out) => out,
        Err(RuntimeError::Io { source, .. }) => {
            return Ok(Err(CheckFailure::Broken(format!("it cannot be started: {source}"))));
        }
        Err(e) => return Err(e),
    };
    let text = out.text();
    let tail = tail(&out.lines, 5);
    let verdict = match (kind, out.status) {
        (_, None) => Err(CheckFailure::Broken(format!(
            "{flag} did not finish within {} s",
            config.phase1_timeout.as_secs()
        ))),
        (RuntimeKind::Llama, Some(s)) if !s.success() => {
            Err(CheckFailure::Broken(format!("{flag} {}: {tail}", s.describe())))
        }
        (RuntimeKind::Llama, Some(_)) => match scan::version_line(&text) {
            Some(v) if v.to_ascii_lowercase().contains("version") => Ok(v),
            _ => Err(CheckFailure::Broken(format!("{flag} printed no version: {tail}"))),
        },
        // sd-cli prints an error line before the usage text and its exit code varies between
        // builds; the usage text is what shows the program runs.
        (RuntimeKind::Diffusion, Some(_)) if scan::has_usage_text(&text) => Ok(text
            .lines()
            .find(|l| l.to_ascii_lowercase().contains("usage:"))
            .unwrap_or("usage")
            .trim()
            .to_owned()),
        (RuntimeKind::Diffusion, Some(s)) => {
            Err(CheckFailure::Broken(format!("{flag} printed no usage text ({s}): {tail}")))
        }
    };
    match &verdict {
        Ok(v) => log(LogLevel::Info, format!("Phase 1: ✓ passed ({v})")),
        Err(e) => log(LogLevel::Error, format!("Phase 1: ✗ {e}")),
    }
    Ok(verdict)
}

fn tail(lines: &[String], n: usize) -> String {
    let start = lines.len().saturating_sub(n);
    let t = lines[start..].join(" | ");
    if t.is_empty() {
        "no output".to_owned()
    } else {
        t
    }
}

/// Feeds a load-log line to the report and passes the telling ones to the setup log.
fn observe(line: &str, report: &mut LoadReport, log: Log<'_>) {
    let before = report.clone();
    report.feed(line);
    let lower = line.to_ascii_lowercase();
    if *report != before || lower.contains("warning") || lower.contains("error") {
        log(LogLevel::Debug, line.to_owned());
    }
}

/// The three files of the tiny Flux.2 [klein] model sd-cli's functional check runs.
#[derive(Debug, Clone)]
pub struct SdCheckModel {
    pub diffusion_model: std::path::PathBuf,
    pub llm: std::path::PathBuf,
    pub taesd: std::path::PathBuf,
}

/// The side of the image sd-cli's check makes.
pub const SD_CHECK_SIZE: u32 = 64;

/// Phase 2 for sd-cli: one 64×64 image in one step from `model`, written to `out` (removed
/// afterwards). Answers the image's size.
pub async fn sd_phase2(
    exe: &Path,
    model: &SdCheckModel,
    out: &Path,
    config: &CheckConfig,
    log: Log<'_>,
) -> Result<std::result::Result<(u32, u32), CheckFailure>> {
    let side = SD_CHECK_SIZE;
    let mut args = crate::diffusion::args::build_args(&check_image(model, out));
    // Its debug output would only push the lines that explain a failure out of the tail.
    args.retain(|a| a != "-v");
    log(LogLevel::Info, format!("Phase 2: a {side}×{side} image from the test model"));
    let _ = tokio::fs::remove_file(out).await;
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let run = process::run(exe, &args, config.phase2_timeout, |_| {}).await?;
    let png = tokio::fs::read(out).await.ok();
    let _ = tokio::fs::remove_file(out).await;
    let verdict = match (&run.status, png.as_deref().and_then(png_size)) {
        (None, _) => Err(CheckFailure::Broken(format!(
            "no image within {} s: {}",
            config.phase2_timeout.as_secs(),
            tail(&run.lines, 4)
        ))),
        (Some(s), _) if !s.success() => Err(CheckFailure::Broken(format!(
            "{} making the test image: {}",
            s.describe(),
            tail(&run.lines, 4)
        ))),
        (Some(_), Some(size)) if size == (SD_CHECK_SIZE, SD_CHECK_SIZE) => Ok(size),
        (Some(_), Some((w, h))) => {
            Err(CheckFailure::Broken(format!("the test image is {w}×{h}, not {side}×{side}")))
        }
        (Some(_), None) => Err(CheckFailure::Broken(format!(
            "it exited cleanly but wrote no PNG to {}: {}",
            out.display(),
            tail(&run.lines, 4)
        ))),
    };
    match &verdict {
        Ok((w, h)) => log(LogLevel::Info, format!("Phase 2: ✓ sd-cli made a {w}×{h} image")),
        Err(e) => log(LogLevel::Error, format!("Phase 2: ✗ {e}")),
    }
    Ok(verdict)
}

/// The check image's request, for either path.
fn check_image(model: &SdCheckModel, out: &Path) -> crate::diffusion::args::SdImage {
    use crate::diffusion::args::{Offload, SdImage, SdModel};
    let s = |p: &Path| p.display().to_string();
    SdImage {
        model: SdModel::Components(vec![
            ("diffusion_model".into(), s(&model.diffusion_model)),
            ("llm".into(), s(&model.llm)),
            ("taesd".into(), s(&model.taesd)),
        ]),
        prompt: "a red circle".into(),
        negative_prompt: None,
        width: SD_CHECK_SIZE,
        height: SD_CHECK_SIZE,
        steps: 1,
        cfg_scale: 1.0,
        seed: 1,
        sampler: Some("euler".into()),
        threads: None,
        offload: Offload::default(),
        output: s(out),
    }
}

/// Phase 2 through `server` (the build's sd-server): started on a free loopback port with the
/// test model, asked for the same 64×64 image over its job API, then ended. `lora_dir`: an
/// empty folder of its own. Answers the image's size, read from the PNG it sent.
pub async fn sd_server_phase2(
    server: &Path,
    model: &SdCheckModel,
    lora_dir: &Path,
    config: &CheckConfig,
    log: Log<'_>,
) -> Result<std::result::Result<(u32, u32), CheckFailure>> {
    use crate::diffusion::progress::Tracker;
    use crate::diffusion::sd_server::{Backend, ServerSpec};
    let side = SD_CHECK_SIZE;
    log(
        LogLevel::Info,
        format!("Phase 2: a {side}×{side} image from the test model through {}", server.display()),
    );
    let image = check_image(model, Path::new(""));
    let spec = ServerSpec {
        model: image.model.clone(),
        offload: image.offload,
        threads: None,
        port: free_port()?,
        lora_dir: lora_dir.display().to_string(),
    };
    let limit = config.phase2_timeout;
    // The whole of it within the check's time; a backend dropped on the way is killed.
    let made = tokio::time::timeout(limit, async {
        let mut b = Backend::start(
            server,
            spec,
            process::LoadDeadline::fixed(limit),
            |_| {},
            std::future::pending(),
        )
        .await?;
        let (_keep, never) = tokio::sync::watch::channel(false);
        let out = b.generate(&image, 1, never, &mut Tracker::new(1, 1), |_| {}, |_| {}).await;
        if !b.is_gone() {
            b.release(Duration::from_secs(5)).await?;
        }
        out
    })
    .await;
    let verdict = match made {
        Err(_) => Err(CheckFailure::Broken(format!("no image within {} s", limit.as_secs()))),
        Ok(Err(e)) => Err(CheckFailure::Broken(e.to_string())),
        Ok(Ok(out)) => match out.images.first().map(|i| (i.width, i.height)) {
            Some(size) if size == (side, side) => Ok(size),
            Some((w, h)) => {
                Err(CheckFailure::Broken(format!("the test image is {w}×{h}, not {side}×{side}")))
            }
            None => Err(CheckFailure::Broken("it answered the job without an image".into())),
        },
    };
    match &verdict {
        Ok((w, h)) => log(LogLevel::Info, format!("Phase 2: ✓ sd-server made a {w}×{h} image")),
        Err(e) => log(LogLevel::Warn, format!("Phase 2: ✗ sd-server: {e}")),
    }
    Ok(verdict)
}

/// Width and height from a PNG's signature and IHDR chunk; `None` for anything else.
pub fn png_size(bytes: &[u8]) -> Option<(u32, u32)> {
    let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    (bytes.len() >= 24 && bytes.starts_with(b"\x89PNG\r\n\x1a\n") && &bytes[12..16] == b"IHDR")
        .then(|| (be(&bytes[16..20]), be(&bytes[20..24])))
}

/// Phase 2 for llama-server: one token from `model`, all layers on the GPU for GPU variants.
pub async fn phase2(
    exe: &Path,
    model: &Path,
    variant: Variant,
    config: &CheckConfig,
    log: Log<'_>,
) -> Result<std::result::Result<LoadReport, CheckFailure>> {
    let port = free_port()?;
    let ngl = if variant == Variant::Cpu { "0" } else { "999" };
    let port_s = port.to_string();
    let model_s = model.to_string_lossy();
    let args = [
        "-m",
        &model_s,
        "--host",
        "127.0.0.1",
        "--port",
        &port_s,
        "-ngl",
        ngl,
        "-c",
        "256",
        "-np",
        "1",
        "-lv",
        "4",
    ];
    log(LogLevel::Info, format!("Phase 2: one-token generation on the test model (-ngl {ngl})"));
    let mut child = process::Supervised::spawn(exe, args)?;
    let client = local_client()?;
    let base = format!("http://127.0.0.1:{port}");
    let health = format!("{base}/health");
    let mut report = LoadReport::default();
    let ready = child
        .wait_ready(
            || crate::net::answers(&client, &health, Duration::from_secs(2)),
            process::LoadDeadline::fixed(config.phase2_timeout),
            |l| {
                observe(l, &mut report, log);
                match report.error.clone() {
                    Some((label, line)) => {
                        process::Flow::Stop(CheckFailure::GpuError { label, line })
                    }
                    None => process::Flow::Continue,
                }
            },
            std::future::pending(),
        )
        .await;
    let verdict: std::result::Result<(), CheckFailure> = match ready {
        process::Ready::Ready => Ok(()),
        process::Ready::Stopped(failure) => Err(failure),
        process::Ready::TimedOut => Err(CheckFailure::Broken(format!(
            "not healthy within {} s: {}",
            config.phase2_timeout.as_secs(),
            child.tail().joined(4)
        ))),
        process::Ready::Exited(info) => match report.error.clone() {
            // What it printed on the way out was read before the exit came; judge by it.
            Some((label, line)) => Err(CheckFailure::GpuError { label, line }),
            None => Err(CheckFailure::Broken(format!(
                "llama-server {} while loading the test model: {}",
                info.describe(),
                child.tail().joined(4)
            ))),
        },
    };
    let verdict = match verdict {
        Err(e) => Err(e),
        Ok(()) => {
            let reply = client
                .post(format!("{base}/completion"))
                .timeout(Duration::from_secs(30))
                .header("content-type", "application/json")
                .body(r#"{"prompt":"2+2=","n_predict":1}"#)
                .send()
                .await;
            let body = match reply {
                Ok(r) if r.status().is_success() => match r.bytes().await {
                    Ok(b) => serde_json::from_slice::<serde_json::Value>(&b)
                        .map_err(|e| format!("not JSON: {e}")),
                    Err(e) => Err(e.to_string()),
                },
                Ok(r) => Err(format!("HTTP {}", r.status())),
                Err(e) => Err(e.to_string()),
            };
            // What it logged while generating counts too.
            while let Ok(process::Event::Line(_, l)) =
                tokio::time::timeout(Duration::from_millis(100), child.next()).await
            {
                observe(&l, &mut report, log);
            }
            match (body, report.error.clone()) {
                (_, Some((label, line))) => Err(CheckFailure::GpuError { label, line }),
                (Err(e), None) => Err(CheckFailure::Broken(format!("/completion failed: {e}"))),
                (Ok(v), None) if v.get("content").is_none() => {
                    Err(CheckFailure::Broken(format!("/completion answered without content: {v}")))
                }
                (Ok(_), None) if variant.is_gpu() && !report.used_gpu() => {
                    Err(CheckFailure::SilentCpuFallback(format!(
                        "the {} build found no GPU and ran on the CPU",
                        variant.label()
                    )))
                }
                (Ok(_), None) => Ok(()),
            }
        }
    };
    child.terminate(Duration::from_secs(5)).await?;
    Ok(match verdict {
        Ok(()) => {
            let where_ = match report.offloaded {
                Some((a, b)) => format!("{a}/{b} layers on the GPU"),
                None if report.gpus.is_empty() => "on the CPU".to_owned(),
                None => "GPU".to_owned(),
            };
            let devices = if report.gpus.is_empty() {
                "no GPU devices".to_owned()
            } else {
                report.gpus.join(", ")
            };
            log(LogLevel::Info, format!("Phase 2: ✓ generated a token ({where_}; {devices})"));
            Ok(report)
        }
        Err(e) => {
            let level = match e {
                CheckFailure::SilentCpuFallback(_) => LogLevel::Warn,
                _ => LogLevel::Error,
            };
            log(level, format!("Phase 2: ✗ {e}"));
            Err(e)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn png_size_reads_the_header_and_nothing_else() {
        let mut png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x40\0\0\0\x20\x08\x02\0\0\0".to_vec();
        assert_eq!(png_size(&png), Some((64, 32)));
        png[1] = b'J';
        assert_eq!(png_size(&png), None, "not a PNG");
        assert_eq!(png_size(b"\x89PNG\r\n\x1a\n\0\0"), None, "cut short");
        assert_eq!(png_size(b""), None);
    }
}
