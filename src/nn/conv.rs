//! Convolutions with a faster CPU path: [`conv2d`] and [`conv_transpose2d`], and the layers
//! [`Conv2d`] / [`ConvTranspose2d`] that every model family of the crate uses.
//!
//! On the CPU (f32, f64, f16, bf16, `groups == 1`) a convolution is lowered to
//! `im2col` + one gemm, a transposed convolution to one gemm + `col2im`, and
//! their gradients to gemms and the adjoint fold, the lowering of Caffe and PyTorch's CPU backend
//! (Chellapilla et al. 2006). candle 0.11's own CPU backward of `conv2d` calls a direct-loop
//! `conv_transpose2d` (no gemm), which dominated a training step of every model family here; see
//! docs/performance.md for the measured effect. Other devices (CUDA, Metal) and grouped
//! convolutions use candle's kernels unchanged.
//!
//! The switch [`set_fast_cpu_kernels`] (or the environment variable
//! `CANDLE_GENERATIVE_REFERENCE_KERNELS=1`) sends everything to candle's reference ops, for
//! comparison. Both paths compute the same function; they differ in rounding only.
//!
//! Shapes follow candle and PyTorch: input `(N, C_in, H, W)`; a convolution weight
//! `(C_out, C_in, kh, kw)`, a transposed-convolution weight `(C_in, C_out, kh, kw)`.
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use candle_generative::nn::conv::conv2d;
//!
//! let x = Tensor::ones((2, 3, 8, 8), candle_core::DType::F32, &Device::Cpu)?;
//! let w = Tensor::ones((4, 3, 3, 3), candle_core::DType::F32, &Device::Cpu)?;
//! let y = conv2d(&x, &w, 1, 2, 1)?; // padding 1, stride 2, dilation 1
//! assert_eq!(y.dims(), &[2, 4, 4, 4]);
//! // The centre of the output sees a full 3x3x3 window of ones.
//! assert_eq!(y.get(0)?.get(0)?.get(1)?.get(1)?.to_scalar::<f32>()?, 27.0);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::sync::atomic::{AtomicU8, Ordering};

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Conv2dConfig, ConvTranspose2dConfig, VarBuilder};

use super::im2col::{Col2Im, Geometry, Im2Col};
use crate::{Error, Result};

/// 0: not decided yet (read the environment), 1: fast CPU kernels, 2: candle's reference ops.
static KERNELS: AtomicU8 = AtomicU8::new(0);

/// Chooses between the crate's CPU convolution kernels (`true`, the default) and candle's
/// reference ops (`false`), process-wide. The environment variable
/// `CANDLE_GENERATIVE_REFERENCE_KERNELS=1` sets the initial choice to the reference ops.
pub fn set_fast_cpu_kernels(enabled: bool) {
    KERNELS.store(if enabled { 1 } else { 2 }, Ordering::Relaxed);
}

/// Whether convolutions on the CPU use the crate's kernels (see [`set_fast_cpu_kernels`]).
pub fn fast_cpu_kernels() -> bool {
    match KERNELS.load(Ordering::Relaxed) {
        1 => true,
        2 => false,
        _ => {
            let reference = std::env::var("CANDLE_GENERATIVE_REFERENCE_KERNELS")
                .map(|v| !v.is_empty() && v != "0")
                .unwrap_or(false);
            set_fast_cpu_kernels(!reference);
            !reference
        }
    }
}

fn uses_fast_path(x: &Tensor, groups: usize) -> bool {
    groups == 1
        && matches!(x.device(), Device::Cpu)
        && matches!(x.dtype(), DType::F32 | DType::F64 | DType::F16 | DType::BF16)
        && fast_cpu_kernels()
}

fn check_layout(context: &str, x: &Tensor, w: &Tensor, stride: usize, dilation: usize) -> Result<()> {
    if x.rank() != 4 || w.rank() != 4 {
        return Err(Error::shape(
            context,
            format!("expected a 4-D input and weight, got {:?} and {:?}", x.dims(), w.dims()),
        ));
    }
    if stride == 0 || dilation == 0 {
        return Err(Error::shape(context, format!("stride ({stride}) and dilation ({dilation}) must be >= 1")));
    }
    Ok(())
}

/// 2-D cross-correlation (what deep-learning libraries call convolution) of `x: (N, C_in, H, W)`
/// with `w: (C_out, C_in, kh, kw)`, zero padding `padding` on every side, without bias.
/// Output `(N, C_out, H_out, W_out)` with `H_out = (H + 2 padding - dilation (kh - 1) - 1) /
/// stride + 1`. Same contract as candle's `Tensor::conv2d` with `groups = 1`.
pub fn conv2d(x: &Tensor, w: &Tensor, padding: usize, stride: usize, dilation: usize) -> Result<Tensor> {
    check_layout("conv2d", x, w, stride, dilation)?;
    if !uses_fast_path(x, 1) {
        return Ok(x.conv2d(w, padding, stride, dilation, 1)?);
    }
    let (n, c, h, wd) = x.dims4()?;
    let (c_out, c_in, kh, kw) = w.dims4()?;
    if c != c_in {
        return Err(Error::shape("conv2d", format!("input has {c} channels, the weight {c_in}")));
    }
    let span = |k: usize| dilation * (k - 1) + 1;
    if kh == 0 || kw == 0 || h + 2 * padding < span(kh) || wd + 2 * padding < span(kw) {
        return Err(Error::shape(
            "conv2d",
            format!(
                "kernel {kh}x{kw} (dilation {dilation}) does not fit the padded input {h}x{wd} (padding {padding})"
            ),
        ));
    }
    let (out_h, out_w) = ((h + 2 * padding - span(kh)) / stride + 1, (wd + 2 * padding - span(kw)) / stride + 1);
    let g = Geometry {
        batch: n,
        channels: c,
        height: h,
        width: wd,
        kernel_h: kh,
        kernel_w: kw,
        stride,
        padding,
        dilation,
        out_h,
        out_w,
    };
    let cols = x.contiguous()?.apply_op1(Im2Col(g))?;
    let y = cols.matmul(&w.reshape((c_out, c * kh * kw))?.t()?)?;
    Ok(y.reshape((n, out_h, out_w, c_out))?.permute((0, 3, 1, 2))?.contiguous()?)
}

/// 2-D transposed convolution (the adjoint of [`conv2d`], "deconvolution") of
/// `x: (N, C_in, H, W)` with `w: (C_in, C_out, kh, kw)`, without bias. Output
/// `(N, C_out, H_out, W_out)` with `H_out = (H - 1) stride - 2 padding + dilation (kh - 1) +
/// output_padding + 1`. Same contract as candle's `Tensor::conv_transpose2d`.
pub fn conv_transpose2d(
    x: &Tensor,
    w: &Tensor,
    padding: usize,
    output_padding: usize,
    stride: usize,
    dilation: usize,
) -> Result<Tensor> {
    check_layout("conv_transpose2d", x, w, stride, dilation)?;
    if !uses_fast_path(x, 1) {
        return Ok(x.conv_transpose2d(w, padding, output_padding, stride, dilation)?);
    }
    let (n, c, h, wd) = x.dims4()?;
    let (c_in, c_out, kh, kw) = w.dims4()?;
    if c != c_in {
        return Err(Error::shape("conv_transpose2d", format!("input has {c} channels, the weight {c_in}")));
    }
    let size =
        |len: usize, k: usize| ((len - 1) * stride + dilation * (k - 1) + output_padding + 1).checked_sub(2 * padding);
    let (Some(out_h), Some(out_w)) = (size(h, kh), size(wd, kw)) else {
        return Err(Error::shape("conv_transpose2d", format!("padding {padding} leaves no output for input {h}x{wd}")));
    };
    if h == 0 || wd == 0 || kh == 0 || kw == 0 || out_h == 0 || out_w == 0 {
        return Err(Error::shape("conv_transpose2d", format!("empty input {h}x{wd} or kernel {kh}x{kw}")));
    }
    let g = Geometry {
        batch: n,
        channels: c_out,
        height: out_h,
        width: out_w,
        kernel_h: kh,
        kernel_w: kw,
        stride,
        padding,
        dilation,
        out_h: h,
        out_w: wd,
    };
    let x = x.permute((0, 2, 3, 1))?.reshape((n * h * wd, c_in))?;
    let cols = x.matmul(&w.reshape((c_in, c_out * kh * kw))?)?;
    Ok(cols.apply_op1(Col2Im(g))?)
}

fn add_bias(y: Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    match bias {
        None => Ok(y),
        Some(b) => super::channel_bias::add_channel_bias(&y, b),
    }
}

/// A 2-D convolution layer: [`conv2d`] plus an optional bias `(C_out,)`, configured by candle-nn's
/// `Conv2dConfig` (grouped convolutions go to candle's kernel). A drop-in for
/// `candle_nn::Conv2d` (same variable names `weight`/`bias`, same initialisation in [`conv2d_layer`]).
#[derive(Clone, Debug)]
pub struct Conv2d {
    weight: Tensor,
    bias: Option<Tensor>,
    config: Conv2dConfig,
}

impl Conv2d {
    /// A layer from its weight `(C_out, C_in / groups, kh, kw)`, bias `(C_out,)` and config.
    pub fn new(weight: Tensor, bias: Option<Tensor>, config: Conv2dConfig) -> Self {
        Self { weight, bias, config }
    }

    /// The weight `(C_out, C_in / groups, kh, kw)`.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// The bias `(C_out,)`, if any.
    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }

    /// Padding, stride, dilation and groups.
    pub fn config(&self) -> &Conv2dConfig {
        &self.config
    }

    /// `x: (N, C_in, H, W)` -> `(N, C_out, H_out, W_out)`, as a [`Result`] of this crate.
    pub fn forward_checked(&self, x: &Tensor) -> Result<Tensor> {
        let c = &self.config;
        let y = if uses_fast_path(x, c.groups) {
            conv2d(x, &self.weight, c.padding, c.stride, c.dilation)?
        } else {
            x.conv2d(&self.weight, c.padding, c.stride, c.dilation, c.groups)?
        };
        add_bias(y, self.bias.as_ref())
    }
}

impl From<candle_nn::Conv2d> for Conv2d {
    fn from(layer: candle_nn::Conv2d) -> Self {
        Self::new(layer.weight().clone(), layer.bias().cloned(), *layer.config())
    }
}

impl Module for Conv2d {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.forward_checked(x).map_err(candle_core::Error::wrap)
    }
}

/// A 2-D transposed-convolution layer: [`conv_transpose2d`] plus an optional bias `(C_out,)`,
/// configured by candle-nn's `ConvTranspose2dConfig`. A drop-in for `candle_nn::ConvTranspose2d`.
#[derive(Clone, Debug)]
pub struct ConvTranspose2d {
    weight: Tensor,
    bias: Option<Tensor>,
    config: ConvTranspose2dConfig,
}

impl ConvTranspose2d {
    /// A layer from its weight `(C_in, C_out, kh, kw)`, bias `(C_out,)` and config.
    pub fn new(weight: Tensor, bias: Option<Tensor>, config: ConvTranspose2dConfig) -> Self {
        Self { weight, bias, config }
    }

    /// The weight `(C_in, C_out, kh, kw)`.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// The bias `(C_out,)`, if any.
    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }

    /// Padding, output padding, stride and dilation.
    pub fn config(&self) -> &ConvTranspose2dConfig {
        &self.config
    }

    /// `x: (N, C_in, H, W)` -> `(N, C_out, H_out, W_out)`, as a [`Result`] of this crate.
    pub fn forward_checked(&self, x: &Tensor) -> Result<Tensor> {
        let c = &self.config;
        let y = conv_transpose2d(x, &self.weight, c.padding, c.output_padding, c.stride, c.dilation)?;
        add_bias(y, self.bias.as_ref())
    }
}

impl From<candle_nn::ConvTranspose2d> for ConvTranspose2d {
    fn from(layer: candle_nn::ConvTranspose2d) -> Self {
        Self::new(layer.weight().clone(), layer.bias().cloned(), *layer.config())
    }
}

impl Module for ConvTranspose2d {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.forward_checked(x).map_err(candle_core::Error::wrap)
    }
}

/// A [`Conv2d`] with candle-nn's initialisation and variable names (`weight`, `bias`), as
/// `candle_nn::conv2d`: `c_in -> c_out` channels, a `kernel x kernel` window.
pub fn conv2d_layer(c_in: usize, c_out: usize, kernel: usize, config: Conv2dConfig, vb: VarBuilder) -> Result<Conv2d> {
    Ok(candle_nn::conv2d(c_in, c_out, kernel, config, vb)?.into())
}

/// A [`ConvTranspose2d`] with candle-nn's initialisation and variable names, as
/// `candle_nn::conv_transpose2d`.
pub fn conv_transpose2d_layer(
    c_in: usize,
    c_out: usize,
    kernel: usize,
    config: ConvTranspose2dConfig,
    vb: VarBuilder,
) -> Result<ConvTranspose2d> {
    Ok(candle_nn::conv_transpose2d(c_in, c_out, kernel, config, vb)?.into())
}
