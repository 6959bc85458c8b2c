//! Everything the app tells the window without being asked, on one channel.
//!
//! The runtime has one event enum on a broadcast channel; `src-tauri` forwards each event to the
//! window as an [`AppEvent`] on [`EVENT_CHANNEL`]. The window both listens and polls: polling is
//! the safety net, events make the display immediate.

use crate::orchestrator::{CycleTimes, OffloadDecision, SavedLlmState};
use crate::runtimes::{BinaryProgress, RuntimeKind};
use crate::IpcError;
use serde::{Deserialize, Serialize};

/// The Tauri event name all [`AppEvent`]s travel on, each as a [`Stamped`].
pub const EVENT_CHANNEL: &str = "genai:event";

/// An event with the time the app sent it: the window marks charts and logs with this, not with
/// when it got round to reading the event (a busy window reads late).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stamped {
    /// Milliseconds since the Unix epoch.
    pub at_ms: u64,
    pub event: AppEvent,
}

/// Which of the two managed servers an event is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServerKind {
    Llm,
    Diffusion,
    /// This computer's llama.cpp RPC worker, lending its devices to other machines.
    RpcWorker,
}

/// Arguments naming one managed server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerLogArgs {
    pub server: ServerKind,
}

impl ServerKind {
    pub fn label(self) -> &'static str {
        match self {
            Self::Llm => "LLM",
            Self::Diffusion => "Diffusion",
            Self::RpcWorker => "RPC worker",
        }
    }
}

/// Lifecycle of a managed server, as the user sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServerState {
    Stopped,
    Starting,
    Running,
    Stopping,
    Crashed,
    /// Stopped by the orchestrator to make room for an image; it will come back.
    Offloaded,
}

impl ServerState {
    /// What the window shows, e.g. "Paused for an image".
    pub fn label(self) -> &'static str {
        match self {
            Self::Stopped => "Stopped",
            Self::Starting => "Starting",
            Self::Running => "Running",
            Self::Stopping => "Stopping",
            Self::Crashed => "Crashed",
            Self::Offloaded => "Paused for an image",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogLevel {
    Debug,
    Info,
    Warn,
    Error,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    /// Milliseconds since the Unix epoch.
    pub at_ms: u64,
    pub level: LogLevel,
    pub message: String,
}

/// What a download reports while it runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DownloadProgress {
    pub download_id: String,
    /// The file being fetched right now (a component or shard of a multi-file model).
    pub file_name: String,
    pub downloaded_bytes: u64,
    /// `None` when the server did not say.
    pub total_bytes: Option<u64>,
    pub bytes_per_sec: f64,
    pub eta_secs: Option<f64>,
}

/// Where an image job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImageStage {
    Queued,
    MakingRoom,
    Loading,
    Diffusion,
    Decoding,
    Done,
}

impl ImageStage {
    pub fn label(self) -> &'static str {
        match self {
            Self::Queued => "Queued",
            Self::MakingRoom => "Making room",
            Self::Loading => "Loading",
            Self::Diffusion => "Diffusion",
            Self::Decoding => "Decoding",
            Self::Done => "Done",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AppEvent {
    /// Hardware facts may have changed (a server started or stopped): refresh what is shown.
    SystemChanged,
    DownloadProgress(DownloadProgress),
    /// A download was queued, started, paused, resumed, cancelled or cleared, or its size became
    /// known: the queue's rows are read again (progress itself comes by `DownloadProgress`).
    DownloadsChanged,
    DownloadFinished {
        download_id: String,
        model_id: String,
    },
    DownloadFailed {
        download_id: String,
        error: IpcError,
    },
    ServerState {
        server: ServerKind,
        state: ServerState,
        pid: Option<u32>,
        port: Option<u16>,
    },
    ServerLog {
        server: ServerKind,
        line: LogLine,
    },
    /// A line of a runtime's setup log (downloads, checks, what the build found).
    BinaryLog {
        runtime: RuntimeKind,
        line: LogLine,
    },
    BinaryProgress(BinaryProgress),
    /// The LLM server exited without being asked to.
    ServerCrashed {
        server: ServerKind,
        code: Option<i32>,
        signal: Option<i32>,
        stderr_tail: Vec<String>,
        /// Why, in words (the crash's classification; an RPC worker that went away is named).
        #[serde(default)]
        reason: String,
    },
    /// A `/health` check of the running LLM server failed, or answered again after failing.
    LlmHealth {
        ok: bool,
        /// Failures in a row (0 when `ok`).
        failures: u32,
        /// Since when it has not answered (`None` when `ok`).
        since_ms: Option<u64>,
    },
    /// How many of the running LLM server's slots are processing a request changed (from its
    /// `/slots`, read with each health check): the servers' grid shows it without polling.
    LlmBusy {
        busy_slots: Option<u32>,
    },
    /// A reading of memory that differs visibly from the last one announced (sent only while the
    /// window watches: `memory_watch`).
    MemoryChanged(crate::system::MemorySample),
    /// The LLM server runs on the CPU (in whole or in part) although GPU layers were asked for.
    LlmCpuFallback {
        message: String,
    },
    /// A piece of a test-chat reply.
    ChatDelta {
        request_id: String,
        content: String,
        reasoning: String,
        done: bool,
    },
    /// An image job began (its sd-cli is about to start).
    ImageJobStarted {
        job_id: String,
        count: u32,
        width: u32,
        height: u32,
        steps: u32,
    },
    ImageProgress {
        job_id: String,
        stage: ImageStage,
        step: u32,
        total_steps: u32,
        /// 0..=100 over the whole job, not only the current stage.
        percent: f32,
        /// 1-based image of the batch.
        image: u32,
        images: u32,
        eta_secs: Option<f32>,
    },
    ImageJobFinished {
        job_id: String,
        images: u32,
        seeds: Vec<i64>,
        time_taken_ms: u64,
    },
    ImageJobFailed {
        job_id: String,
        error: IpcError,
    },
    ImageJobCancelled {
        job_id: String,
    },
    /// The warm image backend changed state (`reason`: why it was released, when it was).
    DiffusionBackend {
        state: crate::diffusion::BackendState,
        previous: crate::diffusion::BackendState,
        reason: Option<crate::diffusion::ReleaseReason>,
        pid: Option<u32>,
    },
    /// The LLM was stopped to make room for an image; it comes back when the image is done.
    LlmOffloaded {
        decision: Box<OffloadDecision>,
        saved: Box<SavedLlmState>,
    },
    /// The paused LLM is healthy again; where the pause's time went.
    LlmReloaded {
        port: u16,
        attempts: u32,
        times: CycleTimes,
    },
    /// Bringing the LLM back failed (`will_retry`: another try follows).
    LlmReloadFailed {
        error: IpcError,
        attempt: u32,
        will_retry: bool,
    },
    /// An image job ran beside the LLM: the numbers that said it fits (or the LLM was not
    /// running, or pausing is off).
    OffloadNotNeeded {
        decision: Box<OffloadDecision>,
    },
    /// The user chose to leave the paused LLM stopped: it will not be brought back.
    LlmKeptStopped,
    /// A model was deleted (lists that offer models refresh).
    ModelDeleted {
        model_id: String,
    },
    /// The OpenAI-compatible endpoint opened, moved or closed: its status is read again.
    EndpointChanged,
    /// The endpoint answered a request (its log line), or ended one a client left.
    EndpointRequest(crate::endpoint::EndpointRequest),
    /// The endpoint started, swapped or waited for a model on a client's behalf.
    EndpointNote {
        message: String,
    },
}

impl AppEvent {
    /// A one-line summary for event logs.
    pub fn summary(&self) -> String {
        match self {
            Self::SystemChanged => "system changed".to_owned(),
            Self::DownloadProgress(p) => match p.total_bytes {
                Some(t) if t > 0 => {
                    format!("{} {:.0}%", p.file_name, p.downloaded_bytes as f64 * 100.0 / t as f64)
                }
                _ => format!("{} {} bytes", p.file_name, p.downloaded_bytes),
            },
            Self::DownloadsChanged => "download queue changed".to_owned(),
            Self::DownloadFinished { model_id, .. } => format!("downloaded {model_id}"),
            Self::DownloadFailed { error, .. } => format!("download failed: {}", error.message),
            Self::ServerState { server, state, .. } => {
                format!("{} server: {}", server.label(), state.label())
            }
            Self::ServerLog { server, line } => format!("{}: {}", server.label(), line.message),
            Self::BinaryLog { runtime, line } => format!("{}: {}", runtime.program(), line.message),
            Self::ServerCrashed { server, reason, .. } if !reason.is_empty() => {
                format!("{} server crashed: {reason}", server.label())
            }
            Self::ServerCrashed { server, code, signal, .. } => {
                format!("{} server crashed (code {code:?}, signal {signal:?})", server.label())
            }
            Self::LlmHealth { ok: true, .. } => "LLM server answers /health again".to_owned(),
            Self::LlmHealth { failures, .. } => {
                format!("LLM server not responding ({failures} /health checks failed)")
            }
            Self::LlmBusy { busy_slots: Some(n) } => format!("LLM server: {n} slot(s) busy"),
            Self::LlmBusy { busy_slots: None } => "LLM server: busy slots unknown".to_owned(),
            Self::MemoryChanged(s) => format!(
                "memory: {} of {} bytes available",
                s.now.memory.available_bytes, s.now.memory.total_bytes
            ),
            Self::LlmCpuFallback { message } => format!("LLM server: {message}"),
            Self::ChatDelta { content, done, .. } => {
                if *done {
                    "chat reply done".to_owned()
                } else {
                    format!("chat: {content}")
                }
            }
            Self::BinaryProgress(p) => format!("{} {:?} {}", p.runtime.program(), p.stage, p.done),
            Self::ImageJobStarted { count, width, height, steps, .. } => {
                format!("image job started: {count} × {width}×{height}, {steps} steps")
            }
            Self::ImageProgress { stage, percent, .. } => format!("image {stage:?} {percent:.0}%"),
            Self::ImageJobFinished { images, time_taken_ms, .. } => {
                format!("{images} image(s) made in {:.1} s", *time_taken_ms as f64 / 1000.0)
            }
            Self::ImageJobFailed { error, .. } => format!("image job failed: {}", error.message),
            Self::ImageJobCancelled { .. } => "image job cancelled".to_owned(),
            Self::DiffusionBackend { state, reason, pid, .. } => {
                let pid = pid.map(|p| format!(" (pid {p})")).unwrap_or_default();
                match reason {
                    Some(r) => format!("image backend {state:?}{pid}: {}", r.describe()),
                    None => format!("image backend {state:?}{pid}"),
                }
            }
            Self::LlmOffloaded { decision, .. } => {
                format!("LLM paused for an image: {}", decision.reason)
            }
            Self::LlmReloaded { port, times, .. } => format!(
                "LLM back on port {port} (stop {} ms, wait {} ms, image {} ms, restart {} ms)",
                times.stop_ms, times.wait_ms, times.job_ms, times.restart_ms
            ),
            Self::LlmReloadFailed { error, attempt, will_retry } => format!(
                "LLM reload try {attempt} failed{}: {}",
                if *will_retry { ", retrying" } else { "" },
                error.message
            ),
            Self::OffloadNotNeeded { decision } => format!("LLM kept running: {}", decision.reason),
            Self::LlmKeptStopped => "LLM left stopped after the image, as asked".to_owned(),
            Self::ModelDeleted { model_id } => format!("deleted {model_id}"),
            Self::EndpointChanged => "API endpoint changed".to_owned(),
            Self::EndpointRequest(r) => format!(
                "API {} {} → {} in {} ms",
                r.route,
                r.model.as_deref().unwrap_or("-"),
                r.status,
                r.duration_ms
            ),
            Self::EndpointNote { message } => format!("API: {message}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_tagged_by_kind() {
        let e = AppEvent::ServerState {
            server: ServerKind::Llm,
            state: ServerState::Running,
            pid: Some(42),
            port: Some(8080),
        };
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["kind"], "server_state");
        assert_eq!(json["state"], "running");
        assert_eq!(serde_json::from_value::<AppEvent>(json).unwrap(), e);
        let unit = serde_json::to_value(AppEvent::SystemChanged).unwrap();
        assert_eq!(unit, serde_json::json!({"kind": "system_changed"}));
    }

    #[test]
    fn summary_gives_download_percent() {
        let e = AppEvent::DownloadProgress(DownloadProgress {
            download_id: "d1".into(),
            file_name: "tiny.gguf".into(),
            downloaded_bytes: 250,
            total_bytes: Some(1000),
            bytes_per_sec: 10.0,
            eta_secs: Some(75.0),
        });
        assert_eq!(e.summary(), "tiny.gguf 25%");
    }
}
