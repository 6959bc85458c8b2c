use super::ModelsState;
use crate::api;
use crate::components::card::Card;
use crate::components::error_box::ErrorBox;
use ipc::models::{ComponentRequest, ComponentRole, DownloadRequest, ModelKind, ModelSource};
use ipc::IpcError;
use leptos::prelude::*;
use leptos::task::spawn_local;

/// Known-good models, one click away.
struct Preset {
    label: &'static str,
    kind: ModelKind,
    repo: &'static str,
    file: &'static str,
    size: &'static str,
    /// Diffusion models' other files, as (role, Hugging Face repo, file).
    components: &'static [(ComponentRole, &'static str, &'static str)],
    /// The folder variants of one model share.
    directory: Option<&'static str>,
}

const fn llm(
    label: &'static str,
    repo: &'static str,
    file: &'static str,
    size: &'static str,
) -> Preset {
    Preset { label, kind: ModelKind::Llm, repo, file, size, components: &[], directory: None }
}

const PRESETS: &[Preset] = &[
    llm("Qwen3 4B (Q4_K_M)", "unsloth/Qwen3-4B-GGUF", "Qwen3-4B-Q4_K_M.gguf", "2.5 GB"),
    llm(
        "Llama 3.2 1B Instruct (Q4_K_M)",
        "bartowski/Llama-3.2-1B-Instruct-GGUF",
        "Llama-3.2-1B-Instruct-Q4_K_M.gguf",
        "0.8 GB",
    ),
    llm(
        "Gemma 3 4B it (Q4_K_M)",
        "unsloth/gemma-3-4b-it-GGUF",
        "gemma-3-4b-it-Q4_K_M.gguf",
        "2.5 GB",
    ),
    Preset {
        label: "SDXL Lightning 4-step (Q4_1)",
        kind: ModelKind::Diffusion,
        repo: "mzwing/SDXL-Lightning-GGUF",
        file: "sdxl_lightning_4step.q4_1.gguf",
        size: "2.8 GB",
        components: &[],
        directory: None,
    },
    Preset {
        label: "Flux 2 Klein 4B (Q4_0)",
        kind: ModelKind::Diffusion,
        repo: "leejet/FLUX.2-klein-4B-GGUF",
        file: "flux-2-klein-4b-Q4_0.gguf",
        size: "5.4 GB with its text encoder and VAE",
        components: &[
            (ComponentRole::Llm, "unsloth/Qwen3-4B-GGUF", "Qwen3-4B-Q4_0.gguf"),
            (ComponentRole::Vae, "Comfy-Org/flux2-dev", "split_files/vae/flux2-vae.safetensors"),
        ],
        directory: Some("flux-2-klein"),
    },
];

fn value(ev: &leptos::ev::Event) -> String {
    event_target_value(ev)
}

#[component]
pub fn DownloadForm() -> impl IntoView {
    let state = expect_context::<ModelsState>();
    let custom = RwSignal::new(false);
    let preset = RwSignal::new(0usize);
    let source = RwSignal::new("hf".to_owned());
    let kind = RwSignal::new(ModelKind::Llm);
    let (url, repo, file, revision, path, name, sha) = (
        RwSignal::new(String::new()),
        RwSignal::new(String::new()),
        RwSignal::new(String::new()),
        RwSignal::new("main".to_owned()),
        RwSignal::new(String::new()),
        RwSignal::new(String::new()),
        RwSignal::new(String::new()),
    );
    let error = RwSignal::new(None::<IpcError>);
    let sending = RwSignal::new(false);

    let submit = move |_| {
        let request = if custom.get_untracked() {
            let src = match source.get_untracked().as_str() {
                "url" => ModelSource::Url { url: url.get_untracked() },
                "local" => ModelSource::Local { path: path.get_untracked() },
                _ => ModelSource::HuggingFace {
                    repo: repo.get_untracked(),
                    file: file.get_untracked(),
                    revision: revision.get_untracked(),
                },
            };
            let sha = sha.get_untracked();
            DownloadRequest {
                name: name.get_untracked(),
                kind: kind.get_untracked(),
                source: src,
                sha256: (!sha.trim().is_empty()).then_some(sha),
                shard_sha256: Vec::new(),
                components: Vec::new(),
                directory: None,
            }
        } else {
            let p = &PRESETS[preset.get_untracked()];
            let hf = |repo: &str, file: &str| ModelSource::HuggingFace {
                repo: repo.into(),
                file: file.into(),
                revision: "main".into(),
            };
            DownloadRequest {
                name: p.label.to_owned(),
                kind: p.kind,
                source: hf(p.repo, p.file),
                sha256: None,
                shard_sha256: Vec::new(),
                components: p
                    .components
                    .iter()
                    .map(|(role, repo, file)| ComponentRequest {
                        role: *role,
                        source: hf(repo, file),
                        sha256: None,
                    })
                    .collect(),
                directory: p.directory.map(str::to_owned),
            }
        };
        sending.set(true);
        spawn_local(async move {
            match api::download_start(request).await {
                Ok(_) => {
                    error.set(None);
                    state.refresh_downloads();
                }
                Err(e) => error.set(Some(e)),
            }
            sending.set(false);
        });
    };

    let field = |label: &'static str,
                 id: &'static str,
                 sig: RwSignal<String>,
                 placeholder: &'static str| {
        view! {
            <label class="field">
                <span>{label}</span>
                <input id=id type="text" placeholder=placeholder prop:value=move || sig.get()
                    on:input=move |ev| sig.set(value(&ev)) />
            </label>
        }
    };

    view! {
        <Card title="Download a model">
            <div class="segmented" role="tablist">
                <button id="dl-mode-preset" class="seg" class:active=move || !custom.get() on:click=move |_| custom.set(false)>"Preset"</button>
                <button id="dl-mode-custom" class="seg" class:active=move || custom.get() on:click=move |_| custom.set(true)>"Custom"</button>
            </div>
            <Show when=move || !custom.get()>
                <label class="field">
                    <span>"Model"</span>
                    <select id="dl-preset" on:change=move |ev| preset.set(value(&ev).parse().unwrap_or(0))>
                        {PRESETS.iter().enumerate().map(|(i, p)| view! {
                            <option value=i.to_string()>{format!("{} — {} ({})", p.label, p.kind.label(), p.size)}</option>
                        }).collect_view()}
                    </select>
                </label>
                <p class="muted small">"From Hugging Face. Gated models need a token: see Hugging Face access below."</p>
            </Show>
            <Show when=move || custom.get()>
                <div class="form-grid">
                    <label class="field">
                        <span>"Source"</span>
                        <select id="dl-source" on:change=move |ev| source.set(value(&ev))>
                            <option value="hf">"Hugging Face"</option>
                            <option value="url">"Direct URL"</option>
                            <option value="local">"Local file"</option>
                        </select>
                    </label>
                    <label class="field">
                        <span>"Type"</span>
                        <select id="dl-kind" on:change=move |ev| kind.set(if value(&ev) == "diffusion" { ModelKind::Diffusion } else { ModelKind::Llm })>
                            <option value="llm">"LLM"</option>
                            <option value="diffusion">"Diffusion"</option>
                        </select>
                    </label>
                    {move || match source.get().as_str() {
                        "url" => field("URL", "dl-url", url, "https://…/model.gguf").into_any(),
                        "local" => field("File path", "dl-path", path, "/home/you/models/model.gguf").into_any(),
                        _ => view! {
                            {field("Repository", "dl-repo", repo, "owner/name")}
                            {field("File", "dl-file", file, "model-Q4_K_M.gguf")}
                            {field("Revision", "dl-revision", revision, "main")}
                        }.into_any(),
                    }}
                    {field("Display name", "dl-name", name, "My model")}
                    {field("SHA-256 (optional)", "dl-sha", sha, "sha256:…")}
                </div>
            </Show>
            <div class="toolbar">
                <button id="dl-submit" class="btn btn-primary" disabled=move || sending.get() on:click=submit>"Download"</button>
            </div>
            {move || error.get().map(|e| view! { <ErrorBox error=e /> })}
        </Card>
    }
}
