//! Class-conditional GAN models: a generator with a label embedding (Mirza & Osindero 2014), and
//! a discriminator that receives the label by projection (Miyato & Koyama 2018) or by
//! concatenation, optionally with an auxiliary classifier (ACGAN, Odena, Olah & Shlens 2017).

use candle_core::{DType, Tensor};
use candle_nn::VarBuilder;

use super::config::{Conditioning, Config, LabelInput};
use super::dcgan::{DcganDiscriminator, DcganGenerator};
use super::layers::{check_labels, Dense, Params, Weight};
use super::traits::{Discriminator, Generator};
use crate::nn::init::InitKind;
use crate::rng::Rng;
use crate::{Error, Result};

fn conditioning<'a>(config: &'a Config, model: &str) -> Result<&'a Conditioning> {
    config.validate()?;
    config.conditioning.as_ref().ok_or_else(|| {
        Error::config("Config.conditioning", format!("{model} needs `conditioning: Some(..)`; use the Dcgan model"))
    })
}

/// A class-conditional DCGAN generator: `G(z, y) = DCGAN([z, e_y])`, where `e_y` is a learnt
/// embedding of the label (`Embedding(num_classes, embedding_dim)`, initialised N(0, 1)) and the
/// DCGAN body takes `latent_dim + embedding_dim` inputs (Mirza & Osindero 2014 concatenate the
/// label to the noise).
///
/// Variables: `label_embedding.weight` `(K, E)` and the [`DcganGenerator`]'s.
#[derive(Debug, Clone)]
pub struct ConditionalGenerator {
    num_classes: usize,
    embedding: Tensor,
    body: DcganGenerator,
}

impl ConditionalGenerator {
    /// Builds the generator of `config` (which must have `conditioning`) in `vb` and initialises
    /// it from `rng` as [`DcganGenerator::new`] does.
    ///
    /// Errors: [`Error::Config`] for an invalid config or one without conditioning.
    pub fn new(config: &Config, vb: VarBuilder, rng: &mut Rng) -> Result<Self> {
        let cond = conditioning(config, "ConditionalGenerator")?;
        let mut p = Params::new(vb);
        let (k, e) = (cond.num_classes, cond.embedding_dim);
        let embedding = p.get((k, e), "label_embedding.weight", Some(InitKind::Normal { mean: 0.0, std: 1.0 }))?;
        let body = DcganGenerator::build(config, config.latent_dim + e, &mut p)?;
        p.init(rng)?;
        Ok(Self { num_classes: k, embedding, body })
    }

    /// The configuration it was built from.
    pub fn config(&self) -> &Config {
        self.body.config()
    }
}

impl Generator for ConditionalGenerator {
    fn latent_dim(&self) -> usize {
        self.body.config().latent_dim
    }

    fn num_classes(&self) -> Option<usize> {
        Some(self.num_classes)
    }

    /// Standard normal codes.
    fn sample_latent(&self, n: usize, rng: &mut Rng) -> Result<Tensor> {
        self.body.normal_latent(n, rng)
    }

    /// Images `(B, C, S, S)` in `[-1, 1]` from `z (B, latent_dim)` and labels `(B,)` in
    /// `[0, K)` (required).
    fn generate(&self, z: &Tensor, labels: Option<&Tensor>, train: bool) -> Result<Tensor> {
        const CTX: &str = "ConditionalGenerator::generate";
        let b = self.body.check_latent(CTX, z)?;
        let labels = labels.ok_or_else(|| Error::shape(CTX, "a conditional generator needs labels (B,)"))?;
        let (_, labels) = check_labels(CTX, labels, b, self.num_classes)?;
        let e = self.embedding.index_select(&labels, 0)?;
        let h = Tensor::cat(&[z, &e], 1)?;
        debug_assert_eq!(h.dim(1)?, self.body.input_dim());
        self.body.forward(&h, train)
    }
}

/// A class-conditional DCGAN discriminator with the label input of
/// [`Conditioning::label_input`]:
///
/// - [`LabelInput::Projection`] (Miyato & Koyama 2018): `D(x, y) = ψ(φ(x)) + e_yᵀ φ(x)`, with
///   `φ(x)` the DCGAN features (see [`DcganDiscriminator::features`]), `ψ` its final linear
///   layer and `e_y` row `y` of a learnt `(K, feature_dim)` matrix (`projection.weight`,
///   spectrally normalised with the rest when `spectral_norm` is on, as in the paper);
/// - [`LabelInput::Concatenation`]: `K` one-hot planes appended to the image channels;
/// - [`LabelInput::Unused`]: the label is not an input (ACGAN).
///
/// With [`Conditioning::auxiliary_classifier`], a linear head `classifier` maps `φ(x)` to class
/// logits `(B, K)` ([`Discriminator::discriminate_with_classes`]), and the step helpers add
/// ACGAN's cross-entropy terms (Odena et al. 2017).
#[derive(Debug, Clone)]
pub struct ConditionalDiscriminator {
    conditioning: Conditioning,
    body: DcganDiscriminator,
    projection: Option<Weight>,
    classifier: Option<Dense>,
}

impl ConditionalDiscriminator {
    /// Builds the discriminator of `config` (which must have `conditioning`) in `vb` and
    /// initialises it from `rng` as [`DcganDiscriminator::new`] does.
    ///
    /// Errors: [`Error::Config`] for an invalid config or one without conditioning.
    pub fn new(config: &Config, vb: VarBuilder, rng: &mut Rng) -> Result<Self> {
        let cond = conditioning(config, "ConditionalDiscriminator")?.clone();
        let mut p = Params::new(vb);
        let k = cond.num_classes;
        let in_channels = match cond.label_input {
            LabelInput::Concatenation => config.channels + k,
            LabelInput::Projection | LabelInput::Unused => config.channels,
        };
        let body = DcganDiscriminator::build(config, in_channels, &mut p, rng)?;
        let sn = config.spectral_norm;
        let f = config.feature_dim();
        let projection = match cond.label_input {
            LabelInput::Projection => Some(Weight::new(&mut p, "projection", (k, f), sn.then_some(&mut *rng), None)?),
            _ => None,
        };
        let classifier = match cond.auxiliary_classifier {
            true => Some(Dense::new(&mut p, "classifier", f, k, sn.then_some(&mut *rng))?),
            false => None,
        };
        p.init(rng)?;
        Ok(Self { conditioning: cond, body, projection, classifier })
    }

    /// The configuration it was built from.
    pub fn config(&self) -> &Config {
        self.body.config()
    }

    /// `K` one-hot planes `(B, K, S, S)` in `dtype` for host labels.
    fn one_hot_planes(&self, labels: &[u32], like: &Tensor) -> Result<Tensor> {
        let (k, s, b) = (self.conditioning.num_classes, self.config().image_size, labels.len());
        let mut one_hot = vec![0f32; b * k];
        for (i, &l) in labels.iter().enumerate() {
            one_hot[i * k + l as usize] = 1.0;
        }
        let planes = Tensor::from_vec(one_hot, (b, k, 1, 1), like.device())?.to_dtype(like.dtype())?;
        Ok(planes.broadcast_as((b, k, s, s))?)
    }
}

impl Discriminator for ConditionalDiscriminator {
    fn discriminate(&self, x: &Tensor, labels: Option<&Tensor>, train: bool) -> Result<Tensor> {
        Ok(self.discriminate_with_classes(x, labels, train)?.0)
    }

    /// Logits `(B, 1)` and, with an auxiliary classifier, class logits `(B, K)`, for images
    /// `(B, C, S, S)` and labels `(B,)` in `[0, K)` (required unless the label input is
    /// [`LabelInput::Unused`]).
    fn discriminate_with_classes(
        &self,
        x: &Tensor,
        labels: Option<&Tensor>,
        train: bool,
    ) -> Result<(Tensor, Option<Tensor>)> {
        const CTX: &str = "ConditionalDiscriminator::discriminate";
        let b = self.body.check_images(CTX, x, self.config().channels)?;
        let k = self.conditioning.num_classes;
        let checked = match labels {
            Some(l) => Some(check_labels(CTX, l, b, k)?),
            None if self.conditioning.label_input == LabelInput::Unused => None,
            None => return Err(Error::shape(CTX, "this conditional discriminator needs labels (B,)")),
        };
        let input = match (&checked, self.conditioning.label_input) {
            (Some((host, _)), LabelInput::Concatenation) => Tensor::cat(&[x, &self.one_hot_planes(host, x)?], 1)?,
            _ => x.clone(),
        };
        let features = self.body.features(&input, train)?;
        let mut logits = self.body.head(&features, train)?;
        if let (Some(projection), Some((_, labels))) = (&self.projection, &checked) {
            let e = projection.get(train)?.index_select(labels, 0)?;
            logits = (logits + (e * &features)?.sum_keepdim(1)?)?;
        }
        let classes = match &self.classifier {
            Some(c) => Some(c.forward(&features, train)?),
            None => None,
        };
        Ok((logits, classes))
    }
}

/// Mean cross-entropy of class logits `(B, K)` against labels `(B,)` (ACGAN's classification
/// loss), computed in `F32` or wider and returned in the logits' dtype.
pub(crate) fn classification_loss(class_logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    let dtype = match class_logits.dtype() {
        DType::F64 => DType::F64,
        _ => DType::F32,
    };
    let (b, k) = class_logits.dims2()?;
    let (_, labels) = check_labels("classification_loss", labels, b, k)?;
    // Kept in f32 for half-precision logits, as the adversarial terms it is added to.
    Ok(candle_nn::loss::cross_entropy(&class_logits.to_dtype(dtype)?, &labels)?)
}
