//! The fused CPU kernel behind [`super::group_norm`], [`super::batch_norm`] and
//! [`super::instance_norm`]: normalisation of `(N, C, P)` data (`P` the product of the spatial
//! axes) over sets of planes `x[n, c, :]`, then a per-channel scale and shift.
//!
//! - group norm: a set is the `C / G` planes of one sample's group (instance norm: `G = C`);
//! - batch norm (training): a set is one channel's planes across the batch.
//!
//! Forward: one parallel pass of per-plane sums (f64), the set statistics, one parallel pass
//! writing `y = a x + b` per plane. Backward: one pass of per-plane sums of `x`, `x²`, `dy` and
//! `dy x`, then one pass writing `dx = α dy + β x + γ` per plane. The backward is a second custom
//! op without a backward of its own; while a thread keeps the graph for second-order gradients
//! ([`super::double_backward`]) the same gradients are written with tensor ops instead.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, CustomOp3, Layout, Shape, Tensor, WithDType};
use rayon::prelude::*;

use super::cpu_slice::contiguous;
use super::double_backward::thread_keeps_graph;

/// Which planes are normalised together.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Sets {
    /// Each sample's channels in `groups` consecutive groups (group and instance norm).
    Groups(usize),
    /// Each channel across the batch (batch norm).
    Channels,
}

/// The geometry of one normalisation of `(batch, channels, plane)` data.
#[derive(Clone, Copy, Debug)]
pub(super) struct Norm {
    pub batch: usize,
    pub channels: usize,
    pub plane: usize,
    pub sets: Sets,
    pub eps: f64,
}

impl Norm {
    fn num_sets(&self) -> usize {
        match self.sets {
            Sets::Groups(g) => self.batch * g,
            Sets::Channels => self.channels,
        }
    }

    /// The set of plane `p = n * C + c`.
    fn set_of(&self, p: usize) -> usize {
        let (n, c) = (p / self.channels, p % self.channels);
        match self.sets {
            Sets::Groups(g) => n * g + c / (self.channels / g),
            Sets::Channels => c,
        }
    }

    /// Elements per set.
    fn set_len(&self) -> f64 {
        let planes = match self.sets {
            Sets::Groups(g) => self.channels / g,
            Sets::Channels => self.batch,
        };
        (planes * self.plane) as f64
    }

    /// Per-set `(mean, biased variance)` from per-plane `(Σx, Σx²)`.
    fn moments(&self, sums: impl Iterator<Item = (f64, f64)>) -> Vec<(f64, f64)> {
        let mut acc = vec![(0.0, 0.0); self.num_sets()];
        for (p, (s, sq)) in sums.enumerate() {
            let a = &mut acc[self.set_of(p)];
            a.0 += s;
            a.1 += sq;
        }
        let n = self.set_len();
        acc.into_iter().map(|(s, sq)| (s / n, (sq / n - (s / n).powi(2)).max(0.0))).collect()
    }

    fn rstd(&self, var: f64) -> f64 {
        1.0 / (var + self.eps).sqrt()
    }
}

/// `(Σx, Σx²)` of every plane, in f64.
fn plane_sums<T: WithDType>(x: &[T], plane: usize) -> Vec<(f64, f64)> {
    x.par_chunks(plane)
        .map(|p| p.iter().fold((0.0, 0.0), |(s, sq), v| (s + v.to_f64(), sq + v.to_f64() * v.to_f64())))
        .collect()
}

/// Writes `out = a x + b` plane by plane.
fn affine_planes<T: WithDType>(x: &[T], plane: usize, coeffs: &[(f64, f64)]) -> Vec<T> {
    let mut out = vec![T::zero(); x.len()];
    out.par_chunks_mut(plane).zip(x.par_chunks(plane)).zip(coeffs.par_iter()).for_each(|((y, x), &(a, b))| {
        y.iter_mut().zip(x).for_each(|(y, x)| *y = T::from_f64(a * x.to_f64() + b));
    });
    out
}

fn forward<T: WithDType>(g: &Norm, x: &[T], w: &[T], b: &[T]) -> Vec<T> {
    let sums = plane_sums(x, g.plane);
    let moments = g.moments(sums.into_iter());
    let coeffs: Vec<(f64, f64)> = (0..g.batch * g.channels)
        .map(|p| {
            let c = p % g.channels;
            let (mean, var) = moments[g.set_of(p)];
            let scale = w[c].to_f64() * g.rstd(var);
            (scale, b[c].to_f64() - mean * scale)
        })
        .collect();
    affine_planes(x, g.plane, &coeffs)
}

/// Gradients of the input, weight and bias, packed as `[dx (x.len()), dweight (C), dbias (C)]`.
fn backward<T: WithDType>(g: &Norm, x: &[T], w: &[T], dy: &[T]) -> Vec<T> {
    // Per plane: Σx, Σx², Σdy, Σdy·x.
    let sums: Vec<[f64; 4]> = x
        .par_chunks(g.plane)
        .zip(dy.par_chunks(g.plane))
        .map(|(x, dy)| {
            x.iter().zip(dy).fold([0.0; 4], |[s, sq, sd, sdx], (x, dy)| {
                let (x, dy) = (x.to_f64(), dy.to_f64());
                [s + x, sq + x * x, sd + dy, sdx + dy * x]
            })
        })
        .collect();
    let moments = g.moments(sums.iter().map(|s| (s[0], s[1])));
    let (c, n) = (g.channels, g.set_len());
    let (mut dweight, mut dbias) = (vec![0.0; c], vec![0.0; c]);
    // Per set: mean over the set of dy·w and of dy·w·x̂.
    let mut a = vec![0.0; g.num_sets()];
    let mut bb = vec![0.0; g.num_sets()];
    for (p, s) in sums.iter().enumerate() {
        let (set, ch) = (g.set_of(p), p % c);
        let (mean, var) = moments[set];
        let dy_xhat = (s[3] - mean * s[2]) * g.rstd(var);
        dbias[ch] += s[2];
        dweight[ch] += dy_xhat;
        a[set] += w[ch].to_f64() * s[2] / n;
        bb[set] += w[ch].to_f64() * dy_xhat / n;
    }
    // dx = rstd (dy w - a - x̂ bb) = α dy + β x + γ with x̂ = (x - mean) rstd.
    let coeffs: Vec<(f64, f64, f64)> = (0..g.batch * c)
        .map(|p| {
            let set = g.set_of(p);
            let (mean, var) = moments[set];
            let r = g.rstd(var);
            (r * w[p % c].to_f64(), -r * r * bb[set], r * (mean * r * bb[set] - a[set]))
        })
        .collect();
    let mut packed = vec![T::zero(); x.len() + 2 * c];
    let (dx, rest) = packed.split_at_mut(x.len());
    dx.par_chunks_mut(g.plane).zip(x.par_chunks(g.plane).zip(dy.par_chunks(g.plane))).zip(coeffs.par_iter()).for_each(
        |((dx, (x, dy)), &(alpha, beta, gamma))| {
            for (dx, (x, dy)) in dx.iter_mut().zip(x.iter().zip(dy)) {
                *dx = T::from_f64(alpha * dy.to_f64() + beta * x.to_f64() + gamma);
            }
        },
    );
    let (dw, db) = rest.split_at_mut(c);
    dw.iter_mut().zip(&dweight).for_each(|(o, v)| *o = T::from_f64(*v));
    db.iter_mut().zip(&dbias).for_each(|(o, v)| *o = T::from_f64(*v));
    packed
}

fn unsupported(name: &str, dtypes: &[candle_core::DType]) -> candle_core::Error {
    candle_core::Error::Msg(format!("{name}: unsupported dtypes {dtypes:?} (f32 and f64 only)"))
}

/// Runs `f` on three same-dtype f32 or f64 storages.
macro_rules! dispatch3 {
    ($name:expr, ($a:expr, $al:expr), ($b:expr, $bl:expr), ($c:expr, $cl:expr), |$x:ident, $y:ident, $z:ident| $f:expr) => {
        match ($a, $b, $c) {
            (CpuStorage::F32(a), CpuStorage::F32(b), CpuStorage::F32(c)) => {
                let ($x, $y, $z) = (
                    contiguous(a, $al, "normalisation: x")?,
                    contiguous(b, $bl, "normalisation: weight")?,
                    contiguous(c, $cl, "normalisation: third input")?,
                );
                CpuStorage::F32($f)
            }
            (CpuStorage::F64(a), CpuStorage::F64(b), CpuStorage::F64(c)) => {
                let ($x, $y, $z) = (
                    contiguous(a, $al, "normalisation: x")?,
                    contiguous(b, $bl, "normalisation: weight")?,
                    contiguous(c, $cl, "normalisation: third input")?,
                );
                CpuStorage::F64($f)
            }
            (a, b, c) => return Err(unsupported($name, &[a.dtype(), b.dtype(), c.dtype()])),
        }
    };
}

/// The forward op over `(x, weight, bias)`, all contiguous.
pub(super) struct NormOp(pub Norm);

/// The backward op over `(x, weight, dy)`: the packed gradients (no backward of its own).
struct NormGrad(Norm);

/// Per-channel `(mean, biased variance)` of `(N, C, P)` data, as a `(2, C)` tensor (no backward).
pub(super) struct ChannelMoments(pub Norm);

impl CustomOp3 for NormOp {
    fn name(&self) -> &'static str {
        "candle-generative-norm"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        xl: &Layout,
        w: &CpuStorage,
        wl: &Layout,
        b: &CpuStorage,
        bl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = self.0;
        let out = dispatch3!("normalisation", (x, xl), (w, wl), (b, bl), |x, w, b| forward(&g, x, w, b));
        Ok((out, xl.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        dy: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let g = self.0;
        let (dx, dw, db) = if thread_keeps_graph().map_err(candle_core::Error::wrap)? {
            differentiable_backward(&g, x, w, dy)?
        } else {
            let packed = x.apply_op3_no_bwd(w, &dy.contiguous()?, &NormGrad(g))?;
            let (numel, c) = (x.elem_count(), g.channels);
            let dx = packed.narrow(0, 0, numel)?.reshape(x.shape())?;
            (dx, packed.narrow(0, numel, c)?, packed.narrow(0, numel + c, c)?)
        };
        Ok((Some(dx), Some(dw), Some(db)))
    }
}

impl CustomOp3 for NormGrad {
    fn name(&self) -> &'static str {
        "candle-generative-norm-grad"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        xl: &Layout,
        w: &CpuStorage,
        wl: &Layout,
        dy: &CpuStorage,
        dyl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = self.0;
        let out = dispatch3!("normalisation backward", (x, xl), (w, wl), (dy, dyl), |x, w, dy| backward(&g, x, w, dy));
        Ok((out, Shape::from(xl.shape().elem_count() + 2 * g.channels)))
    }
}

impl CustomOp1 for ChannelMoments {
    fn name(&self) -> &'static str {
        "candle-generative-channel-moments"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = Norm { sets: Sets::Channels, ..self.0 };
        fn run<T: WithDType>(g: &Norm, x: &[T]) -> Vec<T> {
            let m = g.moments(plane_sums(x, g.plane).into_iter());
            m.iter().map(|v| T::from_f64(v.0)).chain(m.iter().map(|v| T::from_f64(v.1))).collect()
        }
        let out = match s {
            CpuStorage::F32(x) => CpuStorage::F32(run(&g, contiguous(x, l, "channel moments: x")?)),
            CpuStorage::F64(x) => CpuStorage::F64(run(&g, contiguous(x, l, "channel moments: x")?)),
            other => return Err(unsupported("channel moments", &[other.dtype()])),
        };
        Ok((out, Shape::from((2, g.channels))))
    }
}

/// The gradients of [`backward`] written with tensor ops, so that they have gradients too.
fn differentiable_backward(
    g: &Norm,
    x: &Tensor,
    w: &Tensor,
    dy: &Tensor,
) -> candle_core::Result<(Tensor, Tensor, Tensor)> {
    let (n, c, p) = (g.batch, g.channels, g.plane);
    // Arrange each set along the last axis: (sets..., elements).
    let to_sets = |t: &Tensor| -> candle_core::Result<Tensor> {
        match g.sets {
            Sets::Groups(groups) => t.reshape((n, groups, (c / groups) * p)),
            Sets::Channels => t.reshape((n, c, p))?.transpose(0, 1)?.reshape((c, n * p)),
        }
    };
    let from_sets = |t: &Tensor| -> candle_core::Result<Tensor> {
        match g.sets {
            Sets::Groups(_) => t.reshape((n, c, p)),
            Sets::Channels => t.reshape((c, n, p))?.transpose(0, 1),
        }
    };
    let xs = to_sets(x)?;
    let mean = xs.mean_keepdim(candle_core::D::Minus1)?;
    let centred = xs.broadcast_sub(&mean)?;
    let rstd = (centred.sqr()?.mean_keepdim(candle_core::D::Minus1)? + g.eps)?.sqrt()?.recip()?;
    let xhat = from_sets(&centred.broadcast_mul(&rstd)?)?;
    let dy = dy.reshape((n, c, p))?;
    let db = dy.sum(2)?.sum(0)?;
    let dw = (&dy * &xhat)?.sum(2)?.sum(0)?;
    let gy = to_sets(&dy.broadcast_mul(&w.reshape((1, c, 1))?)?)?;
    let xhat = to_sets(&xhat)?;
    let a = gy.mean_keepdim(candle_core::D::Minus1)?;
    let b = (&gy * &xhat)?.mean_keepdim(candle_core::D::Minus1)?;
    let dx = (gy.broadcast_sub(&a)? - xhat.broadcast_mul(&b)?)?.broadcast_mul(&rstd)?;
    Ok((from_sets(&dx)?.reshape(x.shape())?, dw, db))
}
