//! The local HTTP job API (routes compatible with the original, so its clients work unchanged):
//!
//! - `GET /health` → `{status:"ok", busy}`
//! - `POST /v1/images/generations` → 201 `{id, status:"pending", createdAt}`; 400
//!   `INVALID_REQUEST` for a bad value, 503 `SERVER_BUSY` while a job runs, 413 for a body over
//!   the limit
//! - `GET /v1/images/generations/{id}` → the job (404 `NOT_FOUND` when unknown or expired)
//! - `DELETE /v1/images/generations/{id}` → cancel (idempotent; 409 `ALREADY_TERMINAL` once
//!   complete or failed)
//!
//! Unlike the original it answers no cross-origin requests (no CORS headers), refuses a request
//! whose `Host` or `Origin` names another computer while it listens on loopback (DNS rebinding,
//! drive-by pages), and, when it listens on another address, wants `Authorization: Bearer`.

use super::server::DiffusionServer;
use crate::RuntimeError;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use ipc::diffusion::ImageRequest;
use serde_json::json;

pub fn router(server: DiffusionServer) -> Router {
    let limit = server.body_limit();
    Router::new()
        .route("/health", get(health))
        .route("/v1/images/generations", axum::routing::post(create))
        .route("/v1/images/generations/{id}", get(fetch).delete(cancel))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(limit))
        .layer(middleware::from_fn_with_state(server.clone(), guard))
        .with_state(server)
}

fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    let message = message.into();
    (status, Json(json!({"error": {"message": message, "code": code}}))).into_response()
}

fn from_runtime(e: RuntimeError) -> Response {
    let ipc = e.to_ipc();
    let (status, code) = match &e {
        RuntimeError::InvalidInput(_) => (StatusCode::BAD_REQUEST, "INVALID_REQUEST"),
        RuntimeError::Busy(_) => (StatusCode::SERVICE_UNAVAILABLE, "SERVER_BUSY"),
        RuntimeError::GenerationNotFound(_) => (StatusCode::NOT_FOUND, "NOT_FOUND"),
        RuntimeError::AlreadyFinished { .. } => (StatusCode::CONFLICT, "ALREADY_TERMINAL"),
        RuntimeError::ServerNotRunning => (StatusCode::SERVICE_UNAVAILABLE, "SERVER_NOT_RUNNING"),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL_ERROR"),
    };
    let mut body = json!({"error": {"message": ipc.message, "code": code}});
    if !ipc.remedy.is_empty() {
        body["error"]["suggestion"] = json!(ipc.remedy);
    }
    (status, Json(body)).into_response()
}

/// The host part of a `Host` header or an `Origin` URL.
fn host_of(value: &str) -> &str {
    let v = value.split_once("://").map_or(value, |(_, rest)| rest);
    let v = v.split('/').next().unwrap_or(v);
    if let Some(rest) = v.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    v.rsplit_once(':').map_or(v, |(h, _)| h)
}

async fn guard(State(server): State<DiffusionServer>, req: Request, next: Next) -> Response {
    let headers: &HeaderMap = req.headers();
    let text = |name: header::HeaderName| {
        headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
    };
    if let Some(token) = server.required_token() {
        let given = text(header::AUTHORIZATION);
        let ok = given.as_deref().and_then(|g| g.strip_prefix("Bearer ")) == Some(token.as_str());
        if !ok {
            return error(
                StatusCode::UNAUTHORIZED,
                "UNAUTHORIZED",
                "this job API needs Authorization: Bearer <token> (the token set in the app)",
            );
        }
    } else {
        for (name, value) in [("Host", text(header::HOST)), ("Origin", text(header::ORIGIN))] {
            if let Some(v) = value {
                if !super::server::is_loopback(host_of(&v)) {
                    return error(
                        StatusCode::FORBIDDEN,
                        "FORBIDDEN",
                        format!("{name} {v:?} is not this computer; the job API answers local clients only"),
                    );
                }
            }
        }
    }
    next.run(req).await
}

async fn health(State(server): State<DiffusionServer>) -> Response {
    Json(json!({"status": "ok", "busy": server.status().busy})).into_response()
}

async fn create(
    State(server): State<DiffusionServer>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(b) => b,
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "PAYLOAD_TOO_LARGE",
                format!("the request body is over {} bytes", server.body_limit()),
            )
        }
        Err(e) => return error(e.status(), "INVALID_REQUEST", e.body_text()),
    };
    let req: ImageRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return error(StatusCode::BAD_REQUEST, "INVALID_REQUEST", format!("invalid JSON: {e}"))
        }
    };
    if req.prompt.trim().is_empty() {
        return error(StatusCode::BAD_REQUEST, "INVALID_REQUEST", "Missing required field: prompt");
    }
    match server.generate(req) {
        Ok(v) => (
            StatusCode::CREATED,
            Json(json!({"id": v.id, "status": v.status, "createdAt": v.created_at})),
        )
            .into_response(),
        Err(e) => from_runtime(e),
    }
}

async fn fetch(State(server): State<DiffusionServer>, Path(id): Path<String>) -> Response {
    match server.job(&id) {
        Ok(v) => Json(v).into_response(),
        Err(e) => from_runtime(e),
    }
}

async fn cancel(State(server): State<DiffusionServer>, Path(id): Path<String>) -> Response {
    match server.cancel(&id) {
        Ok(v) => Json(json!({"id": v.id, "status": v.status})).into_response(),
        Err(e) => from_runtime(e),
    }
}

async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "NOT_FOUND", "no such route")
}

#[cfg(test)]
mod tests {
    use super::host_of;

    #[test]
    fn host_of_headers_and_origins() {
        for (v, h) in [
            ("127.0.0.1:8081", "127.0.0.1"),
            ("localhost", "localhost"),
            ("[::1]:8081", "::1"),
            ("http://localhost:3000", "localhost"),
            ("https://evil.example", "evil.example"),
            ("http://127.0.0.1.evil.example:80/x", "127.0.0.1.evil.example"),
        ] {
            assert_eq!(host_of(v), h, "{v}");
        }
    }
}
