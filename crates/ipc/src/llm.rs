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

/// What the user asks for. Every `None` is filled by auto-configuration; every `Some` wins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct LlmConfig {
    pub model_id: String,
    /// `None`: a free port.
    pub port: Option<u16>,
    /// `None`: 127.0.0.1. Anything else exposes the server to the network.
    pub host: Option<String>,
    pub context_size: Option<u32>,
    pub gpu_layers: Option<u32>,
    pub threads: Option<u32>,
    pub parallel: Option<u32>,
    pub flash_attention: Option<Toggle>,
    /// `f16`, `q8_0`, `q4_0`, …
    pub cache_type_k: Option<String>,
    pub cache_type_v: Option<String>,
    pub batch: Option<u32>,
    pub mmap: Option<bool>,
    pub mlock: Option<bool>,
    pub reasoning_format: Option<String>,
    pub alias: Option<String>,
    /// Restart after a crash (1 s, 2 s, 4 s; at most 3 tries).
    pub auto_restart: bool,
}

/// The settings a start uses, every field decided, with the reason in words.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LlmSettings {
    pub model_path: String,
    pub host: String,
    pub port: u16,
    pub threads: u32,
    pub context_size: u32,
    /// The model's own (trained) context.
    pub native_context: u32,
    pub gpu_layers: u32,
    pub total_layers: u32,
    pub parallel: u32,
    pub flash_attention: Toggle,
    pub cache_type_k: String,
    pub cache_type_v: String,
    pub batch: Option<u32>,
    pub mmap: Option<bool>,
    pub mlock: bool,
    pub reasoning_format: Option<String>,
    pub alias: Option<String>,
    /// Weights + KV cache expected on the GPU, and in RAM.
    pub expected_vram_bytes: u64,
    pub expected_ram_bytes: u64,
    /// e.g. "28/28 layers on GPU, 16384 context, 9.1 GB VRAM expected".
    pub explanation: String,
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
}

/// How an unexpected exit ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrashInfo {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub at_ms: u64,
    /// The last lines the server printed.
    pub stderr_tail: Vec<String>,
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
    /// What the load log says each device holds.
    pub measured: Vec<DeviceMemory>,
    pub last_error: Option<IpcError>,
    pub crash: Option<CrashInfo>,
    /// Auto-restarts since the last manual start.
    pub restarts: u32,
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
}

/// The reply as it streamed, once it is complete.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatReply {
    pub request_id: String,
    pub content: String,
    pub reasoning: String,
    pub tokens: u32,
}
