//! Layers candle-nn lacks, for the model families and for users' own architectures.
//!
//! - [`double_backward`]: backward passes that keep their graph (second-order gradients, for
//!   gradient penalties);
//! - [`init`]: seeded re-initialisation of a model's variables (DCGAN's N(0, 0.02), Kaiming);
//! - [`latent`]: linear and spherical interpolation between latent codes;
//! - [`masked_conv`]: PixelCNN's masked convolutions, types A and B with colour-ordered masks;
//! - [`spectral_norm`]: spectral normalisation of a weight by power iteration (Miyato 2018).

pub mod double_backward;
pub mod init;
pub mod latent;
pub mod masked_conv;
pub mod spectral_norm;
