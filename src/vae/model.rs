//! [`Vae`]: any [`Encoder`]/[`Decoder`] pair with a [`VaeSpec`], giving the ELBO, reconstructions, prior
//! samples and latent interpolation (Kingma & Welling 2014; conditional: Sohn et al. 2015).

use candle_core::{DType, Device, Tensor};

use super::config::VaeSpec;
use super::likelihood::Likelihood;
use super::posterior::Posterior;
use crate::losses::elbo::{elbo, Elbo};
use crate::nn::latent::{interpolate, Interpolation};
use crate::rng::Rng;
use crate::{Error, Result};

/// The inference network `q(z|x[, y])`.
///
/// - `x`: images `(B, C, H, W)` in the likelihood's range (`[0, 1]` Bernoulli, `[-1, 1]` otherwise);
/// - `condition`: for a conditional VAE, the one-hot labels `(B, K)` in `x`'s dtype; `None` otherwise.
///
/// Returns the posterior over `(B, Z)` codes, e.g. with [`Posterior::from_stats`] on a `(B, 2Z)` output.
pub trait Encoder {
    /// Encodes a batch; see the [trait docs](Encoder).
    fn encode(&self, x: &Tensor, condition: Option<&Tensor>) -> Result<Posterior>;
}

/// The generative network `p(x|z[, y])`.
///
/// - `z`: latent codes `(B, Z)`;
/// - `condition`: one-hot labels `(B, K)` in `z`'s dtype for a conditional VAE, `None` otherwise.
///
/// Returns the likelihood's parameters `(B, P·C, H, W)`, `P` = [`Likelihood::params_per_channel`]:
/// Bernoulli logits, or means followed by log-scales.
pub trait Decoder {
    /// Decodes a batch of codes; see the [trait docs](Decoder).
    fn decode(&self, z: &Tensor, condition: Option<&Tensor>) -> Result<Tensor>;
}

impl<T: Encoder + ?Sized> Encoder for &T {
    fn encode(&self, x: &Tensor, condition: Option<&Tensor>) -> Result<Posterior> {
        (**self).encode(x, condition)
    }
}

impl<T: Decoder + ?Sized> Decoder for &T {
    fn decode(&self, z: &Tensor, condition: Option<&Tensor>) -> Result<Tensor> {
        (**self).decode(z, condition)
    }
}

/// A variational autoencoder (Kingma & Welling 2014) over any encoder and decoder: the standard normal
/// prior `p(z)`, the posterior `q(z|x)` of the [`Encoder`], the likelihood `p(x|z)` of the [`Decoder`]
/// and the spec's [`Likelihood`]. With `num_classes > 0` it is a conditional VAE (Sohn et al. 2015):
/// every method takes `labels`, a `(B,)` integer tensor (`U8`, `U32` or `I64`) of classes below
/// `num_classes`, one-hot encoded into both networks.
///
/// Images `x` are `(B, C, H, W)` in the likelihood's range: `[0, 1]` for Bernoulli (binary data for a
/// true likelihood), `[-1, 1]` for Gaussian and discretised logistic. Shapes that do not fit the spec
/// are `Error::Shape`.
#[derive(Debug, Clone)]
pub struct Vae<E, D> {
    encoder: E,
    decoder: D,
    spec: VaeSpec,
}

impl<E: Encoder, D: Decoder> Vae<E, D> {
    /// A VAE from two networks and a validated spec.
    pub fn from_parts(encoder: E, decoder: D, spec: VaeSpec) -> Result<Self> {
        spec.validate()?;
        Ok(Self { encoder, decoder, spec })
    }

    /// The encoder.
    pub fn encoder(&self) -> &E {
        &self.encoder
    }

    /// The decoder.
    pub fn decoder(&self) -> &D {
        &self.decoder
    }

    /// The spec (image shape, latent size, likelihood, classes).
    pub fn spec(&self) -> &VaeSpec {
        &self.spec
    }

    /// The likelihood `p(x|z)`.
    pub fn likelihood(&self) -> Likelihood {
        self.spec.likelihood
    }

    /// Checks `x` against the spec: `(B, C, H, W)` floating point with `B > 0`.
    pub fn check_images(&self, context: &str, x: &Tensor) -> Result<()> {
        let s = &self.spec;
        let ok = matches!(x.dims(), &[b, c, h, w] if b > 0 && c == s.channels && h == s.height && w == s.width);
        if !ok || !x.dtype().is_float() {
            return Err(Error::shape(
                context,
                format!(
                    "images must be float (B, {}, {}, {}), got {:?} {:?}",
                    s.channels,
                    s.height,
                    s.width,
                    x.dtype(),
                    x.dims()
                ),
            ));
        }
        Ok(())
    }

    /// The decoder/encoder condition for `batch` images: one-hot `(B, K)` labels in `dtype` for a
    /// conditional VAE, `None` for an unconditional one. Labels missing from a conditional VAE, given to
    /// an unconditional one, of the wrong length or dtype, or `>= num_classes` are `Error::Shape`.
    pub fn condition(
        &self,
        labels: Option<&Tensor>,
        batch: usize,
        dtype: DType,
        device: &Device,
    ) -> Result<Option<Tensor>> {
        const CTX: &str = "Vae labels";
        let k = self.spec.num_classes;
        let labels = match (labels, k) {
            (None, 0) => return Ok(None),
            (Some(_), 0) => return Err(Error::shape(CTX, "labels given to an unconditional VAE (num_classes = 0)")),
            (None, _) => return Err(Error::shape(CTX, format!("a conditional VAE ({k} classes) needs labels"))),
            (Some(l), _) => l,
        };
        if labels.dims() != [batch] {
            return Err(Error::shape(CTX, format!("labels must be ({batch},), got {:?}", labels.dims())));
        }
        let values: Vec<i64> = match labels.dtype() {
            DType::U8 | DType::U32 | DType::I64 => labels.to_dtype(DType::I64)?.to_vec1::<i64>()?,
            dt => return Err(Error::shape(CTX, format!("labels must be U8, U32 or I64, got {dt:?}"))),
        };
        let mut one_hot = vec![0f32; batch * k];
        for (i, &y) in values.iter().enumerate() {
            if y < 0 || y as usize >= k {
                return Err(Error::shape(CTX, format!("label {y} at {i} is not in 0..{k}")));
            }
            one_hot[i * k + y as usize] = 1.0;
        }
        Ok(Some(Tensor::from_vec(one_hot, (batch, k), device)?.to_dtype(dtype)?))
    }

    /// `q(z|x[, y])`: the encoder's posterior over `(B, Z)` codes.
    pub fn encode(&self, x: &Tensor, labels: Option<&Tensor>) -> Result<Posterior> {
        self.check_images("Vae::encode", x)?;
        let cond = self.condition(labels, x.dim(0)?, x.dtype(), x.device())?;
        let q = self.encoder.encode(x, cond.as_ref())?;
        if q.batch_size() != x.dim(0)? || q.latent_dim() != self.spec.latent_dim {
            return Err(Error::shape(
                "Vae::encode",
                format!(
                    "the encoder returned a posterior over ({}, {}), expected ({}, {})",
                    q.batch_size(),
                    q.latent_dim(),
                    x.dim(0)?,
                    self.spec.latent_dim
                ),
            ));
        }
        Ok(q)
    }

    /// `p(x|z[, y])`'s parameters `(B, P·C, H, W)` for codes `z` `(B, Z)`.
    pub fn decode(&self, z: &Tensor, labels: Option<&Tensor>) -> Result<Tensor> {
        let s = &self.spec;
        if z.rank() != 2 || z.dim(1)? != s.latent_dim || z.dim(0)? == 0 {
            return Err(Error::shape("Vae::decode", format!("z must be (B, {}), got {:?}", s.latent_dim, z.dims())));
        }
        let cond = self.condition(labels, z.dim(0)?, z.dtype(), z.device())?;
        let out = self.decoder.decode(z, cond.as_ref())?;
        let want = [z.dim(0)?, s.likelihood.params_per_channel() * s.channels, s.height, s.width];
        if out.dims() != want {
            return Err(Error::shape(
                "Vae::decode",
                format!("the decoder returned {:?}, expected {want:?} for a {} likelihood", out.dims(), s.likelihood),
            ));
        }
        Ok(out)
    }

    /// One pass with one reparameterised code per image: `(q(z|x), decoder output at z ~ q)`, the decoder
    /// output `(B, P·C, H, W)` being the likelihood's parameters.
    pub fn forward(&self, x: &Tensor, labels: Option<&Tensor>, rng: &mut Rng) -> Result<(Posterior, Tensor)> {
        let q = self.encode(x, labels)?;
        let z = q.sample(rng)?;
        let out = self.decode(&z, labels)?;
        Ok((q, out))
    }

    /// The β-weighted minibatch objective (Kingma & Welling 2014; β-VAE, Higgins et al. 2017), one code
    /// sample per image and the closed-form KL: `total = -mean_b log p(x_b|z_b) + β · mean_b KL_b`, in nats
    /// per image. `β = 1` is the negative ELBO; [`Elbo::nll_bound`] is `-ELBO` whatever β.
    ///
    /// For free bits, call [`Vae::forward`] and [`crate::losses::elbo::elbo`] yourself.
    pub fn loss(&self, x: &Tensor, labels: Option<&Tensor>, beta: f64, rng: &mut Rng) -> Result<Elbo> {
        let (q, out) = self.forward(x, labels, rng)?;
        let ll = self.spec.likelihood.log_prob(&out, x)?;
        elbo(&ll, &q.kl()?, beta, None)
    }

    /// Reconstructions: the likelihood's mean image at the posterior mean code, `(B, C, H, W)` in the
    /// likelihood's range (deterministic).
    pub fn reconstruct(&self, x: &Tensor, labels: Option<&Tensor>) -> Result<Tensor> {
        let q = self.encode(x, labels)?;
        self.spec.likelihood.mean(&self.decode(q.mean(), labels)?)
    }

    /// `n` samples from the model: `z ~ N(0, I)` from `rng`, decoded to the likelihood's mean image
    /// `(n, C, H, W)` in its range. A conditional VAE needs `(n,)` labels. `dtype`/`device` are the model's.
    pub fn sample_prior(
        &self,
        n: usize,
        labels: Option<&Tensor>,
        dtype: DType,
        device: &Device,
        rng: &mut Rng,
    ) -> Result<Tensor> {
        if n == 0 {
            return Err(Error::config("n", "needs at least one sample"));
        }
        let z = rng.randn((n, self.spec.latent_dim), dtype, device)?;
        self.spec.likelihood.mean(&self.decode(&z, labels)?)
    }

    /// Latent interpolation: the posterior means of two images `x0`, `x1` (each `(1, C, H, W)`), `steps`
    /// codes between them ([`interpolate`], spherical or linear), decoded to mean images
    /// `(steps, C, H, W)`. A conditional VAE decodes every step with `label` (a `(1,)` tensor); the
    /// encoder sees each image with it too.
    pub fn interpolate(
        &self,
        x0: &Tensor,
        x1: &Tensor,
        steps: usize,
        how: Interpolation,
        label: Option<&Tensor>,
    ) -> Result<Tensor> {
        for x in [x0, x1] {
            if x.dims().first() != Some(&1) {
                return Err(Error::shape(
                    "Vae::interpolate",
                    format!("needs single images (1, C, H, W), got {:?}", x.dims()),
                ));
            }
        }
        let z0 = self.encode(x0, label)?.mean().clone();
        let z1 = self.encode(x1, label)?.mean().clone();
        let path = interpolate(&z0, &z1, steps, how)?;
        let labels = match label {
            Some(l) => Some(l.broadcast_as(steps)?.contiguous()?),
            None => None,
        };
        self.spec.likelihood.mean(&self.decode(&path, labels.as_ref())?)
    }
}

/// Originals and reconstructions interleaved, `(2B, C, H, W)` from two `(B, C, H, W)` batches: in a grid
/// with an even number of images per row, each original sits left of its reconstruction.
pub fn side_by_side(originals: &Tensor, reconstructions: &Tensor) -> Result<Tensor> {
    if originals.dims() != reconstructions.dims() || originals.rank() != 4 {
        return Err(Error::shape(
            "side_by_side",
            format!(
                "needs two (B, C, H, W) batches of one shape, got {:?} and {:?}",
                originals.dims(),
                reconstructions.dims()
            ),
        ));
    }
    let pairs = Tensor::stack(&[originals, &reconstructions.to_dtype(originals.dtype())?], 1)?;
    Ok(pairs.flatten(0, 1)?)
}
