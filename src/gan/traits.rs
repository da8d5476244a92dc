//! The two interfaces the GAN helpers are written against: [`Generator`] and [`Discriminator`].
//!
//! Implement them for your own networks and the step helpers ([`super::discriminator_step`],
//! [`super::generator_step`]) and samplers ([`super::sample`], [`super::interpolation_grid`])
//! work with them unchanged; `docs/gan.md` has a complete custom generator.

use candle_core::Tensor;

use crate::rng::Rng;
use crate::Result;

/// A network mapping latent codes (and, for a conditional model, class labels) to images.
pub trait Generator {
    /// Length `D` of the latent code `z`.
    fn latent_dim(&self) -> usize;

    /// The number of classes of a class-conditional generator, `None` (the default) for an
    /// unconditional one. The step helpers draw uniform labels in `[0, K)` for a conditional
    /// generator when the batch has none.
    fn num_classes(&self) -> Option<usize> {
        None
    }

    /// `n` latent codes `(n, D)` drawn from the prior `p(z)` with `rng`, in the generator's dtype
    /// and on its device. DCGAN's prior is the standard normal:
    /// `rng.randn((n, D), dtype, device)`.
    fn sample_latent(&self, n: usize, rng: &mut Rng) -> Result<Tensor>;

    /// Images `G(z, y)`: `(B, C, H, W)` in `[-1, 1]` from codes `z` of shape `(B, D)` and, for a
    /// conditional generator, integer labels `y` of shape `(B,)` (`U8`, `U32` or `I64`, values
    /// in `[0, K)`). `train` selects training behaviour (batch statistics in batch norm).
    ///
    /// Implementations return `Error::Shape` for a code of the wrong size, missing labels of a
    /// conditional generator, labels given to an unconditional one, or labels out of range.
    fn generate(&self, z: &Tensor, labels: Option<&Tensor>, train: bool) -> Result<Tensor>;
}

/// A network scoring images as real or generated (a critic, for Wasserstein losses).
pub trait Discriminator {
    /// Logits (critic scores) `(B, 1)` for images `(B, C, H, W)` in `[-1, 1]` and, for a
    /// conditional discriminator, labels `(B,)` as in [`Generator::generate`]. Higher means
    /// "more real". `train` selects training behaviour (batch statistics in batch norm, a
    /// power-iteration step in spectral norm).
    ///
    /// The output's first dimension must be the batch; any further dimensions (a PatchGAN map)
    /// are averaged by the losses.
    fn discriminate(&self, x: &Tensor, labels: Option<&Tensor>, train: bool) -> Result<Tensor>;

    /// As [`discriminate`](Self::discriminate), and also class logits `(B, K)` when the
    /// discriminator has an auxiliary classifier (ACGAN, Odena et al. 2017). The default
    /// implementation returns `None` for the classes; override it for an ACGAN head, and the
    /// step helpers add the classification losses.
    fn discriminate_with_classes(
        &self,
        x: &Tensor,
        labels: Option<&Tensor>,
        train: bool,
    ) -> Result<(Tensor, Option<Tensor>)> {
        Ok((self.discriminate(x, labels, train)?, None))
    }
}

impl<T: Generator + ?Sized> Generator for Box<T> {
    fn latent_dim(&self) -> usize {
        (**self).latent_dim()
    }
    fn num_classes(&self) -> Option<usize> {
        (**self).num_classes()
    }
    fn sample_latent(&self, n: usize, rng: &mut Rng) -> Result<Tensor> {
        (**self).sample_latent(n, rng)
    }
    fn generate(&self, z: &Tensor, labels: Option<&Tensor>, train: bool) -> Result<Tensor> {
        (**self).generate(z, labels, train)
    }
}

impl<T: Discriminator + ?Sized> Discriminator for Box<T> {
    fn discriminate(&self, x: &Tensor, labels: Option<&Tensor>, train: bool) -> Result<Tensor> {
        (**self).discriminate(x, labels, train)
    }
    fn discriminate_with_classes(
        &self,
        x: &Tensor,
        labels: Option<&Tensor>,
        train: bool,
    ) -> Result<(Tensor, Option<Tensor>)> {
        (**self).discriminate_with_classes(x, labels, train)
    }
}
