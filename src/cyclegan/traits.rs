//! The two interfaces the CycleGAN step is written against: [`Translator`] (a generator from
//! one image domain to another) and [`Discriminator`].
//!
//! [`ResnetGenerator`](super::ResnetGenerator) and
//! [`PatchDiscriminator`](super::PatchDiscriminator) implement them; implement them for a U-Net
//! or any other network and [`generator_step`](super::generator_step),
//! [`discriminator_step`](super::discriminator_step) and [`train_step`](super::train_step) work
//! unchanged (`docs/cyclegan.md` has an example).

use candle_core::Tensor;

use crate::Result;

/// An image-to-image generator: images of one domain to images of another.
pub trait Translator {
    /// Translates `x` of shape `(B, C_in, H, W)` in `[-1, 1]` to `(B, C_out, H, W)` in
    /// `[-1, 1]`. `train` selects training behaviour (dropout, batch statistics) for networks
    /// that have any. Shape errors are `Error::Shape`.
    fn translate(&self, x: &Tensor, train: bool) -> Result<Tensor>;
}

/// A discriminator scoring images of one domain as real or generated.
pub trait Discriminator {
    /// Logits `(B, ...)` for images `(B, C, H, W)` in `[-1, 1]`: one per image or a PatchGAN
    /// map `(B, 1, H', W')`; the losses average over every element. Higher means "more real".
    fn discriminate(&self, x: &Tensor, train: bool) -> Result<Tensor>;
}

impl<T: Translator + ?Sized> Translator for Box<T> {
    fn translate(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        (**self).translate(x, train)
    }
}

impl<T: Discriminator + ?Sized> Discriminator for Box<T> {
    fn discriminate(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        (**self).discriminate(x, train)
    }
}

impl<T: Translator + ?Sized> Translator for &T {
    fn translate(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        (**self).translate(x, train)
    }
}

impl<T: Discriminator + ?Sized> Discriminator for &T {
    fn discriminate(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        (**self).discriminate(x, train)
    }
}
