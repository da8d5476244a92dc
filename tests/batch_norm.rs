//! The fused CPU batch norm (`nn::batch_norm`) against candle-nn's `BatchNorm` built with the same
//! variables: training-mode values, gradients of input, weight and bias, second-order gradients,
//! the running statistics, evaluation mode, ranks 3 to 5, batch 1, non-affine, f32, and refused
//! bad inputs; the input gradient also against central finite differences.

use candle_core::{DType, Device, ModuleT, Tensor, Var};
use candle_generative::nn::batch_norm::batch_norm;
use candle_generative::nn::double_backward::backward_with_graph;
use candle_generative::rng::Rng;
use candle_generative::{Error, Result};
use candle_nn::{BatchNormConfig, VarBuilder, VarMap};

fn max_abs_diff(a: &Tensor, b: &Tensor) -> Result<f64> {
    assert_eq!(a.dims(), b.dims());
    Ok((a - b)?.abs()?.flatten_all()?.max(0)?.to_dtype(DType::F64)?.to_scalar::<f64>()?)
}

fn max_abs(a: &Tensor) -> Result<f64> {
    Ok(a.abs()?.flatten_all()?.max(0)?.to_dtype(DType::F64)?.to_scalar::<f64>()?)
}

/// The crate's layer and candle-nn's over two VarMaps holding the same random weight and bias.
struct Pair {
    ours: candle_generative::nn::BatchNorm,
    theirs: candle_nn::BatchNorm,
    maps: [VarMap; 2],
}

fn pair(channels: usize, config: BatchNormConfig, dtype: DType, seed: u64) -> Result<Pair> {
    let mut maps = [VarMap::new(), VarMap::new()];
    let ours = batch_norm(channels, config, VarBuilder::from_varmap(&maps[0], dtype, &Device::Cpu))?;
    let theirs = candle_nn::batch_norm(channels, config, VarBuilder::from_varmap(&maps[1], dtype, &Device::Cpu))?;
    let mut rng = Rng::new(seed);
    for name in ["weight", "bias"] {
        if config.affine {
            let v = (rng.randn(&[channels], DType::F64, &Device::Cpu)? + 1.0)?.to_dtype(dtype)?;
            for m in &mut maps {
                m.set_one(name, &v)?;
            }
        }
    }
    Ok(Pair { ours, theirs, maps })
}

fn var(map: &VarMap, name: &str) -> Var {
    map.data().lock().expect("varmap").get(name).expect("variable").clone()
}

fn input(rng: &mut Rng, dims: &[usize]) -> Result<Tensor> {
    let mut shape = vec![1; dims.len()];
    shape[1] = dims[1];
    let offset = (rng.randn(shape.as_slice(), DType::F64, &Device::Cpu)? * 3.0)?;
    Ok(rng.randn(dims, DType::F64, &Device::Cpu)?.broadcast_add(&offset)?)
}

#[test]
fn training_mode_matches_candle_nn() -> Result<()> {
    let mut rng = Rng::new(1);
    let cases: [(&[usize], bool); 6] = [
        (&[4, 3, 5, 5], true),
        (&[1, 6, 4, 3], true),
        (&[8, 2, 7], true),
        (&[2, 3, 2, 3, 2], true),
        (&[16, 32, 7, 7], true),
        (&[3, 4, 3, 3], false),
    ];
    for (i, (dims, affine)) in cases.into_iter().enumerate() {
        let label = format!("{dims:?} affine {affine}");
        let config = BatchNormConfig { affine, ..BatchNormConfig::default() };
        let p = pair(dims[1], config, DType::F64, i as u64)?;
        // Two steps, so the running statistics are updated twice from different batches.
        for step in 0..2 {
            let x = Var::from_tensor(&input(&mut rng, dims)?)?;
            let (ours, theirs) = (p.ours.forward_t(x.as_tensor(), true)?, p.theirs.forward_t(x.as_tensor(), true)?);
            assert!(max_abs_diff(&ours, &theirs)? < 1e-10 * max_abs(&theirs)?.max(1.0), "{label} step {step}: outputs");
            let r = Rng::new(50 + step).randn(dims, DType::F64, &Device::Cpu)?;
            let g_ours = (&ours * &r)?.sum_all()?.backward()?;
            let g_theirs = (&theirs * &r)?.sum_all()?.backward()?;
            let e = max_abs_diff(g_ours.get(&x).expect("dx"), g_theirs.get(&x).expect("dx"))?;
            assert!(e < 1e-9 * max_abs(g_theirs.get(&x).expect("dx"))?.max(1.0), "{label}: dx differs by {e}");
            if affine {
                for name in ["weight", "bias"] {
                    let (a, b) = (
                        g_ours.get(&var(&p.maps[0], name)).expect("ours"),
                        g_theirs.get(&var(&p.maps[1], name)).expect("theirs"),
                    );
                    assert!(max_abs_diff(a, b)? < 1e-9 * max_abs(b)?.max(1.0), "{label}: d{name}");
                }
            }
        }
        for name in ["running_mean", "running_var"] {
            let (a, b) = (var(&p.maps[0], name), var(&p.maps[1], name));
            assert!(
                max_abs_diff(a.as_tensor(), b.as_tensor())? < 1e-12 * max_abs(b.as_tensor())?.max(1.0),
                "{label}: {name}"
            );
        }
        let x = input(&mut rng, dims)?;
        assert!(max_abs_diff(&p.ours.forward_t(&x, false)?, &p.theirs.forward_t(&x, false)?)? < 1e-12, "{label}: eval");
    }
    Ok(())
}

#[test]
fn input_gradient_matches_finite_differences() -> Result<()> {
    let mut rng = Rng::new(2);
    let dims = [3, 2, 2, 3];
    let p = pair(2, BatchNormConfig::default(), DType::F64, 7)?;
    let x = input(&mut rng, &dims)?;
    let r = rng.randn(&dims, DType::F64, &Device::Cpu)?;
    let objective =
        |x: &Tensor| -> Result<f64> { Ok((p.ours.forward_t(x, true)? * &r)?.sum_all()?.to_scalar::<f64>()?) };
    let xv = Var::from_tensor(&x)?;
    let grads = (p.ours.forward_t(xv.as_tensor(), true)? * &r)?.sum_all()?.backward()?;
    let analytic = grads.get(&xv).expect("dx").flatten_all()?.to_vec1::<f64>()?;
    let flat = x.flatten_all()?.to_vec1::<f64>()?;
    for i in 0..flat.len() {
        let shifted = |d: f64| -> Result<f64> {
            let mut v = flat.clone();
            v[i] += d;
            objective(&Tensor::from_vec(v, &dims[..], &Device::Cpu)?)
        };
        let numeric = (shifted(1e-6)? - shifted(-1e-6)?) / 2e-6;
        assert!(
            (numeric - analytic[i]).abs() < 1e-6 * (1.0 + numeric.abs()),
            "element {i}: {numeric} vs {}",
            analytic[i]
        );
    }
    Ok(())
}

/// An R1-style penalty through a batch norm: the gradient of `|d sum(tanh(y)^2) / dx|^2` with
/// respect to the weight and the input equals candle-nn's.
#[test]
fn second_order_gradients_match_candle_nn() -> Result<()> {
    let x = input(&mut Rng::new(3), &[4, 3, 3, 3])?;
    let p = pair(3, BatchNormConfig::default(), DType::F64, 9)?;
    let penalty = |ours: bool| -> Result<(Tensor, Tensor)> {
        let xv = Var::from_tensor(&x)?;
        let y =
            if ours { p.ours.forward_t(xv.as_tensor(), true)? } else { p.theirs.forward_t(xv.as_tensor(), true)? };
        let gx = backward_with_graph(&y.tanh()?.sqr()?.sum_all()?)?.get(xv.as_tensor()).expect("dx").clone();
        let grads = gx.sqr()?.sum_all()?.backward()?;
        let w = var(&p.maps[if ours { 0 } else { 1 }], "weight");
        Ok((grads.get(&w).expect("dw").clone(), grads.get(&xv).expect("dx").clone()))
    };
    let (ours, theirs) = (penalty(true)?, penalty(false)?);
    for (name, a, b) in [("weight", &ours.0, &theirs.0), ("x", &ours.1, &theirs.1)] {
        assert!(max_abs(b)? > 1e-3, "{name}: the reference gradient vanished");
        let diff = max_abs_diff(a, b)?;
        assert!(diff < 1e-8 * max_abs(b)?, "{name}: second-order gradients differ by {diff}");
    }
    Ok(())
}

#[test]
fn f32_follows_and_bad_inputs_are_errors() -> Result<()> {
    let x = input(&mut Rng::new(4), &[6, 4, 5, 5])?;
    let p64 = pair(4, BatchNormConfig::default(), DType::F64, 1)?;
    let p32 = pair(4, BatchNormConfig::default(), DType::F32, 1)?;
    let expected = p64.theirs.forward_t(&x, true)?;
    let y = p32.ours.forward_t(&x.to_dtype(DType::F32)?, true)?;
    assert!(max_abs_diff(&y.to_dtype(DType::F64)?, &expected)? < 1e-5 * max_abs(&expected)?);

    let err = p32.ours.forward_t(&Tensor::ones((2, 3, 4, 4), DType::F32, &Device::Cpu)?, true).unwrap_err();
    assert!(err.to_string().contains("expected 4 channels"), "{err}");
    let err = p32.ours.forward_t(&Tensor::ones((1, 4, 1, 1), DType::F32, &Device::Cpu)?, true).unwrap_err();
    assert!(err.to_string().contains("more than one value per channel"), "{err}");
    let vb = VarBuilder::zeros(DType::F32, &Device::Cpu);
    let bad = BatchNormConfig { momentum: 1.5, ..BatchNormConfig::default() };
    assert!(matches!(batch_norm(4, bad, vb), Err(Error::Config { .. })));
    Ok(())
}
