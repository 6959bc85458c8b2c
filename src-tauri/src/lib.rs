//! The app binary: glue between the window and [`runtime::Runtime`].
//!
//! Commands parse their arguments, call the runtime and map errors to [`ipc::IpcError`]; events
//! from the runtime's bus are forwarded to the window. Logic belongs in `crates/runtime`.

mod commands;
mod drawing;
mod engine;
mod events;
mod save_dialog;
mod state;
mod webkit_env;

use state::AppState;

pub fn run() {
    // First: they change the environment, which is sound only before any thread exists.
    let webkit_env = [drawing::apply(), engine::apply()];
    let state = AppState::open();
    if let Some(e) = state.startup_error() {
        // The window still opens and shows this error with its remedy in the footer.
        eprintln!("genai-control-panel: {e}");
    }
    tauri::Builder::default()
        .plugin(tauri_plugin_shell::init())
        .plugin(tauri_plugin_dialog::init())
        .manage(state)
        .setup(move |app| {
            use tauri::Manager;
            events::forward_runtime_events(app.handle());
            // One reading of memory every 2 s for the whole app (the Monitor's past included).
            let memory = app.state::<AppState>().memory().clone();
            memory.announce_to(app.state::<AppState>().events.clone());
            tauri::async_runtime::spawn(async move {
                memory.sample_every(runtime::system::history::EVERY);
            });
            // An LLM paused for an image when the app last ended comes back as it was.
            if let Ok(rt) = app.state::<AppState>().runtime() {
                if rt.app_log().install_global() {
                    tracing::info!(
                        version = env!("CARGO_PKG_VERSION"),
                        storage = %rt.storage().root().display(),
                        "the app started"
                    );
                    for line in webkit_env.iter().flatten() {
                        tracing::info!("{line}");
                    }
                }
                // The OpenAI-compatible endpoint, unless turned off (a taken port is shown on
                // its card, not fatal).
                let endpoint = rt.endpoint().clone();
                tauri::async_runtime::spawn(async move {
                    endpoint.open().await;
                });
                tauri::async_runtime::spawn(async move {
                    if let Err(e) = rt.recover().await {
                        tracing::warn!("the paused LLM could not be restored: {e}");
                    }
                });
            }
            Ok(())
        })
        .invoke_handler(commands::handler())
        .build(tauri::generate_context!())
        .unwrap_or_else(|e| {
            eprintln!("genai-control-panel: the window could not start: {e}");
            std::process::exit(1);
        })
        .run(|app, event| {
            // Servers the app started end with it (a crash of the app is handled by the
            // pidfile on the next launch instead).
            if let tauri::RunEvent::Exit = event {
                use tauri::Manager;
                if let Ok(rt) = app.state::<AppState>().runtime() {
                    tauri::async_runtime::block_on(rt.shutdown());
                }
            }
        });
}
