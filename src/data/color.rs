//! Colour augmentations for image batches, seeded and per sample: brightness, contrast and
//! saturation as deterministic primitives that take one factor per image ([`adjust_brightness`],
//! [`adjust_contrast`], [`adjust_saturation`]), and [`color_jitter`], which draws those factors
//! from a [`Rng`]. They are re-exported by [`augment`](super::augment), whose
//! [`Augment`](super::augment::Augment) config applies them in training loops.
//!
//! Images are `(B, C, H, W)` tensors of dtype `F16`, `BF16`, `F32` or `F64` in `[0, 1]` on any
//! device; every adjustment clamps to `[0, 1]`, so apply them before
//! [`to_signed`](super::transforms::to_signed). The output keeps the input's shape, dtype and
//! device.

use candle_core::Tensor;

use super::augment::{check_count, check_non_negative, dims4, per_sample};
use super::transforms::compute_dtype;
use crate::rng::Rng;
use crate::{Error, Result};

/// ITU-R BT.601 luma weights, as torchvision's `rgb_to_grayscale` uses them.
const LUMA: [f64; 3] = [0.2989, 0.587, 0.114];

/// The grey level of each pixel, `(B, 1, H, W)`: the image itself for one channel, BT.601 luma
/// `0.2989 R + 0.587 G + 0.114 B` for three (torchvision's `rgb_to_grayscale`).
fn grayscale(context: &str, x: &Tensor, channels: usize) -> Result<Tensor> {
    match channels {
        1 => Ok(x.clone()),
        3 => {
            let weights = per_sample(&LUMA, x.dtype(), x.device())?.reshape((1, 3, 1, 1))?;
            Ok(x.broadcast_mul(&weights)?.sum_keepdim(1)?)
        }
        c => Err(Error::shape(context, format!("needs 1 (grey) or 3 (RGB) channels, got {c}"))),
    }
}

/// `clamp(f x + (1 - f) other, 0, 1)` per sample, computed in `work` and returned in `x`'s dtype;
/// the blend of torchvision's colour adjustments.
fn blend(x: &Tensor, other: &Tensor, factors: &[f64]) -> Result<Tensor> {
    let work = compute_dtype(x.dtype());
    let f = per_sample(factors, work, x.device())?;
    let keep = per_sample(&factors.iter().map(|f| 1.0 - f).collect::<Vec<_>>(), work, x.device())?;
    let y = x.to_dtype(work)?.broadcast_mul(&f)?.broadcast_add(&other.to_dtype(work)?.broadcast_mul(&keep)?)?;
    Ok(y.clamp(0.0, 1.0)?.to_dtype(x.dtype())?)
}

/// Checks a per-sample factor list: one finite, non-negative factor per image.
fn check_factors(context: &str, factors: &[f64], batch: usize) -> Result<()> {
    check_count(context, "factors", factors.len(), batch)?;
    factors.iter().try_for_each(|&f| check_non_negative("factors", f))
}

/// Scales each image's brightness: `clamp(f_i x, 0, 1)` (torchvision's `adjust_brightness`, a
/// blend with black; colour jitter of Krizhevsky et al. 2012 and Howard 2013).
///
/// Input `(B, C, H, W)` in `[0, 1]`, any channel count; one factor `>= 0` per image
/// (1 = unchanged, 0 = black).
pub fn adjust_brightness(x: &Tensor, factors: &[f64]) -> Result<Tensor> {
    const CONTEXT: &str = "adjust_brightness";
    let (b, _, _, _) = dims4(CONTEXT, x)?;
    check_factors(CONTEXT, factors, b)?;
    let work = compute_dtype(x.dtype());
    let f = per_sample(factors, work, x.device())?;
    Ok(x.to_dtype(work)?.broadcast_mul(&f)?.clamp(0.0, 1.0)?.to_dtype(x.dtype())?)
}

/// Scales each image's contrast: `clamp(f_i x + (1 - f_i) m_i, 0, 1)` where `m_i` is the mean
/// grey level of image `i` over all its pixels (torchvision's `adjust_contrast`; Howard 2013).
///
/// Input `(B, C, H, W)` in `[0, 1]` with 1 (grey) or 3 (RGB, BT.601 luma) channels; one factor
/// `>= 0` per image (1 = unchanged, 0 = uniform mean grey).
pub fn adjust_contrast(x: &Tensor, factors: &[f64]) -> Result<Tensor> {
    const CONTEXT: &str = "adjust_contrast";
    let (b, c, _, _) = dims4(CONTEXT, x)?;
    check_factors(CONTEXT, factors, b)?;
    let work = x.to_dtype(compute_dtype(x.dtype()))?;
    let mean = grayscale(CONTEXT, &work, c)?.mean_keepdim((1, 2, 3))?;
    blend(x, &mean, factors)
}

/// Scales each image's saturation: `clamp(f_i x + (1 - f_i) g, 0, 1)` where `g` is the pixel's
/// BT.601 grey level (torchvision's `adjust_saturation`; Howard 2013).
///
/// Input `(B, C, H, W)` in `[0, 1]`; 3-channel (RGB) images are adjusted, 1-channel images are
/// returned unchanged (they have no saturation); one factor `>= 0` per image (1 = unchanged,
/// 0 = grey).
pub fn adjust_saturation(x: &Tensor, factors: &[f64]) -> Result<Tensor> {
    const CONTEXT: &str = "adjust_saturation";
    let (b, c, _, _) = dims4(CONTEXT, x)?;
    check_factors(CONTEXT, factors, b)?;
    if c == 1 {
        return Ok(x.clone());
    }
    let work = x.to_dtype(compute_dtype(x.dtype()))?;
    let grey = grayscale(CONTEXT, &work, c)?;
    blend(x, &grey, factors)
}

/// Random colour jitter (Krizhevsky et al. 2012, Howard 2013; torchvision's `ColorJitter`): per
/// image, brightness, contrast and saturation factors drawn uniformly from
/// `[max(0, 1 - b), 1 + b]`, `[max(0, 1 - c), 1 + c]` and `[max(0, 1 - s), 1 + s]`.
///
/// The adjustments run in the fixed order brightness, contrast, saturation (torchvision shuffles
/// the order per call). A strength of 0 disables its adjustment and draws nothing; each enabled
/// one draws one value per image from `rng`, in that order. Saturation is a no-op on 1-channel
/// images; contrast and saturation need 1 or 3 channels. Input `(B, C, H, W)` in `[0, 1]`,
/// clamped to it after each step; strengths must be finite and `>= 0`.
pub fn color_jitter(x: &Tensor, brightness: f64, contrast: f64, saturation: f64, rng: &mut Rng) -> Result<Tensor> {
    let (b, _, _, _) = dims4("color_jitter", x)?;
    check_non_negative("brightness", brightness)?;
    check_non_negative("contrast", contrast)?;
    check_non_negative("saturation", saturation)?;
    let mut draw = |strength: f64| -> Vec<f64> {
        let lo = (1.0 - strength).max(0.0);
        let hi = 1.0 + strength;
        (0..b).map(|_| lo + (hi - lo) * rng.uniform_f64()).collect()
    };
    let mut y = x.clone();
    if brightness > 0.0 {
        y = adjust_brightness(&y, &draw(brightness))?;
    }
    if contrast > 0.0 {
        y = adjust_contrast(&y, &draw(contrast))?;
    }
    if saturation > 0.0 {
        y = adjust_saturation(&y, &draw(saturation))?;
    }
    Ok(y)
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device};

    use super::super::augment::testing::{assert_close, batch, values};
    use super::*;

    #[test]
    fn brightness_hand_computed() -> Result<()> {
        let x = Tensor::new(&[0.2f32, 0.6, 0.2, 0.6], &Device::Cpu)?.reshape((2, 1, 1, 2))?;
        let y = values(&adjust_brightness(&x, &[1.5, 2.0])?);
        assert_close(&y, &[0.3, 0.9, 0.4, 1.0], 1e-6);
        assert!(matches!(adjust_brightness(&x, &[1.0]), Err(Error::Shape { .. })));
        assert!(matches!(adjust_brightness(&x, &[1.0, -0.5]), Err(Error::Config { .. })));
        Ok(())
    }

    #[test]
    fn contrast_hand_computed() -> Result<()> {
        // Grey image [0.2, 0.6], mean 0.4.
        let x = Tensor::new(&[0.2f32, 0.6, 0.2, 0.6], &Device::Cpu)?.reshape((2, 1, 1, 2))?;
        let y = values(&adjust_contrast(&x, &[2.0, 0.5])?);
        assert_close(&y, &[0.0, 0.8, 0.3, 0.5], 1e-6);
        // RGB pixels pure red and pure blue: mean grey (0.2989 + 0.114) / 2 = 0.20645.
        let rgb = Tensor::new(&[1f32, 0., 0., 0., 0., 1.], &Device::Cpu)?.reshape((1, 3, 1, 2))?;
        let m = 0.20645;
        let y = values(&adjust_contrast(&rgb, &[0.5])?);
        assert_close(&y, &[0.5 + 0.5 * m, 0.5 * m, 0.5 * m, 0.5 * m, 0.5 * m, 0.5 + 0.5 * m], 1e-6);
        let four = Tensor::zeros((1, 4, 1, 1), DType::F32, &Device::Cpu)?;
        assert!(matches!(adjust_contrast(&four, &[1.0]), Err(Error::Shape { .. })));
        Ok(())
    }

    #[test]
    fn saturation_hand_computed() -> Result<()> {
        // One pure red pixel: grey 0.2989; factor 0 gives grey, 0.5 halfway.
        let red = Tensor::new(&[1f32, 0., 0.], &Device::Cpu)?.reshape((1, 3, 1, 1))?;
        assert_close(&values(&adjust_saturation(&red, &[0.0])?), &[0.2989; 3], 1e-6);
        let g = 0.2989;
        assert_close(&values(&adjust_saturation(&red, &[0.5])?), &[0.5 + g / 2.0, g / 2.0, g / 2.0], 1e-6);
        let grey = batch(0, (2, 1, 3, 3));
        assert_eq!(values(&adjust_saturation(&grey, &[0.0, 3.0])?), values(&grey));
        Ok(())
    }

    #[test]
    fn color_jitter_is_seeded_and_stays_in_range() -> Result<()> {
        let x = batch(0, (32, 3, 4, 4));
        let a = values(&color_jitter(&x, 0.4, 0.4, 0.4, &mut Rng::new(1))?);
        assert_eq!(a, values(&color_jitter(&x, 0.4, 0.4, 0.4, &mut Rng::new(1))?));
        assert_ne!(a, values(&color_jitter(&x, 0.4, 0.4, 0.4, &mut Rng::new(2))?));
        assert!(a.iter().all(|v| (0.0..=1.0).contains(v)));
        assert_eq!(values(&color_jitter(&x, 0.0, 0.0, 0.0, &mut Rng::new(1))?), values(&x));
        let grey = batch(0, (4, 1, 4, 4));
        assert_eq!(color_jitter(&grey, 0.2, 0.2, 0.2, &mut Rng::new(1))?.dims(), grey.dims());
        assert!(matches!(color_jitter(&x, 0.1, -0.1, 0.0, &mut Rng::new(1)), Err(Error::Config { .. })));
        Ok(())
    }
}
