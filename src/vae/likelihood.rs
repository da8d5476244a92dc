//! The decoder's output distribution `p(x|z)`: Bernoulli, Gaussian or discretised logistic.
//!
//! A decoder returns `P·C` channels per pixel, `P` = [`Likelihood::params_per_channel`]:
//! - [`Likelihood::Bernoulli`] (`P = 1`): logits `l`, `p(x = 1|z) = σ(l)`; data in `[0, 1]`, binary for a
//!   true probability (binarised MNIST, Salakhutdinov & Murray 2008);
//! - [`Likelihood::Gaussian`] (`P = 2`): a mean and a `log σ` per pixel; data in `[-1, 1]`, continuous
//!   (uniformly dequantised 8-bit data, Theis et al. 2016);
//! - [`Likelihood::DiscretizedLogistic`] (`P = 2`): a location and a `log s` per pixel; 8-bit data on
//!   the grid `2k/255 - 1` in `[-1, 1]` (Kingma et al. 2016; Salimans et al. 2017).
//!
//! The first `C` channels are the mean/logits, the next `C` the log-scales. Log-scales are clamped from
//! below at [`MIN_LOG_SCALE`].

use std::fmt;
use std::str::FromStr;

use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

use crate::data::transforms;
use crate::losses::elbo::{
    bernoulli_log_likelihood, discretized_logistic_log_likelihood, gaussian_log_likelihood, LogScale,
};
use crate::rng::Rng;
use crate::{Error, Result};

/// Log-scales (`log σ` of the Gaussian, `log s` of the logistic) are clamped from below at this value,
/// as in PixelCNN++: `e^-7 ≈ 9e-4` is already narrower than an 8-bit bin (`2/255` in `[-1, 1]` units).
pub const MIN_LOG_SCALE: f64 = -7.0;

/// The reconstruction distribution `p(x|z)` of a VAE, independent per pixel.
///
/// A decoder returns `P·C` channels, `P` = [`Likelihood::params_per_channel`]: the first `C` are the
/// means (logits for the Bernoulli), the next `C` the log-scales, clamped from below at
/// [`MIN_LOG_SCALE`].
/// - [`Likelihood::Bernoulli`] (`P = 1`): `p(x = 1|z) = σ(l)`; data in `[0, 1]`, binary for a true
///   probability (binarised MNIST, Salakhutdinov & Murray 2008);
/// - [`Likelihood::Gaussian`] (`P = 2`): mean and `log σ`; data in `[-1, 1]`, continuous (uniformly
///   dequantised 8-bit data, Theis et al. 2016);
/// - [`Likelihood::DiscretizedLogistic`] (`P = 2`): location and `log s`; 8-bit data on the grid
///   `2k/255 - 1` in `[-1, 1]` (Kingma et al. 2016; Salimans et al. 2017).
///
/// Serialised as `"bernoulli"`, `"gaussian"` or `"discretized_logistic"`; [`FromStr`] also accepts
/// `"logistic"` and `"discretised_logistic"`, and refuses anything else with `Error::Config`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Likelihood {
    /// Independent Bernoulli pixels from logits; data in `[0, 1]`.
    #[default]
    Bernoulli,
    /// Independent Gaussian pixels with a per-pixel mean and `log σ`; data in `[-1, 1]`.
    Gaussian,
    /// Independent discretised logistic 8-bit pixels with a per-pixel location and `log s`; data on the
    /// 8-bit grid in `[-1, 1]`.
    DiscretizedLogistic,
}

impl Likelihood {
    /// Every likelihood, in declaration order.
    pub const ALL: [Likelihood; 3] = [Likelihood::Bernoulli, Likelihood::Gaussian, Likelihood::DiscretizedLogistic];

    /// The name used by serde, [`FromStr`] and [`fmt::Display`].
    pub fn name(self) -> &'static str {
        match self {
            Likelihood::Bernoulli => "bernoulli",
            Likelihood::Gaussian => "gaussian",
            Likelihood::DiscretizedLogistic => "discretized_logistic",
        }
    }

    /// Decoder output channels per image channel: 1 (logits) or 2 (mean and log-scale).
    pub fn params_per_channel(self) -> usize {
        match self {
            Likelihood::Bernoulli => 1,
            Likelihood::Gaussian | Likelihood::DiscretizedLogistic => 2,
        }
    }

    /// The range of the data this likelihood models: `(0, 1)` for Bernoulli, `(-1, 1)` otherwise
    /// (use it as `GridOptions::range` when writing images).
    pub fn data_range(self) -> (f32, f32) {
        match self {
            Likelihood::Bernoulli => (0.0, 1.0),
            Likelihood::Gaussian | Likelihood::DiscretizedLogistic => (-1.0, 1.0),
        }
    }

    /// Turns images in `[0, 1]` (as [`ImageDataset::images`](crate::data::ImageDataset::images) gives
    /// them, 8-bit values `k/255`) into the data this likelihood models, drawing noise from `rng`:
    /// - Bernoulli: stochastic binarisation to `{0, 1}` ([`transforms::binarize_stochastic`]);
    /// - Gaussian: uniform dequantisation then `[-1, 1]`, `x = (k + u)/128 - 1`
    ///   ([`transforms::dequantize_uniform`], [`transforms::to_signed`]); see
    ///   [`Likelihood::dequantization_nats_per_dim`];
    /// - discretised logistic: the 8-bit grid `2k/255 - 1` ([`transforms::to_signed`]; no noise drawn).
    pub fn prepare(self, x01: &Tensor, rng: &mut Rng) -> Result<Tensor> {
        match self {
            Likelihood::Bernoulli => transforms::binarize_stochastic(x01, rng),
            Likelihood::Gaussian => transforms::to_signed(&transforms::dequantize_uniform(x01, rng)?),
            Likelihood::DiscretizedLogistic => transforms::to_signed(x01),
        }
    }

    /// Nats per dimension to add to a negative log-likelihood of data from [`Likelihood::prepare`] to
    /// make it a code length of the 8-bit data: `ln 128` for the Gaussian (a density on bins of width
    /// `2/256`; Theis et al. 2016), 0 for the two discrete likelihoods.
    pub fn dequantization_nats_per_dim(self) -> f64 {
        match self {
            Likelihood::Gaussian => 128f64.ln(),
            Likelihood::Bernoulli | Likelihood::DiscretizedLogistic => 0.0,
        }
    }

    /// Splits a decoder output `(B, P·C, H, W)` into its mean/logits and (for `P = 2`) its log-scale,
    /// clamped at [`MIN_LOG_SCALE`], each `(B, C, H, W)`. `Error::Shape` when the channel count is not
    /// a multiple of `P`.
    pub fn split(self, output: &Tensor) -> Result<(Tensor, Option<Tensor>)> {
        const CTX: &str = "Likelihood::split";
        if output.rank() != 4 {
            return Err(Error::shape(CTX, format!("decoder output must be (B, P*C, H, W), got {:?}", output.dims())));
        }
        let p = self.params_per_channel();
        let channels = output.dim(1)?;
        if channels == 0 || channels % p != 0 {
            return Err(Error::shape(
                CTX,
                format!("a {self} decoder outputs {p} channels per image channel, got {channels}"),
            ));
        }
        if p == 1 {
            return Ok((output.clone(), None));
        }
        let c = channels / p;
        let mean = output.narrow(1, 0, c)?;
        let log_scale = output.narrow(1, c, c)?.maximum(MIN_LOG_SCALE)?;
        Ok((mean, Some(log_scale)))
    }

    /// `log p(x|z)` per image, summed over pixels: `(B,)` in nats, differentiable in `output`.
    ///
    /// - `output`: the decoder's `(B, P·C, H, W)`;
    /// - `x`: the data `(B, C, H, W)` in this likelihood's range (see [`Likelihood::prepare`]), same dtype.
    ///
    /// Mismatched shapes are `Error::Shape`.
    pub fn log_prob(self, output: &Tensor, x: &Tensor) -> Result<Tensor> {
        let (mean, log_scale) = self.split(output)?;
        if mean.dims() != x.dims() {
            return Err(Error::shape(
                "Likelihood::log_prob",
                format!("decoder output {:?} does not fit data {:?} for {self}", output.dims(), x.dims()),
            ));
        }
        match (self, log_scale) {
            (Likelihood::Gaussian, Some(ls)) => gaussian_log_likelihood(&mean, x, LogScale::Learned(&ls)),
            (Likelihood::DiscretizedLogistic, Some(ls)) => discretized_logistic_log_likelihood(&mean, &ls, x),
            // `split` gives a log-scale exactly to the two-parameter likelihoods: this is the Bernoulli.
            _ => bernoulli_log_likelihood(&mean, x),
        }
    }

    /// The mean of `p(x|z)` as an image `(B, C, H, W)` in [`Likelihood::data_range`]: `σ(l)` for the
    /// Bernoulli, the location clamped to `[-1, 1]` otherwise. What reconstructions and samples show.
    pub fn mean(self, output: &Tensor) -> Result<Tensor> {
        let (mean, _) = self.split(output)?;
        Ok(match self {
            Likelihood::Bernoulli => candle_nn::ops::sigmoid(&mean)?,
            Likelihood::Gaussian | Likelihood::DiscretizedLogistic => mean.clamp(-1.0, 1.0)?,
        })
    }

    /// A draw `x ~ p(x|z)` per pixel, `(B, C, H, W)` in [`Likelihood::data_range`], from `rng`: `{0, 1}`
    /// pixels (Bernoulli), `mean + σ ε` clamped to `[-1, 1]` (Gaussian), or a logistic draw
    /// `mean + s ln(u / (1 - u))` rounded to the 8-bit grid (discretised logistic).
    pub fn sample(self, output: &Tensor, rng: &mut Rng) -> Result<Tensor> {
        let (mean, log_scale) = self.split(output)?;
        match (self, log_scale) {
            (Likelihood::Gaussian, Some(ls)) => {
                let eps = rng.randn_like(&mean)?;
                Ok((mean + (ls.exp()? * eps)?)?.clamp(-1.0, 1.0)?)
            }
            (Likelihood::DiscretizedLogistic, Some(ls)) => {
                // Open interval, so both logarithms stay finite.
                let u = rng.uniform(mean.shape().clone(), 1e-5, 1.0 - 1e-5, DType::F32, mean.device())?;
                let logit = (u.log()? - u.affine(-1.0, 1.0)?.log()?)?.to_dtype(mean.dtype())?;
                let x = (mean + (ls.exp()? * logit)?)?.clamp(-1.0, 1.0)?;
                // Snap to the grid 2k/255 - 1.
                Ok(x.affine(127.5, 127.5)?.round()?.affine(1.0 / 127.5, -1.0)?)
            }
            // `split` gives a log-scale exactly to the two-parameter likelihoods: this is the Bernoulli.
            _ => {
                let u = rng.uniform(mean.shape().clone(), 0.0, 1.0, mean.dtype(), mean.device())?;
                Ok(u.lt(&candle_nn::ops::sigmoid(&mean)?)?.to_dtype(mean.dtype())?)
            }
        }
    }
}

impl fmt::Display for Likelihood {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Likelihood {
    type Err = Error;

    /// `bernoulli`, `gaussian`, `discretized_logistic` (also `discretised_logistic`, `logistic`),
    /// case-insensitive; anything else is `Error::Config` naming the field `likelihood`.
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().replace('-', "_").as_str() {
            "bernoulli" => Ok(Likelihood::Bernoulli),
            "gaussian" | "normal" => Ok(Likelihood::Gaussian),
            "discretized_logistic" | "discretised_logistic" | "logistic" => Ok(Likelihood::DiscretizedLogistic),
            _ => Err(Error::config(
                "likelihood",
                format!("unknown likelihood `{s}` (bernoulli, gaussian, discretized_logistic)"),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn names_round_trip_and_unknown_names_are_config_errors() {
        for l in Likelihood::ALL {
            assert_eq!(l.name().parse::<Likelihood>().unwrap(), l);
            let json = serde_json::to_string(&l).unwrap();
            assert_eq!(json, format!("\"{}\"", l.name()));
            assert_eq!(serde_json::from_str::<Likelihood>(&json).unwrap(), l);
        }
        assert_eq!("Logistic".parse::<Likelihood>().unwrap(), Likelihood::DiscretizedLogistic);
        let e = "poisson".parse::<Likelihood>().unwrap_err();
        assert!(matches!(&e, Error::Config { field, .. } if field == "likelihood"), "{e}");
    }

    #[test]
    fn prepare_ranges_means_and_samples() -> Result<()> {
        let dev = Device::Cpu;
        let x01 = Tensor::from_vec((0..32u32).map(|k| (k * 8) as f32 / 255.0).collect(), (2, 1, 4, 4), &dev)?;
        let mut rng = Rng::new(0);
        for l in Likelihood::ALL {
            let x = l.prepare(&x01, &mut rng)?;
            let (lo, hi) = l.data_range();
            let v = x.flatten_all()?.to_vec1::<f32>()?;
            assert!(v.iter().all(|&e| e >= lo && e <= hi), "{l}: {v:?}");
            let out = Tensor::zeros((2, l.params_per_channel(), 4, 4), DType::F32, &dev)?;
            assert_eq!(l.log_prob(&out, &x)?.dims(), &[2]);
            for img in [l.mean(&out)?, l.sample(&out, &mut rng)?] {
                assert_eq!(img.dims(), &[2, 1, 4, 4]);
                let v = img.flatten_all()?.to_vec1::<f32>()?;
                assert!(v.iter().all(|&e| e >= lo && e <= hi), "{l}: {v:?}");
            }
        }
        let bad = Tensor::zeros((2, 3, 4, 4), DType::F32, &dev)?;
        assert!(matches!(Likelihood::Gaussian.split(&bad), Err(Error::Shape { .. })));
        let x = Tensor::zeros((2, 1, 4, 4), DType::F32, &dev)?;
        assert!(matches!(Likelihood::Bernoulli.log_prob(&bad, &x), Err(Error::Shape { .. })));
        Ok(())
    }
}
