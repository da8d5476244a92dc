//! Translating many images and measuring how far they land from a known answer.

use candle_core::{DType, Tensor};

use super::traits::Translator;
use crate::{Error, Result};

/// Translates `images` `(N, C, H, W)` in `[-1, 1]` with `translator` in evaluation mode (`train
/// = false`), `batch_size` images at a time (> 0, else `Error::Config`), without building a
/// gradient graph; returns `(N, C_out, H, W)`.
pub fn translate_in_batches<T: Translator + ?Sized>(
    translator: &T,
    images: &Tensor,
    batch_size: usize,
) -> Result<Tensor> {
    if batch_size == 0 {
        return Err(Error::config("batch_size", "must be > 0"));
    }
    if images.rank() != 4 || images.dim(0)? == 0 {
        return Err(Error::shape("translate_in_batches", format!("expected (N, C, H, W), got {:?}", images.dims())));
    }
    let n = images.dim(0)?;
    let mut out = Vec::with_capacity(n.div_ceil(batch_size));
    for start in (0..n).step_by(batch_size) {
        let chunk = images.narrow(0, start, batch_size.min(n - start))?.detach();
        out.push(translator.translate(&chunk, false)?.detach());
    }
    Ok(Tensor::cat(&out, 0)?)
}

/// `mean|x - y|` over every element, in f64; `x` and `y` of one shape (else `Error::Shape`).
/// For images in `[-1, 1]`, halve it to get the error in `[0, 1]` pixel units.
pub fn mean_absolute_error(x: &Tensor, y: &Tensor) -> Result<f64> {
    if x.dims() != y.dims() || x.elem_count() == 0 {
        return Err(Error::shape(
            "mean_absolute_error",
            format!("needs two non-empty tensors of one shape, got {:?} and {:?}", x.dims(), y.dims()),
        ));
    }
    let d = (x.to_dtype(DType::F64)? - y.to_dtype(DType::F64)?)?;
    Ok(d.abs()?.mean_all()?.to_scalar::<f64>()?)
}
