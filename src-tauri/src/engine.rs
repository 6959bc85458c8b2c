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

/// What the window's script engine will do, and why (written to the app log).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    /// JavaScriptCore as WebKit ships it (its JIT compilers on).
    WebKit(&'static str),
    /// The JIT off (`JSC_useJIT=0` for the web process): scripts and the wasm interpreted.
    NoJit(&'static str),
}

/// The decision, from `GENAI_JIT` and `JSC_useJIT`.
pub fn decide(ours: Option<&str>, jsc_env: Option<&str>) -> Engine {
    match ours.map(|s| s.trim().to_ascii_lowercase()).as_deref() {
        Some("on" | "1" | "yes" | "true") => return Engine::WebKit("GENAI_JIT asks for the JIT"),
        Some("off" | "0" | "no" | "false") => return Engine::NoJit("GENAI_JIT turns the JIT off"),
        _ => {}
    }
    if jsc_env.is_some() {
        return Engine::WebKit("JSC_useJIT is set by the user");
    }
    Engine::NoJit("the window's work is small: interpreted, it costs less memory and no more time")
}

/// Decides and applies it to this process's environment, which the web process inherits.
/// Called first thing in `run`, before any thread exists (changing the environment is sound
/// only then).
pub fn apply() -> Option<Engine> {
    #[cfg(target_os = "linux")]
    {
        let var = |k: &str| std::env::var(k).ok();
        let e = decide(var("GENAI_JIT").as_deref(), var("JSC_useJIT").as_deref());
        if let Engine::NoJit(_) = e {
            std::env::set_var("JSC_useJIT", "0");
        }
        Some(e)
    }
    #[cfg(not(target_os = "linux"))]
    None
}

#[cfg(test)]
mod tests {
    use super::*;

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
            let e = decide(ours, jsc);
            assert_eq!(matches!(e, Engine::NoJit(_)), off, "{ours:?} {jsc:?}: {e:?}");
        }
    }
}
