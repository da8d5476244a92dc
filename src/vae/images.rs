//! PNG grids of a VAE's prior samples, reconstructions and a latent interpolation.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

use super::model::{side_by_side, Decoder, Encoder, Vae};
use crate::data::ImageDataset;
use crate::io::{save_grid, GridOptions};
use crate::nn::latent::Interpolation;
use crate::rng::Rng;
use crate::{Error, Result};

/// The files [`save_grids`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GridPaths {
    /// `samples.png`: decoded prior samples (the likelihood's mean images).
    pub samples: PathBuf,
    /// `reconstructions.png`: each input (as the model sees it, e.g. binarised) left of its
    /// reconstruction.
    pub reconstructions: PathBuf,
    /// `interpolation.png`: rows of spherical interpolations between the codes of two test images.
    pub interpolation: PathBuf,
}

/// Writes three grids into `dir` (created if missing), in the likelihood's value range:
/// - `samples.png`: 64 prior samples, 8 per row; a conditional VAE gets `num_classes` per row, one
///   class per column (up to 10 rows);
/// - `reconstructions.png`: the first 32 images of `data` prepared as in training
///   ([`Likelihood::prepare`](super::Likelihood::prepare), noise from `seed`), each next to its
///   reconstruction from the posterior mean, 8 pairs per row;
/// - `interpolation.png`: 4 rows of 10 steps between test images `2i` and `2i + 1`.
///
/// `dtype`/`device` are the model's; `data` must hold at least 32 images of the model's shape.
pub fn save_grids<E: Encoder, D: Decoder>(
    model: &Vae<E, D>,
    data: &ImageDataset,
    dir: impl AsRef<Path>,
    seed: u64,
    dtype: DType,
    device: &Device,
) -> Result<GridPaths> {
    const SHOWN: usize = 32;
    if data.len() < SHOWN {
        return Err(Error::config("data", format!("needs at least {SHOWN} images, got {}", data.len())));
    }
    let dir = dir.as_ref();
    let spec = model.spec();
    let (lo, hi) = spec.likelihood.data_range();
    let opts = |nrow: usize| GridOptions { nrow, range: (lo, hi), pad_value: lo, ..GridOptions::default() };
    let mut rng = Rng::new(seed);
    let k = spec.num_classes;

    let (n, nrow, labels) = if k > 0 {
        let rows = 10usize.min(64usize.div_ceil(k)).max(1);
        let l: Vec<u32> = (0..rows * k).map(|i| (i % k) as u32).collect();
        (rows * k, k, Some(Tensor::from_vec(l, rows * k, device)?))
    } else {
        (64, 8, None)
    };
    let samples = model.sample_prior(n, labels.as_ref(), dtype, device, &mut rng)?;
    let samples_path = save_grid(dir.join("samples.png"), &samples, &opts(nrow))?;

    let indices: Vec<usize> = (0..SHOWN).collect();
    let x = spec.likelihood.prepare(&data.images(&indices, device)?.to_dtype(dtype)?, &mut rng)?;
    let labels = if k > 0 { Some(data.labels_tensor(&indices, device)?) } else { None };
    let recon = model.reconstruct(&x, labels.as_ref())?;
    let recon_path = save_grid(dir.join("reconstructions.png"), &side_by_side(&x, &recon)?, &opts(16))?;

    let mut rows = Vec::new();
    for i in 0..4 {
        let (a, b) = (x.narrow(0, 2 * i, 1)?, x.narrow(0, 2 * i + 1, 1)?);
        let label = match &labels {
            Some(l) => Some(l.narrow(0, 2 * i, 1)?),
            None => None,
        };
        rows.push(model.interpolate(&a, &b, 10, Interpolation::Spherical, label.as_ref())?);
    }
    let interp_path = save_grid(dir.join("interpolation.png"), &Tensor::cat(&rows, 0)?, &opts(10))?;
    Ok(GridPaths { samples: samples_path, reconstructions: recon_path, interpolation: interp_path })
}
