//! The llama-server and sd-cli builds the app installs, checks and caches.

use crate::event::LogLine;
use crate::IpcError;
use serde::{Deserialize, Serialize};

/// Which runtime: llama.cpp's `llama-server` or stable-diffusion.cpp's `sd-cli`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuntimeKind {
    Llama,
    Diffusion,
}

impl RuntimeKind {
    pub const ALL: [RuntimeKind; 2] = [RuntimeKind::Llama, RuntimeKind::Diffusion];

    /// The folder under `binaries/`.
    pub fn dir(self) -> &'static str {
        match self {
            Self::Llama => "llama",
            Self::Diffusion => "diffusion",
        }
    }

    /// The executable people know it by.
    pub fn program(self) -> &'static str {
        match self {
            Self::Llama => "llama-server",
            Self::Diffusion => "sd-cli",
        }
    }
}

/// Which hardware a build is made for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Variant {
    Cuda,
    Vulkan,
    Metal,
    Cpu,
    /// A binary the user pointed the app at; its build is whatever it is.
    Custom,
}

impl Variant {
    pub fn label(self) -> &'static str {
        match self {
            Self::Cuda => "CUDA",
            Self::Vulkan => "Vulkan",
            Self::Metal => "Metal",
            Self::Cpu => "CPU",
            Self::Custom => "custom",
        }
    }

    /// Builds that are meant to run on a GPU (and must be seen to find one).
    pub fn is_gpu(self) -> bool {
        matches!(self, Self::Cuda | Self::Vulkan | Self::Metal)
    }
}

/// A build that passed the checks, as the validation cache records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstalledRuntime {
    pub runtime: RuntimeKind,
    /// The release tag it came from (`b9860`), or `custom`.
    pub version: String,
    pub variant: Variant,
    /// Absolute path of the executable.
    pub path: String,
    /// What the binary says about itself (`version: 9860 (abc123)`).
    pub reported_version: String,
    pub size: u64,
    /// Hex SHA-256 computed when it was checked; not recomputed while size and mtime hold.
    pub sha256: String,
    /// Milliseconds since the Unix epoch.
    pub checked_at_ms: u64,
    /// Whether the functional check ran: llama-server generated a token, sd-cli made a 64×64
    /// image (sd-cli records from before that check have `false` and are checked again).
    pub generation_checked: bool,
    /// Compute devices the build found in the check (`CUDA0: NVIDIA H100`); the CPU build lists
    /// none or the CPU.
    pub devices: Vec<String>,
    /// Layers the check put on a GPU, out of the test model's layers.
    pub offloaded_layers: Option<(u32, u32)>,
    /// The user chose this binary (see [`SetCustomArgs`]).
    pub custom: bool,
    /// How an sd.cpp build makes images, decided by its check; `None` for llama-server, and
    /// for sd.cpp records from before the choice existed (those are checked again).
    pub images: Option<ImagePath>,
}

/// How an sd.cpp build makes images: the way its check made the test image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ImagePath {
    /// A warm `sd-server` beside sd-cli (absolute path), kept loaded between images.
    WarmServer { server: String },
    /// One sd-cli run per image; `why` says why not a warm sd-server (the build has none, or
    /// the one it has failed the check).
    PerImage { why: String },
}

impl ImagePath {
    /// The Runtime card's line.
    pub fn describe(&self) -> String {
        match self {
            Self::WarmServer { server } => format!("warm sd-server ({server})"),
            Self::PerImage { why } => format!("one sd-cli run per image ({why})"),
        }
    }
}

/// Where a runtime stands, for its card.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimeStatus {
    pub runtime: RuntimeKind,
    /// The release this app version pins.
    pub pinned_version: String,
    pub installed: Option<InstalledRuntime>,
    /// A setup or check is running now.
    pub busy: bool,
    /// Why the last setup failed, when it did.
    pub last_error: Option<IpcError>,
    /// The setup log so far (the newest lines, oldest first).
    pub log: Vec<LogLine>,
    /// The mirror release files come from, when one is set.
    pub mirror: Option<String>,
    /// The binary the user chose, when they did.
    pub custom_path: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimeArgs {
    pub runtime: RuntimeKind,
}

/// Install (or re-check) a runtime. `force` re-runs the checks even when the cache holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstallArgs {
    pub runtime: RuntimeKind,
    pub force: bool,
}

/// Stop a runtime's setup. `discard`: delete the partial download too (else the next Install
/// continues it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CancelSetupArgs {
    pub runtime: RuntimeKind,
    pub discard: bool,
}

/// Point a runtime at a binary on disk; `None` goes back to the managed build.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetCustomArgs {
    pub runtime: RuntimeKind,
    pub path: Option<String>,
}

/// A base URL serving the release files under their own names; `None` or blank: the
/// release's own site. `GENAI_RELEASE_MIRROR` wins over it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MirrorArgs {
    pub mirror: Option<String>,
}

/// What a runtime setup is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SetupStage {
    Downloading,
    Extracting,
    Verifying,
    Testing,
    Done,
    Failed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BinaryProgress {
    pub runtime: RuntimeKind,
    pub stage: SetupStage,
    pub variant: Option<Variant>,
    /// Bytes downloaded, or entries extracted.
    pub done: u64,
    /// Bytes or entries in all, when known.
    pub total: Option<u64>,
}
