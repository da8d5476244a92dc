//! Sampling from a trained generator: fixed-noise grids to watch training, random samples, and
//! latent interpolations (linear or spherical, White 2016).

use candle_core::Tensor;

use super::traits::Generator;
use crate::nn::latent::{interpolate, Interpolation};
use crate::rng::Rng;
use crate::{Error, Result};

/// Latent codes (and labels) drawn once and reused, so that sample grids taken during
/// training show the same codes as the generator learns (Radford et al. 2016's fixed noise).
///
/// For a conditional generator with `K` classes, sample `i` of `n` gets label `i·K/n`: the
/// classes come in contiguous blocks, so with `n = r·K` and [`FixedNoise::nrow`] = `r` each row
/// of the grid is one class.
#[derive(Debug, Clone)]
pub struct FixedNoise {
    z: Tensor,
    labels: Option<Tensor>,
    nrow: usize,
}

impl FixedNoise {
    /// `n` codes from `gen`'s prior, drawn with `rng` (and labels for a conditional generator).
    ///
    /// Errors: [`Error::Config`] for `n = 0`, or fewer samples than classes.
    pub fn new<G: Generator + ?Sized>(gen: &G, n: usize, rng: &mut Rng) -> Result<Self> {
        if n == 0 {
            return Err(Error::config("n", "a fixed-noise batch needs at least one sample"));
        }
        let z = gen.sample_latent(n, rng)?;
        let (labels, nrow) = match gen.num_classes() {
            None => (None, (n as f64).sqrt().ceil() as usize),
            Some(k) if n < k => {
                return Err(Error::config("n", format!("{n} samples cannot show all {k} classes")));
            }
            Some(k) => {
                let v: Vec<u32> = (0..n).map(|i| (i * k / n) as u32).collect();
                let nrow = if n % k == 0 { n / k } else { (n as f64).sqrt().ceil() as usize };
                (Some(Tensor::from_vec(v, n, z.device())?), nrow)
            }
        };
        Ok(Self { z, labels, nrow })
    }

    /// The codes `(n, D)`.
    pub fn z(&self) -> &Tensor {
        &self.z
    }

    /// The labels `(n,)` (`U32`) of a conditional generator.
    pub fn labels(&self) -> Option<&Tensor> {
        self.labels.as_ref()
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.z.dim(0).unwrap_or(0)
    }

    /// `false`: a `FixedNoise` always holds at least one code.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Images per grid row: one class per row for a conditional generator (when `n` is a
    /// multiple of `K`), else about `√n`. Pass it as `GridOptions::nrow`.
    pub fn nrow(&self) -> usize {
        self.nrow
    }
}

/// The images `(n, C, H, W)` in `[-1, 1]` of `noise`, generated in evaluation mode (batch norm
/// uses its running statistics), detached.
pub fn sample<G: Generator + ?Sized>(gen: &G, noise: &FixedNoise) -> Result<Tensor> {
    Ok(gen.generate(noise.z(), noise.labels(), false)?.detach())
}

/// `n` fresh samples `(n, C, H, W)` in `[-1, 1]` (evaluation mode, detached): codes from the
/// prior and, for a conditional generator, `labels` `(n,)` or uniform labels when `None`.
pub fn sample_random<G: Generator + ?Sized>(
    gen: &G,
    n: usize,
    labels: Option<&Tensor>,
    rng: &mut Rng,
) -> Result<Tensor> {
    if n == 0 {
        return Err(Error::config("n", "needs at least one sample"));
    }
    let z = gen.sample_latent(n, rng)?;
    let drawn = match (gen.num_classes(), labels) {
        (Some(k), None) => Some(rng.randint(n, 0, k as u32, z.device())?),
        _ => None,
    };
    Ok(gen.generate(&z, labels.or(drawn.as_ref()), false)?.detach())
}

/// A grid of latent walks, `(rows · steps, C, H, W)` in `[-1, 1]`: row `r` goes in `steps`
/// equal steps from one code of the prior to another (both ends included), by `how`
/// ([`Interpolation::Spherical`] keeps the norm typical of a Gaussian prior, White 2016). For a
/// conditional generator, row `r` keeps class `r mod K` along the walk, so the row shows the
/// style changing within a class. Evaluation mode, detached; show it with `nrow = steps`.
///
/// Errors: [`Error::Config`] for `rows = 0` or `steps < 2`.
pub fn interpolation_grid<G: Generator + ?Sized>(
    gen: &G,
    rows: usize,
    steps: usize,
    how: Interpolation,
    rng: &mut Rng,
) -> Result<Tensor> {
    if rows == 0 {
        return Err(Error::config("rows", "needs at least one row"));
    }
    if steps < 2 {
        return Err(Error::config("steps", format!("an interpolation needs at least 2 steps, got {steps}")));
    }
    let mut codes = Vec::with_capacity(rows);
    for _ in 0..rows {
        let ends = gen.sample_latent(2, rng)?;
        codes.push(interpolate(&ends.get(0)?, &ends.get(1)?, steps, how)?);
    }
    let z = Tensor::cat(&codes, 0)?;
    let labels = match gen.num_classes() {
        Some(k) => {
            let v: Vec<u32> = (0..rows * steps).map(|i| ((i / steps) % k) as u32).collect();
            Some(Tensor::from_vec(v, rows * steps, z.device())?)
        }
        None => None,
    };
    Ok(gen.generate(&z, labels.as_ref(), false)?.detach())
}
