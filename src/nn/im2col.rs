//! The two CPU kernels behind the crate's convolutions: `im2col` (unfold the receptive fields of
//! an image into the columns of a matrix) and its adjoint `col2im` (fold columns back, summing
//! overlaps). With them a convolution is one gemm and both of its gradients are gemms plus a fold,
//! as in Caffe and PyTorch's CPU path (Chellapilla et al. 2006, "High performance convolutional
//! neural networks for document processing").
//!
//! Each is a candle `CustomOp1` whose backward is the other one, applied through the tensor API,
//! so gradients keep their graph when candle is asked to (second-order gradients for R1 and
//! WGAN-GP penalties work through them). Only the CPU device has a forward; [`super::conv`]
//! sends other devices to candle's own kernels.
//!
//! # Layout
//! For an image batch `(N, C, H, W)`, a kernel `kh x kw`, stride `s`, padding `p`, dilation `d`
//! and an output grid `out_h x out_w`, the column matrix is `(N * out_h * out_w, C * kh * kw)`,
//! row `(n * out_h + oy) * out_w + ox`, column `(c * kh + i) * kw + j` (the order of a
//! `(C_out, C, kh, kw)` weight reshaped to `(C_out, C * kh * kw)`), holding
//! `x[n, c, oy * s - p + i * d, ox * s - p + j * d]` (zero outside the image). The convolution is
//! then one gemm `(N L, C kh kw) x (C kh kw, C_out)` with the long side first, the orientation
//! the `gemm` crate runs fastest (157 against 92 GFLOP/s for the bench PixelCNN's 3x3 layer here).

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor, WithDType};
use rayon::prelude::*;

/// The geometry shared by [`Im2Col`] and [`Col2Im`]: image size, kernel, stride, padding,
/// dilation and the output grid (given explicitly so transposed convolutions with an output
/// padding fold onto an image larger than the grid implies).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Geometry {
    pub batch: usize,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub kernel_h: usize,
    pub kernel_w: usize,
    pub stride: usize,
    pub padding: usize,
    pub dilation: usize,
    pub out_h: usize,
    pub out_w: usize,
}

impl Geometry {
    fn image_len(&self) -> usize {
        self.batch * self.channels * self.height * self.width
    }

    fn grid_len(&self) -> usize {
        self.out_h * self.out_w
    }

    fn rows(&self) -> usize {
        self.channels * self.kernel_h * self.kernel_w
    }

    fn cols_len(&self) -> usize {
        self.rows() * self.batch * self.grid_len()
    }

    /// The range of output positions `o` (along one axis of length `out`) whose input position
    /// `o * s - p + k * d` lies in `0..size`, for kernel offset `k`.
    fn valid(&self, k: usize, size: usize, out: usize) -> std::ops::Range<usize> {
        let shift = (k * self.dilation) as isize - self.padding as isize;
        let s = self.stride as isize;
        // Smallest o with o * s + shift >= 0, and smallest o with o * s + shift >= size.
        let lo = if shift >= 0 { 0 } else { (-shift + s - 1) / s };
        let hi = if (size as isize) <= shift { 0 } else { (size as isize - shift + s - 1) / s };
        let lo = (lo as usize).min(out);
        lo..(hi as usize).clamp(lo, out)
    }

    fn source(&self, o: usize, k: usize) -> usize {
        o * self.stride + k * self.dilation - self.padding
    }
}

/// Unfolds `(N, C, H, W)` into the `(N out_h out_w, C kh kw)` column matrix; backward:
/// [`Col2Im`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct Im2Col(pub Geometry);

/// Folds an `(N out_h out_w, C kh kw)` column matrix into `(N, C, H, W)`, summing the entries
/// that land on the same pixel; backward: [`Im2Col`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct Col2Im(pub Geometry);

fn contiguous<'a, T>(data: &'a [T], layout: &Layout, len: usize, op: &str) -> candle_core::Result<&'a [T]> {
    match layout.contiguous_offsets() {
        Some((start, end)) if end - start == len => Ok(&data[start..end]),
        Some((start, end)) => {
            Err(candle_core::Error::Msg(format!("{op}: expected {len} elements, got {}", end - start)))
        }
        None => Err(candle_core::Error::Msg(format!("{op}: the input must be contiguous"))),
    }
}

fn im2col<T: WithDType>(g: &Geometry, x: &[T]) -> Vec<T> {
    let (kk, rows, hw) = (g.kernel_h * g.kernel_w, g.rows(), g.height * g.width);
    let mut cols = vec![T::zero(); g.cols_len()];
    // Output positions whose whole kernel row lies inside the image: copied without checks.
    let valid_j: Vec<std::ops::Range<usize>> = (0..g.kernel_w).map(|j| g.valid(j, g.width, g.out_w)).collect();
    let inner = valid_j.iter().fold(0..g.out_w, |a, r| a.start.max(r.start)..a.end.min(r.end));
    // One chunk per output row (n, oy): out_w positions of `rows` entries each, written in order.
    cols.par_chunks_mut(g.out_w * rows).enumerate().for_each(|(chunk, out)| {
        let (n, oy) = (chunk / g.out_h, chunk % g.out_h);
        let valid_i: Vec<usize> = (0..g.kernel_h).filter(|&i| g.valid(i, g.height, g.out_h).contains(&oy)).collect();
        for (ox, entries) in out.chunks_exact_mut(rows).enumerate() {
            let interior = inner.contains(&ox);
            for c in 0..g.channels {
                let image = &x[(n * g.channels + c) * hw..][..hw];
                for &i in &valid_i {
                    let src = &image[g.source(oy, i) * g.width..][..g.width];
                    let dst = &mut entries[c * kk + i * g.kernel_w..][..g.kernel_w];
                    if interior {
                        let start = g.source(ox, 0);
                        if g.dilation == 1 {
                            dst.copy_from_slice(&src[start..start + g.kernel_w]);
                        } else {
                            for (j, d) in dst.iter_mut().enumerate() {
                                *d = src[start + j * g.dilation];
                            }
                        }
                    } else {
                        for (j, d) in dst.iter_mut().enumerate() {
                            if valid_j[j].contains(&ox) {
                                *d = src[g.source(ox, j)];
                            }
                        }
                    }
                }
            }
        }
    });
    cols
}

fn col2im<T: WithDType>(g: &Geometry, cols: &[T]) -> Vec<T> {
    let (kk, rows, grid, hw) = (g.kernel_h * g.kernel_w, g.rows(), g.grid_len(), g.height * g.width);
    let mut image = vec![T::zero(); g.image_len()];
    image.par_chunks_mut(hw).enumerate().for_each(|(plane, out)| {
        let (n, c) = (plane / g.channels, plane % g.channels);
        let block = &cols[n * grid * rows..][..grid * rows];
        for i in 0..g.kernel_h {
            let ys = g.valid(i, g.height, g.out_h);
            for j in 0..g.kernel_w {
                let xs = g.valid(j, g.width, g.out_w);
                let col = c * kk + i * g.kernel_w + j;
                for oy in ys.clone() {
                    let dst = &mut out[g.source(oy, i) * g.width..][..g.width];
                    let src = &block[oy * g.out_w * rows..];
                    for ox in xs.clone() {
                        dst[g.source(ox, j)] += src[ox * rows + col];
                    }
                }
            }
        }
    });
    image
}

/// Applies `f` to the storage's element type (the float types the crate trains in).
macro_rules! dispatch {
    ($storage:expr, $layout:expr, $len:expr, $op:expr, |$data:ident| $body:expr) => {
        match $storage {
            CpuStorage::F32(d) => {
                let $data = contiguous(d, $layout, $len, $op)?;
                CpuStorage::F32($body)
            }
            CpuStorage::F64(d) => {
                let $data = contiguous(d, $layout, $len, $op)?;
                CpuStorage::F64($body)
            }
            CpuStorage::F16(d) => {
                let $data = contiguous(d, $layout, $len, $op)?;
                CpuStorage::F16($body)
            }
            CpuStorage::BF16(d) => {
                let $data = contiguous(d, $layout, $len, $op)?;
                CpuStorage::BF16($body)
            }
            other => return Err(candle_core::Error::Msg(format!("{}: unsupported dtype {:?}", $op, other.dtype()))),
        }
    };
}

impl CustomOp1 for Im2Col {
    fn name(&self) -> &'static str {
        "candle-generative-im2col"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = &self.0;
        let out = dispatch!(storage, layout, g.image_len(), "im2col", |x| im2col(g, x));
        Ok((out, Shape::from((g.batch * g.grid_len(), g.rows()))))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(grad.contiguous()?.apply_op1(Col2Im(self.0))?))
    }
}

impl CustomOp1 for Col2Im {
    fn name(&self) -> &'static str {
        "candle-generative-col2im"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = &self.0;
        let out = dispatch!(storage, layout, g.cols_len(), "col2im", |c| col2im(g, c));
        Ok((out, Shape::from((g.batch, g.channels, g.height, g.width))))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(grad.contiguous()?.apply_op1(Im2Col(self.0))?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn geometry(stride: usize, padding: usize, dilation: usize) -> Geometry {
        let (height, width, kernel_h, kernel_w) = (5, 4, 3, 2);
        let out = |size: usize, k: usize| (size + 2 * padding - dilation * (k - 1) - 1) / stride + 1;
        Geometry {
            batch: 2,
            channels: 3,
            height,
            width,
            kernel_h,
            kernel_w,
            stride,
            padding,
            dilation,
            out_h: out(height, kernel_h),
            out_w: out(width, kernel_w),
        }
    }

    /// The definition, element by element, with signed arithmetic.
    fn im2col_naive(g: &Geometry, x: &[f64]) -> Vec<f64> {
        let grid = g.out_h * g.out_w;
        let mut cols = vec![0.0; g.cols_len()];
        for c in 0..g.channels {
            for i in 0..g.kernel_h {
                for j in 0..g.kernel_w {
                    let row = (c * g.kernel_h + i) * g.kernel_w + j;
                    for n in 0..g.batch {
                        for oy in 0..g.out_h {
                            for ox in 0..g.out_w {
                                let y = (oy * g.stride + i * g.dilation) as isize - g.padding as isize;
                                let x_ = (ox * g.stride + j * g.dilation) as isize - g.padding as isize;
                                if y >= 0 && x_ >= 0 && (y as usize) < g.height && (x_ as usize) < g.width {
                                    let src = ((n * g.channels + c) * g.height + y as usize) * g.width + x_ as usize;
                                    cols[(n * grid + oy * g.out_w + ox) * g.rows() + row] = x[src];
                                }
                            }
                        }
                    }
                }
            }
        }
        cols
    }

    #[test]
    fn im2col_matches_the_definition_and_col2im_is_its_adjoint() {
        for (s, p, d) in [(1, 0, 1), (1, 1, 1), (2, 1, 1), (2, 0, 2), (3, 2, 1), (1, 3, 2)] {
            let g = geometry(s, p, d);
            let x: Vec<f64> = (0..g.image_len()).map(|v| (v as f64 * 0.37).sin()).collect();
            let cols = im2col(&g, &x);
            assert_eq!(cols, im2col_naive(&g, &x), "im2col, stride {s} padding {p} dilation {d}");
            // <im2col(x), y> == <x, col2im(y)> for a random-looking y: the adjoint identity.
            let y: Vec<f64> = (0..g.cols_len()).map(|v| (v as f64 * 0.91).cos()).collect();
            let lhs: f64 = cols.iter().zip(&y).map(|(a, b)| a * b).sum();
            let rhs: f64 = x.iter().zip(col2im(&g, &y)).map(|(a, b)| a * b).sum();
            assert!((lhs - rhs).abs() < 1e-9 * lhs.abs().max(1.0), "adjoint: {lhs} vs {rhs}");
        }
    }

    #[test]
    fn valid_ranges_cover_exactly_the_in_image_positions() {
        for (s, p, d) in [(1, 0, 1), (2, 1, 1), (2, 3, 2), (3, 0, 1), (1, 5, 1)] {
            let g = geometry(s, p, d);
            for k in 0..3 {
                let r = g.valid(k, 5, g.out_h);
                for o in 0..g.out_h {
                    let pos = (o * s + k * d) as isize - p as isize;
                    assert_eq!(r.contains(&o), (0..5).contains(&pos), "s {s} p {p} d {d} k {k} o {o}");
                }
            }
        }
    }
}
