//! WebKit settings the app changes through the environment, which WebKit's web process inherits
//! (`drawing.rs`, `engine.rs`). Each has a variable of ours that decides over everything
//! (`on` keeps WebKit's way, `off` makes the change), and WebKit's own variable, which the app
//! leaves as it is when the user has set it.

/// One such setting.
pub struct Setting {
    /// Ours: `on|off` (also 1/0, yes/no, true/false).
    pub ours: &'static str,
    /// WebKit's variable and the value that makes the change.
    pub webkit: (&'static str, &'static str),
    /// The app log's words for WebKit's way and for the change.
    pub kept: &'static str,
    pub changed: &'static str,
}

/// What was decided, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Choice {
    Kept(String),
    Changed(String),
}

impl Setting {
    /// The decision from our variable's value, WebKit's variable's and, when neither says,
    /// `by_default`: whether to make the change and why.
    pub fn decide(
        &self,
        ours: Option<&str>,
        webkit: Option<&str>,
        by_default: (bool, &str),
    ) -> Choice {
        match ours.map(|s| s.trim().to_ascii_lowercase()).as_deref() {
            Some("on" | "1" | "yes" | "true") => return Choice::Kept(format!("{}=on", self.ours)),
            Some("off" | "0" | "no" | "false") => {
                return Choice::Changed(format!("{}=off", self.ours))
            }
            _ => {}
        }
        if webkit.is_some() {
            return Choice::Kept(format!("{} is set by the user", self.webkit.0));
        }
        match by_default {
            (true, why) => Choice::Changed(why.to_owned()),
            (false, why) => Choice::Kept(why.to_owned()),
        }
    }

    /// Decides from this process's environment and applies it there; returns the app log's
    /// line. Sound only before any thread exists (it changes the environment). Only WebKitGTK
    /// reads these variables: elsewhere than Linux there is nothing to decide.
    pub fn apply(&self, by_default: (bool, &str)) -> Option<String> {
        if !cfg!(target_os = "linux") {
            return None;
        }
        let var = |k: &str| std::env::var(k).ok();
        let choice =
            self.decide(var(self.ours).as_deref(), var(self.webkit.0).as_deref(), by_default);
        Some(match choice {
            Choice::Changed(why) => {
                std::env::set_var(self.webkit.0, self.webkit.1);
                format!("{}: {why}", self.changed)
            }
            Choice::Kept(why) => format!("{}: {why}", self.kept),
        })
    }
}
