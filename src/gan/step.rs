//! One discriminator update and one generator update, for a training loop the user writes.
//!
//! [`discriminator_step`] and [`generator_step`] each draw their own noise, run the forward
//! passes, compute the loss of the [`StepConfig`] (a [`GanLoss`], an optional [`Penalty`],
//! optional one-sided label smoothing, ACGAN's classification terms), check every term for
//! NaN/infinity, back-propagate and update one network through the optimizer passed in. They
//! return the terms as plain numbers ([`DiscriminatorStats`], [`GeneratorStats`]) for logging.
//!
//! **Which weights move.** The discriminator step detaches the generated images, so its
//! gradients reach no generator variable. The generator step removes from its gradients every
//! variable that the generated images do not depend on (the discriminator's) before calling the
//! optimizer, so it updates only the generator even if the optimizer was (wrongly) built over
//! both networks. Build one optimizer per network anyway (`NamedVars::with_prefix`), so that
//! each keeps its own moments.
//!
//! **Half precision.** The optimizers implement [`LossScaling`] (the crate's and candle-nn's do,
//! with scale 1): for a network in `f16`/`bf16`, pass a [`MixedPrecision`](crate::optim::MixedPrecision)
//! optimizer and the step scales its loss, keeps `f32` master weights and skips a step whose scaled
//! gradients overflow. Weight clipping (`Penalty::WeightClipping`) clips the network's own copy; with
//! `f32` masters the next update overwrites it, so use WGAN-GP in half precision.
//!
//! **Buffers.** Both steps run both networks in training mode, as PyTorch code does: a
//! batch-norm layer of the discriminator updates its running statistics during the generator
//! step too (and the generator's during the discriminator step), and spectral norm advances its
//! power iteration on every training forward pass. Running statistics and power-iteration
//! vectors are `VarMap` variables but not parameters: no gradient, no optimizer.
//!
//! **Several critic steps per generator step** (`n_critic`, Arjovsky et al. 2017; Gulrajani et al.
//! 2017): count discriminator steps, one per real batch, and take a generator step after every
//! `n_critic`-th ([`StepConfig::is_generator_step`]):
//!
//! ```text
//! for (step, indices) in batcher.iter_from(start) {
//!     let d = discriminator_step(&gen, &disc, &mut opt_d, &cfg, RealBatch::new(&real), &mut rng, step)?;
//!     if cfg.is_generator_step(step) {
//!         let g = generator_step(&gen, &disc, &mut opt_g, &cfg, batch_size, &mut rng, step)?;
//!     }
//! }
//! ```

use std::collections::HashSet;

use candle_core::{Tensor, Var};
use candle_nn::Optimizer;
use serde::{Deserialize, Serialize};

use super::conditional::classification_loss;
use super::objective::{Penalty, StepConfig};
use super::traits::{Discriminator, Generator};
use crate::error::check_finite;
use crate::losses::adversarial::GanLoss;
use crate::losses::penalty::{clip_weights, gradient_penalty_wgan, r1_penalty};
use crate::optim::{retain_var_grads, scaled_backward, LossScaling};
use crate::rng::Rng;
use crate::{Error, Result};

/// A batch of real images `(B, C, H, W)` in `[-1, 1]` with, for conditional models, their
/// labels `(B,)`.
#[derive(Debug, Clone, Copy)]
pub struct RealBatch<'a> {
    /// The images.
    pub images: &'a Tensor,
    /// The class labels, or `None` for unconditional models.
    pub labels: Option<&'a Tensor>,
}

impl<'a> RealBatch<'a> {
    /// Images without labels.
    pub fn new(images: &'a Tensor) -> Self {
        Self { images, labels: None }
    }

    /// Images with their labels.
    pub fn with_labels(images: &'a Tensor, labels: &'a Tensor) -> Self {
        Self { images, labels: Some(labels) }
    }
}

/// The numbers of one [`discriminator_step`]. Outputs are the discriminator's raw outputs
/// (logits, or critic scores for Wasserstein), averaged over every element.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct DiscriminatorStats {
    /// The minimised total: `loss_real + loss_fake + penalty + w · classification`.
    pub loss: f64,
    /// The real term of the adversarial loss ([`GanLoss::discriminator_terms`]).
    pub loss_real: f64,
    /// The fake term of the adversarial loss.
    pub loss_fake: f64,
    /// The gradient penalty (0 without one, and for weight clipping).
    pub penalty: f64,
    /// ACGAN's cross-entropy on real plus generated images (0 without a classifier).
    pub classification: f64,
    /// Mean `D(x)` over the real batch.
    pub real_output: f64,
    /// Mean `D(G(z))` over the generated batch.
    pub fake_output: f64,
    /// Fraction of real outputs on the "real" side of the decision threshold: 0 for minimax,
    /// non-saturating and hinge (sigmoid 1/2), `(a + b)/2` for least squares, and for
    /// Wasserstein the midpoint of the two batches' mean scores.
    pub real_accuracy: f64,
    /// Fraction of generated outputs on the "fake" side of the threshold.
    pub fake_accuracy: f64,
}

impl DiscriminatorStats {
    /// The discriminator's accuracy on the real and generated batches together (equal weights):
    /// 0.5 is chance, 1 a perfect separation.
    pub fn accuracy(&self) -> f64 {
        0.5 * (self.real_accuracy + self.fake_accuracy)
    }
}

/// The numbers of one [`generator_step`].
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct GeneratorStats {
    /// The minimised total: `adversarial + w · classification`.
    pub loss: f64,
    /// The adversarial loss ([`GanLoss::generator_loss`]).
    pub adversarial: f64,
    /// ACGAN's cross-entropy on the generated images (0 without a classifier).
    pub classification: f64,
    /// Mean `D(G(z))` over the batch, as the discriminator saw it in this step.
    pub fake_output: f64,
}

fn to_candle(e: Error) -> candle_core::Error {
    match e {
        Error::Candle(e) => e,
        other => candle_core::Error::Msg(other.to_string()),
    }
}

fn scalar(t: &Tensor) -> Result<f64> {
    Ok(t.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?)
}

fn host_values(t: &Tensor) -> Result<Vec<f64>> {
    Ok(t.flatten_all()?.to_dtype(candle_core::DType::F64)?.to_vec1::<f64>()?)
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

/// Labels for generated images: `given` for a conditional generator when present, else uniform
/// labels drawn from `rng`; `None` for an unconditional generator.
fn labels_for_fakes<G: Generator + ?Sized>(
    gen: &G,
    given: Option<&Tensor>,
    n: usize,
    device: &candle_core::Device,
    rng: &mut Rng,
) -> Result<Option<Tensor>> {
    match (gen.num_classes(), given) {
        (None, _) => Ok(None),
        (Some(_), Some(labels)) => Ok(Some(labels.clone())),
        (Some(k), None) => Ok(Some(rng.randint(n, 0, k as u32, device)?)),
    }
}

/// ACGAN's cross-entropy for one batch: `None` without class logits; an error when the
/// discriminator classifies but the labels are missing.
fn classification_term(
    context: &str,
    classes: Option<&Tensor>,
    labels: Option<&Tensor>,
    which: &str,
) -> Result<Option<Tensor>> {
    match (classes, labels) {
        (None, _) => Ok(None),
        (Some(c), Some(l)) => Ok(Some(classification_loss(c, l)?)),
        (Some(_), None) => Err(Error::shape(
            context,
            format!("the discriminator has an auxiliary classifier but the {which} images have no labels"),
        )),
    }
}

/// One discriminator (critic) update: draws `B` codes (and, for a conditional generator, uses
/// the real batch's labels, or uniform labels when it has none), generates images in training
/// mode and **detaches** them, scores the real and generated batches, and minimises
///
/// ```text
/// L_D = real term + fake term (of cfg.loss, with cfg.real_label smoothing)
///     + penalty (WGAN-GP on interpolates, or R1 on the real batch)
///     + w · [CE(C(x), y) + CE(C(G(z, y')), y')]        (ACGAN, when D returns class logits)
/// ```
///
/// with `opt_d`, which should hold the discriminator's variables. With
/// [`Penalty::WeightClipping`] every variable the loss reached (the discriminator's weights) is
/// clamped after the update.
///
/// - `real`: images `(B, C, H, W)` in `[-1, 1]` of the models' dtype, with labels `(B,)` for
///   conditional models;
/// - `rng`: noise (and penalty interpolation weights) are drawn from it;
/// - `step`: the training step, named in errors.
///
/// Errors: [`Error::NonFinite`] naming the term and `step` when a term is NaN or infinite
/// (nothing is updated then); [`Error::Config`] for an invalid `cfg`; the models' and losses'
/// shape errors.
pub fn discriminator_step<G, D, O>(
    gen: &G,
    disc: &D,
    opt_d: &mut O,
    cfg: &StepConfig,
    real: RealBatch<'_>,
    rng: &mut Rng,
    step: u64,
) -> Result<DiscriminatorStats>
where
    G: Generator + ?Sized,
    D: Discriminator + ?Sized,
    O: Optimizer + LossScaling,
{
    cfg.validate()?;
    let images = real.images;
    if images.rank() == 0 || images.dim(0)? == 0 {
        return Err(Error::shape("discriminator_step", format!("needs a non-empty batch, got {:?}", images.dims())));
    }
    let b = images.dim(0)?;
    let z = gen.sample_latent(b, rng)?;
    let fake_labels = labels_for_fakes(gen, real.labels, b, z.device(), rng)?;
    let fake = gen.generate(&z, fake_labels.as_ref(), true)?.detach();

    let (real_logits, real_classes) = disc.discriminate_with_classes(images, real.labels, true)?;
    let (fake_logits, fake_classes) = disc.discriminate_with_classes(&fake, fake_labels.as_ref(), true)?;
    let (loss_real, loss_fake) = cfg.loss.discriminator_terms(&real_logits, &fake_logits, cfg.real_label)?;
    let mut total = (&loss_real + &loss_fake)?;
    let mut stats = DiscriminatorStats {
        loss_real: check_finite("discriminator loss (real term)", Some(step), scalar(&loss_real)?)?,
        loss_fake: check_finite("discriminator loss (fake term)", Some(step), scalar(&loss_fake)?)?,
        ..Default::default()
    };

    let critic = |x: &Tensor| disc.discriminate(x, real.labels, true).map_err(to_candle);
    let penalty = match cfg.penalty {
        Some(Penalty::WganGp { lambda }) => {
            Some(("gradient penalty (WGAN-GP)", gradient_penalty_wgan(&critic, images, &fake, rng, lambda)?))
        }
        Some(Penalty::R1 { gamma }) => Some(("gradient penalty (R1)", r1_penalty(&critic, images, gamma)?)),
        Some(Penalty::WeightClipping { .. }) | None => None,
    };
    if let Some((term, p)) = penalty {
        stats.penalty = check_finite(term, Some(step), scalar(&p)?)?;
        total = (total + p.to_dtype(loss_real.dtype())?)?;
    }

    let cls_real = classification_term("discriminator_step", real_classes.as_ref(), real.labels, "real")?;
    let cls_fake = classification_term("discriminator_step", fake_classes.as_ref(), fake_labels.as_ref(), "generated")?;
    let cls = match (cls_real, cls_fake) {
        (Some(r), Some(f)) => Some((r + f)?),
        (r, f) => r.or(f),
    };
    if let Some(cls) = cls {
        stats.classification = check_finite("classification loss (discriminator)", Some(step), scalar(&cls)?)?;
        total = (total + (cls * cfg.classification_weight)?)?;
    }
    stats.loss = check_finite("discriminator loss", Some(step), scalar(&total)?)?;

    let (r, f) = (host_values(&real_logits)?, host_values(&fake_logits)?);
    stats.real_output = mean(&r);
    stats.fake_output = mean(&f);
    let threshold = match cfg.loss {
        GanLoss::Minimax | GanLoss::NonSaturating | GanLoss::Hinge => 0.0,
        GanLoss::LeastSquares { real_target, fake_target, .. } => 0.5 * (real_target + fake_target),
        GanLoss::Wasserstein => 0.5 * (stats.real_output + stats.fake_output),
    };
    stats.real_accuracy = r.iter().filter(|&&v| v > threshold).count() as f64 / r.len() as f64;
    stats.fake_accuracy = f.iter().filter(|&&v| v < threshold).count() as f64 / f.len() as f64;

    let mut grads = scaled_backward(&total, opt_d.loss_scale())?;
    retain_var_grads(&total, &mut grads, |_| true);
    opt_d.step(&grads)?;
    if let Some(Penalty::WeightClipping { c }) = cfg.penalty {
        // The generated images are detached, so the variables the loss reached are the
        // discriminator's own (and the real images, if a caller passed a variable: skip them).
        let vars: Vec<Var> = total
            .sorted_nodes()
            .into_iter()
            .filter(|n| n.is_variable() && n.id() != images.id())
            .map(Var::from_tensor)
            .collect::<candle_core::Result<_>>()?;
        clip_weights(&vars, c)?;
    }
    Ok(stats)
}

/// One generator update: draws `batch_size` codes (and uniform labels for a conditional
/// generator), generates images in training mode, scores them with the discriminator (in
/// training mode), and minimises
///
/// ```text
/// L_G = cfg.loss.generator_loss(D(G(z, y))) + w · CE(C(G(z, y)), y)   (the second term for ACGAN)
/// ```
///
/// with `opt_g`. Before the update, the gradients of every variable that the generated images
/// do not depend on (the discriminator's) are removed, so only the generator can change,
/// whatever `opt_g` holds.
///
/// Errors: [`Error::NonFinite`] naming the term and `step` (nothing is updated then);
/// [`Error::Config`] for an invalid `cfg` or `batch_size = 0`; the models' shape errors.
pub fn generator_step<G, D, O>(
    gen: &G,
    disc: &D,
    opt_g: &mut O,
    cfg: &StepConfig,
    batch_size: usize,
    rng: &mut Rng,
    step: u64,
) -> Result<GeneratorStats>
where
    G: Generator + ?Sized,
    D: Discriminator + ?Sized,
    O: Optimizer + LossScaling,
{
    cfg.validate()?;
    if batch_size == 0 {
        return Err(Error::config("batch_size", "must be > 0"));
    }
    let z = gen.sample_latent(batch_size, rng)?;
    let labels = labels_for_fakes(gen, None, batch_size, z.device(), rng)?;
    let fake = gen.generate(&z, labels.as_ref(), true)?;
    let (logits, classes) = disc.discriminate_with_classes(&fake, labels.as_ref(), true)?;
    let adversarial = cfg.loss.generator_loss(&logits)?;
    let mut stats = GeneratorStats {
        adversarial: check_finite("generator loss (adversarial)", Some(step), scalar(&adversarial)?)?,
        fake_output: mean(&host_values(&logits)?),
        ..Default::default()
    };
    let mut total = adversarial;
    if let Some(cls) = classification_term("generator_step", classes.as_ref(), labels.as_ref(), "generated")? {
        stats.classification = check_finite("classification loss (generator)", Some(step), scalar(&cls)?)?;
        total = (total + (cls * cfg.classification_weight)?)?;
    }
    stats.loss = check_finite("generator loss", Some(step), scalar(&total)?)?;

    let mut grads = scaled_backward(&total, opt_g.loss_scale())?;
    let generator_vars: HashSet<_> =
        fake.sorted_nodes().into_iter().filter(|n| n.is_variable()).map(|n| n.id()).collect();
    retain_var_grads(&total, &mut grads, |v| generator_vars.contains(&v.id()));
    opt_g.step(&grads)?;
    Ok(stats)
}
