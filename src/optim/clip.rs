//! Gradient clipping by global norm and by value, on a `candle_core::backprop::GradStore`.

use std::collections::HashSet;

use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor, Var};

use crate::{Error, Result};

/// The distinct variables of `vars` that have a gradient in `grads`, with that gradient.
fn present<'a>(grads: &'a GradStore, vars: &'a [Var]) -> Vec<(&'a Var, &'a Tensor)> {
    let mut seen = HashSet::new();
    vars.iter().filter(|v| seen.insert(v.id())).filter_map(|v| grads.get(v).map(|g| (v, g))).collect()
}

/// Reads a rank-0 `F32` or `F64` tensor as an `f64`.
fn to_f64(t: &Tensor) -> Result<f64> {
    Ok(match t.dtype() {
        DType::F64 => t.to_scalar::<f64>()?,
        _ => t.to_dtype(DType::F32)?.to_scalar::<f32>()? as f64,
    })
}

/// The global L2 norm `sqrt(sum_i sum_j g_ij^2)` over the gradients in `grads` of the variables
/// `vars` (variables without a gradient, and repeated variables, count once or not at all).
///
/// Squares are summed in `F64` (`F32` on Metal, which has no `F64`) whatever the gradients'
/// dtype, so `bf16`/`f16`/`f32` gradients neither lose precision nor overflow. NaN or infinite
/// gradients give a NaN or infinite norm; no gradient at all gives 0.
pub fn grad_norm(grads: &GradStore, vars: &[Var]) -> Result<f64> {
    let mut sums = Vec::new();
    for (_, g) in present(grads, vars) {
        let acc = if g.device().is_metal() { DType::F32 } else { DType::F64 };
        sums.push(g.detach().to_dtype(acc)?.sqr()?.sum_all()?);
    }
    let Some(first) = sums.first() else { return Ok(0.0) };
    // One device-to-host transfer when possible, instead of one per tensor.
    let same = sums.iter().all(|s| s.device().same_device(first.device()) && s.dtype() == first.dtype());
    let total = if same {
        to_f64(&Tensor::stack(&sums, 0)?.sum_all()?)?
    } else {
        sums.iter().map(to_f64).sum::<Result<f64>>()?
    };
    Ok(total.sqrt())
}

/// Clips the gradients of `vars` to a global L2 norm of at most `max_norm`, as PyTorch's
/// `torch.nn.utils.clip_grad_norm_` (Pascanu et al. 2013, "On the difficulty of training
/// recurrent neural networks"), and returns the norm before clipping.
///
/// With `n` the [`grad_norm`] and `c = max_norm / (n + 1e-6)`, every gradient is multiplied by
/// `c` when `c < 1` (the `1e-6` keeps `c` finite; after clipping the norm is
/// `max_norm * n / (n + 1e-6)`); otherwise nothing changes. For a `NamedVars`, pass
/// `&named.vars()`.
///
/// Errors: [`Error::Config`] (field `"max_norm"`) when `max_norm` is not finite and > 0;
/// [`Error::NonFinite`] (term `"gradient norm"`) when the norm is NaN or infinite, in which case
/// the gradients are left untouched (skip the step, lower the learning rate or restore a
/// checkpoint).
pub fn clip_grad_norm(grads: &mut GradStore, vars: &[Var], max_norm: f64) -> Result<f64> {
    if !(max_norm.is_finite() && max_norm > 0.0) {
        return Err(Error::config("max_norm", format!("must be finite and > 0, got {max_norm}")));
    }
    let norm = grad_norm(grads, vars)?;
    if !norm.is_finite() {
        return Err(Error::non_finite("gradient norm", None, norm));
    }
    let coef = max_norm / (norm + 1e-6);
    if coef < 1.0 {
        let scaled: Vec<(Var, Tensor)> = present(grads, vars)
            .into_iter()
            .map(|(v, g)| Ok((v.clone(), g.affine(coef, 0.0)?)))
            .collect::<Result<_>>()?;
        for (v, g) in scaled {
            grads.insert(&v, g);
        }
    }
    Ok(norm)
}

/// Clamps every gradient element of `vars` to `[-clip_value, clip_value]`, as PyTorch's
/// `torch.nn.utils.clip_grad_value_`. NaN elements stay NaN (use [`clip_grad_norm`] to detect
/// them).
///
/// An [`Error::Config`] (field `"clip_value"`) when `clip_value` is not finite and > 0.
pub fn clip_grad_value(grads: &mut GradStore, vars: &[Var], clip_value: f64) -> Result<()> {
    if !(clip_value.is_finite() && clip_value > 0.0) {
        return Err(Error::config("clip_value", format!("must be finite and > 0, got {clip_value}")));
    }
    let clamped: Vec<(Var, Tensor)> = present(grads, vars)
        .into_iter()
        .map(|(v, g)| Ok((v.clone(), g.clamp(-clip_value, clip_value)?)))
        .collect::<Result<_>>()?;
    for (v, g) in clamped {
        grads.insert(&v, g);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Two variables with gradients `g = 2 * x` (from `sum(x^2)`) and one without.
    fn setup(a: &[f32], b: &[f32]) -> Result<(Vec<Var>, GradStore)> {
        let dev = Device::Cpu;
        let va = Var::from_tensor(&Tensor::new(a, &dev)?)?;
        let vb = Var::from_tensor(&Tensor::new(b, &dev)?.reshape((1, b.len()))?)?;
        let unused = Var::from_tensor(&Tensor::new(&[1f32], &dev)?)?;
        let loss = (va.sqr()?.sum_all()? + vb.sqr()?.sum_all()?)?;
        let grads = loss.backward()?;
        Ok((vec![va, vb, unused], grads))
    }

    fn hand_norm(a: &[f32], b: &[f32]) -> f64 {
        a.iter().chain(b).map(|&x| (2.0 * x as f64).powi(2)).sum::<f64>().sqrt()
    }

    fn all_grads(grads: &GradStore, vars: &[Var]) -> Result<Vec<f32>> {
        let mut out = Vec::new();
        for v in vars {
            if let Some(g) = grads.get(v) {
                out.extend(g.flatten_all()?.to_vec1::<f32>()?);
            }
        }
        Ok(out)
    }

    #[test]
    fn norm_equals_hand_computation() -> Result<()> {
        let (a, b) = ([0.1f32, -2.5, 3.25], [1e-3f32, 7.0]);
        let (vars, grads) = setup(&a, &b)?;
        let norm = grad_norm(&grads, &vars)?;
        assert!((norm - hand_norm(&a, &b)).abs() <= 1e-12 * norm, "{norm}");
        // A repeated variable counts once.
        let twice = [vars.clone(), vars.clone()].concat();
        assert_eq!(grad_norm(&grads, &twice)?, norm);
        assert_eq!(grad_norm(&grads, &vars[2..])?, 0.0);
        Ok(())
    }

    #[test]
    fn clipping_brings_the_norm_to_max_norm() -> Result<()> {
        let (a, b) = ([0.1f32, -2.5, 3.25], [1e-3f32, 7.0]);
        let (vars, mut grads) = setup(&a, &b)?;
        let before = clip_grad_norm(&mut grads, &vars, 1.5)?;
        assert!((before - hand_norm(&a, &b)).abs() <= 1e-12 * before);
        let after = grad_norm(&grads, &vars)?;
        assert!((after - 1.5).abs() <= 1e-6 * 1.5, "{after}");
        // The direction is kept.
        let ratio = grads.get(&vars[1]).expect("has a gradient").flatten_all()?.to_vec1::<f32>()?[1] / 14.0;
        assert!((ratio as f64 - 1.5 / before).abs() < 1e-6);
        Ok(())
    }

    #[test]
    fn below_max_norm_nothing_changes() -> Result<()> {
        let (vars, mut grads) = setup(&[0.1, 0.2], &[0.3])?;
        let before = all_grads(&grads, &vars)?;
        let norm = clip_grad_norm(&mut grads, &vars, 10.0)?;
        assert!(norm < 10.0);
        assert_eq!(all_grads(&grads, &vars)?, before);
        Ok(())
    }

    #[test]
    fn non_finite_gradient_is_reported_and_left_alone() -> Result<()> {
        let (vars, mut grads) = setup(&[f32::NAN, 1.0], &[2.0])?;
        let before: Vec<u32> = all_grads(&grads, &vars)?.iter().map(|x| x.to_bits()).collect();
        match clip_grad_norm(&mut grads, &vars, 1.0) {
            Err(Error::NonFinite { term, .. }) => assert_eq!(term, "gradient norm"),
            other => panic!("expected NonFinite, got {other:?}"),
        }
        let after: Vec<u32> = all_grads(&grads, &vars)?.iter().map(|x| x.to_bits()).collect();
        assert_eq!(after, before);
        let (vars, mut grads) = setup(&[f32::INFINITY], &[2.0])?;
        assert!(matches!(clip_grad_norm(&mut grads, &vars, 1.0), Err(Error::NonFinite { .. })));
        Ok(())
    }

    #[test]
    fn f32_overflow_is_avoided_by_f64_accumulation() -> Result<()> {
        // Squares of 2e20 overflow f32 (max 3.4e38) but not the f64 accumulator.
        let (vars, mut grads) = setup(&[1e20, -1e20], &[0.0])?;
        let norm = clip_grad_norm(&mut grads, &vars, 1.0)?;
        assert!((norm - 2e20 * 2f64.sqrt()).abs() <= 1e-6 * norm);
        assert!((grad_norm(&grads, &vars)? - 1.0).abs() < 1e-6);
        Ok(())
    }

    #[test]
    fn clip_by_value_and_bad_arguments() -> Result<()> {
        let (vars, mut grads) = setup(&[0.1, -2.5], &[3.0])?;
        clip_grad_value(&mut grads, &vars, 1.0)?;
        assert_eq!(all_grads(&grads, &vars)?, vec![0.2, -1.0, 1.0]);
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(matches!(clip_grad_norm(&mut grads, &vars, bad), Err(Error::Config { .. })));
            assert!(matches!(clip_grad_value(&mut grads, &vars, bad), Err(Error::Config { .. })));
        }
        Ok(())
    }
}
