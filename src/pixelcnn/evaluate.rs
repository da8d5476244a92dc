//! Test likelihood: negative log-likelihood in nats per image and bits per dimension.

use super::model::PixelCnn;
use crate::data::ImageDataset;
use crate::error::check_finite;
use crate::losses::autoregressive::nats_to_bits_per_dim;
use crate::{Error, Result};

/// What [`evaluate`] measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EvalReport {
    /// Mean `-log p(x)` in nats per image (exact: the model's likelihood is discrete and normalised).
    pub nll_nats_per_image: f64,
    /// The same in bits per sub-pixel: `nll / (C·H·W · ln 2)`; 8 is a uniform model.
    pub bits_per_dim: f64,
    /// Images evaluated.
    pub num_images: usize,
}

/// The exact test NLL of `model` on `data` (8-bit images; labels for a conditional model), over the first
/// `max_images` images (all with `None`), `batch_size` at a time, without gradients.
///
/// An empty selection or `batch_size = 0` is `Error::Config`; a data set with the wrong channel count is
/// `Error::Shape`; a non-finite NLL is `Error::NonFinite`.
pub fn evaluate(
    model: &PixelCnn,
    data: &ImageDataset,
    max_images: Option<usize>,
    batch_size: usize,
) -> Result<EvalReport> {
    let n = max_images.map_or(data.len(), |m| m.min(data.len()));
    if n == 0 {
        return Err(Error::config("max_images", "evaluation needs at least one image"));
    }
    if batch_size == 0 {
        return Err(Error::config("batch_size", "must be > 0"));
    }
    let (c, h, w) = data.image_shape();
    let device = model.device();
    let conditional = model.config().num_classes > 0;
    let mut total = 0.0f64;
    for start in (0..n).step_by(batch_size) {
        let idx: Vec<usize> = (start..(start + batch_size).min(n)).collect();
        let images = data.images_u8(&idx, device)?;
        let labels = if conditional { Some(data.labels_tensor(&idx, device)?) } else { None };
        let nll = model.nll(&images, labels.as_ref())?.detach();
        total += nll.to_dtype(candle_core::DType::F64)?.sum_all()?.to_scalar::<f64>()?;
    }
    let nats = check_finite("PixelCNN test NLL", None, total / n as f64)?;
    Ok(EvalReport { nll_nats_per_image: nats, bits_per_dim: nats_to_bits_per_dim(nats, c * h * w)?, num_images: n })
}
