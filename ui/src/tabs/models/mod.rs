//! Models: what is installed, finding a model on Hugging Face with fit badges, the download
//! form, the queue, and a model's GGUF details.

mod browse;
mod form;
mod gguf_modal;
mod hf_access;
mod queue;
mod table;

use crate::api;
use crate::feeds::{DownloadsFeed, LlmFeed, ModelsChanged};
use ipc::models::{DownloadStatus, FitArgs, FitReport, ModelInfo, ModelList};
use ipc::IpcError;
use leptos::prelude::*;
use leptos::task::spawn_local;
use std::collections::HashMap;

/// What the parts of the tab share.
#[derive(Clone, Copy)]
pub struct ModelsState {
    pub list: RwSignal<Option<Result<ModelList, IpcError>>>,
    pub downloads: RwSignal<Vec<DownloadStatus>>,
    pub info: RwSignal<Option<ModelInfo>>,
    /// Installed LLMs' fit badges here, by id, at 8k tokens with an f16 cache.
    pub fits: RwSignal<HashMap<String, FitReport>>,
}

impl ModelsState {
    pub fn refresh_list(self) {
        spawn_local(async move { self.list.set(Some(api::models_list().await)) });
    }

    /// The badges weighed again against the memory free now.
    pub fn refresh_fits(self) {
        spawn_local(async move {
            let args = FitArgs { context: 8192, kv_type: "f16".into() };
            if let Ok(fits) = api::models_fit(args).await {
                self.fits.set(fits.into_iter().map(|f| (f.id, f.fit)).collect());
            }
        });
    }

    pub fn refresh_downloads(self) {
        spawn_local(async move {
            if let Ok(d) = api::downloads().await {
                if d != self.downloads.get_untracked() {
                    self.downloads.set(d);
                }
            }
        });
    }
}

#[component]
pub fn ModelsTab() -> impl IntoView {
    let state = ModelsState {
        list: RwSignal::new(None),
        downloads: RwSignal::new(Vec::new()),
        info: RwSignal::new(None),
        fits: RwSignal::new(HashMap::new()),
    };
    provide_context(state);
    let changed = expect_context::<ModelsChanged>().0;
    Effect::new(move |_| {
        changed.track();
        state.refresh_list();
    });
    // The badges follow the list and the LLM server (its start or stop moves free memory the
    // most); memory is not polled for them.
    let llm = expect_context::<LlmFeed>();
    Effect::new(move |_| {
        changed.track();
        llm.states.track();
        state.refresh_fits();
    });
    // The queue is kept by its events alone: rows read again when they change, one row's
    // figures set by its progress (sent every 250 ms while bytes flow, and when they stop).
    let feed = expect_context::<DownloadsFeed>();
    Effect::new(move |_| {
        feed.changed.track();
        state.refresh_downloads();
    });
    Effect::new(move |_| {
        let Some(p) = feed.progress.get() else { return };
        let mut known = false;
        state.downloads.update(|rows| known = rows.iter_mut().any(|r| r.apply(&p)));
        if !known {
            state.refresh_downloads();
        }
    });

    view! {
        <table::InstalledModels />
        <browse::Browse />
        <form::DownloadForm />
        <hf_access::HfAccess />
        <queue::DownloadQueue />
        <gguf_modal::GgufModal />
    }
}
