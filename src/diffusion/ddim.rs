//! [`DdimSampler`]: denoising diffusion implicit models (Song, Meng & Ermon 2021), with `eta` and
//! the timestep spacings; deterministic for `eta = 0`, with its inversion.

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use super::denoiser::Denoiser;
use super::sampler::{predict_x0_eps, Sampler, Spacing, StepInfo, X0Processing};
use super::schedule::NoiseSchedule;
use crate::rng::Rng;
use crate::{Error, Result};

/// DDIM (Song et al. 2021, eq. 12): from level `t` to the next grid level `s` (clean after the last),
/// `x_s = sqrt(alphabar_s) x0 + sqrt(1 - alphabar_s - sigma²) eps + sigma z` with
/// `sigma = eta sqrt((1 - alphabar_s) / (1 - alphabar_t)) sqrt(1 - alphabar_t / alphabar_s)`.
/// `eta = 0` is the deterministic probability-flow sampler; `eta = 1` on all timesteps is DDPM with
/// fixed-small variance.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DdimSampler {
    /// Number of denoiser evaluations (`1..=T`).
    pub steps: usize,
    /// The stochasticity `eta >= 0`.
    pub eta: f64,
    /// How the `steps` timesteps are chosen.
    pub spacing: Spacing,
    /// What is done to the predicted `x0`.
    pub x0: X0Processing,
}

impl Default for DdimSampler {
    /// 50 deterministic steps, leading spacing, no clipping (the bench's DDIM-50).
    fn default() -> Self {
        Self { steps: 50, eta: 0.0, spacing: Spacing::Leading, x0: X0Processing::None }
    }
}

impl DdimSampler {
    /// `steps` deterministic steps with `spacing`, no clipping.
    pub fn new(steps: usize, spacing: Spacing) -> Self {
        Self { steps, spacing, ..Self::default() }
    }

    /// The visited timesteps, decreasing; `Error::Config` for bad `steps`, `eta` or `x0`.
    pub fn timesteps(&self, schedule: &NoiseSchedule) -> Result<Vec<usize>> {
        if !(self.eta >= 0.0 && self.eta.is_finite()) {
            return Err(Error::config("eta", format!("must be finite and >= 0, got {}", self.eta)));
        }
        self.x0.validate()?;
        self.spacing.timesteps(schedule, self.steps)
    }

    /// DDIM inversion (deterministic, `eta` ignored): maps clean data `x0` `(B, C, H, W)` up the same
    /// grid to the level of its first (largest) timestep, the reverse of [`Sampler::run`] with
    /// `eta = 0`: the first step `clean -> t_min` uses the denoiser's `eps` at `(x0, t_min)`, each later
    /// step `t -> t'` sets `x_t' = sqrt(alphabar_t') x0^ + sqrt(1 - alphabar_t') eps^` from the
    /// prediction at `(x_t, t)`. Exact when the predicted noise is constant along the path (as for the
    /// true noise of one known `x0`); an approximation otherwise, as in the paper (section 4.3).
    pub fn invert(
        &self,
        denoiser: &dyn Denoiser,
        schedule: &NoiseSchedule,
        x0: &Tensor,
        cond: Option<&Tensor>,
    ) -> Result<Tensor> {
        let mut ts = self.timesteps(schedule)?;
        ts.reverse();
        let mut x = x0.clone();
        let mut level: Option<usize> = None;
        for &t in &ts {
            // The prediction is made at the current state; at the clean level x0^ = x itself.
            let (x0_hat, eps) = predict_x0_eps(denoiser, schedule, &x, level.unwrap_or(t), cond, self.x0)?;
            let x0_hat = if level.is_none() { x.clone() } else { x0_hat };
            let ab = schedule.alpha_bar()[t];
            x = (x0_hat.affine(ab.sqrt(), 0.0)? + eps.affine((1.0 - ab).sqrt(), 0.0)?)?;
            level = Some(t);
        }
        Ok(x)
    }
}

impl Sampler for DdimSampler {
    fn num_steps(&self, _schedule: &NoiseSchedule) -> usize {
        self.steps
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
            let (x0, eps) = predict_x0_eps(denoiser, schedule, &x, t, cond, self.x0)?;
            let (ab_t, ab_s) = (schedule.alpha_bar()[t], schedule.alpha_bar_at_level(s));
            let sigma = if self.eta > 0.0 {
                self.eta * ((1.0 - ab_s) / (1.0 - ab_t)).sqrt() * (1.0 - ab_t / ab_s).max(0.0).sqrt()
            } else {
                0.0
            };
            let dir = (1.0 - ab_s - sigma * sigma).max(0.0).sqrt();
            let mut next = (x0.affine(ab_s.sqrt(), 0.0)? + eps.affine(dir, 0.0)?)?;
            if sigma > 0.0 {
                next = (next + rng.randn_like(&x)?.affine(sigma, 0.0)?)?;
            }
            x = next;
            callback(StepInfo { index: i, num_steps: ts.len(), timestep: t, x: &x, x0: &x0 });
        }
        Ok(x)
    }
}
