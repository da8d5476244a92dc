//! [`NoiseSchedule`]: the variance-preserving forward process `q(x_t | x0)` of DDPM (Ho et al. 2020)
//! over discrete timesteps `t = 0..T`, computed in `f64`.
//!
//! Convention: timestep `t` (0-based) has `beta_t`, `alpha_t = 1 - beta_t` and
//! `alphabar_t = prod_{s <= t} alpha_s`; `x_t = sqrt(alphabar_t) x0 + sqrt(1 - alphabar_t) eps`.
//! Ho et al.'s `t = 1..T` is index `t - 1` here (diffusers' convention). "Clean" (`alphabar = 1`)
//! is the level before `t = 0`.

use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

use crate::losses::diffusion::{self, Prediction};
use crate::{Error, Result};

/// How the betas `beta_0..beta_{T-1}` are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum BetaSchedule {
    /// `beta_t` linear from `beta_start` to `beta_end` (Ho et al. 2020: 1e-4 to 0.02 for T = 1000).
    Linear {
        /// `beta_0`, in `(0, 1)`.
        beta_start: f64,
        /// `beta_{T-1}`, in `(0, 1)`.
        beta_end: f64,
    },
    /// `sqrt(beta_t)` linear from `sqrt(beta_start)` to `sqrt(beta_end)` (latent diffusion, Stable
    /// Diffusion: 0.00085 to 0.012).
    ScaledLinear {
        /// `beta_0`, in `(0, 1)`.
        beta_start: f64,
        /// `beta_{T-1}`, in `(0, 1)`.
        beta_end: f64,
    },
    /// Nichol & Dhariwal 2021: `alphabar(t) = f(t) / f(0)` with `f(t) = cos²(π/2 · (t/T + s)/(1 + s))`,
    /// `beta_t = min(1 - alphabar((t+1)/T) / alphabar(t/T), max_beta)`.
    Cosine {
        /// The offset `s` (paper: 0.008), `>= 0`.
        s: f64,
        /// The cap on each beta (paper: 0.999), in `(0, 1]`.
        max_beta: f64,
    },
    /// `beta_t = beta_start + (beta_end - beta_start) · sigmoid(x_t)` with `x_t` linear from -6 to 6
    /// (GeoDiff, Xu et al. 2022).
    Sigmoid {
        /// The lower asymptote, in `(0, 1)`.
        beta_start: f64,
        /// The upper asymptote, in `(0, 1)`.
        beta_end: f64,
    },
}

impl BetaSchedule {
    /// Ho et al. 2020's linear schedule, 1e-4 to 0.02.
    pub fn linear() -> Self {
        BetaSchedule::Linear { beta_start: 1e-4, beta_end: 0.02 }
    }

    /// Nichol & Dhariwal 2021's cosine schedule, `s = 0.008`, betas capped at 0.999.
    pub fn cosine() -> Self {
        BetaSchedule::Cosine { s: 0.008, max_beta: 0.999 }
    }

    /// The betas for `t = 0..num_timesteps`, in `f64`, unchecked.
    fn betas(&self, num_timesteps: usize) -> Vec<f64> {
        let n = num_timesteps;
        let lin = |a: f64, b: f64, i: usize| if n == 1 { a } else { a + (b - a) * i as f64 / (n - 1) as f64 };
        match *self {
            BetaSchedule::Linear { beta_start, beta_end } => (0..n).map(|i| lin(beta_start, beta_end, i)).collect(),
            BetaSchedule::ScaledLinear { beta_start, beta_end } => {
                (0..n).map(|i| lin(beta_start.sqrt(), beta_end.sqrt(), i).powi(2)).collect()
            }
            BetaSchedule::Cosine { s, max_beta } => {
                let f = |t: f64| ((t + s) / (1.0 + s) * std::f64::consts::FRAC_PI_2).cos().powi(2);
                (0..n).map(|i| (1.0 - f((i + 1) as f64 / n as f64) / f(i as f64 / n as f64)).min(max_beta)).collect()
            }
            BetaSchedule::Sigmoid { beta_start, beta_end } => {
                (0..n).map(|i| beta_start + (beta_end - beta_start) / (1.0 + (-lin(-6.0, 6.0, i)).exp())).collect()
            }
        }
    }

    fn validate(&self) -> Result<()> {
        let in_open_unit = |v: f64| v > 0.0 && v < 1.0;
        match *self {
            BetaSchedule::Linear { beta_start, beta_end }
            | BetaSchedule::ScaledLinear { beta_start, beta_end }
            | BetaSchedule::Sigmoid { beta_start, beta_end } => {
                if !in_open_unit(beta_start) {
                    return Err(Error::config("betas.beta_start", format!("must be in (0, 1), got {beta_start}")));
                }
                if !in_open_unit(beta_end) {
                    return Err(Error::config("betas.beta_end", format!("must be in (0, 1), got {beta_end}")));
                }
            }
            BetaSchedule::Cosine { s, max_beta } => {
                if !(s.is_finite() && s >= 0.0) {
                    return Err(Error::config("betas.s", format!("must be finite and >= 0, got {s}")));
                }
                if !(max_beta > 0.0 && max_beta <= 1.0) {
                    return Err(Error::config("betas.max_beta", format!("must be in (0, 1], got {max_beta}")));
                }
            }
        }
        Ok(())
    }
}

/// The settings of a [`NoiseSchedule`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ScheduleConfig {
    /// Number of timesteps `T` (>= 2); default 1000.
    pub num_timesteps: usize,
    /// The beta layout; default [`BetaSchedule::linear`].
    pub betas: BetaSchedule,
    /// Rescale to zero terminal SNR (Lin et al. 2024, "Common diffusion noise schedules and sample
    /// steps are flawed", Alg. 1): `sqrt(alphabar)` is shifted and scaled so that its first value is
    /// kept and its last is 0, so `x_{T-1}` is pure noise. Sample such a schedule with v- or
    /// x0-prediction; epsilon-prediction cannot recover `x0` at `alphabar = 0`.
    pub zero_terminal_snr: bool,
}

impl Default for ScheduleConfig {
    /// DDPM's: 1000 linear betas from 1e-4 to 0.02.
    fn default() -> Self {
        Self { num_timesteps: 1000, betas: BetaSchedule::linear(), zero_terminal_snr: false }
    }
}

impl ScheduleConfig {
    /// Checks every field; `Error::Config` names the one at fault.
    pub fn validate(&self) -> Result<()> {
        if self.num_timesteps < 2 {
            return Err(Error::config("num_timesteps", format!("must be >= 2, got {}", self.num_timesteps)));
        }
        self.betas.validate()
    }
}

/// The forward (noising) process and its posterior, per timestep, in `f64`.
///
/// ```
/// use candle_generative::diffusion::{NoiseSchedule, ScheduleConfig};
/// let s = NoiseSchedule::new(&ScheduleConfig::default())?;
/// assert_eq!(s.num_timesteps(), 1000);
/// assert!((s.alpha_bar()[0] - (1.0 - 1e-4)).abs() < 1e-15);
/// assert!(s.alpha_bar()[999] < 1e-4); // x_999 is almost pure noise
/// # Ok::<(), candle_generative::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct NoiseSchedule {
    config: ScheduleConfig,
    betas: Vec<f64>,
    alphas: Vec<f64>,
    alpha_bar: Vec<f64>,
}

/// `(B,)` per-sample values as a column `(B, 1, ..., 1)` of `like`'s rank, dtype and device.
fn column(values: &[f64], like: &Tensor) -> Result<Tensor> {
    let mut dims = vec![1; like.rank()];
    dims[0] = values.len();
    Ok(Tensor::from_vec(values.to_vec(), dims, like.device())?.to_dtype(like.dtype())?)
}

impl NoiseSchedule {
    /// Builds the schedule of `config` (validated: `Error::Config` names a bad field). Every beta
    /// must end up in `(0, 1]` (only the last may be 1, with zero terminal SNR).
    pub fn new(config: &ScheduleConfig) -> Result<Self> {
        config.validate()?;
        let n = config.num_timesteps;
        let mut betas = config.betas.betas(n);
        if config.zero_terminal_snr {
            let mut ab = 1.0;
            let mut sqrt_ab: Vec<f64> = betas
                .iter()
                .map(|b| {
                    ab *= 1.0 - b;
                    ab.sqrt()
                })
                .collect();
            let (first, last) = (sqrt_ab[0], sqrt_ab[n - 1]);
            if first - last <= 0.0 {
                return Err(Error::config("zero_terminal_snr", "the schedule's alphabar does not decrease"));
            }
            for v in &mut sqrt_ab {
                *v = (*v - last) * first / (first - last);
            }
            let mut prev = 1.0;
            for (b, v) in betas.iter_mut().zip(&sqrt_ab) {
                let a = v * v;
                *b = 1.0 - a / prev;
                prev = a;
            }
        }
        for (t, &b) in betas.iter().enumerate() {
            let ok = b > 0.0 && (b < 1.0 || (b == 1.0 && t == n - 1));
            if !ok {
                return Err(Error::config("betas", format!("beta_{t} = {b} is outside (0, 1)")));
            }
        }
        let alphas: Vec<f64> = betas.iter().map(|b| 1.0 - b).collect();
        let mut alpha_bar = Vec::with_capacity(n);
        let mut acc = 1.0;
        for a in &alphas {
            acc *= a;
            alpha_bar.push(acc);
        }
        Ok(Self { config: config.clone(), betas, alphas, alpha_bar })
    }

    /// The configuration.
    pub fn config(&self) -> &ScheduleConfig {
        &self.config
    }

    /// `T`, the number of timesteps.
    pub fn num_timesteps(&self) -> usize {
        self.betas.len()
    }

    /// `beta_t` for `t = 0..T`.
    pub fn betas(&self) -> &[f64] {
        &self.betas
    }

    /// `alpha_t = 1 - beta_t`.
    pub fn alphas(&self) -> &[f64] {
        &self.alphas
    }

    /// `alphabar_t = prod_{s <= t} alpha_s`, decreasing from `1 - beta_0` towards 0.
    pub fn alpha_bar(&self) -> &[f64] {
        &self.alpha_bar
    }

    /// `alphabar` at a level: `Some(t)` is timestep `t`, `None` the clean data (1).
    pub fn alpha_bar_at_level(&self, level: Option<usize>) -> f64 {
        level.map_or(1.0, |t| self.alpha_bar[t])
    }

    /// The signal-to-noise ratio `alphabar_t / (1 - alphabar_t)` at timestep `t < T` (`0` at zero
    /// terminal SNR).
    pub fn snr(&self, t: usize) -> f64 {
        let a = self.alpha_bar[t];
        a / (1.0 - a)
    }

    /// The timesteps of a `(B,)` integer tensor (`U8`, `U32` or `I64`), checked to be `< T`
    /// (`Error::Shape` otherwise).
    pub fn timesteps_of(&self, t: &Tensor) -> Result<Vec<usize>> {
        const CTX: &str = "NoiseSchedule timesteps";
        if t.rank() != 1 {
            return Err(Error::shape(CTX, format!("`t` must be a (B,) vector, got {:?}", t.dims())));
        }
        let v: Vec<i64> = match t.dtype() {
            DType::U8 | DType::U32 | DType::I64 => t.to_dtype(DType::I64)?.to_vec1::<i64>()?,
            other => return Err(Error::shape(CTX, format!("`t` must be an integer tensor, got {other:?}"))),
        };
        let n = self.num_timesteps();
        v.into_iter()
            .map(|x| {
                if x >= 0 && (x as usize) < n {
                    Ok(x as usize)
                } else {
                    Err(Error::shape(CTX, format!("timestep {x} is outside 0..{n}")))
                }
            })
            .collect()
    }

    /// `alphabar_t` per sample for timesteps `t` `(B,)`, as an `F64` `(B,)` tensor on `t`'s device.
    pub fn alpha_bar_of(&self, t: &Tensor) -> Result<Tensor> {
        let v: Vec<f64> = self.timesteps_of(t)?.into_iter().map(|t| self.alpha_bar[t]).collect();
        Ok(Tensor::from_vec(v, t.dims()[0], t.device())?)
    }

    /// The SNR per sample for timesteps `t` `(B,)`, as an `F64` `(B,)` tensor on `t`'s device.
    pub fn snr_of(&self, t: &Tensor) -> Result<Tensor> {
        let v: Vec<f64> = self.timesteps_of(t)?.into_iter().map(|t| self.snr(t)).collect();
        Ok(Tensor::from_vec(v, t.dims()[0], t.device())?)
    }

    /// The forward process `x_t = sqrt(alphabar_t) x0 + sqrt(1 - alphabar_t) noise` with one timestep
    /// per sample: `x0` and `noise` `(B, ...)` of the same shape and float dtype, `t` a `(B,)` integer
    /// tensor of timesteps `< T` (they may all differ). Returns `(B, ...)` in `x0`'s dtype.
    pub fn add_noise(&self, x0: &Tensor, noise: &Tensor, t: &Tensor) -> Result<Tensor> {
        let (a, s) = self.coefficients("NoiseSchedule::add_noise", x0, noise, t)?;
        Ok((column(&a, x0)?.broadcast_mul(x0)? + column(&s, x0)?.broadcast_mul(noise)?)?)
    }

    fn coefficients(&self, ctx: &str, x0: &Tensor, noise: &Tensor, t: &Tensor) -> Result<(Vec<f64>, Vec<f64>)> {
        if x0.dims() != noise.dims() || x0.dtype() != noise.dtype() || !x0.dtype().is_float() || x0.rank() == 0 {
            return Err(Error::shape(
                ctx,
                format!(
                    "`x0` and `noise` must be float tensors (B, ...) of one shape and dtype, got {:?} {:?} and {:?} {:?}",
                    x0.dims(),
                    x0.dtype(),
                    noise.dims(),
                    noise.dtype()
                ),
            ));
        }
        let ts = self.timesteps_of(t)?;
        if ts.len() != x0.dims()[0] {
            return Err(Error::shape(ctx, format!("`t` has {} timesteps for a batch of {}", ts.len(), x0.dims()[0])));
        }
        let a = ts.iter().map(|&t| self.alpha_bar[t].sqrt()).collect();
        let s = ts.iter().map(|&t| (1.0 - self.alpha_bar[t]).sqrt()).collect();
        Ok((a, s))
    }

    /// The regression target of `prediction` for `x0`, `noise` and per-sample timesteps `t` (see
    /// [`diffusion::target`]): `noise`, `x0` or `v = sqrt(alphabar_t) noise - sqrt(1 - alphabar_t) x0`.
    pub fn target(&self, prediction: Prediction, x0: &Tensor, noise: &Tensor, t: &Tensor) -> Result<Tensor> {
        diffusion::target(prediction, x0, noise, &self.alpha_bar_of(t)?)
    }

    /// The coefficients `(c0, ct)` of the posterior mean `mu = c0 x0 + ct x_t` of `q(x_s | x_t, x0)`
    /// between level `t` and an earlier level `s` (`None`: clean), and its variance. For `s = t - 1`
    /// this is Ho et al. 2020 eq. 7: `c0 = sqrt(alphabar_{t-1}) beta_t / (1 - alphabar_t)`,
    /// `ct = sqrt(alpha_t) (1 - alphabar_{t-1}) / (1 - alphabar_t)`,
    /// `var = (1 - alphabar_{t-1}) / (1 - alphabar_t) beta_t`. For a skip (respaced sampling) `beta_t`
    /// becomes `1 - alphabar_t / alphabar_s` and `alpha_t` becomes `alphabar_t / alphabar_s`.
    /// `Error::Config` unless `s < t < T`.
    pub fn posterior_between(&self, t: usize, s: Option<usize>) -> Result<(f64, f64, f64)> {
        if t >= self.num_timesteps() || s.is_some_and(|s| s >= t) {
            return Err(Error::config("timesteps", format!("posterior needs s < t < T, got t = {t}, s = {s:?}")));
        }
        let (ab_t, ab_s) = (self.alpha_bar[t], self.alpha_bar_at_level(s));
        let alpha = ab_t / ab_s;
        let beta = 1.0 - alpha;
        let c0 = ab_s.sqrt() * beta / (1.0 - ab_t);
        let ct = alpha.sqrt() * (1.0 - ab_s) / (1.0 - ab_t);
        let var = (1.0 - ab_s) / (1.0 - ab_t) * beta;
        Ok((c0, ct, var))
    }

    /// The posterior `q(x_{t-1} | x_t, x0)` mean `(B, ...)` and variance (Ho et al. 2020 eq. 7) at one
    /// timestep `t` for the whole batch (`t = 0` goes to the clean level: mean `x0`, variance 0).
    pub fn posterior(&self, x0: &Tensor, x_t: &Tensor, t: usize) -> Result<(Tensor, f64)> {
        let (c0, ct, var) = self.posterior_between(t, t.checked_sub(1))?;
        if x0.dims() != x_t.dims() {
            return Err(Error::shape(
                "NoiseSchedule::posterior",
                format!("`x0` {:?} and `x_t` {:?} differ", x0.dims(), x_t.dims()),
            ));
        }
        Ok(((x0.affine(c0, 0.0)? + x_t.affine(ct, 0.0)?)?, var))
    }
}
