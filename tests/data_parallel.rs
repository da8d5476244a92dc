//! Data-parallel training on CPU threads (`optim::DataParallel` over `optim::ThreadGroup`,
//! `Batcher::shard`): replicas on shards of each batch must take the steps one process takes on
//! the whole batch, and mixed-precision replicas must skip the same steps.

use std::thread;

use candle_core::{DType, Device, Tensor, Var};
use candle_generative::data::batcher::Batcher;
use candle_generative::data::{procedural, ImageDataset};
use candle_generative::optim::{Adam, AdamConfig, DataParallel, MixedPrecision, NamedVars, ThreadGroup};
use candle_generative::rng::Rng;
use candle_generative::Result;
use candle_nn::Optimizer;

const CPU: Device = Device::Cpu;
const SEED: u64 = 3;

/// A two-layer classifier of 16x16 images, its weights drawn from `SEED` (so equal on every
/// replica) in `dtype`.
struct Mlp {
    w1: Var,
    w2: Var,
}

impl Mlp {
    fn new(dtype: DType) -> Result<Self> {
        let mut rng = Rng::new(SEED);
        let w1 = Var::from_tensor(&(rng.randn((256, 32), DType::F32, &CPU)? * 0.0625)?.to_dtype(dtype)?)?;
        let w2 = Var::from_tensor(&(rng.randn((32, 4), DType::F32, &CPU)? * 0.18)?.to_dtype(dtype)?)?;
        Ok(Self { w1, w2 })
    }

    fn vars(&self) -> Result<NamedVars> {
        NamedVars::from_pairs(vec![("w1".into(), self.w1.clone()), ("w2".into(), self.w2.clone())])
    }

    /// Mean cross-entropy of the batch `indices` (in `f32`).
    fn loss(&self, data: &ImageDataset, indices: &[usize]) -> Result<Tensor> {
        let x = data.images(indices, &CPU)?.flatten_from(1)?.to_dtype(self.w1.dtype())?;
        let logits = x.matmul(self.w1.as_tensor())?.relu()?.matmul(self.w2.as_tensor())?;
        let labels = data.labels_tensor(indices, &CPU)?;
        Ok(candle_nn::loss::cross_entropy(&logits.to_dtype(DType::F32)?, &labels)?)
    }

    fn weights(&self) -> Result<Vec<f32>> {
        let flat = |v: &Var| v.as_tensor().to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>();
        Ok([flat(&self.w1)?, flat(&self.w2)?].concat())
    }
}

fn data() -> Result<ImageDataset> {
    Ok(procedural::shapes_split(240, 8, 16, 1, 7)?.train)
}

/// A replica's final weights and the batches it saw.
type ReplicaRun = (Vec<f32>, Vec<Vec<usize>>);
/// A mixed-precision replica's final weights, skipped steps, loss scale and applied steps.
type MixedRun = (Vec<f32>, u64, f64, u64);

const STEPS: u64 = 25;
const PER_RANK: usize = 8;
const WORLD: usize = 2;

fn adam(vars: NamedVars) -> Result<Adam> {
    Adam::new_named(vars, AdamConfig { lr: 1e-2, ..AdamConfig::default() })
}

/// Rank `rank`'s run: its shard of every batch, gradients averaged with the other ranks (or not,
/// with `group = None`). Returns the final weights and the batches it saw.
fn replica(data: &ImageDataset, group: Option<ThreadGroup>, rank: usize) -> Result<ReplicaRun> {
    let model = Mlp::new(DType::F32)?;
    let batcher = Batcher::new(data.len(), PER_RANK, SEED)?.drop_last(true).shard(rank, WORLD)?;
    let mut seen = Vec::new();
    let mut step = |opt: &mut dyn FnMut(&Tensor) -> Result<()>| -> Result<()> {
        for s in 0..STEPS {
            let batch = batcher.batch_at_step(s);
            opt(&model.loss(data, &batch)?)?;
            seen.push(batch);
        }
        Ok(())
    };
    match group {
        Some(g) => {
            let mut opt = DataParallel::new(adam(model.vars()?)?, model.vars()?, g);
            step(&mut |loss| Ok(opt.backward_step(loss)?))?;
        }
        None => {
            let mut opt = adam(model.vars()?)?;
            step(&mut |loss| Ok(opt.backward_step(loss)?))?;
        }
    }
    Ok((model.weights()?, seen))
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn replicas_on_shards_take_the_steps_of_one_process_on_the_whole_batch() -> Result<()> {
    let data = data()?;
    // One process, batches of WORLD * PER_RANK.
    let single = Mlp::new(DType::F32)?;
    let mut opt = adam(single.vars()?)?;
    let batcher = Batcher::new(data.len(), WORLD * PER_RANK, SEED)?.drop_last(true);
    let mut single_batches = Vec::new();
    let initial = single.weights()?;
    for s in 0..STEPS {
        let batch = batcher.batch_at_step(s);
        opt.backward_step(&single.loss(&data, &batch)?)?;
        single_batches.push(batch);
    }
    let single_w = single.weights()?;

    let run = |synced: bool| -> Result<Vec<ReplicaRun>> {
        let groups: Vec<Option<ThreadGroup>> = match synced {
            true => ThreadGroup::new(WORLD)?.into_iter().map(Some).collect(),
            false => (0..WORLD).map(|_| None).collect(),
        };
        let data = &data;
        thread::scope(|s| {
            let handles: Vec<_> =
                groups.into_iter().enumerate().map(|(r, g)| s.spawn(move || replica(data, g, r))).collect();
            handles.into_iter().map(|h| h.join().expect("replica thread panicked")).collect()
        })
    };
    let replicas = run(true)?;

    // The shards of each step's batch are exactly the single process's batch.
    for s in 0..STEPS as usize {
        let mut union: Vec<usize> = replicas.iter().flat_map(|(_, seen)| seen[s].clone()).collect();
        let mut whole = single_batches[s].clone();
        union.sort_unstable();
        whole.sort_unstable();
        assert_eq!(union, whole, "step {s}");
    }
    // The replicas agree bit for bit, and with the single process up to summation order.
    assert_eq!(replicas[0].0, replicas[1].0);
    let moved = max_abs_diff(&initial, &single_w);
    let diff = max_abs_diff(&replicas[0].0, &single_w);
    eprintln!("weights moved by up to {moved:.4}; replicas vs one process differ by {diff:.2e}");
    assert!(moved > 0.01, "training hardly changed the weights ({moved})");
    assert!(diff < 1e-5, "data-parallel and single-process weights differ by {diff}");

    // Without the averaging, each replica follows its own shard and they drift apart.
    let unsynced = run(false)?;
    let drift = max_abs_diff(&unsynced[0].0, &unsynced[1].0);
    eprintln!("without averaging the replicas differ by {drift:.4}");
    assert!(drift > 100.0 * diff.max(1e-7), "unsynchronised replicas stayed together ({drift})");
    Ok(())
}

#[test]
fn an_overflow_on_one_f16_replica_skips_the_step_on_every_replica() -> Result<()> {
    let data = data()?;
    let groups = ThreadGroup::new(WORLD)?;
    let results: Vec<Result<MixedRun>> = thread::scope(|s| {
        let data = &data;
        let handles: Vec<_> = groups
            .into_iter()
            .enumerate()
            .map(|(rank, group)| {
                s.spawn(move || -> Result<MixedRun> {
                    let model = Mlp::new(DType::F16)?;
                    let mixed = MixedPrecision::auto(model.vars()?, adam)?;
                    let mut opt = DataParallel::new(mixed, model.vars()?, group);
                    let batcher = Batcher::new(data.len(), PER_RANK, SEED)?.drop_last(true).shard(rank, WORLD)?;
                    let mut applied = 0;
                    for s in 0..10 {
                        let mut loss = model.loss(data, &batcher.batch_at_step(s))?;
                        if s == 4 && rank == 1 {
                            // Only rank 1's gradients overflow f16 at this step.
                            loss = (loss * 1e6)?;
                        }
                        opt.backward_step(&loss)?;
                        applied += u64::from(opt.inner().last_step().is_some_and(|r| r.applied));
                    }
                    let scale = opt.inner().scaler().map_or(0.0, |s| s.scale());
                    Ok((model.weights()?, opt.inner().skipped_steps(), scale, applied))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("replica thread panicked")).collect()
    });
    let results = results.into_iter().collect::<Result<Vec<_>>>()?;
    for (rank, (_, skipped, scale, applied)) in results.iter().enumerate() {
        eprintln!("rank {rank}: {skipped} skipped, {applied} applied, loss scale {scale}");
        assert_eq!(*skipped, 1, "rank {rank}");
        assert_eq!(*applied, 9, "rank {rank}");
        assert_eq!(*scale, 512.0, "rank {rank}: the scale backs off once from 1024");
    }
    assert_eq!(results[0].0, results[1].0, "the replicas' f16 weights diverged");
    Ok(())
}
