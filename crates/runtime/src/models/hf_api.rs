//! Hugging Face's Hub API for the browse view (#17): the model search (GGUF repos only) and a
//! repo's file tree, on the saved endpoint with the saved token ([`HfAccess`]), and Hugging
//! Face's refusals told apart ([`refusal`]: no such repo, a gated one, a refused token, rate
//! limiting), each with a remedy.

use super::browse::TreeEntry;
use super::hf::HfAccess;
use crate::{Result, RuntimeError};
use ipc::models::HfSort;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use std::time::Duration;

/// The largest answer read (a tree of a repo with thousands of files is a few MB).
const MAX_ANSWER: usize = 32 << 20;
/// The most pages of one tree followed (the Hub sends up to 1000 entries a page).
const MAX_PAGES: usize = 64;

/// The client for the Hub's API: TLS ready, the app's user agent, redirects followed.
pub fn client() -> Result<reqwest::Client> {
    crate::net::install_crypto_provider();
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(15))
        .user_agent(concat!("genai-control-panel/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| RuntimeError::Internal(format!("HTTP client: {e}")))
}

/// A repo the search found.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct RepoHit {
    pub id: String,
    #[serde(default)]
    pub downloads: u64,
    #[serde(default)]
    pub likes: u64,
    #[serde(default, rename = "lastModified")]
    pub last_modified: Option<String>,
    /// `false`, or how access is granted (`"auto"`, `"manual"`).
    #[serde(default)]
    gated: serde_json::Value,
}

impl RepoHit {
    /// Its files need a token and an accepted licence.
    pub fn gated(&self) -> bool {
        !matches!(self.gated, serde_json::Value::Null | serde_json::Value::Bool(false))
    }
}

/// Repos whose name matches `text` and that hold GGUF files, most downloaded (or most recently
/// changed) first.
pub async fn search(
    http: &reqwest::Client,
    access: &HfAccess,
    text: &str,
    sort: HfSort,
    limit: u32,
) -> Result<Vec<RepoHit>> {
    let mut url = reqwest::Url::parse(&format!("{}/api/models", access.endpoint))
        .map_err(|e| RuntimeError::InvalidInput(format!("Hugging Face endpoint: {e}")))?;
    url.query_pairs_mut()
        .append_pair("search", text.trim())
        .append_pair("filter", "gguf")
        .append_pair("sort", if sort == HfSort::Downloads { "downloads" } else { "lastModified" })
        .append_pair("direction", "-1")
        .append_pair("limit", &limit.clamp(1, 100).to_string());
    get_json(http, access, url.as_str(), None).await
}

/// Every file of `repo` at `revision` (a branch, tag or commit; empty: `main`).
pub async fn tree(
    http: &reqwest::Client,
    access: &HfAccess,
    repo: &str,
    revision: &str,
) -> Result<Vec<TreeEntry>> {
    let repo = checked_repo(repo)?;
    let revision = if revision.trim().is_empty() { "main" } else { revision.trim() };
    let mut url = reqwest::Url::parse(&format!("{}/api/models/{repo}/tree/", access.endpoint))
        .map_err(|e| RuntimeError::InvalidInput(format!("Hugging Face endpoint: {e}")))?;
    // One path segment: a branch such as `refs/pr/1` is sent encoded, as the Hub expects.
    url.path_segments_mut()
        .map_err(|()| RuntimeError::Internal("endpoint URL".into()))?
        .pop_if_empty()
        .push(revision);
    url.query_pairs_mut().append_pair("recursive", "true");
    // A large tree comes in pages, each naming the next in a `Link` header.
    let mut entries = Vec::new();
    let mut next = Some(url);
    for _ in 0..MAX_PAGES {
        let Some(page) = next.take() else { return Ok(entries) };
        let (mut more, link): (Vec<TreeEntry>, _) =
            get_page(http, access, page.as_str(), Some(repo)).await?;
        entries.append(&mut more);
        next = match link.as_deref().and_then(next_link) {
            Some(l) => Some(same_origin(&page, l)?),
            None => None,
        };
    }
    match next {
        None => Ok(entries),
        Some(page) => Err(RuntimeError::Network {
            url: page.to_string(),
            detail: format!("the repo's file list is longer than {MAX_PAGES} pages"),
        }),
    }
}

/// The `rel="next"` target of a `Link` header (RFC 8288), as written. Pure.
pub fn next_link(header: &str) -> Option<&str> {
    header.split(',').find_map(|link| {
        let (target, params) = link.trim().strip_prefix('<')?.split_once('>')?;
        let next = params.split(';').any(|p| {
            let p = p.trim();
            p.strip_prefix("rel=").is_some_and(|v| {
                v.trim_matches('"').split_ascii_whitespace().any(|r| r.eq_ignore_ascii_case("next"))
            })
        });
        next.then_some(target)
    })
}

/// `link` read against `page`, kept only when it stays on the page's scheme, host and port:
/// a next page elsewhere would be sent the token's questions, so it is an error.
fn same_origin(page: &reqwest::Url, link: &str) -> Result<reqwest::Url> {
    match page.join(link) {
        Ok(url) if url.origin() == page.origin() => Ok(url),
        _ => Err(RuntimeError::Network {
            url: page.to_string(),
            detail: format!("the next page of the file list is on another host: {link}"),
        }),
    }
}

/// `owner/name` as the Hub names repos, or the error that says why not.
fn checked_repo(repo: &str) -> Result<&str> {
    let repo = repo.trim().trim_matches('/');
    let ok = |p: &str| {
        !p.is_empty()
            && p != "."
            && p != ".."
            && p.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    };
    match repo.split_once('/') {
        Some((owner, name)) if ok(owner) && ok(name) => Ok(repo),
        _ => Err(RuntimeError::InvalidInput(format!(
            "repository {repo:?} is not of the form owner/name (letters, digits, '-', '_', '.')"
        ))),
    }
}

async fn get_json<T: DeserializeOwned>(
    http: &reqwest::Client,
    access: &HfAccess,
    url: &str,
    repo: Option<&str>,
) -> Result<T> {
    Ok(get_page(http, access, url, repo).await?.0)
}

/// An answer, and the `Link` header that names its next page.
async fn get_page<T: DeserializeOwned>(
    http: &reqwest::Client,
    access: &HfAccess,
    url: &str,
    repo: Option<&str>,
) -> Result<(T, Option<String>)> {
    let token = access.token_for(url);
    let mut req = http.get(url).timeout(Duration::from_secs(30));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let network =
        |e: reqwest::Error| RuntimeError::Network { url: url.to_owned(), detail: e.to_string() };
    let mut resp = req.send().await.map_err(network)?;
    let status = resp.status().as_u16();
    if !(200..300).contains(&status) {
        let header = |name: &str| resp.headers().get(name).and_then(|v| v.to_str().ok());
        let why = Refused {
            status,
            error_code: header("x-error-code"),
            retry_after_secs: header("retry-after").and_then(|v| v.trim().parse().ok()),
            token_sent: token.is_some(),
        };
        return Err(refusal(&why, url, repo, access));
    }
    let link = resp.headers().get("link").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(network)? {
        body.extend_from_slice(&chunk);
        if body.len() > MAX_ANSWER {
            return Err(RuntimeError::Network {
                url: url.to_owned(),
                detail: format!("the answer is over {} MiB", MAX_ANSWER >> 20),
            });
        }
    }
    let answer = serde_json::from_slice(&body).map_err(|e| RuntimeError::Network {
        url: url.to_owned(),
        detail: format!("the answer is not what Hugging Face's API sends: {e}"),
    })?;
    Ok((answer, link))
}

/// What a refusal said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused<'a> {
    pub status: u16,
    /// Hugging Face's `X-Error-Code` (`RepoNotFound`, `GatedRepo`, …).
    pub error_code: Option<&'a str>,
    pub retry_after_secs: Option<u64>,
    pub token_sent: bool,
}

/// The error for a refusal of `url` (about `repo`, when the request was for one). Pure.
pub fn refusal(r: &Refused<'_>, url: &str, repo: Option<&str>, access: &HfAccess) -> RuntimeError {
    let auth = |repo: &str| RuntimeError::AuthRequired {
        url: url.to_owned(),
        status: r.status,
        page: access.repo_page(repo),
        token_sent: r.token_sent,
    };
    match (r.status, r.error_code, repo) {
        (429, _, _) => RuntimeError::RateLimited {
            url: url.to_owned(),
            retry_after_secs: r.retry_after_secs,
            token_sent: r.token_sent,
        },
        (_, Some("GatedRepo"), Some(repo)) | (403, _, Some(repo)) => auth(repo),
        // The Hub answers 401 for a repo it will not show: one that does not exist, or a
        // private one.
        (_, Some("RepoNotFound"), Some(repo)) | (404 | 401, None, Some(repo)) => {
            RuntimeError::RepoNotFound { repo: repo.to_owned(), token_sent: r.token_sent }
        }
        (_, Some("RevisionNotFound" | "EntryNotFound"), _) => {
            RuntimeError::HttpStatus { url: url.to_owned(), status: 404 }
        }
        // A refused token, on a request about no repo (the search).
        (401 | 403, _, None) => RuntimeError::AuthRequired {
            url: url.to_owned(),
            status: r.status,
            page: format!("{}/settings/tokens", access.endpoint),
            token_sent: r.token_sent,
        },
        _ => RuntimeError::HttpStatus { url: url.to_owned(), status: r.status },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipc::ErrorCode;

    #[test]
    fn refusals_told_apart() {
        let access = HfAccess::default();
        let r = |status, error_code, token_sent| Refused {
            status,
            error_code,
            retry_after_secs: Some(30),
            token_sent,
        };
        let repo = Some("acme/model-GGUF");
        #[rustfmt::skip]
        let table = [
            (r(401, Some("RepoNotFound"), false), repo, ErrorCode::ModelNotFound, "or it is private"),
            (r(404, Some("RepoNotFound"), true), repo, ErrorCode::ModelNotFound, "this token can see"),
            (r(401, None, false), repo, ErrorCode::ModelNotFound, "no repository acme/model-GGUF"),
            (r(401, Some("GatedRepo"), false), repo, ErrorCode::AuthRequired, "needs a token"),
            (r(403, Some("GatedRepo"), true), repo, ErrorCode::AuthRequired, "token was refused"),
            (r(403, None, true), repo, ErrorCode::AuthRequired, "token was refused"),
            (r(404, Some("RevisionNotFound"), false), repo, ErrorCode::DownloadFailed, "HTTP 404"),
            (r(429, None, false), repo, ErrorCode::Network, "limiting requests"),
            (r(429, None, true), None, ErrorCode::Network, "limiting requests"),
            (r(401, None, true), None, ErrorCode::AuthRequired, "token was refused"),
            (r(500, None, false), repo, ErrorCode::DownloadFailed, "HTTP 500"),
        ];
        for (refused, repo, code, says) in table {
            let e = refusal(&refused, "https://huggingface.co/api/x", repo, &access);
            assert_eq!(e.to_ipc().code, code, "{refused:?}: {e}");
            assert!(e.to_string().contains(says), "{refused:?}: {e}");
        }
        // Rate limiting says how long to wait, and that a token helps when none was sent.
        let remedy = |t| refusal(&r(429, None, t), "u", None, &access).to_ipc().remedy;
        assert!(remedy(false).contains("30 s") && remedy(false).contains("token"));
        assert!(!remedy(true).contains("token"));
        // A gated repo's remedy sends the user to its page.
        let gated = refusal(&r(401, Some("GatedRepo"), false), "u", repo, &access).to_ipc();
        assert!(gated.remedy.contains("https://huggingface.co/acme/model-GGUF"), "{gated:?}");
        // A repo that is not there says to check the name.
        let missing = refusal(&r(401, Some("RepoNotFound"), false), "u", repo, &access).to_ipc();
        assert!(missing.remedy.contains("Check the name"), "{missing:?}");
    }

    #[test]
    fn the_next_page_is_read_from_the_link_header() {
        let hub = "https://huggingface.co/api/models/a/b/tree/main?recursive=true&cursor=eyJ";
        let table = [
            (format!(r#"<{hub}>; rel="next""#), Some(hub)),
            (format!(r#"<{hub}>;rel=next"#), Some(hub)),
            (format!(r#"<https://x/prev>; rel="prev", <{hub}>; rel="next""#), Some(hub)),
            (r#"<https://x/prev>; rel="prev""#.to_owned(), None),
            (r#"<https://x/p>; rel="nextish""#.to_owned(), None),
            ("garbage".to_owned(), None),
            (String::new(), None),
        ];
        for (header, want) in &table {
            assert_eq!(next_link(header), *want, "{header}");
        }
        // Relative links are read against the page; another host is refused.
        let page = reqwest::Url::parse("http://127.0.0.1:9/api/models/a/b/tree/main").unwrap();
        let same = same_origin(&page, "/api/models/a/b/tree/main?cursor=2").unwrap();
        assert_eq!(same.as_str(), "http://127.0.0.1:9/api/models/a/b/tree/main?cursor=2");
        for elsewhere in ["http://127.0.0.2:9/x", "https://127.0.0.1:9/x", "http://127.0.0.1:10/x"]
        {
            assert!(same_origin(&page, elsewhere).is_err(), "{elsewhere}");
        }
    }

    #[test]
    fn repo_names_are_checked_before_a_request() {
        for ok in ["acme/model-GGUF", " acme/Qwen3-8B-GGUF/ ", "a_b/c.d"] {
            assert!(checked_repo(ok).is_ok(), "{ok}");
        }
        for bad in ["acme", "acme/", "/model", "a/b/c", "../etc", "a/..", "a/b?x=1", "a/b c"] {
            assert!(checked_repo(bad).is_err(), "{bad}");
        }
    }
}
