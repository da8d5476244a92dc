//! The crate's CPU convolution kernels (`nn::conv`, im2col + gemm) against candle's reference ops:
//! values, first and second-order gradients, odd shapes, strides, padding, dilation, output
//! padding, batch 1, non-contiguous inputs, half precision, and refused bad shapes.
//!
//! The reference side calls candle's `Tensor::conv2d` / `conv_transpose2d` directly, so the tests
//! never flip the process-wide switch (tests in one binary run in parallel).

use candle_core::{DType, Device, Tensor, Var};
use candle_generative::nn::conv::{conv2d, conv_transpose2d};
use candle_generative::nn::double_backward::backward_with_graph;
use candle_generative::rng::Rng;
use candle_generative::Result;

fn randn(rng: &mut Rng, dims: &[usize]) -> Result<Tensor> {
    rng.randn(dims, DType::F64, &Device::Cpu)
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> Result<f64> {
    assert_eq!(a.dims(), b.dims());
    Ok((a - b)?.abs()?.flatten_all()?.max(0)?.to_dtype(DType::F64)?.to_scalar::<f64>()?)
}

fn max_abs(a: &Tensor) -> Result<f64> {
    Ok(a.abs()?.flatten_all()?.max(0)?.to_dtype(DType::F64)?.to_scalar::<f64>()?)
}

/// A convolution of an input variable with a weight variable.
type ConvFn<'a> = &'a dyn Fn(&Tensor, &Tensor) -> Result<Tensor>;

/// Compares outputs and the gradients of `<y, r>` for random `r`, in f64 (1e-10 relative).
fn check_first_order(label: &str, x: &Tensor, w: &Tensor, fast: ConvFn, reference: ConvFn) -> Result<()> {
    let (xv, wv) = (Var::from_tensor(x)?, Var::from_tensor(w)?);
    let y_fast = fast(xv.as_tensor(), wv.as_tensor())?;
    let y_ref = reference(xv.as_tensor(), wv.as_tensor())?;
    let scale = max_abs(&y_ref)?.max(1.0);
    assert!(max_abs_diff(&y_fast, &y_ref)? < 1e-10 * scale, "{label}: outputs differ");
    let r = Rng::new(99).randn(y_ref.dims(), DType::F64, &Device::Cpu)?;
    let g_fast = (y_fast * &r)?.sum_all()?.backward()?;
    let g_ref = (y_ref * &r)?.sum_all()?.backward()?;
    for (name, v) in [("input", &xv), ("weight", &wv)] {
        let (a, b) = (g_fast.get(v).expect("fast gradient"), g_ref.get(v).expect("reference gradient"));
        let scale = max_abs(b)?.max(1.0);
        let diff = max_abs_diff(a, b)?;
        assert!(diff < 1e-10 * scale, "{label}: {name} gradients differ by {diff} (scale {scale})");
    }
    Ok(())
}

#[test]
fn conv2d_matches_candle_values_and_gradients() -> Result<()> {
    let mut rng = Rng::new(1);
    // (batch, c_in, h, w, c_out, kh, kw, padding, stride, dilation)
    let cases = [
        (1, 1, 5, 5, 1, 3, 3, 0, 1, 1),
        (2, 3, 7, 6, 4, 3, 2, 1, 2, 1),
        (3, 2, 9, 8, 5, 3, 3, 2, 1, 2),
        (1, 4, 28, 28, 8, 7, 7, 3, 1, 1),
        (2, 3, 6, 6, 2, 4, 4, 1, 2, 1),
        (2, 1, 5, 7, 3, 1, 1, 0, 1, 1),
        (2, 2, 8, 8, 3, 2, 2, 3, 3, 1),
        (1, 3, 4, 4, 2, 4, 4, 0, 1, 1),
    ];
    for (n, c, h, w, co, kh, kw, p, s, d) in cases {
        let label = format!("conv2d n{n} c{c} {h}x{w} -> {co}, k{kh}x{kw} p{p} s{s} d{d}");
        let x = randn(&mut rng, &[n, c, h, w])?;
        let k = randn(&mut rng, &[co, c, kh, kw])?;
        check_first_order(&label, &x, &k, &|x, k| conv2d(x, k, p, s, d), &|x, k| Ok(x.conv2d(k, p, s, d, 1)?))?;
    }
    Ok(())
}

/// candle 0.11's own conv2d backward takes the output padding of its transposed convolution from
/// the height for both axes, so it fails when the height and width leave different remainders
/// (a 6x5 input, 4x4 kernel, stride 2, below). The crate's kernel is checked there against central finite
/// differences of `<conv2d(x, w), r>` in f64.
#[test]
fn conv2d_gradients_match_finite_differences_where_candle_fails() -> Result<()> {
    let mut rng = Rng::new(6);
    let (x0, w0) = (randn(&mut rng, &[2, 3, 6, 5])?, randn(&mut rng, &[4, 3, 4, 4])?);
    let conv = |x: &Tensor, w: &Tensor| conv2d(x, w, 1, 2, 1);
    let (xv, wv) = (Var::from_tensor(&x0)?, Var::from_tensor(&w0)?);
    let candle_backward = xv.conv2d(wv.as_tensor(), 1, 2, 1, 1)?.sum_all()?.backward();
    assert!(candle_backward.is_err(), "candle now differentiates this shape: update docs/architecture.md's trap");
    let r = Rng::new(7).randn(conv(&x0, &w0)?.dims(), DType::F64, &Device::Cpu)?;
    let grads = (conv(xv.as_tensor(), wv.as_tensor())? * &r)?.sum_all()?.backward()?;
    let objective = |x: &Tensor, w: &Tensor| -> Result<f64> { Ok((conv(x, w)? * &r)?.sum_all()?.to_scalar::<f64>()?) };
    for (name, base, is_input) in [("input", &x0, true), ("weight", &w0, false)] {
        let analytic: Vec<f64> =
            grads.get(if is_input { &xv } else { &wv }).expect("gradient").flatten_all()?.to_vec1()?;
        let values: Vec<f64> = base.flatten_all()?.to_vec1()?;
        // The objective is linear in each argument, so central differences are exact up to rounding.
        for i in (0..values.len()).step_by(5) {
            let bumped = |delta: f64| -> Result<f64> {
                let mut v = values.clone();
                v[i] += delta;
                let t = Tensor::from_vec(v, base.dims(), &Device::Cpu)?;
                if is_input {
                    objective(&t, &w0)
                } else {
                    objective(&x0, &t)
                }
            };
            let numeric = (bumped(1e-3)? - bumped(-1e-3)?) / 2e-3;
            assert!(
                (numeric - analytic[i]).abs() < 1e-8 * analytic[i].abs().max(1.0),
                "{name}[{i}]: {numeric} vs {}",
                analytic[i]
            );
        }
    }
    Ok(())
}

#[test]
fn conv2d_takes_non_contiguous_input() -> Result<()> {
    let mut rng = Rng::new(2);
    let x = randn(&mut rng, &[5, 2, 3, 6])?.transpose(0, 1)?; // (2, 5, 3, 6), strided
    let k = randn(&mut rng, &[4, 5, 3, 3])?;
    let (fast, reference) = (conv2d(&x, &k, 1, 1, 1)?, x.conv2d(&k, 1, 1, 1, 1)?);
    assert!(max_abs_diff(&fast, &reference)? < 1e-10 * max_abs(&reference)?);
    Ok(())
}

#[test]
fn conv_transpose2d_matches_candle_values_and_gradients() -> Result<()> {
    let mut rng = Rng::new(3);
    // (batch, c_in, h, w, c_out, kh, kw, padding, output_padding, stride, dilation)
    let cases = [
        (1, 1, 3, 3, 1, 3, 3, 0, 0, 1, 1),
        (2, 3, 7, 7, 2, 4, 4, 1, 0, 2, 1),
        (2, 4, 5, 6, 3, 3, 3, 1, 1, 2, 1),
        (3, 2, 4, 5, 2, 3, 2, 0, 0, 1, 2),
        (1, 3, 6, 4, 4, 5, 5, 2, 2, 3, 1),
        (2, 2, 7, 7, 1, 4, 4, 1, 0, 2, 1),
    ];
    for (n, c, h, w, co, kh, kw, p, op, s, d) in cases {
        let label = format!("conv_transpose2d n{n} c{c} {h}x{w} -> {co}, k{kh}x{kw} p{p} op{op} s{s} d{d}");
        let x = randn(&mut rng, &[n, c, h, w])?;
        let k = randn(&mut rng, &[c, co, kh, kw])?;
        check_first_order(&label, &x, &k, &|x, k| conv_transpose2d(x, k, p, op, s, d), &|x, k| {
            Ok(x.conv_transpose2d(k, p, op, s, d)?)
        })?;
    }
    Ok(())
}

/// Gradient penalties differentiate an input gradient again: `d/dw sum((d/dx sum(y^2))^2)`.
#[test]
fn second_order_gradients_match_candle() -> Result<()> {
    let mut rng = Rng::new(4);
    let x = Var::from_tensor(&randn(&mut rng, &[2, 2, 6, 6])?)?;
    let w = Var::from_tensor(&randn(&mut rng, &[3, 2, 3, 3])?)?;
    let wt = Var::from_tensor(&randn(&mut rng, &[3, 2, 4, 4])?)?;
    let penalty_grad = |fast: bool| -> Result<(Tensor, Tensor)> {
        let y = if fast {
            conv_transpose2d(&conv2d(x.as_tensor(), w.as_tensor(), 1, 2, 1)?.tanh()?, wt.as_tensor(), 1, 0, 2, 1)?
        } else {
            x.conv2d(w.as_tensor(), 1, 2, 1, 1)?.tanh()?.conv_transpose2d(wt.as_tensor(), 1, 0, 2, 1)?
        };
        let gx = backward_with_graph(&y.sqr()?.sum_all()?)?.get(x.as_tensor()).expect("input gradient").clone();
        let grads = gx.sqr()?.sum_all()?.backward()?;
        Ok((grads.get(w.as_tensor()).expect("w").clone(), grads.get(wt.as_tensor()).expect("wt").clone()))
    };
    let (fast, reference) = (penalty_grad(true)?, penalty_grad(false)?);
    for (name, a, b) in [("conv weight", &fast.0, &reference.0), ("transposed weight", &fast.1, &reference.1)] {
        let diff = max_abs_diff(a, b)?;
        assert!(max_abs(b)? > 1e-3, "{name}: the reference second-order gradient vanished");
        assert!(diff < 1e-9 * max_abs(b)?, "{name}: second-order gradients differ by {diff}");
    }
    Ok(())
}

#[test]
fn half_precision_follows_f32() -> Result<()> {
    let mut rng = Rng::new(5);
    let x = randn(&mut rng, &[2, 3, 9, 9])?.to_dtype(DType::F32)?;
    let k = (randn(&mut rng, &[4, 3, 3, 3])? * 0.3)?.to_dtype(DType::F32)?;
    let kt = (randn(&mut rng, &[3, 2, 4, 4])? * 0.3)?.to_dtype(DType::F32)?;
    let reference = conv2d(&x, &k, 1, 1, 1)?;
    let reference_t = conv_transpose2d(&x, &kt, 1, 0, 2, 1)?;
    for (dtype, tol) in [(DType::F16, 2e-2), (DType::BF16, 1e-1)] {
        let y = conv2d(&x.to_dtype(dtype)?, &k.to_dtype(dtype)?, 1, 1, 1)?;
        assert_eq!(y.dtype(), dtype);
        let diff = max_abs_diff(&y.to_dtype(DType::F32)?, &reference)?;
        assert!(diff < tol * max_abs(&reference)?, "{dtype:?} conv2d differs by {diff}");
        let yt = conv_transpose2d(&x.to_dtype(dtype)?, &kt.to_dtype(dtype)?, 1, 0, 2, 1)?;
        let diff = max_abs_diff(&yt.to_dtype(DType::F32)?, &reference_t)?;
        assert!(diff < tol * max_abs(&reference_t)?, "{dtype:?} conv_transpose2d differs by {diff}");
    }
    Ok(())
}

#[test]
fn bad_shapes_are_refused() -> Result<()> {
    let x = Tensor::zeros((1, 3, 5, 5), DType::F32, &Device::Cpu)?;
    let wrong_channels = Tensor::zeros((2, 4, 3, 3), DType::F32, &Device::Cpu)?;
    assert!(conv2d(&x, &wrong_channels, 0, 1, 1).is_err());
    assert!(conv_transpose2d(&x, &wrong_channels, 0, 0, 1, 1).is_err());
    let too_big = Tensor::zeros((2, 3, 7, 7), DType::F32, &Device::Cpu)?;
    assert!(conv2d(&x, &too_big, 0, 1, 1).is_err());
    let k = Tensor::zeros((2, 3, 3, 3), DType::F32, &Device::Cpu)?;
    assert!(conv2d(&x, &k, 0, 0, 1).is_err(), "stride 0");
    assert!(conv2d(&x.flatten_all()?, &k, 0, 1, 1).is_err(), "1-D input");
    Ok(())
}

#[test]
fn channel_bias_matches_broadcast_add_to_second_order() -> Result<()> {
    use candle_generative::nn::channel_bias::add_channel_bias;
    let mut rng = Rng::new(8);
    let x = Var::from_tensor(&randn(&mut rng, &[3, 4, 5, 2])?)?;
    let b = Var::from_tensor(&randn(&mut rng, &[4])?)?;
    let r = randn(&mut rng, &[3, 4, 5, 2])?;
    let run = |fast: bool| -> Result<(Tensor, Tensor, Tensor)> {
        let y = if fast {
            add_channel_bias(x.as_tensor(), b.as_tensor())?
        } else {
            x.broadcast_add(&b.reshape((1, 4, 1, 1))?)?
        };
        // (y * r)^2 summed: its gradient depends on b, so differentiating the gradient again reaches b.
        let loss = (&y * &r)?.sqr()?.sum_all()?;
        let gb = backward_with_graph(&loss)?.get(b.as_tensor()).expect("bias gradient").clone();
        let second = gb.sqr()?.sum_all()?.backward()?;
        Ok((y, gb, second.get(x.as_tensor()).expect("second-order gradient").clone()))
    };
    let (fast, reference) = (run(true)?, run(false)?);
    for (name, a, b) in [
        ("value", &fast.0, &reference.0),
        ("bias gradient", &fast.1, &reference.1),
        ("second order", &fast.2, &reference.2),
    ] {
        assert!(max_abs(b)? > 1e-3, "{name}: the reference vanished");
        assert!(max_abs_diff(a, b)? < 1e-10 * max_abs(b)?, "{name} differs");
    }
    assert!(add_channel_bias(x.as_tensor(), &Tensor::zeros(3, DType::F64, &Device::Cpu)?).is_err());
    Ok(())
}
