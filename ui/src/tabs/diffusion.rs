use crate::components::planned::Planned;
use crate::components::runtime_card::RuntimeCard;
use ipc::runtimes::RuntimeKind;
use leptos::prelude::*;

#[component]
pub fn DiffusionTab() -> impl IntoView {
    view! {
        <RuntimeCard kind=RuntimeKind::Diffusion />
        <Planned
            summary="Make images with stable-diffusion.cpp, step by step."
            items=&[
                "Choose a diffusion model and its recommended settings",
                "Prompt, size, steps, CFG, seed and sampler",
                "Live progress through loading, diffusion steps and decoding, with cancel",
                "The finished image with its seed and time taken",
            ]
        />
    }
}
