//! The Resource Monitor: live memory and VRAM (every 2 s), charts of the last 10 minutes with
//! marks where the LLM was paused and came back and where image jobs ran, both servers side by
//! side, the orchestration card (mode, margin, the last decision and its numbers, the saved LLM
//! state while paused), and the event log.

use crate::api;
use crate::components::bar::UsageBar;
use crate::components::card::Card;
use crate::components::error_box::ErrorBox;
use crate::components::{local_date, local_time};
use crate::feeds::{
    every_while_shown, on_screen, DiffusionFeed, EventLog, LiveMemory, LlmFeed, Marker, MarkerKind,
    Timeline, HISTORY_MS,
};
use ipc::diffusion::DiffusionStatus;
use ipc::format::bytes;
use ipc::llm::LlmStatus;
use ipc::orchestrator::{OffloadMode, OrchestratorPhase, OrchestratorSettings, OrchestratorStatus};
use ipc::system::MemoryNow;
use ipc::IpcError;
use leptos::prelude::*;
use leptos::task::spawn_local;
use std::time::Duration;

/// How often the charts' time axis moves on (seconds): short spans, 10 minutes.
const CLOCK_SHORT: u64 = 2;
const CLOCK_LONG: u64 = 5;

/// One reading of the memory poll.
#[derive(Clone, Debug, PartialEq)]
struct Sample {
    at_ms: u64,
    ram_used: u64,
    ram_total: u64,
    /// (id, used, total) per GPU.
    vram: Vec<(String, u64, u64)>,
}

fn now_ms() -> u64 {
    js_sys::Date::now() as u64
}

impl Sample {
    fn of(at_ms: u64, m: &MemoryNow) -> Self {
        Self {
            at_ms,
            ram_used: m.memory.total_bytes.saturating_sub(m.memory.available_bytes),
            ram_total: m.memory.total_bytes,
            vram: m
                .gpus
                .iter()
                .map(|g| (g.id.clone(), g.vram.used_bytes, g.vram.total_bytes))
                .collect(),
        }
    }
}

#[component]
pub fn MonitorTab() -> impl IntoView {
    let current = RwSignal::new(None::<Result<MemoryNow, IpcError>>);
    let history = RwSignal::new(Vec::<Sample>::new());
    let gpu_names = RwSignal::new(Vec::<(String, String)>::new());
    spawn_local(async move {
        if let Ok(info) = api::system_info().await {
            gpu_names.set(info.gpus.into_iter().map(|g| (g.id, g.name)).collect());
        }
    });
    // Nothing is polled. When the tab comes on screen it reads the figures and the past (the
    // runtime's own sampler keeps the last 10 minutes); while it is shown, the app announces
    // each visible change of memory (`LiveMemory`), and a clock moves the charts' time axis on.
    let on = on_screen("monitor");
    Effect::new(move |_| {
        if !on.get() {
            return;
        }
        spawn_local(async move {
            let m = api::memory_now().await;
            current.set(Some(m));
            if let Ok(past) = api::memory_history().await {
                history.set(past.iter().map(|p| Sample::of(p.at_ms, &p.now)).collect());
            }
        });
    });
    let live = expect_context::<LiveMemory>().0;
    Effect::new(move |_| {
        let Some(sample) = live.get() else { return };
        let s = Sample::of(sample.at_ms, &sample.now);
        history.update(|h| {
            if h.last().is_none_or(|l| l.at_ms < s.at_ms) {
                h.push(s);
            }
            let cutoff = now_ms().saturating_sub(HISTORY_MS);
            h.retain(|x| x.at_ms >= cutoff);
        });
        current.set(Some(Ok(sample.now)));
    });
    let span = RwSignal::new(HISTORY_MS);
    // The time axis moves on by itself: every 2 s on the short spans, every 5 s on 10 minutes
    // (under 1 % of the chart's width).
    let clock = RwSignal::new(0u64);
    let tick = Signal::derive(move || {
        Duration::from_secs(if span.get() <= 120_000 { CLOCK_SHORT } else { CLOCK_LONG })
    });
    every_while_shown("monitor", tick, move || clock.update(|n| *n += 1));
    // The card's structure (which GPUs, or an error) apart from its figures.
    let shape = Memo::new(move |_| {
        current.with(|c| {
            c.as_ref().map(|r| {
                r.as_ref()
                    .map(|m| m.gpus.iter().map(|g| g.id.clone()).collect::<Vec<_>>())
                    .map_err(Clone::clone)
            })
        })
    });
    let now =
        Memo::new(move |_| current.with(|c| c.as_ref().and_then(|r| r.as_ref().ok()).cloned()));
    let name_of = move |id: &str| {
        gpu_names
            .with(|n| n.iter().find(|(i, _)| i == id).map(|(_, n)| n.clone()))
            .unwrap_or_else(|| id.to_owned())
    };

    view! {
        <div class="grid">
            <Card title="Memory now">
                {move || match shape.get() {
                    None => view! { <p class="muted"><span class="spinner"></span>" Reading…"</p> }.into_any(),
                    Some(Err(e)) => view! { <ErrorBox error=e /> }.into_any(),
                    Some(Ok(ids)) => {
                        // Made once per set of GPUs; each poll changes the figures in place.
                        let memory = move || now.with(|m| m.as_ref().map(|m| m.memory).unwrap_or_default());
                        let total = Signal::derive(move || memory().total_bytes);
                        let used = Signal::derive(move || memory().used_bytes());
                        view! {
                            <dl class="stats" id="monitor-ram">
                                <dt>"Total"</dt><dd>{move || bytes(total.get())}</dd>
                                <dt>"Used"</dt><dd>{move || bytes(used.get())}</dd>
                                <dt>"Available"</dt><dd id="monitor-ram-available">{move || bytes(memory().available_bytes)}</dd>
                            </dl>
                            <UsageBar used=used total=total label=Signal::derive(move || format!("RAM {} of {}", bytes(used.get()), bytes(total.get()))) />
                            {if ids.is_empty() {
                                view! { <p class="muted small" id="monitor-no-gpu">"No GPU with live VRAM figures."</p> }.into_any()
                            } else {
                                ids.into_iter().map(|id| {
                                    let vram = {
                                        let id = id.clone();
                                        move || now.with(|m| m.as_ref().and_then(|m| m.gpus.iter().find(|g| g.id == id)).map(|g| g.vram).unwrap_or_default())
                                    };
                                    let (v1, v2) = (vram.clone(), vram.clone());
                                    let label = Signal::derive(move || {
                                        let v = vram();
                                        format!("{}: VRAM {} of {}", name_of(&id), bytes(v.used_bytes), bytes(v.total_bytes))
                                    });
                                    view! { <UsageBar used=Signal::derive(move || v1().used_bytes) total=Signal::derive(move || v2().total_bytes) label=label /> }
                                }).collect_view().into_any()
                            }}
                            <p class="muted small">"A change shows within 2 s."</p>
                        }.into_any()
                    }
                }}
            </Card>
            <ServersCard />
        </div>
        <Card title="Memory over time">
            <div class="toolbar">
                <label class="field inline"><span>"Show the last"</span>
                    <select id="chart-span" prop:value=move || span.get().to_string() on:change=move |ev| span.set(event_target_value(&ev).parse().unwrap_or(HISTORY_MS))>
                        <option value=HISTORY_MS.to_string()>"10 minutes"</option>
                        <option value="120000">"2 minutes"</option>
                        <option value="60000">"1 minute"</option>
                    </select>
                </label>
            </div>
            <Chart id="chart-ram" title="RAM".to_owned() history=history span=span clock=clock pick=Callback::new(|s: Sample| Some((s.ram_used, s.ram_total))) />
            {move || {
                let ids: Vec<String> = history.with(|h| h.last().map(|s| s.vram.iter().map(|v| v.0.clone()).collect()).unwrap_or_default());
                ids.into_iter().enumerate().map(|(i, id)| {
                    let pick_id = id.clone();
                    view! {
                        <Chart id=format!("chart-vram-{i}") title=format!("VRAM · {}", name_of(&id)) history=history span=span clock=clock
                            pick=Callback::new(move |s: Sample| s.vram.iter().find(|v| v.0 == pick_id).map(|v| (v.1, v.2))) />
                    }
                }).collect_view()
            }}
            <p class="legend small">
                <span class="swatch job"></span>" image job  "
                <span class="swatch paused"></span>" LLM paused  "
                <span class="swatch back"></span>" LLM back  "
                <span class="swatch failed"></span>" reload failed"
            </p>
        </Card>
        <OrchestrationCard />
        <EventLogCard />
    }
}

/// A line chart of used / total over the last 10 minutes, with the timeline's marks.
#[component]
fn Chart(
    #[prop(into)] id: String,
    title: String,
    history: RwSignal<Vec<Sample>>,
    /// How far back it shows, in ms.
    span: RwSignal<u64>,
    /// Ticks while the chart is on screen: "now" moves on.
    clock: RwSignal<u64>,
    pick: Callback<Sample, Option<(u64, u64)>>,
) -> impl IntoView {
    const W: f64 = 600.0;
    const H: f64 = 120.0;
    let timeline = expect_context::<Timeline>().0;
    let view_box = format!("0 0 {W} {H}");
    let title2 = title.clone();
    // The newest (used, total): the caption and the y axis follow it; the axis only when the
    // total changes (its ticks are made from it).
    let last = Memo::new(move |_| history.with(|h| h.last().cloned()).and_then(|s| pick.run(s)));
    let total = Memo::new(move |_| last.get().map_or(0, |(_, t)| t));
    // The time window shown: it moves with each new reading.
    let frame = Memo::new(move |_| {
        clock.track();
        let window = span.get().max(1);
        let end = now_ms().max(history.with(|h| h.last().map_or(0, |s| s.at_ms)));
        (end.saturating_sub(window), end, window)
    });
    let x = move |t: u64| {
        let (start, _, window) = frame.get();
        (t.saturating_sub(start)) as f64 / window as f64 * W
    };
    // Only the line's points change with a reading; the line itself is made once.
    let points = move || {
        let start = frame.get().0;
        history.with(|h| {
            let mut out = String::with_capacity(h.len() * 12);
            for (at, u, t) in h
                .iter()
                .filter(|s| s.at_ms >= start)
                .filter_map(|s| pick.run(s.clone()).map(|(u, t)| (s.at_ms, u, t)))
            {
                let y = H - ipc::format::percent(u, t) / 100.0 * (H - 4.0) - 2.0;
                if !out.is_empty() {
                    out.push(' ');
                }
                out.push_str(&format!("{:.1},{:.1}", x(at), y));
            }
            // No announcement since the last reading means no visible change: the line goes on
            // level to now.
            if let Some(y) = out.rsplit(',').next().map(str::to_owned) {
                out.push_str(&format!(" {W:.1},{y}"));
            }
            out
        })
    };
    // Image jobs as bands from their start to their end (none: nothing is made).
    let bands = move || {
        let (start, end, _) = frame.get();
        let marks = timeline.get();
        let mut bands = Vec::new();
        let mut open: Option<u64> = None;
        for m in &marks {
            match m.kind {
                MarkerKind::JobStart => open = Some(m.at_ms),
                MarkerKind::JobEnd => bands.push((open.take().unwrap_or(start), m.at_ms)),
                _ => {}
            }
        }
        if let Some(s) = open {
            bands.push((s, end));
        }
        bands.into_iter().filter(|(_, b)| *b >= start).map(|(a, b)| {
            let (x0, x1) = (x(a.max(start)), x(b));
            view! { <rect class="band-job" x=format!("{x0:.1}") y="0" width=format!("{:.1}", (x1 - x0).max(2.0)) height=format!("{H}") /> }
        }).collect_view()
    };
    let marks = move || {
        let start = frame.get().0;
        timeline.get().into_iter().filter(|m: &Marker| m.at_ms >= start && !matches!(m.kind, MarkerKind::JobStart | MarkerKind::JobEnd)).map(|m| {
            let (class, label) = match m.kind {
                MarkerKind::LlmPaused => ("marker marker-offload", "LLM paused"),
                MarkerKind::LlmBack => ("marker marker-reload", "LLM back"),
                _ => ("marker marker-failed", "reload failed"),
            };
            let xm = x(m.at_ms);
            view! {
                <g class=class>
                    <line x1=format!("{xm:.1}") x2=format!("{xm:.1}") y1="0" y2=format!("{H}") />
                    <title>{format!("{label} at {}", local_time(m.at_ms))}</title>
                </g>
            }
        }).collect_view()
    };
    view! {
        <figure class="chart" id=id>
            <figcaption class="small">{move || match last.get() {
                Some((used, total)) => format!("{title2}: {} of {} ({:.0}%)", bytes(used), bytes(total), ipc::format::percent(used, total)),
                None => title2.clone(),
            }}</figcaption>
            <div class="chart-body">
            <div class="axis-y small">{move || {
                ipc::format::memory_ticks(total.get()).into_iter().rev().map(|(_, label)| view! { <span>{label}</span> }).collect_view()
            }}</div>
            <svg viewBox=view_box preserveAspectRatio="none" class="chart-svg" role="img" aria-label=title>
                {bands}
                <polyline class="chart-line" points=points />
                {marks}
            </svg>
            </div>
            <div class="axis-x small">{move || {
                ipc::format::time_ticks(span.get()).into_iter().map(|(at, label)| {
                    view! { <span style=format!("left: {:.1}%", at * 100.0)>{label}</span> }
                }).collect_view()
            }}</div>
        </figure>
    }
}

#[component]
fn ServersCard() -> impl IntoView {
    let llm_feed = expect_context::<LlmFeed>();
    let sd_feed = expect_context::<DiffusionFeed>();
    let llm = RwSignal::new(None::<LlmStatus>);
    let sd = RwSignal::new(None::<DiffusionStatus>);
    let rpc_feed = expect_context::<crate::feeds::RpcWorkerFeed>();
    let share = RwSignal::new(None::<ipc::rpc::ShareStatus>);
    let refresh = move || {
        spawn_local(async move {
            // Set only when different: an unchanged status would make the rows again.
            if let Ok(s) = api::llm_status().await {
                if llm.with_untracked(|l| l.as_ref() != Some(&s)) {
                    llm.set(Some(s));
                }
            }
            if let Ok(s) = api::diffusion_status().await {
                if sd.with_untracked(|d| d.as_ref() != Some(&s)) {
                    sd.set(Some(s));
                }
            }
            if let Ok(s) = api::rpc_share_status().await {
                if share.with_untracked(|d| d.as_ref() != Some(&s)) {
                    share.set(Some(s));
                }
            }
        })
    };
    // Everything here is announced (state, busy slots, jobs): read again on each announcement
    // while the tab is on screen, and when it comes into view; no timer.
    let on = on_screen("monitor");
    Effect::new(move |_| {
        llm_feed.ticks.track();
        sd_feed.ticks.track();
        rpc_feed.ticks.track();
        if on.get() {
            refresh();
        }
    });
    let dash = || "—".to_owned();
    view! {
        <Card title="Servers">
            <table class="grid-table" id="server-grid">
                <thead><tr><th></th><th>"State"</th><th>"PID"</th><th>"Port"</th><th>"Busy"</th><th>"Memory"</th></tr></thead>
                <tbody>
                    {move || llm.get().map(|s| {
                        let measured: u64 = s.measured.iter().map(|d| d.total()).sum();
                        view! {
                            <tr id="server-llm">
                                <th>"LLM"</th>
                                <td class="server-state">{s.state.label()}</td>
                                <td>{s.pid.map(|p| p.to_string()).unwrap_or_else(dash)}</td>
                                <td>{s.port.map(|p| p.to_string()).unwrap_or_else(dash)}</td>
                                <td class="server-busy" title="Slots processing a request, from llama-server's /slots">{match (s.state, s.busy_slots, s.slots) {
                                    (ipc::event::ServerState::Running, Some(busy), Some(slots)) => format!("{busy} of {slots}"),
                                    (ipc::event::ServerState::Running, Some(busy), None) => busy.to_string(),
                                    _ => dash(),
                                }}</td>
                                <td>{if measured > 0 { format!("{} measured", bytes(measured)) } else { s.settings.map(|x| format!("{} expected", bytes(x.expected_ram_bytes + x.expected_vram_bytes))).unwrap_or_else(dash) }}</td>
                            </tr>
                        }
                    })}
                    {move || share.get().filter(|s| s.running).map(|s| view! {
                        <tr id="server-rpc-worker">
                            <th>"RPC worker"</th>
                            <td class="server-state">"Running"</td>
                            <td>{s.pid.map(|p| p.to_string()).unwrap_or_else(dash)}</td>
                            <td>{s.address.clone().and_then(|a| a.rsplit(':').next().map(str::to_owned)).unwrap_or_else(dash)}</td>
                            <td title="Lending this computer's devices to another machine's LLM server">"lending"</td>
                            <td>{format!("tensor cache {}", bytes(s.cache_bytes))}</td>
                        </tr>
                    })}
                    {move || sd.get().map(|s| view! {
                        <tr id="server-diffusion">
                            <th>"Diffusion"</th>
                            <td class="server-state">{s.state.label()}</td>
                            <td>"per image"</td>
                            <td>{s.port.map(|p| p.to_string()).unwrap_or_else(dash)}</td>
                            <td>{if s.busy { "yes" } else { "no" }}</td>
                            <td>{s.model_bytes.map(|b| format!("model {}", bytes(b))).unwrap_or_else(dash)}</td>
                        </tr>
                    })}
                </tbody>
            </table>
        </Card>
    }
}

#[component]
fn OrchestrationCard() -> impl IntoView {
    let log = expect_context::<EventLog>().0;
    let status = RwSignal::new(None::<OrchestratorStatus>);
    let error = RwSignal::new(None::<IpcError>);
    let mode = RwSignal::new("auto".to_owned());
    let margin = RwSignal::new("75".to_owned());
    let refresh = move |fill: bool| {
        spawn_local(async move {
            match api::orchestrator_status().await {
                Ok(s) => {
                    if fill {
                        mode.set(format!("{:?}", s.settings.mode).to_lowercase());
                        margin.set(format!("{:.0}", s.settings.margin * 100.0));
                    }
                    status.set(Some(s));
                }
                Err(e) => error.set(Some(e)),
            }
        })
    };
    refresh(true);
    // Every event may be an orchestration step: read the status again.
    Effect::new(move |_| {
        log.track();
        refresh(false);
    });
    let save = move |_| {
        error.set(None);
        let settings = OrchestratorSettings {
            mode: match mode.get_untracked().as_str() {
                "always" => OffloadMode::Always,
                "never" => OffloadMode::Never,
                _ => OffloadMode::Auto,
            },
            margin: margin
                .get_untracked()
                .trim()
                .trim_end_matches('%')
                .parse::<f64>()
                .unwrap_or(75.0)
                / 100.0,
        };
        spawn_local(async move {
            match api::orchestrator_set(settings).await {
                Ok(s) => status.set(Some(s)),
                Err(e) => error.set(Some(e)),
            }
        });
    };
    let retry = move |_| {
        spawn_local(async move {
            if let Err(e) = api::orchestrator_reload().await {
                error.set(Some(e));
            }
            refresh(false);
        })
    };
    let keep_stopped = move |_| {
        spawn_local(async move {
            if let Err(e) = api::orchestrator_keep_stopped().await {
                error.set(Some(e));
            }
            refresh(false);
        })
    };
    view! {
        <Card title="Orchestration">
            <div class="toolbar">
                <label class="field inline"><span>"Pause the LLM for images"</span>
                    <select id="orch-mode" prop:value=mode on:change=move |ev| mode.set(event_target_value(&ev))>
                        <option value="auto">"when both do not fit (automatic)"</option>
                        <option value="always">"always"</option>
                        <option value="never">"never"</option>
                    </select>
                </label>
                <label class="field inline"><span>"Margin %"</span>
                    <input id="orch-margin" type="text" size="4" prop:value=margin on:input=move |ev| margin.set(event_target_value(&ev)) />
                </label>
                <button id="orch-save" class="btn btn-small" on:click=save>"Save"</button>
            </div>
            <p class="muted small">"Automatic: the LLM and the image together may take this share of what would be free without the LLM (live figures)."</p>
            {move || status.get().map(|s| {
                let phase = match s.phase {
                    OrchestratorPhase::Idle => "idle",
                    OrchestratorPhase::MakingRoom => "making room (stopping the LLM)",
                    OrchestratorPhase::RunningJob => "image job running",
                    OrchestratorPhase::Reloading => "bringing the LLM back",
                };
                view! {
                    <dl class="stats" id="orch-status">
                        <dt>"Now"</dt><dd id="orch-phase">{phase}</dd>
                        <dt>"Last decision"</dt>
                        <dd id="orch-decision">{s.last_decision.clone().map(|d| format!("{} ({})", d.reason, local_date(d.at_ms))).unwrap_or_else(|| "none yet".into())}</dd>
                        {s.last_decision.clone().map(|d| view! {
                            <dt>"Numbers"</dt>
                            <dd class="small">{format!("{}: LLM {} ({}), image {}, free {}, budget {} ({:.0}%)", d.device, bytes(d.llm_bytes), if d.llm_measured { "measured" } else { "estimated" }, bytes(d.image_bytes), bytes(d.free_bytes), bytes(d.budget_bytes), d.margin * 100.0)}</dd>
                        })}
                        {s.last_cycle.map(|c| view! {
                            <dt>"Last pause"</dt>
                            <dd class="small" id="orch-cycle">{format!("stop {} ms · wait for memory {} ms · image {} ms · restart {} ms", c.stop_ms, c.wait_ms, c.job_ms, c.restart_ms)}</dd>
                        })}
                        {s.saved.clone().map(|saved| view! {
                            <dt>"Saved LLM"</dt>
                            <dd id="orch-saved">
                                {format!("{} on port {}, {} context (saved {}) ", saved.config.model_id, saved.port, saved.context_size, local_time(saved.saved_at_ms))}
                                <button id="orch-keep-stopped" class="btn btn-small" title="Do not bring the LLM back after this image"
                                    on:click=keep_stopped>"Keep it stopped"</button>
                            </dd>
                        })}
                    </dl>
                    {s.reload_error.clone().map(|e| view! {
                        <ErrorBox error=e />
                        <button id="orch-retry" class="btn" on:click=retry>"Bring the LLM back"</button>
                    })}
                }
            })}
            {move || error.get().map(|e| view! { <ErrorBox error=e /> })}
        </Card>
    }
}

#[component]
fn EventLogCard() -> impl IntoView {
    let log = expect_context::<EventLog>().0;
    view! {
        <Card title="Event log">
            <div class="toolbar">
                <span class="muted small">"The last 50 events, newest first."</span>
                <button id="event-log-clear" class="btn btn-small" on:click=move |_| log.set(Vec::new())>"Clear"</button>
            </div>
            <ul id="event-log" class="event-log">
                {move || {
                    let lines = log.get();
                    if lines.is_empty() {
                        view! { <li class="muted">"No events yet."</li> }.into_any()
                    } else {
                        lines
                            .into_iter()
                            .rev()
                            .map(|l| view! { <li class=format!("ev-{}", l.class)><span class="log-time">{local_time(l.at_ms)}</span>" "{l.text}</li> })
                            .collect_view()
                            .into_any()
                    }
                }}
            </ul>
        </Card>
    }
}
