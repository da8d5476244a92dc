//! [`Denoiser`]: what a network must do to be sampled by the crate's samplers, and the conversions
//! between its output and the `(x0, eps)` pair the samplers work with.

use candle_core::Tensor;

use crate::losses::diffusion::Prediction;
use crate::Result;

/// A denoising network `f(x_t, t, cond)`: the only thing the samplers ([`DdpmSampler`],
/// [`DdimSampler`], [`DpmSolverSampler`]) know about a model.
///
/// Implement it for your own network (see `docs/diffusion.md` and the `custom_denoiser` example);
/// [`UNet`] implements it.
///
/// [`DdpmSampler`]: super::DdpmSampler
/// [`DdimSampler`]: super::DdimSampler
/// [`DpmSolverSampler`]: super::DpmSolverSampler
/// [`UNet`]: super::UNet
pub trait Denoiser {
    /// What [`Denoiser::predict`] outputs: the noise (`Epsilon`), the clean sample (`Sample`) or the
    /// velocity (`VPrediction`, Salimans & Ho 2022).
    fn prediction(&self) -> Prediction;

    /// The prediction for the noisy batch `x_t` `(B, C, H, W)` (any float dtype) at the timesteps
    /// `t`, a `(B,)` `U32` tensor of indices `0..T`, with an optional condition `cond` (e.g. class
    /// labels `(B,)` `U32`). Returns a tensor shaped like `x_t`. Sampling calls it without gradients.
    fn predict(&self, x_t: &Tensor, t: &Tensor, cond: Option<&Tensor>) -> Result<Tensor>;
}

impl<D: Denoiser + ?Sized> Denoiser for &D {
    fn prediction(&self) -> Prediction {
        (**self).prediction()
    }

    fn predict(&self, x_t: &Tensor, t: &Tensor, cond: Option<&Tensor>) -> Result<Tensor> {
        (**self).predict(x_t, t, cond)
    }
}

/// The `(x0, eps)` pair a model output `out` of type `prediction` implies at a level with
/// cumulative product `alpha_bar` (one value for the whole batch), from
/// `x_t = sqrt(alphabar) x0 + sqrt(1 - alphabar) eps`:
/// - `Epsilon`: `x0 = (x_t - sqrt(1 - alphabar) out) / sqrt(alphabar)`, `eps = out`;
/// - `Sample`: `x0 = out`, `eps = (x_t - sqrt(alphabar) out) / sqrt(1 - alphabar)`;
/// - `VPrediction`: `x0 = sqrt(alphabar) x_t - sqrt(1 - alphabar) out`,
///   `eps = sqrt(1 - alphabar) x_t + sqrt(alphabar) out`.
///
/// `alpha_bar` must be in `(0, 1)` for `Epsilon` and `Sample` (in `[0, 1]` for v).
pub fn split_prediction(
    prediction: Prediction,
    out: &Tensor,
    x_t: &Tensor,
    alpha_bar: f64,
) -> Result<(Tensor, Tensor)> {
    let (a, s) = (alpha_bar.sqrt(), (1.0 - alpha_bar).sqrt());
    Ok(match prediction {
        Prediction::Epsilon => ((x_t - out.affine(s, 0.0)?)?.affine(1.0 / a, 0.0)?, out.clone()),
        Prediction::Sample => (out.clone(), (x_t - out.affine(a, 0.0)?)?.affine(1.0 / s, 0.0)?),
        Prediction::VPrediction => {
            ((x_t.affine(a, 0.0)? - out.affine(s, 0.0)?)?, (x_t.affine(s, 0.0)? + out.affine(a, 0.0)?)?)
        }
    })
}

/// `eps` consistent with `x_t` and a (possibly clipped) `x0`: `(x_t - sqrt(alphabar) x0) / sqrt(1 - alphabar)`.
pub fn eps_from_x0(x_t: &Tensor, x0: &Tensor, alpha_bar: f64) -> Result<Tensor> {
    Ok((x_t - x0.affine(alpha_bar.sqrt(), 0.0)?)?.affine(1.0 / (1.0 - alpha_bar).sqrt(), 0.0)?)
}
