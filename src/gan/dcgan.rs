//! DCGAN generator and discriminator (Radford, Metz & Chintala 2016), built from a [`Config`].

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use super::config::Config;
use super::layers::{batch_norm, check_dtype, maybe_norm, Conv, ConvTranspose, Dense, Params};
use super::traits::{Discriminator, Generator};
use crate::nn::BatchNorm;
use crate::rng::Rng;
use crate::{Error, Result};

/// The DCGAN generator: `z (B, latent_dim)` to images `(B, C, S, S)` in `[-1, 1]`; the layer
/// list is in [`Config`]'s documentation.
///
/// Variables under the builder's prefix (PyTorch-like names): `project.{weight,bias}`,
/// `project_bn.*`, `blocks.<i>.conv.*`, `blocks.<i>.bn.*` (with batch norm: `weight`, `bias`,
/// `running_mean`, `running_var`), `to_image.{weight,bias}`.
#[derive(Debug, Clone)]
pub struct DcganGenerator {
    config: Config,
    input_dim: usize,
    project: Dense,
    project_bn: Option<BatchNorm>,
    blocks: Vec<(ConvTranspose, Option<BatchNorm>)>,
    to_image: ConvTranspose,
    dtype: DType,
    device: Device,
}

impl DcganGenerator {
    /// Builds the generator of `config` in `vb` (its dtype and device) and initialises its
    /// variables from `rng` with [`dcgan_init`](crate::nn::init::dcgan_init) (N(0, 0.02)
    /// weights, N(1, 0.02) batch-norm scales, zero biases), in name order, so the same seed gives
    /// the same weights on every device.
    ///
    /// Build the model before restoring a checkpoint into its `VarMap`: building over existing
    /// variables re-initialises them.
    ///
    /// Errors: [`Error::Config`] for an invalid config, or one with `conditioning` (use
    /// [`ConditionalGenerator`](super::ConditionalGenerator)); candle's errors when `vb` holds
    /// variables of other shapes under the same names.
    pub fn new(config: &Config, vb: VarBuilder, rng: &mut Rng) -> Result<Self> {
        config.validate()?;
        if config.conditioning.is_some() {
            return Err(Error::config(
                "Config.conditioning",
                "DcganGenerator is unconditional; use ConditionalGenerator for a config with conditioning",
            ));
        }
        let mut params = Params::new(vb);
        let generator = Self::build(config, config.latent_dim, &mut params)?;
        params.init(rng)?;
        Ok(generator)
    }

    /// The layers for an input of `input_dim` features (the latent code, plus the label
    /// embedding for the conditional generator).
    pub(crate) fn build(config: &Config, input_dim: usize, p: &mut Params) -> Result<Self> {
        let (s0, widths) = (config.base_resolution(), config.generator_widths());
        let bn = config.generator_batch_norm;
        let project = Dense::new(p, "project", input_dim, widths[0] * s0 * s0, None)?;
        let project_bn = if bn { Some(batch_norm(p, "project_bn", widths[0])?) } else { None };
        let mut blocks = Vec::with_capacity(widths.len() - 1);
        for (i, pair) in widths.windows(2).enumerate() {
            let conv = ConvTranspose::new(p, &format!("blocks.{i}.conv"), pair[0], pair[1])?;
            let norm = if bn { Some(batch_norm(p, &format!("blocks.{i}.bn"), pair[1])?) } else { None };
            blocks.push((conv, norm));
        }
        let to_image = ConvTranspose::new(p, "to_image", config.base_width, config.channels)?;
        let (dtype, device) = (p.builder().dtype(), p.builder().device().clone());
        Ok(Self { config: config.clone(), input_dim, project, project_bn, blocks, to_image, dtype, device })
    }

    /// The configuration it was built from.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The forward pass from an input `(B, input_dim)` that has been checked.
    pub(crate) fn forward(&self, h: &Tensor, train: bool) -> Result<Tensor> {
        let s0 = self.config.base_resolution();
        let b = h.dim(0)?;
        let h = self.project.forward(h, train)?.reshape((b, (), s0, s0))?;
        let mut h = maybe_norm(&self.project_bn, h, train)?.relu()?;
        for (conv, norm) in &self.blocks {
            h = maybe_norm(norm, conv.forward(&h)?, train)?.relu()?;
        }
        Ok(self.to_image.forward(&h)?.tanh()?)
    }

    /// Checks a latent batch `(B, latent_dim)` of the model's dtype.
    pub(crate) fn check_latent(&self, context: &str, z: &Tensor) -> Result<usize> {
        let d = self.config.latent_dim;
        if z.rank() != 2 || z.dim(1)? != d || z.dim(0)? == 0 {
            return Err(Error::shape(context, format!("z must have shape (B, {d}) with B > 0, got {:?}", z.dims())));
        }
        check_dtype(context, "z", z, self.dtype)?;
        Ok(z.dim(0)?)
    }

    /// Standard normal codes `(n, latent_dim)` in the model's dtype and on its device.
    pub(crate) fn normal_latent(&self, n: usize, rng: &mut Rng) -> Result<Tensor> {
        rng.randn((n, self.config.latent_dim), self.dtype, &self.device)
    }

    pub(crate) fn input_dim(&self) -> usize {
        self.input_dim
    }
}

impl Generator for DcganGenerator {
    fn latent_dim(&self) -> usize {
        self.config.latent_dim
    }

    /// Standard normal codes, as in the paper.
    fn sample_latent(&self, n: usize, rng: &mut Rng) -> Result<Tensor> {
        self.normal_latent(n, rng)
    }

    /// Images `(B, C, S, S)` in `[-1, 1]` from `z (B, latent_dim)`; `labels` must be `None`.
    fn generate(&self, z: &Tensor, labels: Option<&Tensor>, train: bool) -> Result<Tensor> {
        const CTX: &str = "DcganGenerator::generate";
        self.check_latent(CTX, z)?;
        if labels.is_some() {
            return Err(Error::shape(CTX, "an unconditional generator takes no labels"));
        }
        debug_assert_eq!(self.input_dim, self.config.latent_dim);
        self.forward(z, train)
    }
}

/// The DCGAN discriminator: images `(B, C, S, S)` to logits `(B, 1)`; the layer list is in
/// [`Config`]'s documentation.
///
/// Variables: `from_image.*`, `blocks.<i>.conv.*`, `blocks.<i>.bn.*`, `head.*`; with spectral
/// norm each weight is `<layer>.weight_orig` with its power-iteration state `<layer>.weight_u`,
/// `<layer>.weight_v` (see [`crate::nn::spectral_norm`]).
#[derive(Debug, Clone)]
pub struct DcganDiscriminator {
    config: Config,
    in_channels: usize,
    from_image: Conv,
    blocks: Vec<(Conv, Option<BatchNorm>)>,
    head: Dense,
    dtype: DType,
}

impl DcganDiscriminator {
    /// Builds the discriminator of `config` in `vb` and initialises it from `rng` as
    /// [`DcganGenerator::new`] does (with spectral norm, `rng` also draws the power-iteration
    /// vectors).
    ///
    /// Errors: [`Error::Config`] for an invalid config or one with `conditioning` (use
    /// [`ConditionalDiscriminator`](super::ConditionalDiscriminator)).
    pub fn new(config: &Config, vb: VarBuilder, rng: &mut Rng) -> Result<Self> {
        config.validate()?;
        if config.conditioning.is_some() {
            return Err(Error::config(
                "Config.conditioning",
                "DcganDiscriminator is unconditional; use ConditionalDiscriminator for a config with conditioning",
            ));
        }
        let mut params = Params::new(vb);
        let disc = Self::build(config, config.channels, &mut params, rng)?;
        params.init(rng)?;
        Ok(disc)
    }

    /// The layers for `in_channels` input planes (more than the image's for concatenated labels).
    pub(crate) fn build(config: &Config, in_channels: usize, p: &mut Params, rng: &mut Rng) -> Result<Self> {
        let widths = config.discriminator_widths();
        let sn = config.spectral_norm;
        let from_image = Conv::new(p, "from_image", in_channels, widths[0], sn.then_some(&mut *rng))?;
        let mut blocks = Vec::with_capacity(widths.len() - 1);
        for (i, pair) in widths.windows(2).enumerate() {
            let conv = Conv::new(p, &format!("blocks.{i}.conv"), pair[0], pair[1], sn.then_some(&mut *rng))?;
            let norm = if config.discriminator_batch_norm {
                Some(batch_norm(p, &format!("blocks.{i}.bn"), pair[1])?)
            } else {
                None
            };
            blocks.push((conv, norm));
        }
        let head = Dense::new(p, "head", config.feature_dim(), 1, sn.then_some(&mut *rng))?;
        let dtype = p.builder().dtype();
        Ok(Self { config: config.clone(), in_channels, from_image, blocks, head, dtype })
    }

    /// The configuration it was built from.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Checks images `(B, C, S, S)` against the config; returns `B`.
    pub(crate) fn check_images(&self, context: &str, x: &Tensor, channels: usize) -> Result<usize> {
        let s = self.config.image_size;
        if x.rank() != 4 || x.dim(0)? == 0 || x.dims()[1..] != [channels, s, s] {
            return Err(Error::shape(
                context,
                format!("images must have shape (B, {channels}, {s}, {s}) with B > 0, got {:?}", x.dims()),
            ));
        }
        check_dtype(context, "images", x, self.dtype)?;
        Ok(x.dim(0)?)
    }

    /// The feature vector `φ(x)` `(B, feature_dim)` entering the final linear layer, for images
    /// `(B, C, S, S)` (checked). Used by the projection discriminator, and useful for feature
    /// matching (Salimans et al. 2016).
    pub fn features(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.check_images("DcganDiscriminator::features", x, self.in_channels)?;
        self.features_unchecked(x, train)
    }

    fn features_unchecked(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let slope = self.config.leaky_relu_slope;
        let mut h = candle_nn::ops::leaky_relu(&self.from_image.forward(x, train)?, slope)?;
        for (conv, norm) in &self.blocks {
            h = candle_nn::ops::leaky_relu(&maybe_norm(norm, conv.forward(&h, train)?, train)?, slope)?;
        }
        Ok(h.flatten_from(1)?)
    }

    /// The final linear layer `ψ`: `(B, feature_dim)` to logits `(B, 1)`.
    pub(crate) fn head(&self, features: &Tensor, train: bool) -> Result<Tensor> {
        self.head.forward(features, train)
    }
}

impl Discriminator for DcganDiscriminator {
    /// Logits `(B, 1)` for images `(B, C, S, S)`; `labels` must be `None`.
    fn discriminate(&self, x: &Tensor, labels: Option<&Tensor>, train: bool) -> Result<Tensor> {
        const CTX: &str = "DcganDiscriminator::discriminate";
        self.check_images(CTX, x, self.config.channels)?;
        if labels.is_some() {
            return Err(Error::shape(CTX, "an unconditional discriminator takes no labels"));
        }
        self.head(&self.features_unchecked(x, train)?, train)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim::NamedVars;
    use candle_nn::VarMap;

    #[test]
    fn shapes_names_and_seeded_init() -> Result<()> {
        let cfg = Config { base_width: 8, latent_dim: 16, ..Default::default() };
        let build = |seed| -> Result<(VarMap, DcganGenerator)> {
            let vm = VarMap::new();
            let g =
                DcganGenerator::new(&cfg, VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu), &mut Rng::new(seed))?;
            Ok((vm, g))
        };
        let (vm, g) = build(3)?;
        let z = g.sample_latent(5, &mut Rng::new(0))?;
        let x = g.generate(&z, None, true)?;
        assert_eq!(x.dims(), &[5, 1, 28, 28]);
        let names = NamedVars::from_varmap(&vm);
        assert!(names.names().contains(&"blocks.0.bn.running_var"), "{:?}", names.names());
        let w = |vm: &VarMap| vm.data().lock().unwrap()["project.weight"].flatten_all().unwrap().to_vec1::<f32>();
        assert_eq!(w(&vm)?, w(&build(3)?.0)?);
        assert_ne!(w(&vm)?, w(&build(4)?.0)?);
        let bias = vm.data().lock().unwrap()["to_image.bias"].to_vec1::<f32>()?;
        assert_eq!(bias, vec![0.0]);
        Ok(())
    }
}
