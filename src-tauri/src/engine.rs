//! How the window's script engine runs. The window is one small program (the Leptos wasm and a
//! little JavaScript) that does a few milliseconds of work when something changes. WebKit's
//! JavaScriptCore compiles whatever runs often to machine code, keeping the code and its
//! compilers' working memory for the life of the window: measured under Xvfb (release builds,
//! the idle benchmark's tree, two runs), 8–9 MB of the idle window on System Info, 16–17 MB
//! with every tab made and 20–23 MB with the LLM running on the Monitor, against 3–4 MB for a
//! window that only shows a heading.
//! Interpreted, the same work takes about as long for a person (a tab made in 17–58 ms against
//! 16–52 ms, a tab switch 5–13 against 4–10 ms, launch unchanged) and idle CPU does not move, so
//! the app turns the JIT off for its window, as `JSC_useJIT=0` does.
//!
//! The user decides over it: `GENAI_JIT=on|off` forces one way, and a `JSC_useJIT` already set is
//! left as it is. WebKitGTK reads it; elsewhere than Linux there is nothing to decide.

use crate::webkit_env::Setting;

/// The JIT off is `JSC_useJIT=0` for the web process: scripts and the wasm interpreted.
pub const ENGINE: Setting = Setting {
    ours: "GENAI_JIT",
    webkit: ("JSC_useJIT", "0"),
    kept: "the window's scripts run with the JIT",
    changed: "the window's scripts run without the JIT",
};

/// Where neither variable says: the JIT off.
pub const BY_DEFAULT: (bool, &str) =
    (true, "the window's work is small: interpreted, it costs less memory and no more time");

/// Decides and applies it (see [`Setting::apply`]); the app log's line.
pub fn apply() -> Option<String> {
    ENGINE.apply(BY_DEFAULT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webkit_env::Choice;

    #[test]
    fn the_jit_is_off_unless_the_user_says_otherwise() {
        // (GENAI_JIT, JSC_useJIT) -> JIT off?
        let table: &[(Option<&str>, Option<&str>, bool)] = &[
            (None, None, true),
            // The user's JavaScriptCore setting stands, whichever way it goes.
            (None, Some("1"), false),
            (None, Some("0"), false),
            // Ours overrides everything.
            (Some("on"), None, false),
            (Some(" Yes"), Some("0"), false),
            (Some("off"), Some("1"), true),
            (Some("FALSE"), None, true),
            // An unknown value is no override.
            (Some("maybe"), None, true),
            (Some(""), Some("1"), false),
        ];
        for &(ours, jsc, off) in table {
            let e = ENGINE.decide(ours, jsc, BY_DEFAULT);
            assert_eq!(matches!(e, Choice::Changed(_)), off, "{ours:?} {jsc:?}: {e:?}");
        }
    }
}
