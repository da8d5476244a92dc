//! Evaluation metrics for generative models over any [`FeatureExtractor`].
//!
//! - [`FeatureExtractor`]: images to features (and logits);
//! - [`dataset_features`]: an extractor over a whole data set, in batches;
//! - [`FeatureStats`]: streaming, mergeable, saveable mean and covariance in f64;
//! - [`frechet_distance`] / [`fid`]: Fréchet distance between Gaussians (Heusel et al. 2017);
//! - [`kid`]: Kernel Inception Distance (Bińkowski et al. 2018), [`mmd2_unbiased`];
//! - [`inception_score`]: the Inception Score (Salimans et al. 2016) from any logits;
//! - [`precision_recall`]: improved precision and recall (Kynkäänniemi et al. 2019);
//! - [`FmnistClassifier`]: the bundled 28x28 grey classifier, the feature space of "FID-FMNIST"
//!   (not comparable with Inception-based FID);
//! - [`linalg`]: the symmetric eigen-solver behind the matrix square root.
//!
//! See `docs/metrics.md` for a walk-through.

mod extractor;
mod features;
pub mod fmnist_classifier;
mod frechet;
mod inception_score;
mod kid;
pub mod linalg;
mod precision_recall;
mod stats;

pub use extractor::FeatureExtractor;
pub use features::dataset_features;
pub use fmnist_classifier::{ClassifierConfig, FmnistClassifier};
pub use frechet::{fid, frechet_distance};
pub use inception_score::inception_score;
pub use kid::{kid, mmd2_biased, mmd2_unbiased, Kid, KidOptions};
pub use precision_recall::{precision_recall, PrecisionRecall};
pub use stats::FeatureStats;

// Compiles the metrics guide's code with the doc tests.
#[doc = include_str!("../../docs/metrics.md")]
#[cfg(doctest)]
pub struct MetricsGuideDoctests;
