use leptos::prelude::*;

/// A horizontal usage bar: `used` of `total`, coloured by how full it is.
#[component]
pub fn UsageBar(used: u64, total: u64, #[prop(into)] label: String) -> impl IntoView {
    let pct = ipc::format::percent(used, total);
    let level = if pct >= 90.0 {
        "bar-fill high"
    } else if pct >= 70.0 {
        "bar-fill mid"
    } else {
        "bar-fill"
    };
    view! {
        <div class="bar" role="meter" aria-valuemin="0" aria-valuemax="100"
            aria-valuenow=format!("{pct:.0}") aria-label=label.clone()>
            <div class=level style:width=format!("{pct:.1}%")></div>
        </div>
        <div class="bar-caption">{label}</div>
    }
}

/// Progress of a task: accent while running, green when complete.
#[component]
pub fn ProgressBar(percent: f64, #[prop(into)] label: String) -> impl IntoView {
    let pct = percent.clamp(0.0, 100.0);
    let class = if pct >= 100.0 { "progress-fill done" } else { "progress-fill" };
    view! {
        <div class="bar" role="progressbar" aria-valuemin="0" aria-valuemax="100"
            aria-valuenow=format!("{pct:.0}") aria-label=label.clone()>
            <div class=class style:width=format!("{pct:.1}%")></div>
        </div>
        <div class="bar-caption">{label}</div>
    }
}
