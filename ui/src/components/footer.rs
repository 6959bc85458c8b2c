use crate::api;
use crate::components::error_box::ErrorBox;
use ipc::{AppInfo, IpcError};
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
