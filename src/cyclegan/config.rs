//! The architectures of CycleGAN's ResNet generator and PatchGAN discriminator.

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The ResNet generator of Johnson, Alahi & Fei-Fei 2016 as CycleGAN uses it (Zhu et al. 2017,
/// appendix 7.2). With `w = base_width`, `n = downsamplings`, `C_in = in_channels` and
/// `C_out = out_channels`:
///
/// ```text
/// (B, C_in, H, W) -> ReflectionPad(3) -> Conv(C_in, w, 7) -> IN -> ReLU
///   -> n x [Conv(3, stride 2, pad 1) doubling the channels -> IN -> ReLU]     (H / 2^n, W / 2^n)
///   -> residual_blocks x [x + (ReflectionPad(1) -> Conv(3) -> IN -> ReLU -> ReflectionPad(1) -> Conv(3) -> IN)]
///   -> n x [ConvTranspose(3, stride 2, pad 1, output pad 1) halving the channels -> IN -> ReLU]
///   -> ReflectionPad(3) -> Conv(w, C_out, 7) -> tanh                      (B, C_out, H, W) in [-1, 1]
/// ```
///
/// `IN` is [`InstanceNorm2d`](crate::nn::InstanceNorm2d) (`affine = instance_norm_affine`);
/// every convolution has a bias, as in the reference code with instance norm. `H` and `W` must
/// be multiples of `2^n` (and at least 4 so the 7x7 reflection pad fits). Weights are
/// N(0, 0.02), biases 0 (the reference's `init_type = normal`), drawn from the crate's `Rng`.
///
/// [`GeneratorConfig::default`] is the crate's reference `cyclegan` benchmark generator
/// (`shared/bench`): grey images, width 32, 2 downsamplings, 3 residual blocks, 1 073 281
/// parameters. The paper's 256x256 RGB generator is `{ in_channels: 3, out_channels: 3,
/// base_width: 64, residual_blocks: 9, ..Default::default() }` (6 blocks at 128x128).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct GeneratorConfig {
    /// Channels of the input images (> 0).
    pub in_channels: usize,
    /// Channels of the output images (> 0).
    pub out_channels: usize,
    /// Channels `w` of the first and last hidden layers (> 0); the bottleneck has `w 2^n`.
    pub base_width: usize,
    /// Number `n` of stride-2 convolutions (and of transposed convolutions), 0..=6.
    pub downsamplings: usize,
    /// Residual blocks at the bottleneck (> 0 is usual; 0 is allowed).
    pub residual_blocks: usize,
    /// Learnt scale and shift in the instance norms (PyTorch's and the paper's default: off).
    pub instance_norm_affine: bool,
}

impl Default for GeneratorConfig {
    /// The reference `cyclegan` bench generator: 1 -> 1 channels, width 32, 2 downsamplings,
    /// 3 residual blocks, instance norm without affine parameters.
    fn default() -> Self {
        Self {
            in_channels: 1,
            out_channels: 1,
            base_width: 32,
            downsamplings: 2,
            residual_blocks: 3,
            instance_norm_affine: false,
        }
    }
}

impl GeneratorConfig {
    /// Checks every field; an `Error::Config` names the first one out of range.
    pub fn validate(&self) -> Result<()> {
        positive("GeneratorConfig.in_channels", self.in_channels)?;
        positive("GeneratorConfig.out_channels", self.out_channels)?;
        positive("GeneratorConfig.base_width", self.base_width)?;
        if self.downsamplings > 6 {
            return Err(Error::config(
                "GeneratorConfig.downsamplings",
                format!("must be at most 6, got {}", self.downsamplings),
            ));
        }
        if self.residual_blocks > 64 {
            return Err(Error::config(
                "GeneratorConfig.residual_blocks",
                format!("must be at most 64, got {}", self.residual_blocks),
            ));
        }
        Ok(())
    }

    /// The number of trainable parameters the generator has: every convolution's weight and
    /// bias, plus `2 C` per instance norm when it is affine.
    pub fn parameter_count(&self) -> usize {
        let conv = |i: usize, o: usize, k: usize| i * o * k * k + o;
        let norm = |c: usize| if self.instance_norm_affine { 2 * c } else { 0 };
        let w = self.base_width;
        let n = self.downsamplings;
        let mut total = conv(self.in_channels, w, 7) + norm(w);
        for i in 0..n {
            let c = w << i;
            // The stride-2 convolution c -> 2c and its mirror, the transposed convolution 2c -> c.
            total += conv(c, 2 * c, 3) + norm(2 * c) + conv(2 * c, c, 3) + norm(c);
        }
        let bottleneck = w << n;
        total += self.residual_blocks * 2 * (conv(bottleneck, bottleneck, 3) + norm(bottleneck));
        total + conv(w, self.out_channels, 7)
    }
}

/// The PatchGAN discriminator of Isola et al. 2017 (pix2pix's `NLayerDiscriminator`), as
/// CycleGAN uses it. With `w = base_width` and `n = layers`:
///
/// ```text
/// (B, C, H, W) -> Conv(C, w, 4, stride 2, pad 1) -> LeakyReLU
///   -> for k in 1..n: Conv(4, stride 2, pad 1) to w min(2^k, 8) channels -> IN -> LeakyReLU
///   -> Conv(4, stride 1, pad 1) to w min(2^n, 8) channels -> IN -> LeakyReLU
///   -> Conv(.., 1, 4, stride 1, pad 1)                       logits (B, 1, H', W')
/// ```
///
/// Each output logit judges one overlapping patch (70x70 pixels for `n = 3` at 256x256); the
/// losses average over the map. Every convolution has a bias; weights N(0, 0.02), biases 0.
///
/// [`DiscriminatorConfig::default`] is the crate's reference `cyclegan` benchmark
/// discriminator: grey images, width 32, `layers = 2` (28x28 images give a 5x5 map), 166 625
/// parameters. The paper's 70x70 PatchGAN is `{ in_channels: 3, base_width: 64, layers: 3, ..}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DiscriminatorConfig {
    /// Channels of the images (> 0).
    pub in_channels: usize,
    /// Channels `w` of the first convolution (> 0).
    pub base_width: usize,
    /// Number `n` of stride-2 convolutions, 1..=8.
    pub layers: usize,
    /// Learnt scale and shift in the instance norms (default off).
    pub instance_norm_affine: bool,
    /// Negative slope of the leaky ReLUs, in `[0, 1)` (0.2).
    pub leaky_relu_slope: f64,
}

impl Default for DiscriminatorConfig {
    /// The reference `cyclegan` bench discriminator: 1 channel, width 32, 2 stride-2 layers,
    /// instance norm without affine parameters, slope 0.2.
    fn default() -> Self {
        Self { in_channels: 1, base_width: 32, layers: 2, instance_norm_affine: false, leaky_relu_slope: 0.2 }
    }
}

impl DiscriminatorConfig {
    /// Checks every field; an `Error::Config` names the first one out of range.
    pub fn validate(&self) -> Result<()> {
        positive("DiscriminatorConfig.in_channels", self.in_channels)?;
        positive("DiscriminatorConfig.base_width", self.base_width)?;
        if !(1..=8).contains(&self.layers) {
            return Err(Error::config("DiscriminatorConfig.layers", format!("must be in 1..=8, got {}", self.layers)));
        }
        if !(0.0..1.0).contains(&self.leaky_relu_slope) {
            return Err(Error::config(
                "DiscriminatorConfig.leaky_relu_slope",
                format!("must be in [0, 1), got {}", self.leaky_relu_slope),
            ));
        }
        Ok(())
    }

    /// The channels of each convolution, `(in, out, stride)`, in order.
    pub(crate) fn layout(&self) -> Vec<(usize, usize, usize)> {
        let w = self.base_width;
        let width = |k: usize| w * (1usize << k.min(3));
        let mut layers = vec![(self.in_channels, w, 2)];
        for k in 1..self.layers {
            layers.push((width(k - 1), width(k), 2));
        }
        layers.push((width(self.layers - 1), width(self.layers), 1));
        layers.push((width(self.layers), 1, 1));
        layers
    }

    /// The number of trainable parameters: every convolution's weight and bias, plus `2 C` per
    /// instance norm when it is affine.
    pub fn parameter_count(&self) -> usize {
        let layout = self.layout();
        let last = layout.len() - 1;
        layout
            .iter()
            .enumerate()
            .map(|(i, &(cin, cout, _))| {
                let norm = if self.instance_norm_affine && i != 0 && i != last { 2 * cout } else { 0 };
                cin * cout * 16 + cout + norm
            })
            .sum()
    }

    /// The side of the logit map for an input side `s` (each 4x4 convolution with padding 1 maps
    /// `s` to `(s + 2 - 4) / stride + 1`), or `None` when a layer's input would be smaller than
    /// its kernel.
    pub fn output_side(&self, s: usize) -> Option<usize> {
        self.layout().iter().try_fold(s, |s, &(_, _, stride)| (s + 2 >= 4).then(|| (s + 2 - 4) / stride + 1))
    }
}

fn positive(field: &str, value: usize) -> Result<()> {
    if value == 0 {
        Err(Error::config(field, "must be > 0"))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_and_output_sizes() {
        let d = DiscriminatorConfig::default();
        assert_eq!(d.layout(), vec![(1, 32, 2), (32, 64, 2), (64, 128, 1), (128, 1, 1)]);
        assert_eq!(d.output_side(28), Some(5)); // 28 -> 14 -> 7 -> 6 -> 5
        assert_eq!(d.output_side(2), None);
        let paper = DiscriminatorConfig { layers: 3, base_width: 64, ..d.clone() };
        assert_eq!(paper.output_side(256), Some(30)); // pix2pix's 30x30 map of 70x70 patches
        let deep = DiscriminatorConfig { layers: 5, ..d };
        assert_eq!(deep.layout()[4], (256, 256, 2), "the width stops doubling at 8 w");
    }
}
