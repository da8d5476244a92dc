//! Streaming mean and covariance of feature vectors in f64, mergeable and saveable.

use std::path::Path;

use candle_core::{DType, Device, Tensor, Var};

use crate::io::Checkpoint;
use crate::optim::NamedVars;
use crate::{Error, Result};

const SECTION: &str = "stats";
const KEY_COUNT: &str = "feature_stats_count";

/// Mean and covariance of `D`-dimensional features, accumulated batch by batch without keeping
/// the features.
///
/// Holds the count `n`, the mean and the matrix of summed centred outer products
/// `M2 = Σ (x - mean)(x - mean)ᵀ`, all in f64. A batch is folded in with the pairwise update of
/// Chan, Golub & LeVeque (1979): for parts `a`, `b` with `δ = mean_b - mean_a`,
/// `mean = mean_a + δ n_b / n` and `M2 = M2_a + M2_b + δ δᵀ n_a n_b / n`; it is exact in exact
/// arithmetic and avoids the cancellation of `Σ x xᵀ - n mean meanᵀ`. The same rule
/// [`merge`](Self::merge)s statistics computed in parallel.
///
/// Save the statistics of a reference set once with [`save`](Self::save) (a safetensors
/// [`Checkpoint`]) and [`load`](Self::load) them for every evaluation.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureStats {
    dim: usize,
    count: u64,
    mean: Vec<f64>,
    m2: Vec<f64>,
}

impl FeatureStats {
    /// Empty statistics of `dim`-dimensional features (`dim > 0`, else `Error::Config`).
    pub fn new(dim: usize) -> Result<Self> {
        if dim == 0 {
            return Err(Error::config("FeatureStats.dim", "must be > 0"));
        }
        Ok(Self { dim, count: 0, mean: vec![0.0; dim], m2: vec![0.0; dim * dim] })
    }

    /// Statistics of one `(N, D)` feature matrix.
    pub fn from_features(features: &Tensor) -> Result<Self> {
        let dim = match features.dims() {
            [_, d] => *d,
            d => return Err(Error::shape("FeatureStats::from_features", format!("expected (N, D), got {d:?}"))),
        };
        let mut s = Self::new(dim)?;
        s.update(features)?;
        Ok(s)
    }

    /// Folds in a batch of features `(B, D)` (any float dtype, any device; B may be 0).
    /// `Error::Shape` when `D` differs, `Error::NonFinite` for NaN/inf features.
    pub fn update(&mut self, features: &Tensor) -> Result<()> {
        let b = match features.dims() {
            [b, d] if *d == self.dim => *b,
            d => {
                return Err(Error::shape(
                    "FeatureStats::update",
                    format!("expected features (B, {}), got {d:?}", self.dim),
                ))
            }
        };
        if b == 0 {
            return Ok(());
        }
        let x = features.to_device(&Device::Cpu)?.to_dtype(DType::F64)?;
        let mean = x.mean_keepdim(0)?;
        let centred = x.broadcast_sub(&mean)?;
        let m2 = centred.t()?.matmul(&centred)?;
        let batch = Self {
            dim: self.dim,
            count: b as u64,
            mean: mean.flatten_all()?.to_vec1()?,
            m2: m2.flatten_all()?.to_vec1()?,
        };
        if let Some(v) = batch.mean.iter().chain(&batch.m2).find(|v| !v.is_finite()) {
            return Err(Error::non_finite("features in FeatureStats::update", None, *v));
        }
        self.merge(&batch)
    }

    /// Combines with statistics of other features of the same dimension (Chan et al. 1979): the
    /// result equals one pass over both sets.
    pub fn merge(&mut self, other: &Self) -> Result<()> {
        if other.dim != self.dim {
            return Err(Error::shape("FeatureStats::merge", format!("dimension {} vs {}", self.dim, other.dim)));
        }
        if other.count == 0 {
            return Ok(());
        }
        if self.count == 0 {
            *self = other.clone();
            return Ok(());
        }
        let (na, nb) = (self.count as f64, other.count as f64);
        let n = na + nb;
        let delta: Vec<f64> = other.mean.iter().zip(&self.mean).map(|(b, a)| b - a).collect();
        for (m, d) in self.mean.iter_mut().zip(&delta) {
            *m += d * nb / n;
        }
        let w = na * nb / n;
        for i in 0..self.dim {
            for j in 0..self.dim {
                self.m2[i * self.dim + j] += other.m2[i * self.dim + j] + delta[i] * delta[j] * w;
            }
        }
        self.count += other.count;
        Ok(())
    }

    /// The feature dimension `D`.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The number of feature vectors seen.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The mean, `D` values.
    pub fn mean(&self) -> &[f64] {
        &self.mean
    }

    /// The unbiased sample covariance `M2 / (n - 1)`, `D x D` row-major (as numpy's `np.cov`,
    /// which FID implementations use). `Error::Data` with fewer than 2 vectors.
    pub fn covariance(&self) -> Result<Vec<f64>> {
        if self.count < 2 {
            return Err(Error::data(
                "FeatureStats",
                format!("covariance needs >= 2 feature vectors, have {}", self.count),
            ));
        }
        let s = 1.0 / (self.count - 1) as f64;
        Ok(self.m2.iter().map(|v| v * s).collect())
    }

    /// Writes the statistics to a safetensors file (f64 tensors `stats/mean`, `stats/m2`, the
    /// count in the metadata), atomically.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let mut ck = Checkpoint::new(0);
        let mean = Var::from_tensor(&Tensor::from_slice(&self.mean, self.dim, &Device::Cpu)?)?;
        let m2 = Var::from_tensor(&Tensor::from_slice(&self.m2, (self.dim, self.dim), &Device::Cpu)?)?;
        ck.add_vars(SECTION, &NamedVars::from_pairs(vec![("mean".into(), mean), ("m2".into(), m2)])?)?;
        ck.set_meta(KEY_COUNT, self.count.to_string());
        ck.save(path)
    }

    /// Reads statistics written by [`save`](Self::save), verifying checksums and shapes.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let ck = Checkpoint::load(path)?;
        let bad = |m: &str| Error::checkpoint(path, format!("not a FeatureStats file: {m}"));
        let count = ck.meta(KEY_COUNT).and_then(|c| c.parse::<u64>().ok()).ok_or_else(|| bad("no count"))?;
        let mean = ck.tensor(SECTION, "mean").ok_or_else(|| bad("no mean"))?;
        let m2 = ck.tensor(SECTION, "m2").ok_or_else(|| bad("no m2"))?;
        let dim = match mean.dims() {
            [d] if *d > 0 => *d,
            _ => return Err(bad("mean is not a non-empty vector")),
        };
        if m2.dims() != [dim, dim] || mean.dtype() != DType::F64 || m2.dtype() != DType::F64 {
            return Err(bad("m2 is not a D x D f64 matrix"));
        }
        Ok(Self { dim, count, mean: mean.to_vec1()?, m2: m2.flatten_all()?.to_vec1()? })
    }
}
