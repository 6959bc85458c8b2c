use super::ModelsState;
use crate::api;
use crate::components::card::Card;
use crate::components::error_box::ErrorBox;
use crate::components::local_date;
use ipc::format::bytes;
use ipc::models::ModelInfo;
use ipc::{ErrorCode, IpcError};
use leptos::prelude::*;
use leptos::task::spawn_local;

#[component]
pub fn InstalledModels() -> impl IntoView {
    let state = expect_context::<ModelsState>();
    view! {
        <Card title="Installed models">
            {move || state.list.get().and_then(Result::ok).map(|l| l.unreadable).filter(|u| !u.is_empty()).map(|u| view! {
                <div id="models-unreadable">
                    {u.into_iter().map(|e| view! { <ErrorBox error=e /> }).collect_view()}
                </div>
            })}
            {move || match state.list.get() {
                None => view! { <p class="muted"><span class="spinner"></span>" Reading models…"</p> }.into_any(),
                Some(Err(e)) => view! { <ErrorBox error=e on_retry=Callback::new(move |_| state.refresh_list()) /> }.into_any(),
                Some(Ok(list)) if list.models.is_empty() => view! {
                    <p id="models-empty" class="muted">"No models yet. Download one below."</p>
                }.into_any(),
                Some(Ok(list)) => {
                    let count = list.models.len();
                    view! {
                        <table class="table" id="models-table">
                            <thead><tr><th>"Name"</th><th>"Type"</th><th>"Size"</th><th>"Downloaded"</th><th>"Actions"</th></tr></thead>
                            <tbody>
                                {list.models.into_iter().map(|m| view! { <ModelRow model=m /> }).collect_view()}
                            </tbody>
                        </table>
                        <p id="models-total" class="muted small">
                            {format!("Total disk usage: {} ({count} model{})", bytes(list.total_bytes), if count == 1 { "" } else { "s" })}
                        </p>
                    }.into_any()
                }
            }}
        </Card>
    }
}

#[component]
fn ModelRow(model: ModelInfo) -> impl IntoView {
    let state = expect_context::<ModelsState>();
    let confirming = RwSignal::new(false);
    let busy = RwSignal::new(false);
    let outcome = RwSignal::new(None::<Result<String, IpcError>>);
    let id = model.id.clone();
    let verify = {
        let id = id.clone();
        move |_| {
            let id = id.clone();
            busy.set(true);
            spawn_local(async move {
                let r = api::model_verify(id).await.map(|v| {
                    if v.had_checksum {
                        format!("Verified: SHA-256 matches ({}…)", &v.sha256[..12])
                    } else {
                        format!("No stored checksum; SHA-256 is {}…", &v.sha256[..12])
                    }
                });
                outcome.set(Some(r));
                busy.set(false);
            });
        }
    };
    // `stop`: "Stop and delete", offered when a server uses the model.
    let delete = {
        let id = id.clone();
        move |stop: bool| {
            let id = id.clone();
            busy.set(true);
            spawn_local(async move {
                match api::model_delete(id, stop).await {
                    Ok(()) => {
                        outcome.set(None);
                        state.refresh_list();
                    }
                    Err(e) => outcome.set(Some(Err(e))),
                }
                busy.set(false);
                confirming.set(false);
            });
        }
    };
    let stop_and_delete = delete.clone();
    let info_model = model.clone();
    view! {
        <tr class="model-row" data-id=id.clone()>
            <td class="m-name">
                {model.name.clone()}
                {model.supports_reasoning.then(|| view! { <span class="badge" title="Thinks before answering">"reasoning"</span> })}
            </td>
            <td>
                <span class=format!("badge kind-{}", model.kind.dir()) data-kind=model.kind.label()>{model.kind.label()}</span>
                {
                    let id = id.clone();
                    move || state.fits.with(|f| f.get(&id).cloned()).map(|fit| {
                        let (label, class) = super::browse::badge(fit.badge);
                        view! {
                            <span class=format!("badge fit {class}") title=format!("At {} tokens: {}", fit.asked_context, fit.why)>{label}</span>
                        }
                    })
                }
                {model.projector().map(|p| view! {
                    <span class="badge m-vision" title=format!("Reads images: its vision projector {} is loaded beside it", p.path)>"vision"</span>
                })}
                {(model.files.len() > 1).then(|| {
                    let roles = model.files.iter().map(|f| f.role.clone()).collect::<Vec<_>>().join(", ");
                    view! { <span class="badge" title=roles>{format!("{} files", model.files.len())}</span> }
                })}
            </td>
            <td>{bytes(model.size_bytes)}</td>
            <td class="muted small">{local_date(model.downloaded_at_ms)}</td>
            <td class="actions">
                <button class="btn btn-small m-info" disabled=model.gguf.is_none()
                    on:click=move |_| state.info.set(Some(info_model.clone()))>"GGUF info"</button>
                <button class="btn btn-small m-verify" disabled=move || busy.get() on:click=verify>"Verify"</button>
                {move || if confirming.get() {
                    view! {
                        <span class="confirm">
                            "Delete this model's file? "
                            <button class="btn btn-small btn-danger m-delete-confirm" disabled=move || busy.get() on:click={
                                let delete = delete.clone();
                                move |_| delete(false)
                            }>"Delete"</button>
                            <button class="btn btn-small m-delete-cancel" on:click=move |_| confirming.set(false)>"Keep"</button>
                        </span>
                    }.into_any()
                } else {
                    view! { <button class="btn btn-small m-delete" on:click=move |_| confirming.set(true)>"Delete…"</button> }.into_any()
                }}
            </td>
        </tr>
        {move || outcome.get().map(|r| view! {
            <tr class="model-outcome"><td colspan="5">
                {match r {
                    Ok(msg) => view! { <span class="ok m-verified">{msg}</span> }.into_any(),
                    Err(e) if e.code == ErrorCode::ModelInUse => {
                        let stop_and_delete = stop_and_delete.clone();
                        view! {
                            <ErrorBox error=e />
                            <button class="btn btn-small btn-danger m-stop-delete" disabled=move || busy.get()
                                on:click=move |_| stop_and_delete(true)>"Stop and delete"</button>
                        }.into_any()
                    }
                    Err(e) => view! { <ErrorBox error=e /> }.into_any(),
                }}
            </td></tr>
        })}
    }
}
