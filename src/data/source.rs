//! Choosing the training data: Fashion-MNIST when it is found, else the procedural shapes.

use std::path::{Path, PathBuf};

use super::mnist::{fashion_mnist, find_fashion_mnist, FASHION_MNIST_ENV};
use super::procedural::shapes_split;
use super::Split;
use crate::Result;

/// Where a [`Split`] came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataSource {
    /// IDX files (Fashion-MNIST or MNIST) in this directory.
    Idx(PathBuf),
    /// The procedural shapes data set (28x28 grey), generated because no data was found.
    Shapes,
}

impl std::fmt::Display for DataSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DataSource::Idx(dir) => write!(f, "IDX data from {}", dir.display()),
            DataSource::Shapes => write!(
                f,
                "procedural shapes (Fashion-MNIST not found: `apt-get install dataset-fashion-mnist` \
                 or set {FASHION_MNIST_ENV})"
            ),
        }
    }
}

/// The data the examples train on, 28x28 grey with labels:
/// - `dir = Some(d)`: the IDX files (MNIST or Fashion-MNIST, raw or `.gz`) in `d`; an error
///   when they cannot be read, since the user asked for them;
/// - `dir = None`: Fashion-MNIST from [`find_fashion_mnist`] (the `FASHION_MNIST_DIR`
///   environment variable, then Debian's `/usr/share/datasets/fashion-mnist`), else
///   `fallback_train` / `fallback_test` procedural shapes generated from `seed`.
///
/// The returned [`DataSource`] says which; print it, so a fallback is never silent.
pub fn fashion_mnist_or_shapes(
    dir: Option<&Path>,
    fallback_train: usize,
    fallback_test: usize,
    seed: u64,
) -> Result<(Split, DataSource)> {
    if let Some(d) = dir {
        return Ok((fashion_mnist(d)?, DataSource::Idx(d.to_path_buf())));
    }
    match find_fashion_mnist() {
        Some(d) => Ok((fashion_mnist(&d)?, DataSource::Idx(d))),
        None => Ok((shapes_split(fallback_train, fallback_test, 28, 1, seed)?, DataSource::Shapes)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_explicit_directory_without_data_is_an_error() {
        let missing = std::env::temp_dir().join("candle-generative-no-such-dir");
        let e = fashion_mnist_or_shapes(Some(&missing), 10, 10, 0).unwrap_err().to_string();
        assert!(e.contains("candle-generative-no-such-dir"), "{e}");
    }

    #[test]
    fn the_message_names_the_fallback_and_the_fix() {
        let s = DataSource::Shapes.to_string();
        assert!(s.contains("procedural") && s.contains("dataset-fashion-mnist") && s.contains(FASHION_MNIST_ENV));
    }
}
