//! System Info: CPU, memory, every GPU and what this machine can run, live.

use crate::api;
use crate::components::bar::UsageBar;
use crate::components::card::Card;
use crate::components::error_box::ErrorBox;
use crate::feeds::{every_while_shown, SystemChanged};
use ipc::format::bytes;
use ipc::system::{GpuInfo, MemoryInfo, Recommendations, SystemInfo};
use ipc::IpcError;
use leptos::prelude::*;
use leptos::task::spawn_local;
use std::time::Duration;

const POLL: Duration = Duration::from_secs(5);

#[component]
pub fn SystemTab() -> impl IntoView {
    let info = RwSignal::new(None::<Result<SystemInfo, IpcError>>);
    let busy = RwSignal::new(false);
    let refresh = move || {
        if busy.get_untracked() {
            return;
        }
        busy.set(true);
        spawn_local(async move {
            info.set(Some(api::system_info().await));
            busy.set(false);
        });
    };
    // An immediate refresh whenever a server starts or stops, and live memory every 5 s while
    // this tab is on screen (and then at once when it comes back).
    let changed = expect_context::<SystemChanged>().0;
    Effect::new(move |_| {
        changed.track();
        refresh();
    });
    every_while_shown("system", POLL, refresh);

    view! {
        <div class="toolbar">
            <button id="system-refresh" class="btn" on:click=move |_| refresh() disabled=move || busy.get()>
                "Refresh"
            </button>
            <span class="muted small">"Live: memory and VRAM refresh every 5 s."</span>
            {move || busy.get().then(|| view! { <span class="spinner" aria-label="Detecting"></span> })}
        </div>
        {move || match info.get() {
            None => view! {
                <div class="card loading" id="system-loading">
                    <span class="spinner"></span>" Detecting hardware…"
                </div>
            }
            .into_any(),
            Some(Err(e)) => view! { <ErrorBox error=e on_retry=Callback::new(move |_| refresh()) /> }
                .into_any(),
            Some(Ok(i)) => view! { <SystemCards info=i /> }.into_any(),
        }}
    }
}

#[component]
fn SystemCards(info: SystemInfo) -> impl IntoView {
    let SystemInfo { cpu, memory, gpus, recommendations } = info;
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
            <MemoryCard memory=memory />
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
                gpus.into_iter().map(|g| view! { <GpuCard gpu=g /> }).collect_view().into_any()
            }}
        </div>
        <RecommendationsCard r=recommendations />
    }
}

#[component]
fn MemoryCard(memory: MemoryInfo) -> impl IntoView {
    let used = memory.used_bytes();
    view! {
        <Card title="Memory">
            <dl class="stats">
                <dt>"Total"</dt>
                <dd id="mem-total" data-bytes=memory.total_bytes.to_string()>{bytes(memory.total_bytes)}</dd>
                <dt>"Used"</dt><dd id="mem-used">{bytes(used)}</dd>
                <dt>"Available"</dt>
                <dd id="mem-available" data-bytes=memory.available_bytes.to_string()>
                    {bytes(memory.available_bytes)}
                </dd>
            </dl>
            <UsageBar
                used=used
                total=memory.total_bytes
                label=format!("{} used of {}", bytes(used), bytes(memory.total_bytes))
            />
        </Card>
    }
}

#[component]
fn GpuCard(gpu: GpuInfo) -> impl IntoView {
    let vram = gpu.vram.map(|v| {
        view! {
            <UsageBar
                used=v.used_bytes
                total=v.total_bytes
                label=format!("{} used, {} free of {}", bytes(v.used_bytes), bytes(v.free_bytes), bytes(v.total_bytes))
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
            {vram}
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
