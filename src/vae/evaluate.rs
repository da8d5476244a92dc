//! Evaluation of a VAE: the test-set ELBO in nats and bits/dim, and the importance-weighted bound on
//! `log p(x)` (IWAE, Burda, Grosse & Salakhutdinov 2016).
//!
//! With `K` codes `z_k ~ q(z|x)` and weights `w_k = p(x|z_k) p(z_k) / q(z_k|x)`,
//!
//! `L_K = E[log (1/K) Σ_k w_k] <= log p(x)`,  `L_1 = ELBO <= L_K <= L_{K+1}`,  `L_K -> log p(x)` as `K -> ∞`.
//!
//! Every log-weight is a per-image sum computed in the model's dtype; the log-sum-exp over `K` and all
//! averages over images are accumulated in `f64` on the host.

use candle_core::{DType, Device, Tensor};

use super::model::{Decoder, Encoder, Vae};
use super::posterior::standard_normal_log_prob;
use crate::data::ImageDataset;
use crate::error::check_finite;
use crate::rng::Rng;
use crate::{Error, Result};

/// Images decoded per pass by [`iwae_log_likelihood`] (`samples × batch`), bounding its memory.
const MAX_DECODE_BATCH: usize = 1024;

/// `log Σ_i exp(v_i)` in `f64`, stable for large magnitudes (`-∞` for an empty slice or all `-∞`).
pub fn log_sum_exp(values: &[f64]) -> f64 {
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !max.is_finite() {
        return max;
    }
    max + values.iter().map(|v| (v - max).exp()).sum::<f64>().ln()
}

fn to_host(t: &Tensor) -> Result<Vec<f64>> {
    Ok(t.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?)
}

/// The ELBO's two terms for each image of a batch, in nats, on the host.
#[derive(Debug, Clone, PartialEq)]
pub struct ElboTerms {
    /// `log p(x|z)` at one code `z ~ q(z|x)` per image (an unbiased estimate of `E_q[log p(x|z)]`).
    pub reconstruction: Vec<f64>,
    /// `KL(q(z|x) || p(z))` per image, in closed form.
    pub kl: Vec<f64>,
}

impl ElboTerms {
    /// `-ELBO = KL - log p(x|z)` per image, nats: an upper bound on `-log p(x)` (in expectation).
    pub fn neg_elbo(&self) -> Vec<f64> {
        self.kl.iter().zip(&self.reconstruction).map(|(k, r)| k - r).collect()
    }
}

/// The ELBO terms of each image of the batch `x` `(B, C, H, W)` (in the likelihood's range), one
/// reparameterised code per image from `rng`. No gradients are needed: call it outside training.
pub fn elbo_terms<E: Encoder, D: Decoder>(
    model: &Vae<E, D>,
    x: &Tensor,
    labels: Option<&Tensor>,
    rng: &mut Rng,
) -> Result<ElboTerms> {
    let (q, out) = model.forward(x, labels, rng)?;
    let ll = model.likelihood().log_prob(&out, x)?;
    let kl = q.kl()?.sum(1)?;
    Ok(ElboTerms { reconstruction: to_host(&ll)?, kl: to_host(&kl)? })
}

/// The importance-weighted estimate of `log p(x)` with `k` samples (Burda et al. 2016), per image of `x`
/// `(B, C, H, W)`, in nats: `log (1/k) Σ_i w_i`, `w_i = p(x|z_i) p(z_i) / q(z_i|x)`, `z_i ~ q(z|x)` from
/// `rng`. Its expectation `L_k` satisfies `ELBO = L_1 <= L_k <= L_{k+1} <= log p(x)` and tends to
/// `log p(x)` as `k -> ∞`.
///
/// Each `log w_i` is a per-image sum in the model's dtype; the log-sum-exp over `i` is taken in `f64` on
/// the host.
/// Codes are decoded in passes of at most 1024 images, so memory does not grow with `k`. `k = 0` is
/// `Error::Config`.
pub fn iwae_log_likelihood<E: Encoder, D: Decoder>(
    model: &Vae<E, D>,
    x: &Tensor,
    labels: Option<&Tensor>,
    k: usize,
    rng: &mut Rng,
) -> Result<Vec<f64>> {
    if k == 0 {
        return Err(Error::config("k", "the IWAE bound needs at least one sample"));
    }
    let q = model.encode(x, labels)?;
    let (b, c, h, w) = x.dims4()?;
    let per_pass = (MAX_DECODE_BATCH / b).clamp(1, k);
    // log_w[image][sample]
    let mut log_w = vec![Vec::with_capacity(k); b];
    let mut done = 0;
    while done < k {
        let m = per_pass.min(k - done);
        let z = q.sample_n(m, rng)?; // (m, B, Z)
        let flat_z = z.flatten(0, 1)?;
        let repeated_labels = match labels {
            Some(l) => Some(l.unsqueeze(0)?.broadcast_as((m, b))?.flatten_all()?),
            None => None,
        };
        let out = model.decode(&flat_z, repeated_labels.as_ref())?;
        let xs = x.unsqueeze(0)?.broadcast_as((m, b, c, h, w))?.reshape((m * b, c, h, w))?;
        let ll = to_host(&model.likelihood().log_prob(&out, &xs)?)?;
        let lp = to_host(&standard_normal_log_prob(&z)?)?;
        let lq = to_host(&q.log_prob(&z)?)?;
        for i in 0..m * b {
            log_w[i % b].push(ll[i] + lp[i] - lq[i]);
        }
        done += m;
    }
    let ln_k = (k as f64).ln();
    Ok(log_w.iter().map(|v| log_sum_exp(v) - ln_k).collect())
}

/// What [`evaluate`] computes, and on how much data.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalOptions {
    /// Images per encoder pass (> 0).
    pub batch_size: usize,
    /// Evaluate the first `n` images only (`None`: all).
    pub max_images: Option<usize>,
    /// Also compute the IWAE bound with this many samples per image (`None`: skip it; it costs about
    /// `k` decoder passes per image).
    pub iwae_samples: Option<usize>,
    /// Seed of the data treatment (e.g. the test set's binarisation) and of the codes: the same seed
    /// evaluates on the same binarised images with the same noise.
    pub seed: u64,
}

impl Default for EvalOptions {
    /// Batches of 256, every image, no IWAE, seed 0.
    fn default() -> Self {
        Self { batch_size: 256, max_images: None, iwae_samples: None, seed: 0 }
    }
}

/// The result of [`evaluate`]: means over the evaluated images, in nats per image.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalReport {
    /// Images evaluated.
    pub num_images: usize,
    /// `D = C·H·W` per image.
    pub num_dims: usize,
    /// The model's likelihood (fixes the data treatment and the bits/dim correction).
    pub likelihood: super::Likelihood,
    /// Mean `-ELBO`, nats per image (one code sample per image, closed-form KL).
    pub neg_elbo: f64,
    /// Mean `log p(x|z)`, nats per image.
    pub reconstruction: f64,
    /// Mean `KL(q(z|x) || p(z))`, nats per image.
    pub kl: f64,
    /// `(k, mean -IWAE_k)`: the importance-weighted bound with `k` samples, nats per image, when asked.
    pub iwae: Option<(usize, f64)>,
}

impl EvalReport {
    /// Converts a negative log-likelihood in nats per image into bits per dimension of the 8-bit data:
    /// `(nats + D · c) / (D ln 2)` with `c` = [`Likelihood::dequantization_nats_per_dim`](super::Likelihood)
    /// (`ln 128` for the Gaussian on dequantised data, else 0). For the Bernoulli likelihood this is
    /// bits per binary pixel of the binarised data.
    pub fn bits_per_dim(&self, nats: f64) -> f64 {
        let d = self.num_dims as f64;
        (nats + d * self.likelihood.dequantization_nats_per_dim()) / (d * std::f64::consts::LN_2)
    }

    /// `-ELBO` in bits per dimension ([`EvalReport::bits_per_dim`]).
    pub fn neg_elbo_bits_per_dim(&self) -> f64 {
        self.bits_per_dim(self.neg_elbo)
    }
}

/// Evaluates `model` on `data` (e.g. the test split): its images `[0, 1]` go through
/// [`Likelihood::prepare`](super::Likelihood::prepare) (binarised for Bernoulli, dequantised for
/// Gaussian, 8-bit grid for logistic) with noise seeded by `opts.seed`, then the mean `-ELBO`, its two
/// terms and optionally `-IWAE_k` are accumulated in `f64`. Labels are passed to a conditional model.
///
/// `dtype` and `device` are the model's. A non-finite result is `Error::NonFinite` naming the term.
pub fn evaluate<E: Encoder, D: Decoder>(
    model: &Vae<E, D>,
    data: &ImageDataset,
    opts: &EvalOptions,
    dtype: DType,
    device: &Device,
) -> Result<EvalReport> {
    if opts.batch_size == 0 {
        return Err(Error::config("batch_size", "must be > 0"));
    }
    let n = opts.max_images.map_or(data.len(), |m| m.min(data.len()));
    if n == 0 {
        return Err(Error::config("max_images", "nothing to evaluate: no images"));
    }
    let spec = model.spec();
    let mut data_rng = Rng::with_stream(opts.seed, 0);
    let mut elbo_rng = Rng::with_stream(opts.seed, 1);
    let mut iwae_rng = Rng::with_stream(opts.seed, 2);
    let (mut sum_rec, mut sum_kl, mut sum_iwae) = (0.0, 0.0, 0.0);
    let indices: Vec<usize> = (0..n).collect();
    for batch in indices.chunks(opts.batch_size) {
        let x01 = data.images(batch, device)?.to_dtype(dtype)?;
        let x = spec.likelihood.prepare(&x01, &mut data_rng)?;
        let labels = if spec.is_conditional() { Some(data.labels_tensor(batch, device)?) } else { None };
        let terms = elbo_terms(model, &x, labels.as_ref(), &mut elbo_rng)?;
        sum_rec += terms.reconstruction.iter().sum::<f64>();
        sum_kl += terms.kl.iter().sum::<f64>();
        if let Some(k) = opts.iwae_samples {
            sum_iwae -= iwae_log_likelihood(model, &x, labels.as_ref(), k, &mut iwae_rng)?.iter().sum::<f64>();
        }
    }
    let count = n as f64;
    let reconstruction = check_finite("test reconstruction log-likelihood", None, sum_rec / count)?;
    let kl = check_finite("test KL", None, sum_kl / count)?;
    let neg_elbo = check_finite("test negative ELBO", None, kl - reconstruction)?;
    let iwae = match opts.iwae_samples {
        Some(k) => Some((k, check_finite("test negative IWAE bound", None, sum_iwae / count)?)),
        None => None,
    };
    Ok(EvalReport {
        num_images: n,
        num_dims: spec.num_dims(),
        likelihood: spec.likelihood,
        neg_elbo,
        reconstruction,
        kl,
        iwae,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_sum_exp_is_stable() {
        assert!((log_sum_exp(&[1000.0, 1000.0]) - (1000.0 + 2f64.ln())).abs() < 1e-12);
        assert!((log_sum_exp(&[-1000.0, -1000.0 + 3f64.ln()]) - (-1000.0 + 4f64.ln())).abs() < 1e-12);
        assert_eq!(log_sum_exp(&[]), f64::NEG_INFINITY);
        assert_eq!(log_sum_exp(&[f64::NEG_INFINITY, 2.0]), 2.0);
    }
}
