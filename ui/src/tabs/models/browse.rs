//! Find a model on Hugging Face and see, for every quantisation, how it would run here before
//! downloading it (#17): a search, a repo's entries with a fit badge each (read from their
//! headers alone), a context slider and KV type that re-evaluate every badge without a request,
//! the best fit marked, and one click to download an entry through the queue.

use super::ModelsState;
use crate::api;
use crate::components::card::Card;
use crate::components::error_box::ErrorBox;
use ipc::format::bytes;
use ipc::models::{
    FitArgs, FitBadge, HfEntry, HfRepoArgs, HfRepoHit, HfRepoView, HfSearchArgs, HfSort,
};
use ipc::IpcError;
use leptos::prelude::*;
use leptos::task::spawn_local;

/// The slider's stops.
const CONTEXTS: [u32; 8] = [2048, 4096, 8192, 16384, 32768, 65536, 131072, 262144];
/// Where the slider starts: 8192.
const DEFAULT_STOP: usize = 2;

/// The badge's words and style.
pub fn badge(b: FitBadge) -> (String, &'static str) {
    match b {
        FitBadge::Gpu => ("GPU".into(), "fit-gpu"),
        FitBadge::Partial { layers, of, cpu_moe: 0 } => {
            (format!("Partial: {layers} of {of} layers on GPU"), "fit-partial")
        }
        FitBadge::Partial { cpu_moe, .. } => {
            (format!("Partial: experts of {cpu_moe} blocks in RAM"), "fit-partial")
        }
        FitBadge::Cpu => ("CPU".into(), "fit-cpu"),
        FitBadge::TooBig => ("Too big".into(), "fit-too-big"),
        FitBadge::Unreadable => ("Cannot read".into(), "fit-unreadable"),
    }
}

fn count(n: u64) -> String {
    match n {
        0..=999 => n.to_string(),
        1_000..=999_999 => format!("{:.1}k", n as f64 / 1e3),
        _ => format!("{:.1}M", n as f64 / 1e6),
    }
}

#[component]
pub fn Browse() -> impl IntoView {
    let state = expect_context::<ModelsState>();
    let text = RwSignal::new(String::new());
    let sort = RwSignal::new(HfSort::Downloads);
    let hits = RwSignal::new(None::<Vec<HfRepoHit>>);
    let busy = RwSignal::new(None::<String>);
    let repo = RwSignal::new(None::<HfRepoView>);
    let stop = RwSignal::new(DEFAULT_STOP);
    let kv = RwSignal::new("f16".to_owned());
    let error = RwSignal::new(None::<IpcError>);
    let queued = RwSignal::new(None::<String>);

    // The installed models' badges are weighed at the same context and KV type.
    Effect::new(move |_| {
        let ask = FitArgs { context: CONTEXTS[stop.get()], kv_type: kv.get() };
        if state.ask.get_untracked() != ask {
            state.ask.set(ask);
        }
    });
    // The vision projector to download with an entry, by its index in the repo's list: the
    // badges weigh it too.
    let projector = RwSignal::new(None::<usize>);
    let repo_projector = move |i: Option<usize>| {
        repo.with_untracked(|v| v.as_ref().and_then(|v| v.projectors.get(i?).cloned()))
    };
    let args = move |repo: String, revision: String| HfRepoArgs {
        projector_bytes: repo_projector(projector.get_untracked()).map_or(0, |p| p.size),
        repo,
        revision: Some(revision),
        context: CONTEXTS[stop.get_untracked()],
        kv_type: kv.get_untracked(),
    };
    let search = move || {
        let ask = HfSearchArgs { text: text.get_untracked(), sort: sort.get_untracked() };
        busy.set(Some("Searching…".into()));
        spawn_local(async move {
            match api::hf_search(ask).await {
                Ok(h) => {
                    error.set(None);
                    hits.set(Some(h));
                }
                Err(e) => error.set(Some(e)),
            }
            busy.set(None);
        });
    };
    let open = move |id: String| {
        busy.set(Some(format!("Reading the files of {id}…")));
        queued.set(None);
        projector.set(None);
        let ask = args(id, "main".into());
        spawn_local(async move {
            match api::hf_repo(ask).await {
                Ok(v) => {
                    error.set(None);
                    repo.set(Some(v));
                }
                Err(e) => error.set(Some(e)),
            }
            busy.set(None);
        });
    };
    // Another context or KV type: the same headers, weighed again; nothing is fetched.
    let refit = move || {
        let Some(v) = repo.get_untracked() else { return };
        let ask = args(v.repo, v.revision);
        spawn_local(async move {
            match api::hf_repo_fit(ask).await {
                Ok(v) => repo.set(Some(v)),
                Err(e) => error.set(Some(e)),
            }
        });
    };
    let download = move |e: HfEntry| {
        let Some(v) = repo.get_untracked() else { return };
        let add_on = repo_projector(projector.get_untracked());
        let add_on = add_on.as_ref();
        let request = e.download_request(&v.repo, &v.revision, add_on);
        let what = match add_on {
            Some(p) => format!("{} with the vision projector {}", e.name, p.path),
            None => e.name.clone(),
        };
        spawn_local(async move {
            match api::download_start(request).await {
                Ok(_) => {
                    error.set(None);
                    queued.set(Some(what));
                    state.refresh_downloads();
                }
                Err(err) => error.set(Some(err)),
            }
        });
    };

    let entry_row = move |(i, e, best): (usize, HfEntry, bool)| {
        let (label, class) = badge(e.fit.badge);
        let rule = repo.get_untracked().map(|v| v.best_rule).unwrap_or_default();
        let short = e.fit.context > 0 && e.fit.context < e.fit.asked_context;
        let downloadable = e.complete && e.fit.badge != FitBadge::Unreadable;
        let entry = e.clone();
        view! {
            <tr class="browse-entry" class:best-fit=best data-quant=e.quant.clone().unwrap_or_default()>
                <td>
                    <code>{e.quant.clone().unwrap_or_else(|| e.name.clone())}</code>
                    {(e.files.len() > 1).then(|| view! { <span class="muted small">{format!(" {} parts", e.files.len())}</span> })}
                    {best.then(|| view! { <span class="badge fit-best" title=rule>" Best fit"</span> })}
                </td>
                <td>{bytes(e.bytes)}</td>
                <td>
                    <span class=format!("badge fit {class}") title=e.fit.why.clone()>{label}</span>
                    {short.then(|| view! { <span class="muted small">{format!(" at {} tokens", e.fit.context)}</span> })}
                    {e.fit.if_llm_stopped.map(|b| view! {
                        <span class="muted small">{format!(" ({} if the LLM were stopped)", badge(b).0)}</span>
                    })}
                </td>
                <td class="small muted">
                    {(e.fit.gpu_context > 0).then(|| format!("up to {} tokens fully on GPU · ", e.fit.gpu_context))}
                    {e.fit.why.clone()}
                </td>
                <td>
                    <button class="btn" id=format!("browse-download-{i}") disabled=!downloadable
                        on:click=move |_| download(entry.clone())>"Download"</button>
                </td>
            </tr>
        }
    };

    view! {
        <Card title="Find a model on Hugging Face">
            <div class="toolbar">
                <input id="browse-text" type="search" placeholder="A model's name, e.g. qwen3 8b"
                    prop:value=move || text.get()
                    on:input=move |ev| text.set(event_target_value(&ev))
                    on:keydown=move |ev| if ev.key() == "Enter" { search() } />
                <select id="browse-sort" on:change=move |ev| {
                    sort.set(if event_target_value(&ev) == "recent" { HfSort::Recent } else { HfSort::Downloads })
                }>
                    <option value="downloads">"Most downloaded"</option>
                    <option value="recent">"Recently updated"</option>
                </select>
                <button id="browse-search" class="btn btn-primary"
                    disabled=move || busy.get().is_some() || text.get().trim().is_empty()
                    on:click=move |_| search()>"Search"</button>
            </div>
            {move || busy.get().map(|b| view! { <p class="muted small"><span class="spinner"></span>" " {b}</p> })}
            {move || error.get().map(|e| view! { <ErrorBox error=e /> })}
            {move || hits.get().map(|h| if h.is_empty() {
                view! { <p id="browse-none" class="muted">"No repository with GGUF files matches."</p> }.into_any()
            } else {
                view! {
                    <ul id="browse-hits" class="plain-list">
                        {h.into_iter().map(|hit| {
                            let id = hit.id.clone();
                            view! {
                                <li>
                                    <button class="link" data-repo=hit.id.clone() on:click=move |_| open(id.clone())>{hit.id.clone()}</button>
                                    <span class="muted small">{format!(" {} downloads · {} likes", count(hit.downloads), count(hit.likes))}</span>
                                    {hit.gated.then(|| view! { <span class="badge state-paused" title="Its files need a token and an accepted licence">" gated"</span> })}
                                </li>
                            }
                        }).collect_view()}
                    </ul>
                }.into_any()
            })}
            <Show when=move || repo.with(Option::is_some)>
                <div id="browse-repo">
                    <h3><code>{move || repo.with(|v| v.as_ref().map(|v| v.repo.clone()))}</code></h3>
                    // The controls stay put while the badges under them change.
                    <div class="form-grid">
                        <label class="field">
                            <span>"Context: " <strong id="browse-context-value">{move || CONTEXTS[stop.get()].to_string()}</strong> " tokens"</span>
                            <input id="browse-context" type="range" min="0" max=(CONTEXTS.len() - 1).to_string() step="1"
                                prop:value=move || stop.get().to_string()
                                on:input=move |ev| {
                                    stop.set(event_target_value(&ev).parse().unwrap_or(DEFAULT_STOP).min(CONTEXTS.len() - 1));
                                    refit();
                                } />
                        </label>
                        <label class="field">
                            <span>"KV cache"</span>
                            <select id="browse-kv" on:change=move |ev| { kv.set(event_target_value(&ev)); refit(); }>
                                <option value="f16">"f16"</option>
                                <option value="q8_0">"q8_0"</option>
                                <option value="q4_0">"q4_0"</option>
                            </select>
                        </label>
                    </div>
                    {move || repo.get().map(|v| {
                        let best = v.best;
                        let rows: Vec<(usize, HfEntry, bool)> =
                            v.entries.iter().cloned().enumerate().map(|(i, e)| (i, e, best == Some(i))).collect();
                        view! {
                            {if rows.is_empty() {
                                view! { <p class="muted">"This repository has no GGUF files."</p> }.into_any()
                            } else {
                                view! {
                                    <table class="table" id="browse-entries">
                                        <thead><tr><th>"Quantisation"</th><th>"Size"</th><th>"Here"</th><th>"Why"</th><th></th></tr></thead>
                                        <tbody>{rows.into_iter().map(entry_row).collect_view()}</tbody>
                                    </table>
                                }.into_any()
                            }}
                            {(!v.projectors.is_empty()).then(|| view! {
                                <label class="field">
                                    <span title="A vision projector lets the model read images; it is loaded beside the model and takes memory of its own">
                                        "Vision projector (add-on, downloaded with the entry)"
                                    </span>
                                    <select id="browse-projector" on:change=move |ev| { projector.set(event_target_value(&ev).parse().ok()); refit(); }>
                                        <option value="" selected=move || projector.get().is_none()>"None: text only"</option>
                                        {v.projectors.iter().enumerate().map(|(i, p)| view! {
                                            <option value=i.to_string() selected=move || projector.get() == Some(i)>
                                                {format!("{} ({})", p.path, bytes(p.size))}
                                            </option>
                                        }).collect_view()}
                                    </select>
                                </label>
                            })}
                        }
                    })}
                    {move || queued.get().map(|n| view! { <p id="browse-queued" class="small">{format!("{n} is in the download queue below.")}</p> })}
                </div>
            </Show>
        </Card>
    }
}
