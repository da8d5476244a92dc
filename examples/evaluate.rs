//! Evaluates generated images against the Fashion-MNIST test set: FID-FMNIST, KID,
//! precision/recall and the classifier's Inception-Score-style score, with progress.
//!
//! The samples come from a folder of PNG/JPEG images or from a checkpoint written by one of the
//! model-family examples (the family is recognised from the configs stored in the checkpoint and
//! the model is rebuilt from them):
//! ```sh
//! cargo run --release --example evaluate -- out/dcgan/checkpoints/dcgan-00002000.safetensors
//! cargo run --release --example evaluate -- out/vae/checkpoints/vae-00004680.safetensors --n 10000
//! cargo run --release --example evaluate -- out/pixelcnn/checkpoints/pixelcnn-00001875.safetensors --n 500
//! cargo run --release --example evaluate -- out/ddpm/checkpoints/ddpm-00005000.safetensors --n 2000
//! cargo run --release --example evaluate -- path/to/png_folder
//! ```
//! PixelCNN samples pixel by pixel (784 network passes per batch), so keep `--n` small there;
//! diffusion checkpoints sample with DPM-Solver++ (`--diffusion-steps`, default 20) from the EMA
//! weights, with classifier-free guidance `--guidance` for a class-conditional UNet.
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
use candle_generative::diffusion::Sampler;
use candle_generative::io::{save_grid, Checkpoint, GridOptions};
use candle_generative::metrics::{
    dataset_features, fid, inception_score, kid, precision_recall, FeatureExtractor, FeatureStats, FmnistClassifier,
    KidOptions,
};
use candle_generative::rng::Rng;
use candle_generative::{diffusion, gan, pixelcnn, vae, Error, Result};
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
    /// Denoiser evaluations per diffusion sample (DPM-Solver++).
    #[arg(long, default_value_t = 20)]
    diffusion_steps: usize,
    /// Classifier-free guidance scale of a class-conditional diffusion model (1: none).
    #[arg(long, default_value_t = 3.0)]
    guidance: f64,
    /// Device: cpu, cuda[:N], metal[:N] or auto.
    #[arg(long, default_value = "auto")]
    device: String,
}

/// Anything that draws images from a trained model: `(n, C, H, W)` in `[0, 1]`.
trait ImageSampler {
    fn sample(&mut self, n: usize, rng: &mut Rng) -> Result<Tensor>;
}

/// One model family: its name, whether a checkpoint belongs to it, and how to rebuild its
/// sampler from the configs stored in the checkpoint.
struct Family {
    name: &'static str,
    recognises: fn(&Checkpoint) -> bool,
    open: fn(&Checkpoint, &Args, &Device) -> Result<Box<dyn ImageSampler>>,
}

/// The dispatch table: a new family is one entry and one `open_*` function. (CycleGAN translates
/// images rather than generating them; its example reports its own translation metrics.)
const FAMILIES: &[Family] = &[
    Family { name: "vae", recognises: |ck| ck.config::<vae::Config>("vae").is_ok(), open: open_vae },
    Family { name: "gan", recognises: |ck| ck.config::<gan::Config>("model").is_ok(), open: open_gan },
    Family {
        name: "pixelcnn",
        recognises: |ck| ck.config::<pixelcnn::Config>("pixelcnn").is_ok(),
        open: open_pixelcnn,
    },
    Family {
        name: "diffusion",
        recognises: |ck| ck.config::<diffusion::UNetConfig>("unet").is_ok(),
        open: open_diffusion,
    },
];

/// The training-set size a trainer's checkpoint was written for (its batcher needs it).
fn train_len(ck: &Checkpoint) -> Result<usize> {
    ck.meta("train_len")
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| Error::checkpoint(ck.path(), "has no `train_len` entry"))
}

/// Random class labels `(n,)` for a conditional model with `classes > 0` classes.
fn random_labels(n: usize, classes: usize, rng: &mut Rng, device: &Device) -> Result<Option<Tensor>> {
    if classes == 0 {
        return Ok(None);
    }
    Ok(Some(rng.randint(n, 0, classes as u32, device)?))
}

struct GanSampler(Box<dyn gan::Generator>);

impl ImageSampler for GanSampler {
    fn sample(&mut self, n: usize, rng: &mut Rng) -> Result<Tensor> {
        transforms::to_unit(&gan::sample_random(&self.0, n, None, rng)?)
    }
}

/// `examples/dcgan.rs`: config `model`, weights `model/gen.*` and `model/disc.*`.
fn open_gan(ck: &Checkpoint, _: &Args, device: &Device) -> Result<Box<dyn ImageSampler>> {
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
    fn sample(&mut self, n: usize, rng: &mut Rng) -> Result<Tensor> {
        let model = self.trainer.model();
        let labels = random_labels(n, self.trainer.config().num_classes, rng, &self.device)?;
        let x = model.sample_prior(n, labels.as_ref(), DType::F32, &self.device, rng)?;
        let (lo, hi) = model.likelihood().data_range();
        Ok(x.affine(1.0 / (hi - lo) as f64, -lo as f64 / (hi - lo) as f64)?.clamp(0.0, 1.0)?.detach())
    }
}

/// `examples/vae.rs`: the `vae::Trainer` checkpoint (configs `vae` and `train`).
fn open_vae(ck: &Checkpoint, _: &Args, device: &Device) -> Result<Box<dyn ImageSampler>> {
    let trainer = vae::Trainer::from_checkpoint(ck, DType::F32, device)?;
    Ok(Box::new(VaeSampler { trainer, device: device.clone() }))
}

struct PixelCnnSampler {
    trainer: pixelcnn::Trainer,
    device: Device,
}

impl ImageSampler for PixelCnnSampler {
    fn sample(&mut self, n: usize, rng: &mut Rng) -> Result<Tensor> {
        let model = self.trainer.model();
        let labels = random_labels(n, model.config().num_classes, rng, &self.device)?;
        let opts = pixelcnn::SampleOptions::default();
        let (x, _cost) = pixelcnn::sample(model, n, 28, 28, labels.as_ref(), &opts, rng)?;
        Ok((x.to_dtype(DType::F32)? / 255.0)?)
    }
}

/// `examples/pixelcnn.rs`: the `pixelcnn::Trainer` checkpoint (configs `pixelcnn`, `pixelcnn_train`),
/// sampled at 28x28 (Fashion-MNIST's size) with temperature 1.
fn open_pixelcnn(ck: &Checkpoint, _: &Args, device: &Device) -> Result<Box<dyn ImageSampler>> {
    let (config, train) = (ck.config("pixelcnn")?, ck.config("pixelcnn_train")?);
    let mut trainer = pixelcnn::Trainer::new(config, train, train_len(ck)?, DType::F32, device)?;
    trainer.restore(ck)?;
    Ok(Box::new(PixelCnnSampler { trainer, device: device.clone() }))
}

struct DiffusionSampler {
    trainer: diffusion::Trainer,
    sampler: diffusion::DpmSolverSampler,
    guidance: f64,
    device: Device,
}

impl ImageSampler for DiffusionSampler {
    fn sample(&mut self, n: usize, rng: &mut Rng) -> Result<Tensor> {
        let (classes, size) = (self.trainer.model().config().num_classes, self.trainer.model().config().image_size);
        let channels = self.trainer.model().config().image_channels;
        let labels = random_labels(n, classes, rng, &self.device)?;
        let schedule = self.trainer.schedule().clone();
        let (sampler, guidance, device) = (&self.sampler, self.guidance, &self.device);
        let x = self.trainer.with_ema(|unet| {
            let guided = diffusion::Guided { inner: unet, null_class: unet.null_class(), scale: guidance };
            let den: &dyn diffusion::Denoiser = if labels.is_some() { &guided } else { unet };
            sampler.sample(den, &schedule, &[n, channels, size, size], labels.as_ref(), rng, DType::F32, device)
        })?;
        transforms::to_unit(&x.clamp(-1.0, 1.0)?)
    }
}

/// `examples/ddpm.rs`: the `diffusion::Trainer` checkpoint (configs `unet`, `schedule`,
/// `diffusion_train`), sampled from the EMA weights with DPM-Solver++.
fn open_diffusion(ck: &Checkpoint, args: &Args, device: &Device) -> Result<Box<dyn ImageSampler>> {
    let (unet, schedule, train) = (ck.config("unet")?, ck.config("schedule")?, ck.config("diffusion_train")?);
    let mut trainer = diffusion::Trainer::new(unet, &schedule, train, train_len(ck)?, DType::F32, device)?;
    trainer.restore(ck)?;
    let sampler = diffusion::DpmSolverSampler {
        x0: diffusion::X0Processing::Clip(1.0),
        ..diffusion::DpmSolverSampler::new(args.diffusion_steps)
    };
    Ok(Box::new(DiffusionSampler { trainer, sampler, guidance: args.guidance, device: device.clone() }))
}

/// Draws `n` images in batches from the checkpoint's model, as an 8-bit data set (as if saved to PNG).
fn generate(path: &Path, args: &Args, device: &Device) -> Result<ImageDataset> {
    let (n, batch, seed) = (args.n, args.batch_size, args.seed);
    let ck = Checkpoint::load(path)?;
    let family = FAMILIES.iter().find(|f| (f.recognises)(&ck)).ok_or_else(|| {
        let names: Vec<_> = FAMILIES.iter().map(|f| f.name).collect();
        Error::checkpoint(path, format!("is not a checkpoint of a known model family ({})", names.join(", ")))
    })?;
    println!("{}: a {} checkpoint at step {}", path.display(), family.name, ck.step());
    let mut sampler = (family.open)(&ck, args, device)?;
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
    common::tuning::tune_for_training();
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
        generate(&args.source, &args, &device)?
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
    // KID's subsets are drawn from both sets: no larger than the smaller one.
    let subset_size = args.kid_subset_size.min(generated.len()).min(reference.len());
    if subset_size < args.kid_subset_size {
        println!("KID subsets of {subset_size} (the number of images), not {}", args.kid_subset_size);
    }
    let kid_opts = KidOptions { num_subsets: args.kid_subsets, subset_size };
    let kid_value = kid(&f_real, &f_fake, &kid_opts, &mut Rng::with_stream(args.seed, 1))?;
    let pr = precision_recall(&f_real, &f_fake, args.k)?;
    let (is_mean, is_std) = inception_score(&logits, 10.min(generated.len()))?;
    println!("{} generated vs {} Fashion-MNIST test images:", generated.len(), reference.len());
    println!("  FID-FMNIST  {fid_value:.3}   (classifier features; not comparable with Inception FID)");
    println!(
        "  KID         {:.5} +- {:.5} ({} subsets of {})",
        kid_value.mean, kid_value.std, args.kid_subsets, subset_size
    );
    println!("  precision   {:.4}   recall {:.4}   (k = {})", pr.precision, pr.recall, args.k);
    println!("  IS-FMNIST   {is_mean:.3} +- {is_std:.3}   (of at most 10 classes)");
    println!("took {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}
