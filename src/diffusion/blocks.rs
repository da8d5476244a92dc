//! The UNet's building blocks: sinusoidal time embedding, time-conditioned residual block, self-attention,
//! down- and upsampling, and seeded dropout.

use candle_core::{DType, Module, Tensor, D};
use candle_nn::{Conv2dConfig, Linear, VarBuilder};

use crate::nn::silu::silu;
use crate::nn::{Conv2d, GroupNorm};

use crate::rng::Rng;
use crate::{Error, Result};

/// The sinusoidal embedding of Vaswani et al. 2017 as used by DDPM: for timesteps `t` `(B,)` (any
/// numeric dtype) and an even `dim`, `[sin(t w_0), ..., sin(t w_{h-1}), cos(t w_0), ..., cos(t w_{h-1})]`
/// with `h = dim / 2` and `w_k = 10000^(-k/h)`. Returns `(B, dim)` in `dtype` on `t`'s device.
pub fn timestep_embedding(t: &Tensor, dim: usize, dtype: DType) -> Result<Tensor> {
    if t.rank() != 1 || dim < 2 || dim % 2 != 0 {
        return Err(Error::shape(
            "timestep_embedding",
            format!("needs t (B,) and an even dim >= 2, got {:?}, {dim}", t.dims()),
        ));
    }
    let half = dim / 2;
    let ts = t.to_dtype(DType::F64)?.to_vec1::<f64>()?;
    let mut v = Vec::with_capacity(ts.len() * dim);
    for &t in &ts {
        let args: Vec<f64> = (0..half).map(|k| t * (-(10000f64.ln()) * k as f64 / half as f64).exp()).collect();
        v.extend(args.iter().map(|a| a.sin() as f32));
        v.extend(args.iter().map(|a| a.cos() as f32));
    }
    Ok(Tensor::from_vec(v, (ts.len(), dim), t.device())?.to_dtype(dtype)?)
}

/// Inverted dropout with a mask from the crate's [`Rng`]: each element is zeroed with probability `p`
/// and the rest scaled by `1 / (1 - p)`; identity without an rng (evaluation) or with `p = 0`.
pub fn dropout(x: &Tensor, p: f64, rng: Option<&mut Rng>) -> Result<Tensor> {
    match rng {
        Some(rng) if p > 0.0 => {
            let keep = rng.bernoulli(x.shape().clone(), 1.0 - p, x.dtype(), x.device())?;
            Ok((x * keep)?.affine(1.0 / (1.0 - p), 0.0)?)
        }
        _ => Ok(x.clone()),
    }
}

fn conv(c_in: usize, c_out: usize, k: usize, stride: usize, vb: VarBuilder) -> Result<Conv2d> {
    let cfg = Conv2dConfig { padding: k / 2, stride, ..Default::default() };
    crate::nn::conv::conv2d_layer(c_in, c_out, k, cfg, vb)
}

fn group_norm(groups: usize, c: usize, vb: VarBuilder) -> Result<GroupNorm> {
    GroupNorm::new(groups, c, 1e-5, vb)
}

/// DDPM's residual block: `h = conv1(silu(norm1(x))) + time(silu(temb))`,
/// `h = conv2(dropout(silu(norm2(h))))`, output `h + skip(x)` (`skip` a 1x1 conv when the channels
/// change). Variables: `norm1`, `conv1`, `time`, `norm2`, `conv2`, (`skip`).
#[derive(Debug, Clone)]
pub struct ResBlock {
    norm1: GroupNorm,
    conv1: Conv2d,
    time: Linear,
    norm2: GroupNorm,
    conv2: Conv2d,
    skip: Option<Conv2d>,
    dropout: f64,
}

impl ResBlock {
    /// `c_in -> c_out` channels, time embedding of `temb` features, GroupNorm with `groups` groups.
    pub fn new(c_in: usize, c_out: usize, temb: usize, groups: usize, dropout: f64, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            norm1: group_norm(groups, c_in, vb.pp("norm1"))?,
            conv1: conv(c_in, c_out, 3, 1, vb.pp("conv1"))?,
            time: candle_nn::linear(temb, c_out, vb.pp("time"))?,
            norm2: group_norm(groups, c_out, vb.pp("norm2"))?,
            conv2: conv(c_out, c_out, 3, 1, vb.pp("conv2"))?,
            skip: if c_in != c_out { Some(conv(c_in, c_out, 1, 1, vb.pp("skip"))?) } else { None },
            dropout,
        })
    }

    /// `x` `(B, c_in, H, W)`, `temb` `(B, temb)` -> `(B, c_out, H, W)`; dropout only with an rng.
    pub fn forward(&self, x: &Tensor, temb: &Tensor, rng: Option<&mut Rng>) -> Result<Tensor> {
        let h = self.conv1.forward(&silu(&self.norm1.forward(x)?)?)?;
        let h = h.broadcast_add(&self.time.forward(&silu(temb)?)?.unsqueeze(2)?.unsqueeze(3)?)?;
        let h = dropout(&silu(&self.norm2.forward(&h)?)?, self.dropout, rng)?;
        let h = self.conv2.forward(&h)?;
        let skip = match &self.skip {
            Some(s) => s.forward(x)?,
            None => x.clone(),
        };
        Ok((h + skip)?)
    }
}

/// Self-attention over the pixels with a residual connection: `x + proj(attn(qkv(norm(x))))`,
/// `heads` heads of `C / heads` channels, scaled dot product. Variables: `norm`, `qkv`, `proj`.
#[derive(Debug, Clone)]
pub struct Attention {
    norm: GroupNorm,
    qkv: Conv2d,
    proj: Conv2d,
    heads: usize,
}

impl Attention {
    /// Attention over `c` channels with `heads` heads (`c % heads == 0`).
    pub fn new(c: usize, heads: usize, groups: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            norm: group_norm(groups, c, vb.pp("norm"))?,
            qkv: conv(c, 3 * c, 1, 1, vb.pp("qkv"))?,
            proj: conv(c, c, 1, 1, vb.pp("proj"))?,
            heads,
        })
    }

    /// `(B, C, H, W) -> (B, C, H, W)`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let d = c / self.heads;
        let qkv = self.qkv.forward(&self.norm.forward(x)?)?.reshape((b, 3, self.heads, d, h * w))?;
        let part = |i: usize| -> Result<Tensor> { Ok(qkv.narrow(1, i, 1)?.reshape((b * self.heads, d, h * w))?) };
        let (q, k, v) = (part(0)?, part(1)?, part(2)?);
        let scores = (q.transpose(1, 2)?.contiguous()?.matmul(&k.contiguous()?)? / (d as f64).sqrt())?;
        let a = candle_nn::ops::softmax(&scores, D::Minus1)?;
        let o = v.contiguous()?.matmul(&a.transpose(1, 2)?.contiguous()?)?.reshape((b, c, h, w))?;
        Ok((x + self.proj.forward(&o)?)?)
    }
}

/// A 3x3 convolution with stride 2 (same channels): `(B, C, H, W) -> (B, C, ceil(H/2), ceil(W/2))`.
#[derive(Debug, Clone)]
pub struct Downsample(Conv2d);

impl Downsample {
    /// Downsampling of `c` channels.
    pub fn new(c: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self(conv(c, c, 3, 2, vb)?))
    }

    /// Applies it.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self.0.forward(x)?)
    }
}

/// Nearest-neighbour upsampling to a given size, then a 3x3 convolution (same channels).
#[derive(Debug, Clone)]
pub struct Upsample(Conv2d);

impl Upsample {
    /// Upsampling of `c` channels.
    pub fn new(c: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self(conv(c, c, 3, 1, vb)?))
    }

    /// `(B, C, h, w) -> (B, C, height, width)`.
    pub fn forward(&self, x: &Tensor, height: usize, width: usize) -> Result<Tensor> {
        Ok(self.0.forward(&crate::nn::upsample::upsample_nearest(x, height, width)?)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn timestep_embedding_matches_the_formula() {
        let t = Tensor::new(&[0u32, 7, 999], &Device::Cpu).unwrap();
        let e = timestep_embedding(&t, 8, DType::F64).unwrap().to_vec2::<f64>().unwrap();
        for (row, &tv) in e.iter().zip(&[0.0f64, 7.0, 999.0]) {
            for k in 0..4 {
                let w = 10000f64.powf(-(k as f64) / 4.0);
                assert!((row[k] - (tv * w).sin()).abs() < 1e-6 && (row[4 + k] - (tv * w).cos()).abs() < 1e-6);
            }
        }
        assert!(timestep_embedding(&t, 7, DType::F32).is_err());
    }

    #[test]
    fn dropout_is_seeded_and_inverted() {
        let x = Tensor::ones((1000,), DType::F32, &Device::Cpu).unwrap();
        let a = dropout(&x, 0.25, Some(&mut Rng::new(3))).unwrap().to_vec1::<f32>().unwrap();
        let b = dropout(&x, 0.25, Some(&mut Rng::new(3))).unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(a, b);
        assert!(a.iter().all(|&v| v == 0.0 || (v - 4.0 / 3.0).abs() < 1e-6));
        let kept = a.iter().filter(|&&v| v > 0.0).count();
        assert!((700..800).contains(&kept), "{kept}");
        assert_eq!(dropout(&x, 0.25, None).unwrap().to_vec1::<f32>().unwrap(), vec![1.0; 1000]);
    }
}
