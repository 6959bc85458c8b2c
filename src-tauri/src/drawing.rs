//! How the window is drawn. WebKitGTK composites every frame through OpenGL. On a machine with
//! no GPU render node (a virtual machine, a remote or headless display) that OpenGL is Mesa's
//! llvmpipe, which runs on the CPU: each small change on screen (a memory figure, a chart's new
//! point) then re-composites the whole window in software, and the idle window costs about twice
//! the CPU it would otherwise (measured under Xvfb: 0.80 % against 0.30 % of a core for the web
//! process on the System Info tab). There the app turns compositing off, as WebKit's own
//! `WEBKIT_DISABLE_COMPOSITING_MODE` does; with a render node, WebKit's choice stands.
//!
//! The user decides over both: `GENAI_COMPOSITING=on|off` forces one way, and a
//! `WEBKIT_DISABLE_COMPOSITING_MODE` already set is left as it is.

/// What the window's drawing will be, and why (written to the app log).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Drawing {
    /// WebKit's own choice (compositing where it can).
    WebKit(&'static str),
    /// Compositing off (`WEBKIT_DISABLE_COMPOSITING_MODE=1` for the web process).
    NoCompositing(&'static str),
}

/// The decision, from `GENAI_COMPOSITING`, `WEBKIT_DISABLE_COMPOSITING_MODE` and whether the
/// machine has a GPU render node (`/dev/dri/renderD*`).
pub fn decide(ours: Option<&str>, webkit_env: Option<&str>, render_node: bool) -> Drawing {
    match ours.map(|s| s.trim().to_ascii_lowercase()).as_deref() {
        Some("on" | "1" | "yes" | "true") => {
            return Drawing::WebKit("GENAI_COMPOSITING asks for compositing")
        }
        Some("off" | "0" | "no" | "false") => {
            return Drawing::NoCompositing("GENAI_COMPOSITING turns compositing off")
        }
        _ => {}
    }
    if webkit_env.is_some() {
        return Drawing::WebKit("WEBKIT_DISABLE_COMPOSITING_MODE is set by the user");
    }
    if render_node {
        Drawing::WebKit("a GPU render node is present")
    } else {
        Drawing::NoCompositing("no GPU render node: compositing would run on the CPU (llvmpipe)")
    }
}

/// Decides and applies it to this process's environment, which the web process inherits.
/// Called first thing in `run`, before any thread exists (changing the environment is sound
/// only then). Elsewhere than Linux there is nothing to decide.
pub fn apply() -> Option<Drawing> {
    #[cfg(target_os = "linux")]
    {
        let var = |k: &str| std::env::var(k).ok();
        let d = decide(
            var("GENAI_COMPOSITING").as_deref(),
            var("WEBKIT_DISABLE_COMPOSITING_MODE").as_deref(),
            runtime::system::has_render_node(),
        );
        if let Drawing::NoCompositing(_) = d {
            std::env::set_var("WEBKIT_DISABLE_COMPOSITING_MODE", "1");
        }
        Some(d)
    }
    #[cfg(not(target_os = "linux"))]
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compositing_is_turned_off_only_where_it_would_run_on_the_cpu() {
        // (GENAI_COMPOSITING, WEBKIT_DISABLE_COMPOSITING_MODE, render node) -> compositing off?
        let table: &[(Option<&str>, Option<&str>, bool, bool)] = &[
            (None, None, false, true),
            (None, None, true, false),
            // The user's WebKit setting stands either way.
            (None, Some("1"), false, false),
            (None, Some("0"), true, false),
            // Ours overrides everything.
            (Some("on"), None, false, false),
            (Some("ON "), None, false, false),
            (Some("off"), None, true, true),
            (Some("0"), Some("1"), true, true),
            // An unknown value is no override.
            (Some("maybe"), None, false, true),
            (Some(""), None, true, false),
        ];
        for &(ours, webkit, node, off) in table {
            let d = decide(ours, webkit, node);
            assert_eq!(
                matches!(d, Drawing::NoCompositing(_)),
                off,
                "{ours:?} {webkit:?} node={node}: {d:?}"
            );
        }
    }
}
