//! Autoregressive pixel models: PixelCNN (van den Oord et al. 2016, "Pixel Recurrent Neural Networks") and
//! Gated PixelCNN (van den Oord et al. 2016, "Conditional Image Generation with PixelCNN Decoders"), with
//! class conditioning, a 256-way softmax or discretised-logistic-mixture head (Salimans et al. 2017),
//! exact likelihoods in bits/dim and ancestral sampling.
//!
//! The parts, each usable alone:
//! - [`MaskedConv2d`](crate::nn::masked_conv::MaskedConv2d) (in `nn`): masks A and B with colour groups;
//! - [`Config`] ([`Architecture`], [`Head`]): the network; the default is the benchmark's `pixelcnn`;
//! - [`PixelCnn`]: forward to the head's parameters, [`PixelCnn::nll`] in nats per image;
//!   [`init_pixelcnn`] seeds it and zeroes the masked-out weights;
//! - [`sample()`]: pixel-by-pixel sampling with a temperature, only on the rows that matter, with its
//!   [`SampleCost`];
//! - [`evaluate()`]: test NLL in nats per image and bits/dim;
//! - [`Trainer`]: one seeded, checkpointable Adam step at a time.
//!
//! Images are 8-bit `(B, C, H, W)` tensors (`U8`, values `0..=255`) for likelihoods and samples; the network
//! itself reads them as `2x/255 - 1` in `[-1, 1]` ([`pixels_to_input`]). The guide is `docs/pixelcnn.md`.
//!
//! ```
//! use candle_core::{DType, Device};
//! use candle_generative::data::procedural;
//! use candle_generative::pixelcnn::{sample, Config, SampleOptions, TrainConfig, Trainer};
//! use candle_generative::rng::Rng;
//!
//! let data = procedural::shapes_split(64, 16, 8, 1, 0)?;
//! let config = Config { hidden: 16, layers: 2, output_hidden: 16, ..Config::default() };
//! let mut trainer = Trainer::new(config, TrainConfig::default(), data.train.len(), DType::F32, &Device::Cpu)?;
//! for _ in 0..3 {
//!     trainer.step(&data.train)?;
//! }
//! let report = trainer.evaluate(&data.test, None)?;
//! assert!(report.bits_per_dim < 8.5);
//! let (images, cost) = sample(trainer.model(), 4, 8, 8, None, &SampleOptions::default(), &mut Rng::new(0))?;
//! assert_eq!(images.dims(), &[4, 1, 8, 8]);
//! assert_eq!(cost.forward_passes, 64);
//! # Ok::<(), candle_generative::Error>(())
//! ```

mod config;
mod evaluate;
mod gated;
mod model;
mod plain;
mod sample;
mod train;

pub use config::{Architecture, Config, Head};
pub use evaluate::{evaluate, EvalReport};
pub use gated::GatedBody;
pub use model::{init_pixelcnn, pixels_to_input, PixelCnn};
pub use plain::PixelCnnBody;
pub use sample::{sample, sample_mixture, sample_softmax, SampleCost, SampleOptions};
pub use train::{StepStats, TrainConfig, Trainer};

/// The guide `docs/pixelcnn.md`, compiled as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../../docs/pixelcnn.md")]
pub struct PixelCnnGuide;
