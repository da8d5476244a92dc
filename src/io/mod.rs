//! Files: PNG image grids of samples, and image files read back as tensors.
//!
//! - [`image_grid`]: [`make_grid`] tiles a `(B, C, H, W)` batch into one image,
//!   [`save_grid`] writes it as a PNG, [`GridWriter`] does so every `n` training steps and
//!   [`load_png`] reads a PNG or JPEG back as a `(C, H, W)` tensor in `[0, 1]`.

pub mod image_grid;

pub use image_grid::{load_png, make_grid, save_grid, GridOptions, GridWriter};
