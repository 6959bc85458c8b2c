//! A server's log: level filter, debug toggle, follow, Clear (which empties the log's files
//! after a confirmation), newest at the bottom.

use crate::components::card::Card;
use crate::components::local_time;
use ipc::event::{LogLevel, LogLine, ServerKind};
use ipc::llm::LlmLogs;
use ipc::IpcError;
use leptos::prelude::*;
use leptos::task::spawn_local;
use std::future::Future;

/// A server tab's status: read now and again whenever `ticks` moves (the server's events);
/// answers the refresh for buttons that change the server. A failed read lands in `error`.
pub fn server_status<T, Fut>(
    ticks: RwSignal<u64>,
    status: RwSignal<Option<T>>,
    error: RwSignal<Option<IpcError>>,
    fetch: fn() -> Fut,
) -> impl Fn() + Copy + 'static
where
    T: Send + Sync + 'static,
    Fut: Future<Output = Result<T, IpcError>> + 'static,
{
    let refresh = move || {
        spawn_local(async move {
            match fetch().await {
                Ok(s) => status.set(Some(s)),
                Err(e) => error.set(Some(e)),
            }
        })
    };
    refresh();
    Effect::new(move |_| {
        if ticks.get() > 0 {
            refresh();
        }
    });
    refresh
}

/// Fills `lines` with what the server logged before the window listened (if events have not
/// filled it first).
pub fn preload(
    lines: RwSignal<Vec<LogLine>>,
    fetch: impl Future<Output = Result<LlmLogs, IpcError>> + 'static,
) {
    spawn_local(async move {
        if let Ok(l) = fetch.await {
            lines.update(|lines| {
                if lines.is_empty() {
                    *lines = l.lines;
                }
            });
        }
    });
}

/// Shows `lines` (fed by the tab's events). `list_id` names the list; the controls' ids
/// derive from it.
#[component]
pub fn LogCard(
    #[prop(into)] title: String,
    list_id: &'static str,
    lines: RwSignal<Vec<LogLine>>,
    /// Whose log it is: Clear empties its files too, after a confirmation.
    server: ServerKind,
) -> impl IntoView {
    let confirming = RwSignal::new(false);
    let error = RwSignal::new(None::<IpcError>);
    let clear = move |_| {
        confirming.set(false);
        spawn_local(async move {
            match crate::api::server_log_clear(server).await {
                Ok(()) => {
                    error.set(None);
                    lines.set(Vec::new());
                }
                Err(e) => error.set(Some(e)),
            }
        });
    };
    let min_level = RwSignal::new("info".to_owned());
    let show_debug = RwSignal::new(false);
    let follow = RwSignal::new(true);
    let list_ref = NodeRef::<leptos::html::Ol>::new();
    let rank = |l: LogLevel| match l {
        LogLevel::Debug => 0,
        LogLevel::Info => 1,
        LogLevel::Warn => 2,
        LogLevel::Error => 3,
    };
    let shown = move || {
        let floor = match min_level.get().as_str() {
            "warn" => 2,
            "error" => 3,
            _ => 1,
        };
        let floor = if show_debug.get() { 0 } else { floor };
        lines.with(|l| l.iter().filter(|x| rank(x.level) >= floor).cloned().collect::<Vec<_>>())
    };
    Effect::new(move |_| {
        let _ = shown();
        if follow.get_untracked() {
            if let Some(el) = list_ref.get() {
                el.set_scroll_top(el.scroll_height());
            }
        }
    });
    view! {
        <Card title=title>
            <div class="toolbar">
                <select id=format!("{list_id}-level") on:change=move |ev| min_level.set(event_target_value(&ev)) prop:value=min_level>
                    <option value="info">"info and above"</option><option value="warn">"warnings and errors"</option><option value="error">"errors"</option>
                </select>
                <label class="check"><input id=format!("{list_id}-debug") type="checkbox" prop:checked=show_debug on:change=move |ev| show_debug.set(event_target_checked(&ev)) />" show debug"</label>
                <label class="check"><input type="checkbox" prop:checked=follow on:change=move |ev| follow.set(event_target_checked(&ev)) />" auto-scroll"</label>
                <button id=format!("{list_id}-clear") class="btn btn-small" disabled=move || confirming.get() on:click=move |_| confirming.set(true)>"Clear"</button>
            </div>
            {move || confirming.get().then(|| view! {
                <div class="confirm small" id=format!("{list_id}-clear-ask")>
                    "Empty this log, its file and its rotated copies on disk? This cannot be undone. "
                    <button id=format!("{list_id}-clear-confirm") class="btn btn-small btn-danger" on:click=clear>"Clear the log"</button>
                    <button class="btn btn-small" on:click=move |_| confirming.set(false)>"Keep it"</button>
                </div>
            })}
            {move || error.get().map(|e| view! { <crate::components::error_box::ErrorBox error=e /> })}
            <ol class="runtime-log" id=list_id node_ref=list_ref>
                // Keyed: a new line adds one row; the rows already shown are not made again.
                <For
                    each=move || shown().into_iter().enumerate()
                    key=|(i, l)| (*i, l.at_ms)
                    children=|(_, l)| view! {
                        <li class=format!("log-{:?}", l.level).to_lowercase()><span class="log-time">{local_time(l.at_ms)}</span>" "{l.message}</li>
                    }
                />
            </ol>
        </Card>
    }
}
