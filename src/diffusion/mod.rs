//! Denoising diffusion (Ho et al. 2020): noise schedules, samplers over any [`Denoiser`] (DDPM
//! ancestral, DDIM, DPM-Solver++(2M)), the DDPM [`UNet`], classifier-free guidance and training helpers.
//!
//! The parts, each usable alone:
//! - [`NoiseSchedule`] ([`ScheduleConfig`], [`BetaSchedule`]): betas, `alphabar` in `f64`, SNR,
//!   [`NoiseSchedule::add_noise`] with one timestep per sample, targets, posterior (Ho eq. 7);
//! - [`Denoiser`]: the trait a network implements to be sampled (see `docs/diffusion.md`);
//! - [`Sampler`]s: [`DdpmSampler`], [`DdimSampler`] (with inversion), [`DpmSolverSampler`];
//!   [`Spacing`] of the timesteps, [`X0Processing`] (clipping, dynamic thresholding), [`StepInfo`]
//!   for per-step callbacks; all noise from the crate's [`Rng`](crate::rng::Rng);
//! - [`UNet`] from a [`UNetConfig`] ([`UNetConfig::bench`] is the bench's `ddpm` network), seeded by
//!   [`init_unet`];
//! - [`drop_labels`] and [`Guided`]: classifier-free guidance (Ho & Salimans 2022);
//! - [`noisy_batch`] (timesteps, noise, target, min-SNR weights) and [`Trainer`] (Adam + EMA,
//!   checkpoints).
//!
//! Images are `(B, C, H, W)` in `[-1, 1]`; timesteps are `(B,)` `U32` tensors of indices `0..T`.
//! The guide is `docs/diffusion.md`.

mod blocks;
mod ddim;
mod ddpm;
mod denoiser;
mod dpm_solver;
mod guidance;
mod sampler;
mod schedule;
mod train;
mod unet;

pub use blocks::{dropout, timestep_embedding, Attention, Downsample, ResBlock, Upsample};
pub use ddim::DdimSampler;
pub use ddpm::{DdpmSampler, DdpmVariance};
pub use denoiser::{eps_from_x0, split_prediction, Denoiser};
pub use dpm_solver::DpmSolverSampler;
pub use guidance::{drop_labels, Guided};
pub use sampler::{Sampler, Spacing, StepInfo, X0Processing};
pub use schedule::{BetaSchedule, NoiseSchedule, ScheduleConfig};
pub use train::{noisy_batch, NoisyBatch, StepStats, TrainConfig, Trainer};
pub use unet::{init_unet, UNet, UNetConfig};

// Compiles the diffusion guide's code with the doc tests.
#[doc = include_str!("../../docs/diffusion.md")]
#[cfg(doctest)]
pub struct DiffusionGuideDoctests;
