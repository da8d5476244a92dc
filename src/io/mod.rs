//! Files: checkpoints, PNG image grids of samples, and image files read back as tensors.
//!
//! - [`checkpoint`]: [`Checkpoint`] holds weights, optimizer and EMA state, step, RNG states and
//!   configs in one safetensors file, written atomically; [`CheckpointDir`] keeps the last N.
//! - [`image_grid`]: [`make_grid`] tiles a `(B, C, H, W)` batch into one image,
//!   [`save_grid`] writes it as a PNG, [`GridWriter`] does so every `n` training steps and
//!   [`load_png`] reads a PNG or JPEG back as a `(C, H, W)` tensor in `[0, 1]`;
//! - [`metrics_log`]: [`MetricsLog`] writes step, wall time and named scalars as JSON lines.

pub mod checkpoint;
pub mod image_grid;
pub mod metrics_log;

pub use checkpoint::{Checkpoint, CheckpointDir};
pub use image_grid::{load_png, make_grid, save_grid, GridOptions, GridWriter};
pub use metrics_log::{read_metrics_log, MetricsLog};
