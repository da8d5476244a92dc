//! Mixed precision for every model family: the same seeded run in `f32`, `bf16` and `f16` on the
//! CPU (weights and activations in the half type, Adam on `f32` master weights, dynamic loss
//! scaling for `f16`). Each half-precision run must stay finite, keep its weights in the half
//! type, learn (its late losses below its early ones) and end close to the `f32` run. `f16` runs
//! start at the default loss scale `2^10` and may skip a first step while the scale backs off to
//! one whose gradients fit `f16`.
//!
//! `cargo test --release --test mixed_precision -- --nocapture` prints the measured losses.

use candle_core::{DType, Device, Tensor};
use candle_generative::cyclegan::{
    self, CycleGanModels, DiscriminatorConfig, GeneratorConfig, ImagePools, PatchDiscriminator, ResnetGenerator,
    UnpairedBatch,
};
use candle_generative::data::{procedural, transforms, Split};
use candle_generative::diffusion::{self, ScheduleConfig};
use candle_generative::gan::{self, DcganDiscriminator, DcganGenerator, RealBatch, StepConfig};
use candle_generative::optim::{Adam, AdamConfig, LossScaling, MixedPrecision, NamedVars};
use candle_generative::rng::Rng;
use candle_generative::{pixelcnn, vae, Result};
use candle_nn::{VarBuilder, VarMap};

mod common;

const CPU: Device = Device::Cpu;
const HALF: [DType; 2] = [DType::BF16, DType::F16];

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

/// The losses of one run per dtype (f32 first), checked as the file's doc says: every loss finite,
/// the mean of the last `window` losses below the first `window`'s, and within `tolerance`
/// (relative) of the f32 run's last `window`.
fn check_runs(family: &str, window: usize, tolerance: f64, run: impl Fn(DType) -> Result<Vec<f64>>) -> Result<()> {
    let reference = run(DType::F32)?;
    let late = |l: &[f64]| mean(&l[l.len() - window..]);
    let r = late(&reference);
    eprintln!("{family} f32: first {window} {:.4}, last {window} {r:.4}", mean(&reference[..window]));
    for dtype in HALF {
        let losses = run(dtype)?;
        assert_eq!(losses.len(), reference.len());
        assert!(losses.iter().all(|l| l.is_finite()), "{family} {dtype:?}: non-finite loss in {losses:?}");
        let (early, l) = (mean(&losses[..window]), late(&losses));
        eprintln!(
            "{family} {dtype:?}: first {window} {early:.4}, last {window} {l:.4} ({:+.2}% of f32)",
            100.0 * (l - r) / r
        );
        assert!(l < early, "{family} {dtype:?}: did not learn ({early} -> {l})");
        assert!((l - r).abs() <= tolerance * r.abs(), "{family} {dtype:?}: last losses {l} vs f32 {r}");
    }
    Ok(())
}

fn shapes(size: usize, seed: u64) -> Result<Split> {
    procedural::shapes_split(512, 16, size, 1, seed)
}

#[test]
fn vae_trains_in_bf16_and_f16() -> Result<()> {
    let data = shapes(16, 11)?;
    let config = vae::Config {
        image_size: 16,
        conv_widths: vec![8, 16],
        hidden: 32,
        latent_dim: 4,
        likelihood: vae::Likelihood::Bernoulli,
        ..vae::Config::default()
    };
    check_runs("VAE", 10, 0.05, |dtype| {
        let train = vae::TrainConfig { batch_size: 32, lr: 2e-3, seed: 3, ..vae::TrainConfig::default() };
        let mut t = vae::Trainer::new(config.clone(), train, data.train.len(), dtype, &CPU)?;
        let losses = (0..60).map(|_| Ok(t.step(&data.train)?.loss)).collect::<Result<Vec<_>>>()?;
        assert!(t.varmap().all_vars().iter().all(|v| v.dtype() == dtype), "{dtype:?}");
        Ok(losses)
    })
}

#[test]
fn pixelcnn_trains_in_bf16_and_f16() -> Result<()> {
    let data = shapes(8, 0)?;
    let config =
        pixelcnn::Config { hidden: 16, output_hidden: 16, layers: 2, first_kernel: 5, ..pixelcnn::Config::gated() };
    check_runs("PixelCNN", 10, 0.05, |dtype| {
        let train = pixelcnn::TrainConfig { batch_size: 16, lr: 3e-3, seed: 1 };
        let mut t = pixelcnn::Trainer::new(config.clone(), train, data.train.len(), dtype, &CPU)?;
        let losses = (0..60).map(|_| Ok(t.step(&data.train)?.bits_per_dim)).collect::<Result<Vec<_>>>()?;
        let skipped = t.optimizer().skipped_steps();
        eprintln!("PixelCNN {dtype:?}: {skipped} steps skipped by the loss scaler");
        assert!(skipped <= 2, "{dtype:?}: {skipped} skipped steps");
        Ok(losses)
    })
}

#[test]
fn diffusion_trains_in_bf16_and_f16_and_resumes_exactly() -> Result<()> {
    let data = shapes(16, 0)?;
    let (unet, train) = common::small_unet_16();
    let new =
        |dtype| diffusion::Trainer::new(unet.clone(), &ScheduleConfig::default(), train.clone(), 512, dtype, &CPU);
    check_runs("diffusion", 15, 0.10, |dtype| {
        let mut t = new(dtype)?;
        (0..60).map(|_| Ok(t.step(&data.train)?.loss)).collect()
    })?;
    // A half-precision checkpoint holds the f32 masters and the loss scale: resume is bit for bit.
    let mut straight = new(DType::F16)?;
    for _ in 0..3 {
        straight.step(&data.train)?;
    }
    let ck = straight.checkpoint()?;
    let mut resumed = new(DType::F16)?;
    resumed.restore(&ck)?;
    for _ in 0..2 {
        assert_eq!(straight.step(&data.train)?.loss, resumed.step(&data.train)?.loss);
    }
    assert_eq!(straight.optimizer().loss_scale(), resumed.optimizer().loss_scale());
    Ok(())
}

fn trainable(varmap: &VarMap, prefix: &str) -> NamedVars {
    NamedVars::filtered(varmap, |n| n.starts_with(prefix) && gan::is_trainable(n))
}

fn mixed_adam(vars: NamedVars, lr: f64) -> Result<MixedPrecision<Adam>> {
    MixedPrecision::auto(vars, |m| Adam::new_named(m, AdamConfig { lr, beta1: 0.5, ..Default::default() }))
}

#[test]
fn dcgan_trains_in_bf16_and_f16() -> Result<()> {
    let data = procedural::shapes_split(512, 16, 28, 1, 4)?.train;
    let config = gan::Config { latent_dim: 16, base_width: 4, ..gan::Config::default() };
    // The generator's loss is the quantity to compare: the discriminator's drifts as G improves.
    check_runs("DCGAN (D loss)", 10, 0.10, |dtype| {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, dtype, &CPU);
        let mut init = Rng::new(5);
        let gen = DcganGenerator::new(&config, vb.pp("gen"), &mut init)?;
        let disc = DcganDiscriminator::new(&config, vb.pp("disc"), &mut init)?;
        let mut opt_g = mixed_adam(trainable(&varmap, "gen."), 2e-3)?;
        let mut opt_d = mixed_adam(trainable(&varmap, "disc."), 2e-3)?;
        let (cfg, mut rng) = (StepConfig::default(), Rng::new(6));
        let mut losses = Vec::new();
        for step in 0..40u64 {
            let idx: Vec<usize> = (0..16).map(|i| (step as usize * 16 + i) % data.len()).collect();
            let real = transforms::to_signed(&data.images(&idx, &CPU)?)?.to_dtype(dtype)?;
            let d = gan::discriminator_step(&gen, &disc, &mut opt_d, &cfg, RealBatch::new(&real), &mut rng, step)?;
            gan::generator_step(&gen, &disc, &mut opt_g, &cfg, 16, &mut rng, step)?;
            losses.push(d.loss);
        }
        let skipped = opt_g.skipped_steps() + opt_d.skipped_steps();
        eprintln!("DCGAN {dtype:?}: {skipped} steps skipped by the loss scaler");
        assert!(skipped <= 2, "{dtype:?}: {skipped} skipped steps");
        Ok(losses)
    })
}

#[test]
fn cyclegan_trains_in_bf16_and_f16() -> Result<()> {
    let batch = |seed: u64| -> Result<Tensor> {
        let d = procedural::shapes(&procedural::ShapesConfig { size: 16, count: 4, seed, ..Default::default() })?;
        transforms::to_signed(&d.images(&[0, 1, 2, 3], &CPU)?)
    };
    let g = GeneratorConfig { base_width: 4, residual_blocks: 1, downsamplings: 1, ..Default::default() };
    let d = DiscriminatorConfig { base_width: 4, layers: 2, ..Default::default() };
    check_runs("CycleGAN (G loss)", 5, 0.10, |dtype| {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, dtype, &CPU);
        let mut init = Rng::new(9);
        let models = CycleGanModels {
            g_ab: ResnetGenerator::new(&g, vb.pp("g_ab"), &mut init)?,
            g_ba: ResnetGenerator::new(&g, vb.pp("g_ba"), &mut init)?,
            d_a: PatchDiscriminator::new(&d, vb.pp("d_a"), &mut init)?,
            d_b: PatchDiscriminator::new(&d, vb.pp("d_b"), &mut init)?,
        };
        let prefixed = |p: [&str; 2]| NamedVars::filtered(&varmap, |n| p.iter().any(|q| n.starts_with(q)));
        let adam = |vars| MixedPrecision::auto(vars, |m| Adam::new_named(m, AdamConfig::default()));
        let (mut opt_g, mut opt_d) = (adam(prefixed(["g_ab.", "g_ba."]))?, adam(prefixed(["d_a.", "d_b."]))?);
        let cfg = cyclegan::StepConfig::default();
        let mut pools = ImagePools::new(4, 0);
        let mut losses = Vec::new();
        for step in 0..30u64 {
            let (a, b) = (batch(step)?.to_dtype(dtype)?, batch(1000 + step)?.to_dtype(dtype)?);
            let s = cyclegan::train_step(
                &models,
                &mut opt_g,
                &mut opt_d,
                &cfg,
                UnpairedBatch { a: &a, b: &b },
                &mut pools,
                step,
            )?;
            losses.push(s.generator.loss);
        }
        Ok(losses)
    })
}
