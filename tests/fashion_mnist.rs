//! Loads the real Fashion-MNIST (Xiao et al., 2017) and checks it against its published
//! description: 60 000 / 10 000 images of 28x28, 6 000 / 1 000 per class.
//!
//! Skips when the data is not installed, unless `CANDLE_GENERATIVE_REQUIRE_DATA=1`.

mod common;

use candle_core::Device;
use candle_generative::data::mnist::FASHION_MNIST_CLASSES;

#[test]
fn fashion_mnist_matches_its_description() {
    let Some(split) = common::fashion_mnist_or_skip("fashion_mnist_matches_its_description") else {
        return;
    };
    let (train, test) = (&split.train, &split.test);
    assert_eq!(train.len(), 60_000);
    assert_eq!(test.len(), 10_000);
    for set in [train, test] {
        assert_eq!(set.image_shape(), (1, 28, 28), "{}", set.name());
        assert_eq!(set.num_classes(), 10);
        assert_eq!(set.pixels().len(), set.len() * 28 * 28);
        assert_eq!(set.pixels().iter().min(), Some(&0), "{}", set.name());
        assert_eq!(set.pixels().iter().max(), Some(&255), "{}", set.name());
    }
    assert_eq!(train.label_histogram(), vec![6_000; 10]);
    assert_eq!(test.label_histogram(), vec![1_000; 10]);

    // The first training image is an ankle boot (label 9), as in the published files.
    assert_eq!(train.labels()[0], 9);
    assert_eq!(FASHION_MNIST_CLASSES[train.labels()[0] as usize], "Ankle boot");

    // Batches come out as (B, 1, 28, 28) f32 in [0, 1].
    let batch = train.images(&[0, 59_999], &Device::Cpu).unwrap();
    assert_eq!(batch.dims(), &[2, 1, 28, 28]);
    let values = batch.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert!(values.iter().all(|v| (0.0..=1.0).contains(v)));
    assert!(values.iter().any(|&v| v > 0.5), "the first and last images are not blank");
}
