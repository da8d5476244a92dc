//! Metrics against closed forms and known point sets: the Fréchet distance of Gaussians,
//! streaming statistics, KID's unbiasedness, the Inception Score's bounds, precision/recall, and
//! FID-FMNIST on the real data (skipped when Fashion-MNIST is not installed).

mod common;

use candle_core::{DType, Device, Tensor};
use candle_generative::data::ImageDataset;
use candle_generative::metrics::{
    dataset_features, fid, frechet_distance, inception_score, kid, mmd2_biased, mmd2_unbiased, precision_recall,
    FeatureStats, FmnistClassifier, KidOptions,
};
use candle_generative::rng::Rng;

fn assert_rel(actual: f64, expected: f64, tol: f64, what: &str) {
    let err = (actual - expected).abs() / expected.abs().max(1e-12);
    assert!(err <= tol, "{what}: {actual} vs closed form {expected} (relative error {err:.2e} > {tol:.0e})");
}

/// A random orthogonal `n x n` matrix (Gram-Schmidt on Gaussian columns), row-major.
fn random_rotation(n: usize, rng: &mut Rng) -> Vec<f64> {
    let mut cols: Vec<Vec<f64>> = Vec::new();
    while cols.len() < n {
        let mut v: Vec<f64> = (0..n).map(|_| rng.normal_f64()).collect();
        for c in &cols {
            let dot: f64 = v.iter().zip(c).map(|(a, b)| a * b).sum();
            v.iter_mut().zip(c).for_each(|(a, b)| *a -= dot * b);
        }
        let norm = v.iter().map(|a| a * a).sum::<f64>().sqrt();
        cols.push(v.into_iter().map(|a| a / norm).collect());
    }
    let mut q = vec![0.0; n * n];
    for (j, c) in cols.iter().enumerate() {
        for i in 0..n {
            q[i * n + j] = c[i];
        }
    }
    q
}

/// `Q diag(w) Qᵀ`.
fn rotated_diagonal(q: &[f64], w: &[f64]) -> Vec<f64> {
    let n = w.len();
    let mut out = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..n {
            out[i * n + j] = (0..n).map(|k| q[i * n + k] * w[k] * q[j * n + k]).sum();
        }
    }
    out
}

fn diagonal(w: &[f64]) -> Vec<f64> {
    let n = w.len();
    let mut out = vec![0.0; n * n];
    for i in 0..n {
        out[i * n + i] = w[i];
    }
    out
}

fn mean_term(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

/// For covariances with the same eigenvectors: `|dm|² + Σ (sqrt(a_i) - sqrt(b_i))²`.
fn commuting_closed_form(mu1: &[f64], a: &[f64], mu2: &[f64], b: &[f64]) -> f64 {
    mean_term(mu1, mu2) + a.iter().zip(b).map(|(x, y)| (x.sqrt() - y.sqrt()).powi(2)).sum::<f64>()
}

#[test]
fn frechet_distance_one_dimensional() {
    // N(m1, s1²) vs N(m2, s2²): (m1 - m2)² + (s1 - s2)².
    let d = frechet_distance(&[1.5], &[4.0], &[-0.5], &[0.25]).unwrap();
    assert_rel(d, 2.0f64.powi(2) + (2.0f64 - 0.5).powi(2), 1e-12, "1-D");
    assert_eq!(frechet_distance(&[0.3], &[2.0], &[0.3], &[2.0]).unwrap(), 0.0);
}

#[test]
fn frechet_distance_diagonal_and_rotated_covariances() {
    let mut rng = Rng::new(11);
    for n in [2, 5, 32] {
        let mu1: Vec<f64> = (0..n).map(|_| rng.normal_f64()).collect();
        let mu2: Vec<f64> = (0..n).map(|_| rng.normal_f64()).collect();
        let a: Vec<f64> = (0..n).map(|_| 0.1 + 3.0 * rng.uniform_f64()).collect();
        let b: Vec<f64> = (0..n).map(|_| 0.1 + 3.0 * rng.uniform_f64()).collect();
        let expected = commuting_closed_form(&mu1, &a, &mu2, &b);
        let d = frechet_distance(&mu1, &diagonal(&a), &mu2, &diagonal(&b)).unwrap();
        assert_rel(d, expected, 1e-6, &format!("diagonal n={n}"));
        // The same spectra in a common random basis: a non-diagonal, commuting pair.
        let q = random_rotation(n, &mut rng);
        let d = frechet_distance(&mu1, &rotated_diagonal(&q, &a), &mu2, &rotated_diagonal(&q, &b)).unwrap();
        assert_rel(d, expected, 1e-6, &format!("rotated diagonal n={n}"));
    }
}

#[test]
fn frechet_distance_rank_deficient_covariances() {
    let mut rng = Rng::new(12);
    let n = 16;
    let q = random_rotation(n, &mut rng);
    // Rank 6 and rank 9, overlapping in part of the spectrum, one covariance entirely zero.
    let a: Vec<f64> = (0..n).map(|i| if i < 6 { 1.0 + i as f64 } else { 0.0 }).collect();
    let b: Vec<f64> = (0..n).map(|i| if (3..12).contains(&i) { 0.5 * i as f64 } else { 0.0 }).collect();
    let mu1 = vec![0.5; n];
    let mu2 = vec![-0.25; n];
    let d = frechet_distance(&mu1, &rotated_diagonal(&q, &a), &mu2, &rotated_diagonal(&q, &b)).unwrap();
    assert_rel(d, commuting_closed_form(&mu1, &a, &mu2, &b), 1e-6, "rank-deficient rotated");
    let zero = vec![0.0; n];
    let d = frechet_distance(&mu1, &rotated_diagonal(&q, &a), &mu2, &diagonal(&zero)).unwrap();
    assert_rel(d, commuting_closed_form(&mu1, &a, &mu2, &zero), 1e-6, "against a point mass");
}

#[test]
fn frechet_distance_non_commuting_two_by_two() {
    // For 2x2 PSD matrices the eigenvalues l1, l2 >= 0 of S1 S2 give
    // Tr sqrt(S1 S2) = sqrt(l1) + sqrt(l2) = sqrt(Tr(S1 S2) + 2 sqrt(det S1 det S2)).
    let cases: [([f64; 4], [f64; 4]); 3] = [
        ([2.0, 0.7, 0.7, 1.0], [1.0, -0.4, -0.4, 3.0]),
        ([1.0, 1.0, 1.0, 1.0], [2.0, 0.0, 0.0, 0.5]),   // S1 singular
        ([4.0, 2.0, 2.0, 1.0], [1.0, -1.0, -1.0, 1.0]), // both singular, different null spaces
    ];
    for (s1, s2) in cases {
        let tr_prod = s1[0] * s2[0] + s1[1] * s2[2] + s1[2] * s2[1] + s1[3] * s2[3];
        let det = |s: &[f64; 4]| s[0] * s[3] - s[1] * s[2];
        let cross = (tr_prod + 2.0 * (det(&s1) * det(&s2)).max(0.0).sqrt()).sqrt();
        let (mu1, mu2) = ([0.2, -1.0], [1.0, 0.5]);
        let expected = mean_term(&mu1, &mu2) + s1[0] + s1[3] + s2[0] + s2[3] - 2.0 * cross;
        let d = frechet_distance(&mu1, &s1, &mu2, &s2).unwrap();
        assert_rel(d, expected, 1e-6, &format!("2x2 {s1:?} {s2:?}"));
    }
}

#[test]
fn frechet_distance_of_a_scaled_gaussian_in_128_dimensions() {
    // N(0, S) vs N(0, c² S) for a general, rank-deficient S: d² = (1 - c)² Tr S.
    let mut rng = Rng::new(13);
    let (n, rank) = (128, 100);
    let g: Vec<f64> = (0..n * rank).map(|_| rng.normal_f64()).collect();
    let mut s = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..n {
            s[i * n + j] = (0..rank).map(|k| g[i * rank + k] * g[j * rank + k]).sum::<f64>() / rank as f64;
        }
    }
    let c: f64 = 1.7;
    let s2: Vec<f64> = s.iter().map(|v| v * c * c).collect();
    let trace: f64 = (0..n).map(|i| s[i * n + i]).sum();
    let zero = vec![0.0; n];
    let d = frechet_distance(&zero, &s, &zero, &s2).unwrap();
    assert_rel(d, (1.0 - c).powi(2) * trace, 1e-6, "scaled 128-d");
}

#[test]
fn frechet_distance_refuses_bad_shapes() {
    assert!(frechet_distance(&[0.0, 0.0], &[1.0, 0.0, 0.0, 1.0], &[0.0], &[1.0]).is_err());
    assert!(frechet_distance(&[0.0], &[1.0, 0.0], &[0.0], &[1.0]).is_err());
    assert!(frechet_distance(&[], &[], &[], &[]).is_err());
    assert!(frechet_distance(&[f64::NAN], &[1.0], &[0.0], &[1.0]).is_err());
}

fn random_features(n: usize, d: usize, offset: f64, rng: &mut Rng) -> (Vec<f64>, Tensor) {
    // Correlated features far from the origin: a cancellation-prone case for naive formulas.
    let v: Vec<f64> =
        (0..n * d).map(|i| offset + (i % d) as f64 + rng.normal_f64() * (1.0 + (i % d) as f64 * 0.1)).collect();
    let t = Tensor::from_vec(v.clone(), (n, d), &Device::Cpu).unwrap();
    (v, t)
}

/// Two-pass mean and unbiased covariance, computed directly.
fn batch_stats(v: &[f64], n: usize, d: usize) -> (Vec<f64>, Vec<f64>) {
    let mean: Vec<f64> = (0..d).map(|j| (0..n).map(|i| v[i * d + j]).sum::<f64>() / n as f64).collect();
    let mut cov = vec![0.0; d * d];
    for a in 0..d {
        for b in 0..d {
            cov[a * d + b] =
                (0..n).map(|i| (v[i * d + a] - mean[a]) * (v[i * d + b] - mean[b])).sum::<f64>() / (n - 1) as f64;
        }
    }
    (mean, cov)
}

#[test]
fn streaming_stats_equal_batch_stats_and_merge_equals_one_pass() {
    let mut rng = Rng::new(21);
    let (n, d) = (1000, 7);
    let (v, t) = random_features(n, d, 1e4, &mut rng);
    let (mean, cov) = batch_stats(&v, n, d);

    let mut streamed = FeatureStats::new(d).unwrap();
    let mut start = 0;
    for size in [1, 2, 3, 100, 0, 394, 500] {
        streamed.update(&t.narrow(0, start, size).unwrap()).unwrap();
        start += size;
    }
    assert_eq!(start, n);
    assert_eq!(streamed.count(), n as u64);
    for (a, b) in streamed.mean().iter().zip(&mean) {
        assert_rel(*a, *b, 1e-12, "mean");
    }
    for (a, b) in streamed.covariance().unwrap().iter().zip(&cov) {
        assert!((a - b).abs() <= 1e-9 * b.abs().max(1.0), "covariance {a} vs {b}");
    }

    let mut first = FeatureStats::from_features(&t.narrow(0, 0, 300).unwrap()).unwrap();
    let second = FeatureStats::from_features(&t.narrow(0, 300, 700).unwrap()).unwrap();
    first.merge(&second).unwrap();
    let whole = FeatureStats::from_features(&t).unwrap();
    assert_eq!(first.count(), whole.count());
    for (a, b) in first.covariance().unwrap().iter().zip(&whole.covariance().unwrap()) {
        assert!((a - b).abs() <= 1e-9 * b.abs().max(1.0), "merged covariance {a} vs {b}");
    }
    for (a, b) in first.mean().iter().zip(whole.mean()) {
        assert_rel(*a, *b, 1e-12, "merged mean");
    }
}

#[test]
fn stats_save_and_load_round_trip_and_fid_uses_them() {
    let mut rng = Rng::new(22);
    let (_, t) = random_features(200, 5, 0.0, &mut rng);
    let stats = FeatureStats::from_features(&t).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ref.safetensors");
    stats.save(&path).unwrap();
    let loaded = FeatureStats::load(&path).unwrap();
    assert_eq!(loaded, stats);
    assert_eq!(fid(&stats, &loaded).unwrap(), 0.0);
    assert!(FeatureStats::load(dir.path().join("missing.safetensors")).is_err());
}

#[test]
fn stats_refuse_bad_shapes() {
    let mut s = FeatureStats::new(3).unwrap();
    assert!(FeatureStats::new(0).is_err());
    assert!(s.update(&Tensor::zeros((4, 2), DType::F32, &Device::Cpu).unwrap()).is_err());
    assert!(s.update(&Tensor::zeros(4, DType::F32, &Device::Cpu).unwrap()).is_err());
    assert!(s.covariance().is_err(), "no data yet");
    assert!(s.merge(&FeatureStats::new(2).unwrap()).is_err());
    let nan = Tensor::new(&[[f32::NAN, 0.0, 0.0]], &Device::Cpu).unwrap();
    assert!(s.update(&nan).is_err());
    assert!(fid(&FeatureStats::new(2).unwrap(), &FeatureStats::new(3).unwrap()).is_err());
}

fn gaussian(n: usize, d: usize, shift: f64, rng: &mut Rng) -> Tensor {
    let v: Vec<f64> = (0..n * d).map(|_| rng.normal_f64() + shift).collect();
    Tensor::from_vec(v, (n, d), &Device::Cpu).unwrap()
}

#[test]
fn kid_of_a_set_with_itself_is_near_zero_and_grows_with_a_shift() {
    let mut rng = Rng::new(31);
    let (n, d) = (500, 16);
    let x = gaussian(n, d, 0.0, &mut rng);
    let y = gaussian(n, d, 0.5, &mut rng);
    let opts = KidOptions { num_subsets: 50, subset_size: 200 };
    let same = kid(&x, &x, &opts, &mut Rng::new(1)).unwrap();
    let shifted = kid(&x, &y, &opts, &mut Rng::new(1)).unwrap();
    assert!(shifted.mean > 0.5, "a 0.5 shift in 16 dims: KID {shifted:?}");
    // Two subsets of the same N points share points, so the cross term sees some k(x_i, x_i):
    // the expectation is exactly -2 (K_diag - K_off) / N, with K_diag the mean kernel value on
    // the diagonal and K_off off it; small against the shifted set's KID, and what KID must hit.
    let v = x.to_vec2::<f64>().unwrap();
    let k = |a: &[f64], b: &[f64]| (a.iter().zip(b).map(|(p, q)| p * q).sum::<f64>() / d as f64 + 1.0).powi(3);
    let k_diag = v.iter().map(|a| k(a, a)).sum::<f64>() / n as f64;
    let k_all = v.iter().map(|a| v.iter().map(|b| k(a, b)).sum::<f64>()).sum::<f64>();
    let k_off = (k_all - k_diag * n as f64) / (n * (n - 1)) as f64;
    let expected = -2.0 * (k_diag - k_off) / n as f64;
    let se = same.std / (opts.num_subsets as f64).sqrt();
    assert!((same.mean - expected).abs() < 4.0 * se, "KID(x, x) = {same:?}, expected {expected:.5} +- {se:.5}");
    assert!(same.mean.abs() < 0.05 * shifted.mean, "KID(x, x) = {same:?} vs shifted {shifted:?}");
    // Seeded: the same subsets, the same numbers.
    assert_eq!(kid(&x, &y, &opts, &mut Rng::new(1)).unwrap(), shifted);
}

#[test]
fn kid_estimator_is_unbiased_where_the_biased_one_is_not() {
    // Two independent samples of 20 points from the same 4-d Gaussian, 2 000 times: the
    // population MMD² is 0. The unbiased estimator's mean must be within 4 standard errors of 0;
    // the biased one sits at about 2 (E k(x,x) - E k(x,x')) / 20 > 0, many standard errors away.
    let mut rng = Rng::new(32);
    let (draws, n, d) = (2000, 20, 4);
    let (mut unbiased, mut biased) = (Vec::new(), Vec::new());
    for _ in 0..draws {
        let x = gaussian(n, d, 0.0, &mut rng);
        let y = gaussian(n, d, 0.0, &mut rng);
        unbiased.push(mmd2_unbiased(&x, &y).unwrap());
        biased.push(mmd2_biased(&x, &y).unwrap());
    }
    let mean_se = |v: &[f64]| {
        let m = v.iter().sum::<f64>() / v.len() as f64;
        let var = v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (v.len() - 1) as f64;
        (m, (var / v.len() as f64).sqrt())
    };
    let (mu, seu) = mean_se(&unbiased);
    let (mb, seb) = mean_se(&biased);
    assert!(mu.abs() < 4.0 * seu, "unbiased MMD² mean {mu:.5} +- {seu:.5} is not 0");
    assert!(mb > 20.0 * seb, "biased MMD² mean {mb:.5} +- {seb:.5} should be clearly positive");
}

#[test]
fn kid_refuses_bad_shapes_and_options() {
    let mut rng = Rng::new(33);
    let x = gaussian(10, 4, 0.0, &mut rng);
    let y3 = gaussian(10, 3, 0.0, &mut rng);
    let one = gaussian(1, 4, 0.0, &mut rng);
    assert!(kid(&x, &y3, &KidOptions::default(), &mut rng).is_err());
    assert!(kid(&x, &one, &KidOptions::default(), &mut rng).is_err());
    assert!(kid(&x, &x, &KidOptions { num_subsets: 0, subset_size: 5 }, &mut rng).is_err());
    assert!(mmd2_unbiased(&x.flatten_all().unwrap(), &x).is_err());
}

#[test]
fn inception_score_bounds() {
    let k = 10;
    let uniform = Tensor::zeros((50, k), DType::F32, &Device::Cpu).unwrap();
    let (is, std) = inception_score(&uniform, 5).unwrap();
    assert_rel(is, 1.0, 1e-12, "uniform logits");
    assert_eq!(std, 0.0);
    // Each image certain of its class, the classes used equally in each split: IS = K.
    let mut v = vec![0.0f32; 100 * k];
    for i in 0..100 {
        v[i * k + i % k] = 200.0;
    }
    let confident = Tensor::from_vec(v, (100, k), &Device::Cpu).unwrap();
    let (is, _) = inception_score(&confident, 10).unwrap();
    assert_rel(is, k as f64, 1e-9, "confident distinct classes");
    // All images certain of the same class: no diversity, IS = 1.
    let same = Tensor::from_vec(
        (0..100 * k).map(|i| if i % k == 3 { 200.0f32 } else { 0.0 }).collect(),
        (100, k),
        &Device::Cpu,
    )
    .unwrap();
    assert_rel(inception_score(&same, 1).unwrap().0, 1.0, 1e-9, "one confident class");
    assert!(inception_score(&uniform, 0).is_err());
    assert!(inception_score(&uniform, 51).is_err());
    assert!(inception_score(&Tensor::zeros((5, 1), DType::F32, &Device::Cpu).unwrap(), 1).is_err());
}

fn points(v: &[f64]) -> Tensor {
    Tensor::from_vec(v.to_vec(), (v.len(), 1), &Device::Cpu).unwrap()
}

#[test]
fn precision_recall_on_known_point_sets() {
    // Real points 0..9 on a line; with k = 1 every real ball has radius 1, covering [-1, 10].
    let real = points(&(0..10).map(|i| i as f64).collect::<Vec<_>>());
    // Fake: 0.5 is inside, 10.5 (1.5 from 9), 20 and 30 are not: precision 1/4. The fake k=1
    // radii are 10 (0.5), 9.5 (20), 9.5 (10.5), 10 (30): the ball around 0.5 holds all real points.
    let fake = points(&[0.5, 20.0, 10.5, 30.0]);
    let pr = precision_recall(&real, &fake, 1).unwrap();
    assert_eq!(pr.precision, 0.25);
    assert_eq!(pr.recall, 1.0);
    // A fake set clustered around 2 (radii 0.1 at k = 1): every fake point is real-like, but only
    // the real point 2 is covered.
    let fake = points(&[1.9, 2.0, 2.1]);
    let pr = precision_recall(&real, &fake, 1).unwrap();
    assert_eq!((pr.precision, pr.recall), (1.0, 0.1));
    // Identical sets: 1 and 1.
    let pr = precision_recall(&real, &real, 3).unwrap();
    assert_eq!((pr.precision, pr.recall), (1.0, 1.0));
    // Refusals: k = 0, too few points for k, mismatched dimensions.
    assert!(precision_recall(&real, &fake, 0).is_err());
    assert!(precision_recall(&real, &fake, 3).is_err());
    assert!(precision_recall(&real, &Tensor::zeros((5, 2), DType::F64, &Device::Cpu).unwrap(), 1).is_err());
}

#[test]
fn classifier_refuses_bad_shapes() {
    let varmap = candle_nn::VarMap::new();
    let vb = candle_nn::VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let model = FmnistClassifier::new(Default::default(), vb).unwrap();
    assert!(model.forward_both(&Tensor::zeros((2, 3, 28, 28), DType::F32, &Device::Cpu).unwrap()).is_err());
    assert!(model.forward_both(&Tensor::zeros((2, 1, 32, 32), DType::F32, &Device::Cpu).unwrap()).is_err());
    let (f, l) = model.forward_both(&Tensor::zeros((2, 1, 28, 28), DType::F32, &Device::Cpu).unwrap()).unwrap();
    assert_eq!((f.dims(), l.dims()), (&[2, 128][..], &[2, 10][..]));
    // Saved and reloaded: the same fingerprint, and a verified load refuses any other.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("classifier.safetensors");
    let mut ck = candle_generative::io::Checkpoint::new(0);
    ck.add_varmap("classifier", &varmap).unwrap();
    ck.set_config("classifier", model.config()).unwrap();
    ck.save(&path).unwrap();
    let fp = model.fingerprint().unwrap();
    let reloaded = FmnistClassifier::load_verified(&path, &fp, &Device::Cpu).unwrap();
    assert_eq!(reloaded.fingerprint().unwrap(), fp);
    assert!(FmnistClassifier::load_verified(&path, "0000000000000000", &Device::Cpu).is_err());
    let rgb = ImageDataset::new("rgb", vec![0; 3 * 28 * 28], vec![0], (3, 28, 28), 1).unwrap();
    assert!(dataset_features(&model, &rgb, 8, &Device::Cpu, |_, _| {}).is_err());
}

#[test]
fn fid_fmnist_train_vs_test_is_small_and_test_vs_noise_is_large() {
    let Some(split) = common::fashion_mnist_or_skip("fid_fmnist_train_vs_test_is_small_and_test_vs_noise_is_large")
    else {
        return;
    };
    let device = Device::Cpu;
    let model = FmnistClassifier::pretrained(&device).unwrap();
    let n = 5000;
    let train = split.train.take(n);
    let test = split.test.take(n);
    let mut rng = Rng::new(5);
    let noise_pixels: Vec<u8> = (0..n * 28 * 28).map(|_| (rng.uniform_f64() * 256.0) as u8).collect();
    let noise = ImageDataset::new("uniform noise", noise_pixels, vec![0; n], (1, 28, 28), 1).unwrap();
    let feats = |d: &ImageDataset| dataset_features(&model, d, 500, &device, |_, _| {}).unwrap().0;
    let (f_train, f_test, f_noise) = (feats(&train), feats(&test), feats(&noise));
    let stats = |f: &Tensor| FeatureStats::from_features(f).unwrap();
    let floor = fid(&stats(&f_train), &stats(&f_test)).unwrap();
    let noisy = fid(&stats(&f_noise), &stats(&f_test)).unwrap();
    let opts = KidOptions { num_subsets: 20, subset_size: 1000 };
    let kid_floor = kid(&f_train, &f_test, &opts, &mut Rng::new(0)).unwrap();
    let kid_noise = kid(&f_noise, &f_test, &opts, &mut Rng::new(0)).unwrap();
    eprintln!(
        "FID-FMNIST ({n} vs {n}): train/test {floor:.3}, noise/test {noisy:.1}; KID train/test {:.5} +- {:.5}, \
         noise/test {:.3}",
        kid_floor.mean, kid_floor.std, kid_noise.mean
    );
    // Measured with the shipped weights: 0.70 and 241.8.
    assert!(floor < 2.0, "train vs test FID-FMNIST {floor}");
    assert!(noisy > 100.0 * floor, "noise vs test FID-FMNIST {noisy} (floor {floor})");
    assert!(kid_noise.mean > 100.0 * kid_floor.mean.abs());
}
