//! Adam and AdamW: adaptive moment estimation with L2 or decoupled weight decay, and AMSGrad.

use std::collections::HashMap;

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};
use serde::{Deserialize, Serialize};

use super::state::{add_weight_decay, check_field, check_lr, into_candle_error, VarStates};
use super::{NamedVars, TrainingState};
use crate::Result;

/// Hyper-parameters of [`Adam`]. The defaults are those of PyTorch's `torch.optim.Adam`
/// (`lr = 1e-3`, betas `(0.9, 0.999)`, `eps = 1e-8`, no weight decay); [`AdamConfig::adamw`]
/// gives AdamW.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AdamConfig {
    /// Learning rate `γ` (>= 0).
    pub lr: f64,
    /// Decay rate `β1` of the first-moment average, in `[0, 1)`.
    pub beta1: f64,
    /// Decay rate `β2` of the second-moment average, in `[0, 1)`.
    pub beta2: f64,
    /// `ε` added to the denominator (> 0).
    pub eps: f64,
    /// Weight decay `λ` (>= 0): an L2 penalty added to the gradient, or with
    /// `decoupled_weight_decay` the AdamW decay `θ ← θ − γ λ θ`.
    pub weight_decay: f64,
    /// AdamW (Loshchilov & Hutter 2019): decay the weights directly instead of adding `λ θ` to
    /// the gradient, so the decay is not rescaled by the adaptive denominator.
    pub decoupled_weight_decay: bool,
    /// AMSGrad (Reddi, Kale & Kumar 2018): divide by the running maximum of the second moment.
    pub amsgrad: bool,
}

impl Default for AdamConfig {
    fn default() -> Self {
        Self {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            decoupled_weight_decay: false,
            amsgrad: false,
        }
    }
}

impl AdamConfig {
    /// Adam with learning rate `lr`, other fields at their defaults.
    pub fn with_lr(lr: f64) -> Self {
        Self { lr, ..Self::default() }
    }

    /// AdamW with learning rate `lr` and decoupled weight decay `weight_decay`; PyTorch's
    /// `torch.optim.AdamW` defaults are `adamw(1e-3, 0.01)`.
    pub fn adamw(lr: f64, weight_decay: f64) -> Self {
        Self { lr, weight_decay, decoupled_weight_decay: true, ..Self::default() }
    }

    /// Checks every field; the error names the first field out of range.
    pub fn validate(&self) -> Result<()> {
        check_lr("AdamConfig.lr", self.lr)?;
        check_field("AdamConfig.beta1", self.beta1, (0.0..1.0).contains(&self.beta1), "in [0, 1)")?;
        check_field("AdamConfig.beta2", self.beta2, (0.0..1.0).contains(&self.beta2), "in [0, 1)")?;
        check_field("AdamConfig.eps", self.eps, self.eps > 0.0, "> 0")?;
        check_field("AdamConfig.weight_decay", self.weight_decay, self.weight_decay >= 0.0, ">= 0")
    }
}

/// Adam (Kingma & Ba 2015) with bias correction, as PyTorch's `torch.optim.Adam` states it; with
/// `decoupled_weight_decay` it is AdamW (Loshchilov & Hutter 2019, `torch.optim.AdamW`), with
/// `amsgrad` AMSGrad (Reddi, Kale & Kumar 2018). For each variable `θ` with gradient `∇f(θ)`,
/// at the variable's `t`-th update:
///
/// ```text
/// g ← ∇f(θ)
/// if AdamW:  θ ← θ − γ λ θ            else:  g ← g + λ θ
/// m ← β1 m + (1 − β1) g
/// v ← β2 v + (1 − β2) g²
/// if AMSGrad:  v_max ← max(v_max, v),  v̂ ← v_max / (1 − β2^t)   else:  v̂ ← v / (1 − β2^t)
/// m̂ ← m / (1 − β1^t)
/// θ ← θ − γ m̂ / (√v̂ + ε)
/// ```
///
/// (`√v̂` is computed as `√v / √(1 − β2^t)`, as PyTorch's implementation does.) The update runs
/// with tensor ops in each variable's dtype and on its device; for `F16` variables the default
/// `ε = 1e-8` rounds to 0, so use a larger `ε` or keep `F32` master weights. Each variable counts
/// its own `t`: one without a gradient in a step is left alone, moments and count included.
///
/// State ([`TrainingState`]): `"step"`, `"lr"`, and per variable `"step.<name>"`, `"m.<name>"`,
/// `"v.<name>"` (and `"v_max.<name>"` with AMSGrad).
///
/// ```
/// use candle_core::{Device, Var};
/// use candle_nn::Optimizer;
/// use candle_generative::optim::{Adam, AdamConfig, NamedVars};
///
/// // Minimise (w - 1)² from w = 3.
/// let w = Var::new(&[3.0f32], &Device::Cpu)?;
/// let vars = NamedVars::from_pairs(vec![("w".to_string(), w.clone())])?;
/// let mut adam = Adam::new_named(vars, AdamConfig::with_lr(0.1))?;
/// for _ in 0..100 {
///     let loss = (w.as_tensor() - 1.0)?.sqr()?.sum_all()?;
///     adam.backward_step(&loss)?;
/// }
/// assert_eq!(adam.step_count(), 100);
/// assert!((w.to_vec1::<f32>()?[0] - 1.0).abs() < 0.1);
/// # Ok::<(), candle_generative::Error>(())
/// ```
#[derive(Debug)]
pub struct Adam {
    config: AdamConfig,
    state: VarStates,
    step_count: u64,
}

impl Adam {
    /// An optimizer over `vars` (validated `config`; moments start at zero).
    pub fn new_named(vars: NamedVars, config: AdamConfig) -> Result<Self> {
        config.validate()?;
        let mut buffers = vec!["m", "v"];
        if config.amsgrad {
            buffers.push("v_max");
        }
        Ok(Self { state: VarStates::new(vars, buffers)?, config, step_count: 0 })
    }

    /// The configuration; `lr` is the current learning rate.
    pub fn config(&self) -> &AdamConfig {
        &self.config
    }

    /// Number of calls to `step` so far (also those in which no variable had a gradient).
    pub fn step_count(&self) -> u64 {
        self.step_count
    }

    fn try_step(&mut self, grads: &GradStore) -> Result<()> {
        let AdamConfig { lr, beta1, beta2, eps, weight_decay, decoupled_weight_decay, amsgrad } = self.config;
        check_lr("AdamConfig.lr", lr)?;
        self.state.update(grads, |t, param, grad, buffers| {
            let (param, g) = if decoupled_weight_decay {
                let decayed =
                    if weight_decay == 0.0 { param.clone() } else { param.affine(1.0 - lr * weight_decay, 0.0)? };
                (decayed, grad.clone())
            } else {
                (param.clone(), add_weight_decay(grad, param, weight_decay)?)
            };
            // `new_named` made the buffers [m, v] or, with AMSGrad, [m, v, v_max].
            let m = ((&buffers[0] * beta1)? + (&g * (1.0 - beta1))?)?;
            let v = ((&buffers[1] * beta2)? + (g.sqr()? * (1.0 - beta2))?)?;
            let v_max = if amsgrad { Some(buffers[2].maximum(&v)?) } else { None };
            let bias_correction1 = 1.0 - beta1.powf(t as f64);
            let bias_correction2 = 1.0 - beta2.powf(t as f64);
            let denominator = v_max.as_ref().unwrap_or(&v).sqrt()?.affine(1.0 / bias_correction2.sqrt(), eps)?;
            let next = (param - (m.div(&denominator)? * (lr / bias_correction1))?)?;
            buffers[0] = m;
            buffers[1] = v;
            if let Some(v_max) = v_max {
                buffers[2] = v_max;
            }
            Ok(next)
        })?;
        self.step_count += 1;
        Ok(())
    }
}

impl candle_nn::Optimizer for Adam {
    type Config = AdamConfig;

    /// Variables are named `"0"`, `"1"`, ... in the given order (see [`NamedVars::from_vars`]).
    fn new(vars: Vec<Var>, config: AdamConfig) -> candle_core::Result<Self> {
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

impl TrainingState for Adam {
    fn state_tensors(&self) -> Result<Vec<(String, Tensor)>> {
        self.state.export(self.step_count, self.config.lr)
    }

    /// Restores moments, step counts and the learning rate; on error nothing is changed.
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

    /// `torch.optim.Adam` / `AdamW`'s algorithm box, per variable, in plain `f64`.
    struct Reference {
        config: AdamConfig,
        state: HashMap<usize, Moments>,
    }

    /// One variable's step count, m, v and v_max.
    struct Moments(i32, Vec<f64>, Vec<f64>, Vec<f64>);

    impl Reference {
        fn new(config: &AdamConfig) -> Self {
            Self { config: config.clone(), state: HashMap::new() }
        }

        fn update(&mut self, i: usize, p: &mut [f64], g: &[f64]) {
            let c = &self.config;
            let n = p.len();
            let Moments(t, m, v, v_max) =
                self.state.entry(i).or_insert_with(|| Moments(0, vec![0.0; n], vec![0.0; n], vec![0.0; n]));
            *t += 1;
            for j in 0..n {
                let mut g = g[j];
                if c.weight_decay != 0.0 {
                    if c.decoupled_weight_decay {
                        p[j] -= c.lr * c.weight_decay * p[j];
                    } else {
                        g += c.weight_decay * p[j];
                    }
                }
                m[j] = c.beta1 * m[j] + (1.0 - c.beta1) * g;
                v[j] = c.beta2 * v[j] + (1.0 - c.beta2) * g * g;
                let m_hat = m[j] / (1.0 - c.beta1.powi(*t));
                let v_hat = if c.amsgrad {
                    v_max[j] = v_max[j].max(v[j]);
                    v_max[j] / (1.0 - c.beta2.powi(*t))
                } else {
                    v[j] / (1.0 - c.beta2.powi(*t))
                };
                p[j] -= c.lr * m_hat / (v_hat.sqrt() + c.eps);
            }
        }
    }

    fn matches_reference(config: AdamConfig) -> Result<()> {
        let mut reference = Reference::new(&config);
        let worst =
            check_against_reference(|v| Adam::new_named(v, config.clone()), |i, p, g| reference.update(i, p, g))?;
        eprintln!("{config:?}: max relative error {worst:e}");
        Ok(())
    }

    #[test]
    fn adam_matches_reference() -> Result<()> {
        matches_reference(AdamConfig::with_lr(0.05))
    }

    #[test]
    fn adam_l2_matches_reference() -> Result<()> {
        matches_reference(AdamConfig { weight_decay: 0.1, ..AdamConfig::with_lr(0.05) })
    }

    #[test]
    fn adamw_matches_reference() -> Result<()> {
        matches_reference(AdamConfig::adamw(0.05, 0.1))
    }

    #[test]
    fn amsgrad_matches_reference() -> Result<()> {
        // A short second-moment memory lets `v` fall between steps, so the maximum matters.
        matches_reference(AdamConfig { beta1: 0.8, beta2: 0.5, amsgrad: true, ..AdamConfig::adamw(0.05, 0.1) })
    }

    #[test]
    fn state_round_trip_resumes_bit_identically() -> Result<()> {
        check_round_trip(|v| Adam::new_named(v, AdamConfig::adamw(0.05, 0.1)))?;
        check_round_trip(|v| Adam::new_named(v, AdamConfig { amsgrad: true, ..AdamConfig::with_lr(0.05) }))
    }

    #[test]
    fn set_learning_rate_takes_effect() -> Result<()> {
        check_set_learning_rate(|v, lr| Adam::new_named(v, AdamConfig::adamw(lr, 0.1)))
    }

    #[test]
    fn steps_f32_and_bf16() -> Result<()> {
        check_dtypes(|v| Adam::new_named(v, AdamConfig { amsgrad: true, ..AdamConfig::adamw(0.1, 0.01) }))
    }

    #[test]
    fn trait_constructor_names_vars_by_position() -> Result<()> {
        check_trait_constructor::<Adam>(AdamConfig::default(), AdamConfig { eps: 0.0, ..AdamConfig::default() })
    }

    #[test]
    fn bad_configs_name_the_field() {
        let bad = |config: AdamConfig| config_field(Adam::new_named(NamedVars::default(), config));
        assert_eq!(bad(AdamConfig::with_lr(-1e-3)), "AdamConfig.lr");
        assert_eq!(bad(AdamConfig::with_lr(f64::NAN)), "AdamConfig.lr");
        assert_eq!(bad(AdamConfig { beta1: 1.0, ..AdamConfig::default() }), "AdamConfig.beta1");
        assert_eq!(bad(AdamConfig { beta1: -0.1, ..AdamConfig::default() }), "AdamConfig.beta1");
        assert_eq!(bad(AdamConfig { beta2: 1.0, ..AdamConfig::default() }), "AdamConfig.beta2");
        assert_eq!(bad(AdamConfig { beta2: f64::NAN, ..AdamConfig::default() }), "AdamConfig.beta2");
        assert_eq!(bad(AdamConfig { eps: 0.0, ..AdamConfig::default() }), "AdamConfig.eps");
        assert_eq!(bad(AdamConfig { eps: f64::INFINITY, ..AdamConfig::default() }), "AdamConfig.eps");
        assert_eq!(bad(AdamConfig::adamw(1e-3, -0.01)), "AdamConfig.weight_decay");
        assert_eq!(bad(AdamConfig { beta1: 0.0, beta2: 0.0, ..AdamConfig::default() }), "accepted");
    }

    #[test]
    fn config_defaults_and_serde() -> Result<()> {
        let c = AdamConfig::default();
        assert_eq!((c.lr, c.beta1, c.beta2, c.eps, c.weight_decay), (1e-3, 0.9, 0.999, 1e-8, 0.0));
        assert!(!c.decoupled_weight_decay && !c.amsgrad);
        let w = AdamConfig::adamw(1e-3, 0.01);
        assert_eq!(w, AdamConfig { weight_decay: 0.01, decoupled_weight_decay: true, ..c });
        let json = serde_json::to_string(&w).map_err(|e| Error::config("json", e.to_string()))?;
        let back: AdamConfig = serde_json::from_str(&json).map_err(|e| Error::config("json", e.to_string()))?;
        assert_eq!(back, w);
        Ok(())
    }
}
