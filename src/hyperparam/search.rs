//! The searches: grid, random (Bergstra & Bengio 2012) and successive halving
//! (Jamieson & Talwalkar 2016; Li et al. 2018).

use serde_json::{json, Value};

use super::space::{Space, Trial};
use crate::io::MetricsLog;
use crate::rng::Rng;
use crate::{Error, Result};

/// The outcome of a search.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchResult {
    /// Every trial in order of its id, with its score, or `None` when it failed (a NaN or
    /// infinite score, or an `Error::NonFinite` from the objective). For successive halving, the
    /// score at the largest budget the trial was run with.
    pub trials: Vec<(Trial, Option<f64>)>,
    /// The trial with the lowest finite score, ties going to the earliest; `None` when every
    /// trial failed. For successive halving, the best of the trials that reached the largest
    /// budget and did not fail there.
    pub best: Option<(Trial, f64)>,
    /// Successive halving's rungs in order; empty for grid and random search.
    pub rungs: Vec<Rung>,
}

/// One rung of successive halving: the trials run with one budget.
#[derive(Debug, Clone, PartialEq)]
pub struct Rung {
    /// The budget every trial of the rung was run with.
    pub budget: u64,
    /// `(trial id, score)` in the order the trials were run; `None` for a failed run.
    pub scores: Vec<(usize, Option<f64>)>,
}

/// A search over a [`Space`], optionally recording every evaluation in a [`MetricsLog`].
///
/// The free functions [`grid_search`], [`random_search`] and [`successive_halving`] are this
/// without a log. With a log, each evaluation writes one line through
/// [`MetricsLog::log_json`]: `step` is the evaluation's number (from 0), and the record holds
/// `trial` (the id), `params`, `score` (`null` when the run failed) and, for failures, `error`;
/// successive halving adds `rung` and `budget`.
///
/// The objective returns a score to **minimise** (a validation loss, negative accuracy, FID...).
/// A NaN or infinite score, or an `Err(Error::NonFinite)` (what the crate's training helpers
/// return when a loss diverges), marks the trial as failed: it is recorded with score `None`
/// and can never be the best. Any other error stops the search and is returned.
#[derive(Debug)]
pub struct Search<'a> {
    space: &'a Space,
    log: Option<&'a mut MetricsLog>,
}

impl<'a> Search<'a> {
    /// A search over `space`, without a log.
    pub fn new(space: &'a Space) -> Self {
        Self { space, log: None }
    }

    /// Records every evaluation in `log` (see the type's documentation for the record).
    pub fn with_log(mut self, log: &'a mut MetricsLog) -> Self {
        self.log = Some(log);
        self
    }

    /// Evaluates every point of [`Space::grid`]`(points_per_continuous_axis)`, in grid order.
    pub fn grid<F>(&mut self, points_per_continuous_axis: usize, mut objective: F) -> Result<SearchResult>
    where
        F: FnMut(&Trial) -> Result<f64>,
    {
        let trials = self.space.grid(points_per_continuous_axis)?;
        let mut scored = Vec::with_capacity(trials.len());
        for trial in trials {
            let outcome = Outcome::of(objective(&trial))?;
            self.record(trial.id as u64, &trial, &outcome, None)?;
            scored.push((trial, outcome.score));
        }
        Ok(finish(scored, Vec::new()))
    }

    /// Random search (Bergstra & Bengio 2012): `n_trials >= 1` trials, each parameter drawn
    /// independently from its range by a generator seeded with `seed`, evaluated in order.
    ///
    /// The same seed and space give the same trials. With a few important parameters among
    /// many, random search tries many more distinct values of each than a grid of the same size.
    pub fn random<F>(&mut self, n_trials: usize, seed: u64, mut objective: F) -> Result<SearchResult>
    where
        F: FnMut(&Trial) -> Result<f64>,
    {
        self.space.validate()?;
        if n_trials == 0 {
            return Err(Error::config("n_trials", "needs at least one trial"));
        }
        let mut rng = Rng::new(seed);
        let mut scored = Vec::with_capacity(n_trials);
        for id in 0..n_trials {
            let trial = self.space.sample(id, &mut rng)?;
            let outcome = Outcome::of(objective(&trial))?;
            self.record(id as u64, &trial, &outcome, None)?;
            scored.push((trial, outcome.score));
        }
        Ok(finish(scored, Vec::new()))
    }

    /// Successive halving (Jamieson & Talwalkar 2016; the inner loop of Hyperband, Li et al.
    /// 2018): draws `n_trials` random trials as [`random`](Self::random) does, runs them all
    /// with budget `min_budget`, keeps the best `max(1, floor(n / eta))` of the `n` run, runs
    /// those with `eta` times the budget, and so on until one trial is left (which is run with
    /// the last budget). Failed runs are never promoted.
    ///
    /// With `n_trials = 27, min_budget = 1, eta = 3` the rungs run 27, 9, 3 and 1 trials with
    /// budgets 1, 3, 9 and 27. The budget is whatever the objective makes of it (epochs,
    /// thousands of steps, images); the objective may train from scratch each time or resume
    /// from a checkpoint it keeps per `trial.id`. Needs `n_trials >= 1`, `min_budget >= 1`,
    /// `eta >= 2` and a largest budget that fits in `u64`, else `Error::Config`.
    pub fn successive_halving<F>(
        &mut self,
        n_trials: usize,
        min_budget: u64,
        eta: u64,
        seed: u64,
        mut objective: F,
    ) -> Result<SearchResult>
    where
        F: FnMut(&Trial, u64) -> Result<f64>,
    {
        self.space.validate()?;
        if n_trials == 0 {
            return Err(Error::config("n_trials", "needs at least one trial"));
        }
        if min_budget == 0 {
            return Err(Error::config("min_budget", "needs a budget of at least 1"));
        }
        if eta < 2 {
            return Err(Error::config("eta", format!("needs eta >= 2, got {eta}")));
        }
        let n_rungs = rung_sizes(n_trials, eta).len() as u32;
        eta.checked_pow(n_rungs - 1).and_then(|growth| growth.checked_mul(min_budget)).ok_or_else(|| {
            Error::config("min_budget", format!("the last of {n_rungs} rungs' budget would overflow u64"))
        })?;

        let mut rng = Rng::new(seed);
        let trials: Vec<Trial> = (0..n_trials).map(|id| self.space.sample(id, &mut rng)).collect::<Result<_>>()?;
        // Per trial: the largest budget it was run with and its score there.
        let mut last: Vec<(u64, Option<f64>)> = vec![(0, None); n_trials];
        let mut alive: Vec<usize> = (0..n_trials).collect();
        let mut budget = min_budget;
        let mut rungs = Vec::new();
        let mut step = 0u64;
        loop {
            let mut scores = Vec::with_capacity(alive.len());
            for &id in &alive {
                let outcome = Outcome::of(objective(&trials[id], budget))?;
                self.record(step, &trials[id], &outcome, Some((rungs.len(), budget)))?;
                step += 1;
                last[id] = (budget, outcome.score);
                scores.push((id, outcome.score));
            }
            let mut ranked: Vec<(usize, f64)> = scores.iter().filter_map(|&(id, s)| Some((id, s?))).collect();
            ranked.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
            let n_run = alive.len();
            rungs.push(Rung { budget, scores });
            if n_run <= 1 || ranked.is_empty() {
                break;
            }
            let keep = ((n_run as u64 / eta) as usize).max(1).min(ranked.len());
            alive = ranked[..keep].iter().map(|&(id, _)| id).collect();
            // Cannot overflow: checked above for the largest budget any rung can reach.
            budget *= eta;
        }

        // Best: the largest budget reached without failing, then the lowest score, then the id.
        let best = last
            .iter()
            .enumerate()
            .filter_map(|(id, &(b, s))| Some((id, b, s?)))
            .min_by(|x, y| y.1.cmp(&x.1).then(x.2.total_cmp(&y.2)).then(x.0.cmp(&y.0)))
            .map(|(id, _, score)| (trials[id].clone(), score));
        let trials = trials.into_iter().zip(last.into_iter().map(|(_, s)| s)).collect();
        Ok(SearchResult { trials, best, rungs })
    }

    fn record(&mut self, step: u64, trial: &Trial, outcome: &Outcome, rung: Option<(usize, u64)>) -> Result<()> {
        let Some(log) = self.log.as_deref_mut() else { return Ok(()) };
        let mut record = json!({ "trial": trial.id, "params": trial.params, "score": outcome.score });
        if let Some(error) = &outcome.failure {
            record["error"] = Value::from(error.as_str());
        }
        if let Some((index, budget)) = rung {
            record["rung"] = Value::from(index);
            record["budget"] = Value::from(budget);
        }
        log.log_json(step, record)
    }
}

/// Grid search over `space` (see [`Space::grid`] for the grid and [`Search`] for failures):
/// evaluates every grid point and returns them with the best. `objective` returns a score to
/// minimise.
pub fn grid_search<F>(space: &Space, points_per_continuous_axis: usize, objective: F) -> Result<SearchResult>
where
    F: FnMut(&Trial) -> Result<f64>,
{
    Search::new(space).grid(points_per_continuous_axis, objective)
}

/// Random search (Bergstra & Bengio 2012) over `space`: `n_trials` seeded random trials (see
/// [`Search::random`]). `objective` returns a score to **minimise**; NaN or infinite scores and
/// `Error::NonFinite` mark a trial as failed, never as the best (see [`Search`]).
///
/// ```
/// use candle_generative::hyperparam::{random_search, Param, Space};
///
/// let space = Space::new()
///     .param("lr", Param::LogUniform { lo: 1e-5, hi: 1e-1 })
///     .param("optimizer", Param::choice(["adam", "sgd"]));
/// // A stand-in for "train and return the validation loss": best at lr = 1e-3 with Adam.
/// let result = random_search(&space, 100, 42, |trial| {
///     let penalty = if trial.str("optimizer")? == "adam" { 0.0 } else { 1.0 };
///     Ok((trial.f64("lr")?.log10() + 3.0).powi(2) + penalty)
/// })?;
/// let (best, score) = result.best.expect("no trial failed");
/// assert_eq!(best.str("optimizer")?, "adam");
/// assert!(score < 0.1, "best lr {}", best.f64("lr")?);
/// assert_eq!(result.trials.len(), 100);
/// # Ok::<(), candle_generative::Error>(())
/// ```
pub fn random_search<F>(space: &Space, n_trials: usize, seed: u64, objective: F) -> Result<SearchResult>
where
    F: FnMut(&Trial) -> Result<f64>,
{
    Search::new(space).random(n_trials, seed, objective)
}

/// Successive halving (Jamieson & Talwalkar 2016; Li et al. 2018) over `space`: see
/// [`Search::successive_halving`]. `objective(trial, budget)` returns a score to minimise.
pub fn successive_halving<F>(
    space: &Space,
    n_trials: usize,
    min_budget: u64,
    eta: u64,
    seed: u64,
    objective: F,
) -> Result<SearchResult>
where
    F: FnMut(&Trial, u64) -> Result<f64>,
{
    Search::new(space).successive_halving(n_trials, min_budget, eta, seed, objective)
}

/// One evaluation: a finite score, or a failure with its reason.
struct Outcome {
    score: Option<f64>,
    failure: Option<String>,
}

impl Outcome {
    /// Non-finite scores and `Error::NonFinite` are failed trials; other errors end the search.
    fn of(result: Result<f64>) -> Result<Self> {
        match result {
            Ok(score) if score.is_finite() => Ok(Self { score: Some(score), failure: None }),
            Ok(score) => Ok(Self { score: None, failure: Some(format!("non-finite score {score}")) }),
            Err(e @ Error::NonFinite { .. }) => Ok(Self { score: None, failure: Some(e.to_string()) }),
            Err(e) => Err(e),
        }
    }
}

/// How many trials each rung of successive halving runs when none fails.
fn rung_sizes(n_trials: usize, eta: u64) -> Vec<usize> {
    let mut sizes = vec![n_trials];
    let mut n = n_trials;
    while n > 1 {
        n = ((n as u64 / eta) as usize).max(1);
        sizes.push(n);
    }
    sizes
}

/// The lowest finite score, ties to the earliest trial.
fn finish(trials: Vec<(Trial, Option<f64>)>, rungs: Vec<Rung>) -> SearchResult {
    let best = trials
        .iter()
        .filter_map(|(t, s)| Some((t, (*s)?)))
        .min_by(|a, b| a.1.total_cmp(&b.1).then(a.0.id.cmp(&b.0.id)))
        .map(|(t, s)| (t.clone(), s));
    SearchResult { trials, best, rungs }
}
