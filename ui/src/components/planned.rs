use leptos::prelude::*;

/// What a tab will hold, for tabs whose feature is not built yet: honest about what is missing.
#[component]
pub fn Planned(summary: &'static str, items: &'static [&'static str]) -> impl IntoView {
    view! {
        <div class="card planned">
            <p class="planned-summary">{summary}</p>
            <ul class="planned-list">
                {items.iter().map(|item| view! { <li>{*item}</li> }).collect_view()}
            </ul>
            <p class="planned-note">"Not built yet: this tab shows what it will hold."</p>
        </div>
    }
}
