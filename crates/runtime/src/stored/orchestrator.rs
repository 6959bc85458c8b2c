//! The orchestrator's files in `config/`: its settings (`orchestrator.json`) and, while the LLM
//! is paused for an image, what to bring back (`llm-paused.json`).

use super::{mirror_enum, mirror_struct, Conv};
use serde::{Deserialize, Serialize};

/// Format 1 added `format` to both files; format 0 (no `format`) has the same fields.
pub const FORMAT: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SettingsFile {
    #[serde(default)]
    pub format: u32,
    #[serde(flatten)]
    pub settings: Settings,
}

impl SettingsFile {
    pub fn of(s: &ipc::orchestrator::OrchestratorSettings) -> Self {
        Self { format: FORMAT, settings: s.conv() }
    }
}

mirror_struct! {
    pub struct Settings <=> ipc::orchestrator::OrchestratorSettings {
        mode: OffloadMode,
        margin: f64,
    }
}

mirror_enum! {
    pub enum OffloadMode <=> ipc::orchestrator::OffloadMode { Auto, Always, Never }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PausedFile {
    #[serde(default)]
    pub format: u32,
    #[serde(flatten)]
    pub paused: Paused,
}

impl PausedFile {
    pub fn of(s: &ipc::orchestrator::SavedLlmState) -> Self {
        Self { format: FORMAT, paused: s.conv() }
    }
}

mirror_struct! {
    pub struct Paused <=> ipc::orchestrator::SavedLlmState {
        config: super::llm::LlmConfig,
        port: u16,
        context_size: u32,
        saved_at_ms: u64,
        job_id: Option<String>,
    }
}
