//! `POST /v1/images/generations`: OpenAI's images request made into a job of the image server,
//! the same job path as the window's and the job API's (so progress shows in the Diffusion tab
//! and the orchestrator pauses the LLM when both do not fit), answered when the images are
//! made. The image server is started, or switched to the model asked for, on demand; requests
//! take turns; a client that goes away cancels its job.

use super::openai::{images_answer, parse_images, resolve, ApiError, ImageData, ResponseFormat};
use super::server::{installed, loaded, read_json, wait_event, Endpoint};
use crate::diffusion::DiffusionServer;
use crate::RuntimeError;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use ipc::diffusion::{DiffusionConfig, ImageRequest, JobStatus, JobView};
use ipc::event::{ServerKind, ServerState};
use ipc::models::ModelKind;
use ipc::AppEvent;
use std::time::Instant;

pub(super) async fn handle(
    State(ep): State<Endpoint>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let mut rec = ep.begin("POST /v1/images/generations".into());
    let (_, value) = match read_json(body, ep.config().body_limit) {
        Ok(v) => v,
        Err(e) => return rec.fail(e),
    };
    let ask = match parse_images(&value) {
        Ok(a) => a,
        Err(e) => return rec.fail(e),
    };
    let models = match installed(&ep).await {
        Ok(m) => m,
        Err(e) => return rec.fail(e),
    };
    let loaded = loaded(&ep);
    let loaded: Vec<&str> = loaded.iter().map(String::as_str).collect();
    let route = "/v1/images/generations";
    let model = match resolve(ask.model.as_deref(), &models, ModelKind::Diffusion, &loaded, route) {
        Ok(m) => m.id.clone(),
        Err(e) => return rec.fail(e),
    };
    rec.model(&model);
    let job = match ep.make_images(&model, ask.request).await {
        Ok(j) => j,
        Err(e) => return rec.fail(e),
    };
    let images = job.result.map(|r| r.images).unwrap_or_default();
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| ep.authority())
        .unwrap_or_default();
    let mut data = Vec::with_capacity(images.len());
    for (n, img) in images.into_iter().enumerate() {
        let d = match ask.format {
            ResponseFormat::B64Json => ImageData::B64(img.image),
            ResponseFormat::Url => {
                let Ok(png) = base64::engine::general_purpose::STANDARD.decode(&img.image) else {
                    return rec.fail(ApiError::server(
                        500,
                        "image_unreadable",
                        "the image server's PNG is not base64",
                    ));
                };
                let name = format!("{}-{n}", job.id);
                ep.inner.files.lock().unwrap().put(name.clone(), png, Instant::now());
                ImageData::Url(format!("http://{host}/v1/files/{name}.png"))
            }
        };
        data.push((d, img.seed));
    }
    rec.end(200, None, Some(data.len() as u32));
    axum::Json(images_answer(crate::now_ms() / 1000, &data)).into_response()
}

/// Wakes a waiting image request: the image server or a job changed.
fn images_moved(e: &AppEvent) -> bool {
    matches!(
        e,
        AppEvent::ServerState { server: ServerKind::Diffusion, .. }
            | AppEvent::ImageJobFinished { .. }
            | AppEvent::ImageJobFailed { .. }
            | AppEvent::ImageJobCancelled { .. }
    )
}

/// Cancels the job when the request is dropped before it ends (the client went away).
struct CancelOnDrop {
    server: DiffusionServer,
    id: Option<String>,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            let _ = self.server.cancel(&id);
        }
    }
}

impl Endpoint {
    /// Makes the images of `req` with `model`, in turn with other image requests of the
    /// endpoint, and answers the finished job.
    async fn make_images(&self, model: &str, req: ImageRequest) -> Result<JobView, ApiError> {
        let _turn = self.inner.image_turn.lock().await;
        let server = &self.inner.diffusion;
        let deadline = Instant::now() + self.config().start_wait;
        let mut events = self.inner.events.subscribe();
        self.image_server_for(model, deadline).await?;
        let job = loop {
            match server.generate(req.clone()) {
                Ok(j) => break j,
                // A job of the window's runs: this one waits for it.
                Err(RuntimeError::Busy(why)) => {
                    wait_event(&mut events, deadline, images_moved).await.map_err(|()| {
                        ApiError::busy(format!("the image server is busy: {why}"), 30)
                    })?;
                }
                Err(RuntimeError::ServerNotRunning) => {
                    self.image_server_for(model, deadline).await?;
                }
                Err(RuntimeError::InvalidInput(why)) => {
                    return Err(ApiError::new(400, "invalid_request_error", "invalid_value", why))
                }
                Err(e) => return Err(ApiError::server(500, "image_failed", e.to_string())),
            }
        };
        let mut cancel = CancelOnDrop { server: server.clone(), id: Some(job.id.clone()) };
        let done = loop {
            let view = server
                .job(&job.id)
                .map_err(|e| ApiError::server(500, "image_failed", e.to_string()))?;
            if view.status.is_finished() {
                break view;
            }
            // No deadline: an image takes what it takes, and the client may leave (cancel).
            let _ =
                wait_event(&mut events, Instant::now() + self.config().start_wait, images_moved)
                    .await;
        };
        cancel.id = None;
        match done.status {
            JobStatus::Complete => Ok(done),
            JobStatus::Cancelled => Err(ApiError::server(
                500,
                "image_cancelled",
                "the image was cancelled (in the app's Diffusion tab or its job API)",
            )),
            _ => {
                let (message, remedy) = done
                    .error
                    .map(|e| (e.message, e.remedy.unwrap_or_default()))
                    .unwrap_or_else(|| ("the image job failed".into(), String::new()));
                let remedy = if remedy.is_empty() { remedy } else { format!(" {remedy}") };
                Err(ApiError::server(500, "image_failed", format!("{message}.{remedy}")))
            }
        }
    }

    /// Makes the image server run `model`: starts it, or switches it from another model once
    /// its job is done.
    async fn image_server_for(&self, model: &str, deadline: Instant) -> Result<(), ApiError> {
        let server = &self.inner.diffusion;
        let mut events = self.inner.events.subscribe();
        loop {
            let st = server.status();
            let start = match (st.state, st.model_id.as_deref()) {
                (ServerState::Running, Some(m)) if m == model => return Ok(()),
                (ServerState::Running, Some(from)) if !st.busy => {
                    let cfg = server.config();
                    self.note(format!("switching the image server from {from} to {model}"));
                    server
                        .stop()
                        .await
                        .map_err(|e| ApiError::server(500, "model_start_failed", e.to_string()))?;
                    Some(cfg.map(|c| DiffusionConfig { model_id: model.to_owned(), ..c }))
                }
                (ServerState::Stopped | ServerState::Crashed, _) => {
                    self.note(format!("starting the image server with {model} for a request"));
                    Some(None)
                }
                _ => None,
            };
            let Some(cfg) = start else {
                wait_event(&mut events, deadline, images_moved).await.map_err(|()| {
                    ApiError::busy("the image server is busy with another model", 30)
                })?;
                continue;
            };
            let cfg = cfg.unwrap_or_else(|| DiffusionConfig {
                model_id: model.to_owned(),
                port: self.config().images_port,
                ..Default::default()
            });
            match server.start(cfg).await {
                Ok(_) | Err(RuntimeError::ServerAlreadyRunning) => {}
                Err(e) => {
                    let ipc = e.to_ipc();
                    return Err(ApiError::server(
                        500,
                        "model_start_failed",
                        format!(
                            "the image server did not start with {model}: {}. {}",
                            ipc.message, ipc.remedy
                        ),
                    ));
                }
            }
        }
    }
}
