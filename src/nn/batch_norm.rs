//! Batch normalisation (Ioffe & Szegedy 2015) with the crate's fused CPU kernel in training mode:
//! [`batch_norm`] builds a [`BatchNorm`], a drop-in for candle-nn's (same configuration, same
//! variables `weight`, `bias`, `running_mean`, `running_var`, same running-statistics update).
//!
//! candle-nn's training-mode forward transposes the input to `(C, N * H * W)`, copies it, and
//! composes the statistics from tensor ops whose backward passes copy and reduce again; the fused
//! kernel (see `norm_kernel.rs`) reads the `(N, C, H, W)` layout in place, two parallel passes
//! forward and two backward, and stays differentiable to second order (R1 and gradient penalties
//! through a batch-normed discriminator). Evaluation mode, inputs of rank 2, other devices,
//! `remove_mean = false` and the reference switch [`super::conv::set_fast_cpu_kernels`] use
//! candle-nn's code, except training in f16/bf16, which candle-nn's layer refuses (it adds its
//! f32 statistics to half-precision running statistics): that runs in f32 here and casts back.

use candle_core::{DType, Device, ModuleT, Tensor, Var};
use candle_nn::{BatchNormConfig, VarBuilder};

use super::conv::fast_cpu_kernels;
use super::norm_kernel::{ChannelMoments, Norm, NormOp, Sets};
use crate::{Error, Result};

/// A batch-norm layer over the channels (axis 1) of `(N, C, ...)` inputs. Training mode
/// normalises with the batch's per-channel mean and biased variance and updates
/// `running = (1 - momentum) running + momentum batch` (the unbiased variance for `running_var`,
/// as PyTorch); evaluation mode uses the running statistics.
#[derive(Clone, Debug)]
pub struct BatchNorm {
    inner: candle_nn::BatchNorm,
    running_mean: Var,
    running_var: Var,
    remove_mean: bool,
}

/// Creates a [`BatchNorm`] over `channels` channels under `vb`: `running_mean` (zeros),
/// `running_var` (ones) and, with `config.affine`, `weight` (ones) and `bias` (zeros), all
/// `(C,)`. Errors: `Error::Config` for a negative `eps` or a momentum outside `[0, 1]`.
pub fn batch_norm(channels: usize, config: impl Into<BatchNormConfig>, vb: VarBuilder) -> Result<BatchNorm> {
    let config = config.into();
    if !(config.eps >= 0.0 && config.eps.is_finite()) {
        return Err(Error::config("BatchNorm.eps", format!("must be finite and >= 0, got {}", config.eps)));
    }
    if !(0.0..=1.0).contains(&config.momentum) {
        return Err(Error::config("BatchNorm.momentum", format!("must be in [0, 1], got {}", config.momentum)));
    }
    let remove_mean = config.remove_mean;
    let inner = candle_nn::batch_norm(channels, config, vb)?;
    // Variables of a VarMap: these share the layer's storage, so `set` updates the map's values.
    let running_mean = Var::from_tensor(inner.running_mean())?;
    let running_var = Var::from_tensor(inner.running_var())?;
    Ok(BatchNorm { inner, running_mean, running_var, remove_mean })
}

impl BatchNorm {
    /// candle-nn's layer underneath (its running statistics are this layer's).
    pub fn inner(&self) -> &candle_nn::BatchNorm {
        &self.inner
    }

    /// The per-channel scale and shift, `(C,)` each, when affine.
    pub fn weight_and_bias(&self) -> Option<(&Tensor, &Tensor)> {
        self.inner.weight_and_bias()
    }

    fn fused(&self, x: &Tensor) -> bool {
        matches!(x.device(), Device::Cpu)
            && matches!(x.dtype(), DType::F32 | DType::F64)
            && x.rank() >= 3
            && self.remove_mean
            && fast_cpu_kernels()
    }

    /// Training mode for `f16`/`bf16` inputs, where candle-nn's layer fails (it computes the
    /// statistics in `f32` and adds them to half-precision running statistics): statistics and
    /// normalisation in `f32` (the fused kernel on the CPU, tensor ops elsewhere), the running
    /// statistics updated in their own dtype, the output cast back.
    fn forward_train_half(&self, x: &Tensor) -> Result<Tensor> {
        let x32 = x.to_dtype(DType::F32)?;
        let y = if self.fused(&x32) { self.forward_train_fused(&x32)? } else { self.forward_train_ops(&x32)? };
        Ok(y.to_dtype(x.dtype())?)
    }

    /// Training mode from tensor ops, for devices without the fused kernel (`x` in `f32`).
    fn forward_train_ops(&self, x: &Tensor) -> Result<Tensor> {
        let channels = self.running_mean.dim(0)?;
        if x.rank() < 2 || x.dim(1)? != channels {
            return Err(Error::shape(
                "BatchNorm",
                format!("expected {channels} channels (axis 1), got {:?}", x.dims()),
            ));
        }
        let axes: Vec<usize> = (0..x.rank()).filter(|&a| a != 1).collect();
        let count = x.elem_count() / channels;
        let mean = x.mean_keepdim(axes.clone())?;
        let centered = x.broadcast_sub(&mean)?;
        let var = centered.sqr()?.mean_keepdim(axes)?;
        let mut y = centered.broadcast_div(&(&var + self.inner.eps())?.sqrt()?)?;
        let unbiased = (var.flatten_all()? * (count as f64 / (count as f64 - 1.0).max(1.0)))?;
        self.update_running(&mean.flatten_all()?, &unbiased)?;
        if let Some((w, b)) = self.inner.weight_and_bias() {
            let mut shape = vec![1; x.rank()];
            shape[1] = channels;
            let (w, b) = (w.to_dtype(DType::F32)?.reshape(shape.clone())?, b.to_dtype(DType::F32)?.reshape(shape)?);
            y = y.broadcast_mul(&w)?.broadcast_add(&b)?;
        }
        Ok(y)
    }

    /// `running = (1 - momentum) running + momentum batch`, in the running statistics' dtype.
    fn update_running(&self, mean: &Tensor, unbiased_var: &Tensor) -> Result<()> {
        let m = self.inner.momentum();
        let (mean, var) = (mean.to_dtype(self.running_mean.dtype())?, unbiased_var.to_dtype(self.running_var.dtype())?);
        self.running_mean.set(&((self.running_mean.as_tensor() * (1.0 - m))? + (mean * m)?)?)?;
        self.running_var.set(&((self.running_var.as_tensor() * (1.0 - m))? + (var * m)?)?)?;
        Ok(())
    }

    fn forward_train_fused(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims();
        let channels = self.running_mean.dim(0)?;
        if dims[1] != channels {
            return Err(Error::shape("BatchNorm", format!("expected {channels} channels (axis 1), got {dims:?}")));
        }
        let norm = Norm {
            batch: dims[0],
            channels,
            plane: dims[2..].iter().product(),
            sets: Sets::Channels,
            eps: self.inner.eps(),
        };
        let count = norm.batch * norm.plane;
        if count < 2 {
            return Err(Error::shape(
                "BatchNorm",
                format!("training needs more than one value per channel, got {dims:?}"),
            ));
        }
        let x = x.contiguous()?;
        let moments = x.detach().apply_op1_no_bwd(&ChannelMoments(norm))?;
        let (mean, var) = (moments.get(0)?, moments.get(1)?);
        let unbiased = (var * (count as f64 / (count as f64 - 1.0)))?;
        self.update_running(&mean, &unbiased)?;
        let (w, b) = match self.inner.weight_and_bias() {
            Some((w, b)) => (w.to_dtype(x.dtype())?.contiguous()?, b.to_dtype(x.dtype())?.contiguous()?),
            None => {
                let ones = Tensor::ones(channels, x.dtype(), x.device())?;
                let zeros = ones.zeros_like()?;
                (ones, zeros)
            }
        };
        Ok(x.apply_op3(&w, &b, NormOp(norm))?)
    }
}

impl ModuleT for BatchNorm {
    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        if train && self.fused(x) {
            self.forward_train_fused(x).map_err(candle_core::Error::wrap)
        } else if train && self.remove_mean && matches!(x.dtype(), DType::F16 | DType::BF16) {
            self.forward_train_half(x).map_err(candle_core::Error::wrap)
        } else {
            self.inner.forward_t(x, train)
        }
    }
}
