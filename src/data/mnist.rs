//! MNIST and Fashion-MNIST from their IDX files, and where to find Fashion-MNIST.
//!
//! Both data sets are 28x28 grey images of 10 classes in four IDX files (see [`super::idx`]):
//! `train-images-idx3-ubyte`, `train-labels-idx1-ubyte`, `t10k-images-idx3-ubyte` and
//! `t10k-labels-idx1-ubyte`, each raw or gzip-compressed with a `.gz` suffix.
//!
//! - MNIST: handwritten digits 0-9 (LeCun, Bottou, Bengio and Haffner, 1998, "Gradient-based
//!   learning applied to document recognition").
//! - Fashion-MNIST: Zalando article photos, a drop-in replacement for MNIST that is harder to
//!   model (Xiao, Rasul and Vollgraf, 2017, "Fashion-MNIST: a Novel Image Dataset for
//!   Benchmarking Machine Learning Algorithms"); class names in [`FASHION_MNIST_CLASSES`].
//!
//! Both have 60 000 training and 10 000 test images. [`mnist`] and [`fashion_mnist`] return a
//! [`Split`] of [`ImageDataset`]s of shape `(1, 28, 28)` (`C = 1`), pixels 0..=255 (0 is the
//! black background), labels 0..=9. On Debian, `apt-get install dataset-fashion-mnist` puts
//! Fashion-MNIST in [`DEBIAN_FASHION_MNIST_DIR`]; [`find_fashion_mnist`] looks there and in
//! the directory named by [`FASHION_MNIST_ENV`].
//!
//! A directory in the same layout, written with [`write_idx`](super::idx::write_idx):
//!
//! ```
//! use candle_generative::data::idx::write_idx;
//! use candle_generative::data::mnist::mnist;
//! # fn main() -> candle_generative::Result<()> {
//! let dir = tempfile::tempdir().unwrap();
//! // Five 28x28 images (pixel value = image index) for training, two for testing.
//! let pixels: Vec<u8> = (0..5u8).flat_map(|i| [i; 28 * 28]).collect();
//! write_idx(dir.path().join("train-images-idx3-ubyte.gz"), &[5, 28, 28], &pixels)?;
//! write_idx(dir.path().join("train-labels-idx1-ubyte.gz"), &[5], &[9, 0, 0, 3, 2])?;
//! write_idx(dir.path().join("t10k-images-idx3-ubyte"), &[2, 28, 28], &[0; 2 * 784])?;
//! write_idx(dir.path().join("t10k-labels-idx1-ubyte"), &[2], &[1, 7])?;
//!
//! let split = mnist(dir.path())?;
//! assert_eq!(split.train.len(), 5);
//! assert_eq!(split.train.image_shape(), (1, 28, 28));
//! assert_eq!(split.train.labels(), &[9, 0, 0, 3, 2]);
//! assert_eq!(split.test.num_classes(), 10);
//! # Ok(())
//! # }
//! ```
//!
//! The real data, when installed:
//!
//! ```no_run
//! use candle_core::Device;
//! use candle_generative::data::mnist::{fashion_mnist, find_fashion_mnist, FASHION_MNIST_CLASSES};
//! # fn main() -> candle_generative::Result<()> {
//! let dir = find_fashion_mnist().expect("apt-get install dataset-fashion-mnist, or set FASHION_MNIST_DIR");
//! let split = fashion_mnist(&dir)?;
//! assert_eq!((split.train.len(), split.test.len()), (60_000, 10_000));
//! println!("first training image: {}", FASHION_MNIST_CLASSES[split.train.labels()[0] as usize]);
//! let batch = split.train.images(&[0, 1, 2, 3], &Device::Cpu)?; // (4, 1, 28, 28) f32 in [0, 1]
//! assert_eq!(batch.dims(), &[4, 1, 28, 28]);
//! # Ok(())
//! # }
//! ```

use std::path::{Path, PathBuf};

use super::idx::read_idx;
use super::{ImageDataset, Split};
use crate::{Error, Result};

/// Fashion-MNIST's class names, in label order (Xiao et al., 2017).
pub const FASHION_MNIST_CLASSES: [&str; 10] =
    ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"];

/// The environment variable naming a directory that holds Fashion-MNIST's IDX files; checked
/// first by [`find_fashion_mnist`].
pub const FASHION_MNIST_ENV: &str = "FASHION_MNIST_DIR";

/// Where Debian's `dataset-fashion-mnist` package installs the files (as `*-ubyte.gz`).
pub const DEBIAN_FASHION_MNIST_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// The environment variable that makes missing data a failure: when set to `1`, tests that need
/// Fashion-MNIST fail instead of skipping (CI sets it, so a broken install cannot pass
/// unnoticed).
pub const REQUIRE_DATA_ENV: &str = "CANDLE_GENERATIVE_REQUIRE_DATA";

/// Number of classes of MNIST and Fashion-MNIST.
const NUM_CLASSES: usize = 10;

const TRAIN_IMAGES: &str = "train-images-idx3-ubyte";
const TRAIN_LABELS: &str = "train-labels-idx1-ubyte";
const TEST_IMAGES: &str = "t10k-images-idx3-ubyte";
const TEST_LABELS: &str = "t10k-labels-idx1-ubyte";

/// Loads MNIST (LeCun et al., 1998) from `dir`, which holds the four IDX files, each raw or
/// `.gz` (the raw file is used when both exist).
///
/// Returns 60 000 training and 10 000 test images for the real files, as [`ImageDataset`]s of
/// shape `(1, H, W)` (`(1, 28, 28)` for MNIST), pixels 0..=255, labels 0..=9 (10 classes); each
/// data set is named after its images file.
///
/// Errors: [`Error::Data`] naming the file when a file is missing (also naming `dir`), is not
/// valid IDX (see [`read_idx`]), the images are not 3-d `(N, H, W)`, the labels not 1-d, the
/// label count differs from the image count, or a label is 10 or more. [`Error::Io`] when a
/// file exists but cannot be read.
pub fn mnist(dir: impl AsRef<Path>) -> Result<Split> {
    load_split(dir.as_ref())
}

/// Loads Fashion-MNIST (Xiao et al., 2017) from `dir`: the same four IDX files as MNIST, raw or
/// `.gz`, so this reads exactly like [`mnist`]: `(1, 28, 28)` images, pixels 0..=255 (0 is the
/// background), labels 0..=9 named by [`FASHION_MNIST_CLASSES`], 60 000 train / 10 000 test.
///
/// Use [`find_fashion_mnist`] for the directory. Errors as [`mnist`].
pub fn fashion_mnist(dir: impl AsRef<Path>) -> Result<Split> {
    load_split(dir.as_ref())
}

/// The directory holding Fashion-MNIST, if any: the one named by the [`FASHION_MNIST_ENV`]
/// variable when it is set and contains `train-images-idx3-ubyte` (raw or `.gz`), else
/// [`DEBIAN_FASHION_MNIST_DIR`] when it contains that file, else `None`.
///
/// Only the training images file is looked for; [`fashion_mnist`] reports any other missing
/// file.
pub fn find_fashion_mnist() -> Option<PathBuf> {
    let from_env = std::env::var_os(FASHION_MNIST_ENV).filter(|v| !v.is_empty()).map(PathBuf::from);
    from_env.into_iter().chain([PathBuf::from(DEBIAN_FASHION_MNIST_DIR)]).find(|d| existing(d, TRAIN_IMAGES).is_some())
}

/// `dir/name` if it is a file, else `dir/name.gz` if that is.
fn existing(dir: &Path, name: &str) -> Option<PathBuf> {
    [dir.join(name), dir.join(format!("{name}.gz"))].into_iter().find(|p| p.is_file())
}

fn locate(dir: &Path, name: &str) -> Result<PathBuf> {
    existing(dir, name).ok_or_else(|| {
        Error::data(dir.join(name), format!("missing: neither `{name}` nor `{name}.gz` exists in {}", dir.display()))
    })
}

fn load_split(dir: &Path) -> Result<Split> {
    let train = load_set(dir, TRAIN_IMAGES, TRAIN_LABELS)?;
    let test = load_set(dir, TEST_IMAGES, TEST_LABELS)?;
    Ok(Split { train, test })
}

fn load_set(dir: &Path, images_name: &str, labels_name: &str) -> Result<ImageDataset> {
    let images_path = locate(dir, images_name)?;
    let labels_path = locate(dir, labels_name)?;
    let images = read_idx(&images_path)?;
    let (n, height, width) = match images.dims[..] {
        [n, h, w] => (n, h, w),
        _ => {
            return Err(Error::data(
                &images_path,
                format!("images must have 3 dims (N, H, W), found {:?}", images.dims),
            ))
        }
    };
    let labels = read_idx(&labels_path)?;
    if labels.dims.len() != 1 {
        return Err(Error::data(&labels_path, format!("labels must have 1 dim (N), found {:?}", labels.dims)));
    }
    if labels.dims[0] != n {
        return Err(Error::data(
            &labels_path,
            format!("{} labels, but {} has {n} images", labels.dims[0], images_path.display()),
        ));
    }
    if let Some((i, &l)) = labels.data.iter().enumerate().find(|(_, &l)| l as usize >= NUM_CLASSES) {
        return Err(Error::data(&labels_path, format!("label {l} at index {i} is not below {NUM_CLASSES}")));
    }
    let labels: Vec<u32> = labels.data.iter().map(|&l| l as u32).collect();
    ImageDataset::new(images_path.display().to_string(), images.data, labels, (1, height, width), NUM_CLASSES)
}

#[cfg(test)]
mod tests {
    use super::super::idx::write_idx;
    use super::*;

    /// Writes a tiny MNIST-like directory: 5 train and 3 test 4x3 images, train files gzipped.
    fn fake_dir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let train: Vec<u8> = (0..5 * 12).map(|i| (i * 4) as u8).collect();
        write_idx(d.join("train-images-idx3-ubyte.gz"), &[5, 4, 3], &train).unwrap();
        write_idx(d.join("train-labels-idx1-ubyte.gz"), &[5], &[9, 0, 3, 3, 5]).unwrap();
        write_idx(d.join("t10k-images-idx3-ubyte"), &[3, 4, 3], &[255; 36]).unwrap();
        write_idx(d.join("t10k-labels-idx1-ubyte"), &[3], &[1, 2, 0]).unwrap();
        dir
    }

    fn data_error(dir: &Path) -> (PathBuf, String) {
        match mnist(dir) {
            Err(Error::Data { path, message }) => (path, message),
            other => panic!("expected Error::Data, got {other:?}"),
        }
    }

    #[test]
    fn loads_a_fake_directory() -> Result<()> {
        let dir = fake_dir();
        for split in [mnist(dir.path())?, fashion_mnist(dir.path())?] {
            assert_eq!((split.train.len(), split.test.len()), (5, 3));
            assert_eq!(split.train.image_shape(), (1, 4, 3));
            assert_eq!(split.train.num_classes(), 10);
            assert_eq!(split.train.labels(), &[9, 0, 3, 3, 5]);
            assert_eq!(split.train.image(1).unwrap(), &(12..24).map(|i| (i * 4) as u8).collect::<Vec<_>>()[..]);
            assert_eq!(split.test.labels(), &[1, 2, 0]);
            assert!(split.train.name().ends_with("train-images-idx3-ubyte.gz"));
            assert!(split.test.name().ends_with("t10k-images-idx3-ubyte"));
        }
        // The raw file wins when both exist.
        write_idx(dir.path().join("t10k-labels-idx1-ubyte.gz"), &[3], &[4, 4, 4])?;
        assert_eq!(mnist(dir.path())?.test.labels(), &[1, 2, 0]);
        Ok(())
    }

    #[test]
    fn label_of_ten_is_refused() {
        let dir = fake_dir();
        write_idx(dir.path().join("train-labels-idx1-ubyte.gz"), &[5], &[9, 0, 10, 3, 5]).unwrap();
        let (path, message) = data_error(dir.path());
        assert!(path.ends_with("train-labels-idx1-ubyte.gz"), "{path:?}");
        assert!(message.contains("label 10 at index 2"), "{message}");
    }

    #[test]
    fn count_mismatch_is_refused() {
        let dir = fake_dir();
        write_idx(dir.path().join("t10k-labels-idx1-ubyte"), &[4], &[1, 2, 0, 1]).unwrap();
        let (path, message) = data_error(dir.path());
        assert!(path.ends_with("t10k-labels-idx1-ubyte"), "{path:?}");
        assert!(message.contains("4 labels") && message.contains("3 images"), "{message}");
    }

    #[test]
    fn wrong_rank_is_refused() {
        let dir = fake_dir();
        write_idx(dir.path().join("t10k-images-idx3-ubyte"), &[3, 12], &[0; 36]).unwrap();
        let (path, message) = data_error(dir.path());
        assert!(path.ends_with("t10k-images-idx3-ubyte"), "{path:?}");
        assert!(message.contains("3 dims"), "{message}");
        let dir = fake_dir();
        write_idx(dir.path().join("t10k-labels-idx1-ubyte"), &[3, 1], &[1, 2, 0]).unwrap();
        let (path, message) = data_error(dir.path());
        assert!(path.ends_with("t10k-labels-idx1-ubyte") && message.contains("1 dim"), "{path:?} {message}");
    }

    #[test]
    fn missing_file_names_file_and_directory() {
        let dir = fake_dir();
        std::fs::remove_file(dir.path().join("t10k-images-idx3-ubyte")).unwrap();
        let (path, message) = data_error(dir.path());
        assert_eq!(path, dir.path().join("t10k-images-idx3-ubyte"));
        assert!(message.contains("t10k-images-idx3-ubyte.gz"), "{message}");
        assert!(message.contains(&dir.path().display().to_string()), "{message}");
    }

    #[test]
    fn corrupt_file_error_names_that_file() {
        let dir = fake_dir();
        std::fs::write(dir.path().join("train-images-idx3-ubyte.gz"), [0x1f, 0x8b, 8, 0, 0]).unwrap();
        let (path, _) = data_error(dir.path());
        assert!(path.ends_with("train-images-idx3-ubyte.gz"), "{path:?}");
    }
}
