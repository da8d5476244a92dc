//! [`add_channel_bias`]: `y[n, c, ...] = x[n, c, ...] + b[c]`, the bias of every convolution.
//!
//! With candle's broadcasting add, the bias gradient is one reduction over the batch and spatial
//! axes at once, a strided single-threaded loop that cost about 5 ms per 3x3 layer of the bench
//! PixelCNN here. On the CPU this op is a candle `CustomOp2` whose backward sums each channel's
//! contiguous planes (two fast reductions); its backward is written with tensor ops, so second-order
//! gradients (gradient penalties) flow through it. Other devices use the broadcasting add.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp2, DType, Device, Layout, Shape, Tensor, WithDType};
use rayon::prelude::*;

use super::cpu_slice::contiguous;
use crate::{Error, Result};

struct ChannelBias;

fn add<T: WithDType>(x: &[T], b: &[T], plane: usize) -> Vec<T> {
    let channels = b.len();
    let mut out = x.to_vec();
    out.par_chunks_mut(plane).enumerate().for_each(|(i, p)| {
        let v = b[i % channels];
        p.iter_mut().for_each(|e| *e += v);
    });
    out
}

fn slice<'a, T>(data: &'a [T], layout: &Layout) -> candle_core::Result<&'a [T]> {
    contiguous(data, layout, "channel bias: inputs")
}

impl CustomOp2 for ChannelBias {
    fn name(&self) -> &'static str {
        "candle-generative-channel-bias"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        xl: &Layout,
        b: &CpuStorage,
        bl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let dims = xl.dims();
        let plane: usize = dims[2..].iter().product();
        let out = match (x, b) {
            (CpuStorage::F32(x), CpuStorage::F32(b)) => CpuStorage::F32(add(slice(x, xl)?, slice(b, bl)?, plane)),
            (CpuStorage::F64(x), CpuStorage::F64(b)) => CpuStorage::F64(add(slice(x, xl)?, slice(b, bl)?, plane)),
            (CpuStorage::F16(x), CpuStorage::F16(b)) => CpuStorage::F16(add(slice(x, xl)?, slice(b, bl)?, plane)),
            (CpuStorage::BF16(x), CpuStorage::BF16(b)) => CpuStorage::BF16(add(slice(x, xl)?, slice(b, bl)?, plane)),
            _ => {
                return Err(candle_core::Error::Msg(format!(
                    "channel bias: unsupported dtypes {:?} and {:?}",
                    x.dtype(),
                    b.dtype()
                )))
            }
        };
        Ok((out, xl.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let (n, c) = (x.dim(0)?, x.dim(1)?);
        let grad_b = grad.reshape((n, c, ()))?.sum(2)?.sum(0)?;
        Ok((Some(grad.clone()), Some(grad_b)))
    }
}

/// Adds a per-channel bias `b: (C,)` to `x: (N, C, ...)` (any number of trailing axes), as
/// PyTorch's convolution bias. Same dtype and device for both; `Error::Shape` when `b` does not
/// have `C` elements.
pub fn add_channel_bias(x: &Tensor, b: &Tensor) -> Result<Tensor> {
    if x.rank() < 2 || b.rank() != 1 || b.dim(0)? != x.dim(1)? {
        return Err(Error::shape(
            "add_channel_bias",
            format!("needs x (N, C, ...) and b (C,), got {:?} and {:?}", x.dims(), b.dims()),
        ));
    }
    let fast = matches!(x.device(), Device::Cpu)
        && matches!(x.dtype(), DType::F32 | DType::F64 | DType::F16 | DType::BF16)
        && x.dtype() == b.dtype()
        && super::conv::fast_cpu_kernels();
    if fast {
        return Ok(x.contiguous()?.apply_op2(&b.contiguous()?, ChannelBias)?);
    }
    let mut shape = vec![1; x.rank()];
    shape[1] = b.dim(0)?;
    Ok(x.broadcast_add(&b.reshape(shape)?)?)
}
