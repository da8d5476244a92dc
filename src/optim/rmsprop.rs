//! RMSprop: gradients divided by a running root mean square, optionally centered and with momentum.

use std::collections::HashMap;

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};
use serde::{Deserialize, Serialize};

use super::state::{add_weight_decay, check_field, check_lr, into_candle_error, VarStates};
use super::{NamedVars, TrainingState};
use crate::Result;

/// Hyper-parameters of [`RmsProp`]. The defaults are those of PyTorch's `torch.optim.RMSprop`:
/// `lr = 0.01`, `alpha = 0.99`, `eps = 1e-8`, no weight decay, no momentum, not centered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RmsPropConfig {
    /// Learning rate `γ` (>= 0).
    pub lr: f64,
    /// Smoothing constant `α` of the squared-gradient average, in `[0, 1)`.
    pub alpha: f64,
    /// `ε` added to the root mean square (> 0).
    pub eps: f64,
    /// L2 penalty `λ` (>= 0), added to the gradient as `λ θ`.
    pub weight_decay: f64,
    /// Momentum factor `μ` (>= 0); 0 turns momentum off and keeps no buffer.
    pub momentum: f64,
    /// Centered RMSprop (Graves 2013): divide by an estimate of the gradient's variance
    /// instead of its uncentered second moment.
    pub centered: bool,
}

impl Default for RmsPropConfig {
    fn default() -> Self {
        Self { lr: 0.01, alpha: 0.99, eps: 1e-8, weight_decay: 0.0, momentum: 0.0, centered: false }
    }
}

impl RmsPropConfig {
    /// RMSprop with learning rate `lr`, other fields at their defaults.
    pub fn with_lr(lr: f64) -> Self {
        Self { lr, ..Self::default() }
    }

    /// Checks every field; the error names the first field out of range.
    pub fn validate(&self) -> Result<()> {
        check_lr("RmsPropConfig.lr", self.lr)?;
        check_field("RmsPropConfig.alpha", self.alpha, (0.0..1.0).contains(&self.alpha), "in [0, 1)")?;
        check_field("RmsPropConfig.eps", self.eps, self.eps > 0.0, "> 0")?;
        check_field("RmsPropConfig.weight_decay", self.weight_decay, self.weight_decay >= 0.0, ">= 0")?;
        check_field("RmsPropConfig.momentum", self.momentum, self.momentum >= 0.0, ">= 0")
    }
}

/// RMSprop (Hinton, Srivastava & Swersky 2012, Coursera lecture 6e; centered form from Graves
/// 2013), as PyTorch's `torch.optim.RMSprop` states it. For each variable `θ` with gradient
/// `∇f(θ)`:
///
/// ```text
/// g ← ∇f(θ) + λ θ
/// s ← α s + (1 − α) g²                                  (square average)
/// ṽ ← s
/// if centered:  a ← α a + (1 − α) g,  ṽ ← s − a²        (gradient average)
/// if μ > 0:     b ← μ b + g / (√ṽ + ε),  θ ← θ − γ b     (momentum buffer)
/// else:         θ ← θ − γ g / (√ṽ + ε)
/// ```
///
/// `ε` is added after the square root, as in PyTorch (TensorFlow adds it inside). In the centered
/// form `ṽ` is clamped at 0, which only matters where rounding makes it negative (PyTorch then
/// gives NaN). The update runs with tensor ops in each variable's dtype and on its device; a
/// variable without a gradient in a step is left alone, buffers included.
///
/// State ([`TrainingState`]): `"step"`, `"lr"`, and per variable `"step.<name>"`,
/// `"square_avg.<name>"`, plus `"grad_avg.<name>"` when centered and `"momentum_buffer.<name>"`
/// with momentum.
#[derive(Debug)]
pub struct RmsProp {
    config: RmsPropConfig,
    state: VarStates,
    step_count: u64,
}

impl RmsProp {
    /// An optimizer over `vars` (validated `config`; averages and buffers start at zero).
    pub fn new_named(vars: NamedVars, config: RmsPropConfig) -> Result<Self> {
        config.validate()?;
        let mut buffers = vec!["square_avg"];
        if config.centered {
            buffers.push("grad_avg");
        }
        if config.momentum > 0.0 {
            buffers.push("momentum_buffer");
        }
        Ok(Self { state: VarStates::new(vars, buffers)?, config, step_count: 0 })
    }

    /// The configuration; `lr` is the current learning rate.
    pub fn config(&self) -> &RmsPropConfig {
        &self.config
    }

    /// Number of calls to `step` so far (also those in which no variable had a gradient).
    pub fn step_count(&self) -> u64 {
        self.step_count
    }

    fn try_step(&mut self, grads: &GradStore) -> Result<()> {
        let RmsPropConfig { lr, alpha, eps, weight_decay, momentum, centered } = self.config;
        check_lr("RmsPropConfig.lr", lr)?;
        // `new_named` made the buffers [square_avg, grad_avg if centered, momentum_buffer if μ > 0].
        let momentum_index = if centered { 2 } else { 1 };
        self.state.update(grads, |_, param, grad, buffers| {
            let g = add_weight_decay(grad, param, weight_decay)?;
            let square_avg = ((&buffers[0] * alpha)? + (g.sqr()? * (1.0 - alpha))?)?;
            let (variance, grad_avg) = if centered {
                let grad_avg = ((&buffers[1] * alpha)? + (&g * (1.0 - alpha))?)?;
                ((&square_avg - grad_avg.sqr()?)?.relu()?, Some(grad_avg))
            } else {
                (square_avg.clone(), None)
            };
            let scaled = g.div(&variance.sqrt()?.affine(1.0, eps)?)?;
            let (direction, momentum_buffer) = if momentum > 0.0 {
                let buffer = ((&buffers[momentum_index] * momentum)? + scaled)?;
                (buffer.clone(), Some(buffer))
            } else {
                (scaled, None)
            };
            let next = (param - (direction * lr)?)?;
            buffers[0] = square_avg;
            if let Some(grad_avg) = grad_avg {
                buffers[1] = grad_avg;
            }
            if let Some(buffer) = momentum_buffer {
                buffers[momentum_index] = buffer;
            }
            Ok(next)
        })?;
        self.step_count += 1;
        Ok(())
    }
}

impl candle_nn::Optimizer for RmsProp {
    type Config = RmsPropConfig;

    /// Variables are named `"0"`, `"1"`, ... in the given order (see [`NamedVars::from_vars`]).
    fn new(vars: Vec<Var>, config: RmsPropConfig) -> candle_core::Result<Self> {
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

impl TrainingState for RmsProp {
    fn state_tensors(&self) -> Result<Vec<(String, Tensor)>> {
        self.state.export(self.step_count, self.config.lr)
    }

    /// Restores averages, buffers, step counts and the learning rate; on error nothing is changed.
    fn load_state_tensors(&mut self, tensors: &HashMap<String, Tensor>) -> Result<()> {
        (self.step_count, self.config.lr) = self.state.import(tensors)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;
    use crate::Error;

    /// `torch.optim.RMSprop`'s algorithm box, per variable, in plain `f64`.
    struct Reference {
        config: RmsPropConfig,
        /// Per variable: square average, gradient average, momentum buffer.
        state: HashMap<usize, [Vec<f64>; 3]>,
    }

    impl Reference {
        fn new(config: &RmsPropConfig) -> Self {
            Self { config: config.clone(), state: HashMap::new() }
        }

        fn update(&mut self, i: usize, p: &mut [f64], g: &[f64]) {
            let c = &self.config;
            let n = p.len();
            let [v, g_ave, b] = self.state.entry(i).or_insert_with(|| [vec![0.0; n], vec![0.0; n], vec![0.0; n]]);
            for j in 0..n {
                let mut g = g[j];
                if c.weight_decay != 0.0 {
                    g += c.weight_decay * p[j];
                }
                v[j] = c.alpha * v[j] + (1.0 - c.alpha) * g * g;
                let mut v_tilde = v[j];
                if c.centered {
                    g_ave[j] = g_ave[j] * c.alpha + (1.0 - c.alpha) * g;
                    v_tilde -= g_ave[j] * g_ave[j];
                }
                if c.momentum > 0.0 {
                    b[j] = c.momentum * b[j] + g / (v_tilde.sqrt() + c.eps);
                    p[j] -= c.lr * b[j];
                } else {
                    p[j] -= c.lr * g / (v_tilde.sqrt() + c.eps);
                }
            }
        }
    }

    fn matches_reference(config: RmsPropConfig) -> Result<()> {
        let mut reference = Reference::new(&config);
        let worst =
            check_against_reference(|v| RmsProp::new_named(v, config.clone()), |i, p, g| reference.update(i, p, g))?;
        eprintln!("{config:?}: max relative error {worst:e}");
        Ok(())
    }

    #[test]
    fn plain_matches_reference() -> Result<()> {
        matches_reference(RmsPropConfig::default())
    }

    #[test]
    fn centered_matches_reference() -> Result<()> {
        matches_reference(RmsPropConfig { centered: true, ..RmsPropConfig::default() })
    }

    #[test]
    fn momentum_matches_reference() -> Result<()> {
        matches_reference(RmsPropConfig { momentum: 0.9, ..RmsPropConfig::default() })
    }

    #[test]
    fn weight_decay_matches_reference() -> Result<()> {
        matches_reference(RmsPropConfig { weight_decay: 0.1, ..RmsPropConfig::default() })
    }

    #[test]
    fn centered_momentum_weight_decay_matches_reference() -> Result<()> {
        let config =
            RmsPropConfig { alpha: 0.9, weight_decay: 0.05, momentum: 0.5, centered: true, ..Default::default() };
        matches_reference(config)
    }

    #[test]
    fn state_round_trip_resumes_bit_identically() -> Result<()> {
        check_round_trip(|v| {
            RmsProp::new_named(v, RmsPropConfig { momentum: 0.9, centered: true, ..Default::default() })
        })?;
        check_round_trip(|v| RmsProp::new_named(v, RmsPropConfig::default()))
    }

    #[test]
    fn set_learning_rate_takes_effect() -> Result<()> {
        check_set_learning_rate(|v, lr| {
            RmsProp::new_named(v, RmsPropConfig { momentum: 0.5, ..RmsPropConfig::with_lr(lr) })
        })
    }

    #[test]
    fn steps_f32_and_bf16() -> Result<()> {
        check_dtypes(|v| RmsProp::new_named(v, RmsPropConfig { momentum: 0.9, centered: true, ..Default::default() }))
    }

    #[test]
    fn trait_constructor_names_vars_by_position() -> Result<()> {
        check_trait_constructor::<RmsProp>(RmsPropConfig::default(), RmsPropConfig { alpha: 1.0, ..Default::default() })
    }

    #[test]
    fn centered_variance_never_goes_negative() -> Result<()> {
        // Constant gradients make s − a² a difference of nearly equal numbers; it must not turn
        // into NaN through rounding.
        let w = Var::new(&[1.0f32, -2.0, 1e-3], &candle_core::Device::Cpu)?;
        let vars = NamedVars::from_pairs(vec![("w".to_string(), w.clone())])?;
        let config = RmsPropConfig { alpha: 0.5, centered: true, ..RmsPropConfig::with_lr(1e-6) };
        let mut optimizer = RmsProp::new_named(vars, config)?;
        let mut grads = (w.as_tensor() * 2.0)?.sum_all()?.backward()?;
        let constant = candle_core::Tensor::new(&[0.3f32, -1.7, 5.0], &candle_core::Device::Cpu)?;
        grads.insert(&w, constant);
        for _ in 0..200 {
            candle_nn::Optimizer::step(&mut optimizer, &grads)?;
        }
        assert!(w.to_vec1::<f32>()?.iter().all(|v| v.is_finite()));
        Ok(())
    }

    #[test]
    fn bad_configs_name_the_field() {
        let bad = |config: RmsPropConfig| config_field(RmsProp::new_named(NamedVars::default(), config));
        assert_eq!(bad(RmsPropConfig::with_lr(-0.01)), "RmsPropConfig.lr");
        assert_eq!(bad(RmsPropConfig::with_lr(f64::INFINITY)), "RmsPropConfig.lr");
        assert_eq!(bad(RmsPropConfig { alpha: 1.0, ..Default::default() }), "RmsPropConfig.alpha");
        assert_eq!(bad(RmsPropConfig { alpha: -0.5, ..Default::default() }), "RmsPropConfig.alpha");
        assert_eq!(bad(RmsPropConfig { eps: 0.0, ..Default::default() }), "RmsPropConfig.eps");
        assert_eq!(bad(RmsPropConfig { weight_decay: -1.0, ..Default::default() }), "RmsPropConfig.weight_decay");
        assert_eq!(bad(RmsPropConfig { momentum: -0.9, ..Default::default() }), "RmsPropConfig.momentum");
        assert_eq!(bad(RmsPropConfig { momentum: f64::NAN, ..Default::default() }), "RmsPropConfig.momentum");
        assert_eq!(bad(RmsPropConfig { alpha: 0.0, momentum: 0.9, ..Default::default() }), "accepted");
    }

    #[test]
    fn config_defaults_and_serde() -> Result<()> {
        let c = RmsPropConfig::default();
        assert_eq!((c.lr, c.alpha, c.eps, c.weight_decay, c.momentum, c.centered), (0.01, 0.99, 1e-8, 0.0, 0.0, false));
        let c = RmsPropConfig { centered: true, momentum: 0.9, ..RmsPropConfig::with_lr(1e-3) };
        let json = serde_json::to_string(&c).map_err(|e| Error::config("json", e.to_string()))?;
        let back: RmsPropConfig = serde_json::from_str(&json).map_err(|e| Error::config("json", e.to_string()))?;
        assert_eq!(back, c);
        Ok(())
    }
}
