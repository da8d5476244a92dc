//! Helpers shared by the integration tests (`mod common;` in each test file).

use candle_generative::data::mnist::{
    fashion_mnist, find_fashion_mnist, DEBIAN_FASHION_MNIST_DIR, FASHION_MNIST_ENV, REQUIRE_DATA_ENV,
};
use candle_generative::data::Split;
use std::io::Write;

/// Fashion-MNIST when it is installed, else `None` after a `SKIPPED <test_name>` note on stderr.
///
/// When `CANDLE_GENERATIVE_REQUIRE_DATA=1` (CI), missing data panics instead, so a test that
/// needs the real data cannot pass by skipping. Found but unreadable data always panics.
#[allow(dead_code)]
pub fn fashion_mnist_or_skip(test_name: &str) -> Option<Split> {
    let Some(dir) = find_fashion_mnist() else {
        let looked = format!("${FASHION_MNIST_ENV} (unset or without the files) and {DEBIAN_FASHION_MNIST_DIR}");
        if std::env::var(REQUIRE_DATA_ENV).as_deref() == Ok("1") {
            panic!(
                "{test_name}: Fashion-MNIST not found in {looked}, and {REQUIRE_DATA_ENV}=1 requires it; \
                 run `apt-get install dataset-fashion-mnist` or set {FASHION_MNIST_ENV} to a directory \
                 holding its IDX files"
            );
        }
        // Written to the stderr handle directly: the test harness captures `eprintln!` of passing
        // tests, and a skip must be visible.
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED {test_name}: Fashion-MNIST not found in {looked}; `apt-get install dataset-fashion-mnist` \
             or set {FASHION_MNIST_ENV} to run it"
        );
        return None;
    };
    match fashion_mnist(&dir) {
        Ok(split) => Some(split),
        Err(e) => panic!("{test_name}: Fashion-MNIST found in {} but not loadable: {e}", dir.display()),
    }
}

/// The tiny diffusion setup the diffusion training tests share: a UNet for 16x16 grey images
/// (base 8, multipliers 1,2, 4 groups) and Adam at 2e-3 on batches of 16.
#[allow(dead_code)]
pub fn small_unet_16() -> (candle_generative::diffusion::UNetConfig, candle_generative::diffusion::TrainConfig) {
    use candle_generative::diffusion::{TrainConfig, UNetConfig};
    let unet = UNetConfig {
        image_size: 16,
        base_channels: 8,
        channel_mults: vec![1, 2],
        groups: 4,
        time_embed_dim: 32,
        ..UNetConfig::bench()
    };
    (unet, TrainConfig { lr: 2e-3, batch_size: 16, ..TrainConfig::default() })
}
