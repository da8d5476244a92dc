//! Trains the DDPM UNet (Ho et al. 2020) on Fashion-MNIST (or the procedural shapes): progress bar,
//! EMA of the weights, sample grids with DDIM and DPM-Solver++ every N steps, optional class
//! conditioning with classifier-free guidance, checkpoints and resume.
//!
//! ```sh
//! cargo run --release --example ddpm -- --steps 5000                          # the bench UNet
//! cargo run --release --example ddpm -- --steps 5000 --resume                 # continue the run
//! cargo run --release --example ddpm -- --conditional --guidance 3.0          # classifier-free guidance
//! cargo run --release --example ddpm -- --base-channels 16 --channel-mults 1,2 # a smaller UNet
//! ```

#[path = "common/mod.rs"]
mod common;

use std::path::PathBuf;
use std::time::Instant;

use candle_core::{Device, Tensor};
use candle_generative::data;
use candle_generative::diffusion::{
    DdimSampler, Denoiser, DpmSolverSampler, Guided, Sampler, ScheduleConfig, Spacing, TrainConfig, Trainer,
    UNetConfig, X0Processing,
};
use candle_generative::io::{save_grid, CheckpointDir, GridOptions};
use candle_generative::losses::diffusion::{LossWeighting, Prediction};
use candle_generative::optim::{EmaConfig, EmaWarmup};
use candle_generative::rng::Rng;
use candle_generative::{Error, Result};
use clap::Parser;

#[derive(Parser, Debug)]
#[command(about = "Train a DDPM UNet; writes sample grids, checkpoints and a metrics log under --out")]
struct Args {
    /// Directory with MNIST-format IDX files (default: find Fashion-MNIST, else procedural shapes).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Output directory: samples/, checkpoints/, log.jsonl.
    #[arg(long, default_value = "out/ddpm")]
    out: PathBuf,
    /// Total optimizer steps (counting a resumed run's earlier ones).
    #[arg(long, default_value_t = 5000)]
    steps: u64,
    /// Images per step.
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// Adam's learning rate.
    #[arg(long, default_value_t = 2e-4)]
    lr: f64,
    /// UNet base channels (the bench: 32).
    #[arg(long, default_value_t = 32)]
    base_channels: usize,
    /// UNet channel multipliers per level, comma separated (the bench: 1,2,2).
    #[arg(long, default_value = "1,2,2", value_delimiter = ',')]
    channel_mults: Vec<usize>,
    /// What the UNet predicts: epsilon, sample or v-prediction.
    #[arg(long, default_value = "epsilon")]
    prediction: String,
    /// Min-SNR-5 loss weights (Hang et al. 2023) instead of uniform.
    #[arg(long)]
    min_snr: bool,
    /// Class-conditional UNet trained with label dropout (classifier-free guidance).
    #[arg(long)]
    conditional: bool,
    /// Guidance scale for the conditional samples.
    #[arg(long, default_value_t = 3.0)]
    guidance: f64,
    /// Label dropout probability when --conditional.
    #[arg(long, default_value_t = 0.1)]
    label_dropout: f64,
    /// EMA decay of the weights used for sampling.
    #[arg(long, default_value_t = 0.999)]
    ema_decay: f64,
    /// Write DDIM-50 and DPM-Solver-20 grids (and a checkpoint) every N steps.
    #[arg(long, default_value_t = 1000)]
    sample_every: u64,
    /// Print and log the mean loss every N steps.
    #[arg(long, default_value_t = 100)]
    log_every: u64,
    /// Images per grid.
    #[arg(long, default_value_t = 64)]
    grid: usize,
    /// Seed of the weights, batches, noise and samples.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Continue from the newest checkpoint in --out/checkpoints (the options must match the run's).
    #[arg(long)]
    resume: bool,
    /// Stop after this many minutes of training in this run (then write the final grids and a checkpoint).
    #[arg(long)]
    max_minutes: Option<f64>,
    /// Sample with the training weights instead of their EMA (for short runs, where the EMA still
    /// remembers the initial weights).
    #[arg(long)]
    raw_weights: bool,
    /// Only write the grids of the newest checkpoint (with --resume) and exit.
    #[arg(long)]
    sample_only: bool,
    /// Device: cpu, cuda[:N], metal[:N] or auto.
    #[arg(long, default_value = "auto")]
    device: String,
    /// Weights and activations: f32, bf16 or f16 (f32 master weights; f16 scales the loss).
    #[arg(long, default_value = "f32")]
    dtype: String,
}

/// Samples a grid with the EMA weights; returns (DDIM-50 path, DPM-Solver-20 path, seconds per image each).
fn write_grids(trainer: &mut Trainer, args: &Args, device: &Device) -> Result<[(PathBuf, f64); 2]> {
    let step = trainer.steps_taken();
    let (n, shape) = (args.grid, [args.grid, 1, 28, 28]);
    let nrow = if args.conditional { 10 } else { 8 };
    let labels = Tensor::from_vec((0..n as u32).map(|i| i % 10).collect::<Vec<_>>(), n, device)?;
    let schedule = trainer.schedule().clone();
    let trainer_dtype = trainer.dtype();
    let dir = args.out.join("samples");
    let samplers: [(&str, Box<dyn Sampler>); 2] = [
        ("ddim50", Box::new(DdimSampler { x0: X0Processing::Clip(1.0), ..DdimSampler::new(50, Spacing::Leading) })),
        ("dpm20", Box::new(DpmSolverSampler { x0: X0Processing::Clip(1.0), ..DpmSolverSampler::new(20) })),
    ];
    let mut out = Vec::new();
    for (name, sampler) in samplers {
        // The same noise for both samplers and every grid, so grids are comparable over training.
        let mut rng = Rng::new(args.seed ^ 0x5eed);
        let t = Instant::now();
        let mut draw = |unet: &candle_generative::diffusion::UNet| {
            let guided = Guided { inner: unet, null_class: unet.null_class(), scale: args.guidance };
            let den: &dyn Denoiser = if args.conditional { &guided } else { unet };
            let cond = if args.conditional { Some(&labels) } else { None };
            sampler.sample(den, &schedule, &shape, cond, &mut rng, trainer_dtype, device)
        };
        let x = if args.raw_weights { draw(trainer.model())? } else { trainer.with_ema(draw)? };
        let secs = t.elapsed().as_secs_f64() / n as f64;
        let tag = if args.raw_weights { "_raw" } else { "" };
        let path = save_grid(
            dir.join(format!("{name}{tag}_step{step:06}.png")),
            &x,
            &GridOptions { nrow, ..Default::default() },
        )?;
        out.push((path, secs));
    }
    let [a, b]: [(PathBuf, f64); 2] = out.try_into().map_err(|_| Error::config("grid", "two samplers"))?;
    Ok([a, b])
}

fn main() -> Result<()> {
    common::tuning::tune_for_training();
    let args = Args::parse();
    let device = candle_generative::device::parse_device(&args.device)?;
    let dtype = candle_generative::device::parse_dtype(&args.dtype)?;
    let (split, source) = data::fashion_mnist_or_shapes(args.data_dir.as_deref(), 10_000, 1_000, args.seed)?;
    println!("data: {source}");
    let (c, h, w) = split.train.image_shape();
    if (c, h, w) != (1, 28, 28) {
        return Err(Error::config("data", format!("this example expects 1x28x28 images, got {c}x{h}x{w}")));
    }
    let prediction: Prediction = args.prediction.parse()?;
    let unet = UNetConfig {
        base_channels: args.base_channels,
        channel_mults: args.channel_mults.clone(),
        time_embed_dim: 4 * args.base_channels,
        num_classes: if args.conditional { split.train.num_classes() } else { 0 },
        prediction,
        ..UNetConfig::bench()
    };
    let train = TrainConfig {
        lr: args.lr,
        batch_size: args.batch_size,
        weighting: if args.min_snr { LossWeighting::min_snr() } else { LossWeighting::Uniform },
        label_dropout: if args.conditional { args.label_dropout } else { 0.0 },
        // The warm-up keeps short runs from sampling with mostly initial weights.
        ema: EmaConfig { decay: args.ema_decay, warmup: EmaWarmup::Ratio, ..EmaConfig::default() },
        seed: args.seed,
    };
    let schedule = ScheduleConfig::default();
    let mut trainer = Trainer::new(unet.clone(), &schedule, train.clone(), split.train.len(), dtype, &device)?;
    println!("model: {unet:?}");
    println!(
        "({} parameters, {dtype:?}); schedule: {schedule:?}; training: {train:?}",
        trainer.varmap().all_vars().iter().map(|v| v.elem_count()).sum::<usize>()
    );

    let checkpoints = CheckpointDir::new(args.out.join("checkpoints"), "ddpm", 2)?;
    let log_path = args.out.join("log.jsonl");
    let (resumed, mut log) = common::open_run(args.resume, &checkpoints, &log_path)?;
    if let Some((path, ck)) = resumed {
        trainer.restore(&ck)?;
        println!("resumed from {} at step {}", path.display(), trainer.steps_taken());
    }

    if args.sample_only {
        let [(ddim, ddim_s), (dpm, dpm_s)] = write_grids(&mut trainer, &args, &device)?;
        println!(
            "wrote {} ({:.1} ms/image) and {} ({:.1} ms/image)",
            ddim.display(),
            ddim_s * 1e3,
            dpm.display(),
            dpm_s * 1e3
        );
        return Ok(());
    }
    let bar = common::progress_bar(args.steps, trainer.steps_taken());
    let mut train_secs = 0.0;
    let first_step = trainer.steps_taken();
    let mut window = (0.0, 0u64);
    while trainer.steps_taken() < args.steps {
        let t = Instant::now();
        let s = trainer.step(&split.train)?;
        train_secs += t.elapsed().as_secs_f64();
        window = (window.0 + s.loss, window.1 + 1);
        bar.inc(1);
        let step = trainer.steps_taken();
        if step % args.log_every == 0 || step == args.steps || args.max_minutes.is_some_and(|m| train_secs > 60.0 * m) {
            let mean = window.0 / window.1 as f64;
            log.log(step, &[("loss", mean), ("train_seconds", train_secs)])?;
            bar.set_message(common::format_scalars(&[("loss", mean)]));
            bar.suspend(|| {
                println!(
                    "step {step}: loss {mean:.4} (mean of {} steps), {train_secs:.0} s training in this run, \
                     {:.3} s/step",
                    window.1,
                    train_secs / (step - first_step).max(1) as f64
                )
            });
            window = (0.0, 0);
        }
        let out_of_time = args.max_minutes.is_some_and(|m| train_secs > 60.0 * m);
        if out_of_time {
            bar.suspend(|| println!("step {step}: --max-minutes reached"));
        }
        if step % args.sample_every == 0 || step == args.steps || out_of_time {
            checkpoints.save(&trainer.checkpoint()?)?;
            let [(ddim, ddim_s), (dpm, dpm_s)] = write_grids(&mut trainer, &args, &device)?;
            bar.suspend(|| {
                println!(
                    "step {step}: wrote {} ({:.1} ms/image) and {} ({:.1} ms/image)",
                    ddim.display(),
                    ddim_s * 1e3,
                    dpm.display(),
                    dpm_s * 1e3
                )
            });
            log.log(step, &[("ddim50_ms_per_image", ddim_s * 1e3), ("dpm20_ms_per_image", dpm_s * 1e3)])?;
        }
        if out_of_time {
            break;
        }
    }
    bar.finish();
    println!("trained to step {} ; {train_secs:.1} s of training steps in this run", trainer.steps_taken());
    if let Some(line) = common::loss_scale_report(&[("adam", trainer.optimizer())]) {
        println!("{line}");
    }
    Ok(())
}
