//! Where "Save as…" writes: the system's save dialog (tauri-plugin-dialog, driven from Rust so
//! the window never hands over a path). The real-window tests cannot click through a native
//! dialog, so `GENAI_TEST_SAVE_AS` (a path) answers in its place; the writing after it is the
//! same code either way.

use std::path::{Path, PathBuf};
use tauri::AppHandle;
use tauri_plugin_dialog::DialogExt;

/// Stands in for the dialog's answer in the real-window tests.
pub const TEST_ANSWER_ENV: &str = "GENAI_TEST_SAVE_AS";

/// The place the user chose for `name` (the dialog opens in `start`), `None` when cancelled.
pub async fn pick(app: &AppHandle, name: &str, start: &Path) -> Option<PathBuf> {
    if let Some(answer) = std::env::var_os(TEST_ANSWER_ENV) {
        return Some(PathBuf::from(answer));
    }
    let (tx, rx) = tokio::sync::oneshot::channel();
    app.dialog()
        .file()
        .set_title("Save image")
        .set_file_name(name)
        .set_directory(start)
        .add_filter("PNG image", &["png"])
        .save_file(move |chosen| {
            let _ = tx.send(chosen);
        });
    rx.await.ok().flatten().and_then(|p| p.into_path().ok())
}
