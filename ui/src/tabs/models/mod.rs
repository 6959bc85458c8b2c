//! Models: what is installed, finding a model on Hugging Face with fit badges, the download
//! form, the queue, and a model's GGUF details.

mod browse;
mod form;
mod gguf_modal;
mod hf_access;
mod queue;
mod table;

use crate::api;
use crate::feeds::{DownloadsFeed, ModelsChanged};
use ipc::models::{DownloadStatus, ModelInfo, ModelList};
use ipc::IpcError;
use leptos::prelude::*;
use leptos::task::spawn_local;

/// What the parts of the tab share.
#[derive(Clone, Copy)]
pub struct ModelsState {
    pub list: RwSignal<Option<Result<ModelList, IpcError>>>,
    pub downloads: RwSignal<Vec<DownloadStatus>>,
    pub info: RwSignal<Option<ModelInfo>>,
}

impl ModelsState {
    pub fn refresh_list(self) {
        spawn_local(async move { self.list.set(Some(api::models_list().await)) });
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
    };
    provide_context(state);
    let changed = expect_context::<ModelsChanged>().0;
    Effect::new(move |_| {
        changed.track();
        state.refresh_list();
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
