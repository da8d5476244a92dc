//! The ResNet generator (Johnson et al. 2016; Zhu et al. 2017); see [`GeneratorConfig`].

use candle_core::{Module, Tensor};
use candle_nn::VarBuilder;

use crate::nn::{Conv2d, ConvTranspose2d};

use super::config::GeneratorConfig;
use super::layers::{check_images, LayerBuilder};
use super::traits::Translator;
use crate::nn::instance_norm::InstanceNorm2d;
use crate::nn::reflection_pad::reflection_pad2d;
use crate::rng::Rng;
use crate::{Error, Result};

/// One residual block: `x + IN(Conv3(pad(ReLU(IN(Conv3(pad(x)))))))`.
#[derive(Debug, Clone)]
struct ResidualBlock {
    conv1: Conv2d,
    norm1: InstanceNorm2d,
    conv2: Conv2d,
    norm2: InstanceNorm2d,
}

impl ResidualBlock {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.norm1.forward(&self.conv1.forward(&reflection_pad2d(x, 1)?)?)?.relu()?;
        let h = self.norm2.forward(&self.conv2.forward(&reflection_pad2d(&h, 1)?)?)?;
        Ok((x + h)?)
    }
}

/// CycleGAN's ResNet generator: reflection-padded 7x7 input convolution, stride-2
/// downsamplings, residual blocks, transposed-convolution upsamplings and a 7x7 output
/// convolution with `tanh`, instance norm throughout; the layout is in [`GeneratorConfig`].
///
/// Variables under the builder's prefix: `input.conv`, `down{i}.conv`, `res{j}.conv1`,
/// `res{j}.conv2`, `up{i}.conv`, `output.conv` (each `.weight` and `.bias`), and the norms'
/// `.weight`/`.bias` when affine.
#[derive(Debug, Clone)]
pub struct ResnetGenerator {
    config: GeneratorConfig,
    input: (Conv2d, InstanceNorm2d),
    down: Vec<(Conv2d, InstanceNorm2d)>,
    blocks: Vec<ResidualBlock>,
    up: Vec<(ConvTranspose2d, InstanceNorm2d)>,
    output: Conv2d,
}

impl ResnetGenerator {
    /// Builds the generator of `config` under `vb` and initialises its weights from `rng`
    /// (N(0, 0.02), biases 0). `Error::Config` for an invalid config.
    pub fn new(config: &GeneratorConfig, vb: VarBuilder, rng: &mut Rng) -> Result<Self> {
        config.validate()?;
        let mut b = LayerBuilder::new(vb.clone());
        let (w, affine) = (config.base_width, config.instance_norm_affine);
        let input = (b.conv("input.conv", (config.in_channels, w, 7), 1, 0)?, b.norm("input.norm", w, affine)?);
        let mut down = Vec::with_capacity(config.downsamplings);
        for i in 0..config.downsamplings {
            let c = w << i;
            let name = format!("down{i}");
            down.push((
                b.conv(&format!("{name}.conv"), (c, 2 * c, 3), 2, 1)?,
                b.norm(&format!("{name}.norm"), 2 * c, affine)?,
            ));
        }
        let c = w << config.downsamplings;
        let mut blocks = Vec::with_capacity(config.residual_blocks);
        for j in 0..config.residual_blocks {
            let name = format!("res{j}");
            blocks.push(ResidualBlock {
                conv1: b.conv(&format!("{name}.conv1"), (c, c, 3), 1, 0)?,
                norm1: b.norm(&format!("{name}.norm1"), c, affine)?,
                conv2: b.conv(&format!("{name}.conv2"), (c, c, 3), 1, 0)?,
                norm2: b.norm(&format!("{name}.norm2"), c, affine)?,
            });
        }
        let mut up = Vec::with_capacity(config.downsamplings);
        for i in (0..config.downsamplings).rev() {
            let c = w << i;
            let name = format!("up{i}");
            up.push((b.upsample(&format!("{name}.conv"), 2 * c, c)?, b.norm(&format!("{name}.norm"), c, affine)?));
        }
        let output = b.conv("output.conv", (w, config.out_channels, 7), 1, 0)?;
        b.init(rng)?;
        Ok(Self { config: config.clone(), input, down, blocks, up, output })
    }

    /// The configuration it was built from.
    pub fn config(&self) -> &GeneratorConfig {
        &self.config
    }

    /// Translates `x`: `(B, in_channels, H, W)` in `[-1, 1]` with `H` and `W` multiples of
    /// `2^downsamplings` and at least 4, to `(B, out_channels, H, W)` in `[-1, 1]`. Other shapes
    /// are `Error::Shape`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (_, h, w) = check_images("ResnetGenerator", x, self.config.in_channels)?;
        let m = 1usize << self.config.downsamplings;
        if h % m != 0 || w % m != 0 || h < 4 || w < 4 {
            return Err(Error::shape(
                "ResnetGenerator",
                format!(
                    "height and width must be multiples of 2^downsamplings = {m} and at least 4, got {:?}",
                    x.dims()
                ),
            ));
        }
        let (conv, norm) = &self.input;
        let mut h = norm.forward(&conv.forward(&reflection_pad2d(x, 3)?)?)?.relu()?;
        for (conv, norm) in &self.down {
            h = norm.forward(&conv.forward(&h)?)?.relu()?;
        }
        for block in &self.blocks {
            h = block.forward(&h)?;
        }
        for (conv, norm) in &self.up {
            h = norm.forward(&conv.forward(&h)?)?.relu()?;
        }
        Ok(self.output.forward(&reflection_pad2d(&h, 3)?)?.tanh()?)
    }
}

impl Translator for ResnetGenerator {
    fn translate(&self, x: &Tensor, _train: bool) -> Result<Tensor> {
        self.forward(x)
    }
}
