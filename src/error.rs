//! The crate's one error type.
//!
//! Every fallible function of the crate returns [`Result`]. Messages name what was at fault:
//! the file, the config field, the tensor shape or the loss term.

use std::path::{Path, PathBuf};

/// Everything that can go wrong in `candle-generative`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An error raised by candle itself (tensor ops, devices, `VarBuilder` lookups).
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),

    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory at fault.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },

    /// A data file or data set is malformed, truncated or missing.
    #[error("data error in {}: {message}", path.display())]
    Data {
        /// The file, directory or data set name at fault.
        path: PathBuf,
        /// What was wrong with it.
        message: String,
    },

    /// A configuration value is out of range or inconsistent with another one.
    #[error("invalid config field `{field}`: {message}")]
    Config {
        /// The field at fault, e.g. `"latent_dim"` or `"Config.channels"`.
        field: String,
        /// Why the value was refused.
        message: String,
    },

    /// A checkpoint is missing, corrupt or does not match the model it is loaded into.
    #[error("checkpoint {}: {message}", path.display())]
    Checkpoint {
        /// The checkpoint file.
        path: PathBuf,
        /// What did not match.
        message: String,
    },

    /// A tensor argument has the wrong shape, rank or dtype.
    #[error("shape error in {context}: {message}")]
    Shape {
        /// The function or layer that received the tensor.
        context: String,
        /// Expected versus received.
        message: String,
    },

    /// A loss, gradient norm or statistic is NaN or infinite.
    #[error("non-finite value {value} in `{term}`{}", step.map(|s| format!(" at step {s}")).unwrap_or_default())]
    NonFinite {
        /// The loss term or quantity, e.g. `"discriminator loss"`.
        term: String,
        /// The training step when known.
        step: Option<u64>,
        /// The offending value.
        value: f64,
    },

    /// An image could not be encoded or decoded.
    #[error("image {}: {message}", path.display())]
    Image {
        /// The image file.
        path: PathBuf,
        /// What the codec reported.
        message: String,
    },
}

/// `Result` with the crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// An [`Error::Io`] for `path`.
    pub fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        Error::Io { path: path.as_ref().to_path_buf(), source }
    }

    /// An [`Error::Data`] for `path` with a message.
    pub fn data(path: impl AsRef<Path>, message: impl Into<String>) -> Self {
        Error::Data { path: path.as_ref().to_path_buf(), message: message.into() }
    }

    /// An [`Error::Config`] naming the field.
    pub fn config(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Config { field: field.into(), message: message.into() }
    }

    /// An [`Error::Checkpoint`] for `path` with a message.
    pub fn checkpoint(path: impl AsRef<Path>, message: impl Into<String>) -> Self {
        Error::Checkpoint { path: path.as_ref().to_path_buf(), message: message.into() }
    }

    /// An [`Error::Shape`] naming the function and what was expected.
    pub fn shape(context: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Shape { context: context.into(), message: message.into() }
    }

    /// An [`Error::Image`] for `path` with the codec's message.
    pub fn image(path: impl AsRef<Path>, message: impl Into<String>) -> Self {
        Error::Image { path: path.as_ref().to_path_buf(), message: message.into() }
    }

    /// An [`Error::NonFinite`] for a named term.
    pub fn non_finite(term: impl Into<String>, step: Option<u64>, value: f64) -> Self {
        Error::NonFinite { term: term.into(), step, value }
    }
}

/// Returns `Err(Error::NonFinite)` when `value` is NaN or infinite, else the value.
///
/// Training helpers call this on every loss they report, so a diverging run stops with the
/// term's name instead of writing NaN weights.
pub fn check_finite(term: &str, step: Option<u64>, value: f64) -> Result<f64> {
    if value.is_finite() {
        Ok(value)
    } else {
        Err(Error::non_finite(term, step, value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_what_is_at_fault() {
        let e = Error::config("latent_dim", "must be > 0, got 0");
        assert_eq!(e.to_string(), "invalid config field `latent_dim`: must be > 0, got 0");
        let e = Error::data("/x/train.gz", "bad magic 0x0803");
        assert!(e.to_string().contains("/x/train.gz"));
        let e = Error::non_finite("discriminator loss", Some(12), f64::NAN);
        assert_eq!(e.to_string(), "non-finite value NaN in `discriminator loss` at step 12");
        assert!(check_finite("g", None, f64::INFINITY).is_err());
        assert_eq!(check_finite("g", None, 1.5).unwrap(), 1.5);
    }
}
