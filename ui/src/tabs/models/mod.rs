//! Models: what is installed, finding a model on Hugging Face with fit badges, the download
//! form, the queue, and a model's GGUF details.

mod browse;
mod form;
mod gguf_modal;
mod hf_access;
mod queue;
mod table;

use crate::api;
use crate::feeds::{on_screen, DownloadsFeed, LiveMemory, LlmFeed, ModelsChanged};
use ipc::models::{DownloadStatus, FitArgs, FitReport, ModelInfo, ModelList};
use ipc::system::{MemoryNow, FIT_STEP};
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
    /// Installed LLMs' fit badges here, by id, at `ask`.
    pub fits: RwSignal<HashMap<String, FitReport>>,
    /// The context and KV cache type every badge is weighed at: the browse view's slider and
    /// select (8k tokens, f16 until moved).
    pub ask: RwSignal<FitArgs>,
}

impl ModelsState {
    pub fn refresh_list(self) {
        spawn_local(async move { self.list.set(Some(api::models_list().await)) });
    }

    /// The badges weighed again against the memory free now.
    pub fn refresh_fits(self) {
        spawn_local(async move {
            if let Ok(fits) = api::models_fit(self.ask.get_untracked()).await {
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
        ask: RwSignal::new(FitArgs { context: 8192, kv_type: "f16".into() }),
    };
    provide_context(state);
    let changed = expect_context::<ModelsChanged>().0;
    Effect::new(move |_| {
        changed.track();
        state.refresh_list();
    });
    // The badges follow the list, the context and KV type asked, the LLM server (its start or
    // stop moves free memory the most), and free memory moving a step: the memory feed
    // announces changes while this tab is on screen; nothing is polled for them.
    let llm = expect_context::<LlmFeed>();
    Effect::new(move |_| {
        changed.track();
        llm.states.track();
        state.ask.track();
        state.refresh_fits();
    });
    // Only while this tab is on screen (the memory feed also speaks to the Monitor); shown
    // again after memory moved, the badges are weighed at once.
    let live = expect_context::<LiveMemory>().0;
    let on = on_screen("models");
    let weighed = StoredValue::new(None::<MemoryNow>);
    Effect::new(move |_| {
        if !on.get() {
            return;
        }
        let Some(sample) = live.get() else { return };
        let first = weighed.with_value(Option::is_none);
        let moved =
            weighed.with_value(|w| w.as_ref().is_some_and(|w| w.free_moved(&sample.now, FIT_STEP)));
        if first || moved {
            weighed.set_value(Some(sample.now));
        }
        // The first reading is what the badges shown were just weighed at.
        if moved {
            state.refresh_fits();
        }
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
