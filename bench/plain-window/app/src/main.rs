fn main() {
    tauri::Builder::default()
        .run(tauri::generate_context!())
        .expect("the plain window could not start");
}
