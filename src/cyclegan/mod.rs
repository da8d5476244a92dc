//! CycleGAN: unpaired image-to-image translation (Zhu, Park, Isola & Efros 2017).
//!
//! Two generators `G: A -> B` and `F: B -> A` learn to translate between two image domains from
//! unpaired examples: discriminators `D_A`, `D_B` make the translations look like the target
//! domain, and cycle consistency `F(G(a)) ≈ a`, `G(F(b)) ≈ b` keeps them faithful to the input.
//!
//! - [`GeneratorConfig`] / [`ResnetGenerator`]: the ResNet generator (Johnson et al. 2016) with
//!   reflection padding and instance norm;
//! - [`DiscriminatorConfig`] / [`PatchDiscriminator`]: the PatchGAN (Isola et al. 2017);
//!   both configs default to the crate's reference `cyclegan` benchmark networks;
//! - [`Translator`], [`Discriminator`]: the traits the step is written against, for your own
//!   networks (a U-Net, say);
//! - [`ImagePool`], [`ImagePools`]: the history of 50 generated images (Shrivastava et al. 2017);
//! - [`StepConfig`], [`generator_step`], [`discriminator_step`], [`train_step`]: LSGAN (or
//!   another [`GanLoss`](crate::losses::adversarial::GanLoss)), cycle L1 (λ = 10), identity L1
//!   (0.5 λ), halved discriminator loss; they return the terms as numbers;
//! - [`translate_in_batches`], [`mean_absolute_error`]: evaluation.
//!
//! The data side is [`data::unpaired`](crate::data::unpaired) (two folders, or disjoint parts of
//! one data set); the learning-rate schedule of the paper (constant, then linearly to zero over
//! the second half) is [`LrSchedule::linear_decay`](crate::optim::LrSchedule::linear_decay).
//! `docs/cyclegan.md` is the guide.
//!
//! # Example
//!
//! A small CycleGAN between shapes and inverted shapes, three steps:
//!
//! ```
//! use candle_core::{DType, Device};
//! use candle_generative::cyclegan::{self, CycleGanModels, DiscriminatorConfig, GeneratorConfig, ImagePools};
//! use candle_generative::data::{procedural, unpaired::{invert, UnpairedBatcher, UnpairedDomains}};
//! use candle_generative::optim::{Adam, AdamConfig, LrSchedule, NamedVars};
//! use candle_generative::rng::Rng;
//! use candle_nn::{VarBuilder, VarMap};
//!
//! let device = Device::Cpu;
//! let shapes = procedural::shapes(&procedural::ShapesConfig { size: 16, count: 64, ..Default::default() })?;
//! let halves = UnpairedDomains::split_disjoint(&shapes, &[], 0)?;
//! let domains = UnpairedDomains::new(halves.a, invert(&halves.b)?)?;
//!
//! let g_cfg = GeneratorConfig { base_width: 8, residual_blocks: 1, ..Default::default() };
//! let d_cfg = DiscriminatorConfig { base_width: 8, ..Default::default() };
//! let varmap = VarMap::new();
//! let vb = VarBuilder::from_varmap(&varmap, DType::F32, &device);
//! let mut rng = Rng::new(0);
//! let models = CycleGanModels {
//!     g_ab: cyclegan::ResnetGenerator::new(&g_cfg, vb.pp("g_ab"), &mut rng)?,
//!     g_ba: cyclegan::ResnetGenerator::new(&g_cfg, vb.pp("g_ba"), &mut rng)?,
//!     d_a: cyclegan::PatchDiscriminator::new(&d_cfg, vb.pp("d_a"), &mut rng)?,
//!     d_b: cyclegan::PatchDiscriminator::new(&d_cfg, vb.pp("d_b"), &mut rng)?,
//! };
//! let adam = AdamConfig { lr: 2e-4, beta1: 0.5, ..Default::default() };
//! let vars = |p: &[&str]| NamedVars::filtered(&varmap, |n| p.iter().any(|p| n.starts_with(p)));
//! let mut opt_g = Adam::new_named(vars(&["g_ab.", "g_ba."]), adam.clone())?;
//! let mut opt_d = Adam::new_named(vars(&["d_a.", "d_b."]), adam)?;
//!
//! let (total, cfg) = (4, cyclegan::StepConfig::default()); // LSGAN, λ = 10, identity 0.5
//! let schedule = LrSchedule::linear_decay(2e-4, total / 2, total - total / 2);
//! let mut pools = ImagePools::with_default_size(1);
//! let batcher = UnpairedBatcher::new(&domains, 4, 0)?;
//! for step in 0..total {
//!     schedule.apply(&mut opt_g, step);
//!     schedule.apply(&mut opt_d, step);
//!     let (a, b) = batcher.batch_at_step(&domains, step, &device)?;
//!     let batch = cyclegan::UnpairedBatch { a: &a, b: &b };
//!     let stats = cyclegan::train_step(&models, &mut opt_g, &mut opt_d, &cfg, batch, &mut pools, step)?;
//!     assert!(stats.generator.loss.is_finite() && stats.discriminator.loss.is_finite());
//! }
//! let (a, _) = batcher.batch_at_step(&domains, 0, &device)?;
//! let translated = cyclegan::translate_in_batches(&models.g_ab, &a, 2)?; // (4, 1, 16, 16)
//! assert_eq!(translated.dims(), a.dims());
//! # Ok::<(), candle_generative::Error>(())
//! ```

mod config;
mod discriminator;
mod evaluate;
mod generator;
mod layers;
mod objective;
mod pool;
mod step;
mod traits;

pub use config::{DiscriminatorConfig, GeneratorConfig};
pub use discriminator::PatchDiscriminator;
pub use evaluate::{mean_absolute_error, translate_in_batches};
pub use generator::ResnetGenerator;
pub use objective::StepConfig;
pub use pool::{ImagePool, DEFAULT_POOL_SIZE};
pub use step::{
    discriminator_step, generator_step, train_step, CycleGanModels, DiscriminatorStats, GeneratorStats, ImagePools,
    StepStats, Translations, UnpairedBatch,
};
pub use traits::{Discriminator, Translator};

// Compiles the CycleGAN guide's code with the doc tests.
#[doc = include_str!("../../docs/cyclegan.md")]
#[cfg(doctest)]
pub struct CycleGanGuideDoctests;
