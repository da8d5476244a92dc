//! Acceptance tests of the diffusion family: schedules against closed forms, the forward process
//! with mixed timesteps, the posterior against Ho et al. 2020 eq. 7 (and Bayes' rule), every sampler
//! on oracle denoisers, DDIM inversion, DPM-Solver++ against DDIM-1000, guidance, the bench UNet's
//! parameter count, config errors and a short learning run.

use candle_core::{DType, Device, Tensor};
use candle_generative::data::procedural;
use candle_generative::diffusion::{
    noisy_batch, BetaSchedule, DdimSampler, DdpmSampler, DdpmVariance, Denoiser, DpmSolverSampler, Guided,
    NoiseSchedule, Sampler, ScheduleConfig, Spacing, TrainConfig, Trainer, UNet, UNetConfig, X0Processing,
};
use candle_generative::losses::diffusion::{LossWeighting, Prediction};
use candle_generative::optim::NamedVars;
use candle_generative::rng::Rng;
use candle_generative::{Error, Result};
use candle_nn::{VarBuilder, VarMap};

mod common;

fn vec_f64(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64).unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    vec_f64(a).iter().zip(vec_f64(b)).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max)
}

fn schedule(betas: BetaSchedule) -> NoiseSchedule {
    NoiseSchedule::new(&ScheduleConfig { betas, ..ScheduleConfig::default() }).unwrap()
}

#[test]
fn linear_schedule_matches_closed_forms() {
    let s = schedule(BetaSchedule::linear());
    let (b, ab) = (s.betas(), s.alpha_bar());
    assert_eq!(b.len(), 1000);
    assert!((b[0] - 1e-4).abs() < 1e-18 && (b[999] - 0.02).abs() < 1e-15);
    assert!((b[500] - (1e-4 + (0.02 - 1e-4) * 500.0 / 999.0)).abs() < 1e-15);
    assert!((ab[0] - (1.0 - 1e-4)).abs() < 1e-15);
    // log alphabar_{T-1} = sum log(1 - beta_t), summed independently.
    let log_ab: f64 = (0..1000).map(|i| (1.0 - (1e-4 + (0.02 - 1e-4) * i as f64 / 999.0)).ln()).sum();
    assert!((ab[999].ln() - log_ab).abs() < 1e-9, "{} vs {}", ab[999].ln(), log_ab);
    assert!(ab[999] > 3e-5 && ab[999] < 5e-5, "DDPM's terminal alphabar is about 4.04e-5, got {}", ab[999]);
    assert!((s.snr(10) - ab[10] / (1.0 - ab[10])).abs() < 1e-12);
}

#[test]
fn cosine_schedule_matches_nichol_dhariwal_formula() {
    let s = schedule(BetaSchedule::cosine());
    let f = |t: f64| ((t + 0.008) / 1.008 * std::f64::consts::FRAC_PI_2).cos().powi(2);
    for t in [0usize, 1, 100, 500, 900, 990] {
        let want = f((t + 1) as f64 / 1000.0) / f(0.0);
        assert!((s.alpha_bar()[t] - want).abs() < 1e-12 * want.max(1e-3), "t={t}: {} vs {want}", s.alpha_bar()[t]);
    }
    assert_eq!(s.betas()[999], 0.999, "the last beta is capped");
}

#[test]
fn scaled_linear_sigmoid_and_zero_terminal_snr() {
    let s = schedule(BetaSchedule::ScaledLinear { beta_start: 0.00085, beta_end: 0.012 });
    let want = (0.00085f64.sqrt() + (0.012f64.sqrt() - 0.00085f64.sqrt()) * 0.5).powi(2);
    assert!((s.betas()[0] - 0.00085).abs() < 1e-15 && (s.betas()[999] - 0.012).abs() < 1e-15);
    let mid = (s.betas()[499] + s.betas()[500]) / 2.0;
    assert!((mid - want).abs() < 1e-7, "{mid} vs {want}");
    let g = NoiseSchedule::new(&ScheduleConfig {
        num_timesteps: 3,
        betas: BetaSchedule::Sigmoid { beta_start: 0.1, beta_end: 0.3 },
        zero_terminal_snr: false,
    })
    .unwrap();
    let sig = |x: f64| 1.0 / (1.0 + (-x).exp());
    for (b, x) in g.betas().iter().zip([-6.0, 0.0, 6.0]) {
        assert!((b - (0.1 + 0.2 * sig(x))).abs() < 1e-15);
    }
    let z = NoiseSchedule::new(&ScheduleConfig { zero_terminal_snr: true, ..ScheduleConfig::default() }).unwrap();
    let plain = schedule(BetaSchedule::linear());
    assert!(z.alpha_bar()[999] < 1e-20 && z.snr(999) < 1e-20);
    assert!((z.alpha_bar()[0] - plain.alpha_bar()[0]).abs() < 1e-12);
    assert!(z.alpha_bar().windows(2).all(|w| w[1] < w[0]));
}

#[test]
fn add_noise_uses_each_samples_own_timestep() -> Result<()> {
    let s = schedule(BetaSchedule::linear());
    let dev = Device::Cpu;
    let mut rng = Rng::new(1);
    let x0 = rng.randn((4, 1, 3, 3), DType::F64, &dev)?;
    let eps = rng.randn((4, 1, 3, 3), DType::F64, &dev)?;
    let ts = [0u32, 999, 500, 10];
    let t = Tensor::new(&ts, &dev)?;
    let xt = vec_f64(&s.add_noise(&x0, &eps, &t)?);
    let (x0v, epsv) = (vec_f64(&x0), vec_f64(&eps));
    for i in 0..36 {
        let ab = s.alpha_bar()[ts[i / 9] as usize];
        let want = ab.sqrt() * x0v[i] + (1.0 - ab).sqrt() * epsv[i];
        assert!((xt[i] - want).abs() < 1e-12, "element {i}");
    }
    // v target with the same per-sample timesteps.
    let v = vec_f64(&s.target(Prediction::VPrediction, &x0, &eps, &t)?);
    for i in 0..36 {
        let ab = s.alpha_bar()[ts[i / 9] as usize];
        assert!((v[i] - (ab.sqrt() * epsv[i] - (1.0 - ab).sqrt() * x0v[i])).abs() < 1e-12);
    }
    assert!(matches!(s.add_noise(&x0, &eps, &Tensor::new(&[0u32, 1000, 0, 0], &dev)?), Err(Error::Shape { .. })));
    assert!(matches!(s.add_noise(&x0, &eps, &Tensor::new(&[0u32, 1], &dev)?), Err(Error::Shape { .. })));
    Ok(())
}

#[test]
fn posterior_matches_ho_eq7_and_bayes_rule() -> Result<()> {
    let s = schedule(BetaSchedule::cosine());
    let dev = Device::Cpu;
    let x0 = Tensor::new(&[0.3f64, -0.7], &dev)?;
    let xt = Tensor::new(&[1.1f64, 0.2], &dev)?;
    for t in [1usize, 10, 500, 998] {
        let (b, a, ab, ab_prev) = (s.betas()[t], s.alphas()[t], s.alpha_bar()[t], s.alpha_bar()[t - 1]);
        let (mean, var) = s.posterior(&x0, &xt, t)?;
        // Ho et al. 2020 eq. 7.
        let var7 = (1.0 - ab_prev) / (1.0 - ab) * b;
        assert!((var - var7).abs() < 1e-14, "t={t}");
        // Bayes: prior x_{t-1} ~ N(sqrt(ab_prev) x0, 1 - ab_prev), likelihood x_t ~ N(sqrt(a) x_{t-1}, b).
        let precision = 1.0 / (1.0 - ab_prev) + a / b;
        assert!((var - 1.0 / precision).abs() < 1e-10 * var, "t={t}");
        for (i, m) in vec_f64(&mean).into_iter().enumerate() {
            let (x0i, xti) = ([0.3, -0.7][i], [1.1, 0.2][i]);
            let eq7 = ab_prev.sqrt() * b / (1.0 - ab) * x0i + a.sqrt() * (1.0 - ab_prev) / (1.0 - ab) * xti;
            let bayes = (ab_prev.sqrt() / (1.0 - ab_prev) * x0i + a.sqrt() / b * xti) / precision;
            assert!((m - eq7).abs() < 1e-12 && (m - bayes).abs() < 1e-9, "t={t}: {m} {eq7} {bayes}");
        }
    }
    let (mean, var) = s.posterior(&x0, &xt, 0)?;
    assert!(var == 0.0 && max_abs_diff(&mean, &x0) < 1e-12, "t = 0 goes to x0");
    Ok(())
}

/// The exact denoiser of Gaussian data `x0 ~ N(mu, std²)` (per element, independent): with
/// `x_t = a x0 + s eps`, `E[x0 | x_t] = mu + a std² (x_t - a mu) / (a² std² + s²)`. With `std = 0` it
/// knows the data point `mu` and returns the true noise of `x_t`.
struct GaussianOracle {
    mu: Tensor,
    std: f64,
    schedule: NoiseSchedule,
    prediction: Prediction,
}

impl Denoiser for GaussianOracle {
    fn prediction(&self) -> Prediction {
        self.prediction
    }

    fn predict(&self, x_t: &Tensor, t: &Tensor, _cond: Option<&Tensor>) -> Result<Tensor> {
        let t = self.schedule.timesteps_of(t)?[0];
        let ab = self.schedule.alpha_bar()[t];
        let (a, s) = (ab.sqrt(), (1.0 - ab).sqrt());
        let gain = a * self.std * self.std / (ab * self.std * self.std + s * s);
        let x0 = (&self.mu + (x_t - self.mu.affine(a, 0.0)?)?.affine(gain, 0.0)?)?;
        let eps = (x_t - x0.affine(a, 0.0)?)?.affine(1.0 / s, 0.0)?;
        Ok(match self.prediction {
            Prediction::Epsilon => eps,
            Prediction::Sample => x0,
            Prediction::VPrediction => (eps.affine(a, 0.0)? - x0.affine(s, 0.0)?)?,
        })
    }
}

/// Returns a fixed noise whatever the input: the true noise of every point on the line
/// `sqrt(alphabar) x0 + sqrt(1 - alphabar) eps`, including `x0` itself.
struct NoiseOracle(Tensor);

impl Denoiser for NoiseOracle {
    fn prediction(&self) -> Prediction {
        Prediction::Epsilon
    }

    fn predict(&self, _x_t: &Tensor, _t: &Tensor, _cond: Option<&Tensor>) -> Result<Tensor> {
        Ok(self.0.clone())
    }
}

fn data_point(seed: u64) -> Tensor {
    Rng::new(seed).uniform((3, 1, 4, 4), -0.9, 0.9, DType::F64, &Device::Cpu).unwrap()
}

#[test]
fn every_sampler_recovers_the_data_with_an_oracle() -> Result<()> {
    let s = schedule(BetaSchedule::linear());
    let x0 = data_point(2);
    let samplers: Vec<(&str, Box<dyn Sampler>)> = vec![
        ("ddpm small", Box::new(DdpmSampler::default())),
        ("ddpm large", Box::new(DdpmSampler { variance: DdpmVariance::FixedLarge, ..DdpmSampler::default() })),
        (
            "ddpm 100 respaced",
            Box::new(DdpmSampler { steps: Some(100), x0: X0Processing::None, ..DdpmSampler::default() }),
        ),
        ("ddim leading", Box::new(DdimSampler::new(50, Spacing::Leading))),
        ("ddim trailing", Box::new(DdimSampler::new(50, Spacing::Trailing))),
        ("ddim linspace", Box::new(DdimSampler::new(50, Spacing::Linspace))),
        ("ddim eta 1", Box::new(DdimSampler { eta: 1.0, ..DdimSampler::new(20, Spacing::Trailing) })),
        ("dpm-solver++ 20", Box::new(DpmSolverSampler::new(20))),
        (
            "dpm-solver++ 10 dynamic threshold",
            Box::new(DpmSolverSampler {
                x0: X0Processing::DynamicThreshold { percentile: 0.995, max: 1.0 },
                ..DpmSolverSampler::new(10)
            }),
        ),
    ];
    for prediction in [Prediction::Epsilon, Prediction::Sample, Prediction::VPrediction] {
        let oracle = GaussianOracle { mu: x0.clone(), std: 0.0, schedule: s.clone(), prediction };
        for (name, sampler) in &samplers {
            let mut rng = Rng::new(3);
            let mut calls = 0;
            let xt = rng.randn((3, 1, 4, 4), DType::F64, &Device::Cpu)?;
            let out = sampler.run(&oracle, &s, &xt, None, &mut rng, &mut |info| {
                calls += 1;
                assert_eq!(info.index + 1, calls);
            })?;
            assert_eq!(calls, sampler.num_steps(&s), "{name}: one callback per step");
            let err = max_abs_diff(&out, &x0);
            assert!(err < 1e-9, "{name} / {prediction}: max error {err}");
        }
    }
    Ok(())
}

#[test]
fn ddim_eta0_is_deterministic_and_invertible_on_the_oracle() -> Result<()> {
    let s = schedule(BetaSchedule::linear());
    let x0 = data_point(4);
    let eps = Rng::new(5).randn((3, 1, 4, 4), DType::F64, &Device::Cpu)?;
    let oracle = NoiseOracle(eps.clone());
    for spacing in [Spacing::Leading, Spacing::Trailing, Spacing::Linspace] {
        let ddim = DdimSampler::new(25, spacing);
        let t_first = ddim.timesteps(&s)?[0];
        let ab = s.alpha_bar()[t_first];
        let xt = (x0.affine(ab.sqrt(), 0.0)? + eps.affine((1.0 - ab).sqrt(), 0.0)?)?;
        let a = ddim.run(&oracle, &s, &xt, None, &mut Rng::new(1), &mut |_| {})?;
        let b = ddim.run(&oracle, &s, &xt, None, &mut Rng::new(2), &mut |_| {})?;
        assert_eq!(vec_f64(&a), vec_f64(&b), "{spacing:?}: eta = 0 draws no noise");
        assert!(max_abs_diff(&a, &x0) < 1e-10, "{spacing:?}: sample");
        let back = ddim.invert(&oracle, &s, &a, None)?;
        assert!(max_abs_diff(&back, &xt) < 1e-10, "{spacing:?}: inversion returns x_T");
    }
    Ok(())
}

#[test]
fn dpm_solver_20_matches_ddim_1000_on_a_gaussian_oracle() -> Result<()> {
    // With std > 0 the probability-flow ODE is curved, so this compares the solvers. Its exact
    // solution for Gaussian data: with xbar = x / alpha and tau = sigma / alpha,
    // xbar(tau) - mu = sqrt(std² + tau²) / sqrt(std² + tau_T²) (xbar_T - mu), so at tau = 0
    // x0 = mu + std / sqrt(std² + tau_T²) (x_T / alpha_T - mu).
    let s = schedule(BetaSchedule::linear());
    let mu = data_point(6);
    let std = 0.5;
    let oracle = GaussianOracle { mu: mu.clone(), std, schedule: s.clone(), prediction: Prediction::Epsilon };
    let xt = Rng::new(7).randn((3, 1, 4, 4), DType::F64, &Device::Cpu)?;
    let ab_t = s.alpha_bar()[999];
    let tau_t = ((1.0 - ab_t) / ab_t).sqrt();
    let exact =
        (&mu + (xt.affine(1.0 / ab_t.sqrt(), 0.0)? - &mu)?.affine(std / (std * std + tau_t * tau_t).sqrt(), 0.0)?)?;
    let run = |sampler: &dyn Sampler| sampler.run(&oracle, &s, &xt, None, &mut Rng::new(0), &mut |_| {});
    let ddim1000 = run(&DdimSampler::new(1000, Spacing::Leading))?;
    let dpm20 = run(&DpmSolverSampler::new(20))?;
    let ddim20 = run(&DdimSampler::new(20, Spacing::Linspace))?;
    let (e_dpm, e_ddim20) = (max_abs_diff(&dpm20, &ddim1000), max_abs_diff(&ddim20, &ddim1000));
    let (e_ddim1000_exact, e_dpm_exact) = (max_abs_diff(&ddim1000, &exact), max_abs_diff(&dpm20, &exact));
    println!(
        "max |DPM-Solver++20 - DDIM1000| = {e_dpm:.2e}, |DDIM20 - DDIM1000| = {e_ddim20:.2e}; \
         vs the exact ODE solution: DDIM1000 {e_ddim1000_exact:.2e}, DPM-Solver++20 {e_dpm_exact:.2e}"
    );
    // Stated tolerance: 0.05 (the samples have scale about 1; DDIM-20 is off by about 0.3).
    assert!(e_dpm < 0.05, "DPM-Solver++(2M) 20 steps vs DDIM 1000: {e_dpm}");
    assert!(e_dpm < e_ddim20 / 3.0, "second order beats DDIM at 20 steps: {e_dpm} vs {e_ddim20}");
    assert!(e_ddim1000_exact < 0.02 && e_dpm_exact < 0.05);
    // Second order: 50 steps are much closer to the exact solution than 20.
    let dpm50 = run(&DpmSolverSampler::new(50))?;
    let e_dpm50 = max_abs_diff(&dpm50, &exact);
    assert!(e_dpm50 < e_dpm_exact / 2.0, "DPM-Solver++ 50 steps {e_dpm50} vs 20 steps {e_dpm_exact}");
    // And the point oracle: both exact.
    let point = GaussianOracle { std: 0.0, ..oracle };
    let a = DdimSampler::new(1000, Spacing::Leading).run(&point, &s, &xt, None, &mut Rng::new(0), &mut |_| {})?;
    let b = DpmSolverSampler::new(20).run(&point, &s, &xt, None, &mut Rng::new(0), &mut |_| {})?;
    assert!(max_abs_diff(&a, &b) < 1e-9 && max_abs_diff(&b, &mu) < 1e-9);
    Ok(())
}

#[test]
fn ancestral_sampling_is_seeded() -> Result<()> {
    let s = schedule(BetaSchedule::linear());
    let oracle = GaussianOracle { mu: data_point(8), std: 0.3, schedule: s.clone(), prediction: Prediction::Epsilon };
    let ddpm = DdpmSampler { steps: Some(50), ..DdpmSampler::default() };
    let run = |seed| ddpm.sample(&oracle, &s, &[3, 1, 4, 4], None, &mut Rng::new(seed), DType::F64, &Device::Cpu);
    assert_eq!(vec_f64(&run(1)?), vec_f64(&run(1)?));
    assert!(max_abs_diff(&run(1)?, &run(2)?) > 1e-3);
    Ok(())
}

/// Returns `label` (as a float) everywhere: to check the guidance combination.
struct LabelEcho;

impl Denoiser for LabelEcho {
    fn prediction(&self) -> Prediction {
        Prediction::Epsilon
    }

    fn predict(&self, x_t: &Tensor, _t: &Tensor, cond: Option<&Tensor>) -> Result<Tensor> {
        let l = cond.unwrap().to_dtype(x_t.dtype())?.reshape((x_t.dims()[0], 1, 1, 1))?;
        Ok(l.broadcast_as(x_t.shape())?.contiguous()?)
    }
}

#[test]
fn classifier_free_guidance_extrapolates_from_the_null_class() -> Result<()> {
    let dev = Device::Cpu;
    let g = Guided { inner: LabelEcho, null_class: 10, scale: 3.0 };
    let x = Tensor::zeros((2, 1, 2, 2), DType::F32, &dev)?;
    let out = g.predict(&x, &Tensor::new(&[5u32, 5], &dev)?, Some(&Tensor::new(&[2u32, 7], &dev)?))?;
    // null + 3 (label - null)
    let v = vec_f64(&out);
    assert!(
        v[..4].iter().all(|&o| o == 10.0 + 3.0 * (2.0 - 10.0))
            && v[4..].iter().all(|&o| o == 10.0 + 3.0 * (7.0 - 10.0))
    );
    assert!(g.predict(&x, &Tensor::new(&[5u32, 5], &dev)?, None).is_err());
    let labels = Tensor::new(&[1u32; 1000], &dev)?;
    let dropped = candle_generative::diffusion::drop_labels(&labels, 0.2, 10, &mut Rng::new(0))?.to_vec1::<u32>()?;
    let n = dropped.iter().filter(|&&l| l == 10).count();
    assert!(dropped.iter().all(|&l| l == 1 || l == 10) && (150..250).contains(&n), "{n} of 1000 dropped");
    Ok(())
}

#[test]
fn bench_unet_has_the_reference_parameter_count() -> Result<()> {
    // shared/bench/torch_reference.py's UNet, counted layer by layer (c = 32, temb = 128):
    //   temb MLP Linear(32,128) + Linear(128,128)              4224 + 16512 = 20736
    //   inp Conv(1,32,3)                                          320
    //   ResBlock(i,o) = GN(i) 2i + Conv3(i,o) 9io+o + Linear(128,o) 128o+o + GN(o) 2o
    //                   + Conv3(o,o) 9o²+o + (i != o: Conv1(i,o) io+o)
    //   d1 RB(32,32) 22752, down1 Conv3(32,32) 9248, d2 RB(32,64) 65984, down2 Conv3(64,64) 36928,
    //   d3 RB(64,64) 82368, m1 82368, attn GN 128 + qkv 12480 + proj 4160 = 16768, m2 82368,
    //   u3 RB(128,64) 127616, up2 Conv3(64,64) 36928, u2 RB(128,32) 54720, up1 Conv3(32,32) 9248,
    //   u1 RB(64,32) 34112, out GN(32) 64 + Conv3(32,1) 289 = 353
    //   total 682817
    let varmap = VarMap::new();
    let unet = UNet::new(&UNetConfig::bench(), VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu))?;
    assert_eq!(NamedVars::from_varmap(&varmap).num_params(), 682_817);
    let x = Tensor::zeros((2, 1, 28, 28), DType::F32, &Device::Cpu)?;
    let out = unet.predict(&x, &Tensor::new(&[0u32, 999], &Device::Cpu)?, None)?;
    assert_eq!(out.dims(), &[2, 1, 28, 28]);
    // Odd sizes and several blocks per level with attention also fit together.
    let cfg = UNetConfig {
        image_size: 9,
        base_channels: 8,
        channel_mults: vec![1, 2, 3],
        num_res_blocks: 2,
        attention_resolutions: vec![5],
        num_heads: 2,
        groups: 4,
        time_embed_dim: 16,
        num_classes: 3,
        ..UNetConfig::bench()
    };
    let unet = UNet::new(&cfg, VarBuilder::from_varmap(&VarMap::new(), DType::F32, &Device::Cpu))?;
    let x = Tensor::zeros((2, 1, 9, 9), DType::F32, &Device::Cpu)?;
    let out =
        unet.forward(&x, &Tensor::new(&[3u32, 7], &Device::Cpu)?, Some(&Tensor::new(&[0u32, 3], &Device::Cpu)?), None)?;
    assert_eq!(out.dims(), &[2, 1, 9, 9]);
    assert!(matches!(unet.predict(&x, &Tensor::new(&[3u32, 7], &Device::Cpu)?, None), Err(Error::Shape { .. })));
    let bad_label = Tensor::new(&[0u32, 4], &Device::Cpu)?;
    assert!(matches!(
        unet.predict(&x, &Tensor::new(&[3u32, 7], &Device::Cpu)?, Some(&bad_label)),
        Err(Error::Shape { .. })
    ));
    Ok(())
}

#[test]
fn config_errors_name_the_field() {
    let field = |r: Result<()>| match r {
        Err(Error::Config { field, .. }) => field,
        other => panic!("expected a config error, got {other:?}"),
    };
    let unet = |f: fn(&mut UNetConfig)| {
        let mut c = UNetConfig::bench();
        f(&mut c);
        c.validate()
    };
    assert_eq!(field(unet(|c| c.groups = 5)), "groups");
    assert_eq!(field(unet(|c| c.channel_mults = vec![])), "channel_mults");
    assert_eq!(field(unet(|c| c.base_channels = 0)), "base_channels");
    assert_eq!(field(unet(|c| c.dropout = 1.0)), "dropout");
    assert_eq!(field(unet(|c| c.num_heads = 3)), "num_heads");
    let sched = |c: ScheduleConfig| NoiseSchedule::new(&c).map(|_| ());
    assert_eq!(field(sched(ScheduleConfig { num_timesteps: 1, ..ScheduleConfig::default() })), "num_timesteps");
    let bad =
        ScheduleConfig { betas: BetaSchedule::Linear { beta_start: 0.0, beta_end: 0.02 }, ..ScheduleConfig::default() };
    assert_eq!(field(sched(bad)), "betas.beta_start");
    let s = schedule(BetaSchedule::linear());
    let oracle = NoiseOracle(Tensor::zeros((1, 1, 2, 2), DType::F64, &Device::Cpu).unwrap());
    let run = |sampler: &dyn Sampler| {
        let x = Tensor::zeros((1, 1, 2, 2), DType::F64, &Device::Cpu).unwrap();
        sampler.run(&oracle, &s, &x, None, &mut Rng::new(0), &mut |_| {}).map(|_| ())
    };
    assert_eq!(field(run(&DdimSampler::new(0, Spacing::Leading))), "steps");
    assert_eq!(field(run(&DdimSampler::new(1001, Spacing::Leading))), "steps");
    assert_eq!(field(run(&DdimSampler { eta: -1.0, ..DdimSampler::default() })), "eta");
    assert_eq!(field(run(&DpmSolverSampler { x0: X0Processing::Clip(0.0), ..DpmSolverSampler::default() })), "x0.clip");
    // Epsilon prediction cannot be sampled from a zero-terminal-SNR schedule's last timestep.
    let z = NoiseSchedule::new(&ScheduleConfig { zero_terminal_snr: true, ..ScheduleConfig::default() }).unwrap();
    let x = Tensor::zeros((1, 1, 2, 2), DType::F64, &Device::Cpu).unwrap();
    let r = DdimSampler::new(10, Spacing::Trailing).run(&oracle, &z, &x, None, &mut Rng::new(0), &mut |_| {});
    assert_eq!(field(r.map(|_| ())), "prediction");
    assert_eq!(field(TrainConfig { label_dropout: 2.0, ..TrainConfig::default() }.validate()), "label_dropout");
}

#[test]
fn noisy_batch_draws_per_sample_timesteps_and_min_snr_weights() -> Result<()> {
    let s = schedule(BetaSchedule::linear());
    let x0 = data_point(9);
    let b = noisy_batch(&s, &x0, Prediction::Epsilon, LossWeighting::min_snr(), &mut Rng::new(1))?;
    let ts = s.timesteps_of(&b.t)?;
    assert_eq!(ts.len(), 3);
    assert_eq!(vec_f64(&b.x_t), vec_f64(&s.add_noise(&x0, &b.noise, &b.t)?));
    for (w, &t) in vec_f64(&b.weights).iter().zip(&ts) {
        assert!((w - (5.0 / s.snr(t)).min(1.0)).abs() < 1e-12);
    }
    let again = noisy_batch(&s, &x0, Prediction::Epsilon, LossWeighting::min_snr(), &mut Rng::new(1))?;
    assert_eq!(vec_f64(&again.x_t), vec_f64(&b.x_t));
    Ok(())
}

#[test]
fn a_small_unet_learns_to_denoise_procedural_shapes() -> Result<()> {
    // 16x16 procedural shapes, a tiny UNet, 100 Adam steps: the epsilon loss must fall well below 1
    // (the loss of predicting 0; x_t alone gives no better constant guess).
    let data = procedural::shapes_split(256, 16, 16, 1, 0)?;
    let (unet, train) = common::small_unet_16();
    let mut trainer =
        Trainer::new(unet, &ScheduleConfig::default(), train, data.train.len(), DType::F32, &Device::Cpu)?;
    let mut losses = vec![];
    for _ in 0..100 {
        losses.push(trainer.step(&data.train)?.loss);
    }
    let first: f64 = losses[..10].iter().sum::<f64>() / 10.0;
    let last: f64 = losses[70..].iter().sum::<f64>() / 30.0;
    println!("mean loss: first 10 steps {first:.3}, last 30 steps {last:.3}");
    assert!(last < 0.25, "last 30 steps' mean loss {last} (first 10: {first})");
    // Resume is exact: a checkpoint at step 100, two more steps on each copy.
    let ck = trainer.checkpoint()?;
    let mut other = Trainer::new(
        trainer.model().config().clone(),
        &ScheduleConfig::default(),
        common::small_unet_16().1,
        data.train.len(),
        DType::F32,
        &Device::Cpu,
    )?;
    other.restore(&ck)?;
    for _ in 0..2 {
        assert_eq!(trainer.step(&data.train)?.loss, other.step(&data.train)?.loss);
    }
    let x = trainer.with_ema(|m| {
        DdimSampler::new(10, Spacing::Trailing).sample(
            m,
            trainer_schedule(),
            &[2, 1, 16, 16],
            None,
            &mut Rng::new(0),
            DType::F32,
            &Device::Cpu,
        )
    })?;
    assert!(vec_f64(&x).iter().all(|v| v.is_finite()));
    Ok(())
}

fn trainer_schedule() -> &'static NoiseSchedule {
    static S: std::sync::OnceLock<NoiseSchedule> = std::sync::OnceLock::new();
    S.get_or_init(|| NoiseSchedule::new(&ScheduleConfig::default()).unwrap())
}

/// Samplers run the denoiser for inference: the samples of a UNet whose weights are trainable
/// `Var`s carry no graph (with one, every step's graph stayed alive through `x`: 15 GB for 50
/// DDIM steps of the bench UNet on 16 images).
#[test]
fn samples_of_a_trainable_unet_hold_no_graph() -> Result<()> {
    let cfg = UNetConfig {
        image_size: 8,
        base_channels: 8,
        channel_mults: vec![1, 2],
        attention_resolutions: vec![],
        groups: 4,
        time_embed_dim: 16,
        ..UNetConfig::bench()
    };
    let varmap = VarMap::new();
    let unet = UNet::new(&cfg, VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu))?;
    assert!(!varmap.all_vars().is_empty());
    let schedule = NoiseSchedule::new(&ScheduleConfig::default())?;
    let samplers: [Box<dyn Sampler>; 3] = [
        Box::new(DdimSampler::new(3, Spacing::Leading)),
        Box::new(DpmSolverSampler::new(3)),
        Box::new(DdpmSampler { steps: Some(3), ..DdpmSampler::default() }),
    ];
    for sampler in samplers {
        let x = sampler.sample(&unet, &schedule, &[2, 1, 8, 8], None, &mut Rng::new(0), DType::F32, &Device::Cpu)?;
        assert_eq!(x.dims(), &[2, 1, 8, 8]);
        assert!(!x.track_op(), "a sample keeps the denoiser's graph");
    }
    Ok(())
}
