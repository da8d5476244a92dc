//! The Inception Score (Salimans et al. 2016) from any classifier's logits.

use candle_core::{DType, Device, Tensor};

use crate::{Error, Result};

/// Inception-Score-style score of class logits `(N, K)`:
/// `IS = exp(E_x KL(p(y|x) || p(y)))`, with `p(y|x) = softmax(logits)` and `p(y)` the mean of
/// `p(y|x)` over the images of a split.
///
/// The images are cut into `splits` consecutive equal parts (the last takes the remainder); the
/// result is the mean and (population) standard deviation of the per-split scores, as in the
/// original code (10 splits). The score lies in `[1, K]`: 1 when every image gets the same
/// distribution, `K` when each is classified with certainty and the classes are used equally.
/// Computed in f64. With [`super::FmnistClassifier`] logits it is not comparable with the
/// Inception-v3 score of the literature.
///
/// Errors: `Error::Shape` unless logits are `(N, K)` with `K >= 2` and `N >= splits >= 1`;
/// `Error::NonFinite` for NaN/inf logits.
pub fn inception_score(logits: &Tensor, splits: usize) -> Result<(f64, f64)> {
    let (n, k) = match logits.dims() {
        [n, k] if *k >= 2 && splits >= 1 && *n >= splits => (*n, *k),
        d => {
            return Err(Error::shape(
                "inception_score",
                format!("expected logits (N >= splits, K >= 2) with splits >= 1, got {d:?} and {splits} splits"),
            ))
        }
    };
    let v = logits.to_device(&Device::Cpu)?.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
    if let Some(x) = v.iter().find(|x| !x.is_finite()) {
        return Err(Error::non_finite("logits in inception_score", None, *x));
    }
    // Log-probabilities with the max subtracted, so large logits do not overflow.
    let log_p: Vec<Vec<f64>> = v
        .chunks(k)
        .map(|row| {
            let max = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let lse = max + row.iter().map(|x| (x - max).exp()).sum::<f64>().ln();
            row.iter().map(|x| x - lse).collect()
        })
        .collect();
    let per = n / splits;
    let mut scores = Vec::with_capacity(splits);
    for s in 0..splits {
        let rows = &log_p[s * per..if s + 1 == splits { n } else { (s + 1) * per }];
        let mut marginal = vec![0.0; k];
        for r in rows {
            for (m, lp) in marginal.iter_mut().zip(r) {
                *m += lp.exp() / rows.len() as f64;
            }
        }
        let kl: f64 = rows
            .iter()
            .map(|r| {
                r.iter()
                    .zip(&marginal)
                    .map(|(lp, m)| if *lp == f64::NEG_INFINITY { 0.0 } else { lp.exp() * (lp - m.ln()) })
                    .sum::<f64>()
            })
            .sum::<f64>()
            / rows.len() as f64;
        scores.push(kl.exp());
    }
    let mean = scores.iter().sum::<f64>() / splits as f64;
    let std = (scores.iter().map(|s| (s - mean).powi(2)).sum::<f64>() / splits as f64).sqrt();
    Ok((mean, std))
}
