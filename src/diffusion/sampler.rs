//! What the samplers share: the [`Sampler`] trait, timestep grids ([`Spacing`]), `x0` clipping and
//! dynamic thresholding ([`X0Processing`]), and the per-step callback's [`StepInfo`].

use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

use super::denoiser::{eps_from_x0, split_prediction, Denoiser};
use super::schedule::NoiseSchedule;
use crate::losses::diffusion::Prediction;
use crate::rng::Rng;
use crate::{Error, Result};

/// How a sampler with `K < T` steps picks its timesteps (Lin et al. 2024, table 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Spacing {
    /// `0, T/K, 2T/K, ...` (integer step `T/K`; DDIM's original grid, never reaches `T-1`).
    #[default]
    Leading,
    /// `round(T - i T/K) - 1` for `i = 0..K`: starts at `T-1` (needed with zero terminal SNR).
    Trailing,
    /// `round(i (T-1)/(K-1))`: evenly from 0 to `T-1`.
    Linspace,
    /// Evenly in log-SNR `lambda = log(alpha / sigma)` from `T-1` to 0, each point rounded to the
    /// timestep of nearest `lambda` (DPM-Solver's "logSNR" grid, Lu et al. 2022; points that round to
    /// one timestep near `t = 0` are moved up to the next free ones): fine steps where the data
    /// emerges, the best grid for DPM-Solver++ on few steps.
    LogSnr,
}

impl Spacing {
    /// The `steps` timesteps of `schedule`, in decreasing order (the order they are visited).
    /// `Error::Config` unless `1 <= steps <= T`, and if the grid would repeat a timestep.
    pub fn timesteps(&self, schedule: &NoiseSchedule, steps: usize) -> Result<Vec<usize>> {
        let t = schedule.num_timesteps();
        if steps == 0 || steps > t {
            return Err(Error::config("steps", format!("must be in 1..={t}, got {steps}")));
        }
        let mut ts: Vec<usize> = match self {
            Spacing::Leading => (0..steps).map(|i| i * (t / steps)).collect(),
            Spacing::Trailing => (0..steps)
                .map(|i| ((t as f64 - i as f64 * t as f64 / steps as f64).round() as usize).max(1) - 1)
                .collect(),
            Spacing::Linspace => {
                if steps == 1 {
                    vec![t - 1]
                } else {
                    (0..steps).map(|i| (i as f64 * (t - 1) as f64 / (steps - 1) as f64).round() as usize).collect()
                }
            }
            Spacing::LogSnr => {
                let lambda: Vec<f64> = schedule.alpha_bar().iter().map(|a| 0.5 * (a.ln() - (1.0 - a).ln())).collect();
                let (hi, lo) = (lambda[0], lambda[t - 1]);
                let mut ts: Vec<usize> = (0..steps)
                    .map(|i| {
                        let target = if steps == 1 { lo } else { lo + (hi - lo) * i as f64 / (steps - 1) as f64 };
                        // lambda decreases with t: the nearest timestep by bisection on the sorted values.
                        let k = lambda.partition_point(|&l| l > target).min(t - 1);
                        if k > 0 && (lambda[k - 1] - target).abs() < (lambda[k] - target).abs() {
                            k - 1
                        } else {
                            k
                        }
                    })
                    .collect();
                // Near t = 0 several points can round to one timestep: push them apart upwards.
                ts.sort_unstable();
                for i in 1..ts.len() {
                    ts[i] = ts[i].max(ts[i - 1] + 1);
                }
                ts
            }
        };
        ts.sort_unstable_by(|a, b| b.cmp(a));
        if ts.windows(2).any(|w| w[0] == w[1]) {
            return Err(Error::config("steps", format!("{steps} steps of {t} give repeated timesteps with {self:?}")));
        }
        Ok(ts)
    }
}

/// What is done to the predicted `x0` before it is used (the sampled data is assumed in `[-1, 1]`).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub enum X0Processing {
    /// Use it as predicted.
    #[default]
    None,
    /// Clamp to `[-c, c]` (DDPM clips to `[-1, 1]`).
    Clip(f64),
    /// Dynamic thresholding (Saharia et al. 2022, Imagen): per sample, `s` = the `percentile` quantile
    /// of `|x0|`, `s = max(s, 1)` capped at `max`; then `x0 = clamp(x0, -s, s) / s`.
    DynamicThreshold {
        /// The quantile in `(0, 1]` (Imagen: 0.995).
        percentile: f64,
        /// The largest threshold `s` (`>= 1`).
        max: f64,
    },
}

impl X0Processing {
    /// Checks the numbers; `Error::Config` names the field.
    pub fn validate(&self) -> Result<()> {
        match *self {
            X0Processing::None => Ok(()),
            X0Processing::Clip(c) if c > 0.0 && !c.is_nan() => Ok(()),
            X0Processing::Clip(c) => Err(Error::config("x0.clip", format!("must be > 0, got {c}"))),
            X0Processing::DynamicThreshold { percentile, max } => {
                if !(percentile > 0.0 && percentile <= 1.0) {
                    return Err(Error::config("x0.percentile", format!("must be in (0, 1], got {percentile}")));
                }
                if max.is_nan() || max < 1.0 {
                    return Err(Error::config("x0.max", format!("must be >= 1, got {max}")));
                }
                Ok(())
            }
        }
    }

    /// Applies the processing to `x0` `(B, ...)`.
    pub fn apply(&self, x0: &Tensor) -> Result<Tensor> {
        match *self {
            X0Processing::None => Ok(x0.clone()),
            X0Processing::Clip(c) => Ok(x0.clamp(-c, c)?),
            X0Processing::DynamicThreshold { percentile, max } => {
                let b = x0.dims()[0];
                let flat = x0.reshape((b, ()))?.abs()?.to_dtype(DType::F32)?.to_vec2::<f32>()?;
                let s: Vec<f64> = flat
                    .into_iter()
                    .map(|mut row| {
                        row.sort_unstable_by(|a, b| a.total_cmp(b));
                        let k = ((percentile * row.len() as f64).ceil() as usize).clamp(1, row.len()) - 1;
                        (row[k] as f64).clamp(1.0, max)
                    })
                    .collect();
                let mut dims = vec![1; x0.rank()];
                dims[0] = b;
                let s = Tensor::from_vec(s, dims, x0.device())?.to_dtype(x0.dtype())?;
                Ok(x0.broadcast_minimum(&s)?.broadcast_maximum(&s.neg()?)?.broadcast_div(&s)?)
            }
        }
    }
}

/// What the per-step callback sees.
#[derive(Debug, Clone, Copy)]
pub struct StepInfo<'a> {
    /// The step's index, `0..num_steps`.
    pub index: usize,
    /// The number of steps (denoiser evaluations) of the run.
    pub num_steps: usize,
    /// The timestep the denoiser was evaluated at.
    pub timestep: usize,
    /// The state after the step (`x_0` after the last one).
    pub x: &'a Tensor,
    /// The `x0` predicted at this step (after [`X0Processing`]).
    pub x0: &'a Tensor,
}

/// A reverse-process sampler: turns noise `x_T` into samples with a [`Denoiser`].
///
/// All randomness (only ancestral samplers and DDIM with `eta > 0` draw any) comes from the `rng`
/// passed in, so a seed fixes the samples.
pub trait Sampler {
    /// The number of denoiser evaluations per sample under `schedule`.
    fn num_steps(&self, schedule: &NoiseSchedule) -> usize;

    /// Runs the reverse process from `x_t` (`(B, C, H, W)`, usually `N(0, I)` from [`Sampler::sample`])
    /// to the data, calling `callback` after every step. `cond` is passed to the denoiser unchanged.
    fn run(
        &self,
        denoiser: &dyn Denoiser,
        schedule: &NoiseSchedule,
        x_t: &Tensor,
        cond: Option<&Tensor>,
        rng: &mut Rng,
        callback: &mut dyn FnMut(StepInfo<'_>),
    ) -> Result<Tensor>;

    /// Draws `x_T ~ N(0, I)` of `shape` (dtype of `dtype`, on `device`) from `rng` and runs the reverse
    /// process without a callback.
    #[allow(clippy::too_many_arguments)]
    fn sample(
        &self,
        denoiser: &dyn Denoiser,
        schedule: &NoiseSchedule,
        shape: &[usize],
        cond: Option<&Tensor>,
        rng: &mut Rng,
        dtype: DType,
        device: &candle_core::Device,
    ) -> Result<Tensor> {
        let x = rng.randn(shape, dtype, device)?;
        self.run(denoiser, schedule, &x, cond, rng, &mut |_| {})
    }
}

/// One denoiser evaluation at timestep `t`: `(x0, eps)` after `x0` processing (eps recomputed from
/// the processed x0 when it changed). Refuses `alphabar_t = 0` with epsilon prediction.
pub(crate) fn predict_x0_eps(
    denoiser: &dyn Denoiser,
    schedule: &NoiseSchedule,
    x: &Tensor,
    t: usize,
    cond: Option<&Tensor>,
    processing: X0Processing,
) -> Result<(Tensor, Tensor)> {
    let ab = schedule.alpha_bar()[t];
    let prediction = denoiser.prediction();
    if ab <= 0.0 && prediction == Prediction::Epsilon {
        return Err(Error::config(
            "prediction",
            format!(
                "epsilon prediction cannot give x0 at timestep {t} (alphabar = 0, zero terminal SNR); use v-prediction"
            ),
        ));
    }
    let b = x.dims().first().copied().ok_or_else(|| Error::shape("sampler", "`x_t` must be (B, C, H, W)"))?;
    let tt = Tensor::from_vec(vec![t as u32; b], b, x.device())?;
    // Sampling is inference: without the detach, a denoiser whose weights are candle `Var`s links every
    // step's graph to the next through `x`, and 50 DDIM steps of the bench UNet held 15 GB.
    let out = denoiser.predict(x, &tt, cond)?.detach();
    if out.dims() != x.dims() {
        return Err(Error::shape(
            "Denoiser::predict",
            format!("returned {:?} for an input of {:?}", out.dims(), x.dims()),
        ));
    }
    let out = out.to_dtype(x.dtype())?;
    let (x0, eps) = split_prediction(prediction, &out, x, ab)?;
    if processing == X0Processing::None {
        return Ok((x0, eps));
    }
    let x0 = processing.apply(&x0)?;
    let eps = if ab < 1.0 { eps_from_x0(x, &x0, ab)? } else { eps };
    Ok((x0, eps))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diffusion::ScheduleConfig;

    #[test]
    fn grids_match_their_definitions() {
        let s = NoiseSchedule::new(&ScheduleConfig::default()).unwrap();
        let lead = Spacing::Leading.timesteps(&s, 10).unwrap();
        assert_eq!(lead, vec![900, 800, 700, 600, 500, 400, 300, 200, 100, 0]);
        let trail = Spacing::Trailing.timesteps(&s, 10).unwrap();
        assert_eq!(trail, vec![999, 899, 799, 699, 599, 499, 399, 299, 199, 99]);
        let lin = Spacing::Linspace.timesteps(&s, 4).unwrap();
        assert_eq!(lin, vec![999, 666, 333, 0]);
        let snr = Spacing::LogSnr.timesteps(&s, 20).unwrap();
        assert_eq!((snr[0], snr[19], snr.len()), (999, 0, 20));
        // Even steps in lambda: the gaps between consecutive lambdas are about equal in the middle.
        let lambda = |t: usize| 0.5 * (s.alpha_bar()[t].ln() - (1.0 - s.alpha_bar()[t]).ln());
        let gaps: Vec<f64> = snr.windows(2).map(|w| lambda(w[1]) - lambda(w[0])).collect();
        let mean = (lambda(0) - lambda(999)) / 19.0;
        assert!(gaps[2..15].iter().all(|g| (g - mean).abs() < 0.2 * mean), "{gaps:?}");
        assert!(Spacing::Leading.timesteps(&s, 0).is_err() && Spacing::Trailing.timesteps(&s, 1001).is_err());
        assert_eq!(Spacing::Linspace.timesteps(&s, 1000).unwrap().len(), 1000);
    }

    #[test]
    fn dynamic_thresholding_scales_by_the_per_sample_quantile() {
        let x = Tensor::new(&[[0.5f32, -3.0, 2.0, 1.0], [0.1, 0.2, -0.3, 0.4]], &candle_core::Device::Cpu).unwrap();
        let p = X0Processing::DynamicThreshold { percentile: 0.75, max: 10.0 };
        let y = p.apply(&x).unwrap().to_vec2::<f32>().unwrap();
        // Row 0: |x| sorted 0.5, 1, 2, 3; the 0.75 quantile is 2 -> clamp to [-2, 2] and divide by 2.
        assert_eq!(y[0], vec![0.25, -1.0, 1.0, 0.5]);
        // Row 1: quantile 0.3 < 1, so s = 1: unchanged.
        assert_eq!(y[1], vec![0.1, 0.2, -0.3, 0.4]);
        assert_eq!(X0Processing::Clip(1.0).apply(&x).unwrap().to_vec2::<f32>().unwrap()[0], vec![0.5, -1.0, 1.0, 1.0]);
        assert!(X0Processing::DynamicThreshold { percentile: 0.0, max: 2.0 }.validate().is_err());
    }
}
