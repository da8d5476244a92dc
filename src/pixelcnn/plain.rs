//! The PixelCNN body (van den Oord et al. 2016, "Pixel Recurrent Neural Networks"): a masked-A `k1 x k1`
//! convolution and ReLU, then residual blocks `h + ReLU(maskedB_k(h))`, with an optional per-class bias
//! added before each ReLU.

use candle_core::Tensor;
use candle_nn::{Module, VarBuilder};

use super::config::Config;
use super::gated::class_bias;
use crate::nn::masked_conv::{MaskType, MaskedConv2d, MaskedConvConfig};
use crate::Result;

/// PixelCNN's masked convolutions: `input` (mask A, `C -> hidden`) and the residual `blocks.{l}`
/// (mask B, `hidden -> hidden`); conditional models add `cond.{l}` embeddings `(classes, hidden)`.
#[derive(Debug, Clone)]
pub struct PixelCnnBody {
    input: MaskedConv2d,
    blocks: Vec<MaskedConv2d>,
    cond: Vec<candle_nn::Embedding>,
}

impl PixelCnnBody {
    /// Builds the body's variables under `vb` for a validated `config`.
    pub fn new(config: &Config, vb: VarBuilder) -> Result<Self> {
        let g = config.colour_groups();
        let input = MaskedConv2d::new(
            MaskedConvConfig::square(config.image_channels, config.hidden, config.first_kernel, MaskType::A, g),
            vb.pp("input"),
        )?;
        let blocks = (0..config.layers)
            .map(|l| {
                MaskedConv2d::new(
                    MaskedConvConfig::square(config.hidden, config.hidden, config.kernel, MaskType::B, g),
                    vb.pp(format!("blocks.{l}")),
                )
            })
            .collect::<Result<Vec<_>>>()?;
        let cond = if config.num_classes > 0 {
            (0..=config.layers)
                .map(|l| Ok(candle_nn::embedding(config.num_classes, config.hidden, vb.pp(format!("cond.{l}")))?))
                .collect::<Result<Vec<_>>>()?
        } else {
            Vec::new()
        };
        Ok(Self { input, blocks, cond })
    }

    /// `(B, C, H, W)` -> `(B, hidden, H, W)`; `labels` `(B,)` `U32` for a conditional body.
    pub fn forward(&self, x: &Tensor, labels: Option<&Tensor>) -> Result<Tensor> {
        let mut h = class_bias(&self.input.forward(x)?, &self.cond, 0, labels)?.relu()?;
        for (l, block) in self.blocks.iter().enumerate() {
            let r = class_bias(&block.forward(&h)?, &self.cond, l + 1, labels)?.relu()?;
            h = (h + r)?;
        }
        Ok(h)
    }

    /// Every masked layer of the body.
    pub fn masked_layers(&self) -> Vec<&MaskedConv2d> {
        std::iter::once(&self.input).chain(self.blocks.iter()).collect()
    }
}
