#![warn(missing_docs)]
//! # candle-generative
//!
//! Generative image-model building blocks on [candle](https://github.com/huggingface/candle)
//! tensors, trainable on CPU, CUDA and Metal.
//!
//! The crate is organised as in `docs/architecture.md`:
//! - [`error`]: the one [`Error`] type and [`Result`] alias;
//! - [`rng`]: seeded randomness for every device ([`rng::Rng`]);
//! - [`device`]: device and dtype selection for examples;
//! - [`data`]: IDX (MNIST / Fashion-MNIST), image folders, procedural shapes, batching,
//!   transforms and augmentations;
//! - [`hyperparam`]: seeded grid, random and successive-halving hyper-parameter search;
//! - [`nn`]: layers candle-nn lacks (spectral norm, ...);
//! - [`losses`]: adversarial, penalties, ELBO/KL, autoregressive, diffusion and cycle losses;
//! - [`optim`]: optimizers with checkpointable state, learning-rate schedules, EMA, clipping;
//! - [`vae`]: convolutional, β- and conditional VAEs, ELBO and IWAE evaluation;
//! - [`pixelcnn`]: PixelCNN and Gated PixelCNN (masked convolutions, conditioning, bits/dim, sampling);
//! - [`io`]: checkpoints, PNG image grids and the training log;
//! - [`gan`]: DCGAN and conditional GAN models (projection, concatenation, ACGAN), train-step helpers, samplers;
//! - [`cyclegan`]: unpaired image-to-image translation (ResNet generator, PatchGAN, image pool, CycleGAN step);
//! - [`diffusion`]: noise schedules, DDPM/DDIM/DPM-Solver++ samplers over any denoiser, the DDPM UNet, classifier-free guidance;
//! - [`metrics`]: FID, KID, Inception Score and precision/recall over any feature extractor.
//!
//! Images are `(B, C, H, W)` tensors; each function states the value range it expects.

pub mod cyclegan;
pub mod data;
pub mod device;
pub mod diffusion;
pub mod error;
pub mod gan;
pub mod hyperparam;
pub mod io;
pub mod losses;
pub mod metrics;
pub mod nn;
pub mod optim;
pub mod pixelcnn;
pub mod rng;
pub mod vae;

pub use error::{Error, Result};

// Compiles the README's usage example with the doc tests, so it cannot rot.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

// Compiles the training-loop guide's code with the doc tests.
#[doc = include_str!("../docs/training_loop.md")]
#[cfg(doctest)]
pub struct TrainingLoopGuideDoctests;
