use crate::api;
use crate::components::error_box::ErrorBox;
use ipc::event::LogLevel;
use ipc::{AppInfo, AppLogView, IpcError};
use leptos::prelude::*;
use leptos::task::spawn_local;

/// Version, platform and storage folder, from the `app_info` command.
#[component]
pub fn Footer() -> impl IntoView {
    let info = RwSignal::new(None::<Result<AppInfo, IpcError>>);
    let open_error = RwSignal::new(None::<IpcError>);
    let load = move || spawn_local(async move { info.set(Some(api::app_info().await)) });
    load();
    let open_folder =
        move |_| spawn_local(async move { open_error.set(api::open_storage_folder().await.err()) });
    // The app's own log: its level, and its folder for a bug report.
    let log = RwSignal::new(None::<AppLogView>);
    spawn_local(async move { log.set(api::app_log().await.ok()) });
    let set_level = move |ev: leptos::ev::Event| {
        let level = match event_target_value(&ev).as_str() {
            "debug" => LogLevel::Debug,
            "warn" => LogLevel::Warn,
            "error" => LogLevel::Error,
            _ => LogLevel::Info,
        };
        spawn_local(async move {
            match api::app_log_set(level).await {
                Ok(v) => log.set(Some(v)),
                Err(e) => open_error.set(Some(e)),
            }
        });
    };
    let open_logs =
        move |_| spawn_local(async move { open_error.set(api::open_logs_folder().await.err()) });
    let level_name = move || {
        log.with(|l| match l.as_ref().map(|l| l.level) {
            Some(LogLevel::Debug) => "debug",
            Some(LogLevel::Warn) => "warn",
            Some(LogLevel::Error) => "error",
            _ => "info",
        })
    };

    view! {
        <footer id="app-footer" class="app-footer">
            {move || match info.get() {
                None => view! { <span class="muted">"Connecting to the app…"</span> }.into_any(),
                Some(Ok(i)) => {
                    view! {
                        <span id="app-version">{format!("{} v{}", i.name, i.version)}</span>
                        <span class="sep">"·"</span>
                        <span id="app-platform">{i.platform.label()}</span>
                        <span class="sep">"·"</span>
                        <span class="muted">"Storage:"</span>
                        <code id="storage-root" title="Where models, runtimes and logs are kept">
                            {i.storage_root.clone()}
                        </code>
                        <button class="btn btn-small" on:click=open_folder>
                            "Open folder"
                        </button>
                        <span class="sep">"·"</span>
                        <label class="muted" title=move || log.with(|l| l.as_ref().map(|l| format!("The app's own log: {}", l.path)).unwrap_or_default())>
                            "App log "
                            <select id="app-log-level" prop:value=level_name on:change=set_level>
                                <option value="debug">"debug"</option>
                                <option value="info">"info"</option>
                                <option value="warn">"warn"</option>
                                <option value="error">"error"</option>
                            </select>
                        </label>
                        <button id="open-logs" class="btn btn-small" on:click=open_logs>
                            "Open logs"
                        </button>
                    }
                        .into_any()
                }
                Some(Err(e)) => {
                    view! { <ErrorBox error=e on_retry=Callback::new(move |_| load()) /> }
                        .into_any()
                }
            }}
            {move || open_error.get().map(|e| view! { <ErrorBox error=e /> })}
        </footer>
    }
}
