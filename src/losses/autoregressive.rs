//! Likelihoods of autoregressive pixel models: PixelCNN's 256-way softmax (van den Oord et al. 2016) and
//! PixelCNN++'s mixture of discretised logistics (Salimans et al. 2017), with bits per dimension.
//!
//! Both give discrete log-probabilities of 8-bit images, so their negative log-likelihood in nats per
//! image divided by `D ln 2` ([`nats_to_bits_per_dim`], `D = C·H·W`) is the code length in bits per
//! sub-pixel with no further correction (uniform predictions give exactly 8 bits/dim).

use candle_core::{DType, Tensor};

use super::{logistic, Reduction};
use crate::{Error, Result};

/// Number of values of an 8-bit sub-pixel.
const LEVELS: usize = 256;

/// PixelCNN's 256-way cross-entropy per sub-pixel (van den Oord et al. 2016):
/// `l = -log softmax(logits)[target]`, with a stable log-softmax over the 256 values, then `reduction`.
///
/// - `targets`: `(B, C, H, W)` integer pixel values in `0..=255`, dtype `U8`, `U32` or `I64`;
/// - `logits`: floating point, either
///   - `(B, 256, C, H, W)`: value axis second, as PyTorch's `cross_entropy` expects; or
///   - `(B, C·256, H, W)`, channel-major: channel `c`'s 256 logits are channels `[c·256, (c+1)·256)`,
///     i.e. the tensor reshapes to `(B, C, 256, H, W)` (what a conv layer with `C·256` outputs gives
///     when reshaped channel by channel).
///
/// The per-element losses are `(B, C, H, W)` nats per sub-pixel: [`Reduction::Mean`] gives nats per
/// dimension (divide by `ln 2` for bits/dim), [`Reduction::SumPerSampleMean`] nats per image.
/// Shapes that do not match, other dtypes and targets outside `0..=255` are `Error::Shape` (the range
/// check of `U32`/`I64` targets reads two scalars back from the device).
///
/// ```
/// use candle_core::{DType, Device, Tensor};
/// use candle_generative::losses::autoregressive::{nats_to_bits_per_dim, pixel_cross_entropy};
/// use candle_generative::losses::Reduction;
///
/// let dev = Device::Cpu;
/// // Two grey 4x4 images and a model that finds all 256 values equally likely: 8 bits per sub-pixel.
/// let targets = Tensor::new(&[[[[0u8, 17, 255, 128]; 4]], [[[3u8, 9, 200, 1]; 4]]], &dev)?;
/// let logits = Tensor::zeros((2, 256, 4, 4), DType::F32, &dev)?; // (B, C·256, H, W) with C = 1
/// let nats = pixel_cross_entropy(&logits, &targets, Reduction::SumPerSampleMean)?;
/// let bits_per_dim = nats_to_bits_per_dim(nats.to_scalar::<f32>()? as f64, 16)?;
/// assert!((bits_per_dim - 8.0).abs() < 1e-5);
/// # Ok::<(), candle_generative::Error>(())
/// ```
pub fn pixel_cross_entropy(logits: &Tensor, targets: &Tensor, reduction: Reduction) -> Result<Tensor> {
    let logits = &crate::losses::full_precision(logits)?;
    const CTX: &str = "pixel_cross_entropy";
    let (b, c, h, w) = match targets.dims() {
        &[b, c, h, w] => (b, c, h, w),
        d => return Err(Error::shape(CTX, format!("targets must be (B, C, H, W), got {d:?}"))),
    };
    if !matches!(targets.dtype(), DType::U8 | DType::U32 | DType::I64) {
        return Err(Error::shape(CTX, format!("targets must be U8, U32 or I64, got {:?}", targets.dtype())));
    }
    if !logits.dtype().is_float() {
        return Err(Error::shape(CTX, format!("logits must be floating point, got {:?}", logits.dtype())));
    }
    let value_dim = match logits.rank() {
        5 if logits.dims() == [b, LEVELS, c, h, w] => 1,
        4 if logits.dims() == [b, c * LEVELS, h, w] => 2,
        _ => {
            return Err(Error::shape(
                CTX,
                format!(
                    "logits must be (B, 256, C, H, W) = {:?} or (B, C*256, H, W) = {:?} for targets {:?}, got {:?}",
                    [b, LEVELS, c, h, w],
                    [b, c * LEVELS, h, w],
                    targets.dims(),
                    logits.dims()
                ),
            ))
        }
    };
    check_pixel_values(CTX, targets)?;
    let logits = if value_dim == 2 { logits.reshape((b, c, LEVELS, h, w))? } else { logits.clone() };
    let log_probs = candle_nn::ops::log_softmax(&logits, value_dim)?;
    // candle's gather reads the largest value of the index dtype as "no index" and returns 0 there, which
    // for U8 is the pixel value 255; U32 indices (already checked to be <= 255) never reach it.
    let index = targets.to_dtype(DType::U32)?.unsqueeze(value_dim)?.contiguous()?;
    let nll = log_probs.gather(&index, value_dim)?.squeeze(value_dim)?.neg()?;
    reduction.apply(&nll)
}

/// Bits per dimension of a negative log-likelihood in nats per image: `nll / (dims · ln 2)`.
///
/// `dims` is the number of sub-pixels `C·H·W` (784 for MNIST, 3072 for CIFAR-10). Exact for the
/// discrete likelihoods of this module; a continuous density needs the dequantisation term first (see
/// [`super::elbo`]). `dims = 0` is `Error::Config`.
pub fn nats_to_bits_per_dim(nll_nats_per_image: f64, dims: usize) -> Result<f64> {
    if dims == 0 {
        return Err(Error::config("dims", "nats_to_bits_per_dim needs at least one dimension"));
    }
    Ok(nll_nats_per_image / (dims as f64 * std::f64::consts::LN_2))
}

/// The number of parameter channels a PixelCNN++ output layer needs for `num_mix` logistic components
/// over `channels` colour channels: `3·num_mix` for `C = 1`, `10·num_mix` for `C = 3`.
///
/// Other channel counts, or `num_mix = 0`, are `Error::Config`.
pub fn mixture_param_channels(num_mix: usize, channels: usize) -> Result<usize> {
    if num_mix == 0 {
        return Err(Error::config("num_mix", "a mixture needs at least one component"));
    }
    Ok(num_mix * params_per_component(channels).map_err(|m| Error::config("channels", m))?)
}

fn params_per_component(channels: usize) -> std::result::Result<usize, String> {
    match channels {
        1 => Ok(3),
        3 => Ok(10),
        c => Err(format!("the discretised logistic mixture supports 1 or 3 channels, got {c}")),
    }
}

/// PixelCNN++'s negative log-likelihood of 8-bit images under a mixture of discretised logistics
/// (Salimans et al. 2017), per pixel, then `reduction`.
///
/// Each pixel's channels share one mixture over `K` components with weights `π = softmax(logit_probs)`:
/// `p(x) = Σ_k π_k Π_c P(x_c | μ_ck, s_ck)`, each `P` a discretised logistic bin of width `2/255` with the
/// edge bins extended to ±∞ (the implementation shared with
/// [`discretized_logistic_log_likelihood`](super::elbo::discretized_logistic_log_likelihood); log-scales
/// clamped at -7). For colour images the channel means are autoregressive through `tanh` coefficients
/// `α, β, γ`: `μ_G = μ'_G + α R`, `μ_B = μ'_B + β R + γ G`.
///
/// - `x`: `(B, C, H, W)` in `[-1, 1]` on the grid `2k/255 - 1`, `C` = 1 or 3 (values outside
///   `[-1.001, 1.001]` or NaN are `Error::Shape`; the check syncs the device);
/// - `params`: `(B, P, H, W)`, same dtype, with `P = 3K` (`C = 1`) or `10K` (`C = 3`)
///   ([`mixture_param_channels`]), laid out as the reference implementation's channels-last vector:
///   channels `[0, K)` are the logit probabilities; then channel `c` owns the block
///   `[K + c·nK, K + (c+1)·nK)` (`n = 2` for `C = 1`, `3` for `C = 3`) holding `K` means, `K` log-scales
///   and, for `C = 3`, `K` raw coefficients (`tanh` is applied here), where block 0's coefficients are `α`,
///   block 1's `β` and block 2's `γ`.
///
/// Per-element losses are `(B, H, W)` nats per pixel (all channels jointly): [`Reduction::SumPerSampleMean`]
/// gives nats per image, for [`nats_to_bits_per_dim`] with `dims = C·H·W`. Other channel counts or a `P`
/// that is not a positive multiple are `Error::Shape`.
pub fn discretized_logistic_mixture_nll(params: &Tensor, x: &Tensor, reduction: Reduction) -> Result<Tensor> {
    let (params, x) = (&crate::losses::full_precision(params)?, &crate::losses::full_precision(x)?);
    const CTX: &str = "discretized_logistic_mixture_nll";
    let (b, c, h, w) = match x.dims() {
        &[b, c, h, w] => (b, c, h, w),
        d => return Err(Error::shape(CTX, format!("x must be (B, C, H, W), got {d:?}"))),
    };
    let per_component = params_per_component(c).map_err(|m| Error::shape(CTX, m))?;
    let p = match params.dims() {
        &[pb, p, ph, pw] if (pb, ph, pw) == (b, h, w) && p > 0 && p % per_component == 0 => p,
        d => {
            return Err(Error::shape(
                CTX,
                format!(
                "params must be (B, {per_component}K, H, W) = ({b}, {per_component}K, {h}, {w}) for x {:?}, got {d:?}",
                x.dims()
            ),
            ))
        }
    };
    if !x.dtype().is_float() || params.dtype() != x.dtype() {
        return Err(Error::shape(
            CTX,
            format!("params and x must share a floating-point dtype, got {:?} and {:?}", params.dtype(), x.dtype()),
        ));
    }
    logistic::check_unit_range(CTX, x)?;
    let k = p / per_component;
    let blocks = if c == 1 { 2 } else { 3 };
    let logit_probs = params.narrow(1, 0, k)?;
    let per_channel = params.narrow(1, k, p - k)?.reshape((b, c, blocks, k, h, w))?;
    let part = |j: usize| per_channel.narrow(2, j, 1)?.squeeze(2);
    let (means, log_scales) = (part(0)?, part(1)?);
    let means = if c == 3 {
        let coeffs = part(2)?.tanh()?;
        let coeff = |i: usize| coeffs.narrow(1, i, 1);
        let mean = |i: usize| means.narrow(1, i, 1);
        let channel = |i: usize| x.narrow(1, i, 1)?.unsqueeze(2);
        let (red, green) = (channel(0)?, channel(1)?);
        let mean_green = (mean(1)? + coeff(0)?.broadcast_mul(&red)?)?;
        let mean_blue = ((mean(2)? + coeff(1)?.broadcast_mul(&red)?)? + coeff(2)?.broadcast_mul(&green)?)?;
        Tensor::cat(&[mean(0)?, mean_green, mean_blue], 1)?
    } else {
        means
    };
    // (B, C, K, H, W) log-probabilities, joint over channels, weighted, then mixed over K.
    let log_probs = logistic::log_prob(&x.unsqueeze(2)?, &means, &log_scales)?;
    let joint = (log_probs.sum(1)? + candle_nn::ops::log_softmax(&logit_probs, 1)?)?;
    // The shift is a constant for the gradient (it cancels), so it is detached.
    let shift = joint.max_keepdim(1)?.detach();
    let log_mix = (joint.broadcast_sub(&shift)?.exp()?.sum_keepdim(1)?.log()? + shift)?.squeeze(1)?;
    reduction.apply(&log_mix.neg()?)
}

/// `Err(Error::Shape)` unless every target is in `0..=255` (always true for `U8`).
fn check_pixel_values(context: &str, targets: &Tensor) -> Result<()> {
    if targets.elem_count() == 0 {
        return Ok(());
    }
    let (lo, hi) = match targets.dtype() {
        DType::U8 => return Ok(()),
        DType::U32 => (0, targets.max_all()?.to_scalar::<u32>()? as i64),
        _ => (targets.min_all()?.to_scalar::<i64>()?, targets.max_all()?.to_scalar::<i64>()?),
    };
    if lo < 0 || hi > 255 {
        return Err(Error::shape(context, format!("targets must be pixel values in 0..=255, got [{lo}, {hi}]")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::logistic::testing::*;
    use super::*;
    use crate::rng::Rng;
    use candle_core::Device;

    fn grid(k: usize) -> f64 {
        2.0 * k as f64 / 255.0 - 1.0
    }

    fn log_sum_exp(v: &[f64]) -> f64 {
        let m = v.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        m + v.iter().map(|x| (x - m).exp()).sum::<f64>().ln()
    }

    /// Reference per-sub-pixel NLL for channel-major `(B, C*256, H, W)` (`rank5 = false`) or
    /// `(B, 256, C, H, W)` logits.
    fn reference_cross_entropy(logits: &[f64], targets: &[u32], dims: [usize; 4], rank5: bool) -> Vec<f64> {
        let [b, c, h, w] = dims;
        let mut out = Vec::new();
        for bi in 0..b {
            for ci in 0..c {
                for pix in 0..h * w {
                    let at = |v: usize| {
                        let row = if rank5 { (bi * LEVELS + v) * c + ci } else { (bi * c + ci) * LEVELS + v };
                        logits[row * h * w + pix]
                    };
                    let all: Vec<f64> = (0..LEVELS).map(at).collect();
                    let t = targets[(bi * c + ci) * h * w + pix] as usize;
                    out.push(log_sum_exp(&all) - at(t));
                }
            }
        }
        out
    }

    #[test]
    fn cross_entropy_matches_reference_in_both_layouts() -> Result<()> {
        let dims = [2, 3, 2, 3];
        let n = 2 * 3 * 6;
        for dtype in [DType::F32, DType::F64] {
            let mut rng = Rng::new(20);
            let logits = normal_values(&mut rng, n * LEVELS, 3.0, dtype);
            let targets: Vec<u32> = (0..n).map(|_| rng.below(256).unwrap() as u32).collect();
            let t = Tensor::from_vec(targets.clone(), dims.to_vec(), &Device::Cpu)?;
            for (rank5, shape) in [(false, vec![2, 3 * LEVELS, 2, 3]), (true, vec![2, LEVELS, 3, 2, 3])] {
                let want = reference_cross_entropy(&logits, &targets, dims, rank5);
                let lt = tensor(&logits, &shape, dtype)?;
                for t in [t.clone(), t.to_dtype(DType::U8)?, t.to_dtype(DType::I64)?] {
                    let got = values(&pixel_cross_entropy(&lt, &t, Reduction::None)?)?;
                    assert_close(&format!("pixel CE rank5={rank5} {dtype:?}"), &got, &want, tolerance(dtype));
                }
                let mean = pixel_cross_entropy(&lt, &t, Reduction::Mean)?;
                let want_mean = want.iter().sum::<f64>() / n as f64;
                assert_close("pixel CE mean", &values(&mean)?, &[want_mean], tolerance(dtype));
            }
        }
        Ok(())
    }

    #[test]
    fn uniform_logits_give_eight_bits_per_dim() -> Result<()> {
        let targets = Rng::new(21).randint((3, 3, 4, 5), 0, 256, &Device::Cpu)?;
        let logits = Tensor::zeros((3, 3 * LEVELS, 4, 5), DType::F32, &Device::Cpu)?;
        let per_sub_pixel = values(&pixel_cross_entropy(&logits, &targets, Reduction::None)?)?;
        assert!(per_sub_pixel.iter().all(|v| (v - 256f64.ln()).abs() < 1e-5));
        let mean = pixel_cross_entropy(&logits, &targets, Reduction::Mean)?.to_scalar::<f32>()? as f64;
        assert!((mean / std::f64::consts::LN_2 - 8.0).abs() < 1e-5);
        let per_image = pixel_cross_entropy(&logits, &targets, Reduction::SumPerSampleMean)?.to_scalar::<f32>()?;
        assert!((nats_to_bits_per_dim(per_image as f64, 3 * 4 * 5)? - 8.0).abs() < 1e-5);
        assert!(matches!(nats_to_bits_per_dim(1.0, 0), Err(Error::Config { .. })));
        Ok(())
    }

    #[test]
    fn extreme_logits_are_finite() -> Result<()> {
        let mut v = vec![-100.0; 2 * LEVELS];
        v[7] = 100.0;
        v[LEVELS + 200] = 100.0;
        let logits = tensor(&v, &[1, 2 * LEVELS, 1, 1], DType::F32)?;
        let targets = Tensor::new(&[[[[7u8]], [[3u8]]]], &Device::Cpu)?;
        let got = values(&pixel_cross_entropy(&logits, &targets, Reduction::None)?)?;
        assert!(got[0].abs() < 1e-6 && (got[1] - 200.0).abs() < 1e-3, "{got:?}");

        let mut rng = Rng::new(22);
        let params: Vec<f64> = (0..20).map(|_| if rng.coin(0.5) { 100.0 } else { -100.0 }).collect();
        let x = tensor(&[-1.0, 0.2, 1.0], &[1, 3, 1, 1], DType::F32)?;
        let nll = values(&discretized_logistic_mixture_nll(
            &tensor(&params, &[1, 20, 1, 1], DType::F32)?,
            &x,
            Reduction::None,
        )?)?;
        assert!(nll.iter().all(|v| v.is_finite() && *v >= 0.0), "{nll:?}");
        Ok(())
    }

    /// Reference mixture NLL per pixel, in plain loops over the documented parameter layout.
    fn reference_mixture(params: &[f64], x: &[f64], dims: [usize; 4], k: usize) -> Vec<f64> {
        let [b, c, h, w] = dims;
        let p = params.len() / (b * h * w);
        let blocks = if c == 1 { 2 } else { 3 };
        let mut out = Vec::new();
        for bi in 0..b {
            for pix in 0..h * w {
                let param = |ch: usize| params[(bi * p + ch) * h * w + pix];
                let xc = |ci: usize| x[(bi * c + ci) * h * w + pix];
                let logits: Vec<f64> = (0..k).map(param).collect();
                let norm = log_sum_exp(&logits);
                let joint: Vec<f64> = (0..k)
                    .map(|kk| {
                        let at = |ci: usize, j: usize| param(k + ci * blocks * k + j * k + kk);
                        let mut lp = logits[kk] - norm;
                        for ci in 0..c {
                            let mut mean = at(ci, 0);
                            if ci == 1 {
                                mean += at(0, 2).tanh() * xc(0);
                            } else if ci == 2 {
                                mean += at(1, 2).tanh() * xc(0) + at(2, 2).tanh() * xc(1);
                            }
                            lp += reference_log_prob(xc(ci), mean, at(ci, 1));
                        }
                        lp
                    })
                    .collect();
                out.push(-log_sum_exp(&joint));
            }
        }
        out
    }

    fn random_mixture_inputs(rng: &mut Rng, dims: [usize; 4], k: usize, dtype: DType) -> (Vec<f64>, Vec<f64>) {
        let [b, c, h, w] = dims;
        let p = mixture_param_channels(k, c).unwrap();
        let mut params = normal_values(rng, b * p * h * w, 1.0, dtype);
        // Log-scales around e^-3, as a trained model has, so the bins matter.
        let blocks = if c == 1 { 2 } else { 3 };
        for bi in 0..b {
            for ci in 0..c {
                for kk in 0..k {
                    for pix in 0..h * w {
                        let i = (bi * p + k + ci * blocks * k + k + kk) * h * w + pix;
                        params[i] = round_to(params[i] - 3.0, dtype);
                    }
                }
            }
        }
        let x = (0..b * c * h * w).map(|_| round_to(grid(rng.below(256).unwrap()), dtype)).collect();
        (params, x)
    }

    #[test]
    fn mixture_matches_reference() -> Result<()> {
        for dtype in [DType::F32, DType::F64] {
            for (c, k) in [(1, 4), (3, 5)] {
                let dims = [2, c, 3, 2];
                let (params, x) = random_mixture_inputs(&mut Rng::new(23), dims, k, dtype);
                let p = mixture_param_channels(k, c)?;
                let pt = tensor(&params, &[2, p, 3, 2], dtype)?;
                let xt = tensor(&x, &dims, dtype)?;
                let want = reference_mixture(&params, &x, dims, k);
                let got = values(&discretized_logistic_mixture_nll(&pt, &xt, Reduction::None)?)?;
                assert_close(&format!("mixture C={c} {dtype:?}"), &got, &want, tolerance(dtype));
                let per_image = discretized_logistic_mixture_nll(&pt, &xt, Reduction::SumPerSampleMean)?;
                let want_per_image = want.iter().sum::<f64>() / 2.0;
                assert_close("mixture per image", &values(&per_image)?, &[want_per_image], tolerance(dtype));
            }
        }
        Ok(())
    }

    #[test]
    fn mixture_sums_to_one_grey() -> Result<()> {
        let k = 3;
        let (params, _) = random_mixture_inputs(&mut Rng::new(24), [1, 1, 1, 1], k, DType::F64);
        let params = tensor(&params, &[1, 3 * k, 1, 1], DType::F64)?.broadcast_as((256, 3 * k, 1, 1))?;
        let x = tensor(&(0..256).map(grid).collect::<Vec<_>>(), &[256, 1, 1, 1], DType::F64)?;
        let nll = values(&discretized_logistic_mixture_nll(&params, &x, Reduction::None)?)?;
        let total: f64 = nll.iter().map(|v| (-v).exp()).sum();
        assert!((total - 1.0).abs() < 1e-6, "sum {total}");
        Ok(())
    }

    #[test]
    fn mixture_sums_to_one_colour() -> Result<()> {
        // All 256³ colours of one pixel: red fixed per call, green along H, blue along W.
        let k = 2;
        let (params, _) = random_mixture_inputs(&mut Rng::new(25), [1, 3, 1, 1], k, DType::F64);
        let params =
            tensor(&params, &[1, 10 * k, 1, 1], DType::F64)?.broadcast_as((1, 10 * k, 256, 256))?.contiguous()?;
        let levels = tensor(&(0..256).map(grid).collect::<Vec<_>>(), &[256], DType::F64)?;
        let green = levels.reshape((1, 1, 256, 1))?.broadcast_as((1, 1, 256, 256))?;
        let blue = levels.reshape((1, 1, 1, 256))?.broadcast_as((1, 1, 256, 256))?;
        let mut total = 0.0;
        for red in 0..256 {
            let red = Tensor::full(grid(red), (1, 1, 256, 256), &Device::Cpu)?;
            let x = Tensor::cat(&[&red, &green, &blue], 1)?;
            let nll = discretized_logistic_mixture_nll(&params, &x, Reduction::None)?;
            total += nll.neg()?.exp()?.sum_all()?.to_scalar::<f64>()?;
        }
        assert!((total - 1.0).abs() < 1e-6, "sum {total}");
        Ok(())
    }

    #[test]
    fn gradients_match_finite_differences() -> Result<()> {
        let dt = DType::F64;
        let mut rng = Rng::new(26);
        let logits = tensor(&normal_values(&mut rng, 2 * 2 * LEVELS * 2, 2.0, dt), &[1, 2 * LEVELS, 2, 2], dt)?;
        let targets = rng.randint((1, 2, 2, 2), 0, 256, &Device::Cpu)?;
        grad_check("pixel CE channel-major", &logits, |l| pixel_cross_entropy(l, &targets, Reduction::Sum))?;
        let logits5 = logits.reshape((1, LEVELS, 2, 2, 2))?;
        grad_check("pixel CE (B,256,C,H,W)", &logits5, |l| pixel_cross_entropy(l, &targets, Reduction::Mean))?;

        for (c, k) in [(1, 3), (3, 2)] {
            let dims = [1, c, 2, 2];
            let (params, x) = random_mixture_inputs(&mut rng, dims, k, dt);
            let p = mixture_param_channels(k, c)?;
            let params = tensor(&params, &[1, p, 2, 2], dt)?;
            let x = tensor(&x, &dims, dt)?;
            grad_check(&format!("mixture C={c}"), &params, |v| {
                discretized_logistic_mixture_nll(v, &x, Reduction::SumPerSampleMean)
            })?;
        }
        Ok(())
    }

    #[test]
    fn bad_inputs_are_errors() -> Result<()> {
        let dev = Device::Cpu;
        let logits = Tensor::zeros((2, 512, 3, 3), DType::F32, &dev)?;
        let targets = Tensor::zeros((2, 2, 3, 3), DType::U32, &dev)?;
        let shape_err = |r: Result<Tensor>| matches!(r, Err(Error::Shape { .. }));
        assert!(pixel_cross_entropy(&logits, &targets, Reduction::Mean).is_ok());
        assert!(shape_err(pixel_cross_entropy(&logits, &(&targets + 256.0)?, Reduction::Mean)));
        assert!(shape_err(pixel_cross_entropy(&logits, &(targets.to_dtype(DType::I64)? - 1.0)?, Reduction::Mean)));
        assert!(shape_err(pixel_cross_entropy(&logits, &targets.to_dtype(DType::F32)?, Reduction::Mean)));
        assert!(shape_err(pixel_cross_entropy(&logits.narrow(1, 0, 256)?, &targets, Reduction::Mean)));
        assert!(shape_err(pixel_cross_entropy(&logits, &targets.narrow(0, 0, 1)?, Reduction::Mean)));
        assert!(shape_err(pixel_cross_entropy(&logits, &targets.flatten_from(2)?, Reduction::Mean)));
        assert!(shape_err(pixel_cross_entropy(&logits.to_dtype(DType::U32)?, &targets, Reduction::Mean)));
        let message = pixel_cross_entropy(&logits.narrow(1, 0, 256)?, &targets, Reduction::Mean).unwrap_err();
        assert!(message.to_string().contains("pixel_cross_entropy") && message.to_string().contains("[2, 256, 3, 3]"));

        let x = Tensor::zeros((2, 3, 4, 4), DType::F32, &dev)?;
        let params = Tensor::zeros((2, 20, 4, 4), DType::F32, &dev)?;
        assert!(discretized_logistic_mixture_nll(&params, &x, Reduction::Mean).is_ok());
        assert!(shape_err(discretized_logistic_mixture_nll(&params.narrow(1, 0, 15)?, &x, Reduction::Mean)));
        assert!(shape_err(discretized_logistic_mixture_nll(&params.narrow(3, 0, 3)?, &x, Reduction::Mean)));
        assert!(shape_err(discretized_logistic_mixture_nll(&params, &x.narrow(1, 0, 2)?, Reduction::Mean)));
        assert!(shape_err(discretized_logistic_mixture_nll(&params, &(&x + 1.5)?, Reduction::Mean)));
        assert!(shape_err(discretized_logistic_mixture_nll(&params.to_dtype(DType::F64)?, &x, Reduction::Mean)));
        assert!(shape_err(discretized_logistic_mixture_nll(&params, &x.flatten_from(2)?, Reduction::Mean)));
        assert!(matches!(mixture_param_channels(2, 2), Err(Error::Config { .. })));
        assert!(matches!(mixture_param_channels(0, 1), Err(Error::Config { .. })));
        assert_eq!(mixture_param_channels(10, 3)?, 100);
        Ok(())
    }
}
