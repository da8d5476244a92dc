//! Plugs a user-defined network into the crate's diffusion machinery: a few-line convolutional
//! denoiser (not the crate's UNet) trained on procedural 16x16 shapes with the crate's noise schedule
//! and loss, then sampled with DDIM and DPM-Solver++. Takes a minute or so on a CPU.
//!
//! ```sh
//! cargo run --release --example custom_denoiser -- --steps 400
//! ```

use candle_core::{DType, Device, Module, Tensor};
use candle_generative::data::procedural;
use candle_generative::diffusion::{
    noisy_batch, DdimSampler, Denoiser, DpmSolverSampler, NoiseSchedule, Sampler, ScheduleConfig, Spacing, X0Processing,
};
use candle_generative::io::{save_grid, GridOptions};
use candle_generative::losses::diffusion::{LossWeighting, Prediction};
use candle_generative::nn::init::{init_vars, InitKind};
use candle_generative::optim::{Adam, AdamConfig, NamedVars};
use candle_generative::rng::Rng;
use candle_generative::Result;
use candle_nn::{conv2d, Conv2d, Conv2dConfig, Optimizer, VarBuilder, VarMap};
use clap::Parser;

#[derive(Parser, Debug)]
struct Args {
    /// Adam steps.
    #[arg(long, default_value_t = 400)]
    steps: usize,
    /// Where the sample grids go.
    #[arg(long, default_value = "out/custom_denoiser")]
    out: std::path::PathBuf,
}

/// The user's network: the timestep enters as an extra input channel `t / T`; three 3x3 convolutions.
struct TinyDenoiser {
    convs: Vec<Conv2d>,
    num_timesteps: f64,
}

impl TinyDenoiser {
    fn new(vb: VarBuilder, num_timesteps: usize) -> Result<Self> {
        let cfg = Conv2dConfig { padding: 1, ..Default::default() };
        let convs = vec![
            conv2d(2, 32, 3, cfg, vb.pp("c0"))?,
            conv2d(32, 32, 3, cfg, vb.pp("c1"))?,
            conv2d(32, 1, 3, cfg, vb.pp("c2"))?,
        ];
        Ok(Self { convs, num_timesteps: num_timesteps as f64 })
    }
}

impl Denoiser for TinyDenoiser {
    fn prediction(&self) -> Prediction {
        Prediction::Epsilon
    }

    fn predict(&self, x_t: &Tensor, t: &Tensor, _cond: Option<&Tensor>) -> Result<Tensor> {
        let (b, _, h, w) = x_t.dims4()?;
        let t = t.to_dtype(x_t.dtype())?.affine(1.0 / self.num_timesteps, 0.0)?.reshape((b, 1, 1, 1))?;
        let mut x = Tensor::cat(&[x_t, &t.broadcast_as((b, 1, h, w))?.contiguous()?], 1)?;
        for (i, c) in self.convs.iter().enumerate() {
            x = c.forward(&x)?;
            if i + 1 < self.convs.len() {
                x = x.silu()?;
            }
        }
        Ok(x)
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    let dev = Device::Cpu;
    let data = procedural::shapes_split(512, 1, 16, 1, 0)?.train;
    let schedule = NoiseSchedule::new(&ScheduleConfig::default())?;
    let varmap = VarMap::new();
    let model = TinyDenoiser::new(VarBuilder::from_varmap(&varmap, DType::F32, &dev), schedule.num_timesteps())?;
    let vars = NamedVars::from_varmap(&varmap);
    init_vars(&vars, &mut Rng::new(0), |name, _| {
        if name.ends_with("bias") {
            InitKind::Constant(0.0)
        } else {
            InitKind::KaimingUniform
        }
    })?;
    let mut opt = Adam::new_named(vars, AdamConfig::with_lr(2e-3))?;
    let mut rng = Rng::new(1);
    let mut window = 0.0;
    for step in 1..=args.steps {
        let idx: Vec<usize> = (0..32).map(|_| rng.below(data.len())).collect::<candle_generative::Result<_>>()?;
        let x0 = data.images(&idx, &dev)?.affine(2.0, -1.0)?;
        // The crate draws t and the noise, builds x_t, the target and the (min-SNR) weights.
        let batch = noisy_batch(&schedule, &x0, model.prediction(), LossWeighting::min_snr(), &mut rng)?;
        let loss = batch.loss(&model.predict(&batch.x_t, &batch.t, None)?)?;
        window += loss.to_scalar::<f32>()? as f64;
        opt.backward_step(&loss)?;
        if step % 50 == 0 {
            println!("step {step}: loss {:.4}", window / 50.0);
            window = 0.0;
        }
    }
    for (name, sampler) in [
        (
            "ddim50",
            Box::new(DdimSampler { x0: X0Processing::Clip(1.0), ..DdimSampler::new(50, Spacing::Leading) })
                as Box<dyn Sampler>,
        ),
        ("dpm20", Box::new(DpmSolverSampler { x0: X0Processing::Clip(1.0), ..DpmSolverSampler::new(20) })),
    ] {
        let x = sampler.sample(&model, &schedule, &[16, 1, 16, 16], None, &mut Rng::new(2), DType::F32, &dev)?;
        let path = save_grid(args.out.join(format!("{name}.png")), &x, &GridOptions::default())?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
