//! The LLM Server tab: the runtime, the server's status, its settings (auto-configured by
//! default, every field overridable), Start / Stop / Restart, a streaming test chat, the API
//! card (the OpenAI-compatible endpoint), and the log.

use crate::api;
use crate::components::card::Card;
use crate::components::error_box::ErrorBox;
use crate::components::log_card::{preload, server_status, LogCard};
use crate::components::runtime_card::RuntimeCard;
use crate::components::{local_date, num};
use crate::feeds::{LlmFeed, ModelsChanged};
use crate::tabs::chat::ChatCard;
use ipc::event::{ServerKind, ServerState};
use ipc::format::bytes;
use ipc::llm::{DeviceMemory, LayerShare, LlmConfig, LlmSettings, LlmStatus, Toggle};
use ipc::models::ModelKind;
use ipc::rpc::parse_workers;
use ipc::runtimes::RuntimeKind;
use ipc::IpcError;
use leptos::prelude::*;
use leptos::task::spawn_local;

/// Each device's weights, KV cache and compute buffers: "CPU: weights 4.1 GB, KV 1.0 GB, compute
/// 300 MB".
fn parts(devices: &[DeviceMemory]) -> String {
    devices
        .iter()
        .map(|d| {
            format!(
                "{}: weights {}, KV {}, compute {}",
                d.device,
                bytes(d.model_bytes),
                bytes(d.kv_bytes),
                bytes(d.compute_bytes)
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// A number field: empty means "auto".
#[component]
pub fn LlmTab() -> impl IntoView {
    let feed = expect_context::<LlmFeed>();
    let status = RwSignal::new(None::<LlmStatus>);
    let error = RwSignal::new(None::<IpcError>);
    let busy = RwSignal::new(false);

    let refresh = server_status(feed.ticks, status, error, api::llm_status);
    preload(feed.lines, api::llm_logs());

    view! {
        <RuntimeCard kind=RuntimeKind::Llama />
        <div class="grid">
            <StatusCard status=status />
            <ConfigCard status=status error=error busy=busy refresh=Callback::new(move |_| refresh()) />
        </div>
        {move || error.get().map(|e| view! { <ErrorBox error=e /> })}
        <ChatCard status=status />
        <crate::tabs::api::ApiCard />
        <LogCard title="Server log" list_id="llm-log" lines=feed.lines server=ServerKind::Llm />
        <crate::tabs::share::ShareCard />
    }
}

#[component]
fn StatusCard(status: RwSignal<Option<LlmStatus>>) -> impl IntoView {
    view! {
        <Card title="Server">
            {move || match status.get() {
                None => view! { <p class="muted"><span class="spinner"></span>" Reading…"</p> }.into_any(),
                Some(s) => {
                    let state = s.state;
                    let measured: u64 = s.measured.iter().map(|d| d.total()).sum();
                    view! {
                        <dl class="stats" id="llm-status">
                            <dt>"State"</dt>
                            <dd>
                                <span id="llm-state" class=format!("badge state-{}", format!("{state:?}").to_lowercase())>{state.label()}</span>
                                {s.cpu_fallback.clone().map(|why| view! { " " <span id="llm-cpu-fallback" class="badge health-warn" title=why.clone()>"CPU fallback"</span> })}
                            </dd>
                            <dt>"Model"</dt><dd>{s.model_id.clone().unwrap_or_else(|| "—".into())}</dd>
                            <dt>"Port"</dt><dd id="llm-port">{s.port.map(|p| p.to_string()).unwrap_or_else(|| "—".into())}</dd>
                            {s.port_note.clone().map(|n| view! { <dt></dt><dd id="llm-port-note" class="small warn-text">{n}</dd> })}
                            {(!s.neighbours.is_empty()).then(|| view! {
                                <dt>"Also running"</dt>
                                <dd id="llm-neighbours" class="small warn-text">{format!("{} (its memory is not in the estimates)", s.neighbours.join("; "))}</dd>
                            })}
                            {(!s.workers.is_empty()).then(|| view! {
                                <dt>"RPC workers"</dt>
                                <dd>
                                    <ul id="llm-workers" class="plain-list">
                                        {s.workers.iter().map(|w| {
                                            let class = if w.is_ready() { "badge state-running" } else { "badge state-crashed" };
                                            view! {
                                                <li class="small" data-worker=w.address.clone()>
                                                    <code>{w.address.clone()}</code>" "
                                                    <span class=class>{w.label()}</span>" "
                                                    <span class="muted">{w.detail()}</span>
                                                </li>
                                            }
                                        }).collect_view()}
                                    </ul>
                                </dd>
                            })}
                            {s.settings.as_ref().filter(|x| !x.split.is_empty()).map(|x| view! {
                                <dt>"Layers"</dt>
                                <dd class="small" id="llm-split-planned">{format!("planned: {}", LayerShare::line(&x.split))}</dd>
                            })}
                            <dt>"PID"</dt><dd id="llm-pid">{s.pid.map(|p| p.to_string()).unwrap_or_else(|| "—".into())}</dd>
                            <dt>"Health"</dt>
                            <dd>{
                                let b = s.health_badge(local_date);
                                view! { <span id="llm-health" class=format!("badge health-{}", b.class)>{b.label}</span> }
                            }</dd>
                            <dt>"Load time"</dt><dd>{s.load_time_ms.map(|t| format!("{:.1} s", t as f64 / 1000.0)).unwrap_or_else(|| "—".into())}</dd>
                            <dt>"Context"</dt><dd id="llm-context">{s.effective_context.map(|c| format!("{c} tokens ({} slot(s))", s.slots.unwrap_or(1))).unwrap_or_else(|| "—".into())}</dd>
                            <dt>"Memory"</dt>
                            <dd id="llm-measured">{if s.measured.is_empty() { "—".to_owned() } else {
                                format!("{} measured: {}", bytes(measured), parts(&s.measured))
                            }}</dd>
                            <dt>"Estimate"</dt>
                            <dd id="llm-estimate">{s.settings.as_ref().filter(|x| !x.estimate.is_empty()).map(|x| {
                                let total: u64 = x.estimate.iter().map(|d| d.total()).sum();
                                format!("{} expected: {}", bytes(total), parts(&x.estimate))
                            }).unwrap_or_else(|| "—".into())}</dd>
                            <dt>"Settings"</dt><dd class="small">{s.settings.as_ref().map(|x| x.explanation.clone()).unwrap_or_else(|| "—".into())}</dd>
                        </dl>
                        {s.crash.clone().map(|c| view! {
                            <div class="error-box" id="llm-crash">
                                <div class="error-title">{format!("Crashed at {}: {}; restarts: {} of {}", local_date(c.at_ms), c.reason, s.restarts, s.max_restarts)}</div>
                                <pre class="mono small">{c.stderr_tail.join("\n")}</pre>
                            </div>
                        })}
                        {s.last_error.clone().filter(|_| state != ServerState::Running).map(|e| view! { <ErrorBox error=e /> })}
                    }.into_any()
                }
            }}
        </Card>
    }
}

#[derive(Clone, Copy)]
enum Lifecycle {
    Start,
    Stop,
    Restart,
}

#[component]
fn ConfigCard(
    status: RwSignal<Option<LlmStatus>>,
    error: RwSignal<Option<IpcError>>,
    busy: RwSignal<bool>,
    refresh: Callback<()>,
) -> impl IntoView {
    let models = RwSignal::new(Vec::<(String, String)>::new());
    let model = RwSignal::new(String::new());
    let port = RwSignal::new(String::new());
    let auto = RwSignal::new(true);
    let ctx = RwSignal::new(String::new());
    let ngl = RwSignal::new(String::new());
    let threads = RwSignal::new(String::new());
    let slots = RwSignal::new(String::new());
    let fa = RwSignal::new("auto".to_owned());
    let kv = RwSignal::new(String::new());
    let restart = RwSignal::new(true);
    let llama_fit = RwSignal::new(false);
    let cache_ram = RwSignal::new(String::new());
    let jinja = RwSignal::new(true);
    let max_restarts = RwSignal::new(String::new());
    let startup_timeout = RwSignal::new(String::new());
    let health_every = RwSignal::new(String::new());
    let min_ctx = RwSignal::new(String::new());
    let max_ctx = RwSignal::new(String::new());
    let cpu_moe = RwSignal::new(String::new());
    let strict = RwSignal::new(false);
    let workers = RwSignal::new(String::new());
    let preview = RwSignal::new(None::<Result<LlmSettings, IpcError>>);

    // Read again whenever a download finishes or a model is deleted: the choice stays while
    // its model exists, else the first one is chosen.
    let models_changed = expect_context::<ModelsChanged>().0;
    Effect::new(move |_| {
        models_changed.track();
        spawn_local(async move {
            if let Ok(list) = api::models_list().await {
                let llms: Vec<(String, String)> = list
                    .models
                    .into_iter()
                    .filter(|m| m.kind == ModelKind::Llm)
                    .map(|m| (m.id, m.name))
                    .collect();
                let current = model.get_untracked();
                if !llms.iter().any(|(id, _)| *id == current) {
                    model.set(llms.first().map(|(id, _)| id.clone()).unwrap_or_default());
                }
                models.set(llms);
            }
        });
    });

    let config = move || {
        let manual = !auto.get();
        let kv = kv.get();
        LlmConfig {
            model_id: model.get(),
            port: num(&port.get()),
            context_size: num(&ctx.get()).filter(|_| manual),
            gpu_layers: num(&ngl.get()).filter(|_| manual),
            threads: num(&threads.get()).filter(|_| manual),
            parallel: num(&slots.get()).filter(|_| manual),
            flash_attention: manual.then(|| match fa.get().as_str() {
                "on" => Toggle::On,
                "off" => Toggle::Off,
                _ => Toggle::Auto,
            }),
            cache_type_k: (manual && !kv.is_empty()).then(|| kv.clone()),
            cache_type_v: (manual && !kv.is_empty()).then(|| kv.clone()),
            llama_fit: (manual && llama_fit.get()).then_some(true),
            cache_ram_mib: num(&cache_ram.get()).filter(|_| manual),
            jinja: (manual && !jinja.get()).then_some(false),
            auto_restart: restart.get(),
            max_restarts: num(&max_restarts.get()),
            startup_timeout_secs: num(&startup_timeout.get()),
            health_interval_secs: num(&health_every.get()),
            min_context: num(&min_ctx.get()),
            max_context: num(&max_ctx.get()),
            n_cpu_moe: num(&cpu_moe.get()).filter(|_| manual),
            strict: strict.get().then_some(true),
            rpc_workers: parse_workers(&workers.get()),
            ..Default::default()
        }
    };
    // The settings a start would use, recomputed as the form changes.
    Effect::new(move |_| {
        let c = config();
        if c.model_id.is_empty() {
            return;
        }
        spawn_local(async move { preview.set(Some(api::llm_preview(c).await)) });
    });

    let run = move |what: Lifecycle| {
        busy.set(true);
        error.set(None);
        let c = config();
        spawn_local(async move {
            let out = match what {
                Lifecycle::Start => api::llm_start(c).await.map(|_| ()),
                Lifecycle::Restart => api::llm_restart().await.map(|_| ()),
                Lifecycle::Stop => api::llm_stop().await,
            };
            if let Err(e) = out {
                error.set(Some(e));
            }
            busy.set(false);
            refresh.run(());
        });
    };
    let state =
        move || status.with(|s| s.as_ref().map(|s| s.state).unwrap_or(ServerState::Stopped));
    let running = move || matches!(state(), ServerState::Running | ServerState::Starting);
    // Workers the last start found not ready, while they are still listed: offered to leave out.
    let not_ready = move || {
        let listed = parse_workers(&workers.get());
        status.with(|s| {
            let probes = s.as_ref().map(|s| s.workers.as_slice()).unwrap_or_default();
            (probes.iter())
                .filter(|p| !p.is_ready() && listed.contains(&p.address))
                .map(|p| p.address.clone())
                .collect::<Vec<_>>()
        })
    };
    let without = move |_| {
        let gone = not_ready();
        let kept: Vec<String> = parse_workers(&workers.get_untracked())
            .into_iter()
            .filter(|a| !gone.contains(a))
            .collect();
        workers.set(kept.join(", "));
        run(Lifecycle::Start);
    };

    view! {
        <Card title="Configuration">
            <label class="field">
                <span>"Model"</span>
                <select id="llm-model" on:change=move |ev| model.set(event_target_value(&ev)) prop:value=model>
                    {move || models.get().into_iter().map(|(id, name)| {
                        let selected = id == model.get_untracked();
                        view! { <option value=id.clone() selected=selected>{name}</option> }
                    }).collect_view()}
                </select>
            </label>
            {move || models.with(Vec::is_empty).then(|| view! { <p class="muted">"No LLM downloaded yet: get one in the Models tab."</p> })}
            <label class="field">
                <span>"Port (empty: 8080, or the next free one)"</span>
                <input id="llm-port-input" type="text" placeholder="auto" prop:value=port on:input=move |ev| port.set(event_target_value(&ev)) />
            </label>
            <label class="check"><input id="llm-auto" type="checkbox" prop:checked=auto on:change=move |ev| auto.set(event_target_checked(&ev)) />" Auto-configure"</label>
            <label class="check"><input type="checkbox" prop:checked=restart on:change=move |ev| restart.set(event_target_checked(&ev)) />" Restart after a crash or a hang"</label>
            <label class="check"><input id="llm-strict" type="checkbox" prop:checked=strict on:change=move |ev| strict.set(event_target_checked(&ev)) />" Strict: refuse to start beside another llama-server (ports 8080–8083)"</label>
            <label class="field">
                <span title="Other computers running llama.cpp's ggml-rpc-server (the same build as this app's) lend their memory to the model; the RPC protocol has no authentication, so use workers on a trusted network only">
                    "RPC workers (host:port, comma-separated; other machines' memory for this model)"
                </span>
                <input id="llm-rpc-workers" type="text" placeholder="none: this computer only" prop:value=workers on:change=move |ev| workers.set(event_target_value(&ev)) />
            </label>
            <div class="form-grid">
                <label class="field"><span>"Max restarts"</span><input id="llm-max-restarts" type="text" placeholder="3" prop:value=max_restarts on:input=move |ev| max_restarts.set(event_target_value(&ev)) /></label>
                <label class="field"><span>"Start-up timeout (s, quiet log)"</span><input id="llm-startup-timeout" type="text" placeholder="60" prop:value=startup_timeout on:input=move |ev| startup_timeout.set(event_target_value(&ev)) /></label>
                <label class="field"><span>"Health check every (s, 0: off)"</span><input id="llm-health-interval" type="text" placeholder="5" prop:value=health_every on:input=move |ev| health_every.set(event_target_value(&ev)) /></label>
                <label class="field"><span>"Minimum context (else refuse)"</span><input id="llm-min-context" type="text" placeholder="256" prop:value=min_ctx on:input=move |ev| min_ctx.set(event_target_value(&ev)) /></label>
                <label class="field"><span>"Maximum context"</span><input id="llm-max-context" type="text" placeholder="as trained" prop:value=max_ctx on:input=move |ev| max_ctx.set(event_target_value(&ev)) /></label>
            </div>
            <p class="small" id="llm-preview">
                {move || match preview.get() {
                    Some(Ok(s)) if !s.split.is_empty() => format!("{} — {} — layers: {}", s.explanation, parts(&s.estimate), LayerShare::line(&s.split)),
                    Some(Ok(s)) => format!("{} — {}", s.explanation, parts(&s.estimate)),
                    Some(Err(e)) => format!("{}: {}", e.title, e.message),
                    None => String::new(),
                }}
            </p>
            {move || (!auto.get()).then(|| view! {
                <div class="form-grid">
                    <label class="field"><span>"Preferred context"</span><input id="llm-context-input" type="text" placeholder="auto" prop:value=ctx on:input=move |ev| ctx.set(event_target_value(&ev)) /></label>
                    <label class="field"><span>"GPU layers"</span><input type="text" placeholder="auto" prop:value=ngl on:input=move |ev| ngl.set(event_target_value(&ev)) /></label>
                    <label class="field"><span>"MoE: expert blocks in RAM"</span><input type="text" placeholder="auto" prop:value=cpu_moe on:input=move |ev| cpu_moe.set(event_target_value(&ev)) /></label>
                    <label class="field"><span>"Threads"</span><input type="text" placeholder="auto" prop:value=threads on:input=move |ev| threads.set(event_target_value(&ev)) /></label>
                    <label class="field"><span>"Parallel slots"</span><input type="text" placeholder="1" prop:value=slots on:input=move |ev| slots.set(event_target_value(&ev)) /></label>
                    <label class="field"><span>"Flash attention"</span>
                        <select on:change=move |ev| fa.set(event_target_value(&ev)) prop:value=fa>
                            <option value="auto">"auto"</option><option value="on">"on"</option><option value="off">"off"</option>
                        </select>
                    </label>
                    <label class="field"><span>"Prompt cache (MiB, 0: off)"</span><input type="text" placeholder="8192" prop:value=cache_ram on:input=move |ev| cache_ram.set(event_target_value(&ev)) /></label>
                    <label class="check"><input type="checkbox" prop:checked=llama_fit on:change=move |ev| llama_fit.set(event_target_checked(&ev)) />" Let llama.cpp fit context and GPU layers"</label>
                    <label class="check"><input type="checkbox" prop:checked=jinja on:change=move |ev| jinja.set(event_target_checked(&ev)) />" The model's own chat template (--jinja)"</label>
                    <label class="field"><span>"KV cache type"</span>
                        <select on:change=move |ev| kv.set(event_target_value(&ev)) prop:value=kv>
                            <option value="">"auto"</option><option value="f16">"f16"</option><option value="q8_0">"q8_0"</option><option value="q4_0">"q4_0"</option>
                        </select>
                    </label>
                </div>
            })}
            <div class="toolbar">
                <button id="llm-start" class="btn btn-primary" disabled=move || busy.get() || running() || model.with(String::is_empty) on:click=move |_| run(Lifecycle::Start)>
                    {move || if state() == ServerState::Starting { "Starting…" } else { "Start" }}
                </button>
                <button id="llm-stop" class="btn" disabled=move || !running() && state() != ServerState::Crashed on:click=move |_| run(Lifecycle::Stop)>"Stop"</button>
                <button id="llm-restart" class="btn" disabled=move || busy.get() || !running() on:click=move |_| run(Lifecycle::Restart)>"Restart"</button>
                {move || {
                    let gone = not_ready();
                    (!gone.is_empty() && !running()).then(|| view! {
                        <button id="llm-start-without" class="btn" disabled=move || busy.get() on:click=without>
                            {format!("Start without {}", gone.join(", "))}
                        </button>
                    })
                }}
            </div>
        </Card>
    }
}
