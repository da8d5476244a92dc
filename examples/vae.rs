//! Trains the convolutional VAE (Kingma & Welling 2014) on Fashion-MNIST (or the procedural shapes):
//! progress bar, test ELBO each epoch, PNG grids of samples and reconstructions, checkpoints and resume,
//! and at the end the importance-weighted bound IWAE(k) (Burda et al. 2016).
//!
//! ```sh
//! cargo run --release --example vae -- --epochs 5                      # Bernoulli on binarised data
//! cargo run --release --example vae -- --epochs 5 --resume             # continue the same run
//! cargo run --release --example vae -- --likelihood logistic --beta 4  # 8-bit data, a β-VAE
//! cargo run --release --example vae -- --conditional                   # labels into encoder and decoder
//! cargo run --release --example vae -- --dtype bf16                    # bf16 weights, f32 master copies
//! ```

#[path = "common/mod.rs"]
mod common;

use std::path::PathBuf;
use std::time::Instant;

use candle_generative::data;
use candle_generative::io::CheckpointDir;
use candle_generative::vae::{
    save_grids, Config, EvalOptions, EvalReport, KlAnnealing, Likelihood, TrainConfig, Trainer,
};
use candle_generative::{Error, Result};
use clap::Parser;

#[derive(Parser, Debug)]
#[command(about = "Train a convolutional VAE; writes grids, checkpoints and a metrics log under --out")]
struct Args {
    /// Directory with MNIST-format IDX files (default: find Fashion-MNIST, else procedural shapes).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Output directory: samples/, checkpoints/, log.jsonl.
    #[arg(long, default_value = "out/vae")]
    out: PathBuf,
    /// Epochs to train (in total, counting a resumed run's earlier ones).
    #[arg(long, default_value_t = 10)]
    epochs: u64,
    /// Total optimizer steps instead of --epochs.
    #[arg(long)]
    steps: Option<u64>,
    /// Images per step.
    #[arg(long, default_value_t = 128)]
    batch_size: usize,
    /// Adam's learning rate.
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
    /// Latent dimensions.
    #[arg(long, default_value_t = 32)]
    latent: usize,
    /// KL weight β (1: the ELBO; > 1: β-VAE).
    #[arg(long, default_value_t = 1.0)]
    beta: f64,
    /// Steps over which β ramps up linearly from 0 (KL warm-up; 0: none).
    #[arg(long, default_value_t = 0)]
    kl_warmup_steps: u64,
    /// Free bits per latent dimension, in nats.
    #[arg(long)]
    free_bits: Option<f64>,
    /// bernoulli (binarised data in {0, 1}), gaussian (dequantised, [-1, 1]) or logistic (8-bit, [-1, 1]).
    #[arg(long, default_value = "bernoulli")]
    likelihood: String,
    /// Conditional VAE: class labels into encoder and decoder.
    #[arg(long)]
    conditional: bool,
    /// Seed of the weights, batch order, binarisation and codes.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Continue from the newest checkpoint in --out/checkpoints (the options must match the run's).
    #[arg(long)]
    resume: bool,
    /// Test images for the per-epoch ELBO (default: all).
    #[arg(long)]
    eval_images: Option<usize>,
    /// Samples k of the final IWAE bound (0: skip it).
    #[arg(long, default_value_t = 100)]
    iwae_k: usize,
    /// Test images for the final IWAE bound (it costs about k decoder passes per image).
    #[arg(long, default_value_t = 1000)]
    iwae_images: usize,
    /// Device: cpu, cuda[:N], metal[:N] or auto.
    #[arg(long, default_value = "auto")]
    device: String,
    /// Weights and activations: f32, bf16 or f16 (f32 master weights; f16 scales the loss).
    #[arg(long, default_value = "f32")]
    dtype: String,
}

fn print_report(what: &str, r: &EvalReport) {
    println!(
        "{what}: -ELBO {:.2} nats ({:.4} bits/dim) = KL {:.2} - log p(x|z) {:.2}, on {} test images",
        r.neg_elbo,
        r.neg_elbo_bits_per_dim(),
        r.kl,
        r.reconstruction,
        r.num_images
    );
    if let Some((k, nats)) = r.iwae {
        println!("{what}: -IWAE(k={k}) {nats:.2} nats ({:.4} bits/dim)", r.bits_per_dim(nats));
    }
}

fn main() -> Result<()> {
    common::tuning::tune_for_training();
    let args = Args::parse();
    let device = candle_generative::device::parse_device(&args.device)?;
    let dtype = candle_generative::device::parse_dtype(&args.dtype)?;
    let (split, source) = data::fashion_mnist_or_shapes(args.data_dir.as_deref(), 10_000, 2_000, args.seed)?;
    println!("data: {source}");
    let (c, h, w) = split.train.image_shape();
    if h != w {
        return Err(Error::config("data", format!("the conv VAE needs square images, got {h}x{w}")));
    }
    let likelihood: Likelihood = args.likelihood.parse()?;
    let config = Config {
        image_channels: c,
        image_size: h,
        latent_dim: args.latent,
        likelihood,
        num_classes: if args.conditional { split.train.num_classes() } else { 0 },
        ..Config::default()
    };
    let annealing = KlAnnealing::warmup(args.beta, args.kl_warmup_steps);
    let train =
        TrainConfig { lr: args.lr, batch_size: args.batch_size, annealing, free_bits: args.free_bits, seed: args.seed };
    println!("model: {config:?} ({} parameters)", config.num_params());
    println!("training: {train:?}, {dtype:?}");

    let mut trainer = Trainer::new(config, train, split.train.len(), dtype, &device)?;
    let checkpoints = CheckpointDir::new(args.out.join("checkpoints"), "vae", 3)?;
    let log_path = args.out.join("log.jsonl");
    let (resumed, mut log) = common::open_run(args.resume, &checkpoints, &log_path)?;
    if let Some((path, ck)) = resumed {
        // The trainer refuses a checkpoint of another config, naming the fields that differ.
        trainer.restore(&ck)?;
        println!("resumed from {} at step {}", path.display(), trainer.steps_taken());
    }

    let per_epoch = trainer.steps_per_epoch();
    let total = args.steps.unwrap_or(args.epochs * per_epoch);
    let eval_opts = EvalOptions { max_images: args.eval_images, seed: args.seed, ..EvalOptions::default() };
    let bar = common::progress_bar(total, trainer.steps_taken());
    let started = Instant::now();
    let mut train_secs = 0.0;
    let mut window = (0.0, 0usize);
    while trainer.steps_taken() < total {
        let t = Instant::now();
        let s = trainer.step(&split.train)?;
        train_secs += t.elapsed().as_secs_f64();
        window = (window.0 + s.neg_elbo, window.1 + 1);
        bar.inc(1);
        if (s.step + 1) % 10 == 0 {
            let scalars = [("loss", s.loss), ("neg_elbo", s.neg_elbo), ("kl", s.kl), ("beta", s.beta)];
            log.log(s.step + 1, &scalars)?;
            bar.set_message(common::format_scalars(&[("-elbo", window.0 / window.1 as f64), ("kl", s.kl)]));
            window = (0.0, 0);
        }
        let step = trainer.steps_taken();
        if step % per_epoch == 0 || step == total {
            let report = trainer.evaluate(&split.test, &eval_opts)?;
            bar.suspend(|| {
                print_report(&format!("epoch {:.2} (step {step})", step as f64 / per_epoch as f64), &report)
            });
            log.log(
                step,
                &[
                    ("test_neg_elbo", report.neg_elbo),
                    ("test_kl", report.kl),
                    ("test_bits_per_dim", report.neg_elbo_bits_per_dim()),
                    ("train_seconds", train_secs),
                ],
            )?;
            save_grids(trainer.model(), &split.test, args.out.join("samples"), args.seed, dtype, &device)?;
            checkpoints.save(&trainer.checkpoint()?)?;
        }
    }
    bar.finish();
    println!(
        "trained {} steps ({:.2} epochs) in this run: {:.1} s of training steps, {:.1} s wall clock with evaluation",
        trainer.steps_taken(),
        trainer.steps_taken() as f64 / per_epoch as f64,
        train_secs,
        started.elapsed().as_secs_f64()
    );

    if let Some(line) = common::loss_scale_report(&[("adam", trainer.optimizer())]) {
        println!("{line}");
    }
    let grids = save_grids(trainer.model(), &split.test, args.out.join("samples"), args.seed, dtype, &device)?;
    println!("wrote {}", grids.samples.display());
    println!("wrote {}", grids.reconstructions.display());
    println!("wrote {}", grids.interpolation.display());

    if args.iwae_k > 0 {
        let t = Instant::now();
        let opts = EvalOptions { max_images: Some(args.iwae_images), iwae_samples: Some(args.iwae_k), ..eval_opts };
        let report = trainer.evaluate(&split.test, &opts)?;
        print_report(&format!("final, first {} test images", report.num_images), &report);
        println!("(IWAE evaluation took {:.1} s)", t.elapsed().as_secs_f64());
        let (k, nats) = report.iwae.unwrap_or_default();
        log.log(
            trainer.steps_taken(),
            &[("test_neg_elbo_subset", report.neg_elbo), (&format!("test_neg_iwae_{k}"), nats)],
        )?;
    }
    Ok(())
}
