//! The endpoint itself: one HTTP server on 127.0.0.1 ([`ipc::endpoint::DEFAULT_PORT`], the
//! next free port when it is taken) that answers OpenAI's routes for every installed model,
//! opened at launch unless turned off, and its request log. The routes' work lives in
//! [`super::text`] (start, swap, wait, forward) and [`super::images`]; the checks every request
//! passes (Host, Origin, bearer token) are the image job API's ([`crate::net::guard`]).

use super::files::Files;
use super::once::Once;
use super::openai::ApiError;
use crate::diffusion::DiffusionServer;
use crate::llama::LlamaServer;
use crate::models::ModelStore;
use crate::net::guard;
use crate::stored::endpoint as stored;
use crate::{now_ms, EventBus, Result, RuntimeError};
use axum::extract::{DefaultBodyLimit, Path as UrlPath, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use ipc::endpoint::{EndpointRequest, EndpointSettings, EndpointStatus};
use ipc::llm::LlmConfig;
use ipc::AppEvent;
use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{oneshot, Notify};

/// The installed models as last read, with the registry folders' modification times then.
type Listed = (Vec<Option<SystemTime>>, Arc<Vec<ipc::models::ModelInfo>>);

/// A registry folder changed less than this long ago is read again on every request: a change
/// within the same tick of a coarse clock would not move its time.
const SETTLED: Duration = Duration::from_secs(2);

/// What the app fixes and tests change: ports, limits and waits that are not user settings.
#[derive(Debug, Clone)]
pub struct EndpointConfig {
    /// The port tried first when none is set (0: any free port, for tests side by side).
    pub default_port: u16,
    /// The port of an LLM server the endpoint starts with no remembered settings (`None`: the
    /// LLM server's own default; `Some(0)`: any free port).
    pub llm_port: Option<u16>,
    /// The same for the image server's job API.
    pub images_port: Option<u16>,
    /// The largest request body.
    pub body_limit: usize,
    /// How long `response_format: "url"` images are served, and how many bytes are kept.
    pub files_ttl: Duration,
    pub files_budget: usize,
    /// How long a swap waits for the old model's requests to finish before it stops it.
    pub drain: Duration,
    /// How long a request waits for a start or stop someone else began.
    pub start_wait: Duration,
    /// How many requests the log keeps.
    pub log_len: usize,
    /// What "a minute" of the idle-unload setting is (tests: a second).
    pub idle_minute: Duration,
}

impl Default for EndpointConfig {
    fn default() -> Self {
        Self {
            default_port: ipc::endpoint::DEFAULT_PORT,
            llm_port: None,
            images_port: None,
            body_limit: 16 << 20,
            files_ttl: Duration::from_secs(600),
            files_budget: 256 << 20,
            drain: Duration::from_secs(60),
            start_wait: Duration::from_secs(600),
            log_len: 200,
            idle_minute: Duration::from_secs(60),
        }
    }
}

/// The endpoint. Cheap to clone.
#[derive(Clone)]
pub struct Endpoint {
    pub(super) inner: Arc<Inner>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint").field("status", &self.status()).finish()
    }
}

pub(super) struct Inner {
    pub(super) llm: LlamaServer,
    pub(super) diffusion: DiffusionServer,
    pub(super) models: ModelStore,
    pub(super) events: EventBus,
    settings_path: PathBuf,
    pub(super) config: Mutex<EndpointConfig>,
    state: Mutex<Shared>,
    /// One open or close of the listener at a time.
    op: tokio::sync::Mutex<()>,
    /// The one start (or swap) of a text model that every request needing it waits for.
    pub(super) starts: Once<(String, bool), std::result::Result<(), ApiError>>,
    /// One start, stop or swap of the LLM server at a time.
    pub(super) switch: tokio::sync::Mutex<()>,
    /// The text model (and whether for embeddings) a swap is under way to: requests for
    /// others wait until it is done.
    pub(super) swapping: Mutex<Option<(String, bool)>>,
    /// Requests being forwarded, by model id, and a wake-up for a swap waiting for none.
    pub(super) in_flight: Mutex<HashMap<String, u32>>,
    pub(super) drained: Notify,
    /// Settings of text models the endpoint stopped for a swap, used when they come back.
    pub(super) remembered: Mutex<HashMap<String, LlmConfig>>,
    /// The text model the endpoint started and when it last had a request (idle unload).
    pub(super) started: Mutex<Option<(String, Instant)>>,
    /// Image requests take turns (the image server makes one job at a time).
    pub(super) image_turn: tokio::sync::Mutex<()>,
    pub(super) files: Mutex<Files>,
    pub(super) http: reqwest::Client,
    next_id: AtomicU64,
    listed: Mutex<Option<Listed>>,
}

struct Shared {
    settings: EndpointSettings,
    listener: Option<(oneshot::Sender<()>, tokio::task::JoinHandle<()>)>,
    idle: Option<tokio::task::JoinHandle<()>>,
    port: Option<u16>,
    /// `host:port` as a URL writes it (an IPv6 address in brackets), while open.
    authority: Option<String>,
    port_note: Option<String>,
    error: Option<ipc::IpcError>,
    log: VecDeque<EndpointRequest>,
}

impl Endpoint {
    /// `config_dir` holds `endpoint.json` (the user's settings). Nothing listens until
    /// [`Self::open`].
    pub fn new(
        llm: LlamaServer,
        diffusion: DiffusionServer,
        models: ModelStore,
        events: EventBus,
        config_dir: PathBuf,
    ) -> Result<Self> {
        let settings_path = config_dir.join("endpoint.json");
        let settings =
            crate::storage::read_versioned::<stored::SettingsFile>(&settings_path, stored::FORMAT)
                .ok()
                .flatten()
                .map_or_else(EndpointSettings::default, |f| f.get());
        let config = EndpointConfig::default();
        let files = Files::new(config.files_ttl, config.files_budget);
        Ok(Self {
            inner: Arc::new(Inner {
                llm,
                diffusion,
                models,
                events,
                settings_path,
                config: Mutex::new(config),
                state: Mutex::new(Shared {
                    settings,
                    listener: None,
                    idle: None,
                    port: None,
                    authority: None,
                    port_note: None,
                    error: None,
                    log: VecDeque::new(),
                }),
                op: tokio::sync::Mutex::new(()),
                starts: Once::default(),
                switch: tokio::sync::Mutex::new(()),
                swapping: Mutex::new(None),
                in_flight: Mutex::new(HashMap::new()),
                drained: Notify::new(),
                remembered: Mutex::new(HashMap::new()),
                started: Mutex::new(None),
                image_turn: tokio::sync::Mutex::new(()),
                files: Mutex::new(files),
                http: crate::net::forwarding_client()?,
                next_id: AtomicU64::new(0),
                listed: Mutex::new(None),
            }),
        })
    }

    /// Replaces the fixed parts (tests: any free port, short waits). Takes effect at the next
    /// open.
    pub fn configure(&self, config: EndpointConfig) {
        *self.inner.files.lock().unwrap() = Files::new(config.files_ttl, config.files_budget);
        *self.inner.config.lock().unwrap() = config;
    }

    pub(super) fn config(&self) -> EndpointConfig {
        self.inner.config.lock().unwrap().clone()
    }

    pub(super) fn settings(&self) -> EndpointSettings {
        self.inner.state.lock().unwrap().settings.clone()
    }

    /// `host:port` of the open endpoint, for URLs it hands out.
    pub(super) fn authority(&self) -> Option<String> {
        self.inner.state.lock().unwrap().authority.clone()
    }

    pub fn status(&self) -> EndpointStatus {
        let st = self.inner.state.lock().unwrap();
        EndpointStatus {
            settings: st.settings.clone(),
            running: st.listener.is_some(),
            base_url: st.authority.as_ref().map(|a| format!("http://{a}/v1")),
            port: st.port,
            port_note: st.port_note.clone(),
            error: st.error.clone(),
            requests: st.log.iter().cloned().collect(),
        }
    }

    /// Opens the endpoint as the saved settings say (at launch): off stays closed; a failure
    /// (the port asked for is taken) is kept in the status for the window, not returned.
    pub async fn open(&self) -> EndpointStatus {
        let _op = self.inner.op.lock().await;
        self.close_locked().await;
        let settings = self.settings();
        if settings.enabled {
            if let Err(e) = self.listen(&settings).await {
                tracing::warn!("the API endpoint did not open: {e}");
                self.inner.state.lock().unwrap().error = Some(e.to_ipc());
            }
        }
        self.inner.events.emit(AppEvent::EndpointChanged);
        self.status()
    }

    /// Saves `settings` and applies them: a bad value (another address without a token, a wait
    /// out of range) is refused before anything changes; a port that is taken is an error and
    /// leaves the endpoint closed, saying so.
    pub async fn set(&self, settings: EndpointSettings) -> Result<EndpointStatus> {
        check_settings(&settings)?;
        let _op = self.inner.op.lock().await;
        let path = &self.inner.settings_path;
        if let Some(found) = crate::storage::newer_format(path, stored::FORMAT) {
            return Err(RuntimeError::NewerFormat {
                path: path.clone(),
                found,
                reads: stored::FORMAT,
            });
        }
        let file = stored::SettingsFile::of(stored::FORMAT, &settings);
        crate::storage::write_json_atomic(path, &file).await?;
        self.close_locked().await;
        self.inner.state.lock().unwrap().settings = settings.clone();
        let opened = if settings.enabled { self.listen(&settings).await } else { Ok(()) };
        if let Err(e) = &opened {
            self.inner.state.lock().unwrap().error = Some(e.to_ipc());
        }
        self.inner.events.emit(AppEvent::EndpointChanged);
        opened.map(|()| self.status())
    }

    /// Closes the port (requests being answered finish first).
    pub async fn close(&self) {
        let _op = self.inner.op.lock().await;
        self.close_locked().await;
        self.inner.events.emit(AppEvent::EndpointChanged);
    }

    async fn close_locked(&self) {
        let (listener, idle) = {
            let mut st = self.inner.state.lock().unwrap();
            st.port = None;
            st.authority = None;
            st.port_note = None;
            st.error = None;
            (st.listener.take(), st.idle.take())
        };
        if let Some(idle) = idle {
            idle.abort();
        }
        if let Some((tx, task)) = listener {
            let _ = tx.send(());
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
    }

    async fn listen(&self, settings: &EndpointSettings) -> Result<()> {
        let host = settings.host.clone().unwrap_or_else(|| "127.0.0.1".to_owned());
        crate::net::check_exposure(&host, settings.token.as_deref(), "the API endpoint")?;
        let config = self.config();
        let (listener, port, port_note) =
            crate::net::listen(&host, settings.port, config.default_port, "the API endpoint")
                .await?;
        let (tx, serve) = crate::net::serve(listener, router(self.clone(), config.body_limit));
        let url_host = if host.contains(':') { format!("[{host}]") } else { host.clone() };
        let idle = settings.idle_unload_mins.map(|mins| {
            let me = self.clone();
            let after = config.idle_minute * mins;
            tokio::spawn(async move { me.unload_when_idle(after, mins).await })
        });
        let mut st = self.inner.state.lock().unwrap();
        st.listener = Some((tx, serve));
        st.idle = idle;
        st.port = Some(port);
        st.authority = Some(format!("{url_host}:{port}"));
        st.port_note = port_note;
        st.error = None;
        tracing::info!("API endpoint listening on http://{url_host}:{port}/v1");
        Ok(())
    }

    /// A request arrived: its log line, written when it ends ([`Rec::end`], or dropped: 499).
    pub(super) fn begin(&self, route: String) -> Rec {
        Rec {
            ep: self.clone(),
            line: Some(EndpointRequest {
                id: self.inner.next_id.fetch_add(1, Ordering::Relaxed) + 1,
                at_ms: now_ms(),
                route,
                model: None,
                status: 0,
                duration_ms: 0,
                tokens: None,
                images: None,
                note: None,
            }),
            began: Instant::now(),
        }
    }

    fn log(&self, line: EndpointRequest) {
        {
            let len = self.inner.config.lock().unwrap().log_len;
            let mut st = self.inner.state.lock().unwrap();
            if st.log.len() >= len {
                st.log.pop_front();
            }
            st.log.push_back(line.clone());
        }
        self.inner.events.emit(AppEvent::EndpointRequest(line));
    }

    /// Something the endpoint did on a client's behalf, for the Resource Monitor's event log.
    pub(super) fn note(&self, message: String) {
        tracing::info!("API endpoint: {message}");
        self.inner.events.emit(AppEvent::EndpointNote { message });
    }

    async fn unload_when_idle(self, after: Duration, mins: u32) {
        let tick = (after / 4).clamp(Duration::from_secs(1), Duration::from_secs(30));
        loop {
            tokio::time::sleep(tick).await;
            let idle = {
                let started = self.inner.started.lock().unwrap();
                started.as_ref().filter(|(_, last)| last.elapsed() >= after).map(|(m, _)| m.clone())
            };
            let Some(model) = idle else { continue };
            if self.in_flight_of(&model) > 0 {
                continue;
            }
            let _switch = self.inner.switch.lock().await;
            let st = self.inner.llm.status();
            if st.model_id.as_deref() == Some(model.as_str())
                && st.state == ipc::event::ServerState::Running
            {
                self.remember_running();
                if self.inner.llm.stop().await.is_ok() {
                    self.note(format!("stopped {model}: no request for {mins} min"));
                }
            }
            *self.inner.started.lock().unwrap() = None;
        }
    }

    /// Keeps the running LLM's settings for when the endpoint starts its model again.
    pub(super) fn remember_running(&self) {
        if let Some(cfg) = self.inner.llm.last_config() {
            self.inner.remembered.lock().unwrap().insert(cfg.model_id.clone(), cfg);
        }
    }

    pub(super) fn in_flight_of(&self, model: &str) -> u32 {
        self.inner.in_flight.lock().unwrap().get(model).copied().unwrap_or(0)
    }
}

/// Refuses settings that cannot work, before anything is saved.
fn check_settings(s: &EndpointSettings) -> Result<()> {
    if !(1..=3600).contains(&s.wait_secs) {
        return Err(RuntimeError::InvalidInput(format!(
            "the wait for the LLM must be 1 to 3600 seconds, not {}",
            s.wait_secs
        )));
    }
    if s.idle_unload_mins == Some(0) {
        return Err(RuntimeError::InvalidInput(
            "unloading after 0 minutes would stop each model after every request; leave it empty to keep models loaded".into(),
        ));
    }
    let host = s.host.as_deref().unwrap_or("127.0.0.1");
    crate::net::check_exposure(host, s.token.as_deref(), "the API endpoint")
}

/// A request's log line while it is answered.
pub(super) struct Rec {
    ep: Endpoint,
    line: Option<EndpointRequest>,
    began: Instant,
}

impl Rec {
    pub(super) fn model(&mut self, id: &str) {
        if let Some(l) = self.line.as_mut() {
            l.model = Some(id.to_owned());
        }
    }

    pub(super) fn note(&mut self, note: impl Into<String>) {
        if let Some(l) = self.line.as_mut() {
            l.note = Some(note.into());
        }
    }

    /// The answer ended with `status`.
    pub(super) fn end(mut self, status: u16, tokens: Option<u32>, images: Option<u32>) {
        self.finish(status, tokens, images);
    }

    fn finish(&mut self, status: u16, tokens: Option<u32>, images: Option<u32>) {
        if let Some(mut l) = self.line.take() {
            l.status = status;
            l.duration_ms = self.began.elapsed().as_millis() as u64;
            l.tokens = tokens;
            l.images = images;
            self.ep.log(l);
        }
    }

    /// The request failed with `e`: its line, and the answer.
    pub(super) fn fail(mut self, e: ApiError) -> Response {
        self.note(e.message.clone());
        let status = e.status;
        self.end(status, None, None);
        e.into_response()
    }
}

impl Drop for Rec {
    /// Dropped before its end: the client went away.
    fn drop(&mut self) {
        self.finish(499, None, None);
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut resp = (status, axum::Json(self.body())).into_response();
        if let Some(secs) = self.retry_after {
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}

fn router(ep: Endpoint, body_limit: usize) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/v1/models", get(models))
        .route("/v1/chat/completions", post(super::text::handle))
        .route("/v1/completions", post(super::text::handle))
        .route("/v1/embeddings", post(super::text::handle))
        .route("/v1/images/generations", post(super::images::handle))
        .route("/v1/files/{name}", get(file))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn_with_state(ep.clone(), check))
        .with_state(ep)
}

/// The methods a route answers (for `Allow` and the preflight); `None` for an unknown path.
fn allowed(path: &str) -> Option<&'static str> {
    match path {
        "/health" | "/v1/models" => Some("GET, HEAD, OPTIONS"),
        "/v1/chat/completions"
        | "/v1/completions"
        | "/v1/embeddings"
        | "/v1/images/generations" => Some("POST, OPTIONS"),
        p => p
            .strip_prefix("/v1/files/")
            .filter(|n| !n.is_empty() && !n.contains('/'))
            .map(|_| "GET, HEAD, OPTIONS"),
    }
}

async fn check(State(ep): State<Endpoint>, req: Request, next: Next) -> Response {
    let preflight = req.method() == Method::OPTIONS;
    let token = {
        let s = ep.settings();
        s.token.filter(|t| !t.is_empty())
    };
    let origin = match guard::check(req.headers(), preflight, token.as_deref(), "the API endpoint")
    {
        Ok(o) => o,
        Err(r) => {
            let (kind, code) = if r.status == StatusCode::UNAUTHORIZED {
                ("invalid_request_error", "invalid_api_key")
            } else {
                ("permission_error", "forbidden")
            };
            return ApiError::new(r.status.as_u16(), kind, code, r.message).into_response();
        }
    };
    let path = req.uri().path().to_owned();
    if preflight {
        return match allowed(&path) {
            Some(methods) => guard::preflight(methods, origin.as_ref()),
            None => not_found().await,
        };
    }
    let resp = next.run(req).await;
    let resp = match (resp.status(), allowed(&path)) {
        (StatusCode::METHOD_NOT_ALLOWED, Some(methods)) => {
            let mut r = ApiError::new(
                405,
                "invalid_request_error",
                "method_not_allowed",
                format!("{path} answers {methods}"),
            )
            .into_response();
            r.headers_mut().insert(header::ALLOW, HeaderValue::from_static(methods));
            r
        }
        _ => resp,
    };
    guard::with_cors(resp, origin.as_ref())
}

async fn health() -> Response {
    axum::Json(serde_json::json!({"status": "ok"})).into_response()
}

/// The model ids loaded now: the LLM server's and the image server's.
pub(super) fn loaded(ep: &Endpoint) -> Vec<String> {
    use ipc::event::ServerState::*;
    let llm = ep.inner.llm.status();
    let img = ep.inner.diffusion.status();
    let mut ids = Vec::new();
    if let (Running | Starting, Some(m)) = (llm.state, llm.model_id) {
        ids.push(m);
    }
    if let (Running, Some(m)) = (img.state, img.model_id) {
        ids.push(m);
    }
    ids
}

/// Installed models, or a 500 saying why the list could not be read. Every request asks, so the
/// registry (a folder read and every model's JSON) is read again only when one of its folders
/// changed: the store writes and deletes records by rename and unlink, which move the folder's
/// time.
pub(super) async fn installed(
    ep: &Endpoint,
) -> std::result::Result<Arc<Vec<ipc::models::ModelInfo>>, ApiError> {
    use ipc::models::ModelKind;
    let mut stamp = Vec::with_capacity(2);
    for kind in [ModelKind::Llm, ModelKind::Diffusion] {
        let dir = ep.inner.models.dir(kind);
        stamp.push(tokio::fs::metadata(dir).await.and_then(|m| m.modified()).ok());
    }
    let settled = stamp.iter().flatten().all(|t| t.elapsed().is_ok_and(|e| e >= SETTLED));
    if let Some((was, list)) = ep.inner.listed.lock().unwrap().as_ref() {
        if settled && *was == stamp {
            return Ok(list.clone());
        }
    }
    let list = ep
        .inner
        .models
        .list()
        .await
        .map(|l| Arc::new(l.models))
        .map_err(|e| ApiError::server(500, "models_unreadable", e.to_string()))?;
    if settled {
        *ep.inner.listed.lock().unwrap() = Some((stamp, list.clone()));
    }
    Ok(list)
}

async fn models(State(ep): State<Endpoint>) -> Response {
    let rec = ep.begin("GET /v1/models".into());
    let list = match installed(&ep).await {
        Ok(l) => l,
        Err(e) => return rec.fail(e),
    };
    let loaded = loaded(&ep);
    let loaded: Vec<&str> = loaded.iter().map(String::as_str).collect();
    rec.end(200, None, None);
    axum::Json(super::openai::model_list(&list, &loaded)).into_response()
}

/// A request's body read as a JSON object, or the 400 / 413 that says why not.
pub(super) fn read_json(
    body: std::result::Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
    limit: usize,
) -> std::result::Result<(axum::body::Bytes, serde_json::Value), ApiError> {
    let body = match body {
        Ok(b) => b,
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return Err(ApiError::too_large(limit))
        }
        Err(e) => return Err(ApiError::not_json(&e.body_text())),
    };
    let value: serde_json::Value =
        serde_json::from_slice(&body).map_err(|e| ApiError::not_json(&e.to_string()))?;
    if !value.is_object() {
        return Err(ApiError::not_json("not an object"));
    }
    Ok((body, value))
}

/// Waits until an event `wakes` says, a short tick passes (what it waits for is read again
/// either way), or `deadline` passes (`Err`).
pub(super) async fn wait_event(
    events: &mut tokio::sync::broadcast::Receiver<AppEvent>,
    deadline: Instant,
    wakes: impl Fn(&AppEvent) -> bool,
) -> std::result::Result<(), ()> {
    use tokio::sync::broadcast::error::RecvError;
    if Instant::now() >= deadline {
        return Err(());
    }
    let event = async {
        loop {
            match events.recv().await {
                Ok(e) if wakes(&e) => return,
                Ok(_) => {}
                Err(RecvError::Lagged(_)) => return,
                Err(RecvError::Closed) => std::future::pending::<()>().await,
            }
        }
    };
    tokio::select! {
        _ = tokio::time::sleep_until(deadline.into()) => Err(()),
        _ = tokio::time::sleep(Duration::from_millis(250)) => Ok(()),
        _ = event => Ok(()),
    }
}

async fn file(State(ep): State<Endpoint>, UrlPath(name): UrlPath<String>) -> Response {
    let got = ep.inner.files.lock().unwrap().get(name.trim_end_matches(".png"), Instant::now());
    match got {
        Some(png) => ([(header::CONTENT_TYPE, "image/png")], png.to_vec()).into_response(),
        None => ApiError::new(
            404,
            "invalid_request_error",
            "file_not_found",
            format!("{name} is not here: image URLs are served for a limited time; ask for the image again, or use response_format \"b64_json\""),
        )
        .into_response(),
    }
}

async fn not_found() -> Response {
    ApiError::new(
        404,
        "invalid_request_error",
        "unknown_url",
        "no such route; this endpoint answers /v1/models, /v1/chat/completions, /v1/completions, /v1/embeddings and /v1/images/generations".into(),
    )
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_names_its_methods() {
        assert_eq!(allowed("/v1/models"), Some("GET, HEAD, OPTIONS"));
        for p in
            ["/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/images/generations"]
        {
            assert_eq!(allowed(p), Some("POST, OPTIONS"), "{p}");
        }
        assert_eq!(allowed("/v1/files/img-1-0.png"), Some("GET, HEAD, OPTIONS"));
        for p in ["/", "/v1", "/v1/files/", "/v1/files/a/b", "/v1/audio/speech"] {
            assert_eq!(allowed(p), None, "{p}");
        }
    }

    #[test]
    fn settings_that_cannot_work_are_refused_before_saving() {
        let ok = EndpointSettings::default();
        assert!(check_settings(&ok).is_ok());
        let cases = [
            EndpointSettings { wait_secs: 0, ..ok.clone() },
            EndpointSettings { wait_secs: 3601, ..ok.clone() },
            EndpointSettings { idle_unload_mins: Some(0), ..ok.clone() },
            EndpointSettings { host: Some("0.0.0.0".into()), ..ok.clone() },
            EndpointSettings {
                host: Some("0.0.0.0".into()),
                token: Some("short".into()),
                ..ok.clone()
            },
        ];
        for s in cases {
            assert!(check_settings(&s).is_err(), "{s:?}");
        }
        let lan = EndpointSettings {
            host: Some("0.0.0.0".into()),
            token: Some("s3cret-token".into()),
            idle_unload_mins: Some(5),
            ..ok
        };
        assert!(check_settings(&lan).is_ok());
    }
}
