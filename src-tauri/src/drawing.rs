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

use crate::webkit_env::Setting;

/// Compositing off is `WEBKIT_DISABLE_COMPOSITING_MODE=1` for the web process.
pub const DRAWING: Setting = Setting {
    ours: "GENAI_COMPOSITING",
    webkit: ("WEBKIT_DISABLE_COMPOSITING_MODE", "1"),
    kept: "the window draws as WebKit chooses",
    changed: "the window draws without compositing",
};

/// Where neither variable says: compositing off only without a GPU render node
/// (`/dev/dri/renderD*`).
pub fn by_default(render_node: bool) -> (bool, &'static str) {
    if render_node {
        (false, "a GPU render node is present")
    } else {
        (true, "no GPU render node: compositing would run on the CPU (llvmpipe)")
    }
}

/// Decides and applies it (see [`Setting::apply`]); the app log's line.
pub fn apply() -> Option<String> {
    DRAWING.apply(by_default(runtime::system::has_render_node()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webkit_env::Choice;

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
            let d = DRAWING.decide(ours, webkit, by_default(node));
            assert_eq!(
                matches!(d, Choice::Changed(_)),
                off,
                "{ours:?} {webkit:?} node={node}: {d:?}"
            );
        }
    }
}
