//! Spectral normalisation of a weight by power iteration (Miyato, Kataoka, Koyama & Yoshida
//! 2018, "Spectral Normalization for Generative Adversarial Networks").
//!
//! A weight `W` of any rank is viewed as the matrix `W_mat` of shape `(out, rest)` (its first
//! dimension against all the others, as PyTorch's `spectral_norm` with `dim = 0`), and divided
//! by an estimate of its largest singular value `σ(W_mat)`:
//!
//! ```text
//! train step, repeated n_power_iterations times (no gradient flows through u, v):
//!     v ← W_matᵀ u / max(‖W_matᵀ u‖, ε)
//!     u ← W_mat v / max(‖W_mat v‖, ε)
//! σ = uᵀ W_mat v            (differentiable in W, with u and v held constant)
//! W_SN = W / σ
//! ```
//!
//! The gradient of `σ` with respect to `W_mat` is `u vᵀ`, the paper's formula. One iteration per
//! training step suffices because `u` persists between steps and `W` changes slowly. In
//! evaluation (`train = false`) the stored `u`, `v` are used as they are, so inference is
//! deterministic, as in PyTorch.
//!
//! **State**: `u` (length `out`) and `v` (length `rest`) are variables of the `VarMap` named
//! `<name>_u` and `<name>_v` next to the weight (`weight_orig`, `weight_u`, `weight_v` for the
//! ready-made layers, the names of PyTorch's `torch.nn.utils.spectral_norm`), so checkpoints
//! carry them and a resumed run continues the same power iteration. They never receive a
//! gradient; keep them out of optimizers, EMA and re-initialisation with
//! [`is_power_iteration_state`]. They are initialised from the crate's seeded [`Rng`] (a normal
//! vector, normalised) when the `VarMap` creates them, and left alone when they are loaded.
//!
//! Ready-made layers: [`SnLinear`] and [`SnConv2d`] (`candle_nn::ModuleT`: the train flag runs
//! the power iteration). Penalties such as [`crate::losses::penalty::gradient_penalty_wgan`]
//! differentiate through them.
//!
//! ```
//! use candle_core::{DType, Device, Tensor};
//! use candle_nn::{ModuleT, VarBuilder, VarMap};
//! use candle_generative::nn::spectral_norm::{is_power_iteration_state, SnLinear};
//! use candle_generative::optim::NamedVars;
//! use candle_generative::rng::Rng;
//!
//! let varmap = VarMap::new();
//! let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
//! let mut rng = Rng::new(0);
//! let fc = SnLinear::new(8, 4, true, Default::default(), vb.pp("fc"), &mut rng)?;
//! let x = Tensor::ones((2, 8), DType::F32, &Device::Cpu)?;
//! let y = fc.forward_t(&x, true)?; // one power iteration, then x W_SNᵀ + b
//! assert_eq!(y.dims(), &[2, 4]);
//! let trainable = NamedVars::filtered(&varmap, |name| !is_power_iteration_state(name));
//! assert_eq!(trainable.names(), vec!["fc.bias", "fc.weight_orig"]);
//! # Ok::<(), candle_generative::Error>(())
//! ```

use candle_core::{DType, Tensor, Var};
use candle_nn::{Conv2dConfig, Init, ModuleT, VarBuilder};
use serde::{Deserialize, Serialize};

use crate::rng::Rng;
use crate::{Error, Result};

/// Suffix of the left singular vector estimate's variable name (`weight` → `weight_u`).
pub const U_SUFFIX: &str = "_u";
/// Suffix of the right singular vector estimate's variable name (`weight` → `weight_v`).
pub const V_SUFFIX: &str = "_v";

/// `true` for the names of power-iteration state (`…_u`, `…_v` in the last path segment),
/// which must not be trained, decayed, averaged or re-initialised:
/// `NamedVars::filtered(&varmap, |n| !is_power_iteration_state(n))`.
pub fn is_power_iteration_state(name: &str) -> bool {
    let last = name.rsplit('.').next().unwrap_or(name);
    last.ends_with(U_SUFFIX) || last.ends_with(V_SUFFIX)
}

/// Hyper-parameters of [`SpectralNorm`]; the defaults are PyTorch's.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SpectralNormConfig {
    /// Power iterations per training forward pass (> 0; the paper and PyTorch use 1).
    pub n_power_iterations: usize,
    /// `ε` in the normalisation `x / max(‖x‖, ε)` (> 0).
    pub eps: f64,
}

impl Default for SpectralNormConfig {
    fn default() -> Self {
        Self { n_power_iterations: 1, eps: 1e-12 }
    }
}

impl SpectralNormConfig {
    /// Checks both fields; the error names the one out of range.
    pub fn validate(&self) -> Result<()> {
        if self.n_power_iterations == 0 {
            return Err(Error::config("SpectralNormConfig.n_power_iterations", "must be > 0, got 0"));
        }
        if !(self.eps.is_finite() && self.eps > 0.0) {
            return Err(Error::config("SpectralNormConfig.eps", format!("must be finite and > 0, got {}", self.eps)));
        }
        Ok(())
    }
}

/// A weight with its power-iteration state: `W / σ(W)` (Miyato et al. 2018), see the
/// [module documentation](self) for the algorithm.
#[derive(Debug, Clone)]
pub struct SpectralNorm {
    weight: Tensor,
    u: Var,
    v: Var,
    rows: usize,
    cols: usize,
    config: SpectralNormConfig,
}

/// `x / max(‖x‖, ε)` for a column vector.
fn normalize(x: &Tensor, eps: f64) -> Result<Tensor> {
    let norm = x.sqr()?.sum_all()?.sqrt()?.maximum(eps)?;
    Ok(x.broadcast_div(&norm)?)
}

/// The computation dtype of the power iteration: half precision is iterated in `F32`.
fn iteration_dtype(dtype: DType) -> DType {
    match dtype {
        DType::F16 | DType::BF16 => DType::F32,
        d => d,
    }
}

/// Reads `name` from `vb`, creating it (zero-filled, then set from `rng`) when absent. A loaded
/// value is kept; a `VarMap` variable is shared, so later `set`s reach the `VarMap`.
fn state_vector(vb: &VarBuilder, name: &str, len: usize, rng: &mut Rng, eps: f64) -> Result<Var> {
    let t = vb.get_with_hints(len, name, Init::Const(0.0))?;
    // A unit vector is never all zeros, so zeros mean "just created by the VarMap".
    let fresh = t.to_dtype(DType::F32)?.abs()?.sum_all()?.to_scalar::<f32>()? == 0.0;
    let var = Var::from_tensor(&t)?;
    if fresh {
        let dtype = iteration_dtype(t.dtype());
        let noise = rng.randn((len, 1), dtype, t.device())?;
        var.set(&normalize(&noise, eps)?.reshape(len)?.to_dtype(t.dtype())?)?;
    }
    Ok(var)
}

impl SpectralNorm {
    /// Spectral normalisation of `weight` (rank >= 1; a `Var`'s tensor, e.g. from
    /// `vb.get_with_hints`), with its state vectors read from or created in `vb` as
    /// `<name>_u` (length `weight.dim(0)`) and `<name>_v` (length of the other dimensions' product).
    ///
    /// Errors: [`Error::Config`] for an invalid `config`, [`Error::Shape`] for a scalar or empty
    /// weight, candle's errors when `vb` holds state of another shape.
    pub fn new(weight: Tensor, vb: &VarBuilder, name: &str, rng: &mut Rng, config: SpectralNormConfig) -> Result<Self> {
        config.validate()?;
        if weight.rank() == 0 || weight.elem_count() == 0 {
            return Err(Error::shape(
                "SpectralNorm::new",
                format!("needs a non-empty weight, got {:?}", weight.dims()),
            ));
        }
        let rows = weight.dim(0)?;
        let cols = weight.elem_count() / rows;
        let u = state_vector(vb, &format!("{name}{U_SUFFIX}"), rows, rng, config.eps)?;
        let v = state_vector(vb, &format!("{name}{V_SUFFIX}"), cols, rng, config.eps)?;
        Ok(Self { weight, u, v, rows, cols, config })
    }

    /// Spectral normalisation of `weight` with given state vectors `u` (length `weight.dim(0)`)
    /// and `v` (length of the other dimensions' product), e.g. kept outside any `VarMap`.
    pub fn from_parts(weight: Tensor, u: Var, v: Var, config: SpectralNormConfig) -> Result<Self> {
        config.validate()?;
        if weight.rank() == 0 || weight.elem_count() == 0 {
            return Err(Error::shape(
                "SpectralNorm::from_parts",
                format!("needs a non-empty weight, got {:?}", weight.dims()),
            ));
        }
        let rows = weight.dim(0)?;
        let cols = weight.elem_count() / rows;
        if u.dims() != [rows] || v.dims() != [cols] {
            return Err(Error::shape(
                "SpectralNorm::from_parts",
                format!(
                    "u must be ({rows},) and v ({cols},) for weight {:?}, got {:?} and {:?}",
                    weight.dims(),
                    u.dims(),
                    v.dims()
                ),
            ));
        }
        Ok(Self { weight, u, v, rows, cols, config })
    }

    /// The unnormalised weight `W` (the trainable variable's tensor).
    pub fn weight_orig(&self) -> &Tensor {
        &self.weight
    }

    /// The left singular vector estimate `u`, shape `(out,)`.
    pub fn u(&self) -> &Var {
        &self.u
    }

    /// The right singular vector estimate `v`, shape `(rest,)`.
    pub fn v(&self) -> &Var {
        &self.v
    }

    /// The configuration.
    pub fn config(&self) -> &SpectralNormConfig {
        &self.config
    }

    /// Runs `n` power iterations on the detached weight and stores the new `u`, `v`.
    ///
    /// Errors: [`Error::NonFinite`] when `u` or `v` collapses to zero or becomes non-finite, which
    /// happens when the state was overwritten (e.g. re-initialised with zeros: exclude it with
    /// [`is_power_iteration_state`]) or the weight is zero or non-finite.
    pub fn power_iteration(&self, n: usize) -> Result<()> {
        if n == 0 {
            return Ok(());
        }
        let dtype = iteration_dtype(self.weight.dtype());
        let w = self.weight.detach().to_dtype(dtype)?.reshape((self.rows, self.cols))?;
        let wt = w.t()?;
        let eps = self.config.eps;
        let mut u = self.u.as_tensor().detach().to_dtype(dtype)?.reshape((self.rows, 1))?;
        let mut v = self.v.as_tensor().detach().to_dtype(dtype)?.reshape((self.cols, 1))?;
        for _ in 0..n {
            v = normalize(&wt.matmul(&u)?, eps)?;
            u = normalize(&w.matmul(&v)?, eps)?;
        }
        // Both are unit vectors unless the iteration collapsed; one host read per call.
        let norms = Tensor::cat(&[u.sqr()?.sum_all()?.reshape(1)?, v.sqr()?.sum_all()?.reshape(1)?], 0)?;
        let norms = norms.to_dtype(DType::F64)?.to_vec1::<f64>()?;
        if let Some(&bad) = norms.iter().find(|&&s| !(s.is_finite() && s > 0.5)) {
            return Err(Error::non_finite(
                "spectral norm power iteration (squared norm of u or v; zeroed or non-finite state or weight)",
                None,
                bad,
            ));
        }
        self.u.set(&u.reshape(self.rows)?.to_dtype(self.weight.dtype())?)?;
        self.v.set(&v.reshape(self.cols)?.to_dtype(self.weight.dtype())?)?;
        Ok(())
    }

    /// `σ = uᵀ W_mat v` with the stored `u`, `v`: a scalar tensor, differentiable in `W` (its
    /// gradient is `u vᵀ`), constant in `u` and `v`.
    pub fn sigma(&self) -> Result<Tensor> {
        let dtype = self.weight.dtype();
        let w = self.weight.reshape((self.rows, self.cols))?;
        let u = self.u.as_tensor().detach().to_dtype(dtype)?.reshape((1, self.rows))?;
        let v = self.v.as_tensor().detach().to_dtype(dtype)?.reshape((self.cols, 1))?;
        Ok(u.matmul(&w.matmul(&v)?)?.reshape(())?)
    }

    /// The normalised weight `W / σ`, with `W`'s shape; with `train` the configured number of
    /// power iterations runs first (and updates `u`, `v`), as PyTorch does in training mode.
    pub fn weight(&self, train: bool) -> Result<Tensor> {
        if train {
            self.power_iteration(self.config.n_power_iterations)?;
        }
        Ok(self.weight.broadcast_div(&self.sigma()?)?)
    }
}

/// A linear layer `y = x W_SNᵀ + b` with a spectrally normalised weight (Miyato et al. 2018),
/// the counterpart of `torch.nn.utils.spectral_norm(nn.Linear(..))`.
///
/// Variables under the builder's prefix: `weight_orig` `(out, in)` (candle-nn's `linear`
/// initialisation; re-initialise with [`crate::nn::init`] for a seeded one), `bias` `(out,)`,
/// and the state `weight_u` `(out,)`, `weight_v` `(in,)`. Input `(..., in)`, output `(..., out)`.
#[derive(Debug, Clone)]
pub struct SnLinear {
    weight: SpectralNorm,
    bias: Option<Tensor>,
}

impl SnLinear {
    /// A layer from `in_dim` to `out_dim` features, with or without bias; `rng` initialises
    /// the power-iteration state when `vb`'s `VarMap` creates it.
    pub fn new(
        in_dim: usize,
        out_dim: usize,
        bias: bool,
        config: SpectralNormConfig,
        vb: VarBuilder,
        rng: &mut Rng,
    ) -> Result<Self> {
        if in_dim == 0 || out_dim == 0 {
            return Err(Error::config("in_dim, out_dim", format!("must be > 0, got {in_dim}, {out_dim}")));
        }
        let w = vb.get_with_hints((out_dim, in_dim), "weight_orig", candle_nn::init::DEFAULT_KAIMING_NORMAL)?;
        let weight = SpectralNorm::new(w, &vb, "weight", rng, config)?;
        let bias = if bias {
            let bound = 1.0 / (in_dim as f64).sqrt();
            Some(vb.get_with_hints(out_dim, "bias", Init::Uniform { lo: -bound, up: bound })?)
        } else {
            None
        };
        Ok(Self { weight, bias })
    }

    /// The spectral normalisation of the weight (for `σ`, `u`, `v`).
    pub fn spectral_norm(&self) -> &SpectralNorm {
        &self.weight
    }
}

impl ModuleT for SnLinear {
    /// `x W_SNᵀ + b`; with `train` one power-iteration step (per the config) runs first.
    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let w = self.weight.weight(train).map_err(into_candle)?;
        candle_core::Module::forward(&candle_nn::Linear::new(w, self.bias.clone()), x)
    }
}

/// Shape options of [`SnConv2d`]: candle-nn's convolution config, a bias flag and the
/// spectral normalisation config.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SnConv2dConfig {
    /// Padding, stride, dilation and groups, as for `candle_nn::conv2d`.
    pub conv: Conv2dConfig,
    /// Whether the layer adds a bias (default `true`).
    pub bias: bool,
    /// Power-iteration settings.
    pub spectral: SpectralNormConfig,
}

impl Default for SnConv2dConfig {
    fn default() -> Self {
        Self { conv: Conv2dConfig::default(), bias: true, spectral: SpectralNormConfig::default() }
    }
}

/// A 2-D convolution with a spectrally normalised kernel (Miyato et al. 2018), the
/// counterpart of `torch.nn.utils.spectral_norm(nn.Conv2d(..))`; the kernel `(out, in/groups,
/// k, k)` is normalised as the matrix `(out, in/groups · k · k)`.
///
/// Variables: `weight_orig` (candle-nn's `conv2d` initialisation), `bias` (optional),
/// `weight_u` `(out,)`, `weight_v` `(in/groups · k · k,)`. Input `(B, in, H, W)`, output
/// `(B, out, H', W')` as `candle_nn::Conv2d` with the same `Conv2dConfig`.
#[derive(Debug, Clone)]
pub struct SnConv2d {
    weight: SpectralNorm,
    bias: Option<Tensor>,
    conv: Conv2dConfig,
}

impl SnConv2d {
    /// A convolution from `in_channels` to `out_channels` with a square `kernel_size` kernel;
    /// `rng` initialises the power-iteration state when `vb`'s `VarMap` creates it.
    pub fn new(
        in_channels: usize,
        out_channels: usize,
        kernel_size: usize,
        config: SnConv2dConfig,
        vb: VarBuilder,
        rng: &mut Rng,
    ) -> Result<Self> {
        let conv = config.conv;
        if in_channels == 0 || out_channels == 0 || kernel_size == 0 || conv.groups == 0 || conv.stride == 0 {
            return Err(Error::config(
                "SnConv2d",
                format!(
                    "channels, kernel size, groups and stride must be > 0, got {in_channels}, {out_channels}, \
                     {kernel_size}, {}, {}",
                    conv.groups, conv.stride
                ),
            ));
        }
        if in_channels % conv.groups != 0 || out_channels % conv.groups != 0 {
            return Err(Error::config(
                "SnConv2dConfig.conv.groups",
                format!("{} must divide {in_channels} and {out_channels}", conv.groups),
            ));
        }
        let fan_in = in_channels / conv.groups * kernel_size * kernel_size;
        let shape = (out_channels, in_channels / conv.groups, kernel_size, kernel_size);
        let w = vb.get_with_hints(shape, "weight_orig", candle_nn::init::DEFAULT_KAIMING_NORMAL)?;
        let weight = SpectralNorm::new(w, &vb, "weight", rng, config.spectral)?;
        let bias = if config.bias {
            let bound = 1.0 / (fan_in as f64).sqrt();
            Some(vb.get_with_hints(out_channels, "bias", Init::Uniform { lo: -bound, up: bound })?)
        } else {
            None
        };
        Ok(Self { weight, bias, conv })
    }

    /// The spectral normalisation of the kernel (for `σ`, `u`, `v`).
    pub fn spectral_norm(&self) -> &SpectralNorm {
        &self.weight
    }
}

impl ModuleT for SnConv2d {
    /// The convolution with `W_SN`; with `train` the power iteration runs first.
    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let w = self.weight.weight(train).map_err(into_candle)?;
        candle_core::Module::forward(&super::Conv2d::new(w, self.bias.clone(), self.conv), x)
    }
}

/// `ModuleT` returns candle's error: keep a candle error as it is, wrap any other.
fn into_candle(e: Error) -> candle_core::Error {
    match e {
        Error::Candle(e) => e,
        other => candle_core::Error::Msg(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim::NamedVars;
    use candle_core::Device;
    use candle_nn::VarMap;

    fn flat(t: &Tensor) -> Result<Vec<f64>> {
        Ok(t.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?)
    }

    /// Largest singular value of the row-major `rows × cols` matrix `w`, in plain `f64`: power
    /// iteration on `WᵀW` until the eigen-residual is negligible.
    fn reference_sigma(w: &[f64], rows: usize, cols: usize) -> f64 {
        let at = |r: usize, c: usize| w[r * cols + c];
        let mut x = vec![1.0; cols];
        let mut lambda = 0.0;
        for _ in 0..100_000 {
            let wx: Vec<f64> = (0..rows).map(|r| (0..cols).map(|c| at(r, c) * x[c]).sum()).collect();
            let y: Vec<f64> = (0..cols).map(|c| (0..rows).map(|r| at(r, c) * wx[r]).sum()).collect();
            let norm = y.iter().map(|v| v * v).sum::<f64>().sqrt();
            lambda = x.iter().zip(&y).map(|(a, b)| a * b).sum::<f64>() / x.iter().map(|a| a * a).sum::<f64>();
            let residual = x.iter().zip(&y).map(|(a, b)| (b - lambda * a).powi(2)).sum::<f64>().sqrt();
            x = y.iter().map(|v| v / norm).collect();
            if residual < 1e-13 * lambda {
                break;
            }
        }
        lambda.sqrt()
    }

    fn sn_for(w: Tensor, seed: u64, config: SpectralNormConfig) -> Result<(VarMap, SpectralNorm)> {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, w.dtype(), w.device());
        let sn = SpectralNorm::new(w, &vb, "weight", &mut Rng::new(seed), config)?;
        Ok((varmap, sn))
    }

    #[test]
    fn sigma_converges_to_the_largest_singular_value() -> Result<()> {
        let dev = Device::Cpu;
        // 2×2 closed form: σ² = (S + √(S² − 4 det²)) / 2 with S = ‖W‖²_F.
        let (a, b, c, d) = (3.0f64, 1.0, 2.0, -1.0);
        let s = a * a + b * b + c * c + d * d;
        let det = a * d - b * c;
        let closed = ((s + (s * s - 4.0 * det * det).sqrt()) / 2.0).sqrt();
        let w = Var::new(&[[a, b], [c, d]], &dev)?;
        let (_, sn) = sn_for(w.as_tensor().clone(), 0, Default::default())?;
        for _ in 0..100 {
            sn.weight(true)?;
        }
        let sigma = sn.sigma()?.to_scalar::<f64>()?;
        assert!((sigma - closed).abs() < 1e-4 * closed, "2×2: {sigma} vs {closed}");

        // A conv kernel (5, 3, 2, 2), viewed as a 5 × 12 matrix, in F32.
        let w = Var::from_tensor(&Rng::new(1).randn((5, 3, 2, 2), DType::F32, &dev)?)?;
        let reference = reference_sigma(&flat(w.as_tensor())?, 5, 12);
        let (_, sn) = sn_for(w.as_tensor().clone(), 2, Default::default())?;
        let mut trace = Vec::new();
        for step in 0..200 {
            sn.weight(true)?;
            if step == 0 || step == 199 {
                trace.push(flat(&sn.sigma()?)?[0]);
            }
        }
        let sigma = trace[1];
        eprintln!("σ after 1 and 200 iterations: {:.6} {:.6}, reference {reference:.6}", trace[0], sigma);
        assert!((sigma - reference).abs() < 1e-4 * reference, "{sigma} vs {reference}");
        assert!(trace[0] <= reference * (1.0 + 1e-6), "uᵀWv never exceeds σ_max");

        // Many iterations per call converge in one training step.
        let config = SpectralNormConfig { n_power_iterations: 100, ..Default::default() };
        let (_, sn) = sn_for(w.as_tensor().clone(), 3, config)?;
        sn.weight(true)?;
        let sigma = flat(&sn.sigma()?)?[0];
        assert!((sigma - reference).abs() < 1e-4 * reference, "{sigma} vs {reference}");
        Ok(())
    }

    #[test]
    fn normalised_weight_has_unit_spectral_norm() -> Result<()> {
        let w = Var::from_tensor(&Rng::new(4).randn((6, 4), DType::F64, &Device::Cpu)?)?;
        let (_, sn) = sn_for(w.as_tensor().clone(), 5, Default::default())?;
        for _ in 0..200 {
            sn.weight(true)?;
        }
        let normalised = sn.weight(false)?;
        let norm = reference_sigma(&flat(&normalised)?, 6, 4);
        assert!((norm - 1.0).abs() < 1e-4, "spectral norm of W/σ is {norm}");
        Ok(())
    }

    #[test]
    fn gradients_through_the_weight_match_finite_differences() -> Result<()> {
        let dev = Device::Cpu;
        let w = Var::from_tensor(&Rng::new(6).randn((4, 3), DType::F64, &dev)?)?;
        let coef = Rng::new(7).randn((4, 3), DType::F64, &dev)?;
        let (_, sn) = sn_for(w.as_tensor().clone(), 8, Default::default())?;
        sn.weight(true)?; // u, v from one training step; then fixed (evaluation mode)
        let loss = || -> Result<Tensor> {
            let ws = sn.weight(false)?;
            Ok(((&ws * &coef)?.sum_all()? + ws.sqr()?.sum_all()?)?)
        };
        let analytic = flat(loss()?.backward()?.get(w.as_tensor()).expect("loss depends on W"))?;
        let base = flat(w.as_tensor())?;
        let h = 1e-6;
        let mut max_rel = 0f64;
        for i in 0..base.len() {
            let mut p = base.clone();
            p[i] += h;
            w.set(&Tensor::from_vec(p.clone(), (4, 3), &dev)?)?;
            let plus = loss()?.to_scalar::<f64>()?;
            p[i] -= 2.0 * h;
            w.set(&Tensor::from_vec(p, (4, 3), &dev)?)?;
            let fd = (plus - loss()?.to_scalar::<f64>()?) / (2.0 * h);
            max_rel = max_rel.max((analytic[i] - fd).abs() / fd.abs().max(1e-3));
        }
        assert!(max_rel < 1e-6, "largest relative error {max_rel:.2e}");
        w.set(&Tensor::from_vec(base, (4, 3), &dev)?)?;

        // dσ/dW = u vᵀ (Miyato et al. 2018, eq. 12's first term).
        let dsigma = flat(sn.sigma()?.backward()?.get(w.as_tensor()).expect("σ depends on W"))?;
        let (u, v) = (flat(sn.u().as_tensor())?, flat(sn.v().as_tensor())?);
        for (i, g) in dsigma.iter().enumerate() {
            assert!((g - u[i / 3] * v[i % 3]).abs() < 1e-12);
        }
        Ok(())
    }

    #[test]
    fn state_is_seeded_checkpointed_and_kept_out_of_training() -> Result<()> {
        let dev = Device::Cpu;
        let build = |seed: u64| -> Result<(VarMap, SnLinear)> {
            let varmap = VarMap::new();
            let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
            let layer = SnLinear::new(5, 3, true, Default::default(), vb.pp("fc"), &mut Rng::new(seed))?;
            Ok((varmap, layer))
        };
        let (vm_a, a) = build(1)?;
        let (_, b) = build(1)?;
        let u_a = flat(a.spectral_norm().u().as_tensor())?;
        assert_eq!(u_a, flat(b.spectral_norm().u().as_tensor())?, "same seed, same u");
        assert!((u_a.iter().map(|x| x * x).sum::<f64>() - 1.0).abs() < 1e-6, "u is a unit vector");

        // Training forwards move u; evaluation forwards do not.
        let x = Rng::new(2).randn((4, 5), DType::F32, &dev)?;
        a.forward_t(&x, true)?;
        let trained_u = flat(a.spectral_norm().u().as_tensor())?;
        assert_ne!(trained_u, u_a);
        a.forward_t(&x, false)?;
        assert_eq!(flat(a.spectral_norm().u().as_tensor())?, trained_u);
        // The VarMap shares the state: the update is what a checkpoint saves.
        let in_map = vm_a.data().lock().expect("not poisoned")["fc.weight_u"].clone();
        assert_eq!(flat(in_map.as_tensor())?, trained_u);

        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", e))?;
        let path = dir.path().join("sn.safetensors");
        vm_a.save(&path)?;
        let (mut vm_c, c) = build(99)?;
        assert_ne!(flat(c.spectral_norm().u().as_tensor())?, trained_u);
        vm_c.load(&path)?;
        assert_eq!(flat(c.spectral_norm().u().as_tensor())?, trained_u);
        assert_eq!(flat(&c.forward_t(&x, false)?)?, flat(&a.forward_t(&x, false)?)?);

        let trainable = NamedVars::filtered(&vm_a, |n| !is_power_iteration_state(n));
        assert_eq!(trainable.names(), vec!["fc.bias", "fc.weight_orig"]);
        assert!(is_power_iteration_state("disc.conv1.weight_v") && !is_power_iteration_state("attn.proj_v.weight"));
        Ok(())
    }

    #[test]
    fn conv_layer_shapes() -> Result<()> {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let config =
            SnConv2dConfig { conv: Conv2dConfig { padding: 1, stride: 2, ..Default::default() }, ..Default::default() };
        let conv = SnConv2d::new(3, 8, 4, config, vb.pp("c"), &mut Rng::new(0))?;
        let x = Tensor::ones((2, 3, 16, 16), DType::F32, &Device::Cpu)?;
        assert_eq!(conv.forward_t(&x, true)?.dims(), &[2, 8, 8, 8]);
        assert_eq!(conv.spectral_norm().v().dims(), &[3 * 4 * 4]);
        let names = NamedVars::from_varmap(&varmap).names().iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(names, vec!["c.bias", "c.weight_orig", "c.weight_u", "c.weight_v"]);
        let bad = SnConv2dConfig { conv: Conv2dConfig { groups: 2, ..Default::default() }, ..Default::default() };
        assert!(matches!(SnConv2d::new(3, 8, 3, bad, vb.pp("d"), &mut Rng::new(0)), Err(Error::Config { .. })));
        Ok(())
    }

    #[test]
    fn bad_configs_and_collapsed_state_are_errors() -> Result<()> {
        let dev = Device::Cpu;
        let w = Var::new(&[[1f32, 2.0], [3.0, 4.0]], &dev)?;
        let bad = |config: SpectralNormConfig| sn_for(w.as_tensor().clone(), 0, config).err();
        assert!(matches!(bad(SpectralNormConfig { n_power_iterations: 0, eps: 1e-12 }), Some(Error::Config { .. })));
        assert!(matches!(bad(SpectralNormConfig { n_power_iterations: 1, eps: 0.0 }), Some(Error::Config { .. })));
        let scalar = Var::new(1f32, &dev)?;
        assert!(matches!(sn_for(scalar.as_tensor().clone(), 0, Default::default()), Err(Error::Shape { .. })));
        let u = Var::zeros(3, DType::F32, &dev)?;
        let v = Var::zeros(2, DType::F32, &dev)?;
        let parts = SpectralNorm::from_parts(w.as_tensor().clone(), u, v.clone(), Default::default());
        assert!(matches!(parts, Err(Error::Shape { .. })));
        // A zeroed state (e.g. re-initialised with the biases) is reported, not turned into NaN.
        let u = Var::zeros(2, DType::F32, &dev)?;
        let sn = SpectralNorm::from_parts(w.as_tensor().clone(), u, v, Default::default())?;
        assert!(matches!(sn.weight(true), Err(Error::NonFinite { .. })));
        Ok(())
    }
}
