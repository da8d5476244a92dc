//! What a VAE is: [`VaeSpec`] (image shape, latent size, likelihood, classes) for any encoder/decoder
//! pair, and [`Config`], the spec plus the widths of the convolutional networks of [`super::conv`].

use serde::{Deserialize, Serialize};

use super::likelihood::Likelihood;
use crate::{Error, Result};

/// The architecture-independent description of a VAE: what [`Vae`](super::Vae) needs to know about its
/// data and latent space, whatever networks encode and decode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VaeSpec {
    /// Image channels `C` (> 0).
    pub channels: usize,
    /// Image height `H` (> 0).
    pub height: usize,
    /// Image width `W` (> 0).
    pub width: usize,
    /// Latent dimensions `Z` (> 0).
    pub latent_dim: usize,
    /// The decoder's distribution `p(x|z)`, which also fixes the data range.
    pub likelihood: Likelihood,
    /// Classes of a conditional VAE (Sohn et al. 2015), `0` for an unconditional one.
    pub num_classes: usize,
}

impl VaeSpec {
    /// Checks every field; `Error::Config` names the first one at fault.
    pub fn validate(&self) -> Result<()> {
        for (field, v) in [("channels", self.channels), ("height", self.height), ("width", self.width)] {
            if v == 0 {
                return Err(Error::config(field, "must be > 0, got 0"));
            }
        }
        if self.latent_dim == 0 {
            return Err(Error::config("latent_dim", "must be > 0, got 0"));
        }
        Ok(())
    }

    /// `true` for a conditional VAE (`num_classes > 0`).
    pub fn is_conditional(&self) -> bool {
        self.num_classes > 0
    }

    /// `D = C·H·W`, the number of dimensions per image (the denominator of bits/dim).
    pub fn num_dims(&self) -> usize {
        self.channels * self.height * self.width
    }
}

/// The configuration of the convolutional VAE ([`ConvVae`](super::ConvVae)) of Kingma & Welling 2014
/// with the usual DCGAN-style networks:
///
/// ```text
/// encoder: [Conv2d(c_in, w_i, 4, stride 2, pad 1), ReLU] for w_i in conv_widths, Flatten,
///          (concat one-hot label), Linear(w_last·s·s [+K], hidden), ReLU, Linear(hidden, 2Z) -> (mean, log σ²)
/// decoder: (concat one-hot label) Linear(Z [+K], hidden), ReLU, Linear(hidden, w_last·s·s), ReLU,
///          reshape (w_last, s, s), [ConvTranspose2d(w_i, w_{i-1}, 4, 2, 1), ReLU] in reverse,
///          ConvTranspose2d(w_first, P·C, 4, 2, 1)
/// ```
///
/// with `s = image_size / 2^len(conv_widths)` and `P` the likelihood's parameters per channel.
///
/// [`Config::default`] is the crate's benchmark configuration (`shared/bench` `vae`): 1x28x28 images,
/// widths `[32, 64]`, hidden 256, latent 32, Bernoulli logits: 1 700 609 parameters, as in PyTorch.
///
/// Images are `(B, C, H, W)` in `[0, 1]` for the Bernoulli likelihood (binary for a true likelihood) and
/// in `[-1, 1]` for the Gaussian and discretised logistic ones.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Image channels `C` (> 0).
    pub image_channels: usize,
    /// Image height and width (square images), divisible by `2^len(conv_widths)` (by 4 for two widths).
    pub image_size: usize,
    /// Output channels of each stride-2 convolution of the encoder (the decoder mirrors them); non-empty,
    /// each > 0.
    pub conv_widths: Vec<usize>,
    /// Width of the hidden fully connected layer of encoder and decoder (> 0).
    pub hidden: usize,
    /// Latent dimensions `Z` (> 0).
    pub latent_dim: usize,
    /// The decoder's distribution `p(x|z)`.
    pub likelihood: Likelihood,
    /// Classes of a conditional VAE (Sohn et al. 2015): a one-hot label joins the flattened features of
    /// the encoder and the latent code of the decoder. `0` for an unconditional VAE.
    pub num_classes: usize,
}

impl Default for Config {
    /// The benchmark configuration: 1x28x28, widths `[32, 64]`, hidden 256, latent 32, Bernoulli,
    /// unconditional.
    fn default() -> Self {
        Self {
            image_channels: 1,
            image_size: 28,
            conv_widths: vec![32, 64],
            hidden: 256,
            latent_dim: 32,
            likelihood: Likelihood::Bernoulli,
            num_classes: 0,
        }
    }
}

impl Config {
    /// Checks every field; `Error::Config` names the first one at fault (e.g. `image_size` when it is
    /// not divisible by 4 with two conv widths).
    pub fn validate(&self) -> Result<()> {
        if self.image_channels == 0 {
            return Err(Error::config("image_channels", "must be > 0, got 0"));
        }
        if self.conv_widths.is_empty() {
            return Err(Error::config("conv_widths", "needs at least one convolution width"));
        }
        if let Some(i) = self.conv_widths.iter().position(|&w| w == 0) {
            return Err(Error::config("conv_widths", format!("width {i} is 0 in {:?}", self.conv_widths)));
        }
        let factor = 1usize.checked_shl(self.conv_widths.len() as u32).filter(|&f| f <= 1 << 20);
        let Some(factor) = factor else {
            return Err(Error::config("conv_widths", format!("too many convolutions: {}", self.conv_widths.len())));
        };
        if self.image_size == 0 || self.image_size % factor != 0 {
            return Err(Error::config(
                "image_size",
                format!(
                    "must be a positive multiple of {factor} (2^{} stride-2 convolutions), got {}",
                    self.conv_widths.len(),
                    self.image_size
                ),
            ));
        }
        if self.hidden == 0 {
            return Err(Error::config("hidden", "must be > 0, got 0"));
        }
        if self.latent_dim == 0 {
            return Err(Error::config("latent_dim", "must be > 0, got 0"));
        }
        Ok(())
    }

    /// The architecture-independent part.
    pub fn spec(&self) -> VaeSpec {
        VaeSpec {
            channels: self.image_channels,
            height: self.image_size,
            width: self.image_size,
            latent_dim: self.latent_dim,
            likelihood: self.likelihood,
            num_classes: self.num_classes,
        }
    }

    /// Side length `s` of the smallest feature map, `image_size / 2^len(conv_widths)`.
    pub fn bottleneck_size(&self) -> usize {
        self.image_size >> self.conv_widths.len().min(usize::BITS as usize - 1)
    }

    /// The number of trainable parameters the networks will have (weights and biases), computed from
    /// the config alone; `ConvVae::new` creates exactly this many.
    pub fn num_params(&self) -> usize {
        let k = 16; // 4x4 kernels
        let (c, z, h, classes) = (self.image_channels, self.latent_dim, self.hidden, self.num_classes);
        let last = self.conv_widths.last().copied().unwrap_or(0);
        let flat = last * self.bottleneck_size() * self.bottleneck_size();
        let mut inputs = vec![c];
        inputs.extend(&self.conv_widths);
        let convs: usize = inputs.windows(2).map(|w| w[0] * w[1] * k + w[1]).sum();
        let encoder = convs + (flat + classes) * h + h + h * 2 * z + 2 * z;
        let mut outputs: Vec<usize> = vec![self.likelihood.params_per_channel() * c];
        outputs.extend(&self.conv_widths);
        let deconvs: usize = outputs.windows(2).map(|w| w[1] * w[0] * k + w[0]).sum();
        let decoder = (z + classes) * h + h + h * flat + flat + deconvs;
        encoder + decoder
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(e: Error) -> String {
        match e {
            Error::Config { field, .. } => field,
            other => panic!("expected a config error, got {other}"),
        }
    }

    #[test]
    fn default_is_the_benchmark_and_validates() {
        let cfg = Config::default();
        cfg.validate().unwrap();
        assert_eq!(cfg.bottleneck_size(), 7);
        assert_eq!(cfg.num_params(), 1_700_609);
        assert_eq!(cfg.spec().num_dims(), 784);
    }

    #[test]
    fn bad_fields_are_named() {
        let bad = |f: fn(&mut Config)| {
            let mut c = Config::default();
            f(&mut c);
            field_of(c.validate().unwrap_err())
        };
        assert_eq!(bad(|c| c.image_size = 30), "image_size");
        assert_eq!(bad(|c| c.image_size = 0), "image_size");
        assert_eq!(bad(|c| c.image_channels = 0), "image_channels");
        assert_eq!(bad(|c| c.conv_widths = vec![]), "conv_widths");
        assert_eq!(bad(|c| c.conv_widths = vec![32, 0]), "conv_widths");
        assert_eq!(bad(|c| c.conv_widths = vec![1; 80]), "conv_widths");
        assert_eq!(bad(|c| c.hidden = 0), "hidden");
        assert_eq!(bad(|c| c.latent_dim = 0), "latent_dim");
        let spec = VaeSpec { latent_dim: 0, ..Config::default().spec() };
        assert_eq!(field_of(spec.validate().unwrap_err()), "latent_dim");
        let spec = VaeSpec { width: 0, ..Config::default().spec() };
        assert_eq!(field_of(spec.validate().unwrap_err()), "width");
    }

    #[test]
    fn serde_round_trip_and_partial_json() {
        let cfg = Config { likelihood: Likelihood::DiscretizedLogistic, num_classes: 10, ..Config::default() };
        let json = serde_json::to_string(&cfg).unwrap();
        assert_eq!(serde_json::from_str::<Config>(&json).unwrap(), cfg);
        let partial: Config = serde_json::from_str(r#"{"latent_dim": 8}"#).unwrap();
        assert_eq!(partial, Config { latent_dim: 8, ..Config::default() });
        assert!(serde_json::from_str::<Config>(r#"{"likelihood": "poisson"}"#).is_err());
    }
}
