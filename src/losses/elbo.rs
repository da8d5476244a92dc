//! The evidence lower bound of variational autoencoders (Kingma & Welling 2014) and its parts:
//! Gaussian KL divergences, reparameterised sampling, reconstruction log-likelihoods, β-weighting
//! (Higgins et al. 2017) and free bits (Kingma et al. 2016).
//!
//! `ELBO(x) = E_q(z|x)[log p(x|z)] - KL(q(z|x) || p(z)) <= log p(x)`; training minimises
//! `-reconstruction + β · KL` ([`elbo`]), estimated with one reparameterised sample
//! ([`reparameterize`]) and the closed-form KL ([`gaussian_kl_standard`], [`gaussian_kl`]).
//!
//! The reconstruction log-likelihoods take the decoder's output and the data, both `(B, C, H, W)` (any
//! rank with the batch first), and return one value per sample `(B,)`, summed over every other dimension:
//! [`bernoulli_log_likelihood`], [`gaussian_log_likelihood`], [`discretized_logistic_log_likelihood`].
//!
//! # Bits per dimension
//! [`to_bits_per_dim`] divides a negative log-likelihood in nats per image by `D ln 2`, `D = C·H·W`.
//! That is a code length only when the likelihood is a probability of the discrete data:
//! - **discrete, no correction**: [`discretized_logistic_log_likelihood`] (8-bit data on the grid
//!   `2k/255 - 1`), PixelCNN's [`pixel_cross_entropy`](super::autoregressive::pixel_cross_entropy) and
//!   [`discretized_logistic_mixture_nll`](super::autoregressive::discretized_logistic_mixture_nll), and
//!   [`bernoulli_log_likelihood`] on binary `{0, 1}` data. `-ELBO / (D ln 2)` then bounds the model's
//!   bits/dim from above, comparable with published numbers.
//! - **continuous density, needs the change of variables**: [`gaussian_log_likelihood`] is a density of
//!   `x` in `[-1, 1]`, not a probability (it can be positive). With uniform dequantisation (each pixel
//!   spread uniformly over its bin of width `Δ` in `x` units; Theis et al. 2016),
//!   `-log P(k) <= E[-log p(x)] + D ln(1/Δ)`: add `D ln 128` nats (+7 bits/dim) for `x = (k + u)/128 - 1`,
//!   `Δ = 2/256`, or `D ln 127.5` nats for the `2k/255 - 1` grid, `Δ = 2/255`, before converting. Without
//!   dequantisation noise during training the density can grow without bound on the grid points and
//!   the number means nothing.
//! - **not a likelihood**: [`bernoulli_log_likelihood`] on grey values in `(0, 1)` (the usual "BCE"
//!   reconstruction loss) is a useful training loss but normalises over nothing; report no bits/dim from it.

use candle_core::Tensor;

use super::adversarial::bce_with_logits;
use super::{logistic, same_shape, Reduction};
use crate::rng::Rng;
use crate::{Error, Result};

/// `KL(N(mu_q, exp(logvar_q)) || N(mu_p, exp(logvar_p)))` per element, in nats, for diagonal Gaussians:
///
/// `KL = 1/2 (logvar_p - logvar_q + exp(logvar_q - logvar_p) + (mu_q - mu_p)² exp(-logvar_p) - 1)`.
///
/// - `mu_q`, `logvar_q`: the posterior's mean and log-variance (natural log of σ²), same shape, e.g.
///   `(B, D)` or `(B, C, H, W)`;
/// - `mu_p`, `logvar_p`: the prior's, each broadcastable to that shape (e.g. a learned `(D,)` prior).
///
/// Returns the per-element KL in `mu_q`'s shape (no reduction; use [`sum_per_sample`] for `(B,)`).
/// Mismatched shapes or dtypes are `Error::Shape`. Differentiable in all four arguments.
pub fn gaussian_kl(mu_q: &Tensor, logvar_q: &Tensor, mu_p: &Tensor, logvar_p: &Tensor) -> Result<Tensor> {
    let (mu_q, logvar_q, mu_p, logvar_p) = (
        &crate::losses::full_precision(mu_q)?,
        &crate::losses::full_precision(logvar_q)?,
        &crate::losses::full_precision(mu_p)?,
        &crate::losses::full_precision(logvar_p)?,
    );
    const CTX: &str = "gaussian_kl";
    check_pair(CTX, ("mu_q", mu_q), ("logvar_q", logvar_q))?;
    let mu_p = broadcast_to(CTX, "mu_p", mu_p, mu_q)?;
    let logvar_p = broadcast_to(CTX, "logvar_p", logvar_p, mu_q)?;
    let log_ratio = (&logvar_p - logvar_q)?;
    let var_ratio = log_ratio.neg()?.exp()?;
    let mean_term = ((mu_q - &mu_p)?.sqr()? * logvar_p.neg()?.exp()?)?;
    Ok(((log_ratio + var_ratio)? + mean_term)?.affine(0.5, -0.5)?)
}

/// `KL(N(mu, exp(logvar)) || N(0, I))` per element, in nats (Kingma & Welling 2014, appendix B):
///
/// `KL = 1/2 (exp(logvar) + mu² - 1 - logvar)`.
///
/// `mu` and `logvar` have the same shape, e.g. `(B, D)`; the result has that shape (no reduction).
///
/// ```
/// use candle_core::{DType, Device, Tensor};
/// use candle_generative::losses::elbo::{gaussian_kl_standard, sum_per_sample};
///
/// let mu = Tensor::new(&[[0f32, 1.0], [0.5, 0.0]], &Device::Cpu)?;
/// let logvar = Tensor::zeros((2, 2), DType::F32, &Device::Cpu)?;
/// // With unit variance the KL is mu²/2 per latent dimension.
/// let kl = sum_per_sample(&gaussian_kl_standard(&mu, &logvar)?)?;
/// assert_eq!(kl.to_vec1::<f32>()?, [0.5, 0.125]);
/// # Ok::<(), candle_generative::Error>(())
/// ```
pub fn gaussian_kl_standard(mu: &Tensor, logvar: &Tensor) -> Result<Tensor> {
    let (mu, logvar) = (&crate::losses::full_precision(mu)?, &crate::losses::full_precision(logvar)?);
    check_pair("gaussian_kl_standard", ("mu", mu), ("logvar", logvar))?;
    Ok(((logvar.exp()? + mu.sqr()?)? - logvar)?.affine(0.5, -0.5)?)
}

/// Sums a per-element tensor `(B, ...)` over every dimension but the first: `(B,)` per-sample totals
/// (a `(B,)` input is returned as is). A scalar is `Error::Shape`.
pub fn sum_per_sample(t: &Tensor) -> Result<Tensor> {
    match t.rank() {
        0 => Err(Error::shape("sum_per_sample", "needs a batch dimension, got a scalar")),
        1 => Ok(t.clone()),
        _ => Ok(t.flatten_from(1)?.sum(1)?),
    }
}

/// The reparameterisation trick (Kingma & Welling 2014): `z = mu + exp(logvar / 2) · ε`, `ε ~ N(0, I)`
/// drawn from `rng`, so `z ~ N(mu, exp(logvar))` and `z` is differentiable in `mu` and `logvar`.
///
/// `mu` and `logvar` have the same shape and floating-point dtype; `z` has it too.
pub fn reparameterize(mu: &Tensor, logvar: &Tensor, rng: &mut Rng) -> Result<Tensor> {
    check_pair("reparameterize", ("mu", mu), ("logvar", logvar))?;
    let eps = rng.randn_like(mu)?;
    Ok((mu + (logvar.affine(0.5, 0.0)?.exp()? * eps)?)?)
}

/// Bernoulli log-likelihood per sample, `log p(x|z) = Σ x log σ(l) + (1 - x) log(1 - σ(l))`, summed over
/// every dimension but the first: `(B,)` in nats.
///
/// Computed stably as `Σ x l - softplus(l)`, finite for any finite logit (`|l| = 100` included).
/// - `logits`: the decoder's raw outputs `l`, e.g. `(B, C, H, W)`, floating point;
/// - `x`: targets in `[0, 1]`, same shape and dtype. Binary `x` gives a true log-probability; grey
///   values give the usual "BCE" reconstruction loss, which is not a normalised likelihood (see the
///   module docs on bits per dimension).
pub fn bernoulli_log_likelihood(logits: &Tensor, x: &Tensor) -> Result<Tensor> {
    let (logits, x) = (&crate::losses::full_precision(logits)?, &crate::losses::full_precision(x)?);
    const CTX: &str = "bernoulli_log_likelihood";
    check_pair(CTX, ("logits", logits), ("x", x))?;
    check_batched(CTX, logits)?;
    let nll = bce_with_logits(logits, x, Reduction::None)?;
    Ok(sum_per_sample(&nll)?.neg()?)
}

/// The log standard deviation of a Gaussian decoder.
#[derive(Debug, Clone, Copy)]
pub enum LogScale<'a> {
    /// A constant `log σ`, e.g. `0.0` (σ = 1: the log-likelihood is `-MSE/2` plus a constant).
    Fixed(f64),
    /// A learned `log σ` tensor broadcastable to the mean's shape: `(1, C, 1, 1)` per channel, a
    /// one-element tensor for one shared σ, or the mean's full shape for a per-pixel σ.
    Learned(&'a Tensor),
}

/// Gaussian log-likelihood per sample, `log N(x; mean, σ²) = Σ -1/2 ln(2π) - log σ - (x - mean)² / (2σ²)`,
/// summed over every dimension but the first: `(B,)` in nats.
///
/// - `mean`, `x`: the decoder's mean and the data, same shape (e.g. `(B, C, H, W)`, `x` in `[-1, 1]`)
///   and floating-point dtype;
/// - `log_scale`: `log σ`, [`LogScale::Fixed`] or [`LogScale::Learned`] (differentiable).
///
/// This is a density of continuous `x`; see the module docs for converting it to bits per dimension of
/// 8-bit data.
pub fn gaussian_log_likelihood(mean: &Tensor, x: &Tensor, log_scale: LogScale<'_>) -> Result<Tensor> {
    let (mean, x) = (&crate::losses::full_precision(mean)?, &crate::losses::full_precision(x)?);
    const CTX: &str = "gaussian_log_likelihood";
    check_pair(CTX, ("mean", mean), ("x", x))?;
    check_batched(CTX, mean)?;
    let half_log_two_pi = 0.5 * (2.0 * std::f64::consts::PI).ln();
    let diff = (x - mean)?;
    let per_element = match log_scale {
        LogScale::Fixed(ls) => {
            if !ls.is_finite() {
                return Err(Error::config("log_scale", format!("{CTX}: a fixed log-scale must be finite, got {ls}")));
            }
            diff.sqr()?.affine(-0.5 * (-2.0 * ls).exp(), -half_log_two_pi - ls)?
        }
        LogScale::Learned(ls) => {
            let ls = broadcast_to(CTX, "log_scale", ls, mean)?;
            let scaled = (diff * ls.neg()?.exp()?)?;
            (scaled.sqr()?.affine(-0.5, -half_log_two_pi)? - ls)?
        }
    };
    sum_per_sample(&per_element)
}

/// Discretised logistic log-likelihood of 8-bit data per sample (Kingma et al. 2016, IAF; Salimans et al.
/// 2017, PixelCNN++ with one component), summed over every dimension but the first: `(B,)` in nats.
///
/// For `x` on the grid `2k/255 - 1` and `s = exp(log_scale)`:
/// `P(x) = σ((x - mean + 1/255)/s) - σ((x - mean - 1/255)/s)`, with the bottom bin `x = -1` extended to
/// `-∞` and the top bin `x = +1` to `+∞`, so the 256 probabilities sum to one. Tiny probabilities are
/// computed in log space without cancellation (no `pdf · bin width` fallback is needed); `log_scale` is
/// clamped from below at -7 as in PixelCNN++.
///
/// - `mean`: the decoder's location, e.g. `(B, C, H, W)`, floating point;
/// - `log_scale`: broadcastable to `mean` (per channel `(1, C, 1, 1)` or per pixel), differentiable;
/// - `x`: data in `[-1, 1]` on the 8-bit grid, same shape and dtype as `mean` (values outside
///   `[-1.001, 1.001]` or NaN are `Error::Shape`; reading that check back syncs the device).
///
/// The result is a discrete log-probability: `-result / (D ln 2)` is bits per dimension as is.
pub fn discretized_logistic_log_likelihood(mean: &Tensor, log_scale: &Tensor, x: &Tensor) -> Result<Tensor> {
    let (mean, log_scale, x) = (
        &crate::losses::full_precision(mean)?,
        &crate::losses::full_precision(log_scale)?,
        &crate::losses::full_precision(x)?,
    );
    const CTX: &str = "discretized_logistic_log_likelihood";
    check_pair(CTX, ("mean", mean), ("x", x))?;
    check_batched(CTX, mean)?;
    let log_scale = broadcast_to(CTX, "log_scale", log_scale, mean)?;
    logistic::check_unit_range(CTX, x)?;
    sum_per_sample(&logistic::log_prob(x, mean, &log_scale)?)
}

/// The parts of a minibatch ELBO, built by [`elbo`].
#[derive(Debug, Clone)]
pub struct Elbo {
    /// `E[log p(x|z)]`: the batch mean of the per-sample log-likelihood, nats per sample (scalar).
    pub reconstruction: Tensor,
    /// `E[KL(q(z|x) || p(z))]`: the batch mean of the per-sample KL summed over latent dimensions, nats
    /// per sample (scalar), neither β-weighted nor clamped by free bits.
    pub kl: Tensor,
    /// The objective to minimise: `-reconstruction + β · KL_term` (scalar, differentiable), where
    /// `KL_term` is `kl`, or with free bits `Σ_j max(λ, mean_b KL_bj)`. With `β = 1` and no free bits it
    /// is the negative ELBO.
    pub total: Tensor,
}

impl Elbo {
    /// `-ELBO = kl - reconstruction` in nats per sample (scalar): an upper bound on `-log p(x)` whatever β
    /// and free bits were used for training, the number to report (e.g. with [`to_bits_per_dim`]).
    pub fn nll_bound(&self) -> Result<Tensor> {
        Ok((&self.kl - &self.reconstruction)?)
    }
}

/// The minibatch ELBO objective (Kingma & Welling 2014) with β-weighting (Higgins et al. 2017) and
/// optional free bits (Kingma et al. 2016, IAF, appendix C.8).
///
/// `total = -mean_b(log_likelihood_b) + β · KL_term`, where, with `KL_bj` the KL of sample `b` in latent
/// group `j`,
/// - without free bits `KL_term = mean_b Σ_j KL_bj`;
/// - with free bits `λ` (nats per group) `KL_term = Σ_j max(λ, mean_b KL_bj)`: each group's KL is first
///   averaged over the batch, then clamped from below at λ, so a group below λ gets no KL gradient
///   (its information is "free") and the encoder is not pushed to collapse it.
///
/// - `log_likelihood`: `(B,)` per-sample reconstruction log-likelihoods in nats (from
///   [`bernoulli_log_likelihood`] etc.);
/// - `kl`: per-sample KL of each latent group, `(B, D)` (the output of [`gaussian_kl_standard`]); any
///   `(B, ...)` is flattened to `(B, D)`, and `(B,)` is one group, so free bits then clamp the total KL;
/// - `beta`: KL weight, finite and `>= 0` (1 is the ELBO; β > 1 is β-VAE);
/// - `free_bits`: `λ >= 0` in nats per group, or `None`.
///
/// A batch mismatch is `Error::Shape`; a negative or non-finite `beta`/`free_bits` is `Error::Config`.
pub fn elbo(log_likelihood: &Tensor, kl: &Tensor, beta: f64, free_bits: Option<f64>) -> Result<Elbo> {
    const CTX: &str = "elbo";
    if log_likelihood.rank() != 1 {
        return Err(Error::shape(CTX, format!("log_likelihood must be (B,), got {:?}", log_likelihood.dims())));
    }
    check_float(CTX, "log_likelihood", log_likelihood)?;
    check_float(CTX, "kl", kl)?;
    let batch = log_likelihood.dim(0)?;
    if kl.rank() == 0 || kl.dim(0)? != batch || batch == 0 {
        return Err(Error::shape(
            CTX,
            format!("kl must be (B, D) with B = {batch} > 0 (log_likelihood's batch), got {:?}", kl.dims()),
        ));
    }
    if !(beta.is_finite() && beta >= 0.0) {
        return Err(Error::config("beta", format!("must be finite and >= 0, got {beta}")));
    }
    if let Some(lambda) = free_bits {
        if !(lambda.is_finite() && lambda >= 0.0) {
            return Err(Error::config("free_bits", format!("must be finite and >= 0 nats, got {lambda}")));
        }
    }
    let per_group = if kl.rank() == 1 { kl.unsqueeze(1)? } else { kl.flatten_from(1)? };
    let group_means = per_group.mean(0)?;
    let reconstruction = log_likelihood.mean_all()?;
    let kl_mean = group_means.sum_all()?;
    let kl_term = match free_bits {
        None => kl_mean.clone(),
        Some(lambda) => group_means.maximum(lambda)?.sum_all()?,
    };
    let total = (kl_term.affine(beta, 0.0)? - &reconstruction)?;
    Ok(Elbo { reconstruction, kl: kl_mean, total })
}

/// Converts a negative log-likelihood in nats per image into bits per dimension: `nats / (D ln 2)`,
/// elementwise (a scalar or a `(B,)` tensor; differentiable).
///
/// `num_dims` is `D = C·H·W`, the number of sub-pixels (784 for MNIST, 3072 for CIFAR-10). This is a code
/// length only for discrete likelihoods; for a continuous density add `D ln(1/Δ)` nats first (module docs).
/// `num_dims = 0` is `Error::Config`.
pub fn to_bits_per_dim(nats: &Tensor, num_dims: usize) -> Result<Tensor> {
    if num_dims == 0 {
        return Err(Error::config("num_dims", "to_bits_per_dim needs at least one dimension"));
    }
    Ok(nats.affine(1.0 / (num_dims as f64 * std::f64::consts::LN_2), 0.0)?)
}

fn check_float(context: &str, name: &str, t: &Tensor) -> Result<()> {
    if t.dtype().is_float() {
        Ok(())
    } else {
        Err(Error::shape(context, format!("`{name}` must be floating point, got {:?}", t.dtype())))
    }
}

/// Both floating point, with the same shape and dtype.
fn check_pair(context: &str, (na, a): (&str, &Tensor), (nb, b): (&str, &Tensor)) -> Result<()> {
    check_float(context, na, a)?;
    same_shape(context, a, b)
        .map_err(|_| Error::shape(context, format!("`{na}` is {:?} but `{nb}` is {:?}", a.dims(), b.dims())))?;
    if a.dtype() != b.dtype() {
        return Err(Error::shape(context, format!("`{na}` is {:?} but `{nb}` is {:?}", a.dtype(), b.dtype())));
    }
    Ok(())
}

fn check_batched(context: &str, t: &Tensor) -> Result<()> {
    if t.rank() == 0 {
        return Err(Error::shape(context, "needs a batch dimension (B, ...), got a scalar"));
    }
    Ok(())
}

/// `t` broadcast to `like`'s shape, with `like`'s dtype required.
fn broadcast_to(context: &str, name: &str, t: &Tensor, like: &Tensor) -> Result<Tensor> {
    if t.dtype() != like.dtype() {
        return Err(Error::shape(context, format!("`{name}` is {:?}, expected {:?}", t.dtype(), like.dtype())));
    }
    t.broadcast_as(like.shape())
        .map_err(|_| Error::shape(context, format!("`{name}` {:?} does not broadcast to {:?}", t.dims(), like.dims())))
}

#[cfg(test)]
mod tests {
    use super::super::logistic::testing::*;
    use super::*;
    use candle_core::{DType, Device};

    const SHAPE: [usize; 4] = [3, 2, 3, 4];
    const N: usize = 72;

    fn per_sample(v: &[f64], batch: usize) -> Vec<f64> {
        v.chunks(v.len() / batch).map(|c| c.iter().sum()).collect()
    }

    fn reference_kl(mq: f64, lq: f64, mp: f64, lp: f64) -> f64 {
        let (sq, sp) = ((0.5 * lq).exp(), (0.5 * lp).exp());
        (sp / sq).ln() + (sq * sq + (mq - mp).powi(2)) / (2.0 * sp * sp) - 0.5
    }

    #[test]
    fn kl_matches_reference() -> Result<()> {
        for dtype in [DType::F32, DType::F64] {
            let mut rng = Rng::new(1);
            let mq = normal_values(&mut rng, N, 1.5, dtype);
            let lq = uniform_values(&mut rng, N, -3.0, 2.0, dtype);
            let mp = normal_values(&mut rng, N, 1.0, dtype);
            let lp = uniform_values(&mut rng, N, -2.0, 2.0, dtype);
            let t = |v: &[f64]| tensor(v, &SHAPE, dtype);
            let got = values(&gaussian_kl(&t(&mq)?, &t(&lq)?, &t(&mp)?, &t(&lp)?)?)?;
            let want: Vec<f64> = (0..N).map(|i| reference_kl(mq[i], lq[i], mp[i], lp[i])).collect();
            assert_close("gaussian_kl", &got, &want, tolerance(dtype));

            let got = values(&gaussian_kl_standard(&t(&mq)?, &t(&lq)?)?)?;
            let want: Vec<f64> = (0..N).map(|i| reference_kl(mq[i], lq[i], 0.0, 0.0)).collect();
            assert_close("gaussian_kl_standard", &got, &want, tolerance(dtype));
            let sums = values(&sum_per_sample(&gaussian_kl_standard(&t(&mq)?, &t(&lq)?)?)?)?;
            assert_close("sum_per_sample", &sums, &per_sample(&want, 3), tolerance(dtype));

            // A (D,)-shaped prior broadcasts over the batch.
            let mq2 = tensor(&mq[..12], &[3, 4], dtype)?;
            let lq2 = tensor(&lq[..12], &[3, 4], dtype)?;
            let got =
                values(&gaussian_kl(&mq2, &lq2, &tensor(&mp[..4], &[4], dtype)?, &tensor(&lp[..4], &[4], dtype)?)?)?;
            let want: Vec<f64> = (0..12).map(|i| reference_kl(mq[i], lq[i], mp[i % 4], lp[i % 4])).collect();
            assert_close("gaussian_kl broadcast prior", &got, &want, tolerance(dtype));
        }
        Ok(())
    }

    #[test]
    fn kl_closed_form_matches_monte_carlo() -> Result<()> {
        // KL(N(0.3, 0.7²) || N(-0.5, 1.3²)) against the mean of log q(z) - log p(z), z ~ q.
        let (mq, sq, mp, sp) = (0.3f64, 0.7f64, -0.5f64, 1.3f64);
        let one = |v: f64| tensor(&[v], &[1], DType::F64);
        let closed = gaussian_kl(&one(mq)?, &one(2.0 * sq.ln())?, &one(mp)?, &one(2.0 * sp.ln())?)?;
        let closed = values(&closed)?[0];
        let log_density = |z: f64, m: f64, s: f64| -0.5 * ((z - m) / s).powi(2) - s.ln();
        let mut rng = Rng::new(2);
        let n = 200_000;
        let samples: Vec<f64> = (0..n)
            .map(|_| {
                let z = mq + sq * rng.normal_f64();
                log_density(z, mq, sq) - log_density(z, mp, sp)
            })
            .collect();
        let mean = samples.iter().sum::<f64>() / n as f64;
        let var = samples.iter().map(|s| (s - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
        let standard_error = (var / n as f64).sqrt();
        assert!((mean - closed).abs() < 3.0 * standard_error, "MC {mean} ± {standard_error} vs closed {closed}");
        Ok(())
    }

    #[test]
    fn reparameterize_is_mu_plus_sigma_eps_and_seeded() -> Result<()> {
        for dtype in [DType::F32, DType::F64] {
            let mut rng = Rng::new(3);
            let mu = normal_values(&mut rng, N, 1.0, dtype);
            let lv = uniform_values(&mut rng, N, -2.0, 2.0, dtype);
            let z = reparameterize(&tensor(&mu, &SHAPE, dtype)?, &tensor(&lv, &SHAPE, dtype)?, &mut Rng::new(9))?;
            assert_eq!(z.dtype(), dtype);
            let eps = values(&Rng::new(9).randn(SHAPE.to_vec(), dtype, &Device::Cpu)?)?;
            let want: Vec<f64> = (0..N).map(|i| mu[i] + (lv[i] / 2.0).exp() * eps[i]).collect();
            assert_close("reparameterize", &values(&z)?, &want, tolerance(dtype));
        }
        // Moments: z ~ N(2, e^{-1}).
        let n = 100_000;
        let z = reparameterize(
            &Tensor::full(2f64, n, &Device::Cpu)?,
            &Tensor::full(-1f64, n, &Device::Cpu)?,
            &mut Rng::new(4),
        )?;
        let z = values(&z)?;
        let mean = z.iter().sum::<f64>() / n as f64;
        let var = z.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n as f64;
        assert!((mean - 2.0).abs() < 0.01 && (var - (-1f64).exp()).abs() < 0.01, "{mean} {var}");
        Ok(())
    }

    #[test]
    fn bernoulli_matches_reference_and_is_finite_at_extremes() -> Result<()> {
        for dtype in [DType::F32, DType::F64] {
            let mut rng = Rng::new(5);
            let l = normal_values(&mut rng, N, 3.0, dtype);
            let x = uniform_values(&mut rng, N, 0.0, 1.0, dtype);
            let got = values(&bernoulli_log_likelihood(&tensor(&l, &SHAPE, dtype)?, &tensor(&x, &SHAPE, dtype)?)?)?;
            let sigmoid = |v: f64| 1.0 / (1.0 + (-v).exp());
            let want: Vec<f64> =
                (0..N).map(|i| x[i] * sigmoid(l[i]).ln() + (1.0 - x[i]) * (1.0 - sigmoid(l[i])).ln()).collect();
            assert_close("bernoulli", &got, &per_sample(&want, 3), tolerance(dtype));
        }
        let l = tensor(&[100.0, -100.0, 100.0, -100.0], &[2, 2], DType::F32)?;
        let x = tensor(&[1.0, 0.0, 0.0, 1.0], &[2, 2], DType::F32)?;
        let v = values(&bernoulli_log_likelihood(&l, &x)?)?;
        assert!(v[0].abs() < 1e-6 && (v[1] + 200.0).abs() < 1e-3, "{v:?}");
        Ok(())
    }

    #[test]
    fn gaussian_matches_reference() -> Result<()> {
        for dtype in [DType::F32, DType::F64] {
            let mut rng = Rng::new(6);
            let m = uniform_values(&mut rng, N, -1.0, 1.0, dtype);
            let x = uniform_values(&mut rng, N, -1.0, 1.0, dtype);
            let ls = uniform_values(&mut rng, 2, -2.0, 0.5, dtype);
            let reference = |i: usize, log_sigma: f64| {
                let s = log_sigma.exp();
                (-(x[i] - m[i]).powi(2) / (2.0 * s * s)).exp().ln() - (s * (2.0 * std::f64::consts::PI).sqrt()).ln()
            };
            let (mt, xt) = (tensor(&m, &SHAPE, dtype)?, tensor(&x, &SHAPE, dtype)?);
            let got = values(&gaussian_log_likelihood(&mt, &xt, LogScale::Fixed(-0.7))?)?;
            let want: Vec<f64> = (0..N).map(|i| reference(i, -0.7)).collect();
            assert_close("gaussian fixed", &got, &per_sample(&want, 3), tolerance(dtype));
            // Per-channel learned scale (1, C, 1, 1): channel = (i / 12) % 2.
            let lst = tensor(&ls, &[1, 2, 1, 1], dtype)?;
            let got = values(&gaussian_log_likelihood(&mt, &xt, LogScale::Learned(&lst))?)?;
            let want: Vec<f64> = (0..N).map(|i| reference(i, ls[(i / 12) % 2])).collect();
            assert_close("gaussian learned", &got, &per_sample(&want, 3), tolerance(dtype));
        }
        Ok(())
    }

    #[test]
    fn discretized_logistic_matches_reference() -> Result<()> {
        for dtype in [DType::F32, DType::F64] {
            let mut rng = Rng::new(7);
            let x: Vec<f64> =
                (0..N).map(|_| round_to(2.0 * rng.below(256).unwrap() as f64 / 255.0 - 1.0, dtype)).collect();
            let m = uniform_values(&mut rng, N, -1.0, 1.0, dtype);
            let ls = uniform_values(&mut rng, 2, -5.0, -1.0, dtype);
            let got = values(&discretized_logistic_log_likelihood(
                &tensor(&m, &SHAPE, dtype)?,
                &tensor(&ls, &[2, 1, 1], dtype)?,
                &tensor(&x, &SHAPE, dtype)?,
            )?)?;
            let want: Vec<f64> = (0..N).map(|i| reference_log_prob(x[i], m[i], ls[(i / 12) % 2])).collect();
            assert_close("discretized logistic", &got, &per_sample(&want, 3), tolerance(dtype));
        }
        Ok(())
    }

    #[test]
    fn elbo_parts_beta_and_free_bits() -> Result<()> {
        let ll = tensor(&[-10.0, -20.0, -30.0, -40.0], &[4], DType::F64)?;
        // Per-dimension batch means: 0.05, 0.5, 2.0.
        let kl = tensor(&[0.0, 0.4, 1.0, 0.1, 0.6, 3.0, 0.05, 0.5, 2.0, 0.05, 0.5, 2.0], &[4, 3], DType::F64)?;
        let e = elbo(&ll, &kl, 1.0, None)?;
        assert!((e.reconstruction.to_scalar::<f64>()? + 25.0).abs() < 1e-12);
        assert!((e.kl.to_scalar::<f64>()? - 2.55).abs() < 1e-12);
        assert!((e.total.to_scalar::<f64>()? - 27.55).abs() < 1e-12);
        assert!((e.nll_bound()?.to_scalar::<f64>()? - 27.55).abs() < 1e-12);

        let e = elbo(&ll, &kl, 4.0, None)?;
        assert!((e.total.to_scalar::<f64>()? - (25.0 + 4.0 * 2.55)).abs() < 1e-12);

        // Free bits λ = 0.25: the first dimension counts 0.25, the others their own mean; the reported KL
        // and the bound are unchanged.
        let e = elbo(&ll, &kl, 1.0, Some(0.25))?;
        assert!((e.total.to_scalar::<f64>()? - (25.0 + 0.25 + 0.5 + 2.0)).abs() < 1e-12);
        assert!((e.nll_bound()?.to_scalar::<f64>()? - 27.55).abs() < 1e-12);
        // No KL gradient reaches the clamped dimension; the others get β/B.
        let kl_var = candle_core::Var::from_tensor(&kl)?;
        let g = elbo(&ll, kl_var.as_tensor(), 2.0, Some(0.25))?.total.backward()?;
        let g = values(g.get(kl_var.as_tensor()).expect("kl gets a gradient"))?;
        for (i, gi) in g.iter().enumerate() {
            let want = if i % 3 == 0 { 0.0 } else { 0.5 };
            assert!((gi - want).abs() < 1e-12, "dKL[{i}] = {gi}");
        }
        // (B,) KL is one group: free bits clamp the whole KL.
        let total_kl = tensor(&[0.1, 0.2, 0.3, 0.2], &[4], DType::F64)?;
        let e = elbo(&ll, &total_kl, 1.0, Some(1.0))?;
        assert!((e.total.to_scalar::<f64>()? - 26.0).abs() < 1e-12);
        Ok(())
    }

    #[test]
    fn bits_per_dim() -> Result<()> {
        let nats = tensor(&[784.0 * std::f64::consts::LN_2, 0.0], &[2], DType::F64)?;
        assert_close("bits/dim", &values(&to_bits_per_dim(&nats, 784)?)?, &[1.0, 0.0], 1e-12);
        assert!(matches!(to_bits_per_dim(&nats, 0), Err(Error::Config { .. })));
        Ok(())
    }

    #[test]
    fn gradients_match_finite_differences() -> Result<()> {
        let dt = DType::F64;
        let mut rng = Rng::new(8);
        let shape = [2, 2, 2, 2];
        let n = 16;
        let mut t = |sd: f64| tensor(&normal_values(&mut rng, n, sd, dt), &shape, dt);
        let (mq, lq, mp, lp) = (t(1.0)?, t(0.7)?, t(1.0)?, t(0.7)?);
        grad_check("kl d/mu_q", &mq, |v| gaussian_kl(v, &lq, &mp, &lp))?;
        grad_check("kl d/logvar_q", &lq, |v| gaussian_kl(&mq, v, &mp, &lp))?;
        grad_check("kl d/mu_p", &mp, |v| gaussian_kl(&mq, &lq, v, &lp))?;
        grad_check("kl d/logvar_p", &lp, |v| gaussian_kl(&mq, &lq, &mp, v))?;
        grad_check("kl_standard d/mu", &mq, |v| gaussian_kl_standard(v, &lq))?;
        grad_check("kl_standard d/logvar", &lq, |v| gaussian_kl_standard(&mq, v))?;
        grad_check("reparameterize d/mu", &mq, |v| reparameterize(v, &lq, &mut Rng::new(1)))?;
        grad_check("reparameterize d/logvar", &lq, |v| reparameterize(&mq, v, &mut Rng::new(1)))?;

        let logits = (t(4.0)? * 1.0)?;
        let x01 = tensor(&uniform_values(&mut Rng::new(9), n, 0.0, 1.0, dt), &shape, dt)?;
        grad_check("bernoulli", &logits, |v| bernoulli_log_likelihood(v, &x01))?;

        let x = tensor(&(0..n).map(|i| 2.0 * ((i * 37) % 256) as f64 / 255.0 - 1.0).collect::<Vec<_>>(), &shape, dt)?;
        let ls = tensor(&[-0.4, -2.5], &[1, 2, 1, 1], dt)?;
        grad_check("gaussian fixed d/mean", &mq, |v| gaussian_log_likelihood(v, &x, LogScale::Fixed(-0.3)))?;
        grad_check("gaussian learned d/mean", &mq, |v| gaussian_log_likelihood(v, &x, LogScale::Learned(&ls)))?;
        grad_check("gaussian learned d/log_scale", &ls, |v| gaussian_log_likelihood(&mq, &x, LogScale::Learned(v)))?;
        let m = (mq.affine(0.5, 0.0))?;
        grad_check("logistic d/mean", &m, |v| discretized_logistic_log_likelihood(v, &ls, &x))?;
        grad_check("logistic d/log_scale", &ls, |v| discretized_logistic_log_likelihood(&m, v, &x))?;

        let ll = tensor(&[-3.0, -5.0], &[2], dt)?;
        let kl = tensor(&[0.1, 0.9, 0.3, 0.8], &[2, 2], dt)?;
        grad_check("elbo d/ll", &ll, |v| Ok(elbo(v, &kl, 1.5, Some(0.5))?.total))?;
        grad_check("elbo d/kl", &kl, |v| Ok(elbo(&ll, v, 1.5, Some(0.5))?.total))?;
        grad_check("bits/dim", &ll, |v| to_bits_per_dim(v, 3))?;
        Ok(())
    }

    #[test]
    fn shape_and_config_errors() -> Result<()> {
        let dt = DType::F32;
        let a = tensor(&[0.0; 6], &[2, 3], dt)?;
        let b = tensor(&[0.0; 4], &[2, 2], dt)?;
        let shape_err = |r: Result<Tensor>| matches!(r, Err(Error::Shape { .. }));
        assert!(shape_err(gaussian_kl_standard(&a, &b)));
        assert!(shape_err(gaussian_kl(&a, &a, &b, &a)));
        assert!(shape_err(gaussian_kl_standard(&a, &a.to_dtype(DType::F64)?)));
        assert!(shape_err(reparameterize(&a, &b, &mut Rng::new(0))));
        assert!(shape_err(bernoulli_log_likelihood(&a, &b)));
        assert!(shape_err(gaussian_log_likelihood(&a, &b, LogScale::Fixed(0.0))));
        assert!(shape_err(gaussian_log_likelihood(&a, &a, LogScale::Learned(&b))));
        assert!(shape_err(discretized_logistic_log_likelihood(&a, &b, &a)));
        assert!(shape_err(discretized_logistic_log_likelihood(&a, &a, &(&a + 2.0)?)));
        assert!(shape_err(sum_per_sample(&Tensor::new(1f32, &Device::Cpu)?)));
        let ints = Tensor::zeros((2, 3), DType::U32, &Device::Cpu)?;
        assert!(shape_err(gaussian_kl_standard(&ints, &ints)));
        assert!(gaussian_log_likelihood(&a, &a, LogScale::Fixed(f64::NAN)).is_err());

        let ll = tensor(&[0.0; 2], &[2], dt)?;
        let elbo_err = |r: Result<Elbo>| r.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(elbo_err(elbo(&ll, &b.narrow(0, 0, 1)?, 1.0, None)).contains("shape error in elbo"));
        assert!(elbo_err(elbo(&a, &a, 1.0, None)).contains("shape error in elbo"));
        assert!(elbo_err(elbo(&ll, &b, -1.0, None)).contains("beta"));
        assert!(elbo_err(elbo(&ll, &b, 1.0, Some(f64::NAN))).contains("free_bits"));
        Ok(())
    }
}
