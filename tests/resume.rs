//! Exact resume: training N + M steps equals training N, saving a checkpoint, loading it into
//! freshly built objects and training M more, bit for bit on CPU with the same seed.

use candle_core::{DType, Device, Module};
use candle_generative::data::{batcher::Batcher, procedural, transforms, ImageDataset};
use candle_generative::io::Checkpoint;
use candle_generative::optim::TrainingState;
use candle_generative::optim::{clip_grad_norm, Adam, AdamConfig, Ema, EmaConfig, EmaWarmup, LrSchedule, NamedVars};
use candle_generative::rng::Rng;
use candle_generative::Result;
use candle_nn::{Conv2dConfig, Optimizer, VarBuilder, VarMap};

struct Run {
    varmap: VarMap,
    net: (candle_nn::Conv2d, candle_nn::Conv2d),
    opt: Adam,
    ema: Ema,
    rng: Rng,
    schedule: LrSchedule,
    batcher: Batcher,
}

/// A small denoising network, initialised from `init_seed` (a resumed run overwrites it).
fn build(init_seed: u64, len: usize) -> Result<Run> {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let cfg = Conv2dConfig { padding: 1, ..Default::default() };
    let net = (candle_nn::conv2d(1, 8, 3, cfg, vb.pp("c1"))?, candle_nn::conv2d(8, 1, 3, cfg, vb.pp("c2"))?);
    let mut init = Rng::new(init_seed);
    for (_, var) in NamedVars::from_varmap(&varmap).iter() {
        var.set(&(init.randn_like(var.as_tensor())? * 0.2)?)?;
    }
    let opt = Adam::new_named(NamedVars::from_varmap(&varmap), AdamConfig::with_lr(3e-3))?;
    let ema_cfg =
        EmaConfig { decay: 0.99, warmup: EmaWarmup::Power { inv_gamma: 1.0, power: 0.75 }, ..Default::default() };
    let ema = Ema::new(NamedVars::from_varmap(&varmap), ema_cfg)?;
    let schedule = LrSchedule::cosine(3e-3, 20, 1e-4).with_warmup(3);
    let batcher = Batcher::new(len, 16, 5)?.drop_last(true);
    Ok(Run { varmap, net, opt, ema, rng: Rng::new(99), schedule, batcher })
}

/// Trains steps `from..to`, returning each step's loss.
fn train(run: &mut Run, data: &ImageDataset, from: u64, to: u64) -> Result<Vec<f32>> {
    let mut losses = Vec::new();
    for (step, idx) in run.batcher.iter_from(from).take((to - from) as usize) {
        run.schedule.apply(&mut run.opt, step);
        let x = transforms::to_signed(&data.images(&idx, &Device::Cpu)?)?;
        let noisy = (&x + (run.rng.randn_like(&x)? * 0.3)?)?;
        let y = run.net.1.forward(&run.net.0.forward(&noisy)?.relu()?)?;
        let loss = (y - &x)?.sqr()?.mean_all()?;
        let mut grads = loss.backward()?;
        clip_grad_norm(&mut grads, &NamedVars::from_varmap(&run.varmap).vars(), 1.0)?;
        run.opt.step(&grads)?;
        run.ema.update()?;
        losses.push(loss.to_scalar::<f32>()?);
    }
    Ok(losses)
}

fn snapshot(run: &Run) -> Result<Vec<(String, Vec<f32>)>> {
    let mut out = Vec::new();
    for (name, var) in NamedVars::from_varmap(&run.varmap).iter() {
        out.push((format!("model/{name}"), var.flatten_all()?.to_vec1::<f32>()?));
    }
    for (name, t) in run.ema.state_tensors()?.into_iter().chain(run.opt.state_tensors()?) {
        out.push((name, t.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?));
    }
    Ok(out)
}

#[test]
fn resume_is_bit_exact() -> Result<()> {
    let data = procedural::shapes(&procedural::ShapesConfig { size: 16, count: 96, ..Default::default() })?;
    let (n, m) = (7u64, 9u64); // crosses an epoch boundary (6 batches per epoch) after resuming

    let mut straight = build(1, data.len())?;
    let losses_straight = train(&mut straight, &data, 0, n + m)?;

    let mut first = build(1, data.len())?;
    let mut losses_resumed = train(&mut first, &data, 0, n)?;
    let mut ck = Checkpoint::new(n);
    ck.add_varmap("model", &first.varmap)?;
    ck.add_state("opt", &first.opt)?;
    ck.add_state("ema", &first.ema)?;
    ck.set_rng("noise", &first.rng);
    ck.set_config("schedule", &first.schedule)?;
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("run.safetensors");
    ck.save(&path)?;
    drop(first);

    // Fresh objects, deliberately initialised differently: everything must come from the file.
    let mut second = build(2, data.len())?;
    let ck = Checkpoint::load(&path)?;
    ck.restore_varmap("model", &second.varmap)?;
    ck.restore_state("opt", &mut second.opt)?;
    ck.restore_state("ema", &mut second.ema)?;
    second.rng = ck.rng("noise")?;
    second.schedule = ck.config("schedule")?;
    losses_resumed.extend(train(&mut second, &data, ck.step(), n + m)?);

    assert_eq!(losses_straight, losses_resumed);
    let (a, b) = (snapshot(&straight)?, snapshot(&second)?);
    assert_eq!(a.len(), b.len());
    for ((na, va), (nb, vb)) in a.iter().zip(&b) {
        assert_eq!(na, nb);
        assert!(va.iter().zip(vb).all(|(x, y)| x.to_bits() == y.to_bits()), "{na} differs after resume");
    }
    assert_eq!(straight.opt.step_count(), n + m);
    // The run did learn something, so the comparison is not between two untouched models.
    assert!(losses_straight[(n + m) as usize - 1] < losses_straight[0], "{losses_straight:?}");
    // And a resumed run that skipped the optimizer state would differ: the test can fail.
    let mut careless = build(2, data.len())?;
    ck.restore_varmap("model", &careless.varmap)?;
    careless.rng = ck.rng("noise")?;
    let losses_careless = train(&mut careless, &data, n, n + m)?;
    assert_ne!(&losses_straight[n as usize..], &losses_careless[..]);
    Ok(())
}
