//! The layers the GAN models are built from, with seeded initialisation.
//!
//! Every trainable variable is created through [`Params`] with a constant value (candle's own
//! random initialisers cannot be seeded on the CPU) and then set from the crate's [`Rng`] in
//! name order by [`Params::init`], with DCGAN's rule unless a layer asked for another one.

use std::collections::HashMap;

use candle_core::{Module, Shape, Tensor, Var};
use candle_nn::{BatchNormConfig, Conv2dConfig, ConvTranspose2dConfig, Init, ModuleT, VarBuilder};

use crate::nn::init::{dcgan_init, init_vars, InitKind};
use crate::nn::spectral_norm::{SpectralNorm, SpectralNormConfig};
use crate::optim::NamedVars;
use crate::rng::Rng;
use crate::{Error, Result};

/// Creates variables under a `VarBuilder` and remembers them for the seeded initialisation.
pub(crate) struct Params<'a> {
    vb: VarBuilder<'a>,
    created: Vec<(String, Var)>,
    rules: HashMap<String, InitKind>,
}

impl<'a> Params<'a> {
    pub(crate) fn new(vb: VarBuilder<'a>) -> Self {
        Self { vb, created: Vec::new(), rules: HashMap::new() }
    }

    pub(crate) fn builder(&self) -> &VarBuilder<'a> {
        &self.vb
    }

    /// The variable `name` (a dotted path below the builder's prefix), created as zeros when
    /// absent; it is re-initialised by [`Params::init`] with `rule` (DCGAN's when `None`).
    pub(crate) fn get<S: Into<Shape>>(&mut self, shape: S, name: &str, rule: Option<InitKind>) -> Result<Tensor> {
        let t = self.vb.get_with_hints(shape, name, Init::Const(0.0))?;
        self.track(name, &t, rule)?;
        Ok(t)
    }

    fn track(&mut self, name: &str, t: &Tensor, rule: Option<InitKind>) -> Result<()> {
        // Tensors of a VarMap are variables, and `Var::from_tensor` then shares their storage;
        // a builder over fixed tensors (a loaded file) gives plain tensors, which are left as
        // they are.
        if t.is_variable() {
            self.created.push((name.to_string(), Var::from_tensor(t)?));
            if let Some(rule) = rule {
                self.rules.insert(name.to_string(), rule);
            }
        }
        Ok(())
    }

    /// Sets every created variable from `rng`, in name order.
    pub(crate) fn init(self, rng: &mut Rng) -> Result<()> {
        let vars = NamedVars::from_pairs(self.created)?;
        let rules = self.rules;
        init_vars(&vars, rng, |name, rank| rules.get(name).copied().unwrap_or_else(|| dcgan_init(name, rank)))
    }
}

/// A weight used as it is, or spectrally normalised.
#[derive(Debug, Clone)]
pub(crate) enum Weight {
    Plain(Tensor),
    Spectral(SpectralNorm),
}

impl Weight {
    /// The weight `<prefix>.weight` (`<prefix>.weight_orig` with its `weight_u`, `weight_v`
    /// state when spectral).
    pub(crate) fn new<S: Into<Shape>>(
        p: &mut Params,
        prefix: &str,
        shape: S,
        spectral: Option<&mut Rng>,
        rule: Option<InitKind>,
    ) -> Result<Self> {
        match spectral {
            None => Ok(Weight::Plain(p.get(shape, &format!("{prefix}.weight"), rule)?)),
            Some(rng) => {
                let w = p.get(shape, &format!("{prefix}.weight_orig"), rule)?;
                let vb = p.builder().pp(prefix);
                Ok(Weight::Spectral(SpectralNorm::new(w, &vb, "weight", rng, SpectralNormConfig::default())?))
            }
        }
    }

    pub(crate) fn get(&self, train: bool) -> Result<Tensor> {
        match self {
            Weight::Plain(w) => Ok(w.clone()),
            Weight::Spectral(sn) => sn.weight(train),
        }
    }
}

/// `y = x Wᵀ + b`, `W` of shape `(out, in)`.
#[derive(Debug, Clone)]
pub(crate) struct Dense {
    weight: Weight,
    bias: Tensor,
}

impl Dense {
    pub(crate) fn new(
        p: &mut Params,
        prefix: &str,
        in_dim: usize,
        out_dim: usize,
        spectral: Option<&mut Rng>,
    ) -> Result<Self> {
        let weight = Weight::new(p, prefix, (out_dim, in_dim), spectral, None)?;
        let bias = p.get(out_dim, &format!("{prefix}.bias"), None)?;
        Ok(Self { weight, bias })
    }

    pub(crate) fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let w = self.weight.get(train)?;
        Ok(candle_nn::Linear::new(w, Some(self.bias.clone())).forward(x)?)
    }
}

/// A 4x4 convolution with stride 2 and padding 1: halves the height and width.
#[derive(Debug, Clone)]
pub(crate) struct Conv {
    weight: Weight,
    bias: Tensor,
}

const DOWN: Conv2dConfig = Conv2dConfig { padding: 1, stride: 2, dilation: 1, groups: 1, cudnn_fwd_algo: None };
const UP: ConvTranspose2dConfig = ConvTranspose2dConfig { padding: 1, output_padding: 0, stride: 2, dilation: 1 };

impl Conv {
    pub(crate) fn new(
        p: &mut Params,
        prefix: &str,
        in_ch: usize,
        out_ch: usize,
        spectral: Option<&mut Rng>,
    ) -> Result<Self> {
        let weight = Weight::new(p, prefix, (out_ch, in_ch, 4, 4), spectral, None)?;
        let bias = p.get(out_ch, &format!("{prefix}.bias"), None)?;
        Ok(Self { weight, bias })
    }

    pub(crate) fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let w = self.weight.get(train)?;
        Ok(crate::nn::Conv2d::new(w, Some(self.bias.clone()), DOWN).forward(x)?)
    }
}

/// A 4x4 transposed convolution with stride 2 and padding 1: doubles the height and width.
/// The weight is `(in, out, 4, 4)`, PyTorch's layout.
#[derive(Debug, Clone)]
pub(crate) struct ConvTranspose {
    layer: crate::nn::ConvTranspose2d,
}

impl ConvTranspose {
    pub(crate) fn new(p: &mut Params, prefix: &str, in_ch: usize, out_ch: usize) -> Result<Self> {
        let weight = p.get((in_ch, out_ch, 4, 4), &format!("{prefix}.weight"), None)?;
        let bias = p.get(out_ch, &format!("{prefix}.bias"), None)?;
        Ok(Self { layer: crate::nn::ConvTranspose2d::new(weight, Some(bias), UP) })
    }

    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self.layer.forward(x)?)
    }
}

/// Batch normalisation over the channels of `(B, C, H, W)` (PyTorch's defaults: eps 1e-5,
/// momentum 0.1); the running statistics are `VarMap` variables that are not trained.
pub(crate) fn batch_norm(p: &mut Params, prefix: &str, channels: usize) -> Result<crate::nn::BatchNorm> {
    let bn = crate::nn::batch_norm::batch_norm(channels, BatchNormConfig::default(), p.builder().pp(prefix))?;
    if let Some((w, b)) = bn.weight_and_bias() {
        p.track(&format!("{prefix}.weight"), w, None)?;
        p.track(&format!("{prefix}.bias"), b, None)?;
    }
    Ok(bn)
}

/// Applies an optional batch norm.
pub(crate) fn maybe_norm(bn: &Option<crate::nn::BatchNorm>, x: Tensor, train: bool) -> Result<Tensor> {
    match bn {
        Some(bn) => Ok(bn.forward_t(&x, train)?),
        None => Ok(x),
    }
}

/// Integer class labels `(B,)` checked against the batch size and the number of classes,
/// returned as host values and as a `U32` tensor on the labels' device.
pub(crate) fn check_labels(
    context: &str,
    labels: &Tensor,
    batch: usize,
    num_classes: usize,
) -> Result<(Vec<u32>, Tensor)> {
    if labels.rank() != 1 || labels.dim(0)? != batch {
        return Err(Error::shape(
            context,
            format!("labels must have shape ({batch},) to match the batch, got {:?}", labels.dims()),
        ));
    }
    if labels.dtype().is_float() {
        return Err(Error::shape(context, format!("labels must be integers (U8, U32, I64), got {:?}", labels.dtype())));
    }
    let values = labels.to_dtype(candle_core::DType::I64)?.to_vec1::<i64>()?;
    if let Some(&bad) = values.iter().find(|&&l| l < 0 || l >= num_classes as i64) {
        return Err(Error::shape(context, format!("labels must be in [0, {num_classes}), got {bad}")));
    }
    let values: Vec<u32> = values.into_iter().map(|l| l as u32).collect();
    let tensor = Tensor::from_vec(values.clone(), batch, labels.device())?;
    Ok((values, tensor))
}

/// `Err(Error::Shape)` unless `x` is a floating-point tensor of `dtype`.
pub(crate) fn check_dtype(context: &str, name: &str, x: &Tensor, dtype: candle_core::DType) -> Result<()> {
    if x.dtype() != dtype {
        return Err(Error::shape(
            context,
            format!("`{name}` is {:?} but the model's weights are {dtype:?}", x.dtype()),
        ));
    }
    Ok(())
}
