//! Helpers shared by the examples: a training progress bar and its message.
//!
//! Included by each example with `#[path = "common/mod.rs"] mod common;`; cargo does not build
//! `examples/common/mod.rs` as an example of its own. Not every example uses every helper,
//! hence the `#[allow(dead_code)]`s.

use indicatif::{ProgressBar, ProgressStyle};

/// A progress bar over training steps `0..total_steps`, starting at `start_step` (non-zero when
/// resuming): `[elapsed] ====>---- step/total (ETA eta) message`.
///
/// The ETA counts only the steps done in this run, so a resumed run does not look faster than
/// it is. Set the message with [`format_scalars`]; the bar draws to stderr and hides itself
/// when stderr is not a terminal.
#[allow(dead_code)]
pub fn progress_bar(total_steps: u64, start_step: u64) -> ProgressBar {
    let bar = ProgressBar::new(total_steps);
    // The template is a constant, so parsing it can only fail if it is edited into nonsense.
    let style = ProgressStyle::with_template("[{elapsed_precise}] {bar:30.cyan/blue} {pos}/{len} (ETA {eta}) {msg}")
        .expect("the progress bar template is valid")
        .progress_chars("=> ");
    bar.set_style(style);
    bar.set_position(start_step.min(total_steps));
    // The tick records the resumed position in the ETA estimator and the reset forgets the
    // jump to it, so the rate is measured from this run's own steps.
    bar.tick();
    bar.reset_eta();
    bar
}

/// `name=value` pairs separated by spaces for the bar's message, e.g.
/// `loss_d=0.693 loss_g=1.204`: three decimals, scientific notation for very small or large
/// values (`lr=2.000e-4`), `NaN`/`inf` as they are.
#[allow(dead_code)]
pub fn format_scalars(scalars: &[(&str, f64)]) -> String {
    let format_value = |v: f64| {
        if v == 0.0 || !v.is_finite() || (1e-2..1e5).contains(&v.abs()) {
            format!("{v:.3}")
        } else {
            format!("{v:.3e}")
        }
    };
    scalars.iter().map(|&(name, v)| format!("{name}={}", format_value(v))).collect::<Vec<_>>().join(" ")
}
