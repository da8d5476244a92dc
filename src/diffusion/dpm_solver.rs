//! [`DpmSolverSampler`]: DPM-Solver++(2M), the multistep second-order solver of the diffusion ODE in
//! data prediction (Lu et al. 2022, "DPM-Solver++: fast solver for guided sampling of diffusion
//! probabilistic models", Alg. 2).

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use super::denoiser::Denoiser;
use super::sampler::{predict_x0_eps, Sampler, Spacing, StepInfo, X0Processing};
use super::schedule::NoiseSchedule;
use crate::rng::Rng;
use crate::{Error, Result};

/// DPM-Solver++(2M): with `alpha = sqrt(alphabar)`, `sigma = sqrt(1 - alphabar)`,
/// `lambda = log(alpha / sigma)` and `h = lambda_s - lambda_t` from level `t` to the next grid level `s`,
///
/// `x_s = (sigma_s / sigma_t) x_t - alpha_s (e^{-h} - 1) D`,
///
/// with `D = x0^_t` on the first step and `D = (1 + 1/(2r)) x0^_t - 1/(2r) x0^_prev`, `r = h_prev / h`,
/// after it. The last step goes to the clean level (`sigma = 0`) and returns the final `x0^`
/// (first order, "lower order final"). Deterministic; 10 to 25 steps give DDIM-1000 quality.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DpmSolverSampler {
    /// Number of denoiser evaluations (`1..=T`).
    pub steps: usize,
    /// How the timesteps are chosen (default `LogSnr`; `Linspace` or `Trailing` also include `T-1`).
    pub spacing: Spacing,
    /// What is done to the predicted `x0` (DPM-Solver++ pairs well with dynamic thresholding).
    pub x0: X0Processing,
}

impl Default for DpmSolverSampler {
    /// 20 steps, log-SNR grid from `T-1` to 0, no clipping.
    fn default() -> Self {
        Self { steps: 20, spacing: Spacing::LogSnr, x0: X0Processing::None }
    }
}

impl DpmSolverSampler {
    /// `steps` steps, log-SNR grid, no clipping.
    pub fn new(steps: usize) -> Self {
        Self { steps, ..Self::default() }
    }
}

impl Sampler for DpmSolverSampler {
    fn num_steps(&self, _schedule: &NoiseSchedule) -> usize {
        self.steps
    }

    fn run(
        &self,
        denoiser: &dyn Denoiser,
        schedule: &NoiseSchedule,
        x_t: &Tensor,
        cond: Option<&Tensor>,
        _rng: &mut Rng,
        callback: &mut dyn FnMut(StepInfo<'_>),
    ) -> Result<Tensor> {
        self.x0.validate()?;
        let ts = self.spacing.timesteps(schedule, self.steps)?;
        let ab = |t: usize| schedule.alpha_bar()[t];
        let lambda = |a: f64| 0.5 * (a.ln() - (1.0 - a).ln());
        let mut x = x_t.clone();
        let mut prev: Option<(Tensor, f64)> = None; // (x0^ of the previous step, its h)
        for (i, &t) in ts.iter().enumerate() {
            let (x0, _) = predict_x0_eps(denoiser, schedule, &x, t, cond, self.x0)?;
            match ts.get(i + 1) {
                None => x = x0.clone(),
                Some(&s) => {
                    let (ab_t, ab_s) = (ab(t), ab(s));
                    if ab_t <= 0.0 {
                        // Zero terminal SNR: lambda_t = -inf, the first-order step gives x_s = alpha_s x0^.
                        x = x0.affine(ab_s.sqrt(), 0.0)?;
                        prev = None;
                    } else {
                        let h = lambda(ab_s) - lambda(ab_t);
                        if !(h.is_finite() && h > 0.0) {
                            return Err(Error::config("schedule", format!("lambda does not increase from {t} to {s}")));
                        }
                        let d = match &prev {
                            None => x0.clone(),
                            Some((x0_prev, h_prev)) => {
                                let r = h_prev / h;
                                (x0.affine(1.0 + 0.5 / r, 0.0)? - x0_prev.affine(0.5 / r, 0.0)?)?
                            }
                        };
                        let ratio = ((1.0 - ab_s) / (1.0 - ab_t)).sqrt();
                        x = (x.affine(ratio, 0.0)? - d.affine(ab_s.sqrt() * ((-h).exp() - 1.0), 0.0)?)?;
                        prev = Some((x0.clone(), h));
                    }
                }
            }
            callback(StepInfo { index: i, num_steps: ts.len(), timestep: t, x: &x, x0: &x0 });
        }
        Ok(x)
    }
}
