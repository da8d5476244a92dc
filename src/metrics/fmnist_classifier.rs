//! A small CNN classifier for 28x28 grey images whose penultimate layer is the feature space of
//! "FID-FMNIST".
//!
//! Architecture (about 52 000 parameters, 0.2 MB in f32; small so that it trains in minutes on a CPU):
//! ```text
//! (B, 1, 28, 28) in [-1, 1]
//!   conv 3x3 1->16, ReLU, max-pool 2  -> (B, 16, 14, 14)
//!   conv 3x3 16->32, ReLU, max-pool 2 -> (B, 32, 7, 7)
//!   conv 3x3 32->32, ReLU, max-pool 2 -> (B, 32, 3, 3)
//!   linear 288->128, ReLU             -> features (B, 128)
//!   linear 128->10                    -> logits (B, 10)
//! ```
//! `examples/train_classifier.rs` trains it on Fashion-MNIST and writes the weights the crate
//! ships as `assets/fmnist_classifier.safetensors`; [`FmnistClassifier::pretrained`] loads that
//! file and checks its fingerprint, so every user measures FID-FMNIST in the same feature space.
//!
//! FID-FMNIST numbers are **not comparable** with the Inception-v3 FID of the literature: the
//! feature space, its dimension and scale differ. Compare them only with each other.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Module, Tensor, D};
use candle_nn::{Conv2dConfig, Linear, VarBuilder, VarMap};
use serde::{Deserialize, Serialize};

use super::FeatureExtractor;
use crate::io::Checkpoint;
use crate::nn::Conv2d;
use crate::{Error, Result};

/// The checkpoint section holding the weights, and the config's name in the metadata.
pub const CLASSIFIER_SECTION: &str = "classifier";

/// The fingerprint (FNV-1a 64 of the weight bytes, in name order) of the shipped weights; see
/// [`FmnistClassifier::fingerprint`].
pub const PRETRAINED_FINGERPRINT: &str = "89fff744012ce7de";

/// The shipped weights: `assets/fmnist_classifier.safetensors` in the crate's source directory.
pub fn pretrained_weights_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("assets").join("fmnist_classifier.safetensors")
}

/// Shape of the [`FmnistClassifier`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassifierConfig {
    /// Output channels of the three 3x3 convolutions.
    pub channels: [usize; 3],
    /// Width of the penultimate layer: the feature dimension `D`.
    pub feature_dim: usize,
    /// Number of classes `K` (10 for Fashion-MNIST).
    pub num_classes: usize,
}

impl Default for ClassifierConfig {
    /// `channels = [16, 32, 32]`, `feature_dim = 128`, `num_classes = 10`: the shipped classifier.
    fn default() -> Self {
        Self { channels: [16, 32, 32], feature_dim: 128, num_classes: 10 }
    }
}

impl ClassifierConfig {
    /// Every size must be > 0 and `num_classes` >= 2; `Error::Config` names the field.
    pub fn validate(&self) -> Result<()> {
        if self.channels.contains(&0) {
            return Err(Error::config(
                "ClassifierConfig.channels",
                format!("must all be > 0, got {:?}", self.channels),
            ));
        }
        if self.feature_dim == 0 {
            return Err(Error::config("ClassifierConfig.feature_dim", "must be > 0"));
        }
        if self.num_classes < 2 {
            return Err(Error::config(
                "ClassifierConfig.num_classes",
                format!("must be >= 2, got {}", self.num_classes),
            ));
        }
        Ok(())
    }
}

/// The CNN classifier described in the [module docs](self), for `(B, 1, 28, 28)` images in `[-1, 1]`.
#[derive(Debug, Clone)]
pub struct FmnistClassifier {
    convs: [Conv2d; 3],
    hidden: Linear,
    head: Linear,
    config: ClassifierConfig,
}

impl FmnistClassifier {
    /// Builds the network with weights from `vb` (paths `conv1..conv3`, `fc1`, `fc2`).
    pub fn new(config: ClassifierConfig, vb: VarBuilder) -> Result<Self> {
        config.validate()?;
        let conv_cfg = Conv2dConfig { padding: 1, ..Default::default() };
        let [c1, c2, c3] = config.channels;
        let convs = [
            crate::nn::conv::conv2d_layer(1, c1, 3, conv_cfg, vb.pp("conv1"))?,
            crate::nn::conv::conv2d_layer(c1, c2, 3, conv_cfg, vb.pp("conv2"))?,
            crate::nn::conv::conv2d_layer(c2, c3, 3, conv_cfg, vb.pp("conv3"))?,
        ];
        let hidden = candle_nn::linear(c3 * 3 * 3, config.feature_dim, vb.pp("fc1"))?;
        let head = candle_nn::linear(config.feature_dim, config.num_classes, vb.pp("fc2"))?;
        Ok(Self { convs, hidden, head, config })
    }

    /// The configuration.
    pub fn config(&self) -> &ClassifierConfig {
        &self.config
    }

    /// Loads a classifier saved by `examples/train_classifier.rs` (a [`Checkpoint`] with the
    /// config `"classifier"` and the weights in section `"classifier"`), on `device` in `F32`.
    /// The checkpoint's checksums and every weight's name and shape are verified.
    pub fn load(path: impl AsRef<Path>, device: &Device) -> Result<Self> {
        let ck = Checkpoint::load(path.as_ref())?;
        let config: ClassifierConfig = ck.config(CLASSIFIER_SECTION)?;
        let varmap = VarMap::new();
        let model = Self::new(config, VarBuilder::from_varmap(&varmap, DType::F32, device))?;
        ck.restore_varmap(CLASSIFIER_SECTION, &varmap)?;
        Ok(model)
    }

    /// The shipped Fashion-MNIST classifier ([`pretrained_weights_path`]), after checking that
    /// its [`Self::fingerprint`] is [`PRETRAINED_FINGERPRINT`]: other weights would give other
    /// FID-FMNIST numbers. `Error::Checkpoint` when the file is missing, corrupt or different.
    pub fn pretrained(device: &Device) -> Result<Self> {
        Self::load_verified(pretrained_weights_path(), PRETRAINED_FINGERPRINT, device)
    }

    /// [`Self::load`], then `Error::Checkpoint` unless the weights' [`Self::fingerprint`] is `expected`.
    pub fn load_verified(path: impl AsRef<Path>, expected: &str, device: &Device) -> Result<Self> {
        let path = path.as_ref();
        let model = Self::load(path, device)?;
        let fp = model.fingerprint()?;
        if fp != expected {
            return Err(Error::checkpoint(
                path,
                format!("weights fingerprint {fp} is not the expected {expected}; FID-FMNIST would differ"),
            ));
        }
        Ok(model)
    }

    /// FNV-1a (64 bit) over the f32 little-endian bytes of every weight, in a fixed order, as
    /// 16 hex digits: identifies a set of weights independently of the file's metadata.
    pub fn fingerprint(&self) -> Result<String> {
        let mut h = 0xcbf2_9ce4_8422_2325u64;
        for t in self.weights() {
            for v in t.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()? {
                for b in v.to_le_bytes() {
                    h = (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3);
                }
            }
        }
        Ok(format!("{h:016x}"))
    }

    fn weights(&self) -> Vec<Tensor> {
        let mut out = Vec::new();
        for c in &self.convs {
            out.push(c.weight().clone());
            out.extend(c.bias().cloned());
        }
        for l in [&self.hidden, &self.head] {
            out.push(l.weight().clone());
            out.extend(l.bias().cloned());
        }
        out
    }

    fn check_input(&self, images: &Tensor) -> Result<()> {
        match images.dims() {
            [b, 1, 28, 28] if *b > 0 => Ok(()),
            d => Err(Error::shape("FmnistClassifier input", format!("expected (B > 0, 1, 28, 28), got {d:?}"))),
        }
    }

    /// Penultimate features `(B, feature_dim)` (after the ReLU, so >= 0) and logits
    /// `(B, num_classes)` of `(B, 1, 28, 28)` images in `[-1, 1]`.
    pub fn forward_both(&self, images: &Tensor) -> Result<(Tensor, Tensor)> {
        self.check_input(images)?;
        let mut x = images.clone();
        for conv in &self.convs {
            x = max_pool_2x2(&conv.forward(&x)?.relu()?)?;
        }
        let feats = self.hidden.forward(&x.flatten_from(1)?)?.relu()?;
        let logits = self.head.forward(&feats)?;
        Ok((feats, logits))
    }

    /// Fraction of `images` (`(B, 1, 28, 28)` in `[-1, 1]`) whose arg-max logit equals `labels` (`(B,)` u32).
    pub fn accuracy(&self, images: &Tensor, labels: &Tensor) -> Result<f64> {
        let (_, logits) = self.forward_both(images)?;
        let pred = logits.argmax(D::Minus1)?;
        let hits = pred.eq(&labels.to_dtype(pred.dtype())?)?.to_dtype(DType::F32)?.sum_all()?.to_scalar::<f32>()?;
        Ok(hits as f64 / images.dim(0)? as f64)
    }
}

/// 2x2 max-pooling with stride 2 that drops an odd last row and column, as `max_pool2d(2)` does,
/// but cuts them off first: candle's max-pool backward maps gradients back through
/// `upsample_nearest2d`, which misaligns them with the pooling windows for odd sizes (7 -> 3
/// here). The forward is the same; the gradient becomes correct.
fn max_pool_2x2(x: &Tensor) -> Result<Tensor> {
    let (h, w) = (x.dim(2)? / 2 * 2, x.dim(3)? / 2 * 2);
    Ok(x.narrow(2, 0, h)?.narrow(3, 0, w)?.max_pool2d(2)?)
}

impl FeatureExtractor for FmnistClassifier {
    fn features(&self, images: &Tensor) -> Result<Tensor> {
        Ok(self.forward_both(images)?.0)
    }

    fn logits(&self, images: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(self.forward_both(images)?.1))
    }

    fn features_and_logits(&self, images: &Tensor) -> Result<(Tensor, Option<Tensor>)> {
        let (f, l) = self.forward_both(images)?;
        Ok((f, Some(l)))
    }

    fn feature_dim(&self) -> usize {
        self.config.feature_dim
    }

    fn input_shape(&self) -> (usize, usize, usize) {
        (1, 28, 28)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Var;

    #[test]
    fn odd_sized_max_pool_routes_the_gradient_to_the_maximum() -> Result<()> {
        // 3x3 input: the one 2x2 window is the top-left block, whose maximum is 5 at (1, 0).
        let x = Var::new(&[[[[1f32, 2.0, 9.0], [5.0, 3.0, 8.0], [7.0, 6.0, 4.0]]]], &Device::Cpu)?;
        let y = max_pool_2x2(x.as_tensor())?;
        assert_eq!(y.flatten_all()?.to_vec1::<f32>()?, vec![5.0]);
        let grads = y.sum_all()?.backward()?;
        let g = grads.get(x.as_tensor()).expect("x has a gradient").flatten_all()?.to_vec1::<f32>()?;
        // Only the maximum gets gradient. candle 0.11.1 scales it by 1/4 (it multiplies by the
        // window's share of maxima instead of dividing by their count), which Adam's per-parameter
        // normalisation absorbs; the position is what the narrowing fixes.
        assert!(g[3] > 0.0, "{g:?}");
        assert!(g.iter().enumerate().all(|(i, v)| i == 3 || *v == 0.0), "{g:?}");
        Ok(())
    }
}
