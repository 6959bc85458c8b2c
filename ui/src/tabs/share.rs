//! "Share this computer" (#18): lend this computer's devices to another machine's llama-server
//! through llama.cpp's RPC worker. 127.0.0.1 unless the user confirms another address (the
//! protocol has no authentication); the tensor cache under a cap; the worker's state, what it
//! lends and its log.

use crate::api;
use crate::components::card::Card;
use crate::components::error_box::ErrorBox;
use crate::components::log_card::{preload, server_status, LogCard};
use crate::components::num;
use crate::feeds::RpcWorkerFeed;
use ipc::event::ServerKind;
use ipc::format::bytes;
use ipc::rpc::{ShareArgs, ShareStatus, DEFAULT_CACHE_CAP_GIB, DEFAULT_PORT};
use ipc::IpcError;
use leptos::prelude::*;
use leptos::task::spawn_local;

#[component]
pub fn ShareCard() -> impl IntoView {
    let feed = expect_context::<RpcWorkerFeed>();
    let status = RwSignal::new(None::<ShareStatus>);
    let error = RwSignal::new(None::<IpcError>);
    let busy = RwSignal::new(false);
    let host = RwSignal::new("127.0.0.1".to_owned());
    let port = RwSignal::new(String::new());
    let cap = RwSignal::new(String::new());
    let exposed_ok = RwSignal::new(false);
    // Devices ticked to lend; none: every GPU, else the CPU (llama.cpp's worker's own choice).
    let chosen = RwSignal::new(Vec::<String>::new());
    let _read_again = server_status(feed.ticks, status, error, api::rpc_share_status);
    preload(feed.lines, api::rpc_share_logs());
    let exposed = move || host.with(|h| ipc::rpc::exposes(h));

    let start = move |_| {
        let args = ShareArgs {
            host: host.get_untracked(),
            port: num(&port.get_untracked()),
            devices: chosen.get_untracked(),
            cache_cap_gib: num(&cap.get_untracked()),
            exposed_ok: exposed_ok.get_untracked(),
        };
        busy.set(true);
        spawn_local(async move {
            match api::rpc_share_start(args).await {
                Ok(s) => {
                    error.set(None);
                    status.set(Some(s));
                }
                Err(e) => error.set(Some(e)),
            }
            busy.set(false);
        });
    };
    let stop = move |_| {
        busy.set(true);
        spawn_local(async move {
            if let Ok(s) = api::rpc_share_stop().await {
                status.set(Some(s));
            }
            busy.set(false);
        });
    };
    let running = move || status.with(|s| s.as_ref().is_some_and(|s| s.running));

    view! {
        <Card title="Share this computer (RPC worker)">
            <p class="small muted">
                "Lend this computer's memory to a model that runs on another computer's LLM server (llama.cpp's RPC worker, from the same build). There, add this computer's address and port to its RPC workers."
            </p>
            <div class="form-grid">
                <label class="field"><span>"Listen on"</span>
                    <input id="share-host" type="text" prop:value=host on:input=move |ev| host.set(event_target_value(&ev)) />
                </label>
                <label class="field"><span>"Port"</span>
                    <input id="share-port" type="text" placeholder=DEFAULT_PORT.to_string() prop:value=port on:input=move |ev| port.set(event_target_value(&ev)) />
                </label>
                <label class="field"><span>"Tensor cache cap (GiB, 0: none)"</span>
                    <input id="share-cache-cap" type="text" placeholder=DEFAULT_CACHE_CAP_GIB.to_string() prop:value=cap on:input=move |ev| cap.set(event_target_value(&ev)) />
                </label>
            </div>
            <div class="field" id="share-devices">
                <span>"Devices to lend (none ticked: every GPU, else the processor)"</span>
                <For each=move || status.with(|s| s.as_ref().map(|s| s.lendable.clone()).unwrap_or_default())
                     key=|d| d.name.clone() let:d>
                    {
                        let name = d.name.clone();
                        let ticked = name.clone();
                        view! {
                            <label class="check">
                                <input type="checkbox" data-device=d.name.clone()
                                    prop:checked=move || chosen.with(|c| c.contains(&ticked))
                                    on:change=move |ev| {
                                        let on = event_target_checked(&ev);
                                        chosen.update(|c| {
                                            c.retain(|x| *x != name);
                                            if on { c.push(name.clone()); }
                                        });
                                    } />
                                {format!(" {} ({})", d.name, d.description)}
                            </label>
                        }
                    }
                </For>
            </div>
            <Show when=exposed>
                <label class="check warn-text">
                    <input id="share-exposed-ok" type="checkbox" prop:checked=exposed_ok on:change=move |ev| exposed_ok.set(event_target_checked(&ev)) />
                    " I understand: the RPC protocol has no authentication and no encryption; anyone who can reach this address can use this computer. This is a trusted network."
                </label>
            </Show>
            <div class="toolbar">
                <button id="share-start" class="btn btn-primary" disabled=move || busy.get() || running() on:click=start>"Share"</button>
                <button id="share-stop" class="btn" disabled=move || busy.get() || !running() on:click=stop>"Stop sharing"</button>
            </div>
            {move || status.get().filter(|s| s.running).map(|s| view! {
                <p id="share-status" class="small">
                    {format!("Lending on {}: ", s.address.clone().unwrap_or_default())}
                    {s.probe.as_ref().map(|p| p.detail()).unwrap_or_default()}
                </p>
            })}
            {move || status.get().map(|s| view! {
                <p id="share-cache" class="small muted">
                    {format!("Tensor cache: {} of {}", bytes(s.cache_bytes), bytes(s.cache_cap_bytes))}
                    {(s.trimmed.0 > 0).then(|| format!("; {} old files ({}) removed to stay under it", s.trimmed.0, bytes(s.trimmed.1)))}
                </p>
            })}
            {move || error.get().map(|e| view! { <ErrorBox error=e /> })}
        </Card>
        <LogCard title="RPC worker log" list_id="share-log" lines=feed.lines server=ServerKind::RpcWorker />
    }
}
