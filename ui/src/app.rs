//! The shell: header, tab bar, the five tab panels (each made when first shown, then kept; one
//! shown at a time) and the footer.
//! What the tabs show from the app's events lives in [`crate::feeds`].

use crate::components::footer::Footer;
use crate::tabs;
use leptos::prelude::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tab {
    System,
    Models,
    Llm,
    Diffusion,
    Monitor,
}

impl Tab {
    pub const ALL: [Tab; 5] = [Tab::System, Tab::Models, Tab::Llm, Tab::Diffusion, Tab::Monitor];

    /// Used in element ids: `tab-btn-<id>` for the button, `tab-<id>` for the panel.
    pub fn id(self) -> &'static str {
        match self {
            Tab::System => "system",
            Tab::Models => "models",
            Tab::Llm => "llm",
            Tab::Diffusion => "diffusion",
            Tab::Monitor => "monitor",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Tab::System => "System Info",
            Tab::Models => "Models",
            Tab::Llm => "LLM Server",
            Tab::Diffusion => "Diffusion Server",
            Tab::Monitor => "Resource Monitor",
        }
    }
}

#[component]
pub fn App() -> impl IntoView {
    let active = RwSignal::new(Tab::System);
    crate::feeds::provide();
    provide_context(crate::feeds::ShownTab(Signal::derive(move || active.get().id())));
    crate::feeds::watch_memory();

    view! {
        <div class="shell">
            <header class="app-header">
                <div class="logo" aria-hidden="true"></div>
                <div>
                    <h1>"GenAI Control Panel"</h1>
                    <p class="subtitle">"Local AI on your own computer: models, servers, images."</p>
                </div>
            </header>
            <nav class="tab-bar" role="tablist" aria-label="Sections">
                {Tab::ALL
                    .into_iter()
                    .map(|tab| {
                        view! {
                            <button
                                id=format!("tab-btn-{}", tab.id())
                                class="tab"
                                class:active=move || active.get() == tab
                                role="tab"
                                aria-selected=move || (active.get() == tab).to_string()
                                aria-controls=format!("tab-{}", tab.id())
                                on:click=move |_| active.set(tab)
                            >
                                {tab.label()}
                            </button>
                        }
                    })
                    .collect_view()}
            </nav>
            <main class="tab-panels">
                <TabPanel tab=Tab::System active=active.read_only()>
                    <tabs::system::SystemTab />
                </TabPanel>
                <TabPanel tab=Tab::Models active=active.read_only()>
                    <tabs::models::ModelsTab />
                </TabPanel>
                <TabPanel tab=Tab::Llm active=active.read_only()>
                    <tabs::llm::LlmTab />
                </TabPanel>
                <TabPanel tab=Tab::Diffusion active=active.read_only()>
                    <tabs::diffusion::DiffusionTab />
                </TabPanel>
                <TabPanel tab=Tab::Monitor active=active.read_only()>
                    <tabs::monitor::MonitorTab />
                </TabPanel>
            </main>
            <Footer />
        </div>
    }
}

/// A panel is made the first time its tab is shown (launch builds only the tab on screen) and
/// then stays in the DOM when hidden, so a tab keeps its state (inputs, scroll, a running job's
/// progress) while another is shown. What a tab shows from events it has not yet been made for
/// lives in the feeds, which exist from the start.
#[component]
fn TabPanel(tab: Tab, active: ReadSignal<Tab>, children: ChildrenFn) -> impl IntoView {
    let seen =
        Memo::new(move |was: Option<&bool>| was.copied().unwrap_or(false) || active.get() == tab);
    view! {
        <section
            id=format!("tab-{}", tab.id())
            class="tab-panel"
            role="tabpanel"
            aria-labelledby=format!("tab-btn-{}", tab.id())
            hidden=move || active.get() != tab
        >
            <h2 class="tab-heading">{tab.label()}</h2>
            {move || seen.get().then(|| children())}
        </section>
    }
}
