//! CycleGAN (Zhu et al. 2017) between two unpaired image domains.
//!
//! By default the domains come from Fashion-MNIST (or the procedural shapes when it is not
//! installed) with a known true mapping, so the result can be measured: the training images of
//! the chosen classes are split into two disjoint halves; domain A is the first half as it is,
//! domain B the second half colour-inverted (`1 - x`). No image is in both domains. The true
//! translation A -> B is inversion, and the example reports, on held-out test images, the
//! translation error `mean|G_AB(a) - invert(a)|` next to the identity baseline
//! `mean|a - invert(a)|` (both in [0, 1] pixel units).
//!
//! ```sh
//! cargo run --release --example cyclegan -- --steps 2000                 # Fashion-MNIST, bench networks
//! cargo run --release --example cyclegan -- --steps 2000 --width 16 --classes 0,2,4
//! cargo run --release --example cyclegan -- --resume                     # continue the latest checkpoint
//! cargo run --release --example cyclegan -- --domain-a horses/ --domain-b zebras/ --image-size 64 --channels 3
//! ```
//!
//! Output in `--out` (default `out/cyclegan`): `translations/cyclegan_<step>.png` and
//! `translations_final.png` (rows: a, G_AB(a), G_BA(G_AB(a))), `log.jsonl` (loss terms per step
//! and evaluations), `checkpoints/`.

#[path = "common/mod.rs"]
mod common;

use std::path::PathBuf;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_generative::cyclegan::{
    self, CycleGanModels, DiscriminatorConfig, GeneratorConfig, ImagePools, PatchDiscriminator, ResnetGenerator,
    StepConfig, UnpairedBatch,
};
use candle_generative::data::image_folder::{ImageFolderOptions, ResizeMode};
use candle_generative::data::unpaired::{invert, UnpairedBatcher, UnpairedDomains};
use candle_generative::data::{self, transforms};
use candle_generative::io::{save_grid, Checkpoint, CheckpointDir, GridOptions, MetricsLog};
use candle_generative::losses::adversarial::GanLoss;
use candle_generative::optim::{Adam, AdamConfig, LrSchedule, MixedPrecision, NamedVars};
use candle_generative::rng::Rng;
use candle_generative::{Error, Result};
use candle_nn::{VarBuilder, VarMap};
use clap::Parser;
use serde::{Deserialize, Serialize};

#[derive(Parser, Debug)]
#[command(about = "Train a CycleGAN between two unpaired image domains")]
struct Args {
    /// Directory with MNIST-format IDX files (default: find Fashion-MNIST, else procedural shapes).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Domain A as a folder of PNG/JPEG images (with --domain-b; replaces the inverted-domain task).
    #[arg(long, requires = "domain_b")]
    domain_a: Option<PathBuf>,
    /// Domain B as a folder of PNG/JPEG images.
    #[arg(long, requires = "domain_a")]
    domain_b: Option<PathBuf>,
    /// Side of the images read from --domain-a/--domain-b (a multiple of 2^downsamplings).
    #[arg(long, default_value_t = 64)]
    image_size: usize,
    /// Channels of the images read from the folders: 1 or 3.
    #[arg(long, default_value_t = 3)]
    channels: usize,
    /// Classes of the IDX data set to use, comma-separated (default: all).
    #[arg(long, value_delimiter = ',')]
    classes: Vec<u32>,
    /// Output directory: translation grids, log, checkpoints.
    #[arg(long, default_value = "out/cyclegan")]
    out: PathBuf,
    /// Training steps (one batch of each domain each); the learning rate decays linearly to 0
    /// over the second half.
    #[arg(long, default_value_t = 2000)]
    steps: u64,
    /// Images per domain per batch (1 in the paper; 4 in the reference bench).
    #[arg(long, default_value_t = 4)]
    batch_size: usize,
    /// Base width of the generators and discriminators (32 in the reference bench).
    #[arg(long, default_value_t = 32)]
    width: usize,
    /// Residual blocks of the generators.
    #[arg(long, default_value_t = 3)]
    blocks: usize,
    /// Stride-2 downsamplings of the generators.
    #[arg(long, default_value_t = 2)]
    downsamplings: usize,
    /// Stride-2 layers of the PatchGAN discriminators.
    #[arg(long, default_value_t = 2)]
    d_layers: usize,
    /// Adversarial loss: lsgan (paper) or non-saturating ("vanilla"); minimax, wgan, hinge also parse.
    #[arg(long, default_value = "lsgan")]
    loss: String,
    /// Weight of the cycle-consistency L1 terms.
    #[arg(long, default_value_t = 10.0)]
    lambda_cycle: f64,
    /// Weight of the identity terms as a fraction of --lambda-cycle (0 disables them).
    #[arg(long, default_value_t = 0.5)]
    identity: f64,
    /// Images in each history pool (0: no pool).
    #[arg(long, default_value_t = 50)]
    pool_size: usize,
    /// Adam learning rate of all four networks.
    #[arg(long, default_value_t = 2e-4)]
    lr: f64,
    /// Adam's beta1 (0.5 in the paper).
    #[arg(long, default_value_t = 0.5)]
    beta1: f64,
    /// Held-out images for the evaluation.
    #[arg(long, default_value_t = 500)]
    eval_count: usize,
    /// Evaluate and write a translation grid every this many steps.
    #[arg(long, default_value_t = 250)]
    sample_every: u64,
    /// Write a checkpoint every this many steps (and at the end).
    #[arg(long, default_value_t = 500)]
    checkpoint_every: u64,
    /// Checkpoints to keep.
    #[arg(long, default_value_t = 2)]
    keep_checkpoints: usize,
    /// Seed of the weights, the data split, the batch order and the pools.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Continue from the latest checkpoint in --out (the settings must match).
    #[arg(long)]
    resume: bool,
    /// Device: cpu, cuda[:N], metal[:N] or auto.
    #[arg(long, default_value = "auto")]
    device: String,
    /// Weights and activations: f32, bf16 or f16 (f32 master weights; f16 scales the loss).
    #[arg(long, default_value = "f32")]
    dtype: String,
}

/// Everything a resumed run must share with the original one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Settings {
    generator: GeneratorConfig,
    discriminator: DiscriminatorConfig,
    step: StepConfig,
    adam: AdamConfig,
    schedule: LrSchedule,
    batch_size: usize,
    pool_size: usize,
    seed: u64,
    data: String,
    /// `--dtype`; checkpoints from before it were `f32`.
    #[serde(default = "common::f32_name")]
    dtype: String,
}

/// The training domains, and held-out domain-A images with their known translation if any.
struct Task {
    domains: UnpairedDomains,
    held_out: Tensor,
    truth: Option<Tensor>,
    description: String,
}

fn load_task(args: &Args, dtype: DType, device: &Device) -> Result<Task> {
    if let (Some(dir_a), Some(dir_b)) = (&args.domain_a, &args.domain_b) {
        let opts = ImageFolderOptions {
            size: (args.image_size, args.image_size),
            channels: args.channels,
            resize: ResizeMode::CenterCrop,
        };
        let domains = UnpairedDomains::from_folders(dir_a, dir_b, &opts)?;
        // No known answer: the evaluation reports the cycle error on (training) A images.
        let n = args.eval_count.min(domains.a.len());
        let held_out =
            transforms::to_signed(&domains.a.images(&(0..n).collect::<Vec<_>>(), device)?)?.to_dtype(dtype)?;
        let description = format!("folders {} (A) and {} (B)", dir_a.display(), dir_b.display());
        return Ok(Task { domains, held_out, truth: None, description });
    }
    let (split, source) = data::fashion_mnist_or_shapes(args.data_dir.as_deref(), 6_000, 1_000, args.seed)?;
    let halves = UnpairedDomains::split_disjoint(&split.train, &args.classes, args.seed)?;
    let domains = UnpairedDomains::new(halves.a, invert(&halves.b)?)?;
    let test = if args.classes.is_empty() {
        split.test
    } else {
        split.test.subset(&split.test.indices_of_classes(&args.classes))?
    };
    let n = args.eval_count.min(test.len());
    let held_out = transforms::to_signed(&test.images(&(0..n).collect::<Vec<_>>(), device)?)?.to_dtype(dtype)?;
    let truth = Some(held_out.neg()?); // 1 - x in [0, 1] is -x in [-1, 1]
    let classes =
        if args.classes.is_empty() { "all classes".to_string() } else { format!("classes {:?}", args.classes) };
    let description = format!("{source}, {classes}: A = half of the images, B = the other half inverted");
    Ok(Task { domains, held_out, truth, description })
}

/// Errors in [0, 1] pixel units on the held-out images.
#[derive(Debug, Clone, Copy)]
struct Evaluation {
    translation: Option<f64>,
    baseline: Option<f64>,
    cycle: f64,
}

fn evaluate(models: &CycleGanModels<ResnetGenerator, PatchDiscriminator>, task: &Task) -> Result<Evaluation> {
    let fake = cyclegan::translate_in_batches(&models.g_ab, &task.held_out, 50)?;
    let rec = cyclegan::translate_in_batches(&models.g_ba, &fake, 50)?;
    let half = |e: f64| e / 2.0; // [-1, 1] differences to [0, 1] pixel units
    let (translation, baseline) = match &task.truth {
        Some(t) => (
            Some(half(cyclegan::mean_absolute_error(&fake, t)?)),
            Some(half(cyclegan::mean_absolute_error(&task.held_out, t)?)),
        ),
        None => (None, None),
    };
    Ok(Evaluation { translation, baseline, cycle: half(cyclegan::mean_absolute_error(&rec, &task.held_out)?) })
}

/// Rows: a, G_AB(a), G_BA(G_AB(a)) for the first `n` held-out images.
fn write_grid(
    path: PathBuf,
    models: &CycleGanModels<ResnetGenerator, PatchDiscriminator>,
    task: &Task,
    n: usize,
) -> Result<PathBuf> {
    let n = n.min(task.held_out.dim(0)?);
    let a = task.held_out.narrow(0, 0, n)?;
    let fake = cyclegan::translate_in_batches(&models.g_ab, &a, 50)?;
    let rec = cyclegan::translate_in_batches(&models.g_ba, &fake, 50)?;
    let mut rows = vec![a, fake, rec];
    if rows[1].dim(1)? != rows[0].dim(1)? {
        // Grey and colour domains: show everything in colour.
        rows = rows
            .into_iter()
            .map(|r| if r.dim(1)? == 1 { Ok(r.repeat((1, 3, 1, 1))?) } else { Ok(r) })
            .collect::<Result<_>>()?;
    }
    save_grid(path, &Tensor::cat(&rows, 0)?, &GridOptions { nrow: n, ..GridOptions::default() })
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
    let dtype = candle_generative::device::parse_dtype(&args.dtype)?;
    let task = load_task(&args, dtype, &device)?;
    println!("data: {} ({} A / {} B training images)", task.description, task.domains.a.len(), task.domains.b.len());
    let (ca, cb) = (task.domains.a.image_shape().0, task.domains.b.image_shape().0);
    let generator = |cin, cout| GeneratorConfig {
        in_channels: cin,
        out_channels: cout,
        base_width: args.width,
        downsamplings: args.downsamplings,
        residual_blocks: args.blocks,
        instance_norm_affine: false,
    };
    let discriminator =
        |c| DiscriminatorConfig { in_channels: c, base_width: args.width, layers: args.d_layers, ..Default::default() };
    let (g_ab_cfg, g_ba_cfg) = (generator(ca, cb), generator(cb, ca));
    let step_cfg = StepConfig {
        loss: args.loss.parse::<GanLoss>()?,
        lambda_cycle: args.lambda_cycle,
        identity_fraction: if ca == cb { args.identity } else { 0.0 },
    };
    step_cfg.validate()?;
    let total = args.steps;
    let schedule = LrSchedule::linear_decay(args.lr, total / 2, (total - total / 2).max(1));
    schedule.validate()?;
    let settings = Settings {
        generator: g_ab_cfg.clone(),
        discriminator: discriminator(ca),
        step: step_cfg,
        adam: AdamConfig { lr: args.lr, beta1: args.beta1, ..AdamConfig::default() },
        schedule: schedule.clone(),
        batch_size: args.batch_size,
        pool_size: args.pool_size,
        seed: args.seed,
        data: task.description.clone(),
        dtype: dtype.as_str().to_string(),
    };

    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, dtype, &device);
    let mut init = Rng::new(args.seed);
    let models = CycleGanModels {
        g_ab: ResnetGenerator::new(&g_ab_cfg, vb.pp("g_ab"), &mut init)?,
        g_ba: ResnetGenerator::new(&g_ba_cfg, vb.pp("g_ba"), &mut init)?,
        d_a: PatchDiscriminator::new(&discriminator(ca), vb.pp("d_a"), &mut init)?,
        d_b: PatchDiscriminator::new(&discriminator(cb), vb.pp("d_b"), &mut init)?,
    };
    let vars = |prefixes: [&str; 2]| NamedVars::filtered(&varmap, |n| prefixes.iter().any(|p| n.starts_with(p)));
    let (g_vars, d_vars) = (vars(["g_ab.", "g_ba."]), vars(["d_a.", "d_b."]));
    println!(
        "generators {} parameters (2 x {}), discriminators {}; {step_cfg:?}",
        g_vars.num_params(),
        g_ab_cfg.parameter_count(),
        d_vars.num_params()
    );
    // f32 master weights for a half-precision model; loss scaling for f16.
    let adam = |vars| MixedPrecision::auto(vars, |m| Adam::new_named(m, settings.adam.clone()));
    let (mut opt_g, mut opt_d) = (adam(g_vars)?, adam(d_vars)?);
    let mut pools = ImagePools::new(args.pool_size, args.seed.wrapping_add(17));

    let checkpoints = CheckpointDir::new(args.out.join("checkpoints"), "cyclegan", args.keep_checkpoints)?;
    let log_path = args.out.join("log.jsonl");
    let mut start = 0;
    let (resumed, mut log) = common::open_run(args.resume, &checkpoints, &log_path)?;
    if let Some((path, ck)) = resumed {
        common::check_same("settings", &ck.config::<Settings>("settings")?, &settings, &path)?;
        ck.restore_varmap("model", &varmap)?;
        ck.restore_state("opt_g", &mut opt_g)?;
        ck.restore_state("opt_d", &mut opt_d)?;
        pools.restore_from(&ck, "pool")?;
        start = ck.step();
        println!("resumed from {} at step {start}", path.display());
    }
    let save = |step: u64,
                opt_g: &MixedPrecision<Adam>,
                opt_d: &MixedPrecision<Adam>,
                pools: &ImagePools|
     -> Result<PathBuf> {
        let mut ck = Checkpoint::new(step);
        ck.add_varmap("model", &varmap)?;
        ck.add_state("opt_g", opt_g)?;
        ck.add_state("opt_d", opt_d)?;
        pools.save_to(&mut ck, "pool")?;
        ck.set_config("settings", &settings)?;
        checkpoints.save(&ck)
    };

    let report = |step: u64, e: &Evaluation, log: &mut MetricsLog| -> Result<String> {
        let mut scalars = vec![("eval_cycle_error", e.cycle)];
        let text = match (e.translation, e.baseline) {
            (Some(t), Some(b)) => {
                scalars.push(("eval_translation_error", t));
                scalars.push(("eval_identity_baseline", b));
                format!(
                    "translation error {t:.4} vs identity baseline {b:.4} ({:.1}% of it), cycle error {:.4}",
                    100.0 * t / b,
                    e.cycle
                )
            }
            _ => format!("cycle error {:.4}", e.cycle),
        };
        log.log(step, &scalars)?;
        Ok(text)
    };

    let batcher = UnpairedBatcher::new(&task.domains, args.batch_size, args.seed)?;
    let grids = args.out.join("translations");
    std::fs::create_dir_all(&grids).map_err(|e| Error::io(&grids, e))?;
    println!("training steps {start}..{total}, batch {} per domain, output in {}", args.batch_size, args.out.display());
    let bar = common::progress_bar(total, start);
    let t0 = Instant::now();
    for step in start..total {
        if step % args.sample_every == 0 {
            let e = evaluate(&models, &task)?;
            bar.println(format!("step {step}: {}", report(step, &e, &mut log)?));
            write_grid(grids.join(format!("cyclegan_{step:07}.png")), &models, &task, 10)?;
        }
        let lr = schedule.apply(&mut opt_g, step);
        schedule.apply(&mut opt_d, step);
        let (a, b) = batcher.batch_at_step(&task.domains, step, &device)?;
        let (a, b) = (a.to_dtype(dtype)?, b.to_dtype(dtype)?);
        let s = cyclegan::train_step(
            &models,
            &mut opt_g,
            &mut opt_d,
            &step_cfg,
            UnpairedBatch { a: &a, b: &b },
            &mut pools,
            step,
        )?;
        let (g, d) = (s.generator, s.discriminator);
        log.log(
            step,
            &[
                ("loss_g", g.loss),
                ("adv_ab", g.adversarial_ab),
                ("adv_ba", g.adversarial_ba),
                ("cycle_a", g.cycle_a),
                ("cycle_b", g.cycle_b),
                ("identity_a", g.identity_a),
                ("identity_b", g.identity_b),
                ("loss_d", d.loss),
                ("loss_d_a", d.loss_a),
                ("loss_d_b", d.loss_b),
                ("lr", lr),
            ],
        )?;
        bar.set_message(common::format_scalars(&[
            ("loss_g", g.loss),
            ("adv", g.adversarial_ab + g.adversarial_ba),
            ("cycle", g.cycle_a + g.cycle_b),
            ("loss_d", d.loss),
            ("lr", lr),
        ]));
        bar.inc(1);
        if (step + 1) % args.checkpoint_every == 0 && step + 1 < total {
            save(step + 1, &opt_g, &opt_d, &pools)?;
        }
    }
    bar.finish();
    let done = total.max(start);
    let ck = save(done, &opt_g, &opt_d, &pools)?;
    if done > start {
        let secs = t0.elapsed().as_secs_f64();
        println!(
            "{} steps in {secs:.0} s ({:.3} s/step); checkpoint {}",
            done - start,
            secs / (done - start) as f64,
            ck.display()
        );
    }
    if let Some(line) = common::loss_scale_report(&[("opt_g", &opt_g), ("opt_d", &opt_d)]) {
        println!("{line}");
    }
    let e = evaluate(&models, &task)?;
    println!("final (step {done}, {} held-out images): {}", task.held_out.dim(0)?, report(done, &e, &mut log)?);
    let grid = write_grid(args.out.join("translations_final.png"), &models, &task, 10)?;
    println!("wrote {} (rows: a, G_AB(a), G_BA(G_AB(a))); log {}", grid.display(), log_path.display());
    Ok(())
}
