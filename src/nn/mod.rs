//! Layers candle-nn lacks, for the model families and for users' own architectures.
//!
//! - [`double_backward`]: backward passes that keep their graph (second-order gradients, for
//!   gradient penalties);
//! - [`init`]: seeded re-initialisation of a model's variables (DCGAN's N(0, 0.02), Kaiming);
//! - [`instance_norm`]: instance normalisation, [`InstanceNorm2d`] (Ulyanov et al. 2016);
//! - [`latent`]: linear and spherical interpolation between latent codes;
//! - [`masked_conv`]: PixelCNN's masked convolutions, types A and B with colour-ordered masks;
//! - [`reflection_pad`]: reflection padding, [`reflection_pad2d`] / [`ReflectionPad2d`];
//! - [`spectral_norm`]: spectral normalisation of a weight by power iteration (Miyato 2018).

pub mod double_backward;
pub mod init;
pub mod instance_norm;
pub mod latent;
pub mod masked_conv;
pub mod reflection_pad;
pub mod spectral_norm;

pub use instance_norm::InstanceNorm2d;
pub use reflection_pad::{reflection_pad2d, ReflectionPad2d};
