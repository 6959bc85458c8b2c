use crate::components::planned::Planned;
use leptos::prelude::*;

#[component]
pub fn SystemTab() -> impl IntoView {
    view! {
        <Planned
            summary="What this computer can run, measured live."
            items=&[
                "CPU: model, physical and logical cores, architecture",
                "Memory: total, used and available, refreshed every few seconds",
                "Every GPU with its backend, VRAM used and free, and driver",
                "Recommendations: threads, the largest model that fits, the backend to use",
            ]
        />
    }
}
