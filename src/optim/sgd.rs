//! Stochastic gradient descent with momentum, dampening, Nesterov momentum and weight decay, plus
//! the per-variable state that all optimizers of this module share ([`VarStates`]).

use std::collections::HashMap;

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};
use serde::{Deserialize, Serialize};

use super::{read_like, read_scalar, scalar_tensor, NamedVars, TrainingState};
use crate::{Error, Result};

/// Hyper-parameters of [`Sgd`]. The defaults are those of PyTorch's `torch.optim.SGD`: plain
/// SGD with `lr = 1e-3`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SgdConfig {
    /// Learning rate `γ` (>= 0).
    pub lr: f64,
    /// Momentum factor `μ` (>= 0); 0 turns momentum off and keeps no buffer.
    pub momentum: f64,
    /// Dampening `τ` in `[0, 1]`: the buffer takes `(1 - τ) g` instead of `g` after the first step.
    pub dampening: f64,
    /// L2 penalty `λ` (>= 0), added to the gradient as `λ θ`.
    pub weight_decay: f64,
    /// Nesterov momentum (Sutskever et al. 2013); needs `momentum > 0` and `dampening == 0`.
    pub nesterov: bool,
}

impl Default for SgdConfig {
    fn default() -> Self {
        Self { lr: 1e-3, momentum: 0.0, dampening: 0.0, weight_decay: 0.0, nesterov: false }
    }
}

impl SgdConfig {
    /// Plain SGD with learning rate `lr`, other fields at their defaults.
    pub fn with_lr(lr: f64) -> Self {
        Self { lr, ..Self::default() }
    }

    /// SGD with learning rate `lr` and heavy-ball momentum `momentum` (Polyak 1964).
    pub fn with_momentum(lr: f64, momentum: f64) -> Self {
        Self { lr, momentum, ..Self::default() }
    }

    /// Checks every field; the error names the first field out of range.
    pub fn validate(&self) -> Result<()> {
        check_lr("SgdConfig.lr", self.lr)?;
        check_field("SgdConfig.momentum", self.momentum, self.momentum >= 0.0, ">= 0")?;
        check_field("SgdConfig.dampening", self.dampening, (0.0..=1.0).contains(&self.dampening), "in [0, 1]")?;
        check_field("SgdConfig.weight_decay", self.weight_decay, self.weight_decay >= 0.0, ">= 0")?;
        if self.nesterov && (self.momentum == 0.0 || self.dampening != 0.0) {
            return Err(Error::config(
                "SgdConfig.nesterov",
                format!(
                    "Nesterov momentum needs momentum > 0 and dampening = 0, got momentum {} and dampening {}",
                    self.momentum, self.dampening
                ),
            ));
        }
        Ok(())
    }
}

/// Stochastic gradient descent (Robbins & Monro 1951) with heavy-ball momentum (Polyak 1964),
/// dampening, Nesterov momentum (Sutskever, Martens, Dahl & Hinton 2013) and L2 weight decay,
/// as PyTorch's `torch.optim.SGD` states it. For each variable `θ` with gradient `∇f(θ)`:
///
/// ```text
/// g ← ∇f(θ) + λ θ
/// if μ ≠ 0:
///     b ← g                        on the variable's first step
///     b ← μ b + (1 − τ) g          afterwards
///     g ← g + μ b  if Nesterov,  else  g ← b
/// θ ← θ − γ g
/// ```
///
/// The learning rate multiplies the whole buffer (PyTorch's form, not Sutskever's `b ← μ b − γ g`),
/// so changing `γ` mid-run does not rescale past momentum. The update runs with tensor ops in each
/// variable's dtype and on its device. Variables without a gradient in a step are left alone and
/// their buffer is not advanced. State ([`TrainingState`]): `"step"`, `"lr"`, and per variable
/// `"step.<name>"` and (with momentum) `"momentum_buffer.<name>"`.
#[derive(Debug)]
pub struct Sgd {
    config: SgdConfig,
    state: VarStates,
    step_count: u64,
}

impl Sgd {
    /// An optimizer over `vars` (validated `config`; momentum buffers start at zero).
    pub fn new_named(vars: NamedVars, config: SgdConfig) -> Result<Self> {
        config.validate()?;
        let buffers = if config.momentum != 0.0 { vec!["momentum_buffer"] } else { vec![] };
        Ok(Self { state: VarStates::new(vars, buffers)?, config, step_count: 0 })
    }

    /// The configuration; `lr` is the current learning rate.
    pub fn config(&self) -> &SgdConfig {
        &self.config
    }

    /// Number of calls to `step` so far (also those in which no variable had a gradient).
    pub fn step_count(&self) -> u64 {
        self.step_count
    }

    fn try_step(&mut self, grads: &GradStore) -> Result<()> {
        let SgdConfig { lr, momentum, dampening, weight_decay, nesterov } = self.config;
        check_lr("SgdConfig.lr", lr)?;
        self.state.update(grads, |var_step, param, grad, buffers| {
            let g = add_weight_decay(grad, param, weight_decay)?;
            let direction = if let [buffer] = buffers {
                let next = if var_step == 1 {
                    // The buffer must own its storage: a gradient may share storage with a variable
                    // that `Var::set` later overwrites in place.
                    g.copy()?
                } else {
                    ((&*buffer * momentum)? + (&g * (1.0 - dampening))?)?
                };
                let direction = if nesterov { (&g + (&next * momentum)?)? } else { next.clone() };
                *buffer = next;
                direction
            } else {
                g
            };
            Ok((param - (direction * lr)?)?)
        })?;
        self.step_count += 1;
        Ok(())
    }
}

impl candle_nn::Optimizer for Sgd {
    type Config = SgdConfig;

    /// Variables are named `"0"`, `"1"`, ... in the given order (see [`NamedVars::from_vars`]).
    fn new(vars: Vec<Var>, config: SgdConfig) -> candle_core::Result<Self> {
        Self::new_named(NamedVars::from_vars(vars), config).map_err(into_candle_error)
    }

    fn step(&mut self, grads: &GradStore) -> candle_core::Result<()> {
        self.try_step(grads).map_err(into_candle_error)
    }

    fn learning_rate(&self) -> f64 {
        self.config.lr
    }

    /// Takes effect from the next step; a negative or non-finite rate makes `step` fail.
    fn set_learning_rate(&mut self, lr: f64) {
        self.config.lr = lr;
    }
}

impl TrainingState for Sgd {
    fn state_tensors(&self) -> Result<Vec<(String, Tensor)>> {
        self.state.export(self.step_count, self.config.lr)
    }

    /// Restores buffers, step counts and the learning rate; on error nothing is changed.
    fn load_state_tensors(&mut self, tensors: &HashMap<String, Tensor>) -> Result<()> {
        (self.step_count, self.config.lr) = self.state.import(tensors)?;
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Shared by the optimizers of this module (SGD, Adam, RMSprop).
// ---------------------------------------------------------------------------------------------

/// The per-variable state of an optimizer: for each named variable the number of updates it has
/// received (PyTorch's per-parameter `step`) and its buffers (moments, momentum), as plain
/// tensors in the variable's dtype and on its device.
///
/// Buffers start as zeros (one zero tensor per variable, shared by its buffers until the first
/// update replaces them), so that an exported state always holds every buffer: a variable that
/// has not had a gradient yet exports zeros and step 0, and comes back the same.
#[derive(Debug)]
pub(crate) struct VarStates {
    buffer_names: Vec<&'static str>,
    entries: Vec<VarState>,
}

#[derive(Debug)]
struct VarState {
    name: String,
    var: Var,
    step: u64,
    buffers: Vec<Tensor>,
}

impl VarStates {
    /// Zero state for `vars`, with one buffer per name in `buffer_names`.
    pub(crate) fn new(vars: NamedVars, buffer_names: Vec<&'static str>) -> Result<Self> {
        let entries = vars
            .iter()
            .map(|(name, var)| {
                let zeros = var.zeros_like()?;
                let buffers = vec![zeros; buffer_names.len()];
                Ok(VarState { name: name.to_string(), var: var.clone(), step: 0, buffers })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { buffer_names, entries })
    }

    /// For each variable with a gradient in `grads`: advances its step count to `t` and sets it
    /// to `rule(t, θ, ∇f(θ), buffers)`. `θ` is detached; the rule replaces the buffers (in the
    /// order of the names given to [`VarStates::new`]) and returns the new value of `θ`.
    pub(crate) fn update(
        &mut self,
        grads: &GradStore,
        mut rule: impl FnMut(u64, &Tensor, &Tensor, &mut [Tensor]) -> Result<Tensor>,
    ) -> Result<()> {
        for entry in &mut self.entries {
            let Some(grad) = grads.get(&entry.var) else { continue };
            // Ops return an empty tensor itself rather than a copy, and `Var::set` refuses a tensor
            // sharing the variable's storage; an empty variable has nothing to update anyway.
            if entry.var.elem_count() == 0 {
                continue;
            }
            let step = entry.step + 1;
            let next = rule(step, &entry.var.as_detached_tensor(), grad, &mut entry.buffers)?;
            entry.var.set(&next)?;
            entry.step = step;
        }
        Ok(())
    }

    /// `"step"` and `"lr"` as scalars, then per variable `"step.<name>"` and `"<buffer>.<name>"`.
    pub(crate) fn export(&self, step: u64, lr: f64) -> Result<Vec<(String, Tensor)>> {
        let mut out = vec![("step".to_string(), scalar_tensor(step as f64)?), ("lr".to_string(), scalar_tensor(lr)?)];
        for entry in &self.entries {
            out.push((format!("step.{}", entry.name), scalar_tensor(entry.step as f64)?));
            for (buffer, tensor) in self.buffer_names.iter().zip(&entry.buffers) {
                out.push((format!("{buffer}.{}", entry.name), tensor.clone()));
            }
        }
        Ok(out)
    }

    /// Reads everything [`VarStates::export`] writes, checking names, shapes and dtypes, and
    /// returns the global step and learning rate. Nothing changes unless all of it is valid.
    pub(crate) fn import(&mut self, tensors: &HashMap<String, Tensor>) -> Result<(u64, f64)> {
        let step = read_count(tensors, "step")?;
        let lr = read_scalar(tensors, "lr")?;
        check_lr("lr", lr).map_err(|e| Error::shape("load_state_tensors", e.to_string()))?;
        let mut loaded = Vec::with_capacity(self.entries.len());
        for entry in &self.entries {
            let var_step = read_count(tensors, &format!("step.{}", entry.name))?;
            let buffers = (self.buffer_names.iter())
                .map(|buffer| read_like(tensors, &format!("{buffer}.{}", entry.name), entry.var.as_tensor()))
                .collect::<Result<Vec<_>>>()?;
            loaded.push((var_step, buffers));
        }
        for (entry, (var_step, buffers)) in self.entries.iter_mut().zip(loaded) {
            entry.step = var_step;
            entry.buffers = buffers;
        }
        Ok((step, lr))
    }
}

/// Reads a step count stored with [`scalar_tensor`]: a non-negative integer below 2^53.
fn read_count(tensors: &HashMap<String, Tensor>, name: &str) -> Result<u64> {
    let value = read_scalar(tensors, name)?;
    if value >= 0.0 && value.fract() == 0.0 && value <= 9_007_199_254_740_992.0 {
        Ok(value as u64)
    } else {
        Err(Error::shape("load_state_tensors", format!("`{name}` should be a step count, got {value}")))
    }
}

/// `g + λ θ` (L2 penalty folded into the gradient); the gradient itself when `λ = 0`.
pub(crate) fn add_weight_decay(grad: &Tensor, param: &Tensor, weight_decay: f64) -> Result<Tensor> {
    if weight_decay == 0.0 {
        Ok(grad.clone())
    } else {
        Ok((grad + (param * weight_decay)?)?)
    }
}

/// `Error::Config` for `field` unless `value` is finite and `ok`.
pub(crate) fn check_field(field: &str, value: f64, ok: bool, expected: &str) -> Result<()> {
    if value.is_finite() && ok {
        Ok(())
    } else {
        Err(Error::config(field, format!("must be finite and {expected}, got {value}")))
    }
}

/// A learning rate must be finite and >= 0.
pub(crate) fn check_lr(field: &str, lr: f64) -> Result<()> {
    check_field(field, lr, lr >= 0.0, ">= 0")
}

/// The crate's error as a candle error, for the `candle_nn::Optimizer` methods.
pub(crate) fn into_candle_error(error: Error) -> candle_core::Error {
    match error {
        Error::Candle(e) => e,
        other => candle_core::Error::wrap(other),
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! Checks shared by the optimizer tests, on a quadratic whose gradients change every step.

    use candle_core::{DType, Device};
    use candle_nn::Optimizer;

    use super::*;
    use crate::rng::Rng;

    /// Steps of [`check_against_reference`].
    const STEPS: usize = 6;
    const SHAPES: [&[usize]; 3] = [&[3, 4], &[5], &[2, 3]];

    /// `loss_k = Σ_i sum(c_ki ⊙ (w_i − t_i)²)` over three variables `w0, w1, w2`, with fresh random
    /// weights `c_ki` in `[0.5, 1.5)` at every step `k`: the gradient `2 c_ki ⊙ (w_i − t_i)`
    /// changes with both the step and the parameters.
    pub(crate) struct Quadratic {
        init: Vec<Vec<f64>>,
        targets: Vec<Vec<f64>>,
        scales: Vec<Vec<Vec<f64>>>,
    }

    impl Quadratic {
        pub(crate) fn new(seed: u64, steps: usize) -> Self {
            let mut rng = Rng::new(seed);
            let mut draw =
                |n: usize, f: &mut dyn FnMut(&mut Rng) -> f64| -> Vec<f64> { (0..n).map(|_| f(&mut rng)).collect() };
            let sizes: Vec<usize> = SHAPES.iter().map(|s| s.iter().product()).collect();
            let init = sizes.iter().map(|&n| draw(n, &mut |r| r.normal_f64())).collect();
            let targets = sizes.iter().map(|&n| draw(n, &mut |r| r.normal_f64())).collect();
            let scales =
                (0..steps).map(|_| sizes.iter().map(|&n| draw(n, &mut |r| 0.5 + r.uniform_f64())).collect()).collect();
            Self { init, targets, scales }
        }

        /// Fresh variables `w0, w1, w2` holding the initial values, as `dtype`.
        pub(crate) fn vars(&self, dtype: DType) -> Result<NamedVars> {
            let pairs = (self.init.iter().zip(SHAPES).enumerate())
                .map(|(i, (v, shape))| {
                    let t = Tensor::from_vec(v.clone(), shape, &Device::Cpu)?.to_dtype(dtype)?;
                    Ok((format!("w{i}"), Var::from_tensor(&t)?))
                })
                .collect::<Result<Vec<_>>>()?;
            NamedVars::from_pairs(pairs)
        }

        /// The loss of step `k` over the variables for which `active(k, i)` holds.
        pub(crate) fn loss(&self, k: usize, vars: &NamedVars, active: impl Fn(usize, usize) -> bool) -> Result<Tensor> {
            let mut total: Option<Tensor> = None;
            for (i, (_, var)) in vars.iter().enumerate().filter(|(i, _)| active(k, *i)) {
                let dtype = var.dtype();
                let target = Tensor::from_vec(self.targets[i].clone(), SHAPES[i], &Device::Cpu)?.to_dtype(dtype)?;
                let scale = Tensor::from_vec(self.scales[k][i].clone(), SHAPES[i], &Device::Cpu)?.to_dtype(dtype)?;
                let term = ((var.as_tensor() - target)?.sqr()? * scale)?.sum_all()?;
                total = Some(match total {
                    Some(t) => (t + term)?,
                    None => term,
                });
            }
            total.ok_or_else(|| Error::config("active", "no active variable"))
        }

        /// `2 c_ki ⊙ (p − t_i)` on the host.
        pub(crate) fn grad(&self, k: usize, i: usize, p: &[f64]) -> Vec<f64> {
            (p.iter().zip(&self.targets[i]).zip(&self.scales[k][i])).map(|((p, t), c)| 2.0 * c * (p - t)).collect()
        }
    }

    /// Variable `w2` gets gradients from step 2 on only (a variable with no gradient yet).
    fn late_third(k: usize, i: usize) -> bool {
        i < 2 || k >= 2
    }

    /// The values of a tensor as `f64`.
    pub(crate) fn values(t: &Tensor) -> Result<Vec<f64>> {
        Ok(t.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?)
    }

    fn bits(t: &Tensor) -> Result<Vec<u64>> {
        Ok(values(t)?.into_iter().map(f64::to_bits).collect())
    }

    fn assert_same_state(a: &[(String, Tensor)], b: &[(String, Tensor)]) -> Result<()> {
        assert_eq!(a.len(), b.len());
        for ((na, ta), (nb, tb)) in a.iter().zip(b) {
            assert_eq!(na, nb);
            assert_eq!((ta.dtype(), ta.dims()), (tb.dtype(), tb.dims()), "{na}");
            assert_eq!(bits(ta)?, bits(tb)?, "{na}");
        }
        Ok(())
    }

    /// Runs [`STEPS`] steps of the optimizer `make` builds on `F64` variables and of `reference`, a
    /// plain-`f64` re-implementation updating variable `i` in place from its gradient; returns the
    /// largest relative difference of the parameters over all steps. `w2` only gets gradients
    /// from step 2 on, which checks the per-variable step counts.
    pub(crate) fn check_against_reference<O: Optimizer>(
        make: impl FnOnce(NamedVars) -> Result<O>,
        mut reference: impl FnMut(usize, &mut [f64], &[f64]),
    ) -> Result<f64> {
        let problem = Quadratic::new(7, STEPS);
        let vars = problem.vars(DType::F64)?;
        let mut optimizer = make(vars.clone())?;
        let mut expected = problem.init.clone();
        let mut worst = 0f64;
        for k in 0..STEPS {
            optimizer.backward_step(&problem.loss(k, &vars, late_third)?)?;
            for (i, p) in expected.iter_mut().enumerate().filter(|(i, _)| late_third(k, *i)) {
                let g = problem.grad(k, i, p);
                reference(i, p, &g);
            }
            for ((_, var), want) in vars.iter().zip(&expected) {
                for (got, want) in values(var)?.iter().zip(want) {
                    worst = worst.max((got - want).abs() / want.abs().max(1e-8));
                }
            }
        }
        // The run must move every parameter, or the comparison proves nothing.
        for ((_, var), init) in vars.iter().zip(&problem.init) {
            assert!(values(var)?.iter().zip(init).all(|(a, b)| (a - b).abs() > 1e-6), "a parameter did not move");
        }
        assert!(worst <= 1e-6, "max relative error {worst:e} against the reference");
        Ok(worst)
    }

    /// Export after 3 steps (with `w2` never updated yet), import into a fresh optimizer over fresh
    /// variables with the same values, and check that the next 3 steps agree bit for bit; also
    /// checks that `w2` is untouched while it has no gradient and that bad state is refused
    /// without changing anything.
    pub(crate) fn check_round_trip<O: Optimizer + TrainingState>(make: impl Fn(NamedVars) -> Result<O>) -> Result<()> {
        let problem = Quadratic::new(11, 6);
        let first_two = |_: usize, i: usize| i < 2;
        let vars_a = problem.vars(DType::F64)?;
        let mut a = make(vars_a.clone())?;
        for k in 0..3 {
            a.backward_step(&problem.loss(k, &vars_a, first_two)?)?;
        }
        assert_eq!(values(&vars_a.vars()[2])?, problem.init[2], "a variable without gradient changed");
        let exported = a.state_tensors()?;
        let map: HashMap<String, Tensor> = exported.iter().cloned().collect();

        let pairs = (vars_a.iter())
            .map(|(name, var)| Ok((name.to_string(), Var::from_tensor(&var.as_detached_tensor().copy()?)?)))
            .collect::<Result<Vec<_>>>()?;
        let vars_b = NamedVars::from_pairs(pairs)?;
        let mut b = make(vars_b.clone())?;

        // Bad state is refused and leaves the optimizer as it was.
        let fresh = b.state_tensors()?;
        let per_var = exported.iter().find(|(n, _)| n.ends_with(".w2") && !n.starts_with("step")).map(|(n, _)| n);
        for name in ["step", "lr", "step.w2"].into_iter().chain(per_var.map(String::as_str)) {
            let mut missing = map.clone();
            missing.remove(name);
            assert!(matches!(b.load_state_tensors(&missing), Err(Error::Shape { .. })), "missing {name}");
            let mut wrong = map.clone();
            wrong.insert(name.to_string(), Tensor::zeros((2, 2), DType::F64, &Device::Cpu)?);
            assert!(matches!(b.load_state_tensors(&wrong), Err(Error::Shape { .. })), "wrong {name}");
            assert_same_state(&b.state_tensors()?, &fresh)?;
        }

        b.load_state_tensors(&map)?;
        assert_same_state(&b.state_tensors()?, &exported)?;
        for k in 3..6 {
            a.backward_step(&problem.loss(k, &vars_a, |_, _| true)?)?;
            b.backward_step(&problem.loss(k, &vars_b, |_, _| true)?)?;
            for ((_, va), (_, vb)) in vars_a.iter().zip(vars_b.iter()) {
                assert_eq!(bits(va)?, bits(vb)?, "step {k}: resumed run differs");
            }
        }
        assert_same_state(&b.state_tensors()?, &a.state_tensors()?)?;
        Ok(())
    }

    /// `set_learning_rate(x)` on an optimizer built with another rate gives bit for bit the run of
    /// one built with `x`, and a rate of 0 freezes the variables.
    pub(crate) fn check_set_learning_rate<O: Optimizer>(make: impl Fn(NamedVars, f64) -> Result<O>) -> Result<()> {
        let problem = Quadratic::new(5, 4);
        let (vars_a, vars_b) = (problem.vars(DType::F64)?, problem.vars(DType::F64)?);
        let mut a = make(vars_a.clone(), 0.01)?;
        let mut b = make(vars_b.clone(), 0.05)?;
        a.set_learning_rate(0.05);
        assert_eq!(a.learning_rate(), 0.05);
        for k in 0..3 {
            a.backward_step(&problem.loss(k, &vars_a, |_, _| true)?)?;
            b.backward_step(&problem.loss(k, &vars_b, |_, _| true)?)?;
            for ((_, va), (_, vb)) in vars_a.iter().zip(vars_b.iter()) {
                assert_eq!(bits(va)?, bits(vb)?);
            }
        }
        a.set_learning_rate(0.0);
        let before: Vec<_> = vars_a.vars().iter().map(|v| bits(v)).collect::<Result<_>>()?;
        a.backward_step(&problem.loss(3, &vars_a, |_, _| true)?)?;
        let after: Vec<_> = vars_a.vars().iter().map(|v| bits(v)).collect::<Result<_>>()?;
        assert_eq!(before, after, "lr = 0 changed a variable");
        a.set_learning_rate(f64::NAN);
        assert!(a.backward_step(&problem.loss(3, &vars_a, |_, _| true)?).is_err(), "NaN lr accepted");
        Ok(())
    }

    /// Two steps on `F32` and `BF16` variables: no error, dtypes kept, values finite and moved.
    pub(crate) fn check_dtypes<O: Optimizer + TrainingState>(make: impl Fn(NamedVars) -> Result<O>) -> Result<()> {
        for dtype in [DType::F32, DType::BF16] {
            let problem = Quadratic::new(3, 2);
            let vars = problem.vars(dtype)?;
            let mut optimizer = make(vars.clone())?;
            for k in 0..2 {
                optimizer.backward_step(&problem.loss(k, &vars, |_, _| true)?)?;
            }
            for ((_, var), init) in vars.iter().zip(&problem.init) {
                assert_eq!(var.dtype(), dtype);
                let now = values(var)?;
                assert!(now.iter().all(|v| v.is_finite()), "{dtype:?}: non-finite value");
                assert!(now.iter().zip(init).any(|(a, b)| (a - b).abs() > 1e-3), "{dtype:?}: nothing moved");
            }
            for (name, t) in optimizer.state_tensors()? {
                let expected = if name == "lr" || name.starts_with("step") { DType::F64 } else { dtype };
                assert_eq!(t.dtype(), expected, "{name}");
            }
        }
        Ok(())
    }

    /// `Optimizer::new` names the variables `"0"`, `"1"`, ... and wraps config errors.
    pub(crate) fn check_trait_constructor<O: Optimizer + TrainingState>(good: O::Config, bad: O::Config) -> Result<()> {
        let problem = Quadratic::new(1, 1);
        let optimizer = O::new(problem.vars(DType::F64)?.vars(), good)?;
        let names: Vec<String> = optimizer.state_tensors()?.into_iter().map(|(n, _)| n).collect();
        assert!(names.iter().any(|n| n == "step.0") && names.iter().any(|n| n == "step.2"), "{names:?}");
        let error = O::new(problem.vars(DType::F64)?.vars(), bad).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(error.contains("invalid config field"), "{error}");
        Ok(())
    }

    /// The field named by an `Error::Config`, for asserting which field a bad config trips.
    pub(crate) fn config_field<T>(result: Result<T>) -> String {
        match result {
            Err(Error::Config { field, .. }) => field,
            Err(other) => format!("not a config error: {other}"),
            Ok(_) => "accepted".to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;

    /// `torch.optim.SGD`'s algorithm box, per variable, in plain `f64`.
    struct Reference {
        config: SgdConfig,
        buffers: HashMap<usize, Vec<f64>>,
    }

    impl Reference {
        fn new(config: &SgdConfig) -> Self {
            Self { config: config.clone(), buffers: HashMap::new() }
        }

        fn update(&mut self, i: usize, p: &mut [f64], g: &[f64]) {
            let c = &self.config;
            let first = !self.buffers.contains_key(&i);
            let b = self.buffers.entry(i).or_insert_with(|| vec![0.0; p.len()]);
            for j in 0..p.len() {
                let mut g = g[j];
                if c.weight_decay != 0.0 {
                    g += c.weight_decay * p[j];
                }
                if c.momentum != 0.0 {
                    b[j] = if first { g } else { c.momentum * b[j] + (1.0 - c.dampening) * g };
                    g = if c.nesterov { g + c.momentum * b[j] } else { b[j] };
                }
                p[j] -= c.lr * g;
            }
        }
    }

    fn matches_reference(config: SgdConfig) -> Result<()> {
        let mut reference = Reference::new(&config);
        let worst =
            check_against_reference(|v| Sgd::new_named(v, config.clone()), |i, p, g| reference.update(i, p, g))?;
        eprintln!("{config:?}: max relative error {worst:e}");
        Ok(())
    }

    #[test]
    fn plain_matches_reference() -> Result<()> {
        matches_reference(SgdConfig::with_lr(0.1))
    }

    #[test]
    fn momentum_matches_reference() -> Result<()> {
        matches_reference(SgdConfig::with_momentum(0.1, 0.9))
    }

    #[test]
    fn dampening_matches_reference() -> Result<()> {
        matches_reference(SgdConfig { dampening: 0.3, ..SgdConfig::with_momentum(0.1, 0.9) })
    }

    #[test]
    fn nesterov_matches_reference() -> Result<()> {
        matches_reference(SgdConfig { nesterov: true, ..SgdConfig::with_momentum(0.1, 0.9) })
    }

    #[test]
    fn weight_decay_matches_reference() -> Result<()> {
        matches_reference(SgdConfig { weight_decay: 0.1, ..SgdConfig::with_lr(0.1) })
    }

    #[test]
    fn nesterov_with_weight_decay_matches_reference() -> Result<()> {
        matches_reference(SgdConfig { weight_decay: 0.05, nesterov: true, ..SgdConfig::with_momentum(0.1, 0.8) })
    }

    #[test]
    fn state_round_trip_resumes_bit_identically() -> Result<()> {
        check_round_trip(|v| Sgd::new_named(v, SgdConfig::with_momentum(0.1, 0.9)))?;
        check_round_trip(|v| Sgd::new_named(v, SgdConfig { dampening: 0.5, ..SgdConfig::with_momentum(0.1, 0.9) }))?;
        check_round_trip(|v| Sgd::new_named(v, SgdConfig::with_lr(0.1)))
    }

    #[test]
    fn set_learning_rate_takes_effect() -> Result<()> {
        check_set_learning_rate(|v, lr| {
            Sgd::new_named(v, SgdConfig { nesterov: true, ..SgdConfig::with_momentum(lr, 0.9) })
        })
    }

    #[test]
    fn steps_f32_and_bf16() -> Result<()> {
        check_dtypes(|v| Sgd::new_named(v, SgdConfig::with_momentum(0.1, 0.9)))
    }

    #[test]
    fn trait_constructor_names_vars_by_position() -> Result<()> {
        check_trait_constructor::<Sgd>(SgdConfig::with_momentum(0.1, 0.9), SgdConfig::with_lr(-1.0))
    }

    #[test]
    fn bad_configs_name_the_field() {
        let bad = |config: SgdConfig| config_field(Sgd::new_named(NamedVars::default(), config));
        assert_eq!(bad(SgdConfig::with_lr(-0.1)), "SgdConfig.lr");
        assert_eq!(bad(SgdConfig::with_lr(f64::NAN)), "SgdConfig.lr");
        assert_eq!(bad(SgdConfig::with_lr(f64::INFINITY)), "SgdConfig.lr");
        assert_eq!(bad(SgdConfig::with_momentum(0.1, -0.5)), "SgdConfig.momentum");
        assert_eq!(bad(SgdConfig { dampening: 1.5, ..SgdConfig::with_momentum(0.1, 0.9) }), "SgdConfig.dampening");
        assert_eq!(bad(SgdConfig { weight_decay: -1e-4, ..SgdConfig::default() }), "SgdConfig.weight_decay");
        assert_eq!(bad(SgdConfig { nesterov: true, ..SgdConfig::default() }), "SgdConfig.nesterov");
        let damped = SgdConfig { nesterov: true, dampening: 0.1, ..SgdConfig::with_momentum(0.1, 0.9) };
        assert_eq!(bad(damped), "SgdConfig.nesterov");
        assert_eq!(bad(SgdConfig { nesterov: true, ..SgdConfig::with_momentum(0.1, 0.9) }), "accepted");
    }

    #[test]
    fn config_defaults_and_serde() -> Result<()> {
        let c = SgdConfig::default();
        assert_eq!((c.lr, c.momentum, c.dampening, c.weight_decay, c.nesterov), (1e-3, 0.0, 0.0, 0.0, false));
        let c = SgdConfig { nesterov: true, weight_decay: 0.01, ..SgdConfig::with_momentum(0.05, 0.9) };
        let json = serde_json::to_string(&c).map_err(|e| Error::config("json", e.to_string()))?;
        let back: SgdConfig = serde_json::from_str(&json).map_err(|e| Error::config("json", e.to_string()))?;
        assert_eq!(back, c);
        let partial: SgdConfig =
            serde_json::from_str(r#"{"lr": 0.5}"#).map_err(|e| Error::config("json", e.to_string()))?;
        assert_eq!(partial, SgdConfig::with_lr(0.5));
        Ok(())
    }
}
