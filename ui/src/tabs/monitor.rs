use crate::app::EventLog;
use crate::components::card::Card;
use crate::components::planned::Planned;
use leptos::prelude::*;

#[component]
pub fn MonitorTab() -> impl IntoView {
    let log = expect_context::<EventLog>().0;
    view! {
        <Planned
            summary="Memory, VRAM and both servers at a glance, while an image is made."
            items=&[
                "System memory and VRAM, live",
                "LLM and diffusion server status side by side",
                "When the LLM is stopped to make room for an image, and when it comes back",
            ]
        />
        <Card title="Event log">
            <ul id="event-log" class="event-log">
                {move || {
                    let lines = log.get();
                    if lines.is_empty() {
                        view! { <li class="muted">"No events yet."</li> }.into_any()
                    } else {
                        lines
                            .into_iter()
                            .rev()
                            .map(|l| view! { <li>{l}</li> })
                            .collect_view()
                            .into_any()
                    }
                }}
            </ul>
        </Card>
    }
}
