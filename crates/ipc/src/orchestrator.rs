//! Resource orchestration: whether an image job needs the LLM's memory, what was decided and
//! why, the LLM settings saved while it is paused, and how long a pause took.

use crate::llm::LlmConfig;
use crate::IpcError;
use serde::{Deserialize, Serialize};

/// When the LLM is paused for an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum OffloadMode {
    /// When the LLM and the image would not both fit in live free memory (with the margin).
    #[default]
    Auto,
    /// For every image (the most room for the image; the LLM is away for each job).
    Always,
    /// Never (the user takes the risk of running out of memory).
    Never,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct OrchestratorSettings {
    pub mode: OffloadMode,
    /// Share of (free + the LLM's own use) that the LLM and the image together may take: 0.75
    /// is the original's rule. 0.1 to 1.0.
    pub margin: f64,
}

impl Default for OrchestratorSettings {
    fn default() -> Self {
        Self { mode: OffloadMode::Auto, margin: 0.75 }
    }
}

/// Memory something takes, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Footprint {
    pub ram_bytes: u64,
    pub vram_bytes: u64,
}

/// One decision, with the numbers that made it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OffloadDecision {
    pub offload: bool,
    pub llm_running: bool,
    /// The memory that decided: "VRAM (NVIDIA H100)" or "RAM".
    pub device: String,
    /// The LLM's current use of that memory.
    pub llm_bytes: u64,
    /// From the server's load log (true) or the estimate (false).
    pub llm_measured: bool,
    /// The image job's need of that memory (estimate).
    pub image_bytes: u64,
    /// Live free memory of that kind.
    pub free_bytes: u64,
    /// margin × (free + the LLM's use): what the two together may take.
    pub budget_bytes: u64,
    pub margin: f64,
    /// The decision in words, e.g. "The LLM will be paused while this image is made: …".
    pub reason: String,
    pub at_ms: u64,
}

/// What the LLM was running with when it was paused: restored as it was afterwards (and on the
/// next launch if the app died during the image).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedLlmState {
    /// Every setting pinned to what was resolved (port and context included).
    pub config: LlmConfig,
    pub port: u16,
    pub context_size: u32,
    pub saved_at_ms: u64,
    /// The image job it made room for.
    pub job_id: Option<String>,
}

/// Where the time of one pause went.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CycleTimes {
    pub stop_ms: u64,
    pub wait_ms: u64,
    pub job_ms: u64,
    pub restart_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrchestratorPhase {
    Idle,
    /// Stopping the LLM and waiting for its memory.
    MakingRoom,
    RunningJob,
    /// Bringing the LLM back.
    Reloading,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrchestratorStatus {
    pub settings: OrchestratorSettings,
    pub phase: OrchestratorPhase,
    pub last_decision: Option<OffloadDecision>,
    /// Present while the LLM is paused (and after a reload that failed).
    pub saved: Option<SavedLlmState>,
    pub reload_error: Option<IpcError>,
    pub last_cycle: Option<CycleTimes>,
}
