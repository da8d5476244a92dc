//! The CycleGAN objective's settings: adversarial loss and the weights of the L1 terms.

use serde::{Deserialize, Serialize};

use crate::losses::adversarial::GanLoss;
use crate::losses::cycle::DEFAULT_LAMBDA_CYCLE;
use crate::{Error, Result};

/// What [`generator_step`](super::generator_step) and
/// [`discriminator_step`](super::discriminator_step) minimise (Zhu et al. 2017, eq. 3 and
/// section 4). With `G: A -> B`, `F: B -> A`, `s` the loss scale below and `lambda = lambda_cycle`:
///
/// ```text
/// L_G = s · gan_G(D_B(G(a))) + s · gan_G(D_A(F(b)))
///     + lambda · (mean|F(G(a)) - a| + mean|G(F(b)) - b|)                        cycle
///     + identity_fraction · lambda · (mean|G(b) - b| + mean|F(a) - a|)          identity
/// L_D = 1/2 · s · (real term + fake term)  for each of D_A (a vs. pooled F(b)) and D_B
/// ```
///
/// `gan_G` and the terms are [`GanLoss`]'s. `s = 2` for [`GanLoss::LeastSquares`], whose terms
/// carry Mao et al.'s factor 1/2, so that both losses equal the reference code's (PyTorch's
/// `MSELoss`, without the 1/2; its discriminator loss halved); `s = 1` for the others, where the
/// reference's "vanilla" GAN is [`GanLoss::NonSaturating`] with BCE.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct StepConfig {
    /// The adversarial loss (default LSGAN, [`GanLoss::least_squares`], as in the paper).
    pub loss: GanLoss,
    /// Weight of the cycle-consistency L1 terms, finite and >= 0 (10 in the paper).
    pub lambda_cycle: f64,
    /// Weight of the identity L1 terms as a fraction of `lambda_cycle` (the reference code's
    /// `lambda_identity`, 0.5: each identity term weighs 5); 0 disables them. Identity needs each
    /// generator to accept images of its output domain (same channels in both domains).
    pub identity_fraction: f64,
}

impl Default for StepConfig {
    /// LSGAN, `lambda_cycle = 10`, `identity_fraction = 0.5`.
    fn default() -> Self {
        Self { loss: GanLoss::least_squares(), lambda_cycle: DEFAULT_LAMBDA_CYCLE, identity_fraction: 0.5 }
    }
}

impl StepConfig {
    /// Checks the weights (finite, >= 0); an `Error::Config` names the field.
    pub fn validate(&self) -> Result<()> {
        for (field, v) in
            [("StepConfig.lambda_cycle", self.lambda_cycle), ("StepConfig.identity_fraction", self.identity_fraction)]
        {
            if !(v.is_finite() && v >= 0.0) {
                return Err(Error::config(field, format!("must be finite and >= 0, got {v}")));
            }
        }
        Ok(())
    }

    /// The weight of each identity term, `identity_fraction · lambda_cycle`.
    pub fn lambda_identity(&self) -> f64 {
        self.identity_fraction * self.lambda_cycle
    }

    /// The factor `s` applied to [`GanLoss`]'s values: 2 for least squares, 1 otherwise.
    pub fn loss_scale(&self) -> f64 {
        match self.loss {
            GanLoss::LeastSquares { .. } => 2.0,
            _ => 1.0,
        }
    }
}
