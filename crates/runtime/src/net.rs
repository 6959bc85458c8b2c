//! Local networking shared by the runtime checks and the servers: a free port, and an HTTP
//! client for the app's own servers on 127.0.0.1.

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

/// Whether `url` (a server's `/health`) answers with a success status within `timeout`.
pub async fn answers(client: &reqwest::Client, url: &str, timeout: std::time::Duration) -> bool {
    client.get(url).timeout(timeout).send().await.is_ok_and(|r| r.status().is_success())
}
