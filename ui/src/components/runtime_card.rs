//! The Runtime card of the LLM Server and Diffusion Server tabs: which build is installed and
//! what its check found, a button to install or re-check, and the live setup log with a
//! progress bar while a build downloads.

use crate::api;
use crate::components::bar::ProgressBar;
use crate::components::card::Card;
use crate::components::error_box::ErrorBox;
use crate::components::{local_date, local_time};
use crate::feeds::RuntimeFeed;
use ipc::event::LogLevel;
use ipc::format::bytes;
use ipc::runtimes::{
    BinaryProgress, ImagePath, InstalledRuntime, RuntimeKind, RuntimeStatus, SetupStage,
};
use ipc::IpcError;
use leptos::prelude::*;
use leptos::task::spawn_local;

fn level_tag(l: LogLevel) -> &'static str {
    match l {
        LogLevel::Debug => "debug",
        LogLevel::Info => "info",
        LogLevel::Warn => "warn",
        LogLevel::Error => "error",
    }
}

fn progress_view(p: BinaryProgress) -> AnyView {
    let what = match p.stage {
        SetupStage::Downloading => "Downloading",
        SetupStage::Extracting => "Unpacking",
        SetupStage::Verifying => "Verifying",
        SetupStage::Testing => "Testing",
        SetupStage::Done | SetupStage::Failed => return ().into_any(),
    };
    let variant = p.variant.map(|v| format!(" the {} build", v.label())).unwrap_or_default();
    let (pct, detail) = match (p.stage, p.total) {
        (SetupStage::Downloading, Some(t)) if t > 0 => {
            (ipc::format::percent(p.done, t), format!("{} of {}", bytes(p.done), bytes(t)))
        }
        (SetupStage::Downloading, _) => (0.0, bytes(p.done)),
        (SetupStage::Testing, Some(t)) => {
            (ipc::format::percent(p.done, t), format!("check {} of {t}", p.done))
        }
        (_, Some(t)) if t > 0 => {
            (ipc::format::percent(p.done, t), format!("{} of {t} entries", p.done))
        }
        (_, _) => (0.0, format!("{} entries", p.done)),
    };
    view! {
        <div class="runtime-progress" data-stage=format!("{:?}", p.stage).to_lowercase()>
            <ProgressBar percent=pct label=format!("{what}{variant}: {detail}") />
        </div>
    }
    .into_any()
}

fn installed_view(i: InstalledRuntime) -> AnyView {
    let devices = if i.devices.is_empty() {
        if i.generation_checked && i.runtime == RuntimeKind::Llama {
            "none (runs on the CPU)".to_owned()
        } else {
            "not probed".to_owned()
        }
    } else {
        i.devices.join(", ")
    };
    let offload = i.offloaded_layers.map(|(a, b)| format!("{a}/{b} test layers on the GPU"));
    let check = match (i.generation_checked, i.runtime, &i.images) {
        (true, RuntimeKind::Llama, _) => "starts, and generated a token from the test model",
        (true, RuntimeKind::Diffusion, Some(ImagePath::WarmServer { .. })) => {
            "starts, and its sd-server made a 64×64 image from the test model"
        }
        (true, RuntimeKind::Diffusion, _) => "starts, and made a 64×64 image from the test model",
        (false, _, _) => "starts and prints its usage",
    };
    // How an sd.cpp build makes images, as its check chose.
    let images = i.images.as_ref().map(|p| {
        view! {
            <dt>"Images"</dt>
            <dd class="runtime-images">{p.describe()}</dd>
        }
    });
    view! {
        <dl class="stats runtime-installed">
            <dt>"Version"</dt>
            <dd class="runtime-version">{i.version.clone()}</dd>
            <dt>"Build"</dt>
            <dd class="runtime-variant">{i.variant.label()}{i.custom.then_some(" (your binary)")}</dd>
            <dt>"Reports"</dt>
            <dd class="mono">{i.reported_version.clone()}</dd>
            <dt>"Devices"</dt>
            <dd class="runtime-devices">{devices}{offload.map(|o| format!(" · {o}"))}</dd>
            <dt>"Checked"</dt>
            <dd>{local_date(i.checked_at_ms)}" · "{check}</dd>
            {images}
            <dt>"Path"</dt>
            <dd class="mono">{i.path.clone()}</dd>
        </dl>
    }
    .into_any()
}

/// What a button of the card asks for.
#[derive(Clone, Copy)]
enum Action {
    /// Install, or re-check when `true`.
    Install(bool),
    UseCustom,
    ClearCustom,
}

#[component]
pub fn RuntimeCard(kind: RuntimeKind) -> impl IntoView {
    let feed = expect_context::<RuntimeFeed>();
    let status = RwSignal::new(None::<RuntimeStatus>);
    let error = RwSignal::new(None::<IpcError>);
    let running = RwSignal::new(false);
    let custom = RwSignal::new(String::new());
    let mirror = RwSignal::new(String::new());

    let refresh = move || {
        spawn_local(async move {
            match api::runtime_status(kind).await {
                Ok(s) => {
                    if mirror.get_untracked().is_empty() {
                        mirror.set(s.mirror.clone().unwrap_or_default());
                    }
                    status.set(Some(s));
                }
                Err(e) => error.set(Some(e)),
            }
        })
    };
    refresh();
    // A log line or the end of a setup for this runtime: read the status again.
    Effect::new(move |_| {
        if feed.log_tick(kind) > 0 {
            refresh();
        }
    });

    let act = move |action: Action| {
        running.set(true);
        error.set(None);
        spawn_local(async move {
            let out = match action {
                Action::Install(force) => api::runtime_install(kind, force).await,
                Action::UseCustom => {
                    let p = custom.get_untracked();
                    api::runtime_set_custom(kind, Some(p)).await
                }
                Action::ClearCustom => api::runtime_set_custom(kind, None).await,
            };
            match out {
                Ok(s) => status.set(Some(s)),
                Err(e) => error.set(Some(e)),
            }
            running.set(false);
            refresh();
        });
    };
    let save_mirror = move |_| {
        spawn_local(async move {
            let m = mirror.get_untracked();
            let m = (!m.trim().is_empty()).then_some(m);
            match api::runtime_set_mirror(m).await {
                Ok(()) => refresh(),
                Err(e) => error.set(Some(e)),
            }
        })
    };

    let busy = move || running.get() || status.with(|s| s.as_ref().is_some_and(|s| s.busy));
    let title = format!("Runtime: {}", kind.program());
    view! {
        <Card title=title>
            <div class="runtime-card" id=format!("runtime-{}", kind.dir())>
                {move || match status.get() {
                    None => view! { <p class="muted"><span class="spinner"></span>" Reading…"</p> }.into_any(),
                    Some(s) => {
                        let pinned = s.pinned_version.clone();
                        match s.installed.clone() {
                            Some(i) => installed_view(i),
                            None => view! {
                                <p class="muted runtime-missing">
                                    {format!("Not installed. This app uses {} {pinned}; Install picks the build for this machine (CUDA, then Vulkan, then CPU) and checks it.", kind.program())}
                                </p>
                            }.into_any(),
                        }
                    }
                }}
                <div class="toolbar">
                    {move || {
                        let installed = status.with(|s| s.as_ref().is_some_and(|s| s.installed.is_some()));
                        let (label, force) = if installed { ("Re-check", true) } else { ("Install", false) };
                        let cancel = move |discard: bool| {
                            spawn_local(async move {
                                if let Err(e) = api::runtime_cancel(kind, discard).await {
                                    error.set(Some(e));
                                }
                            })
                        };
                        view! {
                            <button class="btn btn-primary runtime-install" disabled=busy
                                on:click=move |_| act(Action::Install(force))>
                                {move || if busy() { "Working…" } else { label }}
                            </button>
                            <Show when=busy>
                                <button class="btn runtime-cancel" title="Stop; Install continues the download later"
                                    on:click=move |_| cancel(false)>"Cancel"</button>
                                <button class="btn runtime-cancel-discard" title="Stop and delete the partial download"
                                    on:click=move |_| cancel(true)>"Cancel and delete download"</button>
                            </Show>
                        }
                    }}
                </div>
                {move || feed.progress(kind).filter(|_| busy()).map(progress_view)}
                {move || error.get().map(|e| view! { <ErrorBox error=e /> })}
                {move || {
                    status.get().and_then(|s| s.last_error).filter(|_| error.with(Option::is_none))
                        .map(|e| view! { <ErrorBox error=e /> })
                }}
                {move || {
                    let lines = status.with(|s| s.as_ref().map(|s| s.log.clone()).unwrap_or_default());
                    (!lines.is_empty()).then(|| view! {
                        <details class="runtime-log-box" open=true>
                            <summary>"Setup log"</summary>
                            <ol class="runtime-log">
                                {lines.into_iter().map(|l| view! {
                                    <li class=format!("log-{}", level_tag(l.level))>
                                        <span class="log-time">{local_time(l.at_ms)}</span>" "{l.message}
                                    </li>
                                }).collect_view()}
                            </ol>
                        </details>
                    })
                }}
                <details class="runtime-advanced">
                    <summary>"Custom binary and mirror"</summary>
                    <label class="field">
                        <span>{format!("Use a {} already on this computer (full path)", kind.program())}</span>
                        <input class="runtime-custom-path" type="text" placeholder=format!("/usr/local/bin/{}", kind.program())
                            prop:value=custom on:input=move |ev| custom.set(event_target_value(&ev)) />
                    </label>
                    <div class="toolbar">
                        <button class="btn" disabled=busy on:click=move |_| act(Action::UseCustom)>"Check and use it"</button>
                        <button class="btn" disabled=busy on:click=move |_| act(Action::ClearCustom)>"Use the app's build"</button>
                    </div>
                    <label class="field">
                        <span>"Release mirror (a URL serving the same file names; GENAI_RELEASE_MIRROR wins)"</span>
                        <input class="runtime-mirror" type="text" placeholder="https://mirror.example/llama.cpp/"
                            prop:value=mirror on:input=move |ev| mirror.set(event_target_value(&ev)) />
                    </label>
                    <button class="btn" on:click=save_mirror>"Save mirror"</button>
                </details>
            </div>
        </Card>
    }
}
