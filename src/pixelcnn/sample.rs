//! Ancestral sampling, pixel by pixel in raster order (and sub-pixel by sub-pixel, R < G < B, for the
//! softmax head), with a temperature, for a batch at once, seeded by the crate's [`Rng`].
//!
//! Each step needs the outputs at one pixel, which depend only on the rows above it within
//! [`Config::rows_above`](super::Config::rows_above) and on the current row: with
//! [`SampleOptions::crop_rows`] the network runs on rows `i - rows_above ..= i` only (zero padding above
//! the crop cannot reach row `i`), instead of the whole image. [`SampleCost`] reports what was computed.

use std::time::Instant;

use candle_core::{DType, IndexOp, Tensor};

use super::config::Head;
use super::model::PixelCnn;
use crate::rng::Rng;
use crate::{Error, Result};

/// How [`sample`] draws.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SampleOptions {
    /// Temperature `T > 0`: softmax logits are divided by `T`, and a mixture's component logits are divided
    /// by `T` and its logistic scales multiplied by `T`. `T = 1` samples the model; `T < 1` is greedier.
    pub temperature: f64,
    /// Run the network only on the rows that can influence the current one (exact, and cheaper); `false`
    /// runs it on the whole image each time (for comparison).
    pub crop_rows: bool,
}

impl Default for SampleOptions {
    /// `T = 1`, cropping on.
    fn default() -> Self {
        Self { temperature: 1.0, crop_rows: true }
    }
}

/// What a [`sample`] call computed.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct SampleCost {
    /// Network evaluations (one per pixel for a mixture head, one per sub-pixel for the softmax head), each
    /// on the whole batch.
    pub forward_passes: usize,
    /// Image rows fed to the network, summed over the forward passes.
    pub rows_computed: usize,
    /// Image rows the same passes would have fed without cropping (`forward_passes · H`).
    pub rows_uncropped: usize,
    /// Wall-clock seconds.
    pub seconds: f64,
}

impl SampleCost {
    /// `rows_computed / rows_uncropped`: the fraction of the uncropped work done (about that of the time).
    pub fn fraction_of_uncropped(&self) -> f64 {
        self.rows_computed as f64 / self.rows_uncropped.max(1) as f64
    }
}

/// One value `0..=255` from 256 logits divided by `temperature`, by inverse CDF with one uniform draw.
pub fn sample_softmax(logits: &[f32], temperature: f64, rng: &mut Rng) -> u8 {
    let scaled: Vec<f64> = logits.iter().map(|&l| l as f64 / temperature).collect();
    let m = scaled.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let weights: Vec<f64> = scaled.iter().map(|l| (l - m).exp()).collect();
    let total: f64 = weights.iter().sum();
    let mut u = rng.uniform_f64() * total;
    for (k, w) in weights.iter().enumerate() {
        if u < *w {
            return k as u8;
        }
        u -= w;
    }
    // Rounding left `u` just above the last weight's share: the last value with positive weight.
    weights.iter().rposition(|w| *w > 0.0).unwrap_or(0) as u8
}

/// One pixel `[R, G, B]` (or `[grey]`) from PixelCNN++ mixture parameters `params` (`P` values of one
/// pixel, laid out as [`discretized_logistic_mixture_nll`](crate::losses::autoregressive::discretized_logistic_mixture_nll)
/// reads them, `K` components): a component from the tempered mixture weights, then each channel from its
/// logistic `μ + s·T·logit(u)` (log-scale clamped at -7), the means of G and B shifted by the tanh
/// coefficients times the earlier channels' 8-bit values, clamped to `[-1, 1]` and rounded to `0..=255`.
pub fn sample_mixture(params: &[f32], channels: usize, temperature: f64, rng: &mut Rng) -> Vec<u8> {
    let per = if channels == 1 { 2 } else { 3 };
    let k = params.len() / (1 + channels * per);
    let comp = sample_softmax(&params[..k], temperature, rng) as usize;
    let block = |c: usize, part: usize| params[k + c * per * k + part * k + comp] as f64;
    let mut values = Vec::with_capacity(channels);
    let mut out = Vec::with_capacity(channels);
    for c in 0..channels {
        let mut mean = block(c, 0);
        if channels == 3 {
            // Block 0's coefficient is α (G on R), block 1's β (B on R), block 2's γ (B on G).
            let coeff = |b: usize| block(b, 2).tanh();
            match c {
                1 => mean += coeff(0) * values[0],
                2 => mean += coeff(1) * values[0] + coeff(2) * values[1],
                _ => {}
            }
        }
        let scale = block(c, 1).max(-7.0).exp() * temperature;
        let u = rng.uniform_f64().clamp(1e-5, 1.0 - 1e-5);
        let x = (mean + scale * (u.ln() - (1.0 - u).ln())).clamp(-1.0, 1.0);
        let pixel = ((x + 1.0) * 127.5).round().clamp(0.0, 255.0);
        out.push(pixel as u8);
        values.push(pixel / 127.5 - 1.0);
    }
    out
}

/// Draws `n` images `(n, C, height, width)` `U8` (`0..=255`) from `model`, pixel by pixel; `labels` `(n,)`
/// `U32` for a conditional model. Costs `H·W` forward passes (`H·W·C` for the softmax head with `C > 1`),
/// reported in [`SampleCost`].
///
/// A temperature that is not finite and positive, or `n`, `height`, `width` = 0, is `Error::Config`.
pub fn sample(
    model: &PixelCnn,
    n: usize,
    height: usize,
    width: usize,
    labels: Option<&Tensor>,
    opts: &SampleOptions,
    rng: &mut Rng,
) -> Result<(Tensor, SampleCost)> {
    if !(opts.temperature.is_finite() && opts.temperature > 0.0) {
        return Err(Error::config("temperature", format!("must be finite and > 0, got {}", opts.temperature)));
    }
    for (field, v) in [("n", n), ("height", height), ("width", width)] {
        if v == 0 {
            return Err(Error::config(field, "must be > 0"));
        }
    }
    let started = Instant::now();
    let config = model.config();
    let c = config.image_channels;
    let device = model.device();
    let mut pixels = vec![0u8; n * c * height * width];
    let mut cost = SampleCost::default();
    let index = |b: usize, ch: usize, y: usize, x: usize| ((b * c + ch) * height + y) * width + x;
    let passes_per_pixel = match config.head {
        Head::Softmax => c,
        Head::LogisticMixture { .. } => 1,
    };
    for i in 0..height {
        let (r0, r1) = if opts.crop_rows { (i.saturating_sub(config.rows_above()), i + 1) } else { (0, height) };
        let rows = r1 - r0;
        for j in 0..width {
            for pass in 0..passes_per_pixel {
                let mut crop = Vec::with_capacity(n * c * rows * width);
                for b in 0..n {
                    for ch in 0..c {
                        for y in r0..r1 {
                            let start = index(b, ch, y, 0);
                            crop.extend(pixels[start..start + width].iter().map(|&p| p as f32 / 127.5 - 1.0));
                        }
                    }
                }
                let x = Tensor::from_vec(crop, (n, c, rows, width), device)?;
                let out = model.forward(&x, labels)?;
                let at = out.i((.., .., i - r0, j))?.to_dtype(DType::F32)?.to_vec2::<f32>()?;
                cost.forward_passes += 1;
                cost.rows_computed += rows;
                cost.rows_uncropped += height;
                for (b, params) in at.iter().enumerate() {
                    match config.head {
                        Head::Softmax => {
                            let logits = &params[pass * 256..(pass + 1) * 256];
                            pixels[index(b, pass, i, j)] = sample_softmax(logits, opts.temperature, rng);
                        }
                        Head::LogisticMixture { .. } => {
                            for (ch, v) in sample_mixture(params, c, opts.temperature, rng).into_iter().enumerate() {
                                pixels[index(b, ch, i, j)] = v;
                            }
                        }
                    }
                }
            }
        }
    }
    cost.seconds = started.elapsed().as_secs_f64();
    Ok((Tensor::from_vec(pixels, (n, c, height, width), device)?, cost))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_sampling_matches_the_tempered_probabilities() {
        let mut logits = vec![f32::NEG_INFINITY; 256];
        logits[3] = 0.0;
        logits[7] = (3f32).ln();
        let mut rng = Rng::new(1);
        let n = 20_000;
        let sevens = (0..n).filter(|_| sample_softmax(&logits, 1.0, &mut rng) == 7).count();
        // p(7) = 3/4; 4 standard deviations of the binomial are about 0.012.
        assert!((sevens as f64 / n as f64 - 0.75).abs() < 0.012, "{sevens}");
        // T = 0.5 squares the odds: p(7) = 9/10.
        let sevens = (0..n).filter(|_| sample_softmax(&logits, 0.5, &mut rng) == 7).count();
        assert!((sevens as f64 / n as f64 - 0.9).abs() < 0.009, "{sevens}");
    }

    #[test]
    fn mixture_sampling_centres_on_the_mean_and_follows_the_coefficients() {
        // One component, grey: mean 0.2 (pixel 153), tiny scale.
        let mut rng = Rng::new(2);
        let p = [0.0, 0.2, -7.0];
        assert_eq!(sample_mixture(&p, 1, 1.0, &mut rng), vec![153]);
        // Colour: R mean 0.5; G mean 0 + tanh(atanh(0.5))·R; B mean -0.5 + 0·R + tanh(atanh(-1/2))·G.
        let a = 0.5f32.atanh();
        let p = [0.0, 0.5, -7.0, a, 0.0, -7.0, 0.0, -0.5, -7.0, -a];
        let v = sample_mixture(&p, 3, 1.0, &mut rng);
        let r = v[0] as f64 / 127.5 - 1.0;
        let g = v[1] as f64 / 127.5 - 1.0;
        assert!((r - 0.5).abs() < 0.01 && (g - 0.5 * r).abs() < 0.01, "{v:?}");
        let b = v[2] as f64 / 127.5 - 1.0;
        assert!((b - (-0.5 - 0.5 * g)).abs() < 0.01, "{v:?}");
    }
}
