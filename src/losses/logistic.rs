//! The discretised logistic likelihood of 8-bit data (Kingma et al. 2016; Salimans et al. 2017), the one
//! implementation behind [`super::elbo::discretized_logistic_log_likelihood`] (a VAE decoder) and
//! [`super::autoregressive::discretized_logistic_mixture_nll`] (PixelCNN++).
//!
//! Data `x` lies on the grid `2k/255 - 1`, `k = 0..=255`, so a bin is `[x - 1/255, x + 1/255]`. With
//! `s = exp(log_scale)`, `a = (x - mean + 1/255)/s` and `b = (x - mean - 1/255)/s`, the bin's mass is
//! `P(x) = σ(a) - σ(b)`; at the edges the outer bins reach to infinity: `P(-1) = σ(a)`, `P(+1) = 1 - σ(b)`,
//! so the 256 masses sum to one exactly.
//!
//! Salimans et al. compute `σ(a) - σ(b)` directly, which cancels to zero in f32 once both CDFs are near
//! the same value, and fall back to `pdf(x) · 2/255` when the difference drops below 1e-5. Here the
//! logarithm is taken in closed form instead,
//!
//! `log(σ(a) - σ(b)) = log σ(a) + log σ(-b) + log(1 - exp(-(a - b)))`,  with `a - b = 2/(255 s)`,
//!
//! where `log σ(y) = -softplus(-y)` and `log(1 - e^{-2u}) = ln 2 + ln tanh(u) - ln(1 + tanh(u))`. Every
//! term is finite and keeps its relative accuracy however small the probability, so no fallback on the
//! probability is needed (the one switch, inside `ln(tanh(u)/u)`, joins two forms that agree to 1e-14).

use candle_core::Tensor;

use super::adversarial::softplus;
use crate::{Error, Result};

/// Log-scales are clamped from below at this value, as in PixelCNN++: a scale of `e^-7 ≈ 9e-4` is
/// already far narrower than a bin (`2/255 ≈ 7.8e-3`), and the clamp keeps `1/s` finite in every dtype.
pub(crate) const MIN_LOG_SCALE: f64 = -7.0;

/// Values below `-EDGE` are the bottom bin (`k = 0`), above `EDGE` the top bin (`k = 255`).
const EDGE: f64 = 0.999;

/// Below this `u = 1/(255 s)` the correction `ln(tanh(u)/u)` is taken from its Taylor series.
const SERIES_SWITCH: f64 = 1e-2;

/// Elementwise `log P(x)` of the discretised logistic with location `mean` and log-scale `log_scale`
/// (clamped at [`MIN_LOG_SCALE`]).
///
/// `mean` and `log_scale` have the same shape; `x` broadcasts to it (it carries no gradient: the
/// bin membership masks are built from it). The result has `mean`'s shape.
pub(crate) fn log_prob(x: &Tensor, mean: &Tensor, log_scale: &Tensor) -> Result<Tensor> {
    let x = x.broadcast_as(mean.shape())?;
    let log_scale = log_scale.maximum(MIN_LOG_SCALE)?;
    let inv_scale = log_scale.neg()?.exp()?;
    let centred = (&x - mean)?;
    let upper = ((&centred + 1.0 / 255.0)? * &inv_scale)?;
    let lower = ((&centred - 1.0 / 255.0)? * &inv_scale)?;
    // log σ(upper) and log(1 - σ(lower)): the two tails, and the first two terms of the interior.
    let log_cdf_upper = softplus(&upper.neg()?)?.neg()?;
    let log_survival_lower = softplus(&lower)?.neg()?;
    let log_width = log_one_minus_exp_neg_2u(&log_scale)?;

    let dtype = mean.dtype();
    let not_bottom = x.gt(-EDGE)?.to_dtype(dtype)?;
    let not_top = x.lt(EDGE)?.to_dtype(dtype)?;
    let interior = (&not_bottom * &not_top)?;
    // Masks multiply finite terms only, so the unused terms pass zero gradient, never NaN.
    let lp = ((log_cdf_upper * not_top)? + (log_survival_lower * not_bottom)?)?;
    Ok((lp + (log_width * interior)?)?)
}

/// `ln(1 - e^{-2u})` for `u = e^{-log_scale}/255`, accurate for tiny and large `u`.
///
/// Uses `1 - e^{-2u} = 2 tanh(u) / (1 + tanh(u))` (no cancellation) and `ln tanh(u) = ln u + ln(tanh(u)/u)`
/// with `ln u = -log_scale - ln 255` exact even when `u` underflows; `ln(tanh(u)/u) = -u²/3 + 7u⁴/90 + O(u⁶)`
/// below [`SERIES_SWITCH`].
fn log_one_minus_exp_neg_2u(log_scale: &Tensor) -> Result<Tensor> {
    let log_u = log_scale.affine(-1.0, -(255f64.ln()))?;
    let u = log_u.exp()?;
    let u2 = u.sqr()?;
    let series = (&u2 * (u2.affine(7.0 / 90.0, -1.0 / 3.0))?)?;
    // The direct branch sees u clamped at the switch, so it stays finite (and its unused gradient zero).
    let u_safe = u.maximum(SERIES_SWITCH)?;
    let direct = (u_safe.tanh()? / &u_safe)?.log()?;
    let log_tanh_over_u = u.lt(SERIES_SWITCH)?.where_cond(&series, &direct)?;
    let log1p_tanh = (u.tanh()? + 1.0)?.log()?;
    Ok(((log_u + log_tanh_over_u)? - log1p_tanh)?.affine(1.0, std::f64::consts::LN_2)?)
}

/// `Err(Error::Shape)` unless every value of `x` lies in `[-1, 1]` (within 1e-3, the edge tolerance).
///
/// Reads two scalars back from the device; NaN fails the check.
pub(crate) fn check_unit_range(context: &str, x: &Tensor) -> Result<()> {
    if x.elem_count() == 0 {
        return Ok(());
    }
    // F32, not F64: Metal has no f64, and the tolerance is far above f32 rounding.
    let x32 = x.to_dtype(candle_core::DType::F32)?;
    let lo = x32.min_all()?.to_scalar::<f32>()?;
    let hi = x32.max_all()?.to_scalar::<f32>()?;
    // min/max may skip NaN; a NaN anywhere makes the sum NaN.
    let sum = x32.sum_all()?.to_scalar::<f32>()?;
    let bound = (1.0 + (1.0 - EDGE)) as f32;
    if !(lo >= -bound && hi <= bound && sum.is_finite()) {
        return Err(Error::shape(
            context,
            format!("x must lie in [-1, 1] (the 8-bit grid 2k/255 - 1), got [{lo}, {hi}]"),
        ));
    }
    Ok(())
}

/// Test helpers shared by the loss tests of `elbo` and `autoregressive`.
#[cfg(test)]
pub(crate) mod testing {
    use candle_core::{DType, Device, Tensor, Var};

    use crate::rng::Rng;
    use crate::Result;

    /// `n` values uniform in `[lo, hi)`, rounded to `dtype` and back so references see the exact inputs.
    pub(crate) fn uniform_values(rng: &mut Rng, n: usize, lo: f64, hi: f64, dtype: DType) -> Vec<f64> {
        (0..n).map(|_| round_to(lo + (hi - lo) * rng.uniform_f64(), dtype)).collect()
    }

    /// `n` standard normal values scaled by `sd`, rounded to `dtype`.
    pub(crate) fn normal_values(rng: &mut Rng, n: usize, sd: f64, dtype: DType) -> Vec<f64> {
        (0..n).map(|_| round_to(sd * rng.normal_f64(), dtype)).collect()
    }

    /// The value `v` as `dtype` would store it.
    pub(crate) fn round_to(v: f64, dtype: DType) -> f64 {
        match dtype {
            DType::F32 => v as f32 as f64,
            _ => v,
        }
    }

    /// A CPU tensor of `dtype` holding `values`.
    pub(crate) fn tensor(values: &[f64], shape: &[usize], dtype: DType) -> Result<Tensor> {
        Ok(Tensor::from_vec(values.to_vec(), shape, &Device::Cpu)?.to_dtype(dtype)?)
    }

    /// All values of `t` as f64.
    pub(crate) fn values(t: &Tensor) -> Result<Vec<f64>> {
        Ok(t.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?)
    }

    /// The relative tolerance of the reference comparisons: 1e-5 in f32, 1e-9 in f64.
    pub(crate) fn tolerance(dtype: DType) -> f64 {
        if dtype == DType::F64 {
            1e-9
        } else {
            1e-5
        }
    }

    /// Asserts `|got - want| <= rel * max(|want|, 1)` element by element.
    pub(crate) fn assert_close(what: &str, got: &[f64], want: &[f64], rel: f64) {
        assert_eq!(got.len(), want.len(), "{what}: lengths differ");
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!((g - w).abs() <= rel * w.abs().max(1.0), "{what}[{i}]: got {g}, want {w} (rel {rel})");
        }
    }

    /// Compares the gradient of the scalar `f(x)` (summed if not scalar) at `x` (F64) with central finite
    /// differences, to a relative 1e-5.
    pub(crate) fn grad_check(what: &str, x: &Tensor, f: impl Fn(&Tensor) -> Result<Tensor>) -> Result<()> {
        let var = Var::from_tensor(&x.to_dtype(DType::F64)?)?;
        let loss = f(var.as_tensor())?.sum_all()?;
        let grads = loss.backward()?;
        let analytic = match grads.get(var.as_tensor()) {
            Some(g) => values(g)?,
            None => panic!("{what}: no gradient reached the input"),
        };
        let base = values(x)?;
        let h = 1e-6;
        for i in 0..base.len() {
            let eval = |delta: f64| -> Result<f64> {
                let mut v = base.clone();
                v[i] += delta;
                let t = Tensor::from_vec(v, x.shape(), &Device::Cpu)?;
                Ok(f(&t)?.sum_all()?.to_scalar::<f64>()?)
            };
            let numeric = (eval(h)? - eval(-h)?) / (2.0 * h);
            let a = analytic[i];
            assert!(
                (a - numeric).abs() <= 1e-5 * numeric.abs().max(1e-3),
                "{what}: d/dx[{i}] analytic {a} vs finite difference {numeric}"
            );
        }
        Ok(())
    }

    /// Reference `log P(x)` of one discretised logistic bin, from CDF differences in f64 (upper tails when
    /// `x` is above the mean, so that neither difference cancels).
    pub(crate) fn reference_log_prob(x: f64, mean: f64, log_scale: f64) -> f64 {
        let s = log_scale.max(-7.0).exp();
        let cdf = |y: f64| 1.0 / (1.0 + (-(y - mean) / s).exp());
        let survival = |y: f64| 1.0 / (1.0 + ((y - mean) / s).exp());
        let (lo, hi) = (x - 1.0 / 255.0, x + 1.0 / 255.0);
        if x < -0.999 {
            cdf(hi).ln()
        } else if x > 0.999 {
            survival(lo).ln()
        } else if x > mean {
            (survival(lo) - survival(hi)).ln()
        } else {
            (cdf(hi) - cdf(lo)).ln()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;
    use crate::rng::Rng;
    use candle_core::DType;

    fn grid() -> Vec<f64> {
        (0..256).map(|k| 2.0 * k as f64 / 255.0 - 1.0).collect()
    }

    #[test]
    fn log_prob_matches_cdf_differences() -> Result<()> {
        for dtype in [DType::F32, DType::F64] {
            let mut rng = Rng::new(10);
            let n = 600;
            let x: Vec<f64> = (0..n).map(|_| round_to(grid()[rng.below(256).unwrap()], dtype)).collect();
            let mean = uniform_values(&mut rng, n, -1.2, 1.2, dtype);
            let ls = uniform_values(&mut rng, n, -6.0, 1.0, dtype);
            let got = values(&log_prob(
                &tensor(&x, &[n], dtype)?,
                &tensor(&mean, &[n], dtype)?,
                &tensor(&ls, &[n], dtype)?,
            )?)?;
            let want: Vec<f64> = (0..n).map(|i| reference_log_prob(x[i], mean[i], ls[i])).collect();
            assert_close(&format!("log_prob {dtype:?}"), &got, &want, tolerance(dtype));
        }
        Ok(())
    }

    #[test]
    fn tiny_probabilities_keep_relative_accuracy() -> Result<()> {
        // Far from the mean with a narrow scale, σ(a) - σ(b) is below e^-20: the f32 subtraction of two CDFs
        // near 1 gives 0 (and the reference implementation falls back to an approximation); the log-space
        // form stays exact.
        let (x, mean, ls) = (vec![-0.5, 0.6, 0.0], vec![0.9, -0.2, 0.5], vec![-4.0, -3.5, -5.0]);
        let got = values(&log_prob(
            &tensor(&x, &[3], DType::F32)?,
            &tensor(&mean, &[3], DType::F32)?,
            &tensor(&ls, &[3], DType::F32)?,
        )?)?;
        let want: Vec<f64> = (0..3).map(|i| reference_log_prob(x[i], mean[i], ls[i])).collect();
        assert!(want.iter().all(|w| *w < -20.0), "{want:?}");
        assert_close("tiny", &got, &want, 1e-5);
        Ok(())
    }

    #[test]
    fn sums_to_one_over_the_256_bins() -> Result<()> {
        let x = tensor(&grid(), &[256], DType::F64)?;
        for (mean, ls) in [(0.0, -3.0), (0.37, -1.0), (-0.95, -5.5), (1.4, 0.5), (0.2, 4.0), (0.0, -9.0), (-3.0, -2.0)]
        {
            let m = tensor(&[mean; 256], &[256], DType::F64)?;
            let s = tensor(&[ls; 256], &[256], DType::F64)?;
            let total: f64 = values(&log_prob(&x, &m, &s)?)?.iter().map(|l| l.exp()).sum();
            assert!((total - 1.0).abs() < 1e-6, "mean {mean} log_scale {ls}: sum {total}");
        }
        Ok(())
    }

    #[test]
    fn extreme_parameters_are_finite() -> Result<()> {
        let x = tensor(&[-1.0, 1.0, 0.0, 0.5, -1.0, 1.0], &[6], DType::F32)?;
        let m = tensor(&[100.0, -100.0, 100.0, -100.0, 0.0, 0.0], &[6], DType::F32)?;
        let s = tensor(&[-100.0, -100.0, 100.0, 50.0, 80.0, -80.0], &[6], DType::F32)?;
        let v = values(&log_prob(&x, &m, &s)?)?;
        assert!(v.iter().all(|l| l.is_finite() && *l <= 0.0), "{v:?}");
        Ok(())
    }

    #[test]
    fn gradients_match_finite_differences() -> Result<()> {
        let mut rng = Rng::new(11);
        let n = 24;
        let x: Vec<f64> = (0..n).map(|_| grid()[rng.below(256).unwrap()]).collect();
        let x = tensor(&x, &[n], DType::F64)?;
        let mean = tensor(&uniform_values(&mut rng, n, -1.1, 1.1, DType::F64), &[n], DType::F64)?;
        let ls = tensor(&uniform_values(&mut rng, n, -4.5, 2.0, DType::F64), &[n], DType::F64)?;
        grad_check("d/dmean", &mean, |m| log_prob(&x, m, &ls))?;
        grad_check("d/dlog_scale", &ls, |s| log_prob(&x, &mean, s))?;
        Ok(())
    }

    #[test]
    fn half_precision_runs_and_is_close() -> Result<()> {
        let x = [-1.0, -0.5, 0.0, 0.25, 1.0];
        let mean = [-0.9, -0.45, 0.1, 0.3, 0.8];
        let ls = [-3.0, -2.0, -4.0, 0.5, -2.5];
        let want: Vec<f64> = (0..5).map(|i| reference_log_prob(x[i], mean[i], ls[i])).collect();
        for dtype in [DType::F16, DType::BF16] {
            let t = |v: &[f64]| tensor(v, &[5], dtype);
            let got = log_prob(&t(&x)?, &t(&mean)?, &t(&ls)?)?;
            assert_eq!(got.dtype(), dtype);
            // Inputs round to 8-11 bits, so only a loose match is meaningful.
            assert_close(&format!("{dtype:?}"), &values(&got)?, &want, 0.1);
        }
        Ok(())
    }

    #[test]
    fn range_check() -> Result<()> {
        assert!(check_unit_range("t", &tensor(&[-1.0, 1.0, 0.3], &[3], DType::F32)?).is_ok());
        assert!(matches!(check_unit_range("t", &tensor(&[0.0, 1.5], &[2], DType::F32)?), Err(Error::Shape { .. })));
        assert!(check_unit_range("t", &tensor(&[f64::NAN], &[1], DType::F64)?).is_err());
        Ok(())
    }
}
