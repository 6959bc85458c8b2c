//! System Info: CPU, memory, every GPU and what this machine can run, live.

use crate::api;
use crate::components::bar::UsageBar;
use crate::components::card::Card;
use crate::components::error_box::ErrorBox;
use crate::feeds::{on_screen, LiveMemory, SystemChanged};
use ipc::format::bytes;
use ipc::system::{GpuInfo, Recommendations, SystemInfo, VramInfo};
use ipc::IpcError;
use leptos::prelude::*;
use leptos::task::spawn_local;

#[component]
pub fn SystemTab() -> impl IntoView {
    let info = RwSignal::new(None::<Result<SystemInfo, IpcError>>);
    // The cards are made from `shape` (rebuilt only when more than live figures changed); the
    // live figures are read from `live` in place.
    let shape = Memo::new(move |_| {
        info.with(|i| i.as_ref().map(|r| r.as_ref().map(shape_of).map_err(Clone::clone)))
    });
    let live = Memo::new(move |_| info.with(|i| i.as_ref().and_then(|r| r.as_ref().ok()).cloned()));
    // `busy` (the spinner, Refresh disabled) is for a refresh the user asked for; a background
    // poll changes nothing on screen but the figures (each change is a repaint at rest).
    let busy = RwSignal::new(false);
    let in_flight = StoredValue::new(false);
    let load = move |asked: bool| {
        if in_flight.get_value() {
            return;
        }
        in_flight.set_value(true);
        if asked {
            busy.set(true);
        }
        spawn_local(async move {
            let new = api::system_info().await;
            if info.with_untracked(|i| i.as_ref() != Some(&new)) {
                info.set(Some(new));
            }
            in_flight.set_value(false);
            if asked {
                busy.set(false);
            }
        });
    };
    let refresh = move || load(true);
    // Read when the tab comes on screen, and again while it is shown whenever a server starts
    // or stops or the app announces a visible change of memory; no timer.
    let changed = expect_context::<SystemChanged>().0;
    let live_memory = expect_context::<LiveMemory>().0;
    let on = on_screen("system");
    Effect::new(move |_| {
        changed.track();
        live_memory.track();
        if on.get() {
            load(false);
        }
    });

    view! {
        <div class="toolbar">
            <button id="system-refresh" class="btn" on:click=move |_| refresh() disabled=move || busy.get()>
                "Refresh"
            </button>
            <span class="muted small">"Live: a change in memory or VRAM shows within 2 s."</span>
            {move || busy.get().then(|| view! { <span class="spinner" aria-label="Detecting"></span> })}
        </div>
        {move || match shape.get() {
            None => view! {
                <div class="card loading" id="system-loading">
                    <span class="spinner"></span>" Detecting hardware…"
                </div>
            }
            .into_any(),
            Some(Err(e)) => view! { <ErrorBox error=e on_retry=Callback::new(move |_| refresh()) /> }
                .into_any(),
            Some(Ok(i)) => view! { <SystemCards info=i live=live /> }.into_any(),
        }}
    }
}

/// What the cards are made of: everything but the live figures (memory in use, VRAM in use), so
/// that a poll that changes only those changes text in place instead of making the cards again.
fn shape_of(info: &SystemInfo) -> SystemInfo {
    let mut s = info.clone();
    s.memory.available_bytes = 0;
    for g in &mut s.gpus {
        if let Some(v) = g.vram.as_mut() {
            v.used_bytes = 0;
            v.free_bytes = 0;
        }
    }
    s
}

#[component]
fn SystemCards(info: SystemInfo, live: Memo<Option<SystemInfo>>) -> impl IntoView {
    let SystemInfo { cpu, memory: _, gpus, recommendations } = info;
    let cores = match cpu.physical_cores {
        Some(p) => format!("{p} physical / {} logical", cpu.logical_cores),
        None => format!("{} logical", cpu.logical_cores),
    };
    view! {
        <div class="grid">
            <Card title="CPU">
                <dl class="stats">
                    <dt>"Model"</dt><dd id="cpu-model">{cpu.model}</dd>
                    <dt>"Cores"</dt>
                    <dd id="cpu-cores" data-logical=cpu.logical_cores.to_string()>{cores}</dd>
                    <dt>"Architecture"</dt><dd id="cpu-arch">{cpu.arch}</dd>
                </dl>
            </Card>
            <MemoryCard live=live />
        </div>
        <div class="grid" id="gpu-list">
            {if gpus.is_empty() {
                view! {
                    <Card title="GPU">
                        <p id="no-gpu" class="no-gpu">"No GPU detected — models will run on the CPU."</p>
                    </Card>
                }
                .into_any()
            } else {
                gpus.into_iter()
                    .enumerate()
                    .map(|(i, g)| {
                        let vram = Signal::derive(move || {
                            live.with(|l| l.as_ref().and_then(|l| l.gpus.get(i)).and_then(|g| g.vram))
                        });
                        view! { <GpuCard gpu=g vram=vram /> }
                    })
                    .collect_view()
                    .into_any()
            }}
        </div>
        <RecommendationsCard r=recommendations />
    }
}

#[component]
fn MemoryCard(live: Memo<Option<SystemInfo>>) -> impl IntoView {
    let memory = move || live.with(|l| l.as_ref().map(|l| l.memory).unwrap_or_default());
    let total = Signal::derive(move || memory().total_bytes);
    let used = Signal::derive(move || memory().used_bytes());
    let available = move || memory().available_bytes;
    view! {
        <Card title="Memory">
            <dl class="stats">
                <dt>"Total"</dt>
                <dd id="mem-total" data-bytes=move || total.get().to_string()>{move || bytes(total.get())}</dd>
                <dt>"Used"</dt><dd id="mem-used">{move || bytes(used.get())}</dd>
                <dt>"Available"</dt>
                <dd id="mem-available" data-bytes=move || available().to_string()>
                    {move || bytes(available())}
                </dd>
            </dl>
            <UsageBar
                used=used
                total=total
                label=Signal::derive(move || format!("{} used of {}", bytes(used.get()), bytes(total.get())))
            />
        </Card>
    }
}

#[component]
fn GpuCard(gpu: GpuInfo, vram: Signal<Option<VramInfo>>) -> impl IntoView {
    let figures = move || vram.get().unwrap_or_default();
    let bar = gpu.vram.is_some().then(|| {
        view! {
            <UsageBar
                used=Signal::derive(move || figures().used_bytes)
                total=Signal::derive(move || figures().total_bytes)
                label=Signal::derive(move || {
                    let v = figures();
                    format!("{} used, {} free of {}", bytes(v.used_bytes), bytes(v.free_bytes), bytes(v.total_bytes))
                })
            />
        }
    });
    let no_vram = gpu.vram.is_none().then(|| {
        let why = if gpu.unified_memory {
            "Shares system memory with the CPU."
        } else {
            "This driver reports no VRAM figures."
        };
        view! { <p class="muted small">{why}</p> }
    });
    view! {
        <div class="card gpu-card" data-gpu-id=gpu.id.clone()>
            <h3 class="card-title">
                {gpu.name.clone()}
                <span class="badge">{gpu.vendor.label()}</span>
                <span class="badge accent">{gpu.backend.label()}</span>
            </h3>
            {bar}
            {no_vram}
            <dl class="stats">
                {gpu.driver_version.map(|d| view! { <dt>"Driver"</dt><dd>{d}</dd> })}
                {gpu.compute_capability.map(|c| view! { <dt>"Compute capability"</dt><dd>{c}</dd> })}
                {gpu.pci_address.map(|p| view! { <dt>"PCI"</dt><dd>{p}</dd> })}
            </dl>
        </div>
    }
}

#[component]
fn RecommendationsCard(r: Recommendations) -> impl IntoView {
    let gpu_fit = match r.max_model_gpu {
        Some(f) => format!("{} ({} model file)", f.label, bytes(f.bytes)),
        None => "no GPU to load a model onto".to_owned(),
    };
    view! {
        <Card title="Recommendations">
            <dl class="stats">
                <dt>"Backend"</dt><dd id="rec-backend">{r.backend.label()}</dd>
                <dt>"GPU acceleration"</dt>
                <dd>{if r.gpu_acceleration { "available" } else { "not available" }}</dd>
                <dt>"Threads"</dt><dd id="rec-threads">{r.threads}</dd>
                <dt>"Largest model on the GPU"</dt><dd id="rec-gpu-fit">{gpu_fit}</dd>
                <dt>"Largest model in RAM"</dt>
                <dd id="rec-ram-fit">
                    {format!("{} ({} model file)", r.max_model_ram.label, bytes(r.max_model_ram.bytes))}
                </dd>
            </dl>
            <p class="muted small">
                "Sizes leave room for the context (about a fifth more) and for the system."
            </p>
        </Card>
    }
}
