//! Running a [`FeatureExtractor`] over a whole [`ImageDataset`] in batches.

use candle_core::{Device, Tensor};

use super::FeatureExtractor;
use crate::data::ImageDataset;
use crate::{Error, Result};

/// Features `(N, D)` and, when the extractor has a classifier head, logits `(N, K)` of every
/// image of `dataset`, in order.
///
/// Images go through the extractor in batches of `batch_size` on `device`, mapped from the data
/// set's `[0, 1]` to the extractor's [`FeatureExtractor::input_range`]; `progress(done, total)`
/// is called after each batch (pass `|_, _| {}` for none). The outputs are gathered on the CPU.
///
/// Errors: `Error::Shape` when the images are not the extractor's `(C, H, W)`, `Error::Config`
/// for `batch_size = 0`, `Error::Data` for an empty data set.
pub fn dataset_features(
    extractor: &dyn FeatureExtractor,
    dataset: &ImageDataset,
    batch_size: usize,
    device: &Device,
    mut progress: impl FnMut(usize, usize),
) -> Result<(Tensor, Option<Tensor>)> {
    if batch_size == 0 {
        return Err(Error::config("batch_size", "must be > 0"));
    }
    if dataset.is_empty() {
        return Err(Error::data(dataset.name(), "no images to extract features from"));
    }
    if dataset.image_shape() != extractor.input_shape() {
        return Err(Error::shape(
            "dataset_features",
            format!(
                "data set `{}` has images {:?} but the extractor takes {:?}",
                dataset.name(),
                dataset.image_shape(),
                extractor.input_shape()
            ),
        ));
    }
    let (lo, hi) = extractor.input_range();
    let n = dataset.len();
    let (mut feats, mut logits) = (Vec::new(), Vec::new());
    let mut has_logits = true;
    for start in (0..n).step_by(batch_size) {
        let idx: Vec<usize> = (start..(start + batch_size).min(n)).collect();
        let x = dataset.images(&idx, device)?.affine(hi - lo, lo)?;
        let (f, l) = extractor.features_and_logits(&x)?;
        feats.push(f.to_device(&Device::Cpu)?);
        match l {
            Some(l) if has_logits => logits.push(l.to_device(&Device::Cpu)?),
            _ => has_logits = false,
        }
        progress(start + idx.len(), n);
    }
    let logits = if has_logits { Some(Tensor::cat(&logits, 0)?) } else { None };
    Ok((Tensor::cat(&feats, 0)?, logits))
}
