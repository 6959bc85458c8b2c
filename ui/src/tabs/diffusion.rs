//! The Diffusion Server tab: the runtime (sd-cli), the job API's status, the model and its
//! recommended settings, the generate form, live progress through loading, steps and decoding
//! with Cancel, the finished images with Save, and the log.

use crate::api;
use crate::components::bar::ProgressBar;
use crate::components::card::Card;
use crate::components::error_box::ErrorBox;
use crate::components::log_card::{preload, server_status, LogCard};
use crate::components::runtime_card::RuntimeCard;
use crate::components::{local_time, num};
use crate::feeds::{DiffusionFeed, LlmFeed, ModelsChanged};
use ipc::diffusion::{
    preset_for, BackendInfo, BackendState, DiffusionConfig, DiffusionStatus, ImageRequest,
    JobProgress, JobStatus, JobView, Preset, UsageMode, DEFAULT_IDLE_RELEASE_SECS, DEFAULT_PORT,
    PRESETS, SAMPLERS,
};
use ipc::event::{ImageStage, ServerKind, ServerState};
use ipc::format::bytes;
use ipc::models::ModelKind;
use ipc::orchestrator::OffloadDecision;
use ipc::runtimes::RuntimeKind;
use ipc::IpcError;
use leptos::prelude::*;
use leptos::task::spawn_local;

/// Image sizes offered; "custom" opens width and height fields.
const SIZES: &[(u32, u32)] =
    &[(512, 512), (768, 768), (1024, 1024), (1024, 768), (768, 1024), (1536, 1024), (1024, 1536)];

#[component]
pub fn DiffusionTab() -> impl IntoView {
    let feed = expect_context::<DiffusionFeed>();
    let status = RwSignal::new(None::<DiffusionStatus>);
    let error = RwSignal::new(None::<IpcError>);
    let refresh = server_status(feed.ticks, status, error, api::diffusion_status);
    preload(feed.lines, api::diffusion_logs());
    // Settings the Configuration card's preset applies to the generate form.
    let form = Form::new();
    view! {
        <RuntimeCard kind=RuntimeKind::Diffusion />
        <div class="grid">
            <StatusCard status=status />
            <ConfigCard status=status error=error form=form refresh=Callback::new(move |_| refresh()) />
        </div>
        {move || error.get().map(|e| view! { <ErrorBox error=e /> })}
        <GenerateCard status=status form=form />
        <LogCard title="Diffusion log" list_id="sd-log" lines=feed.lines server=ServerKind::Diffusion />
    }
}

#[component]
fn StatusCard(status: RwSignal<Option<DiffusionStatus>>) -> impl IntoView {
    view! {
        <Card title="Server">
            {move || match status.get() {
                None => view! { <p class="muted"><span class="spinner"></span>" Reading…"</p> }.into_any(),
                Some(s) => {
                    let state = s.state;
                    view! {
                        <dl class="stats" id="sd-status">
                            <dt>"State"</dt>
                            <dd><span id="sd-state" class=format!("badge state-{}", format!("{state:?}").to_lowercase())>{state.label()}</span></dd>
                            <dt>"Model"</dt>
                            <dd id="sd-model-name">{s.model_name.clone().map(|n| format!("{n} ({})", bytes(s.model_bytes.unwrap_or(0)))).unwrap_or_else(|| "—".into())}</dd>
                            <dt>"Job API"</dt><dd id="sd-url" class="mono">{s.url.clone().unwrap_or_else(|| "—".into())}</dd>
                            {s.port_note.clone().map(|n| view! { <dt></dt><dd id="sd-port-note" class="small warn-text">{n}</dd> })}
                            <dt>"Busy"</dt>
                            <dd id="sd-busy">{if s.busy { format!("yes ({})", s.active_job.clone().unwrap_or_default()) } else { "no".into() }}</dd>
                            <dt>"sd-cli"</dt><dd class="small">{s.sd_cli.clone().unwrap_or_else(|| "—".into())}</dd>
                            <dt>"Images"</dt>
                            <dd id="sd-images-from" class="small">{if s.warm { "warm sd-server: the model stays loaded between images" } else { "one sd-cli run per image (this build has no sd-server)" }}</dd>
                        </dl>
                        {(s.warm && state == ServerState::Running).then(|| view! { <BackendRows backend=s.backend.clone() /> })}
                        {s.last_error.clone().filter(|_| state != ServerState::Running).map(|e| view! { <ErrorBox error=e /> })}
                    }.into_any()
                }
            }}
        </Card>
    }
}

/// The warm backend: its state, process, load time, last use, and Release.
#[component]
fn BackendRows(backend: BackendInfo) -> impl IntoView {
    let working = RwSignal::new(false);
    let error = RwSignal::new(None::<IpcError>);
    let release = move |_| {
        working.set(true);
        spawn_local(async move {
            if let Err(e) = api::diffusion_release_backend().await {
                error.set(Some(e));
            }
            working.set(false);
        });
    };
    let b = backend;
    let resident = !matches!(b.state, BackendState::Absent);
    // A time of day, not "N s ago": it stays true without a timer redrawing it.
    let at = |ms: Option<u64>| ms.map(local_time).unwrap_or_else(|| "—".into());
    view! {
        <dl class="stats" id="sd-backend">
            <dt>"Backend"</dt>
            <dd><span id="sd-backend-state" class=format!("badge backend-{}", format!("{:?}", b.state).to_lowercase())>{backend_label(b.state)}</span></dd>
            <dt>"PID"</dt><dd id="sd-backend-pid" class="mono">{b.pid.map(|p| p.to_string()).unwrap_or_else(|| "—".into())}</dd>
            <dt>"Load time"</dt><dd id="sd-backend-load">{b.load_ms.filter(|_| resident).map(|ms| format!("{:.1} s", ms as f64 / 1000.0)).unwrap_or_else(|| "—".into())}</dd>
            <dt>"Last used"</dt><dd id="sd-backend-used">{at(b.last_used_ms.filter(|_| resident))}</dd>
            {b.last_release.filter(|_| !resident).map(|r| view! { <dt>"Released"</dt><dd id="sd-backend-released" class="small">{r.describe()}</dd> })}
        </dl>
        <div class="row">
            <button id="sd-backend-release" disabled=move || working.get() || !resident on:click=release
                title="End the backend now: its memory comes back; the next image loads the model again">
                "Release"
            </button>
        </div>
        {move || error.get().map(|e| view! { <ErrorBox error=e /> })}
    }
}

fn backend_label(s: BackendState) -> &'static str {
    match s {
        BackendState::Absent => "Not loaded",
        BackendState::Starting => "Loading the model",
        BackendState::Ready => "Ready",
        BackendState::Busy => "Busy",
        BackendState::Stopping => "Releasing",
    }
}

/// The generate form's fields, shared so that a preset can fill them.
#[derive(Clone, Copy)]
struct Form {
    size: RwSignal<String>,
    width: RwSignal<String>,
    height: RwSignal<String>,
    steps: RwSignal<String>,
    cfg: RwSignal<String>,
    sampler: RwSignal<String>,
}

impl Form {
    fn new() -> Self {
        let p = &PRESETS[0];
        let f = Self {
            size: RwSignal::new(String::new()),
            width: RwSignal::new(String::new()),
            height: RwSignal::new(String::new()),
            steps: RwSignal::new(String::new()),
            cfg: RwSignal::new(String::new()),
            sampler: RwSignal::new(String::new()),
        };
        f.apply(p);
        f
    }

    fn apply(&self, p: &Preset) {
        let (w, h) = p.size;
        self.size.set(format!("{w}x{h}"));
        self.width.set(w.to_string());
        self.height.set(h.to_string());
        self.steps.set(p.steps.to_string());
        self.cfg.set(p.cfg.to_string());
        self.sampler.set(p.sampler.to_owned());
    }

    fn dims(&self) -> (Option<u32>, Option<u32>) {
        match self.size.get().split_once('x') {
            Some((w, h)) => (num(w), num(h)),
            None => (num(&self.width.get()), num(&self.height.get())),
        }
    }
}

#[component]
fn ConfigCard(
    status: RwSignal<Option<DiffusionStatus>>,
    error: RwSignal<Option<IpcError>>,
    form: Form,
    refresh: Callback<()>,
) -> impl IntoView {
    let models = RwSignal::new(Vec::<(String, String, u64)>::new());
    let model = RwSignal::new(String::new());
    let port = RwSignal::new(String::new());
    let preset = RwSignal::new(0usize);
    let working = RwSignal::new(false);
    // Read again whenever a download finishes or a model is deleted: the choice stays while
    // its model exists, else the first one is chosen (with its preset).
    let models_changed = expect_context::<ModelsChanged>().0;
    Effect::new(move |_| {
        models_changed.track();
        spawn_local(async move {
            if let Ok(list) = api::models_list().await {
                let sd: Vec<(String, String, u64)> = list
                    .models
                    .into_iter()
                    .filter(|m| m.kind == ModelKind::Diffusion)
                    .map(|m| (m.id, m.name, m.size_bytes))
                    .collect();
                let current = model.get_untracked();
                if !sd.iter().any(|(id, _, _)| *id == current) {
                    match sd.first() {
                        Some((id, name, _)) => {
                            model.set(id.clone());
                            preset.set(preset_for(name));
                            form.apply(&PRESETS[preset_for(name)]);
                        }
                        None => model.set(String::new()),
                    }
                }
                models.set(sd);
            }
        });
    });
    let state =
        move || status.with(|s| s.as_ref().map(|s| s.state).unwrap_or(ServerState::Stopped));
    // The warm backend between images: the usage mode and the idle release in minutes.
    let usage = RwSignal::new("auto".to_owned());
    let idle_min = RwSignal::new((DEFAULT_IDLE_RELEASE_SECS / 60).to_string());
    let start = move |_| {
        working.set(true);
        error.set(None);
        let p = port.get_untracked();
        let config = DiffusionConfig {
            model_id: model.get_untracked(),
            port: if p.trim().eq_ignore_ascii_case("auto") { Some(0) } else { num(&p) },
            usage_mode: match usage.get_untracked().as_str() {
                "burst" => Some(UsageMode::Burst),
                "single" => Some(UsageMode::Single),
                _ => Some(UsageMode::Auto),
            },
            idle_release_secs: num::<u32>(&idle_min.get_untracked()).map(|m| u64::from(m) * 60),
            ..Default::default()
        };
        spawn_local(async move {
            if let Err(e) = api::diffusion_start(config).await {
                error.set(Some(e));
            }
            working.set(false);
            refresh.run(());
        });
    };
    let stop = move |_| {
        working.set(true);
        spawn_local(async move {
            if let Err(e) = api::diffusion_stop().await {
                error.set(Some(e));
            }
            working.set(false);
            refresh.run(());
        });
    };
    view! {
        <Card title="Configuration">
            <label class="field">
                <span>"Diffusion model"</span>
                <select id="sd-model" prop:value=model on:change=move |ev| {
                    let id = event_target_value(&ev);
                    if let Some((_, name, _)) = models.get_untracked().into_iter().find(|m| m.0 == id) {
                        preset.set(preset_for(&name));
                    }
                    model.set(id);
                }>
                    {move || models.get().into_iter().map(|(id, name, size)| {
                        let selected = id == model.get_untracked();
                        view! { <option value=id.clone() selected=selected>{format!("{name} ({})", bytes(size))}</option> }
                    }).collect_view()}
                </select>
            </label>
            {move || models.with(Vec::is_empty).then(|| view! { <p class="muted">"No diffusion model downloaded yet: get one in the Models tab."</p> })}
            <label class="field">
                <span>{format!("Port (empty: {DEFAULT_PORT}, or the next free one; auto: any)")}</span>
                <input id="sd-port-input" type="text" placeholder=DEFAULT_PORT.to_string() prop:value=port on:input=move |ev| port.set(event_target_value(&ev)) />
            </label>
            <div class="toolbar">
                <label class="field inline"><span>"Preset"</span>
                    <select id="sd-preset" prop:value=move || preset.get().to_string() on:change=move |ev| preset.set(event_target_value(&ev).parse().unwrap_or(0))>
                        {PRESETS.iter().enumerate().map(|(i, p)| view! {
                            <option value=i.to_string()>{format!("{}: {} steps, CFG {}, {}, {}×{}", p.name, p.steps, p.cfg, p.sampler, p.size.0, p.size.1)}</option>
                        }).collect_view()}
                    </select>
                </label>
                <button id="sd-preset-apply" class="btn btn-small" on:click=move |_| form.apply(&PRESETS[preset.get_untracked()])>"Apply"</button>
            </div>
            <div class="toolbar">
                <label class="field inline" title="With a build that has sd-server, the model stays loaded between images">
                    <span>"Between images"</span>
                    <select id="sd-usage" prop:value=usage on:change=move |ev| usage.set(event_target_value(&ev))>
                        <option value="auto">"Auto: keep loaded, unless the LLM had to pause"</option>
                        <option value="burst">"Keep the model loaded"</option>
                        <option value="single">"Release after each request"</option>
                    </select>
                </label>
                <label class="field inline" title="0: never">
                    <span>"Release after idle (min)"</span>
                    <input id="sd-idle" type="number" min="0" prop:value=idle_min on:input=move |ev| idle_min.set(event_target_value(&ev)) />
                </label>
            </div>
            <p class="small muted">"The job API listens on 127.0.0.1 only; other programs on this computer can use it like the original's (POST /v1/images/generations)."</p>
            <div class="toolbar">
                <button id="sd-start" class="btn btn-primary"
                    disabled=move || working.get() || state() != ServerState::Stopped || model.with(String::is_empty)
                    on:click=start>
                    {move || if state() == ServerState::Starting { "Starting…" } else { "Start" }}
                </button>
                <button id="sd-stop" class="btn" disabled=move || working.get() || state() != ServerState::Running on:click=stop>"Stop"</button>
            </div>
        </Card>
    }
}

#[component]
fn GenerateCard(status: RwSignal<Option<DiffusionStatus>>, form: Form) -> impl IntoView {
    let feed = expect_context::<DiffusionFeed>();
    let prompt = RwSignal::new(String::new());
    let negative = RwSignal::new(String::new());
    let fixed_seed = RwSignal::new(false);
    let seed = RwSignal::new("42".to_owned());
    let count = RwSignal::new("1".to_owned());
    let job = RwSignal::new(None::<JobView>);
    let error = RwSignal::new(None::<IpcError>);
    let saved = RwSignal::new(None::<String>);
    let running =
        move || status.with(|s| s.as_ref().is_some_and(|s| s.state == ServerState::Running));
    let active = move || job.with(|j| j.as_ref().is_some_and(|j| !j.status.is_finished()));

    // A job another program posted to the job API (or one that ran before the window opened):
    // shown here like one started from this form, with its live progress.
    Effect::new(move |_| {
        let Some(id) = status.with(|s| s.as_ref().and_then(|s| s.active_job.clone())) else {
            return;
        };
        if job.with_untracked(|j| j.as_ref().is_some_and(|j| j.id == id)) {
            return;
        }
        spawn_local(async move {
            if let Ok(v) = api::diffusion_job(id).await {
                // Our own Generate may have answered meanwhile with a newer job.
                if !job.with_untracked(|j| j.as_ref().is_some_and(|j| !j.status.is_finished())) {
                    job.set(Some(v));
                }
            }
        });
    });
    // Progress of a job this form does not know yet (it was posted a moment ago).
    Effect::new(move |_| {
        let Some(id) = feed.progress.with(|p| p.as_ref().map(|(id, _)| id.clone())) else {
            return;
        };
        if job.with_untracked(|j| j.as_ref().is_some_and(|j| j.id == id || !j.status.is_finished()))
        {
            return;
        }
        spawn_local(async move {
            if let Ok(v) = api::diffusion_job(id).await {
                if !v.status.is_finished() {
                    job.set(Some(v));
                }
            }
        });
    });

    // A job that ended: read its result (or error) once.
    Effect::new(move |_| {
        let Some(ended) = feed.ended.get() else { return };
        if job.with_untracked(|j| j.as_ref().is_some_and(|j| j.id == ended)) {
            spawn_local(async move {
                match api::diffusion_job(ended).await {
                    Ok(v) => job.set(Some(v)),
                    Err(e) => error.set(Some(e)),
                }
            });
        }
    });

    let request = move || {
        let (width, height) = form.dims();
        ImageRequest {
            prompt: prompt.get(),
            negative_prompt: Some(negative.get()).filter(|n| !n.trim().is_empty()),
            width,
            height,
            steps: num(&form.steps.get()),
            cfg_scale: form.cfg.get().trim().parse().ok(),
            seed: if fixed_seed.get() { seed.get().trim().parse().ok() } else { None },
            sampler: Some(form.sampler.get()),
            count: num(&count.get()),
            // The server's setting (Configuration card) applies.
            usage_mode: None,
        }
    };
    // Before Generate: would this image pause the LLM? Asked again as the size, the servers or
    // the orchestration change.
    let hint = RwSignal::new(None::<OffloadDecision>);
    let llm_ticks = expect_context::<LlmFeed>().ticks;
    Effect::new(move |_| {
        let req = request();
        llm_ticks.track();
        feed.ticks.track();
        if !running() {
            hint.set(None);
            return;
        }
        spawn_local(async move { hint.set(api::orchestrator_check(req).await.ok().flatten()) });
    });
    let generate = move |_| {
        error.set(None);
        saved.set(None);
        let request = untrack(request);
        spawn_local(async move {
            match api::diffusion_generate(request).await {
                Ok(v) => job.set(Some(v)),
                Err(e) => error.set(Some(e)),
            }
        });
    };
    let cancel = move |_| {
        let Some(id) = job.with_untracked(|j| j.as_ref().map(|j| j.id.clone())) else { return };
        spawn_local(async move {
            match api::diffusion_cancel(id).await {
                Ok(v) => job.set(Some(v)),
                Err(e) => error.set(Some(e)),
            }
        });
    };
    let progress = move || {
        let id = job.with(|j| j.as_ref().map(|j| j.id.clone()))?;
        feed.progress.with(|p| p.as_ref().filter(|(pid, _)| *pid == id).map(|(_, p)| p.clone()))
    };

    view! {
        <Card title="Generate">
            <label class="field"><span>"Prompt"</span>
                <textarea id="sd-prompt" rows="2" placeholder="a lighthouse on a rocky coast at sunset" prop:value=prompt on:input=move |ev| prompt.set(event_target_value(&ev))></textarea>
            </label>
            <label class="field"><span>"Negative prompt"</span>
                <input id="sd-negative" type="text" placeholder="blurry, low quality" prop:value=negative on:input=move |ev| negative.set(event_target_value(&ev)) />
            </label>
            <div class="form-grid">
                <label class="field"><span>"Size"</span>
                    <select id="sd-size" prop:value=form.size on:change=move |ev| form.size.set(event_target_value(&ev))>
                        {SIZES.iter().map(|(w, h)| view! { <option value=format!("{w}x{h}")>{format!("{w} × {h}")}</option> }).collect_view()}
                        <option value="custom">"Custom…"</option>
                    </select>
                </label>
                {move || (form.size.get() == "custom").then(|| view! {
                    <label class="field"><span>"Width"</span><input id="sd-width" type="text" prop:value=form.width on:input=move |ev| form.width.set(event_target_value(&ev)) /></label>
                    <label class="field"><span>"Height"</span><input id="sd-height" type="text" prop:value=form.height on:input=move |ev| form.height.set(event_target_value(&ev)) /></label>
                })}
                <label class="field"><span>"Steps"</span><input id="sd-steps" type="text" prop:value=form.steps on:input=move |ev| form.steps.set(event_target_value(&ev)) /></label>
                <label class="field"><span>"CFG scale"</span><input id="sd-cfg" type="text" prop:value=form.cfg on:input=move |ev| form.cfg.set(event_target_value(&ev)) /></label>
                <label class="field"><span>"Sampler"</span>
                    <select id="sd-sampler" prop:value=form.sampler on:change=move |ev| form.sampler.set(event_target_value(&ev))>
                        {SAMPLERS.iter().map(|s| view! { <option value=*s>{*s}</option> }).collect_view()}
                    </select>
                </label>
                <label class="field"><span>"Images"</span><input id="sd-count" type="text" prop:value=count on:input=move |ev| count.set(event_target_value(&ev)) /></label>
                <label class="field"><span>"Seed"</span>
                    <span class="toolbar">
                        <label class="check"><input id="sd-seed-fixed" type="checkbox" prop:checked=fixed_seed on:change=move |ev| fixed_seed.set(event_target_checked(&ev)) />" fixed"</label>
                        <input id="sd-seed" type="text" size="10" disabled=move || !fixed_seed.get() prop:value=seed on:input=move |ev| seed.set(event_target_value(&ev)) />
                    </span>
                </label>
            </div>
            <div class="toolbar">
                <button id="sd-generate" class="btn btn-primary" disabled=move || !running() || active() || prompt.with(|p| p.trim().is_empty()) on:click=generate>
                    {move || if active() { "Generating…" } else { "Generate" }}
                </button>
                <button id="sd-cancel" class="btn" disabled=move || !active() on:click=cancel>"Cancel"</button>
                <button id="sd-open-folder" class="btn" title="Where Save puts images" on:click=move |_| {
                    spawn_local(async move {
                        if let Err(e) = api::open_images_folder().await {
                            error.set(Some(e));
                        }
                    })
                }>"Open images folder"</button>
                {move || (!running()).then(|| view! { <span class="muted small">"Start the server first."</span> })}
            </div>
            {move || hint.get().filter(|d| d.llm_running).map(|d| view! {
                <p id="sd-offload-hint" class=if d.offload { "offload-hint pause small" } else { "offload-hint small" }>{d.reason}</p>
            })}
            {move || job.get().map(|j| {
                let started = progress().is_some();
                let state = match j.status {
                    JobStatus::Pending | JobStatus::InProgress if started => "Generating",
                    JobStatus::Pending => "Waiting to start",
                    JobStatus::InProgress => "Generating",
                    JobStatus::Complete => "Finished",
                    JobStatus::Error => "Failed",
                    JobStatus::Cancelled => "Cancelled",
                };
                view! { <p class="small">"Job "<span class="mono">{j.id.clone()}</span>": "<strong id="sd-job-status">{state}</strong></p> }
            })}
            {move || active().then(|| {
                let p = progress().unwrap_or(JobProgress::at_start(ImageStage::Queued, 0, 1));
                view! {
                    <div id="sd-progress" data-stage=p.stage.label() data-percent=format!("{:.0}", p.percentage)>
                        <ProgressBar percent=p.percentage as f64 label=p.caption() />
                    </div>
                }
            })}
            {move || job.get().and_then(|j| j.error.clone()).map(|e| view! {
                <div id="sd-job-error"><ErrorBox error=e.to_ipc() /></div>
            })}
            {move || job.get().and_then(|j| j.result.clone().map(|r| (j.id.clone(), r))).map(|(id, r)| {
                let secs = r.time_taken as f64 / 1000.0;
                view! {
                    <div class="images">
                        {r.images.into_iter().enumerate().map(|(i, img)| {
                            let id = id.clone();
                            let id_as = id.clone();
                            let save_as = move |_| {
                                let id = id_as.clone();
                                spawn_local(async move {
                                    match api::diffusion_save_image_as(id, i as u32).await {
                                        Ok(Some(s)) => saved.set(Some(s.path)),
                                        Ok(None) => {}
                                        Err(e) => error.set(Some(e)),
                                    }
                                });
                            };
                            let save = move |_| {
                                let id = id.clone();
                                spawn_local(async move {
                                    match api::diffusion_save_image(id, i as u32).await {
                                        Ok(s) => saved.set(Some(s.path)),
                                        Err(e) => error.set(Some(e)),
                                    }
                                });
                            };
                            view! {
                                <figure class="image-result">
                                    <img class="sd-image" id=format!("sd-image-{i}") alt="generated image"
                                        src=format!("data:image/png;base64,{}", img.image) />
                                    <figcaption class="small" id=format!("sd-image-info-{i}")>
                                        {format!("{} × {} · seed {} · {secs:.1} s", img.width, img.height, img.seed)}
                                    </figcaption>
                                    <span class="toolbar">
                                        <button class="btn btn-small sd-save" id=format!("sd-save-{i}") title="Into the app's images folder" on:click=save>"Save"</button>
                                        <button class="btn btn-small sd-save-as" id=format!("sd-save-as-{i}") on:click=save_as>"Save as…"</button>
                                    </span>
                                </figure>
                            }
                        }).collect_view()}
                    </div>
                }
            })}
            {move || saved.get().map(|p| view! { <p class="small" id="sd-saved">"Saved to "<span class="mono">{p}</span></p> })}
            {move || error.get().map(|e| view! { <ErrorBox error=e /> })}
        </Card>
    }
}
