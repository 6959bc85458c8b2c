//! The warm image backend: stable-diffusion.cpp's `sd-server`, started once with the model and
//! kept loaded between images, driven through its job API (`/sdcpp/v1/img_gen`,
//! `/sdcpp/v1/jobs/{id}`, `…/cancel`, `/sdcpp/v1/capabilities`).
//!
//! What sd-server does that shapes this module (read from its source, 0.4.7):
//! - it loads every weight before it binds its port, then prints `listening on: IP:PORT`; it is
//!   ready when `/sdcpp/v1/capabilities` answers. A port taken at that moment makes it exit 0
//!   without a word, after the whole load;
//! - one job runs at a time; its job JSON carries no progress, so progress comes from the step
//!   bars it prints, exactly as with sd-cli ([`super::progress`]);
//! - a queued job can be cancelled through the API, a generating one cannot (409): ending the
//!   process is the only way, and the next image starts a new backend;
//! - it rewrites bad values silently (a float seed becomes 42, steps are clamped to 1–100), so
//!   the body is built from validated values with the JSON types it reads;
//! - it walks its LoRA folder (default: its working directory) on every request: it is given an
//!   empty folder of its own.
//!
//! The argv and the wire format are pure functions with table tests; [`Backend`] is the process.

use super::args::{model_args, offload_args, validate, Offload, SdImage, SdModel};
use super::job::{ImageOut, JobOut};
use super::progress::{Snapshot, Tracker};
use crate::binaries::check::png_size;
use crate::process::{self, Flow, LoadDeadline, Program, Ready, Supervised};
use crate::{Result, RuntimeError};
use base64::Engine as _;
use ipc::ErrorCode;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// How often a submitted job is polled.
pub const POLL: Duration = Duration::from_millis(200);
/// Consecutive failed polls (the process still alive) before the job counts as lost.
pub const POLL_FAILURES: u32 = 3;
/// How long one API call may take (the server answers at once; it works on its own thread).
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// A poll answers within this or counts as failed (a stopped or hung process answers nothing).
const POLL_TIMEOUT: Duration = Duration::from_secs(2);

/// What sd-server is started with; two launches with equal specs serve the same images.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSpec {
    pub model: SdModel,
    pub offload: Offload,
    pub threads: Option<u32>,
    pub port: u16,
    /// An empty folder of the backend's own (see the module notes).
    pub lora_dir: String,
}

/// argv after the program name: the model files, where parts run, threads, the local address,
/// the LoRA folder, and `-v` for the buffer lines (the measured side of the memory ledger).
pub fn build_server_args(s: &ServerSpec) -> Vec<String> {
    let mut a: Vec<String> = model_args(&s.model);
    let mut push = |parts: &[&str]| a.extend(parts.iter().map(|p| (*p).to_owned()));
    push(&offload_args(s.offload));
    if let Some(t) = s.threads {
        push(&["-t", &t.to_string()]);
    }
    // Always the loopback address: sd-server has no authentication and answers any origin; the
    // app's own job API is the only face other programs see.
    push(&["--listen-ip", "127.0.0.1", "--listen-port", &s.port.to_string()]);
    push(&["--lora-model-dir", &s.lora_dir]);
    push(&["-v"]);
    a
}

/// The `img_gen` body for `count` images of `i` (seeds `i.seed`, `i.seed + 1`, …), with the JSON
/// types sd-server reads (integers as integers: a float seed would be ignored for 42).
pub fn img_gen_body(i: &SdImage, count: u32) -> Value {
    let mut sample = json!({
        "sample_steps": i.steps,
        "guidance": { "txt_cfg": i.cfg_scale },
    });
    if let Some(s) = &i.sampler {
        sample["sample_method"] = json!(s);
    }
    json!({
        "prompt": i.prompt,
        "negative_prompt": i.negative_prompt.clone().unwrap_or_default(),
        "width": i.width,
        "height": i.height,
        "seed": i.seed,
        "batch_count": count.max(1),
        "sample_params": sample,
        "output_format": "png",
        // The image as generated; what it was made with is in the job's own record.
        "embed_image_metadata": false,
    })
}

/// A job as sd-server reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobState {
    Queued {
        position: u32,
    },
    Generating,
    /// The PNG files, in batch order.
    Completed(Vec<Vec<u8>>),
    Failed {
        code: String,
        message: String,
    },
    Cancelled,
}

/// Reads `GET /sdcpp/v1/jobs/{id}`'s body; an answer that is not one is an error naming why.
pub fn parse_job(v: &Value) -> std::result::Result<JobState, String> {
    let status = v["status"].as_str().ok_or("no status in the job")?;
    let error = |field: &str| v["error"][field].as_str().unwrap_or_default().to_owned();
    Ok(match status {
        "queued" => JobState::Queued { position: v["queue_position"].as_u64().unwrap_or(0) as u32 },
        "generating" => JobState::Generating,
        "completed" => {
            let images =
                v["result"]["images"].as_array().ok_or("a completed job without images")?;
            let mut indexed = images
                .iter()
                .map(|im| {
                    let b64 = im["b64_json"].as_str().ok_or("an image without data")?;
                    let png = base64::engine::general_purpose::STANDARD
                        .decode(b64)
                        .map_err(|e| format!("an image that is not base64: {e}"))?;
                    Ok((im["index"].as_u64().unwrap_or(0), png))
                })
                .collect::<std::result::Result<Vec<_>, String>>()?;
            indexed.sort_by_key(|(i, _)| *i);
            JobState::Completed(indexed.into_iter().map(|(_, png)| png).collect())
        }
        "failed" => JobState::Failed { code: error("code"), message: error("message") },
        "cancelled" => JobState::Cancelled,
        other => return Err(format!("unknown job status {other:?}")),
    })
}

/// What a refused submission means: sd-server's `{"error": …}` with its HTTP status.
pub fn submit_error(status: u16, body: &str) -> RuntimeError {
    let said = serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| {
            let e = v["error"].as_str()?.to_owned();
            Some(match v["message"].as_str() {
                Some(m) => format!("{e}: {m}"),
                None => e,
            })
        })
        .unwrap_or_else(|| body.chars().take(200).collect());
    match status {
        400 => RuntimeError::InvalidInput(format!("the image backend refused the request: {said}")),
        429 => RuntimeError::Busy(format!("the image backend is full: {said}")),
        _ => RuntimeError::ServerFailed {
            code: ErrorCode::ServerCrashed,
            message: format!("the image backend answered HTTP {status}: {said}"),
        },
    }
}

/// One sd-server process with its model loaded.
pub struct Backend {
    child: Supervised,
    spec: ServerSpec,
    client: reqwest::Client,
    /// From the spawn to the first answer of its API.
    load_time: Duration,
    /// The process ended (a cancel of a running image ends it); the next image needs another.
    gone: bool,
    /// A job with no output line and no change of state for this long is stuck (zero: never).
    watchdog: Duration,
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backend")
            .field("pid", &self.child.pid())
            .field("port", &self.spec.port)
            .field("gone", &self.gone)
            .finish_non_exhaustive()
    }
}

/// How a start ended when it did not give a backend.
fn start_failure(
    child: &Supervised,
    exit: Option<process::ExitInfo>,
    during: &str,
) -> RuntimeError {
    let program = Program::SdServer;
    let tail = child.tail();
    let mut code = process::classify_failure(&tail.lines(), exit, program);
    if code == ErrorCode::ServerCrashed {
        code = ErrorCode::ServerStartFailed;
    }
    RuntimeError::ServerFailed {
        code,
        message: process::failure_message(program, exit, during, tail),
    }
}

impl Backend {
    /// Starts `exe` with `spec` (its LoRA folder made, empty) and waits until its API answers,
    /// within `deadline`; `on_line` sees every line of the load; `stop` resolving ends the start
    /// with [`RuntimeError::Cancelled`] and the process.
    pub async fn start(
        exe: &Path,
        spec: ServerSpec,
        deadline: LoadDeadline,
        mut on_line: impl FnMut(&str),
        stop: impl std::future::Future<Output = ()>,
    ) -> Result<Self> {
        let lora = PathBuf::from(&spec.lora_dir);
        std::fs::create_dir_all(&lora)
            .map_err(|e| RuntimeError::io("creating folder", &lora, e))?;
        let client = crate::net::local_client()?;
        let mut child = Supervised::spawn(exe, build_server_args(&spec))?;
        let url = format!("http://127.0.0.1:{}/sdcpp/v1/capabilities", spec.port);
        let probe = || {
            let (client, url) = (client.clone(), url.clone());
            async move { crate::net::answers(&client, &url, Duration::from_secs(1)).await }
        };
        let lines = |l: &str| {
            on_line(l);
            // The weights are in and the port is about to be bound: ask at once.
            if l.contains("listening on") {
                Flow::ProbeNow
            } else {
                Flow::Continue
            }
        };
        let ready = child.wait_ready(probe, deadline, lines, stop).await;
        let load_time = child.spawned_at().elapsed();
        match ready {
            Ready::Ready => Ok(Self {
                child,
                spec,
                client,
                load_time,
                gone: false,
                watchdog: Duration::from_secs(600),
            }),
            Ready::Stopped(()) => {
                child.kill().await?;
                Err(RuntimeError::Cancelled)
            }
            Ready::TimedOut => {
                let _ = child.kill().await;
                let during =
                    format!("while loading (no answer after {:.0} s)", load_time.as_secs_f32());
                Err(start_failure(&child, None, &during))
            }
            Ready::Exited(info)
                if info.success()
                    && child.tail().lines().iter().any(|l| l.contains("listening on")) =>
            {
                // Loaded, then the bind failed: somebody took the port meanwhile.
                Err(RuntimeError::PortInUse(spec.port))
            }
            Ready::Exited(info) => Err(start_failure(&child, Some(info), "while loading")),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    /// How long a job may go without an output line or a change of state before it counts as
    /// stuck and the process is ended (zero: never).
    pub fn set_watchdog(&mut self, after: Duration) {
        self.watchdog = after;
    }

    pub fn spec(&self) -> &ServerSpec {
        &self.spec
    }

    pub fn load_time(&self) -> Duration {
        self.load_time
    }

    /// Whether the process has ended (after a cancel of a running image or a crash).
    pub fn is_gone(&self) -> bool {
        self.gone
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.spec.port)
    }

    /// Makes `count` images of `base` (seed + i each), in one request. `tracker` (made for
    /// `count` images of `base.steps`; it may have seen this backend's load) follows the output.
    /// `cancel` set to true ends the job as [`RuntimeError::Cancelled`]: through the API while
    /// it is queued, by ending the process while it runs (the backend is then gone).
    pub async fn generate(
        &mut self,
        base: &SdImage,
        count: u32,
        mut cancel: watch::Receiver<bool>,
        tracker: &mut Tracker,
        mut on_progress: impl FnMut(Snapshot),
        mut on_line: impl FnMut(&str),
    ) -> Result<JobOut> {
        validate(base)?;
        let started = Instant::now();
        let count = count.max(1);
        // What the last request printed after its answer was read is its own, not this one's.
        for l in self.child.ready_lines() {
            on_line(&l);
        }
        on_progress(tracker.snapshot());
        if *cancel.borrow() {
            return Err(RuntimeError::Cancelled);
        }
        let id = self.submit(base, count).await?;
        let job_url = self.url(&format!("/sdcpp/v1/jobs/{id}"));
        let mut tick = tokio::time::interval(POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failures = 0;
        let mut last_state = JobState::Queued { position: 0 };
        let mut active_at = tokio::time::Instant::now();
        let watchdog = self.watchdog;
        let never = Duration::from_secs(86_400 * 365);
        let state = loop {
            let stuck_at = active_at + if watchdog.is_zero() { never } else { watchdog };
            tokio::select! {
                _ = tokio::time::sleep_until(stuck_at) => {
                    let _ = self.child.kill().await;
                    self.gone = true;
                    return Err(RuntimeError::ServerFailed {
                        code: ErrorCode::JobStuck,
                        message: format!(
                            "sd-server printed nothing and its job did not change for {} s; it was ended",
                            watchdog.as_secs()
                        ),
                    });
                }
                ev = self.child.next() => match ev {
                    process::Event::Line(_, l) => {
                        active_at = tokio::time::Instant::now();
                        on_line(&l);
                        if tracker.feed(&l) {
                            on_progress(tracker.snapshot());
                        }
                    }
                    process::Event::Exited(info) => {
                        self.gone = true;
                        let program = Program::SdServer;
                        let tail = self.child.tail();
                        return Err(RuntimeError::ServerFailed {
                            code: process::classify_failure(&tail.lines(), Some(info), program),
                            message: process::failure_message(program, Some(info), "during an image", tail),
                        });
                    }
                },
                _ = tick.tick() => match self.poll(&job_url).await {
                    Ok(s @ (JobState::Completed(_) | JobState::Failed { .. } | JobState::Cancelled)) => break s,
                    Ok(s) => {
                        failures = 0;
                        if s != last_state {
                            active_at = tokio::time::Instant::now();
                        }
                        last_state = s;
                    }
                    Err(e) => {
                        failures += 1;
                        if failures >= POLL_FAILURES {
                            // Alive (an exit is the branch above) but silent: hung.
                            let _ = self.release(Duration::from_secs(2)).await;
                            return Err(RuntimeError::ServerFailed {
                                code: ErrorCode::JobStuck,
                                message: format!(
                                    "sd-server stopped answering about its job ({e}); it was ended"
                                ),
                            });
                        }
                    }
                },
                changed = cancel.changed() => {
                    if changed.is_err() || *cancel.borrow() {
                        self.cancel_job(&id, &last_state).await?;
                        return Err(RuntimeError::Cancelled);
                    }
                }
            }
        };
        // Its last lines ("generate_image completed in …") were printed before its answer.
        tokio::time::sleep(Duration::from_millis(20)).await;
        for l in self.child.ready_lines() {
            on_line(&l);
            if tracker.feed(&l) {
                on_progress(tracker.snapshot());
            }
        }
        let pngs = match state {
            JobState::Completed(p) => p,
            JobState::Cancelled => return Err(RuntimeError::Cancelled),
            JobState::Failed { code, message } => {
                let tail = self.child.tail();
                let mut ec = process::classify_failure(&tail.lines(), None, Program::SdServer);
                if ec == ErrorCode::ServerCrashed {
                    ec = ErrorCode::Internal;
                }
                return Err(RuntimeError::ServerFailed {
                    code: ec,
                    message: format!("sd-server could not make the image ({code}: {message})"),
                });
            }
            _ => unreachable!("the loop breaks on a final state"),
        };
        let mut images = Vec::new();
        for (i, png) in pngs.into_iter().enumerate() {
            let (width, height) = png_size(&png).ok_or_else(|| RuntimeError::ServerFailed {
                code: ErrorCode::ServerCrashed,
                message: format!("sd-server answered {} bytes that are not a PNG", png.len()),
            })?;
            images.push(ImageOut { png, seed: base.seed.wrapping_add(i as i64), width, height });
        }
        Ok(JobOut { images, time_taken: started.elapsed() })
    }

    async fn submit(&self, base: &SdImage, count: u32) -> Result<String> {
        let r = self
            .client
            .post(self.url("/sdcpp/v1/img_gen"))
            .timeout(CALL_TIMEOUT)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(img_gen_body(base, count).to_string())
            .send()
            .await
            .map_err(|e| RuntimeError::ServerFailed {
                code: ErrorCode::ServerCrashed,
                message: format!("the image backend did not take the job: {e}"),
            })?;
        let status = r.status().as_u16();
        let body = r.text().await.unwrap_or_default();
        if status != 202 && status != 200 {
            return Err(submit_error(status, &body));
        }
        serde_json::from_str::<Value>(&body)
            .ok()
            .and_then(|v| v["id"].as_str().map(str::to_owned))
            .ok_or_else(|| RuntimeError::ServerFailed {
                code: ErrorCode::ServerCrashed,
                message: format!("the image backend took the job without an id: {body}"),
            })
    }

    async fn poll(&self, url: &str) -> std::result::Result<JobState, String> {
        let r =
            self.client.get(url).timeout(POLL_TIMEOUT).send().await.map_err(|e| e.to_string())?;
        let status = r.status().as_u16();
        let body = r.bytes().await.map_err(|e| e.to_string())?;
        if status != 200 {
            return Err(format!("HTTP {status}: {}", String::from_utf8_lossy(&body)));
        }
        let v: Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
        parse_job(&v)
    }

    /// A queued job is taken back through the API; a running one (or a refused take-back) ends
    /// the process.
    async fn cancel_job(&mut self, id: &str, last: &JobState) -> Result<()> {
        if matches!(last, JobState::Queued { .. }) {
            let url = self.url(&format!("/sdcpp/v1/jobs/{id}/cancel"));
            // With a length of zero said outright: sd-server's HTTP library otherwise waits
            // for a body until its 5 s read timeout before it answers.
            let r = self
                .client
                .post(url)
                .header(reqwest::header::CONTENT_LENGTH, "0")
                .timeout(CALL_TIMEOUT)
                .send()
                .await;
            if r.is_ok_and(|r| r.status().as_u16() == 200) {
                return Ok(());
            }
        }
        self.gone = true;
        self.child.kill().await.map(|_| ())
    }

    /// Ends the process (SIGTERM, then SIGKILL after `grace`); an exit that cannot be confirmed
    /// is an error naming the PID, so that no second backend is started beside it.
    pub async fn release(&mut self, grace: Duration) -> Result<process::ExitInfo> {
        let info = self.child.terminate(grace).await?;
        self.gone = true;
        Ok(info)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image() -> SdImage {
        SdImage {
            model: SdModel::Single("/m/sd.gguf".into()),
            prompt: "a red circle".into(),
            negative_prompt: None,
            width: 64,
            height: 128,
            steps: 4,
            cfg_scale: 1.0,
            seed: 7,
            sampler: None,
            threads: None,
            offload: Offload::default(),
            output: String::new(),
        }
    }

    #[test]
    fn argv_has_the_model_the_offload_the_loopback_address_and_an_own_lora_folder() {
        let cases: &[(SdModel, Offload, Option<u32>, &str)] = &[
            (
                SdModel::Single("/m/sd.gguf".into()),
                Offload::default(),
                None,
                "-m /m/sd.gguf --listen-ip 127.0.0.1 --listen-port 8090 --lora-model-dir /s/loras -v",
            ),
            (
                // Components in the fixed order whatever order they come in.
                SdModel::Components(vec![
                    ("vae".into(), "/m/ae.gguf".into()),
                    ("llm".into(), "/m/qwen.gguf".into()),
                    ("diffusion_model".into(), "/m/flux.gguf".into()),
                ]),
                Offload { clip_on_cpu: true, vae_on_cpu: true, offload_to_cpu: true, diffusion_fa: true },
                Some(4),
                "--diffusion-model /m/flux.gguf --llm /m/qwen.gguf --vae /m/ae.gguf --clip-on-cpu \
                 --vae-on-cpu --offload-to-cpu --diffusion-fa -t 4 --listen-ip 127.0.0.1 \
                 --listen-port 8090 --lora-model-dir /s/loras -v",
            ),
        ];
        for (model, offload, threads, want) in cases {
            let spec = ServerSpec {
                model: model.clone(),
                offload: *offload,
                threads: *threads,
                port: 8090,
                lora_dir: "/s/loras".into(),
            };
            let want: Vec<&str> = want.split_whitespace().collect();
            assert_eq!(build_server_args(&spec), want, "{model:?}");
        }
    }

    #[test]
    fn the_body_carries_integers_as_integers_and_the_batch_as_one_request() {
        let mut i = image();
        i.sampler = Some("euler".into());
        i.negative_prompt = Some("blurry".into());
        i.cfg_scale = 3.5;
        let b = img_gen_body(&i, 3);
        assert_eq!(b["seed"], json!(7));
        assert!(
            b["seed"].is_i64()
                && b["width"].is_u64()
                && b["sample_params"]["sample_steps"].is_u64()
        );
        assert_eq!(b["batch_count"], json!(3));
        assert_eq!(b["width"], json!(64));
        assert_eq!(b["height"], json!(128));
        assert_eq!(b["negative_prompt"], json!("blurry"));
        assert_eq!(b["sample_params"]["sample_method"], json!("euler"));
        assert_eq!(b["sample_params"]["guidance"]["txt_cfg"], json!(3.5));
        assert_eq!(b["output_format"], json!("png"));
        // No sampler named: the model's default (the key left out, not null).
        let b = img_gen_body(&image(), 0);
        assert!(b["sample_params"].get("sample_method").is_none());
        assert_eq!(b["batch_count"], json!(1));
        assert_eq!(b["negative_prompt"], json!(""));
    }

    #[test]
    fn job_answers_read_as_states() {
        let png = |n: u8| base64::engine::general_purpose::STANDARD.encode([b'P', n]);
        let cases: Vec<(Value, std::result::Result<JobState, &str>)> = vec![
            (
                json!({"status": "queued", "queue_position": 2}),
                Ok(JobState::Queued { position: 2 }),
            ),
            (json!({"status": "generating", "queue_position": 0}), Ok(JobState::Generating)),
            (
                // Out of order on the wire: put back in batch order.
                json!({"status": "completed", "result": {"output_format": "png", "images": [
                    {"index": 1, "b64_json": png(1)}, {"index": 0, "b64_json": png(0)}]}, "error": null}),
                Ok(JobState::Completed(vec![vec![b'P', 0], vec![b'P', 1]])),
            ),
            (
                json!({"status": "failed", "result": null,
                       "error": {"code": "generation_failed", "message": "generate_image returned no results"}}),
                Ok(JobState::Failed {
                    code: "generation_failed".into(),
                    message: "generate_image returned no results".into(),
                }),
            ),
            (
                json!({"status": "cancelled", "error": {"code": "cancelled", "message": "job cancelled by client"}}),
                Ok(JobState::Cancelled),
            ),
            (json!({"error": "job not found"}), Err("no status in the job")),
            (json!({"status": "completed", "result": null}), Err("a completed job without images")),
            (
                json!({"status": "completed", "result": {"images": [{"index": 0, "b64_json": "%%"}]}}),
                Err("base64"),
            ),
            (json!({"status": "paused"}), Err("unknown job status")),
        ];
        for (v, want) in cases {
            match (parse_job(&v), want) {
                (Ok(got), Ok(want)) => assert_eq!(got, want, "{v}"),
                (Err(got), Err(want)) => assert!(got.contains(want), "{v}: {got}"),
                (got, want) => panic!("{v}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn refusals_map_to_what_the_caller_can_do() {
        let e = submit_error(400, r#"{"error":"invalid json","message":"at line 1"}"#);
        assert!(
            matches!(&e, RuntimeError::InvalidInput(m) if m.contains("invalid json: at line 1")),
            "{e:?}"
        );
        assert!(matches!(
            submit_error(429, r#"{"error":"job queue is full"}"#),
            RuntimeError::Busy(_)
        ));
        let e = submit_error(500, "boom");
        assert!(
            matches!(&e, RuntimeError::ServerFailed { code: ErrorCode::ServerCrashed, message } if message.contains("HTTP 500: boom")),
            "{e:?}"
        );
    }
}
