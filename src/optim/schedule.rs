//! Learning-rate schedules: constant, CycleGAN's linear decay, cosine annealing and step decay,
//! each with an optional linear warm-up.

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// A learning rate as a function of the optimizer step: an optional linear warm-up followed by
/// one of the [`LrScheduleKind`]s.
///
/// Steps are counted from 0: step 0 is the first optimizer step. With `W = warmup_steps`,
/// `f = warmup_start_factor` and `base = base_lr`, the learning rate of step `s` is
///
/// - during warm-up (`s < W`): `base * (f + (1 - f) * (s + 1) / W)`. The ramp is linear, step 0
///   gets `base * (f + (1 - f) / W)` (never 0, so no step is wasted) and the last warm-up step
///   `W - 1` gets exactly `base` (as in Goyal et al. 2017, "Accurate, Large Minibatch SGD");
/// - after warm-up (`s >= W`): the kind's value at `t = s - W`, the step counted from the end of
///   the warm-up (see [`LrScheduleKind`] for each formula). Without warm-up `t = s`.
///
/// The schedule is a pure function of the step, so a resumed run only needs the step count.
/// Call [`LrSchedule::apply`] before each optimizer step (or once per epoch with the epoch index,
/// as CycleGAN does).
///
/// ```
/// use candle_generative::optim::LrSchedule;
///
/// // 100 warm-up steps, then a cosine from 1e-3 down to 1e-5 over 900 steps.
/// let schedule = LrSchedule::cosine(1e-3, 900, 1e-5).with_warmup(100);
/// schedule.validate()?;
/// assert!((schedule.lr_at(0) - 1e-5).abs() < 1e-15); // first warm-up step: 1e-3 * 1/100
/// assert_eq!(schedule.lr_at(99), 1e-3); // end of warm-up
/// assert!((schedule.lr_at(100 + 450) - (1e-3 + 1e-5) / 2.0).abs() < 1e-15); // middle of the cosine
/// assert_eq!(schedule.lr_at(5000), 1e-5); // beyond the end
///
/// // With any `candle_nn::Optimizer`:
/// use candle_nn::Optimizer;
/// let mut sgd = candle_nn::SGD::new(vec![], 0.0)?;
/// let lr = schedule.apply(&mut sgd, 100);
/// assert_eq!(sgd.learning_rate(), lr);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LrSchedule {
    /// The peak learning rate, reached at the end of the warm-up; must be finite and > 0.
    pub base_lr: f64,
    /// Number of linear warm-up steps `W` (0: no warm-up).
    #[serde(default)]
    pub warmup_steps: u64,
    /// Factor `f` in `[0, 1]` the warm-up ramp starts from (the ramp would give `f * base_lr` one
    /// step before step 0); 0 by default.
    #[serde(default)]
    pub warmup_start_factor: f64,
    /// What happens after the warm-up.
    pub kind: LrScheduleKind,
}

/// The shape of an [`LrSchedule`] after its warm-up, as a function of `t`, the step counted
/// from the end of the warm-up (`t = step - warmup_steps`; `t = step` without warm-up).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum LrScheduleKind {
    /// `lr(t) = base_lr` for every step.
    Constant,
    /// Constant, then a linear decay to zero (Zhu et al. 2017, CycleGAN: 100 epochs at 2e-4, then
    /// linearly to 0 over 100 more):
    /// `lr(t) = base_lr` for `t < constant_steps`,
    /// `base_lr * (1 - (t - constant_steps) / decay_steps)` for
    /// `constant_steps <= t < constant_steps + decay_steps`, and 0 from `constant_steps + decay_steps`
    /// on. Step `constant_steps` is the first to decay (it still gets `base_lr`); half-way through
    /// the decay, at `constant_steps + decay_steps / 2`, the rate is `base_lr / 2`.
    /// (The CycleGAN reference code decays one slot earlier: `1 - (t - constant_steps + 1) /
    /// (decay_steps + 1)`.)
    LinearDecay {
        /// Steps at `base_lr` after the warm-up.
        constant_steps: u64,
        /// Steps of the linear decay to zero; must be >= 1.
        decay_steps: u64,
    },
    /// Cosine annealing without restarts (Loshchilov & Hutter 2017, SGDR):
    /// `lr(t) = min_lr + (base_lr - min_lr) * (1 + cos(pi * t / total_steps)) / 2` for
    /// `t <= total_steps`, and `min_lr` after. It starts at `base_lr` (`t = 0`), is half-way,
    /// `(base_lr + min_lr) / 2`, at `t = total_steps / 2` and reaches `min_lr` at
    /// `t = total_steps`, i.e. at step `warmup_steps + total_steps`.
    Cosine {
        /// Length of the cosine after the warm-up; must be >= 1.
        total_steps: u64,
        /// The final learning rate, in `[0, base_lr]`.
        min_lr: f64,
    },
    /// Step decay (PyTorch's `StepLR`): `lr(t) = base_lr * gamma^floor(t / step_size)`, so the
    /// rate is multiplied by `gamma` at `t = step_size, 2 * step_size, ...`.
    StepDecay {
        /// Steps between two decays; must be >= 1.
        step_size: u64,
        /// Multiplicative factor in `(0, 1]`.
        gamma: f64,
    },
}

impl LrSchedule {
    /// A constant learning rate `lr`, without warm-up.
    pub fn constant(lr: f64) -> Self {
        Self::new(lr, LrScheduleKind::Constant)
    }

    /// CycleGAN's schedule: `lr` for `constant_steps` steps, then linearly to zero over
    /// `decay_steps` (see [`LrScheduleKind::LinearDecay`]).
    pub fn linear_decay(lr: f64, constant_steps: u64, decay_steps: u64) -> Self {
        Self::new(lr, LrScheduleKind::LinearDecay { constant_steps, decay_steps })
    }

    /// Cosine annealing from `lr` to `min_lr` over `total_steps` (see [`LrScheduleKind::Cosine`]).
    pub fn cosine(lr: f64, total_steps: u64, min_lr: f64) -> Self {
        Self::new(lr, LrScheduleKind::Cosine { total_steps, min_lr })
    }

    /// Step decay: `lr * gamma^floor(t / step_size)` (see [`LrScheduleKind::StepDecay`]).
    pub fn step_decay(lr: f64, step_size: u64, gamma: f64) -> Self {
        Self::new(lr, LrScheduleKind::StepDecay { step_size, gamma })
    }

    /// A schedule of the given kind peaking at `base_lr`, without warm-up.
    pub fn new(base_lr: f64, kind: LrScheduleKind) -> Self {
        Self { base_lr, warmup_steps: 0, warmup_start_factor: 0.0, kind }
    }

    /// The same schedule after a linear warm-up of `steps` steps starting from 0.
    pub fn with_warmup(self, steps: u64) -> Self {
        self.with_warmup_from(steps, 0.0)
    }

    /// The same schedule after a linear warm-up of `steps` steps starting from
    /// `start_factor * base_lr` (PyTorch's `LinearLR` start factor).
    pub fn with_warmup_from(self, steps: u64, start_factor: f64) -> Self {
        Self { warmup_steps: steps, warmup_start_factor: start_factor, ..self }
    }

    /// Checks every field; an [`Error::Config`] names the first one out of range.
    pub fn validate(&self) -> Result<()> {
        if !(self.base_lr.is_finite() && self.base_lr > 0.0) {
            return Err(Error::config("base_lr", format!("must be finite and > 0, got {}", self.base_lr)));
        }
        let f = self.warmup_start_factor;
        if !(0.0..=1.0).contains(&f) {
            return Err(Error::config("warmup_start_factor", format!("must be in [0, 1], got {f}")));
        }
        match self.kind {
            LrScheduleKind::Constant => {}
            LrScheduleKind::LinearDecay { decay_steps, .. } => {
                if decay_steps == 0 {
                    return Err(Error::config("decay_steps", "must be >= 1"));
                }
            }
            LrScheduleKind::Cosine { total_steps, min_lr } => {
                if total_steps == 0 {
                    return Err(Error::config("total_steps", "must be >= 1"));
                }
                if !(0.0..=self.base_lr).contains(&min_lr) {
                    return Err(Error::config(
                        "min_lr",
                        format!("must be in [0, base_lr = {}], got {min_lr}", self.base_lr),
                    ));
                }
            }
            LrScheduleKind::StepDecay { step_size, gamma } => {
                if step_size == 0 {
                    return Err(Error::config("step_size", "must be >= 1"));
                }
                if !(gamma > 0.0 && gamma <= 1.0) {
                    return Err(Error::config("gamma", format!("must be in (0, 1], got {gamma}")));
                }
            }
        }
        Ok(())
    }

    /// The learning rate of step `step` (0 = the first optimizer step); the formulas are on
    /// [`LrSchedule`] and [`LrScheduleKind`]. On a schedule that [`LrSchedule::validate`] refuses
    /// the value is unspecified, but this never panics.
    pub fn lr_at(&self, step: u64) -> f64 {
        let base = self.base_lr;
        if step < self.warmup_steps {
            let f = self.warmup_start_factor;
            let ramp = (step + 1) as f64 / self.warmup_steps as f64;
            return base * (f + (1.0 - f) * ramp);
        }
        let t = step - self.warmup_steps;
        match self.kind {
            LrScheduleKind::Constant => base,
            LrScheduleKind::LinearDecay { constant_steps, decay_steps } => {
                if t < constant_steps {
                    base
                } else {
                    let into_decay = t - constant_steps;
                    if into_decay >= decay_steps {
                        0.0
                    } else {
                        // (D - i) / D rather than 1 - i / D: no cancellation near the end of the decay.
                        base * ((decay_steps - into_decay) as f64 / decay_steps as f64)
                    }
                }
            }
            LrScheduleKind::Cosine { total_steps, min_lr } => {
                if t >= total_steps {
                    min_lr
                } else {
                    let progress = t as f64 / total_steps as f64;
                    min_lr + (base - min_lr) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
                }
            }
            LrScheduleKind::StepDecay { step_size, gamma } => {
                let decays = t.checked_div(step_size).unwrap_or(0);
                base * gamma.powf(decays as f64)
            }
        }
    }

    /// Sets `opt`'s learning rate to [`LrSchedule::lr_at`]`(step)` and returns it. Call it before
    /// the optimizer step `step`.
    pub fn apply<O: candle_nn::Optimizer>(&self, opt: &mut O, step: u64) -> f64 {
        let lr = self.lr_at(step);
        opt.set_learning_rate(lr);
        lr
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-15 * b.abs().max(1e-300)
    }

    #[test]
    fn warmup_ramps_linearly_to_base() {
        let s = LrSchedule::constant(1e-3).with_warmup(10);
        assert!(close(s.lr_at(0), 1e-4), "first warm-up step gets base / W");
        assert!(close(s.lr_at(4), 5e-4));
        assert_eq!(s.lr_at(9), 1e-3, "end of warm-up reaches base exactly");
        assert_eq!(s.lr_at(10), 1e-3);
        assert_eq!(s.lr_at(1_000_000), 1e-3);
        let s = LrSchedule::constant(1.0).with_warmup_from(4, 0.2);
        assert!(close(s.lr_at(0), 0.2 + 0.8 / 4.0));
        assert_eq!(s.lr_at(3), 1.0);
        assert_eq!(LrSchedule::constant(0.5).lr_at(0), 0.5, "no warm-up: step 0 at base");
    }

    #[test]
    fn cycle_gan_linear_decay() {
        // CycleGAN: 100 epochs at 2e-4, then linearly to 0 over 100 epochs.
        let s = LrSchedule::linear_decay(2e-4, 100, 100);
        assert_eq!(s.lr_at(0), 2e-4);
        assert_eq!(s.lr_at(99), 2e-4);
        assert_eq!(s.lr_at(100), 2e-4, "first decay step still at base");
        assert!(close(s.lr_at(101), 2e-4 * 0.99));
        assert!(close(s.lr_at(150), 1e-4), "half-way through the decay: base / 2");
        assert!(close(s.lr_at(199), 2e-6), "last decay step: base / decay_steps");
        assert_eq!(s.lr_at(200), 0.0, "end");
        assert_eq!(s.lr_at(10_000), 0.0, "stays at 0 beyond the end");
        // With a warm-up the phases shift by the warm-up length.
        let w = LrSchedule::linear_decay(2e-4, 100, 100).with_warmup(10);
        assert_eq!(w.lr_at(9), 2e-4);
        assert!(close(w.lr_at(160), 1e-4));
        assert_eq!(w.lr_at(210), 0.0);
    }

    #[test]
    fn cosine_named_steps() {
        let s = LrSchedule::cosine(1.0, 100, 0.1).with_warmup(20);
        assert!(close(s.lr_at(0), 0.05), "first warm-up step");
        assert_eq!(s.lr_at(19), 1.0, "end of warm-up");
        assert_eq!(s.lr_at(20), 1.0, "cosine starts at base");
        assert!(close(s.lr_at(20 + 50), 0.55), "middle of the cosine: (base + min) / 2");
        let quarter = 0.1 + 0.9 * 0.5 * (1.0 + std::f64::consts::FRAC_1_SQRT_2);
        assert!(close(s.lr_at(20 + 25), quarter));
        assert_eq!(s.lr_at(120), 0.1, "end");
        assert_eq!(s.lr_at(121), 0.1, "beyond the end");
        assert_eq!(s.lr_at(u64::MAX), 0.1);
        assert!(s.lr_at(119) > 0.1 && s.lr_at(119) < 0.1 + 1e-3);
    }

    #[test]
    fn step_decay_boundaries() {
        let s = LrSchedule::step_decay(0.1, 30, 0.5);
        assert_eq!(s.lr_at(0), 0.1);
        assert_eq!(s.lr_at(29), 0.1);
        assert_eq!(s.lr_at(30), 0.05);
        assert_eq!(s.lr_at(59), 0.05);
        assert_eq!(s.lr_at(60), 0.025);
        assert!(close(s.lr_at(90), 0.0125));
        let w = LrSchedule::step_decay(0.1, 30, 0.1).with_warmup(5);
        assert_eq!(w.lr_at(34), 0.1);
        assert!(close(w.lr_at(35), 0.01));
        assert!(close(w.lr_at(65), 0.001));
    }

    #[test]
    fn apply_sets_the_optimizer_rate() -> Result<()> {
        let mut sgd = <candle_nn::SGD as candle_nn::Optimizer>::new(vec![], 1.0)?;
        let s = LrSchedule::step_decay(0.1, 10, 0.5);
        assert_eq!(s.apply(&mut sgd, 10), 0.05);
        assert_eq!(candle_nn::Optimizer::learning_rate(&sgd), 0.05);
        Ok(())
    }

    #[test]
    fn validation_names_the_field() {
        let field = |s: LrSchedule| match s.validate() {
            Err(Error::Config { field, .. }) => field,
            other => panic!("expected a config error, got {other:?}"),
        };
        assert_eq!(field(LrSchedule::constant(0.0)), "base_lr");
        assert_eq!(field(LrSchedule::constant(f64::NAN)), "base_lr");
        assert_eq!(field(LrSchedule::constant(1.0).with_warmup_from(3, 1.5)), "warmup_start_factor");
        assert_eq!(field(LrSchedule::linear_decay(1.0, 3, 0)), "decay_steps");
        assert_eq!(field(LrSchedule::cosine(1.0, 0, 0.0)), "total_steps");
        assert_eq!(field(LrSchedule::cosine(1.0, 10, 2.0)), "min_lr");
        assert_eq!(field(LrSchedule::step_decay(1.0, 0, 0.5)), "step_size");
        assert_eq!(field(LrSchedule::step_decay(1.0, 3, 0.0)), "gamma");
        assert!(LrSchedule::cosine(1.0, 10, 0.0).with_warmup(3).validate().is_ok());
        // Invalid schedules still give a value instead of panicking.
        assert_eq!(LrSchedule::step_decay(1.0, 0, 0.5).lr_at(7), 1.0);
        assert_eq!(LrSchedule::linear_decay(1.0, 0, 0).lr_at(0), 0.0);
    }

    #[test]
    fn serde_round_trip() {
        let s = LrSchedule::cosine(3e-4, 1000, 1e-6).with_warmup_from(50, 0.1);
        let json = serde_json::to_string(&s).expect("serialisable");
        assert_eq!(serde_json::from_str::<LrSchedule>(&json).expect("deserialisable"), s);
        let minimal: LrSchedule =
            serde_json::from_str(r#"{"base_lr":0.001,"kind":"Constant"}"#).expect("warm-up fields default");
        assert_eq!(minimal, LrSchedule::constant(1e-3));
    }
}
