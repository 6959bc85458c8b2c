//! Models: what is installed, the download form, the queue, and a model's GGUF details.

mod form;
mod gguf_modal;
mod hf_access;
mod queue;
mod table;

use crate::api;
use crate::feeds::ModelsChanged;
use ipc::models::{DownloadStatus, ModelInfo, ModelList};
use ipc::IpcError;
use leptos::prelude::*;
use leptos::task::spawn_local;
use std::time::Duration;

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
        state.refresh_downloads();
    });
    // Events make progress immediate; this poll is the safety net and keeps speed/ETA fresh.
    set_interval(move || state.refresh_downloads(), Duration::from_millis(700));

    view! {
        <table::InstalledModels />
        <form::DownloadForm />
        <hf_access::HfAccess />
        <queue::DownloadQueue />
        <gguf_modal::GgufModal />
    }
}
