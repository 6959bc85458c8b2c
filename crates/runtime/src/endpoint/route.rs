//! What the endpoint does with a text request, from what the LLM server is doing now. One pure
//! rule ([`plan_text`]) that the endpoint asks again after every wait, so that one place decides
//! (the orchestrator still owns pauses for images; this never stops an LLM it paused).

use ipc::event::ServerState;
use std::time::Duration;

/// The LLM server as the endpoint sees it when a request arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LlmNow<'a> {
    pub state: ServerState,
    /// The model it runs or is starting (while paused for an image: the one coming back).
    pub model_id: Option<&'a str>,
    /// Requests the endpoint is forwarding to it now.
    pub in_flight: u32,
    /// It runs with `--embeddings` (and so answers embedding requests only).
    pub embeddings: bool,
}

/// What a request needs: its model, and whether for embeddings (llama-server serves either
/// embeddings or text from one start, so the same model in the other mode is a swap).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Want<'a> {
    pub model: &'a str,
    pub embeddings: bool,
}

/// The next step for a request for a text model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TextPlan {
    /// It runs the model: send the request on.
    Forward,
    /// It is starting this model: wait for that start (every request for it shares one start).
    WaitForStart,
    /// Nothing runs: start the model (saved settings, else fitted ones), then forward.
    Start,
    /// Another model runs: let the requests in flight finish (`drain`, bounded), stop it, start
    /// this one.
    Swap { from: String, drain: bool },
    /// Another model is starting, or the server is stopping: wait until that settles, then plan
    /// again.
    WaitThenPlan,
    /// Paused for an image: wait for it to come back (bounded; then 503 with `Retry-After`),
    /// then plan again.
    WaitForReload,
}

pub fn plan_text(want: Want<'_>, now: LlmNow<'_>) -> TextPlan {
    use ServerState::*;
    let same = now.model_id == Some(want.model) && now.embeddings == want.embeddings;
    match now.state {
        Running if same => TextPlan::Forward,
        Running => match now.model_id {
            Some(from) => TextPlan::Swap { from: from.to_owned(), drain: now.in_flight > 0 },
            None => TextPlan::WaitThenPlan,
        },
        Starting if same => TextPlan::WaitForStart,
        Starting | Stopping => TextPlan::WaitThenPlan,
        Offloaded => TextPlan::WaitForReload,
        Stopped | Crashed => TextPlan::Start,
    }
}

/// The `Retry-After` a request that waited in vain is told: the time the wait still expects
/// (what is left of the LLM's last measured reload), at least 1 s and at most a minute.
pub fn retry_after(expected_left: Option<Duration>) -> u32 {
    expected_left.map_or(5, |d| d.as_secs_f64().ceil() as u32).clamp(1, 60)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ServerState::*;

    #[test]
    fn a_text_request_is_forwarded_started_swapped_or_held_by_what_runs() {
        let swap = |from: &str, drain| TextPlan::Swap { from: from.into(), drain };
        let cases: &[(ServerState, Option<&str>, u32, TextPlan)] = &[
            (Running, Some("a"), 0, TextPlan::Forward),
            (Running, Some("a"), 3, TextPlan::Forward),
            (Running, Some("b"), 0, swap("b", false)),
            (Running, Some("b"), 2, swap("b", true)),
            (Starting, Some("a"), 0, TextPlan::WaitForStart),
            (Starting, Some("b"), 0, TextPlan::WaitThenPlan),
            (Stopping, Some("a"), 0, TextPlan::WaitThenPlan),
            (Stopping, None, 0, TextPlan::WaitThenPlan),
            // Paused for an image: never started or swapped behind the orchestrator's back.
            (Offloaded, Some("a"), 0, TextPlan::WaitForReload),
            (Offloaded, Some("b"), 0, TextPlan::WaitForReload),
            (Stopped, None, 0, TextPlan::Start),
            (Stopped, Some("b"), 0, TextPlan::Start),
            (Crashed, Some("a"), 0, TextPlan::Start),
            (Running, None, 0, TextPlan::WaitThenPlan),
        ];
        let a = Want { model: "a", embeddings: false };
        for (state, model_id, in_flight, want) in cases {
            let now = LlmNow {
                state: *state,
                model_id: *model_id,
                in_flight: *in_flight,
                embeddings: false,
            };
            assert_eq!(plan_text(a, now), *want, "{now:?}");
        }
    }

    #[test]
    fn the_same_model_in_the_other_mode_is_a_swap() {
        let now = |model, embeddings, state| LlmNow {
            state,
            model_id: Some(model),
            in_flight: 1,
            embeddings,
        };
        let embed = Want { model: "a", embeddings: true };
        let swap = TextPlan::Swap { from: "a".into(), drain: true };
        assert_eq!(plan_text(embed, now("a", false, Running)), swap);
        assert_eq!(plan_text(embed, now("a", true, Running)), TextPlan::Forward);
        assert_eq!(plan_text(embed, now("a", true, Starting)), TextPlan::WaitForStart);
        assert_eq!(plan_text(embed, now("a", false, Starting)), TextPlan::WaitThenPlan);
        let text = Want { model: "a", embeddings: false };
        assert_eq!(plan_text(text, now("a", true, Running)), swap);
    }

    #[test]
    fn retry_after_is_the_expected_rest_of_the_wait_within_a_minute() {
        let s = Duration::from_secs_f64;
        let cases = [
            (None, 5),
            (Some(s(0.0)), 1),
            (Some(s(2.2)), 3),
            (Some(s(30.0)), 30),
            (Some(s(600.0)), 60),
        ];
        for (left, want) in cases {
            assert_eq!(retry_after(left), want, "{left:?}");
        }
    }
}
