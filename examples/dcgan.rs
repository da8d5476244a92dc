//! DCGAN (Radford et al. 2016) on Fashion-MNIST, or on the procedural shapes when it is not
//! installed: progress bar with the loss terms, a fixed-noise PNG grid every N steps, checkpoints
//! with `--resume`, any `GanLoss` (`--loss`), penalties, `n_critic`, and the class-conditional
//! variants (`--conditional`).
//!
//! ```sh
//! cargo run --release --example dcgan                                # bench config, 1 epoch
//! cargo run --release --example dcgan -- --epochs 3 --conditional    # projection discriminator
//! cargo run --release --example dcgan -- --loss wgan --penalty wgan-gp --n-critic 5 --no-discriminator-bn
//! cargo run --release --example dcgan -- --resume                    # continue the latest checkpoint
//! ```
//!
//! Output in `--out` (default `out/dcgan`): `samples/dcgan_<step>.png` (fixed noise; one class
//! per row with `--conditional`), `samples_final.png`, `interpolation.png` (spherical walks),
//! `log.jsonl` (losses per step), `checkpoints/`.

#[path = "common/mod.rs"]
mod common;

use std::path::PathBuf;
use std::time::Instant;

use candle_generative::data::{self, batcher::Batcher, transforms};
use candle_generative::gan::{
    self, Conditioning, Config, DiscriminatorStats, GeneratorStats, LabelInput, Penalty, RealBatch, StepConfig,
};
use candle_generative::io::{save_grid, Checkpoint, CheckpointDir, GridOptions, GridWriter};
use candle_generative::losses::adversarial::GanLoss;
use candle_generative::nn::latent::Interpolation;
use candle_generative::optim::{Adam, AdamConfig, MixedPrecision, NamedVars};
use candle_generative::rng::Rng;
use candle_generative::{Error, Result};
use candle_nn::{VarBuilder, VarMap};
use clap::Parser;
use serde::{Deserialize, Serialize};

#[derive(Parser, Debug)]
#[command(about = "Train a DCGAN (optionally class-conditional) on Fashion-MNIST or procedural shapes")]
struct Args {
    /// Directory with MNIST-format IDX files (default: find Fashion-MNIST, else procedural shapes).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Output directory: sample grids, log, checkpoints.
    #[arg(long, default_value = "out/dcgan")]
    out: PathBuf,
    /// Epochs of discriminator steps (one real batch each); ignored when --steps is given.
    #[arg(long, default_value_t = 1.0)]
    epochs: f64,
    /// Total discriminator steps (overrides --epochs).
    #[arg(long)]
    steps: Option<u64>,
    /// Images per batch.
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// Adversarial loss: minimax, non-saturating, lsgan, wgan or hinge.
    #[arg(long, default_value = "non-saturating")]
    loss: String,
    /// Discriminator regulariser: wgan-gp[:lambda], r1[:gamma] or clip[:c].
    #[arg(long)]
    penalty: Option<String>,
    /// Discriminator steps per generator step (5 for WGAN / WGAN-GP).
    #[arg(long, default_value_t = 1)]
    n_critic: usize,
    /// One-sided label smoothing: the discriminator's target on real images (e.g. 0.9).
    #[arg(long)]
    real_label: Option<f64>,
    /// Class-conditional GAN: label embedding in G, label input in D (see --label-input).
    #[arg(long)]
    conditional: bool,
    /// How the conditional discriminator sees the label: projection, concat or unused.
    #[arg(long, default_value = "projection")]
    label_input: String,
    /// Add ACGAN's auxiliary classifier to the conditional discriminator.
    #[arg(long)]
    acgan: bool,
    /// Latent size.
    #[arg(long, default_value_t = 100)]
    latent_dim: usize,
    /// Base width (channels of D's first layer and G's last hidden layer).
    #[arg(long, default_value_t = 64)]
    base_width: usize,
    /// No batch norm in the generator.
    #[arg(long)]
    no_generator_bn: bool,
    /// No batch norm in the discriminator (use it with gradient penalties).
    #[arg(long)]
    no_discriminator_bn: bool,
    /// Spectral normalisation of every discriminator weight.
    #[arg(long)]
    spectral_norm: bool,
    /// Generator learning rate (Adam).
    #[arg(long, default_value_t = 2e-4)]
    lr_g: f64,
    /// Discriminator learning rate (Adam).
    #[arg(long, default_value_t = 2e-4)]
    lr_d: f64,
    /// Adam's beta1 (0.5 in the DCGAN paper).
    #[arg(long, default_value_t = 0.5)]
    beta1: f64,
    /// Adam's beta2.
    #[arg(long, default_value_t = 0.999)]
    beta2: f64,
    /// Write a fixed-noise sample grid every this many steps.
    #[arg(long, default_value_t = 500)]
    sample_every: u64,
    /// Write a checkpoint every this many steps (and at the end).
    #[arg(long, default_value_t = 1000)]
    checkpoint_every: u64,
    /// Checkpoints to keep.
    #[arg(long, default_value_t = 3)]
    keep_checkpoints: usize,
    /// Images in the sample grid (with --conditional, a multiple of the number of classes).
    #[arg(long, default_value_t = 100)]
    samples: usize,
    /// Seed of the weights, the batch order and the noise.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Continue from the latest checkpoint in --out (the model and training settings must match).
    #[arg(long)]
    resume: bool,
    /// Device: cpu, cuda[:N], metal[:N] or auto.
    #[arg(long, default_value = "auto")]
    device: String,
    /// Weights and activations: f32, bf16 or f16 (f32 master weights; f16 scales the loss).
    #[arg(long, default_value = "f32")]
    dtype: String,
}

/// Everything besides the architecture that a resumed run must share with the original one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct TrainSettings {
    step: StepConfig,
    batch_size: usize,
    seed: u64,
    adam_g: AdamConfig,
    adam_d: AdamConfig,
    data: String,
    /// `--dtype`; checkpoints from before it were `f32`.
    #[serde(default = "common::f32_name")]
    dtype: String,
}

fn model_config(args: &Args, num_classes: usize) -> Result<Config> {
    let label_input = match args.label_input.as_str() {
        "projection" => LabelInput::Projection,
        "concat" | "concatenation" => LabelInput::Concatenation,
        "unused" | "none" => LabelInput::Unused,
        other => return Err(Error::config("label-input", format!("`{other}`: expected projection, concat or unused"))),
    };
    let conditioning = args.conditional.then(|| Conditioning {
        num_classes,
        label_input,
        auxiliary_classifier: args.acgan,
        ..Conditioning::default()
    });
    let config = Config {
        latent_dim: args.latent_dim,
        base_width: args.base_width,
        generator_batch_norm: !args.no_generator_bn,
        discriminator_batch_norm: !args.no_discriminator_bn,
        spectral_norm: args.spectral_norm,
        conditioning,
        ..Config::default()
    };
    config.validate()?;
    Ok(config)
}

fn step_config(args: &Args) -> Result<StepConfig> {
    let cfg = StepConfig {
        loss: args.loss.parse::<GanLoss>()?,
        penalty: args.penalty.as_deref().map(str::parse::<Penalty>).transpose()?,
        real_label: args.real_label,
        n_critic: args.n_critic,
        ..StepConfig::default()
    };
    cfg.validate()?;
    Ok(cfg)
}

/// Refuses to resume into a different model or training setup, naming what differs.
fn main() {
    common::tuning::tune_for_training();
    if let Err(e) = run(Args::parse()) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> Result<()> {
    let device = candle_generative::device::parse_device(&args.device)?;
    let dtype = candle_generative::device::parse_dtype(&args.dtype)?;
    let (split, source) = data::fashion_mnist_or_shapes(args.data_dir.as_deref(), 6_000, 1_000, args.seed)?;
    println!("data: {source}");
    let train = split.train;
    let config = model_config(&args, train.num_classes())?;
    let step_cfg = step_config(&args)?;
    let adam = |lr| AdamConfig { lr, beta1: args.beta1, beta2: args.beta2, ..AdamConfig::default() };
    let settings = TrainSettings {
        step: step_cfg,
        batch_size: args.batch_size,
        seed: args.seed,
        adam_g: adam(args.lr_g),
        adam_d: adam(args.lr_d),
        data: source.to_string(),
        dtype: dtype.as_str().to_string(),
    };

    // Build everything first; a resumed run then overwrites it from the checkpoint.
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, dtype, &device);
    let mut init_rng = Rng::new(args.seed);
    let (gen, disc): (Box<dyn gan::Generator>, Box<dyn gan::Discriminator>) = if config.conditioning.is_some() {
        let g = gan::ConditionalGenerator::new(&config, vb.pp("gen"), &mut init_rng)?;
        (Box::new(g), Box::new(gan::ConditionalDiscriminator::new(&config, vb.pp("disc"), &mut init_rng)?))
    } else {
        let g = gan::DcganGenerator::new(&config, vb.pp("gen"), &mut init_rng)?;
        (Box::new(g), Box::new(gan::DcganDiscriminator::new(&config, vb.pp("disc"), &mut init_rng)?))
    };
    let params = |prefix: &str| NamedVars::filtered(&varmap, |n| n.starts_with(prefix) && gan::is_trainable(n));
    let (g_params, d_params) = (params("gen."), params("disc."));
    println!(
        "model: {config:?}\n  generator {} parameters, discriminator {}; steps: {step_cfg:?}",
        g_params.num_params(),
        d_params.num_params()
    );
    // f32 master weights for a half-precision model; loss scaling for f16.
    let mut opt_g = MixedPrecision::auto(g_params, |m| Adam::new_named(m, settings.adam_g.clone()))?;
    let mut opt_d = MixedPrecision::auto(d_params, |m| Adam::new_named(m, settings.adam_d.clone()))?;

    let batcher = Batcher::new(train.len(), args.batch_size, args.seed)?.drop_last(true);
    let per_epoch = batcher.batches_per_epoch() as u64;
    let total = args.steps.unwrap_or((args.epochs * per_epoch as f64).ceil() as u64);
    let checkpoints = CheckpointDir::new(args.out.join("checkpoints"), "dcgan", args.keep_checkpoints)?;
    let mut rng = Rng::with_stream(args.seed, 1);
    let mut start = 0;
    let log_path = args.out.join("log.jsonl");
    let (resumed, mut log) = common::open_run(args.resume, &checkpoints, &log_path)?;
    if let Some((path, ck)) = resumed {
        common::check_same("model config", &ck.config::<Config>("model")?, &config, &path)?;
        common::check_same("training setup", &ck.config::<TrainSettings>("train")?, &settings, &path)?;
        ck.restore_varmap("model", &varmap)?;
        ck.restore_state("opt_g", &mut opt_g)?;
        ck.restore_state("opt_d", &mut opt_d)?;
        rng = ck.rng("noise")?;
        start = ck.step();
        println!("resumed from {} at step {start}", path.display());
    }
    let save = |step: u64, opt_g: &MixedPrecision<Adam>, opt_d: &MixedPrecision<Adam>, rng: &Rng| -> Result<PathBuf> {
        let mut ck = Checkpoint::new(step);
        ck.add_varmap("model", &varmap)?;
        ck.add_state("opt_g", opt_g)?;
        ck.add_state("opt_d", opt_d)?;
        ck.set_rng("noise", rng);
        ck.set_config("model", &config)?;
        ck.set_config("train", &settings)?;
        checkpoints.save(&ck)
    };

    // The fixed noise has its own stream, so it is the same after a resume.
    let noise = gan::FixedNoise::new(&gen, args.samples, &mut Rng::with_stream(args.seed, u64::MAX))?;
    let grid = GridOptions { nrow: noise.nrow(), ..GridOptions::default() };
    let writer = GridWriter::new(args.out.join("samples"), "dcgan", args.sample_every)?.with_options(grid.clone());
    println!(
        "training steps {start}..{total} ({per_epoch} batches of {} per epoch, {:.2} epochs), output in {}",
        args.batch_size,
        total as f64 / per_epoch as f64,
        args.out.display()
    );

    let bar = common::progress_bar(total, start);
    let t0 = Instant::now();
    let mut last_g = GeneratorStats::default();
    for (step, indices) in batcher.iter_from(start).take(total.saturating_sub(start) as usize) {
        if step % args.sample_every == 0 {
            writer.write(step, &gan::sample(&gen, &noise)?)?;
        }
        let real = transforms::to_signed(&train.images(&indices, &device)?)?.to_dtype(dtype)?;
        let labels = train.labels_tensor(&indices, &device)?;
        let batch = match config.conditioning {
            Some(_) => RealBatch::with_labels(&real, &labels),
            None => RealBatch::new(&real),
        };
        let d: DiscriminatorStats = gan::discriminator_step(&gen, &disc, &mut opt_d, &step_cfg, batch, &mut rng, step)?;
        let mut scalars = vec![
            ("loss_d", d.loss),
            ("loss_d_real", d.loss_real),
            ("loss_d_fake", d.loss_fake),
            ("d_real", d.real_output),
            ("d_fake", d.fake_output),
            ("acc_d", d.accuracy()),
        ];
        if step_cfg.penalty.is_some() {
            scalars.push(("penalty", d.penalty));
        }
        if d.classification != 0.0 {
            scalars.push(("cls_d", d.classification));
        }
        if step_cfg.is_generator_step(step) {
            last_g = gan::generator_step(&gen, &disc, &mut opt_g, &step_cfg, indices.len(), &mut rng, step)?;
            scalars.push(("loss_g", last_g.loss));
            scalars.push(("d_fake_g", last_g.fake_output));
            if last_g.classification != 0.0 {
                scalars.push(("cls_g", last_g.classification));
            }
        }
        log.log(step, &scalars)?;
        bar.set_message(common::format_scalars(&[
            ("loss_d", d.loss),
            ("loss_g", last_g.loss),
            ("D(x)", d.real_output),
            ("D(G(z))", d.fake_output),
            ("acc_d", d.accuracy()),
        ]));
        bar.inc(1);
        if (step + 1) % args.checkpoint_every == 0 && step + 1 < total {
            save(step + 1, &opt_g, &opt_d, &rng)?;
        }
    }
    bar.finish();
    let done = total.max(start);
    let ck = save(done, &opt_g, &opt_d, &rng)?;
    let steps_run = done - start;
    if steps_run > 0 {
        let secs = t0.elapsed().as_secs_f64();
        println!(
            "{steps_run} steps in {secs:.0} s ({:.3} s/step); checkpoint {}",
            secs / steps_run as f64,
            ck.display()
        );
    }

    if let Some(line) = common::loss_scale_report(&[("opt_g", &opt_g), ("opt_d", &opt_d)]) {
        println!("{line}");
    }
    let final_path = save_grid(args.out.join("samples_final.png"), &gan::sample(&gen, &noise)?, &grid)?;
    writer.write(done, &gan::sample(&gen, &noise)?)?;
    let mut walk_rng = Rng::with_stream(args.seed, u64::MAX - 1);
    let walks = gan::interpolation_grid(&gen, 8, 10, Interpolation::Spherical, &mut walk_rng)?;
    let walk_opts = GridOptions { nrow: 10, ..GridOptions::default() };
    let walk_path = save_grid(args.out.join("interpolation.png"), &walks, &walk_opts)?;
    println!("wrote {} and {} (log: {})", final_path.display(), walk_path.display(), log_path.display());
    Ok(())
}
