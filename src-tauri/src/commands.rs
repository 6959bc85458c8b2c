//! The commands the window may invoke. Each is a few lines: arguments in, runtime call, result
//! or [`IpcError`] out. Names come from [`ipc::cmd`].

use crate::state::AppState;
use ipc::diffusion::{
    DiffusionConfig, DiffusionStatus, ImageRequest, JobArgs, JobView, SaveImageArgs, SavedImage,
};
use ipc::endpoint::{EndpointSettings, EndpointStatus};
use ipc::event::ServerLogArgs;
use ipc::llm::{ChatArgs, ChatReply, LlmConfig, LlmLogs, LlmSettings, LlmStatus};
use ipc::models::{
    DeleteModelArgs, DownloadRequest, DownloadStatus, FitArgs, HfRepoArgs, HfRepoHit, HfRepoView,
    HfSearchArgs, HfSettingsArgs, HfSettingsView, IdArgs, InstalledFit, ModelList, VerifyResult,
};
use ipc::orchestrator::{OffloadDecision, OrchestratorSettings, OrchestratorStatus};
use ipc::rpc::{ShareArgs, ShareStatus};
use ipc::runtimes::{
    CancelSetupArgs, InstallArgs, MirrorArgs, RuntimeArgs, RuntimeStatus, SetCustomArgs,
};
use ipc::system::{MemoryNow, MemorySample, MemoryWatchArgs, SystemInfo};
use ipc::{AppInfo, AppLogArgs, AppLogView, IpcError, OpenLinkArgs};
use runtime::system::history;
use tauri::{AppHandle, State};

/// Every command the window may call. At the app log's debug level each call is logged by name
/// (what the window asked, and when: how its timers are seen from outside).
pub fn handler() -> impl Fn(tauri::ipc::Invoke) -> bool + Send + Sync + 'static {
    let handle = commands();
    move |invoke| {
        tracing::debug!(target: "genai::ipc", command = invoke.message.command(), "the window called");
        handle(invoke)
    }
}

fn commands() -> impl Fn(tauri::ipc::Invoke) -> bool + Send + Sync + 'static {
    tauri::generate_handler![
        app_info,
        open_storage_folder,
        open_link,
        app_log,
        app_log_set,
        open_logs_folder,
        system_info,
        memory_now,
        memory_history,
        memory_watch,
        server_log_clear,
        models_list,
        model_delete,
        model_verify,
        download_start,
        downloads,
        download_pause,
        download_resume,
        download_cancel,
        download_clear,
        hf_settings,
        hf_settings_set,
        models_fit,
        hf_search,
        hf_repo,
        hf_repo_fit,
        runtime_status,
        runtime_install,
        runtime_set_custom,
        runtime_set_mirror,
        runtime_cancel,
        endpoint_status,
        endpoint_set,
        llm_status,
        llm_preview,
        llm_start,
        llm_stop,
        llm_restart,
        llm_logs,
        rpc_share_status,
        rpc_share_start,
        rpc_share_stop,
        rpc_share_logs,
        llm_chat,
        llm_chat_stop,
        diffusion_status,
        diffusion_start,
        diffusion_stop,
        diffusion_generate,
        diffusion_job,
        diffusion_cancel,
        diffusion_release_backend,
        diffusion_logs,
        diffusion_save_image,
        diffusion_save_image_as,
        open_images_folder,
        orchestrator_status,
        orchestrator_set,
        orchestrator_check,
        orchestrator_reload,
        orchestrator_keep_stopped
    ]
}

#[tauri::command]
fn app_info(state: State<'_, AppState>) -> Result<AppInfo, IpcError> {
    Ok(state.runtime()?.app_info())
}

/// The machine, with the memory feed's newest reading (the window never reads hardware itself:
/// the sampler does, every 2 s, for everyone).
#[tauri::command]
async fn system_info(state: State<'_, AppState>) -> Result<SystemInfo, IpcError> {
    let now = shown_memory(&state).await?;
    Ok(state.system().system_info_with(now))
}

#[tauri::command]
async fn memory_now(state: State<'_, AppState>) -> Result<MemoryNow, IpcError> {
    shown_memory(&state).await
}

/// The feed's newest reading; only when the sampler has none yet (the first seconds) is memory
/// read, on a blocking thread.
async fn shown_memory(state: &AppState) -> Result<MemoryNow, IpcError> {
    let feed = state.memory().clone();
    tauri::async_runtime::spawn_blocking(move || feed.reading(history::FOR_DISPLAY))
        .await
        .map_err(|e| IpcError::new(ipc::ErrorCode::Internal, format!("reading memory: {e}")))?
        .map_err(IpcError::from)
}

/// The sampler's readings of the last 10 minutes (no hardware read: cheap on the main thread).
#[tauri::command]
fn memory_history(state: State<'_, AppState>) -> Result<Vec<MemorySample>, IpcError> {
    Ok(state.memory().history().samples())
}

/// A tab showing live memory came on screen (or left it): visible changes are announced to the
/// window while one is shown, instead of the window polling.
#[tauri::command]
fn memory_watch(state: State<'_, AppState>, args: MemoryWatchArgs) -> Result<(), IpcError> {
    state.memory().watch(args.on);
    Ok(())
}

#[tauri::command]
fn server_log_clear(state: State<'_, AppState>, args: ServerLogArgs) -> Result<(), IpcError> {
    Ok(state.runtime()?.clear_server_log(args.server)?)
}

#[tauri::command]
async fn models_list(state: State<'_, AppState>) -> Result<ModelList, IpcError> {
    Ok(state.runtime()?.models().list().await?)
}

#[tauri::command]
async fn model_delete(state: State<'_, AppState>, args: DeleteModelArgs) -> Result<(), IpcError> {
    Ok(state.runtime()?.delete_model(&args.id, args.stop).await?)
}

#[tauri::command]
async fn model_verify(state: State<'_, AppState>, args: IdArgs) -> Result<VerifyResult, IpcError> {
    Ok(state.runtime()?.models().verify(&args.id).await?)
}

// Download commands are async so they run on the tokio runtime the queue spawns onto.
#[tauri::command]
async fn download_start(
    state: State<'_, AppState>,
    args: DownloadRequest,
) -> Result<String, IpcError> {
    Ok(state.runtime()?.downloads().enqueue(args)?)
}

#[tauri::command]
async fn downloads(state: State<'_, AppState>) -> Result<Vec<DownloadStatus>, IpcError> {
    Ok(state.runtime()?.downloads().statuses())
}

#[tauri::command]
async fn download_pause(state: State<'_, AppState>, args: IdArgs) -> Result<(), IpcError> {
    Ok(state.runtime()?.downloads().pause(&args.id)?)
}

#[tauri::command]
async fn download_resume(state: State<'_, AppState>, args: IdArgs) -> Result<(), IpcError> {
    Ok(state.runtime()?.downloads().resume(&args.id)?)
}

#[tauri::command]
async fn download_cancel(state: State<'_, AppState>, args: IdArgs) -> Result<(), IpcError> {
    Ok(state.runtime()?.downloads().cancel(&args.id)?)
}

#[tauri::command]
async fn download_clear(state: State<'_, AppState>, args: IdArgs) -> Result<(), IpcError> {
    Ok(state.runtime()?.downloads().clear(&args.id)?)
}

#[tauri::command]
fn hf_settings(state: State<'_, AppState>) -> Result<HfSettingsView, IpcError> {
    Ok(state.runtime()?.hf().view())
}

#[tauri::command]
async fn hf_settings_set(
    state: State<'_, AppState>,
    args: HfSettingsArgs,
) -> Result<HfSettingsView, IpcError> {
    Ok(state.runtime()?.hf().set(args).await?)
}

#[tauri::command]
async fn models_fit(
    state: State<'_, AppState>,
    args: FitArgs,
) -> Result<Vec<InstalledFit>, IpcError> {
    Ok(state.runtime()?.installed_fit(&args).await?)
}

#[tauri::command]
async fn hf_search(
    state: State<'_, AppState>,
    args: HfSearchArgs,
) -> Result<Vec<HfRepoHit>, IpcError> {
    Ok(state.runtime()?.catalog().search(&args.text, args.sort).await?)
}

#[tauri::command]
async fn hf_repo(state: State<'_, AppState>, args: HfRepoArgs) -> Result<HfRepoView, IpcError> {
    Ok(state.runtime()?.hf_repo(&args, true).await?)
}

#[tauri::command]
async fn hf_repo_fit(state: State<'_, AppState>, args: HfRepoArgs) -> Result<HfRepoView, IpcError> {
    Ok(state.runtime()?.hf_repo(&args, false).await?)
}

/// Shows the storage folder in the system's file manager. It takes no path from the window,
/// so the window cannot make the shell open anything else.
#[tauri::command]
fn open_storage_folder(app: AppHandle, state: State<'_, AppState>) -> Result<(), IpcError> {
    let root = state.runtime()?.storage().root().display().to_string();
    open_with_system(&app, &root)
}

#[tauri::command]
fn app_log(state: State<'_, AppState>) -> Result<AppLogView, IpcError> {
    Ok(state.runtime()?.app_log().view())
}

#[tauri::command]
async fn app_log_set(state: State<'_, AppState>, args: AppLogArgs) -> Result<AppLogView, IpcError> {
    let rt = state.runtime()?;
    rt.app_log().set_level(args.level).await?;
    Ok(rt.app_log().view())
}

/// Shows `<storage>/logs` (the app's log and the servers') in the system's file manager.
#[tauri::command]
fn open_logs_folder(app: AppHandle, state: State<'_, AppState>) -> Result<(), IpcError> {
    let dir = state.runtime()?.app_log().folder()?;
    open_with_system(&app, &dir.display().to_string())
}

/// Opens a web page (a model card, a release page) in the system's browser: https only.
#[tauri::command]
fn open_link(app: AppHandle, args: OpenLinkArgs) -> Result<(), IpcError> {
    let url = runtime::links::checked_external_url(&args.url)?;
    open_with_system(&app, url)
}

fn open_with_system(app: &AppHandle, what: &str) -> Result<(), IpcError> {
    use tauri_plugin_shell::ShellExt;
    // `Shell::open` is deprecated in favour of tauri-plugin-opener; the design card names the
    // shell plugin, and this is the only use of it (the window itself is granted none of it).
    #[allow(deprecated)]
    app.shell().open(what, None).map_err(|e| {
        IpcError::new(ipc::ErrorCode::Unsupported, format!("could not open {what}: {e}"))
            .with_remedy("Install a file manager or browser (xdg-open), or open the path by hand.")
    })
}

#[cfg(test)]
mod tests {
    /// Every name the window may call has a handler here, and nothing is registered twice.
    #[test]
    fn every_ipc_command_is_registered() {
        let source = include_str!("commands.rs");
        let registered = source
            .split("generate_handler![")
            .nth(1)
            .and_then(|s| s.split(']').next())
            .expect("generate_handler! list");
        let names: Vec<&str> =
            registered.split(',').map(str::trim).filter(|n| !n.is_empty()).collect();
        for name in ipc::cmd::ALL {
            assert!(names.contains(name), "{name} is in ipc::cmd::ALL but has no handler");
        }
        assert_eq!(names.len(), ipc::cmd::ALL.len(), "a handler is missing from ipc::cmd::ALL");
    }
}

#[tauri::command]
fn runtime_status(
    state: State<'_, AppState>,
    args: RuntimeArgs,
) -> Result<RuntimeStatus, IpcError> {
    Ok(state.runtime()?.binaries().status(args.runtime))
}

/// Answers when the setup ends; progress and the log arrive as events meanwhile.
#[tauri::command]
async fn runtime_install(
    state: State<'_, AppState>,
    args: InstallArgs,
) -> Result<RuntimeStatus, IpcError> {
    let rt = state.runtime()?;
    rt.ensure_runtime(args.runtime, args.force).await?;
    Ok(rt.binaries().status(args.runtime))
}

#[tauri::command]
async fn runtime_set_custom(
    state: State<'_, AppState>,
    args: SetCustomArgs,
) -> Result<RuntimeStatus, IpcError> {
    let rt = state.runtime()?;
    let path = args.path.as_deref().map(str::trim).filter(|p| !p.is_empty());
    rt.binaries().set_custom(args.runtime, path.map(std::path::Path::new)).await?;
    Ok(rt.binaries().status(args.runtime))
}

#[tauri::command]
async fn runtime_set_mirror(state: State<'_, AppState>, args: MirrorArgs) -> Result<(), IpcError> {
    Ok(state.runtime()?.binaries().set_mirror(args.mirror).await?)
}

#[tauri::command]
fn runtime_cancel(state: State<'_, AppState>, args: CancelSetupArgs) -> Result<(), IpcError> {
    Ok(state.runtime()?.binaries().cancel(args.runtime, args.discard)?)
}

#[tauri::command]
fn llm_status(state: State<'_, AppState>) -> Result<LlmStatus, IpcError> {
    Ok(state.runtime()?.llm().status())
}

#[tauri::command]
async fn llm_preview(state: State<'_, AppState>, args: LlmConfig) -> Result<LlmSettings, IpcError> {
    Ok(state.runtime()?.llm().preview(&args).await?)
}

/// Answers once the server is healthy (or why it is not); state changes arrive as events.
#[tauri::command]
async fn llm_start(state: State<'_, AppState>, args: LlmConfig) -> Result<LlmStatus, IpcError> {
    Ok(state.runtime()?.llm().start(args).await?)
}

#[tauri::command]
async fn llm_stop(state: State<'_, AppState>) -> Result<(), IpcError> {
    Ok(state.runtime()?.llm().stop().await?)
}

#[tauri::command]
async fn llm_restart(state: State<'_, AppState>) -> Result<LlmStatus, IpcError> {
    Ok(state.runtime()?.llm().restart().await?)
}

#[tauri::command]
fn rpc_share_status(state: State<'_, AppState>) -> Result<ShareStatus, IpcError> {
    Ok(state.runtime()?.rpc_worker().status())
}

#[tauri::command]
async fn rpc_share_start(
    state: State<'_, AppState>,
    args: ShareArgs,
) -> Result<ShareStatus, IpcError> {
    Ok(state.runtime()?.rpc_worker().start(args).await?)
}

#[tauri::command]
async fn rpc_share_stop(state: State<'_, AppState>) -> Result<ShareStatus, IpcError> {
    Ok(state.runtime()?.rpc_worker().stop().await)
}

#[tauri::command]
fn rpc_share_logs(state: State<'_, AppState>) -> Result<LlmLogs, IpcError> {
    Ok(LlmLogs { lines: state.runtime()?.rpc_worker().logs() })
}

#[tauri::command]
fn llm_logs(state: State<'_, AppState>) -> Result<LlmLogs, IpcError> {
    Ok(LlmLogs { lines: state.runtime()?.llm().logs() })
}

#[tauri::command]
async fn llm_chat(state: State<'_, AppState>, args: ChatArgs) -> Result<ChatReply, IpcError> {
    let id = format!("chat-{}", runtime::now_ms());
    Ok(state.runtime()?.llm().chat(args, id).await?)
}

#[tauri::command]
fn llm_chat_stop(state: State<'_, AppState>, args: IdArgs) -> Result<bool, IpcError> {
    Ok(state.runtime()?.llm().stop_chat(&args.id))
}

#[tauri::command]
fn diffusion_status(state: State<'_, AppState>) -> Result<DiffusionStatus, IpcError> {
    Ok(state.runtime()?.diffusion().status())
}

/// Answers once the job API listens (sd-cli is installed first if needed).
#[tauri::command]
async fn diffusion_start(
    state: State<'_, AppState>,
    args: DiffusionConfig,
) -> Result<DiffusionStatus, IpcError> {
    Ok(state.runtime()?.diffusion().start(args).await?)
}

#[tauri::command]
async fn diffusion_stop(state: State<'_, AppState>) -> Result<(), IpcError> {
    Ok(state.runtime()?.diffusion().stop().await?)
}

/// Answers the pending job at once; progress and the end arrive as events.
#[tauri::command]
fn diffusion_generate(state: State<'_, AppState>, args: ImageRequest) -> Result<JobView, IpcError> {
    Ok(state.runtime()?.diffusion().generate(args)?)
}

#[tauri::command]
fn diffusion_job(state: State<'_, AppState>, args: JobArgs) -> Result<JobView, IpcError> {
    Ok(state.runtime()?.diffusion().job(&args.id)?)
}

#[tauri::command]
fn diffusion_cancel(state: State<'_, AppState>, args: JobArgs) -> Result<JobView, IpcError> {
    Ok(state.runtime()?.diffusion().cancel(&args.id)?)
}

/// Answers whether a backend was resident; the state changes arrive as events.
#[tauri::command]
async fn diffusion_release_backend(state: State<'_, AppState>) -> Result<bool, IpcError> {
    Ok(state.runtime()?.diffusion().release_backend().await?)
}

#[tauri::command]
fn diffusion_logs(state: State<'_, AppState>) -> Result<LlmLogs, IpcError> {
    Ok(LlmLogs { lines: state.runtime()?.diffusion().logs() })
}

/// "Save as…": the system's save dialog picks the place (the window sends no path), then the
/// runtime writes the image there. `None` when the user closed the dialog.
#[tauri::command]
async fn diffusion_save_image_as(
    app: AppHandle,
    state: State<'_, AppState>,
    args: SaveImageArgs,
) -> Result<Option<SavedImage>, IpcError> {
    let sd = state.runtime()?.diffusion().clone();
    let name = sd.suggested_file_name(&args.id, args.index)?;
    let start = sd.images_folder()?;
    let Some(path) = crate::save_dialog::pick(&app, &name, &start).await else {
        return Ok(None);
    };
    let path =
        tauri::async_runtime::spawn_blocking(move || sd.save_image_to(&args.id, args.index, &path))
            .await
            .map_err(|e| IpcError::new(ipc::ErrorCode::Internal, format!("saving: {e}")))??;
    Ok(Some(SavedImage { path: path.display().to_string() }))
}

/// Shows the saved images' folder (`<storage>/images`) in the system's file manager.
#[tauri::command]
fn open_images_folder(app: AppHandle, state: State<'_, AppState>) -> Result<(), IpcError> {
    let dir = state.runtime()?.diffusion().images_folder()?;
    open_with_system(&app, &dir.display().to_string())
}

#[tauri::command]
fn diffusion_save_image(
    state: State<'_, AppState>,
    args: SaveImageArgs,
) -> Result<SavedImage, IpcError> {
    let path = state.runtime()?.diffusion().save_image(&args.id, args.index)?;
    Ok(SavedImage { path: path.display().to_string() })
}

#[tauri::command]
fn endpoint_status(state: State<'_, AppState>) -> Result<EndpointStatus, IpcError> {
    Ok(state.runtime()?.endpoint().status())
}

#[tauri::command]
async fn endpoint_set(
    state: State<'_, AppState>,
    args: EndpointSettings,
) -> Result<EndpointStatus, IpcError> {
    Ok(state.runtime()?.endpoint().set(args).await?)
}

#[tauri::command]
fn orchestrator_status(state: State<'_, AppState>) -> Result<OrchestratorStatus, IpcError> {
    Ok(state.runtime()?.orchestrator().status())
}

#[tauri::command]
async fn orchestrator_set(
    state: State<'_, AppState>,
    args: OrchestratorSettings,
) -> Result<OrchestratorStatus, IpcError> {
    Ok(state.runtime()?.orchestrator().set_settings(args).await?)
}

/// Whether a job for this request would pause the LLM now (`None`: the diffusion server is not
/// running, so there is no model to price).
#[tauri::command]
fn orchestrator_check(
    state: State<'_, AppState>,
    args: ImageRequest,
) -> Result<Option<OffloadDecision>, IpcError> {
    let rt = state.runtime()?;
    match rt.diffusion().would_need_offload(&args) {
        Err(runtime::RuntimeError::ServerNotRunning) => Ok(None),
        other => Ok(other?),
    }
}

#[tauri::command]
async fn orchestrator_reload(state: State<'_, AppState>) -> Result<(), IpcError> {
    Ok(state.runtime()?.orchestrator().reload_now().await?)
}

#[tauri::command]
fn orchestrator_keep_stopped(state: State<'_, AppState>) -> Result<(), IpcError> {
    Ok(state.runtime()?.orchestrator().keep_stopped()?)
}
