//! Hugging Face as `huggingface_hub` reaches it: the host from a setting, else `HF_ENDPOINT`,
//! else `https://huggingface.co`; a token from a setting, else `HF_TOKEN`. The token goes to that
//! host only: never to another URL's host, never to the storage host a download is redirected to
//! (reqwest drops `Authorization` on a redirect to another host or port).
//!
//! The setting lives in `config/huggingface.json`, readable by this user only (0600), in a
//! format of the app's own with a version; a file from a newer version is refused, never
//! overwritten.

use crate::{Result, RuntimeError};
use ipc::models::{HfSettingsArgs, HfSettingsView, SettingOrigin};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";
const FORMAT: u32 = 1;

/// What one request needs: the host and the token for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HfAccess {
    /// No trailing `/`.
    pub endpoint: String,
    pub token: Option<String>,
}

impl Default for HfAccess {
    fn default() -> Self {
        Self { endpoint: DEFAULT_ENDPOINT.to_owned(), token: None }
    }
}

impl HfAccess {
    /// The token, if `url` is on the Hugging Face host (same scheme, host and port).
    pub fn token_for(&self, url: &str) -> Option<&str> {
        let token = self.token.as_deref()?;
        let (a, b) = (reqwest::Url::parse(url).ok()?, reqwest::Url::parse(&self.endpoint).ok()?);
        let same = a.scheme() == b.scheme()
            && a.host_str() == b.host_str()
            && a.port_or_known_default() == b.port_or_known_default();
        same.then_some(token)
    }

    /// The page where a repository's licence is accepted.
    pub fn repo_page(&self, repo: &str) -> String {
        format!("{}/{}", self.endpoint, repo.trim().trim_matches('/'))
    }
}

/// An endpoint as typed: an http(s) URL with a host, no query; trailing `/` removed.
pub fn normalise_endpoint(raw: &str) -> Result<String> {
    let t = raw.trim().trim_end_matches('/');
    let bad =
        |why: &str| RuntimeError::InvalidInput(format!("the Hugging Face endpoint {t:?} {why}"));
    let u = reqwest::Url::parse(t).map_err(|_| bad("is not a URL"))?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err(bad("is not an http(s) URL"));
    }
    if u.host_str().is_none_or(str::is_empty) {
        return Err(bad("has no host"));
    }
    if u.query().is_some() || u.fragment().is_some() || !u.username().is_empty() {
        return Err(bad("must not carry a query, a fragment or a user name"));
    }
    Ok(t.to_owned())
}

/// A token as shown: never whole.
pub fn mask(token: &str) -> String {
    let chars: Vec<char> = token.chars().collect();
    if chars.len() <= 8 {
        return "•".repeat(chars.len().max(4));
    }
    let head: String = chars[..3].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{head}…{tail}")
}

/// The stored form (the app's own, not the window's transfer type).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Stored {
    format: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    token: Option<String>,
}

/// The environment as read once: `HF_ENDPOINT`, `HF_TOKEN` (blank counts as unset).
#[derive(Debug, Clone, Default)]
pub struct HfEnv {
    pub endpoint: Option<String>,
    pub token: Option<String>,
}

impl HfEnv {
    pub fn from_env() -> Self {
        let var =
            |k: &str| std::env::var(k).ok().map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        Self { endpoint: var("HF_ENDPOINT"), token: var("HF_TOKEN") }
    }
}

/// The Hugging Face settings: stored choice over the environment over the default.
#[derive(Debug, Clone)]
pub struct HfSettings {
    path: PathBuf,
    env: HfEnv,
    stored: Arc<Mutex<Stored>>,
    /// Why the file could not be used (a newer format, damage); it is then left as it is.
    problem: Arc<Mutex<Option<String>>>,
}

impl HfSettings {
    pub fn open(config_dir: &Path, env: HfEnv) -> Self {
        let path = config_dir.join("huggingface.json");
        let (stored, problem) = match load(&path) {
            Ok(s) => (s, None),
            Err(e) => (Stored::default(), Some(e.to_string())),
        };
        Self {
            path,
            env,
            stored: Arc::new(Mutex::new(stored)),
            problem: Arc::new(Mutex::new(problem)),
        }
    }

    fn stored(&self) -> Stored {
        self.stored.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The host and token in force now.
    pub fn access(&self) -> HfAccess {
        let s = self.stored();
        let endpoint = s
            .endpoint
            .or_else(|| self.env.endpoint.as_deref().and_then(|e| normalise_endpoint(e).ok()))
            .unwrap_or_else(|| DEFAULT_ENDPOINT.to_owned());
        HfAccess { endpoint, token: s.token.or_else(|| self.env.token.clone()) }
    }

    pub fn view(&self) -> HfSettingsView {
        let s = self.stored();
        let env_endpoint = self.env.endpoint.as_deref().and_then(|e| normalise_endpoint(e).ok());
        let (endpoint, endpoint_origin) = match (&s.endpoint, env_endpoint) {
            (Some(e), _) => (e.clone(), SettingOrigin::Setting),
            (None, Some(e)) => (e, SettingOrigin::Environment),
            (None, None) => (DEFAULT_ENDPOINT.to_owned(), SettingOrigin::Default),
        };
        let (token_masked, token_origin) = match (&s.token, &self.env.token) {
            (Some(t), _) => (Some(mask(t)), Some(SettingOrigin::Setting)),
            (None, Some(t)) => (Some(mask(t)), Some(SettingOrigin::Environment)),
            (None, None) => (None, None),
        };
        HfSettingsView {
            endpoint,
            endpoint_origin,
            token_masked,
            token_origin,
            problem: self.problem.lock().unwrap_or_else(|p| p.into_inner()).clone(),
        }
    }

    /// Saves the endpoint (blank: the environment's or the default) and the token (`None`:
    /// kept; blank: removed). Refuses to overwrite a file from a newer version of the app.
    pub async fn set(&self, args: HfSettingsArgs) -> Result<HfSettingsView> {
        let endpoint = match args.endpoint.trim() {
            "" => None,
            e => Some(normalise_endpoint(e)?),
        };
        let token = args.token.map(|t| t.trim().to_owned());
        if let Some(t) = token.as_deref() {
            if t.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(RuntimeError::InvalidInput(
                    "a Hugging Face token is one word without spaces".into(),
                ));
            }
        }
        let path = self.path.clone();
        if let Err(e) = load(&path) {
            if path.exists() {
                return Err(e);
            }
        }
        let mut next = self.stored();
        next.format = FORMAT;
        next.endpoint = endpoint;
        if let Some(t) = token {
            next.token = Some(t).filter(|t| !t.is_empty());
        }
        let bytes = serde_json::to_vec_pretty(&next)
            .map_err(|e| RuntimeError::Internal(format!("encoding {}: {e}", path.display())))?;
        tokio::task::spawn_blocking(move || write_private(&path, &bytes))
            .await
            .map_err(|e| RuntimeError::Internal(e.to_string()))??;
        *self.stored.lock().unwrap_or_else(|p| p.into_inner()) = next;
        *self.problem.lock().unwrap_or_else(|p| p.into_inner()) = None;
        Ok(self.view())
    }
}

fn load(path: &Path) -> Result<Stored> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Stored::default()),
        Err(e) => return Err(RuntimeError::io("reading", path, e)),
    };
    let s: Stored = serde_json::from_slice(&bytes).map_err(|e| {
        RuntimeError::InvalidInput(format!(
            "{} cannot be read ({e}); it was left as it is",
            path.display()
        ))
    })?;
    if s.format > FORMAT {
        return Err(RuntimeError::InvalidInput(format!(
            "{} was written by a newer version of the app (format {}, this one reads {FORMAT}); \
             it was left as it is",
            path.display(),
            s.format
        )));
    }
    Ok(s)
}

/// Writes `bytes` to `path` through a temporary file that only this user can read.
fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp-{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(&tmp).map_err(|e| RuntimeError::io("writing", &tmp, e))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        // An older file of the same temporary name kept its mode; make sure.
        f.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(|e| RuntimeError::io("protecting", &tmp, e))?;
    }
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(|e| RuntimeError::io("writing", &tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| RuntimeError::io("renaming", &tmp, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_goes_to_the_hugging_face_host_only() {
        let a = HfAccess {
            endpoint: "https://hf-mirror.example/".trim_end_matches('/').into(),
            token: Some("hf_secret".into()),
        };
        for (url, sent) in [
            ("https://hf-mirror.example/a/b/resolve/main/x.gguf", true),
            ("https://hf-mirror.example:443/a/b/resolve/main/x.gguf", true),
            ("http://hf-mirror.example/a/b/resolve/main/x.gguf", false),
            ("https://hf-mirror.example:8443/x", false),
            ("https://cdn-lfs.hf-mirror.example/x", false),
            ("https://hf-mirror.example.evil.test/x", false),
            ("https://huggingface.co/a/b/resolve/main/x.gguf", false),
            ("not a url", false),
        ] {
            assert_eq!(a.token_for(url).is_some(), sent, "{url}");
        }
        let none = HfAccess { token: None, ..a };
        assert_eq!(none.token_for("https://hf-mirror.example/x"), None);
    }

    #[test]
    fn endpoints_are_checked_and_trimmed() {
        assert_eq!(
            normalise_endpoint(" https://hf-mirror.com/ ").unwrap(),
            "https://hf-mirror.com"
        );
        assert_eq!(normalise_endpoint("http://127.0.0.1:9000").unwrap(), "http://127.0.0.1:9000");
        assert_eq!(normalise_endpoint("https://proxy.lan/hf").unwrap(), "https://proxy.lan/hf");
        for bad in ["hf-mirror.com", "ftp://x", "https://", "https://x/?a=1", "https://u@x"] {
            assert!(normalise_endpoint(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_token_is_never_shown_whole() {
        assert_eq!(mask("hf_abcdefghijklmnop"), "hf_…mnop");
        assert_eq!(mask("short"), "•••••");
        assert!(!mask("hf_abcdefghijklmnop").contains("abcdefghijkl"));
    }

    #[tokio::test]
    async fn the_setting_wins_over_the_environment_and_is_kept_private() {
        let dir = testkit::TempDir::new("hf-settings");
        let env = HfEnv {
            endpoint: Some("https://env.example".into()),
            token: Some("hf_fromenvironment".into()),
        };
        let s = HfSettings::open(dir.path(), env.clone());
        let v = s.view();
        assert_eq!(
            (v.endpoint.as_str(), v.endpoint_origin),
            ("https://env.example", SettingOrigin::Environment)
        );
        assert_eq!(v.token_origin, Some(SettingOrigin::Environment));
        assert_eq!(s.access().token.as_deref(), Some("hf_fromenvironment"));

        let v = s
            .set(HfSettingsArgs {
                endpoint: "https://set.example/".into(),
                token: Some("hf_fromthewindow".into()),
            })
            .await
            .unwrap();
        assert_eq!(
            (v.endpoint.as_str(), v.endpoint_origin),
            ("https://set.example", SettingOrigin::Setting)
        );
        assert_eq!(v.token_masked.as_deref(), Some("hf_…ndow"));
        let file = dir.path().join("huggingface.json");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
        }
        // After a restart the same access comes back; `None` keeps the token, blank removes it.
        let again = HfSettings::open(dir.path(), env.clone());
        assert_eq!(
            again.access(),
            HfAccess {
                endpoint: "https://set.example".into(),
                token: Some("hf_fromthewindow".into())
            }
        );
        again.set(HfSettingsArgs { endpoint: String::new(), token: None }).await.unwrap();
        assert_eq!(again.access().token.as_deref(), Some("hf_fromthewindow"));
        assert_eq!(again.access().endpoint, "https://env.example");
        again
            .set(HfSettingsArgs { endpoint: String::new(), token: Some(" ".into()) })
            .await
            .unwrap();
        assert_eq!(again.view().token_origin, Some(SettingOrigin::Environment));
    }

    #[tokio::test]
    async fn a_file_from_a_newer_version_is_refused_and_left_alone() {
        let dir = testkit::TempDir::new("hf-settings");
        let file = dir.path().join("huggingface.json");
        let newer =
            br#"{"format": 2, "endpoint": "https://future.example", "token": "hf_x", "more": 1}"#;
        std::fs::write(&file, newer).unwrap();
        let s = HfSettings::open(dir.path(), HfEnv::default());
        assert!(s.view().problem.unwrap().contains("newer version"));
        assert_eq!(s.access(), HfAccess::default());
        let e =
            s.set(HfSettingsArgs { endpoint: String::new(), token: Some("hf_new".into()) }).await;
        assert!(e.is_err());
        assert_eq!(std::fs::read(&file).unwrap(), newer);
    }
}
