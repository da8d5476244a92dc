//! PixelCNN and Gated PixelCNN: causality of every layer type and of the full models, the benchmark's
//! parameter count, frozen masked weights, learning on procedural data, sampling, conditioning, errors.

// The dependency matrices are indexed by (output, input) sub-pixel numbers, clearer as index loops.
#![allow(clippy::needless_range_loop)]

use std::time::Instant;

use candle_core::{DType, Device, IndexOp, Module, Tensor};
use candle_generative::data::{procedural, ImageDataset};
use candle_generative::nn::masked_conv::{MaskType, MaskedConv2d, MaskedConvConfig};
use candle_generative::optim::NamedVars;
use candle_generative::pixelcnn::{
    evaluate, init_pixelcnn, pixels_to_input, sample, Architecture, Config, Head, PixelCnn, SampleOptions, TrainConfig,
    Trainer,
};
use candle_generative::rng::Rng;
use candle_generative::{Error, Result};
use candle_nn::{VarBuilder, VarMap};

const CPU: Device = Device::Cpu;

fn build(config: &Config, seed: u64) -> Result<(PixelCnn, VarMap)> {
    let vm = VarMap::new();
    let model = PixelCnn::new(config, VarBuilder::from_varmap(&vm, DType::F32, &CPU))?;
    init_pixelcnn(&model, &vm, &mut Rng::new(seed))?;
    Ok((model, vm))
}

/// `dep[i][j]`: does output sub-pixel `i` change when input sub-pixel `j` changes? Sub-pixels are numbered in
/// raster-then-channel order `(y·W + x)·C + c`. `outputs_of(out, i)` reads sub-pixel `i`'s outputs.
fn dependencies(
    f: &dyn Fn(&Tensor) -> Result<Tensor>,
    (c, h, w): (usize, usize, usize),
    per_pixel_outputs: bool,
) -> Result<Vec<Vec<bool>>> {
    let mut rng = Rng::new(3);
    let base: Vec<f32> = (0..c * h * w).map(|_| rng.uniform_f64() as f32 * 2.0 - 1.0).collect();
    let flat = |v: Vec<f32>| Tensor::from_vec(v, (1, c, h, w), &CPU);
    let y0 = f(&flat(base.clone())?)?;
    let n = c * h * w;
    let order_to_chw = |k: usize| {
        let (pix, ch) = (k / c, k % c);
        (ch, pix / w, pix % w)
    };
    let outputs = |y: &Tensor, k: usize| -> Result<Vec<f32>> {
        let (ch, yy, xx) = order_to_chw(k);
        let o = y.i((0, .., yy, xx))?;
        let per = o.dim(0)? / c;
        let o = if per_pixel_outputs { o } else { o.narrow(0, ch * per, per)? };
        Ok(o.to_vec1::<f32>()?)
    };
    let before: Vec<Vec<f32>> = (0..n).map(|i| outputs(&y0, i)).collect::<Result<_>>()?;
    let mut dep = vec![vec![false; n]; n];
    for j in 0..n {
        let (ch, yy, xx) = order_to_chw(j);
        let mut v = base.clone();
        v[(ch * h + yy) * w + xx] += 0.7;
        let y1 = f(&flat(v)?)?;
        for i in 0..n {
            let after = outputs(&y1, i)?;
            let m = before[i].iter().zip(&after).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            // A masked-out input is multiplied by exact zeros, so "no influence" is an exact 0.
            dep[i][j] = m > 0.0;
        }
    }
    Ok(dep)
}

/// Causal: nothing at or after `i` influences `i` (for per-pixel outputs, nothing in the same pixel either).
fn assert_causal(dep: &[Vec<bool>], c: usize, per_pixel_outputs: bool, what: &str) {
    for (i, row) in dep.iter().enumerate() {
        let first_hidden = if per_pixel_outputs { i - i % c } else { i };
        for (j, &d) in row.iter().enumerate().skip(first_hidden) {
            assert!(!d, "{what}: output {i} depends on input {j} at or after it");
        }
    }
}

fn assert_every_output_sees_something_earlier(dep: &[Vec<bool>], c: usize, per_pixel: bool, what: &str) {
    let start = if per_pixel { c } else { 1 };
    for (i, row) in dep.iter().enumerate().skip(start) {
        assert!(row[..i].iter().any(|&d| d), "{what}: output {i} sees nothing before it");
    }
}

#[test]
fn masked_layers_are_causal_for_both_types_and_colour_groups() -> Result<()> {
    for (c, mask, k) in [(1, MaskType::A, 5), (3, MaskType::A, 3), (3, MaskType::B, 3), (1, MaskType::B, 3)] {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &CPU);
        // Type B maps C colour-grouped features to themselves; its causality is "not after i" (i included).
        let conv = MaskedConv2d::new(MaskedConvConfig::square(c, 2 * c, k, mask, c), vb.pp("m"))?;
        init_pixelcnn_like(&vm, 1)?;
        let f = |x: &Tensor| -> Result<Tensor> { Ok(conv.forward(x)?) };
        let dep = dependencies(&f, (c, 4, 4), false)?;
        let n = dep.len();
        for i in 0..n {
            for j in 0..n {
                let allowed = match mask {
                    MaskType::A => j < i,
                    MaskType::B => j <= i,
                };
                if !allowed {
                    assert!(!dep[i][j], "mask {mask:?} C={c}: {i} depends on {j}");
                }
            }
            if mask == MaskType::B {
                assert!(dep[i][i], "mask B sees its own sub-pixel {i}");
            }
        }
        assert_every_output_sees_something_earlier(&dep, c, false, &format!("mask {mask:?} C={c}"));
    }
    // The horizontal stack's row convolution: the current pixel (type B) and the k/2 to its left, nothing else.
    let vm = VarMap::new();
    let conv = MaskedConv2d::new(
        MaskedConvConfig::row(1, 1, 5, MaskType::B, 1),
        VarBuilder::from_varmap(&vm, DType::F32, &CPU).pp("h"),
    )?;
    init_pixelcnn_like(&vm, 2)?;
    let f = |x: &Tensor| -> Result<Tensor> { Ok(conv.forward(x)?) };
    let dep = dependencies(&f, (1, 3, 5), false)?;
    for i in 0..15 {
        for j in 0..15 {
            let same_row = i / 5 == j / 5;
            assert_eq!(dep[i][j], same_row && j <= i && i - j <= 2, "row conv: {i} on {j}");
        }
    }
    Ok(())
}

/// Non-zero weights in every variable of `vm` (seeded).
fn init_pixelcnn_like(vm: &VarMap, seed: u64) -> Result<()> {
    let mut rng = Rng::new(seed);
    for (_, var) in NamedVars::from_varmap(vm).iter() {
        let t = var.as_tensor();
        var.set(&rng.uniform(t.shape().clone(), -1.0, 1.0, DType::F32, &CPU)?)?;
    }
    Ok(())
}

fn small(architecture: Architecture, c: usize, head: Head) -> Config {
    Config {
        image_channels: c,
        architecture,
        // Wide enough that the ReLU before the output layer leaves some feature of each colour group alive at
        // each pixel of the test inputs (four per group would not: paths through ReLU can be exactly cut).
        hidden: 24,
        first_kernel: 5,
        kernel: 3,
        layers: 2,
        output_hidden: 24,
        head,
        num_classes: 0,
    }
}

#[test]
fn full_models_are_causal_in_raster_and_channel_order() -> Result<()> {
    let mix = Head::LogisticMixture { components: 2 };
    for (arch, c, head) in [
        (Architecture::PixelCnn, 1, Head::Softmax),
        (Architecture::PixelCnn, 3, Head::Softmax),
        (Architecture::Gated, 1, Head::Softmax),
        (Architecture::Gated, 3, Head::Softmax),
        (Architecture::PixelCnn, 3, mix),
        (Architecture::Gated, 3, mix),
    ] {
        let config = small(arch, c, head);
        let (model, _vm) = build(&config, 4)?;
        let f = |x: &Tensor| model.forward(x, None);
        let per_pixel = matches!(head, Head::LogisticMixture { .. });
        let what = format!("{arch:?} C={c} {head:?}");
        let dep = dependencies(&f, (c, 5, 5), per_pixel)?;
        assert_causal(&dep, c, per_pixel, &what);
        assert_every_output_sees_something_earlier(&dep, c, per_pixel, &what);
        if arch == Architecture::Gated {
            // No blind spot: with a 5x5 first layer and two more layers, every earlier sub-pixel of a 5x5 image
            // is in the receptive field, including those above and to the right.
            for (i, row) in dep.iter().enumerate() {
                let first_hidden = if per_pixel { i - i % c } else { i };
                for (j, &d) in row.iter().enumerate().take(first_hidden) {
                    assert!(d, "{what}: output {i} does not see earlier input {j} (blind spot)");
                }
            }
        }
    }
    Ok(())
}

#[test]
fn plain_pixelcnn_has_its_blind_spot_and_gated_does_not() -> Result<()> {
    // Pixel (2, 1) of a 5x5 grey image; (1, 3) is up and two to the right. PixelCNN's stacked masks only reach
    // the row above one column further right per layer through the row above's own left-looking masks, so
    // (1, 3) stays invisible at any depth (van den Oord et al. 2016b, figure 1).
    let at = |y: usize, x: usize| y * 5 + x;
    for (arch, blind) in [(Architecture::PixelCnn, true), (Architecture::Gated, false)] {
        let mut config = small(arch, 1, Head::Softmax);
        config.first_kernel = 3;
        config.layers = 4;
        let (model, _vm) = build(&config, 5)?;
        let f = |x: &Tensor| model.forward(x, None);
        let dep = dependencies(&f, (1, 5, 5), false)?;
        assert_eq!(!dep[at(2, 1)][at(1, 3)], blind, "{arch:?}");
        assert!(dep[at(2, 1)][at(1, 2)], "{arch:?} sees the pixel up and to the right");
    }
    Ok(())
}

#[test]
fn the_benchmark_configuration_has_torch_references_parameter_count() -> Result<()> {
    // torch_reference.py's PixelCNN: masked-A 7x7 1->64: 64·1·49 + 64 = 3 200; five masked-B 3x3 64->64:
    // 5·(64·64·9 + 64) = 184 640; 1x1 64->64: 4 160; 1x1 64->256: 64·256 + 256 = 16 640. Total 208 640.
    let config = Config::default();
    assert_eq!(config.num_params()?, 208_640);
    let (_, vm) = build(&config, 0)?;
    assert_eq!(NamedVars::from_varmap(&vm).num_params(), 208_640);
    // The formula agrees with the variables built for the other variants too.
    for config in [
        Config::gated(),
        Config { num_classes: 10, ..Config::default() },
        Config { num_classes: 10, ..Config::gated() },
        Config { image_channels: 3, hidden: 48, output_hidden: 48, ..Config::default() },
        Config { image_channels: 3, head: Head::LogisticMixture { components: 5 }, ..Config::gated() },
    ] {
        let (_, vm) = build(&config, 0)?;
        assert_eq!(NamedVars::from_varmap(&vm).num_params(), config.num_params()?, "{config:?}");
    }
    Ok(())
}

fn masked_entries(model: &PixelCnn, vm: &VarMap) -> Result<Vec<(Vec<f32>, Vec<f32>)>> {
    let data = vm.data().lock().unwrap();
    model
        .masked_layers()
        .iter()
        .map(|l| {
            let w = data[l.weight_path()].as_tensor().flatten_all()?.to_vec1::<f32>()?;
            let m = l.mask().flatten_all()?.to_vec1::<f32>()?;
            Ok((w, m))
        })
        .collect()
}

#[test]
fn masked_weights_stay_zero_through_training() -> Result<()> {
    let data = procedural::shapes_split(64, 8, 8, 3, 0)?;
    for config in [small(Architecture::PixelCnn, 3, Head::Softmax), small(Architecture::Gated, 3, Head::Softmax)] {
        let train = TrainConfig { batch_size: 16, ..TrainConfig::default() };
        let mut trainer = Trainer::new(config.clone(), train, data.train.len(), DType::F32, &CPU)?;
        let before = masked_entries(trainer.model(), trainer.varmap())?;
        for _ in 0..4 {
            trainer.step(&data.train)?;
        }
        let after = masked_entries(trainer.model(), trainer.varmap())?;
        let mut moved = 0;
        for ((w0, m), (w1, _)) in before.iter().zip(&after) {
            for ((a, b), m) in w0.iter().zip(w1).zip(m) {
                if *m == 0.0 {
                    assert_eq!((*a, *b), (0.0, 0.0), "{:?}: a masked weight is not zero", config.architecture);
                } else if a != b {
                    moved += 1;
                }
            }
        }
        assert!(moved > 100, "visible weights should train, {moved} moved");
    }
    Ok(())
}

#[test]
fn a_model_with_zero_weights_is_uniform_at_eight_bits_per_dim() -> Result<()> {
    // Zero weights give zero logits: every value has probability 1/256, i.e. exactly 8 bits per sub-pixel.
    let data = procedural::shapes_split(8, 10, 8, 3, 0)?;
    let (model, vm) = build(&small(Architecture::Gated, 3, Head::Softmax), 0)?;
    for (_, var) in NamedVars::from_varmap(&vm).iter() {
        var.set(&var.as_tensor().zeros_like()?)?;
    }
    let report = evaluate(&model, &data.test, None, 4)?;
    assert_eq!(report.num_images, 10);
    assert!((report.bits_per_dim - 8.0).abs() < 1e-5, "{report:?}");
    assert!((report.nll_nats_per_image - 192.0 * 256f64.ln()).abs() < 1e-2, "{report:?}");
    Ok(())
}

#[test]
fn short_training_on_shapes_lowers_bits_per_dim() -> Result<()> {
    // 8x8 grey procedural shapes; uniform guessing is 8 bits/dim, the initial model about that.
    let data = procedural::shapes_split(512, 64, 8, 1, 0)?;
    let config = Config { hidden: 16, output_hidden: 16, layers: 2, first_kernel: 5, ..Config::gated() };
    let train = TrainConfig { batch_size: 16, lr: 3e-3, seed: 1 };
    let mut trainer = Trainer::new(config, train, data.train.len(), DType::F32, &CPU)?;
    let start = trainer.evaluate(&data.test, None)?;
    let t = Instant::now();
    for _ in 0..100 {
        trainer.step(&data.train)?;
    }
    let end = trainer.evaluate(&data.test, None)?;
    println!("bits/dim {:.3} -> {:.3} in {:.1} s", start.bits_per_dim, end.bits_per_dim, t.elapsed().as_secs_f64());
    assert!(start.bits_per_dim > 7.0, "{start:?}");
    // Seen: 8.02 -> 3.34 (about 30 s on the loaded 2-core machine, a few seconds when idle).
    assert!(end.bits_per_dim < 4.0, "{end:?}");
    Ok(())
}

#[test]
fn a_model_trained_on_one_image_samples_that_image() -> Result<()> {
    // A fixed 6x6 pattern of distinct values; every "data set" image is that pattern.
    let pattern: Vec<u8> = (0..36).map(|k| ((k * 37 + 11) % 256) as u8).collect();
    let n = 32;
    let pixels = pattern.iter().cloned().cycle().take(36 * n).collect();
    let data = ImageDataset::new("constant", pixels, vec![0; n], (1, 6, 6), 1)?;
    let config = Config { hidden: 16, output_hidden: 32, layers: 2, first_kernel: 5, ..Config::gated() };
    let train = TrainConfig { batch_size: 8, lr: 1e-2, seed: 2 };
    let mut trainer = Trainer::new(config, train, n, DType::F32, &CPU)?;
    for _ in 0..200 {
        trainer.step(&data)?;
    }
    let report = trainer.evaluate(&data, Some(8))?;
    let (images, cost) = sample(trainer.model(), 4, 6, 6, None, &SampleOptions::default(), &mut Rng::new(9))?;
    assert_eq!(cost.forward_passes, 36);
    let got = images.flatten_all()?.to_vec1::<u8>()?;
    let wrong = got.iter().zip(pattern.iter().cycle()).filter(|(a, b)| a != b).count();
    assert_eq!(wrong, 0, "{wrong} of 144 sampled pixels differ; train NLL {report:?}");
    Ok(())
}

#[test]
fn cropped_sampling_computes_the_same_logits_on_fewer_rows() -> Result<()> {
    for arch in [Architecture::PixelCnn, Architecture::Gated] {
        let config =
            Config { hidden: 8, output_hidden: 8, layers: 1, first_kernel: 3, architecture: arch, ..Config::default() };
        let (model, _vm) = build(&config, 6)?;
        let mut rng = Rng::new(1);
        let images = rng.randint((2, 1, 12, 7), 0, 256, &CPU)?;
        let x = pixels_to_input(&images, DType::F32)?;
        let full = model.forward(&x, None)?;
        let i = 9;
        let r0 = i - config.rows_above();
        let cropped = model.forward(&x.narrow(2, r0, i + 1 - r0)?, None)?;
        let a = full.i((.., .., i, ..))?;
        let b = cropped.i((.., .., i - r0, ..))?;
        let diff = (a - b)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < 1e-5, "{arch:?}: {diff}");
        // One row fewer above would change row i: rows_above is tight.
        let r0 = r0 + 1;
        let too_small = model.forward(&x.narrow(2, r0, i + 1 - r0)?, None)?.i((.., .., i - r0, ..))?;
        let diff = (full.i((.., .., i, ..))? - too_small)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff > 1e-5, "{arch:?}: rows_above = {} is more than needed", config.rows_above());

        let (s1, c1) = sample(&model, 3, 12, 7, None, &SampleOptions::default(), &mut Rng::new(4))?;
        let opts = SampleOptions { crop_rows: false, ..SampleOptions::default() };
        let (s2, c2) = sample(&model, 3, 12, 7, None, &opts, &mut Rng::new(4))?;
        assert_eq!(s1.flatten_all()?.to_vec1::<u8>()?, s2.flatten_all()?.to_vec1::<u8>()?, "{arch:?}");
        assert_eq!((c1.forward_passes, c2.forward_passes), (84, 84));
        assert_eq!(c2.rows_computed, 84 * 12);
        assert!(c1.fraction_of_uncropped() < 0.6, "{c1:?}");
    }
    Ok(())
}

#[test]
fn rgb_sampling_takes_one_pass_per_sub_pixel_and_mixture_one_per_pixel() -> Result<()> {
    let (soft, _a) = build(&small(Architecture::PixelCnn, 3, Head::Softmax), 1)?;
    let (mix, _b) = build(&small(Architecture::Gated, 3, Head::LogisticMixture { components: 3 }), 1)?;
    let opts = SampleOptions { temperature: 0.8, ..SampleOptions::default() };
    let (s, c) = sample(&soft, 2, 4, 5, None, &opts, &mut Rng::new(0))?;
    assert_eq!((s.dims(), c.forward_passes), (&[2usize, 3, 4, 5][..], 60));
    let (s, c) = sample(&mix, 2, 4, 5, None, &opts, &mut Rng::new(0))?;
    assert_eq!((s.dims(), c.forward_passes), (&[2usize, 3, 4, 5][..], 20));
    // Same seed, same samples.
    let (again, _) = sample(&mix, 2, 4, 5, None, &opts, &mut Rng::new(0))?;
    assert_eq!(s.flatten_all()?.to_vec1::<u8>()?, again.flatten_all()?.to_vec1::<u8>()?);
    Ok(())
}

#[test]
fn conditional_models_use_the_labels() -> Result<()> {
    for arch in [Architecture::PixelCnn, Architecture::Gated] {
        let config = Config { num_classes: 4, ..small(arch, 1, Head::Softmax) };
        let (model, _vm) = build(&config, 7)?;
        let x = pixels_to_input(&Rng::new(2).randint((2, 1, 5, 5), 0, 256, &CPU)?, DType::F32)?;
        let y0 = Tensor::new(&[0u32, 0], &CPU)?;
        let y1 = Tensor::new(&[3u32, 0], &CPU)?;
        let (a, b) = (model.forward(&x, Some(&y0))?, model.forward(&x, Some(&y1))?);
        let d0 = (a.i(0)? - b.i(0)?)?.abs()?.max_all()?.to_scalar::<f32>()?;
        let d1 = (a.i(1)? - b.i(1)?)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(d0 > 1e-3, "{arch:?}: the label did not change the outputs");
        assert_eq!(d1, 0.0, "{arch:?}: another image's label changed this one");
        // Even the first pixel, which sees no pixel, knows the class.
        let first = (a.i((0, .., 0, 0))? - b.i((0, .., 0, 0))?)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(first > 1e-3, "{arch:?}");
        assert!(matches!(model.forward(&x, None), Err(Error::Shape { .. })));
        let bad = Tensor::new(&[4u32, 0], &CPU)?;
        assert!(matches!(model.forward(&x, Some(&bad)), Err(Error::Shape { .. })));
        let (s, _) = sample(&model, 2, 3, 3, Some(&y1), &SampleOptions::default(), &mut Rng::new(0))?;
        assert_eq!(s.dims(), &[2, 1, 3, 3]);
    }
    Ok(())
}

#[test]
fn bad_configs_and_inputs_are_errors_naming_the_field() -> Result<()> {
    let field = |c: Config| match c.validate() {
        Err(Error::Config { field, .. }) => field,
        other => panic!("expected a config error, got {other:?}"),
    };
    let d = Config::default();
    assert_eq!(field(Config { image_channels: 0, ..d.clone() }), "image_channels");
    assert_eq!(field(Config { hidden: 0, ..d.clone() }), "hidden");
    assert_eq!(field(Config { image_channels: 3, hidden: 64, ..d.clone() }), "hidden");
    assert_eq!(field(Config { first_kernel: 4, ..d.clone() }), "first_kernel");
    assert_eq!(field(Config { kernel: 1, ..d.clone() }), "kernel");
    assert_eq!(field(Config { output_hidden: 0, ..d.clone() }), "output_hidden");
    assert_eq!(field(Config { head: Head::LogisticMixture { components: 0 }, ..d.clone() }), "head");
    assert_eq!(
        field(Config { image_channels: 2, hidden: 64, head: Head::LogisticMixture { components: 2 }, ..d.clone() }),
        "head"
    );
    assert!(PixelCnn::new(
        &Config { hidden: 0, ..d.clone() },
        VarBuilder::from_varmap(&VarMap::new(), DType::F32, &CPU)
    )
    .is_err());
    let (model, _vm) = build(&small(Architecture::Gated, 1, Head::Softmax), 0)?;
    assert!(matches!(model.forward(&Tensor::zeros((2, 3, 5, 5), DType::F32, &CPU)?, None), Err(Error::Shape { .. })));
    assert!(matches!(model.forward(&Tensor::zeros((2, 5, 5), DType::F32, &CPU)?, None), Err(Error::Shape { .. })));
    let opts = SampleOptions { temperature: 0.0, ..SampleOptions::default() };
    assert!(matches!(sample(&model, 1, 3, 3, None, &opts, &mut Rng::new(0)), Err(Error::Config { .. })));
    let sopts = SampleOptions::default();
    assert!(matches!(sample(&model, 0, 3, 3, None, &sopts, &mut Rng::new(0)), Err(Error::Config { .. })));
    let data = procedural::shapes_split(8, 4, 8, 1, 0)?;
    assert!(matches!(evaluate(&model, &data.test, Some(0), 4), Err(Error::Config { .. })));
    let bad = TrainConfig { batch_size: 0, ..TrainConfig::default() };
    assert!(Trainer::new(small(Architecture::Gated, 1, Head::Softmax), bad, 8, DType::F32, &CPU).is_err());
    Ok(())
}

#[test]
fn resuming_from_a_checkpoint_is_exact() -> Result<()> {
    let data = procedural::shapes_split(64, 8, 8, 1, 0)?;
    let config = small(Architecture::PixelCnn, 1, Head::Softmax);
    let train = TrainConfig { batch_size: 8, ..TrainConfig::default() };
    let mut a = Trainer::new(config.clone(), train.clone(), 64, DType::F32, &CPU)?;
    for _ in 0..3 {
        a.step(&data.train)?;
    }
    let dir = std::env::temp_dir().join(format!("pixelcnn_resume_{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let path = dir.join("ck.safetensors");
    a.checkpoint()?.save(&path)?;
    let mut b = Trainer::new(config.clone(), TrainConfig { seed: 5, ..train.clone() }, 64, DType::F32, &CPU)?;
    assert!(b.restore(&candle_generative::io::Checkpoint::load(&path)?).is_err(), "another seed is another run");
    let mut b = Trainer::new(config, train, 64, DType::F32, &CPU)?;
    b.restore(&candle_generative::io::Checkpoint::load(&path)?)?;
    for _ in 0..2 {
        let (sa, sb) = (a.step(&data.train)?, b.step(&data.train)?);
        assert_eq!(sa, sb);
    }
    let weights = |t: &Trainer| -> Result<Vec<Vec<f32>>> {
        NamedVars::from_varmap(t.varmap())
            .iter()
            .map(|(_, v)| Ok(v.as_tensor().flatten_all()?.to_vec1::<f32>()?))
            .collect()
    };
    assert_eq!(weights(&a)?, weights(&b)?);
    std::fs::remove_dir_all(&dir).ok();
    Ok(())
}
