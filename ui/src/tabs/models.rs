use crate::components::planned::Planned;
use leptos::prelude::*;

#[component]
pub fn ModelsTab() -> impl IntoView {
    view! {
        <Planned
            summary="The models on this computer, and downloads that resume and verify."
            items=&[
                "Installed LLM and diffusion models with size, date and disk usage",
                "Download from Hugging Face, a URL or a local file, with SHA-256 checks",
                "A queue with progress, speed, ETA, pause, resume and cancel",
                "GGUF details: architecture, layers, context length, quantisation",
            ]
        />
    }
}
