//! Exponential moving average (EMA) of model weights, with the decay warm-ups of diffusers'
//! `EMAModel`.

use std::collections::HashMap;

use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

use super::{read_like, read_scalar, scalar_tensor, NamedVars, TrainingState};
use crate::{Error, Result};

/// How the EMA decay grows during the first updates (before [`EmaConfig::decay`] caps it).
///
/// With `s` the number of updates since the averaging started (see [`EmaConfig`]), the uncapped
/// decay is given by the variant below.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
pub enum EmaWarmup {
    /// No warm-up: the decay is [`EmaConfig::decay`] from the first averaging update on
    /// (diffusers' `EMAModel` with `use_ema_warmup=False`).
    #[default]
    None,
    /// `1 - (1 + s / inv_gamma)^(-power)` (Karras's warm-up as used by k-diffusion and diffusers'
    /// `use_ema_warmup=True`). `inv_gamma = 1, power = 2/3` (diffusers' defaults) suit runs of a
    /// million steps or more (decay 0.999 at about 31.6k updates, 0.9999 at 1M);
    /// `inv_gamma = 1, power = 3/4` shorter runs (0.999 at 10k, 0.9999 at 215k).
    /// `inv_gamma = power = 1` gives a plain running mean.
    Power {
        /// Inverse multiplicative factor of the warm-up; finite and > 0.
        inv_gamma: f64,
        /// Exponent of the warm-up; finite and > 0.
        power: f64,
    },
    /// `(1 + s) / (10 + s)`: the warm-up of early diffusers' `EMAModel` (and of TensorFlow's
    /// `ExponentialMovingAverage` with `num_updates`).
    Ratio,
}

/// Settings of an [`Ema`]; the fields mirror diffusers' `EMAModel` arguments.
///
/// The decay used by the `n`-th call to [`Ema::update`] (`n` counted from 1) is, with
/// `s = n - update_after_step - 1`:
/// - `0` (the shadow becomes a copy of the weights) when `s <= 0`, i.e. for the first
///   `update_after_step + 1` updates, exactly as diffusers' `get_decay`;
/// - otherwise the [`EmaWarmup`] value of `s`, clipped to `[min_decay, decay]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EmaConfig {
    /// The largest (and, without warm-up, the constant) decay, in `[0, 1]`; default 0.9999.
    pub decay: f64,
    /// The smallest decay once averaging has started, in `[0, decay]`; default 0.
    pub min_decay: f64,
    /// Number of updates during which the shadow just copies the weights; default 0.
    pub update_after_step: u64,
    /// The decay warm-up; default [`EmaWarmup::None`].
    pub warmup: EmaWarmup,
}

impl Default for EmaConfig {
    fn default() -> Self {
        Self { decay: 0.9999, min_decay: 0.0, update_after_step: 0, warmup: EmaWarmup::None }
    }
}

impl EmaConfig {
    /// Checks every field; an [`Error::Config`] names the first one out of range.
    pub fn validate(&self) -> Result<()> {
        if !(0.0..=1.0).contains(&self.decay) {
            return Err(Error::config("decay", format!("must be in [0, 1], got {}", self.decay)));
        }
        if !(0.0..=self.decay).contains(&self.min_decay) {
            return Err(Error::config(
                "min_decay",
                format!("must be in [0, decay = {}], got {}", self.decay, self.min_decay),
            ));
        }
        if let EmaWarmup::Power { inv_gamma, power } = self.warmup {
            if !(inv_gamma.is_finite() && inv_gamma > 0.0) {
                return Err(Error::config("inv_gamma", format!("must be finite and > 0, got {inv_gamma}")));
            }
            if !(power.is_finite() && power > 0.0) {
                return Err(Error::config("power", format!("must be finite and > 0, got {power}")));
            }
        }
        Ok(())
    }

    /// The decay used by the update that brings the update count to `num_updates` (the first
    /// update is `num_updates = 1`); the formula is on [`EmaConfig`].
    pub fn decay_at(&self, num_updates: u64) -> f64 {
        let s = num_updates.saturating_sub(self.update_after_step.saturating_add(1));
        if s == 0 {
            return 0.0;
        }
        let s = s as f64;
        let warm = match self.warmup {
            EmaWarmup::None => self.decay,
            EmaWarmup::Power { inv_gamma, power } => 1.0 - (1.0 + s / inv_gamma).powf(-power),
            EmaWarmup::Ratio => (1.0 + s) / (10.0 + s),
        };
        warm.min(self.decay).max(self.min_decay)
    }
}

/// An exponential moving average of weights (Polyak & Juditsky 1992; the "EMA model" of DDPM,
/// Ho et al. 2020, and of diffusers' `EMAModel`).
///
/// Each [`Ema::update`] (call it after each optimizer step) does `shadow = d * shadow + (1 - d) * w`
/// for every variable `w`, with the decay `d` of [`EmaConfig`]. The shadow is kept in `F32`
/// (`F64` for `F64` variables) whatever the variable's dtype, so that `bf16`/`f16` training still
/// averages in full precision; it lives on the variable's device.
///
/// To evaluate or sample with the averaged weights, [`Ema::swap`] puts them into the model and a
/// second `swap` puts the training weights back, bit for bit. [`Ema::copy_to_model`] writes the
/// average into the model for a final export.
///
/// ```
/// use candle_core::{DType, Device};
/// use candle_nn::{VarBuilder, VarMap};
/// use candle_generative::optim::{Ema, EmaConfig, NamedVars};
///
/// let varmap = VarMap::new();
/// let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
/// let _layer = candle_nn::linear(2, 1, vb.pp("net"))?;
/// let vars = NamedVars::from_varmap(&varmap);
/// let mut ema = Ema::new(vars.clone(), EmaConfig { decay: 0.9, ..Default::default() })?;
/// let mut decays = Vec::new();
/// for _ in 0..3 {
///     // ... an optimizer step changes the weights ...
///     let w = vars.vars()[1].as_tensor().affine(1.0, 0.1)?;
///     vars.vars()[1].set(&w)?;
///     decays.push(ema.update()?);
/// }
/// assert_eq!(decays, vec![0.0, 0.9, 0.9]); // the first update copies the weights
/// ema.swap()?; // the model now holds the averaged weights: evaluate or sample here
/// ema.swap()?; // training weights are back
/// assert!(!ema.is_swapped());
/// # Ok::<(), candle_generative::Error>(())
/// ```
#[derive(Debug)]
pub struct Ema {
    vars: NamedVars,
    cfg: EmaConfig,
    shadow: Vec<Tensor>,
    /// The training weights while the shadow is swapped into the model.
    training: Option<Vec<Tensor>>,
    num_updates: u64,
}

/// The dtype the shadow of a variable of dtype `dtype` is kept in.
fn master_dtype(dtype: DType) -> DType {
    if dtype == DType::F64 {
        DType::F64
    } else {
        DType::F32
    }
}

/// `t` as `dtype` in storage of its own: `Var::set` writes in place, so a shadow or a saved copy
/// must never share storage with a variable.
fn owned_as(t: &Tensor, dtype: DType) -> Result<Tensor> {
    let t = t.detach();
    Ok(if t.dtype() == dtype { t.copy()? } else { t.to_dtype(dtype)? })
}

impl Ema {
    /// Starts averaging `vars`: the shadow is a copy of their current values. An error when the
    /// config is invalid, when `vars` is empty or holds a non-float variable.
    pub fn new(vars: NamedVars, cfg: EmaConfig) -> Result<Self> {
        cfg.validate()?;
        if vars.is_empty() {
            return Err(Error::config("vars", "an EMA needs at least one variable"));
        }
        let mut shadow = Vec::with_capacity(vars.len());
        for (name, var) in vars.iter() {
            if !var.dtype().is_float() {
                return Err(Error::config("vars", format!("`{name}` is {:?}, not a float", var.dtype())));
            }
            shadow.push(owned_as(var.as_tensor(), master_dtype(var.dtype()))?);
        }
        Ok(Self { vars, cfg, shadow, training: None, num_updates: 0 })
    }

    /// The configuration.
    pub fn config(&self) -> &EmaConfig {
        &self.cfg
    }

    /// The averaged variables.
    pub fn vars(&self) -> &NamedVars {
        &self.vars
    }

    /// Number of [`Ema::update`] calls so far (restored by [`TrainingState`]).
    pub fn num_updates(&self) -> u64 {
        self.num_updates
    }

    /// The decay that the update bringing the count to `num_updates` uses (the first update is
    /// `num_updates = 1`); see [`EmaConfig::decay_at`].
    pub fn decay_at(&self, num_updates: u64) -> f64 {
        self.cfg.decay_at(num_updates)
    }

    /// The averaged weights as `(name, tensor)` pairs, sorted by name, in master precision.
    pub fn shadow(&self) -> impl Iterator<Item = (&str, &Tensor)> {
        self.vars.names().into_iter().zip(self.shadow.iter())
    }

    /// `true` while [`Ema::swap`] has put the averaged weights into the model.
    pub fn is_swapped(&self) -> bool {
        self.training.is_some()
    }

    /// Folds the current weights into the average: `shadow = d * shadow + (1 - d) * w` with
    /// `d = decay_at(num_updates + 1)` (a plain copy when `d = 0`), and returns `d`.
    ///
    /// An [`Error::Config`] (field `"swapped"`) while the average is swapped into the model: the
    /// model then holds the average itself, and folding it in would corrupt the shadow.
    pub fn update(&mut self) -> Result<f64> {
        if self.is_swapped() {
            return Err(Error::config(
                "swapped",
                "Ema::update while the average is swapped in; call swap() again first",
            ));
        }
        let decay = self.cfg.decay_at(self.num_updates + 1);
        // Compute every new shadow before replacing any, so that an error leaves the EMA as it was.
        let mut next = Vec::with_capacity(self.shadow.len());
        for ((_, var), shadow) in self.vars.iter().zip(&self.shadow) {
            let w = var.as_tensor().detach();
            next.push(if decay == 0.0 {
                owned_as(&w, shadow.dtype())?
            } else {
                (shadow.affine(decay, 0.0)? + w.to_dtype(shadow.dtype())?.affine(1.0 - decay, 0.0)?)?
            });
        }
        self.shadow = next;
        self.num_updates += 1;
        Ok(decay)
    }

    /// Exchanges the model's weights with the average: the first call saves the training weights
    /// and writes the average (cast to each variable's dtype) into the model; the next call
    /// restores the saved training weights exactly. The shadow itself is never rounded.
    pub fn swap(&mut self) -> Result<()> {
        match self.training.take() {
            Some(training) => {
                for ((_, var), saved) in self.vars.iter().zip(&training) {
                    if let Err(e) = var.set(saved) {
                        // Keep the saved weights so that a retry can still restore them.
                        self.training = Some(training);
                        return Err(e.into());
                    }
                }
                Ok(())
            }
            None => {
                let mut saved = Vec::with_capacity(self.shadow.len());
                for (_, var) in self.vars.iter() {
                    saved.push(owned_as(var.as_tensor(), var.dtype())?);
                }
                // Record the saved weights before touching the model, so that a failure half-way
                // leaves `swap` able to restore them.
                self.training = Some(saved);
                self.copy_to_model()
            }
        }
    }

    /// Writes the average into the model's variables (cast to each variable's dtype), e.g. before
    /// exporting the final weights. Unlike [`Ema::swap`] the training weights are not kept; while
    /// swapped, the saved training weights stay saved and a `swap` still restores them.
    pub fn copy_to_model(&self) -> Result<()> {
        for ((_, var), shadow) in self.vars.iter().zip(&self.shadow) {
            var.set(&shadow.to_dtype(var.dtype())?)?;
        }
        Ok(())
    }
}

impl TrainingState for Ema {
    /// `"num_updates"`, `"swapped"` (0 or 1), `"shadow.<name>"` for every variable and, while
    /// swapped, `"training.<name>"` (the saved training weights).
    fn state_tensors(&self) -> Result<Vec<(String, Tensor)>> {
        let mut out = vec![
            ("num_updates".to_string(), scalar_tensor(self.num_updates as f64)?),
            ("swapped".to_string(), scalar_tensor(if self.is_swapped() { 1.0 } else { 0.0 })?),
        ];
        for (name, shadow) in self.shadow() {
            out.push((format!("shadow.{name}"), shadow.clone()));
        }
        if let Some(training) = &self.training {
            for (name, saved) in self.vars.names().into_iter().zip(training) {
                out.push((format!("training.{name}"), saved.clone()));
            }
        }
        Ok(out)
    }

    /// Restores the average, the update count and the swapped state. The model's own weights are
    /// not touched: they come from the checkpoint's `VarMap` (holding the average when the state
    /// was saved while swapped).
    fn load_state_tensors(&mut self, tensors: &HashMap<String, Tensor>) -> Result<()> {
        let count = read_scalar(tensors, "num_updates")?;
        if !(count >= 0.0 && count.fract() == 0.0 && count <= 2f64.powi(53)) {
            return Err(Error::shape("load_state_tensors", format!("`num_updates` is not a count: {count}")));
        }
        let flag = read_scalar(tensors, "swapped")?;
        if flag != 0.0 && flag != 1.0 {
            return Err(Error::shape("load_state_tensors", format!("`swapped` must be 0 or 1, got {flag}")));
        }
        let swapped = flag == 1.0;
        let mut shadow = Vec::with_capacity(self.shadow.len());
        for ((name, _), like) in self.vars.iter().zip(&self.shadow) {
            shadow.push(owned_as(&read_like(tensors, &format!("shadow.{name}"), like)?, like.dtype())?);
        }
        let training = if swapped {
            let mut saved = Vec::with_capacity(self.shadow.len());
            for (name, var) in self.vars.iter() {
                saved.push(owned_as(&read_like(tensors, &format!("training.{name}"), var.as_tensor())?, var.dtype())?);
            }
            Some(saved)
        } else {
            None
        };
        self.shadow = shadow;
        self.training = training;
        self.num_updates = count as u64;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn f64_vars(values: &[&[f64]]) -> Result<NamedVars> {
        let mut named = NamedVars::default();
        for (i, v) in values.iter().enumerate() {
            named.push(format!("w{i}"), Var::from_tensor(&Tensor::new(*v, &Device::Cpu)?)?)?;
        }
        Ok(named)
    }

    fn values(t: &Tensor) -> Result<Vec<f64>> {
        Ok(t.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?)
    }

    /// The weights at step `j` of a deterministic, non-trivial trajectory.
    fn weights_at(j: usize) -> Vec<f64> {
        let j = j as f64;
        vec![(0.7 * j).sin() + 0.1 * j, -2.0 + 0.25 * j * j, 1e-3 * (1.0 + j).ln()]
    }

    #[test]
    fn constant_decay_matches_closed_form() -> Result<()> {
        let d = 0.9;
        let k = 25;
        let vars = f64_vars(&[&[0.0, 0.0, 0.0]])?;
        let var = vars.vars()[0].clone();
        let mut ema = Ema::new(vars, EmaConfig { decay: d, ..Default::default() })?;
        // The first update copies the weights w0 (diffusers' get_decay is 0 there) ...
        var.set(&Tensor::new(weights_at(0), &Device::Cpu)?)?;
        assert_eq!(ema.update()?, 0.0);
        // ... then k updates with the constant decay on w1..wk.
        for j in 1..=k {
            var.set(&Tensor::new(weights_at(j), &Device::Cpu)?)?;
            assert_eq!(ema.update()?, d);
        }
        let got = values(ema.shadow().next().expect("one variable").1)?;
        for (i, g) in got.iter().enumerate() {
            // d^k w0 + sum_{j=1..k} (1 - d) d^(k - j) w_j
            let mut expected = d.powi(k as i32) * weights_at(0)[i];
            for j in 1..=k {
                expected += (1.0 - d) * d.powi((k - j) as i32) * weights_at(j)[i];
            }
            assert!((g - expected).abs() <= 1e-12 * expected.abs().max(1.0), "{g} vs {expected}");
        }
        assert_eq!(ema.num_updates(), k as u64 + 1);
        Ok(())
    }

    #[test]
    fn decays_at_named_steps() {
        let power = EmaConfig { warmup: EmaWarmup::Power { inv_gamma: 1.0, power: 2.0 / 3.0 }, ..Default::default() };
        assert_eq!(power.decay_at(0), 0.0);
        assert_eq!(power.decay_at(1), 0.0, "first update copies");
        assert_eq!(power.decay_at(2), 1.0 - 2f64.powf(-2.0 / 3.0));
        assert_eq!(power.decay_at(11), 1.0 - 11f64.powf(-2.0 / 3.0));
        // crowsonkb's note: 0.999 at about 31.6k updates.
        assert!((power.decay_at(31_623) - 0.999).abs() < 1e-7);
        assert_eq!(power.decay_at(100_000_000), 0.9999, "capped at decay");

        let ratio = EmaConfig { decay: 0.999, update_after_step: 5, warmup: EmaWarmup::Ratio, ..Default::default() };
        for n in 0..=6 {
            assert_eq!(ratio.decay_at(n), 0.0, "copy for the first update_after_step + 1 updates");
        }
        assert_eq!(ratio.decay_at(7), 2.0 / 11.0);
        assert_eq!(ratio.decay_at(6 + 90), 0.91);
        assert_eq!(ratio.decay_at(6 + 100_000), 0.999);

        let floored = EmaConfig { min_decay: 0.5, warmup: EmaWarmup::Ratio, ..Default::default() };
        assert_eq!(floored.decay_at(1), 0.0, "min_decay does not apply to the copying updates");
        assert_eq!(floored.decay_at(2), 0.5, "2/11 raised to min_decay");

        let constant = EmaConfig { decay: 0.99, ..Default::default() };
        assert_eq!(constant.decay_at(1), 0.0);
        assert_eq!(constant.decay_at(2), 0.99);
    }

    #[test]
    fn update_after_step_copies_then_averages() -> Result<()> {
        let vars = f64_vars(&[&[1.0]])?;
        let var = vars.vars()[0].clone();
        let cfg = EmaConfig { decay: 0.5, update_after_step: 2, ..Default::default() };
        let mut ema = Ema::new(vars, cfg)?;
        for (w, expected_decay, expected_shadow) in [(2.0, 0.0, 2.0), (3.0, 0.0, 3.0), (4.0, 0.0, 4.0), (8.0, 0.5, 6.0)]
        {
            var.set(&Tensor::new(&[w], &Device::Cpu)?)?;
            assert_eq!(ema.update()?, expected_decay);
            assert_eq!(values(ema.shadow().next().expect("one variable").1)?, vec![expected_shadow]);
        }
        Ok(())
    }

    #[test]
    fn swap_twice_is_identity() -> Result<()> {
        let vars = f64_vars(&[&[1.0, 2.0], &[3.0]])?;
        let mut ema = Ema::new(vars.clone(), EmaConfig { decay: 0.5, ..Default::default() })?;
        ema.update()?;
        vars.vars()[0].set(&Tensor::new(&[5.0, 6.0], &Device::Cpu)?)?;
        vars.vars()[1].set(&Tensor::new(&[7.0], &Device::Cpu)?)?;
        ema.update()?;
        let training: Vec<Vec<f64>> = vars.vars().iter().map(|v| values(v.as_tensor())).collect::<Result<_>>()?;
        let shadow: Vec<Vec<f64>> = ema.shadow().map(|(_, t)| values(t)).collect::<Result<_>>()?;
        assert_eq!(shadow, vec![vec![3.0, 4.0], vec![5.0]]);

        ema.swap()?;
        assert!(ema.is_swapped());
        let in_model: Vec<Vec<f64>> = vars.vars().iter().map(|v| values(v.as_tensor())).collect::<Result<_>>()?;
        assert_eq!(in_model, shadow, "swap once puts the shadow in the model");
        assert!(matches!(ema.update(), Err(Error::Config { .. })), "update while swapped is refused");
        assert_eq!(ema.num_updates(), 2);

        ema.swap()?;
        assert!(!ema.is_swapped());
        let back: Vec<Vec<f64>> = vars.vars().iter().map(|v| values(v.as_tensor())).collect::<Result<_>>()?;
        assert_eq!(back, training, "swap twice is the identity");
        let shadow_after: Vec<Vec<f64>> = ema.shadow().map(|(_, t)| values(t)).collect::<Result<_>>()?;
        assert_eq!(shadow_after, shadow);

        ema.copy_to_model()?;
        let exported: Vec<Vec<f64>> = vars.vars().iter().map(|v| values(v.as_tensor())).collect::<Result<_>>()?;
        assert_eq!(exported, shadow);
        Ok(())
    }

    #[test]
    fn state_round_trip_continues_bit_for_bit() -> Result<()> {
        let make = || -> Result<(Var, Ema)> {
            let var = Var::from_tensor(&Tensor::new(&[0.5f32, -1.0, 2.0], &Device::Cpu)?)?;
            let vars = NamedVars::from_pairs(vec![("net.w".to_string(), var.clone())])?;
            let cfg = EmaConfig { warmup: EmaWarmup::Power { inv_gamma: 1.0, power: 0.75 }, ..Default::default() };
            Ok((var, Ema::new(vars, cfg)?))
        };
        let step = |var: &Var, j: usize| -> Result<()> {
            let w: Vec<f32> = weights_at(j).iter().map(|&x| x as f32).collect();
            Ok(var.set(&Tensor::new(w, &Device::Cpu)?)?)
        };
        let (var_a, mut a) = make()?;
        for j in 0..7 {
            step(&var_a, j)?;
            a.update()?;
        }
        let state: HashMap<String, Tensor> = a.state_tensors()?.into_iter().collect();
        let mut names: Vec<&str> = state.keys().map(String::as_str).collect();
        names.sort();
        assert_eq!(names, vec!["num_updates", "shadow.net.w", "swapped"]);

        let (var_b, mut b) = make()?;
        b.load_state_tensors(&state)?;
        assert_eq!(b.num_updates(), 7);
        for j in 7..15 {
            step(&var_a, j)?;
            step(&var_b, j)?;
            assert_eq!(a.update()?.to_bits(), b.update()?.to_bits());
        }
        let bits = |e: &Ema| -> Result<Vec<u32>> {
            let t = e.shadow().next().expect("one variable").1;
            Ok(t.to_vec1::<f32>()?.iter().map(|x| x.to_bits()).collect())
        };
        assert_eq!(bits(&a)?, bits(&b)?);

        // Saved while swapped: the training weights travel with the state.
        a.swap()?;
        let state: HashMap<String, Tensor> = a.state_tensors()?.into_iter().collect();
        assert!(state.contains_key("training.net.w"));
        let (var_c, mut c) = make()?;
        c.load_state_tensors(&state)?;
        assert!(c.is_swapped());
        var_c.set(var_a.as_tensor())?; // the checkpoint's VarMap holds the average
        c.swap()?;
        a.swap()?;
        assert_eq!(var_c.to_vec1::<f32>()?, var_a.to_vec1::<f32>()?);

        let mut missing = state.clone();
        missing.remove("shadow.net.w");
        assert!(c.load_state_tensors(&missing).is_err());
        Ok(())
    }

    #[test]
    fn bf16_variable_keeps_an_f32_shadow() -> Result<()> {
        let init = Tensor::new(&[1.0f32, 2.0, -3.0], &Device::Cpu)?.to_dtype(DType::BF16)?;
        let var = Var::from_tensor(&init)?;
        let vars = NamedVars::from_pairs(vec![("w".to_string(), var.clone())])?;
        let mut ema = Ema::new(vars, EmaConfig { decay: 0.999, ..Default::default() })?;
        assert_eq!(ema.shadow().next().expect("one variable").1.dtype(), DType::F32);
        ema.update()?;
        // The shadow moves by 0.001, far below bf16's resolution around 1.0 (2^-8): kept in f32.
        let bumped = Tensor::new(&[1.0f32, 2.0, -3.0], &Device::Cpu)?.affine(1.0, 1.0)?.to_dtype(DType::BF16)?;
        var.set(&bumped)?;
        ema.update()?;
        let shadow = ema.shadow().next().expect("one variable").1.to_vec1::<f32>()?;
        let expected = [1.001f32, 2.001, -2.999];
        for (s, e) in shadow.iter().zip(expected) {
            assert!((s - e).abs() < 1e-5, "{s} vs {e}");
        }
        ema.swap()?;
        assert_eq!(var.dtype(), DType::BF16);
        let in_model = var.to_dtype(DType::F32)?.to_vec1::<f32>()?;
        let rounded = Tensor::new(shadow.as_slice(), &Device::Cpu)?.to_dtype(DType::BF16)?.to_dtype(DType::F32)?;
        assert_eq!(in_model, rounded.to_vec1::<f32>()?);
        ema.swap()?;
        assert_eq!(var.to_dtype(DType::F32)?.to_vec1::<f32>()?, vec![2.0, 3.0, -2.0]);
        Ok(())
    }

    #[test]
    fn invalid_configs_are_refused() {
        let field = |cfg: EmaConfig| match cfg.validate() {
            Err(Error::Config { field, .. }) => field,
            other => panic!("expected a config error, got {other:?}"),
        };
        assert_eq!(field(EmaConfig { decay: 1.5, ..Default::default() }), "decay");
        assert_eq!(field(EmaConfig { decay: f64::NAN, ..Default::default() }), "decay");
        assert_eq!(field(EmaConfig { decay: 0.9, min_decay: 0.95, ..Default::default() }), "min_decay");
        let warm = |inv_gamma, power| EmaConfig { warmup: EmaWarmup::Power { inv_gamma, power }, ..Default::default() };
        assert_eq!(field(warm(0.0, 1.0)), "inv_gamma");
        assert_eq!(field(warm(1.0, f64::INFINITY)), "power");
        assert!(Ema::new(NamedVars::default(), EmaConfig::default()).is_err());
    }
}
