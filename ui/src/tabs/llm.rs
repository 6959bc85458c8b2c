use crate::components::planned::Planned;
use crate::components::runtime_card::RuntimeCard;
use ipc::runtimes::RuntimeKind;
use leptos::prelude::*;

#[component]
pub fn LlmTab() -> impl IntoView {
    view! {
        <RuntimeCard kind=RuntimeKind::Llama />
        <Planned
            summary="Run llama-server with settings fitted to the model and this machine."
            items=&[
                "Status, health, port and process of the server",
                "Start, stop and restart, with automatic or manual settings",
                "A test chat and the server's live log",
            ]
        />
    }
}
