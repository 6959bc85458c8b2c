//! The runtime's one error type. Every variant maps to a stable [`ErrorCode`] and to an
//! [`IpcError`] with words for the user.

use ipc::{ErrorCode, IpcError};
use std::path::PathBuf;

pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("{what} failed for {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("no storage folder could be chosen: {0}")]
    NoStorageRoot(String),

    #[error("the storage folder {path} cannot be used: {source}")]
    StorageUnusable {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("path {given:?} would leave the storage folder")]
    PathOutsideRoot { given: String },

    #[error("{0}")]
    InvalidInput(String),

    #[error("{0}")]
    Unsupported(String),
}

impl RuntimeError {
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Io { .. } => ErrorCode::FileSystem,
            Self::NoStorageRoot(_) | Self::StorageUnusable { .. } => ErrorCode::FileSystem,
            Self::PathOutsideRoot { .. } => ErrorCode::PathOutsideRoot,
            Self::InvalidInput(_) => ErrorCode::InvalidInput,
            Self::Unsupported(_) => ErrorCode::Unsupported,
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
            _ => e,
        }
    }
}

impl From<RuntimeError> for IpcError {
    fn from(e: RuntimeError) -> Self {
        e.to_ipc()
    }
}
