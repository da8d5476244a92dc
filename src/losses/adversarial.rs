//! Adversarial (GAN) losses for the discriminator and the generator, computed from logits.
//!
//! [`GanLoss`] covers the five objectives in common use: minimax and non-saturating
//! (Goodfellow et al. 2014), least squares (Mao et al. 2017), Wasserstein (Arjovsky et al. 2017)
//! and hinge (Lim & Ye 2017; Miyato et al. 2018). Every loss is a mean over all elements of the
//! discriminator's output, so a scalar per image `(B, 1)` and a PatchGAN map `(B, 1, H, W)` are
//! treated alike.
//!
//! The binary cross-entropy is computed from logits in the numerically stable form
//! `relu(x) - x t + log(1 + exp(-|x|))` ([`bce_with_logits`], [`softplus`]): finite for any
//! finite logit, unlike `candle_nn::loss::binary_cross_entropy_with_logit`, which takes the
//! sigmoid first and gives NaN at logits of +-100.

use std::fmt;
use std::str::FromStr;

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use super::{same_shape, Reduction};
use crate::{Error, Result};

/// `softplus(x) = log(1 + exp(x))`, elementwise, in the stable form `relu(x) + log(1 + exp(-|x|))`.
///
/// Since `exp(-|x|) <= 1` nothing overflows: the result is finite for every finite `x`
/// (`softplus(1e4) = 1e4`, `softplus(-1e4) = 0`) and its gradient is `sigmoid(x)`.
/// `-softplus(-x)` is `log(sigmoid(x))` and `-softplus(x)` is `log(1 - sigmoid(x))`.
///
/// Input: any shape, floating-point dtype; the output has the same shape and dtype.
pub fn softplus(x: &Tensor) -> Result<Tensor> {
    check_float("softplus", "x", x)?;
    let tail = (x.abs()?.neg()?.exp()? + 1.0)?.log()?;
    Ok((x.relu()? + tail)?)
}

/// Binary cross-entropy from logits: `l = -t log(sigmoid(x)) - (1 - t) log(1 - sigmoid(x))`,
/// computed as `relu(x) - x t + log(1 + exp(-|x|))`, then reduced with `reduction`.
///
/// - `logits`: raw scores `x` of any shape and floating-point dtype (no sigmoid applied);
/// - `targets`: probabilities `t` in `[0, 1]`, same shape and dtype as `logits`.
///
/// Finite for every finite logit: `x = 100, t = 1` gives about `0`, `x = 100, t = 0` gives `100`.
/// The gradient with respect to `x` is `sigmoid(x) - t` (per element, before the reduction).
/// Differing shapes or dtypes are `Error::Shape`.
pub fn bce_with_logits(logits: &Tensor, targets: &Tensor, reduction: Reduction) -> Result<Tensor> {
    const CTX: &str = "bce_with_logits";
    same_shape(CTX, logits, targets)?;
    check_float(CTX, "logits", logits)?;
    if logits.dtype() != targets.dtype() {
        return Err(Error::shape(
            CTX,
            format!("logits are {:?} but targets are {:?}", logits.dtype(), targets.dtype()),
        ));
    }
    let per_element = (softplus(logits)? - (logits * targets)?)?;
    reduction.apply(&per_element)
}

/// Elementwise BCE with one constant target: `softplus(x) - t x`.
fn bce_constant_target(logits: &Tensor, target: f64) -> Result<Tensor> {
    Ok((softplus(logits)? - (logits * target)?)?)
}

/// `0.5 * mean((x - target)^2)` over all elements, LSGAN's form.
fn half_mean_square_error(x: &Tensor, target: f64) -> Result<Tensor> {
    Ok(((x - target)?.sqr()?.mean_all()? * 0.5)?)
}

fn check_float(context: &str, name: &str, t: &Tensor) -> Result<()> {
    if t.dtype().is_float() {
        Ok(())
    } else {
        Err(Error::shape(context, format!("`{name}` must be floating point, got {:?}", t.dtype())))
    }
}

fn check_logits(context: &str, name: &str, t: &Tensor) -> Result<()> {
    check_float(context, name, t)?;
    if t.elem_count() == 0 {
        return Err(Error::shape(context, format!("`{name}` is empty: {:?}", t.dims())));
    }
    Ok(())
}

/// Real and fake logits may differ in batch size but must agree on everything else.
fn check_real_fake(context: &str, real: &Tensor, fake: &Tensor) -> Result<()> {
    check_logits(context, "real_logits", real)?;
    check_logits(context, "fake_logits", fake)?;
    let (r, f) = (real.dims(), fake.dims());
    if r.len() != f.len() || r.iter().skip(1).ne(f.iter().skip(1)) {
        return Err(Error::shape(
            context,
            format!("real and fake logits must have the same shape apart from the batch size: {r:?} vs {f:?}"),
        ));
    }
    if real.dtype() != fake.dtype() {
        return Err(Error::shape(
            context,
            format!("real logits are {:?} but fake logits are {:?}", real.dtype(), fake.dtype()),
        ));
    }
    Ok(())
}

fn check_finite_target(field: &str, value: f64) -> Result<()> {
    if value.is_finite() {
        Ok(())
    } else {
        Err(Error::config(field, format!("must be finite, got {value}")))
    }
}

/// A GAN objective: the discriminator's and the generator's loss, both computed from the
/// discriminator's raw outputs (logits, or critic scores for [`GanLoss::Wasserstein`]).
///
/// Notation: `x_r = D(x)` are the logits on real data, `x_f = D(G(z))` those on generated data,
/// `sigma` the logistic sigmoid and `E` the mean over every element of a tensor. Both losses
/// are minimised. The discriminator loss is the sum of a real term and a fake term, each a mean
/// over its own tensor ([`GanLoss::discriminator_terms`]); there is no factor 1/2 except where a
/// paper writes one (LSGAN). CycleGAN's reference code halves its discriminator loss; multiply
/// by `0.5` to reproduce it.
///
/// | variant | discriminator loss | generator loss |
/// |---|---|---|
/// | `Minimax` | `E[softplus(-x_r)] + E[softplus(x_f)]` | `-E[softplus(x_f)]` |
/// | `NonSaturating` | as `Minimax` | `E[softplus(-x_f)]` |
/// | `LeastSquares {b, a, c}` | `0.5 E[(x_r - b)^2] + 0.5 E[(x_f - a)^2]` | `0.5 E[(x_f - c)^2]` |
/// | `Wasserstein` | `E[x_f] - E[x_r]` | `-E[x_f]` |
/// | `Hinge` | `E[relu(1 - x_r)] + E[relu(1 + x_f)]` | `-E[x_f]` |
///
/// `softplus(-x) = -log sigma(x)` and `softplus(x) = -log(1 - sigma(x))`, computed stably
/// ([`softplus`]): logits of `+-1e4` give finite losses and gradients.
///
/// Shapes: `real_logits` `(B_r, ...)` and `fake_logits` `(B_f, ...)` may have different batch
/// sizes but must have the same rank, the same other dimensions and the same floating-point
/// dtype; anything else is `Error::Shape`. The result is a scalar in the logits' dtype.
///
/// On the command line the variants are called `minimax`, `non-saturating`, `lsgan`, `wgan`
/// and `hinge` ([`GanLoss::name`], [`FromStr`]).
///
/// ```
/// use candle_core::{Device, Tensor};
/// use candle_generative::losses::adversarial::GanLoss;
///
/// let loss: GanLoss = "non-saturating".parse()?;
/// // D(x) for 2 real images and D(G(z)) for 3 generated ones, shape (B, 1).
/// let real = Tensor::new(&[[2.0f32], [1.5]], &Device::Cpu)?;
/// let fake = Tensor::new(&[[-1.0f32], [0.5], [-2.0]], &Device::Cpu)?;
/// // In a training step, pass `fake.detach()` here so that D's loss does not reach G.
/// let d_loss = loss.discriminator_loss(&real, &fake)?;
/// let g_loss = loss.generator_loss(&fake)?;
/// // Salimans et al. 2016: one-sided label smoothing, real target 0.9.
/// let d_smooth = loss.discriminator_loss_smoothed(&real, &fake, 0.9)?;
/// // BCE(x, 0.9) - BCE(x, 1) = 0.1 x, averaged over the real logits.
/// let diff = d_smooth.to_scalar::<f32>()? - d_loss.to_scalar::<f32>()?;
/// assert!((diff - 0.1 * 1.75).abs() < 1e-6);
/// assert!(g_loss.to_scalar::<f32>()? > 0.0);
/// assert_eq!(loss.name(), "non-saturating");
/// # Ok::<(), candle_generative::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum GanLoss {
    /// The original minimax game of Goodfellow et al. 2014, `min_G max_D E[log D(x)] + E[log(1 - D(G(z)))]`.
    /// The generator minimises `E[log(1 - sigma(x_f))]`, which saturates (vanishing gradient)
    /// when the discriminator confidently rejects the samples, as it does early in training.
    /// Mostly of historical and didactic interest.
    Minimax,
    /// Goodfellow et al. 2014's practical variant: the discriminator loss of `Minimax`, but the
    /// generator maximises `log D(G(z))`, i.e. minimises `E[softplus(-x_f)]`, which has strong
    /// gradients exactly when the samples are poor. The usual DCGAN default.
    NonSaturating,
    /// Least-squares GAN (Mao et al. 2017): the discriminator regresses real logits onto `b` and
    /// fake ones onto `a`; the generator pushes fake logits towards `c`. The paper's losses,
    /// including their factor 1/2. Defaults ([`GanLoss::least_squares`]): `a = 0, b = 1, c = 1`;
    /// the paper's other choice is `a = -1, b = 1, c = 0`. Used by CycleGAN and pix2pix-HD.
    LeastSquares {
        /// `b`, the discriminator's target on real data (default 1).
        real_target: f64,
        /// `a`, the discriminator's target on generated data (default 0).
        fake_target: f64,
        /// `c`, the value the generator wants the discriminator to output on its samples (default 1).
        generator_target: f64,
    },
    /// Wasserstein GAN (Arjovsky et al. 2017): the critic maximises `E[x_r] - E[x_f]` and
    /// the generator maximises `E[x_f]`. The outputs are unbounded critic scores, not logits
    /// (no sigmoid). Needs a Lipschitz constraint on the critic: weight clipping or a gradient
    /// penalty (Gulrajani et al. 2017), see [`crate::losses::penalty`].
    Wasserstein,
    /// Hinge loss (Lim & Ye 2017; Miyato et al. 2018):
    /// `D: E[relu(1 - x_r)] + E[relu(1 + x_f)]`, `G: -E[x_f]`. The usual choice with spectral
    /// normalisation (SNGAN, SAGAN, BigGAN).
    Hinge,
}

impl Default for GanLoss {
    /// [`GanLoss::NonSaturating`], the objective most GAN code uses.
    fn default() -> Self {
        GanLoss::NonSaturating
    }
}

impl GanLoss {
    /// The command-line names of the variants, in declaration order.
    pub const NAMES: [&'static str; 5] = ["minimax", "non-saturating", "lsgan", "wgan", "hinge"];

    /// [`GanLoss::LeastSquares`] with Mao et al. 2017's first setting: `a = 0` (fake),
    /// `b = 1` (real), `c = 1` (generator).
    pub fn least_squares() -> Self {
        GanLoss::LeastSquares { real_target: 1.0, fake_target: 0.0, generator_target: 1.0 }
    }

    /// The command-line name: `minimax`, `non-saturating`, `lsgan`, `wgan` or `hinge`.
    ///
    /// `lsgan` does not record the targets; [`FromStr`] gives back [`GanLoss::least_squares`].
    pub fn name(&self) -> &'static str {
        match self {
            GanLoss::Minimax => "minimax",
            GanLoss::NonSaturating => "non-saturating",
            GanLoss::LeastSquares { .. } => "lsgan",
            GanLoss::Wasserstein => "wgan",
            GanLoss::Hinge => "hinge",
        }
    }

    /// The discriminator's (critic's) loss: the real term plus the fake term of the table in
    /// [`GanLoss`], a scalar to minimise. `fake_logits` should be computed from detached
    /// samples. Shapes: see [`GanLoss`].
    pub fn discriminator_loss(&self, real_logits: &Tensor, fake_logits: &Tensor) -> Result<Tensor> {
        let (real, fake) = self.terms("GanLoss::discriminator_loss", real_logits, fake_logits, None)?;
        Ok((real + fake)?)
    }

    /// The discriminator loss with one-sided label smoothing (Salimans et al. 2016): the target
    /// on real data becomes `real_label` (typically 0.9) while the target on generated data stays
    /// as it was.
    ///
    /// - `Minimax`, `NonSaturating`: the real term becomes `E[BCE(x_r, real_label)]`
    ///   `= E[softplus(-x_r)] + (1 - real_label) E[x_r]`; `real_label` must be in `[0, 1]`.
    /// - `LeastSquares`: `real_label` replaces `b` (`real_target`); any finite value.
    /// - `Wasserstein`, `Hinge`: have no labels to smooth, so this is `Error::Config`.
    ///
    /// `real_label = 1` (`b` for LSGAN) gives [`GanLoss::discriminator_loss`] exactly.
    pub fn discriminator_loss_smoothed(
        &self,
        real_logits: &Tensor,
        fake_logits: &Tensor,
        real_label: f64,
    ) -> Result<Tensor> {
        let ctx = "GanLoss::discriminator_loss_smoothed";
        let (real, fake) = self.terms(ctx, real_logits, fake_logits, Some(real_label))?;
        Ok((real + fake)?)
    }

    /// The two terms of the discriminator loss, `(real term, fake term)`, each a scalar mean over
    /// its own logits; their sum is the loss. Useful for logging how the discriminator treats
    /// each side. `real_label`: `None`, or `Some(label)` for one-sided label smoothing as in
    /// [`GanLoss::discriminator_loss_smoothed`].
    pub fn discriminator_terms(
        &self,
        real_logits: &Tensor,
        fake_logits: &Tensor,
        real_label: Option<f64>,
    ) -> Result<(Tensor, Tensor)> {
        self.terms("GanLoss::discriminator_terms", real_logits, fake_logits, real_label)
    }

    fn terms(
        &self,
        ctx: &str,
        real_logits: &Tensor,
        fake_logits: &Tensor,
        real_label: Option<f64>,
    ) -> Result<(Tensor, Tensor)> {
        let (real_logits, fake_logits) =
            (&crate::losses::full_precision(real_logits)?, &crate::losses::full_precision(fake_logits)?);
        check_real_fake(ctx, real_logits, fake_logits)?;
        match *self {
            GanLoss::Minimax | GanLoss::NonSaturating => {
                let label = match real_label {
                    None => 1.0,
                    Some(l) if (0.0..=1.0).contains(&l) => l,
                    Some(l) => {
                        return Err(Error::config("real_label", format!("must be a probability in [0, 1], got {l}")))
                    }
                };
                let real = bce_constant_target(real_logits, label)?.mean_all()?;
                let fake = softplus(fake_logits)?.mean_all()?;
                Ok((real, fake))
            }
            GanLoss::LeastSquares { real_target, fake_target, .. } => {
                let b = real_label.unwrap_or(real_target);
                check_finite_target(if real_label.is_some() { "real_label" } else { "real_target" }, b)?;
                check_finite_target("fake_target", fake_target)?;
                Ok((half_mean_square_error(real_logits, b)?, half_mean_square_error(fake_logits, fake_target)?))
            }
            GanLoss::Wasserstein | GanLoss::Hinge if real_label.is_some() => Err(Error::config(
                "real_label",
                format!("label smoothing applies to minimax, non-saturating and lsgan, not to {}", self.name()),
            )),
            GanLoss::Wasserstein => Ok((real_logits.mean_all()?.neg()?, fake_logits.mean_all()?)),
            GanLoss::Hinge => {
                let real = real_logits.affine(-1.0, 1.0)?.relu()?.mean_all()?;
                let fake = (fake_logits + 1.0)?.relu()?.mean_all()?;
                Ok((real, fake))
            }
        }
    }

    /// The generator's loss from the discriminator's logits on generated samples
    /// `fake_logits` `(B, ...)` (not detached), a scalar to minimise; see the table in
    /// [`GanLoss`]. Empty or non-floating-point logits are `Error::Shape`.
    pub fn generator_loss(&self, fake_logits: &Tensor) -> Result<Tensor> {
        let fake_logits = &crate::losses::full_precision(fake_logits)?;
        check_logits("GanLoss::generator_loss", "fake_logits", fake_logits)?;
        Ok(match *self {
            GanLoss::Minimax => softplus(fake_logits)?.mean_all()?.neg()?,
            GanLoss::NonSaturating => softplus(&fake_logits.neg()?)?.mean_all()?,
            GanLoss::LeastSquares { generator_target, .. } => {
                check_finite_target("generator_target", generator_target)?;
                half_mean_square_error(fake_logits, generator_target)?
            }
            GanLoss::Wasserstein | GanLoss::Hinge => fake_logits.mean_all()?.neg()?,
        })
    }
}

impl fmt::Display for GanLoss {
    /// Writes [`GanLoss::name`].
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for GanLoss {
    type Err = Error;

    /// Parses a command-line name (case-insensitive): `minimax`, `non-saturating`
    /// (also `nonsaturating`, `ns`), `lsgan` (also `least-squares`, gives
    /// [`GanLoss::least_squares`]), `wgan` (also `wasserstein`) or `hinge`. Anything else is
    /// `Error::Config` listing the choices.
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s.trim().to_ascii_lowercase().as_str() {
            "minimax" => GanLoss::Minimax,
            "non-saturating" | "nonsaturating" | "ns" => GanLoss::NonSaturating,
            "lsgan" | "least-squares" => GanLoss::least_squares(),
            "wgan" | "wasserstein" => GanLoss::Wasserstein,
            "hinge" => GanLoss::Hinge,
            _ => {
                return Err(Error::config(
                    "loss",
                    format!("unknown GAN loss `{s}`; choose one of: {}", GanLoss::NAMES.join(", ")),
                ))
            }
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::rng::Rng;
    use candle_core::{DType, Device, Var};

    /// Asserts `|got - want| <= rel * |want|`, with `want`'s magnitude floored at `floor`.
    pub(crate) fn assert_close(got: f64, want: f64, rel: f64, floor: f64, what: &str) {
        let tol = rel * want.abs().max(floor);
        assert!((got - want).abs() <= tol, "{what}: got {got}, want {want} (tolerance {tol})");
    }

    /// `n` values `scale * N(0, 1)` from a seeded generator.
    pub(crate) fn normals(rng: &mut Rng, n: usize, scale: f64) -> Vec<f64> {
        (0..n).map(|_| scale * rng.normal_f64()).collect()
    }

    /// `values` as a tensor of `dtype`, and the values it really holds (rounded to `dtype`) in f64.
    pub(crate) fn tensor(values: &[f64], dims: &[usize], dtype: DType) -> Result<(Tensor, Vec<f64>)> {
        let t = Tensor::from_vec(values.to_vec(), dims, &Device::Cpu)?.to_dtype(dtype)?;
        let held = t.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
        Ok((t, held))
    }

    pub(crate) fn scalar(t: &Tensor) -> Result<f64> {
        Ok(t.to_dtype(DType::F64)?.to_scalar::<f64>()?)
    }

    /// Compares candle's backward gradient of the scalar `f(x)` with central finite differences
    /// (step 1e-6, in f64), to 1e-5 relative to the largest gradient component.
    pub(crate) fn check_gradient(x: &Tensor, f: impl Fn(&Tensor) -> Result<Tensor>) -> Result<()> {
        let var = Var::from_tensor(&x.to_dtype(DType::F64)?)?;
        let grads = f(var.as_tensor())?.backward()?;
        let analytic = grads.get(var.as_tensor()).expect("no gradient reached the input").flatten_all()?;
        let analytic = analytic.to_vec1::<f64>()?;
        let base = var.as_tensor().flatten_all()?.to_vec1::<f64>()?;
        let scale = analytic.iter().fold(0f64, |m, g| m.max(g.abs()));
        assert!(scale > 0.0, "gradient is identically zero");
        let h = 1e-6;
        let eval = |i: usize, delta: f64| -> Result<f64> {
            let mut v = base.clone();
            v[i] += delta;
            scalar(&f(&Tensor::from_vec(v, x.dims(), x.device())?)?)
        };
        for (i, &a) in analytic.iter().enumerate() {
            let numeric = (eval(i, h)? - eval(i, -h)?) / (2.0 * h);
            assert_close(a, numeric, 1e-5, scale, &format!("d/dx[{i}]"));
        }
        Ok(())
    }

    // Plain-f64 references, written from the papers' formulas.
    // Direct forms, accurate in f64 for the moderate logits these tests draw.
    fn softplus_ref(x: f64) -> f64 {
        x.exp().ln_1p()
    }
    fn sigmoid(x: f64) -> f64 {
        1.0 / (1.0 + (-x).exp())
    }
    fn mean(v: impl Iterator<Item = f64>) -> f64 {
        let (s, n) = v.fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
        s / n as f64
    }
    fn d_loss_ref(loss: GanLoss, r: &[f64], f: &[f64], label: Option<f64>) -> f64 {
        match loss {
            GanLoss::Minimax | GanLoss::NonSaturating => {
                // -E[t log D(x) + (1 - t) log(1 - D(x))] - E[log(1 - D(G(z)))].
                let t = label.unwrap_or(1.0);
                mean(r.iter().map(|&x| -t * sigmoid(x).ln() - (1.0 - t) * (1.0 - sigmoid(x)).ln()))
                    + mean(f.iter().map(|&x| -(1.0 - sigmoid(x)).ln()))
            }
            GanLoss::LeastSquares { real_target, fake_target, .. } => {
                let b = label.unwrap_or(real_target);
                0.5 * mean(r.iter().map(|&x| (x - b).powi(2)))
                    + 0.5 * mean(f.iter().map(|&x| (x - fake_target).powi(2)))
            }
            GanLoss::Wasserstein => mean(f.iter().copied()) - mean(r.iter().copied()),
            GanLoss::Hinge => mean(r.iter().map(|&x| (1.0 - x).max(0.0))) + mean(f.iter().map(|&x| (1.0 + x).max(0.0))),
        }
    }
    fn g_loss_ref(loss: GanLoss, f: &[f64]) -> f64 {
        match loss {
            GanLoss::Minimax => mean(f.iter().map(|&x| (1.0 - sigmoid(x)).ln())),
            GanLoss::NonSaturating => mean(f.iter().map(|&x| -sigmoid(x).ln())),
            GanLoss::LeastSquares { generator_target, .. } => {
                0.5 * mean(f.iter().map(|&x| (x - generator_target).powi(2)))
            }
            GanLoss::Wasserstein | GanLoss::Hinge => -mean(f.iter().copied()),
        }
    }

    fn all_losses() -> Vec<GanLoss> {
        vec![
            GanLoss::Minimax,
            GanLoss::NonSaturating,
            GanLoss::least_squares(),
            GanLoss::LeastSquares { real_target: 1.0, fake_target: -1.0, generator_target: 0.0 },
            GanLoss::Wasserstein,
            GanLoss::Hinge,
        ]
    }

    #[test]
    fn softplus_and_bce_match_f64_reference() -> Result<()> {
        let mut rng = Rng::new(1);
        for (dtype, rel) in [(DType::F32, 1e-5), (DType::F64, 1e-10)] {
            let dims = [4, 3, 2, 2];
            let (x, xv) = tensor(&normals(&mut rng, 48, 3.0), &dims, dtype)?;
            let probs: Vec<f64> = (0..48).map(|_| rng.uniform_f64()).collect();
            let (t, tv) = tensor(&probs, &dims, dtype)?;
            let sp = softplus(&x)?.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
            for (i, (&got, &xi)) in sp.iter().zip(&xv).enumerate() {
                assert_close(got, softplus_ref(xi), rel, 1.0, &format!("softplus[{i}]"));
            }
            let bce_ref: Vec<f64> =
                xv.iter().zip(&tv).map(|(&x, &t)| -t * sigmoid(x).ln() - (1.0 - t) * (1.0 - sigmoid(x)).ln()).collect();
            let per = bce_with_logits(&x, &t, Reduction::None)?;
            assert_eq!(per.dims(), &dims);
            let per = per.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
            for (i, (&got, &want)) in per.iter().zip(&bce_ref).enumerate() {
                assert_close(got, want, rel, 1.0, &format!("bce[{i}]"));
            }
            let m = scalar(&bce_with_logits(&x, &t, Reduction::Mean)?)?;
            assert_close(m, mean(bce_ref.iter().copied()), rel, 0.0, "bce mean");
            let s = scalar(&bce_with_logits(&x, &t, Reduction::Sum)?)?;
            assert_close(s, bce_ref.iter().sum(), rel, 0.0, "bce sum");
        }
        Ok(())
    }

    #[test]
    fn gan_losses_match_f64_reference() -> Result<()> {
        let mut rng = Rng::new(2);
        for (dtype, rel) in [(DType::F32, 1e-5), (DType::F64, 1e-10)] {
            // PatchGAN-like maps with different batch sizes for real and fake.
            let (r, rv) = tensor(&normals(&mut rng, 3 * 4 * 4, 2.0), &[3, 1, 4, 4], dtype)?;
            let (f, fv) = tensor(&normals(&mut rng, 5 * 4 * 4, 2.0), &[5, 1, 4, 4], dtype)?;
            for loss in all_losses() {
                let d = loss.discriminator_loss(&r, &f)?;
                assert_eq!((d.rank(), d.dtype()), (0, dtype));
                assert_close(scalar(&d)?, d_loss_ref(loss, &rv, &fv, None), rel, 0.0, &format!("{loss:?} D"));
                let g = loss.generator_loss(&f)?;
                assert_eq!((g.rank(), g.dtype()), (0, dtype));
                assert_close(scalar(&g)?, g_loss_ref(loss, &fv), rel, 0.0, &format!("{loss:?} G"));
                let (tr, tf) = loss.discriminator_terms(&r, &f, None)?;
                assert_close(scalar(&tr)? + scalar(&tf)?, scalar(&d)?, rel, 0.0, &format!("{loss:?} terms"));
            }
        }
        Ok(())
    }

    #[test]
    fn extreme_logits_are_finite_with_the_right_limits() -> Result<()> {
        for dtype in [DType::F32, DType::F64, DType::BF16] {
            for big in [100.0, 1e4] {
                let (pos, held) = tensor(&[big, big], &[2, 1], dtype)?;
                // bf16 holds 1e4 as 9984 and has 8 significant bits: 9984 + 1 = 9984.
                let big = held[0];
                let rel = if dtype == DType::BF16 { 1e-2 } else { 1e-6 };
                let (neg, _) = tensor(&[-big, -big], &[2, 1], dtype)?;
                let ones = pos.ones_like()?;
                let zeros = pos.zeros_like()?;
                let bce = |x: &Tensor, t: &Tensor| scalar(&bce_with_logits(x, t, Reduction::Mean)?);
                assert!(bce(&pos, &ones)?.abs() < 1e-30, "{dtype:?} bce({big}, 1)");
                assert!(bce(&neg, &zeros)?.abs() < 1e-30, "{dtype:?} bce(-{big}, 0)");
                assert_close(bce(&pos, &zeros)?, big, rel, 0.0, "bce(big, 0)");
                assert_close(bce(&neg, &ones)?, big, rel, 0.0, "bce(-big, 1)");
                assert_close(scalar(&softplus(&pos)?.mean_all()?)?, big, rel, 0.0, "softplus(big)");
                assert_eq!(scalar(&softplus(&neg)?.mean_all()?)?, 0.0);
                for loss in all_losses() {
                    for (r, f) in [(&pos, &neg), (&neg, &pos), (&pos, &pos), (&neg, &neg)] {
                        let d = scalar(&loss.discriminator_loss(r, f)?)?;
                        let g = scalar(&loss.generator_loss(f)?)?;
                        assert!(d.is_finite() && g.is_finite(), "{loss:?} {dtype:?} {big}: D {d}, G {g}");
                    }
                }
                // A perfect discriminator: BCE losses ~ 0; a fooled one: ~ 2 * big.
                let perfect = scalar(&GanLoss::Minimax.discriminator_loss(&pos, &neg)?)?;
                assert!(perfect.abs() < 1e-30);
                let fooled = scalar(&GanLoss::Minimax.discriminator_loss(&neg, &pos)?)?;
                assert_close(fooled, 2.0 * big, rel, 0.0, "fooled D");
                // Saturation: the minimax G loss is ~0 when D rejects the fakes, non-saturating ~ big.
                assert!(scalar(&GanLoss::Minimax.generator_loss(&neg)?)?.abs() < 1e-30);
                assert_close(scalar(&GanLoss::NonSaturating.generator_loss(&neg)?)?, big, rel, 0.0, "NS G");
                assert_close(
                    scalar(&GanLoss::Hinge.discriminator_loss(&neg, &pos)?)?,
                    2.0 * (1.0 + big),
                    rel,
                    0.0,
                    "h",
                );
            }
        }
        Ok(())
    }

    #[test]
    fn extreme_logits_have_finite_gradients() -> Result<()> {
        let x = Var::new(&[1e4f32, -1e4, 100.0, -100.0, 0.0], &Device::Cpu)?;
        let t = Tensor::new(&[1f32, 0.0, 0.0, 1.0, 1.0], &Device::Cpu)?;
        let grads = bce_with_logits(x.as_tensor(), &t, Reduction::Sum)?.backward()?;
        let g = grads.get(x.as_tensor()).expect("gradient").to_vec1::<f32>()?;
        // d/dx = sigmoid(x) - t.
        assert_eq!(g, vec![0.0, 0.0, 1.0, -1.0, -0.5]);
        Ok(())
    }

    #[test]
    fn gradients_match_finite_differences() -> Result<()> {
        let mut rng = Rng::new(3);
        let (r, _) = tensor(&normals(&mut rng, 2 * 3, 1.5), &[2, 1, 3], DType::F64)?;
        let (f, _) = tensor(&normals(&mut rng, 3 * 3, 1.5), &[3, 1, 3], DType::F64)?;
        for loss in all_losses() {
            check_gradient(&r, |x| loss.discriminator_loss(x, &f))?;
            check_gradient(&f, |x| loss.discriminator_loss(&r, x))?;
            check_gradient(&f, |x| loss.generator_loss(x))?;
        }
        for loss in [GanLoss::Minimax, GanLoss::least_squares()] {
            check_gradient(&r, |x| loss.discriminator_loss_smoothed(x, &f, 0.9))?;
        }
        let probs: Vec<f64> = (0..6).map(|_| rng.uniform_f64()).collect();
        let (t, _) = tensor(&probs, &[2, 1, 3], DType::F64)?;
        check_gradient(&r, |x| bce_with_logits(x, &t, Reduction::Mean))?;
        check_gradient(&r, |x| Ok(softplus(x)?.sum_all()?))?;
        Ok(())
    }

    #[test]
    #[should_panic(expected = "d/dx")]
    fn gradient_check_catches_a_wrong_gradient() {
        // candle's softmax_last_dim has no backward (CANDLE_NOTES.md): the checker must notice.
        let x = Tensor::new(&[[0.3f64, -1.2, 0.7]], &Device::Cpu).unwrap();
        let w = Tensor::new(&[[1.0f64, 2.0, 3.0]], &Device::Cpu).unwrap();
        let _ = check_gradient(&x, |x| Ok(((candle_nn::ops::softmax_last_dim(x)? * &w)?.sum_all()? + x.sum_all()?)?));
    }

    #[test]
    fn label_smoothing_changes_the_d_loss_as_the_formula_says() -> Result<()> {
        let mut rng = Rng::new(4);
        let (r, rv) = tensor(&normals(&mut rng, 8, 2.0), &[8, 1], DType::F64)?;
        let (f, fv) = tensor(&normals(&mut rng, 6, 2.0), &[6, 1], DType::F64)?;
        for loss in [GanLoss::Minimax, GanLoss::NonSaturating, GanLoss::least_squares()] {
            let plain = scalar(&loss.discriminator_loss(&r, &f)?)?;
            let smooth = scalar(&loss.discriminator_loss_smoothed(&r, &f, 0.9)?)?;
            assert_close(smooth, d_loss_ref(loss, &rv, &fv, Some(0.9)), 1e-10, 0.0, "smoothed");
            let expected_change = match loss {
                // BCE(x, 0.9) - BCE(x, 1) = 0.1 x.
                GanLoss::LeastSquares { .. } => 0.5 * mean(rv.iter().map(|&x| (x - 0.9).powi(2) - (x - 1.0).powi(2))),
                _ => 0.1 * mean(rv.iter().copied()),
            };
            assert_close(smooth - plain, expected_change, 1e-9, 1e-3, &format!("{loss:?} change"));
            // Only the real term moves.
            let (_, fake_plain) = loss.discriminator_terms(&r, &f, None)?;
            let (_, fake_smooth) = loss.discriminator_terms(&r, &f, Some(0.9))?;
            assert_eq!(scalar(&fake_plain)?, scalar(&fake_smooth)?);
            // A label of 1 (b for LSGAN) is no smoothing at all.
            assert_eq!(scalar(&loss.discriminator_loss_smoothed(&r, &f, 1.0)?)?, plain);
        }
        // For LSGAN the label replaces b.
        let custom = GanLoss::LeastSquares { real_target: 0.9, fake_target: 0.0, generator_target: 1.0 };
        assert_eq!(
            scalar(&custom.discriminator_loss(&r, &f)?)?,
            scalar(&GanLoss::least_squares().discriminator_loss_smoothed(&r, &f, 0.9)?)?
        );
        for bad in [GanLoss::Wasserstein, GanLoss::Hinge] {
            assert!(matches!(bad.discriminator_loss_smoothed(&r, &f, 0.9), Err(Error::Config { .. })));
        }
        assert!(matches!(GanLoss::Minimax.discriminator_loss_smoothed(&r, &f, 1.5), Err(Error::Config { .. })));
        let nan = GanLoss::LeastSquares { real_target: f64::NAN, fake_target: 0.0, generator_target: 1.0 };
        assert!(matches!(nan.discriminator_loss(&r, &f), Err(Error::Config { .. })));
        Ok(())
    }

    #[test]
    fn shape_mismatches_are_shape_errors() -> Result<()> {
        let dev = Device::Cpu;
        let r = Tensor::zeros((4, 1, 3, 3), DType::F32, &dev)?;
        let is_shape = |res: Result<Tensor>| matches!(res, Err(Error::Shape { .. }));
        for loss in all_losses() {
            // Other batch size: allowed.
            loss.discriminator_loss(&r, &Tensor::zeros((2, 1, 3, 3), DType::F32, &dev)?)?;
            assert!(is_shape(loss.discriminator_loss(&r, &Tensor::zeros((4, 1, 3, 2), DType::F32, &dev)?)));
            assert!(is_shape(loss.discriminator_loss(&r, &Tensor::zeros((4, 9), DType::F32, &dev)?)));
            assert!(is_shape(loss.discriminator_loss(&r, &Tensor::zeros((4, 1, 3, 3), DType::F64, &dev)?)));
            assert!(is_shape(loss.discriminator_loss(&r, &Tensor::zeros((0, 1, 3, 3), DType::F32, &dev)?)));
            assert!(is_shape(loss.generator_loss(&Tensor::zeros((4, 1), DType::U32, &dev)?)));
            assert!(is_shape(loss.generator_loss(&Tensor::zeros((0, 1), DType::F32, &dev)?)));
        }
        let err = GanLoss::Hinge.discriminator_loss(&r, &Tensor::zeros((4, 2), DType::F32, &dev)?).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("GanLoss::discriminator_loss") && msg.contains("[4, 1, 3, 3]") && msg.contains("[4, 2]"));
        assert!(is_shape(bce_with_logits(&r, &r.reshape((4, 9))?, Reduction::Mean)));
        assert!(is_shape(bce_with_logits(&r, &r.to_dtype(DType::F64)?, Reduction::Mean)));
        let msg = bce_with_logits(&r, &Tensor::zeros(3, DType::F32, &dev)?, Reduction::Mean).unwrap_err().to_string();
        assert!(msg.contains("bce_with_logits") && msg.contains("[4, 1, 3, 3]") && msg.contains("[3]"));
        Ok(())
    }

    #[test]
    fn names_parse_and_serde_round_trip() {
        for loss in all_losses() {
            let parsed: GanLoss = loss.name().parse().unwrap();
            assert_eq!(parsed.name(), loss.name());
            assert_eq!(loss.to_string(), loss.name());
            let json = serde_json::to_string(&loss).unwrap();
            assert_eq!(serde_json::from_str::<GanLoss>(&json).unwrap(), loss);
        }
        for name in GanLoss::NAMES {
            let loss: GanLoss = name.parse().unwrap();
            assert_eq!(loss.name(), name);
            assert_eq!(loss.name().parse::<GanLoss>().unwrap(), loss);
        }
        assert_eq!("lsgan".parse::<GanLoss>().unwrap(), GanLoss::least_squares());
        assert_eq!(" WGAN ".parse::<GanLoss>().unwrap(), GanLoss::Wasserstein);
        assert_eq!("ns".parse::<GanLoss>().unwrap(), GanLoss::NonSaturating);
        let err = "vanilla".parse::<GanLoss>().unwrap_err();
        assert!(matches!(err, Error::Config { .. }));
        let msg = err.to_string();
        assert!(GanLoss::NAMES.iter().all(|n| msg.contains(n)) && msg.contains("vanilla"), "{msg}");
        assert_eq!(GanLoss::default(), GanLoss::NonSaturating);
    }
}
