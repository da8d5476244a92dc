//! Masked convolutions for autoregressive pixel models (van den Oord et al. 2016, "Pixel Recurrent Neural
//! Networks"): the kernel is multiplied by a fixed 0/1 mask in every forward pass, so an output at pixel
//! `(y, x)` only sees pixels before it in raster order.
//!
//! Mask type A (the first layer) also hides the current pixel; type B (later layers) lets a feature see the
//! same pixel's features of the same or earlier colour groups. With `colour_groups = C > 1`, the input and
//! output channels are split into `C` contiguous groups (R, then G, then B); at the kernel's centre an output
//! of group `g` sees inputs of groups `< g` (type A) or `<= g` (type B), which orders the sub-pixels
//! R < G < B within a pixel.
//!
//! The mask is applied to the weight inside `forward`, so the gradient of a masked-out weight is exactly
//! zero and optimizers whose update is zero for a zero gradient (SGD, Adam without weight decay) never move
//! it; [`MaskedConv2d::zero_masked_weights`] also stores them as zeros.

use candle_core::{DType, Tensor, Var};
use candle_nn::{Module, VarBuilder};

use crate::{Error, Result};

/// Which part of the kernel's centre a [`MaskedConv2d`] sees (van den Oord et al. 2016).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum MaskType {
    /// Hides the current pixel's own value (and, with colour groups, its sub-pixels of the same and later
    /// groups): for the layer reading the image.
    A,
    /// Lets an output see the current pixel's features of its own and earlier colour groups: for every
    /// later layer.
    B,
}

/// The group (0-based, contiguous blocks) of channel `k` among `n` channels split into `groups` groups.
///
/// `n` must be a multiple of `groups` (checked by the callers).
pub fn channel_group(k: usize, n: usize, groups: usize) -> usize {
    k * groups / n
}

/// The 0/1 mask of a kernel `(out, in, kh, kw)` whose current pixel sits at `centre = (cy, cx)`:
/// positions in rows above `cy`, or in row `cy` left of `cx`, are 1; positions right of the centre or
/// below are 0; at the centre, output group `g` sees input group `h` when `h < g` (type A) or `h <= g`
/// (type B), with the channels split into `colour_groups` contiguous groups.
///
/// `in_channels` and `out_channels` must be multiples of `colour_groups` (> 0) and the centre inside the
/// kernel, else `Error::Config` naming the argument. Returned row-major, `out·in·kh·kw` values.
pub fn causal_mask(
    mask_type: MaskType,
    out_channels: usize,
    in_channels: usize,
    kernel: (usize, usize),
    centre: (usize, usize),
    colour_groups: usize,
) -> Result<Vec<f32>> {
    let (kh, kw) = kernel;
    let (cy, cx) = centre;
    if colour_groups == 0 {
        return Err(Error::config("colour_groups", "must be > 0"));
    }
    for (name, n) in [("in_channels", in_channels), ("out_channels", out_channels)] {
        if n == 0 || n % colour_groups != 0 {
            return Err(Error::config(
                name,
                format!("must be a positive multiple of colour_groups = {colour_groups}, got {n}"),
            ));
        }
    }
    if kh == 0 || kw == 0 || cy >= kh || cx >= kw {
        return Err(Error::config("centre", format!("{centre:?} is not inside the kernel {kernel:?}")));
    }
    let mut mask = Vec::with_capacity(out_channels * in_channels * kh * kw);
    for o in 0..out_channels {
        let go = channel_group(o, out_channels, colour_groups);
        for i in 0..in_channels {
            let gi = channel_group(i, in_channels, colour_groups);
            let centre_visible = match mask_type {
                MaskType::A => gi < go,
                MaskType::B => gi <= go,
            };
            for y in 0..kh {
                for x in 0..kw {
                    let visible = y < cy || (y == cy && x < cx) || (y == cy && x == cx && centre_visible);
                    mask.push(if visible { 1.0 } else { 0.0 });
                }
            }
        }
    }
    Ok(mask)
}

/// The shape and mask of a [`MaskedConv2d`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaskedConvConfig {
    /// Input channels (a multiple of `colour_groups`).
    pub in_channels: usize,
    /// Output channels (a multiple of `colour_groups`).
    pub out_channels: usize,
    /// Kernel `(height, width)`.
    pub kernel: (usize, usize),
    /// The kernel position of the current pixel `(row, column)`; see [`causal_mask`].
    pub centre: (usize, usize),
    /// Zero padding `(top, bottom, left, right)` applied before the (unpadded, stride 1) convolution.
    pub padding: (usize, usize, usize, usize),
    /// Mask type A or B.
    pub mask_type: MaskType,
    /// Colour groups of the channels (1 for grey images or when channels are not ordered).
    pub colour_groups: usize,
    /// Whether the layer has a bias.
    pub bias: bool,
}

impl MaskedConvConfig {
    /// PixelCNN's square `k x k` masked convolution with "same" padding `k / 2` and the centre in the
    /// middle (`k` odd).
    pub fn square(
        in_channels: usize,
        out_channels: usize,
        k: usize,
        mask_type: MaskType,
        colour_groups: usize,
    ) -> Self {
        let p = k / 2;
        Self {
            in_channels,
            out_channels,
            kernel: (k, k),
            centre: (p, p),
            padding: (p, p, p, p),
            mask_type,
            colour_groups,
            bias: true,
        }
    }

    /// The horizontal stack's `1 x (k/2 + 1)` convolution of the Gated PixelCNN (van den Oord et al. 2016,
    /// "Conditional Image Generation with PixelCNN Decoders"): the current pixel and the `k / 2` to its
    /// left, padded on the left only.
    pub fn row(in_channels: usize, out_channels: usize, k: usize, mask_type: MaskType, colour_groups: usize) -> Self {
        let p = k / 2;
        Self {
            in_channels,
            out_channels,
            kernel: (1, p + 1),
            centre: (0, p),
            padding: (0, 0, p, 0),
            mask_type,
            colour_groups,
            bias: true,
        }
    }
}

/// A stride-1 2-D convolution whose kernel is multiplied by a causal mask ([`causal_mask`]) in every
/// forward pass.
///
/// Input `(B, in, H, W)`, output `(B, out, H + top + bottom - kh + 1, W + left + right - kw + 1)` (the
/// input's size for [`MaskedConvConfig::square`] and [`MaskedConvConfig::row`]). Variables: `weight`
/// `(out, in, kh, kw)` and `bias` `(out,)`, as PyTorch's `Conv2d` names them, so the parameter count is
/// the unmasked layer's.
#[derive(Debug, Clone)]
pub struct MaskedConv2d {
    weight: Tensor,
    bias: Option<Tensor>,
    mask: Tensor,
    config: MaskedConvConfig,
    weight_path: String,
}

impl MaskedConv2d {
    /// Builds the layer's variables under `vb` (`weight`, `bias`) in `vb`'s dtype and device.
    /// Bad channel counts or a centre outside the kernel are `Error::Config`.
    pub fn new(config: MaskedConvConfig, vb: VarBuilder) -> Result<Self> {
        let (kh, kw) = config.kernel;
        let mask = causal_mask(
            config.mask_type,
            config.out_channels,
            config.in_channels,
            config.kernel,
            config.centre,
            config.colour_groups,
        )?;
        let shape = (config.out_channels, config.in_channels, kh, kw);
        let mask = Tensor::from_vec(mask, shape, vb.device())?.to_dtype(vb.dtype())?;
        let weight = vb.get(shape, "weight")?;
        let bias = if config.bias { Some(vb.get(config.out_channels, "bias")?) } else { None };
        let weight_path = if vb.prefix().is_empty() { "weight".to_string() } else { format!("{}.weight", vb.prefix()) };
        Ok(Self { weight, bias, mask, config, weight_path })
    }

    /// The layer's configuration.
    pub fn config(&self) -> &MaskedConvConfig {
        &self.config
    }

    /// The 0/1 mask, shape `(out, in, kh, kw)`, in the weight's dtype.
    pub fn mask(&self) -> &Tensor {
        &self.mask
    }

    /// The stored (unmasked) weight `(out, in, kh, kw)`.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// The weight's variable path in the `VarMap` (`<prefix>.weight`).
    pub fn weight_path(&self) -> &str {
        &self.weight_path
    }

    /// The weight as used in the forward pass: `weight * mask`.
    pub fn masked_weight(&self) -> Result<Tensor> {
        Ok(self.weight.broadcast_mul(&self.mask)?)
    }

    /// Sets the stored masked-out weights to zero through `var`, the variable behind
    /// [`weight`](Self::weight) (e.g. `varmap.data()` at [`weight_path`](Self::weight_path)), after
    /// an initialisation that filled them. A variable of another shape is `Error::Shape`.
    pub fn zero_masked_weights(&self, var: &Var) -> Result<()> {
        if var.dims() != self.mask.dims() {
            return Err(Error::shape(
                "MaskedConv2d::zero_masked_weights",
                format!("variable {:?} is not this layer's weight {:?}", var.dims(), self.mask.dims()),
            ));
        }
        let masked = var.as_tensor().broadcast_mul(&self.mask.to_dtype(var.dtype())?)?;
        var.set(&masked)?;
        Ok(())
    }

    /// The number of weights the mask lets through (the trainable weights in effect).
    pub fn visible_weights(&self) -> Result<usize> {
        Ok(self.mask.to_dtype(DType::F32)?.sum_all()?.to_scalar::<f32>()? as usize)
    }
}

impl Module for MaskedConv2d {
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        let (top, bottom, left, right) = self.config.padding;
        let w = self.weight.broadcast_mul(&self.mask)?;
        let y = if top == bottom && left == right && top == left {
            // Equal padding on all sides: the convolution pads itself, without copying the input.
            super::conv::conv2d(xs, &w, top, 1, 1).map_err(candle_core::Error::wrap)?
        } else {
            let mut x = xs.clone();
            if top + bottom > 0 {
                x = x.pad_with_zeros(2, top, bottom)?;
            }
            if left + right > 0 {
                x = x.pad_with_zeros(3, left, right)?;
            }
            super::conv::conv2d(&x, &w, 0, 1, 1).map_err(candle_core::Error::wrap)?
        };
        match &self.bias {
            Some(b) => super::channel_bias::add_channel_bias(&y, b).map_err(candle_core::Error::wrap),
            None => Ok(y),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use candle_nn::VarMap;

    fn at(mask: &[f32], dims: (usize, usize, usize, usize), o: usize, i: usize, y: usize, x: usize) -> f32 {
        let (_, ci, kh, kw) = dims;
        mask[((o * ci + i) * kh + y) * kw + x]
    }

    #[test]
    fn grey_masks_hide_the_future_and_type_a_hides_the_centre() -> Result<()> {
        let a = causal_mask(MaskType::A, 1, 1, (3, 3), (1, 1), 1)?;
        let b = causal_mask(MaskType::B, 1, 1, (3, 3), (1, 1), 1)?;
        assert_eq!(a, vec![1., 1., 1., 1., 0., 0., 0., 0., 0.]);
        assert_eq!(b, vec![1., 1., 1., 1., 1., 0., 0., 0., 0.]);
        Ok(())
    }

    #[test]
    fn colour_masks_order_r_before_g_before_b() -> Result<()> {
        let dims = (6, 3, 3, 3);
        let a = causal_mask(MaskType::A, 6, 3, (3, 3), (1, 1), 3)?;
        let b = causal_mask(MaskType::B, 6, 6, (3, 3), (1, 1), 3)?;
        for o in 0..6 {
            let go = o / 2;
            for i in 0..3 {
                assert_eq!(at(&a, dims, o, i, 1, 1), if i < go { 1.0 } else { 0.0 }, "A o={o} i={i}");
                assert_eq!(at(&a, dims, o, i, 0, 2), 1.0);
                assert_eq!(at(&a, dims, o, i, 1, 2), 0.0);
            }
            for i in 0..6 {
                let gi = i / 2;
                assert_eq!(at(&b, (6, 6, 3, 3), o, i, 1, 1), if gi <= go { 1.0 } else { 0.0 }, "B o={o} i={i}");
            }
        }
        Ok(())
    }

    #[test]
    fn bad_arguments_are_config_errors() {
        let e = causal_mask(MaskType::B, 4, 3, (3, 3), (1, 1), 3).unwrap_err();
        assert!(e.to_string().contains("out_channels"), "{e}");
        let e = causal_mask(MaskType::B, 3, 3, (3, 3), (3, 1), 3).unwrap_err();
        assert!(e.to_string().contains("centre"), "{e}");
        let e = causal_mask(MaskType::B, 3, 3, (3, 3), (1, 1), 0).unwrap_err();
        assert!(e.to_string().contains("colour_groups"), "{e}");
    }

    #[test]
    fn masked_weights_get_zero_gradient() -> Result<()> {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
        let conv = MaskedConv2d::new(MaskedConvConfig::square(2, 4, 3, MaskType::A, 1), vb.pp("c"))?;
        let var = vm.data().lock().unwrap().get("c.weight").cloned().unwrap();
        var.set(&var.as_tensor().ones_like()?)?;
        let x = Tensor::arange(0f32, 2.0 * 25.0, &Device::Cpu)?.reshape((1, 2, 5, 5))?;
        let y = conv.forward(&x)?;
        assert_eq!(y.dims(), &[1, 4, 5, 5]);
        let grads = y.sqr()?.sum_all()?.backward()?;
        let g = grads.get(&var).unwrap().flatten_all()?.to_vec1::<f32>()?;
        let m = conv.mask().flatten_all()?.to_vec1::<f32>()?;
        assert!(g.iter().zip(&m).all(|(g, m)| *m == 1.0 || *g == 0.0));
        assert!(g.iter().zip(&m).any(|(g, m)| *m == 1.0 && *g != 0.0));
        conv.zero_masked_weights(&var)?;
        let w = var.as_tensor().flatten_all()?.to_vec1::<f32>()?;
        assert_eq!(w, m);
        assert_eq!(conv.visible_weights()?, 4 * 2 * 4);
        Ok(())
    }

    #[test]
    fn row_convolution_keeps_the_width_and_looks_left() -> Result<()> {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
        let conv = MaskedConv2d::new(MaskedConvConfig::row(1, 1, 5, MaskType::B, 1), vb.pp("h"))?;
        let var = vm.data().lock().unwrap().get("h.weight").cloned().unwrap();
        var.set(&var.as_tensor().ones_like()?)?;
        // A single 1 at column 3: with a row kernel of the current pixel and 2 to the left, columns 3..=5 see it.
        let mut v = vec![0f32; 8];
        v[3] = 1.0;
        let x = Tensor::from_vec(v, (1, 1, 1, 8), &Device::Cpu)?;
        let y = conv.forward(&x)?.flatten_all()?.to_vec1::<f32>()?;
        assert_eq!(y, vec![0., 0., 0., 1., 1., 1., 0., 0.]);
        Ok(())
    }
}
