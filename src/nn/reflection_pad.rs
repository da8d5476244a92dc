//! Reflection padding of images, as PyTorch's `ReflectionPad2d` (used by the ResNet generator of
//! Johnson et al. 2016 and CycleGAN, Zhu et al. 2017, to avoid the dark borders of zero padding).

use candle_core::{Module, Tensor};

use crate::{Error, Result};

/// Pads the last two dimensions of `x` (`(B, C, H, W)`, or any rank >= 2) by reflection: the
/// border row or column is the mirror axis and is not repeated. With `[a b c d]` and `pad = 2`,
/// a row becomes `[c b a b c d c b]`.
///
/// `pad` must be smaller than both `H` and `W` (as in PyTorch), else `Error::Shape`. The result
/// has shape `(.., H + 2 pad, W + 2 pad)`, the input's dtype and device; `pad = 0` returns `x`.
/// Built from `index_select`, so gradients flow back to `x` (summed over the reflected copies).
pub fn reflection_pad2d(x: &Tensor, pad: usize) -> Result<Tensor> {
    if x.rank() < 2 {
        return Err(Error::shape("reflection_pad2d", format!("needs rank >= 2 (.., H, W), got {:?}", x.dims())));
    }
    if pad == 0 {
        return Ok(x.clone());
    }
    let rank = x.rank();
    let (h, w) = (x.dim(rank - 2)?, x.dim(rank - 1)?);
    if pad >= h || pad >= w {
        return Err(Error::shape(
            "reflection_pad2d",
            format!("padding {pad} must be smaller than the height and width, got {:?}", x.dims()),
        ));
    }
    let rows = Tensor::from_vec(reflected_indices(h, pad), h + 2 * pad, x.device())?;
    let cols = Tensor::from_vec(reflected_indices(w, pad), w + 2 * pad, x.device())?;
    Ok(x.index_select(&rows, rank - 2)?.index_select(&cols, rank - 1)?)
}

/// Source index of every output position along one axis of length `n` padded by `pad < n`:
/// `pad, .., 1, 0, 1, .., n-1, n-2, .., n-1-pad`.
fn reflected_indices(n: usize, pad: usize) -> Vec<u32> {
    let reflect = |i: isize| -> u32 {
        let n = n as isize;
        let j = if i < 0 {
            -i
        } else if i >= n {
            2 * (n - 1) - i
        } else {
            i
        };
        j as u32
    };
    (-(pad as isize)..(n + pad) as isize).map(reflect).collect()
}

/// [`reflection_pad2d`] as a layer: `ReflectionPad2d::new(3)` pads every side by 3 pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReflectionPad2d {
    pad: usize,
}

impl ReflectionPad2d {
    /// Reflection padding of `pad` pixels on each side of the last two dimensions.
    pub fn new(pad: usize) -> Self {
        Self { pad }
    }

    /// The padding per side.
    pub fn pad(&self) -> usize {
        self.pad
    }

    /// Pads `x` (`(.., H, W)` with `pad < H, W`); see [`reflection_pad2d`].
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        reflection_pad2d(x, self.pad)
    }
}

impl Module for ReflectionPad2d {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        reflection_pad2d(x, self.pad).map_err(|e| match e {
            Error::Candle(e) => e,
            other => candle_core::Error::Msg(other.to_string()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    #[test]
    fn matches_a_hand_computed_case() -> Result<()> {
        // A 3x4 image with pixel value 10 r + c; padded by 2.
        let x = Tensor::new(&[[[[0f32, 1., 2., 3.], [10., 11., 12., 13.], [20., 21., 22., 23.]]]], &Device::Cpu)?;
        let y = reflection_pad2d(&x, 2)?;
        assert_eq!(y.dims(), &[1, 1, 7, 8]);
        // Rows: 2 1 0 1 2 1 0; columns: 2 1 0 1 2 3 2 1.
        let want = [
            [22f32, 21., 20., 21., 22., 23., 22., 21.],
            [12., 11., 10., 11., 12., 13., 12., 11.],
            [2., 1., 0., 1., 2., 3., 2., 1.],
            [12., 11., 10., 11., 12., 13., 12., 11.],
            [22., 21., 20., 21., 22., 23., 22., 21.],
            [12., 11., 10., 11., 12., 13., 12., 11.],
            [2., 1., 0., 1., 2., 3., 2., 1.],
        ];
        assert_eq!(y.squeeze(0)?.squeeze(0)?.to_vec2::<f32>()?, want.iter().map(|r| r.to_vec()).collect::<Vec<_>>());
        assert_eq!(reflected_indices(4, 1), vec![1, 0, 1, 2, 3, 2]);
        Ok(())
    }

    #[test]
    fn gradient_sums_over_the_reflected_copies() -> Result<()> {
        let x = candle_core::Var::ones((1, 1, 3, 3), DType::F64, &Device::Cpu)?;
        let y = reflection_pad2d(x.as_tensor(), 1)?;
        let g = y.sum_all()?.backward()?;
        let g = g.get(&x).unwrap().squeeze(0)?.squeeze(0)?.to_vec2::<f64>()?;
        // Source rows of the 5 output rows are 1 0 1 2 1: rows 0 and 2 appear once, row 1 three
        // times; likewise the columns. A pixel's gradient is its number of copies.
        assert_eq!(g, vec![vec![1., 3., 1.], vec![3., 9., 3.], vec![1., 3., 1.]]);
        Ok(())
    }

    #[test]
    fn too_much_padding_is_an_error() -> Result<()> {
        let x = Tensor::zeros((1, 1, 3, 5), DType::F32, &Device::Cpu)?;
        let e = reflection_pad2d(&x, 3).unwrap_err().to_string();
        assert!(e.contains("reflection_pad2d") && e.contains("[1, 1, 3, 5]"), "{e}");
        assert!(reflection_pad2d(&Tensor::zeros(3, DType::F32, &Device::Cpu)?, 1).is_err());
        assert_eq!(ReflectionPad2d::new(0).forward(&x)?.dims(), x.dims());
        Ok(())
    }
}
