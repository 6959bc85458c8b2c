//! The window of GenAI Control Panel: a header, five tabs that stay mounted, and a footer.

mod api;
mod app;
mod components;
mod feeds;
mod tabs;

fn main() {
    console_error_panic_hook::set_once();
    leptos::mount::mount_to_body(app::App);
}
