//! Mixed-precision training (Micikevicius et al. 2018): a network in `f16`/`bf16` whose optimizer
//! updates `f32` master weights, with dynamic loss scaling for `f16` ([`MixedPrecision`]).

use std::collections::HashMap;

use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor, Var};
use candle_nn::Optimizer;

use super::loss_scale::{LossScaleConfig, LossScaler, ScaleChange};
use super::state::into_candle_error;
use super::{read_like, NamedVars, TrainingState};
use crate::{Error, Result};

/// The optimizers' view of the loss scale, so that a training step written against any
/// `candle_nn::Optimizer` can scale its loss before `backward`: [`MixedPrecision`] returns its
/// current scale; every plain optimizer returns 1 (the provided method). For an optimizer of your
/// own, `impl LossScaling for MyOptimizer {}` is enough.
pub trait LossScaling {
    /// The factor the loss is multiplied by before the backward pass (1: no scaling).
    fn loss_scale(&self) -> f64 {
        1.0
    }
}

impl LossScaling for candle_nn::AdamW {}
impl LossScaling for candle_nn::SGD {}
impl LossScaling for super::Adam {}
impl LossScaling for super::RmsProp {}
impl LossScaling for super::Sgd {}

/// `loss.backward()` with the loss multiplied by `scale` first (in `f32` for a half-precision
/// loss, so that the product itself cannot overflow); `scale = 1` is the plain backward pass.
/// The gradients come out multiplied by `scale`: [`MixedPrecision::step`] divides them again.
pub fn scaled_backward(loss: &Tensor, scale: f64) -> Result<GradStore> {
    if scale == 1.0 {
        return Ok(loss.backward()?);
    }
    let loss = match loss.dtype() {
        DType::F16 | DType::BF16 => loss.to_dtype(DType::F32)?,
        _ => loss.clone(),
    };
    Ok(loss.affine(scale, 0.0)?.backward()?)
}

/// What the last [`MixedPrecision`] step did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MixedStepReport {
    /// `false` when the gradients were not finite and the update was skipped.
    pub applied: bool,
    /// The loss scale the step's gradients were computed with.
    pub scale: f64,
    /// How the scale moved afterwards (`Kept` without loss scaling).
    pub change: ScaleChange,
}

/// One trained variable: the network's own, and its `f32` master copy when the network's is
/// `f16`/`bf16`.
#[derive(Debug)]
struct Pair {
    name: String,
    model: Var,
    master: Option<Var>,
}

/// Mixed-precision training around any optimizer `O`: the network's variables may be `f16` or
/// `bf16`; `O` updates `f32` master copies of them (so that updates smaller than a half-precision
/// ulp are not lost), and after each update the masters are rounded into the network. With a
/// [`LossScaler`] (the default for `f16`; `bf16` has `f32`'s exponent range and needs none), the
/// gradients of a loss scaled by [`LossScaling::loss_scale`] are unscaled in `f32`, and a step with
/// non-finite gradients is skipped and the scale backed off.
///
/// Variables that are already `f32`/`f64` are updated in place, without a copy; for a network all
/// in `f32` the wrapper adds nothing (the same numbers, bit for bit, and the same checkpoint
/// names as `O` alone).
///
/// Without loss scaling, non-finite gradients are an [`Error::NonFinite`] and nothing changes.
///
/// ```
/// use candle_core::{DType, Device, Var};
/// use candle_nn::Optimizer;
/// use candle_generative::optim::{scaled_backward, Adam, AdamConfig, LossScaling, MixedPrecision, NamedVars};
///
/// // Minimise (w - 1)² with w in f16: Adam's update runs on an f32 master copy.
/// let w = Var::new(&[3.0f32], &Device::Cpu)?.to_dtype(DType::F16)?;
/// let w = Var::from_tensor(&w)?;
/// let vars = NamedVars::from_pairs(vec![("w".to_string(), w.clone())])?;
/// let mut opt = MixedPrecision::auto(vars, |master| Adam::new_named(master, AdamConfig::with_lr(0.1)))?;
/// assert!(opt.loss_scale() > 1.0); // f16: dynamic loss scaling
/// for _ in 0..100 {
///     let loss = (w.as_tensor() - 1.0)?.sqr()?.sum_all()?;
///     let grads = scaled_backward(&loss, opt.loss_scale())?;
///     opt.step(&grads)?;
/// }
/// let w = w.to_dtype(DType::F32)?.to_vec1::<f32>()?[0];
/// assert!((w - 1.0).abs() < 0.1, "{w}");
/// # Ok::<(), candle_generative::Error>(())
/// ```
#[derive(Debug)]
pub struct MixedPrecision<O> {
    inner: O,
    pairs: Vec<Pair>,
    scaler: Option<LossScaler>,
    last: Option<MixedStepReport>,
}

impl<O> MixedPrecision<O> {
    /// Wraps `vars` (the network's variables): `build` makes the optimizer over the master
    /// variables (the `f32` copies of the half-precision ones, the others themselves, same names),
    /// and `loss_scale` turns dynamic loss scaling on.
    pub fn new(
        vars: NamedVars,
        loss_scale: Option<LossScaleConfig>,
        build: impl FnOnce(NamedVars) -> Result<O>,
    ) -> Result<Self> {
        let scaler = loss_scale.map(LossScaler::new).transpose()?;
        let mut pairs = Vec::with_capacity(vars.len());
        let mut masters = Vec::with_capacity(vars.len());
        for (name, var) in vars.iter() {
            let master = match var.dtype() {
                DType::F16 | DType::BF16 => Some(Var::from_tensor(&var.as_tensor().detach().to_dtype(DType::F32)?)?),
                DType::F32 | DType::F64 => None,
                other => return Err(Error::config("vars", format!("`{name}` is {other:?}, not a float"))),
            };
            masters.push((name.to_string(), master.clone().unwrap_or_else(|| var.clone())));
            pairs.push(Pair { name: name.to_string(), model: var.clone(), master });
        }
        let inner = build(NamedVars::from_pairs(masters)?)?;
        Ok(Self { inner, pairs, scaler, last: None })
    }

    /// [`MixedPrecision::new`] with loss scaling (the default [`LossScaleConfig`]) exactly when a
    /// variable is `f16`.
    pub fn auto(vars: NamedVars, build: impl FnOnce(NamedVars) -> Result<O>) -> Result<Self> {
        let any_f16 = vars.iter().any(|(_, v)| v.dtype() == DType::F16);
        Self::new(vars, any_f16.then(LossScaleConfig::default), build)
    }

    /// The wrapped optimizer (over the master variables).
    pub fn inner(&self) -> &O {
        &self.inner
    }

    /// The wrapped optimizer, e.g. to change its configuration.
    pub fn inner_mut(&mut self) -> &mut O {
        &mut self.inner
    }

    /// The loss scaler, when loss scaling is on.
    pub fn scaler(&self) -> Option<&LossScaler> {
        self.scaler.as_ref()
    }

    /// What the last step did (`None` before the first).
    pub fn last_step(&self) -> Option<MixedStepReport> {
        self.last
    }

    /// Steps skipped for non-finite gradients so far (0 without loss scaling).
    pub fn skipped_steps(&self) -> u64 {
        self.scaler.as_ref().map_or(0, LossScaler::skipped_steps)
    }

    /// `true` when the wrapper does nothing: every variable in full precision, no loss scaling.
    fn is_identity(&self) -> bool {
        self.scaler.is_none() && self.pairs.iter().all(|p| p.master.is_none())
    }
}

impl<O: Optimizer> MixedPrecision<O> {
    /// One update from `grads`, the gradients of the network's variables of a loss scaled by
    /// [`LossScaling::loss_scale`] (see [`scaled_backward`]): unscales them in `f32`, and when all
    /// are finite steps the inner optimizer on the masters and rounds them into the network;
    /// otherwise skips the step and backs the scale off. Returns what it did.
    pub fn try_step(&mut self, grads: &GradStore) -> Result<MixedStepReport> {
        let scale = self.loss_scale();
        if self.is_identity() {
            self.inner.step(grads)?;
            let report = MixedStepReport { applied: true, scale, change: ScaleChange::Kept };
            self.last = Some(report);
            return Ok(report);
        }
        let mut master_grads = GradStore::default();
        let mut sums = Vec::with_capacity(self.pairs.len());
        for pair in &self.pairs {
            let Some(g) = grads.get(pair.model.as_tensor()) else { continue };
            let target = pair.master.as_ref().map_or(pair.model.dtype(), |m| m.dtype());
            let mut g = g.detach().to_dtype(target)?;
            if scale != 1.0 {
                g = g.affine(1.0 / scale, 0.0)?;
            }
            // NaN and inf survive a sum, so one reduction per variable finds them.
            sums.push(g.sum_all()?.to_dtype(DType::F32)?);
            master_grads.insert(pair.master.as_ref().map_or(pair.model.as_tensor(), |m| m.as_tensor()), g);
        }
        let finite = sums.is_empty() || Tensor::stack(&sums, 0)?.sum_all()?.to_scalar::<f32>()?.is_finite();
        let change = match self.scaler.as_mut() {
            Some(scaler) => scaler.update(finite)?,
            None if finite => ScaleChange::Kept,
            None => return Err(Error::non_finite("gradients (mixed precision, no loss scaling)", None, f64::NAN)),
        };
        if finite {
            self.inner.step(&master_grads)?;
            for pair in &self.pairs {
                if let Some(master) = &pair.master {
                    pair.model.set(&master.as_tensor().to_dtype(pair.model.dtype())?)?;
                }
            }
        }
        let report = MixedStepReport { applied: finite, scale, change };
        self.last = Some(report);
        Ok(report)
    }

    /// [`scaled_backward`] of `loss` at the current scale, then [`MixedPrecision::try_step`]: the
    /// whole update of a training step that owns its optimizer.
    pub fn backward_step_report(&mut self, loss: &Tensor) -> Result<MixedStepReport> {
        let grads = scaled_backward(loss, self.loss_scale())?;
        self.try_step(&grads)
    }
}

impl<O> LossScaling for MixedPrecision<O> {
    fn loss_scale(&self) -> f64 {
        self.scaler.as_ref().map_or(1.0, LossScaler::scale)
    }
}

impl<O: Optimizer> Optimizer for MixedPrecision<O> {
    type Config = O::Config;

    /// [`MixedPrecision::auto`] over `vars` named `"0"`, `"1"`, ... with `O::new(masters, config)`.
    fn new(vars: Vec<Var>, config: O::Config) -> candle_core::Result<Self> {
        Self::auto(NamedVars::from_vars(vars), |masters| Ok(O::new(masters.vars(), config)?)).map_err(into_candle_error)
    }

    /// [`MixedPrecision::try_step`]; a skipped step is not an error.
    fn step(&mut self, grads: &GradStore) -> candle_core::Result<()> {
        self.try_step(grads).map(|_| ()).map_err(into_candle_error)
    }

    /// Scales `loss` by the current loss scale before the backward pass.
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

impl<O: TrainingState> TrainingState for MixedPrecision<O> {
    /// The inner optimizer's tensors under their own names, then `"master.<name>"` for each `f32`
    /// master copy and `"loss_scale.*"` (see [`LossScaler`]) when loss scaling is on: a network
    /// all in `f32` exports exactly what `O` alone would.
    fn state_tensors(&self) -> Result<Vec<(String, Tensor)>> {
        let mut out = self.inner.state_tensors()?;
        for pair in &self.pairs {
            if let Some(master) = &pair.master {
                out.push((format!("master.{}", pair.name), master.as_tensor().detach()));
            }
        }
        if let Some(scaler) = &self.scaler {
            out.extend(scaler.state_tensors()?.into_iter().map(|(n, t)| (format!("loss_scale.{n}"), t)));
        }
        Ok(out)
    }

    /// Restores the inner state, the master weights (rounding them into the network) and the
    /// scale. Everything is checked before anything changes.
    fn load_state_tensors(&mut self, tensors: &HashMap<String, Tensor>) -> Result<()> {
        let mut masters = Vec::new();
        for pair in &self.pairs {
            if let Some(master) = &pair.master {
                masters.push(read_like(tensors, &format!("master.{}", pair.name), master.as_tensor())?);
            }
        }
        let mut scaler = self.scaler.clone();
        if let Some(s) = scaler.as_mut() {
            let prefix = "loss_scale.";
            let own: HashMap<String, Tensor> = tensors
                .iter()
                .filter_map(|(k, v)| k.strip_prefix(prefix).map(|n| (n.to_string(), v.clone())))
                .collect();
            s.load_state_tensors(&own)?;
        }
        self.inner.load_state_tensors(tensors)?;
        for (pair, value) in self.pairs.iter().filter(|p| p.master.is_some()).zip(masters) {
            if let Some(master) = &pair.master {
                master.set(&value)?;
                pair.model.set(&value.to_dtype(pair.model.dtype())?)?;
            }
        }
        self.scaler = scaler;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{check_round_trip, values, Quadratic};
    use super::super::{Adam, AdamConfig, Sgd, SgdConfig};
    use super::*;
    use candle_core::Device;

    fn var(values: &[f32], dtype: DType) -> Result<(Var, NamedVars)> {
        let v = Var::from_tensor(&Tensor::new(values, &Device::Cpu)?.to_dtype(dtype)?)?;
        Ok((v.clone(), NamedVars::from_pairs(vec![("w".to_string(), v)])?))
    }

    fn sgd(lr: f64) -> impl FnOnce(NamedVars) -> Result<Sgd> {
        move |m| Sgd::new_named(m, SgdConfig::with_lr(lr))
    }

    #[test]
    fn full_precision_is_the_inner_optimizer_bit_for_bit() -> Result<()> {
        let problem = Quadratic::new(3, 4);
        let (plain_vars, mixed_vars) = (problem.vars(DType::F32)?, problem.vars(DType::F32)?);
        let mut plain = Adam::new_named(plain_vars.clone(), AdamConfig::with_lr(0.05))?;
        let mut mixed = MixedPrecision::auto(mixed_vars.clone(), |m| Adam::new_named(m, AdamConfig::with_lr(0.05)))?;
        assert_eq!(mixed.loss_scale(), 1.0);
        for k in 0..4 {
            plain.backward_step(&problem.loss(k, &plain_vars, |_, _| true)?)?;
            mixed.backward_step(&problem.loss(k, &mixed_vars, |_, _| true)?)?;
        }
        for ((_, a), (_, b)) in plain_vars.iter().zip(mixed_vars.iter()) {
            assert_eq!(values(a)?, values(b)?);
        }
        let names = |s: Vec<(String, Tensor)>| s.into_iter().map(|(n, _)| n).collect::<Vec<_>>();
        assert_eq!(names(plain.state_tensors()?), names(mixed.state_tensors()?));
        check_round_trip(|vars| MixedPrecision::auto(vars, |m| Adam::new_named(m, AdamConfig::with_lr(0.05))))
    }

    #[test]
    fn master_weights_keep_updates_below_the_bf16_ulp() -> Result<()> {
        // d/dw sum(w) = 1: SGD moves w by lr = 1e-3 per step, an eighth of bf16's ulp at 1.0 (2^-7).
        let (plain_w, plain_vars) = var(&[1.0, -2.0], DType::BF16)?;
        let mut plain = Sgd::new_named(plain_vars, SgdConfig::with_lr(1e-3))?;
        let (w, vars) = var(&[1.0, -2.0], DType::BF16)?;
        let mut mixed = MixedPrecision::auto(vars, sgd(1e-3))?;
        assert!(mixed.scaler().is_none(), "bf16 needs no loss scaling");
        for _ in 0..100 {
            plain.backward_step(&plain_w.as_tensor().sum_all()?)?;
            mixed.backward_step(&w.as_tensor().sum_all()?)?;
        }
        assert_eq!(values(&plain_w)?, vec![1.0, -2.0], "bf16 alone rounds every update away");
        let got = values(&w)?;
        assert!((got[0] - 0.9).abs() < 4e-3 && (got[1] + 2.1).abs() < 8e-3, "{got:?}");
        let master: HashMap<_, _> = mixed.state_tensors()?.into_iter().collect();
        let master = values(&master["master.w"])?;
        assert!((master[0] - 0.9).abs() < 1e-5 && (master[1] + 2.1).abs() < 1e-5, "{master:?}");
        assert_eq!(w.dtype(), DType::BF16);
        Ok(())
    }

    /// `loss = sum(c2 ⊙ (c1 ⊙ w))` in f16 with `c1 = c2 = 1e-4`: `dL/dw = 1e-8`, below f16's
    /// smallest subnormal, unless the loss is scaled.
    fn tiny_gradient_loss(w: &Var) -> Result<Tensor> {
        let c = Tensor::full(1e-4f32, w.dims(), &Device::Cpu)?.to_dtype(DType::F16)?;
        Ok((w.as_tensor().mul(&c)?.mul(&c))?.sum_all()?)
    }

    #[test]
    fn loss_scaling_keeps_f16_gradients_from_flushing_to_zero() -> Result<()> {
        let (w, vars) = var(&[1.0, 0.5], DType::F16)?;
        let mut scaled = MixedPrecision::auto(vars, sgd(1e5))?;
        assert_eq!(scaled.loss_scale(), 1024.0);
        let (w_unscaled, vars) = var(&[1.0, 0.5], DType::F16)?;
        let mut unscaled = MixedPrecision::new(vars, None, sgd(1e5))?;
        for _ in 0..10 {
            scaled.backward_step(&tiny_gradient_loss(&w)?)?;
            unscaled.backward_step(&tiny_gradient_loss(&w_unscaled)?)?;
        }
        assert_eq!(values(&w_unscaled)?, vec![1.0, 0.5], "the unscaled gradient should flush to zero");
        // Ten steps of lr · 1e-8 = 1e-3 each (c1 · c2 in f16 is 1e-8 to 0.1%).
        let got = values(&w)?;
        assert!((got[0] - 0.99).abs() < 1e-3 && (got[1] - 0.49).abs() < 1e-3, "{got:?}");
        assert_eq!(scaled.skipped_steps(), 0);
        Ok(())
    }

    #[test]
    fn overflowing_steps_are_skipped_and_the_scale_backs_off() -> Result<()> {
        // dL/dw = 100 · scale in f16 overflows (> 65504) for every scale above 655: the default 1024.
        let (w, vars) = var(&[1.0], DType::F16)?;
        let mut opt = MixedPrecision::auto(vars, sgd(0.1))?;
        let loss = |w: &Var| -> Result<Tensor> { Ok(w.as_tensor().affine(100.0, 0.0)?.sum_all()?) };
        let mut reports = Vec::new();
        for _ in 0..3 {
            let grads = scaled_backward(&loss(&w)?, opt.loss_scale())?;
            reports.push(opt.try_step(&grads)?);
        }
        let applied: Vec<bool> = reports.iter().map(|r| r.applied).collect();
        assert_eq!(applied, vec![false, true, true]);
        assert_eq!((reports[0].scale, reports[0].change), (1024.0, ScaleChange::BackedOff));
        assert_eq!((reports[1].scale, opt.loss_scale(), opt.skipped_steps()), (512.0, 512.0, 1));
        // Only the last two steps moved w: 1 - 2 · 0.1 · 100.
        assert_eq!(values(&w)?, vec![-19.0]);
        Ok(())
    }

    #[test]
    fn non_finite_gradients_without_scaling_are_an_error() -> Result<()> {
        let (w, vars) = var(&[1.0], DType::BF16)?;
        let mut opt = MixedPrecision::auto(vars, sgd(0.1))?;
        let loss = w.as_tensor().log()?.affine(-1.0, 0.0)?.sqrt()?.sum_all()?; // sqrt(-0): inf gradient
        let err = opt.backward_step(&loss).unwrap_err().to_string();
        assert!(err.contains("non-finite") && err.contains("gradients"), "{err}");
        assert_eq!(values(&w)?, vec![1.0]);
        Ok(())
    }

    #[test]
    fn resumes_master_weights_and_scale_exactly() -> Result<()> {
        let problem = Quadratic::new(5, 6);
        let make = |vars| MixedPrecision::auto(vars, |m| Adam::new_named(m, AdamConfig::with_lr(0.05)));
        let vars_a = problem.vars(DType::F16)?;
        let mut a = make(vars_a.clone())?;
        for k in 0..3 {
            a.backward_step(&problem.loss(k, &vars_a, |_, _| true)?)?;
        }
        let state: HashMap<String, Tensor> = a.state_tensors()?.into_iter().collect();
        assert!(state.contains_key("master.w0") && state.contains_key("loss_scale.scale"), "{:?}", state.keys());
        assert_eq!(state["m.w0"].dtype(), DType::F32, "moments live in f32");

        let vars_b = problem.vars(DType::F16)?;
        let mut b = make(vars_b.clone())?;
        let mut bad = state.clone();
        bad.remove("master.w1");
        assert!(b.load_state_tensors(&bad).unwrap_err().to_string().contains("master.w1"));
        b.load_state_tensors(&state)?;
        for k in 3..6 {
            a.backward_step(&problem.loss(k, &vars_a, |_, _| true)?)?;
            b.backward_step(&problem.loss(k, &vars_b, |_, _| true)?)?;
        }
        for ((_, x), (_, y)) in vars_a.iter().zip(vars_b.iter()) {
            assert_eq!(values(x)?, values(y)?);
        }
        let (sa, sb) = (a.state_tensors()?, b.state_tensors()?);
        for ((na, ta), (nb, tb)) in sa.iter().zip(&sb) {
            assert_eq!(na, nb);
            assert_eq!(values(ta)?, values(tb)?, "{na}");
        }
        Ok(())
    }
}
