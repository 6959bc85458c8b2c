//! Pieces the tabs share.

pub mod bar;
pub mod card;
pub mod error_box;
pub mod footer;
pub mod log_card;
pub mod runtime_card;

/// A Unix-epoch millisecond time in the user's locale.
pub fn local_date(ms: u64) -> String {
    let d = js_sys::Date::new(&wasm_bindgen::JsValue::from_f64(ms as f64));
    String::from(d.to_locale_string("default", &wasm_bindgen::JsValue::UNDEFINED))
}

/// The time of day of a Unix-epoch millisecond time, in the user's locale.
pub fn local_time(ms: u64) -> String {
    let d = js_sys::Date::new(&wasm_bindgen::JsValue::from_f64(ms as f64));
    String::from(d.to_locale_time_string("default"))
}
