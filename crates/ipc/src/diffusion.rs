//! Image generation: the diffusion server's settings and status, and the image jobs.
//!
//! The job types are also the bodies of the local HTTP job API, so they use the original's
//! camelCase field names: its clients (genai-lite) work unchanged.

use crate::event::{ImageStage, ServerState};
use crate::{ErrorCode, IpcError};
use serde::{Deserialize, Serialize};

/// The port the job API listens on unless told otherwise (the original's).
pub const DEFAULT_PORT: u16 = 8081;
/// How many images one request may ask for.
pub const MAX_COUNT: u32 = 5;
/// Defaults for fields a request leaves out (those of genai-lite's client).
pub const DEFAULT_SIZE: u32 = 512;
pub const DEFAULT_STEPS: u32 = 20;
pub const DEFAULT_CFG: f32 = 7.5;

/// Every sampler sd-cli accepts (`--sampling-method`), as its `--help` lists them (checked
/// against the real sd-cli by the runtime's test tier).
pub const SAMPLERS: &[&str] = &[
    "euler",
    "euler_a",
    "heun",
    "dpm2",
    "dpm++2s_a",
    "dpm++2m",
    "dpm++2mv2",
    "ipndm",
    "ipndm_v",
    "lcm",
    "ddim_trailing",
    "tcd",
    "res_multistep",
    "res_2s",
    "er_sde",
];

/// Recommended settings for a model family, matched by words in the model's name.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Preset {
    pub name: &'static str,
    pub steps: u32,
    pub cfg: f32,
    pub sampler: &'static str,
    pub size: (u32, u32),
    pub words: &'static [&'static str],
}

/// The Diffusion tab's presets; the first is the fallback.
pub const PRESETS: &[Preset] = &[
    Preset {
        name: "SD 1.5",
        steps: 20,
        cfg: 7.0,
        sampler: "euler_a",
        size: (512, 512),
        words: &[],
    },
    Preset {
        name: "SDXL",
        steps: 30,
        cfg: 7.0,
        sampler: "dpm++2m",
        size: (1024, 1024),
        words: &["xl"],
    },
    Preset {
        name: "SDXL Turbo / Lightning",
        steps: 4,
        cfg: 1.0,
        sampler: "euler_a",
        size: (512, 512),
        words: &["turbo", "lightning"],
    },
    Preset { name: "LCM", steps: 6, cfg: 1.5, sampler: "lcm", size: (512, 512), words: &["lcm"] },
    Preset {
        name: "SD 3.5",
        steps: 28,
        cfg: 4.5,
        sampler: "euler",
        size: (1024, 1024),
        words: &["sd3", "3.5"],
    },
    Preset {
        name: "Flux",
        steps: 20,
        cfg: 1.0,
        sampler: "euler",
        size: (1024, 1024),
        words: &["flux"],
    },
];

/// The index of the preset whose words the model name holds (the last match wins:
/// "sdxl-turbo" is Turbo); 0 when none does.
pub fn preset_for(model_name: &str) -> usize {
    let name = model_name.to_lowercase();
    PRESETS
        .iter()
        .enumerate()
        .rev()
        .find(|(_, p)| p.words.iter().any(|w| name.contains(w)))
        .map_or(0, |(i, _)| i)
}

/// What the user asks for when starting the diffusion server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct DiffusionConfig {
    pub model_id: String,
    /// `None`: 8081, or the next free port when it is taken. `Some(0)`: any free port.
    pub port: Option<u16>,
    /// `None`: 127.0.0.1. Any other address exposes the job API and needs `token`.
    pub host: Option<String>,
    /// Required as `Authorization: Bearer <token>` when `host` is not a loopback address.
    pub token: Option<String>,
    pub threads: Option<u32>,
    /// Overrides of the offload flags chosen from live VRAM (`None`: automatic).
    pub clip_on_cpu: Option<bool>,
    pub vae_on_cpu: Option<bool>,
    pub offload_to_cpu: Option<bool>,
    pub diffusion_fa: Option<bool>,
    /// `None`: auto.
    #[serde(default)]
    pub usage_mode: Option<UsageMode>,
    /// Seconds without an image before the warm backend is released (`None`: 300; 0: never).
    #[serde(default)]
    pub idle_release_secs: Option<u64>,
    /// Seconds an image may go without output or a change before the backend is ended as stuck
    /// (`None`: 600; 0: never).
    #[serde(default)]
    pub stuck_after_secs: Option<u64>,
}

/// The stuck-job watchdog when the settings name none.
pub const DEFAULT_STUCK_AFTER_SECS: u64 = 600;

/// The idle release when the settings name none.
pub const DEFAULT_IDLE_RELEASE_SECS: u64 = 300;

/// Whether the image backend stays loaded between images.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum UsageMode {
    /// Stay loaded until the idle timeout (or until the memory is needed).
    Burst,
    /// Release after each request.
    Single,
    /// Single when the LLM had to be paused for the image, else burst.
    #[default]
    Auto,
}

/// Where the warm image backend (sd-server) is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum BackendState {
    #[default]
    Absent,
    /// Loading the model.
    Starting,
    Ready,
    /// Making an image.
    Busy,
    Stopping,
}

/// Why the backend was released (or is starting again).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReleaseReason {
    /// The user pressed Release.
    Explicit,
    /// The image server was stopped.
    Stop,
    /// No image for the idle timeout.
    IdleTimeout,
    /// The offload flags or threads differ for the next image.
    FlagsChanged,
    /// A running image was cancelled (sd-server cannot stop one itself).
    Cancel,
    /// The usage mode releases after each request.
    Single,
    /// The LLM needed the memory.
    LlmStart,
    /// No output and no change for the watchdog's time.
    Stuck,
    /// The process ended by itself.
    Crashed,
    /// The app is closing.
    Shutdown,
}

impl ReleaseReason {
    pub fn describe(self) -> &'static str {
        match self {
            Self::Explicit => "released by you",
            Self::Stop => "the image server stopped",
            Self::IdleTimeout => "idle for the idle timeout",
            Self::FlagsChanged => "the offload settings changed",
            Self::Cancel => "a running image was cancelled",
            Self::Single => "released after the request (single use)",
            Self::LlmStart => "the LLM needed the memory",
            Self::Stuck => "a job stopped making progress",
            Self::Crashed => "the process ended by itself",
            Self::Shutdown => "the app closed",
        }
    }
}

/// The warm backend as the Diffusion tab shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct BackendInfo {
    pub state: BackendState,
    pub pid: Option<u32>,
    /// From its start to its API answering.
    pub load_ms: Option<u64>,
    pub started_at_ms: Option<u64>,
    /// When its last image ended.
    pub last_used_ms: Option<u64>,
    pub last_release: Option<ReleaseReason>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiffusionStatus {
    pub state: ServerState,
    pub model_id: Option<String>,
    pub model_name: Option<String>,
    pub model_bytes: Option<u64>,
    pub host: Option<String>,
    pub port: Option<u16>,
    /// `http://127.0.0.1:8081` while running.
    pub url: Option<String>,
    /// A job is running.
    pub busy: bool,
    pub active_job: Option<String>,
    /// The sd-cli build in use.
    pub sd_cli: Option<String>,
    pub started_at_ms: Option<u64>,
    pub last_error: Option<IpcError>,
    /// Why the API is not on the default port ("Port 8081 is in use by …").
    #[serde(default)]
    pub port_note: Option<String>,
    /// Images come from a warm sd-server (the build has one), else from one sd-cli per image.
    #[serde(default)]
    pub warm: bool,
    #[serde(default)]
    pub backend: BackendInfo,
}

impl DiffusionStatus {
    pub fn stopped() -> Self {
        Self {
            state: ServerState::Stopped,
            model_id: None,
            model_name: None,
            model_bytes: None,
            host: None,
            port: None,
            url: None,
            busy: false,
            active_job: None,
            sd_cli: None,
            started_at_ms: None,
            last_error: None,
            port_note: None,
            warm: false,
            backend: BackendInfo::default(),
        }
    }
}

/// One request for images (the body of `POST /v1/images/generations`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ImageRequest {
    #[serde(default)]
    pub prompt: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub negative_prompt: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cfg_scale: Option<f32>,
    /// Absent or negative: a random seed, reported back with each image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampler: Option<String>,
    /// 1 to 5 images, seeds seed, seed+1, …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
    /// This request's use of the warm backend (`None`: the server's setting): `burst` keeps it
    /// loaded, `single` releases it after this request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage_mode: Option<UsageMode>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    Pending,
    InProgress,
    Complete,
    Error,
    Cancelled,
}

impl JobStatus {
    pub fn is_finished(self) -> bool {
        matches!(self, Self::Complete | Self::Error | Self::Cancelled)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobProgress {
    pub stage: ImageStage,
    pub current_step: u32,
    pub total_steps: u32,
    /// 0..=100 over the whole job (every image, each stage by its share).
    pub percentage: f32,
    /// 1-based.
    pub current_image: u32,
    pub total_images: u32,
    /// From the measured pace; `None` until a step was timed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eta_secs: Option<f32>,
}

impl JobProgress {
    /// "Diffusion · step 5/20 · image 1/2 · 42% · about 3 s left"
    pub fn caption(&self) -> String {
        let mut parts = vec![self.stage.label().to_owned()];
        if self.stage == ImageStage::Diffusion {
            parts.push(format!("step {}/{}", self.current_step, self.total_steps));
        }
        if self.total_images > 1 {
            parts.push(format!("image {}/{}", self.current_image, self.total_images));
        }
        parts.push(format!("{:.0}%", self.percentage));
        if let Some(eta) = self.eta_secs {
            parts.push(format!("about {eta:.0} s left"));
        }
        parts.join(" · ")
    }

    /// Nothing done yet, in `stage` (queued, making room, loading).
    pub fn at_start(stage: ImageStage, total_steps: u32, total_images: u32) -> Self {
        Self {
            stage,
            current_step: 0,
            total_steps,
            percentage: 0.0,
            current_image: 1,
            total_images,
            eta_secs: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobImage {
    /// Base64 of the PNG file.
    pub image: String,
    pub seed: i64,
    pub width: u32,
    pub height: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobResult {
    pub images: Vec<JobImage>,
    /// Always `png`.
    pub format: String,
    /// Milliseconds from the first sd-cli start to the last image read back.
    pub time_taken: u64,
}

/// Why a job failed. `message` and `code` are the job API's fields as the original has them;
/// `title` and `remedy` are this app's additions (absent from jobs of older versions).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobError {
    pub message: String,
    pub code: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remedy: Option<String>,
}

impl JobError {
    pub fn from_ipc(e: &IpcError) -> Self {
        Self {
            message: e.message.clone(),
            code: e.code.as_str().to_owned(),
            title: Some(e.title.clone()),
            remedy: Some(e.remedy.clone()),
        }
    }

    /// The error box's error: the code's own title and remedy where the job has none.
    pub fn to_ipc(&self) -> IpcError {
        let code = ErrorCode::parse(&self.code).unwrap_or(ErrorCode::Internal);
        let mut e = IpcError::new(code, self.message.clone());
        if let Some(t) = self.title.clone().filter(|t| !t.is_empty()) {
            e.title = t;
        }
        if let Some(r) = self.remedy.clone().filter(|r| !r.is_empty()) {
            e.remedy = r;
        }
        e
    }
}

/// A job as `GET /v1/images/generations/{id}` answers it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobView {
    pub id: String,
    pub status: JobStatus,
    /// Milliseconds since the Unix epoch.
    pub created_at: u64,
    pub updated_at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<JobProgress>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<JobResult>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<JobError>,
}

/// Arguments naming one job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobArgs {
    pub id: String,
}

/// Arguments of the save command: which image of which job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SaveImageArgs {
    pub id: String,
    pub index: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedImage {
    pub path: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_words_on_the_wire() {
        let json = |v: serde_json::Value| v.as_str().unwrap().to_owned();
        let cases = [
            (json(serde_json::to_value(UsageMode::Burst).unwrap()), "burst"),
            (json(serde_json::to_value(UsageMode::Auto).unwrap()), "auto"),
            (json(serde_json::to_value(BackendState::Absent).unwrap()), "absent"),
            (json(serde_json::to_value(BackendState::Stopping).unwrap()), "stopping"),
            (json(serde_json::to_value(ReleaseReason::IdleTimeout).unwrap()), "idle-timeout"),
            (json(serde_json::to_value(ReleaseReason::FlagsChanged).unwrap()), "flags-changed"),
            (json(serde_json::to_value(ReleaseReason::LlmStart).unwrap()), "llm-start"),
        ];
        for (got, want) in cases {
            assert_eq!(got, want);
        }
        // A status from before the warm backend reads as "no backend", and a config without the
        // new settings as the defaults.
        let mut old = serde_json::to_value(DiffusionStatus::stopped()).unwrap();
        old.as_object_mut().unwrap().retain(|k, _| k != "warm" && k != "backend");
        let s: DiffusionStatus = serde_json::from_value(old).unwrap();
        assert_eq!((s.warm, s.backend), (false, BackendInfo::default()));
        let c: DiffusionConfig = serde_json::from_str(
            r#"{"model_id":"m","port":null,"host":null,
            "token":null,"threads":null,"clip_on_cpu":null,"vae_on_cpu":null,
            "offload_to_cpu":null,"diffusion_fa":null}"#,
        )
        .unwrap();
        assert_eq!((c.usage_mode, c.idle_release_secs), (None, None));
    }

    #[test]
    fn presets_follow_the_model_name_and_use_known_samplers() {
        let name = |n: &str| PRESETS[preset_for(n)].name;
        assert_eq!(name("SDXL Tiny"), "SDXL");
        assert_eq!(name("sdxl-turbo-q8"), "SDXL Turbo / Lightning");
        assert_eq!(name("FLUX.1-schnell"), "Flux");
        assert_eq!(name("sd3.5_medium"), "SD 3.5");
        assert_eq!(name("v1-5-pruned"), "SD 1.5");
        assert!(PRESETS.iter().all(|p| SAMPLERS.contains(&p.sampler)));
    }

    #[test]
    fn progress_captions() {
        let mut p = JobProgress::at_start(ImageStage::Loading, 20, 1);
        assert_eq!(p.caption(), "Loading · 0%");
        p.stage = ImageStage::Diffusion;
        (p.current_step, p.percentage, p.eta_secs) = (5, 42.0, Some(3.2));
        assert_eq!(p.caption(), "Diffusion · step 5/20 · 42% · about 3 s left");
        p.total_images = 2;
        assert_eq!(p.caption(), "Diffusion · step 5/20 · image 1/2 · 42% · about 3 s left");
    }

    #[test]
    fn requests_and_views_use_the_original_field_names() {
        let r: ImageRequest = serde_json::from_str(
            r#"{"prompt":"a cat","negativePrompt":"blur","cfgScale":6.5,"count":2}"#,
        )
        .unwrap();
        assert_eq!(r.negative_prompt.as_deref(), Some("blur"));
        assert_eq!(r.cfg_scale, Some(6.5));
        assert_eq!(r.count, Some(2));
        let v = JobView {
            id: "gen_1".into(),
            status: JobStatus::InProgress,
            created_at: 1,
            updated_at: 2,
            progress: Some(JobProgress {
                stage: ImageStage::Diffusion,
                current_step: 3,
                total_steps: 20,
                percentage: 22.0,
                current_image: 1,
                total_images: 1,
                eta_secs: None,
            }),
            result: None,
            error: None,
        };
        let j = serde_json::to_value(&v).unwrap();
        assert_eq!(j["status"], "in_progress");
        assert_eq!(j["createdAt"], 1);
        assert_eq!(j["progress"]["currentStep"], 3);
        assert_eq!(j["progress"]["stage"], "diffusion");
        assert!(j.get("result").is_none());
    }

    #[test]
    fn a_failed_job_keeps_its_title_and_remedy_and_an_old_one_gets_its_codes() {
        let e = IpcError::new(ErrorCode::InsufficientMemory, "cudaMalloc failed")
            .with_remedy("Make the image smaller.");
        let job = JobError::from_ipc(&e);
        assert_eq!(job.to_ipc(), e);
        // The job API's JSON as the original writes it: message and code only.
        let old: JobError =
            serde_json::from_str(r#"{"message":"out of memory","code":"INSUFFICIENT_MEMORY"}"#)
                .unwrap();
        let shown = old.to_ipc();
        assert_eq!(shown.code, ErrorCode::InsufficientMemory);
        assert_eq!(shown.title, ErrorCode::InsufficientMemory.title());
        assert_eq!(shown.remedy, ErrorCode::InsufficientMemory.default_remedy());
        let odd = JobError { code: "SOMETHING_NEW".into(), ..old };
        assert_eq!(odd.to_ipc().code, ErrorCode::Internal);
        assert_eq!(odd.to_ipc().message, "out of memory");
        assert!(!serde_json::to_string(&odd).unwrap().contains("title"));
    }
}
