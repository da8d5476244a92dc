//! Evaluates generated images against the Fashion-MNIST test set: FID-FMNIST, KID,
//! precision/recall and the classifier's Inception-Score-style score, with progress.
//!
//! The samples come from a folder of PNG/JPEG images or from a checkpoint written by one of the
//! model-family examples (the family is recognised from the configs stored in the checkpoint and
//! the model is rebuilt from them):
//! ```sh
//! cargo run --release --example evaluate -- out/dcgan/checkpoints/dcgan-00002000.safetensors
//! cargo run --release --example evaluate -- out/vae/checkpoints/vae-00004680.safetensors --n 10000
//! cargo run --release --example evaluate -- path/to/png_folder
//! ```
//! Features are those of the bundled classifier (`assets/fmnist_classifier.safetensors`): the
//! numbers are FID-FMNIST, **not comparable with Inception-v3 FID**. See `docs/metrics.md`.

#[path = "common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_generative::data::image_folder::{load_image_folder, ImageFolderOptions, ResizeMode};
use candle_generative::data::mnist::{fashion_mnist, find_fashion_mnist};
use candle_generative::data::{transforms, ImageDataset};
use candle_generative::io::{save_grid, Checkpoint, GridOptions};
use candle_generative::metrics::{
    dataset_features, fid, inception_score, kid, precision_recall, FeatureExtractor, FeatureStats, FmnistClassifier,
    KidOptions,
};
use candle_generative::rng::Rng;
use candle_generative::{gan, vae, Error, Result};
use candle_nn::{VarBuilder, VarMap};
use clap::Parser;

#[derive(Parser, Debug)]
#[command(about = "FID-FMNIST, KID, precision/recall of a checkpoint's samples or a folder of images")]
struct Args {
    /// A checkpoint (.safetensors) of a model-family example, or a folder of PNG/JPEG images.
    source: PathBuf,
    /// Samples to generate (or, for a folder, the most images to use).
    #[arg(long, default_value_t = 10_000)]
    n: usize,
    /// Images per generation / feature-extraction batch.
    #[arg(long, default_value_t = 250)]
    batch_size: usize,
    /// Seed of the sampling and of KID's subsets.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Directory with the Fashion-MNIST IDX files (default: find it).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Classifier weights (default: the shipped assets/fmnist_classifier.safetensors, verified).
    #[arg(long)]
    classifier: Option<PathBuf>,
    /// Neighbours k of the precision/recall manifolds.
    #[arg(long, default_value_t = 3)]
    k: usize,
    /// KID subsets and their size.
    #[arg(long, default_value_t = 100)]
    kid_subsets: usize,
    #[arg(long, default_value_t = 1000)]
    kid_subset_size: usize,
    /// Where to write a grid of the first 64 evaluated images (empty: none).
    #[arg(long, default_value = "out/evaluate/samples.png")]
    grid: String,
    /// Device: cpu, cuda[:N], metal[:N] or auto.
    #[arg(long, default_value = "auto")]
    device: String,
}

/// Anything that draws images from a trained model: `(n, C, H, W)` in `[0, 1]`.
trait ImageSampler {
    fn sample(&self, n: usize, rng: &mut Rng) -> Result<Tensor>;
}

/// One model family: its name, whether a checkpoint belongs to it, and how to rebuild its
/// sampler from the configs stored in the checkpoint.
struct Family {
    name: &'static str,
    recognises: fn(&Checkpoint) -> bool,
    open: fn(&Checkpoint, &Device) -> Result<Box<dyn ImageSampler>>,
}

/// The dispatch table: add PixelCNN, diffusion, ... with one entry and one `open_*` function.
const FAMILIES: &[Family] = &[
    Family { name: "vae", recognises: |ck| ck.config::<vae::Config>("vae").is_ok(), open: open_vae },
    Family { name: "gan", recognises: |ck| ck.config::<gan::Config>("model").is_ok(), open: open_gan },
];

struct GanSampler(Box<dyn gan::Generator>);

impl ImageSampler for GanSampler {
    fn sample(&self, n: usize, rng: &mut Rng) -> Result<Tensor> {
        transforms::to_unit(&gan::sample_random(&self.0, n, None, rng)?)
    }
}

/// `examples/dcgan.rs`: config `model`, weights `model/gen.*` and `model/disc.*`.
fn open_gan(ck: &Checkpoint, device: &Device) -> Result<Box<dyn ImageSampler>> {
    let config: gan::Config = ck.config("model")?;
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, device);
    // The initial weights are overwritten by the checkpoint; the seed does not matter.
    let mut init = Rng::new(0);
    let gen: Box<dyn gan::Generator> = if config.conditioning.is_some() {
        gan::ConditionalDiscriminator::new(&config, vb.pp("disc"), &mut init)?;
        Box::new(gan::ConditionalGenerator::new(&config, vb.pp("gen"), &mut init)?)
    } else {
        gan::DcganDiscriminator::new(&config, vb.pp("disc"), &mut init)?;
        Box::new(gan::DcganGenerator::new(&config, vb.pp("gen"), &mut init)?)
    };
    ck.restore_varmap("model", &varmap)?;
    Ok(Box::new(GanSampler(gen)))
}

struct VaeSampler {
    trainer: vae::Trainer,
    device: Device,
}

impl ImageSampler for VaeSampler {
    fn sample(&self, n: usize, rng: &mut Rng) -> Result<Tensor> {
        let model = self.trainer.model();
        let classes = self.trainer.config().num_classes;
        let labels = if classes > 0 { Some(rng.randint(n, 0, classes as u32, &self.device)?) } else { None };
        let x = model.sample_prior(n, labels.as_ref(), DType::F32, &self.device, rng)?;
        let (lo, hi) = model.likelihood().data_range();
        Ok(x.affine(1.0 / (hi - lo) as f64, -lo as f64 / (hi - lo) as f64)?.clamp(0.0, 1.0)?)
    }
}

/// `examples/vae.rs`: the `vae::Trainer` checkpoint (configs `vae` and `train`).
fn open_vae(ck: &Checkpoint, device: &Device) -> Result<Box<dyn ImageSampler>> {
    let trainer = vae::Trainer::from_checkpoint(ck, DType::F32, device)?;
    Ok(Box::new(VaeSampler { trainer, device: device.clone() }))
}

/// Draws `n` images in batches from the checkpoint's model, as an 8-bit data set (as if saved to PNG).
fn generate(path: &Path, n: usize, batch: usize, seed: u64, device: &Device) -> Result<ImageDataset> {
    let ck = Checkpoint::load(path)?;
    let family = FAMILIES.iter().find(|f| (f.recognises)(&ck)).ok_or_else(|| {
        let names: Vec<_> = FAMILIES.iter().map(|f| f.name).collect();
        Error::checkpoint(path, format!("is not a checkpoint of a known model family ({})", names.join(", ")))
    })?;
    println!("{}: a {} checkpoint at step {}", path.display(), family.name, ck.step());
    let sampler = (family.open)(&ck, device)?;
    let mut rng = Rng::new(seed);
    let bar = common::progress_bar(n as u64, 0);
    bar.set_message("generating");
    let mut pixels = Vec::new();
    let mut shape = (0, 0, 0);
    let mut done = 0;
    while done < n {
        let b = batch.min(n - done);
        let x = sampler.sample(b, &mut rng)?;
        let (_, c, h, w) = x.dims4()?;
        shape = (c, h, w);
        let q = (x.to_device(&Device::Cpu)? * 255.0)?.round()?.clamp(0.0, 255.0)?.to_dtype(DType::U8)?;
        pixels.extend(q.flatten_all()?.to_vec1::<u8>()?);
        done += b;
        bar.set_position(done as u64);
    }
    bar.finish_and_clear();
    ImageDataset::new(format!("samples of {}", path.display()), pixels, vec![0; n], shape, 1)
}

fn features(model: &FmnistClassifier, data: &ImageDataset, args: &Args, device: &Device) -> Result<(Tensor, Tensor)> {
    let bar = common::progress_bar(data.len() as u64, 0);
    bar.set_message(format!("features of {}", data.name()));
    let (f, l) = dataset_features(model, data, args.batch_size, device, |done, _| bar.set_position(done as u64))?;
    bar.finish_and_clear();
    // The classifier always has logits.
    let l = l.ok_or_else(|| Error::config("classifier", "has no logits"))?;
    Ok((f, l))
}

fn main() {
    common::allocator::keep_freed_memory();
    if let Err(e) = run(Args::parse()) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> Result<()> {
    let device = candle_generative::device::parse_device(&args.device)?;
    let started = Instant::now();
    let dir = args.data_dir.clone().or_else(find_fashion_mnist).ok_or_else(|| {
        Error::config("--data-dir", "Fashion-MNIST not found: the reference set of FID-FMNIST is its test set")
    })?;
    let reference = fashion_mnist(&dir)?.test;
    let model = match &args.classifier {
        Some(p) => FmnistClassifier::load(p, &device)?,
        None => FmnistClassifier::pretrained(&device)?,
    };
    println!("classifier: fingerprint {}, {}-d features", model.fingerprint()?, model.feature_dim());

    let generated = if args.source.is_dir() {
        let opts = ImageFolderOptions { size: (28, 28), channels: 1, resize: ResizeMode::Stretch };
        let folder = load_image_folder(&args.source, &opts)?.dataset;
        println!("{}: {} images (resized to 28x28 grey where needed)", args.source.display(), folder.len());
        folder.take(args.n)
    } else {
        generate(&args.source, args.n, args.batch_size, args.seed, &device)?
    };
    if !args.grid.is_empty() {
        let first: Vec<usize> = (0..generated.len().min(64)).collect();
        let grid = GridOptions { range: (0.0, 1.0), ..GridOptions::default() };
        let path = save_grid(&args.grid, &generated.images(&first, &Device::Cpu)?, &grid)?;
        println!("wrote {}", path.display());
    }

    let (f_real, _) = features(&model, &reference, &args, &device)?;
    let (f_fake, logits) = features(&model, &generated, &args, &device)?;
    let fid_value = fid(&FeatureStats::from_features(&f_real)?, &FeatureStats::from_features(&f_fake)?)?;
    let kid_opts = KidOptions { num_subsets: args.kid_subsets, subset_size: args.kid_subset_size };
    let kid_value = kid(&f_real, &f_fake, &kid_opts, &mut Rng::with_stream(args.seed, 1))?;
    let pr = precision_recall(&f_real, &f_fake, args.k)?;
    let (is_mean, is_std) = inception_score(&logits, 10.min(generated.len()))?;
    println!("{} generated vs {} Fashion-MNIST test images:", generated.len(), reference.len());
    println!("  FID-FMNIST  {fid_value:.3}   (classifier features; not comparable with Inception FID)");
    println!(
        "  KID         {:.5} +- {:.5} ({} subsets of {})",
        kid_value.mean, kid_value.std, args.kid_subsets, args.kid_subset_size
    );
    println!("  precision   {:.4}   recall {:.4}   (k = {})", pr.precision, pr.recall, args.k);
    println!("  IS-FMNIST   {is_mean:.3} +- {is_std:.3}   (of at most 10 classes)");
    println!("took {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}
