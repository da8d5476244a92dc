//! Timings of the data pipeline: batch assembly and augmentation of 64 Fashion-MNIST-sized images.
//!
//! `cargo bench --bench data_pipeline` prints one line per case in the format of
//! `../shared/bench/README.md`: `name params=N median_ms=X min_ms=Y` (20 runs after 3 warm-ups).

use std::time::Instant;

use candle_core::Device;
use candle_generative::data::{augment::Augment, batcher::Batcher, procedural, transforms};
use candle_generative::rng::Rng;

fn time(name: &str, mut f: impl FnMut() -> candle_generative::Result<()>) -> candle_generative::Result<()> {
    for _ in 0..3 {
        f()?;
    }
    let mut ms: Vec<f64> = (0..20)
        .map(|_| {
            let t = Instant::now();
            f().map(|_| t.elapsed().as_secs_f64() * 1e3)
        })
        .collect::<candle_generative::Result<_>>()?;
    ms.sort_by(f64::total_cmp);
    println!("{name} params=0 median_ms={:.3} min_ms={:.3}", (ms[9] + ms[10]) / 2.0, ms[0]);
    Ok(())
}

fn main() -> candle_generative::Result<()> {
    let device = Device::Cpu;
    let data = procedural::shapes(&procedural::ShapesConfig { count: 6_400, ..Default::default() })?;
    let batcher = Batcher::new(data.len(), 64, 0)?;
    let mut step = 0u64;
    time("data_batch64_to_signed", || {
        let x = data.images(&batcher.batch_at_step(step), &device)?;
        step += 1;
        transforms::to_signed(&x).map(|_| ())
    })?;
    let x = data.images(&batcher.batch_at_step(0), &device)?;
    let mut rng = Rng::new(0);
    let flip_crop = Augment::cifar10();
    time("augment_flip_crop_batch64", || flip_crop.apply(&x, &mut rng).map(|_| ()))?;
    let full = Augment { rotation_degrees: 10.0, brightness: 0.3, contrast: 0.3, ..Augment::cifar10() };
    time("augment_full_batch64", || full.apply(&x, &mut rng).map(|_| ()))?;
    Ok(())
}
