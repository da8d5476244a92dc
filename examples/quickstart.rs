//! Quickstart: load Fashion-MNIST (or the procedural shapes), draw a seeded batch, augment it and
//! write both as PNG grids.
//!
//! ```sh
//! cargo run --release --example quickstart                 # Fashion-MNIST when installed
//! cargo run --release --example quickstart -- --help       # options
//! ```

use std::path::PathBuf;
use std::time::Instant;

use candle_generative::data::{self, augment::Augment, batcher::Batcher, transforms};
use candle_generative::io::{save_grid, GridOptions};
use candle_generative::rng::Rng;
use clap::Parser;

#[derive(Parser, Debug)]
#[command(about = "Load data, augment a batch and write PNG grids")]
struct Args {
    /// Directory with MNIST-format IDX files (default: find Fashion-MNIST, else procedural shapes).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Where the PNG grids go.
    #[arg(long, default_value = "out/quickstart")]
    out: PathBuf,
    /// Seed for the batch order and the augmentations.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Images per grid.
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// Device: cpu, cuda[:N], metal[:N] or auto.
    #[arg(long, default_value = "auto")]
    device: String,
}

fn main() -> candle_generative::Result<()> {
    let args = Args::parse();
    let device = candle_generative::device::parse_device(&args.device)?;

    let t0 = Instant::now();
    let (split, source) = data::fashion_mnist_or_shapes(args.data_dir.as_deref(), 6_000, 1_000, args.seed)?;
    println!("data: {source}");
    let (c, h, w) = split.train.image_shape();
    println!(
        "loaded {} train + {} test images of {c}x{h}x{w} in {:.2?}; train images per class: {:?}",
        split.train.len(),
        split.test.len(),
        t0.elapsed(),
        split.train.label_histogram()
    );

    let batcher = Batcher::new(split.train.len(), args.batch_size, args.seed)?;
    let indices = batcher.batch_at_step(0);
    let real = split.train.images(&indices, &device)?; // [0, 1]

    let augment = Augment {
        hflip_probability: 0.5,
        crop_padding: 2,
        rotation_degrees: 10.0,
        brightness: 0.3,
        contrast: 0.3,
        ..Augment::default()
    };
    let mut rng = Rng::new(args.seed);
    let augmented = augment.apply(&real, &mut rng)?;

    // Models see [-1, 1]; the grid maps that range back to 0..255.
    let opts = GridOptions::default();
    let real_path = save_grid(args.out.join("real.png"), &transforms::to_signed(&real)?, &opts)?;
    let aug_path = save_grid(args.out.join("augmented.png"), &transforms::to_signed(&augmented)?, &opts)?;
    println!("wrote {} ({} images, batch 0 of seed {})", real_path.display(), indices.len(), args.seed);
    println!("wrote {} (the same images, augmented: {augment:?})", aug_path.display());
    Ok(())
}
