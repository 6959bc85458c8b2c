//! Everything that crosses the boundary between the window (Leptos, wasm32) and the app (Tauri).
//!
//! Command names, event names and the data-transfer types live here once, so the UI and the
//! backend cannot drift apart. Serde only: this crate must build for wasm32 and for the host.

pub mod diffusion;
pub mod endpoint;
pub mod error;
pub mod event;
pub mod format;
pub mod llm;
pub mod models;
pub mod orchestrator;
pub mod rpc;
pub mod runtimes;
pub mod system;

pub use error::{ErrorCode, IpcError};
pub use event::{AppEvent, EVENT_CHANNEL};

use serde::{Deserialize, Serialize};

/// Names of the commands the window may invoke. Each is registered in `src-tauri` under the same
/// name; a test there checks that every name here has a handler.
pub mod cmd {
    pub const APP_INFO: &str = "app_info";
    pub const OPEN_STORAGE_FOLDER: &str = "open_storage_folder";
    pub const OPEN_LINK: &str = "open_link";
    /// The app's own log: its level and folder ([`crate::AppLogView`]).
    pub const APP_LOG: &str = "app_log";
    /// Sets the app log's level ([`crate::AppLogArgs`] → [`crate::AppLogView`]).
    pub const APP_LOG_SET: &str = "app_log_set";
    /// Shows the app log's folder (`<storage>/logs`) in the system's file manager.
    pub const OPEN_LOGS_FOLDER: &str = "open_logs_folder";
    /// Static and live facts about the machine ([`crate::system::SystemInfo`]).
    pub const SYSTEM_INFO: &str = "system_info";
    /// Live RAM and VRAM only ([`crate::system::MemoryNow`]); cheap enough to poll.
    pub const MEMORY_NOW: &str = "memory_now";
    /// What the runtime sampled over the last 10 minutes ([`crate::system::MemorySample`]s,
    /// oldest first), so the Resource Monitor shows the past when it opens.
    pub const MEMORY_HISTORY: &str = "memory_history";
    /// Whether a tab showing live memory is on screen ([`crate::system::MemoryWatchArgs`]):
    /// while it is, each reading that differs visibly from the last one announced is sent as
    /// [`crate::AppEvent::MemoryChanged`], and the window polls nothing.
    pub const MEMORY_WATCH: &str = "memory_watch";
    /// Empties a server's log: its lines in memory and its files on disk
    /// ([`crate::event::ServerLogArgs`]).
    pub const SERVER_LOG_CLEAR: &str = "server_log_clear";

    /// Installed models and their total disk use ([`crate::models::ModelList`]).
    pub const MODELS_LIST: &str = "models_list";
    /// Deletes a model ([`crate::models::DeleteModelArgs`]); one in use is refused unless the
    /// arguments say to stop its server first.
    pub const MODEL_DELETE: &str = "model_delete";
    /// Recomputes a model's SHA-256 and compares it ([`crate::models::VerifyResult`]).
    pub const MODEL_VERIFY: &str = "model_verify";
    /// Every installed LLM's fit badge for the memory free now ([`crate::models::FitArgs`] →
    /// `Vec<`[`crate::models::InstalledFit`]`>`).
    pub const MODELS_FIT: &str = "models_fit";
    /// Queues a download ([`crate::models::DownloadRequest`]); answers its id.
    pub const DOWNLOAD_START: &str = "download_start";
    /// Every download in the queue ([`crate::models::DownloadStatus`]).
    pub const DOWNLOADS: &str = "downloads";
    pub const DOWNLOAD_PAUSE: &str = "download_pause";
    pub const DOWNLOAD_RESUME: &str = "download_resume";
    pub const DOWNLOAD_CANCEL: &str = "download_cancel";
    /// Forgets a finished or failed download ([`crate::models::IdArgs`]).
    pub const DOWNLOAD_CLEAR: &str = "download_clear";
    /// How Hugging Face is reached ([`crate::models::HfSettingsView`]).
    pub const HF_SETTINGS: &str = "hf_settings";
    /// Saves the Hugging Face endpoint and token ([`crate::models::HfSettingsArgs`]).
    pub const HF_SETTINGS_SET: &str = "hf_settings_set";
    /// Searches Hugging Face for GGUF repos ([`crate::models::HfSearchArgs`] →
    /// `Vec<`[`crate::models::HfRepoHit`]`>`).
    pub const HF_SEARCH: &str = "hf_search";
    /// Opens a repo: its GGUF entries with their headers read remotely and a fit badge each
    /// ([`crate::models::HfRepoArgs`] → [`crate::models::HfRepoView`]).
    pub const HF_REPO: &str = "hf_repo";
    /// The badges of a repo opened before, for another context or KV type, or for the memory
    /// free now: no request to Hugging Face ([`crate::models::HfRepoArgs`] →
    /// [`crate::models::HfRepoView`]).
    pub const HF_REPO_FIT: &str = "hf_repo_fit";

    /// Where a runtime stands ([`crate::runtimes::RuntimeArgs`] → [`crate::runtimes::RuntimeStatus`]).
    pub const RUNTIME_STATUS: &str = "runtime_status";
    /// Installs or re-checks a runtime ([`crate::runtimes::InstallArgs`]); answers when done.
    pub const RUNTIME_INSTALL: &str = "runtime_install";
    /// Points a runtime at a binary on disk ([`crate::runtimes::SetCustomArgs`]).
    pub const RUNTIME_SET_CUSTOM: &str = "runtime_set_custom";
    /// Saves the release mirror ([`crate::runtimes::MirrorArgs`]).
    pub const RUNTIME_SET_MIRROR: &str = "runtime_set_mirror";
    /// Stops a runtime's setup ([`crate::runtimes::CancelSetupArgs`]).
    pub const RUNTIME_CANCEL: &str = "runtime_cancel";

    /// Where the OpenAI-compatible endpoint stands, with its latest requests
    /// ([`crate::endpoint::EndpointStatus`]).
    pub const ENDPOINT_STATUS: &str = "endpoint_status";
    /// Saves the endpoint's settings and applies them: opens, moves or closes it
    /// ([`crate::endpoint::EndpointSettings`] → [`crate::endpoint::EndpointStatus`]).
    pub const ENDPOINT_SET: &str = "endpoint_set";

    /// Where the LLM server stands ([`crate::llm::LlmStatus`]).
    pub const LLM_STATUS: &str = "llm_status";
    /// The settings a start would use ([`crate::llm::LlmConfig`] → [`crate::llm::LlmSettings`]).
    pub const LLM_PREVIEW: &str = "llm_preview";
    /// Starts llama-server ([`crate::llm::LlmConfig`]); answers once it is healthy.
    pub const LLM_START: &str = "llm_start";
    pub const LLM_STOP: &str = "llm_stop";
    /// Stops and starts again with the same resolved settings.
    pub const LLM_RESTART: &str = "llm_restart";
    /// The server's recent log lines ([`crate::llm::LlmLogs`]).
    pub const LLM_LOGS: &str = "llm_logs";
    /// A test chat ([`crate::llm::ChatArgs`]); tokens arrive as `ChatDelta` events, the whole
    /// reply as the answer ([`crate::llm::ChatReply`]).
    pub const LLM_CHAT: &str = "llm_chat";
    /// Stops a streaming test-chat reply ([`crate::models::IdArgs`], the request id); the server
    /// keeps running. Answers whether a reply was streaming.
    pub const LLM_CHAT_STOP: &str = "llm_chat_stop";

    /// This computer's RPC worker ([`crate::rpc::ShareStatus`]).
    pub const RPC_SHARE_STATUS: &str = "rpc_share_status";
    /// Lends this computer to other machines' llama-server ([`crate::rpc::ShareArgs`] →
    /// [`crate::rpc::ShareStatus`]); answers once the worker answers its own probe.
    pub const RPC_SHARE_START: &str = "rpc_share_start";
    pub const RPC_SHARE_STOP: &str = "rpc_share_stop";
    /// The worker's recent log lines ([`crate::llm::LlmLogs`]).
    pub const RPC_SHARE_LOGS: &str = "rpc_share_logs";

    /// Where the diffusion server stands ([`crate::diffusion::DiffusionStatus`]).
    pub const DIFFUSION_STATUS: &str = "diffusion_status";
    /// Starts the job API ([`crate::diffusion::DiffusionConfig`]); installs sd-cli if needed.
    pub const DIFFUSION_START: &str = "diffusion_start";
    /// Cancels the running job and closes the job API.
    pub const DIFFUSION_STOP: &str = "diffusion_stop";
    /// Starts an image job ([`crate::diffusion::ImageRequest`] → [`crate::diffusion::JobView`]).
    pub const DIFFUSION_GENERATE: &str = "diffusion_generate";
    /// One job as the HTTP API shows it ([`crate::diffusion::JobArgs`]).
    pub const DIFFUSION_JOB: &str = "diffusion_job";
    pub const DIFFUSION_CANCEL: &str = "diffusion_cancel";
    /// Ends the warm image backend now (its memory back; the next image loads the model again).
    pub const DIFFUSION_RELEASE_BACKEND: &str = "diffusion_release_backend";
    /// sd-cli's recent output and the server's own lines.
    pub const DIFFUSION_LOGS: &str = "diffusion_logs";
    /// Writes a finished image under the storage folder ([`crate::diffusion::SaveImageArgs`]).
    pub const DIFFUSION_SAVE_IMAGE: &str = "diffusion_save_image";
    /// Asks where to save a finished image (the system's save dialog) and writes it there
    /// ([`crate::diffusion::SaveImageArgs`] → `Option<SavedImage>`, `None` when the user
    /// cancelled the dialog).
    pub const DIFFUSION_SAVE_IMAGE_AS: &str = "diffusion_save_image_as";
    /// Shows the saved images' folder in the system's file manager.
    pub const OPEN_IMAGES_FOLDER: &str = "open_images_folder";

    /// Where orchestration stands ([`crate::orchestrator::OrchestratorStatus`]).
    pub const ORCHESTRATOR_STATUS: &str = "orchestrator_status";
    /// Saves the mode and margin ([`crate::orchestrator::OrchestratorSettings`]).
    pub const ORCHESTRATOR_SET: &str = "orchestrator_set";
    /// Whether a job would pause the LLM now ([`crate::diffusion::ImageRequest`] →
    /// [`crate::orchestrator::OffloadDecision`]).
    pub const ORCHESTRATOR_CHECK: &str = "orchestrator_check";
    /// Brings a paused LLM back now (after a reload that failed).
    pub const ORCHESTRATOR_RELOAD: &str = "orchestrator_reload";
    /// Leaves the paused LLM stopped: no reload after the image ("Keep it stopped").
    pub const ORCHESTRATOR_KEEP_STOPPED: &str = "orchestrator_keep_stopped";

    /// Every command name, for the registration check.
    pub const ALL: &[&str] = &[
        APP_INFO,
        OPEN_STORAGE_FOLDER,
        OPEN_LINK,
        APP_LOG,
        APP_LOG_SET,
        OPEN_LOGS_FOLDER,
        SYSTEM_INFO,
        MEMORY_NOW,
        MEMORY_HISTORY,
        MEMORY_WATCH,
        SERVER_LOG_CLEAR,
        MODELS_LIST,
        MODEL_DELETE,
        MODEL_VERIFY,
        DOWNLOAD_START,
        DOWNLOADS,
        DOWNLOAD_PAUSE,
        DOWNLOAD_RESUME,
        DOWNLOAD_CANCEL,
        DOWNLOAD_CLEAR,
        HF_SETTINGS,
        HF_SETTINGS_SET,
        MODELS_FIT,
        HF_SEARCH,
        HF_REPO,
        HF_REPO_FIT,
        RUNTIME_STATUS,
        RUNTIME_INSTALL,
        RUNTIME_SET_CUSTOM,
        RUNTIME_SET_MIRROR,
        RUNTIME_CANCEL,
        ENDPOINT_STATUS,
        ENDPOINT_SET,
        LLM_STATUS,
        LLM_PREVIEW,
        LLM_START,
        LLM_STOP,
        LLM_RESTART,
        LLM_LOGS,
        RPC_SHARE_STATUS,
        RPC_SHARE_START,
        RPC_SHARE_STOP,
        RPC_SHARE_LOGS,
        LLM_CHAT,
        LLM_CHAT_STOP,
        DIFFUSION_STATUS,
        DIFFUSION_START,
        DIFFUSION_STOP,
        DIFFUSION_GENERATE,
        DIFFUSION_JOB,
        DIFFUSION_CANCEL,
        DIFFUSION_RELEASE_BACKEND,
        DIFFUSION_LOGS,
        DIFFUSION_SAVE_IMAGE,
        DIFFUSION_SAVE_IMAGE_AS,
        OPEN_IMAGES_FOLDER,
        ORCHESTRATOR_STATUS,
        ORCHESTRATOR_SET,
        ORCHESTRATOR_CHECK,
        ORCHESTRATOR_RELOAD,
        ORCHESTRATOR_KEEP_STOPPED,
    ];
}

/// The app's own log, as the footer shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppLogView {
    pub level: event::LogLevel,
    /// The file (`<storage>/logs/app.log`), for a bug report.
    pub path: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppLogArgs {
    pub level: event::LogLevel,
}

/// What the footer shows: who we are and where our files live.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppInfo {
    pub name: String,
    pub version: String,
    /// Absolute path of the storage root (models, binaries, logs).
    pub storage_root: String,
    /// Where the storage root came from: `GENAI_HOME` or the platform's app-data folder.
    pub storage_root_source: StorageRootSource,
    pub platform: Platform,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StorageRootSource {
    /// The `GENAI_HOME` environment variable.
    Env,
    /// The operating system's per-user application data folder.
    AppData,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    /// `linux`, `macos` or `windows` (Rust's `std::env::consts::OS`).
    pub os: String,
    /// `x86_64`, `aarch64`, ... (Rust's `std::env::consts::ARCH`).
    pub arch: String,
}

impl Platform {
    /// "linux x86_64"-style label for display.
    pub fn label(&self) -> String {
        format!("{} {}", self.os, self.arch)
    }
}

/// Arguments of [`cmd::OPEN_LINK`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenLinkArgs {
    pub url: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_names_are_unique_and_snake_case() {
        let mut seen = std::collections::HashSet::new();
        for name in cmd::ALL {
            assert!(seen.insert(name), "duplicate command name {name}");
            assert!(
                name.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
                "Tauri command names are snake_case identifiers: {name}"
            );
        }
    }

    #[test]
    fn app_info_round_trips_with_stable_field_names() {
        let info = AppInfo {
            name: "GenAI Control Panel".into(),
            version: "0.1.0".into(),
            storage_root: "/home/u/.local/share/genai-control-panel".into(),
            storage_root_source: StorageRootSource::Env,
            platform: Platform { os: "linux".into(), arch: "x86_64".into() },
        };
        let json = serde_json::to_value(&info).unwrap();
        assert_eq!(json["storage_root_source"], "env");
        assert_eq!(json["platform"]["os"], "linux");
        let back: AppInfo = serde_json::from_value(json).unwrap();
        assert_eq!(back, info);
        assert_eq!(back.platform.label(), "linux x86_64");
    }
}
