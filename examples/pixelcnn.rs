//! Trains a PixelCNN (van den Oord et al. 2016) or Gated PixelCNN on Fashion-MNIST (or the procedural shapes)
//! as 8-bit images with a 256-way softmax per pixel: progress bar, test bits/dim each epoch, sample grids,
//! checkpoints and exact resume.
//!
//! ```sh
//! cargo run --release --example pixelcnn -- --epochs 2                 # the benchmark's PixelCNN
//! cargo run --release --example pixelcnn -- --epochs 2 --resume        # continue the same run
//! cargo run --release --example pixelcnn -- --gated --conditional      # Gated PixelCNN, class-conditional
//! cargo run --release --example pixelcnn -- --steps 200 --eval-images 1000 --samples 16
//! ```

#[path = "common/mod.rs"]
mod common;

use std::path::PathBuf;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_generative::data::{self, ImageDataset};
use candle_generative::io::{save_grid, CheckpointDir, GridOptions};
use candle_generative::pixelcnn::{sample, Config, Head, SampleOptions, TrainConfig, Trainer};
use candle_generative::rng::Rng;
use candle_generative::Result;
use clap::Parser;

#[derive(Parser, Debug)]
#[command(about = "Train a PixelCNN; writes sample grids, checkpoints and a metrics log under --out")]
struct Args {
    /// Directory with MNIST-format IDX files (default: find Fashion-MNIST, else procedural shapes).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Output directory: samples/, checkpoints/, log.jsonl.
    #[arg(long, default_value = "out/pixelcnn")]
    out: PathBuf,
    /// Epochs to train (in total, counting a resumed run's earlier ones).
    #[arg(long, default_value_t = 2)]
    epochs: u64,
    /// Total optimizer steps instead of --epochs.
    #[arg(long)]
    steps: Option<u64>,
    /// Evaluate, sample and checkpoint every this many steps (default: once per epoch).
    #[arg(long)]
    eval_every: Option<u64>,
    /// Images per step.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Adam's learning rate.
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
    /// Gated PixelCNN instead of the benchmark's PixelCNN.
    #[arg(long)]
    gated: bool,
    /// Class-conditional model (a learned per-class bias in every layer).
    #[arg(long)]
    conditional: bool,
    /// Discretised logistic mixture head with this many components instead of the 256-way softmax.
    #[arg(long)]
    mixture: Option<usize>,
    /// Feature channels.
    #[arg(long, default_value_t = 64)]
    hidden: usize,
    /// Layers after the first (residual blocks or gated layers).
    #[arg(long, default_value_t = 5)]
    layers: usize,
    /// Seed of the weights, batch order and samples.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Continue from the newest checkpoint in --out/checkpoints (the options must match the run's).
    #[arg(long)]
    resume: bool,
    /// Test images for the bits/dim evaluation (default: all 10 000).
    #[arg(long)]
    eval_images: Option<usize>,
    /// Images in each sample grid (0: none).
    #[arg(long, default_value_t = 32)]
    samples: usize,
    /// Sampling temperature.
    #[arg(long, default_value_t = 1.0)]
    temperature: f64,
    /// Device: cpu, cuda[:N], metal[:N] or auto.
    #[arg(long, default_value = "auto")]
    device: String,
    /// Weights and activations: f32, bf16 or f16 (f32 master weights; f16 scales the loss).
    #[arg(long, default_value = "f32")]
    dtype: String,
}

/// Samples `n` images (labels cycling through the classes for a conditional model) and writes a grid.
fn write_samples(trainer: &Trainer, args: &Args, data: &ImageDataset, step: u64, device: &Device) -> Result<()> {
    if args.samples == 0 {
        return Ok(());
    }
    let (_, h, w) = data.image_shape();
    let model = trainer.model();
    let labels = if model.config().num_classes > 0 {
        let k = model.config().num_classes as u32;
        Some(Tensor::from_vec((0..args.samples as u32).map(|i| i % k).collect::<Vec<_>>(), args.samples, device)?)
    } else {
        None
    };
    let opts = SampleOptions { temperature: args.temperature, ..SampleOptions::default() };
    // The same seed at every evaluation, so successive grids show the same draws as the model learns.
    let mut rng = Rng::with_stream(args.seed, 7);
    let (images, cost) = sample(model, args.samples, h, w, labels.as_ref(), &opts, &mut rng)?;
    let path = args.out.join("samples").join(format!("samples_{step:07}.png"));
    let grid =
        GridOptions { nrow: if labels.is_some() { model.config().num_classes } else { 8 }, ..GridOptions::default() };
    let images = images.to_dtype(DType::F32)?.affine(2.0 / 255.0, -1.0)?;
    save_grid(&path, &images, &grid)?;
    println!(
        "  sampled {} images in {:.1} s: {} forward passes on {:.0}% of the rows of full-image passes -> {}",
        args.samples,
        cost.seconds,
        cost.forward_passes,
        100.0 * cost.fraction_of_uncropped(),
        path.display()
    );
    Ok(())
}

fn main() -> Result<()> {
    common::tuning::tune_for_training();
    let args = Args::parse();
    let device = candle_generative::device::parse_device(&args.device)?;
    let dtype = candle_generative::device::parse_dtype(&args.dtype)?;
    let (split, source) = data::fashion_mnist_or_shapes(args.data_dir.as_deref(), 10_000, 2_000, args.seed)?;
    println!("data: {source}");
    let (c, _, _) = split.train.image_shape();
    let base = if args.gated { Config::gated() } else { Config::default() };
    let config = Config {
        image_channels: c,
        hidden: args.hidden,
        layers: args.layers,
        head: args.mixture.map_or(Head::Softmax, |components| Head::LogisticMixture { components }),
        num_classes: if args.conditional { split.train.num_classes() } else { 0 },
        ..base
    };
    let train = TrainConfig { lr: args.lr, batch_size: args.batch_size, seed: args.seed };
    println!("model: {config:?} ({} parameters)", config.num_params()?);
    println!("training: {train:?}, {dtype:?}");

    let mut trainer = Trainer::new(config, train, split.train.len(), dtype, &device)?;
    let checkpoints = CheckpointDir::new(args.out.join("checkpoints"), "pixelcnn", 3)?;
    let log_path = args.out.join("log.jsonl");
    let (resumed, mut log) = common::open_run(args.resume, &checkpoints, &log_path)?;
    if let Some((path, ck)) = resumed {
        trainer.restore(&ck)?;
        println!("resumed from {} at step {}", path.display(), trainer.steps_taken());
    }

    let per_epoch = trainer.steps_per_epoch();
    let total = args.steps.unwrap_or(args.epochs * per_epoch);
    let every = args.eval_every.unwrap_or(per_epoch).max(1);
    let bar = common::progress_bar(total, trainer.steps_taken());
    let started = Instant::now();
    let start_step = trainer.steps_taken();
    let mut train_secs = 0.0;
    let mut window = (0.0, 0usize);
    while trainer.steps_taken() < total {
        let t = Instant::now();
        let s = trainer.step(&split.train)?;
        train_secs += t.elapsed().as_secs_f64();
        window = (window.0 + s.bits_per_dim, window.1 + 1);
        bar.inc(1);
        if (s.step + 1) % 10 == 0 {
            log.log(s.step + 1, &[("nll", s.nll), ("bits_per_dim", s.bits_per_dim)])?;
            let bpd = window.0 / window.1 as f64;
            bar.set_message(common::format_scalars(&[("bits/dim", bpd)]));
            window = (0.0, 0);
        }
        let step = trainer.steps_taken();
        if step % every == 0 || step == total {
            let t = Instant::now();
            let report = trainer.evaluate(&split.test, args.eval_images)?;
            let eval_secs = t.elapsed().as_secs_f64();
            bar.suspend(|| -> Result<()> {
                println!(
                    "epoch {:.2} (step {step}): test NLL {:.2} nats/image = {:.4} bits/dim on {} images ({:.1} s); \
                     {:.1} s of training so far",
                    step as f64 / per_epoch as f64,
                    report.nll_nats_per_image,
                    report.bits_per_dim,
                    report.num_images,
                    eval_secs,
                    train_secs
                );
                write_samples(&trainer, &args, &split.test, step, &device)
            })?;
            log.log(
                step,
                &[
                    ("test_nll", report.nll_nats_per_image),
                    ("test_bits_per_dim", report.bits_per_dim),
                    ("train_seconds", train_secs),
                ],
            )?;
            checkpoints.save(&trainer.checkpoint()?)?;
        }
    }
    bar.finish();
    println!(
        "trained to step {} ({:.2} epochs): {:.1} s of training steps in this run ({:.3} s/step), {:.1} s wall clock",
        trainer.steps_taken(),
        trainer.steps_taken() as f64 / per_epoch as f64,
        train_secs,
        train_secs / ((trainer.steps_taken() - start_step).max(1) as f64),
        started.elapsed().as_secs_f64()
    );
    if let Some(line) = common::loss_scale_report(&[("adam", trainer.optimizer())]) {
        println!("{line}");
    }
    Ok(())
}
