//! What every local HTTP API of the app checks before it answers (the image job API and the
//! OpenAI endpoint): cross-origin requests only from pages on this computer (the preflight and
//! `Access-Control-Allow-Origin` naming that origin), a `Host` that names this computer while
//! it listens on loopback (DNS rebinding), and `Authorization: Bearer` when it listens on
//! another address. Each API words the refusal in its own error shape.

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// Why a request is not answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub status: StatusCode,
    /// `FORBIDDEN` or `UNAUTHORIZED`.
    pub code: &'static str,
    pub message: String,
}

/// The host part of a `Host` header or an `Origin` URL.
pub fn host_of(value: &str) -> &str {
    let v = value.split_once("://").map_or(value, |(_, rest)| rest);
    let v = v.split('/').next().unwrap_or(v);
    if let Some(rest) = v.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    v.rsplit_once(':').map_or(v, |(h, _)| h)
}

/// A page on this computer: `http://` with host localhost, 127.0.0.1 or [::1], any port, no
/// path. Everything else (another host, https elsewhere, `null`) is not.
pub fn local_page_origin(origin: &str) -> bool {
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

/// The request's `Origin` when it is a page on this computer (to name in the CORS answer), or
/// why the request is refused. `preflight`: an `OPTIONS` request, which carries no credentials
/// and so is not asked for the token. `token`: the bearer token the API wants (it listens on
/// another address); without one the `Host` must name this computer.
pub fn check(
    headers: &HeaderMap,
    preflight: bool,
    token: Option<&str>,
    what: &str,
) -> Result<Option<HeaderValue>, Refused> {
    let forbidden =
        |message: String| Refused { status: StatusCode::FORBIDDEN, code: "FORBIDDEN", message };
    let origin = headers.get(header::ORIGIN);
    let local_origin = origin.filter(|o| o.to_str().is_ok_and(local_page_origin)).cloned();
    if let (Some(o), None) = (origin, &local_origin) {
        let o = o.to_str().unwrap_or("(not text)");
        return Err(forbidden(format!(
            "Origin {o:?} is not a page on this computer; {what} answers local pages only"
        )));
    }
    if preflight {
        return Ok(local_origin);
    }
    match token {
        Some(token) => {
            let given = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
            if given.and_then(|g| g.strip_prefix("Bearer ")) != Some(token) {
                return Err(Refused {
                    status: StatusCode::UNAUTHORIZED,
                    code: "UNAUTHORIZED",
                    message: format!(
                        "{what} needs Authorization: Bearer <token> (the token set in the app)"
                    ),
                });
            }
        }
        None => {
            if let Some(v) = headers.get(header::HOST).and_then(|v| v.to_str().ok()) {
                if !super::is_loopback(host_of(v)) {
                    return Err(forbidden(format!(
                        "Host {v:?} is not this computer; {what} answers local clients only"
                    )));
                }
            }
        }
    }
    Ok(local_origin)
}

/// `resp` with `Access-Control-Allow-Origin` naming `origin` (a local page), if there is one.
pub fn with_cors(mut resp: Response, origin: Option<&HeaderValue>) -> Response {
    if let Some(o) = origin {
        let h = resp.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, o.clone());
        h.insert(header::VARY, HeaderValue::from_static("Origin"));
    }
    resp
}

/// The answer to `OPTIONS` on a route that answers `methods`: a preflight from a local page,
/// or a plain `Allow` list.
pub fn preflight(methods: &'static str, origin: Option<&HeaderValue>) -> Response {
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

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn requests_are_checked_by_origin_host_and_token() {
        let headers = |pairs: &[(header::HeaderName, &str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.insert(k.clone(), HeaderValue::from_str(v).unwrap());
            }
            h
        };
        let local = headers(&[(header::HOST, "127.0.0.1:8088")]);
        assert_eq!(check(&local, false, None, "x"), Ok(None));
        let page =
            headers(&[(header::HOST, "localhost:8088"), (header::ORIGIN, "http://localhost:3000")]);
        assert_eq!(check(&page, false, None, "x").unwrap().unwrap(), "http://localhost:3000");
        let rebind = headers(&[(header::HOST, "evil.example:8088")]);
        let r = check(&rebind, false, None, "the endpoint").unwrap_err();
        assert_eq!((r.status, r.code), (StatusCode::FORBIDDEN, "FORBIDDEN"));
        assert!(
            r.message.contains("evil.example") && r.message.contains("the endpoint"),
            "{}",
            r.message
        );
        let drive_by =
            headers(&[(header::HOST, "127.0.0.1"), (header::ORIGIN, "https://evil.example")]);
        assert_eq!(check(&drive_by, true, None, "x").unwrap_err().status, StatusCode::FORBIDDEN);
        // With a token, the Host may be anything and the bearer decides; a preflight needs none.
        let lan = headers(&[(header::HOST, "192.168.1.5:8088")]);
        assert_eq!(
            check(&lan, false, Some("s3cret-token"), "x").unwrap_err().status,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(check(&lan, true, Some("s3cret-token"), "x"), Ok(None));
        let bearer = headers(&[
            (header::HOST, "192.168.1.5:8088"),
            (header::AUTHORIZATION, "Bearer s3cret-token"),
        ]);
        assert_eq!(check(&bearer, false, Some("s3cret-token"), "x"), Ok(None));
        let wrong = headers(&[(header::AUTHORIZATION, "Bearer nope")]);
        assert_eq!(
            check(&wrong, false, Some("s3cret-token"), "x").unwrap_err().code,
            "UNAUTHORIZED"
        );
    }
}
