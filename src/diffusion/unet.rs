//! [`UNet`]: the DDPM denoising network (Ho et al. 2020, after PixelCNN++'s UNet) built from a
//! [`UNetConfig`], with optional class conditioning for classifier-free guidance.

use candle_core::{DType, Module, Tensor};
use candle_nn::{Conv2dConfig, Embedding, Linear, VarBuilder};

use crate::nn::silu::silu;
use crate::nn::{Conv2d, GroupNorm};
use serde::{Deserialize, Serialize};

use super::blocks::{timestep_embedding, Attention, Downsample, ResBlock, Upsample};
use super::denoiser::Denoiser;
use crate::losses::diffusion::Prediction;
use crate::nn::init::{init_vars, InitKind};
use crate::optim::NamedVars;
use crate::rng::Rng;
use crate::{Error, Result};

/// The shape of a [`UNet`].
///
/// Layout, with `c_i = base_channels · channel_mults[i]` at level `i` (resolution `image_size / 2^i`):
/// - time: sinusoidal embedding of `base_channels` features, `Linear -> SiLU -> Linear` to
///   `time_embed_dim`; plus a learned embedding of the class label (`num_classes + 1` rows, the last
///   the null class of classifier-free guidance) when `num_classes > 0`;
/// - `conv_in` 3x3 to `c_0`;
/// - down: per level, `num_res_blocks` [`ResBlock`](super::ResBlock)s to `c_i` (each followed by
///   attention when the level's resolution is in `attention_resolutions`), each output kept as a skip;
///   a stride-2 3x3 conv between levels;
/// - middle: ResBlock, attention (if `mid_attention`), ResBlock at `c_{L-1}`;
/// - up, from the last level: per level `num_res_blocks` ResBlocks on `[h, skip]` concatenated,
///   outputting `c_{i-1}` (`c_0` at level 0), then nearest upsampling to the skip's size + 3x3 conv;
/// - out: GroupNorm, SiLU, 3x3 conv to `image_channels`.
///
/// [`UNetConfig::bench`] is `shared/bench/torch_reference.py`'s `ddpm` UNet (682,817 parameters).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct UNetConfig {
    /// Image channels in and out (1 grey, 3 RGB).
    pub image_channels: usize,
    /// Image side `H = W` (> 0), for `attention_resolutions`.
    pub image_size: usize,
    /// `c` of the first level, also the sinusoidal embedding's size (even, divisible by `groups`).
    pub base_channels: usize,
    /// Channel multipliers, one level each (non-empty, all > 0).
    pub channel_mults: Vec<usize>,
    /// Residual blocks per level on the way down (and the same number up) (> 0).
    pub num_res_blocks: usize,
    /// The resolutions (sides) whose levels get self-attention after each residual block.
    pub attention_resolutions: Vec<usize>,
    /// Self-attention between the two middle residual blocks.
    pub mid_attention: bool,
    /// Attention heads (divides every attended level's channels).
    pub num_heads: usize,
    /// Dropout in the residual blocks, in `[0, 1)`; masks come from the crate [`Rng`] passed to
    /// [`UNet::forward`], so training stays reproducible. Default 0.
    pub dropout: f64,
    /// GroupNorm groups (divide every level's channels).
    pub groups: usize,
    /// Features of the time embedding after its MLP (> 0), usually `4 · base_channels`.
    pub time_embed_dim: usize,
    /// Classes for a class-conditional model (0: unconditional). Labels are `0..num_classes`, and
    /// `num_classes` itself is the null label ([`UNet::null_class`]).
    pub num_classes: usize,
    /// What the network is trained to predict.
    pub prediction: Prediction,
}

impl Default for UNetConfig {
    /// [`UNetConfig::bench`].
    fn default() -> Self {
        Self::bench()
    }
}

impl UNetConfig {
    /// The bench's `ddpm` UNet for 1x28x28 images: base 32, multipliers (1, 2, 2), one residual block
    /// per level, attention in the middle only, GroupNorm(8), time embedding 32 -> 128, epsilon.
    pub fn bench() -> Self {
        Self {
            image_channels: 1,
            image_size: 28,
            base_channels: 32,
            channel_mults: vec![1, 2, 2],
            num_res_blocks: 1,
            attention_resolutions: vec![],
            mid_attention: true,
            num_heads: 1,
            dropout: 0.0,
            groups: 8,
            time_embed_dim: 128,
            num_classes: 0,
            prediction: Prediction::Epsilon,
        }
    }

    /// The channels of each level.
    pub fn level_channels(&self) -> Vec<usize> {
        self.channel_mults.iter().map(|m| m * self.base_channels).collect()
    }

    /// The side of level `i`'s feature maps (each stride-2 conv rounds up).
    pub fn level_size(&self, level: usize) -> usize {
        (0..level).fold(self.image_size, |s, _| s.div_ceil(2))
    }

    /// Checks every field; `Error::Config` names the one at fault.
    pub fn validate(&self) -> Result<()> {
        let positive = [
            ("image_channels", self.image_channels),
            ("image_size", self.image_size),
            ("base_channels", self.base_channels),
            ("num_res_blocks", self.num_res_blocks),
            ("num_heads", self.num_heads),
            ("groups", self.groups),
            ("time_embed_dim", self.time_embed_dim),
        ];
        for (name, v) in positive {
            if v == 0 {
                return Err(Error::config(name, "must be > 0"));
            }
        }
        if self.base_channels % 2 != 0 {
            return Err(Error::config(
                "base_channels",
                format!("must be even (sinusoidal embedding), got {}", self.base_channels),
            ));
        }
        if self.channel_mults.is_empty() || self.channel_mults.contains(&0) {
            return Err(Error::config(
                "channel_mults",
                format!("must be non-empty and > 0, got {:?}", self.channel_mults),
            ));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(Error::config("dropout", format!("must be in [0, 1), got {}", self.dropout)));
        }
        for (i, c) in self.level_channels().into_iter().enumerate() {
            if c % self.groups != 0 {
                return Err(Error::config(
                    "groups",
                    format!("{} groups do not divide level {i}'s {c} channels", self.groups),
                ));
            }
            let any_attention = self.mid_attention || !self.attention_resolutions.is_empty();
            if any_attention && c % self.num_heads != 0 {
                return Err(Error::config(
                    "num_heads",
                    format!("{} heads do not divide level {i}'s {c} channels", self.num_heads),
                ));
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
struct Level {
    res: Vec<ResBlock>,
    attn: Vec<Attention>,
}

/// The DDPM UNet of a [`UNetConfig`]: `forward(x_t, t, labels) -> prediction`, `(B, C, H, W)` in and out.
///
/// Build it on a `VarMap` and re-initialise it with [`init_unet`] for seeded weights. Implements
/// [`Denoiser`] (no dropout) so every sampler can use it.
#[derive(Debug, Clone)]
pub struct UNet {
    config: UNetConfig,
    time1: Linear,
    time2: Linear,
    class_emb: Option<Embedding>,
    conv_in: Conv2d,
    down: Vec<Level>,
    downsample: Vec<Downsample>,
    mid1: ResBlock,
    mid_attn: Option<Attention>,
    mid2: ResBlock,
    up: Vec<Level>,
    upsample: Vec<Upsample>,
    norm_out: GroupNorm,
    conv_out: Conv2d,
}

impl UNet {
    /// Builds the network of `config` (validated) with `vb`'s dtype and device.
    pub fn new(config: &UNetConfig, vb: VarBuilder) -> Result<Self> {
        config.validate()?;
        let cfg = config;
        let (g, temb, p) = (cfg.groups, cfg.time_embed_dim, cfg.dropout);
        let ch = cfg.level_channels();
        let levels = ch.len();
        let attends = |i: usize| cfg.attention_resolutions.contains(&cfg.level_size(i));
        let pad1 = Conv2dConfig { padding: 1, ..Default::default() };
        let mut down = Vec::with_capacity(levels);
        let mut downsample = Vec::new();
        let mut c = ch[0];
        for (i, &ci) in ch.iter().enumerate() {
            let vbl = vb.pp(format!("down.{i}"));
            let mut level = Level { res: vec![], attn: vec![] };
            for j in 0..cfg.num_res_blocks {
                level.res.push(ResBlock::new(c, ci, temb, g, p, vbl.pp(format!("res.{j}")))?);
                c = ci;
                if attends(i) {
                    level.attn.push(Attention::new(ci, cfg.num_heads, g, vbl.pp(format!("attn.{j}")))?);
                }
            }
            down.push(level);
            if i + 1 < levels {
                downsample.push(Downsample::new(ci, vbl.pp("downsample"))?);
            }
        }
        let mid1 = ResBlock::new(c, c, temb, g, p, vb.pp("mid.res.0"))?;
        let mid_attn =
            if cfg.mid_attention { Some(Attention::new(c, cfg.num_heads, g, vb.pp("mid.attn"))?) } else { None };
        let mid2 = ResBlock::new(c, c, temb, g, p, vb.pp("mid.res.1"))?;
        let mut up = Vec::with_capacity(levels);
        let mut upsample = Vec::new();
        for i in (0..levels).rev() {
            let vbl = vb.pp(format!("up.{i}"));
            let out = ch[i.saturating_sub(1)];
            let mut level = Level { res: vec![], attn: vec![] };
            for j in 0..cfg.num_res_blocks {
                level.res.push(ResBlock::new(c + ch[i], out, temb, g, p, vbl.pp(format!("res.{j}")))?);
                c = out;
                if attends(i) {
                    level.attn.push(Attention::new(out, cfg.num_heads, g, vbl.pp(format!("attn.{j}")))?);
                }
            }
            up.push(level);
            if i > 0 {
                upsample.push(Upsample::new(out, vbl.pp("upsample"))?);
            }
        }
        Ok(Self {
            time1: candle_nn::linear(cfg.base_channels, temb, vb.pp("time.0"))?,
            time2: candle_nn::linear(temb, temb, vb.pp("time.1"))?,
            class_emb: if cfg.num_classes > 0 {
                Some(candle_nn::embedding(cfg.num_classes + 1, temb, vb.pp("class_emb"))?)
            } else {
                None
            },
            conv_in: crate::nn::conv::conv2d_layer(cfg.image_channels, ch[0], 3, pad1, vb.pp("conv_in"))?,
            down,
            downsample,
            mid1,
            mid_attn,
            mid2,
            up,
            upsample,
            norm_out: GroupNorm::new(g, ch[0], 1e-5, vb.pp("norm_out"))?,
            conv_out: crate::nn::conv::conv2d_layer(ch[0], cfg.image_channels, 3, pad1, vb.pp("conv_out"))?,
            config: cfg.clone(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &UNetConfig {
        &self.config
    }

    /// The label meaning "no label" for classifier-free guidance: `num_classes`.
    pub fn null_class(&self) -> u32 {
        self.config.num_classes as u32
    }

    /// The network: `x` `(B, image_channels, image_size, image_size)` at timesteps `t` `(B,)`
    /// (integer, or float for continuous time), class `labels` `(B,)` `U32` in `0..=num_classes`
    /// (required iff `num_classes > 0`; `num_classes` is the null class). `dropout_rng`: `Some` while
    /// training to apply dropout from the crate's rng, `None` to evaluate. Returns a tensor shaped as `x`.
    pub fn forward(
        &self,
        x: &Tensor,
        t: &Tensor,
        labels: Option<&Tensor>,
        mut dropout_rng: Option<&mut Rng>,
    ) -> Result<Tensor> {
        const CTX: &str = "UNet::forward";
        let cfg = &self.config;
        let dims = x.dims();
        if dims.len() != 4 || dims[1] != cfg.image_channels || dims[2] != cfg.image_size || dims[3] != cfg.image_size {
            return Err(Error::shape(
                CTX,
                format!("x must be (B, {}, {1}, {1}), got {dims:?}", cfg.image_channels, cfg.image_size),
            ));
        }
        if t.dims() != [dims[0]] {
            return Err(Error::shape(CTX, format!("t must be ({},), got {:?}", dims[0], t.dims())));
        }
        let temb = timestep_embedding(t, cfg.base_channels, x.dtype())?;
        let mut temb = self.time2.forward(&silu(&self.time1.forward(&temb)?)?)?;
        match (&self.class_emb, labels) {
            (Some(emb), Some(l)) => {
                if l.dims() != [dims[0]] || l.dtype() != DType::U32 {
                    return Err(Error::shape(
                        CTX,
                        format!("labels must be ({},) U32, got {:?} {:?}", dims[0], l.dims(), l.dtype()),
                    ));
                }
                if l.max(0)?.to_scalar::<u32>()? as usize > cfg.num_classes {
                    return Err(Error::shape(
                        CTX,
                        format!("labels must be in 0..={} (the last is null)", cfg.num_classes),
                    ));
                }
                temb = (temb + emb.forward(l)?)?;
            }
            (None, None) => {}
            (Some(_), None) => {
                return Err(Error::shape(CTX, format!("built for {} classes: labels needed", cfg.num_classes)))
            }
            (None, Some(_)) => return Err(Error::shape(CTX, "an unconditional UNet (num_classes = 0) got labels")),
        }
        let mut h = self.conv_in.forward(x)?;
        let mut skips = Vec::new();
        for (i, level) in self.down.iter().enumerate() {
            for (j, res) in level.res.iter().enumerate() {
                h = res.forward(&h, &temb, dropout_rng.as_deref_mut())?;
                if let Some(a) = level.attn.get(j) {
                    h = a.forward(&h)?;
                }
                skips.push(h.clone());
            }
            if let Some(d) = self.downsample.get(i) {
                h = d.forward(&h)?;
            }
        }
        h = self.mid1.forward(&h, &temb, dropout_rng.as_deref_mut())?;
        if let Some(a) = &self.mid_attn {
            h = a.forward(&h)?;
        }
        h = self.mid2.forward(&h, &temb, dropout_rng.as_deref_mut())?;
        for (k, level) in self.up.iter().enumerate() {
            for (j, res) in level.res.iter().enumerate() {
                let skip = skips.pop().ok_or_else(|| Error::shape(CTX, "skip connections exhausted"))?;
                h = res.forward(&Tensor::cat(&[&h, &skip], 1)?, &temb, dropout_rng.as_deref_mut())?;
                if let Some(a) = level.attn.get(j) {
                    h = a.forward(&h)?;
                }
            }
            if let Some(u) = self.upsample.get(k) {
                let next = skips.last().ok_or_else(|| Error::shape(CTX, "skip connections exhausted"))?;
                h = u.forward(&h, next.dim(2)?, next.dim(3)?)?;
            }
        }
        Ok(self.conv_out.forward(&silu(&self.norm_out.forward(&h)?)?)?)
    }
}

impl Denoiser for UNet {
    fn prediction(&self) -> Prediction {
        self.config.prediction
    }

    fn predict(&self, x_t: &Tensor, t: &Tensor, cond: Option<&Tensor>) -> Result<Tensor> {
        self.forward(x_t, t, cond, None)
    }
}

/// Seeded initialisation of a [`UNet`]'s variables (names as [`UNet::new`] creates them), drawing
/// from `rng` in name order: convolution and linear weights uniform in `±1/sqrt(fan_in)` (PyTorch's
/// default), biases 0, GroupNorm scales 1 and shifts 0, the class embedding `N(0, 1)`.
pub fn init_unet(vars: &NamedVars, rng: &mut Rng) -> Result<()> {
    let fan_in: std::collections::HashMap<String, usize> =
        vars.iter().map(|(n, v)| (n.to_string(), v.dims().iter().skip(1).product::<usize>().max(1))).collect();
    init_vars(vars, rng, |name, rank| {
        let is_norm = name.contains("norm");
        if name.contains("class_emb") {
            InitKind::Normal { mean: 0.0, std: 1.0 }
        } else if is_norm && name.ends_with(".weight") {
            InitKind::Constant(1.0)
        } else if name.ends_with(".bias") || rank < 2 {
            InitKind::Constant(0.0)
        } else {
            InitKind::Uniform { bound: 1.0 / (fan_in[name] as f64).sqrt() }
        }
    })
}
