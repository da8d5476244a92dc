//! Layers candle-nn lacks, for the model families and for users' own architectures.
//!
//! - [`batch_norm`]: batch normalisation with a fused CPU training kernel, [`BatchNorm`];
//! - [`channel_bias`]: the per-channel bias add of convolutions, with a fast CPU backward;
//! - [`conv`]: convolution and transposed-convolution layers with the crate's faster CPU kernels
//!   (im2col + gemm, [`Conv2d`], [`ConvTranspose2d`]; other devices use candle's);
//! - [`double_backward`]: backward passes that keep their graph (second-order gradients, for
//!   gradient penalties);
//! - [`group_norm`]: group normalisation with a fused CPU kernel, [`GroupNorm`] (Wu & He 2018);
//! - [`init`]: seeded re-initialisation of a model's variables (DCGAN's N(0, 0.02), Kaiming);
//! - [`instance_norm`]: instance normalisation, [`InstanceNorm2d`] (Ulyanov et al. 2016);
//! - [`latent`]: linear and spherical interpolation between latent codes;
//! - [`masked_conv`]: PixelCNN's masked convolutions, types A and B with colour-ordered masks;
//! - [`reflection_pad`]: reflection padding, [`reflection_pad2d`] / [`ReflectionPad2d`];
//! - [`silu`]: the SiLU activation with a one-pass CPU backward;
//! - [`spectral_norm`]: spectral normalisation of a weight by power iteration (Miyato 2018);
//! - [`upsample`]: nearest-neighbour upsampling whose backward runs in every dtype.

pub mod batch_norm;
pub mod channel_bias;
pub mod conv;
mod cpu_slice;
pub mod double_backward;
pub mod group_norm;
mod im2col;
pub mod init;
pub mod instance_norm;
pub mod latent;
pub mod masked_conv;
mod norm_kernel;
pub mod reflection_pad;
pub mod silu;
pub mod spectral_norm;
pub mod upsample;

pub use batch_norm::BatchNorm;
pub use conv::{Conv2d, ConvTranspose2d};
pub use group_norm::GroupNorm;
pub use instance_norm::InstanceNorm2d;
pub use reflection_pad::{reflection_pad2d, ReflectionPad2d};
