//! The [`FeatureExtractor`] trait: what every metric of this module measures images through.

use candle_core::Tensor;

use crate::Result;

/// Maps images to feature vectors (and, for classifiers, class logits).
///
/// FID, KID and precision/recall compare the distributions of `features`; the
/// Inception-Score-style [`super::inception_score`] needs `logits`. Implement it for any network:
/// Inception-v3 for comparable-with-the-literature FID, or the bundled
/// [`super::FmnistClassifier`] for "FID-FMNIST" on 28x28 grey images.
pub trait FeatureExtractor {
    /// Features of `images`: `(B, C, H, W)` in the range [`Self::input_range`] says, to
    /// `(B, D)` with `D = self.feature_dim()`. Errors with `Error::Shape` for images it cannot take.
    fn features(&self, images: &Tensor) -> Result<Tensor>;

    /// Class logits `(B, K)` of `images`, or `None` when the extractor has no classifier head.
    fn logits(&self, images: &Tensor) -> Result<Option<Tensor>> {
        let _ = images;
        Ok(None)
    }

    /// Features and logits from one forward pass; the default calls both methods.
    fn features_and_logits(&self, images: &Tensor) -> Result<(Tensor, Option<Tensor>)> {
        Ok((self.features(images)?, self.logits(images)?))
    }

    /// The feature dimension `D`.
    fn feature_dim(&self) -> usize;

    /// The `(C, H, W)` of the images it takes.
    fn input_shape(&self) -> (usize, usize, usize);

    /// The value range of the pixels it expects, `(lo, hi)`; `(-1.0, 1.0)` for the crate's models.
    fn input_range(&self) -> (f64, f64) {
        (-1.0, 1.0)
    }
}
