//! [`PixelCnn`]: a body ([`PixelCnnBody`] or [`GatedBody`]), two 1x1 output layers and the [`Head`]'s
//! likelihood; [`init_pixelcnn`] seeds its weights.

use candle_core::{DType, Device, Tensor};
use candle_nn::{Module, VarBuilder, VarMap};

use super::config::{Architecture, Config, Head};
use super::gated::GatedBody;
use super::plain::PixelCnnBody;
use crate::losses::autoregressive::{discretized_logistic_mixture_nll, pixel_cross_entropy};
use crate::losses::Reduction;
use crate::nn::masked_conv::{MaskType, MaskedConv2d, MaskedConvConfig};
use crate::rng::Rng;
use crate::{Error, Result};

#[derive(Debug, Clone)]
enum Body {
    Plain(PixelCnnBody),
    Gated(GatedBody),
}

/// An autoregressive pixel model `p(x) = Π_i p(x_i | x_<i)` over 8-bit sub-pixels in raster order (rows,
/// then columns, then R < G < B), built from a [`Config`].
///
/// Variables (PyTorch-style paths under the `VarBuilder`): `body.*` (see [`PixelCnnBody`], [`GatedBody`]),
/// `out1` (1x1, `hidden -> output_hidden`) and `out2` (1x1, `output_hidden -> output channels`), both
/// masked B so colour groups stay ordered. The output at pixel `i` depends only on sub-pixels before `i`
/// (tested in `tests/pixelcnn.rs`).
#[derive(Debug, Clone)]
pub struct PixelCnn {
    config: Config,
    body: Body,
    out1: MaskedConv2d,
    out2: MaskedConv2d,
    dtype: DType,
    device: Device,
}

/// 8-bit images `(B, C, H, W)` (`U8`, `U32` or `I64`, values `0..=255`) as the model's input: `2x/255 - 1`
/// in `[-1, 1]`, in `dtype`.
pub fn pixels_to_input(images: &Tensor, dtype: DType) -> Result<Tensor> {
    Ok(images.to_dtype(DType::F32)?.affine(2.0 / 255.0, -1.0)?.to_dtype(dtype)?)
}

impl PixelCnn {
    /// Validates `config` and builds the model's variables under `vb`, in its dtype and device. The
    /// variables hold `vb`'s initial values; call [`init_pixelcnn`] for seeded ones.
    pub fn new(config: &Config, vb: VarBuilder) -> Result<Self> {
        config.validate()?;
        let body = match config.architecture {
            Architecture::PixelCnn => Body::Plain(PixelCnnBody::new(config, vb.pp("body"))?),
            Architecture::Gated => Body::Gated(GatedBody::new(config, vb.pp("body"))?),
        };
        let g = config.colour_groups();
        let (n, o) = (config.hidden, config.output_hidden);
        let out1 = MaskedConv2d::new(MaskedConvConfig::square(n, o, 1, MaskType::B, g), vb.pp("out1"))?;
        let out2 = MaskedConv2d::new(
            MaskedConvConfig::square(o, config.output_channels()?, 1, MaskType::B, g),
            vb.pp("out2"),
        )?;
        Ok(Self { config: config.clone(), body, out1, out2, dtype: vb.dtype(), device: vb.device().clone() })
    }

    /// The model's config.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The model's dtype.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The model's device.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Checks `x` `(B, C, H, W)` and `labels` (`(B,)` `U32` below `num_classes`, present exactly when the
    /// model is conditional); `Error::Shape` otherwise.
    fn check_inputs(&self, x: &Tensor, labels: Option<&Tensor>) -> Result<()> {
        const CTX: &str = "PixelCnn::forward";
        let b = match x.dims() {
            &[b, c, h, w] if c == self.config.image_channels && h > 0 && w > 0 => b,
            d => {
                return Err(Error::shape(
                    CTX,
                    format!("x must be (B, {}, H, W), got {d:?}", self.config.image_channels),
                ))
            }
        };
        match (labels, self.config.num_classes) {
            (None, 0) => Ok(()),
            (Some(_), 0) => Err(Error::shape(CTX, "labels given to an unconditional model (num_classes = 0)")),
            (None, _) => Err(Error::shape(CTX, "a conditional model needs labels")),
            (Some(y), k) => {
                if y.dims() != [b] || y.dtype() != DType::U32 {
                    return Err(Error::shape(
                        CTX,
                        format!("labels must be ({b},) U32, got {:?} {:?}", y.dims(), y.dtype()),
                    ));
                }
                let max = y.max(0)?.to_scalar::<u32>()?;
                if max as usize >= k {
                    return Err(Error::shape(CTX, format!("label {max} is out of range for {k} classes")));
                }
                Ok(())
            }
        }
    }

    /// The head's parameters for images `x` `(B, C, H, W)` in `[-1, 1]` (e.g. [`pixels_to_input`]):
    /// `(B, C·256, H, W)` logits, channel-major, for [`Head::Softmax`]; `(B, P, H, W)` mixture parameters for
    /// [`Head::LogisticMixture`]. `labels` `(B,)` `U32` for a conditional model.
    pub fn forward(&self, x: &Tensor, labels: Option<&Tensor>) -> Result<Tensor> {
        self.check_inputs(x, labels)?;
        let x = x.to_dtype(self.dtype)?;
        let h = match &self.body {
            Body::Plain(b) => b.forward(&x, labels)?,
            // The gated stack's output is not rectified yet; the plain one is a sum of ReLUs.
            Body::Gated(b) => b.forward(&x, labels)?.relu()?,
        };
        Ok(self.out2.forward(&self.out1.forward(&h)?.relu()?)?)
    }

    /// The negative log-likelihood of 8-bit `images` `(B, C, H, W)` (values `0..=255`) from the head's
    /// parameters `out` of [`forward`](Self::forward): `(B,)` nats per image.
    pub fn nll_from_output(&self, out: &Tensor, images: &Tensor) -> Result<Tensor> {
        let per_element = match self.config.head {
            Head::Softmax => pixel_cross_entropy(out, images, Reduction::None)?,
            Head::LogisticMixture { .. } => {
                discretized_logistic_mixture_nll(out, &pixels_to_input(images, out.dtype())?, Reduction::None)?
            }
        };
        Ok(per_element.flatten_from(1)?.sum(1)?)
    }

    /// `-log p(images)` `(B,)` in nats per image for 8-bit `images` `(B, C, H, W)` (`0..=255`).
    pub fn nll(&self, images: &Tensor, labels: Option<&Tensor>) -> Result<Tensor> {
        let out = self.forward(&pixels_to_input(images, self.dtype)?, labels)?;
        self.nll_from_output(&out, images)
    }

    /// Every masked convolution of the model (body and output layers).
    pub fn masked_layers(&self) -> Vec<&MaskedConv2d> {
        let mut layers = match &self.body {
            Body::Plain(b) => b.masked_layers(),
            Body::Gated(b) => b.masked_layers(),
        };
        layers.push(&self.out1);
        layers.push(&self.out2);
        layers
    }
}

/// Seeded initialisation of a model built in `varmap`: every weight uniform in `±1/sqrt(fan_in)`
/// (PyTorch's default for convolutions, He et al. 2015 with `a = sqrt(5)`), class embeddings
/// N(0, 0.1²), biases zero; then the masked-out weights are set to zero. Draws from `rng` in variable
/// name order, so the result depends only on the seed.
pub fn init_pixelcnn(model: &PixelCnn, varmap: &VarMap, rng: &mut Rng) -> Result<()> {
    let vars = crate::optim::NamedVars::from_varmap(varmap);
    for (name, var) in vars.iter() {
        let t = var.as_tensor();
        let value = if name.ends_with("bias") {
            t.zeros_like()?
        } else if name.contains("cond") {
            rng.randn(t.shape().clone(), t.dtype(), t.device())?.affine(0.1, 0.0)?
        } else {
            let fan_in: usize = t.dims().iter().skip(1).product();
            let bound = 1.0 / (fan_in.max(1) as f64).sqrt();
            rng.uniform(t.shape().clone(), -bound, bound, t.dtype(), t.device())?
        };
        var.set(&value)?;
    }
    let data = varmap.data().lock().map_err(|_| Error::shape("init_pixelcnn", "the VarMap's lock is poisoned"))?;
    for layer in model.masked_layers() {
        let var = data.get(layer.weight_path()).ok_or_else(|| {
            Error::shape(
                "init_pixelcnn",
                format!("`{}` is not in the VarMap the model was built from", layer.weight_path()),
            )
        })?;
        layer.zero_masked_weights(var)?;
    }
    Ok(())
}
