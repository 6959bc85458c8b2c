//! The error shape every command returns: a stable code, a title, what happened, and what to do.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Stable error codes. The UI and tests match on these, never on message text.
///
/// The list covers every slice of the app (models, runtimes, servers, images, orchestration), so
/// that later slices add behaviour, not new ways of reporting failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    /// A command was called with arguments that make no sense (a bad URL, a negative size).
    InvalidInput,
    /// A path from outside (model name, archive entry, HF path) would leave the storage root.
    PathOutsideRoot,
    FileSystem,
    InsufficientDisk,
    ModelNotFound,
    /// A server or a paused LLM uses the model (it cannot be deleted under it).
    ModelInUse,
    GgufInvalid,
    /// llama-server could not load the model (an unknown architecture, damaged tensors).
    ModelUnsupported,
    DownloadFailed,
    /// The server wants a token, or a licence accepted (a gated Hugging Face repository).
    AuthRequired,
    Network,
    ChecksumMismatch,
    Cancelled,
    BinaryNotFound,
    BinaryInvalid,
    PortInUse,
    ServerNotRunning,
    ServerAlreadyRunning,
    ServerStartFailed,
    ServerCrashed,
    InsufficientMemory,
    /// The minimum context asked for does not fit this machine's free memory now.
    ContextTooLarge,
    /// The GPU or its driver failed (a CUDA, Vulkan or Metal error that is not lack of memory).
    GpuFailed,
    GenerationNotFound,
    /// An image job made no progress (no output, no change) for the watchdog's time (the
    /// original's name).
    #[serde(rename = "BACKEND_JOB_STUCK")]
    JobStuck,
    Busy,
    Unsupported,
    Internal,
}

impl ErrorCode {
    pub const ALL: &'static [ErrorCode] = &[
        Self::InvalidInput,
        Self::PathOutsideRoot,
        Self::FileSystem,
        Self::InsufficientDisk,
        Self::ModelNotFound,
        Self::ModelInUse,
        Self::GgufInvalid,
        Self::ModelUnsupported,
        Self::DownloadFailed,
        Self::AuthRequired,
        Self::Network,
        Self::ChecksumMismatch,
        Self::Cancelled,
        Self::BinaryNotFound,
        Self::BinaryInvalid,
        Self::PortInUse,
        Self::ServerNotRunning,
        Self::ServerAlreadyRunning,
        Self::ServerStartFailed,
        Self::ServerCrashed,
        Self::InsufficientMemory,
        Self::ContextTooLarge,
        Self::GpuFailed,
        Self::GenerationNotFound,
        Self::JobStuck,
        Self::Busy,
        Self::Unsupported,
        Self::Internal,
    ];

    /// The wire form, e.g. `PORT_IN_USE`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidInput => "INVALID_INPUT",
            Self::PathOutsideRoot => "PATH_OUTSIDE_ROOT",
            Self::FileSystem => "FILE_SYSTEM",
            Self::InsufficientDisk => "INSUFFICIENT_DISK",
            Self::ModelNotFound => "MODEL_NOT_FOUND",
            Self::ModelInUse => "MODEL_IN_USE",
            Self::GgufInvalid => "GGUF_INVALID",
            Self::ModelUnsupported => "MODEL_UNSUPPORTED",
            Self::DownloadFailed => "DOWNLOAD_FAILED",
            Self::AuthRequired => "AUTH_REQUIRED",
            Self::Network => "NETWORK",
            Self::ChecksumMismatch => "CHECKSUM_MISMATCH",
            Self::Cancelled => "CANCELLED",
            Self::BinaryNotFound => "BINARY_NOT_FOUND",
            Self::BinaryInvalid => "BINARY_INVALID",
            Self::PortInUse => "PORT_IN_USE",
            Self::ServerNotRunning => "SERVER_NOT_RUNNING",
            Self::ServerAlreadyRunning => "SERVER_ALREADY_RUNNING",
            Self::ServerStartFailed => "SERVER_START_FAILED",
            Self::ServerCrashed => "SERVER_CRASHED",
            Self::InsufficientMemory => "INSUFFICIENT_MEMORY",
            Self::ContextTooLarge => "CONTEXT_TOO_LARGE",
            Self::GpuFailed => "GPU_FAILED",
            Self::GenerationNotFound => "GENERATION_NOT_FOUND",
            Self::JobStuck => "BACKEND_JOB_STUCK",
            Self::Busy => "BUSY",
            Self::Unsupported => "UNSUPPORTED",
            Self::Internal => "INTERNAL",
        }
    }

    /// The code of a wire form (`PORT_IN_USE`), if it is one.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|c| c.as_str() == s)
    }

    /// A short heading for the error box.
    pub fn title(self) -> &'static str {
        match self {
            Self::InvalidInput => "Invalid input",
            Self::PathOutsideRoot => "Path not allowed",
            Self::FileSystem => "File system error",
            Self::InsufficientDisk => "Not enough disk space",
            Self::ModelNotFound => "Model not found",
            Self::ModelInUse => "Model in use",
            Self::GgufInvalid => "Not a valid GGUF file",
            Self::ModelUnsupported => "Model cannot be loaded",
            Self::DownloadFailed => "Download failed",
            Self::AuthRequired => "Access needed",
            Self::Network => "Network error",
            Self::ChecksumMismatch => "Checksum mismatch",
            Self::Cancelled => "Cancelled",
            Self::BinaryNotFound => "Runtime not installed",
            Self::BinaryInvalid => "Runtime does not work",
            Self::PortInUse => "Port already in use",
            Self::ServerNotRunning => "Server not running",
            Self::ServerAlreadyRunning => "Server already running",
            Self::ServerStartFailed => "Server failed to start",
            Self::ServerCrashed => "Server crashed",
            Self::InsufficientMemory => "Not enough memory",
            Self::ContextTooLarge => "Context does not fit",
            Self::GpuFailed => "The GPU failed",
            Self::GenerationNotFound => "Image job not found",
            Self::JobStuck => "The image stopped making progress",
            Self::Busy => "Busy",
            Self::Unsupported => "Not supported here",
            Self::Internal => "Unexpected error",
        }
    }

    /// What the user can do about it, when the error site has nothing more specific to say.
    pub fn default_remedy(self) -> &'static str {
        match self {
            Self::InvalidInput => "Check the values you entered and try again.",
            Self::PathOutsideRoot => {
                "Use a plain file name; paths may not leave the app's storage folder."
            }
            Self::FileSystem => {
                "Check that the storage folder exists and is writable, then try again."
            }
            Self::InsufficientDisk => "Free some disk space or delete unused models, then retry.",
            Self::ModelNotFound => "Refresh the Models tab; the model may have been deleted.",
            Self::ModelInUse => {
                "Stop the server that uses it first, or choose Stop and delete."
            }
            Self::GgufInvalid => {
                "The file is damaged, incomplete or not a GGUF model. Delete it and download it \
                 again; a tensor type this app does not know needs a newer app."
            }
            Self::ModelUnsupported => {
                "The runtime cannot load this model: verify or re-download it, or update the runtime."
            }
            Self::DownloadFailed => "Retry the download; it resumes where it stopped.",
            Self::AuthRequired => {
                "Accept the model's licence on its Hugging Face page, then save a token with read \
                 access under Models → Hugging Face access and retry."
            }
            Self::Network => "Check your connection and retry; downloads resume where they stopped.",
            Self::ChecksumMismatch => {
                "The file was removed. Retry the download; if it fails again, check the expected checksum."
            }
            Self::Cancelled => "Start it again when you are ready.",
            Self::BinaryNotFound => "Start the server once to download and install its runtime.",
            Self::BinaryInvalid => {
                "Reinstall the runtime from the server tab; the app will try the next build variant."
            }
            Self::PortInUse => "Choose another port, or stop the program that uses this one.",
            Self::ServerNotRunning => "Start the server first.",
            Self::ServerAlreadyRunning => "Stop the running server first, or use Restart.",
            Self::ServerStartFailed => "Open the server logs below for the reason, then retry.",
            Self::ServerCrashed => "Open the server logs for the reason; restart when fixed.",
            Self::JobStuck => {
                "The image backend was ended; try again. If it keeps stopping, lower the size or \
                 steps, or raise the stuck-job timeout in the server settings."
            }
            Self::InsufficientMemory => {
                "Choose a smaller model or context size, or stop the other server to free memory."
            }
            Self::ContextTooLarge => {
                "Lower the minimum context, choose a q8_0 KV cache, or stop the other server to \
                 free memory."
            }
            Self::GpuFailed => {
                "Update the GPU driver, or lower the GPU layers; if it keeps failing, install the \
                 CPU build from the server tab."
            }
            Self::GenerationNotFound => "The job finished or expired; start a new one.",
            Self::Busy => "Wait for the current job to finish, or cancel it.",
            Self::Unsupported => "This feature is not available on this machine.",
            Self::Internal => "Retry; if it happens again, report it with the app's log file.",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a failed command returns to the window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpcError {
    pub code: ErrorCode,
    pub title: String,
    pub message: String,
    pub remedy: String,
}

impl IpcError {
    /// An error with the code's own title and remedy.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            title: code.title().to_owned(),
            message: message.into(),
            remedy: code.default_remedy().to_owned(),
        }
    }

    /// Replaces the default remedy with one that fits this case better.
    pub fn with_remedy(mut self, remedy: impl Into<String>) -> Self {
        self.remedy = remedy.into();
        self
    }
}

impl fmt::Display for IpcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} ({})", self.title, self.message, self.code)
    }
}

impl std::error::Error for IpcError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_form_matches_serde() {
        for code in ErrorCode::ALL {
            let json = serde_json::to_string(code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
            let back: ErrorCode = serde_json::from_str(&json).unwrap();
            assert_eq!(back, *code);
        }
    }

    #[test]
    fn every_code_has_words_for_the_user() {
        for code in ErrorCode::ALL {
            assert!(!code.title().is_empty(), "{code} lacks a title");
            assert!(code.default_remedy().ends_with('.'), "{code} remedy is not a sentence");
        }
    }

    #[test]
    fn specific_remedy_overrides_default() {
        let e = IpcError::new(ErrorCode::PortInUse, "Port 8080 is already in use")
            .with_remedy("Try port 8081.");
        assert_eq!(e.title, "Port already in use");
        assert_eq!(e.remedy, "Try port 8081.");
        assert_eq!(e.to_string(), "Port already in use: Port 8080 is already in use (PORT_IN_USE)");
    }
}
