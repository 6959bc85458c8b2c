use ipc::IpcError;
use leptos::prelude::*;

/// Shows an error the way every tab does: title, what happened, what to do, its code, and a
/// Retry button when the action can be repeated.
#[component]
pub fn ErrorBox(
    error: IpcError,
    #[prop(optional)] on_retry: Option<Callback<()>>,
) -> impl IntoView {
    view! {
        <div class="error-box" role="alert" data-code=error.code.as_str()>
            <div class="error-title">{error.title.clone()}</div>
            <div class="error-message">{error.message.clone()}</div>
            <div class="error-remedy">{error.remedy.clone()}</div>
            <div class="error-code">{error.code.as_str()}</div>
            {on_retry
                .map(|cb| {
                    view! {
                        <button class="btn" on:click=move |_| cb.run(())>
                            "Retry"
                        </button>
                    }
                })}
        </div>
    }
}
