use super::ModelsState;
use crate::api;
use crate::components::bar::ProgressBar;
use crate::components::card::Card;
use crate::components::error_box::ErrorBox;
use ipc::cmd;
use ipc::format::bytes;
use ipc::models::{DownloadState, DownloadStatus};
use leptos::prelude::*;
use leptos::task::spawn_local;

fn eta(secs: Option<f64>) -> String {
    match secs {
        Some(s) if s.is_finite() && s >= 0.0 => {
            let s = s.round() as u64;
            if s >= 3600 {
                format!("{}h {}m", s / 3600, s % 3600 / 60)
            } else if s >= 60 {
                format!("{}m {}s", s / 60, s % 60)
            } else {
                format!("{s}s")
            }
        }
        _ => "—".to_owned(),
    }
}

fn state_label(s: DownloadState) -> &'static str {
    match s {
        DownloadState::Queued => "queued",
        DownloadState::Running => "downloading",
        DownloadState::Paused => "paused",
        DownloadState::Failed => "failed",
        DownloadState::Done => "done",
    }
}

#[component]
pub fn DownloadQueue() -> impl IntoView {
    let state = expect_context::<ModelsState>();
    view! {
        <Card title="Downloads">
            {move || {
                let list = state.downloads.get();
                if list.is_empty() {
                    view! { <p class="muted" id="downloads-empty">"Nothing downloading."</p> }.into_any()
                } else {
                    list.into_iter().map(|d| view! { <DownloadRow d=d /> }).collect_view().into_any()
                }
            }}
        </Card>
    }
}

#[component]
fn DownloadRow(d: DownloadStatus) -> impl IntoView {
    let state = expect_context::<ModelsState>();
    let act = move |command: &'static str, id: String| {
        spawn_local(async move {
            let _ = api::download_control(command, id).await;
            state.refresh_downloads();
        })
    };
    let id = d.download_id.clone();
    let total = d.total_bytes.unwrap_or(0);
    let done = d.state == DownloadState::Done;
    let pct = if done { 100.0 } else { ipc::format::percent(d.downloaded_bytes, total) };
    let figures = match d.total_bytes {
        Some(t) => format!("{} / {}", bytes(d.downloaded_bytes), bytes(t)),
        None => bytes(d.downloaded_bytes),
    };
    let (i1, i2, i3, i4) = (id.clone(), id.clone(), id.clone(), id.clone());
    let finished = matches!(d.state, DownloadState::Done | DownloadState::Failed);
    view! {
        <div class="dl-row" data-id=id.clone() data-state=state_label(d.state)>
            <div class="dl-head">
                <strong>{d.name.clone()}</strong>
                <span class="badge">{d.kind.label()}</span>
                <span class=format!("badge state-{}", state_label(d.state))>{state_label(d.state)}</span>
                <span class="dl-percent">{format!("{pct:.0}%")}</span>
            </div>
            <ProgressBar percent=pct
                label=format!("{figures} · {}/s · ETA {}", bytes(d.bytes_per_sec as u64), eta(d.eta_secs)) />
            <div class="dl-actions">
                {matches!(d.state, DownloadState::Running | DownloadState::Queued).then(|| view! {
                    <button class="btn btn-small dl-pause" on:click=move |_| act(cmd::DOWNLOAD_PAUSE, i1.clone())>"Pause"</button>
                })}
                {matches!(d.state, DownloadState::Paused | DownloadState::Failed).then(|| view! {
                    <button class="btn btn-small dl-resume" on:click=move |_| act(cmd::DOWNLOAD_RESUME, i2.clone())>
                        {if d.state == DownloadState::Failed { "Retry" } else { "Resume" }}
                    </button>
                })}
                {(!finished).then(|| view! {
                    <button class="btn btn-small dl-cancel" on:click=move |_| act(cmd::DOWNLOAD_CANCEL, i3.clone())>"Cancel"</button>
                })}
                {finished.then(|| view! {
                    <button class="btn btn-small dl-clear" title="Remove this row (a failed download's partial file is deleted)"
                        on:click=move |_| act(cmd::DOWNLOAD_CLEAR, i4.clone())>"Clear"</button>
                })}
            </div>
            {d.error.clone().map(|e| view! { <ErrorBox error=e /> })}
        </div>
    }
}
