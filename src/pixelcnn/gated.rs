//! The Gated PixelCNN body (van den Oord et al. 2016, "Conditional Image Generation with PixelCNN
//! Decoders").
//!
//! Each layer has a vertical stack `v` (a `(k/2 + 1) x k` convolution over the current and the `k/2` rows
//! above, padded at the top only) and a horizontal stack `h` (a `1 x (k/2 + 1)` masked convolution over the
//! current pixel and the `k/2` to its left). The vertical pre-activation, shifted down one row so that it
//! only holds rows strictly above, reaches the horizontal stack through a 1x1 convolution:
//!
//! `v' = gate(V * v + c)`, `h' = h + R(gate(H * h + L(shift(V * v)) + c))` with
//! `gate([a, b]) = tanh(a) ⊙ σ(b)` and `c` the optional per-class bias.
//!
//! The vertical stack sees the whole `k`-wide window above, so the receptive field has no blind spot.
//! The first layer (mask A, kernel `k1`) has no residual connection.

use candle_core::{Module, Tensor};
use candle_nn::VarBuilder;

use super::config::Config;
use crate::nn::masked_conv::{MaskType, MaskedConv2d, MaskedConvConfig};
use crate::{Error, Result};

/// Adds the per-class bias `cond[layer](labels)` `(B, N)` to `x` `(B, N, H, W)`; `x` itself when the body is
/// unconditional.
pub(crate) fn class_bias(
    x: &Tensor,
    cond: &[candle_nn::Embedding],
    layer: usize,
    labels: Option<&Tensor>,
) -> Result<Tensor> {
    match (cond.get(layer), labels) {
        (Some(e), Some(y)) => {
            let b = e.forward(y)?;
            let (n, c) = b.dims2()?;
            Ok(x.broadcast_add(&b.reshape((n, c, 1, 1))?)?)
        }
        (None, _) => Ok(x.clone()),
        (Some(_), None) => Err(Error::shape("PixelCnn::forward", "a conditional model needs labels")),
    }
}

/// `tanh(a) ⊙ σ(b)` where, within each of `groups` contiguous channel groups of `x` `(B, 2N, H, W)`, the
/// first half is `a` and the second `b`: `(B, N, H, W)` with the same contiguous groups.
fn gate(x: &Tensor, groups: usize) -> Result<Tensor> {
    let (b, c2, h, w) = x.dims4()?;
    let per = c2 / (2 * groups);
    let x = x.reshape((b, groups, 2, per, h, w))?;
    let a = x.narrow(2, 0, 1)?.tanh()?;
    let s = candle_nn::ops::sigmoid(&x.narrow(2, 1, 1)?)?;
    Ok((a * s)?.reshape((b, c2 / 2, h, w))?)
}

/// A plain convolution with explicit zero padding `(top, left, right)` (none at the bottom).
#[derive(Debug, Clone)]
struct VerticalConv {
    weight: Tensor,
    bias: Tensor,
    pad: (usize, usize),
}

impl VerticalConv {
    fn new(cin: usize, cout: usize, k: usize, vb: VarBuilder) -> Result<Self> {
        let weight = vb.get((cout, cin, k / 2 + 1, k), "weight")?;
        let bias = vb.get(cout, "bias")?;
        Ok(Self { weight, bias, pad: (k / 2, k / 2) })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = x.pad_with_zeros(2, self.pad.0, 0)?.pad_with_zeros(3, self.pad.1, self.pad.1)?;
        let y = crate::nn::conv::conv2d(&x, &self.weight, 0, 1, 1)?;
        crate::nn::channel_bias::add_channel_bias(&y, &self.bias)
    }
}

/// One gated layer: `v` (vertical), `h` (horizontal, masked), `link` (1x1, vertical to horizontal),
/// `res` (1x1 on the horizontal output, masked B; absent in the first layer) and `cond` (per-class bias
/// `(classes, 2·hidden)`, added to both stacks).
#[derive(Debug, Clone)]
struct GatedLayer {
    v: VerticalConv,
    h: MaskedConv2d,
    link: MaskedConv2d,
    res: Option<MaskedConv2d>,
    cond: Vec<candle_nn::Embedding>,
    groups: usize,
}

impl GatedLayer {
    fn new(config: &Config, cin: usize, k: usize, first: bool, vb: VarBuilder) -> Result<Self> {
        let (n, g) = (config.hidden, config.colour_groups());
        let mask = if first { MaskType::A } else { MaskType::B };
        let v = VerticalConv::new(cin, 2 * n, k, vb.pp("v"))?;
        let h = MaskedConv2d::new(MaskedConvConfig::row(cin, 2 * n, k, mask, g), vb.pp("h"))?;
        // The link reads rows strictly above, which carry no colour order: an unmasked 1x1.
        let link = MaskedConv2d::new(MaskedConvConfig::square(2 * n, 2 * n, 1, MaskType::B, 1), vb.pp("link"))?;
        let res = if first {
            None
        } else {
            Some(MaskedConv2d::new(MaskedConvConfig::square(n, n, 1, MaskType::B, g), vb.pp("res"))?)
        };
        let cond = if config.num_classes > 0 {
            vec![candle_nn::embedding(config.num_classes, 2 * n, vb.pp("cond"))?]
        } else {
            Vec::new()
        };
        Ok(Self { v, h, link, res, cond, groups: g })
    }

    fn forward(&self, v: &Tensor, h: &Tensor, labels: Option<&Tensor>) -> Result<(Tensor, Tensor)> {
        let v_pre = class_bias(&self.v.forward(v)?, &self.cond, 0, labels)?;
        let rows = v_pre.dim(2)?;
        let shifted = v_pre.pad_with_zeros(2, 1, 0)?.narrow(2, 0, rows)?;
        let h_pre = (self.h.forward(h)? + self.link.forward(&shifted)?)?;
        let h_pre = class_bias(&h_pre, &self.cond, 0, labels)?;
        // The vertical stack's features carry no colour order, so its gate splits plain halves.
        let v_out = gate(&v_pre, 1)?;
        let gated = gate(&h_pre, self.groups)?;
        let h_out = match &self.res {
            Some(res) => (h + res.forward(&gated)?)?,
            None => gated,
        };
        Ok((v_out, h_out))
    }
}

/// The Gated PixelCNN's layers `layers.{l}`: layer 0 (mask A, kernel `first_kernel`, from the image),
/// then `config.layers` residual layers (mask B, kernel `kernel`).
#[derive(Debug, Clone)]
pub struct GatedBody {
    layers: Vec<GatedLayer>,
}

impl GatedBody {
    /// Builds the body's variables under `vb` for a validated `config`.
    pub fn new(config: &Config, vb: VarBuilder) -> Result<Self> {
        let mut layers =
            vec![GatedLayer::new(config, config.image_channels, config.first_kernel, true, vb.pp("layers.0"))?];
        for l in 1..=config.layers {
            layers.push(GatedLayer::new(config, config.hidden, config.kernel, false, vb.pp(format!("layers.{l}")))?);
        }
        Ok(Self { layers })
    }

    /// `(B, C, H, W)` -> the horizontal stack's output `(B, hidden, H, W)`.
    pub fn forward(&self, x: &Tensor, labels: Option<&Tensor>) -> Result<Tensor> {
        let (mut v, mut h) = (x.clone(), x.clone());
        for layer in &self.layers {
            (v, h) = layer.forward(&v, &h, labels)?;
        }
        Ok(h)
    }

    /// Every masked layer of the body (the vertical convolutions are causal by padding, not masking).
    pub fn masked_layers(&self) -> Vec<&MaskedConv2d> {
        self.layers
            .iter()
            .flat_map(|l| std::iter::once(&l.h).chain(std::iter::once(&l.link)).chain(l.res.iter()))
            .collect()
    }
}
