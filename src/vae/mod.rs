//! Variational autoencoders: the convolutional VAE (Kingma & Welling 2014), β-VAE (Higgins et al. 2017)
//! with KL annealing (Bowman et al. 2016), the conditional VAE (Sohn et al. 2015), and evaluation by the
//! ELBO and the importance-weighted bound (IWAE, Burda et al. 2016).
//!
//! The parts, each usable alone:
//! - [`Config`] / [`VaeSpec`]: image shape, latent size, [`Likelihood`], classes (and conv widths);
//! - [`Encoder`] / [`Decoder`]: the two traits a network implements to plug into [`Vae`];
//!   [`ConvEncoder`] / [`ConvDecoder`] are the built-in ones ([`ConvVae`], seeded by [`init_conv_vae`]);
//! - [`Posterior`]: `q(z|x)` with reparameterised sampling, closed-form KL and `log q(z|x)`;
//! - [`Vae`]: forward, loss ([`Elbo`](crate::losses::elbo::Elbo)), reconstructions, prior samples,
//!   interpolation;
//! - [`KlAnnealing`]: β and its warm-up over steps;
//! - [`evaluate()`], [`elbo_terms`], [`iwae_log_likelihood`]: test ELBO and IWAE in nats and bits/dim;
//! - [`Trainer`]: one seeded, checkpointable training step at a time;
//! - [`save_grids`]: PNG grids of prior samples, reconstructions and an interpolation.
//!
//! Images are `(B, C, H, W)`: in `[0, 1]` for [`Likelihood::Bernoulli`] (binary `{0, 1}` data, e.g. from
//! [`Likelihood::prepare`], for a true likelihood), in `[-1, 1]` for [`Likelihood::Gaussian`] and
//! [`Likelihood::DiscretizedLogistic`]. Latent codes are `(B, Z)`. All numbers are nats per image unless
//! a name says bits/dim. The guide is `docs/vae.md`.
//!
//! ```
//! use candle_core::{DType, Device};
//! use candle_generative::data::procedural;
//! use candle_generative::vae::{Config, EvalOptions, TrainConfig, Trainer};
//!
//! // A small VAE on 16x16 procedural shapes, a few steps.
//! let data = procedural::shapes_split(256, 64, 16, 1, 0)?;
//! let config = Config { image_size: 16, conv_widths: vec![8, 16], hidden: 32, latent_dim: 4, ..Config::default() };
//! let train = TrainConfig { batch_size: 32, ..TrainConfig::default() };
//! let mut trainer = Trainer::new(config, train, data.train.len(), DType::F32, &Device::Cpu)?;
//! for _ in 0..5 {
//!     let stats = trainer.step(&data.train)?;
//!     assert!(stats.neg_elbo.is_finite());
//! }
//! let report = trainer.evaluate(&data.test, &EvalOptions { iwae_samples: Some(4), ..EvalOptions::default() })?;
//! println!("test -ELBO {:.1} nats ({:.3} bits/dim)", report.neg_elbo, report.neg_elbo_bits_per_dim());
//! let (_, neg_iwae) = report.iwae.unwrap();
//! assert!(neg_iwae.is_finite());
//! # Ok::<(), candle_generative::Error>(())
//! ```

mod annealing;
mod config;
mod conv;
mod evaluate;
mod images;
mod likelihood;
mod model;
mod posterior;
mod train;

pub use annealing::KlAnnealing;
pub use config::{Config, VaeSpec};
pub use conv::{init_conv_vae, ConvDecoder, ConvEncoder, ConvVae};
pub use evaluate::{elbo_terms, evaluate, iwae_log_likelihood, log_sum_exp, ElboTerms, EvalOptions, EvalReport};
pub use images::{save_grids, GridPaths};
pub use likelihood::{Likelihood, MIN_LOG_SCALE};
pub use model::{side_by_side, Decoder, Encoder, Vae};
pub use posterior::{standard_normal_log_prob, Posterior};
pub use train::{StepStats, TrainConfig, Trainer};

// Compiles the VAE guide's code with the doc tests.
#[doc = include_str!("../../docs/vae.md")]
#[cfg(doctest)]
pub struct VaeGuideDoctests;
