//! Local networking shared by the runtime checks and the servers: a free port, and an HTTP
//! client for the app's own servers on 127.0.0.1.

pub mod guard;

use crate::{Result, RuntimeError};

/// reqwest is built without a default crypto provider (to avoid a C toolchain build); ring is
/// installed once for the process. A second install is a harmless error.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A port nobody listens on right now.
pub fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind(("127.0.0.1", 0))
        .map_err(|e| RuntimeError::Internal(format!("no free local port: {e}")))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| RuntimeError::Internal(format!("no free local port: {e}")))
}

/// A client for the app's own servers on 127.0.0.1: never through a proxy.
pub fn local_client() -> Result<reqwest::Client> {
    install_crypto_provider();
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .map_err(|e| RuntimeError::Internal(format!("HTTP client: {e}")))
}

/// A client for forwarding to llama-server: a new connection per request. llama-server's HTTP
/// library closes a kept-alive connection after a few requests or seconds, and a request sent on
/// one it is closing fails with nothing answered; on loopback a connect costs microseconds.
pub fn forwarding_client() -> Result<reqwest::Client> {
    install_crypto_provider();
    reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .build()
        .map_err(|e| RuntimeError::Internal(format!("HTTP client: {e}")))
}

/// A listener for one of the app's HTTP APIs on `host`: the port asked for, else `default` or
/// the next free one ([`choose_port`]; "any free port" is port 0 given to the bind itself, no
/// probe-then-bind race). Answers it, its port, and why the port is not the default when it is
/// not (`what`: the API's name in that note).
pub async fn listen(
    host: &str,
    asked: Option<u16>,
    default: u16,
    what: &str,
) -> Result<(tokio::net::TcpListener, u16, Option<String>)> {
    let (want, taken) =
        choose_port(asked, default, ipc::llm::DEFAULT_PORT, |p| port_free(host, p), || Ok(0))?;
    let listener = tokio::net::TcpListener::bind((host, want)).await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::AddrInUse {
            RuntimeError::PortInUse(want)
        } else {
            RuntimeError::InvalidInput(format!("cannot listen on {host}:{want}: {e}"))
        }
    })?;
    let port = listener
        .local_addr()
        .map_err(|e| RuntimeError::Internal(format!("listener address: {e}")))?
        .port();
    let note = taken.map(|d| port_note(d, port, "another program", what));
    Ok((listener, port, note))
}

/// Serves `app` on `listener` until the sender is used (or dropped); the task ends once the
/// requests in progress are answered.
pub fn serve(
    listener: tokio::net::TcpListener,
    app: axum::Router,
) -> (tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = rx.await;
            })
            .await;
    });
    (tx, task)
}

/// Whether `url` (a server's `/health`) answers with a success status within `timeout`.
pub async fn answers(client: &reqwest::Client, url: &str, timeout: std::time::Duration) -> bool {
    client.get(url).timeout(timeout).send().await.is_ok_and(|r| r.status().is_success())
}

/// Whether nothing listens on `host:port` now (a bind there succeeds).
pub fn port_free(host: &str, port: u16) -> bool {
    std::net::TcpListener::bind((host, port)).is_ok()
}

/// How far past its default port a server looks for a free one.
pub const PORT_SEARCH: u16 = 20;

/// The port a server gets: the one asked for (taken: `PORT_IN_USE`; 0: any free port), else
/// `default` when free, else the first free one after it, skipping `avoid` (the other server's
/// default), else any free port. The second value is the default that was taken, if it was;
/// `default` 0 means any free port.
pub fn choose_port(
    asked: Option<u16>,
    default: u16,
    avoid: u16,
    free: impl Fn(u16) -> bool,
    any: impl FnOnce() -> Result<u16>,
) -> Result<(u16, Option<u16>)> {
    match asked {
        Some(0) => return Ok((any()?, None)),
        Some(p) if free(p) => return Ok((p, None)),
        Some(p) => return Err(RuntimeError::PortInUse(p)),
        None if default == 0 => return Ok((any()?, None)),
        None if free(default) => return Ok((default, None)),
        None => {}
    }
    let next =
        (1..=PORT_SEARCH).filter_map(|i| default.checked_add(i)).find(|&p| p != avoid && free(p));
    Ok((next.map_or_else(any, Ok)?, Some(default)))
}

/// What a server's tab says when its default port was taken: `server` is "this server" or
/// "the image API", `by` who holds the port ("another program", or another llama-server).
pub fn port_note(default: u16, port: u16, by: &str, server: &str) -> String {
    format!(
        "Port {default} is in use by {by}, so {server} listens on {port}; clients with default \
         settings look for {default}."
    )
}

/// What a llama-server answering `/props` on `127.0.0.1:port` serves ("llama-server with
/// qwen3-8b"); `None` when nothing there answers like one.
pub async fn llama_server_on(client: &reqwest::Client, port: u16) -> Option<String> {
    let url = format!("http://127.0.0.1:{port}/props");
    let r = client.get(url).timeout(std::time::Duration::from_secs(1)).send().await.ok()?;
    let body = r.bytes().await.ok()?;
    let v: serde_json::Value = serde_json::from_slice(&body).ok()?;
    describe_llama_props(&v)
}

/// A llama-server's `/props` in words, or `None` when it is not one.
pub fn describe_llama_props(v: &serde_json::Value) -> Option<String> {
    if v.get("default_generation_settings").is_none() && v.get("total_slots").is_none() {
        return None;
    }
    let name = |k: &str| v.get(k).and_then(|s| s.as_str()).filter(|s| !s.is_empty());
    let model = name("model_alias")
        .or_else(|| name("model_path").map(|p| p.rsplit(['/', '\\']).next().unwrap_or(p)));
    Some(match model {
        Some(m) => format!("llama-server with {m}"),
        None => "llama-server".into(),
    })
}

/// Whether `host` (an address to bind) keeps an API on this computer.
pub fn is_loopback(host: &str) -> bool {
    host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The fewest characters of a token that opens an API to other computers.
pub const MIN_TOKEN_LEN: usize = 8;

/// Whether `what` may listen on `host`: on this computer always; on any other address only with
/// a token (`Authorization: Bearer`) of at least [`MIN_TOKEN_LEN`] characters, since the API
/// would otherwise answer anyone on the network.
pub fn check_exposure(host: &str, token: Option<&str>, what: &str) -> Result<()> {
    if is_loopback(host) || token.is_some_and(|t| t.trim().len() >= MIN_TOKEN_LEN) {
        return Ok(());
    }
    Err(crate::RuntimeError::InvalidInput(format!(
        "{what} on {host} would be open to other computers: set a token of at least {MIN_TOKEN_LEN} characters, or keep 127.0.0.1"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_loopback_listens_without_a_token() {
        let cases: &[(&str, Option<&str>, bool)] = &[
            ("127.0.0.1", None, true),
            ("localhost", None, true),
            ("::1", None, true),
            ("127.0.0.2", None, true),
            ("0.0.0.0", None, false),
            ("::", None, false),
            ("192.168.1.20", None, false),
            ("0.0.0.0", Some("short"), false),
            ("0.0.0.0", Some("        padded  "), false),
            ("0.0.0.0", Some("s3cret-token"), true),
            ("example.com", Some("s3cret-token"), true),
        ];
        for (host, token, ok) in cases {
            let got = check_exposure(host, *token, "the job API");
            assert_eq!(got.is_ok(), *ok, "{host} {token:?}");
            if let Err(e) = got {
                assert!(e.to_string().contains("the job API on"), "{e}");
            }
        }
    }

    #[test]
    fn port_choice_table() {
        let taken = [8080u16, 8082, 9000];
        let free = |p: u16| !taken.contains(&p);
        let any = || Ok(40000);
        let pick = |asked, default, avoid| {
            choose_port(asked, default, avoid, free, any).map_err(|e| e.code())
        };
        #[rustfmt::skip]
        let table = [
            (None, 8081, 8080, Ok((8081, None))),             // the default, free
            (None, 8080, 8081, Ok((8083, Some(8080)))),       // taken: the next free, not 8081
            (None, 8080, 0, Ok((8081, Some(8080)))),
            (Some(8082), 8080, 8081, Err(ipc::ErrorCode::PortInUse)), // asked for: no other
            (Some(8085), 8080, 8081, Ok((8085, None))),
            (Some(0), 8080, 8081, Ok((40000, None))),         // any free port
            (None, 0, 8081, Ok((40000, None))),
            (None, 65535, 0, Ok((65535, None))),
        ];
        for (asked, default, avoid, want) in table {
            assert_eq!(pick(asked, default, avoid), want, "{asked:?} {default} {avoid}");
        }
        // Nothing free near the default: any free port, still saying which default was taken.
        let none = |_| false;
        assert_eq!(choose_port(None, 8080, 0, none, any).unwrap(), (40000, Some(8080)));
    }

    #[test]
    fn a_llama_server_is_told_from_other_programs_by_its_props() {
        let props = json!({
            "default_generation_settings": {"n_ctx": 4096},
            "total_slots": 1,
            "model_path": "/home/me/models/qwen3-8b-q4.gguf",
        });
        assert_eq!(describe_llama_props(&props).unwrap(), "llama-server with qwen3-8b-q4.gguf");
        let aliased = json!({"total_slots": 2, "model_alias": "chat", "model_path": "/x.gguf"});
        assert_eq!(describe_llama_props(&aliased).unwrap(), "llama-server with chat");
        assert_eq!(describe_llama_props(&json!({"total_slots": 1})).unwrap(), "llama-server");
        assert_eq!(describe_llama_props(&json!({"status": "ok"})), None);
        assert_eq!(describe_llama_props(&json!([1, 2])), None);
    }
}
