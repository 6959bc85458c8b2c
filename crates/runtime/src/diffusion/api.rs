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
//! Unlike the original (CORS open to every origin) it answers cross-origin requests only from
//! pages on this computer (`http://localhost:*`, `http://127.0.0.1:*`, `http://[::1]:*`: the
//! preflight and `Access-Control-Allow-Origin` naming that origin), refuses a request whose `Host`
//! or `Origin` names another computer while it listens on loopback (DNS rebinding, drive-by
//! pages), and, when it listens on another address, wants `Authorization: Bearer`. A wrong method
//! on a known route is a JSON 405 with `Allow`, like every other error.

use super::server::DiffusionServer;
use crate::net::guard;
use crate::RuntimeError;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
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

/// The methods a route answers (for `Allow` and the preflight); `None` for an unknown path.
fn allowed(path: &str) -> Option<&'static str> {
    match path {
        "/health" => Some("GET, HEAD, OPTIONS"),
        "/v1/images/generations" => Some("POST, OPTIONS"),
        p => p
            .strip_prefix("/v1/images/generations/")
            .filter(|id| !id.is_empty() && !id.contains('/'))
            .map(|_| "GET, HEAD, DELETE, OPTIONS"),
    }
}

async fn guard(State(server): State<DiffusionServer>, req: Request, next: Next) -> Response {
    let preflight = req.method() == Method::OPTIONS;
    let token = server.required_token();
    let origin = match guard::check(req.headers(), preflight, token.as_deref(), "the job API") {
        Ok(o) => o,
        Err(r) => return error(r.status, r.code, r.message),
    };
    let path = req.uri().path().to_owned();
    if preflight {
        return match allowed(&path) {
            Some(methods) => guard::preflight(methods, origin.as_ref()),
            None => error(StatusCode::NOT_FOUND, "NOT_FOUND", "no such route"),
        };
    }
    let resp = next.run(req).await;
    let resp = match (resp.status(), allowed(&path)) {
        (StatusCode::METHOD_NOT_ALLOWED, Some(methods)) => {
            let mut r = error(
                StatusCode::METHOD_NOT_ALLOWED,
                "METHOD_NOT_ALLOWED",
                format!("{path} answers {methods}"),
            );
            r.headers_mut().insert(header::ALLOW, HeaderValue::from_static(methods));
            r
        }
        _ => resp,
    };
    guard::with_cors(resp, origin.as_ref())
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
    use super::allowed;

    #[test]
    fn every_route_names_its_methods() {
        assert_eq!(allowed("/health"), Some("GET, HEAD, OPTIONS"));
        assert_eq!(allowed("/v1/images/generations"), Some("POST, OPTIONS"));
        assert_eq!(allowed("/v1/images/generations/img-1"), Some("GET, HEAD, DELETE, OPTIONS"));
        for p in ["/", "/v1/models", "/v1/images/generations/", "/v1/images/generations/a/b"] {
            assert_eq!(allowed(p), None, "{p}");
        }
    }
}
