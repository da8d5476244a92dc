//! The architecture of the DCGAN generator and discriminator, and of their class-conditional
//! variants, as one serde-serialisable [`Config`].

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The image sizes the DCGAN layout supports, with their base resolution (the feature-map size
/// the generator starts from and the discriminator ends at) and the number of stride-2 layers.
const LAYOUTS: [(usize, usize, usize); 3] = [(28, 7, 2), (32, 4, 3), (64, 4, 4)];

/// The architecture of a DCGAN (Radford, Metz & Chintala 2016) generator and discriminator.
///
/// With `n` stride-2 stages (2 for 28x28 images, 3 for 32x32, 4 for 64x64), base resolution
/// `s0` (7 for 28, 4 for 32 and 64) and `w = base_width`:
///
/// ```text
/// generator:      z (B, latent_dim)
///                 -> Linear(latent_dim, w·2^(n-1)·s0·s0) -> reshape (w·2^(n-1), s0, s0) -> [BN] -> ReLU
///                 -> n-1 x [ConvTranspose(4, stride 2, pad 1) halving the channels -> [BN] -> ReLU]
///                 -> ConvTranspose(w, channels, 4, 2, 1) -> tanh          images (B, C, S, S) in [-1, 1]
/// discriminator:  images (B, C, S, S)
///                 -> Conv(C, w, 4, 2, 1) -> LeakyReLU(0.2)
///                 -> n-1 x [Conv(4, stride 2, pad 1) doubling the channels -> [BN] -> LeakyReLU(0.2)]
///                 -> flatten (w·2^(n-1)·s0·s0 features) -> Linear(.., 1)    logits (B, 1)
/// ```
///
/// Every layer has a bias. `[BN]` is batch normalisation (Ioffe & Szegedy 2015), present when
/// `generator_batch_norm` / `discriminator_batch_norm` is on; as in the paper, the generator's
/// output layer and the discriminator's input layer never have it. With `spectral_norm`, every
/// weight of the discriminator (and of its conditional parts) is spectrally normalised (Miyato et
/// al. 2018). Weights are initialised from the crate's seeded [`Rng`](crate::rng::Rng) with
/// [`dcgan_init`](crate::nn::init::dcgan_init): N(0, 0.02) weights, N(1, 0.02) batch-norm
/// scales, zero biases (the generator's label embedding: N(0, 1), as PyTorch's `nn.Embedding`).
///
/// [`Config::default`] is the crate's reference `dcgan` benchmark configuration
/// (`shared/bench`): 28x28 grey images, latent size 100, base width 64, batch norm in both
/// networks, 766 017 generator and 138 817 discriminator parameters (see
/// [`Config::parameter_counts`]). Radford et al.'s 64x64 RGB setting is
/// `Config { image_size: 64, channels: 3, ..Default::default() }` (with the PyTorch example's
/// width 64; the paper's generator is twice as wide, `base_width: 128`).
///
/// With `conditioning` set, [`ConditionalGenerator`](super::ConditionalGenerator) and
/// [`ConditionalDiscriminator`](super::ConditionalDiscriminator) build the class-conditional
/// variants; [`DcganGenerator`](super::DcganGenerator) and
/// [`DcganDiscriminator`](super::DcganDiscriminator) require it to be `None`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Image height and width: 28, 32 or 64.
    pub image_size: usize,
    /// Image channels: 1 (grey) or 3 (RGB).
    pub channels: usize,
    /// Length of the latent code `z` (> 0; 100 in the paper).
    pub latent_dim: usize,
    /// Channels of the discriminator's first layer and of the generator's last hidden layer
    /// (> 0); each stride-2 stage doubles (discriminator) or halves (generator) it.
    pub base_width: usize,
    /// Batch normalisation after the generator's hidden layers.
    pub generator_batch_norm: bool,
    /// Batch normalisation after the discriminator's hidden convolutions (all but the first).
    /// Turn it off for gradient penalties, which assume the critic treats samples independently
    /// (Gulrajani et al. 2017).
    pub discriminator_batch_norm: bool,
    /// Spectral normalisation of every discriminator weight (Miyato et al. 2018).
    pub spectral_norm: bool,
    /// Negative slope of the discriminator's leaky ReLUs, in `[0, 1)` (0.2 in the paper).
    pub leaky_relu_slope: f64,
    /// Class conditioning, or `None` for an unconditional GAN.
    pub conditioning: Option<Conditioning>,
}

impl Default for Config {
    /// The reference `dcgan` benchmark configuration: 28x28x1, latent 100, width 64, batch norm
    /// in both networks, no spectral norm, leaky slope 0.2, unconditional.
    fn default() -> Self {
        Self {
            image_size: 28,
            channels: 1,
            latent_dim: 100,
            base_width: 64,
            generator_batch_norm: true,
            discriminator_batch_norm: true,
            spectral_norm: false,
            leaky_relu_slope: 0.2,
            conditioning: None,
        }
    }
}

/// How a class-conditional GAN uses the labels; see [`Config::conditioning`].
///
/// The generator always embeds the label (`Embedding(num_classes, embedding_dim)`) and
/// concatenates it to `z`, as Mirza & Osindero (2014) concatenate the label to the noise. The
/// discriminator sees the label as [`label_input`](Self::label_input) says, and may in addition
/// predict it ([`auxiliary_classifier`](Self::auxiliary_classifier), ACGAN).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Conditioning {
    /// Number of classes (>= 2); labels are integers in `[0, num_classes)`.
    pub num_classes: usize,
    /// Size of the generator's label embedding (> 0).
    pub embedding_dim: usize,
    /// How the discriminator receives the label.
    pub label_input: LabelInput,
    /// ACGAN (Odena, Olah & Shlens 2017): a second discriminator head predicts the class of real
    /// and generated images, and both networks add its cross-entropy to their losses.
    pub auxiliary_classifier: bool,
}

impl Default for Conditioning {
    /// Ten classes (Fashion-MNIST), a 50-dimensional embedding, a projection discriminator,
    /// no auxiliary classifier.
    fn default() -> Self {
        Self { num_classes: 10, embedding_dim: 50, label_input: LabelInput::Projection, auxiliary_classifier: false }
    }
}

/// How a conditional discriminator receives the label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum LabelInput {
    /// Projection discriminator (Miyato & Koyama 2018): `D(x, y) = ψ(φ(x)) + e_yᵀ φ(x)`, where
    /// `φ(x)` are the features entering the final linear layer `ψ` and `e_y` is a learnt
    /// embedding of the class (`num_classes x feature size`).
    #[default]
    Projection,
    /// Concatenation (Mirza & Osindero 2014, for convolutional networks): one constant one-hot
    /// plane per class is appended to the image channels before the first convolution.
    Concatenation,
    /// The discriminator does not see the label; only valid with an auxiliary classifier
    /// (Odena et al. 2017's ACGAN).
    Unused,
}

impl Config {
    /// Checks every field; the error is [`Error::Config`] naming the first field at fault
    /// (e.g. `"Config.image_size"`, `"Config.conditioning.num_classes"`).
    pub fn validate(&self) -> Result<()> {
        if !LAYOUTS.iter().any(|&(s, _, _)| s == self.image_size) {
            return Err(Error::config("Config.image_size", format!("must be 28, 32 or 64, got {}", self.image_size)));
        }
        if self.channels != 1 && self.channels != 3 {
            return Err(Error::config("Config.channels", format!("must be 1 or 3, got {}", self.channels)));
        }
        if self.latent_dim == 0 {
            return Err(Error::config("Config.latent_dim", "must be > 0, got 0"));
        }
        if self.base_width == 0 {
            return Err(Error::config("Config.base_width", "must be > 0, got 0"));
        }
        // The widest layer has base_width · 2^(n-1) channels; keep the products far from overflow.
        if self.base_width > 1 << 16 || self.latent_dim > 1 << 24 {
            return Err(Error::config(
                "Config.base_width",
                format!("base_width {} or latent_dim {} is unreasonably large", self.base_width, self.latent_dim),
            ));
        }
        if !(self.leaky_relu_slope.is_finite() && (0.0..1.0).contains(&self.leaky_relu_slope)) {
            return Err(Error::config(
                "Config.leaky_relu_slope",
                format!("must be finite and in [0, 1), got {}", self.leaky_relu_slope),
            ));
        }
        if let Some(c) = &self.conditioning {
            c.validate()?;
        }
        Ok(())
    }

    /// The side of the generator's first feature map and of the discriminator's last one:
    /// 7 for 28x28 images, 4 for 32x32 and 64x64. Call on a validated config.
    pub fn base_resolution(&self) -> usize {
        self.layout().0
    }

    /// The number of stride-2 stages of each network: 2 (28x28), 3 (32x32) or 4 (64x64).
    pub fn num_stages(&self) -> usize {
        self.layout().1
    }

    fn layout(&self) -> (usize, usize) {
        LAYOUTS.iter().find(|&&(s, _, _)| s == self.image_size).map(|&(_, s0, n)| (s0, n)).unwrap_or((1, 1))
    }

    /// Channels of the generator's feature maps from the base resolution up, ending with the
    /// last hidden layer: `[w·2^(n-1), ..., 2w, w]` (`[128, 64]` for the default).
    pub fn generator_widths(&self) -> Vec<usize> {
        (0..self.num_stages()).rev().map(|i| self.base_width << i).collect()
    }

    /// Channels of the discriminator's feature maps after each stride-2 convolution:
    /// `[w, 2w, ..., w·2^(n-1)]` (`[64, 128]` for the default).
    pub fn discriminator_widths(&self) -> Vec<usize> {
        (0..self.num_stages()).map(|i| self.base_width << i).collect()
    }

    /// Size of the discriminator's feature vector `φ(x)`, the input of its final linear layer:
    /// `w·2^(n-1)·s0²` (6272 for the default).
    pub fn feature_dim(&self) -> usize {
        let s0 = self.base_resolution();
        (self.base_width << (self.num_stages() - 1)) * s0 * s0
    }

    /// The numbers of trainable parameters `(generator, discriminator)` the networks of this
    /// config have, counted as PyTorch counts `parameters()`: weights, biases, batch-norm scales
    /// and shifts and embeddings, but not batch-norm running statistics nor the spectral-norm
    /// power-iteration vectors (buffers in PyTorch, variables in a candle `VarMap`).
    ///
    /// `Config::default()` gives `(766_017, 138_817)`, the reference `dcgan` benchmark's counts.
    /// Errors: those of [`Config::validate`].
    pub fn parameter_counts(&self) -> Result<(usize, usize)> {
        self.validate()?;
        let (s0, c) = (self.base_resolution(), self.channels);
        let conv = |cin: usize, cout: usize| cin * cout * 16 + cout;
        let bn = |on: bool, ch: usize| if on { 2 * ch } else { 0 };
        let g_widths = self.generator_widths();
        let cond = self.conditioning.as_ref();
        let g_embedding = cond.map_or(0, |k| k.num_classes * k.embedding_dim);
        let latent_in = self.latent_dim + cond.map_or(0, |k| k.embedding_dim);
        let (mut d_in, mut d_extra) = (c, 0);
        if let Some(k) = cond {
            match k.label_input {
                LabelInput::Projection => d_extra += k.num_classes * self.feature_dim(),
                LabelInput::Concatenation => d_in += k.num_classes,
                LabelInput::Unused => {}
            }
            if k.auxiliary_classifier {
                d_extra += (self.feature_dim() + 1) * k.num_classes;
            }
        }
        let first = g_widths[0];
        let mut g = g_embedding + (latent_in + 1) * first * s0 * s0 + bn(self.generator_batch_norm, first);
        for pair in g_widths.windows(2) {
            g += conv(pair[0], pair[1]) + bn(self.generator_batch_norm, pair[1]);
        }
        g += conv(self.base_width, c);
        let d_widths = self.discriminator_widths();
        let mut d = conv(d_in, d_widths[0]);
        for pair in d_widths.windows(2) {
            d += conv(pair[0], pair[1]) + bn(self.discriminator_batch_norm, pair[1]);
        }
        d += self.feature_dim() + 1 + d_extra;
        Ok((g, d))
    }
}

impl Conditioning {
    /// Checks the fields; [`Error::Config`] names the one at fault.
    pub fn validate(&self) -> Result<()> {
        if self.num_classes < 2 {
            return Err(Error::config(
                "Config.conditioning.num_classes",
                format!("a conditional GAN needs at least 2 classes, got {}", self.num_classes),
            ));
        }
        if self.num_classes > 1 << 20 {
            return Err(Error::config(
                "Config.conditioning.num_classes",
                format!("{} classes is unreasonably many", self.num_classes),
            ));
        }
        if self.embedding_dim == 0 || self.embedding_dim > 1 << 20 {
            return Err(Error::config(
                "Config.conditioning.embedding_dim",
                format!("must be in 1..=2^20, got {}", self.embedding_dim),
            ));
        }
        if self.label_input == LabelInput::Unused && !self.auxiliary_classifier {
            return Err(Error::config(
                "Config.conditioning.label_input",
                "`Unused` (the discriminator ignores labels) needs `auxiliary_classifier: true` (ACGAN), \
                 otherwise the discriminator is unconditional",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_the_bench_configuration() -> Result<()> {
        let cfg = Config::default();
        cfg.validate()?;
        assert_eq!((cfg.base_resolution(), cfg.num_stages()), (7, 2));
        assert_eq!(cfg.generator_widths(), vec![128, 64]);
        assert_eq!(cfg.discriminator_widths(), vec![64, 128]);
        assert_eq!(cfg.feature_dim(), 6272);
        assert_eq!(cfg.parameter_counts()?, (766_017, 138_817));
        Ok(())
    }

    #[test]
    fn layouts_of_the_other_sizes() -> Result<()> {
        let c32 = Config { image_size: 32, ..Default::default() };
        assert_eq!((c32.base_resolution(), c32.num_stages(), c32.feature_dim()), (4, 3, 256 * 16));
        let c64 = Config { image_size: 64, channels: 3, ..Default::default() };
        assert_eq!(c64.generator_widths(), vec![512, 256, 128, 64]);
        assert_eq!(c64.feature_dim(), 512 * 16);
        Ok(())
    }

    #[test]
    fn every_bad_field_is_named() {
        let field = |cfg: Config| match cfg.validate() {
            Err(Error::Config { field, .. }) => field,
            other => panic!("expected a config error, got {other:?}"),
        };
        let d = Config::default;
        assert_eq!(field(Config { image_size: 30, ..d() }), "Config.image_size");
        assert_eq!(field(Config { channels: 2, ..d() }), "Config.channels");
        assert_eq!(field(Config { latent_dim: 0, ..d() }), "Config.latent_dim");
        assert_eq!(field(Config { base_width: 0, ..d() }), "Config.base_width");
        assert_eq!(field(Config { leaky_relu_slope: f64::NAN, ..d() }), "Config.leaky_relu_slope");
        assert_eq!(field(Config { leaky_relu_slope: 1.0, ..d() }), "Config.leaky_relu_slope");
        let cond = |c: Conditioning| Config { conditioning: Some(c), ..d() };
        let dc = Conditioning::default;
        assert_eq!(field(cond(Conditioning { num_classes: 1, ..dc() })), "Config.conditioning.num_classes");
        assert_eq!(field(cond(Conditioning { embedding_dim: 0, ..dc() })), "Config.conditioning.embedding_dim");
        assert_eq!(
            field(cond(Conditioning { label_input: LabelInput::Unused, ..dc() })),
            "Config.conditioning.label_input"
        );
        cond(Conditioning { label_input: LabelInput::Unused, auxiliary_classifier: true, ..dc() }).validate().unwrap();
    }

    #[test]
    fn serde_round_trip_and_defaults_for_missing_fields() {
        let cfg = Config { conditioning: Some(Conditioning::default()), spectral_norm: true, ..Default::default() };
        let json = serde_json::to_string(&cfg).unwrap();
        assert_eq!(serde_json::from_str::<Config>(&json).unwrap(), cfg);
        let partial: Config = serde_json::from_str(r#"{"image_size": 64}"#).unwrap();
        assert_eq!(partial, Config { image_size: 64, ..Default::default() });
    }
}
