//! Instance normalisation (Ulyanov, Vedaldi & Lempitsky 2016), the normalisation of style
//! transfer and CycleGAN generators and discriminators.

use candle_core::{Module, Tensor};
use candle_nn::{Init, VarBuilder};

use super::group_norm::group_norm;
use crate::{Error, Result};

/// PyTorch's default `eps` of `InstanceNorm2d`.
pub const INSTANCE_NORM_EPS: f64 = 1e-5;

/// Instance normalisation of `(B, C, H, W)` feature maps: each sample's each channel is
/// normalised with its own mean and (biased) variance over `H x W`,
///
/// ```text
/// y[b, c] = (x[b, c] - mean(x[b, c])) / sqrt(var(x[b, c]) + eps)  ( * weight[c] + bias[c] )
/// ```
///
/// the same in training and evaluation (no running statistics, PyTorch's default
/// `track_running_stats = False`). With `affine` a learnt per-channel scale `weight` (initialised
/// to 1) and shift `bias` (0) follow; PyTorch's `InstanceNorm2d` and the CycleGAN reference code
/// use `affine = False`, which has no parameters.
///
/// Computed by [`group_norm`] with one group per channel (the fused CPU kernel, differentiable to
/// second order).
#[derive(Debug, Clone)]
pub struct InstanceNorm2d {
    channels: usize,
    eps: f64,
    affine: Option<(Tensor, Tensor)>,
}

impl InstanceNorm2d {
    /// A norm over `channels` channels (> 0) with `eps` (finite, > 0; [`INSTANCE_NORM_EPS`] is
    /// PyTorch's). With `affine`, creates `weight` (ones) and `bias` (zeros), both `(C,)`, under
    /// `vb`; without, `vb` is not used. Bad values are `Error::Config`.
    pub fn new(channels: usize, affine: bool, eps: f64, vb: VarBuilder) -> Result<Self> {
        if channels == 0 {
            return Err(Error::config("InstanceNorm2d.channels", "must be > 0"));
        }
        if !(eps.is_finite() && eps > 0.0) {
            return Err(Error::config("InstanceNorm2d.eps", format!("must be finite and > 0, got {eps}")));
        }
        let affine = if affine {
            let w = vb.get_with_hints(channels, "weight", Init::Const(1.0))?;
            let b = vb.get_with_hints(channels, "bias", Init::Const(0.0))?;
            Some((w, b))
        } else {
            None
        };
        Ok(Self { channels, eps, affine })
    }

    /// A norm without parameters (`affine = false`, eps `1e-5`), as in CycleGAN.
    pub fn without_affine(channels: usize) -> Result<Self> {
        Self::new(
            channels,
            false,
            INSTANCE_NORM_EPS,
            VarBuilder::zeros(candle_core::DType::F32, &candle_core::Device::Cpu),
        )
    }

    /// The number of channels `C`.
    pub fn channels(&self) -> usize {
        self.channels
    }

    /// Whether it has a learnt scale and shift.
    pub fn is_affine(&self) -> bool {
        self.affine.is_some()
    }

    /// Normalises `x` of shape `(B, C, H, W)` with `C = channels` and `H W > 0`; floating-point
    /// dtype. Returns the same shape and dtype. Other shapes are `Error::Shape`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims();
        if dims.len() != 4 || dims[1] != self.channels || dims[2] * dims[3] == 0 || !x.dtype().is_float() {
            return Err(Error::shape(
                "InstanceNorm2d",
                format!(
                    "expected floating-point (B, {}, H, W) with H W > 0, got {:?} {:?}",
                    self.channels,
                    dims,
                    x.dtype()
                ),
            ));
        }
        let c = dims[1];
        match &self.affine {
            Some((weight, bias)) => group_norm(x, c, weight, bias, self.eps),
            None => {
                let ones = Tensor::ones(c, x.dtype(), x.device())?;
                group_norm(x, c, &ones, &ones.zeros_like()?, self.eps)
            }
        }
    }
}

impl Module for InstanceNorm2d {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        InstanceNorm2d::forward(self, x).map_err(|e| match e {
            Error::Candle(e) => e,
            other => candle_core::Error::Msg(other.to_string()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;
    use candle_core::{DType, Device, Var};
    use candle_nn::VarMap;

    /// The f64 reference: per (sample, channel) mean and biased variance.
    fn reference(x: &[f64], (b, c, hw): (usize, usize, usize), eps: f64, scale: &[f64], shift: &[f64]) -> Vec<f64> {
        let mut out = vec![0.0; x.len()];
        for i in 0..b * c {
            let s = &x[i * hw..(i + 1) * hw];
            let mean = s.iter().sum::<f64>() / hw as f64;
            let var = s.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / hw as f64;
            for (j, v) in s.iter().enumerate() {
                out[i * hw + j] = (v - mean) / (var + eps).sqrt() * scale[i % c] + shift[i % c];
            }
        }
        out
    }

    #[test]
    fn statistics_are_per_sample_and_channel() -> Result<()> {
        let dev = Device::Cpu;
        let (b, c, h, w) = (3, 4, 5, 6);
        let mut rng = Rng::new(1);
        // Each (sample, channel) gets its own offset and scale, so pooled statistics would fail.
        let x: Vec<f64> =
            (0..b * c * h * w).map(|i| rng.normal_f64() * (1.0 + (i / (h * w)) as f64) + (i / 30) as f64).collect();
        let xt = Tensor::from_vec(x.clone(), (b, c, h, w), &dev)?;
        let norm = InstanceNorm2d::new(c, false, 1e-5, VarBuilder::zeros(DType::F64, &dev))?;
        let y = norm.forward(&xt)?.flatten_all()?.to_vec1::<f64>()?;
        let want = reference(&x, (b, c, h * w), 1e-5, &[1.0; 4], &[0.0; 4]);
        for (g, r) in y.iter().zip(&want) {
            assert!((g - r).abs() < 1e-10, "{g} vs {r}");
        }
        // Every (sample, channel) slice has mean 0 and variance 1 - eps/(var+eps) ~ 1.
        for s in y.chunks(h * w) {
            let mean = s.iter().sum::<f64>() / s.len() as f64;
            let var = s.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / s.len() as f64;
            assert!(mean.abs() < 1e-12 && (var - 1.0).abs() < 1e-4, "mean {mean} var {var}");
        }
        // F32 agrees with the f64 reference too.
        let y32 = norm.forward(&xt.to_dtype(DType::F32)?)?.flatten_all()?.to_vec1::<f32>()?;
        assert!(y32.iter().zip(&want).all(|(g, r)| (*g as f64 - r).abs() < 1e-4));
        Ok(())
    }

    #[test]
    fn affine_parameters_scale_and_shift_and_get_gradients() -> Result<()> {
        let dev = Device::Cpu;
        let vm = VarMap::new();
        let norm = InstanceNorm2d::new(2, true, 1e-5, VarBuilder::from_varmap(&vm, DType::F64, &dev).pp("n"))?;
        assert!(norm.is_affine() && vm.all_vars().len() == 2);
        let (scale, shift) = ([2.0, -0.5], [0.25, 3.0]);
        vm.data().lock().unwrap()["n.weight"].set(&Tensor::new(&scale, &dev)?)?;
        vm.data().lock().unwrap()["n.bias"].set(&Tensor::new(&shift, &dev)?)?;
        let mut rng = Rng::new(2);
        let x: Vec<f64> = (0..2 * 2 * 9).map(|_| rng.normal_f64()).collect();
        let xv = Var::from_tensor(&Tensor::from_vec(x.clone(), (2, 2, 3, 3), &dev)?)?;
        let y = norm.forward(xv.as_tensor())?;
        let want = reference(&x, (2, 2, 9), 1e-5, &scale, &shift);
        for (g, r) in y.flatten_all()?.to_vec1::<f64>()?.iter().zip(&want) {
            assert!((g - r).abs() < 1e-10);
        }
        // d(sum y)/d bias = H W B per channel; the input gradient of a sum of normalised values is 0.
        let grads = (y.sum_all()?).backward()?;
        let gb = grads.get(&vm.data().lock().unwrap()["n.bias"]).unwrap().to_vec1::<f64>()?;
        assert_eq!(gb, vec![18.0, 18.0]);
        let gx = grads.get(&xv).unwrap().flatten_all()?.to_vec1::<f64>()?;
        assert!(gx.iter().all(|g| g.abs() < 1e-9));
        Ok(())
    }

    #[test]
    fn bad_configs_and_shapes_are_errors() -> Result<()> {
        let vb = VarBuilder::zeros(DType::F32, &Device::Cpu);
        assert!(matches!(InstanceNorm2d::new(0, false, 1e-5, vb.clone()), Err(Error::Config { .. })));
        assert!(matches!(InstanceNorm2d::new(2, false, 0.0, vb.clone()), Err(Error::Config { .. })));
        let norm = InstanceNorm2d::without_affine(3)?;
        let e = norm.forward(&Tensor::zeros((1, 2, 4, 4), DType::F32, &Device::Cpu)?).unwrap_err().to_string();
        assert!(e.contains("InstanceNorm2d") && e.contains("[1, 2, 4, 4]"), "{e}");
        assert!(norm.forward(&Tensor::zeros((3, 4, 4), DType::F32, &Device::Cpu)?).is_err());
        Ok(())
    }
}
