use crate::components::planned::Planned;
use leptos::prelude::*;

#[component]
pub fn LlmTab() -> impl IntoView {
    view! {
        <Planned
            summary="Run llama-server with settings fitted to the model and this machine."
            items=&[
                "Status, health, port and process of the server",
                "Start, stop and restart, with automatic or manual settings",
                "The right llama-server build (CUDA, Vulkan or CPU), installed and checked",
                "A test chat and the server's live log",
            ]
        />
    }
}
