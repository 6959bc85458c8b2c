//! The LLM tab's test chat: a conversation (the history goes with each turn; the app trims it
//! to the context), Enter to send and Shift+Enter for a new line, Stop while a reply streams
//! (the request ends, the server keeps running), each reply's reasoning in a collapsible
//! block, and Clear. The window keeps at most [`KEEP_MESSAGES`] messages.

use crate::api;
use crate::components::card::Card;
use crate::components::error_box::ErrorBox;
use crate::feeds::LlmFeed;
use ipc::event::ServerState;
use ipc::llm::{ChatArgs, ChatMessage, ChatReply, LlmStatus};
use ipc::models::IdArgs;
use ipc::IpcError;
use leptos::prelude::*;
use leptos::task::spawn_local;

/// Messages the conversation keeps in the window (the oldest go first); the app sends fewer
/// when the context is smaller.
pub const KEEP_MESSAGES: usize = 100;

#[derive(Clone, Debug, PartialEq)]
struct Message {
    role: &'static str,
    content: String,
    reasoning: String,
    /// Under a reply: its tokens, the prompt's, whether it was stopped or history left out.
    meta: String,
}

async fn sleep_ms(ms: i32) {
    let p = js_sys::Promise::new(&mut |resolve, _| {
        let _ = window().set_timeout_with_callback_and_timeout_and_arguments_0(&resolve, ms);
    });
    let _ = wasm_bindgen_futures::JsFuture::from(p).await;
}

fn meta_of(r: &ChatReply) -> String {
    let mut parts = vec![format!("{} tokens", r.tokens)];
    if let Some(p) = r.prompt_tokens {
        parts.push(format!("prompt {p} tokens"));
    }
    if r.stopped {
        parts.push("stopped".into());
    }
    if r.dropped_messages > 0 {
        parts.push(format!("{} older messages left out to fit the context", r.dropped_messages));
    }
    parts.join(" · ")
}

#[component]
pub fn ChatCard(status: RwSignal<Option<LlmStatus>>) -> impl IntoView {
    let feed = expect_context::<LlmFeed>();
    let prompt = RwSignal::new(String::new());
    let max_tokens = RwSignal::new("128".to_owned());
    let temperature = RwSignal::new("0.7".to_owned());
    let history = RwSignal::new(Vec::<Message>::new());
    // The request id of the reply streaming now.
    let streaming = RwSignal::new(None::<String>);
    let error = RwSignal::new(None::<IpcError>);
    let running =
        move || status.with(|s| s.as_ref().is_some_and(|s| s.state == ServerState::Running));

    let send = move || {
        let text = prompt.get_untracked();
        if text.trim().is_empty() || streaming.get_untracked().is_some() || !running() {
            return;
        }
        let id = format!("ui-chat-{}", js_sys::Date::now() as u64);
        history.update(|h| {
            h.push(Message {
                role: "user",
                content: text.clone(),
                reasoning: String::new(),
                meta: String::new(),
            });
            let extra = h.len().saturating_sub(KEEP_MESSAGES);
            h.drain(..extra);
        });
        let messages: Vec<ChatMessage> = history.with_untracked(|h| {
            h.iter()
                .map(|m| ChatMessage { role: m.role.into(), content: m.content.clone() })
                .collect()
        });
        prompt.set(String::new());
        streaming.set(Some(id.clone()));
        error.set(None);
        let args = ChatArgs {
            messages,
            max_tokens: max_tokens.get_untracked().trim().parse().unwrap_or(128),
            temperature: temperature.get_untracked().trim().parse().unwrap_or(0.7),
            request_id: Some(id),
        };
        spawn_local(async move {
            match api::llm_chat(args).await {
                Ok(reply) => history.update(|h| {
                    h.push(Message {
                        role: "assistant",
                        meta: meta_of(&reply),
                        content: reply.content,
                        reasoning: reply.reasoning,
                    })
                }),
                Err(e) => {
                    // Nothing typed is lost: the message goes back into the box.
                    history.update(|h| {
                        if h.last().is_some_and(|m| m.role == "user") {
                            if let Some(m) = h.pop() {
                                prompt.set(m.content);
                            }
                        }
                    });
                    error.set(Some(e));
                }
            }
            streaming.set(None);
        });
    };
    let stop = move |_| {
        let Some(id) = streaming.get_untracked() else { return };
        spawn_local(async move {
            // Pressed at once after Send, the reply may not have reached the app yet: ask
            // again for a moment while it is still the one streaming.
            for _ in 0..20 {
                if api::llm_chat_stop(IdArgs { id: id.clone() }).await.unwrap_or(false)
                    || streaming.get_untracked().as_deref() != Some(id.as_str())
                {
                    return;
                }
                sleep_ms(100).await;
            }
        });
    };
    let clear = move |_| {
        history.set(Vec::new());
        error.set(None);
    };
    let on_key = move |ev: leptos::ev::KeyboardEvent| {
        if ev.key() == "Enter" && !ev.shift_key() && !ev.is_composing() {
            ev.prevent_default();
            send();
        }
    };
    // The newest reply (the one streaming, else the last one) carries the id `chat-reply`.
    let last_reply = move || {
        if streaming.get().is_some() {
            None
        } else {
            history.with(|h| h.iter().rposition(|m| m.role == "assistant"))
        }
    };

    view! {
        <Card title="Test chat">
            <div id="chat-log" class="chat-log">
                {move || {
                    let newest = last_reply();
                    history.get().into_iter().enumerate().map(|(i, m)| {
                        let class = format!("chat-msg {}", m.role);
                        let id = (Some(i) == newest).then_some("chat-reply");
                        view! {
                            <div class=class>
                                {(!m.reasoning.is_empty()).then(|| view! {
                                    <details class="reasoning"><summary>"Reasoning"</summary><pre class="mono small">{m.reasoning.clone()}</pre></details>
                                })}
                                <pre class="chat-text" id=id>{m.content.clone()}</pre>
                                {(!m.meta.is_empty()).then(|| view! { <span class="chat-meta muted small">{m.meta.clone()}</span> })}
                            </div>
                        }
                    }).collect_view()
                }}
                {move || streaming.get().map(|id| {
                    let (content, reasoning) = feed.chat.with(|r| {
                        if r.request_id == id { (r.content.clone(), r.reasoning.clone()) } else { Default::default() }
                    });
                    view! {
                        <div class="chat-msg assistant streaming">
                            {(!reasoning.is_empty()).then(|| view! {
                                <details class="reasoning" open=true><summary>"Reasoning"</summary><pre class="mono small">{reasoning}</pre></details>
                            })}
                            <pre class="chat-text" id="chat-reply">{content}</pre>
                        </div>
                    }
                })}
            </div>
            <label class="field"><span>"Message (Enter sends, Shift+Enter for a new line)"</span>
                <textarea id="chat-input" rows="2" prop:value=prompt on:input=move |ev| prompt.set(event_target_value(&ev)) on:keydown=on_key></textarea>
            </label>
            <div class="toolbar">
                <label class="field inline"><span>"Max tokens"</span><input id="chat-max-tokens" type="text" size="5" prop:value=max_tokens on:input=move |ev| max_tokens.set(event_target_value(&ev)) /></label>
                <label class="field inline"><span>"Temperature"</span><input type="text" size="4" prop:value=temperature on:input=move |ev| temperature.set(event_target_value(&ev)) /></label>
                <button id="chat-send" class="btn btn-primary" disabled=move || streaming.get().is_some() || !running() on:click=move |_| send()>
                    {move || if streaming.get().is_some() { "Answering…" } else { "Send" }}
                </button>
                <button id="chat-stop" class="btn" disabled=move || streaming.get().is_none() on:click=stop>"Stop"</button>
                <button id="chat-clear" class="btn" disabled=move || streaming.get().is_some() || history.with(Vec::is_empty) on:click=clear>"Clear"</button>
            </div>
            {move || error.get().map(|e| view! { <ErrorBox error=e /> })}
        </Card>
    }
}
