//! One CycleGAN update of the two generators and one of the two discriminators, for a training
//! loop the user writes.
//!
//! [`generator_step`] updates `G: A -> B` and `F: B -> A` together on the adversarial, cycle and
//! identity losses; [`discriminator_step`] then updates `D_A` and `D_B` on real images and on
//! generated ones drawn through the [`ImagePools`]; [`train_step`] does both, in the reference
//! code's order. Each checks every term for NaN/infinity before updating anything and returns
//! the terms as plain numbers.
//!
//! **Half precision.** The optimizers implement [`LossScaling`]: for networks in `f16`/`bf16`,
//! pass [`MixedPrecision`](crate::optim::MixedPrecision) optimizers, and each step scales its loss,
//! keeps `f32` master weights and skips a step whose scaled gradients overflow.
//!
//! **Which weights move.** The generator step keeps only the gradients of the variables the
//! generated images depend on (the generators'), so the discriminators do not change even if
//! `opt_g` (wrongly) holds them; the discriminator step sees detached images, so its gradients
//! reach no generator. Build one optimizer per pair anyway (`NamedVars::with_prefix`).

use std::collections::HashSet;

use candle_core::{DType, Tensor, TensorId};
use candle_nn::Optimizer;
use serde::{Deserialize, Serialize};

use super::objective::StepConfig;
use super::pool::{ImagePool, DEFAULT_POOL_SIZE};
use super::traits::{Discriminator, Translator};
use crate::error::check_finite;
use crate::io::Checkpoint;
use crate::losses::cycle::l1_loss;
use crate::losses::Reduction;
use crate::optim::{retain_var_grads, scaled_backward, LossScaling};
use crate::rng::Rng;
use crate::{Error, Result};

/// The four networks of a CycleGAN: `g_ab: A -> B` (the paper's `G`), `g_ba: B -> A` (`F`),
/// and the discriminators `d_a` (real A vs. `F(b)`) and `d_b` (real B vs. `G(a)`).
///
/// Both generators have one type and both discriminators another; use `Box<dyn Translator>`
/// to mix architectures. References work too (`CycleGanModels<&G, &D>`).
#[derive(Debug, Clone)]
pub struct CycleGanModels<G, D> {
    /// `G: A -> B`.
    pub g_ab: G,
    /// `F: B -> A`.
    pub g_ba: G,
    /// The discriminator of domain A.
    pub d_a: D,
    /// The discriminator of domain B.
    pub d_b: D,
}

/// One unpaired batch: images of domain A `(B_a, C_a, H, W)` and of domain B `(B_b, C_b, H, W)`,
/// both in `[-1, 1]`. The two need not be related; batch sizes may differ.
#[derive(Debug, Clone, Copy)]
pub struct UnpairedBatch<'a> {
    /// Real images of domain A.
    pub a: &'a Tensor,
    /// Real images of domain B.
    pub b: &'a Tensor,
}

/// The translations of a batch made by [`generator_step`] (before its update), detached: what
/// [`discriminator_step`] trains the discriminators against.
#[derive(Debug, Clone)]
pub struct Translations {
    /// `G(a)`, images of domain B.
    pub fake_b: Tensor,
    /// `F(b)`, images of domain A.
    pub fake_a: Tensor,
}

/// The two image pools of generated images (one per domain) and the generator of their random
/// choices (Shrivastava et al. 2017; see [`ImagePool`]).
///
/// For exact resume, store them with [`ImagePools::save_to`] and restore them with
/// [`ImagePools::restore_from`].
#[derive(Debug, Clone)]
pub struct ImagePools {
    /// History of `F(b)`, shown to `d_a`.
    pub fake_a: ImagePool,
    /// History of `G(a)`, shown to `d_b`.
    pub fake_b: ImagePool,
    /// The random choices of both pools.
    pub rng: Rng,
}

impl ImagePools {
    /// Two empty pools of `capacity` images ([`DEFAULT_POOL_SIZE`] = 50; 0 disables them) drawing
    /// from `Rng::new(seed)`.
    pub fn new(capacity: usize, seed: u64) -> Self {
        Self { fake_a: ImagePool::new(capacity), fake_b: ImagePool::new(capacity), rng: Rng::new(seed) }
    }

    /// Two pools of CycleGAN's 50 images.
    pub fn with_default_size(seed: u64) -> Self {
        Self::new(DEFAULT_POOL_SIZE, seed)
    }

    /// Stores both pools and their RNG in `ck` as `<name>_a`, `<name>_b` (states) and `<name>`
    /// (RNG).
    pub fn save_to(&self, ck: &mut Checkpoint, name: &str) -> Result<()> {
        ck.add_state(&format!("{name}_a"), &self.fake_a)?;
        ck.add_state(&format!("{name}_b"), &self.fake_b)?;
        ck.set_rng(name, &self.rng);
        Ok(())
    }

    /// Restores what [`ImagePools::save_to`] stored under `name`.
    pub fn restore_from(&mut self, ck: &Checkpoint, name: &str) -> Result<()> {
        ck.restore_state(&format!("{name}_a"), &mut self.fake_a)?;
        ck.restore_state(&format!("{name}_b"), &mut self.fake_b)?;
        self.rng = ck.rng(name)?;
        Ok(())
    }
}

/// The numbers of one [`generator_step`]; the L1 terms are unweighted means.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct GeneratorStats {
    /// The minimised total `L_G` ([`StepConfig`]).
    pub loss: f64,
    /// `s · gan_G(D_B(G(a)))`: how well `G` fools `d_b`.
    pub adversarial_ab: f64,
    /// `s · gan_G(D_A(F(b)))`.
    pub adversarial_ba: f64,
    /// `mean|F(G(a)) - a|`.
    pub cycle_a: f64,
    /// `mean|G(F(b)) - b|`.
    pub cycle_b: f64,
    /// `mean|F(a) - a|` (0 when identity is off).
    pub identity_a: f64,
    /// `mean|G(b) - b|` (0 when identity is off).
    pub identity_b: f64,
}

/// The numbers of one [`discriminator_step`].
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct DiscriminatorStats {
    /// The minimised total, `loss_a + loss_b`.
    pub loss: f64,
    /// `d_a`'s halved loss (real A vs. pooled `F(b)`).
    pub loss_a: f64,
    /// `d_b`'s halved loss (real B vs. pooled `G(a)`).
    pub loss_b: f64,
    /// Mean logit of `d_a` on real A images.
    pub real_a_output: f64,
    /// Mean logit of `d_a` on the pooled generated A images.
    pub fake_a_output: f64,
    /// Mean logit of `d_b` on real B images.
    pub real_b_output: f64,
    /// Mean logit of `d_b` on the pooled generated B images.
    pub fake_b_output: f64,
}

/// The numbers of one [`train_step`].
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct StepStats {
    /// The generators' update.
    pub generator: GeneratorStats,
    /// The discriminators' update.
    pub discriminator: DiscriminatorStats,
}

fn scalar(t: &Tensor) -> Result<f64> {
    Ok(t.to_dtype(DType::F64)?.to_scalar::<f64>()?)
}

fn mean_value(t: &Tensor) -> Result<f64> {
    scalar(&t.mean_all()?)
}

fn check_batch(batch: &UnpairedBatch<'_>) -> Result<()> {
    for (name, t) in [("a", batch.a), ("b", batch.b)] {
        if t.rank() != 4 || t.dim(0)? == 0 || !t.dtype().is_float() {
            return Err(Error::shape(
                "cyclegan step",
                format!("domain {name} needs a non-empty floating-point (B, C, H, W) batch, got {:?}", t.dims()),
            ));
        }
    }
    Ok(())
}

/// One update of both generators: translates `a` and `b` (in training mode), scores the
/// translations with the discriminators, and minimises `L_G` of [`StepConfig`] (adversarial,
/// cycle and identity terms) with `opt_g`, which should hold the variables of `g_ab` and
/// `g_ba`. Only variables the translations depend on are updated, whatever `opt_g` holds.
///
/// Returns the terms and the detached translations `G(a)`, `F(b)` made before the update, for
/// [`discriminator_step`]. Errors: `Error::NonFinite` naming the term and `step` (nothing is
/// updated then); `Error::Config` for a bad `cfg`; `Error::Shape` for bad batches, for
/// translations whose shape is not the other domain's (a generator of the wrong channels), or
/// for identity terms between domains of different shapes.
pub fn generator_step<G, D, O>(
    models: &CycleGanModels<G, D>,
    opt_g: &mut O,
    cfg: &StepConfig,
    batch: UnpairedBatch<'_>,
    step: u64,
) -> Result<(GeneratorStats, Translations)>
where
    G: Translator,
    D: Discriminator,
    O: Optimizer + LossScaling,
{
    cfg.validate()?;
    check_batch(&batch)?;
    let (a, b) = (batch.a, batch.b);
    let fake_b = models.g_ab.translate(a, true)?;
    let fake_a = models.g_ba.translate(b, true)?;
    for (what, fake, like) in [("G_AB(a)", &fake_b, b), ("G_BA(b)", &fake_a, a)] {
        if fake.dims()[1..] != like.dims()[1..] {
            return Err(Error::shape(
                "cyclegan::generator_step",
                format!("{what} has shape {:?}, but that domain's images are {:?}", fake.dims(), like.dims()),
            ));
        }
    }
    let rec_a = models.g_ba.translate(&fake_b, true)?;
    let rec_b = models.g_ab.translate(&fake_a, true)?;
    let s = cfg.loss_scale();
    let adv_ab = (cfg.loss.generator_loss(&models.d_b.discriminate(&fake_b, true)?)? * s)?;
    let adv_ba = (cfg.loss.generator_loss(&models.d_a.discriminate(&fake_a, true)?)? * s)?;
    let cycle_a = l1_loss(&rec_a, a, Reduction::Mean)?;
    let cycle_b = l1_loss(&rec_b, b, Reduction::Mean)?;
    let mut stats = GeneratorStats {
        adversarial_ab: check_finite("generator loss (adversarial, A -> B)", Some(step), scalar(&adv_ab)?)?,
        adversarial_ba: check_finite("generator loss (adversarial, B -> A)", Some(step), scalar(&adv_ba)?)?,
        cycle_a: check_finite("cycle loss (A -> B -> A)", Some(step), scalar(&cycle_a)?)?,
        cycle_b: check_finite("cycle loss (B -> A -> B)", Some(step), scalar(&cycle_b)?)?,
        ..Default::default()
    };
    let mut total = ((adv_ab + adv_ba)? + ((cycle_a + cycle_b)? * cfg.lambda_cycle)?)?;
    let mut generator_outputs = vec![rec_a, rec_b];
    if cfg.identity_fraction > 0.0 {
        let same_a = models.g_ba.translate(a, true)?;
        let same_b = models.g_ab.translate(b, true)?;
        let idt_a = l1_loss(&same_a, a, Reduction::Mean)
            .map_err(|e| Error::shape("cyclegan identity loss (F(a) vs a)", e.to_string()))?;
        let idt_b = l1_loss(&same_b, b, Reduction::Mean)
            .map_err(|e| Error::shape("cyclegan identity loss (G(b) vs b)", e.to_string()))?;
        stats.identity_a = check_finite("identity loss (A)", Some(step), scalar(&idt_a)?)?;
        stats.identity_b = check_finite("identity loss (B)", Some(step), scalar(&idt_b)?)?;
        total = (total + ((idt_a + idt_b)? * cfg.lambda_identity())?)?;
        generator_outputs.extend([same_a, same_b]);
    }
    stats.loss = check_finite("generator loss", Some(step), scalar(&total)?)?;

    let mut grads = scaled_backward(&total, opt_g.loss_scale())?;
    let generator_vars: HashSet<TensorId> =
        generator_outputs.iter().flat_map(|t| t.sorted_nodes()).filter(|n| n.is_variable()).map(|n| n.id()).collect();
    retain_var_grads(&total, &mut grads, |v| generator_vars.contains(&v.id()));
    opt_g.step(&grads)?;
    Ok((stats, Translations { fake_b: fake_b.detach(), fake_a: fake_a.detach() }))
}

/// One update of both discriminators: `d_a` on real `a` against `F(b)` drawn through
/// `pools.fake_a`, `d_b` on real `b` against `G(a)` through `pools.fake_b`, each loss halved
/// (see [`StepConfig`]), minimised with `opt_d`. The translations are detached, so no generator
/// changes.
///
/// Errors: `Error::NonFinite` naming the term and `step` (nothing is updated then);
/// `Error::Config` for a bad `cfg`; `Error::Shape` for bad batches or pools of another shape.
pub fn discriminator_step<G, D, O>(
    models: &CycleGanModels<G, D>,
    opt_d: &mut O,
    cfg: &StepConfig,
    batch: UnpairedBatch<'_>,
    translations: &Translations,
    pools: &mut ImagePools,
    step: u64,
) -> Result<DiscriminatorStats>
where
    G: Translator,
    D: Discriminator,
    O: Optimizer + LossScaling,
{
    cfg.validate()?;
    check_batch(&batch)?;
    let fake_a = pools.fake_a.query(&translations.fake_a, &mut pools.rng)?;
    let fake_b = pools.fake_b.query(&translations.fake_b, &mut pools.rng)?;
    let half = 0.5 * cfg.loss_scale();
    let mut stats = DiscriminatorStats::default();
    let side = |d: &D, real: &Tensor, fake: &Tensor, name: &str| -> Result<(Tensor, f64, f64, f64)> {
        let real_logits = d.discriminate(real, true)?;
        let fake_logits = d.discriminate(fake, true)?;
        let (r, f) = cfg.loss.discriminator_terms(&real_logits, &fake_logits, None)?;
        let loss = ((r + f)? * half)?;
        let value = check_finite(&format!("discriminator loss ({name})"), Some(step), scalar(&loss)?)?;
        Ok((loss, value, mean_value(&real_logits)?, mean_value(&fake_logits)?))
    };
    let (loss_a, la, ra, fa) = side(&models.d_a, batch.a, &fake_a, "D_A")?;
    let (loss_b, lb, rb, fb) = side(&models.d_b, batch.b, &fake_b, "D_B")?;
    (stats.loss_a, stats.real_a_output, stats.fake_a_output) = (la, ra, fa);
    (stats.loss_b, stats.real_b_output, stats.fake_b_output) = (lb, rb, fb);
    let total = (loss_a + loss_b)?;
    stats.loss = check_finite("discriminator loss", Some(step), scalar(&total)?)?;
    let mut grads = scaled_backward(&total, opt_d.loss_scale())?;
    retain_var_grads(&total, &mut grads, |_| true);
    opt_d.step(&grads)?;
    Ok(stats)
}

/// [`generator_step`] then [`discriminator_step`] on the same batch, the reference code's order
/// (`optimize_parameters`): the discriminators train on the translations made before the
/// generators' update.
pub fn train_step<G, D, Og, Od>(
    models: &CycleGanModels<G, D>,
    opt_g: &mut Og,
    opt_d: &mut Od,
    cfg: &StepConfig,
    batch: UnpairedBatch<'_>,
    pools: &mut ImagePools,
    step: u64,
) -> Result<StepStats>
where
    G: Translator,
    D: Discriminator,
    Og: Optimizer + LossScaling,
    Od: Optimizer + LossScaling,
{
    let (generator, translations) = generator_step(models, opt_g, cfg, batch, step)?;
    let discriminator = discriminator_step(models, opt_d, cfg, batch, &translations, pools, step)?;
    Ok(StepStats { generator, discriminator })
}
