use super::*;
use crate::io::{read_metrics_log, MetricsLog};
use crate::rng::Rng;
use crate::{Error, Result};

fn lr_wd_space() -> Space {
    Space::new().param("lr", Param::LogUniform { lo: 1e-5, hi: 1e-1 }).param("wd", Param::Uniform { lo: 0.0, hi: 0.5 })
}

/// Minimum at lr = 1e-3, wd = 0.1.
fn lr_wd_objective(t: &Trial) -> Result<f64> {
    Ok((t.f64("lr")?.log10() + 3.0).powi(2) + (t.f64("wd")? - 0.1).powi(2))
}

#[test]
fn random_search_finds_known_optimum() -> Result<()> {
    // Tolerance: lr within a factor of 1.5 of 1e-3 (|log10 lr + 3| < 0.176 decades) and wd within
    // 0.05 of 0.1. The best of 200 uniform draws over the 4 x 0.5 box of (log10 lr, wd) lies
    // within distance 0.05 of the optimum with probability 1 - (1 - pi 0.05^2 / 2)^200 = 0.54, and
    // further out it can still be inside both tolerances: measured, the best trial meets them for
    // 72 of the seeds 0..100 (796 of 0..1000). Seed 0 does; the seed sweep below guards against a
    // lucky seed, with a threshold well under the measured rate.
    let result = random_search(&lr_wd_space(), 200, 0, lr_wd_objective)?;
    assert_eq!(result.trials.len(), 200);
    assert!(result.rungs.is_empty());
    let (best, score) = result.best.expect("no trial fails");
    let (lr, wd) = (best.f64("lr")?, best.f64("wd")?);
    assert!(lr > 1e-3 / 1.5 && lr < 1e-3 * 1.5, "lr {lr}");
    assert!((wd - 0.1).abs() < 0.05, "wd {wd}");
    let min = result.trials.iter().filter_map(|(_, s)| *s).fold(f64::INFINITY, f64::min);
    assert_eq!(score, min);

    let mut hits = 0;
    for seed in 0..100 {
        let (best, _) = random_search(&lr_wd_space(), 200, seed, lr_wd_objective)?.best.expect("no trial fails");
        let (lr, wd) = (best.f64("lr")?, best.f64("wd")?);
        hits += usize::from(lr > 1e-3 / 1.5 && lr < 1e-3 * 1.5 && (wd - 0.1).abs() < 0.05);
    }
    assert!(hits >= 60, "only {hits} of 100 seeds found the optimum");
    Ok(())
}

#[test]
fn same_seed_same_trials_different_seed_different() -> Result<()> {
    let space =
        lr_wd_space().param("opt", Param::choice(["adam", "sgd"])).param("depth", Param::IntRange { lo: 1, hi: 8 });
    let run = |seed| -> Result<Vec<Trial>> {
        Ok(random_search(&space, 20, seed, |_| Ok(0.0))?.trials.into_iter().map(|(t, _)| t).collect())
    };
    assert_eq!(run(7)?, run(7)?);
    let (a, b) = (run(7)?, run(8)?);
    assert!(a.iter().zip(&b).all(|(x, y)| x.params != y.params));

    let halving = |seed| -> Result<SearchResult> { successive_halving(&space, 9, 1, 3, seed, |t, _| t.f64("wd")) };
    assert_eq!(halving(3)?, halving(3)?);
    assert_ne!(halving(3)?.trials, halving(4)?.trials);
    Ok(())
}

#[test]
fn grid_search_covers_corners_and_choices() -> Result<()> {
    let space = Space::new()
        .param("x", Param::Uniform { lo: -1.0, hi: 1.0 })
        .param("lr", Param::LogUniform { lo: 1e-3, hi: 1e-1 })
        .param("act", Param::choice(["relu", "gelu", "silu"]));
    let mut calls = 0;
    let result = grid_search(&space, 4, |t| {
        calls += 1;
        Ok((t.f64("x")? - 0.2).abs() + t.f64("lr")? + if t.str("act")? == "gelu" { 0.0 } else { 1.0 })
    })?;
    assert_eq!(calls, 4 * 4 * 3);
    assert_eq!(result.trials.len(), 48);
    let has = |x: f64, lr: f64, act: &str| {
        result
            .trials
            .iter()
            .any(|(t, _)| t.f64("x").ok() == Some(x) && t.f64("lr").ok() == Some(lr) && t.str("act").ok() == Some(act))
    };
    for x in [-1.0, 1.0] {
        for lr in [1e-3, 1e-1] {
            for act in ["relu", "gelu", "silu"] {
                assert!(has(x, lr, act), "corner ({x}, {lr}, {act}) missing");
            }
        }
    }
    // The x axis is {-1, -1/3, 1/3, 1}; the best has x = 1/3, lr = 1e-3 and gelu.
    let (best, _) = result.best.expect("no trial fails");
    assert!((best.f64("x")? - 1.0 / 3.0).abs() < 1e-12);
    assert_eq!((best.f64("lr")?, best.str("act")?), (1e-3, "gelu"));
    assert!(grid_search(&space, 1, |_| Ok(0.0)).is_err());
    Ok(())
}

/// True quality `|k - 3| / 10` for the integer `k` in `0..=10`, so the true best (k = 3) is 0.1
/// ahead of the runners-up, plus Gaussian noise with standard deviation `0.1 / budget`, seeded by
/// the trial and the budget so a rerun sees the same noise: one standard deviation of the gap at
/// budget 1, three at budget 3, nine at budget 9.
fn noisy_objective(t: &Trial, budget: u64) -> Result<f64> {
    let noise = Rng::with_stream(t.id as u64, budget).normal_f64();
    Ok((t.i64("k")? - 3).abs() as f64 / 10.0 + 0.1 / budget as f64 * noise)
}

#[test]
fn successive_halving_keeps_the_true_best() -> Result<()> {
    let space = Space::new().param("k", Param::IntRange { lo: 0, hi: 10 });
    let mut noisy_rung0_misses = 0;
    for seed in 0..5 {
        let mut calls = Vec::new();
        let result = successive_halving(&space, 27, 1, 3, seed, |t, budget| {
            calls.push(budget);
            noisy_objective(t, budget)
        })?;
        let sizes: Vec<usize> = result.rungs.iter().map(|r| r.scores.len()).collect();
        let budgets: Vec<u64> = result.rungs.iter().map(|r| r.budget).collect();
        assert_eq!((sizes, budgets), (vec![27, 9, 3, 1], vec![1, 3, 9, 27]));
        assert_eq!(calls.len(), 27 + 9 + 3 + 1);
        assert!(calls.windows(2).all(|w| w[0] <= w[1]), "rungs run in order of budget");

        let k = |id: usize| result.trials[id].0.i64("k").unwrap_or(-1);
        assert!((0..27).any(|id| k(id) == 3), "seed {seed} drew no true best; pick another");
        let (best, _) = result.best.as_ref().expect("no trial fails");
        assert_eq!(best.i64("k")?, 3, "seed {seed}");
        // The noise matters: at budget 1 the lowest score is often not a true best.
        let rung0_best = result.rungs[0].scores.iter().min_by(|a, b| a.1.unwrap_or(9.0).total_cmp(&b.1.unwrap_or(9.0)));
        noisy_rung0_misses += usize::from(rung0_best.is_some_and(|&(id, _)| k(id) != 3));
    }
    assert!(noisy_rung0_misses > 0, "the test's noise is too small to test anything");

    // Uneven sizes: 10 -> 3 -> 1 with eta 3; a single trial runs once.
    let r = successive_halving(&space, 10, 2, 3, 0, noisy_objective)?;
    assert_eq!(r.rungs.iter().map(|r| (r.scores.len(), r.budget)).collect::<Vec<_>>(), [(10, 2), (3, 6), (1, 18)]);
    assert_eq!(successive_halving(&space, 1, 5, 2, 0, noisy_objective)?.rungs.len(), 1);
    Ok(())
}

#[test]
fn failed_trials_never_become_best() -> Result<()> {
    let space = Space::new().param("x", Param::Uniform { lo: 0.0, hi: 1.0 });
    // The lowest raw scores are the ones that fail.
    let objective = |t: &Trial| -> Result<f64> {
        let x = t.f64("x")?;
        match x {
            x if x < 0.2 => Ok(f64::NAN),
            x if x < 0.3 => Ok(f64::NEG_INFINITY),
            x if x < 0.4 => Err(Error::non_finite("generator loss", Some(3), f64::NAN)),
            x => Ok(x),
        }
    };
    let result = random_search(&space, 50, 1, objective)?;
    let failed = result.trials.iter().filter(|(_, s)| s.is_none()).count();
    assert!(failed > 5, "{failed}");
    assert!(result.trials.iter().all(|(t, s)| s.is_none() == (t.f64("x").unwrap_or(0.0) < 0.4)));
    let (best, score) = result.best.expect("some trials succeed");
    assert!(score >= 0.4 && best.f64("x")? == score);

    assert!(random_search(&space, 5, 1, |_| Ok(f64::NAN))?.best.is_none());
    let other = random_search(&space, 5, 1, |_| Err(Error::config("model", "bad")));
    assert!(matches!(other, Err(Error::Config { .. })));

    // Successive halving: the finalist diverges at the largest budget, so the best is the best
    // of the previous rung among the others, and failures are never promoted.
    let result = successive_halving(&space, 9, 1, 3, 2, |t, budget| {
        let x = t.f64("x")?;
        Ok(if budget == 9 || (budget == 1 && x < 0.1) { f64::NAN } else { x })
    })?;
    let finalist = result.rungs[2].scores[0].0;
    let (best, score) = result.best.expect("rung 1 has successes");
    assert_ne!(best.id, finalist);
    assert!(result.rungs[1].scores.iter().any(|&(id, s)| id == best.id && s == Some(score)));
    assert!(result.rungs[1].scores.iter().all(|&(id, _)| result.rungs[0].scores[id].1.is_some()));
    assert!(successive_halving(&space, 4, 1, 2, 0, |_, _| Ok(f64::NAN))?.best.is_none());
    Ok(())
}

#[test]
fn search_log_has_one_record_per_evaluation() -> Result<()> {
    let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", e))?;
    let path = dir.path().join("search.jsonl");
    let space = lr_wd_space();
    let mut log = MetricsLog::create(&path)?;
    let result = Search::new(&space).with_log(&mut log).random(12, 5, |t| {
        if t.id == 4 {
            Err(Error::non_finite("loss", Some(7), f64::NAN))
        } else {
            lr_wd_objective(t)
        }
    })?;
    drop(log);
    let records = read_metrics_log(&path)?;
    assert_eq!(records.len(), 12);
    for (record, (trial, score)) in records.iter().zip(&result.trials) {
        assert_eq!(record["trial"], trial.id);
        assert_eq!(record["step"], trial.id);
        // serde_json's default float parser may be 1 ulp off (exact only with its
        // `float_roundtrip` feature), hence the relative tolerance.
        let close = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) => (a - b).abs() <= 1e-15 * b.abs(),
            (a, b) => a.is_none() && b.is_none(),
        };
        assert!(close(record["params"]["lr"].as_f64(), trial.params["lr"].as_f64()));
        assert!(close(record["params"]["wd"].as_f64(), trial.params["wd"].as_f64()));
        assert!(close(record["score"].as_f64(), *score), "{} vs {score:?}", record["score"]);
    }
    assert!(records[4]["score"].is_null() && records[4]["error"].as_str().is_some_and(|e| e.contains("step 7")));

    let mut log = MetricsLog::append(&path)?;
    Search::new(&space).with_log(&mut log).successive_halving(9, 1, 3, 0, |t, b| Ok(t.f64("wd")? / b as f64))?;
    drop(log);
    let records = read_metrics_log(&path)?;
    assert_eq!(records.len(), 12 + 9 + 3 + 1);
    let budgets: Vec<u64> = records[12..].iter().filter_map(|r| r["budget"].as_u64()).collect();
    assert_eq!(budgets, [vec![1; 9], vec![3; 3], vec![9]].concat());
    assert_eq!(records[24]["rung"], 2);
    Ok(())
}

#[test]
fn bad_arguments_are_config_errors() {
    let space = lr_wd_space();
    let field = |r: Result<SearchResult>| match r {
        Err(Error::Config { field, .. }) => field,
        other => panic!("expected a config error, got {other:?}"),
    };
    assert_eq!(field(random_search(&space, 0, 0, |_| Ok(0.0))), "n_trials");
    assert_eq!(field(successive_halving(&space, 0, 1, 3, 0, |_, _| Ok(0.0))), "n_trials");
    assert_eq!(field(successive_halving(&space, 9, 0, 3, 0, |_, _| Ok(0.0))), "min_budget");
    assert_eq!(field(successive_halving(&space, 9, 1, 1, 0, |_, _| Ok(0.0))), "eta");
    assert_eq!(field(successive_halving(&space, 1 << 20, u64::MAX / 4, 2, 0, |_, _| Ok(0.0))), "min_budget");
    let bad = lr_wd_space().param("lr", Param::Uniform { lo: 0.0, hi: 1.0 });
    let mut called = false;
    assert_eq!(
        field(random_search(&bad, 3, 0, |_| {
            called = true;
            Ok(0.0)
        })),
        "Space.lr"
    );
    assert!(!called, "the space is checked before any trial runs");
}
