//! Which links the app hands to the system's browser.

use crate::{Result, RuntimeError};

/// Accepts only absolute `https://` URLs with a host, so that a link cannot make the system open
/// a local file, a `file:` URL or another program's scheme handler.
pub fn checked_external_url(url: &str) -> Result<&str> {
    let bad = |why: &str| RuntimeError::InvalidInput(format!("refusing to open {url:?}: {why}"));
    let rest = url.strip_prefix("https://").ok_or_else(|| bad("only https:// links open"))?;
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    if host.is_empty() || host.starts_with('@') {
        return Err(bad("no host"));
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad("spaces or control characters"));
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_https_with_a_host() {
        assert!(checked_external_url("https://huggingface.co/ggml-org").is_ok());
        for bad in [
            "http://example.com",
            "file:///etc/passwd",
            "https://",
            "https:///x",
            "javascript:alert(1)",
            "https://a.b/ x",
            "/home/u",
            "https://a.b\n",
        ] {
            let e = checked_external_url(bad).unwrap_err();
            assert_eq!(e.code(), ipc::ErrorCode::InvalidInput, "{bad:?}");
        }
    }
}
