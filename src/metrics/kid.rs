//! Kernel Inception Distance (Bińkowski et al. 2018): the unbiased MMD² with a cubic polynomial
//! kernel, averaged over random subsets.

use candle_core::{DType, Device, Tensor};

use crate::rng::Rng;
use crate::{Error, Result};

/// How [`kid`] draws its subsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KidOptions {
    /// Number of subset pairs averaged (> 0).
    pub num_subsets: usize,
    /// Vectors per subset, drawn without replacement from each set; capped at the smaller set.
    pub subset_size: usize,
}

impl Default for KidOptions {
    /// 100 subsets of 1 000 vectors (the values of Bińkowski et al. and torch-fidelity).
    fn default() -> Self {
        Self { num_subsets: 100, subset_size: 1000 }
    }
}

/// KID: mean and standard deviation of the unbiased MMD² over the subsets.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Kid {
    /// Mean of the per-subset estimates (unbiased; can be slightly negative when the sets match).
    pub mean: f64,
    /// Their standard deviation (0 for a single subset).
    pub std: f64,
}

fn check_pair(x: &Tensor, y: &Tensor, what: &str) -> Result<(usize, usize, usize)> {
    match (x.dims(), y.dims()) {
        ([m, d1], [n, d2]) if d1 == d2 && *d1 > 0 && *m >= 2 && *n >= 2 => Ok((*m, *n, *d1)),
        (a, b) => {
            Err(Error::shape(what, format!("expected (M >= 2, D) and (N >= 2, D) features, got {a:?} and {b:?}")))
        }
    }
}

/// `k(a, b) = (a·b / d + 1)³` for every row pair of `a` `(M, D)` and `b` `(N, D)`, as `(M, N)`.
fn polynomial_kernel(a: &Tensor, b: &Tensor, d: usize) -> Result<Tensor> {
    Ok(a.matmul(&b.t()?)?.affine(1.0 / d as f64, 1.0)?.powf(3.0)?)
}

fn mmd2(x: &Tensor, y: &Tensor, unbiased: bool) -> Result<f64> {
    let (m, n, d) = check_pair(x, y, "mmd2")?;
    let x = x.to_device(&Device::Cpu)?.to_dtype(DType::F64)?;
    let y = y.to_device(&Device::Cpu)?.to_dtype(DType::F64)?;
    let kxx = polynomial_kernel(&x, &x, d)?;
    let kyy = polynomial_kernel(&y, &y, d)?;
    let kxy = polynomial_kernel(&x, &y, d)?;
    let sum = |t: &Tensor| -> Result<f64> { Ok(t.sum_all()?.to_scalar::<f64>()?) };
    let trace = |t: &Tensor| -> Result<f64> {
        let v = t.flatten_all()?.to_vec1::<f64>()?;
        let n = t.dim(0)?;
        Ok((0..n).map(|i| v[i * n + i]).sum())
    };
    let (m, n) = (m as f64, n as f64);
    let value = if unbiased {
        (sum(&kxx)? - trace(&kxx)?) / (m * (m - 1.0)) + (sum(&kyy)? - trace(&kyy)?) / (n * (n - 1.0))
            - 2.0 * sum(&kxy)? / (m * n)
    } else {
        sum(&kxx)? / (m * m) + sum(&kyy)? / (n * n) - 2.0 * sum(&kxy)? / (m * n)
    };
    crate::error::check_finite("mmd2", None, value)
}

/// The unbiased estimator of MMD² (Gretton et al. 2012, eq. 3) between the rows of `x` `(M, D)`
/// and `y` `(N, D)` with the kernel `k(a, b) = (a·b / D + 1)³`: the within-set sums leave out
/// the diagonal `k(x_i, x_i)`, so its expectation is the population MMD², 0 for equal
/// distributions. Computed in f64 on the CPU. `Error::Shape` for mismatched or too small inputs.
pub fn mmd2_unbiased(x: &Tensor, y: &Tensor) -> Result<f64> {
    mmd2(x, y, true)
}

/// The biased (V-statistic) MMD² with the same kernel: it keeps the diagonal terms, so it is
/// never negative and overestimates MMD² by O(1/M + 1/N). Provided for comparison; KID
/// uses [`mmd2_unbiased`].
pub fn mmd2_biased(x: &Tensor, y: &Tensor) -> Result<f64> {
    mmd2(x, y, false)
}

/// KID between real features `x` `(M, D)` and generated features `y` `(N, D)`: the mean and
/// standard deviation of [`mmd2_unbiased`] over `opts.num_subsets` pairs of random subsets of
/// `min(subset_size, M, N)` rows, drawn without replacement with `rng`.
pub fn kid(x: &Tensor, y: &Tensor, opts: &KidOptions, rng: &mut Rng) -> Result<Kid> {
    let (m, n, _) = check_pair(x, y, "kid")?;
    if opts.num_subsets == 0 || opts.subset_size < 2 {
        return Err(Error::config("KidOptions", format!("need num_subsets > 0 and subset_size >= 2, got {opts:?}")));
    }
    let size = opts.subset_size.min(m).min(n);
    let x = x.to_device(&Device::Cpu)?.to_dtype(DType::F64)?;
    let y = y.to_device(&Device::Cpu)?.to_dtype(DType::F64)?;
    let mut values = Vec::with_capacity(opts.num_subsets);
    for _ in 0..opts.num_subsets {
        let pick = |len: usize, rng: &mut Rng| -> Result<Tensor> {
            let idx: Vec<u32> = rng.permutation(len).into_iter().take(size).map(|i| i as u32).collect();
            Ok(Tensor::from_vec(idx, size, &Device::Cpu)?)
        };
        let xi = x.index_select(&pick(m, rng)?, 0)?;
        let yi = y.index_select(&pick(n, rng)?, 0)?;
        values.push(mmd2_unbiased(&xi, &yi)?);
    }
    let mean = values.iter().sum::<f64>() / values.len() as f64;
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / values.len() as f64;
    Ok(Kid { mean, std: var.sqrt() })
}
