//! [`silu`]: `x * sigmoid(x)` (Elfwing et al. 2018; "swish"), the activation of diffusion UNets,
//! with a one-pass CPU backward.
//!
//! candle 0.11 differentiates `Tensor::silu` with about eight elementwise tensor ops, each
//! allocating a full-size result: about 40 ms for one `(64, 32, 28, 28)` activation here. On the
//! CPU (f32, f64) the gradient is one pass `dy * s * (1 + x (1 - s))` with `s = sigmoid(x)`. While
//! a thread keeps the graph for second-order gradients ([`super::double_backward`]) the backward
//! is written with tensor ops instead, so gradient penalties still see it. Other devices and
//! dtypes, and the reference switch [`super::conv::set_fast_cpu_kernels`], use `Tensor::silu`.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, Device, Layout, Shape, Tensor, WithDType};
use rayon::prelude::*;

use super::conv::fast_cpu_kernels;
use super::cpu_slice::contiguous;
use super::double_backward::thread_keeps_graph;
use crate::Result;

/// Elements per parallel task.
const CHUNK: usize = 1 << 14;

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

fn forward<T: WithDType>(x: &[T]) -> Vec<T> {
    let mut out = vec![T::zero(); x.len()];
    out.par_chunks_mut(CHUNK).zip(x.par_chunks(CHUNK)).for_each(|(y, x)| {
        y.iter_mut().zip(x).for_each(|(y, x)| {
            let v = x.to_f64();
            *y = T::from_f64(v * sigmoid(v));
        })
    });
    out
}

fn backward<T: WithDType>(x: &[T], dy: &[T]) -> Vec<T> {
    let mut out = vec![T::zero(); x.len()];
    out.par_chunks_mut(CHUNK).zip(x.par_chunks(CHUNK).zip(dy.par_chunks(CHUNK))).for_each(|(dx, (x, dy))| {
        for (dx, (x, dy)) in dx.iter_mut().zip(x.iter().zip(dy)) {
            let v = x.to_f64();
            let s = sigmoid(v);
            *dx = T::from_f64(dy.to_f64() * s * (1.0 + v * (1.0 - s)));
        }
    });
    out
}

struct Silu;
struct SiluGrad;

impl CustomOp1 for Silu {
    fn name(&self) -> &'static str {
        "candle-generative-silu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let out = match s {
            CpuStorage::F32(x) => CpuStorage::F32(forward(contiguous(x, l, "silu: x")?)),
            CpuStorage::F64(x) => CpuStorage::F64(forward(contiguous(x, l, "silu: x")?)),
            other => return Err(candle_core::Error::Msg(format!("silu: unsupported dtype {:?}", other.dtype()))),
        };
        Ok((out, l.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, dy: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let keeps_graph = thread_keeps_graph().map_err(candle_core::Error::wrap)?;
        if keeps_graph {
            let s = candle_nn::ops::sigmoid(x)?;
            let local = (&s * ((x * (1.0 - &s)?)? + 1.0)?)?;
            return Ok(Some((dy * local)?));
        }
        Ok(Some(x.apply_op2_no_bwd(&dy.contiguous()?, &SiluGrad)?))
    }
}

impl CustomOp2 for SiluGrad {
    fn name(&self) -> &'static str {
        "candle-generative-silu-grad"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        xl: &Layout,
        dy: &CpuStorage,
        dyl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let out = match (x, dy) {
            (CpuStorage::F32(x), CpuStorage::F32(dy)) => {
                CpuStorage::F32(backward(contiguous(x, xl, "silu: x")?, contiguous(dy, dyl, "silu: dy")?))
            }
            (CpuStorage::F64(x), CpuStorage::F64(dy)) => {
                CpuStorage::F64(backward(contiguous(x, xl, "silu: x")?, contiguous(dy, dyl, "silu: dy")?))
            }
            (a, b) => {
                return Err(candle_core::Error::Msg(format!(
                    "silu backward: unsupported dtypes {:?}, {:?}",
                    a.dtype(),
                    b.dtype()
                )))
            }
        };
        Ok((out, xl.shape().clone()))
    }
}

/// `x * sigmoid(x)` elementwise, any shape; same shape and dtype out. Equal to `Tensor::silu`
/// (to rounding) with a faster CPU backward.
///
/// ```
/// use candle_core::{Device, Tensor};
/// let x = Tensor::new(&[-1f32, 0.0, 2.0], &Device::Cpu)?;
/// let y = candle_generative::nn::silu::silu(&x)?.to_vec1::<f32>()?;
/// assert!((y[2] - 2.0 / (1.0 + (-2f32).exp())).abs() < 1e-6 && y[1] == 0.0);
/// # Ok::<(), candle_generative::Error>(())
/// ```
pub fn silu(x: &Tensor) -> Result<Tensor> {
    let fused = matches!(x.device(), Device::Cpu) && matches!(x.dtype(), DType::F32 | DType::F64) && fast_cpu_kernels();
    if fused {
        return Ok(x.contiguous()?.apply_op1(Silu)?);
    }
    Ok(x.silu()?)
}
