//! Checks shared by the optimizer tests, on a quadratic whose gradients change every step.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::Optimizer;

use super::{NamedVars, TrainingState};
use crate::rng::Rng;
use crate::{Error, Result};

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
/// without changing anything, and that no state tensor holds a computation graph.
pub(crate) fn check_round_trip<O: Optimizer + TrainingState>(make: impl Fn(NamedVars) -> Result<O>) -> Result<()> {
    let problem = Quadratic::new(11, 6);
    let first_two = |_: usize, i: usize| i < 2;
    let vars_a = problem.vars(DType::F64)?;
    let mut a = make(vars_a.clone())?;
    for k in 0..3 {
        a.backward_step(&problem.loss(k, &vars_a, first_two)?)?;
    }
    assert_eq!(values(&vars_a.vars()[2])?, problem.init[2], "a variable without gradient changed");
    // Gradients that carry their own graph (as gradient penalties make them) must not leave that
    // graph, and the memory of the whole step, alive in the optimizer's state.
    let probe_vars = problem.vars(DType::F64)?;
    let mut probe = make(probe_vars.clone())?;
    let graph_grads = crate::nn::double_backward::backward_with_graph(&problem.loss(0, &probe_vars, |_, _| true)?)?;
    assert!(graph_grads.get(&probe_vars.vars()[0]).is_some_and(|g| g.track_op()), "the probe has no graph");
    probe.step(&graph_grads)?;
    for (name, t) in probe.state_tensors()? {
        assert!(!t.track_op(), "optimizer state `{name}` holds a graph");
    }
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
