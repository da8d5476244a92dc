//! [`Trainer`]: one seeded, checkpointable training step of the convolutional VAE at a time, for loops
//! like the `vae` and `quickstart` examples. Your loop calls [`Trainer::step`]; the trainer owns the
//! model, the Adam state, the batch order and the noise, so a checkpoint resumes bit for bit.

use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use serde::{Deserialize, Serialize};

use super::annealing::KlAnnealing;
use super::config::Config;
use super::conv::{init_conv_vae, ConvVae};
use super::evaluate::{evaluate, EvalOptions, EvalReport};
use crate::data::batcher::Batcher;
use crate::data::ImageDataset;
use crate::error::check_finite;
use crate::io::Checkpoint;
use crate::losses::elbo::elbo;
use crate::optim::{Adam, AdamConfig, MixedPrecision, NamedVars};
use crate::rng::Rng;
use crate::{Error, Result};

const SECTION_MODEL: &str = "model";
const SECTION_OPT: &str = "opt";
const CONFIG_MODEL: &str = "vae";
const CONFIG_TRAIN: &str = "vae_train";
const META_TRAIN_LEN: &str = "train_len";

/// How the [`Trainer`] optimises: Adam, batch size, KL weight schedule, free bits and the seed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TrainConfig {
    /// Adam's learning rate (Kingma & Ba 2015), constant.
    pub lr: f64,
    /// Images per step (> 0); the last partial batch of an epoch is dropped.
    pub batch_size: usize,
    /// The KL weight over steps: β-VAE's β, warm-up, cycles.
    pub annealing: KlAnnealing,
    /// Free bits λ in nats per latent dimension (Kingma et al. 2016), or `None`.
    pub free_bits: Option<f64>,
    /// Seed of the initial weights, batch order, data treatment (binarisation) and codes.
    pub seed: u64,
}

impl Default for TrainConfig {
    /// The benchmark's optimisation: Adam 1e-3, batches of 128, the plain ELBO (`β = 1`), seed 0.
    fn default() -> Self {
        Self { lr: 1e-3, batch_size: 128, annealing: KlAnnealing::default(), free_bits: None, seed: 0 }
    }
}

impl TrainConfig {
    /// Checks every field; `Error::Config` names the one at fault.
    pub fn validate(&self) -> Result<()> {
        AdamConfig::with_lr(self.lr).validate().map_err(|_| Error::config("lr", format!("bad value {}", self.lr)))?;
        if self.batch_size == 0 {
            return Err(Error::config("batch_size", "must be > 0"));
        }
        if let Some(l) = self.free_bits {
            if !(l.is_finite() && l >= 0.0) {
                return Err(Error::config("free_bits", format!("must be finite and >= 0, got {l}")));
            }
        }
        self.annealing.validate()
    }
}

/// What one training step did, in nats per image (batch means).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepStats {
    /// The step's index (the number of steps taken before it).
    pub step: u64,
    /// The minimised objective `-log p(x|z) + β · KL` (with free bits when set).
    pub loss: f64,
    /// `-ELBO = KL - log p(x|z)` on the batch.
    pub neg_elbo: f64,
    /// `log p(x|z)` on the batch.
    pub reconstruction: f64,
    /// `KL(q(z|x) || p(z))` on the batch.
    pub kl: f64,
    /// The KL weight used.
    pub beta: f64,
}

/// The convolutional VAE with its optimizer, batch order and noise, one seeded, checkpointable step at a
/// time for loops like the `vae` and `quickstart` examples: your loop calls [`Trainer::step`], and a
/// checkpoint ([`Trainer::checkpoint`], [`Trainer::restore`]) resumes bit for bit.
///
/// Each [`Trainer::step`] takes batch `batch_at_step(step)` of a seeded [`Batcher`], prepares it for
/// the likelihood ([`Likelihood::prepare`](super::Likelihood::prepare): fresh binarisation each time for
/// Bernoulli), draws one code per image and takes one Adam step on the annealed objective.
pub struct Trainer {
    config: Config,
    train: TrainConfig,
    varmap: VarMap,
    model: ConvVae,
    opt: MixedPrecision<Adam>,
    batcher: Batcher,
    train_len: usize,
    data_rng: Rng,
    noise_rng: Rng,
    step: u64,
    dtype: DType,
    device: Device,
}

impl Trainer {
    /// A fresh run: builds `config`'s model in `dtype` on `device`, initialised from `train.seed`
    /// ([`init_conv_vae`]), for a training set of `train_len` images.
    pub fn new(config: Config, train: TrainConfig, train_len: usize, dtype: DType, device: &Device) -> Result<Self> {
        config.validate()?;
        train.validate()?;
        let varmap = VarMap::new();
        let model = ConvVae::new(&config, VarBuilder::from_varmap(&varmap, dtype, device))?;
        let vars = NamedVars::from_varmap(&varmap);
        init_conv_vae(&vars, &mut Rng::with_stream(train.seed, 0))?;
        let opt =
            MixedPrecision::auto(vars.clone(), |masters| Adam::new_named(masters, AdamConfig::with_lr(train.lr)))?;
        let batcher = Batcher::new(train_len, train.batch_size, train.seed)?.drop_last(true);
        Ok(Self {
            data_rng: Rng::with_stream(train.seed, 1),
            noise_rng: Rng::with_stream(train.seed, 2),
            config,
            train,
            varmap,
            model,
            opt,
            batcher,
            train_len,
            step: 0,
            dtype,
            device: device.clone(),
        })
    }

    /// A run rebuilt from a checkpoint of [`Trainer::checkpoint`]: the stored model and training configs,
    /// then its weights, optimizer state, step and random streams.
    pub fn from_checkpoint(ck: &Checkpoint, dtype: DType, device: &Device) -> Result<Self> {
        let config: Config = ck.config(CONFIG_MODEL)?;
        let train: TrainConfig = ck.config(CONFIG_TRAIN)?;
        let mut trainer = Self::new(config, train, stored_train_len(ck)?, dtype, device)?;
        trainer.restore(ck)?;
        Ok(trainer)
    }

    /// Continues from `ck`: weights, Adam state, step and random streams. Refuses (with
    /// `Error::Checkpoint`, naming the fields) a checkpoint of a different model config, training
    /// config or training-set size, and changes nothing then.
    pub fn restore(&mut self, ck: &Checkpoint) -> Result<()> {
        let stored: Config = ck.config(CONFIG_MODEL)?;
        let stored_train: TrainConfig = ck.config(CONFIG_TRAIN)?;
        let mut diffs = differing_fields(&stored, &self.config)?;
        diffs.extend(differing_fields(&stored_train, &self.train)?);
        if stored_train_len(ck)? != self.train_len {
            diffs.push(format!("train_len: {} in the checkpoint, {} here", stored_train_len(ck)?, self.train_len));
        }
        if !diffs.is_empty() {
            return Err(Error::checkpoint(ck.path(), format!("was written for another run: {}", diffs.join("; "))));
        }
        let (data_rng, noise_rng) = (ck.rng("data")?, ck.rng("noise")?);
        ck.restore_varmap(SECTION_MODEL, &self.varmap)?;
        ck.restore_state(SECTION_OPT, &mut self.opt)?;
        self.data_rng = data_rng;
        self.noise_rng = noise_rng;
        self.step = ck.step();
        Ok(())
    }

    /// The optimizer: Adam on `f32` master weights when the model is `f16`/`bf16`, with dynamic
    /// loss scaling for `f16` (its scale, skipped steps and last step's report).
    pub fn optimizer(&self) -> &MixedPrecision<Adam> {
        &self.opt
    }

    /// The whole state at the current step: configs, weights, Adam state, random streams.
    pub fn checkpoint(&self) -> Result<Checkpoint> {
        let mut ck = Checkpoint::new(self.step);
        ck.set_config(CONFIG_MODEL, &self.config)?;
        ck.set_config(CONFIG_TRAIN, &self.train)?;
        ck.set_meta(META_TRAIN_LEN, self.train_len.to_string());
        ck.add_varmap(SECTION_MODEL, &self.varmap)?;
        ck.add_state(SECTION_OPT, &self.opt)?;
        ck.set_rng("data", &self.data_rng);
        ck.set_rng("noise", &self.noise_rng);
        Ok(ck)
    }

    /// One optimizer step on the next batch of `data` (the training set, `train_len` images). A
    /// non-finite loss is `Error::NonFinite` naming the step, and the weights are left untouched.
    pub fn step(&mut self, data: &ImageDataset) -> Result<StepStats> {
        if data.len() != self.train_len {
            return Err(Error::config("train_len", format!("built for {} images, got {}", self.train_len, data.len())));
        }
        let step = self.step;
        let indices = self.batcher.batch_at_step(step);
        let x01 = data.images(&indices, &self.device)?.to_dtype(self.dtype)?;
        let x = self.config.likelihood.prepare(&x01, &mut self.data_rng)?;
        let labels = if self.config.num_classes > 0 { Some(data.labels_tensor(&indices, &self.device)?) } else { None };
        let beta = self.train.annealing.beta_at(step);
        let (q, out) = self.model.forward(&x, labels.as_ref(), &mut self.noise_rng)?;
        let ll = self.config.likelihood.log_prob(&out, &x)?;
        let parts = elbo(&ll, &q.kl()?, beta, self.train.free_bits)?;
        let scalar = |t: &candle_core::Tensor| -> Result<f64> { Ok(t.to_dtype(DType::F64)?.to_scalar::<f64>()?) };
        let loss = check_finite("VAE loss", Some(step), scalar(&parts.total)?)?;
        let reconstruction = scalar(&parts.reconstruction)?;
        let kl = scalar(&parts.kl)?;
        // Scaled for f16; a step with non-finite scaled gradients is skipped (see `MixedPrecision`).
        self.opt.backward_step_report(&parts.total)?;
        self.step += 1;
        Ok(StepStats { step, loss, neg_elbo: kl - reconstruction, reconstruction, kl, beta })
    }

    /// [`evaluate`] on `data` (e.g. the test split) with this model, dtype and device.
    pub fn evaluate(&self, data: &ImageDataset, opts: &EvalOptions) -> Result<EvalReport> {
        evaluate(&self.model, data, opts, self.dtype, &self.device)
    }

    /// The model.
    pub fn model(&self) -> &ConvVae {
        &self.model
    }

    /// The model's variables (weights and biases under `encoder.` and `decoder.`).
    pub fn varmap(&self) -> &VarMap {
        &self.varmap
    }

    /// The model config.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The training config.
    pub fn train_config(&self) -> &TrainConfig {
        &self.train
    }

    /// Optimizer steps taken so far.
    pub fn steps_taken(&self) -> u64 {
        self.step
    }

    /// Steps per epoch: full batches of the training set.
    pub fn steps_per_epoch(&self) -> u64 {
        self.batcher.batches_per_epoch() as u64
    }

    /// The model's dtype.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The model's device.
    pub fn device(&self) -> &Device {
        &self.device
    }
}

impl std::fmt::Debug for Trainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trainer")
            .field("config", &self.config)
            .field("train", &self.train)
            .field("train_len", &self.train_len)
            .field("step", &self.step)
            .field("dtype", &self.dtype)
            .field("device", &self.device)
            .finish_non_exhaustive()
    }
}

fn stored_train_len(ck: &Checkpoint) -> Result<usize> {
    ck.meta(META_TRAIN_LEN)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| Error::checkpoint(ck.path(), format!("has no `{META_TRAIN_LEN}`: not a VAE trainer checkpoint")))
}

/// `field: stored in the checkpoint, current here` for each top-level field that differs.
fn differing_fields<T: Serialize>(stored: &T, current: &T) -> Result<Vec<String>> {
    let to_value = |t: &T| serde_json::to_value(t).map_err(|e| Error::config("config", e.to_string()));
    let (a, b) = (to_value(stored)?, to_value(current)?);
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else {
        return Ok(if a == b { vec![] } else { vec![format!("{a} in the checkpoint, {b} here")] });
    };
    Ok(a.iter()
        .filter(|(k, v)| b.get(*k) != Some(*v))
        .map(|(k, v)| format!("{k}: {v} in the checkpoint, {} here", b.get(k).cloned().unwrap_or_default()))
        .collect())
}
