//! The LLM server (llama-server): what the user asks for, what the app resolved, and where the
//! server stands.

use crate::event::{LogLine, ServerState};
use crate::IpcError;
use serde::{Deserialize, Serialize};

/// Flash attention: llama-server's `-fa on|off|auto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Toggle {
    #[default]
    Auto,
    On,
    Off,
}

impl Toggle {
    pub fn flag(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::On => "on",
            Self::Off => "off",
        }
    }
}

/// The LLM's port when none is given (what genai-lite and most OpenAI clients of llama-server
/// expect); when it is taken the next free one is used and the status says why.
pub const DEFAULT_PORT: u16 = 8080;
/// Where other llama-servers are looked for before a start (they hold memory the app cannot count).
pub const PROBE_PORTS: std::ops::RangeInclusive<u16> = 8080..=8083;

/// What the user asks for. Every `None` is filled by auto-configuration; every `Some` wins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct LlmConfig {
    pub model_id: String,
    /// `None`: [`DEFAULT_PORT`], or the next free port when it is taken.
    pub port: Option<u16>,
    /// `None`: 127.0.0.1. Anything else exposes the server to the network.
    pub host: Option<String>,
    /// The preferred context: used when it fits, else the largest that does (never below
    /// `min_context`). `None`: the largest that fits, up to `max_context`.
    pub context_size: Option<u32>,
    /// Below this the start fails before launching (`CONTEXT_TOO_LARGE`, naming the largest
    /// context that fits now). `None`: 256.
    #[serde(default)]
    pub min_context: Option<u32>,
    /// At most this much context (`None`, or more than the model was trained for: the trained one).
    #[serde(default)]
    pub max_context: Option<u32>,
    /// `--n-cpu-moe N`: the expert weights of the first N blocks stay in RAM (`None`: chosen when
    /// the dense part fits the GPU and the experts do not).
    #[serde(default)]
    pub n_cpu_moe: Option<u32>,
    /// Refuse to start while another llama-server answers on 8080–8083 (else a warning).
    #[serde(default)]
    pub strict: Option<bool>,
    pub gpu_layers: Option<u32>,
    pub threads: Option<u32>,
    pub parallel: Option<u32>,
    pub flash_attention: Option<Toggle>,
    /// `f16`, `q8_0`, `q4_0`, …
    pub cache_type_k: Option<String>,
    pub cache_type_v: Option<String>,
    pub batch: Option<u32>,
    /// `-ub`: tokens per compute step (`None`: 512); the compute buffer grows with it.
    #[serde(default)]
    pub ubatch: Option<u32>,
    /// `--swa-full`: sliding-window layers keep the whole context (more memory).
    #[serde(default)]
    pub swa_full: Option<bool>,
    pub mmap: Option<bool>,
    pub mlock: Option<bool>,
    pub reasoning_format: Option<String>,
    /// The model's name in the server's OpenAI API (`None`: the model's id).
    pub alias: Option<String>,
    /// Let llama.cpp fit the context and GPU layers itself (`--fit on`, no `-c` / `-ngl`) instead
    /// of the app's decision (`-fit off`, the default).
    #[serde(default)]
    pub llama_fit: Option<bool>,
    /// `--cache-ram` in MiB: the prompt cache of idle slots (`None`: llama.cpp's 8192; 0: off).
    #[serde(default)]
    pub cache_ram_mib: Option<u32>,
    /// The model's chat template (`--jinja`, the default) or llama.cpp's built-in one
    /// (`--no-jinja`).
    #[serde(default)]
    pub jinja: Option<bool>,
    /// Serve `/v1/embeddings` (`--embeddings`); llama-server then answers nothing else, so
    /// the endpoint starts a model this way only for embedding requests.
    #[serde(default)]
    pub embeddings: Option<bool>,
    /// Restart after a crash or a hang (1 s, 2 s, 4 s, …).
    pub auto_restart: bool,
    /// Most automatic restarts in a row (`None`: 3).
    #[serde(default)]
    pub max_restarts: Option<u32>,
    /// Seconds a load may go without a new log line before the start fails (`None`: 60).
    #[serde(default)]
    pub startup_timeout_secs: Option<u32>,
    /// Seconds between `/health` checks while running (`None`: 5; `0`: no checks). Three
    /// failures in a row count as a crash.
    #[serde(default)]
    pub health_interval_secs: Option<u32>,
    /// Other machines' llama.cpp RPC workers (`host:port`) that lend their devices' memory to
    /// this model (`--rpc`); each is probed before the start, which refuses one that is not
    /// ready and says why.
    #[serde(default)]
    pub rpc_workers: Vec<String>,
}

fn yes() -> bool {
    true
}

/// The settings a start uses, every field decided, with the reason in words.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LlmSettings {
    pub model_path: String,
    /// The vision projector loaded beside the model (`--mmproj`), when it has one.
    #[serde(default)]
    pub mmproj: Option<String>,
    /// RPC workers the layers are split across with this machine's devices (`--rpc`).
    #[serde(default)]
    pub rpc: Vec<String>,
    /// With RPC workers: the layers each device is planned to hold, as llama.cpp will assign
    /// them (by free memory), in its device order.
    #[serde(default)]
    pub split: Vec<LayerShare>,
    pub host: String,
    pub port: u16,
    pub threads: u32,
    pub context_size: u32,
    /// The model's own (trained) context.
    pub native_context: u32,
    pub gpu_layers: u32,
    pub total_layers: u32,
    /// `--n-cpu-moe`: blocks whose expert weights stay in RAM (0: none).
    #[serde(default)]
    pub n_cpu_moe: u32,
    pub parallel: u32,
    pub flash_attention: Toggle,
    pub cache_type_k: String,
    pub cache_type_v: String,
    pub batch: Option<u32>,
    #[serde(default)]
    pub ubatch: Option<u32>,
    #[serde(default)]
    pub swa_full: bool,
    pub mmap: Option<bool>,
    pub mlock: bool,
    pub reasoning_format: Option<String>,
    pub alias: Option<String>,
    /// `--fit on` without `-c` / `-ngl`; else `-fit off` (the app decided).
    #[serde(default)]
    pub llama_fit: bool,
    #[serde(default)]
    pub cache_ram_mib: Option<u32>,
    /// `--jinja`, else `--no-jinja`.
    #[serde(default = "yes")]
    pub jinja: bool,
    /// `--embeddings`: this server answers embedding requests only.
    #[serde(default)]
    pub embeddings: bool,
    /// `--pooling`, when the model's own would not do for embeddings.
    #[serde(default)]
    pub pooling: Option<String>,
    /// Weights + KV cache + compute and output buffers expected on the GPU, and in RAM.
    pub expected_vram_bytes: u64,
    pub expected_ram_bytes: u64,
    /// The same, part by part: `GPU` (when layers are offloaded) and `CPU`; `compute_bytes`
    /// includes the output (logits) buffer.
    #[serde(default)]
    pub estimate: Vec<DeviceMemory>,
    /// e.g. "28/28 layers on GPU, 16384 context, 9.1 GB VRAM expected".
    pub explanation: String,
}

/// How many of a model's layers (its blocks and the output layer) one device holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerShare {
    /// llama.cpp's device name: `CPU`, `RPC0`, `CUDA0`, …
    pub device: String,
    /// For an RPC device, its worker's `host:port`.
    #[serde(default)]
    pub worker: Option<String>,
    pub layers: u32,
}

impl LayerShare {
    /// Shares in a line: `RPC0 (10.0.0.2:50052): 3 layers · CPU: 2 layers`.
    pub fn line(shares: &[LayerShare]) -> String {
        let one = |s: &LayerShare| {
            let at = s.worker.as_ref().map_or(String::new(), |w| format!(" ({w})"));
            let n = if s.layers == 1 { "layer" } else { "layers" };
            format!("{}{at}: {} {n}", s.device, s.layers)
        };
        shares.iter().map(one).collect::<Vec<_>>().join(" · ")
    }
}

/// Memory one device holds for the running server, as its load log says.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceMemory {
    /// `CPU`, `CUDA0`, `Vulkan0`, …
    pub device: String,
    pub model_bytes: u64,
    pub kv_bytes: u64,
    pub compute_bytes: u64,
}

impl DeviceMemory {
    pub fn total(&self) -> u64 {
        self.model_bytes + self.kv_bytes + self.compute_bytes
    }

    /// The memory of `devices` at `place`, in all.
    pub fn sum_at(devices: &[DeviceMemory], place: MemoryPlace) -> u64 {
        devices.iter().filter(|d| d.place() == place).map(DeviceMemory::total).sum()
    }

    /// Where the device's memory is: this machine's RAM (`CPU…`), another machine's (an RPC
    /// worker's buffers, `RPC0[host:port]`), or this machine's VRAM (anything else).
    pub fn place(&self) -> MemoryPlace {
        let upper = self.device.to_ascii_uppercase();
        if upper.starts_with("CPU") {
            MemoryPlace::Ram
        } else if upper.starts_with("RPC") {
            MemoryPlace::Remote
        } else {
            MemoryPlace::Vram
        }
    }
}

/// See [`DeviceMemory::place`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryPlace {
    Ram,
    Vram,
    Remote,
}

/// How an unexpected exit ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrashInfo {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub at_ms: u64,
    /// The last lines the server printed.
    pub stderr_tail: Vec<String>,
    /// What happened, in words ("stopped answering /health for 15 s; killed").
    #[serde(default)]
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LlmStatus {
    pub state: ServerState,
    pub model_id: Option<String>,
    pub settings: Option<LlmSettings>,
    pub pid: Option<u32>,
    pub port: Option<u16>,
    /// The last `/health` answered ok.
    pub healthy: bool,
    /// Spawn to healthy.
    pub load_time_ms: Option<u64>,
    pub started_at_ms: Option<u64>,
    /// Per-slot context the server reports in `/props`.
    pub effective_context: Option<u32>,
    pub slots: Option<u32>,
    /// Slots processing a request at the last `/slots` read (with the health check); `None`
    /// when the server does not expose `/slots` or it was not read yet.
    #[serde(default)]
    pub busy_slots: Option<u32>,
    /// What the load log says each device holds.
    pub measured: Vec<DeviceMemory>,
    pub last_error: Option<IpcError>,
    pub crash: Option<CrashInfo>,
    /// Auto-restarts since the last manual start.
    pub restarts: u32,
    /// The most auto-restarts this start allows.
    #[serde(default)]
    pub max_restarts: u32,
    /// Since when `/health` has failed (the server may be hung), while it runs.
    #[serde(default)]
    pub not_responding_since_ms: Option<u64>,
    /// `/health` failures in a row.
    #[serde(default)]
    pub health_failures: u32,
    /// Set when GPU layers were asked for and the load log shows fewer (a silent CPU fallback).
    #[serde(default)]
    pub cpu_fallback: Option<String>,
    /// Why the server is not on the port asked for or the default one ("8080 is in use by …").
    #[serde(default)]
    pub port_note: Option<String>,
    /// Other llama-servers found on 8080–8083 at the last start ("8081: llama-server with qwen…").
    #[serde(default)]
    pub neighbours: Vec<String>,
    /// The RPC workers asked for at the last start, as their probes found them.
    #[serde(default)]
    pub workers: Vec<crate::rpc::WorkerProbe>,
}

/// The health badge of the LLM tab: what it says and how it looks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthBadge {
    pub label: String,
    /// `ok`, `warn`, `error` or `idle`.
    pub class: &'static str,
}

impl LlmStatus {
    /// No server: the status before any start and after a stop.
    pub fn stopped() -> Self {
        Self {
            state: ServerState::Stopped,
            model_id: None,
            settings: None,
            pid: None,
            port: None,
            healthy: false,
            load_time_ms: None,
            started_at_ms: None,
            effective_context: None,
            slots: None,
            busy_slots: None,
            measured: Vec::new(),
            last_error: None,
            crash: None,
            restarts: 0,
            max_restarts: 0,
            not_responding_since_ms: None,
            health_failures: 0,
            cpu_fallback: None,
            port_note: None,
            neighbours: Vec::new(),
            workers: Vec::new(),
        }
    }

    /// "Healthy", "Not responding (since 12:00:03, 2 failed checks)", "Restarting (try 1 of 3)",
    /// …; `clock` renders a time (the window shows local time).
    pub fn health_badge(&self, clock: impl Fn(u64) -> String) -> HealthBadge {
        let badge = |label: String, class| HealthBadge { label, class };
        match self.state {
            ServerState::Running => match self.not_responding_since_ms {
                Some(since) => badge(
                    format!(
                        "Not responding (since {}, {} failed check{})",
                        clock(since),
                        self.health_failures,
                        if self.health_failures == 1 { "" } else { "s" }
                    ),
                    "error",
                ),
                None if self.healthy => badge("Healthy".into(), "ok"),
                None => badge("Checking…".into(), "warn"),
            },
            ServerState::Starting if self.restarts > 0 => badge(
                format!(
                    "Restarting (try {} of {})",
                    self.restarts,
                    self.max_restarts.max(self.restarts)
                ),
                "warn",
            ),
            ServerState::Starting => badge("Loading…".into(), "warn"),
            ServerState::Crashed
                if self.restarts < self.max_restarts
                    && self.last_error.is_none()
                    && self.crash.is_some() =>
            {
                badge(
                    format!("Restarting (try {} of {})", self.restarts + 1, self.max_restarts),
                    "warn",
                )
            }
            ServerState::Crashed => badge("Crashed".into(), "error"),
            ServerState::Offloaded => badge("Paused for an image".into(), "idle"),
            ServerState::Stopping | ServerState::Stopped => badge("—".into(), "idle"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LlmLogs {
    pub lines: Vec<LogLine>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant`.
    pub role: String,
    pub content: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatArgs {
    pub messages: Vec<ChatMessage>,
    pub max_tokens: u32,
    pub temperature: f32,
    /// The window's id for this reply, so that it can tell its pieces apart and stop it
    /// ([`crate::cmd::LLM_CHAT_STOP`]); the app makes one when it is absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// The reply as it streamed, once it is complete (or stopped).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatReply {
    pub request_id: String,
    pub content: String,
    pub reasoning: String,
    pub tokens: u32,
    /// The prompt's length as llama-server counted it: the history sent with this turn.
    #[serde(default)]
    pub prompt_tokens: Option<u32>,
    /// Older messages left out so that the conversation fits the context.
    #[serde(default)]
    pub dropped_messages: u32,
    /// Stopped before the end (what arrived until then is kept).
    #[serde(default)]
    pub stopped: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(state: ServerState) -> LlmStatus {
        LlmStatus { state, max_restarts: 3, ..LlmStatus::stopped() }
    }

    #[test]
    fn health_badge_table() {
        let crash = CrashInfo {
            code: None,
            signal: Some(9),
            at_ms: 1,
            stderr_tail: vec![],
            reason: "stopped answering /health".into(),
        };
        let error = IpcError::new(crate::ErrorCode::ServerStartFailed, "x");
        #[rustfmt::skip]
        let cases: Vec<(LlmStatus, &str, &str)> = vec![
            (LlmStatus { healthy: true, ..status(ServerState::Running) }, "Healthy", "ok"),
            (status(ServerState::Running), "Checking…", "warn"),
            (LlmStatus { not_responding_since_ms: Some(42), health_failures: 1, ..status(ServerState::Running) }, "Not responding (since t42, 1 failed check)", "error"),
            (LlmStatus { not_responding_since_ms: Some(42), health_failures: 2, ..status(ServerState::Running) }, "Not responding (since t42, 2 failed checks)", "error"),
            // Killed for the hang, the restart is pending, then loading.
            (LlmStatus { crash: Some(crash.clone()), ..status(ServerState::Crashed) }, "Restarting (try 1 of 3)", "warn"),
            (LlmStatus { crash: Some(crash.clone()), restarts: 1, ..status(ServerState::Starting) }, "Restarting (try 1 of 3)", "warn"),
            // Out of tries, or the restart itself failed, or restarts are off.
            (LlmStatus { crash: Some(crash.clone()), restarts: 3, ..status(ServerState::Crashed) }, "Crashed", "error"),
            (LlmStatus { crash: Some(crash.clone()), restarts: 1, last_error: Some(error), ..status(ServerState::Crashed) }, "Crashed", "error"),
            (LlmStatus { crash: Some(crash), max_restarts: 0, ..status(ServerState::Crashed) }, "Crashed", "error"),
            (status(ServerState::Starting), "Loading…", "warn"),
            (status(ServerState::Stopped), "—", "idle"),
            (status(ServerState::Offloaded), "Paused for an image", "idle"),
        ];
        for (s, label, class) in cases {
            let b = s.health_badge(|ms| format!("t{ms}"));
            assert_eq!((b.label.as_str(), b.class), (label, class), "{s:?}");
        }
    }
}
