//! Typed access to the app: every command call and event subscription goes through here, so tabs
//! never touch raw JS values. Names and types come from the `ipc` crate.

use ipc::diffusion::{
    DiffusionConfig, DiffusionStatus, ImageRequest, JobArgs, JobView, SaveImageArgs, SavedImage,
};
use ipc::endpoint::{EndpointSettings, EndpointStatus};
use ipc::event::{ServerKind, ServerLogArgs};
use ipc::llm::{ChatArgs, ChatReply, LlmConfig, LlmLogs, LlmSettings, LlmStatus};
use ipc::models::{
    DeleteModelArgs, DownloadRequest, DownloadStatus, HfSettingsArgs, HfSettingsView, IdArgs,
    ModelList, VerifyResult,
};
use ipc::orchestrator::{OffloadDecision, OrchestratorSettings, OrchestratorStatus};
use ipc::runtimes::{
    CancelSetupArgs, InstallArgs, MirrorArgs, RuntimeArgs, RuntimeKind, RuntimeStatus,
    SetCustomArgs,
};
use ipc::system::{MemoryNow, MemorySample, MemoryWatchArgs, SystemInfo};
use ipc::{cmd, AppEvent, AppInfo, ErrorCode, IpcError, OpenLinkArgs};
use serde::{de::DeserializeOwned, Serialize};
use wasm_bindgen::prelude::*;

#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(js_namespace = ["window", "__TAURI__", "core"], js_name = invoke, catch)]
    async fn tauri_invoke(cmd: &str, args: JsValue) -> Result<JsValue, JsValue>;

    #[wasm_bindgen(js_namespace = ["window", "__TAURI__", "event"], js_name = listen, catch)]
    async fn tauri_listen(
        event: &str,
        handler: &Closure<dyn FnMut(JsValue)>,
    ) -> Result<JsValue, JsValue>;
}

fn to_js<T: Serialize>(value: &T) -> Result<JsValue, IpcError> {
    value
        .serialize(&serde_wasm_bindgen::Serializer::json_compatible())
        .map_err(|e| IpcError::new(ErrorCode::Internal, format!("could not encode arguments: {e}")))
}

/// A rejected invoke carries our `IpcError` as JSON; anything else (Tauri's own "command not
/// found", a missing `window.__TAURI__`) becomes an `Internal` error with the text it had.
fn to_error(raw: JsValue) -> IpcError {
    serde_wasm_bindgen::from_value::<IpcError>(raw.clone()).unwrap_or_else(|_| {
        let text = raw
            .as_string()
            .or_else(|| js_sys_string(&raw))
            .unwrap_or_else(|| "unknown error".to_owned());
        IpcError::new(ErrorCode::Internal, text)
    })
}

fn js_sys_string(v: &JsValue) -> Option<String> {
    v.dyn_ref::<js_sys::Error>().map(|e| String::from(e.message()))
}

/// Calls a command that takes one DTO as `args` (the convention for all our commands).
pub async fn invoke_with<A: Serialize, T: DeserializeOwned>(
    name: &str,
    args: &A,
) -> Result<T, IpcError> {
    #[derive(Serialize)]
    struct Wrapped<'a, A> {
        args: &'a A,
    }
    call(name, to_js(&Wrapped { args })?).await
}

/// Calls a command that takes no arguments.
pub async fn invoke<T: DeserializeOwned>(name: &str) -> Result<T, IpcError> {
    call(name, JsValue::UNDEFINED).await
}

async fn call<T: DeserializeOwned>(name: &str, args: JsValue) -> Result<T, IpcError> {
    let raw = tauri_invoke(name, args).await.map_err(to_error)?;
    serde_wasm_bindgen::from_value(raw).map_err(|e| {
        IpcError::new(ErrorCode::Internal, format!("unexpected answer from {name}: {e}"))
    })
}

pub async fn app_info() -> Result<AppInfo, IpcError> {
    invoke(cmd::APP_INFO).await
}

pub async fn system_info() -> Result<SystemInfo, IpcError> {
    invoke(cmd::SYSTEM_INFO).await
}

pub async fn memory_now() -> Result<MemoryNow, IpcError> {
    invoke(cmd::MEMORY_NOW).await
}

pub async fn memory_history() -> Result<Vec<MemorySample>, IpcError> {
    invoke(cmd::MEMORY_HISTORY).await
}

/// Whether a tab showing live memory is on screen (the app then announces visible changes).
pub async fn memory_watch(on: bool) -> Result<(), IpcError> {
    invoke_with(cmd::MEMORY_WATCH, &MemoryWatchArgs { on }).await
}

pub async fn server_log_clear(server: ServerKind) -> Result<(), IpcError> {
    invoke_with(cmd::SERVER_LOG_CLEAR, &ServerLogArgs { server }).await
}

pub async fn models_list() -> Result<ModelList, IpcError> {
    invoke(cmd::MODELS_LIST).await
}

/// Deletes a model; `stop`: stop the server that uses it first.
pub async fn model_delete(id: String, stop: bool) -> Result<(), IpcError> {
    invoke_with(cmd::MODEL_DELETE, &DeleteModelArgs { id, stop }).await
}

pub async fn model_verify(id: String) -> Result<VerifyResult, IpcError> {
    invoke_with(cmd::MODEL_VERIFY, &IdArgs { id }).await
}

pub async fn download_start(request: DownloadRequest) -> Result<String, IpcError> {
    invoke_with(cmd::DOWNLOAD_START, &request).await
}

pub async fn downloads() -> Result<Vec<DownloadStatus>, IpcError> {
    invoke(cmd::DOWNLOADS).await
}

/// Pause, resume or cancel a download by id.
pub async fn download_control(command: &'static str, id: String) -> Result<(), IpcError> {
    invoke_with(command, &IdArgs { id }).await
}

pub async fn hf_settings() -> Result<HfSettingsView, IpcError> {
    invoke(cmd::HF_SETTINGS).await
}

pub async fn hf_settings_set(args: HfSettingsArgs) -> Result<HfSettingsView, IpcError> {
    invoke_with(cmd::HF_SETTINGS_SET, &args).await
}

pub async fn hf_search(
    args: ipc::models::HfSearchArgs,
) -> Result<Vec<ipc::models::HfRepoHit>, IpcError> {
    invoke_with(cmd::HF_SEARCH, &args).await
}

/// Every installed LLM's fit badge for the memory free now.
pub async fn models_fit(
    args: ipc::models::FitArgs,
) -> Result<Vec<ipc::models::InstalledFit>, IpcError> {
    invoke_with(cmd::MODELS_FIT, &args).await
}

/// Opens a repo (its tree and the headers not read before are fetched).
pub async fn hf_repo(args: ipc::models::HfRepoArgs) -> Result<ipc::models::HfRepoView, IpcError> {
    invoke_with(cmd::HF_REPO, &args).await
}

/// The badges of a repo opened before, for another context: no request to Hugging Face.
pub async fn hf_repo_fit(
    args: ipc::models::HfRepoArgs,
) -> Result<ipc::models::HfRepoView, IpcError> {
    invoke_with(cmd::HF_REPO_FIT, &args).await
}

pub async fn open_storage_folder() -> Result<(), IpcError> {
    invoke(cmd::OPEN_STORAGE_FOLDER).await
}

pub async fn app_log() -> Result<ipc::AppLogView, IpcError> {
    invoke(cmd::APP_LOG).await
}

pub async fn app_log_set(level: ipc::event::LogLevel) -> Result<ipc::AppLogView, IpcError> {
    invoke_with(cmd::APP_LOG_SET, &ipc::AppLogArgs { level }).await
}

pub async fn open_logs_folder() -> Result<(), IpcError> {
    invoke(cmd::OPEN_LOGS_FOLDER).await
}

#[allow(dead_code)] // first caller: links to model cards in the Models tab
pub async fn open_link(url: String) -> Result<(), IpcError> {
    invoke_with(cmd::OPEN_LINK, &OpenLinkArgs { url }).await
}

pub async fn runtime_status(runtime: RuntimeKind) -> Result<RuntimeStatus, IpcError> {
    invoke_with(cmd::RUNTIME_STATUS, &RuntimeArgs { runtime }).await
}

/// Installs or re-checks; answers when the setup ends (events report progress meanwhile).
pub async fn runtime_install(runtime: RuntimeKind, force: bool) -> Result<RuntimeStatus, IpcError> {
    invoke_with(cmd::RUNTIME_INSTALL, &InstallArgs { runtime, force }).await
}

pub async fn runtime_set_custom(
    runtime: RuntimeKind,
    path: Option<String>,
) -> Result<RuntimeStatus, IpcError> {
    invoke_with(cmd::RUNTIME_SET_CUSTOM, &SetCustomArgs { runtime, path }).await
}

pub async fn runtime_cancel(runtime: RuntimeKind, discard: bool) -> Result<(), IpcError> {
    invoke_with(cmd::RUNTIME_CANCEL, &CancelSetupArgs { runtime, discard }).await
}

pub async fn runtime_set_mirror(mirror: Option<String>) -> Result<(), IpcError> {
    invoke_with(cmd::RUNTIME_SET_MIRROR, &MirrorArgs { mirror }).await
}

pub async fn endpoint_status() -> Result<EndpointStatus, IpcError> {
    invoke(cmd::ENDPOINT_STATUS).await
}

pub async fn endpoint_set(settings: EndpointSettings) -> Result<EndpointStatus, IpcError> {
    invoke_with(cmd::ENDPOINT_SET, &settings).await
}

#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(js_namespace = ["navigator", "clipboard"], js_name = writeText, catch)]
    async fn clipboard_write_text(text: &str) -> Result<JsValue, JsValue>;
}

/// Puts `text` on the clipboard; false when the window may not (the text is then selectable).
pub async fn copy_text(text: &str) -> bool {
    clipboard_write_text(text).await.is_ok()
}

pub async fn llm_status() -> Result<LlmStatus, IpcError> {
    invoke(cmd::LLM_STATUS).await
}

pub async fn llm_preview(config: LlmConfig) -> Result<LlmSettings, IpcError> {
    invoke_with(cmd::LLM_PREVIEW, &config).await
}

pub async fn llm_start(config: LlmConfig) -> Result<LlmStatus, IpcError> {
    invoke_with(cmd::LLM_START, &config).await
}

pub async fn llm_stop() -> Result<(), IpcError> {
    invoke(cmd::LLM_STOP).await
}

pub async fn llm_restart() -> Result<LlmStatus, IpcError> {
    invoke(cmd::LLM_RESTART).await
}

pub async fn rpc_share_status() -> Result<ipc::rpc::ShareStatus, IpcError> {
    invoke(cmd::RPC_SHARE_STATUS).await
}

pub async fn rpc_share_start(args: ipc::rpc::ShareArgs) -> Result<ipc::rpc::ShareStatus, IpcError> {
    invoke_with(cmd::RPC_SHARE_START, &args).await
}

pub async fn rpc_share_stop() -> Result<ipc::rpc::ShareStatus, IpcError> {
    invoke(cmd::RPC_SHARE_STOP).await
}

pub async fn rpc_share_logs() -> Result<LlmLogs, IpcError> {
    invoke(cmd::RPC_SHARE_LOGS).await
}

pub async fn llm_logs() -> Result<LlmLogs, IpcError> {
    invoke(cmd::LLM_LOGS).await
}

pub async fn llm_chat(args: ChatArgs) -> Result<ChatReply, IpcError> {
    invoke_with(cmd::LLM_CHAT, &args).await
}

pub async fn llm_chat_stop(args: IdArgs) -> Result<bool, IpcError> {
    invoke_with(cmd::LLM_CHAT_STOP, &args).await
}

pub async fn diffusion_status() -> Result<DiffusionStatus, IpcError> {
    invoke(cmd::DIFFUSION_STATUS).await
}

pub async fn diffusion_start(config: DiffusionConfig) -> Result<DiffusionStatus, IpcError> {
    invoke_with(cmd::DIFFUSION_START, &config).await
}

pub async fn diffusion_stop() -> Result<(), IpcError> {
    invoke(cmd::DIFFUSION_STOP).await
}

pub async fn diffusion_generate(request: ImageRequest) -> Result<JobView, IpcError> {
    invoke_with(cmd::DIFFUSION_GENERATE, &request).await
}

pub async fn diffusion_job(id: String) -> Result<JobView, IpcError> {
    invoke_with(cmd::DIFFUSION_JOB, &JobArgs { id }).await
}

pub async fn diffusion_cancel(id: String) -> Result<JobView, IpcError> {
    invoke_with(cmd::DIFFUSION_CANCEL, &JobArgs { id }).await
}

/// Ends the warm image backend; answers whether one was resident.
pub async fn diffusion_release_backend() -> Result<bool, IpcError> {
    invoke(cmd::DIFFUSION_RELEASE_BACKEND).await
}

pub async fn diffusion_logs() -> Result<LlmLogs, IpcError> {
    invoke(cmd::DIFFUSION_LOGS).await
}

pub async fn diffusion_save_image(id: String, index: u32) -> Result<SavedImage, IpcError> {
    invoke_with(cmd::DIFFUSION_SAVE_IMAGE, &SaveImageArgs { id, index }).await
}

/// `None` when the user closed the save dialog.
pub async fn diffusion_save_image_as(
    id: String,
    index: u32,
) -> Result<Option<SavedImage>, IpcError> {
    invoke_with(cmd::DIFFUSION_SAVE_IMAGE_AS, &SaveImageArgs { id, index }).await
}

pub async fn open_images_folder() -> Result<(), IpcError> {
    invoke(cmd::OPEN_IMAGES_FOLDER).await
}

pub async fn orchestrator_status() -> Result<OrchestratorStatus, IpcError> {
    invoke(cmd::ORCHESTRATOR_STATUS).await
}

pub async fn orchestrator_set(
    settings: OrchestratorSettings,
) -> Result<OrchestratorStatus, IpcError> {
    invoke_with(cmd::ORCHESTRATOR_SET, &settings).await
}

pub async fn orchestrator_check(
    request: ImageRequest,
) -> Result<Option<OffloadDecision>, IpcError> {
    invoke_with(cmd::ORCHESTRATOR_CHECK, &request).await
}

pub async fn orchestrator_keep_stopped() -> Result<(), IpcError> {
    invoke(cmd::ORCHESTRATOR_KEEP_STOPPED).await
}

pub async fn orchestrator_reload() -> Result<(), IpcError> {
    invoke(cmd::ORCHESTRATOR_RELOAD).await
}

/// Calls `on_event` with every [`AppEvent`] and the time the app sent it, for the rest of the
/// window's life. Payloads that do not decode (a newer backend) are skipped with a console
/// warning rather than breaking the UI.
pub fn listen_events(on_event: impl Fn(u64, AppEvent) + 'static) {
    #[derive(serde::Deserialize)]
    struct Envelope {
        payload: ipc::event::Stamped,
    }
    let handler =
        Closure::<dyn FnMut(JsValue)>::new(
            move |raw: JsValue| match serde_wasm_bindgen::from_value::<Envelope>(raw) {
                Ok(env) => on_event(env.payload.at_ms, env.payload.event),
                Err(e) => leptos::logging::warn!("ignoring an event that does not decode: {e}"),
            },
        );
    wasm_bindgen_futures::spawn_local(async move {
        if let Err(e) = tauri_listen(ipc::EVENT_CHANNEL, &handler).await {
            leptos::logging::warn!("could not listen to app events: {}", to_error(e));
        }
        // The subscription lasts as long as the window, so the handler must too.
        handler.forget();
    });
}
