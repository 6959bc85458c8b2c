//! The orchestrator's files in `config/`: its settings (`orchestrator.json`) and, while the LLM
//! is paused for an image, what to bring back (`llm-paused.json`).

use super::{mirror_enum, mirror_struct};

/// Format 1 added `format` to both files; format 0 (no `format`) has the same fields.
pub const FORMAT: u32 = 1;

/// `config/orchestrator.json`.
pub type SettingsFile = super::Kept<Settings>;

mirror_struct! {
    pub struct Settings <=> ipc::orchestrator::OrchestratorSettings {
        mode: OffloadMode,
        margin: f64,
    }
}

mirror_enum! {
    pub enum OffloadMode <=> ipc::orchestrator::OffloadMode { Auto, Always, Never }
}

/// `config/llm-paused.json`.
pub type PausedFile = super::Kept<Paused>;

mirror_struct! {
    pub struct Paused <=> ipc::orchestrator::SavedLlmState {
        config: super::llm::LlmConfig,
        port: u16,
        context_size: u32,
        saved_at_ms: u64,
        job_id: Option<String>,
    }
}
