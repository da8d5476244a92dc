//! Small, seeded hyper-parameter search: grid, random and successive halving.
//!
//! A [`Space`] names the hyper-parameters and their ranges ([`Param`]: uniform, log-uniform,
//! integer range, choice); a search draws [`Trial`]s from it, hands each to an objective that
//! trains and returns a score to **minimise** (a validation loss, FID, negative accuracy), and
//! returns every trial with its score in a [`SearchResult`].
//!
//! - [`grid_search`]: every point of a grid, for one or two parameters.
//! - [`random_search`]: independent random trials (Bergstra & Bengio 2012), better than a grid
//!   of the same size when only some parameters matter.
//! - [`successive_halving`]: many random trials with a small budget, the best `1/eta` promoted
//!   to `eta` times the budget, until one is left (Jamieson & Talwalkar 2016; Li et al. 2018).
//!
//! Searches are reproducible: the same space and seed draw the same trials. A trial that
//! diverges (NaN or infinite score, or `Error::NonFinite` from the objective) is recorded as
//! failed and is never the best; other errors stop the search. [`Search::with_log`] records
//! every evaluation in a [`MetricsLog`](crate::io::MetricsLog).
//!
//! ```
//! use candle_generative::hyperparam::{successive_halving, Param, Space};
//!
//! let space = Space::new()
//!     .param("lr", Param::LogUniform { lo: 1e-4, hi: 1e-2 })
//!     .param("channels", Param::choice([32, 64]));
//! // budget = epochs; a stand-in objective whose noise shrinks as the budget grows.
//! let result = successive_halving(&space, 9, 1, 3, 0, |trial, epochs| {
//!     let channels = trial.usize("channels")? as f64;
//!     Ok((trial.f64("lr")?.log10() + 3.0).abs() + 1.0 / channels + 0.1 / epochs as f64)
//! })?;
//! assert_eq!(result.rungs.iter().map(|r| r.budget).collect::<Vec<_>>(), [1, 3, 9]);
//! let (best, _) = result.best.expect("no trial failed");
//! println!("best: {:?}", best.params);
//! # Ok::<(), candle_generative::Error>(())
//! ```

mod search;
mod space;
#[cfg(test)]
mod tests;

pub use search::{grid_search, random_search, successive_halving, Rung, Search, SearchResult};
pub use space::{Param, Space, Trial};
