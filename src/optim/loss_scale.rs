//! Dynamic loss scaling for `f16` training ([`LossScaler`]), after Micikevicius et al. 2018,
//! "Mixed Precision Training", §3.3, with the growth rule of PyTorch's `GradScaler`.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::{read_scalar, scalar_tensor, TrainingState};
use crate::{Error, Result};

/// How a [`LossScaler`] moves its scale.
///
/// The loss is multiplied by the scale before the backward pass, so that small gradients of an
/// `f16` network (smallest normal value `6.1e-5`, subnormals to `6e-8`) do not flush to zero; the
/// gradients are divided by it again, in `f32`, before the update. A step whose gradients hold an
/// `inf` or `NaN` is skipped and the scale multiplied by `backoff_factor`; after `growth_interval`
/// finite steps in a row it is multiplied by `growth_factor`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LossScaleConfig {
    /// The first scale (> 0, finite). The default is `2^10`, below PyTorch's `2^16`: the weight
    /// gradients of the convolutional models here reach tens at initialisation, and `f16` ends at
    /// 65504, so a scale of `2^15` skipped the first six steps of every family while it backed off
    /// (to 512); the scale grows again after `growth_interval` finite steps.
    pub init_scale: f64,
    /// Factor after `growth_interval` finite steps in a row (>= 1; 1 keeps the scale fixed).
    pub growth_factor: f64,
    /// Factor after a step with non-finite gradients, in `(0, 1]`.
    pub backoff_factor: f64,
    /// Finite steps in a row before the scale grows (> 0).
    pub growth_interval: u64,
    /// Skipped steps in a row after which the step fails with [`Error::NonFinite`] instead of
    /// backing off again (> 0): gradients that stay non-finite at every scale come from the model,
    /// not from the scale.
    pub max_consecutive_skips: u64,
}

impl Default for LossScaleConfig {
    fn default() -> Self {
        Self {
            init_scale: 1024.0,
            growth_factor: 2.0,
            backoff_factor: 0.5,
            growth_interval: 2000,
            max_consecutive_skips: 40,
        }
    }
}

impl LossScaleConfig {
    /// Checks every field; `Error::Config` names the one at fault.
    pub fn validate(&self) -> Result<()> {
        if !(self.init_scale.is_finite() && self.init_scale > 0.0) {
            return Err(Error::config("init_scale", format!("must be finite and > 0, got {}", self.init_scale)));
        }
        if !(self.growth_factor.is_finite() && self.growth_factor >= 1.0) {
            return Err(Error::config("growth_factor", format!("must be finite and >= 1, got {}", self.growth_factor)));
        }
        if !(self.backoff_factor > 0.0 && self.backoff_factor <= 1.0) {
            return Err(Error::config("backoff_factor", format!("must be in (0, 1], got {}", self.backoff_factor)));
        }
        if self.growth_interval == 0 {
            return Err(Error::config("growth_interval", "must be > 0"));
        }
        if self.max_consecutive_skips == 0 {
            return Err(Error::config("max_consecutive_skips", "must be > 0"));
        }
        Ok(())
    }
}

/// What [`LossScaler::update`] did with the scale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScaleChange {
    /// The gradients were finite and the scale stayed.
    Kept,
    /// The gradients were finite and the scale grew.
    Grew,
    /// The gradients were not finite: the step is skipped and the scale shrank.
    BackedOff,
}

/// The dynamic loss scale of [`LossScaleConfig`], with its counters; a [`TrainingState`], so a
/// resumed run continues with the same scale.
///
/// ```
/// use candle_generative::optim::{LossScaleConfig, LossScaler, ScaleChange};
///
/// let cfg = LossScaleConfig { init_scale: 1024.0, growth_interval: 2, ..Default::default() };
/// let mut scaler = LossScaler::new(cfg)?;
/// assert_eq!(scaler.update(false)?, ScaleChange::BackedOff); // overflow: skip, halve
/// assert_eq!(scaler.scale(), 512.0);
/// assert_eq!(scaler.update(true)?, ScaleChange::Kept);
/// assert_eq!(scaler.update(true)?, ScaleChange::Grew); // two finite steps in a row
/// assert_eq!((scaler.scale(), scaler.skipped_steps()), (1024.0, 1));
/// # Ok::<(), candle_generative::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct LossScaler {
    cfg: LossScaleConfig,
    scale: f64,
    good_steps: u64,
    consecutive_skips: u64,
    skipped_steps: u64,
}

impl LossScaler {
    /// A scaler at `cfg.init_scale` (validated).
    pub fn new(cfg: LossScaleConfig) -> Result<Self> {
        cfg.validate()?;
        Ok(Self { scale: cfg.init_scale, cfg, good_steps: 0, consecutive_skips: 0, skipped_steps: 0 })
    }

    /// The configuration.
    pub fn config(&self) -> &LossScaleConfig {
        &self.cfg
    }

    /// The current scale: multiply the loss by it before `backward`, divide the gradients by it.
    pub fn scale(&self) -> f64 {
        self.scale
    }

    /// Steps skipped so far for non-finite gradients.
    pub fn skipped_steps(&self) -> u64 {
        self.skipped_steps
    }

    /// Moves the scale after a step whose gradients were `finite` (or not) and says how.
    /// [`Error::NonFinite`] (term `"gradients"`, the value the last scale) once
    /// `max_consecutive_skips` steps in a row had non-finite gradients.
    pub fn update(&mut self, finite: bool) -> Result<ScaleChange> {
        if finite {
            self.consecutive_skips = 0;
            self.good_steps += 1;
            let grown = self.scale * self.cfg.growth_factor;
            if self.good_steps >= self.cfg.growth_interval && grown.is_finite() && grown != self.scale {
                self.scale = grown;
                self.good_steps = 0;
                return Ok(ScaleChange::Grew);
            }
            return Ok(ScaleChange::Kept);
        }
        self.good_steps = 0;
        self.skipped_steps += 1;
        self.consecutive_skips += 1;
        if self.consecutive_skips >= self.cfg.max_consecutive_skips {
            return Err(Error::non_finite(
                format!(
                    "gradients ({} steps in a row non-finite down to loss scale {})",
                    self.consecutive_skips, self.scale
                ),
                None,
                f64::NAN,
            ));
        }
        self.scale *= self.cfg.backoff_factor;
        Ok(ScaleChange::BackedOff)
    }
}

impl TrainingState for LossScaler {
    /// `"scale"`, `"good_steps"`, `"consecutive_skips"` and `"skipped_steps"`.
    fn state_tensors(&self) -> Result<Vec<(String, candle_core::Tensor)>> {
        Ok(vec![
            ("scale".to_string(), scalar_tensor(self.scale)?),
            ("good_steps".to_string(), scalar_tensor(self.good_steps as f64)?),
            ("consecutive_skips".to_string(), scalar_tensor(self.consecutive_skips as f64)?),
            ("skipped_steps".to_string(), scalar_tensor(self.skipped_steps as f64)?),
        ])
    }

    /// Restores the scale and counters; on error nothing is changed.
    fn load_state_tensors(&mut self, tensors: &HashMap<String, candle_core::Tensor>) -> Result<()> {
        let scale = read_scalar(tensors, "scale")?;
        if !(scale.is_finite() && scale > 0.0) {
            return Err(Error::shape("load_state_tensors", format!("`scale` must be finite and > 0, got {scale}")));
        }
        let good_steps = read_scalar(tensors, "good_steps")? as u64;
        let consecutive_skips = read_scalar(tensors, "consecutive_skips")? as u64;
        let skipped_steps = read_scalar(tensors, "skipped_steps")? as u64;
        (self.scale, self.good_steps, self.consecutive_skips, self.skipped_steps) =
            (scale, good_steps, consecutive_skips, skipped_steps);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_backs_off_gives_up_and_round_trips() -> Result<()> {
        let cfg =
            LossScaleConfig { init_scale: 8.0, growth_interval: 3, max_consecutive_skips: 3, ..Default::default() };
        let mut s = LossScaler::new(cfg.clone())?;
        let changes: Vec<_> =
            [true, true, true, true, false, true].iter().map(|&f| s.update(f)).collect::<Result<_>>()?;
        use ScaleChange::*;
        assert_eq!(changes, vec![Kept, Kept, Grew, Kept, BackedOff, Kept]);
        assert_eq!((s.scale(), s.skipped_steps()), (8.0, 1));

        let mut restored = LossScaler::new(cfg.clone())?;
        let map: HashMap<_, _> = s.state_tensors()?.into_iter().collect();
        restored.load_state_tensors(&map)?;
        assert_eq!(restored, s);

        assert_eq!(s.update(false)?, BackedOff);
        assert_eq!(s.update(false)?, BackedOff);
        let err = s.update(false).unwrap_err().to_string();
        assert!(err.contains("3 steps in a row") && err.contains("loss scale 2"), "{err}");
        Ok(())
    }

    #[test]
    fn refuses_bad_configs_and_states() {
        for (field, cfg) in [
            ("init_scale", LossScaleConfig { init_scale: 0.0, ..Default::default() }),
            ("growth_factor", LossScaleConfig { growth_factor: 0.5, ..Default::default() }),
            ("backoff_factor", LossScaleConfig { backoff_factor: 1.5, ..Default::default() }),
            ("growth_interval", LossScaleConfig { growth_interval: 0, ..Default::default() }),
            ("max_consecutive_skips", LossScaleConfig { max_consecutive_skips: 0, ..Default::default() }),
        ] {
            let err = LossScaler::new(cfg).unwrap_err().to_string();
            assert!(err.contains(field), "{err}");
        }
        let mut s = LossScaler::new(LossScaleConfig::default()).unwrap();
        let mut map: HashMap<_, _> = s.state_tensors().unwrap().into_iter().collect();
        map.insert("scale".into(), scalar_tensor(f64::INFINITY).unwrap());
        assert!(s.load_state_tensors(&map).is_err());
        assert_eq!(s.scale(), 1024.0);
    }
}
