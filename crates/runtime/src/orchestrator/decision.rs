//! The offload decision, a pure function of live numbers.
//!
//! For each memory the image uses (VRAM of its GPU when it has one, and RAM), the LLM and the
//! image together may take `margin × (free + the LLM's own use)`: what would be free without the
//! LLM, less a safety share (0.75 is the original's rule, but the original compared against
//! *total* VRAM read up to a minute earlier). The LLM is paused when any of them would not fit.
//! No flapping: right after a pause the next job must fit with [`HYSTERESIS`] to spare before the
//! LLM is left running, so live figures wobbling around the line do not alternate the choice.

use ipc::format::bytes;
use ipc::orchestrator::{Footprint, OffloadDecision, OffloadMode};

/// Share of the budget a job must leave unused to keep the LLM running right after a pause.
pub const HYSTERESIS: f64 = 0.05;

/// What the LLM uses now, by kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LlmUse {
    pub ram: u64,
    pub vram: u64,
    /// From the load log, not the estimate.
    pub measured: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DecisionInput {
    pub mode: OffloadMode,
    pub margin: f64,
    /// `None`: the LLM is not running.
    pub llm: Option<LlmUse>,
    pub image: Footprint,
    /// The GPU the image uses: (name, free VRAM). `None`: it runs on the CPU.
    pub gpu: Option<(String, u64)>,
    pub free_ram: u64,
    /// The previous decision paused the LLM.
    pub paused_last: bool,
    pub at_ms: u64,
}

struct Check {
    device: String,
    llm: u64,
    image: u64,
    free: u64,
    budget: u64,
    fits: bool,
}

fn check(device: String, llm: u64, image: u64, free: u64, margin: f64, strict: bool) -> Check {
    let budget = (margin * (free + llm) as f64) as u64;
    let limit = if strict { (budget as f64 * (1.0 - HYSTERESIS)) as u64 } else { budget };
    Check { device, llm, image, free, budget, fits: llm + image <= limit }
}

pub fn decide(i: &DecisionInput) -> OffloadDecision {
    let margin = i.margin.clamp(0.1, 1.0);
    let llm = i.llm.unwrap_or(LlmUse { ram: 0, vram: 0, measured: false });
    let strict = i.paused_last;
    let mut checks = Vec::new();
    if let Some((name, free)) = &i.gpu {
        if i.image.vram_bytes > 0 || llm.vram > 0 {
            checks.push(check(
                format!("VRAM ({name})"),
                llm.vram,
                i.image.vram_bytes,
                *free,
                margin,
                strict,
            ));
        }
    }
    checks.push(check("RAM".into(), llm.ram, i.image.ram_bytes, i.free_ram, margin, strict));
    // The memory that decides: the first that does not fit, else the GPU's (or RAM).
    let idx = checks.iter().position(|c| !c.fits).unwrap_or(0);
    let c = &checks[idx];
    let all_fit = checks.iter().all(|c| c.fits);
    let numbers = format!(
        "needs {} ({} LLM + {} image) of {}, {} free; the budget is {:.0}% of free + LLM = {}",
        bytes(c.llm + c.image),
        bytes(c.llm),
        bytes(c.image),
        c.device,
        bytes(c.free),
        margin * 100.0,
        bytes(c.budget)
    );
    let (offload, reason) = match (i.llm.is_some(), i.mode) {
        (false, _) => (false, "The LLM is not running: nothing to pause.".to_owned()),
        (true, OffloadMode::Never) => {
            (false, format!("Pausing the LLM is off; the image runs beside it ({numbers})."))
        }
        (true, OffloadMode::Always) => {
            (true, format!("The LLM will be paused while this image is made (always): {numbers}."))
        }
        (true, OffloadMode::Auto) if all_fit => {
            (false, format!("The LLM keeps running: {numbers}."))
        }
        (true, OffloadMode::Auto) => (
            true,
            format!(
                "The LLM will be paused while this image is made: {numbers}{}.",
                if strict && c.llm + c.image <= c.budget {
                    " (within 5% of the line right after a pause)"
                } else {
                    ""
                }
            ),
        ),
    };
    OffloadDecision {
        offload,
        llm_running: i.llm.is_some(),
        device: c.device.clone(),
        llm_bytes: c.llm,
        llm_measured: llm.measured,
        image_bytes: c.image,
        free_bytes: c.free,
        budget_bytes: c.budget,
        margin,
        reason,
        at_ms: i.at_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;
    const MIB: u64 = 1 << 20;

    fn input() -> DecisionInput {
        DecisionInput {
            mode: OffloadMode::Auto,
            margin: 0.75,
            llm: Some(LlmUse { ram: GIB, vram: 6 * GIB, measured: true }),
            image: Footprint { ram_bytes: GIB, vram_bytes: 5 * GIB },
            gpu: Some(("RTX 4090".into(), 10 * GIB)),
            free_ram: 20 * GIB,
            paused_last: false,
            at_ms: 1,
        }
    }

    #[test]
    fn decision_table() {
        // (case, input, offload?, deciding device)
        let cases: Vec<(&str, DecisionInput, bool, &str)> = vec![
            // 6 + 5 = 11 ≤ 0.75 × (10 + 6) = 12: both fit.
            ("fits", input(), false, "VRAM (RTX 4090)"),
            // 6 + 5 = 11 > 0.75 × (8 + 6) = 10.5.
            (
                "vram short",
                DecisionInput { gpu: Some(("RTX 4090".into(), 8 * GIB)), ..input() },
                true,
                "VRAM (RTX 4090)",
            ),
            // VRAM fits but RAM does not: 1 + 1 = 2 > 0.75 × (1.5 + 1) = 1.875.
            ("ram short", DecisionInput { free_ram: GIB + 512 * MIB, ..input() }, true, "RAM"),
            // No GPU: RAM decides. 4 + 5 = 9 > 0.75 × (6 + 4) = 7.5.
            (
                "no gpu",
                DecisionInput {
                    gpu: None,
                    llm: Some(LlmUse { ram: 4 * GIB, vram: 0, measured: false }),
                    image: Footprint { ram_bytes: 5 * GIB, vram_bytes: 0 },
                    free_ram: 6 * GIB,
                    ..input()
                },
                true,
                "RAM",
            ),
            (
                "no gpu, fits",
                DecisionInput {
                    gpu: None,
                    image: Footprint { ram_bytes: GIB, vram_bytes: 0 },
                    llm: Some(LlmUse { ram: GIB, vram: 0, measured: true }),
                    ..input()
                },
                false,
                "RAM",
            ),
            (
                "llm not running",
                DecisionInput { llm: None, gpu: Some(("RTX 4090".into(), GIB)), ..input() },
                false,
                "VRAM (RTX 4090)",
            ),
            (
                "never",
                DecisionInput {
                    mode: OffloadMode::Never,
                    gpu: Some(("RTX 4090".into(), GIB)),
                    ..input()
                },
                false,
                "VRAM (RTX 4090)",
            ),
            (
                "always",
                DecisionInput { mode: OffloadMode::Always, ..input() },
                true,
                "VRAM (RTX 4090)",
            ),
            // Margin edges: exactly the budget fits, one byte over does not.
            // 0.5 × (10 + 6) = 8 = 6 + 2.
            (
                "edge fits",
                DecisionInput {
                    margin: 0.5,
                    image: Footprint { ram_bytes: 0, vram_bytes: 2 * GIB },
                    ..input()
                },
                false,
                "VRAM (RTX 4090)",
            ),
            (
                "edge over",
                DecisionInput {
                    margin: 0.5,
                    image: Footprint { ram_bytes: 0, vram_bytes: 2 * GIB + 1 },
                    ..input()
                },
                true,
                "VRAM (RTX 4090)",
            ),
            // Margin 1.0: everything free counts.
            (
                "margin 1",
                DecisionInput {
                    margin: 1.0,
                    image: Footprint { ram_bytes: 0, vram_bytes: 10 * GIB },
                    ..input()
                },
                false,
                "VRAM (RTX 4090)",
            ),
            // Hysteresis: 11.5 of a 12 budget (95.8 %) fits...
            (
                "near the line",
                DecisionInput {
                    image: Footprint { ram_bytes: GIB, vram_bytes: 5 * GIB + 512 * MIB },
                    ..input()
                },
                false,
                "VRAM (RTX 4090)",
            ),
            // ...but right after a pause it is within 5 % of the line and still pauses...
            (
                "no flapping",
                DecisionInput {
                    paused_last: true,
                    image: Footprint { ram_bytes: GIB, vram_bytes: 5 * GIB + 512 * MIB },
                    ..input()
                },
                true,
                "VRAM (RTX 4090)",
            ),
            // ...but a job well under the line does not.
            (
                "well under after a pause",
                DecisionInput {
                    paused_last: true,
                    image: Footprint { ram_bytes: GIB, vram_bytes: 4 * GIB },
                    ..input()
                },
                false,
                "VRAM (RTX 4090)",
            ),
        ];
        for (name, i, offload, device) in cases {
            let d = decide(&i);
            assert_eq!(d.offload, offload, "{name}: {}", d.reason);
            assert_eq!(d.device, device, "{name}");
            assert_eq!(d.llm_running, i.llm.is_some(), "{name}");
        }
    }

    #[test]
    fn the_reason_carries_the_numbers() {
        let d = decide(&DecisionInput { gpu: Some(("RTX 4090".into(), 8 * GIB)), ..input() });
        assert_eq!(d.llm_bytes, 6 * GIB);
        assert_eq!(d.image_bytes, 5 * GIB);
        assert_eq!(d.free_bytes, 8 * GIB);
        assert_eq!(d.budget_bytes, (0.75 * (14 * GIB) as f64) as u64);
        assert!(d.llm_measured);
        assert!(
            d.reason.starts_with("The LLM will be paused while this image is made: needs 11.0 GiB"),
            "{}",
            d.reason
        );
        assert!(d.reason.contains("8.0 GiB free"), "{}", d.reason);
        let keep = decide(&input());
        assert!(keep.reason.starts_with("The LLM keeps running"), "{}", keep.reason);
        // A margin out of range is held to 10–100 %.
        assert_eq!(decide(&DecisionInput { margin: 7.0, ..input() }).margin, 1.0);
    }
}
