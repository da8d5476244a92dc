//! The crate's SiLU (`nn::silu`, one-pass CPU backward) against `Tensor::silu`: values, first and
//! second-order gradients, a non-contiguous input, and the half-precision fallback.

use candle_core::{DType, Device, Tensor, Var};
use candle_generative::nn::double_backward::backward_with_graph;
use candle_generative::nn::silu::silu;
use candle_generative::rng::Rng;
use candle_generative::Result;

fn max_abs_diff(a: &Tensor, b: &Tensor) -> Result<f64> {
    assert_eq!(a.dims(), b.dims());
    Ok((a - b)?.abs()?.flatten_all()?.max(0)?.to_dtype(DType::F64)?.to_scalar::<f64>()?)
}

#[test]
fn values_and_gradients_match_candle() -> Result<()> {
    let mut rng = Rng::new(1);
    let x = (rng.randn(&[3, 5, 7, 9], DType::F64, &Device::Cpu)? * 4.0)?;
    let r = rng.randn(&[3, 5, 7, 9], DType::F64, &Device::Cpu)?;
    let xv = Var::from_tensor(&x)?;
    let (ours, theirs) = (silu(xv.as_tensor())?, xv.as_tensor().silu()?);
    assert!(max_abs_diff(&ours, &theirs)? < 1e-12);
    let g_ours = (&ours * &r)?.sum_all()?.backward()?.get(&xv).expect("gradient").clone();
    let g_theirs = (&theirs * &r)?.sum_all()?.backward()?.get(&xv).expect("gradient").clone();
    assert!(max_abs_diff(&g_ours, &g_theirs)? < 1e-12);
    // Central differences of sum(silu(x) * r) at a few elements.
    let flat = x.flatten_all()?.to_vec1::<f64>()?;
    let rf = r.flatten_all()?.to_vec1::<f64>()?;
    let gf = g_ours.flatten_all()?.to_vec1::<f64>()?;
    let f = |v: f64| v / (1.0 + (-v).exp());
    for i in [0, 17, 300, flat.len() - 1] {
        let h = 1e-6;
        let numeric = (f(flat[i] + h) - f(flat[i] - h)) / (2.0 * h) * rf[i];
        assert!((numeric - gf[i]).abs() < 1e-7 * (1.0 + numeric.abs()), "element {i}");
    }
    // A transposed (strided) input gives the same values.
    let xt = x.transpose(1, 3)?;
    assert!(max_abs_diff(&silu(&xt)?, &xt.silu()?)? < 1e-12);
    Ok(())
}

#[test]
fn second_order_gradients_match_candle() -> Result<()> {
    let mut rng = Rng::new(2);
    let x = rng.randn(&[2, 3, 4, 4], DType::F64, &Device::Cpu)?;
    let w = rng.randn(&[2, 3, 4, 4], DType::F64, &Device::Cpu)?;
    let penalty = |ours: bool| -> Result<Tensor> {
        let (xv, wv) = (Var::from_tensor(&x)?, Var::from_tensor(&w)?);
        let h = xv.as_tensor().mul(wv.as_tensor())?;
        let y = if ours { silu(&h)? } else { h.silu()? };
        let gx = backward_with_graph(&y.sqr()?.sum_all()?)?.get(xv.as_tensor()).expect("x gradient").clone();
        Ok(gx.sqr()?.sum_all()?.backward()?.get(wv.as_tensor()).expect("w gradient").clone())
    };
    let (ours, theirs) = (penalty(true)?, penalty(false)?);
    let scale = theirs.abs()?.max_keepdim(0)?.flatten_all()?.max(0)?.to_scalar::<f64>()?;
    assert!(scale > 1e-3);
    assert!(max_abs_diff(&ours, &theirs)? < 1e-10 * scale);
    Ok(())
}

#[test]
fn f32_and_half_precision_follow_f64() -> Result<()> {
    let x = Rng::new(3).randn(&[4, 100], DType::F64, &Device::Cpu)?;
    let expected = x.silu()?;
    for (dtype, tol) in [(DType::F32, 1e-6), (DType::F16, 1e-2), (DType::BF16, 5e-2)] {
        let y = silu(&x.to_dtype(dtype)?)?;
        assert_eq!(y.dtype(), dtype);
        let diff = max_abs_diff(&y.to_dtype(DType::F64)?, &expected)?;
        assert!(diff < tol * 4.0, "{dtype:?} differs by {diff}");
    }
    Ok(())
}
