//! Models on disk, where they came from, and downloads in flight.

use crate::IpcError;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelKind {
    Llm,
    Diffusion,
}

impl ModelKind {
    pub fn label(self) -> &'static str {
        match self {
            ModelKind::Llm => "LLM",
            ModelKind::Diffusion => "DIFFUSION",
        }
    }

    /// The folder under `models/`.
    pub fn dir(self) -> &'static str {
        match self {
            ModelKind::Llm => "llm",
            ModelKind::Diffusion => "diffusion",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ModelSource {
    HuggingFace {
        repo: String,
        file: String,
        revision: String,
    },
    Url {
        url: String,
    },
    /// Imported from a file already on this computer.
    Local {
        path: String,
    },
}

/// The GGUF facts the app keeps (not the whole tokenizer).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GgufSummary {
    pub version: u32,
    pub architecture: Option<String>,
    pub name: Option<String>,
    pub block_count: Option<u64>,
    pub context_length: Option<u64>,
    pub embedding_length: Option<u64>,
    pub feed_forward_length: Option<u64>,
    pub head_count: Option<u64>,
    pub head_count_kv: Option<u64>,
    pub expert_count: Option<u64>,
    pub file_type: Option<u64>,
    pub tensor_count: u64,
    pub kv_count: u64,
    /// Every key with its value as text: long arrays as "[N items]", long strings cut at 500.
    pub raw: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelInfo {
    pub id: String,
    pub name: String,
    pub kind: ModelKind,
    pub size_bytes: u64,
    /// Absolute path of the model file (the first shard or the diffusion model).
    pub path: String,
    pub downloaded_at_ms: u64,
    pub source: ModelSource,
    /// Lower-case hex SHA-256 of the file, when known.
    pub sha256: Option<String>,
    /// Thinks before it answers (Qwen3, DeepSeek-R1, GPT-OSS, ...).
    pub supports_reasoning: bool,
    pub gguf: Option<GgufSummary>,
    /// Every file of the model, the primary first: one for a plain model, each shard of a split
    /// GGUF, or the diffusion model and its components.
    #[serde(default)]
    pub files: Vec<ModelFile>,
}

impl ModelInfo {
    /// A one-file model imported from this computer, nothing known beyond its size.
    pub fn local_file(id: &str, name: &str, kind: ModelKind, path: &str, size_bytes: u64) -> Self {
        Self {
            id: id.to_owned(),
            name: name.to_owned(),
            kind,
            size_bytes,
            path: path.to_owned(),
            downloaded_at_ms: 0,
            source: ModelSource::Local { path: path.to_owned() },
            sha256: None,
            supports_reasoning: false,
            gguf: None,
            files: vec![ModelFile {
                role: "model".to_owned(),
                path: path.to_owned(),
                size_bytes,
                sha256: None,
            }],
        }
    }

    /// A multi-file model on this computer from `(role, path, size)` of each file (the first
    /// is the primary); the size is the sum.
    pub fn local_files(
        id: &str,
        name: &str,
        kind: ModelKind,
        files: &[(String, String, u64)],
    ) -> Self {
        let (_, first, _) = files.first().cloned().unwrap_or_default();
        let mut info = Self::local_file(id, name, kind, &first, 0);
        info.size_bytes = files.iter().map(|f| f.2).sum();
        info.files = files
            .iter()
            .map(|(role, path, size)| ModelFile {
                role: role.clone(),
                path: path.clone(),
                size_bytes: *size,
                sha256: None,
            })
            .collect();
        info
    }

    /// The files llama-server loads as the model (every shard): all but a vision projector.
    pub fn weight_files(&self) -> Vec<ModelFile> {
        let projector = ComponentRole::Projector.as_str();
        self.all_files().into_iter().filter(|f| f.role != projector).collect()
    }

    /// The vision projector downloaded with an LLM (`--mmproj`), if one was.
    pub fn projector(&self) -> Option<&ModelFile> {
        self.files.iter().find(|f| f.role == ComponentRole::Projector.as_str())
    }

    /// `files`, or the primary alone for metadata written before `files` existed.
    pub fn all_files(&self) -> Vec<ModelFile> {
        if self.files.is_empty() {
            vec![ModelFile {
                role: "model".into(),
                path: self.path.clone(),
                size_bytes: self.size_bytes,
                sha256: self.sha256.clone(),
            }]
        } else {
            self.files.clone()
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelFile {
    /// "model", "shard 2/3", or a component role such as "vae".
    pub role: String,
    pub path: String,
    pub size_bytes: u64,
    pub sha256: Option<String>,
}

/// Parts a model needs besides its own weights: a diffusion model's encoders and decoder, or an
/// LLM's vision projector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ComponentRole {
    Vae,
    ClipL,
    ClipG,
    T5xxl,
    Llm,
    LlmVision,
    /// A tiny autoencoder that decodes instead of the VAE (`--taesd`).
    Taesd,
    /// An LLM's vision projector (`mmproj`, llama-server's `--mmproj`): lets it read images.
    #[serde(rename = "mmproj")]
    Projector,
}

impl ComponentRole {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Vae => "vae",
            Self::ClipL => "clip_l",
            Self::ClipG => "clip_g",
            Self::T5xxl => "t5xxl",
            Self::Llm => "llm",
            Self::LlmVision => "llm_vision",
            Self::Taesd => "taesd",
            Self::Projector => "mmproj",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComponentRequest {
    pub role: ComponentRole,
    pub source: ModelSource,
    pub sha256: Option<String>,
}

/// What the download form sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DownloadRequest {
    pub name: String,
    pub kind: ModelKind,
    pub source: ModelSource,
    /// Optional, `sha256:…` or plain hex.
    pub sha256: Option<String>,
    /// A split model: every shard's SHA-256 in shard order, `None` where unknown (the first
    /// shard's is `sha256` when this is empty).
    #[serde(default)]
    pub shard_sha256: Vec<Option<String>>,
    /// The files the model needs besides its weights: a diffusion model's, or an LLM's vision
    /// projector.
    #[serde(default)]
    pub components: Vec<ComponentRequest>,
    /// Diffusion with components: the folder they go in, shared by variants of one model
    /// (a Q4 and a Q8 of the same model use one VAE). Defaults to the model's id.
    #[serde(default)]
    pub directory: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DownloadState {
    Queued,
    Running,
    Paused,
    Failed,
    Done,
}

/// One entry of the download queue, as the queue panel shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DownloadStatus {
    pub download_id: String,
    pub name: String,
    pub kind: ModelKind,
    pub state: DownloadState,
    pub downloaded_bytes: u64,
    pub total_bytes: Option<u64>,
    pub bytes_per_sec: f64,
    pub eta_secs: Option<f64>,
    pub error: Option<IpcError>,
    /// Set when done.
    pub model_id: Option<String>,
}

impl DownloadStatus {
    /// A new row: queued, nothing downloaded yet.
    pub fn queued(download_id: String, name: String, kind: ModelKind) -> Self {
        Self {
            download_id,
            name,
            kind,
            state: DownloadState::Queued,
            downloaded_bytes: 0,
            total_bytes: None,
            bytes_per_sec: 0.0,
            eta_secs: None,
            error: None,
            model_id: None,
        }
    }

    /// Takes a progress event's figures when it is about this row; returns whether it was.
    pub fn apply(&mut self, p: &crate::event::DownloadProgress) -> bool {
        if p.download_id != self.download_id {
            return false;
        }
        self.downloaded_bytes = p.downloaded_bytes;
        self.total_bytes = p.total_bytes;
        self.bytes_per_sec = p.bytes_per_sec;
        self.eta_secs = p.eta_secs;
        true
    }
}

/// `model_delete`'s argument.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteModelArgs {
    pub id: String,
    /// Stop the server that uses the model first ("Stop and delete"); without it a model in use
    /// is refused with `MODEL_IN_USE`.
    #[serde(default)]
    pub stop: bool,
}

/// Arguments naming one model or one download.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdArgs {
    pub id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyResult {
    pub sha256: String,
    /// Whether a stored checksum existed to compare with (it matched, or this is an error).
    pub had_checksum: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelList {
    pub models: Vec<ModelInfo>,
    /// Bytes on disk, each file counted once even when models share it.
    pub total_bytes: u64,
    /// Model records this version cannot read (written by a newer version): not listed, and
    /// left as they are.
    #[serde(default)]
    pub unreadable: Vec<IpcError>,
}

/// Where a setting's value in force comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SettingOrigin {
    /// Saved in the window.
    Setting,
    /// From the environment the app was started in (`HF_ENDPOINT`, `HF_TOKEN`).
    Environment,
    Default,
}

/// How the app reaches Hugging Face (`hf_settings`, `hf_settings_set`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HfSettingsView {
    /// The host every Hugging Face request goes to, e.g. `https://huggingface.co`.
    pub endpoint: String,
    pub endpoint_origin: SettingOrigin,
    /// The token in force, never whole (`hf_…wxyz`); `None` when there is none.
    pub token_masked: Option<String>,
    pub token_origin: Option<SettingOrigin>,
    /// Why the saved settings could not be used (a file from a newer version), if so.
    pub problem: Option<String>,
}

/// `hf_settings_set`'s argument.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HfSettingsArgs {
    /// Blank: `HF_ENDPOINT` if set, else huggingface.co.
    pub endpoint: String,
    /// `None`: keep the saved token; blank: remove it.
    pub token: Option<String>,
}

#[cfg(test)]
mod progress_tests {
    use super::*;
    use crate::event::DownloadProgress;

    #[test]
    fn a_row_takes_only_its_own_progress() {
        let mut row = DownloadStatus {
            state: DownloadState::Running,
            ..DownloadStatus::queued("a".into(), "A".into(), ModelKind::Llm)
        };
        let p = |id: &str| DownloadProgress {
            download_id: id.into(),
            file_name: "a.gguf".into(),
            downloaded_bytes: 50,
            total_bytes: Some(100),
            bytes_per_sec: 10.0,
            eta_secs: Some(5.0),
        };
        assert!(!row.apply(&p("b")));
        assert_eq!(row.downloaded_bytes, 0, "another row's progress changes nothing");
        assert!(row.apply(&p("a")));
        assert_eq!(
            (row.downloaded_bytes, row.total_bytes, row.bytes_per_sec, row.eta_secs),
            (50, Some(100), 10.0, Some(5.0))
        );
        assert_eq!(row.state, DownloadState::Running, "the state comes by DownloadsChanged only");
    }
}

/// Where a GGUF file would run on this machine at a chosen context: the Models tab's badge,
/// before a download (its header read remotely) or after.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FitBadge {
    /// Every layer on the GPU(s).
    Gpu,
    /// `layers` of `of` layers on the GPU; a mixture of experts may instead keep every layer
    /// there with the experts of its first `cpu_moe` blocks in RAM.
    Partial { layers: u32, of: u32, cpu_moe: u32 },
    /// In RAM only (no GPU, or not one layer fits it).
    Cpu,
    /// Does not fit even at the minimum context.
    TooBig,
    /// Its header could not be read (not GGUF, truncated, or refused as hostile).
    Unreadable,
}

/// A [`FitBadge`] with what it is based on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FitReport {
    pub badge: FitBadge,
    /// The context asked for, as far as the model was trained for it.
    pub asked_context: u32,
    /// The context the badge is for: `asked_context`, or the largest that fits when that does
    /// not (0 when too big).
    pub context: u32,
    /// The largest context that keeps every layer on the GPU (0: none, or no GPU).
    pub gpu_context: u32,
    /// Expected memory at `context`, per device (GPU first when any layer is there).
    pub memory: Vec<crate::llm::DeviceMemory>,
    /// The badge it would get were the running LLM server stopped, when that is better.
    pub if_llm_stopped: Option<FitBadge>,
    /// One sentence for the badge's hover text.
    pub why: String,
}

/// The order of a Hugging Face search.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HfSort {
    #[default]
    Downloads,
    Recent,
}

/// `hf_search`'s argument: part of a model's name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HfSearchArgs {
    pub text: String,
    #[serde(default)]
    pub sort: HfSort,
}

/// A repo with GGUF files that the search found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HfRepoHit {
    pub id: String,
    pub downloads: u64,
    pub likes: u64,
    pub last_modified: Option<String>,
    /// Its files need a token and an accepted licence.
    pub gated: bool,
}

/// `hf_repo`'s and `hf_repo_fit`'s argument: a repo, and the context and KV cache type its
/// badges are for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HfRepoArgs {
    pub repo: String,
    /// A branch, tag or commit; `None` or empty: `main`.
    #[serde(default)]
    pub revision: Option<String>,
    pub context: u32,
    /// `f16`, `q8_0`, `q4_0`.
    pub kv_type: String,
    /// The bytes of a vision projector chosen to go with the entry (loaded beside it), 0: none.
    #[serde(default)]
    pub projector_bytes: u64,
}

/// One file of a repo entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HfFile {
    pub path: String,
    pub size: u64,
    /// The LFS SHA-256 from the repo tree, verified on download.
    pub sha256: Option<String>,
}

/// One quantisation of a model in a repo, with its badge here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HfEntry {
    pub name: String,
    pub quant: Option<String>,
    /// Its shards in order (one file when not split).
    pub files: Vec<HfFile>,
    pub bytes: u64,
    /// Every shard is in the repo.
    pub complete: bool,
    pub fit: FitReport,
}

impl HfEntry {
    /// Its download from `repo` at `revision`: every shard, each verified against the tree's
    /// SHA-256, with `projector` beside it when one is chosen.
    pub fn download_request(
        &self,
        repo: &str,
        revision: &str,
        projector: Option<&HfFile>,
    ) -> DownloadRequest {
        let source = |file: &str| ModelSource::HuggingFace {
            repo: repo.to_owned(),
            file: file.to_owned(),
            revision: revision.to_owned(),
        };
        let first = self.files.first();
        DownloadRequest {
            name: self.name.clone(),
            kind: ModelKind::Llm,
            source: source(first.map_or("", |f| f.path.as_str())),
            sha256: first.and_then(|f| f.sha256.clone()),
            shard_sha256: if self.files.len() > 1 {
                self.files.iter().map(|f| f.sha256.clone()).collect()
            } else {
                Vec::new()
            },
            components: projector
                .map(|p| ComponentRequest {
                    role: ComponentRole::Projector,
                    source: source(&p.path),
                    sha256: p.sha256.clone(),
                })
                .into_iter()
                .collect(),
            directory: None,
        }
    }
}

/// A repo as the browse view shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HfRepoView {
    pub repo: String,
    pub revision: String,
    /// Smallest first.
    pub entries: Vec<HfEntry>,
    /// Vision projectors (`mmproj`), offered as add-ons.
    pub projectors: Vec<HfFile>,
    /// The index of the best fit in `entries`, if any.
    pub best: Option<usize>,
    /// How the best fit is chosen, for its hover text.
    pub best_rule: String,
}

/// `models_fit`'s argument: the context and KV cache type the badges are for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FitArgs {
    pub context: u32,
    pub kv_type: String,
}

/// An installed LLM's badge here, now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstalledFit {
    pub id: String,
    pub fit: FitReport,
}
