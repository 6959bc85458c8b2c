//! A model's record, `models/<kind>/<id>.json`, written last when a model is registered.

use super::{mirror_enum, mirror_struct, Conv};
use serde::{Deserialize, Serialize};

/// Format 1 added `format`; format 0 (no `format`) has the same fields.
pub const FORMAT: u32 = 1;

/// `models/<kind>/<id>.json`.
pub type ModelRecord = super::Kept<Model>;

mirror_struct! {
    pub struct Model <=> ipc::models::ModelInfo {
        id: String,
        name: String,
        kind: Kind,
        size_bytes: u64,
        path: String,
        downloaded_at_ms: u64,
        source: Source,
        sha256: Option<String>,
        supports_reasoning: bool,
        gguf: Option<Gguf>,
        #[serde(default)]
        files: Vec<File>,
    }
}

mirror_enum! {
    pub enum Kind <=> ipc::models::ModelKind { Llm, Diffusion }
}

mirror_struct! {
    pub struct File <=> ipc::models::ModelFile {
        role: String,
        path: String,
        size_bytes: u64,
        sha256: Option<String>,
    }
}

mirror_struct! {
    pub struct Gguf <=> ipc::models::GgufSummary {
        version: u32,
        architecture: Option<String>,
        name: Option<String>,
        block_count: Option<u64>,
        context_length: Option<u64>,
        embedding_length: Option<u64>,
        feed_forward_length: Option<u64>,
        head_count: Option<u64>,
        head_count_kv: Option<u64>,
        expert_count: Option<u64>,
        file_type: Option<u64>,
        tensor_count: u64,
        kv_count: u64,
        raw: Vec<(String, String)>,
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Source {
    HuggingFace { repo: String, file: String, revision: String },
    Url { url: String },
    Local { path: String },
}

impl Conv<ipc::models::ModelSource> for Source {
    fn conv(&self) -> ipc::models::ModelSource {
        use ipc::models::ModelSource as T;
        match self.clone() {
            Self::HuggingFace { repo, file, revision } => T::HuggingFace { repo, file, revision },
            Self::Url { url } => T::Url { url },
            Self::Local { path } => T::Local { path },
        }
    }
}

impl Conv<Source> for ipc::models::ModelSource {
    fn conv(&self) -> Source {
        use ipc::models::ModelSource as T;
        match self.clone() {
            T::HuggingFace { repo, file, revision } => Source::HuggingFace { repo, file, revision },
            T::Url { url } => Source::Url { url },
            T::Local { path } => Source::Local { path },
        }
    }
}
