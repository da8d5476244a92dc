//! [`DdpmSampler`]: ancestral sampling of Ho et al. 2020 (Alg. 2), on every timestep or a respaced
//! subset (Nichol & Dhariwal 2021, section 4).

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use super::denoiser::Denoiser;
use super::sampler::{predict_x0_eps, Sampler, Spacing, StepInfo, X0Processing};
use super::schedule::NoiseSchedule;
use crate::rng::Rng;
use crate::Result;

/// The variance of each reverse step `p(x_s | x_t)` (Ho et al. 2020, section 3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum DdpmVariance {
    /// `sigma² = beta~_t = (1 - alphabar_s) / (1 - alphabar_t) beta_t`, the posterior variance
    /// (optimal when `x0` is a point).
    #[default]
    FixedSmall,
    /// `sigma² = beta_t` (optimal for `x0 ~ N(0, I)`).
    FixedLarge,
}

/// Ancestral DDPM sampling: at each timestep `t` (visiting `steps` of them), predict `x0`, take the
/// posterior mean `c0 x0 + ct x_t` of `q(x_s | x_t, x0)` ([`NoiseSchedule::posterior_between`]) and add
/// `sigma z`, `z ~ N(0, I)` from the rng; the last step (to the clean level) adds no noise.
/// With `steps = None` every timestep `T-1, ..., 0` is visited (Ho et al. 2020 Alg. 2).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DdpmSampler {
    /// Fixed-small or fixed-large variance.
    pub variance: DdpmVariance,
    /// Number of steps (`None`: all `T`); fewer steps use `spacing` and the respaced betas.
    pub steps: Option<usize>,
    /// The grid for `steps < T`.
    pub spacing: Spacing,
    /// What is done to the predicted `x0`.
    pub x0: X0Processing,
}

impl Default for DdpmSampler {
    /// All timesteps, fixed-small variance, `x0` clipped to `[-1, 1]` (as DDPM).
    fn default() -> Self {
        Self { variance: DdpmVariance::FixedSmall, steps: None, spacing: Spacing::Leading, x0: X0Processing::Clip(1.0) }
    }
}

impl DdpmSampler {
    /// The visited timesteps, decreasing.
    pub fn timesteps(&self, schedule: &NoiseSchedule) -> Result<Vec<usize>> {
        self.x0.validate()?;
        let n = schedule.num_timesteps();
        self.spacing.timesteps(schedule, self.steps.unwrap_or(n))
    }
}

impl Sampler for DdpmSampler {
    fn num_steps(&self, schedule: &NoiseSchedule) -> usize {
        self.steps.unwrap_or(schedule.num_timesteps())
    }

    fn run(
        &self,
        denoiser: &dyn Denoiser,
        schedule: &NoiseSchedule,
        x_t: &Tensor,
        cond: Option<&Tensor>,
        rng: &mut Rng,
        callback: &mut dyn FnMut(StepInfo<'_>),
    ) -> Result<Tensor> {
        let ts = self.timesteps(schedule)?;
        let mut x = x_t.clone();
        for (i, &t) in ts.iter().enumerate() {
            let s = ts.get(i + 1).copied();
            let (x0, _) = predict_x0_eps(denoiser, schedule, &x, t, cond, self.x0)?;
            let (c0, ct, small) = schedule.posterior_between(t, s)?;
            let mean = (x0.affine(c0, 0.0)? + x.affine(ct, 0.0)?)?;
            x = match s {
                None => mean,
                Some(s) => {
                    let var = match self.variance {
                        DdpmVariance::FixedSmall => small,
                        DdpmVariance::FixedLarge => 1.0 - schedule.alpha_bar()[t] / schedule.alpha_bar()[s],
                    };
                    (mean + rng.randn_like(&x)?.affine(var.sqrt(), 0.0)?)?
                }
            };
            callback(StepInfo { index: i, num_steps: ts.len(), timestep: t, x: &x, x0: &x0 });
        }
        Ok(x)
    }
}
