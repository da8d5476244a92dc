//! The fused CPU GroupNorm (`nn::group_norm`) against candle-nn's composed GroupNorm and against
//! central finite differences: values, the three first-order gradients, second-order gradients,
//! shapes of rank 3 to 5, batch 1, one group, one group per channel, non-contiguous input, f32 and
//! half precision, and refused bad inputs.

use candle_core::{DType, Device, Module, Tensor, Var};
use candle_generative::nn::double_backward::backward_with_graph;
use candle_generative::nn::group_norm::{group_norm, GroupNorm};
use candle_generative::rng::Rng;
use candle_generative::{Error, Result};
use candle_nn::{VarBuilder, VarMap};

fn max_abs_diff(a: &Tensor, b: &Tensor) -> Result<f64> {
    assert_eq!(a.dims(), b.dims());
    Ok((a - b)?.abs()?.flatten_all()?.max(0)?.to_dtype(DType::F64)?.to_scalar::<f64>()?)
}

fn max_abs(a: &Tensor) -> Result<f64> {
    Ok(a.abs()?.flatten_all()?.max(0)?.to_dtype(DType::F64)?.to_scalar::<f64>()?)
}

fn reference(x: &Tensor, groups: usize, w: &Tensor, b: &Tensor, eps: f64) -> Result<Tensor> {
    let norm = candle_nn::GroupNorm::new(w.clone(), b.clone(), x.dim(1)?, groups, eps)?;
    Ok(norm.forward(x)?)
}

/// Random input (with a per-channel offset, so means matter), weight and bias in f64.
fn inputs(rng: &mut Rng, dims: &[usize]) -> Result<(Tensor, Tensor, Tensor)> {
    let c = dims[1];
    let mut shape = vec![1; dims.len()];
    shape[1] = c;
    let offset = (rng.randn(shape.as_slice(), DType::F64, &Device::Cpu)? * 3.0)?;
    let x = rng.randn(dims, DType::F64, &Device::Cpu)?.broadcast_add(&offset)?;
    let w = (rng.randn(&[c], DType::F64, &Device::Cpu)? + 1.0)?;
    let b = rng.randn(&[c], DType::F64, &Device::Cpu)?;
    Ok((x, w, b))
}

#[test]
fn values_and_gradients_match_candle_nn() -> Result<()> {
    let mut rng = Rng::new(3);
    let cases: [(&[usize], usize); 7] = [
        (&[2, 6, 5, 4], 3),
        (&[1, 8, 7, 7], 8),
        (&[3, 4, 3, 5], 1),
        (&[2, 6, 9], 2),
        (&[2, 4, 2, 3, 3], 2),
        (&[4, 32, 14, 14], 8),
        (&[1, 1, 1, 2], 1),
    ];
    for (dims, groups) in cases {
        let label = format!("{dims:?} groups {groups}");
        let (x, w, b) = inputs(&mut rng, dims)?;
        let (xv, wv, bv) = (Var::from_tensor(&x)?, Var::from_tensor(&w)?, Var::from_tensor(&b)?);
        let fused = group_norm(xv.as_tensor(), groups, wv.as_tensor(), bv.as_tensor(), 1e-5)?;
        let composed = reference(xv.as_tensor(), groups, wv.as_tensor(), bv.as_tensor(), 1e-5)?;
        assert!(max_abs_diff(&fused, &composed)? < 1e-10 * max_abs(&composed)?.max(1.0), "{label}: outputs");
        let r = Rng::new(11).randn(dims, DType::F64, &Device::Cpu)?;
        let g_fused = (&fused * &r)?.sum_all()?.backward()?;
        let g_composed = (&composed * &r)?.sum_all()?.backward()?;
        for (name, v) in [("x", &xv), ("weight", &wv), ("bias", &bv)] {
            let (a, e) = (g_fused.get(v).expect("fused gradient"), g_composed.get(v).expect("reference gradient"));
            let diff = max_abs_diff(a, e)?;
            assert!(diff < 1e-9 * max_abs(e)?.max(1.0), "{label}: {name} gradients differ by {diff}");
        }
    }
    Ok(())
}

/// `d<y, r>/dx` by central differences in f64, element by element, against the fused backward.
#[test]
fn input_gradient_matches_finite_differences() -> Result<()> {
    let mut rng = Rng::new(4);
    let dims = [2, 4, 3, 3];
    let (x, w, b) = inputs(&mut rng, &dims)?;
    let r = rng.randn(&dims, DType::F64, &Device::Cpu)?;
    let objective =
        |x: &Tensor| -> Result<f64> { Ok((group_norm(x, 2, &w, &b, 1e-5)? * &r)?.sum_all()?.to_scalar::<f64>()?) };
    let xv = Var::from_tensor(&x)?;
    let grads = (group_norm(xv.as_tensor(), 2, &w, &b, 1e-5)? * &r)?.sum_all()?.backward()?;
    let analytic = grads.get(&xv).expect("x gradient").flatten_all()?.to_vec1::<f64>()?;
    let flat = x.flatten_all()?.to_vec1::<f64>()?;
    let h = 1e-6;
    for i in 0..flat.len() {
        let mut plus = flat.clone();
        plus[i] += h;
        let mut minus = flat.clone();
        minus[i] -= h;
        let f = |v: Vec<f64>| Tensor::from_vec(v, &dims[..], &Device::Cpu);
        let numeric = (objective(&f(plus)?)? - objective(&f(minus)?)?) / (2.0 * h);
        assert!(
            (numeric - analytic[i]).abs() < 1e-6 * (1.0 + numeric.abs()),
            "element {i}: {numeric} vs {}",
            analytic[i]
        );
    }
    Ok(())
}

/// A gradient penalty through a GroupNorm (the gradient of `|dL/dx|^2` with respect to the norm's
/// weight and the input) equals the composed GroupNorm's.
#[test]
fn second_order_gradients_match_candle_nn() -> Result<()> {
    let mut rng = Rng::new(5);
    let (x, w, b) = inputs(&mut rng, &[2, 6, 4, 4])?;
    let penalty = |fused: bool| -> Result<(Tensor, Tensor)> {
        let (xv, wv) = (Var::from_tensor(&x)?, Var::from_tensor(&w)?);
        let y = if fused {
            group_norm(xv.as_tensor(), 3, wv.as_tensor(), &b, 1e-5)?
        } else {
            reference(xv.as_tensor(), 3, wv.as_tensor(), &b, 1e-5)?
        };
        let gx = backward_with_graph(&y.tanh()?.sqr()?.sum_all()?)?.get(xv.as_tensor()).expect("x gradient").clone();
        let grads = gx.sqr()?.sum_all()?.backward()?;
        Ok((grads.get(wv.as_tensor()).expect("w").clone(), grads.get(xv.as_tensor()).expect("x").clone()))
    };
    let (fused, composed) = (penalty(true)?, penalty(false)?);
    for (name, a, e) in [("weight", &fused.0, &composed.0), ("x", &fused.1, &composed.1)] {
        assert!(max_abs(e)? > 1e-3, "{name}: the reference second-order gradient vanished");
        let diff = max_abs_diff(a, e)?;
        assert!(diff < 1e-8 * max_abs(e)?, "{name}: second-order gradients differ by {diff}");
    }
    Ok(())
}

#[test]
fn f32_non_contiguous_and_half_precision_follow_f64() -> Result<()> {
    let mut rng = Rng::new(6);
    let (x, w, b) = inputs(&mut rng, &[2, 8, 6, 5])?;
    let expected = reference(&x, 4, &w, &b, 1e-5)?;
    let xt = x.transpose(2, 3)?.contiguous()?.transpose(2, 3)?; // same values, strided layout
    assert!(!xt.is_contiguous());
    assert!(max_abs_diff(&group_norm(&xt, 4, &w, &b, 1e-5)?, &expected)? < 1e-10 * max_abs(&expected)?);
    for (dtype, tol) in [(DType::F32, 1e-5), (DType::F16, 2e-2), (DType::BF16, 1e-1)] {
        let y = group_norm(&x.to_dtype(dtype)?, 4, &w.to_dtype(dtype)?, &b.to_dtype(dtype)?, 1e-5)?;
        assert_eq!(y.dtype(), dtype);
        let diff = max_abs_diff(&y.to_dtype(DType::F64)?, &expected)?;
        assert!(diff < tol * max_abs(&expected)?, "{dtype:?} differs by {diff}");
    }
    Ok(())
}

#[test]
fn the_layer_uses_candle_nn_names_and_refuses_bad_input() -> Result<()> {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let norm = GroupNorm::new(2, 4, 1e-5, vb.pp("norm"))?;
    let mut names: Vec<String> = varmap.data().lock().expect("varmap").keys().cloned().collect();
    names.sort();
    assert_eq!(names, ["norm.bias", "norm.weight"]);
    assert_eq!(norm.weight().to_vec1::<f32>()?, [1.0; 4]);
    let y = norm.forward(&Tensor::ones((1, 4, 2, 2), DType::F32, &Device::Cpu)?)?;
    assert_eq!(y.to_dtype(DType::F64)?.abs()?.sum_all()?.to_scalar::<f64>()?, 0.0, "constant input normalises to 0");

    assert!(matches!(GroupNorm::new(3, 4, 1e-5, vb.pp("bad")), Err(Error::Config { .. })));
    assert!(matches!(GroupNorm::new(2, 4, 0.0, vb.pp("bad2")), Err(Error::Config { .. })));
    let (w, b) = (Tensor::ones(4, DType::F32, &Device::Cpu)?, Tensor::zeros(4, DType::F32, &Device::Cpu)?);
    let x = Tensor::ones((2, 4, 3), DType::F32, &Device::Cpu)?;
    assert!(matches!(group_norm(&x.flatten_from(1)?, 2, &w, &b, 1e-5), Err(Error::Shape { .. })));
    assert!(matches!(group_norm(&x, 3, &w, &b, 1e-5), Err(Error::Config { .. })));
    assert!(matches!(group_norm(&x, 2, &w.narrow(0, 0, 3)?, &b, 1e-5), Err(Error::Shape { .. })));
    assert!(matches!(group_norm(&x, 2, &w.to_dtype(DType::F64)?, &b, 1e-5), Err(Error::Shape { .. })));
    let err = norm.forward(&Tensor::ones((1, 2, 2, 2), DType::F32, &Device::Cpu)?).unwrap_err();
    assert!(err.to_string().contains("weight must be (2,)"), "{err}");
    Ok(())
}
