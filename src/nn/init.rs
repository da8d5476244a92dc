//! Seeded weight initialisation of existing variables.
//!
//! candle-nn initialises variables through its `Init` with candle's RNG, which cannot be seeded
//! on the CPU. Build the model first, then re-initialise its variables from the crate's
//! [`Rng`] with [`init_vars`]: same seed, same weights, on every device.

use super::spectral_norm::is_power_iteration_state;
use crate::optim::NamedVars;
use crate::rng::Rng;
use crate::{Error, Result};

/// How to initialise one variable.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum InitKind {
    /// Normal with this mean and standard deviation, e.g. DCGAN's N(0, 0.02) (Radford 2016).
    Normal {
        /// Mean.
        mean: f64,
        /// Standard deviation (>= 0).
        std: f64,
    },
    /// Uniform on `[-bound, bound]`.
    Uniform {
        /// Half-width of the interval (> 0).
        bound: f64,
    },
    /// Kaiming/He uniform for ReLU layers (He 2015): bound `sqrt(6 / fan_in)`, where
    /// `fan_in` is the product of all dimensions but the first (PyTorch's convention for
    /// `Linear (out, in)` and `Conv2d (out, in, kh, kw)` weights).
    KaimingUniform,
    /// A constant value (zeros for biases, ones for normalisation scales).
    Constant(f64),
    /// Leave the variable as it is.
    Keep,
}

/// Re-initialises every variable in `vars` with the kind `rule(name, rank)` picks, drawing
/// from `rng` in name order (so the result depends only on the seed and the names).
///
/// ```
/// use candle_core::{DType, Device};
/// use candle_nn::{VarBuilder, VarMap};
/// use candle_generative::nn::init::{init_vars, InitKind};
/// use candle_generative::optim::NamedVars;
/// use candle_generative::rng::Rng;
///
/// let varmap = VarMap::new();
/// let _fc = candle_nn::linear(8, 4, VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu).pp("fc"))?;
/// // DCGAN: weights N(0, 0.02), biases zero.
/// init_vars(&NamedVars::from_varmap(&varmap), &mut Rng::new(0), |name, _rank| {
///     if name.ends_with("bias") { InitKind::Constant(0.0) } else { InitKind::Normal { mean: 0.0, std: 0.02 } }
/// })?;
/// # Ok::<(), candle_generative::Error>(())
/// ```
pub fn init_vars(vars: &NamedVars, rng: &mut Rng, rule: impl Fn(&str, usize) -> InitKind) -> Result<()> {
    for (name, var) in vars.iter() {
        let t = var.as_tensor();
        let value = match rule(name, t.rank()) {
            InitKind::Keep => continue,
            InitKind::Normal { mean, std } => {
                if !(std >= 0.0 && std.is_finite() && mean.is_finite()) {
                    return Err(Error::config(
                        name,
                        format!("normal init needs finite mean and std >= 0, got {mean}, {std}"),
                    ));
                }
                rng.randn(t.shape().clone(), t.dtype(), t.device())?.affine(std, mean)?
            }
            InitKind::Uniform { bound } => uniform(name, rng, t, bound)?,
            InitKind::KaimingUniform => {
                let fan_in: usize = t.dims().iter().skip(1).product();
                if t.rank() < 2 || fan_in == 0 {
                    return Err(Error::config(
                        name,
                        format!("Kaiming init needs a weight of rank >= 2, got {:?}", t.dims()),
                    ));
                }
                uniform(name, rng, t, (6.0 / fan_in as f64).sqrt())?
            }
            InitKind::Constant(c) => t.ones_like()?.affine(c, 0.0)?,
        };
        var.set(&value)?;
    }
    Ok(())
}

fn uniform(name: &str, rng: &mut Rng, t: &candle_core::Tensor, bound: f64) -> Result<candle_core::Tensor> {
    if !(bound > 0.0 && bound.is_finite()) {
        return Err(Error::config(name, format!("uniform init needs a finite bound > 0, got {bound}")));
    }
    rng.uniform(t.shape().clone(), -bound, bound, t.dtype(), t.device())
}

/// DCGAN's initialisation (Radford 2016): convolution and linear weights N(0, 0.02), batch-norm
/// scales N(1, 0.02), biases zero. Batch-norm variables are recognised by a name containing
/// `"bn"` or `"norm"`; running statistics (`running_mean`, `running_var`) and spectral norm's
/// power-iteration vectors (`weight_u`, `weight_v`) are kept.
pub fn dcgan_init(name: &str, rank: usize) -> InitKind {
    let is_norm = name.contains("bn") || name.contains("norm");
    if name.ends_with("running_mean") || name.ends_with("running_var") || is_power_iteration_state(name) {
        InitKind::Keep
    } else if name.ends_with("bias") {
        InitKind::Constant(0.0)
    } else if is_norm && rank == 1 {
        InitKind::Normal { mean: 1.0, std: 0.02 }
    } else {
        InitKind::Normal { mean: 0.0, std: 0.02 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use candle_nn::{VarBuilder, VarMap};

    fn model() -> Result<VarMap> {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
        candle_nn::linear(200, 100, vb.pp("fc"))?;
        candle_nn::batch_norm(100, 1e-5, vb.pp("bn"))?;
        Ok(vm)
    }

    #[test]
    fn seeded_and_follows_the_rule() -> Result<()> {
        let (a, b) = (model()?, model()?);
        init_vars(&NamedVars::from_varmap(&a), &mut Rng::new(3), dcgan_init)?;
        init_vars(&NamedVars::from_varmap(&b), &mut Rng::new(3), dcgan_init)?;
        let get = |vm: &VarMap, n: &str| vm.data().lock().unwrap()[n].flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(get(&a, "fc.weight"), get(&b, "fc.weight"));
        let w = get(&a, "fc.weight");
        let mean = w.iter().map(|&x| x as f64).sum::<f64>() / w.len() as f64;
        let std = (w.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / w.len() as f64).sqrt();
        assert!(mean.abs() < 1e-3 && (std - 0.02).abs() < 5e-4, "mean {mean} std {std}");
        assert!(get(&a, "fc.bias").iter().all(|&x| x == 0.0));
        let scale = get(&a, "bn.weight");
        assert!(scale.iter().all(|&x| (x - 1.0).abs() < 0.1) && scale.iter().any(|&x| x != 1.0));
        assert!(get(&a, "bn.running_var").iter().all(|&x| x == 1.0), "running statistics are kept");
        for kept in ["d.conv.weight_u", "d.conv.weight_v", "bn.running_mean"] {
            assert_eq!(dcgan_init(kept, 1), InitKind::Keep, "{kept}");
        }
        Ok(())
    }

    #[test]
    fn kaiming_bound_and_bad_parameters() -> Result<()> {
        let vm = model()?;
        let vars = NamedVars::with_prefix(&vm, "fc")?;
        init_vars(
            &vars,
            &mut Rng::new(0),
            |_, rank| if rank == 2 { InitKind::KaimingUniform } else { InitKind::Keep },
        )?;
        let w = vm.data().lock().unwrap()["fc.weight"].flatten_all()?.to_vec1::<f32>()?;
        let bound = (6.0f32 / 200.0).sqrt();
        assert!(w.iter().all(|x| x.abs() <= bound) && w.iter().any(|x| x.abs() > 0.9 * bound));
        assert!(init_vars(&vars, &mut Rng::new(0), |_, _| InitKind::Normal { mean: 0.0, std: -1.0 }).is_err());
        assert!(init_vars(&vars, &mut Rng::new(0), |_, _| InitKind::Uniform { bound: 0.0 }).is_err());
        assert!(init_vars(&vars, &mut Rng::new(0), |_, _| InitKind::KaimingUniform).is_err(), "bias has rank 1");
        Ok(())
    }
}
