//! The KL weight over training: β-VAE's constant β (Higgins et al. 2017), KL warm-up from 0 (Bowman et
//! al. 2016; Sønderby et al. 2016) and cyclical annealing (Fu et al. 2019).

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The KL weight `β(step)` of the objective `-E[log p(x|z)] + β(step) · KL`.
///
/// `β(step) = beta · min(1, start + (1 - start) · t / warmup_steps)` with `t = step` (or
/// `t = step mod cycle_steps` when cycling): a linear ramp from `start · beta` to `beta` over
/// `warmup_steps`, then constant. `warmup_steps = 0` is the constant β of a β-VAE (`beta = 1`: the
/// plain ELBO). Warming the KL up lets the decoder learn to use `z` before the KL term pulls the
/// posterior onto the prior (posterior collapse, Bowman et al. 2016).
///
/// ```
/// use candle_generative::vae::KlAnnealing;
/// let a = KlAnnealing::warmup(1.0, 100);
/// assert_eq!(a.beta_at(0), 0.0);
/// assert_eq!(a.beta_at(50), 0.5);
/// assert_eq!(a.beta_at(1_000), 1.0);
/// assert_eq!(KlAnnealing::constant(4.0).beta_at(0), 4.0); // β-VAE
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct KlAnnealing {
    /// The final KL weight β (finite, `>= 0`): 1 for the ELBO, `> 1` for a β-VAE.
    pub beta: f64,
    /// Steps of the linear ramp (0: no ramp).
    pub warmup_steps: u64,
    /// The ramp's starting fraction of `beta`, in `[0, 1]`.
    pub start: f64,
    /// With `cycle_steps > 0` the ramp restarts every `cycle_steps` steps (cyclical annealing, Fu et al.
    /// 2019); must then be `>= warmup_steps`.
    pub cycle_steps: u64,
}

impl Default for KlAnnealing {
    /// Constant `β = 1`: the ELBO.
    fn default() -> Self {
        Self { beta: 1.0, warmup_steps: 0, start: 0.0, cycle_steps: 0 }
    }
}

impl KlAnnealing {
    /// A constant weight `beta` (β-VAE; `1.0` is the ELBO).
    pub fn constant(beta: f64) -> Self {
        Self { beta, ..Self::default() }
    }

    /// A linear ramp from 0 to `beta` over `warmup_steps`, then constant.
    pub fn warmup(beta: f64, warmup_steps: u64) -> Self {
        Self { beta, warmup_steps, ..Self::default() }
    }

    /// Restarts the ramp every `cycle_steps` steps.
    pub fn cyclical(self, cycle_steps: u64) -> Self {
        Self { cycle_steps, ..self }
    }

    /// Checks the fields; `Error::Config` names the one at fault.
    pub fn validate(&self) -> Result<()> {
        if !(self.beta.is_finite() && self.beta >= 0.0) {
            return Err(Error::config("beta", format!("must be finite and >= 0, got {}", self.beta)));
        }
        if !(0.0..=1.0).contains(&self.start) {
            return Err(Error::config("start", format!("must be in [0, 1], got {}", self.start)));
        }
        if self.cycle_steps > 0 && self.cycle_steps < self.warmup_steps {
            return Err(Error::config(
                "cycle_steps",
                format!("must be 0 or >= warmup_steps ({}), got {}", self.warmup_steps, self.cycle_steps),
            ));
        }
        Ok(())
    }

    /// The KL weight at training step `step` (the number of optimizer steps taken before this one).
    pub fn beta_at(&self, step: u64) -> f64 {
        let t = if self.cycle_steps > 0 { step % self.cycle_steps } else { step };
        if self.warmup_steps == 0 || t >= self.warmup_steps {
            return self.beta;
        }
        let ramp = self.start + (1.0 - self.start) * t as f64 / self.warmup_steps as f64;
        self.beta * ramp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ramps_cycles_and_errors() {
        let a = KlAnnealing { start: 0.5, ..KlAnnealing::warmup(2.0, 10) };
        assert_eq!(a.beta_at(0), 1.0);
        assert_eq!(a.beta_at(5), 1.5);
        assert_eq!(a.beta_at(10), 2.0);
        let c = KlAnnealing::warmup(1.0, 4).cyclical(8);
        let betas: Vec<f64> = (0..10).map(|s| c.beta_at(s)).collect();
        assert_eq!(betas, [0.0, 0.25, 0.5, 0.75, 1.0, 1.0, 1.0, 1.0, 0.0, 0.25]);
        assert!(KlAnnealing::constant(-1.0).validate().is_err());
        assert!(KlAnnealing { start: 2.0, ..Default::default() }.validate().is_err());
        assert!(KlAnnealing::warmup(1.0, 10).cyclical(5).validate().is_err());
        KlAnnealing::warmup(1.0, 10).cyclical(10).validate().unwrap();
    }
}
