//! Improved precision and recall of generative models (Kynkäänniemi et al. 2019).

use candle_core::{DType, Device, Tensor};

use crate::{Error, Result};

/// Rows of the distance matrix computed at once (bounds memory at `ROWS x N` f64).
const ROWS: usize = 1024;

/// Precision and recall of generated features against real ones, each in `[0, 1]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PrecisionRecall {
    /// Fraction of generated samples inside the real manifold: fidelity.
    pub precision: f64,
    /// Fraction of real samples inside the generated manifold: coverage.
    pub recall: f64,
}

/// Euclidean distances between the rows of `a` `(M, D)` and `b` `(N, D)` for rows
/// `start..start+len` of `a`, as row-major `len x N`, from `|a|² + |b|² - 2 a·b` in f64
/// (clamped at 0 against rounding).
fn distances(a: &Tensor, b: &Tensor, b_sq: &Tensor, start: usize, len: usize) -> Result<Vec<f64>> {
    let a = a.narrow(0, start, len)?;
    let a_sq = a.sqr()?.sum_keepdim(1)?;
    let d2 = a_sq.broadcast_add(&b_sq.t()?)?.sub(&(a.matmul(&b.t()?)? * 2.0)?)?;
    Ok(d2.flatten_all()?.to_vec1::<f64>()?.into_iter().map(|v| v.max(0.0).sqrt()).collect())
}

/// The radius of each row's k-NN ball in its own set: the distance to its k-th nearest other row.
fn knn_radii(x: &Tensor, k: usize) -> Result<Vec<f64>> {
    let n = x.dim(0)?;
    let sq = x.sqr()?.sum_keepdim(1)?;
    let mut radii = Vec::with_capacity(n);
    for start in (0..n).step_by(ROWS) {
        let len = ROWS.min(n - start);
        let d = distances(x, x, &sq, start, len)?;
        for (r, row) in d.chunks(n).enumerate() {
            let mut row: Vec<f64> = row.iter().enumerate().filter(|(j, _)| *j != start + r).map(|(_, v)| *v).collect();
            let (_, kth, _) = row.select_nth_unstable_by(k - 1, f64::total_cmp);
            radii.push(*kth);
        }
    }
    Ok(radii)
}

/// Fraction of rows of `query` within the k-NN ball of at least one row of `support`.
fn coverage(query: &Tensor, support: &Tensor, radii: &[f64]) -> Result<f64> {
    let n = query.dim(0)?;
    let sq = support.sqr()?.sum_keepdim(1)?;
    let mut inside = 0usize;
    for start in (0..n).step_by(ROWS) {
        let len = ROWS.min(n - start);
        let d = distances(query, support, &sq, start, len)?;
        inside += d.chunks(radii.len()).filter(|row| row.iter().zip(radii).any(|(d, r)| d <= r)).count();
    }
    Ok(inside as f64 / n as f64)
}

/// Improved precision and recall (Kynkäänniemi et al. 2019) of generated features `fake`
/// `(N, D)` against `real` `(M, D)`: each set's manifold is the union of balls around its
/// points with radius the distance to the point's `k`-th nearest neighbour in the same set
/// (the paper uses k = 3). Precision is the fraction of fake points inside the real manifold,
/// recall the fraction of real points inside the fake one. Exact O(M N D) distances in f64,
/// computed in blocks of rows.
///
/// Errors: `Error::Shape` for mismatched features or fewer than `k + 1` rows in a set;
/// `Error::Config` for `k = 0`.
pub fn precision_recall(real: &Tensor, fake: &Tensor, k: usize) -> Result<PrecisionRecall> {
    if k == 0 {
        return Err(Error::config("k", "the nearest-neighbour count must be >= 1"));
    }
    match (real.dims(), fake.dims()) {
        ([m, d1], [n, d2]) if d1 == d2 && *d1 > 0 && *m > k && *n > k => {}
        (a, b) => {
            return Err(Error::shape(
                "precision_recall",
                format!("expected real (M > k, D) and fake (N > k, D) features with k = {k}, got {a:?} and {b:?}"),
            ))
        }
    }
    let real = real.to_device(&Device::Cpu)?.to_dtype(DType::F64)?;
    let fake = fake.to_device(&Device::Cpu)?.to_dtype(DType::F64)?;
    let real_radii = knn_radii(&real, k)?;
    let fake_radii = knn_radii(&fake, k)?;
    Ok(PrecisionRecall {
        precision: coverage(&fake, &real, &real_radii)?,
        recall: coverage(&real, &fake, &fake_radii)?,
    })
}
