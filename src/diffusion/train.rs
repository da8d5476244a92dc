//! Training: [`noisy_batch`] draws the timesteps and noise of a batch from the crate's [`Rng`] and
//! returns what the loss needs; [`Trainer`] runs the whole seeded, checkpointable UNet training step
//! (Adam, EMA of the weights, label dropout for classifier-free guidance).

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use serde::{Deserialize, Serialize};

use super::guidance::drop_labels;
use super::schedule::{NoiseSchedule, ScheduleConfig};
use super::unet::{init_unet, UNet, UNetConfig};
use crate::data::batcher::Batcher;
use crate::data::ImageDataset;
use crate::error::check_finite;
use crate::io::Checkpoint;
use crate::losses::diffusion::{diffusion_loss, LossWeighting, Prediction};
use crate::optim::{Adam, AdamConfig, Ema, EmaConfig, MixedPrecision, NamedVars};
use crate::rng::Rng;
use crate::{Error, Result};

/// A batch prepared for the denoising loss by [`noisy_batch`].
#[derive(Debug, Clone)]
pub struct NoisyBatch {
    /// The noised images `x_t` `(B, ...)`, the network's input.
    pub x_t: Tensor,
    /// The timesteps `(B,)` `U32`, uniform in `0..T`, one per sample.
    pub t: Tensor,
    /// The noise `eps` `(B, ...)`.
    pub noise: Tensor,
    /// The regression target of the prediction type `(B, ...)`.
    pub target: Tensor,
    /// Per-sample loss weights `(B,)` (ones for [`LossWeighting::Uniform`]).
    pub weights: Tensor,
}

impl NoisyBatch {
    /// The weighted denoising loss of the network output `pred` (shaped like `x_t`): a scalar.
    pub fn loss(&self, pred: &Tensor) -> Result<Tensor> {
        diffusion_loss(pred, &self.target, Some(&self.weights))
    }
}

/// Draws `t ~ U{0..T}` per sample and `eps ~ N(0, I)` from `rng`, and returns `x_t`, the target of
/// `prediction` and the `weighting` weights (from the samples' SNRs) for clean images `x0`
/// `(B, C, H, W)` (in `[-1, 1]`).
pub fn noisy_batch(
    schedule: &NoiseSchedule,
    x0: &Tensor,
    prediction: Prediction,
    weighting: LossWeighting,
    rng: &mut Rng,
) -> Result<NoisyBatch> {
    let b = x0.dims().first().copied().ok_or_else(|| Error::shape("noisy_batch", "x0 must be (B, ...)"))?;
    let t = rng.randint(b, 0, schedule.num_timesteps() as u32, x0.device())?;
    let noise = rng.randn_like(x0)?;
    let x_t = schedule.add_noise(x0, &noise, &t)?;
    let target = schedule.target(prediction, x0, &noise, &t)?;
    let weights = weighting.weights(&schedule.snr_of(&t)?, prediction)?.to_dtype(x0.dtype())?;
    Ok(NoisyBatch { x_t, t, noise, target, weights })
}

/// How the [`Trainer`] optimises.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TrainConfig {
    /// Adam's learning rate (constant).
    pub lr: f64,
    /// Images per step (> 0); the last partial batch of an epoch is dropped.
    pub batch_size: usize,
    /// Loss weights over timesteps.
    pub weighting: LossWeighting,
    /// Probability of replacing a label by the null class (classifier-free guidance; class-conditional
    /// models only), in `[0, 1]`.
    pub label_dropout: f64,
    /// The EMA of the weights (sample with [`Trainer::with_ema`]).
    pub ema: EmaConfig,
    /// Seed of the weights, batch order, timesteps, noise, dropout and label dropout.
    pub seed: u64,
}

impl Default for TrainConfig {
    /// The bench's optimisation: Adam 2e-4, batches of 64, uniform weights; label dropout 0.1; EMA 0.999.
    fn default() -> Self {
        Self {
            lr: 2e-4,
            batch_size: 64,
            weighting: LossWeighting::Uniform,
            label_dropout: 0.1,
            ema: EmaConfig { decay: 0.999, ..EmaConfig::default() },
            seed: 0,
        }
    }
}

impl TrainConfig {
    /// Checks every field; `Error::Config` names the one at fault.
    pub fn validate(&self) -> Result<()> {
        AdamConfig::with_lr(self.lr).validate().map_err(|_| Error::config("lr", format!("bad value {}", self.lr)))?;
        if self.batch_size == 0 {
            return Err(Error::config("batch_size", "must be > 0"));
        }
        if !(0.0..=1.0).contains(&self.label_dropout) {
            return Err(Error::config("label_dropout", format!("must be in [0, 1], got {}", self.label_dropout)));
        }
        self.ema.validate()
    }
}

/// What one step did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepStats {
    /// The step's index (steps taken before it).
    pub step: u64,
    /// The weighted denoising loss on the batch.
    pub loss: f64,
    /// The EMA decay used.
    pub ema_decay: f64,
}

const CONFIG_MODEL: &str = "unet";
const CONFIG_SCHEDULE: &str = "schedule";
const CONFIG_TRAIN: &str = "diffusion_train";
const META_TRAIN_LEN: &str = "train_len";

/// A [`UNet`] with its schedule, Adam, EMA, batch order and random streams: one seeded step at a time,
/// checkpointed and resumed bit for bit.
pub struct Trainer {
    unet_config: UNetConfig,
    schedule: NoiseSchedule,
    train: TrainConfig,
    varmap: VarMap,
    model: UNet,
    opt: MixedPrecision<Adam>,
    ema: Ema,
    batcher: Batcher,
    train_len: usize,
    rng: Rng,
    step: u64,
    dtype: DType,
    device: Device,
}

impl Trainer {
    /// A fresh run on a training set of `train_len` images, weights seeded from `train.seed`.
    pub fn new(
        unet: UNetConfig,
        schedule: &ScheduleConfig,
        train: TrainConfig,
        train_len: usize,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        unet.validate()?;
        train.validate()?;
        let schedule = NoiseSchedule::new(schedule)?;
        let varmap = VarMap::new();
        let model = UNet::new(&unet, VarBuilder::from_varmap(&varmap, dtype, device))?;
        let vars = NamedVars::from_varmap(&varmap);
        init_unet(&vars, &mut Rng::with_stream(train.seed, 0))?;
        let opt =
            MixedPrecision::auto(vars.clone(), |masters| Adam::new_named(masters, AdamConfig::with_lr(train.lr)))?;
        let ema = Ema::new(vars.clone(), train.ema.clone())?;
        let batcher = Batcher::new(train_len, train.batch_size, train.seed)?.drop_last(true);
        Ok(Self {
            rng: Rng::with_stream(train.seed, 1),
            unet_config: unet,
            schedule,
            train,
            varmap,
            model,
            opt,
            ema,
            batcher,
            train_len,
            step: 0,
            dtype,
            device: device.clone(),
        })
    }

    /// One Adam step on the next batch of `data` (images in `[0, 1]`, mapped to `[-1, 1]`), then an
    /// EMA update. A non-finite loss is `Error::NonFinite` and leaves the weights untouched.
    pub fn step(&mut self, data: &ImageDataset) -> Result<StepStats> {
        if data.len() != self.train_len {
            return Err(Error::config("train_len", format!("built for {} images, got {}", self.train_len, data.len())));
        }
        let step = self.step;
        let indices = self.batcher.batch_at_step(step);
        let x0 = data.images(&indices, &self.device)?.to_dtype(self.dtype)?.affine(2.0, -1.0)?;
        let labels = if self.unet_config.num_classes > 0 {
            let l = data.labels_tensor(&indices, &self.device)?;
            Some(drop_labels(&l, self.train.label_dropout, self.model.null_class(), &mut self.rng)?)
        } else {
            None
        };
        let batch = noisy_batch(&self.schedule, &x0, self.unet_config.prediction, self.train.weighting, &mut self.rng)?;
        let pred = self.model.forward(&batch.x_t, &batch.t, labels.as_ref(), Some(&mut self.rng))?;
        let loss_t = batch.loss(&pred)?;
        let loss = check_finite("diffusion loss", Some(step), loss_t.to_dtype(DType::F64)?.to_scalar::<f64>()?)?;
        // Scaled for f16; a step with non-finite scaled gradients is skipped (see `MixedPrecision`).
        self.opt.backward_step_report(&loss_t)?;
        let ema_decay = self.ema.update()?;
        self.step += 1;
        Ok(StepStats { step, loss, ema_decay })
    }

    /// Runs `f` with the EMA weights swapped into the model (e.g. to sample), then swaps back.
    pub fn with_ema<T>(&mut self, f: impl FnOnce(&UNet) -> Result<T>) -> Result<T> {
        self.ema.swap()?;
        let out = f(&self.model);
        self.ema.swap()?;
        out
    }

    /// The optimizer: Adam on `f32` master weights when the model is `f16`/`bf16`, with dynamic
    /// loss scaling for `f16` (its scale, skipped steps and last step's report).
    pub fn optimizer(&self) -> &MixedPrecision<Adam> {
        &self.opt
    }

    /// The whole state: configs, weights, Adam, EMA, random stream, step.
    pub fn checkpoint(&self) -> Result<Checkpoint> {
        let mut ck = Checkpoint::new(self.step);
        ck.set_config(CONFIG_MODEL, &self.unet_config)?;
        ck.set_config(CONFIG_SCHEDULE, self.schedule.config())?;
        ck.set_config(CONFIG_TRAIN, &self.train)?;
        ck.set_meta(META_TRAIN_LEN, self.train_len.to_string());
        ck.add_varmap("model", &self.varmap)?;
        ck.add_state("opt", &self.opt)?;
        ck.add_state("ema", &self.ema)?;
        ck.set_rng("train", &self.rng);
        Ok(ck)
    }

    /// Continues from `ck`. Refuses (`Error::Checkpoint`) one written for other configs or data size.
    pub fn restore(&mut self, ck: &Checkpoint) -> Result<()> {
        let same = ck.config::<UNetConfig>(CONFIG_MODEL)? == self.unet_config
            && ck.config::<ScheduleConfig>(CONFIG_SCHEDULE)? == *self.schedule.config()
            && ck.config::<TrainConfig>(CONFIG_TRAIN)? == self.train
            && ck.meta(META_TRAIN_LEN) == Some(self.train_len.to_string().as_str());
        if !same {
            return Err(Error::checkpoint(
                ck.path(),
                "was written for another model, schedule, training config or data set",
            ));
        }
        let rng = ck.rng("train")?;
        ck.restore_varmap("model", &self.varmap)?;
        ck.restore_state("opt", &mut self.opt)?;
        ck.restore_state("ema", &mut self.ema)?;
        self.rng = rng;
        self.step = ck.step();
        Ok(())
    }

    /// The model (training weights).
    pub fn model(&self) -> &UNet {
        &self.model
    }

    /// The noise schedule.
    pub fn schedule(&self) -> &NoiseSchedule {
        &self.schedule
    }

    /// The model's variables.
    pub fn varmap(&self) -> &VarMap {
        &self.varmap
    }

    /// Steps taken.
    pub fn steps_taken(&self) -> u64 {
        self.step
    }

    /// The model's dtype (`F32`, or `BF16`/`F16` with `F32` master weights and EMA).
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Full batches per epoch.
    pub fn steps_per_epoch(&self) -> u64 {
        self.batcher.batches_per_epoch() as u64
    }
}

impl std::fmt::Debug for Trainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trainer")
            .field("unet", &self.unet_config)
            .field("train", &self.train)
            .field("step", &self.step)
            .field("dtype", &self.dtype)
            .field("device", &self.device)
            .finish_non_exhaustive()
    }
}
