//! What Hugging Face offers and how it would run here (#17): a repo's GGUF entries
//! ([`browse::group`]) with every file's header read remotely ([`Downloader::read_gguf_header`]:
//! a few `Range` requests, at most 64 KiB past each header), a few files at a time, and kept per
//! endpoint, repo, revision and file, so that the badges ([`badges`], on [`crate::llama::fit`])
//! are worked out again for any context or KV type without a request.

use super::browse::{self, QuantEntry, RepoFile};
use super::hf::HfSettings;
use super::hf_api::{self, RepoHit};
use super::source::hf_url;
use crate::download::{DownloadConfig, Downloader};
use crate::llama::autoconfig::ModelFacts;
use crate::llama::fit::{self, FitAsk, FitMachine};
use crate::{Result, RuntimeError};
use futures_util::{stream, StreamExt};
use ipc::models::{FitBadge, FitReport, HfEntry, HfRepoHit, HfRepoView, HfSort};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// Headers read at once (each is a few sequential requests).
const PARALLEL_READS: usize = 4;

/// A file on disk as it is now: its path, length and modification time.
type FileVersion = (PathBuf, u64, Option<SystemTime>);

/// How many of each the catalog keeps: an app left open for days, browsing repo after repo,
/// keeps the most recently used (a header's facts are a few KiB).
const KEEP_HEADERS: usize = 1024;
const KEEP_VIEWS: usize = 32;
const KEEP_LOCAL: usize = 256;

/// A map that keeps at most `cap` entries, forgetting the least recently used first.
#[derive(Debug)]
struct Kept<K, V> {
    cap: usize,
    tick: u64,
    map: HashMap<K, (V, u64)>,
}

impl<K: std::hash::Hash + Eq + Clone, V: Clone> Kept<K, V> {
    fn new(cap: usize) -> Self {
        Self { cap: cap.max(1), tick: 0, map: HashMap::new() }
    }

    fn get(&mut self, k: &K) -> Option<V> {
        self.tick += 1;
        let tick = self.tick;
        self.map.get_mut(k).map(|(v, used)| {
            *used = tick;
            v.clone()
        })
    }

    fn insert(&mut self, k: K, v: V) {
        self.tick += 1;
        if !self.map.contains_key(&k) && self.map.len() >= self.cap {
            let oldest = self.map.iter().min_by_key(|(_, (_, used))| *used).map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                self.map.remove(&oldest);
            }
        }
        self.map.insert(k, (v, self.tick));
    }

    fn retain(&mut self, keep: impl Fn(&K) -> bool) {
        self.map.retain(|k, _| keep(k));
    }
}

/// What a file's header said, or why it could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Facts {
    Read(Arc<ModelFacts>),
    /// Not GGUF, truncated, hostile, or refused by the server (a gated repo): the message says.
    Unreadable(String),
}

/// A repo as the browse view shows it: entries smallest first, each with its header's facts.
#[derive(Debug, Clone)]
pub struct RepoView {
    pub repo: String,
    pub revision: String,
    pub entries: Vec<(QuantEntry, Facts)>,
    pub projectors: Vec<RepoFile>,
}

#[derive(Clone, Debug)]
pub struct Catalog {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    http: reqwest::Client,
    downloader: Downloader,
    hf: HfSettings,
    /// By the first file's URL (endpoint, repo, revision and path): headers that were read, or
    /// that are not GGUF. Network failures are not kept: the next open tries again.
    headers: Mutex<Kept<String, Facts>>,
    /// The repos opened, by (repo, revision): their badges again without a request.
    views: Mutex<Kept<(String, String), Arc<RepoView>>>,
    /// Installed models' facts, by their first file's path, length and modification time (the
    /// latest version of each path only).
    local: Mutex<Kept<FileVersion, Facts>>,
}

impl Catalog {
    pub fn new(hf: HfSettings, config: DownloadConfig) -> Result<Self> {
        Ok(Self {
            inner: Arc::new(Inner {
                http: hf_api::client()?,
                downloader: Downloader::new(config)?,
                hf,
                headers: Mutex::new(Kept::new(KEEP_HEADERS)),
                views: Mutex::new(Kept::new(KEEP_VIEWS)),
                local: Mutex::new(Kept::new(KEEP_LOCAL)),
            }),
        })
    }

    pub async fn search(&self, text: &str, sort: HfSort) -> Result<Vec<HfRepoHit>> {
        if text.trim().is_empty() {
            return Err(RuntimeError::InvalidInput("type part of a model's name to search".into()));
        }
        let hits =
            hf_api::search(&self.inner.http, &self.inner.hf.access(), text, sort, 30).await?;
        Ok(hits.iter().map(hit_for_window).collect())
    }

    /// The repo's GGUF entries with their headers' facts (read now, or kept from before).
    pub async fn open(&self, repo: &str, revision: &str) -> Result<Arc<RepoView>> {
        let access = self.inner.hf.access();
        let revision = if revision.trim().is_empty() { "main" } else { revision.trim() };
        let tree = hf_api::tree(&self.inner.http, &access, repo, revision).await?;
        let grouped = browse::group(&tree);
        let repo = repo.trim().trim_matches('/');
        // Each read owns what it needs: a future that borrows across `buffered` is not `Send`
        // for every lifetime, as a Tauri command's future must be.
        let reads: Vec<_> = grouped
            .entries
            .iter()
            .cloned()
            .map(|entry| {
                let (me, access) = (self.clone(), access.clone());
                let (repo, revision) = (repo.to_owned(), revision.to_owned());
                async move {
                    let token = access.token.as_deref();
                    me.facts_of(&access.endpoint, token, &repo, &revision, &entry).await
                }
            })
            .collect();
        let facts: Vec<Facts> = stream::iter(reads).buffered(PARALLEL_READS).collect().await;
        let view = Arc::new(RepoView {
            repo: repo.to_owned(),
            revision: revision.to_owned(),
            entries: grouped.entries.into_iter().zip(facts).collect(),
            projectors: grouped.projectors,
        });
        let key = (view.repo.clone(), view.revision.clone());
        self.inner.views.lock().unwrap().insert(key, view.clone());
        Ok(view)
    }

    /// An installed model's facts from its files' headers (all shards; read off the async
    /// workers), kept while its first file is unchanged.
    pub async fn local_facts(&self, files: Vec<PathBuf>) -> Facts {
        let Some(first) = files.first().cloned() else {
            return Facts::Unreadable("no files".into());
        };
        let meta = tokio::fs::metadata(&first).await.ok();
        let key = (
            first.clone(),
            meta.as_ref().map_or(0, |m| m.len()),
            meta.and_then(|m| m.modified().ok()),
        );
        if let Some(kept) = self.inner.local.lock().unwrap().get(&key) {
            return kept;
        }
        let read = tokio::task::spawn_blocking(move || -> Result<ModelFacts> {
            let h = super::read_gguf_split(&files)?;
            ModelFacts::from_header(&files[0].display().to_string(), &h)
        })
        .await;
        let facts = match read {
            Ok(Ok(f)) => Facts::Read(Arc::new(f)),
            Ok(Err(e)) => Facts::Unreadable(e.to_string()),
            Err(e) => Facts::Unreadable(e.to_string()),
        };
        {
            let mut local = self.inner.local.lock().unwrap();
            // An earlier version of the same file is gone for good.
            local.retain(|(path, ..)| *path != key.0);
            local.insert(key, facts.clone());
        }
        facts
    }

    /// A repo opened before, as it was read then.
    pub fn opened(&self, repo: &str, revision: &str) -> Result<Arc<RepoView>> {
        let revision = if revision.trim().is_empty() { "main" } else { revision.trim() };
        let key = (repo.trim().trim_matches('/').to_owned(), revision.to_owned());
        self.inner.views.lock().unwrap().get(&key).ok_or_else(|| {
            RuntimeError::InvalidInput(format!("{} has not been opened yet: open it first", key.0))
        })
    }

    /// One entry's facts: its shards' headers read in turn (their tensors merged into the first
    /// one's), kept when read or when not GGUF.
    async fn facts_of(
        &self,
        endpoint: &str,
        token: Option<&str>,
        repo: &str,
        revision: &str,
        entry: &QuantEntry,
    ) -> Facts {
        let urls: Vec<String> = match entry
            .files
            .iter()
            .map(|f| hf_url(endpoint, repo, &f.path, revision))
            .collect::<Result<_>>()
        {
            Ok(urls) => urls,
            Err(e) => return Facts::Unreadable(e.to_string()),
        };
        if !entry.complete {
            return Facts::Unreadable(
                "a shard of this split model is missing from the repository".into(),
            );
        }
        if let Some(kept) = self.inner.headers.lock().unwrap().get(&urls[0]) {
            return kept;
        }
        let mut merged: Option<gguf::Header> = None;
        for url in &urls {
            match self.inner.downloader.read_gguf_header(url, token).await {
                Ok(h) => match merged.as_mut() {
                    None => merged = Some(h),
                    Some(m) => m.tensors.extend(h.tensors),
                },
                Err(e) => {
                    let facts = Facts::Unreadable(e.to_string());
                    if matches!(e, RuntimeError::GgufInvalid { .. }) {
                        self.inner.headers.lock().unwrap().insert(urls[0].clone(), facts.clone());
                    }
                    return facts;
                }
            }
        }
        let facts = match merged.map(|h| ModelFacts::from_header(&entry.name, &h)) {
            Some(Ok(f)) => Facts::Read(Arc::new(f)),
            Some(Err(e)) => Facts::Unreadable(e.to_string()),
            None => Facts::Unreadable("no files".into()),
        };
        self.inner.headers.lock().unwrap().insert(urls[0].clone(), facts.clone());
        facts
    }
}

/// Every entry's badge on `machine` at `ask`, and which one is the best fit
/// ([`fit::BEST_FIT_RULE`]). Pure: the context slider calls it again without a request.
pub fn badges(
    view: &RepoView,
    machine: &FitMachine,
    ask: &FitAsk,
) -> (Vec<FitReport>, Option<usize>) {
    let reports: Vec<FitReport> =
        view.entries.iter().map(|(_, facts)| report(facts, machine, ask)).collect();
    let sized: Vec<(u64, &FitReport)> =
        view.entries.iter().map(|(e, _)| e.bytes).zip(reports.iter()).collect();
    let best = fit::best_fit(&sized, !machine.gpus_free.is_empty());
    (reports, best)
}

/// The browse view's answer: the entries with their badges and the best fit.
pub fn view_for_window(view: &RepoView, machine: &FitMachine, ask: &FitAsk) -> HfRepoView {
    let (reports, best) = badges(view, machine, ask);
    HfRepoView {
        repo: view.repo.clone(),
        revision: view.revision.clone(),
        entries: view
            .entries
            .iter()
            .zip(reports)
            .map(|((e, _), fit)| HfEntry {
                name: e.name.clone(),
                quant: e.quant.clone(),
                files: e.files.clone(),
                bytes: e.bytes,
                complete: e.complete,
                fit,
            })
            .collect(),
        projectors: view.projectors.clone(),
        best,
        best_rule: fit::BEST_FIT_RULE.to_owned(),
    }
}

/// A search hit as the window shows it.
fn hit_for_window(h: &RepoHit) -> HfRepoHit {
    HfRepoHit {
        id: h.id.clone(),
        downloads: h.downloads,
        likes: h.likes,
        last_modified: h.last_modified.clone(),
        gated: h.gated(),
    }
}

/// A badge for facts, or the "cannot read" one with the reason.
pub fn report(facts: &Facts, machine: &FitMachine, ask: &FitAsk) -> FitReport {
    match facts {
        Facts::Read(m) => fit::fit(m, machine, ask),
        Facts::Unreadable(why) => FitReport {
            badge: FitBadge::Unreadable,
            asked_context: ask.context,
            context: 0,
            gpu_context: 0,
            memory: Vec::new(),
            if_llm_stopped: None,
            why: why.clone(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_least_recently_used_is_forgotten_first() {
        let mut kept = Kept::new(2);
        kept.insert("a", 1);
        kept.insert("b", 2);
        // "a" used after "b" was put in: "b" is the one to go.
        assert_eq!(kept.get(&"a"), Some(1));
        kept.insert("c", 3);
        assert_eq!((kept.get(&"a"), kept.get(&"b"), kept.get(&"c")), (Some(1), None, Some(3)));
        // Putting in a key it has replaces it and forgets nothing.
        kept.insert("a", 10);
        assert_eq!((kept.map.len(), kept.get(&"a"), kept.get(&"c")), (2, Some(10), Some(3)));
        kept.retain(|k| *k != "a");
        assert_eq!((kept.get(&"a"), kept.map.len()), (None, 1));
    }
}
