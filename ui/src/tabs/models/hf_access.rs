//! Hugging Face access: the host (a mirror, as `HF_ENDPOINT` sets it) and a token for gated
//! models, saved by the app (readable by this user only) and shown masked.

use crate::api;
use crate::components::card::Card;
use crate::components::error_box::ErrorBox;
use ipc::models::{HfSettingsArgs, HfSettingsView, SettingOrigin};
use ipc::IpcError;
use leptos::prelude::*;
use leptos::task::spawn_local;

fn origin(o: SettingOrigin) -> &'static str {
    match o {
        SettingOrigin::Setting => "saved here",
        SettingOrigin::Environment => "from the environment",
        SettingOrigin::Default => "default",
    }
}

#[component]
pub fn HfAccess() -> impl IntoView {
    let view_sig = RwSignal::new(None::<HfSettingsView>);
    let endpoint = RwSignal::new(String::new());
    let token = RwSignal::new(String::new());
    let error = RwSignal::new(None::<IpcError>);
    let saved = RwSignal::new(false);
    let show = move |v: HfSettingsView| {
        endpoint.set(if v.endpoint_origin == SettingOrigin::Setting {
            v.endpoint.clone()
        } else {
            String::new()
        });
        view_sig.set(Some(v));
    };
    spawn_local(async move {
        match api::hf_settings().await {
            Ok(v) => show(v),
            Err(e) => error.set(Some(e)),
        }
    });
    let save = move |clear_token: bool| {
        let t = token.get_untracked();
        let args = HfSettingsArgs {
            endpoint: endpoint.get_untracked(),
            token: if clear_token {
                Some(String::new())
            } else {
                Some(t).filter(|t| !t.trim().is_empty())
            },
        };
        spawn_local(async move {
            match api::hf_settings_set(args).await {
                Ok(v) => {
                    token.set(String::new());
                    error.set(None);
                    saved.set(true);
                    show(v);
                }
                Err(e) => error.set(Some(e)),
            }
        });
    };

    view! {
        <Card title="Hugging Face access">
            <p class="muted small">
                "A mirror's address (as HF_ENDPOINT sets it) and a read token for gated models. \
                 The token is sent to this host only, never to the storage host a download is redirected to."
            </p>
            {move || view_sig.get().map(|v| view! {
                <p id="hf-current" class="small">
                    "Host: " <code>{v.endpoint.clone()}</code> {format!(" ({})", origin(v.endpoint_origin))}
                    " · Token: "
                    {match (&v.token_masked, v.token_origin) {
                        (Some(m), Some(o)) => format!("{m} ({})", origin(o)),
                        _ => "none".to_owned(),
                    }}
                </p>
                {v.problem.clone().map(|p| view! { <p class="warn-text small">{p}</p> })}
            })}
            <div class="form-grid">
                <label class="field">
                    <span>"Endpoint"</span>
                    <input id="hf-endpoint" type="text" placeholder="https://huggingface.co"
                        prop:value=move || endpoint.get()
                        on:input=move |ev| { saved.set(false); endpoint.set(event_target_value(&ev)) } />
                </label>
                <label class="field">
                    <span>"Token"</span>
                    <input id="hf-token" type="password" autocomplete="off" placeholder="hf_… (unchanged when empty)"
                        prop:value=move || token.get()
                        on:input=move |ev| { saved.set(false); token.set(event_target_value(&ev)) } />
                </label>
            </div>
            <div class="toolbar">
                <button id="hf-save" class="btn" on:click=move |_| save(false)>"Save"</button>
                <button id="hf-forget-token" class="btn"
                    disabled=move || view_sig.get().and_then(|v| v.token_origin) != Some(SettingOrigin::Setting)
                    on:click=move |_| save(true)>"Forget saved token"</button>
                <Show when=move || saved.get()><span class="muted small">"Saved"</span></Show>
            </div>
            {move || error.get().map(|e| view! { <ErrorBox error=e /> })}
        </Card>
    }
}
