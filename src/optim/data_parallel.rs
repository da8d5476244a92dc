//! Data-parallel training: replicas of one model, each on its own shard of the data (and its own
//! device), whose gradients are averaged before every update so the replicas stay identical.
//!
//! [`DataParallel`] wraps any optimizer and does the averaging through a [`GradientReducer`]: an
//! NCCL all-reduce across processes on CUDA (see `docs/gpu.md`), or [`super::ThreadGroup`], which
//! averages across threads of one process (replicas on several devices of one machine, or on the
//! CPU for testing).

use std::collections::HashMap;

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};
use candle_nn::Optimizer;

use super::mixed_precision::{scaled_backward, LossScaling};
use super::state::into_candle_error;
use super::{NamedVars, TrainingState};
use crate::{Error, Result};

/// Averages one gradient over all replicas: a collective operation, so every replica calls
/// [`GradientReducer::mean`] for the same variables in the same order at every step.
pub trait GradientReducer {
    /// The element-wise mean over all replicas of `grad`, this replica's gradient of the variable
    /// `name`; the result has `grad`'s shape, dtype and device, and is the same on every replica.
    fn mean(&mut self, name: &str, grad: &Tensor) -> Result<Tensor>;
}

/// An optimizer over one replica of a data-parallel model (Goyal et al. 2017's synchronous SGD;
/// PyTorch's DDP): [`Optimizer::step`] replaces each gradient by its mean over the replicas, then
/// steps the wrapped optimizer. With every replica starting from the same weights (the same
/// seed) and its own shard of each batch ([`crate::data::batcher::Batcher::shard`]), the replicas
/// take the steps a single process would take on the union of their batches.
///
/// Wrap *outside* [`super::MixedPrecision`] (`DataParallel<MixedPrecision<Adam>, R>`): the
/// average then sees the scaled half-precision gradients, an inf on one replica becomes an inf on
/// all of them, and every replica skips the same step, so their loss scales stay equal.
///
/// A variable without a gradient on this replica (unused by its loss) contributes zeros, so that
/// the replicas stay in lockstep; the wrapped optimizer then sees a gradient for it.
///
/// ```
/// use candle_core::{Device, Var};
/// use candle_generative::optim::{DataParallel, NamedVars, Sgd, SgdConfig, ThreadGroup};
/// use candle_nn::Optimizer;
///
/// // Two replicas of w = 0 on two threads; each fits w to its own target (1 or 3) by
/// // minimising (w - target)^2 / 2. Averaged gradients fit the mean target, 2, on both.
/// let weights: Vec<f32> = std::thread::scope(|s| {
///     let handles: Vec<_> = ThreadGroup::new(2)?
///         .into_iter()
///         .map(|group| {
///             s.spawn(move || -> candle_generative::Result<f32> {
///                 let target = 1.0 + 2.0 * group.rank() as f64;
///                 let w = Var::new(0f32, &Device::Cpu)?;
///                 let vars = NamedVars::from_pairs(vec![("w".into(), w.clone())])?;
///                 let sgd = Sgd::new_named(vars.clone(), SgdConfig::with_lr(0.5))?;
///                 let mut opt = DataParallel::new(sgd, vars, group);
///                 for _ in 0..30 {
///                     let loss = (w.as_tensor() - target)?.sqr()?.affine(0.5, 0.0)?;
///                     opt.backward_step(&loss)?;
///                 }
///                 Ok(w.as_tensor().to_scalar::<f32>()?)
///             })
///         })
///         .collect();
///     handles.into_iter().map(|h| h.join().expect("replica thread")).collect::<candle_generative::Result<_>>()
/// })?;
/// assert_eq!(weights[0], weights[1]);
/// assert!((weights[0] - 2.0).abs() < 1e-4, "{}", weights[0]);
/// # Ok::<(), candle_generative::Error>(())
/// ```
#[derive(Debug)]
pub struct DataParallel<O, R> {
    inner: O,
    vars: NamedVars,
    reducer: R,
}

impl<O, R: GradientReducer> DataParallel<O, R> {
    /// `inner` steps `vars` (the same variables, by the same names, on every replica) with the
    /// gradients averaged by `reducer`.
    pub fn new(inner: O, vars: NamedVars, reducer: R) -> Self {
        Self { inner, vars, reducer }
    }

    /// The wrapped optimizer.
    pub fn inner(&self) -> &O {
        &self.inner
    }

    /// The wrapped optimizer, e.g. to change its configuration.
    pub fn inner_mut(&mut self) -> &mut O {
        &mut self.inner
    }

    /// `grads` with every variable's gradient replaced by its mean over the replicas.
    pub fn average(&mut self, grads: &GradStore) -> Result<GradStore> {
        let mut out = GradStore::default();
        for (name, var) in self.vars.iter() {
            let local = match grads.get(var.as_tensor()) {
                Some(g) => g.detach(),
                None => var.as_tensor().zeros_like()?,
            };
            let mean = self.reducer.mean(name, &local)?;
            if mean.dims() != var.dims() || mean.dtype() != var.dtype() {
                return Err(Error::shape(
                    "DataParallel",
                    format!(
                        "the reducer returned {:?} {:?} for `{name}`, which is {:?} {:?}",
                        mean.dtype(),
                        mean.dims(),
                        var.dtype(),
                        var.dims()
                    ),
                ));
            }
            out.insert(var.as_tensor(), mean);
        }
        Ok(out)
    }
}

impl<O: LossScaling, R> LossScaling for DataParallel<O, R> {
    fn loss_scale(&self) -> f64 {
        self.inner.loss_scale()
    }
}

impl<O: Optimizer + LossScaling, R: GradientReducer> Optimizer for DataParallel<O, R> {
    type Config = O::Config;

    /// Always an error: a replica needs its reducer, so build it with [`DataParallel::new`].
    fn new(_vars: Vec<Var>, _config: O::Config) -> candle_core::Result<Self> {
        Err(candle_core::Error::Msg("DataParallel needs a GradientReducer: use DataParallel::new".into()))
    }

    /// Averages `grads` over the replicas ([`DataParallel::average`]), then steps the inner
    /// optimizer with the averages.
    fn step(&mut self, grads: &GradStore) -> candle_core::Result<()> {
        let averaged = self.average(grads).map_err(into_candle_error)?;
        self.inner.step(&averaged)
    }

    /// Scales `loss` by the inner optimizer's loss scale before the backward pass.
    fn backward_step(&mut self, loss: &Tensor) -> candle_core::Result<()> {
        let grads = scaled_backward(loss, self.loss_scale()).map_err(into_candle_error)?;
        self.step(&grads)
    }

    fn learning_rate(&self) -> f64 {
        self.inner.learning_rate()
    }

    fn set_learning_rate(&mut self, lr: f64) {
        self.inner.set_learning_rate(lr)
    }
}

impl<O: TrainingState, R> TrainingState for DataParallel<O, R> {
    /// The inner optimizer's state (the same on every replica): a data-parallel run and a
    /// single-process run write the same checkpoint.
    fn state_tensors(&self) -> Result<Vec<(String, Tensor)>> {
        self.inner.state_tensors()
    }

    fn load_state_tensors(&mut self, tensors: &HashMap<String, Tensor>) -> Result<()> {
        self.inner.load_state_tensors(tensors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Pretends the other replica's gradient was `other` (a world of two), or returns a wrong shape.
    struct Fixed {
        other: f32,
        wrong_shape: bool,
    }

    impl GradientReducer for Fixed {
        fn mean(&mut self, _name: &str, grad: &Tensor) -> Result<Tensor> {
            if self.wrong_shape {
                return Ok(grad.flatten_all()?.narrow(0, 0, 1)?);
            }
            Ok(((grad + self.other as f64)? * 0.5)?)
        }
    }

    fn var(values: &[f32]) -> Result<Var> {
        Ok(Var::new(values, &Device::Cpu)?)
    }

    #[test]
    fn steps_with_the_averaged_gradient_and_zeros_for_a_missing_one() -> Result<()> {
        let (a, b) = (var(&[1.0, 2.0])?, var(&[5.0])?);
        let vars = NamedVars::from_pairs(vec![("a".into(), a.clone()), ("b".into(), b.clone())])?;
        let sgd = super::super::Sgd::new_named(vars.clone(), super::super::SgdConfig::with_lr(0.1))?;
        let mut opt = DataParallel::new(sgd, vars, Fixed { other: 4.0, wrong_shape: false });
        // The loss uses only `a`: d/da sum(3 a) = 3, averaged with 4 -> 3.5; `b` has no gradient
        // here, so it contributes 0, averaged with 4 -> 2.
        opt.backward_step(&(a.as_tensor() * 3.0)?.sum_all()?)?;
        assert_eq!(a.as_tensor().to_vec1::<f32>()?, [1.0 - 0.35, 2.0 - 0.35]);
        assert_eq!(b.as_tensor().to_vec1::<f32>()?, [5.0 - 0.2]);
        assert_eq!(opt.loss_scale(), 1.0);
        opt.set_learning_rate(0.5);
        assert_eq!(opt.inner().learning_rate(), 0.5);
        Ok(())
    }

    #[test]
    fn bad_reducers_and_groups_are_errors() -> Result<()> {
        let a = var(&[1.0, 2.0])?;
        let vars = NamedVars::from_pairs(vec![("a".into(), a.clone())])?;
        let sgd = super::super::Sgd::new_named(vars.clone(), super::super::SgdConfig::with_lr(0.1))?;
        let mut opt = DataParallel::new(sgd, vars, Fixed { other: 0.0, wrong_shape: true });
        let e = opt.backward_step(&a.as_tensor().sum_all()?).unwrap_err().to_string();
        assert!(e.contains("`a`") && e.contains("[1]"), "{e}");
        assert_eq!(a.as_tensor().to_vec1::<f32>()?, [1.0, 2.0], "a failed step must not move the weights");
        let built = <DataParallel<super::super::Sgd, Fixed> as Optimizer>::new(vec![a], Default::default());
        assert!(built.is_err());
        Ok(())
    }
}
