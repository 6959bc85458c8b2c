//! The text routes (`/v1/chat/completions`, `/v1/completions`, `/v1/embeddings`): the model
//! the request names is made to run ([`super::route::plan_text`] decides: forward, start, swap
//! after the old model's requests finish, wait for a start under way or for the LLM's return
//! after an image), then the body goes to its llama-server as it is and the answer comes back
//! as it arrives — a stream piece by piece, never gathered whole. A client that goes away drops
//! the upstream request with it, which llama-server takes as a cancel.

use super::openai::{resolve, ApiError};
use super::route::{plan_text, retry_after, LlmNow, TextPlan, Want};
use super::server::{installed, loaded, read_json, wait_event, Endpoint, Rec};
use crate::RuntimeError;
use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{header, Uri};
use axum::response::{IntoResponse, Response};
use futures_util::Stream;
use ipc::event::ServerKind;
use ipc::llm::LlmConfig;
use ipc::models::ModelKind;
use ipc::AppEvent;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

pub(super) async fn handle(
    State(ep): State<Endpoint>,
    uri: Uri,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let path = uri.path().to_owned();
    let mut rec = ep.begin(format!("POST {path}"));
    let (body, value) = match read_json(body, ep.config().body_limit) {
        Ok(v) => v,
        Err(e) => return rec.fail(e),
    };
    let name = match value.get("model") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) => Some(s.as_str()),
        Some(_) => return rec.fail(ApiError::bad_field("model", "`model` must be a string")),
    };
    let models = match installed(&ep).await {
        Ok(m) => m,
        Err(e) => return rec.fail(e),
    };
    let loaded = loaded(&ep);
    let loaded: Vec<&str> = loaded.iter().map(String::as_str).collect();
    let model = match resolve(name, &models, ModelKind::Llm, &loaded, &path) {
        Ok(m) => m.id.clone(),
        Err(e) => return rec.fail(e),
    };
    rec.model(&model);
    let want = Want { model: &model, embeddings: path == "/v1/embeddings" };
    let base = match ep.ready(want, &mut rec).await {
        Ok(b) => b,
        Err(e) => return rec.fail(e),
    };
    ep.forward(&base, &path, body, &model, rec).await
}

/// Wakes a waiting request: the LLM server changed state, or the endpoint did.
fn llm_moved(e: &AppEvent) -> bool {
    matches!(e, AppEvent::ServerState { server: ServerKind::Llm, .. } | AppEvent::EndpointChanged)
}

/// What the endpoint sees of the LLM server now.
fn now_of<'a>(ep: &Endpoint, st: &'a ipc::llm::LlmStatus) -> LlmNow<'a> {
    LlmNow {
        state: st.state,
        model_id: st.model_id.as_deref(),
        in_flight: st.model_id.as_deref().map_or(0, |m| ep.in_flight_of(m)),
        embeddings: st.settings.as_ref().is_some_and(|s| s.embeddings),
    }
}

/// How a model is named in notes: "tiny", or "tiny (embeddings)".
fn label(model: &str, embeddings: bool) -> String {
    if embeddings {
        format!("{model} (embeddings)")
    } else {
        model.to_owned()
    }
}

impl Endpoint {
    /// Makes `want` the running text model, or waits for it, and answers its server's base URL.
    async fn ready(&self, want: Want<'_>, rec: &mut Rec) -> Result<String, ApiError> {
        let config = self.config();
        let began = Instant::now();
        let start_deadline = began + config.start_wait;
        let reload_deadline = began + Duration::from_secs(self.settings().wait_secs.into());
        let mut events = self.inner.events.subscribe();
        let mut told_reload = false;
        let key = (want.model.to_owned(), want.embeddings);
        loop {
            let swapping = self.inner.swapping.lock().unwrap().clone();
            if let Some(to) = swapping.filter(|to| *to != key) {
                wait_event(&mut events, start_deadline, llm_moved).await.map_err(|()| {
                    ApiError::busy(format!("the LLM server is still swapping to {}", to.0), 30)
                })?;
                continue;
            }
            let st = self.inner.llm.status();
            let now = now_of(self, &st);
            match plan_text(want, now) {
                TextPlan::Forward => {
                    if let Some(port) = st.port {
                        if let Some((m, last)) = self.inner.started.lock().unwrap().as_mut() {
                            if m == want.model {
                                *last = Instant::now();
                            }
                        }
                        let host = st
                            .settings
                            .as_ref()
                            .map(|s| s.host.as_str())
                            .filter(|h| !matches!(*h, "0.0.0.0" | "::" | ""))
                            .unwrap_or("127.0.0.1");
                        let host =
                            if host.contains(':') { format!("[{host}]") } else { host.to_owned() };
                        return Ok(format!("http://{host}:{port}"));
                    }
                    wait_event(&mut events, start_deadline, llm_moved)
                        .await
                        .map_err(|()| ApiError::busy("the LLM server has no port", 5))?;
                }
                plan @ (TextPlan::Start | TextPlan::Swap { .. }) => {
                    let to = label(want.model, want.embeddings);
                    rec.note(match plan {
                        TextPlan::Swap { from, .. } => {
                            format!("swapped {} for {to}", label(&from, now.embeddings))
                        }
                        _ => format!("started {to}"),
                    });
                    self.switch_once(&key).await?;
                }
                TextPlan::WaitForStart if self.inner.starts.is_running(&key) => {
                    self.switch_once(&key).await?;
                }
                TextPlan::WaitForStart | TextPlan::WaitThenPlan => {
                    wait_event(&mut events, start_deadline, llm_moved).await.map_err(|()| {
                        ApiError::busy("the LLM server is still starting or stopping", 30)
                    })?;
                }
                TextPlan::WaitForReload => {
                    if !told_reload {
                        told_reload = true;
                        rec.note("waited for the LLM to come back after an image");
                        self.note(format!(
                            "a request for {} waits for the LLM to come back after an image",
                            want.model
                        ));
                    }
                    wait_event(&mut events, reload_deadline, llm_moved).await.map_err(|()| {
                        ApiError::busy(
                            format!(
                                "the LLM is paused while an image is made and did not come back within {} s; try again",
                                self.settings().wait_secs
                            ),
                            retry_after(self.image_time_left()),
                        )
                    })?;
                }
            }
        }
    }

    /// The start or swap to `key`, shared by every request that needs it.
    async fn switch_once(&self, key: &(String, bool)) -> Result<(), ApiError> {
        let me = self.clone();
        let k = key.clone();
        self.inner.starts.run(key.clone(), || async move { me.switch(k).await }).await
    }

    /// How long the image job in progress expects to take still (its progress's ETA), which is
    /// about when the paused LLM comes back.
    fn image_time_left(&self) -> Option<Duration> {
        let server = &self.inner.diffusion;
        let id = server.status().active_job?;
        let eta = server.job(&id).ok()?.progress?.eta_secs?;
        (eta.is_finite() && eta >= 0.0).then(|| Duration::from_secs_f32(eta))
    }

    /// The one start or swap to `key` (run once however many requests wait for it).
    async fn switch(self, key: (String, bool)) -> Result<(), ApiError> {
        let _one = self.inner.switch.lock().await;
        let (model, embeddings) = (key.0.as_str(), key.1);
        let st = self.inner.llm.status();
        let now = now_of(&self, &st);
        let to = label(model, embeddings);
        match plan_text(Want { model, embeddings }, now) {
            TextPlan::Swap { from, drain } => {
                *self.inner.swapping.lock().unwrap() = Some(key.clone());
                let _done = Swapped(&self);
                let wait = if drain {
                    format!(" after its {} request(s) in progress", now.in_flight)
                } else {
                    String::new()
                };
                self.note(format!("swapping {} for {to}{wait}", label(&from, now.embeddings)));
                self.drain(&from).await;
                self.remember_running();
                self.inner.llm.stop().await.map_err(|e| start_failed(&from, e))?;
                self.start(model, embeddings).await
            }
            TextPlan::Start => {
                self.note(format!("starting {to} for a request"));
                self.start(model, embeddings).await
            }
            // Someone else moved the server meanwhile: the caller plans again.
            _ => Ok(()),
        }
    }

    /// Waits (at most the drain time) until no request to `model` is in progress.
    async fn drain(&self, model: &str) {
        let until = Instant::now() + self.config().drain;
        loop {
            let drained = self.inner.drained.notified();
            if self.in_flight_of(model) == 0 || Instant::now() >= until {
                return;
            }
            tokio::select! {
                _ = drained => {}
                _ = tokio::time::sleep_until(until.into()) => {}
            }
        }
    }

    /// Starts `model` with the settings it last ran with, else auto-configured ones.
    async fn start(&self, model: &str, embeddings: bool) -> Result<(), ApiError> {
        let remembered = self.inner.remembered.lock().unwrap().get(model).cloned();
        let cfg = remembered
            .or_else(|| self.inner.llm.last_config().filter(|c| c.model_id == model))
            .unwrap_or_else(|| LlmConfig {
                model_id: model.to_owned(),
                port: self.config().llm_port,
                auto_restart: true,
                ..Default::default()
            });
        let cfg = LlmConfig { embeddings: Some(embeddings), ..cfg };
        self.inner.llm.start(cfg).await.map_err(|e| start_failed(model, e))?;
        *self.inner.started.lock().unwrap() = Some((model.to_owned(), Instant::now()));
        Ok(())
    }

    /// Sends the request to llama-server and answers with its answer as it arrives.
    async fn forward(
        &self,
        base: &str,
        path: &str,
        body: Bytes,
        model: &str,
        rec: Rec,
    ) -> Response {
        let flight = InFlight::new(self, model);
        let sent = self
            .inner
            .http
            .post(format!("{base}{path}"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await;
        let resp = match sent {
            Ok(r) => r,
            Err(e) => {
                return rec.fail(ApiError::server(
                    502,
                    "upstream_unreachable",
                    format!("the LLM server for {model} did not answer: {e}"),
                ))
            }
        };
        let status = resp.status();
        let content_type = resp.headers().get(header::CONTENT_TYPE).cloned();
        let sse =
            content_type.as_ref().is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
        let tap = Tap {
            inner: Box::pin(resp.bytes_stream()),
            tail: Vec::new(),
            rec: Some(rec),
            status: status.as_u16(),
            _flight: flight,
        };
        let mut out = Response::builder().status(status);
        if let Some(ct) = content_type {
            out = out.header(header::CONTENT_TYPE, ct);
        }
        if sse {
            out = out.header(header::CACHE_CONTROL, "no-cache").header("x-accel-buffering", "no");
        }
        out.body(Body::from_stream(tap)).unwrap_or_else(|e| {
            ApiError::server(500, "internal_error", e.to_string()).into_response()
        })
    }
}

fn start_failed(model: &str, e: RuntimeError) -> ApiError {
    if let RuntimeError::Busy(why) = &e {
        return ApiError::busy(why.clone(), retry_after(None));
    }
    let ipc = e.to_ipc();
    let remedy = if ipc.remedy.is_empty() { String::new() } else { format!(" {}", ipc.remedy) };
    ApiError::server(
        500,
        "model_start_failed",
        format!("{model} did not start: {}.{remedy}", ipc.message),
    )
}

/// Clears "swapping" however the swap ends.
struct Swapped<'a>(&'a Endpoint);

impl Drop for Swapped<'_> {
    fn drop(&mut self) {
        *self.0.inner.swapping.lock().unwrap() = None;
        self.0.inner.events.emit(AppEvent::EndpointChanged);
    }
}

/// A request to `model` in progress, from its forward to the end (or drop) of its answer.
struct InFlight {
    ep: Endpoint,
    model: String,
}

impl InFlight {
    fn new(ep: &Endpoint, model: &str) -> Self {
        *ep.inner.in_flight.lock().unwrap().entry(model.to_owned()).or_default() += 1;
        Self { ep: ep.clone(), model: model.to_owned() }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        {
            let mut all = self.ep.inner.in_flight.lock().unwrap();
            if let Some(n) = all.get_mut(&self.model) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    all.remove(&self.model);
                }
            }
        }
        self.ep.inner.drained.notify_waiters();
    }
}

/// The upstream answer passed on piece by piece; keeps its last bytes to read the token count
/// from, and writes the log line when it ends (or, dropped early, as a client that left).
struct Tap {
    inner: Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>,
    tail: Vec<u8>,
    rec: Option<Rec>,
    status: u16,
    _flight: InFlight,
}

/// How many of the last bytes are kept for the token count.
const TAIL: usize = 8 << 10;

impl Stream for Tap {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        match this.inner.as_mut().poll_next(cx) {
            Poll::Ready(Some(Ok(piece))) => {
                this.tail.extend_from_slice(&piece);
                if this.tail.len() > 2 * TAIL {
                    this.tail.drain(..this.tail.len() - TAIL);
                }
                Poll::Ready(Some(Ok(piece)))
            }
            Poll::Ready(Some(Err(e))) => {
                if let Some(mut rec) = this.rec.take() {
                    rec.note(format!("the LLM server's answer broke off: {e}"));
                    rec.end(502, None, None);
                }
                Poll::Ready(Some(Err(std::io::Error::other(e))))
            }
            Poll::Ready(None) => {
                if let Some(rec) = this.rec.take() {
                    rec.end(this.status, tokens_in(&this.tail), None);
                }
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// The reply's token count from the end of llama-server's answer: OpenAI's `usage`
/// (`completion_tokens`; `prompt_tokens` for embeddings) or llama-server's `timings`.
fn tokens_in(tail: &[u8]) -> Option<u32> {
    let text = String::from_utf8_lossy(tail);
    ["\"completion_tokens\":", "\"predicted_n\":", "\"prompt_tokens\":"].iter().find_map(|key| {
        let at = text.rfind(key)? + key.len();
        let digits: String =
            text[at..].trim_start().chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::tokens_in;

    #[test]
    fn the_token_count_is_read_from_the_end_of_the_answer() {
        let cases: &[(&str, Option<u32>)] = &[
            (r#"{"choices":[],"usage":{"completion_tokens":12,"prompt_tokens":5}}"#, Some(12)),
            ("data: {\"choices\":[]}\n\ndata: {\"timings\":{\"predicted_n\": 31}}\n\ndata: [DONE]\n\n", Some(31)),
            (r#"{"data":[{"embedding":[0.1]}],"usage":{"prompt_tokens":7,"total_tokens":7}}"#, Some(7)),
            ("data: {\"usage\":{\"completion_tokens\":3}}\ndata: {\"usage\":{\"completion_tokens\":9}}", Some(9)),
            ("data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}", None),
            ("", None),
        ];
        for (tail, want) in cases {
            assert_eq!(tokens_in(tail.as_bytes()), *want, "{tail}");
        }
    }
}
