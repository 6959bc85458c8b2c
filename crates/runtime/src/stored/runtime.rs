//! The validation cache's record, `binaries/<runtime>/validation.json`: which build passed its
//! checks, and the file facts that let a later start trust it without hashing it again.

use super::{mirror_enum, mirror_struct, Conv};
use serde::{Deserialize, Serialize};

/// Format 1 is the first one (the cache had its `format` from the start). `images` came later
/// in the same format: a record without it was written before the sd.cpp check chose how images
/// are made, and is checked again.
pub const FORMAT: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ValidationRecord {
    pub format: u32,
    #[serde(flatten)]
    pub installed: Installed,
    /// The executable's modification time, nanoseconds since the Unix epoch.
    pub mtime_ns: u64,
}

impl ValidationRecord {
    pub fn of(installed: &ipc::runtimes::InstalledRuntime, mtime_ns: u64) -> Self {
        Self { format: FORMAT, installed: installed.conv(), mtime_ns }
    }

    pub fn installed(&self) -> ipc::runtimes::InstalledRuntime {
        self.installed.conv()
    }
}

mirror_struct! {
    pub struct Installed <=> ipc::runtimes::InstalledRuntime {
        runtime: RuntimeKind,
        version: String,
        variant: Variant,
        path: String,
        reported_version: String,
        size: u64,
        sha256: String,
        checked_at_ms: u64,
        generation_checked: bool,
        devices: Vec<String>,
        offloaded_layers: Option<(u32, u32)>,
        custom: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        images: Option<ImagePath>,
    }
}

/// How an sd.cpp build makes images (`{"kind": "warm_server", "server": …}` or
/// `{"kind": "per_image", "why": …}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ImagePath {
    WarmServer { server: String },
    PerImage { why: String },
}

impl Conv<ipc::runtimes::ImagePath> for ImagePath {
    fn conv(&self) -> ipc::runtimes::ImagePath {
        use ipc::runtimes::ImagePath as I;
        match self {
            Self::WarmServer { server } => I::WarmServer { server: server.clone() },
            Self::PerImage { why } => I::PerImage { why: why.clone() },
        }
    }
}

impl Conv<ImagePath> for ipc::runtimes::ImagePath {
    fn conv(&self) -> ImagePath {
        match self {
            Self::WarmServer { server } => ImagePath::WarmServer { server: server.clone() },
            Self::PerImage { why } => ImagePath::PerImage { why: why.clone() },
        }
    }
}

mirror_enum! {
    pub enum RuntimeKind <=> ipc::runtimes::RuntimeKind { Llama, Diffusion }
}

mirror_enum! {
    pub enum Variant <=> ipc::runtimes::Variant { Cuda, Vulkan, Metal, Cpu, Custom }
}
