//! Losses of every model family, callable with tensors from any architecture.
//!
//! - [`adversarial`]: [`GanLoss`](adversarial::GanLoss) for discriminator and generator, from logits;
//! - [`penalty`]: WGAN-GP and R1 gradient penalties, weight clipping;
//! - [`elbo`]: Gaussian KL, reparameterised sampling, reconstruction likelihoods, the ELBO;
//! - [`autoregressive`]: 256-way pixel cross-entropy, discretised logistic mixtures, bits/dim;
//! - [`diffusion`]: epsilon-, x0- and v-prediction MSE with per-sample (min-SNR) weights;
//! - [`cycle`]: cycle-consistency and identity L1.
//!
//! Each function states its formula and paper, input shapes and ranges, and its [`Reduction`].
//! Shape mismatches are `Error::Shape`, never a panic.

pub mod adversarial;
pub mod autoregressive;
pub mod cycle;
pub mod diffusion;
pub mod elbo;
mod logistic;
pub mod penalty;

use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// How a per-element (or per-sample) loss is reduced to what the function returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Reduction {
    /// Mean over every element (PyTorch's default).
    #[default]
    Mean,
    /// Sum over every element.
    Sum,
    /// Sum over all dimensions but the first, then mean over the batch: a per-sample total,
    /// the usual reduction for likelihoods (an ELBO in nats per image).
    SumPerSampleMean,
    /// No reduction: the per-element values, in the input's shape.
    None,
}

/// `t` in `f32` when it is `f16`/`bf16`, else `t` itself. The losses reduce over many elements,
/// where a half-precision sum keeps about three significant digits (and `f16`'s range ends at
/// 65504): like PyTorch's autocast, every loss here is computed and returned in `f32` for
/// half-precision inputs; the gradient flowing back is cast to the input's dtype.
pub fn full_precision(t: &Tensor) -> Result<Tensor> {
    Ok(match t.dtype() {
        DType::F16 | DType::BF16 => t.to_dtype(DType::F32)?,
        _ => t.clone(),
    })
}

impl Reduction {
    /// Applies the reduction to a tensor of per-element losses.
    pub fn apply(self, per_element: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Reduction::Mean => per_element.mean_all()?,
            Reduction::Sum => per_element.sum_all()?,
            Reduction::SumPerSampleMean => {
                if per_element.rank() == 0 {
                    return Err(Error::shape("Reduction::SumPerSampleMean", "needs a batch dimension, got a scalar"));
                }
                per_element.flatten_from(1)?.sum(1)?.mean_all()?
            }
            Reduction::None => per_element.clone(),
        })
    }
}

/// `Err(Error::Shape)` unless `a` and `b` have the same shape; `context` names the loss.
pub(crate) fn same_shape(context: &str, a: &Tensor, b: &Tensor) -> Result<()> {
    if a.dims() != b.dims() {
        return Err(Error::shape(context, format!("shapes differ: {:?} vs {:?}", a.dims(), b.dims())));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn reductions() -> Result<()> {
        let x = Tensor::new(&[[1f32, 2., 3.], [4., 5., 6.]], &Device::Cpu)?;
        assert_eq!(Reduction::Mean.apply(&x)?.to_scalar::<f32>()?, 3.5);
        assert_eq!(Reduction::Sum.apply(&x)?.to_scalar::<f32>()?, 21.0);
        assert_eq!(Reduction::SumPerSampleMean.apply(&x)?.to_scalar::<f32>()?, 10.5);
        assert_eq!(Reduction::None.apply(&x)?.dims(), &[2, 3]);
        assert!(Reduction::SumPerSampleMean.apply(&Tensor::new(1f32, &Device::Cpu)?).is_err());
        assert!(same_shape("t", &x, &x.t()?).is_err());
        Ok(())
    }
}
