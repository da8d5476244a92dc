//! Gradient penalties and weight clipping, the Lipschitz constraints of Wasserstein and
//! regularised GANs.
//!
//! | penalty | formula | paper |
//! |---|---|---|
//! | [`gradient_penalty_wgan`] | `λ · E[(‖∇D(x̂)‖₂ − 1)²]`, `x̂ = ε x_r + (1−ε) x_f`, `ε~U[0,1]` | Gulrajani 2017 |
//! | [`r1_penalty`] | `γ/2 · E_{x_r}[‖∇ₓ D(x_r)‖₂²]` | Mescheder 2018 |
//! | [`r2_penalty`] | `γ/2 · E_{x_f}[‖∇ₓ D(x_f)‖₂²]` | Mescheder 2018 |
//! | [`clip_weights`] | `w ← clamp(w, −c, c)` | Arjovsky 2017 |
//!
//! Each penalty is a scalar tensor whose graph reaches the critic's parameters: add it to the
//! critic loss and call `backward()` as usual (on any thread). The norms are per sample, over all
//! non-batch dimensions; `E` is the mean over the batch.
//!
//! # How the second-order gradient is obtained
//!
//! A penalty on `∇ₓ D(x)` needs the gradient of a gradient, which candle 0.11 only gives when
//! the backward pass that computes `∇ₓ D(x)` keeps its graph. [`input_gradient`] runs that one
//! backward pass with [`backward_with_graph`], on a scoped thread whose candle flag is latched to
//! "do not detach" and verified by a probe; the critic's forward pass stays on the caller's
//! thread. See [`crate::nn::double_backward`] for why this is correct, its cost (about two to
//! three times a plain backward) and its caveats (a microsecond window in which another thread's
//! *first* backward would also keep its graph).
//!
//! The inputs are detached and copied into a fresh variable, so a penalty trains the critic
//! only, as in the papers' algorithms; pass real and generated batches as they are.
//!
//! # Which layers work
//!
//! Checked against finite differences of the penalty in `F64` (tests of this module and of
//! [`crate::nn::double_backward`]):
//!
//! - **correct**: `conv2d` (stride, padding, dilation, groups), `conv_transpose2d`, `linear` /
//!   `matmul` / broadcast matmul, `relu`, `leaky_relu` (built from `maximum`/`minimum`), `tanh`,
//!   `sigmoid`, `silu`, `gelu`, `elu`, `exp`, `log`, `sqr`, `sqrt`, `powf`, `abs`, `add`/`mul`/`div` and
//!   their broadcast forms, `reshape`/`flatten`/`transpose`/`narrow`/`cat`, `sum`/`mean`,
//!   `avg_pool2d` and `max_pool2d` with kernel = stride, `upsample_nearest2d` with an equal integer
//!   factor, `group_norm` (so instance norm and layer norm over `(C, H, W)` as `group_norm` with
//!   `C` groups or 1 group), `BatchNorm` in training mode, and [`crate::nn::spectral_norm`] layers;
//! - **an error, never a wrong value**: `conv1d` fails at the caller's `backward()` (its input
//!   gradient is a `conv_transpose1d`, which has no backward in candle 0.11);
//!   `upsample_bilinear2d`, `ceil` and pooling with kernel ≠ stride have no first-order backward,
//!   so [`input_gradient`] already returns candle's error;
//! - **refused here with [`Error::Config`]**: a critic whose output does not reach its input, or
//!   whose input gradient reaches none of its parameters. Both happen when a layer is built with
//!   candle's `apply_op*_no_bwd` (`candle_nn::LayerNorm` on a contiguous input with a bias,
//!   `ops::layer_norm`, `ops::rms_norm`, `ops::softmax_last_dim`, `ops::sdpa`), after a
//!   `detach()`, or when the weights are plain tensors instead of `Var`s;
//! - **silently wrong, not detectable here**: a no-backward layer on one of several paths (a skip
//!   connection around it keeps the input reachable, the rest of the gradient is lost); custom ops
//!   whose `bwd` is not itself differentiable; and `upsample_nearest2d`/`upsample_nearest1d` whose
//!   input is also used elsewhere: candle 0.11's backward rule *replaces* the input's accumulated
//!   gradient instead of adding to it, a first-order bug (`x` used by `upsample(x)` and `3x` gets
//!   gradient 4 or 7 per element depending on the order of the terms). Check such critics with a
//!   finite-difference test like this module's.
//!
//! The per-sample norms are only meaningful when the critic treats samples independently:
//! Gulrajani et al. replace batch norm by layer norm in the critic for this reason (use
//! `candle_nn::group_norm` with one group).

use candle_core::{Module, Tensor, Var};

use super::same_shape;
use crate::nn::double_backward::backward_with_graph;
use crate::rng::Rng;
use crate::{Error, Result};

/// Added to the squared norm before its square root, so that a zero input gradient gives a
/// finite penalty gradient instead of NaN (`d√s/ds` is infinite at 0).
const NORM_EPS: f64 = 1e-12;

fn check_weight(field: &str, value: f64) -> Result<()> {
    if !(value.is_finite() && value >= 0.0) {
        return Err(Error::config(field, format!("must be finite and >= 0, got {value}")));
    }
    Ok(())
}

fn check_batch(context: &str, x: &Tensor) -> Result<usize> {
    if x.rank() == 0 || x.dim(0)? == 0 {
        return Err(Error::shape(context, format!("needs a non-empty batch dimension, got shape {:?}", x.dims())));
    }
    if !x.dtype().is_float() {
        return Err(Error::shape(context, format!("needs a floating-point input, got {:?}", x.dtype())));
    }
    Ok(x.dim(0)?)
}

/// The gradient `∇ₓ Σ_b D(x)_b` of the critic's summed output with respect to its input, as a
/// tensor that is a differentiable function of the critic's parameters (second-order capable).
///
/// - `critic`: any `candle_core::Module`, including a closure `|x: &Tensor| d.forward_t(x, true)`
///   for a `ModuleT`. Its forward pass runs on the calling thread; only the backward pass runs on
///   the helper thread of [`backward_with_graph`].
/// - `x`: a batch `(B, ...)` of floating-point inputs; it is detached and copied into a new
///   variable, so the result does not depend on the graph `x` came with.
///
/// The result has `x`'s shape. For a critic that treats samples independently, row `b` is
/// `∇ D(x_b)`. The building block of [`gradient_penalty_wgan`], [`r1_penalty`] and
/// [`r2_penalty`]; use it for other penalties (one-sided, zero-centred, DRAGAN).
///
/// Errors: [`Error::Shape`] for an empty batch, a non-float input, or an output whose first
/// dimension is not the batch; [`Error::Config`] (field `"critic"`) when the output does not
/// depend on the input through differentiable ops, or when the input gradient depends on none of
/// the critic's variables (the penalty would give every parameter a zero gradient); the
/// [module documentation](self) lists the layers that cause this.
pub fn input_gradient<M: Module + ?Sized>(critic: &M, x: &Tensor) -> Result<Tensor> {
    const CTX: &str = "input_gradient";
    let batch = check_batch(CTX, x)?;
    let input = Var::from_tensor(&x.detach())?;
    let output = critic.forward(input.as_tensor())?;
    if output.rank() == 0 || output.dim(0)? != batch {
        return Err(Error::shape(
            CTX,
            format!("the critic's output {:?} has no batch dimension of size {batch}", output.dims()),
        ));
    }
    let not_reached = || {
        Error::config(
            "critic",
            "the critic's output does not depend on its input through differentiable ops: a layer built \
             with candle's apply_op*_no_bwd (candle_nn::LayerNorm on contiguous input with a bias, \
             ops::layer_norm, ops::rms_norm, ops::softmax_last_dim, ops::sdpa) or a detach() cuts the graph; \
             use group_norm, ops::softmax or a norm written with tensor ops",
        )
    };
    if !output.track_op() {
        return Err(not_reached());
    }
    let grads = backward_with_graph(&output.sum_all()?)?;
    let grad = grads.get(input.as_tensor()).cloned().ok_or_else(not_reached)?;
    let reaches_parameter = grad.sorted_nodes().iter().any(|node| node.is_variable() && node.id() != input.id());
    if !reaches_parameter {
        return Err(Error::config(
            "critic",
            "the gradient of the critic's output with respect to its input depends on none of its variables, \
             so the penalty would give every parameter a zero gradient: are the weights `Var`s (built from a \
             VarMap), and is there no detach() or no-backward layer (candle_nn::LayerNorm, ops::layer_norm, \
             ops::rms_norm, ops::softmax_last_dim) between the input and the weights?",
        ));
    }
    Ok(grad)
}

/// Per-sample L2 norms `‖g_b‖₂ = √(Σ_j g_bj² + 1e-12)` over all non-batch dimensions of a
/// `(B, ...)` tensor, as a `(B,)` tensor (differentiable; the `1e-12` keeps the gradient finite
/// at `g_b = 0` and is below `F32` resolution for norms near 1).
pub fn per_sample_norm(g: &Tensor) -> Result<Tensor> {
    check_batch("per_sample_norm", g)?;
    Ok((per_sample_sq_norm(g)? + NORM_EPS)?.sqrt()?)
}

fn per_sample_sq_norm(g: &Tensor) -> Result<Tensor> {
    let b = g.dim(0)?;
    Ok(g.reshape((b, ()))?.sqr()?.sum(1)?)
}

/// Random interpolates `x̂_b = ε_b x_r,b + (1 − ε_b) x_f,b` with `ε` of shape `(B,)` (one mixing
/// weight per sample, broadcast over the other dimensions), detached from both inputs.
///
/// Errors: [`Error::Shape`] when `real` and `fake` differ in shape, are empty or not floating
/// point, or `eps` does not hold `B` values.
pub fn interpolate(real: &Tensor, fake: &Tensor, eps: &Tensor) -> Result<Tensor> {
    const CTX: &str = "interpolate";
    same_shape(CTX, real, fake)?;
    let batch = check_batch(CTX, real)?;
    if eps.elem_count() != batch || eps.rank() > 1 {
        return Err(Error::shape(CTX, format!("eps must have shape ({batch},), got {:?}", eps.dims())));
    }
    let mut eps_dims = vec![1usize; real.rank()];
    eps_dims[0] = batch;
    let eps = eps.to_dtype(real.dtype())?.reshape(eps_dims)?;
    let (real, fake) = (real.detach(), fake.detach());
    Ok((fake.broadcast_add(&real.sub(&fake)?.broadcast_mul(&eps)?))?)
}

/// WGAN-GP gradient penalty (Gulrajani, Ahmed, Arjovsky, Dumoulin & Courville 2017, "Improved
/// Training of Wasserstein GANs"):
///
/// ```text
/// x̂ = ε x_r + (1 − ε) x_f,   ε ~ U[0, 1] per sample
/// GP = λ · mean_b (‖∇_x̂ D(x̂)_b‖₂ − 1)²
/// ```
///
/// - `critic`: the critic `D` (any `Module`; see [`input_gradient`]). It should not mix samples
///   (no batch norm): the paper uses layer norm in the critic.
/// - `real`, `fake`: batches of the same shape `(B, ...)`, e.g. images `(B, C, H, W)` in
///   `[-1, 1]`; both are detached, so the penalty trains the critic only.
/// - `rng`: draws the `B` mixing weights `ε` (the crate's seeded generator, so runs repeat).
/// - `lambda`: the weight `λ` (the paper's 10).
///
/// Returns a scalar tensor whose graph reaches the critic's variables; add it to the critic loss
/// `mean D(x_f) − mean D(x_r)` before `backward()`. Costs one extra critic forward and a double
/// backward (see [`crate::nn::double_backward`]).
///
/// Errors: [`Error::Shape`] when `real` and `fake` differ in shape or are empty,
/// [`Error::Config`] (`"lambda"`) when `lambda` is negative or not finite, and the errors of
/// [`input_gradient`].
///
/// ```
/// use candle_core::{DType, Device, Module};
/// use candle_nn::{VarBuilder, VarMap};
/// use candle_generative::losses::penalty::gradient_penalty_wgan;
/// use candle_generative::rng::Rng;
///
/// let varmap = VarMap::new();
/// let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
/// let (l1, l2) = (candle_nn::linear(2, 16, vb.pp("l1"))?, candle_nn::linear(16, 1, vb.pp("l2"))?);
/// let critic = |x: &candle_core::Tensor| l2.forward(&candle_nn::ops::leaky_relu(&l1.forward(x)?, 0.2)?);
///
/// let mut rng = Rng::new(0);
/// let real = rng.randn((8, 2), DType::F32, &Device::Cpu)?;
/// let fake = rng.randn((8, 2), DType::F32, &Device::Cpu)?;
/// let gp = gradient_penalty_wgan(&critic, &real, &fake, &mut rng, 10.0)?;
/// let critic_loss = ((critic(&fake)?.mean_all()? - critic(&real)?.mean_all()?)? + &gp)?;
/// let grads = critic_loss.backward()?;
/// assert!(grads.get(l1.weight()).is_some(), "the penalty reaches the first layer");
/// # Ok::<(), candle_generative::Error>(())
/// ```
pub fn gradient_penalty_wgan<M: Module + ?Sized>(
    critic: &M,
    real: &Tensor,
    fake: &Tensor,
    rng: &mut Rng,
    lambda: f64,
) -> Result<Tensor> {
    const CTX: &str = "gradient_penalty_wgan";
    same_shape(CTX, real, fake)?;
    let batch = check_batch(CTX, real)?;
    check_weight("lambda", lambda)?;
    let eps = rng.uniform(batch, 0.0, 1.0, real.dtype(), real.device())?;
    gradient_penalty_wgan_at(critic, real, fake, &eps, lambda)
}

/// [`gradient_penalty_wgan`] with given mixing weights `eps` of shape `(B,)` (values in `[0, 1]`)
/// instead of random ones: for tests and for reproducing a step exactly. Same errors, plus
/// [`Error::Shape`] when `eps` does not hold `B` values.
pub fn gradient_penalty_wgan_at<M: Module + ?Sized>(
    critic: &M,
    real: &Tensor,
    fake: &Tensor,
    eps: &Tensor,
    lambda: f64,
) -> Result<Tensor> {
    check_weight("lambda", lambda)?;
    let interpolates = interpolate(real, fake, eps)?;
    let grad = input_gradient(critic, &interpolates)?;
    let deviation = (per_sample_norm(&grad)? - 1.0)?;
    Ok((deviation.sqr()?.mean_all()? * lambda)?)
}

/// R1 regulariser (Mescheder, Geiger & Nowozin 2018, "Which Training Methods for GANs do
/// actually Converge?"): a zero-centred gradient penalty on real data,
///
/// ```text
/// R1 = γ/2 · mean_b ‖∇ₓ D(x_r)_b‖₂²
/// ```
///
/// - `disc`: the discriminator `D`, returning logits `(B, ...)` (see [`input_gradient`]).
/// - `real`: a batch of real data `(B, ...)`, e.g. images in `[-1, 1]`; detached.
/// - `gamma`: the weight `γ` (10 in the paper for most data sets; StyleGAN2 uses 10 at 1024²,
///   smaller at lower resolution). With lazy regularisation (every `k` steps), pass `γ·k`.
///
/// Returns a scalar tensor whose graph reaches the discriminator's variables.
///
/// Errors: [`Error::Config`] (`"gamma"`) for a negative or non-finite `gamma`, [`Error::Shape`]
/// for an empty batch, and the errors of [`input_gradient`].
pub fn r1_penalty<M: Module + ?Sized>(disc: &M, real: &Tensor, gamma: f64) -> Result<Tensor> {
    zero_centred_penalty(disc, real, gamma)
}

/// R2 regulariser (Mescheder et al. 2018): the zero-centred penalty on generated data,
/// `R2 = γ/2 · mean_b ‖∇ₓ D(x_f)_b‖₂²`. Same arguments and errors as [`r1_penalty`], with `fake`
/// a batch of generated samples (detached: the penalty trains the discriminator only).
pub fn r2_penalty<M: Module + ?Sized>(disc: &M, fake: &Tensor, gamma: f64) -> Result<Tensor> {
    zero_centred_penalty(disc, fake, gamma)
}

fn zero_centred_penalty<M: Module + ?Sized>(disc: &M, x: &Tensor, gamma: f64) -> Result<Tensor> {
    check_weight("gamma", gamma)?;
    let grad = input_gradient(disc, x)?;
    Ok((per_sample_sq_norm(&grad)?.mean_all()? * (gamma / 2.0))?)
}

/// WGAN weight clipping (Arjovsky, Chintala & Bottou 2017, "Wasserstein GAN"): after each critic
/// update, `w ← clamp(w, −c, c)` for every variable, which bounds the critic's Lipschitz constant
/// (the paper uses `c = 0.01`). Pass the critic's variables, e.g. `&named.vars()` for a
/// [`NamedVars`](crate::optim::NamedVars); non-float variables are skipped.
///
/// Gulrajani et al. (2017) show that clipping biases the critic towards very simple functions;
/// prefer [`gradient_penalty_wgan`] or spectral normalisation.
///
/// Errors: [`Error::Config`] (`"c"`) unless `c` is finite and > 0.
pub fn clip_weights(vars: &[Var], c: f64) -> Result<()> {
    if !(c.is_finite() && c > 0.0) {
        return Err(Error::config("c", format!("the clipping bound must be finite and > 0, got {c}")));
    }
    for var in vars.iter().filter(|v| v.dtype().is_float()) {
        // candle converts the scalar bounds to the variable's dtype.
        var.set(&var.as_tensor().detach().clamp(-c, c)?)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::double_backward::thread_keeps_graph;
    use candle_core::{DType, Device};
    use candle_nn::{Conv2d, Conv2dConfig, Linear, VarBuilder, VarMap};

    /// Conv2d(1,4,3,s2,p1) → LeakyReLU(0.2) → Conv2d(4,4,3,s2,p1) → LeakyReLU(0.2) → flatten →
    /// Linear(16, 1), for (B, 1, 8, 8) inputs.
    struct ConvCritic {
        c1: Conv2d,
        c2: Conv2d,
        fc: Linear,
    }

    impl Module for ConvCritic {
        fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
            let h = candle_nn::ops::leaky_relu(&self.c1.forward(x)?, 0.2)?;
            let h = candle_nn::ops::leaky_relu(&self.c2.forward(&h)?, 0.2)?;
            self.fc.forward(&h.flatten_from(1)?)
        }
    }

    /// The critic and its variables in name order, every value drawn from a seeded `Rng`.
    fn conv_critic(seed: u64) -> Result<(ConvCritic, Vec<(String, Var)>)> {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F64, &Device::Cpu);
        let cfg = Conv2dConfig { padding: 1, stride: 2, ..Default::default() };
        let critic = ConvCritic {
            c1: candle_nn::conv2d(1, 4, 3, cfg, vb.pp("c1"))?,
            c2: candle_nn::conv2d(4, 4, 3, cfg, vb.pp("c2"))?,
            fc: candle_nn::linear(16, 1, vb.pp("fc"))?,
        };
        let mut vars: Vec<(String, Var)> = varmap.data().lock().expect("not poisoned").clone().into_iter().collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let mut rng = Rng::new(seed);
        for (_, var) in &vars {
            var.set(&(rng.randn(var.shape().clone(), DType::F64, &Device::Cpu)? * 0.5)?)?;
        }
        Ok((critic, vars))
    }

    fn inputs() -> Result<(Tensor, Tensor, Tensor)> {
        let mut rng = Rng::new(7);
        let real = rng.randn((3, 1, 8, 8), DType::F64, &Device::Cpu)?;
        let fake = (rng.randn((3, 1, 8, 8), DType::F64, &Device::Cpu)? * 0.5)?;
        let eps = Tensor::new(&[0.2f64, 0.55, 0.9], &Device::Cpu)?;
        Ok((real, fake, eps))
    }

    fn values(t: &Tensor) -> Result<Vec<f64>> {
        Ok(t.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?)
    }

    /// Central differences of `f` with respect to every entry of `var`.
    fn finite_differences(var: &Var, h: f64, f: &dyn Fn() -> Result<f64>) -> Result<Vec<f64>> {
        let original = var.as_tensor().detach().copy()?;
        let base = values(&original)?;
        let mut out = Vec::with_capacity(base.len());
        for i in 0..base.len() {
            let mut shifted = base.clone();
            shifted[i] = base[i] + h;
            var.set(&Tensor::from_vec(shifted.clone(), var.shape().clone(), &Device::Cpu)?)?;
            let plus = f()?;
            shifted[i] = base[i] - h;
            var.set(&Tensor::from_vec(shifted, var.shape().clone(), &Device::Cpu)?)?;
            let minus = f()?;
            out.push((plus - minus) / (2.0 * h));
        }
        var.set(&original)?;
        Ok(out)
    }

    fn norm(v: &[f64]) -> f64 {
        v.iter().map(|x| x * x).sum::<f64>().sqrt()
    }

    /// `‖a − b‖ / ‖b‖`, or `‖a − b‖` when `b` is (numerically) zero.
    fn relative_error(a: &[f64], b: &[f64]) -> f64 {
        let diff: Vec<f64> = a.iter().zip(b).map(|(x, y)| x - y).collect();
        norm(&diff) / norm(b).max(1e-8)
    }

    /// Compares the parameter gradients of `penalty` (from `backward`) with central differences,
    /// returning the relative error per variable; checks a few single entries on the way.
    fn compare_with_fd(
        vars: &[(String, Var)],
        penalty: &dyn Fn() -> Result<Tensor>,
        grads: &candle_core::backprop::GradStore,
    ) -> Result<Vec<(String, f64, f64)>> {
        let value = || -> Result<f64> { Ok(penalty()?.to_scalar::<f64>()?) };
        let mut report = Vec::new();
        for (name, var) in vars {
            let fd = finite_differences(var, 1e-5, &value)?;
            let analytic = match grads.get(var.as_tensor()) {
                Some(g) => values(g)?,
                None => vec![0.0; fd.len()],
            };
            report.push((name.clone(), relative_error(&analytic, &fd), norm(&fd)));
            // Individual entries: the first three with a sizeable derivative.
            for (a, f) in analytic.iter().zip(&fd).filter(|(_, f)| f.abs() > 1e-3).take(3) {
                let rel = (a - f).abs() / f.abs();
                report.push((format!("{name}[entry]"), rel, f.abs()));
            }
        }
        Ok(report)
    }

    fn assert_match(label: &str, report: &[(String, f64, f64)]) {
        let summary: Vec<String> =
            report.iter().filter(|r| !r.0.ends_with("]")).map(|r| format!("{} {:.1e}", r.0, r.1)).collect();
        eprintln!("{label} relative errors vs finite differences: {}", summary.join(", "));
        for (name, rel, fd_norm) in report {
            // Biases only enter the input gradient through activation masks: zero derivative.
            let ok = *rel < 1e-3 || (*fd_norm < 1e-7 && *rel < 1e-6);
            assert!(ok, "{label}: {name} relative error {rel:.3e} (‖fd‖ = {fd_norm:.3e})");
        }
        let weights = report.iter().filter(|(n, _, _)| n.ends_with(".weight"));
        for (name, _, fd_norm) in weights {
            assert!(*fd_norm > 1e-3, "{label}: {name} has a negligible gradient, the test would prove nothing");
        }
    }

    #[test]
    fn wgan_gp_parameter_gradients_match_finite_differences() -> Result<()> {
        let (critic, vars) = conv_critic(1)?;
        let (real, fake, eps) = inputs()?;
        let penalty = || gradient_penalty_wgan_at(&critic, &real, &fake, &eps, 10.0);
        let grads = penalty()?.backward()?;
        let report = compare_with_fd(&vars, &penalty, &grads)?;
        assert_match("WGAN-GP", &report);
        Ok(())
    }

    #[test]
    fn r1_and_r2_parameter_gradients_match_finite_differences() -> Result<()> {
        let (critic, vars) = conv_critic(2)?;
        let (real, fake, _) = inputs()?;
        let r1 = || r1_penalty(&critic, &real, 10.0);
        let report = compare_with_fd(&vars, &r1, &r1()?.backward()?)?;
        assert_match("R1", &report);
        let r2 = || r2_penalty(&critic, &fake, 1.0);
        let report = compare_with_fd(&vars, &r2, &r2()?.backward()?)?;
        assert_match("R2", &report);
        Ok(())
    }

    /// `∇ₓ Σ D(x)` by central differences on the host, one row per sample.
    fn fd_input_gradient(critic: &ConvCritic, x: &Tensor) -> Result<Vec<Vec<f64>>> {
        let var = Var::from_tensor(x)?;
        let g =
            finite_differences(&var, 1e-5, &|| Ok(critic.forward(var.as_tensor())?.sum_all()?.to_scalar::<f64>()?))?;
        let per_sample = g.len() / x.dim(0)?;
        Ok(g.chunks(per_sample).map(|c| c.to_vec()).collect())
    }

    #[test]
    fn penalty_values_match_an_independent_computation() -> Result<()> {
        let (critic, _) = conv_critic(3)?;
        let (real, fake, eps) = inputs()?;
        let lambda = 10.0;
        // WGAN-GP: interpolate on the host, differentiate by finite differences.
        let (r, f, e) = (values(&real)?, values(&fake)?, values(&eps)?);
        let per_sample = r.len() / 3;
        let mixed: Vec<f64> =
            (0..r.len()).map(|i| e[i / per_sample] * r[i] + (1.0 - e[i / per_sample]) * f[i]).collect();
        let mixed = Tensor::from_vec(mixed, real.shape().clone(), &Device::Cpu)?;
        let g = fd_input_gradient(&critic, &mixed)?;
        let expected = lambda * g.iter().map(|row| (norm(row) - 1.0).powi(2)).sum::<f64>() / 3.0;
        let got = gradient_penalty_wgan_at(&critic, &real, &fake, &eps, lambda)?.to_scalar::<f64>()?;
        assert!((got - expected).abs() <= 1e-7 * expected.abs(), "WGAN-GP {got} vs {expected}");
        // R1 on the real batch.
        let g = fd_input_gradient(&critic, &real)?;
        let expected = 5.0 * g.iter().map(|row| norm(row).powi(2)).sum::<f64>() / 3.0;
        let got = r1_penalty(&critic, &real, 10.0)?.to_scalar::<f64>()?;
        assert!((got - expected).abs() <= 1e-7 * expected.abs(), "R1 {got} vs {expected}");
        Ok(())
    }

    /// Negative control: the input gradient from a plain (detaching) `backward()` gives the same
    /// penalty *value* but wrong parameter gradients, so the tests above can fail.
    #[test]
    fn naive_detaching_backward_gives_wrong_parameter_gradients() -> Result<()> {
        // Probing under the crate's lock latches this thread to "detach" for certain.
        assert!(!thread_keeps_graph()?, "this test needs a thread that detaches gradients");
        let (critic, vars) = conv_critic(1)?;
        let (real, fake, eps) = inputs()?;
        let naive = || -> Result<Tensor> {
            let x = Var::from_tensor(&interpolate(&real, &fake, &eps)?)?;
            let grads = critic.forward(x.as_tensor())?.sum_all()?.backward()?;
            let g = grads.get(x.as_tensor()).expect("the critic reaches its input").clone();
            Ok(((per_sample_norm(&g)? - 1.0)?.sqr()?.mean_all()? * 10.0)?)
        };
        let correct = || gradient_penalty_wgan_at(&critic, &real, &fake, &eps, 10.0);
        let (v_naive, v_correct) = (naive()?.to_scalar::<f64>()?, correct()?.to_scalar::<f64>()?);
        assert!((v_naive - v_correct).abs() < 1e-12 * v_correct, "{v_naive} vs {v_correct}");

        let naive_grads = naive()?.backward()?;
        // The detached gradient keeps only the first layer's local factor `W1ᵀ·(detached upstream)`:
        // the deeper layers get no gradient at all. (The first layer's own gradient happens to be
        // right with piecewise-linear activations, whose upstream factor does not depend on W1.)
        for (name, var) in &vars[2..] {
            assert!(naive_grads.get(var.as_tensor()).is_none(), "{name} should get no gradient");
        }
        let report = compare_with_fd(&vars, &correct, &naive_grads)?;
        for deep in ["c2.weight", "fc.weight"] {
            let r = report.iter().find(|r| r.0 == deep).expect("every weight is compared");
            assert!(r.1 > 0.99 && r.2 > 1e-3, "{deep}: relative error {} of a gradient of norm {}", r.1, r.2);
        }
        Ok(())
    }

    #[test]
    fn random_mixing_weights_are_seeded() -> Result<()> {
        let (critic, _) = conv_critic(4)?;
        let (real, fake, _) = inputs()?;
        let a = gradient_penalty_wgan(&critic, &real, &fake, &mut Rng::new(9), 10.0)?.to_scalar::<f64>()?;
        let b = gradient_penalty_wgan(&critic, &real, &fake, &mut Rng::new(9), 10.0)?.to_scalar::<f64>()?;
        let c = gradient_penalty_wgan(&critic, &real, &fake, &mut Rng::new(10), 10.0)?.to_scalar::<f64>()?;
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(gradient_penalty_wgan(&critic, &real, &fake, &mut Rng::new(9), 0.0)?.to_scalar::<f64>()?, 0.0);
        Ok(())
    }

    #[test]
    fn bad_arguments_are_errors() -> Result<()> {
        let (critic, _) = conv_critic(5)?;
        let (real, fake, eps) = inputs()?;
        let mut rng = Rng::new(0);
        let is_shape = |r: Result<Tensor>| matches!(r, Err(Error::Shape { .. }));
        let is_config = |r: Result<Tensor>, f: &str| matches!(r, Err(Error::Config { field, .. }) if field == f);
        assert!(is_shape(gradient_penalty_wgan(&critic, &real, &fake.narrow(0, 0, 2)?, &mut rng, 10.0)));
        assert!(is_shape(gradient_penalty_wgan_at(&critic, &real, &fake, &eps.narrow(0, 0, 2)?, 10.0)));
        assert!(is_config(gradient_penalty_wgan(&critic, &real, &fake, &mut rng, -1.0), "lambda"));
        assert!(is_config(gradient_penalty_wgan_at(&critic, &real, &fake, &eps, f64::NAN), "lambda"));
        assert!(is_config(r1_penalty(&critic, &real, -0.1), "gamma"));
        assert!(is_config(r2_penalty(&critic, &fake, f64::INFINITY), "gamma"));
        let empty = real.narrow(0, 0, 0)?;
        assert!(is_shape(r1_penalty(&critic, &empty, 1.0)));
        let ints = Tensor::zeros((3, 4), DType::U32, &Device::Cpu)?;
        assert!(is_shape(r1_penalty(&critic, &ints, 1.0)));
        // An output without the batch dimension.
        let pooled = |x: &Tensor| critic.forward(x)?.mean_all();
        assert!(is_shape(r1_penalty(&pooled, &real, 1.0)));
        // No parameters: the penalty could train nothing.
        let fixed = |x: &Tensor| x.sqr()?.flatten_from(1)?.sum_keepdim(1);
        assert!(is_config(r1_penalty(&fixed, &real, 1.0), "critic"));
        // candle_nn::LayerNorm (contiguous input, with bias; F32 only) has no backward: the
        // graph is cut between the input and the output.
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
        let ln = candle_nn::layer_norm(64, 1e-5, vb.pp("ln"))?;
        let fc = candle_nn::linear(64, 1, vb.pp("fc"))?;
        let with_layer_norm = |x: &Tensor| fc.forward(&ln.forward(&x.flatten_from(1)?)?);
        let real32 = real.to_dtype(DType::F32)?;
        assert!(is_config(r1_penalty(&with_layer_norm, &real32, 1.0), "critic"));
        // The same network with a norm built from tensor ops works.
        let gn = candle_nn::group_norm(1, 1, 1e-5, vb.pp("gn"))?;
        let with_group_norm = |x: &Tensor| fc.forward(&gn.forward(x)?.flatten_from(1)?);
        assert!(r1_penalty(&with_group_norm, &real32, 1.0).is_ok());
        Ok(())
    }

    #[test]
    fn clip_weights_bounds_every_entry() -> Result<()> {
        let a = Var::new(&[-0.5f32, 0.003, 0.2], &Device::Cpu)?;
        let b = Var::new(&[[0.01f64, -0.02], [0.0, 1.0]], &Device::Cpu)?;
        let idx = Var::from_tensor(&Tensor::new(&[7u32], &Device::Cpu)?)?;
        clip_weights(&[a.clone(), b.clone(), idx.clone()], 0.01)?;
        assert_eq!(a.to_vec1::<f32>()?, vec![-0.01, 0.003, 0.01]);
        assert_eq!(b.to_vec2::<f64>()?, vec![vec![0.01, -0.01], vec![0.0, 0.01]]);
        assert_eq!(idx.to_vec1::<u32>()?, vec![7]);
        for c in [0.0, -1.0, f64::NAN] {
            assert!(matches!(clip_weights(std::slice::from_ref(&a), c), Err(Error::Config { .. })));
        }
        Ok(())
    }
}
