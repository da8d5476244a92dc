//! Helpers shared by the examples: a training progress bar and its message, opening or resuming
//! a run's checkpoints and log.
//!
//! Included by each example with `#[path = "common/mod.rs"] mod common;`; cargo does not build
//! `examples/common/mod.rs` as an example of its own. Not every example uses every helper,
//! hence the `#[allow(dead_code)]`s.

pub mod tuning;

use std::fmt::Debug;
use std::path::{Path, PathBuf};

use candle_generative::io::{Checkpoint, CheckpointDir, MetricsLog};
use candle_generative::optim::MixedPrecision;
use candle_generative::{Error, Result};
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

/// Opens a run's metrics log under `--out`, resuming when asked: with `resume` and a checkpoint
/// in `checkpoints`, loads the newest one and appends to the log at `log_path`; otherwise
/// starts a new log (saying so when `resume` found nothing). The caller restores its state
/// from the returned checkpoint, whose step is where the run continues.
#[allow(dead_code)]
pub fn open_run(
    resume: bool,
    checkpoints: &CheckpointDir,
    log_path: &Path,
) -> Result<(Option<(PathBuf, Checkpoint)>, MetricsLog)> {
    let latest = if resume { checkpoints.latest()? } else { None };
    match latest {
        Some(path) => {
            let checkpoint = Checkpoint::load(&path)?;
            Ok((Some((path, checkpoint)), MetricsLog::append(log_path)?))
        }
        None => {
            if resume {
                println!("--resume: no checkpoint in {}, starting afresh", checkpoints.dir().display());
            }
            Ok((None, MetricsLog::create(log_path)?))
        }
    }
}

/// An `Error::Checkpoint` on `path` when the `what` stored in a checkpoint (`saved`) differs
/// from this run's (`now`), showing both: resuming with other options would mix two runs.
#[allow(dead_code)]
pub fn check_same<T: PartialEq + Debug>(what: &str, saved: &T, now: &T, path: &Path) -> Result<()> {
    if saved != now {
        return Err(Error::checkpoint(
            path,
            format!(
                "was written with another {what}; rerun with the original options or another --out.\n  \
                 checkpoint: {saved:?}\n  now:        {now:?}"
            ),
        ));
    }
    Ok(())
}

/// The loss scaler's state after a run, for each named optimizer that scales its loss (only
/// `--dtype f16` does): `opt_g: scale 2048, 3 steps skipped`. `None` when none scales.
#[allow(dead_code)]
pub fn loss_scale_report<O>(optimizers: &[(&str, &MixedPrecision<O>)]) -> Option<String> {
    let parts: Vec<String> = optimizers
        .iter()
        .filter_map(|(name, opt)| {
            let s = opt.scaler()?;
            Some(format!("{name}: scale {}, {} steps skipped", s.scale(), s.skipped_steps()))
        })
        .collect();
    (!parts.is_empty()).then(|| format!("loss scaling (f16): {}", parts.join("; ")))
}

/// `"f32"`: the dtype recorded for checkpoints written before `--dtype` existed.
#[allow(dead_code)]
pub fn f32_name() -> String {
    "f32".into()
}
