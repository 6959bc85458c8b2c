//! Pieces the tabs share.

pub mod bar;
pub mod card;
pub mod error_box;
pub mod footer;
pub mod log_card;
pub mod runtime_card;

use js_sys::{Array, Date, Function, Intl, Object, Reflect};
use wasm_bindgen::JsValue;

/// A number typed in a field: `None` when empty or not a number of that type (a port above
/// 65535 is not truncated into one).
pub fn num<T: std::str::FromStr>(s: &str) -> Option<T> {
    s.trim().parse().ok()
}

/// A formatter of the user's locale with `fields` (name, style): made once per thread and
/// reused. `Date.toLocaleString` builds a new ICU formatter on every call (about 1.7 MB of
/// WebKit's native heap each, kept until its garbage collector runs); a server log of a few
/// hundred lines, re-rendered line by line, grew the web process by 700 MB.
fn formatter(fields: &[(&str, &str)]) -> Function {
    let options = Object::new();
    for (k, v) in fields {
        let _ = Reflect::set(&options, &JsValue::from_str(k), &JsValue::from_str(v));
    }
    Intl::DateTimeFormat::new(&Array::new(), &options).format()
}

thread_local! {
    static DATE_TIME: Function = formatter(&[
        ("year", "numeric"), ("month", "numeric"), ("day", "numeric"),
        ("hour", "numeric"), ("minute", "2-digit"), ("second", "2-digit"),
    ]);
    static TIME: Function = formatter(&[("hour", "numeric"), ("minute", "2-digit"), ("second", "2-digit")]);
}

fn format_with(f: &Function, ms: u64) -> String {
    let date = Date::new(&JsValue::from_f64(ms as f64));
    f.call1(&JsValue::NULL, &date).ok().and_then(|s| s.as_string()).unwrap_or_default()
}

/// A Unix-epoch millisecond time in the user's locale (date and time).
pub fn local_date(ms: u64) -> String {
    DATE_TIME.with(|f| format_with(f, ms))
}

/// The time of day of a Unix-epoch millisecond time, in the user's locale.
pub fn local_time(ms: u64) -> String {
    TIME.with(|f| format_with(f, ms))
}
