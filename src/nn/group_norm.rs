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

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Init, VarBuilder};

use super::conv::fast_cpu_kernels;
use super::norm_kernel::{Norm, NormOp, Sets};
use crate::{Error, Result};

fn check(x: &Tensor, groups: usize, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Norm> {
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
    Ok(Norm { batch: dims[0], channels: c, plane: dims[2..].iter().product(), sets: Sets::Groups(groups), eps })
}

/// Group normalisation of `x: (N, C, ...)`: each sample's `C / groups` consecutive channels are
/// normalised together with their mean and biased variance, then scaled and shifted per channel:
/// `y = (x - mean) / sqrt(var + eps) * weight[c] + bias[c]` (Wu & He 2018; `groups = C` is
/// instance normalisation, `groups = 1` layer normalisation over `(C, ...)`). `weight` and `bias`
/// are `(C,)` with `x`'s dtype and device. Output: `x`'s shape and dtype (`f16`/`bf16` are normalised in
/// `f32` and cast back).
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
    if matches!(x.dtype(), DType::F16 | DType::BF16) {
        // Statistics over a whole group need more digits than half precision keeps (as in
        // PyTorch's autocast): normalise in f32, return in the input's dtype.
        let up = |t: &Tensor| t.to_dtype(DType::F32);
        return Ok(group_norm(&up(x)?, groups, &up(weight)?, &up(bias)?, eps)?.to_dtype(x.dtype())?);
    }
    let fused = matches!(x.device(), Device::Cpu) && matches!(x.dtype(), DType::F32 | DType::F64) && fast_cpu_kernels();
    if fused {
        return Ok(x.contiguous()?.apply_op3(&weight.contiguous()?, &bias.contiguous()?, NormOp(geometry))?);
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
