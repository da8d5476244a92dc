//! The approximate posterior `q(z|x) = N(mean, diag(exp(logvar)))` of a VAE and the standard normal prior.

use candle_core::{DType, Tensor};

use crate::losses::elbo::{gaussian_kl_standard, reparameterize};
use crate::rng::Rng;
use crate::{Error, Result};

const HALF_LN_TWO_PI: f64 = 0.918_938_533_204_672_8;

/// A diagonal Gaussian over latent codes, one per image: `mean` and `logvar` (natural log of σ²) are
/// both `(B, Z)`, same floating-point dtype and device. What an [`Encoder`](super::Encoder) returns.
///
/// Sampling is reparameterised (Kingma & Welling 2014): `z = mean + exp(logvar/2) · ε`, `ε ~ N(0, I)` from
/// the crate's [`Rng`], so gradients flow into `mean` and `logvar`.
///
/// ```
/// use candle_core::{DType, Device, Tensor};
/// use candle_generative::rng::Rng;
/// use candle_generative::vae::Posterior;
///
/// let stats = Tensor::zeros((4, 6), DType::F32, &Device::Cpu)?; // (B, 2Z): mean 0, logvar 0
/// let q = Posterior::from_stats(&stats)?;
/// assert_eq!(q.latent_dim(), 3);
/// let z = q.sample(&mut Rng::new(0))?; // (4, 3)
/// assert_eq!(z.dims(), &[4, 3]);
/// // q is the prior itself here: no KL.
/// assert_eq!(q.kl()?.sum_all()?.to_scalar::<f32>()?, 0.0);
/// # Ok::<(), candle_generative::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Posterior {
    mean: Tensor,
    logvar: Tensor,
}

impl Posterior {
    /// A posterior from its mean and log-variance, both `(B, Z)` with `Z > 0`, same floating-point dtype
    /// (`Error::Shape` otherwise).
    pub fn new(mean: Tensor, logvar: Tensor) -> Result<Self> {
        const CTX: &str = "Posterior::new";
        if mean.rank() != 2 || mean.dim(1)? == 0 || mean.dims() != logvar.dims() {
            return Err(Error::shape(
                CTX,
                format!(
                    "mean and logvar must both be (B, Z) with Z > 0, got {:?} and {:?}",
                    mean.dims(),
                    logvar.dims()
                ),
            ));
        }
        if !mean.dtype().is_float() || mean.dtype() != logvar.dtype() {
            return Err(Error::shape(
                CTX,
                format!("mean and logvar must share a float dtype, got {:?} and {:?}", mean.dtype(), logvar.dtype()),
            ));
        }
        Ok(Self { mean, logvar })
    }

    /// Splits an encoder's `(B, 2Z)` output: the first `Z` columns are the mean, the last `Z` the
    /// log-variance. An odd or zero column count is `Error::Shape`.
    pub fn from_stats(stats: &Tensor) -> Result<Self> {
        if stats.rank() != 2 || stats.dim(1)? == 0 || stats.dim(1)? % 2 != 0 {
            return Err(Error::shape(
                "Posterior::from_stats",
                format!("encoder output must be (B, 2Z) with Z > 0, got {:?}", stats.dims()),
            ));
        }
        let z = stats.dim(1)? / 2;
        Self::new(stats.narrow(1, 0, z)?, stats.narrow(1, z, z)?)
    }

    /// The mean `(B, Z)`: the code reconstructions and interpolations use.
    pub fn mean(&self) -> &Tensor {
        &self.mean
    }

    /// The log-variance `(B, Z)`.
    pub fn logvar(&self) -> &Tensor {
        &self.logvar
    }

    /// The standard deviation `exp(logvar / 2)`, `(B, Z)`.
    pub fn std(&self) -> Result<Tensor> {
        Ok(self.logvar.affine(0.5, 0.0)?.exp()?)
    }

    /// Batch size `B`.
    pub fn batch_size(&self) -> usize {
        self.mean.dims()[0]
    }

    /// Latent dimensions `Z`.
    pub fn latent_dim(&self) -> usize {
        self.mean.dims()[1]
    }

    /// One reparameterised draw `z = mean + σ ε`, `(B, Z)`, differentiable in mean and log-variance.
    pub fn sample(&self, rng: &mut Rng) -> Result<Tensor> {
        reparameterize(&self.mean, &self.logvar, rng)
    }

    /// `k` reparameterised draws per image, `(k, B, Z)` (sample-major, as importance weighting wants).
    pub fn sample_n(&self, k: usize, rng: &mut Rng) -> Result<Tensor> {
        if k == 0 {
            return Err(Error::config("k", "needs at least one sample"));
        }
        let (b, z) = (self.batch_size(), self.latent_dim());
        let eps = rng.randn((k, b, z), self.mean.dtype(), self.mean.device())?;
        Ok(self.mean.unsqueeze(0)?.broadcast_add(&self.std()?.unsqueeze(0)?.broadcast_mul(&eps)?)?)
    }

    /// `KL(q(z|x) || N(0, I))` per latent dimension, `(B, Z)` in nats, in closed form (Kingma & Welling
    /// 2014, appendix B): `1/2 (exp(logvar) + mean² - 1 - logvar)`. Sum over `Z` for the per-image KL.
    pub fn kl(&self) -> Result<Tensor> {
        gaussian_kl_standard(&self.mean, &self.logvar)
    }

    /// `log q(z|x) = Σ_j -1/2 (ln 2π + logvar_j + (z_j - mean_j)² / exp(logvar_j))` in nats, summed over
    /// the latent dimensions: `z` is `(B, Z)` (result `(B,)`) or `(k, B, Z)` (result `(k, B)`).
    pub fn log_prob(&self, z: &Tensor) -> Result<Tensor> {
        let (b, zd) = (self.batch_size(), self.latent_dim());
        let ok = match z.dims() {
            [bb, zz] => *bb == b && *zz == zd,
            [_, bb, zz] => *bb == b && *zz == zd,
            _ => false,
        };
        if !ok || z.dtype() != self.mean.dtype() {
            return Err(Error::shape(
                "Posterior::log_prob",
                format!(
                    "z must be (B, Z) or (k, B, Z) with B = {b}, Z = {zd} in {:?}, got {:?}",
                    self.mean.dtype(),
                    z.dims()
                ),
            ));
        }
        let diff = z.broadcast_sub(&self.mean)?;
        let scaled = diff.broadcast_mul(&self.logvar.affine(-0.5, 0.0)?.exp()?)?;
        let per_dim = scaled.sqr()?.broadcast_add(&self.logvar)?.affine(-0.5, -HALF_LN_TWO_PI)?;
        Ok(per_dim.sum(per_dim.rank() - 1)?)
    }

    /// The same posterior with mean and log-variance converted to `dtype` (e.g. F64 for evaluation).
    pub fn to_dtype(&self, dtype: DType) -> Result<Self> {
        Self::new(self.mean.to_dtype(dtype)?, self.logvar.to_dtype(dtype)?)
    }

    /// The same posterior cut off from the graph (no gradients flow back through it).
    pub fn detach(&self) -> Self {
        Self { mean: self.mean.detach(), logvar: self.logvar.detach() }
    }
}

/// `log N(z; 0, I) = Σ_j -1/2 (ln 2π + z_j²)` in nats, summed over the last dimension: `(B, Z) -> (B,)`,
/// `(k, B, Z) -> (k, B)`. The prior of every VAE of this module.
pub fn standard_normal_log_prob(z: &Tensor) -> Result<Tensor> {
    if z.rank() == 0 || !z.dtype().is_float() {
        return Err(Error::shape(
            "standard_normal_log_prob",
            format!("z must be a float tensor (..., Z), got {:?} {:?}", z.dtype(), z.dims()),
        ));
    }
    Ok(z.sqr()?.affine(-0.5, -HALF_LN_TWO_PI)?.sum(z.rank() - 1)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn log_probs_match_the_formula_and_shapes() -> Result<()> {
        let dev = Device::Cpu;
        let mean = Tensor::new(&[[0.5f64, -1.0], [2.0, 0.0]], &dev)?;
        let logvar = Tensor::new(&[[0.0f64, 1.0], [-2.0, 0.5]], &dev)?;
        let q = Posterior::new(mean.clone(), logvar.clone())?;
        let z = Tensor::new(&[[0.0f64, 0.0], [1.0, 1.0]], &dev)?;
        let got = q.log_prob(&z)?.to_vec1::<f64>()?;
        let (m, lv, zv) = (mean.to_vec2::<f64>()?, logvar.to_vec2::<f64>()?, z.to_vec2::<f64>()?);
        for b in 0..2 {
            let want: f64 = (0..2)
                .map(|j| {
                    -0.5 * ((2.0 * std::f64::consts::PI).ln()
                        + lv[b][j]
                        + (zv[b][j] - m[b][j]).powi(2) / lv[b][j].exp())
                })
                .sum();
            assert!((got[b] - want).abs() < 1e-12, "{b}: {} vs {want}", got[b]);
        }
        let prior = standard_normal_log_prob(&z)?.to_vec1::<f64>()?;
        assert!((prior[1] - (-(2.0 * std::f64::consts::PI).ln() - 1.0)).abs() < 1e-12);
        let zs = q.sample_n(5, &mut Rng::new(1))?;
        assert_eq!(zs.dims(), &[5, 2, 2]);
        assert_eq!(q.log_prob(&zs)?.dims(), &[5, 2]);
        assert!(q.log_prob(&Tensor::zeros((3, 2), DType::F64, &dev)?).is_err());
        assert!(Posterior::from_stats(&Tensor::zeros((3, 5), DType::F32, &dev)?).is_err());
        assert!(Posterior::new(mean.clone(), logvar.to_dtype(DType::F32)?).is_err());
        Ok(())
    }
}
