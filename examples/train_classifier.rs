//! Trains the small CNN of `metrics::FmnistClassifier` on Fashion-MNIST and saves it as the
//! feature extractor of "FID-FMNIST" (its 128-d penultimate layer).
//!
//! ```sh
//! cargo run --release --example train_classifier                       # 6 epochs, writes out/classifier/
//! cargo run --release --example train_classifier -- --out assets      # refresh the shipped weights
//! ```
//! The shipped file is `assets/fmnist_classifier.safetensors`; after replacing it, update
//! `PRETRAINED_FINGERPRINT` in `src/metrics/fmnist_classifier.rs` to the fingerprint printed here.

#[path = "common/mod.rs"]
mod common;

use std::path::PathBuf;
use std::time::Instant;

use candle_core::{DType, Device};
use candle_generative::data::batcher::Batcher;
use candle_generative::data::mnist::{fashion_mnist, find_fashion_mnist};
use candle_generative::data::{transforms, ImageDataset};
use candle_generative::io::Checkpoint;
use candle_generative::metrics::fmnist_classifier::CLASSIFIER_SECTION;
use candle_generative::metrics::{ClassifierConfig, FmnistClassifier};
use candle_generative::nn::init::{init_vars, InitKind};
use candle_generative::optim::{Adam, AdamConfig, NamedVars};
use candle_generative::rng::Rng;
use candle_generative::{Error, Result};
use candle_nn::{Optimizer, VarBuilder, VarMap};
use clap::Parser;

#[derive(Parser, Debug)]
#[command(about = "Train the Fashion-MNIST classifier used as FID-FMNIST feature extractor")]
struct Args {
    /// Directory with the Fashion-MNIST IDX files (default: find it).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Output directory; the weights go to <out>/fmnist_classifier.safetensors.
    #[arg(long, default_value = "out/classifier")]
    out: PathBuf,
    /// Epochs over the 60 000 training images (6 give the shipped weights, 90.2 % test accuracy).
    #[arg(long, default_value_t = 6)]
    epochs: u64,
    /// Images per step.
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// Adam's learning rate (cosine-decayed to 0 over the run).
    #[arg(long, default_value_t = 2e-3)]
    lr: f64,
    /// Seed of the weights and batch order.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

fn test_accuracy(model: &FmnistClassifier, test: &ImageDataset, device: &Device) -> Result<f64> {
    let mut hits = 0.0;
    let idx: Vec<usize> = (0..test.len()).collect();
    for chunk in idx.chunks(500) {
        let x = transforms::to_signed(&test.images(chunk, device)?)?;
        let y = test.labels_tensor(chunk, device)?;
        hits += model.accuracy(&x, &y)? * chunk.len() as f64;
    }
    Ok(hits / test.len() as f64)
}

fn main() -> Result<()> {
    common::tuning::tune_for_training();
    let args = Args::parse();
    let device = Device::Cpu;
    let dir = match args.data_dir.clone().or_else(find_fashion_mnist) {
        Some(d) => d,
        None => return Err(Error::config("--data-dir", "Fashion-MNIST not found; the classifier needs the real data")),
    };
    let split = fashion_mnist(&dir)?;
    println!("data: Fashion-MNIST from {}", dir.display());

    let varmap = VarMap::new();
    let model =
        FmnistClassifier::new(ClassifierConfig::default(), VarBuilder::from_varmap(&varmap, DType::F32, &device))?;
    // candle's initialisers cannot be seeded on the CPU: re-draw every weight from the seed.
    init_vars(&NamedVars::from_varmap(&varmap), &mut Rng::new(args.seed), |name, _| {
        if name.ends_with("bias") {
            InitKind::Constant(0.0)
        } else {
            InitKind::KaimingUniform
        }
    })?;
    let mut adam = Adam::new_named(NamedVars::from_varmap(&varmap), AdamConfig::with_lr(args.lr))?;
    let batcher = Batcher::new(split.train.len(), args.batch_size, args.seed)?.drop_last(true);
    let total = args.epochs * batcher.batches_per_epoch() as u64;
    let bar = common::progress_bar(total, 0);
    let started = Instant::now();
    let mut window = (0.0, 0usize);
    for (step, idx) in batcher.iter_from(0).take(total as usize) {
        let lr = 0.5 * args.lr * (1.0 + (std::f64::consts::PI * step as f64 / total as f64).cos());
        adam.set_learning_rate(lr);
        let x = transforms::to_signed(&split.train.images(&idx, &device)?)?;
        let y = split.train.labels_tensor(&idx, &device)?;
        let (_, logits) = model.forward_both(&x)?;
        let loss = candle_nn::loss::cross_entropy(&logits, &y)?;
        let l = candle_generative::error::check_finite("cross_entropy", Some(step), loss.to_scalar::<f32>()? as f64)?;
        adam.backward_step(&loss)?;
        window = (window.0 + l, window.1 + 1);
        bar.inc(1);
        if (step + 1) % 20 == 0 {
            let msg = common::format_scalars(&[("loss", window.0 / window.1 as f64), ("lr", lr)]);
            if bar.is_hidden() && (step + 1) % 100 == 0 {
                // No terminal (e.g. under nohup): a plain line now and then instead of the bar.
                println!("step {}/{total} {msg} ({:.0} s)", step + 1, started.elapsed().as_secs_f64());
            }
            bar.set_message(msg);
            window = (0.0, 0);
        }
        if (step + 1) % batcher.batches_per_epoch() as u64 == 0 {
            let acc = test_accuracy(&model, &split.test, &device)?;
            let epoch = (step + 1) / batcher.batches_per_epoch() as u64;
            bar.suspend(|| {
                println!("epoch {epoch}: test accuracy {:.2}% ({:.0} s)", 100.0 * acc, started.elapsed().as_secs_f64())
            });
        }
    }
    bar.finish();
    let train_secs = started.elapsed().as_secs_f64();
    let acc = test_accuracy(&model, &split.test, &device)?;
    println!("final test accuracy {:.2}% after {total} steps, {train_secs:.0} s", 100.0 * acc);

    let mut ck = Checkpoint::new(total);
    ck.add_varmap(CLASSIFIER_SECTION, &varmap)?;
    ck.set_config(CLASSIFIER_SECTION, model.config())?;
    ck.set_meta("test_accuracy", format!("{acc:.4}"));
    ck.set_meta("trained_by", format!("examples/train_classifier.rs {args:?}"));
    let path = args.out.join("fmnist_classifier.safetensors");
    ck.save(&path)?;
    let reloaded = FmnistClassifier::load(&path, &device)?;
    println!("wrote {} (fingerprint {})", path.display(), reloaded.fingerprint()?);
    Ok(())
}
