//! Value transforms between the ranges and encodings generative models use.
//!
//! Images come out of [`ImageDataset::images`](super::ImageDataset::images) as floats in `[0, 1]`.
//! From there each model family wants its own encoding:
//! - GANs and diffusion models work in `[-1, 1]`: [`to_signed`] and back with [`to_unit`]
//!   (Radford et al. 2016, Ho et al. 2020);
//! - PixelCNN predicts 256-way categorical pixels: [`quantize_8bit`] gives the class targets and
//!   [`from_8bit`] turns sampled classes back into images (van den Oord et al. 2016);
//! - continuous density models (flows, VAEs with continuous likelihoods) are evaluated on
//!   uniformly dequantised data: [`dequantize_uniform`] (Uria et al. 2013, Theis et al. 2016);
//! - Bernoulli VAEs train on binarised MNIST: [`binarize_stochastic`] resamples pixels as
//!   Bernoulli draws each epoch (Salakhutdinov & Murray 2008), [`binarize_threshold`] is the
//!   fixed alternative.
//!
//! Every function is elementwise and accepts any shape, typically `(B, C, H, W)`. Floating-point
//! inputs may be `F16`, `BF16`, `F32` or `F64` on any device, and outputs keep the input's dtype
//! and device; arithmetic on half-precision inputs is done in `F32`.

use candle_core::{DType, Tensor};

use crate::rng::Rng;
use crate::{Error, Result};

/// The number of levels of 8-bit data, minus one: class `k` is the value `k / 255`.
const MAX_LEVEL: f64 = 255.0;

/// Refuses dtypes other than the four float types every candle backend computes in.
pub(crate) fn check_float(context: &str, x: &Tensor) -> Result<()> {
    match x.dtype() {
        DType::F16 | DType::BF16 | DType::F32 | DType::F64 => Ok(()),
        dt => Err(Error::shape(context, format!("needs an F16, BF16, F32 or F64 tensor, got {dt:?}"))),
    }
}

/// The dtype to do arithmetic in for inputs of `dtype`: `F64` stays `F64`, everything else is
/// computed in `F32` so that half-precision inputs do not lose the little precision they have.
pub(crate) fn compute_dtype(dtype: DType) -> DType {
    if dtype == DType::F64 {
        DType::F64
    } else {
        DType::F32
    }
}

/// Maps `x` in `[0, 1]` to `[-1, 1]`: `2x - 1`.
///
/// The range GANs with a `tanh` output (Radford et al. 2016, DCGAN) and diffusion models
/// (Ho et al. 2020) work in. Any shape; float dtype, kept.
pub fn to_signed(x: &Tensor) -> Result<Tensor> {
    check_float("to_signed", x)?;
    Ok(x.affine(2.0, -1.0)?)
}

/// Maps `x` in `[-1, 1]` to `[0, 1]`: `(x + 1) / 2`, the inverse of [`to_signed`].
///
/// Values are not clamped, so a sample slightly outside `[-1, 1]` lands slightly outside `[0, 1]`;
/// clamp before writing images. Any shape; float dtype, kept.
pub fn to_unit(x: &Tensor) -> Result<Tensor> {
    check_float("to_unit", x)?;
    Ok(x.affine(0.5, 0.5)?)
}

/// The 8-bit class of each value of `x` in `[0, 1]`: `round(255 x)` clamped to `0..=255`, as a
/// `U32` tensor of the same shape (PixelCNN's 256-way softmax targets, van den Oord et al. 2016).
///
/// Values outside `[0, 1]` go to class 0 or 255. Exact inverse of [`from_8bit`] on its outputs.
pub fn quantize_8bit(x: &Tensor) -> Result<Tensor> {
    check_float("quantize_8bit", x)?;
    let x = x.to_dtype(compute_dtype(x.dtype()))?;
    let classes = x.affine(MAX_LEVEL, 0.0)?.round()?.clamp(0.0, MAX_LEVEL)?;
    Ok(classes.to_dtype(DType::U32)?)
}

/// Images in `[0, 1]` from 8-bit classes: `k / 255` in `dtype` (a float dtype).
///
/// `classes` is a `U8`, `U32` or `I64` tensor of values in `0..=255` (any shape), e.g. pixels
/// sampled from a PixelCNN; a value outside that range is an [`Error::Shape`].
pub fn from_8bit(classes: &Tensor, dtype: DType) -> Result<Tensor> {
    const CONTEXT: &str = "from_8bit";
    let range = match classes.dtype() {
        DType::U8 => None,
        DType::U32 | DType::I64 if classes.elem_count() == 0 => None,
        DType::U32 => Some((0, i64::from(classes.max_all()?.to_scalar::<u32>()?))),
        DType::I64 => Some((classes.min_all()?.to_scalar::<i64>()?, classes.max_all()?.to_scalar::<i64>()?)),
        dt => return Err(Error::shape(CONTEXT, format!("classes must be U8, U32 or I64, got {dt:?}"))),
    };
    if let Some((lo, hi)) = range.filter(|&(lo, hi)| lo < 0 || hi > 255) {
        return Err(Error::shape(CONTEXT, format!("classes must be in 0..=255, found [{lo}, {hi}]")));
    }
    if !matches!(dtype, DType::F16 | DType::BF16 | DType::F32 | DType::F64) {
        return Err(Error::shape(CONTEXT, format!("output dtype must be F16, BF16, F32 or F64, got {dtype:?}")));
    }
    let values = classes.to_dtype(compute_dtype(dtype))?.affine(1.0 / MAX_LEVEL, 0.0)?;
    Ok(values.to_dtype(dtype)?)
}

/// Uniform dequantisation of 8-bit data: `(255 x + u) / 256` with `u ~ U[0, 1)` drawn
/// independently per value (Uria, Murray & Larochelle 2013; Theis, van den Oord & Bethge 2016).
///
/// `x` holds 8-bit images in `[0, 1]` (values `k / 255`, any shape); each value is first snapped
/// to its class `k = round(255 x)` in `0..=255`, so the output of class `k` lies in
/// `[k / 256, (k + 1) / 256)`. A continuous density's log-likelihood on these values lower-bounds
/// the discrete model's, which is how flows and continuous VAEs report bits/dim.
///
/// `u` is drawn from `rng` on a grid fine enough for the dtype yet coarse enough that
/// `(k + u) / 256` is exactly representable, so the half-open interval holds exactly: steps of
/// `2^-16` for `F32`, `2^-45` for `F64` and `2^-3` for `F16` (its 11-bit significand).
/// `BF16` has an 8-bit significand, so its values are computed in `F32` and rounded: they lie in
/// the closed interval `[k / 256, (k + 1) / 256]`; use `F32` for likelihood evaluation.
pub fn dequantize_uniform(x: &Tensor, rng: &mut Rng) -> Result<Tensor> {
    check_float("dequantize_uniform", x)?;
    let dtype = x.dtype();
    let work = compute_dtype(dtype);
    let grid_bits: i32 = match dtype {
        DType::F64 => 45,
        DType::F16 => 3,
        _ => 16,
    };
    let steps = 2f64.powi(grid_bits);
    let k = x.to_dtype(work)?.affine(MAX_LEVEL, 0.0)?.round()?.clamp(0.0, MAX_LEVEL)?;
    let n = x.elem_count();
    // floor(U[0,1) * 2^bits) / 2^bits is an exact multiple of 2^-bits strictly below 1.
    let u: Vec<f64> = (0..n).map(|_| (rng.uniform_f64() * steps).floor() / steps).collect();
    let u = Tensor::from_vec(u, x.shape().clone(), x.device())?.to_dtype(work)?;
    // k + u needs at most 8 + grid_bits significant bits and / 256 is a power of two: both exact.
    let y = (k + u)?.affine(1.0 / 256.0, 0.0)?;
    Ok(y.to_dtype(dtype)?)
}

/// Stochastic binarisation: each value of `x` in `[0, 1]` becomes 1 with probability `x`, else 0
/// (Salakhutdinov & Murray 2008; the dynamically binarised MNIST of Bernoulli VAEs and IWAE,
/// Burda et al. 2016).
///
/// Values below 0 always give 0 and values above 1 always give 1. Any shape; float dtype, kept.
pub fn binarize_stochastic(x: &Tensor, rng: &mut Rng) -> Result<Tensor> {
    check_float("binarize_stochastic", x)?;
    let work = compute_dtype(x.dtype());
    let u = rng.uniform(x.shape().clone(), 0.0, 1.0, work, x.device())?;
    // P(u < x) = x for u ~ U[0, 1).
    Ok(u.lt(&x.to_dtype(work)?)?.to_dtype(x.dtype())?)
}

/// Deterministic binarisation: 1 where `x > threshold`, else 0 (e.g. `threshold = 0.5` on images
/// in `[0, 1]`). Any shape; float dtype, kept. A non-finite threshold is an [`Error::Config`].
pub fn binarize_threshold(x: &Tensor, threshold: f64) -> Result<Tensor> {
    check_float("binarize_threshold", x)?;
    if !threshold.is_finite() {
        return Err(Error::config("threshold", format!("must be finite, got {threshold}")));
    }
    let work = compute_dtype(x.dtype());
    Ok(x.to_dtype(work)?.gt(threshold)?.to_dtype(x.dtype())?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn values(t: &Tensor) -> Vec<f64> {
        t.to_dtype(DType::F64).unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap()
    }

    #[test]
    fn signed_unit_round_trip() -> Result<()> {
        let x = Tensor::new(&[[0f32, 0.25, 0.5, 1.0]], &Device::Cpu)?;
        let s = to_signed(&x)?;
        assert_eq!(values(&s), vec![-1.0, -0.5, 0.0, 1.0]);
        assert_eq!(values(&to_unit(&s)?), values(&x));
        Ok(())
    }

    #[test]
    fn quantize_from_8bit_round_trip_is_exact() -> Result<()> {
        let dev = Device::Cpu;
        let k: Vec<u32> = (0..256).collect();
        let classes = Tensor::from_vec(k.clone(), (1, 1, 16, 16), &dev)?;
        for dt in [DType::F32, DType::F64, DType::F16, DType::BF16] {
            let x = from_8bit(&classes, dt)?;
            assert_eq!(x.dtype(), dt);
            let back = quantize_8bit(&x)?;
            assert_eq!(back.dtype(), DType::U32);
            assert_eq!(back.flatten_all()?.to_vec1::<u32>()?, k, "{dt:?}");
        }
        let bytes = Tensor::from_vec((0..=255u8).collect::<Vec<_>>(), 256, &dev)?;
        assert_eq!(quantize_8bit(&from_8bit(&bytes, DType::F32)?)?.to_vec1::<u32>()?, k);
        Ok(())
    }

    #[test]
    fn quantize_rounds_and_clamps() -> Result<()> {
        let x = Tensor::new(&[-0.5f32, 0.001, 0.499 / 255.0, 0.501 / 255.0, 1.0, 2.0], &Device::Cpu)?;
        assert_eq!(quantize_8bit(&x)?.to_vec1::<u32>()?, vec![0, 0, 0, 1, 255, 255]);
        Ok(())
    }

    #[test]
    fn from_8bit_refuses_bad_input() -> Result<()> {
        let dev = Device::Cpu;
        let too_big = Tensor::new(&[3u32, 256], &dev)?;
        assert!(matches!(from_8bit(&too_big, DType::F32), Err(Error::Shape { .. })));
        let negative = Tensor::new(&[-1i64, 3], &dev)?;
        assert!(matches!(from_8bit(&negative, DType::F32), Err(Error::Shape { .. })));
        let float = Tensor::new(&[3f32], &dev)?;
        assert!(matches!(from_8bit(&float, DType::F32), Err(Error::Shape { .. })));
        let ok = Tensor::new(&[3u32], &dev)?;
        assert!(matches!(from_8bit(&ok, DType::U8), Err(Error::Shape { .. })));
        assert!(matches!(to_signed(&ok), Err(Error::Shape { .. })));
        assert!(matches!(quantize_8bit(&ok), Err(Error::Shape { .. })));
        Ok(())
    }

    #[test]
    fn dequantized_values_lie_in_their_bin() -> Result<()> {
        let dev = Device::Cpu;
        let k: Vec<u32> = (0..256).cycle().take(256 * 40).collect();
        let classes = Tensor::from_vec(k.clone(), (40, 1, 16, 16), &dev)?;
        for dt in [DType::F32, DType::F64, DType::F16] {
            let x = from_8bit(&classes, dt)?;
            let y = dequantize_uniform(&x, &mut Rng::new(3))?;
            assert_eq!(y.dtype(), dt);
            let v = values(&y);
            for (&k, &y) in k.iter().zip(&v) {
                let lo = k as f64 / 256.0;
                assert!(y >= lo && y < lo + 1.0 / 256.0, "{dt:?}: class {k} gave {y}");
            }
            // The noise is spread over the bin, not stuck at its lower edge.
            let mean_offset = k.iter().zip(&v).map(|(&k, &y)| y * 256.0 - k as f64).sum::<f64>() / v.len() as f64;
            assert!((mean_offset - 0.5).abs() < 0.1, "{dt:?}: mean offset {mean_offset}");
        }
        let x = from_8bit(&classes, DType::F32)?;
        let a = values(&dequantize_uniform(&x, &mut Rng::new(3))?);
        let b = values(&dequantize_uniform(&x, &mut Rng::new(3))?);
        let c = values(&dequantize_uniform(&x, &mut Rng::new(4))?);
        assert_eq!(a, b);
        assert_ne!(a, c);
        Ok(())
    }

    #[test]
    fn stochastic_binarisation_matches_probabilities() -> Result<()> {
        let dev = Device::Cpu;
        let x = Tensor::new(&[0f32, 0.25, 1.0], &dev)?.broadcast_as((20_000, 3))?.contiguous()?;
        let b = binarize_stochastic(&x, &mut Rng::new(9))?;
        assert_eq!(b.dtype(), DType::F32);
        let v = b.to_vec2::<f32>()?;
        assert!(v.iter().flatten().all(|&y| y == 0.0 || y == 1.0));
        let mean = |j: usize| v.iter().map(|r| r[j] as f64).sum::<f64>() / v.len() as f64;
        assert_eq!(mean(0), 0.0);
        assert_eq!(mean(2), 1.0);
        // Standard error sqrt(0.25 * 0.75 / 20000) ~ 0.003.
        assert!((mean(1) - 0.25).abs() < 0.015, "rate {}", mean(1));
        let again = binarize_stochastic(&x, &mut Rng::new(9))?.to_vec2::<f32>()?;
        assert_eq!(v, again);
        Ok(())
    }

    #[test]
    fn threshold_binarisation() -> Result<()> {
        let x = Tensor::new(&[0f32, 0.5, 0.51, 1.0], &Device::Cpu)?;
        assert_eq!(binarize_threshold(&x, 0.5)?.to_vec1::<f32>()?, vec![0.0, 0.0, 1.0, 1.0]);
        assert!(matches!(binarize_threshold(&x, f64::NAN), Err(Error::Config { .. })));
        Ok(())
    }

    #[test]
    fn half_precision_keeps_dtype() -> Result<()> {
        let x = Tensor::new(&[0f32, 0.5, 1.0], &Device::Cpu)?.to_dtype(DType::F16)?;
        let mut rng = Rng::new(1);
        assert_eq!(to_signed(&x)?.dtype(), DType::F16);
        assert_eq!(to_unit(&x)?.dtype(), DType::F16);
        assert_eq!(binarize_stochastic(&x, &mut rng)?.dtype(), DType::F16);
        assert_eq!(binarize_threshold(&x, 0.5)?.dtype(), DType::F16);
        assert_eq!(dequantize_uniform(&x, &mut rng)?.dtype(), DType::F16);
        assert_eq!(values(&to_signed(&x)?), vec![-1.0, 0.0, 1.0]);
        Ok(())
    }
}
