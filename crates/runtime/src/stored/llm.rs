//! The LLM's settings as they are kept (inside the paused-LLM state).

use super::{mirror_enum, mirror_struct};

mirror_struct! {
    /// Every setting of an LLM start; fields added after the first release read as unset.
    pub struct LlmConfig <=> ipc::llm::LlmConfig {
        model_id: String,
        port: Option<u16>,
        host: Option<String>,
        context_size: Option<u32>,
        #[serde(default)]
        min_context: Option<u32>,
        #[serde(default)]
        max_context: Option<u32>,
        #[serde(default)]
        n_cpu_moe: Option<u32>,
        #[serde(default)]
        strict: Option<bool>,
        gpu_layers: Option<u32>,
        threads: Option<u32>,
        parallel: Option<u32>,
        flash_attention: Option<Toggle>,
        cache_type_k: Option<String>,
        cache_type_v: Option<String>,
        batch: Option<u32>,
        #[serde(default)]
        ubatch: Option<u32>,
        #[serde(default)]
        swa_full: Option<bool>,
        mmap: Option<bool>,
        mlock: Option<bool>,
        reasoning_format: Option<String>,
        alias: Option<String>,
        #[serde(default)]
        llama_fit: Option<bool>,
        #[serde(default)]
        cache_ram_mib: Option<u32>,
        #[serde(default)]
        jinja: Option<bool>,
        #[serde(default)]
        embeddings: Option<bool>,
        auto_restart: bool,
        #[serde(default)]
        max_restarts: Option<u32>,
        #[serde(default)]
        startup_timeout_secs: Option<u32>,
        #[serde(default)]
        health_interval_secs: Option<u32>,
        #[serde(default)]
        rpc_workers: Vec<String>,
    }
}

mirror_enum! {
    pub enum Toggle <=> ipc::llm::Toggle { Auto, On, Off }
}
