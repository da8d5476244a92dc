//! Latent-space interpolation, shared by every model with a latent code (GAN, VAE).

use candle_core::{DType, Tensor};

use crate::{Error, Result};

/// How to walk between two latent codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum Interpolation {
    /// Straight line `(1 - t) z0 + t z1`.
    Linear,
    /// Spherical linear interpolation (Shoemake 1985), recommended for Gaussian latents by
    /// White 2016 ("Sampling Generative Networks"): it keeps the norm typical of the prior,
    /// where the straight line passes through the low-norm centre.
    #[default]
    Spherical,
}

/// `steps` codes from `z0` to `z1` (both ends included), as a `(steps, D)` tensor.
///
/// `z0` and `z1` are `(D,)` or `(1, D)` vectors of the same shape; `steps >= 2`. Computed in
/// f64 on the host, returned in `z0`'s dtype and device. When the two codes are (anti)parallel,
/// spherical interpolation falls back to the straight line.
///
/// ```
/// use candle_core::{Device, Tensor};
/// use candle_generative::nn::latent::{interpolate, Interpolation};
/// let z0 = Tensor::new(&[1f32, 0.0], &Device::Cpu)?;
/// let z1 = Tensor::new(&[0f32, 1.0], &Device::Cpu)?;
/// let path = interpolate(&z0, &z1, 3, Interpolation::Spherical)?;
/// let mid = path.get(1)?.to_vec1::<f32>()?;
/// assert!((mid[0] - 0.5f32.sqrt()).abs() < 1e-6 && (mid[1] - 0.5f32.sqrt()).abs() < 1e-6);
/// # Ok::<(), candle_generative::Error>(())
/// ```
pub fn interpolate(z0: &Tensor, z1: &Tensor, steps: usize, how: Interpolation) -> Result<Tensor> {
    if z0.dims() != z1.dims() || z0.elem_count() == 0 || z0.dims().iter().rev().skip(1).any(|&d| d != 1) {
        return Err(Error::shape(
            "interpolate",
            format!("needs two (D,) or (1, D) codes of the same shape, got {:?} and {:?}", z0.dims(), z1.dims()),
        ));
    }
    if steps < 2 {
        return Err(Error::config("steps", format!("interpolation needs at least 2 steps, got {steps}")));
    }
    let a = z0.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?;
    let b = z1.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?;
    let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
    let (na, nb) = (norm(&a), norm(&b));
    let cos = if na > 0.0 && nb > 0.0 {
        (a.iter().zip(&b).map(|(x, y)| x * y).sum::<f64>() / (na * nb)).clamp(-1.0, 1.0)
    } else {
        1.0
    };
    let omega = cos.acos();
    let spherical = how == Interpolation::Spherical && omega.sin().abs() > 1e-6;
    let mut out = Vec::with_capacity(steps * a.len());
    for i in 0..steps {
        let t = i as f64 / (steps - 1) as f64;
        let (wa, wb) = if spherical {
            (((1.0 - t) * omega).sin() / omega.sin(), (t * omega).sin() / omega.sin())
        } else {
            (1.0 - t, t)
        };
        out.extend(a.iter().zip(&b).map(|(x, y)| wa * x + wb * y));
    }
    Ok(Tensor::from_vec(out, (steps, a.len()), z0.device())?.to_dtype(z0.dtype())?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn ends_norms_and_errors() -> Result<()> {
        let dev = Device::Cpu;
        let z0 = Tensor::new(&[[3f64, 0.0, 0.0]], &dev)?;
        let z1 = Tensor::new(&[[0f64, 0.0, 3.0]], &dev)?;
        for how in [Interpolation::Linear, Interpolation::Spherical] {
            let p = interpolate(&z0, &z1, 5, how)?.to_vec2::<f64>()?;
            assert_eq!(p[0], vec![3.0, 0.0, 0.0]);
            assert!((p[4][2] - 3.0).abs() < 1e-12 && p[4][0].abs() < 1e-12);
        }
        // Spherical keeps the norm of equal-norm ends; linear dips to 3/sqrt(2) in the middle.
        let s = interpolate(&z0, &z1, 5, Interpolation::Spherical)?.to_vec2::<f64>()?;
        assert!(s.iter().all(|v| (v.iter().map(|x| x * x).sum::<f64>().sqrt() - 3.0).abs() < 1e-12));
        let l = interpolate(&z0, &z1, 3, Interpolation::Linear)?.to_vec2::<f64>()?;
        assert!((l[1].iter().map(|x| x * x).sum::<f64>().sqrt() - 3.0 / 2f64.sqrt()).abs() < 1e-12);
        // Parallel codes fall back to the line instead of dividing by zero.
        let p = interpolate(&z0, &(&z0 * 2.0)?, 3, Interpolation::Spherical)?.to_vec2::<f64>()?;
        assert_eq!(p[1], vec![4.5, 0.0, 0.0]);
        assert!(interpolate(&z0, &z1, 1, Interpolation::Linear).is_err());
        assert!(interpolate(&z0, &Tensor::zeros((1, 2), DType::F64, &dev)?, 3, Interpolation::Linear).is_err());
        assert!(interpolate(
            &Tensor::zeros((2, 3), DType::F64, &dev)?,
            &Tensor::zeros((2, 3), DType::F64, &dev)?,
            3,
            Interpolation::Linear
        )
        .is_err());
        Ok(())
    }
}
