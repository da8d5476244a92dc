//! The PatchGAN discriminator (Isola et al. 2017); see [`DiscriminatorConfig`].

use candle_core::{Module, Tensor};
use candle_nn::VarBuilder;

use crate::nn::Conv2d;

use super::config::DiscriminatorConfig;
use super::layers::{check_images, LayerBuilder};
use super::traits::Discriminator;
use crate::nn::instance_norm::InstanceNorm2d;
use crate::rng::Rng;
use crate::{Error, Result};

/// A PatchGAN discriminator: 4x4 convolutions with leaky ReLUs and instance norm (none after the
/// first and the last convolution), ending in a map of logits, one per overlapping patch; the
/// layout is in [`DiscriminatorConfig`].
///
/// Variables under the builder's prefix: `conv{i}.weight`, `conv{i}.bias` for `i` in
/// `0..=layers + 1`, and `norm{i}.weight`/`.bias` when the norms are affine.
#[derive(Debug, Clone)]
pub struct PatchDiscriminator {
    config: DiscriminatorConfig,
    layers: Vec<(Conv2d, Option<InstanceNorm2d>)>,
}

impl PatchDiscriminator {
    /// Builds the discriminator of `config` under `vb` and initialises its weights from `rng`
    /// (N(0, 0.02), biases 0). `Error::Config` for an invalid config.
    pub fn new(config: &DiscriminatorConfig, vb: VarBuilder, rng: &mut Rng) -> Result<Self> {
        config.validate()?;
        let mut b = LayerBuilder::new(vb);
        let layout = config.layout();
        let last = layout.len() - 1;
        let mut layers = Vec::with_capacity(layout.len());
        for (i, &(cin, cout, stride)) in layout.iter().enumerate() {
            let conv = b.conv(&format!("conv{i}"), (cin, cout, 4), stride, 1)?;
            let norm = if i == 0 || i == last {
                None
            } else {
                Some(b.norm(&format!("norm{i}"), cout, config.instance_norm_affine)?)
            };
            layers.push((conv, norm));
        }
        b.init(rng)?;
        Ok(Self { config: config.clone(), layers })
    }

    /// The configuration it was built from.
    pub fn config(&self) -> &DiscriminatorConfig {
        &self.config
    }

    /// Logits `(B, 1, H', W')` for images `(B, in_channels, H, W)` in `[-1, 1]`, with `H'` and
    /// `W'` from [`DiscriminatorConfig::output_side`]. Images too small for the layers, or of the
    /// wrong shape, are `Error::Shape`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (_, h, w) = check_images("PatchDiscriminator", x, self.config.in_channels)?;
        if self.config.output_side(h).is_none() || self.config.output_side(w).is_none() {
            return Err(Error::shape(
                "PatchDiscriminator",
                format!("images {:?} are too small for {} stride-2 layers", x.dims(), self.config.layers),
            ));
        }
        let last = self.layers.len() - 1;
        let mut h = x.clone();
        for (i, (conv, norm)) in self.layers.iter().enumerate() {
            h = conv.forward(&h)?;
            if let Some(norm) = norm {
                h = norm.forward(&h)?;
            }
            if i != last {
                h = candle_nn::ops::leaky_relu(&h, self.config.leaky_relu_slope)?;
            }
        }
        Ok(h)
    }
}

impl Discriminator for PatchDiscriminator {
    fn discriminate(&self, x: &Tensor, _train: bool) -> Result<Tensor> {
        self.forward(x)
    }
}
