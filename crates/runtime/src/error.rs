//! The runtime's one error type. Every variant maps to a stable [`ErrorCode`] and to an
//! [`IpcError`] with words for the user.

use ipc::{ErrorCode, IpcError};
use std::path::PathBuf;

pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("{what} failed for {path}: {source}")]
    Io { what: &'static str, path: PathBuf, source: std::io::Error },

    #[error("no storage folder could be chosen: {0}")]
    NoStorageRoot(String),

    #[error("the storage folder {path} cannot be used: {source}")]
    StorageUnusable { path: PathBuf, source: std::io::Error },

    #[error("path {given:?} would leave the storage folder")]
    PathOutsideRoot { given: String },

    #[error("{0}")]
    InvalidInput(String),

    #[error("{0}")]
    Unsupported(String),

    #[error("network error fetching {url}: {detail}")]
    Network { url: String, detail: String },

    #[error("the server answered HTTP {status} for {url}")]
    HttpStatus { url: String, status: u16 },

    /// A 401/403 from Hugging Face: a gated repository or a missing or wrong token.
    #[error("Hugging Face answered HTTP {status} for {url}: {}", if *token_sent { "the token was refused or has no access to this repository" } else { "this repository needs a token" })]
    AuthRequired { url: String, status: u16, page: String, token_sent: bool },

    /// Hugging Face has no such repository, or one this request may not see (a private one).
    #[error("Hugging Face has no repository {repo}{}", if *token_sent { " that this token can see" } else { " (or it is private)" })]
    RepoNotFound { repo: String, token_sent: bool },

    /// Hugging Face is limiting requests from this address.
    #[error("Hugging Face is limiting requests (HTTP 429) for {url}")]
    RateLimited { url: String, retry_after_secs: Option<u64>, token_sent: bool },

    #[error("{file} has SHA-256 {actual}, expected {expected}; the file was deleted")]
    ChecksumMismatch { file: String, expected: String, actual: String },

    #[error("cancelled")]
    Cancelled,

    #[error("{needed} bytes are needed in {dir} but only {available} are free")]
    InsufficientDisk { dir: String, needed: u64, available: u64 },

    #[error("{0}")]
    Internal(String),

    #[error("no model with id {0:?}")]
    ModelNotFound(String),

    #[error("{model} is in use by {}", users.join(" and "))]
    ModelInUse { model: String, users: Vec<String> },

    #[error("{path} is not a usable GGUF file: {detail}")]
    GgufInvalid { path: String, detail: String },

    #[error("{0} already exists")]
    AlreadyExists(String),

    /// A kept file from a newer version of the app: not read, and never written over.
    #[error(
        "{} was written by a newer version of the app (format {found}, this one reads up to \
         {reads}); it was left as it is",
        path.display()
    )]
    NewerFormat { path: PathBuf, found: u64, reads: u32 },

    #[error("the archive {archive} is unsafe or damaged: {detail}")]
    BadArchive { archive: String, detail: String },

    #[error("no {program} build works on this machine; tried: {}", tried.join("; "))]
    NoWorkingBuild { program: String, tried: Vec<String> },

    #[error("{path} did not pass the checks: {detail}")]
    BinaryRejected { path: String, detail: String },

    #[error("{0}")]
    BinaryNotFound(String),

    #[error("port {0} is already in use on this computer")]
    PortInUse(u16),

    #[error("the server is already running")]
    ServerAlreadyRunning,

    #[error("another llama-server is running ({0}) and strict mode refuses to start beside it")]
    AnotherServer(String),

    /// RPC workers asked for that cannot take part (each with why), before anything started.
    #[error("RPC workers not ready: {}", .0.join("; "))]
    RpcWorkers(Vec<String>),

    #[error("the server is not running")]
    ServerNotRunning,

    #[error("{0}")]
    Busy(String),

    #[error("no image job with id {0:?} (finished results are kept 5 minutes)")]
    GenerationNotFound(String),

    #[error("image job {id} already ended ({status})")]
    AlreadyFinished { id: String, status: String },

    #[error("not enough memory: {0}")]
    InsufficientMemory(String),

    #[error(
        "a context of {min} tokens does not fit: the largest that fits on this machine now is \
         {largest} ({detail})"
    )]
    ContextTooLarge { min: u32, largest: u32, detail: String },

    /// A server failed in a way its log classifies.
    #[error("{message}")]
    ServerFailed { code: ErrorCode, message: String },
}

impl RuntimeError {
    pub(crate) fn io(what: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io { what, path: path.into(), source }
    }

    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Io { .. } => ErrorCode::FileSystem,
            Self::NoStorageRoot(_) | Self::StorageUnusable { .. } => ErrorCode::FileSystem,
            Self::PathOutsideRoot { .. } => ErrorCode::PathOutsideRoot,
            Self::InvalidInput(_) => ErrorCode::InvalidInput,
            Self::Unsupported(_) => ErrorCode::Unsupported,
            Self::Network { .. } => ErrorCode::Network,
            Self::HttpStatus { status: 401 | 403, .. } | Self::AuthRequired { .. } => {
                ErrorCode::AuthRequired
            }
            Self::HttpStatus { .. } => ErrorCode::DownloadFailed,
            Self::RepoNotFound { .. } => ErrorCode::ModelNotFound,
            Self::RateLimited { .. } => ErrorCode::Network,
            Self::ChecksumMismatch { .. } => ErrorCode::ChecksumMismatch,
            Self::Cancelled => ErrorCode::Cancelled,
            Self::InsufficientDisk { .. } => ErrorCode::InsufficientDisk,
            Self::Internal(_) => ErrorCode::Internal,
            Self::ModelNotFound(_) => ErrorCode::ModelNotFound,
            Self::ModelInUse { .. } => ErrorCode::ModelInUse,
            Self::GgufInvalid { .. } => ErrorCode::GgufInvalid,
            Self::AlreadyExists(_) => ErrorCode::InvalidInput,
            Self::NewerFormat { .. } => ErrorCode::FileSystem,
            Self::BadArchive { .. } => ErrorCode::BinaryInvalid,
            Self::NoWorkingBuild { .. } | Self::BinaryRejected { .. } => ErrorCode::BinaryInvalid,
            Self::BinaryNotFound(_) => ErrorCode::BinaryNotFound,
            Self::PortInUse(_) => ErrorCode::PortInUse,
            Self::ServerAlreadyRunning | Self::AnotherServer(_) => ErrorCode::ServerAlreadyRunning,
            Self::RpcWorkers(_) => ErrorCode::ServerStartFailed,
            Self::ServerNotRunning => ErrorCode::ServerNotRunning,
            Self::InsufficientMemory(_) => ErrorCode::InsufficientMemory,
            Self::ContextTooLarge { .. } => ErrorCode::ContextTooLarge,
            Self::Busy(_) => ErrorCode::Busy,
            Self::GenerationNotFound(_) => ErrorCode::GenerationNotFound,
            Self::AlreadyFinished { .. } => ErrorCode::InvalidInput,
            Self::ServerFailed { code, .. } => *code,
        }
    }

    pub fn to_ipc(&self) -> IpcError {
        let e = IpcError::new(self.code(), self.to_string());
        match self {
            Self::NoStorageRoot(_) | Self::StorageUnusable { .. } => e.with_remedy(
                "Set GENAI_HOME to a writable folder, e.g. GENAI_HOME=$HOME/genai, and start the app again.",
            ),
            Self::Io { source, .. } if source.kind() == std::io::ErrorKind::PermissionDenied => e
                .with_remedy(
                    "Give your user write access to the storage folder, or set GENAI_HOME to another folder.",
                ),
            Self::HttpStatus { status: 401 | 403, .. } => e.with_remedy(
                "The server wants credentials for this URL. For a Hugging Face model, download it \
                 from the Hugging Face source so the token in Models → Hugging Face access is sent.",
            ),
            Self::AuthRequired { page, token_sent, .. } => e.with_remedy(if *token_sent {
                format!(
                    "Open {page} and accept the licence with the account the token belongs to, or \
                     save a token with read access under Models → Hugging Face access; then retry."
                )
            } else {
                format!(
                    "Accept the licence at {page}, create a read token in your Hugging Face \
                     settings, save it under Models → Hugging Face access (or set HF_TOKEN), then retry."
                )
            }),
            Self::RepoNotFound { token_sent, .. } => e.with_remedy(if *token_sent {
                "Check the name (owner/name, as on the repository's page), or search for the model; \
                 for a private repository, save a token of an account that can see it."
            } else {
                "Check the name (owner/name, as on the repository's page), or search for the model; \
                 for a private repository, save a token under Models → Hugging Face access."
            }),
            Self::RateLimited { retry_after_secs, token_sent, .. } => e.with_remedy(format!(
                "Wait {} and try again{}.",
                retry_after_secs.map_or("a minute".to_owned(), |s| format!("{s} s")),
                if *token_sent {
                    ""
                } else {
                    "; requests with a token (Models → Hugging Face access) are allowed more"
                }
            )),
            Self::HttpStatus { status: 404, .. } => {
                e.with_remedy("Check the repository, file name and revision (or the URL).")
            }
            Self::AlreadyExists(_) => e.with_remedy(
                "Delete the existing model first, or give this download another name.",
            ),
            Self::NewerFormat { .. } => e.with_remedy(
                "Use the newer version of the app that wrote it, or move the file away to start \
                 afresh without what it holds.",
            ),
            Self::InsufficientDisk { .. } => e.with_remedy(
                "Free disk space or delete unused models, then retry; the bytes already fetched are kept.",
            ),
            Self::NoWorkingBuild { .. } => e.with_remedy(
                "Open the setup log for each build's reason. Update the GPU driver, or point the runtime at a build you have (Custom binary), then Install again.",
            ),
            Self::BinaryRejected { .. } => e.with_remedy(
                "Choose an executable of that program (it must answer --version or --help), or clear the custom path to use the app's build.",
            ),
            Self::BinaryNotFound(_) => e.with_remedy(
                "Press Install on the server tab to download the runtime, or choose an existing binary.",
            ),
            Self::ContextTooLarge { largest, .. } => e.with_remedy(format!(
                "Set the minimum context to {largest} or less, choose a q8_0 KV cache or fewer \
                 parallel slots, or stop the other server to free memory."
            )),
            Self::RpcWorkers(_) => e.with_remedy(
                "On each machine, start ggml-rpc-server from the same llama.cpp build as this app's \
                 (ggml-rpc-server -H <its address> -p <port>) and check the address, port and \
                 firewall; or remove the worker from the list to start without it.",
            ),
            Self::AnotherServer(_) => e.with_remedy(
                "Stop the other llama-server (it holds memory this app cannot count), or turn off \
                 strict mode to start beside it.",
            ),
            Self::PortInUse(port) => e.with_remedy(format!(
                "Choose another port (or Auto), or stop the program using port {port}."
            )),
            _ => e,
        }
    }
}

impl From<RuntimeError> for IpcError {
    fn from(e: RuntimeError) -> Self {
        e.to_ipc()
    }
}
