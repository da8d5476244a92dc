//! Denoising-diffusion training losses: regression targets for epsilon-, x0- and v-prediction,
//! the per-sample MSE, and min-SNR-gamma loss weights.
//!
//! Notation (variance-preserving forward process, Ho et al. 2020):
//! `x_t = alpha_t x0 + sigma_t eps` with `alpha_t = sqrt(alphabar_t)`,
//! `sigma_t = sqrt(1 - alphabar_t)` and `eps ~ N(0, I)`; the signal-to-noise ratio is
//! `snr_t = alpha_t^2 / sigma_t^2 = alphabar_t / (1 - alphabar_t)`.
//! The noise schedule itself (`alphabar_t`, `snr_t` per timestep) belongs to the diffusion
//! module; the functions here only take the per-sample values as `(B,)` tensors.
//!
//! A training step: `let t = target(p, &x0, &eps, &alphabar)?;`
//! `let w = weighting.weights(&snr, p)?;` `let loss = diffusion_loss(&model_out, &t, Some(&w))?;`

use std::fmt;
use std::str::FromStr;

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use super::same_shape;
use crate::{Error, Result};

/// What the denoising network predicts, and so what its output is regressed onto.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Prediction {
    /// The added noise `eps` (Ho et al. 2020, DDPM's "simple" loss). The usual default.
    #[default]
    Epsilon,
    /// The clean sample `x0` directly.
    Sample,
    /// The velocity `v = alpha_t eps - sigma_t x0` (Salimans & Ho 2022, progressive
    /// distillation): well-behaved at both ends of the schedule, including zero terminal SNR.
    VPrediction,
}

impl Prediction {
    /// The command-line names of the variants, in declaration order.
    pub const NAMES: [&'static str; 3] = ["epsilon", "sample", "v-prediction"];

    /// The command-line name: `epsilon`, `sample` or `v-prediction` (diffusers' spelling).
    pub fn name(&self) -> &'static str {
        match self {
            Prediction::Epsilon => "epsilon",
            Prediction::Sample => "sample",
            Prediction::VPrediction => "v-prediction",
        }
    }
}

impl fmt::Display for Prediction {
    /// Writes [`Prediction::name`].
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Prediction {
    type Err = Error;

    /// Parses (case-insensitive) `epsilon` (also `eps`), `sample` (also `x0`) or `v-prediction`
    /// (also `v`); anything else is `Error::Config` listing the choices.
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s.trim().to_ascii_lowercase().as_str() {
            "epsilon" | "eps" => Prediction::Epsilon,
            "sample" | "x0" => Prediction::Sample,
            "v-prediction" | "v_prediction" | "v" => Prediction::VPrediction,
            _ => {
                return Err(Error::config(
                    "prediction",
                    format!("unknown prediction type `{s}`; choose one of: {}", Prediction::NAMES.join(", ")),
                ))
            }
        })
    }
}

/// `Err(Error::Shape)` unless `t` is a floating-point `(B,)` vector with `B = batch`.
fn check_per_sample(context: &str, name: &str, t: &Tensor, batch: usize) -> Result<()> {
    if t.dims() != [batch] {
        return Err(Error::shape(
            context,
            format!("`{name}` must have shape [{batch}] (one per sample), got {:?}", t.dims()),
        ));
    }
    if !t.dtype().is_float() {
        return Err(Error::shape(context, format!("`{name}` must be floating point, got {:?}", t.dtype())));
    }
    Ok(())
}

/// Same shape, same floating-point dtype, at least one dimension and one element.
fn check_batch_pair(context: &str, a: &Tensor, b: &Tensor) -> Result<usize> {
    same_shape(context, a, b)?;
    if a.dtype() != b.dtype() || !a.dtype().is_float() {
        return Err(Error::shape(
            context,
            format!("needs two tensors of the same floating-point dtype, got {:?} and {:?}", a.dtype(), b.dtype()),
        ));
    }
    match a.dims().first() {
        Some(&b) if a.elem_count() > 0 => Ok(b),
        _ => Err(Error::shape(context, format!("needs a non-empty batch (B, ...), got {:?}", a.dims()))),
    }
}

/// `(B,)` -> `(B, 1, ..., 1)` with `rank` dimensions, in `dtype`, ready to broadcast.
fn per_sample_column(v: &Tensor, rank: usize, like: &Tensor) -> Result<Tensor> {
    let mut dims = vec![1; rank];
    dims[0] = v.dims()[0];
    Ok(v.to_dtype(like.dtype())?.reshape(dims)?)
}

/// The regression target of a [`Prediction`] type:
///
/// - `Epsilon`: `eps` (`noise`);
/// - `Sample`: `x0`;
/// - `VPrediction`: `v = sqrt(alphabar_t) eps - sqrt(1 - alphabar_t) x0` (Salimans & Ho 2022).
///
/// Inputs: `x0` and `noise` `(B, ...)` (typically `(B, C, H, W)`, `x0` in `[-1, 1]`), same shape
/// and dtype; `alphabar_t` `(B,)`, each sample's cumulative product of `1 - beta` in `[0, 1]`
/// (values outside give NaN for v-prediction; they are not checked, to avoid a device sync). It
/// is converted to `x0`'s dtype, so a schedule kept in `F64` can serve an `F32` model. Returns a
/// tensor shaped like `x0`. Shape or dtype mismatches are `Error::Shape`.
pub fn target(prediction: Prediction, x0: &Tensor, noise: &Tensor, alphabar_t: &Tensor) -> Result<Tensor> {
    const CTX: &str = "diffusion::target";
    let batch = check_batch_pair(CTX, x0, noise)?;
    check_per_sample(CTX, "alphabar_t", alphabar_t, batch)?;
    Ok(match prediction {
        Prediction::Epsilon => noise.clone(),
        Prediction::Sample => x0.clone(),
        Prediction::VPrediction => {
            let alphabar = per_sample_column(alphabar_t, x0.rank(), x0)?;
            let alpha = alphabar.sqrt()?;
            let sigma = alphabar.affine(-1.0, 1.0)?.sqrt()?;
            (alpha.broadcast_mul(noise)? - sigma.broadcast_mul(x0)?)?
        }
    })
}

/// The denoising loss: per-sample mean squared error, then a (weighted) mean over the batch,
/// `L = (1/B) sum_i w_i * mean_j (pred_ij - target_ij)^2`.
///
/// With `weights = None` all `w_i = 1` and this is the plain MSE of Ho et al. 2020's
/// `L_simple`. The weighted mean divides by `B`, not by `sum_i w_i` (as in the min-SNR reference
/// code): the weights are a per-timestep loss scale, and renormalising per batch would make a
/// sample's weight depend on the others drawn with it.
///
/// - `pred`: the network output `(B, ...)`; `target`: from [`target`], same shape and dtype;
/// - `weights`: `(B,)`, e.g. from [`LossWeighting::weights`]; converted to `pred`'s dtype.
///   Usually constants (no gradient flows through the schedule).
///
/// Returns a scalar in `pred`'s dtype (`f32` for `f16`/`bf16`, see [`super::full_precision`]).
/// Mismatched shapes or dtypes are `Error::Shape`.
pub fn diffusion_loss(pred: &Tensor, target: &Tensor, weights: Option<&Tensor>) -> Result<Tensor> {
    let (pred, target) = (&crate::losses::full_precision(pred)?, &crate::losses::full_precision(target)?);
    let weights = weights.map(crate::losses::full_precision).transpose()?;
    let weights = weights.as_ref();
    const CTX: &str = "diffusion_loss";
    let batch = check_batch_pair(CTX, pred, target)?;
    let per_sample = (pred - target)?.sqr()?.reshape((batch, ()))?.mean(1)?;
    let weighted = match weights {
        None => per_sample,
        Some(w) => {
            check_per_sample(CTX, "weights", w, batch)?;
            (per_sample * w.to_dtype(pred.dtype())?)?
        }
    };
    Ok(weighted.mean_all()?)
}

/// How the per-sample diffusion losses are weighted across timesteps.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub enum LossWeighting {
    /// Every timestep weighs the same in the loss of the chosen [`Prediction`] (weight 1).
    #[default]
    Uniform,
    /// Min-SNR-gamma (Hang et al. 2023): clamps the SNR at `gamma` so that the nearly noise-free
    /// timesteps, easy but dominant in x0 terms, do not crowd out the rest. Equivalent to the
    /// x0-loss weight `min(snr, gamma)` expressed for each prediction type:
    /// epsilon `min(snr, gamma) / snr`, x0 `min(snr, gamma)`, v `min(snr, gamma) / (snr + 1)`.
    /// The paper recommends `gamma = 5`.
    MinSnr {
        /// The SNR clamp, finite and `> 0` (paper: 5).
        gamma: f64,
    },
}

impl LossWeighting {
    /// Min-SNR with the paper's `gamma = 5`.
    pub fn min_snr() -> Self {
        LossWeighting::MinSnr { gamma: 5.0 }
    }

    /// The per-sample loss weights for the samples' SNRs `snr` `(B,)` (values `>= 0`, `+inf`
    /// allowed) under `prediction`; a `(B,)` tensor in `snr`'s dtype, to pass to
    /// [`diffusion_loss`].
    ///
    /// - `Uniform`: all ones;
    /// - `MinSnr { gamma }`: `Epsilon` `min(snr, gamma) / snr`, computed as `min(1, gamma / snr)`
    ///   so that `snr = 0` (zero terminal SNR) gives the limit `1` instead of NaN; `Sample`
    ///   `min(snr, gamma)`; `VPrediction` `min(snr, gamma) / (snr + 1)`.
    ///
    /// `snr` of another shape is `Error::Shape`; `gamma` not finite and positive is `Error::Config`.
    pub fn weights(&self, snr: &Tensor, prediction: Prediction) -> Result<Tensor> {
        const CTX: &str = "LossWeighting::weights";
        if snr.rank() != 1 || !snr.dtype().is_float() {
            return Err(Error::shape(
                CTX,
                format!("`snr` must be a floating-point (B,) vector, got {:?} {:?}", snr.dims(), snr.dtype()),
            ));
        }
        match *self {
            LossWeighting::Uniform => Ok(snr.ones_like()?),
            LossWeighting::MinSnr { gamma } => {
                if !(gamma.is_finite() && gamma > 0.0) {
                    return Err(Error::config(
                        "LossWeighting::MinSnr.gamma",
                        format!("must be finite and > 0, got {gamma}"),
                    ));
                }
                Ok(match prediction {
                    Prediction::Epsilon => snr.recip()?.affine(gamma, 0.0)?.minimum(1.0)?,
                    Prediction::Sample => snr.minimum(gamma)?,
                    Prediction::VPrediction => (snr.minimum(gamma)? / (snr + 1.0)?)?,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::losses::adversarial::tests::{assert_close, check_gradient, normals, scalar, tensor};
    use crate::rng::Rng;
    use candle_core::{DType, Device};

    fn to_f64(t: &Tensor) -> Result<Vec<f64>> {
        Ok(t.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?)
    }

    /// `alphabar` in (0.01, 0.99) and its SNR, per sample.
    fn schedule(rng: &mut Rng, batch: usize) -> (Vec<f64>, Vec<f64>) {
        let ab: Vec<f64> = (0..batch).map(|_| 0.01 + 0.98 * rng.uniform_f64()).collect();
        let snr = ab.iter().map(|a| a / (1.0 - a)).collect();
        (ab, snr)
    }

    fn min_snr_ref(snr: f64, gamma: f64, p: Prediction) -> f64 {
        let clamped = snr.min(gamma);
        match p {
            Prediction::Epsilon => clamped / snr,
            Prediction::Sample => clamped,
            Prediction::VPrediction => clamped / (snr + 1.0),
        }
    }

    const PREDICTIONS: [Prediction; 3] = [Prediction::Epsilon, Prediction::Sample, Prediction::VPrediction];

    #[test]
    fn targets_match_f64_reference() -> Result<()> {
        let mut rng = Rng::new(20);
        for (dtype, rel) in [(DType::F32, 1e-5), (DType::F64, 1e-10)] {
            let dims = [4, 2, 3, 3];
            let n = 4 * 18;
            let (x0, x0v) = tensor(&normals(&mut rng, n, 0.5), &dims, dtype)?;
            let (eps, epsv) = tensor(&normals(&mut rng, n, 1.0), &dims, dtype)?;
            let (ab, _) = schedule(&mut rng, 4);
            // The schedule stays in F64 while the model runs in `dtype`.
            let (abt, _) = tensor(&ab, &[4], DType::F64)?;
            let abv = to_f64(&abt.to_dtype(dtype)?)?;
            for p in PREDICTIONS {
                let t = target(p, &x0, &eps, &abt)?;
                assert_eq!((t.dims(), t.dtype()), (&dims[..], dtype));
                for (i, got) in to_f64(&t)?.into_iter().enumerate() {
                    let s = i / 18;
                    let want = match p {
                        Prediction::Epsilon => epsv[i],
                        Prediction::Sample => x0v[i],
                        Prediction::VPrediction => abv[s].sqrt() * epsv[i] - (1.0 - abv[s]).sqrt() * x0v[i],
                    };
                    assert_close(got, want, rel, 1.0, &format!("{p:?} target[{i}]"));
                }
            }
        }
        Ok(())
    }

    #[test]
    fn v_target_recovers_x0_and_eps() -> Result<()> {
        // x0 = alpha x_t - sigma v and eps = sigma x_t + alpha v (Salimans & Ho 2022, appendix D).
        let mut rng = Rng::new(21);
        let (x0, x0v) = tensor(&normals(&mut rng, 6, 0.5), &[3, 2], DType::F64)?;
        let (eps, epsv) = tensor(&normals(&mut rng, 6, 1.0), &[3, 2], DType::F64)?;
        let (ab, _) = schedule(&mut rng, 3);
        let v = to_f64(&target(Prediction::VPrediction, &x0, &eps, &Tensor::new(ab.as_slice(), &Device::Cpu)?)?)?;
        for i in 0..6 {
            let (a, s) = (ab[i / 2].sqrt(), (1.0 - ab[i / 2]).sqrt());
            let xt = a * x0v[i] + s * epsv[i];
            assert_close(a * xt - s * v[i], x0v[i], 1e-12, 1.0, "x0");
            assert_close(s * xt + a * v[i], epsv[i], 1e-12, 1.0, "eps");
        }
        Ok(())
    }

    #[test]
    fn loss_and_min_snr_weights_match_f64_reference() -> Result<()> {
        let mut rng = Rng::new(22);
        for (dtype, rel) in [(DType::F32, 1e-5), (DType::F64, 1e-10)] {
            let (b, per) = (5, 12);
            let (pred, pv) = tensor(&normals(&mut rng, b * per, 1.0), &[b, 3, 2, 2], dtype)?;
            let (tgt, tv) = tensor(&normals(&mut rng, b * per, 1.0), &[b, 3, 2, 2], dtype)?;
            let (_, snr) = schedule(&mut rng, b);
            let (snr_t, snrv) = tensor(&snr, &[b], dtype)?;
            let mse: Vec<f64> = (0..b)
                .map(|i| (0..per).map(|j| (pv[i * per + j] - tv[i * per + j]).powi(2)).sum::<f64>() / per as f64)
                .collect();
            let plain = diffusion_loss(&pred, &tgt, None)?;
            assert_eq!((plain.rank(), plain.dtype()), (0, dtype));
            assert_close(scalar(&plain)?, mse.iter().sum::<f64>() / b as f64, rel, 0.0, "unweighted");
            let uniform = LossWeighting::Uniform.weights(&snr_t, Prediction::Epsilon)?;
            assert_eq!(scalar(&diffusion_loss(&pred, &tgt, Some(&uniform))?)?, scalar(&plain)?);
            for gamma in [1.0, 5.0] {
                for p in PREDICTIONS {
                    let w = LossWeighting::MinSnr { gamma }.weights(&snr_t, p)?;
                    assert_eq!((w.dims(), w.dtype()), (&[b][..], dtype));
                    let wv = to_f64(&w)?;
                    for (i, (&got, &s)) in wv.iter().zip(&snrv).enumerate() {
                        assert_close(got, min_snr_ref(s, gamma, p), rel, 0.0, &format!("{p:?} w[{i}]"));
                    }
                    let want = (0..b).map(|i| min_snr_ref(snrv[i], gamma, p) * mse[i]).sum::<f64>() / b as f64;
                    let got = scalar(&diffusion_loss(&pred, &tgt, Some(&w))?)?;
                    assert_close(got, want, rel, 0.0, &format!("{p:?} weighted loss"));
                }
            }
        }
        Ok(())
    }

    #[test]
    fn min_snr_weights_at_the_ends_of_the_schedule_are_finite() -> Result<()> {
        let snr = Tensor::new(&[0.0f32, 1e-8, 5.0, 1e8, f32::INFINITY], &Device::Cpu)?;
        let w = |p| -> Result<Vec<f32>> { Ok(LossWeighting::min_snr().weights(&snr, p)?.to_vec1::<f32>()?) };
        assert_eq!(w(Prediction::Epsilon)?, vec![1.0, 1.0, 1.0, 5e-8, 0.0]);
        assert_eq!(w(Prediction::Sample)?, vec![0.0, 1e-8, 5.0, 5.0, 5.0]);
        let v = w(Prediction::VPrediction)?;
        assert!(v.iter().all(|x| x.is_finite()), "{v:?}");
        assert_eq!(v[0], 0.0);
        assert_eq!(v[4], 0.0);
        Ok(())
    }

    #[test]
    fn gradients_match_finite_differences_with_min_snr_weights() -> Result<()> {
        let mut rng = Rng::new(23);
        let (pred, _) = tensor(&normals(&mut rng, 3 * 8, 1.0), &[3, 2, 2, 2], DType::F64)?;
        let (x0, _) = tensor(&normals(&mut rng, 3 * 8, 0.5), &[3, 2, 2, 2], DType::F64)?;
        let (eps, _) = tensor(&normals(&mut rng, 3 * 8, 1.0), &[3, 2, 2, 2], DType::F64)?;
        let (ab, snr) = schedule(&mut rng, 3);
        let (ab, _) = tensor(&ab, &[3], DType::F64)?;
        let (snr, _) = tensor(&snr, &[3], DType::F64)?;
        for p in PREDICTIONS {
            let tgt = target(p, &x0, &eps, &ab)?;
            let w = LossWeighting::min_snr().weights(&snr, p)?;
            check_gradient(&pred, |x| diffusion_loss(x, &tgt, Some(&w)))?;
            check_gradient(&pred, |x| diffusion_loss(x, &tgt, None))?;
        }
        // Through the v target too, e.g. for distillation where x0 comes from a network.
        check_gradient(&x0, |x| diffusion_loss(&pred, &target(Prediction::VPrediction, x, &eps, &ab)?, None))?;
        Ok(())
    }

    #[test]
    fn bad_shapes_and_gamma_are_refused() -> Result<()> {
        let dev = Device::Cpu;
        let x = Tensor::zeros((4, 3, 2, 2), DType::F32, &dev)?;
        let ab = Tensor::full(0.5f32, 4, &dev)?;
        let is_shape = |r: Result<Tensor>| matches!(r, Err(Error::Shape { .. }));
        for p in PREDICTIONS {
            assert!(is_shape(target(p, &x, &x.reshape((4, 12))?, &ab)));
            assert!(is_shape(target(p, &x, &x.to_dtype(DType::F64)?, &ab)));
            assert!(is_shape(target(p, &x, &x, &Tensor::full(0.5f32, 3, &dev)?)));
            assert!(is_shape(target(p, &x, &x, &ab.reshape((4, 1))?)));
            assert!(is_shape(target(p, &x, &x, &ab.to_dtype(DType::U32)?)));
        }
        let scalar_input = Tensor::new(1f32, &dev)?;
        assert!(is_shape(target(Prediction::Epsilon, &scalar_input, &scalar_input, &ab)));
        assert!(is_shape(diffusion_loss(&x, &x.reshape((4, 12))?, None)));
        assert!(is_shape(diffusion_loss(&x, &x, Some(&Tensor::ones(5, DType::F32, &dev)?))));
        assert!(is_shape(diffusion_loss(&scalar_input, &scalar_input, None)));
        assert!(is_shape(diffusion_loss(
            &Tensor::zeros((0, 3), DType::F32, &dev)?,
            &Tensor::zeros((0, 3), DType::F32, &dev)?,
            None
        )));
        assert!(is_shape(LossWeighting::min_snr().weights(&x, Prediction::Epsilon)));
        assert!(is_shape(LossWeighting::Uniform.weights(&scalar_input, Prediction::Epsilon)));
        for gamma in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let r = LossWeighting::MinSnr { gamma }.weights(&ab, Prediction::Epsilon);
            assert!(matches!(r, Err(Error::Config { .. })), "gamma {gamma}");
        }
        let msg = diffusion_loss(&x, &x.reshape((4, 12))?, None).unwrap_err().to_string();
        assert!(msg.contains("diffusion_loss") && msg.contains("[4, 3, 2, 2]") && msg.contains("[4, 12]"), "{msg}");
        Ok(())
    }

    #[test]
    fn names_parse_and_serde_round_trip() {
        for p in PREDICTIONS {
            assert_eq!(p.name().parse::<Prediction>().unwrap(), p);
            assert_eq!(p.to_string(), p.name());
            assert_eq!(serde_json::from_str::<Prediction>(&serde_json::to_string(&p).unwrap()).unwrap(), p);
        }
        assert_eq!("x0".parse::<Prediction>().unwrap(), Prediction::Sample);
        assert_eq!("V".parse::<Prediction>().unwrap(), Prediction::VPrediction);
        let msg = "score".parse::<Prediction>().unwrap_err().to_string();
        assert!(Prediction::NAMES.iter().all(|n| msg.contains(n)), "{msg}");
        for w in [LossWeighting::Uniform, LossWeighting::min_snr()] {
            assert_eq!(serde_json::from_str::<LossWeighting>(&serde_json::to_string(&w).unwrap()).unwrap(), w);
        }
        assert_eq!(Prediction::default(), Prediction::Epsilon);
        assert_eq!(LossWeighting::default(), LossWeighting::Uniform);
    }
}
