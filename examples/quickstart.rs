//! Quickstart: trains the convolutional VAE (Kingma & Welling 2014) on Fashion-MNIST (the procedural
//! shapes when it is not installed) for about two to three minutes on a 2-core CPU, prints the test
//! negative ELBO, and writes prior samples and reconstructions as PNG grids.
//!
//! ```sh
//! cargo run --release --example quickstart                 # Fashion-MNIST when installed
//! cargo run --release --example quickstart -- --help       # options
//! ```
//!
//! The model is the crate's benchmark VAE (`vae::Config::default()`, 1.7 M parameters) with a
//! Bernoulli likelihood on binarised images, so the ELBO is a bound on a true log-likelihood and
//! bits/dim are bits per binary pixel. `examples/vae.rs` is the full version (epochs, checkpoints,
//! resume, other likelihoods, β-VAE, conditional VAE, IWAE).

#[path = "common/mod.rs"]
mod common;

use std::path::PathBuf;
use std::time::Instant;

use candle_core::DType;
use candle_generative::data;
use candle_generative::vae::{save_grids, Config, EvalOptions, TrainConfig, Trainer};
use clap::Parser;

#[derive(Parser, Debug)]
#[command(about = "Train a small VAE for a few minutes, print its test ELBO and write PNG grids")]
struct Args {
    /// Directory with MNIST-format IDX files (default: find Fashion-MNIST, else procedural shapes).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Where the PNG grids go.
    #[arg(long, default_value = "out/quickstart")]
    out: PathBuf,
    /// Training steps of 128 images (750, 1.6 epochs of Fashion-MNIST, take about 2.5 minutes on a 2-core CPU).
    #[arg(long, default_value_t = 750)]
    steps: u64,
    /// Seed of the weights, batch order, binarisation and latent noise.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Device: cpu, cuda[:N], metal[:N] or auto.
    #[arg(long, default_value = "auto")]
    device: String,
}

fn main() -> candle_generative::Result<()> {
    common::tuning::tune_for_training();
    let args = Args::parse();
    let device = candle_generative::device::parse_device(&args.device)?;
    let started = Instant::now();
    let (split, source) = data::fashion_mnist_or_shapes(args.data_dir.as_deref(), 10_000, 2_000, args.seed)?;
    println!("data: {source} ({} train, {} test images)", split.train.len(), split.test.len());

    let config = Config::default(); // 1x28x28, Bernoulli, latent 32: the benchmark VAE
    let train = TrainConfig { seed: args.seed, ..TrainConfig::default() }; // Adam 1e-3, batches of 128
    println!("model: convolutional VAE, {} parameters, {} likelihood", config.num_params(), config.likelihood);
    let mut trainer = Trainer::new(config, train, split.train.len(), DType::F32, &device)?;

    let bar = common::progress_bar(args.steps, 0);
    for _ in 0..args.steps {
        let stats = trainer.step(&split.train)?;
        bar.inc(1);
        if stats.step % 10 == 0 {
            bar.set_message(common::format_scalars(&[("-elbo", stats.neg_elbo), ("kl", stats.kl)]));
        }
    }
    bar.finish_and_clear();
    let train_time = started.elapsed();

    let report = trainer.evaluate(&split.test, &EvalOptions { seed: args.seed, ..EvalOptions::default() })?;
    println!(
        "trained {} steps ({:.2} epochs) in {:.0?}",
        args.steps,
        args.steps as f64 / trainer.steps_per_epoch() as f64,
        train_time
    );
    println!(
        "test negative ELBO: {:.2} nats per image = {:.4} bits/dim (KL {:.2} nats, reconstruction {:.2} nats), \
         {} binarised test images",
        report.neg_elbo,
        report.neg_elbo_bits_per_dim(),
        report.kl,
        -report.reconstruction,
        report.num_images
    );

    let grids = save_grids(trainer.model(), &split.test, &args.out, args.seed, DType::F32, &device)?;
    println!("wrote {} (64 samples from the prior)", grids.samples.display());
    println!("wrote {} (test images, each left of its reconstruction)", grids.reconstructions.display());
    println!("wrote {} (latent interpolations)", grids.interpolation.display());
    println!("total time {:.0?}", started.elapsed());
    Ok(())
}
