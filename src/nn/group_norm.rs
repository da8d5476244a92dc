//! Group normalisation (Wu & He 2018) with a fused CPU kernel: [`group_norm`] and the layer
//! [`GroupNorm`], a drop-in for candle-nn's (same variable names `weight` and `bias`).
//!
//! candle-nn composes GroupNorm from about ten tensor ops whose backward passes include strided
//! broadcast reductions: about 120 ms for one norm of a `(64, 32, 28, 28)` activation here, more
//! than half a PyTorch training step of the whole bench UNet. On the CPU (f32, f64) this module
//! computes the forward in one pass per group and the three gradients in one more (statistics
//! accumulated in f64). The backward is itself differentiable: while a thread keeps the graph for
//! second-order gradients ([`super::double_backward`]) it is written with tensor ops instead of
//! the fused kernel. Other devices and dtypes, and the reference switch
//! [`super::conv::set_fast_cpu_kernels`], use candle-nn's composition.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp3, DType, Device, Layout, Module, Shape, Tensor, WithDType};
use candle_nn::{Init, VarBuilder};
use rayon::prelude::*;

use super::conv::fast_cpu_kernels;
use super::double_backward::thread_keeps_graph;
use crate::{Error, Result};

/// Shape of one normalisation: `batch * groups` chunks of `group_channels` planes of `plane`
/// elements each.
#[derive(Clone, Copy, Debug)]
struct Geometry {
    groups: usize,
    group_channels: usize,
    plane: usize,
    eps: f64,
}

impl Geometry {
    fn chunk(&self) -> usize {
        self.group_channels * self.plane
    }
    fn channels(&self) -> usize {
        self.groups * self.group_channels
    }
}

/// Mean and `1 / sqrt(var + eps)` of one chunk, in f64 (two passes).
fn moments<T: WithDType>(x: &[T], eps: f64) -> (f64, f64) {
    let n = x.len() as f64;
    let mean = x.iter().map(|v| v.to_f64()).sum::<f64>() / n;
    let var = x.iter().map(|v| (v.to_f64() - mean).powi(2)).sum::<f64>() / n;
    (mean, 1.0 / (var + eps).sqrt())
}

fn forward<T: WithDType>(g: &Geometry, x: &[T], w: &[T], b: &[T]) -> Vec<T> {
    let mut out = vec![T::zero(); x.len()];
    out.par_chunks_mut(g.chunk()).zip(x.par_chunks(g.chunk())).enumerate().for_each(|(i, (y, x))| {
        let (mean, rstd) = moments(x, g.eps);
        let first = (i % g.groups) * g.group_channels;
        for (k, (y, x)) in y.chunks_mut(g.plane).zip(x.chunks(g.plane)).enumerate() {
            let scale = w[first + k].to_f64() * rstd;
            let shift = b[first + k].to_f64() - mean * scale;
            y.iter_mut().zip(x).for_each(|(y, x)| *y = T::from_f64(x.to_f64() * scale + shift));
        }
    });
    out
}

/// Gradients of the input, weight and bias, packed as `[dx (x.len()), dweight (C), dbias (C)]`.
fn backward<T: WithDType>(g: &Geometry, x: &[T], w: &[T], dy: &[T]) -> Vec<T> {
    let c = g.channels();
    let mut packed = vec![T::zero(); x.len() + 2 * c];
    let (dx, rest) = packed.split_at_mut(x.len());
    // Per chunk: the chunk's contributions to dweight and dbias of its channels.
    let partial: Vec<(usize, Vec<f64>, Vec<f64>)> = dx
        .par_chunks_mut(g.chunk())
        .zip(x.par_chunks(g.chunk()).zip(dy.par_chunks(g.chunk())))
        .enumerate()
        .map(|(i, (dx, (x, dy)))| {
            let (mean, rstd) = moments(x, g.eps);
            let first = (i % g.groups) * g.group_channels;
            let mut sum_dy = vec![0.0; g.group_channels];
            let mut sum_dy_xhat = vec![0.0; g.group_channels];
            for k in 0..g.group_channels {
                let planes = (&x[k * g.plane..(k + 1) * g.plane], &dy[k * g.plane..(k + 1) * g.plane]);
                let (mut s, mut sx) = (0.0, 0.0);
                for (x, dy) in planes.0.iter().zip(planes.1) {
                    let dy = dy.to_f64();
                    s += dy;
                    sx += dy * x.to_f64();
                }
                sum_dy[k] = s;
                sum_dy_xhat[k] = (sx - mean * s) * rstd;
            }
            // dx = rstd * (dy * w - mean(dy * w) - xhat * mean(dy * w * xhat)) over the chunk.
            let n = g.chunk() as f64;
            let a: f64 = (0..g.group_channels).map(|k| w[first + k].to_f64() * sum_dy[k]).sum::<f64>() / n;
            let bb: f64 = (0..g.group_channels).map(|k| w[first + k].to_f64() * sum_dy_xhat[k]).sum::<f64>() / n;
            for (k, (dx, (x, dy))) in dx.chunks_mut(g.plane).zip(x.chunks(g.plane).zip(dy.chunks(g.plane))).enumerate()
            {
                let wk = w[first + k].to_f64();
                for (dx, (x, dy)) in dx.iter_mut().zip(x.iter().zip(dy)) {
                    let xhat = (x.to_f64() - mean) * rstd;
                    *dx = T::from_f64(rstd * (dy.to_f64() * wk - a - xhat * bb));
                }
            }
            (first, sum_dy_xhat, sum_dy)
        })
        .collect();
    let (mut dweight, mut dbias) = (vec![0.0; c], vec![0.0; c]);
    for (first, dw, db) in partial {
        for k in 0..g.group_channels {
            dweight[first + k] += dw[k];
            dbias[first + k] += db[k];
        }
    }
    let (dw, db) = rest.split_at_mut(c);
    dw.iter_mut().zip(&dweight).for_each(|(o, v)| *o = T::from_f64(*v));
    db.iter_mut().zip(&dbias).for_each(|(o, v)| *o = T::from_f64(*v));
    packed
}

fn contiguous<'a, T>(data: &'a [T], layout: &Layout, what: &str) -> candle_core::Result<&'a [T]> {
    layout
        .contiguous_offsets()
        .map(|(start, end)| &data[start..end])
        .ok_or_else(|| candle_core::Error::Msg(format!("group norm: {what} must be contiguous")))
}

/// Runs `f` on three same-dtype f32 or f64 storages.
macro_rules! dispatch3 {
    ($name:expr, ($a:expr, $al:expr), ($b:expr, $bl:expr), ($c:expr, $cl:expr), |$x:ident, $y:ident, $z:ident| $f:expr) => {
        match ($a, $b, $c) {
            (CpuStorage::F32(a), CpuStorage::F32(b), CpuStorage::F32(c)) => {
                let ($x, $y, $z) =
                    (contiguous(a, $al, "x")?, contiguous(b, $bl, "weight")?, contiguous(c, $cl, "bias")?);
                CpuStorage::F32($f)
            }
            (CpuStorage::F64(a), CpuStorage::F64(b), CpuStorage::F64(c)) => {
                let ($x, $y, $z) =
                    (contiguous(a, $al, "x")?, contiguous(b, $bl, "weight")?, contiguous(c, $cl, "bias")?);
                CpuStorage::F64($f)
            }
            (a, b, c) => {
                return Err(candle_core::Error::Msg(format!(
                    "{}: unsupported dtypes {:?}, {:?}, {:?}",
                    $name,
                    a.dtype(),
                    b.dtype(),
                    c.dtype()
                )))
            }
        }
    };
}

/// The forward op over `(x, weight, bias)`.
struct GroupNormOp(Geometry);

/// The backward op over `(x, weight, dy)`, returning the packed gradients (no backward of its own).
struct GroupNormGrad(Geometry);

impl CustomOp3 for GroupNormOp {
    fn name(&self) -> &'static str {
        "candle-generative-group-norm"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        xl: &Layout,
        w: &CpuStorage,
        wl: &Layout,
        b: &CpuStorage,
        bl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = self.0;
        let out = dispatch3!("group norm", (x, xl), (w, wl), (b, bl), |x, w, b| forward(&g, x, w, b));
        Ok((out, xl.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        dy: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let g = self.0;
        let keeps_graph = thread_keeps_graph().map_err(candle_core::Error::wrap)?;
        let (dx, dw, db) = if keeps_graph {
            differentiable_backward(&g, x, w, dy)?
        } else {
            let packed = x.apply_op3_no_bwd(w, &dy.contiguous()?, &GroupNormGrad(g))?;
            let (numel, c) = (x.elem_count(), g.channels());
            let dx = packed.narrow(0, 0, numel)?.reshape(x.shape())?;
            (dx, packed.narrow(0, numel, c)?, packed.narrow(0, numel + c, c)?)
        };
        Ok((Some(dx), Some(dw), Some(db)))
    }
}

impl CustomOp3 for GroupNormGrad {
    fn name(&self) -> &'static str {
        "candle-generative-group-norm-grad"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        xl: &Layout,
        w: &CpuStorage,
        wl: &Layout,
        dy: &CpuStorage,
        dyl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = self.0;
        let out = dispatch3!("group norm backward", (x, xl), (w, wl), (dy, dyl), |x, w, dy| backward(&g, x, w, dy));
        Ok((out, Shape::from(xl.shape().elem_count() + 2 * g.channels())))
    }
}

/// The same gradients as [`backward`], written with tensor ops so that they have gradients too.
fn differentiable_backward(
    g: &Geometry,
    x: &Tensor,
    w: &Tensor,
    dy: &Tensor,
) -> candle_core::Result<(Tensor, Tensor, Tensor)> {
    let n = x.dim(0)?;
    let (cg, plane) = (g.group_channels, g.plane);
    let xs = x.reshape((n, g.groups, cg * plane))?;
    let mean = xs.mean_keepdim(2)?;
    let centred = xs.broadcast_sub(&mean)?;
    let rstd = (centred.sqr()?.mean_keepdim(2)? + g.eps)?.sqrt()?.recip()?;
    let xhat = centred.broadcast_mul(&rstd)?.reshape((n, g.channels(), plane))?;
    let dy = dy.reshape((n, g.channels(), plane))?;
    let db = dy.sum(2)?.sum(0)?;
    let dw = (&dy * &xhat)?.sum(2)?.sum(0)?;
    let gy = dy.broadcast_mul(&w.reshape((1, g.channels(), 1))?)?;
    let gy = gy.reshape((n, g.groups, cg * plane))?;
    let xhat = xhat.reshape((n, g.groups, cg * plane))?;
    let a = gy.mean_keepdim(2)?;
    let b = (&gy * &xhat)?.mean_keepdim(2)?;
    let dx = (gy.broadcast_sub(&a)? - xhat.broadcast_mul(&b)?)?.broadcast_mul(&rstd)?;
    Ok((dx.reshape(x.shape())?, dw, db))
}

fn check(x: &Tensor, groups: usize, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Geometry> {
    let dims = x.dims();
    if dims.len() < 3 {
        return Err(Error::shape("group_norm", format!("x must be (N, C, ...) with rank >= 3, got {dims:?}")));
    }
    let c = dims[1];
    if groups == 0 || c % groups != 0 {
        return Err(Error::config("group_norm.groups", format!("must divide the {c} channels, got {groups}")));
    }
    if !(eps.is_finite() && eps > 0.0) {
        return Err(Error::config("group_norm.eps", format!("must be finite and > 0, got {eps}")));
    }
    for (name, t) in [("weight", weight), ("bias", bias)] {
        if t.dims() != [c] {
            return Err(Error::shape("group_norm", format!("{name} must be ({c},), got {:?}", t.dims())));
        }
        if t.dtype() != x.dtype() || !t.device().same_device(x.device()) {
            return Err(Error::shape("group_norm", format!("{name} must have x's dtype and device")));
        }
    }
    Ok(Geometry { groups, group_channels: c / groups, plane: dims[2..].iter().product(), eps })
}

/// Group normalisation of `x: (N, C, ...)`: each sample's `C / groups` consecutive channels are
/// normalised together with their mean and biased variance, then scaled and shifted per channel:
/// `y = (x - mean) / sqrt(var + eps) * weight[c] + bias[c]` (Wu & He 2018; `groups = C` is
/// instance normalisation, `groups = 1` layer normalisation over `(C, ...)`). `weight` and `bias`
/// are `(C,)` with `x`'s dtype and device. Output: `x`'s shape and dtype.
///
/// Errors: `Error::Shape` for a rank below 3 or mismatched parameters, `Error::Config` when
/// `groups` does not divide `C` or `eps` is not finite and positive.
///
/// ```
/// use candle_core::{Device, Tensor};
/// use candle_generative::nn::group_norm::group_norm;
///
/// let x = Tensor::arange(0f32, 8.0, &Device::Cpu)?.reshape((1, 2, 2, 2))?;
/// let (w, b) = (Tensor::ones(2, candle_core::DType::F32, &Device::Cpu)?, Tensor::zeros(2, candle_core::DType::F32, &Device::Cpu)?);
/// let y = group_norm(&x, 1, &w, &b, 1e-5)?;
/// let mean = y.mean_all()?.to_scalar::<f32>()?;
/// assert!(mean.abs() < 1e-6);
/// # Ok::<(), candle_generative::Error>(())
/// ```
pub fn group_norm(x: &Tensor, groups: usize, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    let geometry = check(x, groups, weight, bias, eps)?;
    let fused = matches!(x.device(), Device::Cpu) && matches!(x.dtype(), DType::F32 | DType::F64) && fast_cpu_kernels();
    if fused {
        return Ok(x.contiguous()?.apply_op3(&weight.contiguous()?, &bias.contiguous()?, GroupNormOp(geometry))?);
    }
    let reference = candle_nn::GroupNorm::new(weight.clone(), bias.clone(), x.dim(1)?, groups, eps)?;
    Ok(reference.forward(x)?)
}

/// A GroupNorm layer: `weight` (initialised to 1) and `bias` (0), both `(C,)`, applied by
/// [`group_norm`]. Variable names match `candle_nn::group_norm`, so checkpoints are interchangeable.
#[derive(Clone, Debug)]
pub struct GroupNorm {
    weight: Tensor,
    bias: Tensor,
    groups: usize,
    eps: f64,
}

impl GroupNorm {
    /// `groups` groups over `channels` channels (`groups` must divide `channels`), `eps` finite
    /// and > 0 (1e-5 in PyTorch and DDPM-style UNets); creates the variables under `vb`.
    pub fn new(groups: usize, channels: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        if groups == 0 || channels == 0 || channels % groups != 0 {
            return Err(Error::config(
                "GroupNorm.groups",
                format!("must be > 0 and divide the {channels} channels, got {groups}"),
            ));
        }
        if !(eps.is_finite() && eps > 0.0) {
            return Err(Error::config("GroupNorm.eps", format!("must be finite and > 0, got {eps}")));
        }
        let weight = vb.get_with_hints(channels, "weight", Init::Const(1.0))?;
        let bias = vb.get_with_hints(channels, "bias", Init::Const(0.0))?;
        Ok(Self { weight, bias, groups, eps })
    }

    /// The per-channel scale `(C,)`.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// The per-channel shift `(C,)`.
    pub fn bias(&self) -> &Tensor {
        &self.bias
    }
}

impl Module for GroupNorm {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        group_norm(x, self.groups, &self.weight, &self.bias, self.eps).map_err(candle_core::Error::wrap)
    }
}
