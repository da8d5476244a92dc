//! Generative adversarial networks (Goodfellow et al. 2014): DCGAN models, class-conditional
//! variants, training-step helpers and samplers.
//!
//! - [`Config`]: the DCGAN architecture (Radford, Metz & Chintala 2016) for 28x28, 32x32 and
//!   64x64 images with 1 or 3 channels, batch norm and spectral norm switches, and optional
//!   [`Conditioning`]; its default is the crate's reference `dcgan` benchmark configuration;
//! - [`DcganGenerator`], [`DcganDiscriminator`]: the unconditional networks;
//! - [`ConditionalGenerator`] (label embedding concatenated to `z`, Mirza & Osindero 2014) and
//!   [`ConditionalDiscriminator`] (projection, Miyato & Koyama 2018, or concatenation; optional
//!   auxiliary classifier, ACGAN, Odena et al. 2017);
//! - [`Generator`], [`Discriminator`]: the traits the helpers use, for your own networks too;
//! - [`discriminator_step`], [`generator_step`]: one update of one network with a
//!   [`GanLoss`](crate::losses::adversarial::GanLoss), an optional [`Penalty`], label smoothing
//!   and ACGAN terms, returning the loss terms as numbers; `n_critic` via
//!   [`StepConfig::is_generator_step`];
//! - [`FixedNoise`], [`sample`], [`sample_random`], [`interpolation_grid`]: samples to look at.
//!
//! Images are `(B, C, H, W)` in `[-1, 1]` (the generator ends in `tanh`; map data from `[0, 1]`
//! with [`data::transforms::to_signed`](crate::data::transforms::to_signed)); labels are
//! integer tensors `(B,)`. `docs/gan.md` is the guide: the parts, which loss when, and a custom
//! generator.
//!
//! # Example
//!
//! A small DCGAN on the procedural shapes: one `VarMap`, one optimizer per network (Adam 2e-4,
//! β1 = 0.5 as in the paper), a few steps, and a sample grid.
//!
//! ```
//! use candle_core::{DType, Device};
//! use candle_generative::data::{batcher::Batcher, procedural, transforms};
//! use candle_generative::gan::{self, Config, DcganDiscriminator, DcganGenerator, RealBatch, StepConfig};
//! use candle_generative::optim::{Adam, AdamConfig, NamedVars};
//! use candle_generative::rng::Rng;
//! use candle_nn::{VarBuilder, VarMap};
//!
//! let device = Device::Cpu;
//! let data = procedural::shapes(&procedural::ShapesConfig { count: 64, ..Default::default() })?;
//! let config = Config { base_width: 8, latent_dim: 16, ..Config::default() }; // 28x28x1
//!
//! let varmap = VarMap::new();
//! let vb = VarBuilder::from_varmap(&varmap, DType::F32, &device);
//! let mut rng = Rng::new(0);
//! let gen = DcganGenerator::new(&config, vb.pp("gen"), &mut rng)?;
//! let disc = DcganDiscriminator::new(&config, vb.pp("disc"), &mut rng)?;
//! let adam = AdamConfig { lr: 2e-4, beta1: 0.5, ..Default::default() };
//! let mut opt_g = Adam::new_named(NamedVars::with_prefix(&varmap, "gen")?, adam.clone())?;
//! let mut opt_d = Adam::new_named(NamedVars::with_prefix(&varmap, "disc")?, adam)?;
//!
//! let cfg = StepConfig::default(); // non-saturating loss, one critic step
//! let batcher = Batcher::new(data.len(), 16, 0)?.drop_last(true);
//! for (step, indices) in batcher.iter_from(0).take(3) {
//!     let real = transforms::to_signed(&data.images(&indices, &device)?)?;
//!     let d = gan::discriminator_step(&gen, &disc, &mut opt_d, &cfg, RealBatch::new(&real), &mut rng, step)?;
//!     if cfg.is_generator_step(step) {
//!         let g = gan::generator_step(&gen, &disc, &mut opt_g, &cfg, indices.len(), &mut rng, step)?;
//!         assert!(g.loss.is_finite());
//!     }
//!     assert!(d.loss.is_finite() && (0.0..=1.0).contains(&d.accuracy()));
//! }
//! let noise = gan::FixedNoise::new(&gen, 16, &mut rng)?;
//! let images = gan::sample(&gen, &noise)?; // (16, 1, 28, 28) in [-1, 1]
//! assert_eq!(images.dims(), &[16, 1, 28, 28]);
//! # Ok::<(), candle_generative::Error>(())
//! ```

mod conditional;
mod config;
mod dcgan;
mod layers;
mod objective;
mod sample;
mod step;
mod traits;

pub use conditional::{ConditionalDiscriminator, ConditionalGenerator};
pub use config::{Conditioning, Config, LabelInput};
pub use dcgan::{DcganDiscriminator, DcganGenerator};
pub use objective::{Penalty, StepConfig};
pub use sample::{interpolation_grid, sample, sample_random, FixedNoise};
pub use step::{discriminator_step, generator_step, DiscriminatorStats, GeneratorStats, RealBatch};
pub use traits::{Discriminator, Generator};

/// Whether `name` is a trainable parameter of the GAN models rather than a buffer: batch-norm
/// running statistics (`running_mean`, `running_var`) and spectral-norm power-iteration state
/// (`weight_u`, `weight_v`) are `VarMap` variables that no optimizer should update. Use it as
/// `NamedVars::filtered(&varmap, |n| n.starts_with("gen.") && gan::is_trainable(n))`.
pub fn is_trainable(name: &str) -> bool {
    !(name.ends_with("running_mean")
        || name.ends_with("running_var")
        || crate::nn::spectral_norm::is_power_iteration_state(name))
}

// Compiles the GAN guide's code with the doc tests.
#[doc = include_str!("../../docs/gan.md")]
#[cfg(doctest)]
pub struct GanGuideDoctests;
