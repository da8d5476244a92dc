//! Dense symmetric linear algebra in f64 for the Fréchet distance: the cyclic Jacobi
//! eigen-solver and the square root of a positive semi-definite matrix.
//!
//! Matrices are `n x n`, row-major `Vec<f64>`. Jacobi (Jacobi 1846; Golub & Van Loan,
//! "Matrix Computations", §8.5) is chosen for its accuracy on symmetric matrices: eigenvalues
//! come out with small relative error and the eigenvectors orthonormal to rounding, which is what
//! the trace of a matrix square root needs; each sweep costs O(n³) and a handful of sweeps
//! suffice (under a second for n = 128, minutes for Inception's n = 2048).

use crate::{Error, Result};

/// Sweeps after which [`symmetric_eigen`] gives up (it converges quadratically, usually in < 15).
const MAX_SWEEPS: usize = 100;

/// `a @ b` for `n x n` row-major matrices.
pub(crate) fn matmul(a: &[f64], b: &[f64], n: usize) -> Vec<f64> {
    let mut out = vec![0.0; n * n];
    for i in 0..n {
        for k in 0..n {
            let aik = a[i * n + k];
            if aik == 0.0 {
                continue;
            }
            let (row_b, row_o) = (&b[k * n..(k + 1) * n], &mut out[i * n..(i + 1) * n]);
            for (o, &bkj) in row_o.iter_mut().zip(row_b) {
                *o += aik * bkj;
            }
        }
    }
    out
}

/// Eigen-decomposition `a = V diag(w) Vᵀ` of the symmetric `n x n` matrix `a` (only read as
/// `(a + aᵀ) / 2`): returns `(w, V)` with the eigenvectors as the columns of the row-major `V`.
///
/// Errors: `Error::Shape` when `a` is not `n * n` long, `Error::NonFinite` for NaN/inf entries or
/// no convergence.
pub fn symmetric_eigen(a: &[f64], n: usize) -> Result<(Vec<f64>, Vec<f64>)> {
    if a.len() != n * n {
        return Err(Error::shape("symmetric_eigen", format!("{} entries are not a {n} x {n} matrix", a.len())));
    }
    if let Some(v) = a.iter().find(|v| !v.is_finite()) {
        return Err(Error::non_finite("matrix entry in symmetric_eigen", None, *v));
    }
    let mut m = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..n {
            m[i * n + j] = 0.5 * (a[i * n + j] + a[j * n + i]);
        }
    }
    let mut v = vec![0.0; n * n];
    for i in 0..n {
        v[i * n + i] = 1.0;
    }
    let frob: f64 = m.iter().map(|x| x * x).sum::<f64>().sqrt();
    let mut previous_off = f64::INFINITY;
    for _ in 0..MAX_SWEEPS {
        let off = off_diagonal_norm(&m, n);
        // Converged: the off-diagonal part is negligible, or rounding stopped it from shrinking
        // (a sweep always shrinks it in exact arithmetic, quadratically near the end).
        if off <= 1e-15 * frob || off >= previous_off {
            let w = (0..n).map(|i| m[i * n + i]).collect();
            return Ok((w, v));
        }
        previous_off = off;
        for p in 0..n {
            for q in p + 1..n {
                let apq = m[p * n + q];
                if apq == 0.0 {
                    continue;
                }
                let (app, aqq) = (m[p * n + p], m[q * n + q]);
                // The rotation angle that zeroes (p, q): t = tan(theta), the smaller root of
                // t² + 2 tau t - 1 = 0 for stability (Golub & Van Loan, Algorithm 8.5.1).
                let tau = (aqq - app) / (2.0 * apq);
                let t = if tau >= 0.0 {
                    1.0 / (tau + (1.0 + tau * tau).sqrt())
                } else {
                    -1.0 / (-tau + (1.0 + tau * tau).sqrt())
                };
                let c = 1.0 / (1.0 + t * t).sqrt();
                let s = t * c;
                // m <- Jᵀ m J, applied to columns then rows p and q.
                for k in 0..n {
                    let (mkp, mkq) = (m[k * n + p], m[k * n + q]);
                    m[k * n + p] = c * mkp - s * mkq;
                    m[k * n + q] = s * mkp + c * mkq;
                }
                for k in 0..n {
                    let (mpk, mqk) = (m[p * n + k], m[q * n + k]);
                    m[p * n + k] = c * mpk - s * mqk;
                    m[q * n + k] = s * mpk + c * mqk;
                }
                m[p * n + q] = 0.0;
                m[q * n + p] = 0.0;
                for k in 0..n {
                    let (vkp, vkq) = (v[k * n + p], v[k * n + q]);
                    v[k * n + p] = c * vkp - s * vkq;
                    v[k * n + q] = s * vkp + c * vkq;
                }
            }
        }
    }
    Err(Error::non_finite("symmetric_eigen: Jacobi did not converge (off-diagonal norm)", None, f64::NAN))
}

fn off_diagonal_norm(m: &[f64], n: usize) -> f64 {
    let mut sum = 0.0;
    for i in 0..n {
        for j in 0..n {
            if i != j {
                sum += m[i * n + j] * m[i * n + j];
            }
        }
    }
    sum.sqrt()
}

/// The principal square root of a symmetric positive semi-definite `n x n` matrix,
/// `V diag(sqrt(max(w, 0))) Vᵀ`: eigenvalues below zero, which only rounding makes, count as 0.
pub fn sqrt_psd(a: &[f64], n: usize) -> Result<Vec<f64>> {
    let (w, v) = symmetric_eigen(a, n)?;
    let mut out = vec![0.0; n * n];
    for (k, &wk) in w.iter().enumerate() {
        let s = wk.max(0.0).sqrt();
        if s == 0.0 {
            continue;
        }
        for i in 0..n {
            let vik = v[i * n + k] * s;
            for j in 0..n {
                out[i * n + j] += vik * v[j * n + k];
            }
        }
    }
    Ok(out)
}

/// `Tr sqrt(sqrt(a) b sqrt(a))` for symmetric PSD `a`, `b`: the sum of the square roots of the
/// (clamped to >= 0) eigenvalues of the symmetric PSD matrix `sqrt(a) b sqrt(a)`, which equals
/// `Tr sqrt(a b)` without forming the non-symmetric product.
pub fn trace_sqrt_product(a: &[f64], b: &[f64], n: usize) -> Result<f64> {
    let ra = sqrt_psd(a, n)?;
    let m = matmul(&matmul(&ra, b, n), &ra, n);
    let (w, _) = symmetric_eigen(&m, n)?;
    Ok(w.iter().map(|x| x.max(0.0).sqrt()).sum())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    fn random_spd(n: usize, rank: usize, rng: &mut Rng) -> Vec<f64> {
        let g: Vec<f64> = (0..n * rank).map(|_| rng.normal_f64()).collect();
        let mut a = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..n {
                a[i * n + j] = (0..rank).map(|k| g[i * rank + k] * g[j * rank + k]).sum();
            }
        }
        a
    }

    #[test]
    fn eigen_reconstructs_and_is_orthonormal() {
        let mut rng = Rng::new(3);
        let n = 12;
        let a = random_spd(n, n, &mut rng);
        let (w, v) = symmetric_eigen(&a, n).unwrap();
        for i in 0..n {
            for j in 0..n {
                let rec: f64 = (0..n).map(|k| v[i * n + k] * w[k] * v[j * n + k]).sum();
                assert!((rec - a[i * n + j]).abs() < 1e-10, "({i},{j}) {rec} vs {}", a[i * n + j]);
                let dot: f64 = (0..n).map(|k| v[k * n + i] * v[k * n + j]).sum();
                assert!((dot - if i == j { 1.0 } else { 0.0 }).abs() < 1e-12);
            }
        }
    }

    #[test]
    fn sqrt_squares_back_also_rank_deficient() {
        let mut rng = Rng::new(4);
        let n = 10;
        let a = random_spd(n, 4, &mut rng);
        let r = sqrt_psd(&a, n).unwrap();
        let rr = matmul(&r, &r, n);
        for (x, y) in rr.iter().zip(&a) {
            assert!((x - y).abs() < 1e-9, "{x} vs {y}");
        }
    }

    #[test]
    fn bad_input_is_refused() {
        assert!(symmetric_eigen(&[1.0, 2.0, 3.0], 2).is_err());
        assert!(symmetric_eigen(&[1.0, f64::NAN, 0.0, 1.0], 2).is_err());
    }
}
