//! Convolutions and norms created through a `VarBuilder` and initialised from the crate's `Rng`.

use candle_core::{Tensor, Var};
use candle_nn::{Conv2dConfig, ConvTranspose2dConfig, Init, VarBuilder};

use crate::nn::{Conv2d, ConvTranspose2d};

use crate::nn::init::{init_vars, InitKind};
use crate::nn::instance_norm::{InstanceNorm2d, INSTANCE_NORM_EPS};
use crate::optim::NamedVars;
use crate::rng::Rng;
use crate::{Error, Result};

/// Creates the layers' variables (as zeros) and remembers them for [`LayerBuilder::init`].
pub(crate) struct LayerBuilder<'a> {
    vb: VarBuilder<'a>,
    created: Vec<(String, Var)>,
}

impl<'a> LayerBuilder<'a> {
    pub(crate) fn new(vb: VarBuilder<'a>) -> Self {
        Self { vb, created: Vec::new() }
    }

    fn get(&mut self, shape: &[usize], name: &str) -> Result<Tensor> {
        let t = self.vb.get_with_hints(shape, name, Init::Const(0.0))?;
        // A VarMap gives variables (sharing storage with `Var::from_tensor`); a builder over
        // loaded tensors gives plain ones, left as they are.
        if t.is_variable() {
            self.created.push((name.to_string(), Var::from_tensor(&t)?));
        }
        Ok(t)
    }

    /// `Conv2d(cin, cout, k, stride, padding)` with a bias, at `<name>.weight` / `<name>.bias`.
    pub(crate) fn conv(
        &mut self,
        name: &str,
        (cin, cout, k): (usize, usize, usize),
        stride: usize,
        padding: usize,
    ) -> Result<Conv2d> {
        let w = self.get(&[cout, cin, k, k], &format!("{name}.weight"))?;
        let b = self.get(&[cout], &format!("{name}.bias"))?;
        Ok(Conv2d::new(w, Some(b), Conv2dConfig { stride, padding, ..Default::default() }))
    }

    /// `ConvTranspose2d(cin, cout, 3, stride 2, padding 1, output padding 1)` with a bias: doubles
    /// the height and width.
    pub(crate) fn upsample(&mut self, name: &str, cin: usize, cout: usize) -> Result<ConvTranspose2d> {
        let w = self.get(&[cin, cout, 3, 3], &format!("{name}.weight"))?;
        let b = self.get(&[cout], &format!("{name}.bias"))?;
        let cfg = ConvTranspose2dConfig { stride: 2, padding: 1, output_padding: 1, dilation: 1 };
        Ok(ConvTranspose2d::new(w, Some(b), cfg))
    }

    /// An instance norm over `c` channels, at `<name>.weight` / `<name>.bias` when affine
    /// (initialised to 1 and 0 and kept so).
    pub(crate) fn norm(&mut self, name: &str, c: usize, affine: bool) -> Result<InstanceNorm2d> {
        InstanceNorm2d::new(c, affine, INSTANCE_NORM_EPS, self.vb.pp(name))
    }

    /// Sets every convolution from `rng` in name order: weights N(0, 0.02), biases 0 (the
    /// CycleGAN reference's `init_type = normal`, `init_gain = 0.02`).
    pub(crate) fn init(self, rng: &mut Rng) -> Result<()> {
        let vars = NamedVars::from_pairs(self.created)?;
        init_vars(&vars, rng, |name, _| {
            if name.ends_with("bias") {
                InitKind::Constant(0.0)
            } else {
                InitKind::Normal { mean: 0.0, std: 0.02 }
            }
        })
    }
}

/// Checks that `x` is a floating-point `(B, channels, H, W)` batch with `B > 0`; returns
/// `(B, H, W)`.
pub(crate) fn check_images(context: &str, x: &Tensor, channels: usize) -> Result<(usize, usize, usize)> {
    let dims = x.dims();
    if dims.len() != 4 || dims[0] == 0 || dims[1] != channels || !x.dtype().is_float() {
        return Err(Error::shape(
            context,
            format!("expected a non-empty floating-point batch (B, {channels}, H, W), got {:?} {:?}", dims, x.dtype()),
        ));
    }
    Ok((dims[0], dims[2], dims[3]))
}
