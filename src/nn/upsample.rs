//! Nearest-neighbour upsampling by whole factors from broadcasting, differentiable in every dtype.

use candle_core::Tensor;

use crate::{Error, Result};

/// Nearest-neighbour upsampling of `(B, C, h, w)` to `(B, C, height, width)`, the values of
/// candle's `upsample_nearest2d`. When `height` and `width` are whole multiples of `h` and `w`,
/// each pixel is broadcast over its block: the backward pass is then a plain sum over the block,
/// in any dtype and on any device, where candle's backward of `upsample_nearest2d` is a grouped
/// convolution that its CPU backend cannot run in `bf16`. Other sizes use `upsample_nearest2d`.
///
/// ```
/// use candle_core::{Device, Tensor};
/// let x = Tensor::new(&[[[[1f32, 2.], [3., 4.]]]], &Device::Cpu)?;
/// let y = candle_generative::nn::upsample::upsample_nearest(&x, 4, 4)?;
/// assert_eq!(y.dims(), &[1, 1, 4, 4]);
/// assert_eq!(y.squeeze(0)?.squeeze(0)?.to_vec2::<f32>()?[1], vec![1., 1., 2., 2.]);
/// # Ok::<(), candle_generative::Error>(())
/// ```
pub fn upsample_nearest(x: &Tensor, height: usize, width: usize) -> Result<Tensor> {
    let (b, c, h, w) = x
        .dims4()
        .map_err(|_| Error::shape("upsample_nearest", format!("expected (B, C, H, W), got {:?}", x.dims())))?;
    if h == 0 || w == 0 || height == 0 || width == 0 {
        return Err(Error::shape("upsample_nearest", format!("empty sizes: {:?} -> ({height}, {width})", x.dims())));
    }
    if height % h != 0 || width % w != 0 {
        return Ok(x.upsample_nearest2d(height, width)?);
    }
    let (sh, sw) = (height / h, width / w);
    Ok(x.reshape((b, c, h, 1, w, 1))?.broadcast_as((b, c, h, sh, w, sw))?.reshape((b, c, height, width))?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Var};

    #[test]
    fn matches_candle_and_sums_gradients_over_blocks() -> Result<()> {
        let dev = Device::Cpu;
        let x = Tensor::arange(0f32, 24.0, &dev)?.reshape((1, 2, 3, 4))?;
        for (hh, ww) in [(6, 8), (9, 4), (3, 12), (5, 7)] {
            let ours = upsample_nearest(&x, hh, ww)?.flatten_all()?.to_vec1::<f32>()?;
            let theirs = x.upsample_nearest2d(hh, ww)?.flatten_all()?.to_vec1::<f32>()?;
            assert_eq!(ours, theirs, "{hh}x{ww}");
        }
        // d/dx sum(w ⊙ up(x)) = the sum of w over each pixel's 2x3 block, in bf16 too.
        for dtype in [DType::F32, DType::BF16] {
            let v = Var::from_tensor(&x.to_dtype(dtype)?)?;
            // Small whole numbers: their block sums are exact in bf16 too.
            let w: Vec<f32> = (0..144).map(|i| (i * 5 % 8) as f32).collect();
            let weights = Tensor::from_vec(w, (1, 2, 6, 12), &dev)?;
            let loss = upsample_nearest(v.as_tensor(), 6, 12)?.to_dtype(DType::F32)?.mul(&weights)?.sum_all()?;
            let g = loss.backward()?.get(&v).expect("x reaches the loss").to_dtype(DType::F32)?;
            let expected = weights.reshape((1, 2, 3, 2, 4, 3))?.sum(5)?.sum(3)?;
            let diff = (g - expected)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert_eq!(diff, 0.0, "{dtype:?}");
        }
        assert!(upsample_nearest(&Tensor::zeros((2, 3), DType::F32, &dev)?, 4, 4).is_err());
        Ok(())
    }
}
