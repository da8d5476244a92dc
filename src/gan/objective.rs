//! What the step helpers optimise: the adversarial loss, a regulariser of the discriminator
//! ([`Penalty`]), label smoothing, ACGAN's weight and the number of critic steps ([`StepConfig`]).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::losses::adversarial::GanLoss;
use crate::{Error, Result};

/// A Lipschitz regulariser of the discriminator, applied in [`discriminator_step`](super::discriminator_step).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Penalty {
    /// WGAN-GP (Gulrajani et al. 2017): `λ E[(‖∇D(x̂)‖ − 1)²]` on random interpolates of real
    /// and generated images; pair it with [`GanLoss::Wasserstein`] and a discriminator without
    /// batch norm. The paper's `λ` is 10.
    WganGp {
        /// The weight `λ` (>= 0).
        lambda: f64,
    },
    /// R1 (Mescheder, Geiger & Nowozin 2018): `γ/2 E[‖∇D(x)‖²]` on real images; works with any
    /// loss. The paper's `γ` is 10; small images often do better with 0.1 to 1.
    R1 {
        /// The weight `γ` (>= 0).
        gamma: f64,
    },
    /// WGAN weight clipping (Arjovsky et al. 2017): after each update, every discriminator
    /// weight is clamped to `[-c, c]` (the paper's `c` is 0.01). A constraint, not a loss term.
    WeightClipping {
        /// The bound `c` (> 0).
        c: f64,
    },
}

impl Penalty {
    /// The command-line forms: `wgan-gp[:λ]`, `r1[:γ]`, `clip[:c]`.
    pub const NAMES: [&'static str; 3] = ["wgan-gp", "r1", "clip"];

    /// Checks the weight; [`Error::Config`] names the field.
    pub fn validate(&self) -> Result<()> {
        let (field, value, ok) = match *self {
            Penalty::WganGp { lambda } => ("Penalty::WganGp.lambda", lambda, lambda >= 0.0),
            Penalty::R1 { gamma } => ("Penalty::R1.gamma", gamma, gamma >= 0.0),
            Penalty::WeightClipping { c } => ("Penalty::WeightClipping.c", c, c > 0.0),
        };
        if value.is_finite() && ok {
            Ok(())
        } else {
            Err(Error::config(
                field,
                format!("must be finite and {}, got {value}", if field.ends_with(".c") { "> 0" } else { ">= 0" }),
            ))
        }
    }
}

impl fmt::Display for Penalty {
    /// `wgan-gp:10`, `r1:10`, `clip:0.01`: the form [`FromStr`] reads back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Penalty::WganGp { lambda } => write!(f, "wgan-gp:{lambda}"),
            Penalty::R1 { gamma } => write!(f, "r1:{gamma}"),
            Penalty::WeightClipping { c } => write!(f, "clip:{c}"),
        }
    }
}

impl FromStr for Penalty {
    type Err = Error;

    /// Parses `wgan-gp` (λ = 10), `r1` (γ = 10), `clip` (c = 0.01), each optionally followed by
    /// `:<value>`, e.g. `r1:0.5`. Case and surrounding spaces are ignored.
    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim().to_ascii_lowercase();
        let (name, value) = match s.split_once(':') {
            Some((n, v)) => (n.trim(), Some(v.trim())),
            None => (s.as_str(), None),
        };
        let number = |default: f64| -> Result<f64> {
            match value {
                None => Ok(default),
                Some(v) => v.parse::<f64>().map_err(|_| Error::config("penalty", format!("`{v}` is not a number"))),
            }
        };
        let penalty = match name {
            "wgan-gp" | "gp" => Penalty::WganGp { lambda: number(10.0)? },
            "r1" => Penalty::R1 { gamma: number(10.0)? },
            "clip" | "weight-clipping" => Penalty::WeightClipping { c: number(0.01)? },
            other => {
                return Err(Error::config(
                    "penalty",
                    format!(
                        "unknown penalty `{other}`; expected one of {} (optionally `:<weight>`)",
                        Self::NAMES.join(", ")
                    ),
                ))
            }
        };
        penalty.validate()?;
        Ok(penalty)
    }
}

/// What [`discriminator_step`](super::discriminator_step) and [`generator_step`](super::generator_step) optimise.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct StepConfig {
    /// The adversarial objective (default: non-saturating, Goodfellow et al. 2014).
    pub loss: GanLoss,
    /// A regulariser of the discriminator (default none).
    pub penalty: Option<Penalty>,
    /// One-sided label smoothing (Salimans et al. 2016): the target on real images, e.g. 0.9;
    /// see [`GanLoss::discriminator_loss_smoothed`] (not defined for Wasserstein and hinge).
    pub real_label: Option<f64>,
    /// Weight of ACGAN's classification cross-entropy in both losses (default 1, Odena et al.
    /// 2017); used only when the discriminator returns class logits.
    pub classification_weight: f64,
    /// Discriminator steps per generator step (>= 1; 5 for WGAN and WGAN-GP).
    pub n_critic: usize,
}

impl Default for StepConfig {
    /// DCGAN's setting: non-saturating loss, no penalty, no smoothing, one critic step.
    fn default() -> Self {
        Self { loss: GanLoss::NonSaturating, penalty: None, real_label: None, classification_weight: 1.0, n_critic: 1 }
    }
}

impl StepConfig {
    /// WGAN-GP's setting (Gulrajani et al. 2017): Wasserstein loss, gradient penalty λ = 10,
    /// five critic steps per generator step.
    pub fn wgan_gp() -> Self {
        Self {
            loss: GanLoss::Wasserstein,
            penalty: Some(Penalty::WganGp { lambda: 10.0 }),
            n_critic: 5,
            ..Self::default()
        }
    }

    /// Checks every field; [`Error::Config`] names the one at fault.
    pub fn validate(&self) -> Result<()> {
        if let Some(p) = &self.penalty {
            p.validate()?;
        }
        if let Some(l) = self.real_label {
            if !l.is_finite() {
                return Err(Error::config("StepConfig.real_label", format!("must be finite, got {l}")));
            }
        }
        if !(self.classification_weight.is_finite() && self.classification_weight >= 0.0) {
            return Err(Error::config(
                "StepConfig.classification_weight",
                format!("must be finite and >= 0, got {}", self.classification_weight),
            ));
        }
        if self.n_critic == 0 {
            return Err(Error::config("StepConfig.n_critic", "must be >= 1, got 0"));
        }
        Ok(())
    }

    /// Whether a generator step follows discriminator step `step` (counted from 0): after every
    /// `n_critic`-th one, i.e. when `(step + 1) % n_critic == 0`.
    pub fn is_generator_step(&self, step: u64) -> bool {
        (step + 1) % self.n_critic.max(1) as u64 == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn penalty_names_round_trip_and_errors() {
        for p in [Penalty::WganGp { lambda: 10.0 }, Penalty::R1 { gamma: 0.5 }, Penalty::WeightClipping { c: 0.01 }] {
            assert_eq!(p.to_string().parse::<Penalty>().unwrap(), p);
        }
        assert_eq!("WGAN-GP".parse::<Penalty>().unwrap(), Penalty::WganGp { lambda: 10.0 });
        assert_eq!(" r1 : 2 ".parse::<Penalty>().unwrap(), Penalty::R1 { gamma: 2.0 });
        assert_eq!("clip".parse::<Penalty>().unwrap(), Penalty::WeightClipping { c: 0.01 });
        for bad in ["dragan", "r1:x", "clip:0", "wgan-gp:-1", "r1:nan"] {
            assert!(matches!(bad.parse::<Penalty>(), Err(Error::Config { .. })), "{bad}");
        }
        let msg = "dragan".parse::<Penalty>().unwrap_err().to_string();
        assert!(Penalty::NAMES.iter().all(|n| msg.contains(n)), "{msg}");
    }

    #[test]
    fn step_config_checks_and_critic_schedule() {
        StepConfig::default().validate().unwrap();
        StepConfig::wgan_gp().validate().unwrap();
        let field = |c: StepConfig| match c.validate() {
            Err(Error::Config { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        let d = StepConfig::default;
        assert_eq!(field(StepConfig { n_critic: 0, ..d() }), "StepConfig.n_critic");
        assert_eq!(field(StepConfig { classification_weight: -1.0, ..d() }), "StepConfig.classification_weight");
        assert_eq!(field(StepConfig { real_label: Some(f64::NAN), ..d() }), "StepConfig.real_label");
        assert_eq!(field(StepConfig { penalty: Some(Penalty::R1 { gamma: -1.0 }), ..d() }), "Penalty::R1.gamma");
        let five = StepConfig::wgan_gp();
        let g_steps: Vec<u64> = (0..12).filter(|&s| five.is_generator_step(s)).collect();
        assert_eq!(g_steps, vec![4, 9]);
        assert!((0..5).all(|s| d().is_generator_step(s)));
        let json = serde_json::to_string(&five).unwrap();
        assert_eq!(serde_json::from_str::<StepConfig>(&json).unwrap(), five);
    }
}
