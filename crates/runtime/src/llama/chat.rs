//! The test chat: a conversation sent to llama-server's `/v1/chat/completions` each turn,
//! trimmed to the context, streamed back piece by piece as `ChatDelta` events, and stoppable.
//!
//! The rules are pure ([`trim_history`], [`read_chunk`]) and table-tested; [`stream_reply`] is
//! the I/O around them. Stopping drops the response stream, which closes the connection:
//! llama-server sees that and ends the generation, and the server itself keeps running.

use crate::events::EventBus;
use crate::net::local_client;
use crate::{Result, RuntimeError};
use ipc::llm::{ChatArgs, ChatMessage, ChatReply};
use ipc::AppEvent;
use tokio::sync::oneshot;

/// Tokens a chat template adds around each message (role markers, separators): a generous
/// figure for the templates llama.cpp ships.
const TEMPLATE_TOKENS_PER_MESSAGE: u32 = 8;

/// How long counting a turn's messages may take before the guess stands in.
const COUNT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Messages sent in one turn at most; older ones are dropped first.
pub const MAX_MESSAGES: usize = 100;

/// A guess at the tokens of `text` for when the server cannot count them: about three bytes a
/// token, plus the template's share. Only a fallback: a model's own output can take far more
/// tokens than that when it is read back (the test model's replies took about one a byte).
pub fn estimate_tokens(text: &str) -> u32 {
    (text.len() as u32).div_ceil(3) + TEMPLATE_TOKENS_PER_MESSAGE
}

/// Each message's tokens by the model's own tokenizer (llama-server's `/tokenize`), plus the
/// template's share; a message the server does not count gets [`estimate_tokens`].
async fn count_tokens(client: &reqwest::Client, port: u16, messages: &[ChatMessage]) -> Vec<u32> {
    let url = format!("http://127.0.0.1:{port}/tokenize");
    let mut out = Vec::with_capacity(messages.len());
    for m in messages {
        let body = serde_json::json!({ "content": m.content }).to_string();
        let counted = async {
            let r = client
                .post(&url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .ok()?;
            let v: serde_json::Value = serde_json::from_slice(&r.bytes().await.ok()?).ok()?;
            Some(v.get("tokens")?.as_array()?.len() as u32 + TEMPLATE_TOKENS_PER_MESSAGE)
        }
        .await;
        out.push(counted.unwrap_or_else(|| estimate_tokens(&m.content)));
    }
    out
}

/// The history to send so that the prompt and the reply fit in `context` tokens: every leading
/// system message, then the newest messages that fit in `context - max_tokens`, whole turns
/// only (a reply is never sent without the question before it). The newest message is always
/// sent, even when it alone is too long: the server then says why it cannot answer. Returns the
/// messages and how many were left out.
/// `tokens[i]` is what message `i` takes in the prompt.
pub fn trim_history(
    messages: &[ChatMessage],
    tokens: &[u32],
    context: u32,
    max_tokens: u32,
) -> (Vec<ChatMessage>, u32) {
    let system = messages.iter().take_while(|m| m.role == "system").count();
    let (head, rest) = messages.split_at(system);
    let tokens_of = |i: usize| tokens.get(i).copied().unwrap_or(u32::MAX / 4);
    let budget = context.saturating_sub(max_tokens);
    let mut used: u32 = (0..system).map(tokens_of).fold(0, u32::saturating_add);
    let mut keep = rest.len();
    for i in (0..rest.len()).rev() {
        let t = tokens_of(system + i);
        let newest = i + 1 == rest.len();
        if !newest && (used.saturating_add(t) > budget || rest.len() - i > MAX_MESSAGES) {
            break;
        }
        used = used.saturating_add(t);
        keep = i;
    }
    // Start at a user message: an assistant reply alone at the front answers nothing.
    while keep + 1 < rest.len() && rest[keep].role != "user" {
        keep += 1;
    }
    let mut out = head.to_vec();
    out.extend_from_slice(&rest[keep..]);
    (out, keep as u32)
}

/// What one `data:` line of the stream holds.
#[derive(Debug, Default, PartialEq)]
pub struct Chunk {
    pub content: String,
    pub reasoning: String,
    /// The prompt's length as the server counted it (the last chunk, in `usage`).
    pub prompt_tokens: Option<u32>,
    /// `[DONE]`: nothing more follows.
    pub done: bool,
}

/// Reads one line of llama-server's event stream; `None` for lines that carry nothing
/// (comments, blank lines, keep-alives, JSON it cannot read).
pub fn read_chunk(line: &str) -> Option<Chunk> {
    let data = line.trim().strip_prefix("data:")?.trim();
    if data == "[DONE]" {
        return Some(Chunk { done: true, ..Chunk::default() });
    }
    let v: serde_json::Value = serde_json::from_str(data).ok()?;
    let delta = v.pointer("/choices/0/delta");
    let text = |k: &str| {
        delta.and_then(|d| d.get(k)).and_then(|s| s.as_str()).unwrap_or_default().to_owned()
    };
    let prompt_tokens =
        v.pointer("/usage/prompt_tokens").and_then(|n| n.as_u64()).map(|n| n as u32);
    let chunk = Chunk {
        content: text("content"),
        reasoning: text("reasoning_content"),
        prompt_tokens,
        done: false,
    };
    (chunk != Chunk::default()).then_some(chunk)
}

/// The message of an error answer in OpenAI's shape (`{"error": {"message": ...}}`), or the
/// body itself, cut short.
fn error_message(body: &[u8]) -> String {
    let v: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    v.as_ref()
        .and_then(|v| v.pointer("/error/message"))
        .and_then(|m| m.as_str())
        .map(str::to_owned)
        .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned())
}

/// Sends the turn to the server on `port` and streams the reply as `ChatDelta` events until it
/// ends or `stop` fires; a stopped reply is returned with what arrived and `stopped` set.
pub async fn stream_reply(
    port: u16,
    context: u32,
    args: ChatArgs,
    request_id: String,
    events: &EventBus,
    mut stop: oneshot::Receiver<()>,
) -> Result<ChatReply> {
    use futures_util::StreamExt;
    let client = local_client()?;
    let url = format!("http://127.0.0.1:{port}/v1/chat/completions");
    let mut reply = ChatReply {
        request_id: request_id.clone(),
        content: String::new(),
        reasoning: String::new(),
        tokens: 0,
        prompt_tokens: None,
        dropped_messages: 0,
        stopped: false,
    };
    // Counting, trimming and sending, all of it stoppable (a server that does not answer must
    // not hold a Stop back).
    let send = async {
        let last = args.messages.len().saturating_sub(MAX_MESSAGES);
        let recent = &args.messages[last..];
        let tokens =
            match tokio::time::timeout(COUNT_TIMEOUT, count_tokens(&client, port, recent)).await {
                Ok(t) => t,
                Err(_) => recent.iter().map(|m| estimate_tokens(&m.content)).collect(),
            };
        let (messages, dropped) = trim_history(recent, &tokens, context, args.max_tokens);
        let body = serde_json::json!({
            "messages": messages,
            "max_tokens": args.max_tokens,
            "temperature": args.temperature,
            "stream": true,
            "stream_options": { "include_usage": true },
        });
        let r = client
            .post(&url)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await;
        (r, dropped + last as u32)
    };
    let resp = tokio::select! {
        (r, dropped) = send => {
            reply.dropped_messages = dropped;
            r.map_err(|e| RuntimeError::Network { url: url.clone(), detail: e.to_string() })?
        }
        _ = &mut stop => {
            reply.stopped = true;
            return Ok(finish(events, reply));
        }
    };
    if !resp.status().is_success() {
        let status = resp.status().as_u16();
        let body = resp.bytes().await.unwrap_or_default();
        return Err(RuntimeError::InvalidInput(format!(
            "llama-server refused the message (HTTP {status}): {}; Clear starts a new \
             conversation, and fewer max tokens leave more room for it",
            error_message(&body)
        )));
    }
    let mut buf = Vec::new();
    let mut stream = resp.bytes_stream();
    'read: loop {
        let chunk = tokio::select! {
            c = stream.next() => c,
            _ = &mut stop => {
                // Dropping the stream closes the connection: the server ends this generation.
                reply.stopped = true;
                break 'read;
            }
        };
        let Some(chunk) = chunk else { break };
        let chunk =
            chunk.map_err(|e| RuntimeError::Network { url: url.clone(), detail: e.to_string() })?;
        buf.extend_from_slice(&chunk);
        while let Some(nl) = buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buf.drain(..=nl).collect();
            let Some(c) = read_chunk(&String::from_utf8_lossy(&line)) else { continue };
            if c.done {
                break 'read;
            }
            reply.prompt_tokens = c.prompt_tokens.or(reply.prompt_tokens);
            if c.content.is_empty() && c.reasoning.is_empty() {
                continue;
            }
            reply.tokens += 1;
            reply.content.push_str(&c.content);
            reply.reasoning.push_str(&c.reasoning);
            events.emit(AppEvent::ChatDelta {
                request_id: request_id.clone(),
                content: c.content,
                reasoning: c.reasoning,
                done: false,
            });
        }
    }
    Ok(finish(events, reply))
}

fn finish(events: &EventBus, reply: ChatReply) -> ChatReply {
    events.emit(AppEvent::ChatDelta {
        request_id: reply.request_id.clone(),
        content: String::new(),
        reasoning: String::new(),
        done: true,
    });
    reply
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(role: &str, content: &str) -> ChatMessage {
        ChatMessage { role: role.into(), content: content.into() }
    }

    fn roles(v: &[ChatMessage]) -> String {
        v.iter()
            .map(|m| format!("{}:{}", &m.role[..1], m.content.len()))
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn estimates_are_cautious() {
        assert_eq!(estimate_tokens(""), 8);
        assert_eq!(estimate_tokens("abc"), 9);
        assert_eq!(estimate_tokens("abcd"), 10);
        assert_eq!(estimate_tokens(&"x".repeat(300)), 108);
    }

    #[test]
    fn the_history_is_trimmed_to_the_context() {
        let long = "x".repeat(300); // 108 tokens each
        let short = "hi"; // 9 tokens
                          // (messages, context, max tokens, expected "role:len" kept, dropped)
        let cases: Vec<(Vec<ChatMessage>, u32, u32, &str, u32)> = vec![
            // Everything fits.
            (
                vec![m("user", short), m("assistant", short), m("user", short)],
                512,
                128,
                "u:2 a:2 u:2",
                0,
            ),
            // The oldest turn goes first; whole turns only.
            (
                vec![
                    m("user", &long),
                    m("assistant", &long),
                    m("user", &long),
                    m("assistant", &long),
                    m("user", short),
                ],
                400,
                128,
                "u:300 a:300 u:2",
                2,
            ),
            // A system message stays whatever is dropped after it.
            (
                vec![m("system", short), m("user", &long), m("assistant", &long), m("user", &long)],
                300,
                128,
                "s:2 u:300",
                2,
            ),
            // The newest message goes even when it alone is too long.
            (vec![m("user", short), m("assistant", short), m("user", &long)], 100, 64, "u:300", 2),
            // No reply is sent without its question: an assistant message is never first.
            (vec![m("user", &long), m("assistant", short), m("user", short)], 150, 128, "u:2", 2),
            // A context smaller than the reply leaves room for the newest message only.
            (vec![m("user", short), m("assistant", short), m("user", short)], 64, 128, "u:2", 2),
        ];
        for (msgs, ctx, max, want, dropped) in cases {
            let tokens: Vec<u32> = msgs.iter().map(|m| estimate_tokens(&m.content)).collect();
            let (kept, n) = trim_history(&msgs, &tokens, ctx, max);
            assert_eq!((roles(&kept).as_str(), n), (want, dropped), "context {ctx}, max {max}");
        }
    }

    #[test]
    fn at_most_max_messages_are_sent() {
        let msgs: Vec<ChatMessage> = (0..MAX_MESSAGES + 11)
            .map(|i| m(if i % 2 == 0 { "user" } else { "assistant" }, "a"))
            .collect();
        let tokens = vec![1; msgs.len()];
        let (kept, dropped) = trim_history(&msgs, &tokens, u32::MAX / 2, 0);
        assert!(kept.len() <= MAX_MESSAGES, "{}", kept.len());
        assert_eq!(kept[0].role, "user");
        assert_eq!(kept.len() as u32 + dropped, msgs.len() as u32);
    }

    #[test]
    fn stream_lines() {
        let piece = r#"data: {"choices":[{"index":0,"delta":{"content":"Hel"}}],"object":"chat.completion.chunk"}"#;
        assert_eq!(read_chunk(piece), Some(Chunk { content: "Hel".into(), ..Chunk::default() }));
        let think = r#"data: {"choices":[{"delta":{"reasoning_content":"hmm"}}]}"#;
        assert_eq!(read_chunk(think).unwrap().reasoning, "hmm");
        // llama-server's last chunk: an empty delta, the usage and timings.
        let last = r#"data: {"choices":[{"finish_reason":"stop","index":0,"delta":{}}],"usage":{"completion_tokens":5,"prompt_tokens":31,"total_tokens":36},"timings":{"prompt_n":31}}"#;
        assert_eq!(read_chunk(last), Some(Chunk { prompt_tokens: Some(31), ..Chunk::default() }));
        assert_eq!(read_chunk("data: [DONE]"), Some(Chunk { done: true, ..Chunk::default() }));
        for nothing in [
            "",
            ": keep-alive",
            "data: {not json",
            r#"data: {"choices":[{"delta":{"role":"assistant","content":null}}]}"#,
        ] {
            assert_eq!(read_chunk(nothing), None, "{nothing:?}");
        }
    }

    #[test]
    fn error_answers_say_why() {
        let body = br#"{"error":{"code":400,"message":"the request exceeds the available context size","type":"exceed_context_size_error"}}"#;
        assert_eq!(error_message(body), "the request exceeds the available context size");
        assert_eq!(error_message(b"plain text"), "plain text");
    }
}
