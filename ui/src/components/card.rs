use leptos::prelude::*;

#[component]
pub fn Card(#[prop(into)] title: String, children: Children) -> impl IntoView {
    view! {
        <div class="card">
            <h3 class="card-title">{title}</h3>
            <div class="card-body">{children()}</div>
        </div>
    }
}
