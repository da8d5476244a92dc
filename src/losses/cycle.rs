//! CycleGAN's reconstruction losses: L1, cycle consistency and identity (Zhu et al. 2017).
//!
//! Notation: `G: A -> B` and `F: B -> A` are the two generators, `a` a batch of real images of
//! domain A and `b` one of domain B. Images are usually `(B, C, H, W)` in `[-1, 1]`, but any
//! shape works as long as each real/produced pair matches; the two domains may differ in shape.

use candle_core::Tensor;

use super::{same_shape, Reduction};
use crate::{Error, Result};

/// CycleGAN's default cycle-consistency weight, `lambda = 10` (Zhu et al. 2017, section 4).
pub const DEFAULT_LAMBDA_CYCLE: f64 = 10.0;

/// CycleGAN's default identity weight as [`identity_loss`] takes it: the reference code's
/// `lambda_identity = 0.5` times its cycle weight `10`, i.e. `5`.
pub const DEFAULT_LAMBDA_IDENTITY: f64 = 0.5 * DEFAULT_LAMBDA_CYCLE;

/// L1 loss `|a - b|` elementwise, then reduced with `reduction` (`Reduction::Mean` is PyTorch's
/// `L1Loss`, the mean absolute error).
///
/// `a` and `b`: same shape and dtype, any floating-point dtype; otherwise `Error::Shape`. The
/// gradient with respect to `a` is `sign(a - b)` (candle takes `+1` at `a = b`).
pub fn l1_loss(a: &Tensor, b: &Tensor, reduction: Reduction) -> Result<Tensor> {
    let (a, b) = (&crate::losses::full_precision(a)?, &crate::losses::full_precision(b)?);
    check_pair("l1_loss", a, b)?;
    reduction.apply(&(a - b)?.abs()?)
}

fn check_pair(context: &str, a: &Tensor, b: &Tensor) -> Result<()> {
    same_shape(context, a, b)?;
    if a.dtype() != b.dtype() || !a.dtype().is_float() {
        return Err(Error::shape(
            context,
            format!("needs two tensors of the same floating-point dtype, got {:?} and {:?}", a.dtype(), b.dtype()),
        ));
    }
    if a.elem_count() == 0 {
        return Err(Error::shape(context, format!("empty tensors {:?}", a.dims())));
    }
    Ok(())
}

fn check_weight(field: &str, value: f64) -> Result<()> {
    if value.is_finite() && value >= 0.0 {
        Ok(())
    } else {
        Err(Error::config(field, format!("must be finite and >= 0, got {value}")))
    }
}

/// Cycle-consistency loss (Zhu et al. 2017, eq. 2):
/// `lambda * (mean|a - F(G(a))| + mean|b - G(F(b))|)`, each mean over all elements of its pair.
///
/// - `real_a`, `reconstructed_a = F(G(a))`: same shape and dtype;
/// - `real_b`, `reconstructed_b = G(F(b))`: same shape and dtype (may differ from domain A's);
/// - `lambda`: the weight, finite and `>= 0` (else `Error::Config`); the paper uses
///   [`DEFAULT_LAMBDA_CYCLE`] `= 10`.
///
/// Returns a scalar in the inputs' dtype; gradients flow to both reconstructions (and to the
/// real images if they require them).
pub fn cycle_consistency_loss(
    real_a: &Tensor,
    reconstructed_a: &Tensor,
    real_b: &Tensor,
    reconstructed_b: &Tensor,
    lambda: f64,
) -> Result<Tensor> {
    paired_l1("cycle_consistency_loss", "lambda", real_a, reconstructed_a, real_b, reconstructed_b, lambda)
}

/// Identity-mapping loss (Taigman et al. 2017; Zhu et al. 2017, section 5.2):
/// `lambda_identity * (mean|a - F(a)| + mean|b - G(b)|)`: each generator, fed an image that is
/// already of its output domain, should return it unchanged (preserves colour composition).
///
/// - `real_a`, `same_a = F(a)`: the B -> A generator applied to a real A image;
/// - `real_b`, `same_b = G(b)`: the A -> B generator applied to a real B image;
/// - `lambda_identity`: the weight that multiplies each L1 mean, finite and `>= 0`.
///
/// The reference implementation weights each identity term by `lambda_cycle * 0.5` (its option
/// `lambda_identity = 0.5` is a fraction of the cycle weight). This function takes the product
/// itself: pass `0.5 * lambda_cycle`, i.e. [`DEFAULT_LAMBDA_IDENTITY`] `= 5` with the defaults,
/// or `0` to disable the term. Returns a scalar in the inputs' dtype. Pair shapes as in
/// [`cycle_consistency_loss`]; mismatches are `Error::Shape`.
pub fn identity_loss(
    real_a: &Tensor,
    same_a: &Tensor,
    real_b: &Tensor,
    same_b: &Tensor,
    lambda_identity: f64,
) -> Result<Tensor> {
    paired_l1("identity_loss", "lambda_identity", real_a, same_a, real_b, same_b, lambda_identity)
}

/// `weight * (mean|a1 - a2| + mean|b1 - b2|)`.
fn paired_l1(
    context: &str,
    weight_name: &str,
    a1: &Tensor,
    a2: &Tensor,
    b1: &Tensor,
    b2: &Tensor,
    weight: f64,
) -> Result<Tensor> {
    check_weight(weight_name, weight)?;
    check_pair(&format!("{context} (domain A)"), a1, a2)?;
    check_pair(&format!("{context} (domain B)"), b1, b2)?;
    if a1.dtype() != b1.dtype() {
        return Err(Error::shape(
            context,
            format!("domain A tensors are {:?} but domain B tensors are {:?}", a1.dtype(), b1.dtype()),
        ));
    }
    let sum = (l1_loss(a1, a2, Reduction::Mean)? + l1_loss(b1, b2, Reduction::Mean)?)?;
    Ok((sum * weight)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::losses::adversarial::tests::{assert_close, check_gradient, normals, scalar, tensor};
    use crate::rng::Rng;
    use candle_core::{DType, Device};

    fn mean_abs(x: &[f64], y: &[f64]) -> f64 {
        x.iter().zip(y).map(|(p, q)| (p - q).abs()).sum::<f64>() / x.len() as f64
    }

    /// Two tensors whose elements differ by at least `gap` (away from L1's kink at 0).
    fn pair(rng: &mut Rng, dims: &[usize], gap: f64, dtype: DType) -> Result<(Tensor, Tensor, Vec<f64>, Vec<f64>)> {
        let n = dims.iter().product();
        let x = normals(rng, n, 1.0);
        let y: Vec<f64> =
            x.iter().zip(normals(rng, n, 0.5)).map(|(&x, d)| x + if d >= 0.0 { d + gap } else { d - gap }).collect();
        let (tx, xv) = tensor(&x, dims, dtype)?;
        let (ty, yv) = tensor(&y, dims, dtype)?;
        Ok((tx, ty, xv, yv))
    }

    #[test]
    fn l1_matches_f64_reference_for_every_reduction() -> Result<()> {
        let mut rng = Rng::new(10);
        for (dtype, rel) in [(DType::F32, 1e-5), (DType::F64, 1e-10)] {
            let dims = [3, 2, 4, 5];
            let (a, b, av, bv) = pair(&mut rng, &dims, 0.0, dtype)?;
            let abs: Vec<f64> = av.iter().zip(&bv).map(|(x, y)| (x - y).abs()).collect();
            assert_close(scalar(&l1_loss(&a, &b, Reduction::Mean)?)?, mean_abs(&av, &bv), rel, 0.0, "mean");
            assert_close(scalar(&l1_loss(&a, &b, Reduction::Sum)?)?, abs.iter().sum(), rel, 0.0, "sum");
            let per_sample = abs.iter().sum::<f64>() / 3.0;
            assert_close(scalar(&l1_loss(&a, &b, Reduction::SumPerSampleMean)?)?, per_sample, rel, 0.0, "per sample");
            let none = l1_loss(&a, &b, Reduction::None)?;
            assert_eq!((none.dims(), none.dtype()), (&dims[..], dtype));
            let none = none.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
            for (i, (got, want)) in none.iter().zip(&abs).enumerate() {
                assert_close(*got, *want, rel, 1.0, &format!("none[{i}]"));
            }
        }
        Ok(())
    }

    #[test]
    fn cycle_and_identity_match_f64_reference() -> Result<()> {
        let mut rng = Rng::new(11);
        for (dtype, rel) in [(DType::F32, 1e-5), (DType::F64, 1e-10)] {
            // The domains have different shapes (e.g. grey A, colour B).
            let (a, ra, av, rav) = pair(&mut rng, &[2, 1, 4, 4], 0.0, dtype)?;
            let (b, rb, bv, rbv) = pair(&mut rng, &[2, 3, 4, 4], 0.0, dtype)?;
            let want = 10.0 * (mean_abs(&av, &rav) + mean_abs(&bv, &rbv));
            let got = cycle_consistency_loss(&a, &ra, &b, &rb, DEFAULT_LAMBDA_CYCLE)?;
            assert_eq!((got.rank(), got.dtype()), (0, dtype));
            assert_close(scalar(&got)?, want, rel, 0.0, "cycle");
            let got = identity_loss(&a, &ra, &b, &rb, DEFAULT_LAMBDA_IDENTITY)?;
            assert_close(scalar(&got)?, 0.5 * want, rel, 0.0, "identity");
            assert_eq!(scalar(&identity_loss(&a, &ra, &b, &rb, 0.0)?)?, 0.0);
            assert_eq!(scalar(&cycle_consistency_loss(&a, &a, &b, &b, 10.0)?)?, 0.0);
        }
        Ok(())
    }

    #[test]
    fn gradients_match_finite_differences_away_from_kinks() -> Result<()> {
        let mut rng = Rng::new(12);
        let (a, ra, _, _) = pair(&mut rng, &[2, 1, 2, 3], 1e-2, DType::F64)?;
        let (b, rb, _, _) = pair(&mut rng, &[3, 2, 2], 1e-2, DType::F64)?;
        check_gradient(&a, |x| l1_loss(x, &ra, Reduction::Mean))?;
        check_gradient(&ra, |x| l1_loss(&a, x, Reduction::SumPerSampleMean))?;
        check_gradient(&ra, |x| cycle_consistency_loss(&a, x, &b, &rb, 10.0))?;
        check_gradient(&rb, |x| cycle_consistency_loss(&a, &ra, &b, x, 10.0))?;
        check_gradient(&ra, |x| identity_loss(&a, x, &b, &rb, 5.0))?;
        check_gradient(&rb, |x| identity_loss(&a, &ra, &b, x, 5.0))?;
        Ok(())
    }

    #[test]
    fn bad_shapes_and_weights_are_refused() -> Result<()> {
        let dev = Device::Cpu;
        let x = Tensor::zeros((2, 3, 4, 4), DType::F32, &dev)?;
        let y = Tensor::zeros((2, 3, 4, 5), DType::F32, &dev)?;
        let is_shape = |r: Result<Tensor>| matches!(r, Err(Error::Shape { .. }));
        let is_config = |r: Result<Tensor>| matches!(r, Err(Error::Config { .. }));
        assert!(is_shape(l1_loss(&x, &y, Reduction::Mean)));
        assert!(is_shape(l1_loss(&x, &x.to_dtype(DType::F64)?, Reduction::Mean)));
        assert!(is_shape(l1_loss(&x.to_dtype(DType::U8)?, &x.to_dtype(DType::U8)?, Reduction::Mean)));
        assert!(is_shape(cycle_consistency_loss(&x, &y, &x, &x, 10.0)));
        assert!(is_shape(cycle_consistency_loss(&x, &x, &x, &y, 10.0)));
        assert!(is_shape(identity_loss(&x, &x, &y, &x, 5.0)));
        let x64 = x.to_dtype(DType::F64)?;
        assert!(is_shape(identity_loss(&x, &x, &x64, &x64, 5.0)));
        assert!(is_config(cycle_consistency_loss(&x, &x, &x, &x, -1.0)));
        assert!(is_config(identity_loss(&x, &x, &x, &x, f64::NAN)));
        let msg = cycle_consistency_loss(&x, &x, &x, &y, 10.0).unwrap_err().to_string();
        assert!(msg.contains("cycle_consistency_loss (domain B)") && msg.contains("[2, 3, 4, 5]"), "{msg}");
        Ok(())
    }
}
