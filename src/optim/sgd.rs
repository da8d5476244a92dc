//! Stochastic gradient descent with momentum, dampening, Nesterov momentum and weight decay.

use std::collections::HashMap;

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};
use serde::{Deserialize, Serialize};

use super::state::{add_weight_decay, check_field, check_lr, into_candle_error, VarStates};
use super::{NamedVars, TrainingState};
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

#[cfg(test)]
mod tests {
    use super::super::testing::*;
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
