//! [`Trainer`]: one seeded, checkpointable maximum-likelihood step of a [`PixelCnn`] at a time. The trainer
//! owns the model, the Adam state and the batch order, so a checkpoint resumes bit for bit.

use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use serde::{Deserialize, Serialize};

use super::config::Config;
use super::evaluate::{evaluate, EvalReport};
use super::model::{init_pixelcnn, PixelCnn};
use crate::data::batcher::Batcher;
use crate::data::ImageDataset;
use crate::error::check_finite;
use crate::io::Checkpoint;
use crate::optim::{Adam, AdamConfig, MixedPrecision, NamedVars};
use crate::rng::Rng;
use crate::{Error, Result};

const SECTION_MODEL: &str = "model";
const SECTION_OPT: &str = "opt";
const CONFIG_MODEL: &str = "pixelcnn";
const CONFIG_TRAIN: &str = "pixelcnn_train";
const META_TRAIN_LEN: &str = "train_len";

/// How the [`Trainer`] optimises.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TrainConfig {
    /// Adam's learning rate (Kingma & Ba 2015), constant.
    pub lr: f64,
    /// Images per step (> 0); the last partial batch of an epoch is dropped.
    pub batch_size: usize,
    /// Seed of the initial weights and the batch order.
    pub seed: u64,
}

impl Default for TrainConfig {
    /// The benchmark's optimisation: Adam 1e-3, batches of 32, seed 0.
    fn default() -> Self {
        Self { lr: 1e-3, batch_size: 32, seed: 0 }
    }
}

impl TrainConfig {
    /// Checks every field; `Error::Config` names the one at fault.
    pub fn validate(&self) -> Result<()> {
        AdamConfig::with_lr(self.lr).validate().map_err(|_| Error::config("lr", format!("bad value {}", self.lr)))?;
        if self.batch_size == 0 {
            return Err(Error::config("batch_size", "must be > 0"));
        }
        Ok(())
    }
}

/// What one training step did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepStats {
    /// The step's index (the number of steps taken before it).
    pub step: u64,
    /// The batch's mean `-log p(x)` in nats per image (the minimised loss).
    pub nll: f64,
    /// The same in bits per dimension.
    pub bits_per_dim: f64,
}

/// A [`PixelCnn`] with its Adam optimizer and seeded batch order: [`Trainer::step`] takes one
/// maximum-likelihood step on batch `batch_at_step(step)`, and [`Trainer::checkpoint`] /
/// [`Trainer::restore`] resume bit for bit.
pub struct Trainer {
    config: Config,
    train: TrainConfig,
    varmap: VarMap,
    model: PixelCnn,
    opt: MixedPrecision<Adam>,
    batcher: Batcher,
    train_len: usize,
    step: u64,
}

impl Trainer {
    /// A fresh run: `config`'s model in `dtype` on `device`, initialised by [`init_pixelcnn`] from
    /// `train.seed`, for a training set of `train_len` images.
    pub fn new(config: Config, train: TrainConfig, train_len: usize, dtype: DType, device: &Device) -> Result<Self> {
        train.validate()?;
        let varmap = VarMap::new();
        let model = PixelCnn::new(&config, VarBuilder::from_varmap(&varmap, dtype, device))?;
        init_pixelcnn(&model, &varmap, &mut Rng::with_stream(train.seed, 0))?;
        let vars = NamedVars::from_varmap(&varmap);
        let opt =
            MixedPrecision::auto(vars.clone(), |masters| Adam::new_named(masters, AdamConfig::with_lr(train.lr)))?;
        let batcher = Batcher::new(train_len, train.batch_size, train.seed)?.drop_last(true);
        Ok(Self { config, train, varmap, model, opt, batcher, train_len, step: 0 })
    }

    /// Continues from `ck`: weights, Adam state and step. Refuses (`Error::Checkpoint`, naming the
    /// differences) a checkpoint of another model config, training config or training-set size.
    pub fn restore(&mut self, ck: &Checkpoint) -> Result<()> {
        let stored: Config = ck.config(CONFIG_MODEL)?;
        let stored_train: TrainConfig = ck.config(CONFIG_TRAIN)?;
        let stored_len: Option<usize> = ck.meta(META_TRAIN_LEN).and_then(|s| s.parse().ok());
        let mut diffs = Vec::new();
        if stored != self.config {
            diffs.push(format!("model config {stored:?} in the checkpoint, {:?} here", self.config));
        }
        if stored_train != self.train {
            diffs.push(format!("training config {stored_train:?} in the checkpoint, {:?} here", self.train));
        }
        if stored_len != Some(self.train_len) {
            diffs.push(format!("train_len {stored_len:?} in the checkpoint, {} here", self.train_len));
        }
        if !diffs.is_empty() {
            return Err(Error::checkpoint(ck.path(), format!("was written for another run: {}", diffs.join("; "))));
        }
        ck.restore_varmap(SECTION_MODEL, &self.varmap)?;
        ck.restore_state(SECTION_OPT, &mut self.opt)?;
        self.step = ck.step();
        Ok(())
    }

    /// The optimizer: Adam on `f32` master weights when the model is `f16`/`bf16`, with dynamic
    /// loss scaling for `f16` (its scale, skipped steps and last step's report).
    pub fn optimizer(&self) -> &MixedPrecision<Adam> {
        &self.opt
    }

    /// The whole state at the current step: configs, weights, Adam state.
    pub fn checkpoint(&self) -> Result<Checkpoint> {
        let mut ck = Checkpoint::new(self.step);
        ck.set_config(CONFIG_MODEL, &self.config)?;
        ck.set_config(CONFIG_TRAIN, &self.train)?;
        ck.set_meta(META_TRAIN_LEN, self.train_len.to_string());
        ck.add_varmap(SECTION_MODEL, &self.varmap)?;
        ck.add_state(SECTION_OPT, &self.opt)?;
        Ok(ck)
    }

    /// One Adam step on the next batch of `data` (the training set of `train_len` images). A non-finite
    /// loss is `Error::NonFinite` naming the step, and the weights are left untouched.
    pub fn step(&mut self, data: &ImageDataset) -> Result<StepStats> {
        if data.len() != self.train_len {
            return Err(Error::config("train_len", format!("built for {} images, got {}", self.train_len, data.len())));
        }
        let step = self.step;
        let device = self.model.device().clone();
        let indices = self.batcher.batch_at_step(step);
        let images = data.images_u8(&indices, &device)?;
        let labels = if self.config.num_classes > 0 { Some(data.labels_tensor(&indices, &device)?) } else { None };
        let loss = self.model.nll(&images, labels.as_ref())?.mean_all()?;
        let nll = check_finite("PixelCNN NLL", Some(step), loss.to_dtype(DType::F64)?.to_scalar::<f64>()?)?;
        // Scaled for f16; a step with non-finite scaled gradients is skipped (see `MixedPrecision`).
        self.opt.backward_step_report(&loss)?;
        self.step += 1;
        let (c, h, w) = data.image_shape();
        Ok(StepStats { step, nll, bits_per_dim: nll / ((c * h * w) as f64 * std::f64::consts::LN_2) })
    }

    /// [`evaluate`] on `data` (e.g. the test split), batches of 100.
    pub fn evaluate(&self, data: &ImageDataset, max_images: Option<usize>) -> Result<EvalReport> {
        evaluate(&self.model, data, max_images, 100)
    }

    /// The model.
    pub fn model(&self) -> &PixelCnn {
        &self.model
    }

    /// The model's variables.
    pub fn varmap(&self) -> &VarMap {
        &self.varmap
    }

    /// Optimizer steps taken so far.
    pub fn steps_taken(&self) -> u64 {
        self.step
    }

    /// Steps per epoch: full batches of the training set.
    pub fn steps_per_epoch(&self) -> u64 {
        self.batcher.batches_per_epoch() as u64
    }
}

impl std::fmt::Debug for Trainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trainer")
            .field("config", &self.config)
            .field("train", &self.train)
            .field("train_len", &self.train_len)
            .field("step", &self.step)
            .finish_non_exhaustive()
    }
}
