//! The Fréchet distance between two Gaussians, the core of FID (Heusel et al. 2017).

use super::linalg::trace_sqrt_product;
use super::FeatureStats;
use crate::{Error, Result};

/// Squared Fréchet (2-Wasserstein) distance between `N(mu1, s1)` and `N(mu2, s2)`:
///
/// `d² = |mu1 - mu2|² + Tr(s1) + Tr(s2) - 2 Tr sqrt(sqrt(s1) s2 sqrt(s1))`
///
/// (Dowson & Landau 1982). The last trace equals `Tr sqrt(s1 s2)`; it is computed from two
/// symmetric eigen-decompositions ([`super::linalg`]), so it stays real and accurate for
/// singular (rank-deficient) covariances, where `scipy.linalg.sqrtm(s1 @ s2)` needs an
/// epsilon. Covariances are `D x D` row-major, symmetric positive semi-definite. The result is
/// clamped at 0 (rounding can make equal distributions give -1e-13).
///
/// Errors: `Error::Shape` for inconsistent lengths, `Error::NonFinite` for NaN/inf inputs.
pub fn frechet_distance(mu1: &[f64], s1: &[f64], mu2: &[f64], s2: &[f64]) -> Result<f64> {
    let d = mu1.len();
    if d == 0 || mu2.len() != d || s1.len() != d * d || s2.len() != d * d {
        return Err(Error::shape(
            "frechet_distance",
            format!(
                "means of {} and {} values and covariances of {} and {} entries do not form two D-dim Gaussians",
                mu1.len(),
                mu2.len(),
                s1.len(),
                s2.len()
            ),
        ));
    }
    let mean_term: f64 = mu1.iter().zip(mu2).map(|(a, b)| (a - b) * (a - b)).sum();
    let trace = |s: &[f64]| (0..d).map(|i| s[i * d + i]).sum::<f64>();
    let cross = trace_sqrt_product(s1, s2, d)?;
    let value = mean_term + trace(s1) + trace(s2) - 2.0 * cross;
    crate::error::check_finite("frechet_distance", None, value).map(|v| v.max(0.0))
}

/// FID: [`frechet_distance`] between the Gaussians fitted to two feature sets (mean and the
/// unbiased covariance of each). With the [`super::FmnistClassifier`] features this is
/// "FID-FMNIST", which is not comparable with Inception-v3 FID.
pub fn fid(a: &FeatureStats, b: &FeatureStats) -> Result<f64> {
    if a.dim() != b.dim() {
        return Err(Error::shape("fid", format!("feature dimensions {} and {} differ", a.dim(), b.dim())));
    }
    frechet_distance(a.mean(), &a.covariance()?, b.mean(), &b.covariance()?)
}
