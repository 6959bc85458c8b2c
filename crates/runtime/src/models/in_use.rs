//! Who uses a model now: a model a server has loaded (or will load again) is not deleted under it.

use ipc::diffusion::DiffusionStatus;
use ipc::event::ServerState;
use ipc::llm::LlmStatus;
use ipc::orchestrator::SavedLlmState;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelUser {
    /// The LLM server has it loaded, is loading it, or may restart with it (crashed).
    LlmServer,
    /// The LLM was paused for an image and comes back with it.
    PausedLlm,
    /// The image server runs its jobs with it.
    ImageServer,
}

impl ModelUser {
    pub fn label(self) -> &'static str {
        match self {
            ModelUser::LlmServer => "the LLM server",
            ModelUser::PausedLlm => "the LLM paused for an image (it comes back with this model)",
            ModelUser::ImageServer => "the image server",
        }
    }
}

/// Every user of model `id`, given where the servers stand.
pub fn users_of(
    id: &str,
    llm: &LlmStatus,
    image: &DiffusionStatus,
    paused: Option<&SavedLlmState>,
) -> Vec<ModelUser> {
    let holds = |state: ServerState, model: &Option<String>| {
        state != ServerState::Stopped && model.as_deref() == Some(id)
    };
    let mut users = Vec::new();
    if holds(llm.state, &llm.model_id) {
        users.push(ModelUser::LlmServer);
    }
    if paused.is_some_and(|p| p.config.model_id == id) && !users.contains(&ModelUser::LlmServer) {
        users.push(ModelUser::PausedLlm);
    }
    if holds(image.state, &image.model_id) {
        users.push(ModelUser::ImageServer);
    }
    users
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipc::llm::LlmConfig;

    fn llm(state: ServerState, model: Option<&str>) -> LlmStatus {
        LlmStatus { state, model_id: model.map(str::to_owned), ..LlmStatus::stopped() }
    }

    fn image(state: ServerState, model: Option<&str>) -> DiffusionStatus {
        DiffusionStatus { state, model_id: model.map(str::to_owned), ..DiffusionStatus::stopped() }
    }

    fn paused(model: &str) -> SavedLlmState {
        SavedLlmState {
            config: LlmConfig { model_id: model.into(), ..Default::default() },
            port: 8080,
            context_size: 4096,
            saved_at_ms: 0,
            job_id: None,
        }
    }

    #[test]
    fn users_table() {
        use ModelUser::*;
        use ServerState::*;
        let p = paused("chat");
        let cases: Vec<(LlmStatus, DiffusionStatus, Option<&SavedLlmState>, Vec<ModelUser>)> = vec![
            (llm(Stopped, None), image(Stopped, None), None, vec![]),
            (llm(Running, Some("chat")), image(Stopped, None), None, vec![LlmServer]),
            (llm(Starting, Some("chat")), image(Stopped, None), None, vec![LlmServer]),
            (llm(Crashed, Some("chat")), image(Stopped, None), None, vec![LlmServer]),
            (llm(Running, Some("other")), image(Stopped, None), None, vec![]),
            (llm(Stopped, Some("chat")), image(Stopped, None), None, vec![]),
            (llm(Offloaded, Some("chat")), image(Running, Some("sd")), Some(&p), vec![LlmServer]),
            (llm(Stopped, None), image(Running, Some("sd")), Some(&p), vec![PausedLlm]),
            (llm(Stopped, None), image(Running, Some("chat")), None, vec![ImageServer]),
            (
                llm(Running, Some("chat")),
                image(Running, Some("chat")),
                None,
                vec![LlmServer, ImageServer],
            ),
        ];
        for (l, i, p, want) in cases {
            assert_eq!(
                users_of("chat", &l, &i, p),
                want,
                "{:?} {:?} {:?}",
                l.state,
                i.state,
                p.is_some()
            );
        }
    }
}
