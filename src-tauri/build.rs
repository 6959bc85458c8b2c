use std::path::Path;

fn main() {
    // tauri::generate_context! embeds ui/dist and refuses to compile when it is missing. On a
    // fresh clone (cargo check, clippy, unit tests) the interface has not been built yet, so put a
    // page there that says how to build it; `trunk build` replaces the whole folder.
    let dist = Path::new("../ui/dist");
    if !dist.join("index.html").exists() {
        std::fs::create_dir_all(dist).expect("create ui/dist");
        std::fs::write(
            dist.join("index.html"),
            "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>GenAI Control Panel</title></head>\
             <body style=\"background:#15171c;color:#e6e6e6;font-family:sans-serif;padding:2em\">\
             <h1>The interface was not built</h1><p>This binary was compiled before the interface. \
             Run <code>scripts/run-app</code>, or <code>cd ui &amp;&amp; trunk build</code> and rebuild.</p>\
             </body></html>",
        )
        .expect("write placeholder ui/dist/index.html");
    }
    println!("cargo:rerun-if-changed=../ui/dist/index.html");
    tauri_build::build()
}
