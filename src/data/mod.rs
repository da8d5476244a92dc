//! Data: loaders, batching, transforms and augmentations.
//!
//! Every loader returns an [`ImageDataset`] (8-bit pixels and class labels in memory);
//! [`batcher::Batcher`] draws seeded shuffled mini-batches of indices from it; the images of a
//! batch become an `F32` tensor in `[0, 1]` with [`ImageDataset::images`], and
//! [`transforms`] / [`augment`] take it from there.
//!
//! - [`idx`]: the IDX format of MNIST and Fashion-MNIST (raw or `.gz`);
//! - [`mnist`]: `fashion_mnist(dir)`, `mnist(dir)` and where to find them;
//! - [`image_folder`]: PNG/JPEG folders (user data, CycleGAN domains);
//! - [`procedural`]: seeded shapes, the data set that needs no download;
//! - [`color`]: brightness, contrast, saturation and colour jitter (re-exported by [`augment`]);
//! - [`unpaired`]: two unpaired image domains (two folders, or disjoint parts of one data set);
//! - [`fashion_mnist_or_shapes`]: what the examples train on.

pub mod augment;
pub mod batcher;
pub mod color;
mod dataset;
pub mod idx;
pub mod image_folder;
pub mod mnist;
pub mod procedural;
mod source;
pub mod transforms;
pub mod unpaired;

pub use dataset::{ImageDataset, Split};
pub use source::{fashion_mnist_or_shapes, DataSource};
