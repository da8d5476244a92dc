//! Training-step timings of the five reference configurations of `../shared/bench/README.md`
//! (dcgan, vae, pixelcnn, ddpm, cyclegan) and 50-step DDIM sampling of 16 images, built with the
//! crate's public API, on the CPU in f32.
//!
//! ```sh
//! cargo bench --bench train_step                 # every row
//! cargo bench --bench train_step -- pixelcnn ddpm # some rows
//! ```
//!
//! Prints one line per row, `name params=N median_ms=X min_ms=Y peak_rss_mb=Z` (20 timed steps
//! after 3 warm-ups, the format of `torch_reference.py` plus the process's peak resident memory,
//! which covers the rows run before it: run one row per process to attribute it, as
//! `scripts/compare_torch.sh` does). `CANDLE_GENERATIVE_REFERENCE_KERNELS=1` times candle's own
//! convolution kernels instead of the crate's; `BENCH_DEVICE=cuda:0` (with `--features cuda`)
//! times another device.

#[path = "../examples/common/tuning.rs"]
mod tuning;

use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_generative::cyclegan::{self, CycleGanModels, ImagePools, PatchDiscriminator, ResnetGenerator};
use candle_generative::data::{procedural, transforms, ImageDataset};
use candle_generative::diffusion::{self, DdimSampler, Sampler, ScheduleConfig, Spacing, UNetConfig};
use candle_generative::gan::{self, RealBatch, StepConfig};
use candle_generative::optim::{Adam, AdamConfig, NamedVars};
use candle_generative::rng::Rng;
use candle_generative::{pixelcnn, vae, Result};
use candle_nn::{VarBuilder, VarMap};

/// One bench row: builds its models and prints its line.
type Row = fn(&Device) -> Result<()>;

const WARMUP: usize = 3;
const STEPS: usize = 20;

/// Peak resident set size of this process in MiB (Linux `VmHWM`), or 0 where unknown.
fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).map(str::to_owned))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|kb| kb.parse::<f64>().ok()))
        .map_or(0.0, |kb| kb / 1024.0)
}

fn time(name: &str, params: usize, mut step: impl FnMut(usize) -> Result<()>) -> Result<()> {
    for i in 0..WARMUP {
        step(i)?;
    }
    let mut ms = Vec::with_capacity(STEPS);
    for i in 0..STEPS {
        let t = Instant::now();
        step(WARMUP + i)?;
        ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    ms.sort_by(f64::total_cmp);
    let median = (ms[STEPS / 2 - 1] + ms[STEPS / 2]) / 2.0;
    println!("{name} params={params} median_ms={median:.2} min_ms={:.2} peak_rss_mb={:.0}", ms[0], peak_rss_mb());
    Ok(())
}

fn data(count: usize) -> Result<ImageDataset> {
    procedural::shapes(&procedural::ShapesConfig { count, ..Default::default() })
}

fn batch(data: &ImageDataset, size: usize, offset: usize, device: &Device) -> Result<Tensor> {
    let indices: Vec<usize> = (0..size).map(|i| (offset * size + i) % data.len()).collect();
    transforms::to_signed(&data.images(&indices, device)?)
}

fn dcgan(device: &Device) -> Result<()> {
    let config = gan::Config::default();
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, device);
    let mut rng = Rng::new(0);
    let g = gan::DcganGenerator::new(&config, vb.pp("gen"), &mut rng)?;
    let d = gan::DcganDiscriminator::new(&config, vb.pp("disc"), &mut rng)?;
    let vars = |prefix: &str| NamedVars::filtered(&varmap, |n| n.starts_with(prefix) && gan::is_trainable(n));
    let (g_vars, d_vars) = (vars("gen."), vars("disc."));
    let params = g_vars.num_params() + d_vars.num_params();
    let adam = AdamConfig { lr: 2e-4, beta1: 0.5, beta2: 0.999, ..AdamConfig::default() };
    let (mut opt_g, mut opt_d) = (Adam::new_named(g_vars, adam.clone())?, Adam::new_named(d_vars, adam)?);
    let (cfg, data) = (StepConfig::default(), data(640)?);
    time("dcgan", params, |i| {
        let real = batch(&data, 64, i, device)?;
        gan::discriminator_step(&g, &d, &mut opt_d, &cfg, RealBatch::new(&real), &mut rng, i as u64)?;
        gan::generator_step(&g, &d, &mut opt_g, &cfg, 64, &mut rng, i as u64)?;
        Ok(())
    })
}

fn vae_row(device: &Device) -> Result<()> {
    let data = data(1280)?;
    let mut trainer =
        vae::Trainer::new(vae::Config::default(), vae::TrainConfig::default(), data.len(), DType::F32, device)?;
    let params = NamedVars::from_varmap(trainer.varmap()).num_params();
    time("vae", params, |_| trainer.step(&data).map(|_| ()))
}

fn pixelcnn_row(device: &Device) -> Result<()> {
    let data = data(640)?;
    let cfg = (pixelcnn::Config::default(), pixelcnn::TrainConfig::default());
    let mut trainer = pixelcnn::Trainer::new(cfg.0, cfg.1, data.len(), DType::F32, device)?;
    let params = NamedVars::from_varmap(trainer.varmap()).num_params();
    time("pixelcnn", params, |_| trainer.step(&data).map(|_| ()))
}

fn ddpm(device: &Device) -> Result<()> {
    let data = data(1280)?;
    let train = diffusion::TrainConfig::default();
    let mut trainer = diffusion::Trainer::new(
        UNetConfig::bench(),
        &ScheduleConfig::default(),
        train,
        data.len(),
        DType::F32,
        device,
    )?;
    let params = NamedVars::from_varmap(trainer.varmap()).num_params();
    time("ddpm", params, |_| trainer.step(&data).map(|_| ()))?;
    // Sampling: 50 deterministic DDIM steps for 16 images with the (untrained) raw weights.
    let sampler = DdimSampler::new(50, Spacing::Leading);
    let schedule = trainer.schedule().clone();
    let mut rng = Rng::new(1);
    let t = Instant::now();
    sampler.sample(trainer.model(), &schedule, &[16, 1, 28, 28], None, &mut rng, DType::F32, device)?;
    println!("ddpm_sample_ddim50_n16 ms={:.1} peak_rss_mb={:.0}", t.elapsed().as_secs_f64() * 1e3, peak_rss_mb());
    Ok(())
}

fn cyclegan_row(device: &Device) -> Result<()> {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, device);
    let mut rng = Rng::new(0);
    let (gc, dc) = (cyclegan::GeneratorConfig::default(), cyclegan::DiscriminatorConfig::default());
    let models = CycleGanModels {
        g_ab: ResnetGenerator::new(&gc, vb.pp("g_ab"), &mut rng)?,
        g_ba: ResnetGenerator::new(&gc, vb.pp("g_ba"), &mut rng)?,
        d_a: PatchDiscriminator::new(&dc, vb.pp("d_a"), &mut rng)?,
        d_b: PatchDiscriminator::new(&dc, vb.pp("d_b"), &mut rng)?,
    };
    let vars = |p: [&str; 2]| NamedVars::filtered(&varmap, |n| p.iter().any(|q| n.starts_with(q)));
    let (g_vars, d_vars) = (vars(["g_ab.", "g_ba."]), vars(["d_a.", "d_b."]));
    let params = g_vars.num_params() + d_vars.num_params();
    let adam = AdamConfig { lr: 2e-4, beta1: 0.5, beta2: 0.999, ..AdamConfig::default() };
    let (mut opt_g, mut opt_d) = (Adam::new_named(g_vars, adam.clone())?, Adam::new_named(d_vars, adam)?);
    // The PyTorch reference has no image pool: capacity 0 passes the fakes through.
    let (mut pools, cfg, data) = (ImagePools::new(0, 0), cyclegan::StepConfig::default(), data(400)?);
    time("cyclegan", params, |i| {
        let (a, b) = (batch(&data, 4, 2 * i, device)?, batch(&data, 4, 2 * i + 1, device)?);
        let batch = cyclegan::UnpairedBatch { a: &a, b: &b };
        cyclegan::train_step(&models, &mut opt_g, &mut opt_d, &cfg, batch, &mut pools, i as u64).map(|_| ())
    })
}

fn main() -> Result<()> {
    tuning::tune_for_training();
    // The CPU unless `BENCH_DEVICE` names another (`cuda:0`, `metal`, `auto`; see docs/performance.md).
    let device = match std::env::var("BENCH_DEVICE") {
        Ok(name) => candle_generative::device::parse_device(&name)?,
        Err(_) => Device::Cpu,
    };
    let wanted: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let rows: [(&str, Row); 5] =
        [("dcgan", dcgan), ("vae", vae_row), ("pixelcnn", pixelcnn_row), ("ddpm", ddpm), ("cyclegan", cyclegan_row)];
    println!("# candle-generative threads={} steps={STEPS}", candle_core::utils::get_num_threads());
    for (name, row) in rows {
        if wanted.is_empty() || wanted.iter().any(|w| w == name) {
            row(&device)?;
        }
    }
    Ok(())
}
