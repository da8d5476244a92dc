//! Search spaces: named, typed parameter ranges, and the trials drawn from them.

use std::collections::BTreeMap;

use rand::Rng as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::rng::Rng;
use crate::{Error, Result};

/// The largest grid [`Space::grid`] builds, so a typo in the number of points fails fast
/// instead of allocating without end.
const MAX_GRID_POINTS: usize = 1_000_000;

/// The range of one hyper-parameter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Param {
    /// A real number uniform in `[lo, hi]`; needs finite `lo < hi`. E.g. weight decay, dropout.
    Uniform {
        /// Lower end.
        lo: f64,
        /// Upper end.
        hi: f64,
    },
    /// A real number whose logarithm is uniform: `exp(U(ln lo, ln hi))`; needs finite
    /// `0 < lo < hi`. The usual prior for learning rates and other scale parameters
    /// (Bergstra & Bengio 2012): each decade gets the same share of the trials.
    LogUniform {
        /// Lower end, > 0.
        lo: f64,
        /// Upper end.
        hi: f64,
    },
    /// An integer uniform in `lo..=hi` (both ends included); needs `lo <= hi`. E.g. layers,
    /// channels.
    IntRange {
        /// Smallest value.
        lo: i64,
        /// Largest value.
        hi: i64,
    },
    /// One of a list of JSON values (strings, numbers, booleans...), each equally likely; needs
    /// at least one value. E.g. `Param::choice(["adam", "sgd"])`.
    Choice(Vec<Value>),
}

impl Param {
    /// A [`Param::Choice`] from anything convertible to JSON values: `Param::choice(["adam", "sgd"])`,
    /// `Param::choice([32, 64, 128])`.
    pub fn choice<T: Into<Value>>(values: impl IntoIterator<Item = T>) -> Self {
        Param::Choice(values.into_iter().map(Into::into).collect())
    }

    /// Checks the range; `Error::Config` names the parameter `name`.
    fn validate(&self, name: &str) -> Result<()> {
        let field = format!("Space.{name}");
        match *self {
            Param::Uniform { lo, hi } if !(lo.is_finite() && hi.is_finite() && lo < hi) => {
                Err(Error::config(field, format!("Uniform needs finite lo < hi, got [{lo}, {hi}]")))
            }
            Param::LogUniform { lo, hi } if !(lo.is_finite() && hi.is_finite() && lo > 0.0 && lo < hi) => {
                Err(Error::config(field, format!("LogUniform needs finite 0 < lo < hi, got [{lo}, {hi}]")))
            }
            Param::IntRange { lo, hi } if lo > hi => {
                Err(Error::config(field, format!("IntRange needs lo <= hi, got {lo}..={hi}")))
            }
            Param::Choice(ref values) if values.is_empty() => {
                Err(Error::config(field, "Choice needs at least one value"))
            }
            _ => Ok(()),
        }
    }

    /// One random value; the range has been validated.
    fn sample(&self, rng: &mut Rng) -> Result<Value> {
        Ok(match *self {
            Param::Uniform { lo, hi } => float_value(lo + (hi - lo) * rng.uniform_f64()),
            Param::LogUniform { lo, hi } => {
                float_value((lo.ln() + (hi.ln() - lo.ln()) * rng.uniform_f64()).exp().clamp(lo, hi))
            }
            Param::IntRange { lo, hi } => Value::from(rng.random_range(lo..=hi)),
            Param::Choice(ref values) => values[rng.below(values.len())?].clone(),
        })
    }

    /// The values of this axis of a grid with `points` points per continuous axis (`points >= 2`).
    fn grid_axis(&self, points: usize) -> Vec<Value> {
        let last = points - 1;
        match *self {
            // Ends are set exactly so the grid's corners are the range's ends, without rounding.
            Param::Uniform { lo, hi } => (0..points)
                .map(|i| match i {
                    0 => lo,
                    i if i == last => hi,
                    i => lo + (hi - lo) * i as f64 / last as f64,
                })
                .map(float_value)
                .collect(),
            Param::LogUniform { lo, hi } => (0..points)
                .map(|i| match i {
                    0 => lo,
                    i if i == last => hi,
                    i => (lo.ln() + (hi.ln() - lo.ln()) * i as f64 / last as f64).exp(),
                })
                .map(float_value)
                .collect(),
            Param::IntRange { lo, hi } => {
                let span = (hi as i128 - lo as i128) as u128;
                if span < points as u128 {
                    (lo..=hi).map(Value::from).collect()
                } else {
                    // `points` evenly spaced integers from lo to hi; all distinct since span >= last.
                    (0..points)
                        .map(|i| lo as i128 + (span * i as u128 / last as u128) as i128)
                        .map(|v| Value::from(v as i64))
                        .collect()
                }
            }
            Param::Choice(ref values) => values.clone(),
        }
    }
}

/// A finite `f64` as a JSON number (callers only pass values inside validated finite ranges).
fn float_value(v: f64) -> Value {
    serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number)
}

/// A search space: named hyper-parameters, each with its [`Param`] range.
///
/// Built with [`Space::new`] and [`Space::param`]; the order of the parameters fixes the order
/// in which random values are drawn, so it is part of what a seed reproduces. The searches
/// call [`Space::validate`] before drawing anything.
///
/// ```
/// use candle_generative::hyperparam::{Param, Space};
///
/// let space = Space::new()
///     .param("lr", Param::LogUniform { lo: 1e-5, hi: 1e-1 })
///     .param("layers", Param::IntRange { lo: 2, hi: 6 })
///     .param("optimizer", Param::choice(["adam", "sgd"]));
/// space.validate()?;
/// # Ok::<(), candle_generative::Error>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Space {
    params: Vec<(String, Param)>,
}

impl Space {
    /// An empty space; add parameters with [`param`](Self::param).
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the parameter `name` with range `param` (checked by [`validate`](Self::validate)).
    pub fn param(mut self, name: impl Into<String>, param: Param) -> Self {
        self.params.push((name.into(), param));
        self
    }

    /// The parameters in the order they were added.
    pub fn params(&self) -> &[(String, Param)] {
        &self.params
    }

    /// Checks the space: at least one parameter, non-empty and distinct names, and valid ranges
    /// (`lo < hi` for `Uniform` and `LogUniform`, `lo > 0` for `LogUniform`, `lo <= hi` for
    /// `IntRange`, a non-empty `Choice`). Returns `Error::Config` naming the parameter at fault.
    pub fn validate(&self) -> Result<()> {
        if self.params.is_empty() {
            return Err(Error::config("Space", "a search space needs at least one parameter"));
        }
        for (i, (name, param)) in self.params.iter().enumerate() {
            if name.is_empty() {
                return Err(Error::config("Space", format!("parameter {i} has an empty name")));
            }
            if self.params[..i].iter().any(|(other, _)| other == name) {
                return Err(Error::config(format!("Space.{name}"), "the name is used twice"));
            }
            param.validate(name)?;
        }
        Ok(())
    }

    /// A trial with every parameter drawn independently from its range, in the space's order.
    pub fn sample(&self, id: usize, rng: &mut Rng) -> Result<Trial> {
        self.validate()?;
        let mut params = BTreeMap::new();
        for (name, param) in &self.params {
            params.insert(name.clone(), param.sample(rng)?);
        }
        Ok(Trial { id, params })
    }

    /// Every point of the grid: the Cartesian product of the axes, the first parameter varying
    /// slowest, with trial ids `0..`.
    ///
    /// A `Uniform` axis has `points_per_continuous_axis` evenly spaced values from `lo` to `hi`
    /// (both included), a `LogUniform` axis as many geometrically spaced values, an `IntRange`
    /// all its integers when there are at most that many, else that many evenly spaced ones
    /// (rounded down, ends included), and a `Choice` all its values. Needs
    /// `points_per_continuous_axis >= 2` (so the corners are on the grid) and a grid of at most
    /// 1 000 000 points, else `Error::Config`.
    pub fn grid(&self, points_per_continuous_axis: usize) -> Result<Vec<Trial>> {
        self.validate()?;
        if points_per_continuous_axis < 2 {
            return Err(Error::config(
                "points_per_continuous_axis",
                format!("needs at least 2 points per axis (its two ends), got {points_per_continuous_axis}"),
            ));
        }
        let axes: Vec<Vec<Value>> =
            self.params.iter().map(|(_, param)| param.grid_axis(points_per_continuous_axis)).collect();
        let total = axes.iter().try_fold(1usize, |acc, axis| acc.checked_mul(axis.len()));
        let total = match total {
            Some(n) if n <= MAX_GRID_POINTS => n,
            _ => {
                return Err(Error::config(
                    "points_per_continuous_axis",
                    format!("the grid would have more than {MAX_GRID_POINTS} points"),
                ))
            }
        };
        let trials = (0..total)
            .map(|id| {
                // Mixed-radix decoding of `id`, the last axis the fastest digit.
                let mut rest = id;
                let mut params = BTreeMap::new();
                for ((name, _), axis) in self.params.iter().zip(&axes).rev() {
                    params.insert(name.clone(), axis[rest % axis.len()].clone());
                    rest /= axis.len();
                }
                Trial { id, params }
            })
            .collect();
        Ok(trials)
    }
}

/// One point of a search space: the values of the hyper-parameters for one training run.
///
/// Read the values with the typed getters, which return `Error::Config` when the name is not in
/// the trial or the value has another type, so a typo fails at the first trial.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trial {
    /// The trial's number in its search, from 0 in the order the trials were drawn.
    pub id: usize,
    /// The parameter values by name.
    pub params: BTreeMap<String, Value>,
}

impl Trial {
    /// The raw JSON value of parameter `name`.
    pub fn value(&self, name: &str) -> Result<&Value> {
        self.params.get(name).ok_or_else(|| {
            let known: Vec<&str> = self.params.keys().map(String::as_str).collect();
            Error::config(name, format!("no such hyper-parameter in the trial (it has {known:?})"))
        })
    }

    /// Parameter `name` as an `f64`: any number (from `Uniform`, `LogUniform`, `IntRange` or a
    /// numeric `Choice`).
    pub fn f64(&self, name: &str) -> Result<f64> {
        let v = self.value(name)?;
        v.as_f64().ok_or_else(|| type_error(name, "a number", v))
    }

    /// Parameter `name` as an `i64`: an integer (from `IntRange` or an integer `Choice`).
    pub fn i64(&self, name: &str) -> Result<i64> {
        let v = self.value(name)?;
        v.as_i64().ok_or_else(|| type_error(name, "an integer", v))
    }

    /// Parameter `name` as a `usize`: a non-negative integer (from `IntRange` or an integer
    /// `Choice`), e.g. a layer count or batch size.
    pub fn usize(&self, name: &str) -> Result<usize> {
        let v = self.value(name)?;
        v.as_u64().and_then(|n| usize::try_from(n).ok()).ok_or_else(|| type_error(name, "a non-negative integer", v))
    }

    /// Parameter `name` as a string slice (from a `Choice` of strings).
    pub fn str(&self, name: &str) -> Result<&str> {
        let v = self.value(name)?;
        v.as_str().ok_or_else(|| type_error(name, "a string", v))
    }

    /// Parameter `name` as a `bool` (from a `Choice` of booleans).
    pub fn bool(&self, name: &str) -> Result<bool> {
        let v = self.value(name)?;
        v.as_bool().ok_or_else(|| type_error(name, "a boolean", v))
    }
}

fn type_error(name: &str, expected: &str, got: &Value) -> Error {
    Error::config(name, format!("expected {expected}, the trial has {got}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(e: Error) -> String {
        match e {
            Error::Config { field, .. } => field,
            other => panic!("expected Error::Config, got {other}"),
        }
    }

    #[test]
    fn invalid_spaces_name_the_parameter() {
        let bad = |p: Param| names(Space::new().param("x", p).validate().unwrap_err());
        assert_eq!(bad(Param::Uniform { lo: 1.0, hi: 1.0 }), "Space.x");
        assert_eq!(bad(Param::Uniform { lo: 0.0, hi: f64::NAN }), "Space.x");
        assert_eq!(bad(Param::LogUniform { lo: 0.0, hi: 1.0 }), "Space.x");
        assert_eq!(bad(Param::LogUniform { lo: -1.0, hi: 1.0 }), "Space.x");
        assert_eq!(bad(Param::IntRange { lo: 3, hi: 2 }), "Space.x");
        assert_eq!(bad(Param::Choice(vec![])), "Space.x");
        let dup = Space::new().param("lr", Param::Uniform { lo: 0.0, hi: 1.0 }).param("lr", Param::choice([1, 2]));
        assert_eq!(names(dup.validate().unwrap_err()), "Space.lr");
        assert!(Space::new().validate().is_err());
        assert!(Space::new().param("one", Param::IntRange { lo: 4, hi: 4 }).validate().is_ok());
    }

    #[test]
    fn samples_stay_in_range_and_getters_check_types() -> Result<()> {
        let space = Space::new()
            .param("wd", Param::Uniform { lo: 0.0, hi: 0.5 })
            .param("lr", Param::LogUniform { lo: 1e-5, hi: 1e-1 })
            .param("layers", Param::IntRange { lo: -2, hi: 3 })
            .param("opt", Param::choice(["adam", "sgd"]));
        let mut rng = Rng::new(0);
        let mut seen_ints = std::collections::BTreeSet::new();
        let mut below_1e3 = 0;
        for id in 0..2000 {
            let t = space.sample(id, &mut rng)?;
            assert_eq!(t.id, id);
            assert!((0.0..=0.5).contains(&t.f64("wd")?));
            let lr = t.f64("lr")?;
            assert!((1e-5..=1e-1).contains(&lr));
            below_1e3 += usize::from(lr < 1e-3);
            seen_ints.insert(t.i64("layers")?);
            assert!(["adam", "sgd"].contains(&t.str("opt")?));
        }
        // Log-uniform: half of the four decades lie below 1e-3, so about 1000 of 2000 draws.
        assert!((900..1100).contains(&below_1e3), "{below_1e3}");
        assert_eq!(seen_ints.into_iter().collect::<Vec<_>>(), vec![-2, -1, 0, 1, 2, 3]);

        let t = space.sample(0, &mut rng)?;
        assert_eq!(names(t.f64("missing").unwrap_err()), "missing");
        assert_eq!(names(t.str("wd").unwrap_err()), "wd");
        assert_eq!(names(t.f64("opt").unwrap_err()), "opt");
        assert!(t.usize("wd").is_err() && t.bool("opt").is_err());
        let negative = Trial { id: 0, params: BTreeMap::from([("n".to_string(), Value::from(-1))]) };
        assert!(negative.usize("n").is_err());
        assert_eq!(negative.i64("n")?, -1);
        assert_eq!(negative.f64("n")?, -1.0);
        Ok(())
    }

    #[test]
    fn grid_axes_are_exact_at_the_ends() -> Result<()> {
        let space = Space::new()
            .param("lr", Param::LogUniform { lo: 1e-4, hi: 1e-2 })
            .param("n", Param::IntRange { lo: 0, hi: 100 })
            .param("flag", Param::choice([true, false]));
        let grid = space.grid(3)?;
        assert_eq!(grid.len(), 3 * 3 * 2);
        assert!(grid.iter().enumerate().all(|(i, t)| t.id == i));
        let lrs: Vec<f64> = grid.iter().step_by(6).map(|t| t.f64("lr")).collect::<Result<_>>()?;
        assert_eq!(lrs[0], 1e-4);
        assert!((lrs[1] - 1e-3).abs() < 1e-15, "{}", lrs[1]);
        assert_eq!(lrs[2], 1e-2);
        let ns: Vec<i64> = grid[..6].iter().step_by(2).map(|t| t.i64("n")).collect::<Result<_>>()?;
        assert_eq!(ns, vec![0, 50, 100]);
        assert!(grid[0].bool("flag")? && !grid[1].bool("flag")?);

        let small = Space::new().param("k", Param::IntRange { lo: 1, hi: 3 }).grid(10)?;
        assert_eq!(small.iter().map(|t| t.i64("k")).collect::<Result<Vec<_>>>()?, vec![1, 2, 3]);
        assert!(space.grid(1).is_err());
        let huge = Space::new()
            .param("a", Param::Uniform { lo: 0.0, hi: 1.0 })
            .param("b", Param::IntRange { lo: i64::MIN, hi: i64::MAX });
        assert!(huge.grid(1_000_000).is_err());
        Ok(())
    }
}
