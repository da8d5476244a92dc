//! Data augmentation for image batches, seeded and per sample.
//!
//! Each augmentation comes as a deterministic primitive that takes its per-sample parameters
//! explicitly ([`hflip`], [`crop_padded`], [`rotate`], [`adjust_brightness`], [`adjust_contrast`],
//! [`adjust_saturation`]) and a random version that draws those parameters from a
//! [`Rng`] and calls the primitive ([`random_hflip`], [`random_crop`], [`random_rotation`],
//! [`color_jitter`]). Same seed, same augmented batch, on every device. [`Augment`] bundles
//! them as a serialisable config for training loops. The colour augmentations live in
//! [`color`](super::color) and are re-exported here.
//!
//! Images are `(B, C, H, W)` tensors of dtype `F16`, `BF16`, `F32` or `F64` on any device; the
//! output keeps the input's shape, dtype and device. The geometric augmentations work for any
//! value range; the colour ones assume `[0, 1]` and clamp to it, so apply them before
//! [`to_signed`](super::transforms::to_signed).
//!
//! ```
//! use candle_core::{DType, Device};
//! use candle_generative::data::augment::{self, Augment};
//! use candle_generative::rng::Rng;
//!
//! let mut rng = Rng::new(0);
//! let x = rng.uniform((8, 3, 32, 32), 0.0, 1.0, DType::F32, &Device::Cpu)?;
//!
//! // The CIFAR-10 recipe: random crop with 4 pixels of padding, then a random horizontal flip.
//! let aug = Augment { crop_padding: 4, hflip_probability: 0.5, ..Augment::default() };
//! let y = aug.apply(&x, &mut rng)?;
//! assert_eq!(y.dims(), x.dims());
//!
//! // The primitives are deterministic: flipping twice gives the batch back.
//! let twice = augment::hflip(&augment::hflip(&x)?)?;
//! assert_eq!(twice.flatten_all()?.to_vec1::<f32>()?, x.flatten_all()?.to_vec1::<f32>()?);
//! # Ok::<(), candle_generative::Error>(())
//! ```

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

pub use super::color::{adjust_brightness, adjust_contrast, adjust_saturation, color_jitter};
use super::transforms::check_float;
use crate::rng::Rng;
use crate::{Error, Result};

/// `(B, C, H, W)` of a 4-D float tensor, or an [`Error::Shape`] naming `context`.
pub(crate) fn dims4(context: &str, x: &Tensor) -> Result<(usize, usize, usize, usize)> {
    check_float(context, x)?;
    match *x.dims() {
        [b, c, h, w] => Ok((b, c, h, w)),
        ref d => Err(Error::shape(context, format!("expected a (B, C, H, W) image batch, got shape {d:?}"))),
    }
}

/// Refuses a per-sample parameter list whose length is not the batch size.
pub(crate) fn check_count(context: &str, what: &str, n: usize, batch: usize) -> Result<()> {
    if n == batch {
        Ok(())
    } else {
        Err(Error::shape(context, format!("{n} {what} for a batch of {batch} images")))
    }
}

/// Refuses a negative or non-finite value of the parameter `field`.
pub(crate) fn check_non_negative(field: &str, value: f64) -> Result<()> {
    if value.is_finite() && value >= 0.0 {
        Ok(())
    } else {
        Err(Error::config(field, format!("must be finite and >= 0, got {value}")))
    }
}

/// Refuses a probability outside `[0, 1]` (or NaN).
fn check_probability(field: &str, p: f64) -> Result<()> {
    if (0.0..=1.0).contains(&p) {
        Ok(())
    } else {
        Err(Error::config(field, format!("must be a probability in [0, 1], got {p}")))
    }
}

/// Per-sample values as a `(B, 1, 1, 1)` tensor of `dtype` (`F32` or `F64`) on `device`.
pub(crate) fn per_sample(values: &[f64], dtype: DType, device: &Device) -> Result<Tensor> {
    let shape = (values.len(), 1, 1, 1);
    let t = if dtype == DType::F64 {
        Tensor::from_vec(values.to_vec(), shape, device)?
    } else {
        Tensor::from_vec(values.iter().map(|&v| v as f32).collect::<Vec<_>>(), shape, device)?
    };
    Ok(t)
}

/// Mirrors every image left to right (the last axis): `y[.., i, j] = x[.., i, W - 1 - j]`.
///
/// Horizontal reflections are the augmentation of Krizhevsky, Sutskever & Hinton 2012
/// (AlexNet). Input `(B, C, H, W)`, any value range.
pub fn hflip(x: &Tensor) -> Result<Tensor> {
    let (_, _, _, w) = dims4("hflip", x)?;
    let reversed: Vec<u32> = (0..w as u32).rev().collect();
    let index = Tensor::from_vec(reversed, w, x.device())?;
    Ok(x.contiguous()?.index_select(&index, 3)?)
}

/// Flips each image of the batch independently with probability `p` in `[0, 1]`
/// (Krizhevsky et al. 2012; torchvision's `RandomHorizontalFlip`).
///
/// Input `(B, C, H, W)`, any value range. Draws one coin per sample from `rng`.
pub fn random_hflip(x: &Tensor, p: f64, rng: &mut Rng) -> Result<Tensor> {
    let (b, _, _, _) = dims4("random_hflip", x)?;
    check_probability("p", p)?;
    let flips: Vec<u8> = (0..b).map(|_| u8::from(rng.coin(p))).collect();
    if flips.iter().all(|&f| f == 0) {
        return Ok(x.clone());
    }
    let flipped = hflip(x)?;
    if flips.iter().all(|&f| f == 1) {
        return Ok(flipped);
    }
    let mask = Tensor::from_vec(flips, (b, 1, 1, 1), x.device())?.broadcast_as(x.shape())?;
    Ok(mask.where_cond(&flipped, x)?)
}

/// Zero-pads every image by `pad` pixels on each side, then crops it back to `H x W` with its
/// top-left corner at `offsets[i] = (top, left)`, each in `0..=2 * pad`.
///
/// Offset `(pad, pad)` gives the image back; `(0, 0)` shifts the content `pad` pixels down and
/// right, with zeros in the first `pad` rows and columns. Input `(B, C, H, W)`, any value range
/// (the padding is 0, i.e. black for `[0, 1]` images and mid-grey for `[-1, 1]` ones).
/// `offsets` must have one entry per image.
pub fn crop_padded(x: &Tensor, pad: usize, offsets: &[(usize, usize)]) -> Result<Tensor> {
    const CONTEXT: &str = "crop_padded";
    let (b, _, h, w) = dims4(CONTEXT, x)?;
    check_count(CONTEXT, "offsets", offsets.len(), b)?;
    if let Some((i, &(top, left))) = offsets.iter().enumerate().find(|(_, &(t, l))| t > 2 * pad || l > 2 * pad) {
        return Err(Error::shape(
            CONTEXT,
            format!("offset ({top}, {left}) of image {i} is outside 0..={} for padding {pad}", 2 * pad),
        ));
    }
    if b == 0 || offsets.iter().all(|&o| o == (pad, pad)) {
        return Ok(x.clone());
    }
    let padded = x.pad_with_zeros(2, pad, pad)?.pad_with_zeros(3, pad, pad)?;
    let crops = offsets
        .iter()
        .enumerate()
        .map(|(i, &(top, left))| padded.narrow(0, i, 1)?.narrow(2, top, h)?.narrow(3, left, w))
        .collect::<candle_core::Result<Vec<_>>>()?;
    Ok(Tensor::cat(&crops, 0)?)
}

/// The random crop with zero padding of CIFAR training: pad by `pad` pixels, crop `H x W` at a
/// uniformly random position per image (Krizhevsky et al. 2012 cropped without padding; the padded
/// form is from Goodfellow et al. 2013 and He et al. 2016, torchvision's `RandomCrop(padding)`).
///
/// Input `(B, C, H, W)`, any value range. Draws two integers per sample from `rng`.
pub fn random_crop(x: &Tensor, pad: usize, rng: &mut Rng) -> Result<Tensor> {
    let (b, _, _, _) = dims4("random_crop", x)?;
    let offsets = (0..b).map(|_| Ok((rng.below(2 * pad + 1)?, rng.below(2 * pad + 1)?))).collect::<Result<Vec<_>>>()?;
    crop_padded(x, pad, &offsets)
}

/// `(cos, sin)` of an angle in degrees, exact at multiples of 90 degrees so that quarter turns
/// resample on the pixel grid.
fn cos_sin_degrees(degrees: f64) -> (f64, f64) {
    let r = degrees.rem_euclid(360.0);
    match r {
        0.0 => (1.0, 0.0),
        90.0 => (0.0, 1.0),
        180.0 => (-1.0, 0.0),
        270.0 => (0.0, -1.0),
        _ => {
            let t = r.to_radians();
            (t.cos(), t.sin())
        }
    }
}

/// The values of `x` on the host as `f64` (`x` is converted to `F32` on its device first unless
/// it is `F64`, since not every device has `F64`).
fn to_host(x: &Tensor) -> Result<Vec<f64>> {
    let flat = x.flatten_all()?;
    let v = if x.dtype() == DType::F64 {
        flat.to_vec1::<f64>()?
    } else {
        flat.to_dtype(DType::F32)?.to_vec1::<f32>()?.into_iter().map(f64::from).collect()
    };
    Ok(v)
}

/// Rotates each image counter-clockwise (as displayed, row 0 at the top) by `angles_degrees[i]`
/// about its centre, with bilinear resampling; points that come from outside the image take the
/// value `fill`, blended at the border like torchvision's `rotate(.., fill)`.
///
/// Rotation augmentation as in Simard, Steinkraus & Platt 2003 and torchvision's
/// `RandomRotation`. The centre is `((H - 1) / 2, (W - 1) / 2)` in pixel coordinates, so a
/// rotation by 0 is exactly the identity, quarter turns of a square image are exact pixel
/// permutations (90 degrees: transpose, then flip rows) and an odd-sized image keeps its centre
/// pixel. Input `(B, C, H, W)`, any value range; `angles_degrees` has one finite entry per image.
/// The resampling runs on the host (in `f64`) and the result goes back to the input's device.
pub fn rotate(x: &Tensor, angles_degrees: &[f64], fill: f64) -> Result<Tensor> {
    const CONTEXT: &str = "rotate";
    let (b, c, h, w) = dims4(CONTEXT, x)?;
    check_count(CONTEXT, "angles", angles_degrees.len(), b)?;
    if let Some(a) = angles_degrees.iter().find(|a| !a.is_finite()) {
        return Err(Error::config("angles_degrees", format!("must be finite, got {a}")));
    }
    if !fill.is_finite() {
        return Err(Error::config("fill", format!("must be finite, got {fill}")));
    }
    if angles_degrees.iter().all(|&a| a.rem_euclid(360.0) == 0.0) {
        return Ok(x.clone());
    }
    let src = to_host(x)?;
    let mut out = vec![0f64; src.len()];
    let (cy, cx) = ((h as f64 - 1.0) / 2.0, (w as f64 - 1.0) / 2.0);
    let plane = h * w;
    for (n, &angle) in angles_degrees.iter().enumerate() {
        let image = &src[n * c * plane..(n + 1) * c * plane];
        let target = &mut out[n * c * plane..(n + 1) * c * plane];
        let (cos, sin) = cos_sin_degrees(angle);
        for y in 0..h {
            for x_out in 0..w {
                let (dx, dy) = (x_out as f64 - cx, y as f64 - cy);
                // Inverse map of a counter-clockwise turn in y-down coordinates.
                let sx = cos * dx - sin * dy + cx;
                let sy = sin * dx + cos * dy + cy;
                let (x0, y0) = (sx.floor(), sy.floor());
                let (fx, fy) = (sx - x0, sy - y0);
                let taps = [
                    (y0, x0, (1.0 - fy) * (1.0 - fx)),
                    (y0, x0 + 1.0, (1.0 - fy) * fx),
                    (y0 + 1.0, x0, fy * (1.0 - fx)),
                    (y0 + 1.0, x0 + 1.0, fy * fx),
                ];
                for ch in 0..c {
                    let channel = &image[ch * plane..(ch + 1) * plane];
                    let mut acc = 0.0;
                    // Zero-weight taps are skipped so that grid-aligned samples copy values exactly.
                    for &(ty, tx, weight) in taps.iter().filter(|t| t.2 != 0.0) {
                        let inside = ty >= 0.0 && tx >= 0.0 && ty < h as f64 && tx < w as f64;
                        let v = if inside { channel[ty as usize * w + tx as usize] } else { fill };
                        acc += weight * v;
                    }
                    target[ch * plane + y * w + x_out] = acc;
                }
            }
        }
    }
    let rotated = if x.dtype() == DType::F64 {
        Tensor::from_vec(out, (b, c, h, w), x.device())?
    } else {
        let out: Vec<f32> = out.into_iter().map(|v| v as f32).collect();
        Tensor::from_vec(out, (b, c, h, w), x.device())?.to_dtype(x.dtype())?
    };
    Ok(rotated)
}

/// Rotates each image by an angle drawn uniformly from `[-max_degrees, max_degrees]`
/// (torchvision's `RandomRotation(max_degrees)`; Simard et al. 2003), filling with `fill`.
///
/// Input `(B, C, H, W)`, any value range; `max_degrees >= 0`. Draws one value per sample from
/// `rng` (none when `max_degrees` is 0).
pub fn random_rotation(x: &Tensor, max_degrees: f64, fill: f64, rng: &mut Rng) -> Result<Tensor> {
    let (b, _, _, _) = dims4("random_rotation", x)?;
    check_non_negative("max_degrees", max_degrees)?;
    if max_degrees == 0.0 {
        return Ok(x.clone());
    }
    let angles: Vec<f64> = (0..b).map(|_| (2.0 * rng.uniform_f64() - 1.0) * max_degrees).collect();
    rotate(x, &angles, fill)
}

/// Which augmentations a training loop applies, and how strongly (serde-serialisable, so it can
/// be stored with a checkpoint's config).
///
/// `Default` disables everything: [`Augment::apply`] then returns the batch unchanged.
/// [`Augment::cifar10`] is the standard CIFAR-10 recipe.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Augment {
    /// Probability of flipping each image horizontally, in `[0, 1]` ([`random_hflip`]).
    pub hflip_probability: f64,
    /// Zero padding of the random crop in pixels; 0 disables it ([`random_crop`]).
    pub crop_padding: usize,
    /// Largest rotation angle in degrees, `>= 0`, filled with 0 outside; 0 disables it
    /// ([`random_rotation`]).
    pub rotation_degrees: f64,
    /// Brightness jitter strength `>= 0`, factors in `[1 - b, 1 + b]` ([`color_jitter`]).
    pub brightness: f64,
    /// Contrast jitter strength `>= 0`, factors in `[1 - c, 1 + c]` ([`color_jitter`]).
    pub contrast: f64,
    /// Saturation jitter strength `>= 0`, factors in `[1 - s, 1 + s]`; ignored for 1-channel
    /// images ([`color_jitter`]).
    pub saturation: f64,
}

impl Augment {
    /// The CIFAR-10 training augmentation of He et al. 2016: random crop with 4 pixels of zero
    /// padding and horizontal flips with probability 0.5.
    pub fn cifar10() -> Self {
        Self { hflip_probability: 0.5, crop_padding: 4, ..Self::default() }
    }

    /// Checks every field, returning an [`Error::Config`] naming the first bad one
    /// (e.g. `Augment.hflip_probability`).
    pub fn validate(&self) -> Result<()> {
        check_probability("Augment.hflip_probability", self.hflip_probability)?;
        check_non_negative("Augment.rotation_degrees", self.rotation_degrees)?;
        check_non_negative("Augment.brightness", self.brightness)?;
        check_non_negative("Augment.contrast", self.contrast)?;
        check_non_negative("Augment.saturation", self.saturation)
    }

    /// Applies the enabled augmentations to a `(B, C, H, W)` batch, each image with its own
    /// random parameters from `rng`, in the fixed order: crop, horizontal flip, rotation, colour
    /// jitter. Disabled ones draw nothing from `rng`.
    ///
    /// Geometric augmentations accept any value range; colour jitter assumes `[0, 1]` and clamps
    /// to it. Validates the config first ([`Augment::validate`]).
    pub fn apply(&self, x: &Tensor, rng: &mut Rng) -> Result<Tensor> {
        self.validate()?;
        dims4("Augment::apply", x)?;
        let mut y = x.clone();
        if self.crop_padding > 0 {
            y = random_crop(&y, self.crop_padding, rng)?;
        }
        if self.hflip_probability > 0.0 {
            y = random_hflip(&y, self.hflip_probability, rng)?;
        }
        if self.rotation_degrees > 0.0 {
            y = random_rotation(&y, self.rotation_degrees, 0.0, rng)?;
        }
        if self.brightness > 0.0 || self.contrast > 0.0 || self.saturation > 0.0 {
            y = color_jitter(&y, self.brightness, self.contrast, self.saturation, rng)?;
        }
        Ok(y)
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! Image batches and comparisons shared by the tests of the augmentation modules.

    use candle_core::{DType, Device, Tensor};

    use crate::rng::Rng;

    /// The values of a tensor as `f64`, in row-major order.
    pub(crate) fn values(t: &Tensor) -> Vec<f64> {
        t.to_dtype(DType::F64).unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap()
    }

    /// A seeded batch of uniform values in `[0, 1)`, `F32` on the CPU.
    pub(crate) fn batch(seed: u64, shape: (usize, usize, usize, usize)) -> Tensor {
        Rng::new(seed).uniform(shape, 0.0, 1.0, DType::F32, &Device::Cpu).unwrap()
    }

    /// Asserts that `a` and `b` agree element-wise within `tol`.
    pub(crate) fn assert_close(a: &[f64], b: &[f64], tol: f64) {
        assert_eq!(a.len(), b.len());
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!((x - y).abs() <= tol, "element {i}: {x} vs {y}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{assert_close, batch, values};
    use super::*;

    /// `(1, 1, n, n)` image with values 1..=n*n in row-major order.
    fn ramp(n: usize) -> Tensor {
        let v: Vec<f32> = (1..=n * n).map(|v| v as f32).collect();
        Tensor::from_vec(v, (1, 1, n, n), &Device::Cpu).unwrap()
    }

    #[test]
    fn hflip_of_asymmetric_image() -> Result<()> {
        let x = Tensor::new(&[[[[1f32, 2., 3.], [4., 5., 6.]]]], &Device::Cpu)?;
        assert_eq!(values(&hflip(&x)?), vec![3., 2., 1., 6., 5., 4.]);
        // A non-contiguous view (transposed) is flipped too.
        let t = x.transpose(2, 3)?;
        assert_eq!(values(&hflip(&t)?), vec![4., 1., 5., 2., 6., 3.]);
        Ok(())
    }

    #[test]
    fn random_hflip_is_seeded_and_flips_at_rate_p() -> Result<()> {
        let x = batch(0, (32, 3, 8, 8));
        let a = values(&random_hflip(&x, 0.5, &mut Rng::new(1))?);
        let b = values(&random_hflip(&x, 0.5, &mut Rng::new(1))?);
        let c = values(&random_hflip(&x, 0.5, &mut Rng::new(2))?);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(values(&random_hflip(&x, 0.0, &mut Rng::new(1))?), values(&x));
        assert_eq!(values(&random_hflip(&x, 1.0, &mut Rng::new(1))?), values(&hflip(&x)?));

        // Rows [0, 1] per sample: a flipped sample reads [1, 0].
        let n = 4000;
        let row: Vec<f32> = (0..n).flat_map(|_| [0f32, 1.0]).collect();
        let x = Tensor::from_vec(row, (n, 1, 1, 2), &Device::Cpu)?;
        let y = random_hflip(&x, 0.3, &mut Rng::new(3))?.flatten_all()?.to_vec1::<f32>()?;
        let flipped = y.chunks(2).filter(|r| r == &[1.0, 0.0]).count();
        assert_eq!(flipped + y.chunks(2).filter(|r| r == &[0.0, 1.0]).count(), n);
        // Standard error sqrt(0.3 * 0.7 / 4000) ~ 0.0072.
        let rate = flipped as f64 / n as f64;
        assert!((rate - 0.3).abs() < 0.03, "flip rate {rate}");
        assert!(matches!(random_hflip(&x, 1.5, &mut Rng::new(0)), Err(Error::Config { .. })));
        Ok(())
    }

    #[test]
    fn crop_offsets_on_known_image() -> Result<()> {
        let x = ramp(3);
        // (0, 0): content moves one pixel down and right, zeros in row 0 and column 0.
        assert_eq!(values(&crop_padded(&x, 1, &[(0, 0)])?), vec![0., 0., 0., 0., 1., 2., 0., 4., 5.]);
        // (1, 1) is the identity, (2, 2) shifts up and left, (0, 2) down and left.
        assert_eq!(values(&crop_padded(&x, 1, &[(1, 1)])?), values(&x));
        assert_eq!(values(&crop_padded(&x, 1, &[(2, 2)])?), vec![5., 6., 0., 8., 9., 0., 0., 0., 0.]);
        assert_eq!(values(&crop_padded(&x, 1, &[(0, 2)])?), vec![0., 0., 0., 2., 3., 0., 5., 6., 0.]);
        // Per-sample offsets within one batch.
        let two = Tensor::cat(&[&x, &x], 0)?;
        let y = values(&crop_padded(&two, 1, &[(1, 1), (0, 0)])?);
        assert_eq!(&y[..9], &values(&x)[..]);
        assert_eq!(&y[9..], &[0., 0., 0., 0., 1., 2., 0., 4., 5.]);
        Ok(())
    }

    #[test]
    fn crop_refuses_bad_offsets() {
        let x = ramp(3);
        assert!(matches!(crop_padded(&x, 1, &[(3, 0)]), Err(Error::Shape { .. })));
        assert!(matches!(crop_padded(&x, 1, &[(0, 0), (0, 0)]), Err(Error::Shape { .. })));
        assert!(matches!(crop_padded(&x, 0, &[(0, 1)]), Err(Error::Shape { .. })));
    }

    #[test]
    fn random_crop_is_seeded() -> Result<()> {
        let x = batch(0, (32, 3, 8, 8));
        let a = values(&random_crop(&x, 2, &mut Rng::new(1))?);
        assert_eq!(a, values(&random_crop(&x, 2, &mut Rng::new(1))?));
        assert_ne!(a, values(&random_crop(&x, 2, &mut Rng::new(2))?));
        assert_eq!(values(&random_crop(&x, 0, &mut Rng::new(1))?), values(&x));
        Ok(())
    }

    #[test]
    fn rotation_by_zero_is_identity() -> Result<()> {
        let x = batch(4, (3, 2, 5, 7));
        assert_eq!(values(&rotate(&x, &[0.0, 360.0, -0.0], 0.5)?), values(&x));
        // Also through the resampling path, next to a rotated sample.
        let y = values(&rotate(&x, &[0.0, 30.0, 0.0], 0.5)?);
        let per = 2 * 5 * 7;
        assert_eq!(&y[..per], &values(&x)[..per]);
        assert_eq!(&y[2 * per..], &values(&x)[2 * per..]);
        Ok(())
    }

    #[test]
    fn rotation_by_90_is_transpose_then_row_flip() -> Result<()> {
        // Counter-clockwise as displayed: the top-right corner moves to the top-left.
        let x = Tensor::new(&[[[[1f32, 2.], [3., 4.]]]], &Device::Cpu)?;
        assert_eq!(values(&rotate(&x, &[90.0], 0.0)?), vec![2., 4., 1., 3.]);
        for n in [3, 4, 6] {
            let x = batch(n as u64, (2, 3, n, n));
            let expected = x.transpose(2, 3)?.contiguous()?.flip(&[2])?;
            assert_eq!(values(&rotate(&x, &[90.0, 90.0], 0.0)?), values(&expected), "n = {n}");
            assert_eq!(values(&rotate(&x, &[-270.0, 450.0], 0.0)?), values(&expected), "n = {n}");
            let half_turn = x.flip(&[2, 3])?;
            assert_eq!(values(&rotate(&x, &[180.0, -180.0], 0.0)?), values(&half_turn), "n = {n}");
            let clockwise = x.transpose(2, 3)?.contiguous()?.flip(&[3])?;
            assert_eq!(values(&rotate(&x, &[-90.0, 270.0], 0.0)?), values(&clockwise), "n = {n}");
        }
        Ok(())
    }

    #[test]
    fn rotation_by_45_keeps_the_centre_pixel_and_fills_corners() -> Result<()> {
        let x = ramp(7);
        let y = values(&rotate(&x, &[45.0], -1.0)?);
        assert_eq!(y[24], 25.0);
        // The corners, 3 sqrt(2) > 3 + 1 pixels from the centre, come from beyond the bilinear
        // border zone: pure fill.
        for corner in [0, 6, 42, 48] {
            assert_eq!(y[corner], -1.0, "corner {corner}");
        }
        // A uniform image stays uniform where it is sampled from inside.
        let ones = Tensor::ones((1, 1, 5, 5), DType::F32, &Device::Cpu)?;
        let r = values(&rotate(&ones, &[45.0], 1.0)?);
        assert_close(&r, &[1.0; 25], 1e-6);
        Ok(())
    }

    #[test]
    fn rotation_errors() {
        let x = ramp(3);
        assert!(matches!(rotate(&x, &[1.0, 2.0], 0.0), Err(Error::Shape { .. })));
        assert!(matches!(rotate(&x, &[f64::NAN], 0.0), Err(Error::Config { .. })));
        assert!(matches!(rotate(&x, &[10.0], f64::INFINITY), Err(Error::Config { .. })));
        assert!(matches!(random_rotation(&x, -1.0, 0.0, &mut Rng::new(0)), Err(Error::Config { .. })));
    }

    #[test]
    fn random_rotation_is_seeded() -> Result<()> {
        let x = batch(0, (32, 1, 6, 6));
        let a = values(&random_rotation(&x, 30.0, 0.0, &mut Rng::new(1))?);
        assert_eq!(a, values(&random_rotation(&x, 30.0, 0.0, &mut Rng::new(1))?));
        assert_ne!(a, values(&random_rotation(&x, 30.0, 0.0, &mut Rng::new(2))?));
        Ok(())
    }

    #[test]
    fn augment_default_is_identity_and_config_is_validated() -> Result<()> {
        let x = batch(0, (4, 3, 8, 8));
        let mut rng = Rng::new(0);
        let before = rng.state();
        assert_eq!(values(&Augment::default().apply(&x, &mut rng)?), values(&x));
        assert_eq!(rng.state(), before, "a disabled augmentation draws nothing");

        let bad = |a: Augment, field: &str| match a.validate() {
            Err(Error::Config { field: f, .. }) => assert_eq!(f, field),
            other => panic!("expected a config error for {field}, got {other:?}"),
        };
        bad(Augment { hflip_probability: 1.5, ..Augment::default() }, "Augment.hflip_probability");
        bad(Augment { hflip_probability: f64::NAN, ..Augment::default() }, "Augment.hflip_probability");
        bad(Augment { rotation_degrees: -5.0, ..Augment::default() }, "Augment.rotation_degrees");
        bad(Augment { brightness: -0.1, ..Augment::default() }, "Augment.brightness");
        bad(Augment { contrast: f64::INFINITY, ..Augment::default() }, "Augment.contrast");
        bad(Augment { saturation: -1.0, ..Augment::default() }, "Augment.saturation");
        let bad_apply = Augment { brightness: -0.1, ..Augment::default() }.apply(&x, &mut rng);
        assert!(matches!(bad_apply, Err(Error::Config { .. })));
        Augment::cifar10().validate()
    }

    #[test]
    fn augment_apply_is_seeded_and_serialisable() -> Result<()> {
        let aug = Augment {
            hflip_probability: 0.5,
            crop_padding: 2,
            rotation_degrees: 15.0,
            brightness: 0.2,
            contrast: 0.2,
            saturation: 0.2,
        };
        let x = batch(0, (32, 3, 8, 8));
        let a = values(&aug.apply(&x, &mut Rng::new(1))?);
        assert_eq!(a, values(&aug.apply(&x, &mut Rng::new(1))?));
        assert_ne!(a, values(&aug.apply(&x, &mut Rng::new(2))?));

        let json = serde_json::to_string(&aug).expect("Augment serialises");
        let back: Augment = serde_json::from_str(&json).expect("Augment deserialises");
        assert_eq!(back, aug);
        let partial: Augment = serde_json::from_str(r#"{"crop_padding": 4}"#).expect("missing fields default");
        assert_eq!(partial, Augment { crop_padding: 4, ..Augment::default() });
        Ok(())
    }

    #[test]
    fn non_4d_input_is_refused() {
        let flat = Tensor::zeros((2, 9), DType::F32, &Device::Cpu).unwrap();
        let mut rng = Rng::new(0);
        assert!(matches!(hflip(&flat), Err(Error::Shape { .. })));
        assert!(matches!(random_crop(&flat, 1, &mut rng), Err(Error::Shape { .. })));
        assert!(matches!(rotate(&flat, &[0.0, 0.0], 0.0), Err(Error::Shape { .. })));
        assert!(matches!(adjust_brightness(&flat, &[1.0, 1.0]), Err(Error::Shape { .. })));
        assert!(matches!(Augment::cifar10().apply(&flat, &mut rng), Err(Error::Shape { .. })));
        let ints = Tensor::zeros((1, 1, 2, 2), DType::U8, &Device::Cpu).unwrap();
        assert!(matches!(hflip(&ints), Err(Error::Shape { .. })));
    }

    #[test]
    fn half_precision_keeps_dtype() -> Result<()> {
        let x = batch(0, (4, 3, 5, 5)).to_dtype(DType::F16)?;
        let mut rng = Rng::new(0);
        let all = Augment {
            hflip_probability: 0.5,
            crop_padding: 1,
            rotation_degrees: 20.0,
            brightness: 0.3,
            contrast: 0.3,
            saturation: 0.3,
        };
        assert_eq!(all.apply(&x, &mut rng)?.dtype(), DType::F16);
        assert_eq!(rotate(&x, &[90.0; 4], 0.0)?.dtype(), DType::F16);
        // Quarter turns stay exact in F16 too.
        let expected = x.transpose(2, 3)?.contiguous()?.flip(&[2])?;
        assert_eq!(values(&rotate(&x, &[90.0; 4], 0.0)?), values(&expected));
        assert_eq!(adjust_contrast(&x, &[0.5; 4])?.dtype(), DType::F16);
        let bf = x.to_dtype(DType::BF16)?;
        assert_eq!(all.apply(&bf, &mut rng)?.dtype(), DType::BF16);
        Ok(())
    }
}
