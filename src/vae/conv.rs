//! The convolutional encoder and decoder of [`Config`] (the crate's benchmark VAE), and their seeded
//! initialisation.

use std::collections::HashMap;

use candle_core::{Module, Tensor};
use candle_nn::{Conv2dConfig, ConvTranspose2dConfig, Linear, VarBuilder};

use crate::nn::conv::{conv2d_layer, conv_transpose2d_layer, Conv2d, ConvTranspose2d};

use super::config::Config;
use super::model::{Decoder, Encoder, Vae};
use super::posterior::Posterior;
use crate::nn::init::{init_vars, InitKind};
use crate::optim::NamedVars;
use crate::rng::Rng;
use crate::{Error, Result};

/// The convolutional VAE: [`ConvEncoder`] and [`ConvDecoder`] built from a [`Config`].
pub type ConvVae = Vae<ConvEncoder, ConvDecoder>;

fn join_condition(h: &Tensor, condition: Option<&Tensor>, context: &str) -> Result<Tensor> {
    match condition {
        None => Ok(h.clone()),
        Some(c) => {
            if c.rank() != 2 || c.dim(0)? != h.dim(0)? {
                return Err(Error::shape(context, format!("condition must be (B, K), got {:?}", c.dims())));
            }
            Ok(Tensor::cat(&[h, &c.to_dtype(h.dtype())?], 1)?)
        }
    }
}

/// `[Conv2d(4, stride 2, pad 1), ReLU]*, Flatten, (concat one-hot), Linear, ReLU, Linear -> (B, 2Z)`;
/// see [`Config`]. Variables: `conv{i}.weight/bias`, `fc0.*`, `fc1.*` under its `VarBuilder` prefix.
#[derive(Debug, Clone)]
pub struct ConvEncoder {
    convs: Vec<Conv2d>,
    fc0: Linear,
    fc1: Linear,
    num_classes: usize,
}

impl ConvEncoder {
    /// Builds the encoder of `cfg` (validated) with `vb`'s dtype and device.
    pub fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        cfg.validate()?;
        let conv_cfg = Conv2dConfig { padding: 1, stride: 2, ..Default::default() };
        let mut convs = Vec::with_capacity(cfg.conv_widths.len());
        let mut c_in = cfg.image_channels;
        for (i, &w) in cfg.conv_widths.iter().enumerate() {
            convs.push(conv2d_layer(c_in, w, 4, conv_cfg, vb.pp(format!("conv{i}")))?);
            c_in = w;
        }
        let s = cfg.bottleneck_size();
        let fc0 = candle_nn::linear(c_in * s * s + cfg.num_classes, cfg.hidden, vb.pp("fc0"))?;
        let fc1 = candle_nn::linear(cfg.hidden, 2 * cfg.latent_dim, vb.pp("fc1"))?;
        Ok(Self { convs, fc0, fc1, num_classes: cfg.num_classes })
    }
}

impl Encoder for ConvEncoder {
    fn encode(&self, x: &Tensor, condition: Option<&Tensor>) -> Result<Posterior> {
        if (self.num_classes > 0) != condition.is_some() {
            return Err(Error::shape("ConvEncoder", format!("built for {} classes", self.num_classes)));
        }
        let mut h = x.clone();
        for conv in &self.convs {
            h = conv.forward(&h)?.relu()?;
        }
        let h = join_condition(&h.flatten_from(1)?, condition, "ConvEncoder")?;
        let h = self.fc0.forward(&h)?.relu()?;
        Posterior::from_stats(&self.fc1.forward(&h)?)
    }
}

/// `(concat one-hot), Linear, ReLU, Linear, ReLU, reshape, [ConvTranspose2d(4, 2, 1), ReLU]*,
/// ConvTranspose2d -> (B, P·C, H, W)`; see [`Config`]. Variables: `fc0.*`, `fc1.*`, `deconv{i}.*`.
#[derive(Debug, Clone)]
pub struct ConvDecoder {
    fc0: Linear,
    fc1: Linear,
    deconvs: Vec<ConvTranspose2d>,
    bottleneck: (usize, usize),
    num_classes: usize,
}

impl ConvDecoder {
    /// Builds the decoder of `cfg` (validated) with `vb`'s dtype and device.
    pub fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        cfg.validate()?;
        let s = cfg.bottleneck_size();
        // `validate` refuses empty widths.
        let last = cfg.conv_widths[cfg.conv_widths.len() - 1];
        let fc0 = candle_nn::linear(cfg.latent_dim + cfg.num_classes, cfg.hidden, vb.pp("fc0"))?;
        let fc1 = candle_nn::linear(cfg.hidden, last * s * s, vb.pp("fc1"))?;
        let deconv_cfg = ConvTranspose2dConfig { padding: 1, stride: 2, ..Default::default() };
        // Channels from the bottleneck outwards: w_last, ..., w_first, P·C.
        let mut chans: Vec<usize> = cfg.conv_widths.iter().rev().copied().collect();
        chans.push(cfg.likelihood.params_per_channel() * cfg.image_channels);
        let deconvs = chans
            .windows(2)
            .enumerate()
            .map(|(i, w)| conv_transpose2d_layer(w[0], w[1], 4, deconv_cfg, vb.pp(format!("deconv{i}"))))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { fc0, fc1, deconvs, bottleneck: (last, s), num_classes: cfg.num_classes })
    }
}

impl Decoder for ConvDecoder {
    fn decode(&self, z: &Tensor, condition: Option<&Tensor>) -> Result<Tensor> {
        if (self.num_classes > 0) != condition.is_some() {
            return Err(Error::shape("ConvDecoder", format!("built for {} classes", self.num_classes)));
        }
        let h = join_condition(z, condition, "ConvDecoder")?;
        let h = self.fc0.forward(&h)?.relu()?;
        let (c, s) = self.bottleneck;
        let mut h = self.fc1.forward(&h)?.relu()?.reshape((z.dim(0)?, c, s, s))?;
        let last = self.deconvs.len() - 1;
        for (i, deconv) in self.deconvs.iter().enumerate() {
            h = deconv.forward(&h)?;
            if i < last {
                h = h.relu()?;
            }
        }
        Ok(h)
    }
}

impl ConvVae {
    /// The convolutional VAE of `cfg`: encoder under `vb.pp("encoder")`, decoder under
    /// `vb.pp("decoder")`, in `vb`'s dtype and device. candle's initialisation cannot be seeded on the
    /// CPU: re-initialise with [`init_conv_vae`] for reproducible weights. `Error::Config` names a bad field.
    pub fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        cfg.validate()?;
        let encoder = ConvEncoder::new(cfg, vb.pp("encoder"))?;
        let decoder = ConvDecoder::new(cfg, vb.pp("decoder"))?;
        Vae::from_parts(encoder, decoder, cfg.spec())
    }
}

/// Seeded initialisation of a [`ConvVae`]'s variables (`vars`, e.g. `NamedVars::from_varmap`; names as
/// `ConvVae::new` creates them under `encoder.` / `decoder.`), drawing from `rng` in name order:
/// - weights uniform in `±sqrt(g / fan_in)` (He et al. 2015), `g = 6` before a ReLU and `g = 3` for the
///   two output layers (encoder `fc1`, the decoder's last transposed convolution); `fan_in` is
///   `in·k·k` for convolutions and linear layers and `in·k·k/4` for the stride-2 transposed convolutions
///   (each output pixel sees a quarter of the kernel taps);
/// - biases zero.
///
/// Variables with other names are left alone. Same seed, same weights, on every device.
pub fn init_conv_vae(vars: &NamedVars, rng: &mut Rng) -> Result<()> {
    let last_deconv = vars
        .names()
        .iter()
        .filter_map(|n| n.strip_prefix("decoder.deconv")?.split('.').next()?.parse::<usize>().ok())
        .max();
    let mut bounds = HashMap::new();
    for (name, var) in vars.iter() {
        let dims = var.dims();
        if name.ends_with(".bias") {
            bounds.insert(name.to_string(), None);
            continue;
        }
        let deconv = name.strip_prefix("decoder.deconv").and_then(|r| r.split('.').next()?.parse::<usize>().ok());
        let fan_in = match (deconv, dims) {
            (Some(_), [c_in, _, kh, kw]) => (c_in * kh * kw / 4).max(1),
            (None, [_, rest @ ..]) if !rest.is_empty() => rest.iter().product(),
            _ => continue,
        };
        let is_output = name == "encoder.fc1.weight" || (deconv.is_some() && deconv == last_deconv);
        let gain = if is_output { 3.0 } else { 6.0 };
        bounds.insert(name.to_string(), Some((gain / fan_in as f64).sqrt()));
    }
    init_vars(vars, rng, |name, _| match bounds.get(name) {
        Some(Some(bound)) => InitKind::Uniform { bound: *bound },
        Some(None) => InitKind::Constant(0.0),
        None => InitKind::Keep,
    })
}
