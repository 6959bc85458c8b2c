//! A server's log: level filter, debug toggle, follow, Clear, newest at the bottom.

use crate::components::card::Card;
use crate::components::local_time;
use ipc::event::{LogLevel, LogLine};
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
) -> impl IntoView {
    let min_level = RwSignal::new("info".to_owned());
    let show_debug = RwSignal::new(false);
    let follow = RwSignal::new(true);
    let cleared = RwSignal::new(0u64);
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
        let after = cleared.get();
        lines.with(|l| {
            l.iter()
                .filter(|x| x.at_ms >= after && rank(x.level) >= floor)
                .cloned()
                .collect::<Vec<_>>()
        })
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
                <button class="btn btn-small" on:click=move |_| cleared.set(js_sys::Date::now() as u64)>"Clear"</button>
            </div>
            <ol class="runtime-log" id=list_id node_ref=list_ref>
                {move || shown().into_iter().map(|l| view! {
                    <li class=format!("log-{:?}", l.level).to_lowercase()><span class="log-time">{local_time(l.at_ms)}</span>" "{l.message}</li>
                }).collect_view()}
            </ol>
        </Card>
    }
}
