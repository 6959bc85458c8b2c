//! The API card (on the LLM Server tab): the OpenAI-compatible endpoint's URL with copy buttons
//! and example `curl` lines, its settings (on/off, port, address, key, the wait for the LLM
//! after an image, idle unload), and the live log of the requests it answered.

use crate::api;
use crate::components::card::Card;
use crate::components::error_box::ErrorBox;
use crate::components::{local_date, num};
use crate::feeds::EndpointFeed;
use ipc::endpoint::{EndpointRequest, EndpointSettings, EndpointStatus};
use ipc::IpcError;
use leptos::prelude::*;
use leptos::task::spawn_local;

/// A number field: empty means "not set".
/// Example requests for `base` (an OpenAI base URL), with the key when one is set.
fn examples(base: &str, key: Option<&str>) -> Vec<(&'static str, String)> {
    let auth = key.map(|k| format!(" -H 'Authorization: Bearer {k}'")).unwrap_or_default();
    vec![
        ("List models", format!("curl{auth} {base}/models")),
        (
            "Chat",
            format!(
                "curl{auth} {base}/chat/completions -H 'Content-Type: application/json' -d '{{\"model\": \"MODEL\", \"messages\": [{{\"role\": \"user\", \"content\": \"Hello\"}}]}}'"
            ),
        ),
        (
            "Image",
            format!(
                "curl{auth} {base}/images/generations -H 'Content-Type: application/json' -d '{{\"model\": \"MODEL\", \"prompt\": \"a lighthouse at dusk\", \"size\": \"512x512\"}}'"
            ),
        ),
    ]
}

/// What a request's last column says: its tokens or images, and its note.
fn outcome(r: &EndpointRequest) -> String {
    let what = match (r.tokens, r.images) {
        (_, Some(n)) => format!("{n} image(s)"),
        (Some(t), None) => format!("{t} tokens"),
        (None, None) => String::new(),
    };
    match (&r.note, what.is_empty()) {
        (Some(n), true) => n.clone(),
        (Some(n), false) => format!("{what}; {n}"),
        (None, _) => what,
    }
}

#[component]
fn CopyButton(#[prop(into)] id: String, text: Signal<String>) -> impl IntoView {
    let said = RwSignal::new("Copy");
    view! {
        <button id=id class="btn btn-small" on:click=move |_| {
            let t = text.get_untracked();
            spawn_local(async move {
                said.set(if api::copy_text(&t).await { "Copied" } else { "Select and copy" });
            });
        }>{move || said.get()}</button>
    }
}

#[component]
pub fn ApiCard() -> impl IntoView {
    let feed = expect_context::<EndpointFeed>();
    let status = RwSignal::new(None::<EndpointStatus>);
    let error = RwSignal::new(None::<IpcError>);
    let busy = RwSignal::new(false);
    let enabled = RwSignal::new(true);
    let port = RwSignal::new(String::new());
    let host = RwSignal::new(String::new());
    let key = RwSignal::new(String::new());
    let wait = RwSignal::new(String::new());
    let idle = RwSignal::new(String::new());

    let fill = move |s: &EndpointStatus| {
        let x = &s.settings;
        enabled.set(x.enabled);
        port.set(x.port.map(|p| p.to_string()).unwrap_or_default());
        host.set(x.host.clone().unwrap_or_default());
        key.set(x.token.clone().unwrap_or_default());
        wait.set(x.wait_secs.to_string());
        idle.set(x.idle_unload_mins.map(|m| m.to_string()).unwrap_or_default());
    };
    // The status (and the log so far) once, then again whenever the endpoint opens or closes;
    // requests come by event.
    let first = StoredValue::new(true);
    Effect::new(move |_| {
        feed.ticks.track();
        spawn_local(async move {
            match api::endpoint_status().await {
                Ok(s) => {
                    if first.get_value() {
                        first.set_value(false);
                        fill(&s);
                        feed.requests.set(s.requests.clone());
                    }
                    status.set(Some(s));
                }
                Err(e) => error.set(Some(e)),
            }
        });
    });
    let save = move |_| {
        let settings = EndpointSettings {
            enabled: enabled.get_untracked(),
            port: num(&port.get_untracked()),
            host: Some(host.get_untracked().trim().to_owned()).filter(|h| !h.is_empty()),
            token: Some(key.get_untracked().trim().to_owned()).filter(|k| !k.is_empty()),
            wait_secs: num(&wait.get_untracked()).unwrap_or(ipc::endpoint::DEFAULT_WAIT_SECS),
            idle_unload_mins: num(&idle.get_untracked()),
        };
        busy.set(true);
        error.set(None);
        spawn_local(async move {
            match api::endpoint_set(settings).await {
                Ok(s) => status.set(Some(s)),
                Err(e) => error.set(Some(e)),
            }
            busy.set(false);
        });
    };
    let base = Signal::derive(move || {
        status.with(|s| s.as_ref().and_then(|s| s.base_url.clone())).unwrap_or_default()
    });

    view! {
        <Card title="API (OpenAI-compatible)">
            <p class="small muted">"Other programs (editor plugins, scripts, any OpenAI client) use every installed model through this one address: text models start or swap on demand, images go through the Diffusion server, and a chat waits while an image has the LLM paused."</p>
            {move || status.get().map(|s| match (s.running, s.base_url.clone()) {
                (true, Some(url)) => view! {
                    <div class="toolbar" id="api-address">
                        <span class="badge state-running" id="api-state">"On"</span>
                        <code id="api-url">{url}</code>
                        <CopyButton id="api-copy-url" text=base />
                    </div>
                    {s.port_note.clone().map(|n| view! { <p id="api-port-note" class="small warn-text">{n}</p> })}
                }.into_any(),
                _ => view! {
                    <div class="toolbar" id="api-address">
                        <span class="badge state-stopped" id="api-state">"Off"</span>
                        <span class="muted">{if s.settings.enabled { "Not listening (see the error below)" } else { "Turned off" }}</span>
                    </div>
                    {s.error.clone().map(|e| view! { <ErrorBox error=e /> })}
                }.into_any(),
            })}
            {move || {
                let b = base.get();
                (!b.is_empty()).then(|| {
                    let token = status.with(|s| s.as_ref().and_then(|s| s.settings.token.clone()));
                    view! {
                        <details id="api-examples">
                            <summary>"Examples"</summary>
                            {examples(&b, token.as_deref()).into_iter().enumerate().map(|(i, (what, line))| {
                                let text = Signal::derive({ let line = line.clone(); move || line.clone() });
                                view! {
                                    <div class="api-example">
                                        <span class="small">{what}</span>
                                        <pre class="mono small">{line}</pre>
                                        <CopyButton id=format!("api-copy-example-{i}") text=text />
                                    </div>
                                }
                            }).collect_view()}
                        </details>
                    }
                })
            }}
            <details id="api-settings">
                <summary>"Settings"</summary>
                <label class="check"><input id="api-enabled" type="checkbox" prop:checked=enabled on:change=move |ev| enabled.set(event_target_checked(&ev)) />" On (opens when the app starts)"</label>
                <div class="form-grid">
                    <label class="field"><span>"Port (empty: 8088, or the next free one)"</span><input id="api-port" type="text" placeholder="8088" prop:value=port on:input=move |ev| port.set(event_target_value(&ev)) /></label>
                    <label class="field"><span>"Address (empty: this computer only)"</span><input id="api-host" type="text" placeholder="127.0.0.1" prop:value=host on:input=move |ev| host.set(event_target_value(&ev)) /></label>
                    <label class="field"><span>"API key (needed for another address)"</span><input id="api-key" type="text" placeholder="none" prop:value=key on:input=move |ev| key.set(event_target_value(&ev)) /></label>
                    <label class="field"><span>"Wait for the LLM after an image (s)"</span><input id="api-wait" type="text" placeholder="120" prop:value=wait on:input=move |ev| wait.set(event_target_value(&ev)) /></label>
                    <label class="field"><span>"Stop an idle text model after (min)"</span><input id="api-idle" type="text" placeholder="never" prop:value=idle on:input=move |ev| idle.set(event_target_value(&ev)) /></label>
                </div>
                <div class="toolbar">
                    <button id="api-save" class="btn btn-primary" disabled=move || busy.get() on:click=save>"Save"</button>
                </div>
            </details>
            {move || error.get().map(|e| view! { <ErrorBox error=e /> })}
            <table class="grid-table" id="api-log">
                <thead><tr><th>"Time"</th><th>"Request"</th><th>"Model"</th><th>"Status"</th><th>"Took"</th><th></th></tr></thead>
                <tbody>
                    {move || feed.requests.with(|rs| rs.iter().rev().take(50).map(|r| {
                        let class = if r.status >= 400 { "warn-text" } else { "" };
                        view! {
                            <tr class="api-request">
                                <td class="small">{local_date(r.at_ms)}</td>
                                <td class="mono small">{r.route.clone()}</td>
                                <td>{r.model.clone().unwrap_or_else(|| "—".into())}</td>
                                <td class=class>{r.status}</td>
                                <td>{format!("{:.1} s", r.duration_ms as f64 / 1000.0)}</td>
                                <td class="small">{outcome(r)}</td>
                            </tr>
                        }
                    }).collect_view())}
                </tbody>
            </table>
            {move || feed.requests.with(Vec::is_empty).then(|| view! { <p class="muted small" id="api-log-empty">"No request yet."</p> })}
        </Card>
    }
}
