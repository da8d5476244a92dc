//! [`Config`]: which autoregressive network ([`Architecture`]), its widths and kernels, its output
//! [`Head`] and its classes. The default is the benchmark's `pixelcnn` configuration.

use serde::{Deserialize, Serialize};

use crate::losses::autoregressive::mixture_param_channels;
use crate::{Error, Result};

/// The network body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Architecture {
    /// PixelCNN (van den Oord et al. 2016, "Pixel Recurrent Neural Networks"): a masked-A `k1 x k1`
    /// convolution, ReLU, then residual blocks `h + ReLU(maskedB(h))`. Its stacked masks leave a blind
    /// spot: pixels above and to the right of the current one beyond the first layer's reach.
    #[default]
    PixelCnn,
    /// Gated PixelCNN (van den Oord et al. 2016, "Conditional Image Generation with PixelCNN Decoders"):
    /// a vertical stack (rows above) and a horizontal stack (the row to the left) with gated units
    /// `tanh(a) ⊙ σ(b)`, the vertical stack feeding the horizontal one a row later. No blind spot.
    Gated,
}

/// The per-sub-pixel output distribution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Head {
    /// A 256-way softmax per sub-pixel (van den Oord et al. 2016): `C·256` output channels, channel-major
    /// (channel `c`'s logits are `[c·256, (c+1)·256)`), trained with
    /// [`pixel_cross_entropy`](crate::losses::autoregressive::pixel_cross_entropy). Colour sub-pixels are
    /// ordered R < G < B by the masks.
    #[default]
    Softmax,
    /// PixelCNN++'s discretised logistic mixture (Salimans et al. 2017) with this many components per pixel,
    /// trained with [`discretized_logistic_mixture_nll`](crate::losses::autoregressive::discretized_logistic_mixture_nll);
    /// the colour channels of a pixel are modelled jointly by the mixture (the network sees no channel of
    /// the current pixel), for 1 or 3 channels.
    LogisticMixture {
        /// Mixture components `K` (> 0).
        components: usize,
    },
}

/// A PixelCNN or Gated PixelCNN, fully convolutional (any image size).
///
/// The default is the benchmark's `pixelcnn`: grey images, a masked-A 7x7 convolution 1 -> 64, five
/// residual masked-B 3x3 blocks 64 -> 64 with ReLU, 1x1 64 -> 64, ReLU, 1x1 64 -> 256 (208 640 parameters).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Image channels `C` (> 0; 1 or 3 for [`Head::LogisticMixture`]).
    pub image_channels: usize,
    /// The network body.
    pub architecture: Architecture,
    /// Feature channels of every hidden layer (a multiple of `image_channels` for [`Head::Softmax`], whose
    /// masks split the features into colour groups).
    pub hidden: usize,
    /// Kernel of the first (mask A) layer, odd and >= 3.
    pub first_kernel: usize,
    /// Kernel of the later (mask B) layers, odd and >= 3.
    pub kernel: usize,
    /// Residual blocks (PixelCNN) or gated layers (Gated PixelCNN) after the first layer.
    pub layers: usize,
    /// Channels of the 1x1 layer before the output layer (> 0, a multiple of `image_channels` for
    /// [`Head::Softmax`]).
    pub output_hidden: usize,
    /// The output distribution.
    pub head: Head,
    /// Classes of a class-conditional model (a learned per-class bias in every layer, van den Oord et al.
    /// 2016), 0 for an unconditional one.
    pub num_classes: usize,
}

impl Default for Config {
    /// The benchmark's `pixelcnn` configuration (see the type's documentation).
    fn default() -> Self {
        Self {
            image_channels: 1,
            architecture: Architecture::PixelCnn,
            hidden: 64,
            first_kernel: 7,
            kernel: 3,
            layers: 5,
            output_hidden: 64,
            head: Head::Softmax,
            num_classes: 0,
        }
    }
}

impl Config {
    /// A Gated PixelCNN with the default widths: 64 features, a 7x7 first layer, five 3x3 gated layers.
    pub fn gated() -> Self {
        Self { architecture: Architecture::Gated, ..Self::default() }
    }

    /// Checks every field; `Error::Config` names the first one at fault.
    pub fn validate(&self) -> Result<()> {
        if self.image_channels == 0 {
            return Err(Error::config("image_channels", "must be > 0, got 0"));
        }
        if self.hidden == 0 {
            return Err(Error::config("hidden", "must be > 0, got 0"));
        }
        if self.colour_groups() > 1 && self.hidden % self.image_channels != 0 {
            return Err(Error::config(
                "hidden",
                format!(
                    "must be a multiple of image_channels = {} (the masks split features into colour groups), got {}",
                    self.image_channels, self.hidden
                ),
            ));
        }
        for (field, k) in [("first_kernel", self.first_kernel), ("kernel", self.kernel)] {
            if k < 3 || k % 2 == 0 {
                return Err(Error::config(field, format!("must be odd and >= 3, got {k}")));
            }
        }
        if self.output_hidden == 0 || self.output_hidden % self.colour_groups() != 0 {
            return Err(Error::config(
                "output_hidden",
                format!(
                    "must be a positive multiple of the colour groups {}, got {}",
                    self.colour_groups(),
                    self.output_hidden
                ),
            ));
        }
        if let Head::LogisticMixture { components } = self.head {
            mixture_param_channels(components, self.image_channels).map_err(|e| match e {
                Error::Config { message, .. } => Error::config("head", message),
                other => other,
            })?;
        }
        Ok(())
    }

    /// The colour groups of the masks: `image_channels` for [`Head::Softmax`] (sub-pixels one at a time),
    /// 1 for [`Head::LogisticMixture`] (a pixel's channels together).
    pub fn colour_groups(&self) -> usize {
        match self.head {
            Head::Softmax => self.image_channels,
            Head::LogisticMixture { .. } => 1,
        }
    }

    /// Output channels: `C·256` for [`Head::Softmax`], the mixture's parameter channels otherwise.
    pub fn output_channels(&self) -> Result<usize> {
        match self.head {
            Head::Softmax => Ok(self.image_channels * 256),
            Head::LogisticMixture { components } => mixture_param_channels(components, self.image_channels),
        }
    }

    /// How many rows above row `i` can influence the outputs at row `i`: the first layer's `k1 / 2`, plus
    /// `k / 2` per later layer, plus one for the Gated PixelCNN's shift of the vertical stack. Sampling
    /// crops its input to these rows.
    pub fn rows_above(&self) -> usize {
        let base = self.first_kernel / 2 + self.layers * (self.kernel / 2);
        match self.architecture {
            Architecture::PixelCnn => base,
            Architecture::Gated => base + 1,
        }
    }

    /// The number of trainable parameters of this config (masked-out weights included, as in PyTorch).
    pub fn num_params(&self) -> Result<usize> {
        self.validate()?;
        let (c, h, o) = (self.image_channels, self.hidden, self.output_hidden);
        let conv = |cin: usize, cout: usize, kh: usize, kw: usize| cout * cin * kh * kw + cout;
        let (k1, k) = (self.first_kernel, self.kernel);
        let classes = self.num_classes;
        let body = match self.architecture {
            Architecture::PixelCnn => {
                conv(c, h, k1, k1) + self.layers * conv(h, h, k, k) + (1 + self.layers) * classes * h
            }
            Architecture::Gated => {
                let layer = |cin: usize, k: usize, residual: bool| {
                    conv(cin, 2 * h, k / 2 + 1, k)
                        + conv(cin, 2 * h, 1, k / 2 + 1)
                        + conv(2 * h, 2 * h, 1, 1)
                        + if residual { conv(h, h, 1, 1) } else { 0 }
                        + classes * 2 * h
                };
                layer(c, k1, false) + self.layers * layer(h, k, true)
            }
        };
        Ok(body + conv(h, o, 1, 1) + conv(o, self.output_channels()?, 1, 1))
    }
}
