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
use crate::RuntimeError;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
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

/// A page on this computer: `http://` with host localhost, 127.0.0.1 or [::1], any port, no
/// path. Everything else (another host, https elsewhere, `null`) is not.
fn local_page_origin(origin: &str) -> bool {
    let Some(host_port) = origin.strip_prefix("http://") else { return false };
    if host_port.contains(['/', '@', '?', '#']) {
        return false;
    }
    let (host, port) = match host_port.strip_prefix('[') {
        Some(v6) => match v6.split_once(']') {
            Some((h, p)) => (h, p),
            None => return false,
        },
        // The port keeps its `:`, as after `[::1]`.
        None => host_port.find(':').map_or((host_port, ""), |i| host_port.split_at(i)),
    };
    let port_ok = match port.strip_prefix(':') {
        Some(p) => !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()),
        None => port.is_empty(),
    };
    port_ok && matches!(host, "localhost" | "127.0.0.1" | "::1")
}

fn with_cors(mut resp: Response, origin: Option<&HeaderValue>) -> Response {
    if let Some(o) = origin {
        let h = resp.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, o.clone());
        h.insert(header::VARY, HeaderValue::from_static("Origin"));
    }
    resp
}

/// The answer to `OPTIONS`: a preflight from a local page, or a plain `Allow` list.
fn options(path: &str, origin: Option<&HeaderValue>) -> Response {
    let Some(methods) = allowed(path) else {
        return error(StatusCode::NOT_FOUND, "NOT_FOUND", "no such route");
    };
    let mut resp = StatusCode::NO_CONTENT.into_response();
    let h = resp.headers_mut();
    h.insert(header::ALLOW, HeaderValue::from_static(methods));
    if origin.is_some() {
        h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static(methods));
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("content-type, authorization"),
        );
        h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
    }
    with_cors(resp, origin)
}

async fn guard(State(server): State<DiffusionServer>, req: Request, next: Next) -> Response {
    let headers: &HeaderMap = req.headers();
    let text = |name: header::HeaderName| {
        headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
    };
    let origin = headers.get(header::ORIGIN);
    let local_origin = origin.filter(|o| o.to_str().is_ok_and(local_page_origin)).cloned();
    if let (Some(o), None) = (origin, &local_origin) {
        let o = o.to_str().unwrap_or("(not text)");
        return error(
            StatusCode::FORBIDDEN,
            "FORBIDDEN",
            format!(
                "Origin {o:?} is not a page on this computer; the job API answers local pages only"
            ),
        );
    }
    let path = req.uri().path().to_owned();
    // A preflight carries no credentials, so it is answered before the token is asked for.
    if req.method() == Method::OPTIONS {
        return options(&path, local_origin.as_ref());
    }
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
        for (name, value) in [("Host", text(header::HOST))] {
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
    with_cors(resp, local_origin.as_ref())
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
    use super::{allowed, host_of, local_page_origin};

    #[test]
    fn only_pages_on_this_computer_are_local_origins() {
        for (o, local) in [
            ("http://localhost:3000", true),
            ("http://127.0.0.1:5173", true),
            ("http://[::1]:8080", true),
            ("http://localhost", true),
            ("https://localhost:3000", false),
            ("http://localhost.evil.example", false),
            ("http://127.0.0.1.evil.example:80", false),
            ("http://evil.example", false),
            ("http://localhost:3000/path", false),
            ("http://user@localhost:3000", false),
            ("http://localhost:", false),
            ("http://localhost:99999x", false),
            ("http://[::1", false),
            ("null", false),
            ("file://", false),
        ] {
            assert_eq!(local_page_origin(o), local, "{o}");
        }
    }

    #[test]
    fn every_route_names_its_methods() {
        assert_eq!(allowed("/health"), Some("GET, HEAD, OPTIONS"));
        assert_eq!(allowed("/v1/images/generations"), Some("POST, OPTIONS"));
        assert_eq!(allowed("/v1/images/generations/img-1"), Some("GET, HEAD, DELETE, OPTIONS"));
        for p in ["/", "/v1/models", "/v1/images/generations/", "/v1/images/generations/a/b"] {
            assert_eq!(allowed(p), None, "{p}");
        }
    }

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
