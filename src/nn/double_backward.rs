//! Backward passes that keep their own graph, so a function of a gradient can be differentiated
//! again (second-order gradients, as PyTorch's `torch.autograd.grad(..., create_graph=True)`).
//!
//! # Why this is needed
//!
//! candle 0.11's `Tensor::backward` detaches the gradient of every node it visits unless the
//! environment variable `CANDLE_GRAD_DO_NOT_DETACH` is set to something other than `""`/`"0"`.
//! The variable is read **once per thread**, into a `thread_local`, the first time a backward
//! pass on that thread reaches a node (`candle-core/src/backprop.rs`); after that, changing the
//! environment has no effect on the thread. With detaching, an input gradient `∇ₓ D(x)` still
//! holds the graph of the last local factor (for a first layer `W₁x`, `W₁ᵀ · detached upstream`),
//! so a penalty built on it gives the first layer's weights a gradient and every deeper layer
//! none, without any error: the failure is silent.
//!
//! # The mechanism
//!
//! [`backward_with_graph`] runs `loss.backward()` on a thread whose flag is "do not detach":
//!
//! 1. If the calling thread already keeps graphs (the process was started with
//!    `CANDLE_GRAD_DO_NOT_DETACH=1`), the backward runs right there.
//! 2. Otherwise, under a process-wide mutex, it sets `CANDLE_GRAD_DO_NOT_DETACH=1`, spawns a
//!    scoped thread (`std::thread::scope`) whose first act is a tiny probe backward that latches
//!    the flag, waits for the probe, restores the variable to its previous value (or removes it),
//!    and releases the mutex. The scoped thread then runs `loss.backward()` and hands the
//!    `GradStore` back (tensors are `Send`).
//!
//! The probe does not merely latch the flag, it *checks* it: it differentiates `x⁴` twice at
//! `x = 1`, which gives `12` when the first gradient kept its graph and `4` when it was detached.
//! Anything else, or `4` on the scoped thread, is an error, so a future candle that renames or
//! drops the variable makes the penalties fail loudly instead of training with wrong gradients.
//!
//! The returned gradients carry the graph of the backward pass. Any function of them (a norm, a
//! penalty) is an ordinary tensor expression, and the caller's ordinary `loss.backward()` on any
//! thread, detaching or not, differentiates it: the outer pass is a *first-order* backward
//! through a graph that happens to contain the first pass's ops, and detaching only cuts the
//! graph of the *outer* gradients, which nobody differentiates again.
//!
//! # Caveats, stated honestly
//!
//! - **The environment window.** For the few microseconds between setting and restoring the
//!   variable, any *other* thread of the process that runs its very first candle backward latches
//!   "do not detach" for its lifetime. Its gradients keep their values (detaching never changes a
//!   gradient's value), but they hold their graph, which costs memory until they are dropped.
//!   Threads that already ran a backward are unaffected, and concurrent calls of this module
//!   serialise on the mutex. Do a first backward (or call [`thread_keeps_graph`]) on long-lived
//!   worker threads before training to rule this out completely.
//! - **`set_var` and C code.** Rust's `std::env` functions lock the environment, but C code that
//!   calls `getenv` concurrently (some BLAS or driver initialisation) does not take that lock;
//!   POSIX makes a concurrent `setenv`/`getenv` a data race. Starting the process with
//!   `CANDLE_GRAD_DO_NOT_DETACH=1` avoids the environment change (step 1), at the price of every
//!   backward of the process keeping its graph.
//! - **Cost.** One thread spawn (tens of microseconds) and two scalar backward passes per call,
//!   negligible next to a network's backward. The real cost is the one of any double backward:
//!   the first pass computes (and keeps graphs for) the gradients of *every* variable the loss
//!   reaches, not only the input's, and the forward activations stay alive until the outer
//!   backward is done: expect about 2-3× the memory and time of a plain backward.
//! - **Devices.** Only the backward pass moves to the other thread; the forward pass stays on
//!   the caller's. This was checked on CPU; CUDA and Metal tensors are `Send`, but running their
//!   backward from a second host thread was not tested on a GPU here.

use std::cell::Cell;
use std::ffi::OsString;
use std::sync::{mpsc, Mutex, MutexGuard};

use candle_core::backprop::GradStore;
use candle_core::{Device, Tensor, Var};

use crate::{Error, Result};

/// The environment variable candle 0.11 reads (once per thread) to decide whether `backward`
/// keeps the graph of the gradients it computes.
pub const DO_NOT_DETACH_ENV: &str = "CANDLE_GRAD_DO_NOT_DETACH";

/// Serialises every read of a thread's flag and every change of [`DO_NOT_DETACH_ENV`] made here.
static ENV_LOCK: Mutex<()> = Mutex::new(());

thread_local! {
    /// This thread's probed flag; candle never changes it once latched, so it can be cached.
    static KEEPS_GRAPH: Cell<Option<bool>> = const { Cell::new(None) };
}

fn lock_env() -> MutexGuard<'static, ()> {
    // The mutex guards no data, only a critical section: a poisoned lock is still usable.
    ENV_LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn candle_error(message: String) -> Error {
    Error::Candle(candle_core::Error::Msg(message))
}

/// Latches (if not yet latched) and reads the calling thread's candle flag by differentiating
/// `x⁴ = (x²)²` twice at `x = 1`: `12` when gradients keep their graph, `4` when they are
/// detached (in `d(x²)²/dx = 2x² · 2x` the upstream factor `2x²` is then a constant, `2`).
fn probe_current_thread() -> Result<bool> {
    // The flag is per host thread, not per device, so the probe runs on the CPU in `F64`
    // whatever device the model uses.
    let x = Var::new(1f64, &Device::Cpu)?;
    let y = x.as_tensor().sqr()?.sqr()?;
    let first = y.backward()?;
    let dy = first.get(x.as_tensor()).ok_or_else(|| candle_error("probe: no gradient for x".into()))?;
    let second = dy.backward()?;
    let d2y = match second.get(x.as_tensor()) {
        Some(g) => g.to_scalar::<f64>()?,
        None => 0.0,
    };
    if d2y == 12.0 {
        Ok(true)
    } else if d2y == 4.0 {
        Ok(false)
    } else {
        Err(candle_error(format!(
            "second-order probe: d²(x⁴)/dx² at x = 1 gave {d2y}, expected 12 (graph kept) or 4 (detached); \
             candle's backward changed, second-order gradients cannot be trusted"
        )))
    }
}

/// Whether candle's `backward` keeps the graph of gradients on the calling thread.
///
/// The first call on a thread runs a tiny probe backward (which, like any first backward,
/// latches candle's per-thread flag from [`DO_NOT_DETACH_ENV`] as it is now) and caches the
/// answer; later calls are free. `false` is the normal case; it is `true` only when the process
/// environment had `CANDLE_GRAD_DO_NOT_DETACH` set when the thread ran its first backward.
pub fn thread_keeps_graph() -> Result<bool> {
    if let Some(known) = KEEPS_GRAPH.with(Cell::get) {
        return Ok(known);
    }
    // Under the lock, so the probe cannot latch during another call's environment window.
    let _guard = lock_env();
    let keeps = probe_current_thread()?;
    KEEPS_GRAPH.with(|k| k.set(Some(keeps)));
    Ok(keeps)
}

/// Sets [`DO_NOT_DETACH_ENV`] for as long as it lives, under the lock; dropping it restores the
/// previous value (also on early return or panic), then releases the lock.
struct EnvWindow {
    previous: Option<OsString>,
    _guard: MutexGuard<'static, ()>,
}

impl EnvWindow {
    fn open() -> Self {
        let guard = lock_env();
        let previous = std::env::var_os(DO_NOT_DETACH_ENV);
        std::env::set_var(DO_NOT_DETACH_ENV, "1");
        Self { previous, _guard: guard }
    }
}

impl Drop for EnvWindow {
    fn drop(&mut self) {
        match self.previous.take() {
            Some(value) => std::env::set_var(DO_NOT_DETACH_ENV, value),
            None => std::env::remove_var(DO_NOT_DETACH_ENV),
        }
    }
}

/// `loss.backward()` with the graph of every gradient kept, so that functions of the gradients
/// can be differentiated again (PyTorch's `create_graph=True`).
///
/// For a network `D` with parameters `θ` and an input variable `x`, the gradient `g = ∇ₓ D(x)`
/// found in the returned store is a differentiable function of `θ` (and of `x`), and
/// `f(g).backward()` on any thread yields `∂f(∇ₓ D(x))/∂θ`. The mechanism (a scoped thread whose
/// candle flag is latched to "do not detach"), its caveats and its cost are described in the
/// [module documentation](self).
///
/// `loss` must be a scalar, as for `Tensor::backward`. Every op on the path from the variables
/// to `loss` must have a backward rule, and for the *second* differentiation, the ops that those
/// rules use must have one too; see [`crate::losses::penalty`] for the layers checked.
///
/// Errors: candle's errors from the backward pass, and [`Error::Candle`] when the thread cannot
/// be spawned or the probe finds that candle no longer honours [`DO_NOT_DETACH_ENV`].
///
/// ```
/// use candle_core::{Device, Var};
/// use candle_generative::nn::double_backward::backward_with_graph;
///
/// // f(x) = x³ at x = 2: f'(x) = 3x² = 12, and f''(x) = 6x = 12 needs the graph of f'.
/// let x = Var::new(2f64, &Device::Cpu)?;
/// let y = x.as_tensor().powf(3.0)?;
/// let grads = backward_with_graph(&y)?;
/// let dy = grads.get(x.as_tensor()).expect("y depends on x");
/// assert_eq!(dy.to_scalar::<f64>()?, 12.0);
/// let d2y = dy.backward()?;
/// assert_eq!(d2y.get(x.as_tensor()).expect("dy depends on x").to_scalar::<f64>()?, 12.0);
/// # Ok::<(), candle_generative::Error>(())
/// ```
pub fn backward_with_graph(loss: &Tensor) -> Result<GradStore> {
    if thread_keeps_graph()? {
        return Ok(loss.backward()?);
    }
    let window = EnvWindow::open();
    std::thread::scope(|scope| {
        let (latched_tx, latched_rx) = mpsc::sync_channel::<()>(1);
        let worker = std::thread::Builder::new().name("candle-generative-double-backward".into()).spawn_scoped(
            scope,
            move || -> Result<GradStore> {
                let keeps = probe_current_thread();
                // The flag is latched (or the probe failed): the environment can be restored.
                let _ = latched_tx.send(());
                if !keeps? {
                    return Err(candle_error(format!(
                        "a thread started with {DO_NOT_DETACH_ENV}=1 still detaches gradients: this candle \
                         version no longer reads that variable, so second-order gradients are unavailable"
                    )));
                }
                Ok(loss.backward()?)
            },
        );
        // If the worker ends before signalling (spawn failure, panic), `recv` fails: restore anyway.
        let _ = latched_rx.recv();
        drop(window);
        let worker = worker.map_err(|e| candle_error(format!("cannot spawn the double-backward thread: {e}")))?;
        match worker.join() {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::DType;

    #[test]
    fn probe_distinguishes_detached_from_kept_graphs() -> Result<()> {
        // The test harness never sets the variable, so the test thread detaches, while the
        // scoped thread keeps graphs: both answers of the probe are exercised.
        assert!(!thread_keeps_graph()?);
        let x = Var::new(1f64, &Device::Cpu)?;
        let y = x.as_tensor().sqr()?.sqr()?;
        let naive = y.backward()?.get(x.as_tensor()).expect("y depends on x").backward()?;
        assert_eq!(naive.get(x.as_tensor()).expect("graph reaches x").to_scalar::<f64>()?, 4.0);
        let kept = backward_with_graph(&y)?.get(x.as_tensor()).expect("y depends on x").backward()?;
        assert_eq!(kept.get(x.as_tensor()).expect("graph reaches x").to_scalar::<f64>()?, 12.0);
        Ok(())
    }

    #[test]
    fn environment_is_restored() -> Result<()> {
        let before = {
            let _guard = lock_env();
            std::env::var_os(DO_NOT_DETACH_ENV)
        };
        let x = Var::new(&[1f32, 2.0], &Device::Cpu)?;
        let y = x.as_tensor().sqr()?.sum_all()?;
        let _ = backward_with_graph(&y)?;
        // Read under the lock: a concurrent test's window is then closed.
        let _guard = lock_env();
        assert_eq!(std::env::var_os(DO_NOT_DETACH_ENV), before);
        Ok(())
    }

    /// Second-order correctness of candle's ops, layer by layer: the parameter gradient of
    /// `P(θ) = Σ_b (‖g_b‖ − ½)² + Σ c ⊙ g`, with `g = ∇ₓ Σ D(x)` from [`backward_with_graph`],
    /// against central differences of `P` in `F64`.
    mod layers {
        use super::*;
        use crate::nn::spectral_norm::{is_power_iteration_state, SnConv2d, SnConv2dConfig, SnLinear};
        use crate::rng::Rng;
        use candle_core::{Module, D};
        use candle_nn::{Conv2dConfig, ConvTranspose2dConfig, ModuleT, VarBuilder, VarMap};

        type Critic<'a> = &'a dyn Fn(&Tensor) -> candle_core::Result<Tensor>;

        fn functional(critic: Critic, x: &Tensor, c: &Tensor) -> Result<Tensor> {
            let input = Var::from_tensor(x)?;
            let out = critic(input.as_tensor())?.sum_all()?;
            let g = backward_with_graph(&out)?.get(input.as_tensor()).expect("output reaches input").clone();
            let b = g.dim(0)?;
            let norms = (g.reshape((b, ()))?.sqr()?.sum(1)? + 1e-12)?.sqrt()?;
            Ok(((norms - 0.5)?.sqr()?.sum_all()? + (g * c)?.sum_all()?)?)
        }

        fn trainable(varmap: &VarMap) -> Vec<(String, Var)> {
            let data = varmap.data().lock().expect("not poisoned");
            let mut vars: Vec<(String, Var)> = data
                .iter()
                .filter(|(n, _)| !n.contains("running_") && !is_power_iteration_state(n))
                .map(|(n, v)| (n.clone(), v.clone()))
                .collect();
            vars.sort_by(|a, b| a.0.cmp(&b.0));
            vars
        }

        fn randomise(vars: &[(String, Var)], seed: u64) -> Result<()> {
            let mut rng = Rng::new(seed);
            for (name, var) in vars {
                // Normalisation scales near 1, everything else small and random.
                let noise = (rng.randn(var.shape().clone(), DType::F64, &Device::Cpu)? * 0.5)?;
                let value = if name.ends_with("weight") && var.rank() == 1 { ((noise * 0.2)? + 1.0)? } else { noise };
                var.set(&value)?;
            }
            Ok(())
        }

        fn flat(t: &Tensor) -> Result<Vec<f64>> {
            Ok(t.flatten_all()?.to_vec1::<f64>()?)
        }

        /// The worst relative error over the variables, after checking each.
        fn check(label: &str, varmap: &VarMap, x: &Tensor, critic: Critic) -> Result<f64> {
            let vars = trainable(varmap);
            randomise(&vars, 11)?;
            let c = Rng::new(12).randn(x.shape().clone(), DType::F64, &Device::Cpu)?;
            let grads = functional(critic, x, &c)?.backward()?;
            let value = || -> Result<f64> { Ok(functional(critic, x, &c)?.to_scalar::<f64>()?) };
            let mut worst = 0f64;
            for (name, var) in &vars {
                let original = var.as_tensor().detach().copy()?;
                let base = flat(&original)?;
                let h = 1e-5;
                let mut fd = Vec::with_capacity(base.len());
                for i in 0..base.len() {
                    let mut p = base.clone();
                    p[i] += h;
                    var.set(&Tensor::from_vec(p.clone(), var.shape().clone(), &Device::Cpu)?)?;
                    let plus = value()?;
                    p[i] -= 2.0 * h;
                    var.set(&Tensor::from_vec(p, var.shape().clone(), &Device::Cpu)?)?;
                    fd.push((plus - value()?) / (2.0 * h));
                }
                var.set(&original)?;
                let analytic = match grads.get(var.as_tensor()) {
                    Some(g) => flat(g)?,
                    None => vec![0.0; fd.len()],
                };
                let diff = analytic.iter().zip(&fd).map(|(a, f)| (a - f).powi(2)).sum::<f64>().sqrt();
                let scale = fd.iter().map(|f| f * f).sum::<f64>().sqrt();
                // Below 1e-6, a "gradient" is finite-difference noise (e.g. a bias cancelled by a norm).
                let rel = diff / scale.max(1e-6);
                assert!(rel < 1e-4, "{label}: {name} relative error {rel:.2e} (‖fd‖ = {scale:.2e})");
                worst = worst.max(rel);
            }
            eprintln!("{label}: worst relative error {worst:.1e} over {} variables", vars.len());
            Ok(worst)
        }

        fn builder(varmap: &VarMap) -> VarBuilder<'static> {
            VarBuilder::from_varmap(varmap, DType::F64, &Device::Cpu)
        }

        fn input(shape: &[usize], seed: u64) -> Result<Tensor> {
            Rng::new(seed).randn(shape, DType::F64, &Device::Cpu)
        }

        #[test]
        fn mlp_activations() -> Result<()> {
            type Act = fn(&Tensor) -> candle_core::Result<Tensor>;
            let acts: [(&str, Act); 13] = [
                ("relu", |h| h.relu()),
                ("leaky_relu", |h| candle_nn::ops::leaky_relu(h, 0.1)),
                ("tanh", |h| h.tanh()),
                ("sigmoid", candle_nn::ops::sigmoid),
                ("silu", |h| h.silu()),
                ("gelu", |h| h.gelu()),
                ("gelu_erf", |h| h.gelu_erf()),
                ("elu", |h| h.elu(1.0)),
                ("softplus (exp, log)", |h| (h.exp()? + 1.0)?.log()),
                ("sqrt (x² + 1)", |h| (h.sqr()? + 1.0)?.sqrt()),
                ("abs, div", |h| h.abs()?.div(&(h.sqr()? + 2.0)?)),
                ("powf", |h| (h.sqr()? + 1.0)?.powf(1.5)),
                ("narrow, cat", |h| Tensor::cat(&[h.narrow(1, 0, 2)?.tanh()?, h.narrow(1, 2, 2)?.sqr()?], 1)),
            ];
            let x = input(&[2, 3], 1)?;
            for (name, act) in acts {
                let vm = VarMap::new();
                let vb = builder(&vm);
                let l1 = candle_nn::linear(3, 4, vb.pp("l1"))?;
                let l2 = candle_nn::linear(4, 1, vb.pp("l2"))?;
                check(name, &vm, &x, &|x| l2.forward(&act(&l1.forward(x)?)?))?;
            }
            Ok(())
        }

        #[test]
        fn convolutions() -> Result<()> {
            let vm = VarMap::new();
            let vb = builder(&vm);
            let cfg = Conv2dConfig { padding: 2, stride: 2, dilation: 2, groups: 2, ..Default::default() };
            let conv = candle_nn::conv2d(2, 4, 3, cfg, vb.pp("conv"))?;
            let fc = candle_nn::linear(4 * 9, 1, vb.pp("fc"))?;
            let x = input(&[2, 2, 6, 6], 2)?;
            check("conv2d stride 2, padding 2, dilation 2, groups 2", &vm, &x, &|x| {
                fc.forward(&conv.forward(x)?.tanh()?.flatten_from(1)?)
            })?;

            let vm = VarMap::new();
            let vb = builder(&vm);
            let cfg = ConvTranspose2dConfig { padding: 1, output_padding: 1, stride: 2, dilation: 1 };
            let up = candle_nn::conv_transpose2d(2, 3, 3, cfg, vb.pp("up"))?;
            let fc = candle_nn::linear(3, 1, vb.pp("fc"))?;
            let x = input(&[2, 2, 3, 3], 3)?;
            check("conv_transpose2d stride 2, output padding 1", &vm, &x, &|x| {
                fc.forward(&up.forward(x)?.silu()?.mean(D::Minus1)?.mean(D::Minus1)?)
            })?;
            Ok(())
        }

        #[test]
        fn pooling_and_upsampling() -> Result<()> {
            let vm = VarMap::new();
            let vb = builder(&vm);
            let conv = candle_nn::conv2d(1, 3, 3, Conv2dConfig { padding: 1, ..Default::default() }, vb.pp("conv"))?;
            let fc = candle_nn::linear(3 * 4, 1, vb.pp("fc"))?;
            let x = input(&[2, 1, 8, 8], 4)?;
            check("avg_pool2d, max_pool2d (kernel = stride)", &vm, &x, &|x| {
                let h = conv.forward(x)?.relu()?.avg_pool2d(2)?.tanh()?.max_pool2d(2)?;
                fc.forward(&h.flatten_from(1)?)
            })?;

            let vm = VarMap::new();
            let vb = builder(&vm);
            let conv = candle_nn::conv2d(1, 2, 3, Conv2dConfig { padding: 1, ..Default::default() }, vb.pp("conv"))?;
            let fc = candle_nn::linear(2 * 36, 1, vb.pp("fc"))?;
            let x = input(&[2, 1, 3, 3], 5)?;
            check("upsample_nearest2d ×2", &vm, &x, &|x| {
                fc.forward(&conv.forward(&x.upsample_nearest2d(6, 6)?)?.tanh()?.flatten_from(1)?)
            })?;
            Ok(())
        }

        #[test]
        fn normalisations() -> Result<()> {
            let vm = VarMap::new();
            let vb = builder(&vm);
            let conv = candle_nn::conv2d(2, 4, 3, Conv2dConfig { padding: 1, ..Default::default() }, vb.pp("conv"))?;
            let gn = candle_nn::group_norm(2, 4, 1e-5, vb.pp("gn"))?;
            let fc = candle_nn::linear(4 * 9, 1, vb.pp("fc"))?;
            let x = input(&[2, 2, 3, 3], 6)?;
            check("group_norm", &vm, &x, &|x| {
                let h = candle_nn::ops::leaky_relu(&gn.forward(&conv.forward(x)?)?, 0.2)?;
                fc.forward(&h.flatten_from(1)?)
            })?;

            let vm = VarMap::new();
            let vb = builder(&vm);
            let l1 = candle_nn::linear(3, 4, vb.pp("l1"))?;
            let bn = candle_nn::batch_norm(4, candle_nn::BatchNormConfig::default(), vb.pp("bn"))?;
            let l2 = candle_nn::linear(4, 1, vb.pp("l2"))?;
            let x = input(&[4, 3], 7)?;
            check("batch_norm (training mode)", &vm, &x, &|x| {
                l2.forward(&bn.forward_t(&l1.forward(x)?, true)?.tanh()?)
            })?;

            let vm = VarMap::new();
            let vb = builder(&vm);
            let l1 = candle_nn::linear(3, 5, vb.pp("l1"))?;
            let scale = vb.get_with_hints(5, "ln.weight", candle_nn::Init::Const(1.0))?;
            let shift = vb.get_with_hints(5, "ln.bias", candle_nn::Init::Const(0.0))?;
            let l2 = candle_nn::linear(5, 1, vb.pp("l2"))?;
            let x = input(&[2, 3], 8)?;
            check("layer norm from tensor ops (mean, sqrt)", &vm, &x, &|x| {
                let h = l1.forward(x)?;
                let centred = h.broadcast_sub(&h.mean_keepdim(1)?)?;
                let std = (centred.sqr()?.mean_keepdim(1)? + 1e-5)?.sqrt()?;
                let normed = centred.broadcast_div(&std)?.broadcast_mul(&scale)?.broadcast_add(&shift)?;
                l2.forward(&normed.tanh()?)
            })?;
            Ok(())
        }

        #[test]
        fn spectral_norm_layers() -> Result<()> {
            let vm = VarMap::new();
            let vb = builder(&vm);
            let mut rng = Rng::new(0);
            let conv_cfg = SnConv2dConfig {
                conv: Conv2dConfig { padding: 1, stride: 2, ..Default::default() },
                ..Default::default()
            };
            let conv = SnConv2d::new(1, 2, 3, conv_cfg, vb.pp("conv"), &mut rng)?;
            let fc = SnLinear::new(2 * 4, 1, true, Default::default(), vb.pp("fc"), &mut rng)?;
            let x = input(&[2, 1, 4, 4], 9)?;
            // Evaluation mode: u, v stay fixed while the finite differences move the weights.
            check("SnConv2d, SnLinear (eval)", &vm, &x, &|x| {
                let h = candle_nn::ops::leaky_relu(&conv.forward_t(x, false)?, 0.2)?;
                fc.forward_t(&h.flatten_from(1)?, false)
            })?;
            Ok(())
        }

        #[test]
        fn conv1d_second_order_is_an_error_not_a_wrong_value() -> Result<()> {
            let vm = VarMap::new();
            let vb = builder(&vm);
            let conv = candle_nn::conv1d(1, 2, 3, Default::default(), vb.pp("conv"))?;
            let x = Var::from_tensor(&input(&[2, 1, 6], 10)?)?;
            let out = conv.forward(x.as_tensor())?.tanh()?.sum_all()?;
            let g = backward_with_graph(&out)?.get(x.as_tensor()).expect("reaches input").clone();
            // The input gradient is a conv_transpose1d, whose backward candle 0.11 refuses.
            let err = g.sqr()?.sum_all()?.backward().expect_err("conv_transpose1d has no backward");
            assert!(err.to_string().contains("conv-transpose1d"), "{err}");
            Ok(())
        }
    }

    #[test]
    fn hessian_vector_product_of_a_quadratic() -> Result<()> {
        // f(x) = ½ xᵀAx with symmetric A: ∇f = Ax, and ∇(vᵀ∇f) = Av.
        let dev = Device::Cpu;
        let a = Tensor::new(&[[2f64, 1.0, 0.0], [1.0, 3.0, -1.0], [0.0, -1.0, 4.0]], &dev)?;
        let x = Var::new(&[[0.5f64], [-1.0], [2.0]], &dev)?;
        let f = (x.as_tensor().t()?.matmul(&a.matmul(x.as_tensor())?)? * 0.5)?.sum_all()?;
        let grad = backward_with_graph(&f)?.get(x.as_tensor()).expect("f depends on x").clone();
        let v = Tensor::new(&[[1f64], [0.0], [-2.0]], &dev)?;
        let hv = grad.mul(&v)?.sum_all()?.backward()?.get(x.as_tensor()).expect("reaches x").clone();
        let expected = a.matmul(&v)?;
        let diff = (hv - expected)?.abs()?.max_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        assert!(diff < 1e-12, "Hessian-vector product off by {diff}");
        Ok(())
    }
}
