//! Seeded randomness for every device.
//!
//! candle's CPU random number generator cannot be seeded (`Device::Cpu.set_seed` returns an
//! error and `randn`/`rand` use the thread RNG), so every stochastic function of this crate
//! draws from [`Rng`] instead: a ChaCha8 stream cipher generator (Bernstein 2008, via
//! `rand_chacha`) whose output for a given seed is fixed by its specification, on every platform.
//! Values are drawn on the host and moved to the target device with `Tensor::from_vec`, so the
//! same seed gives the same numbers on CPU, CUDA and Metal.
//!
//! The generator's exact position can be saved with [`Rng::state`] and restored with
//! [`Rng::from_state`], which is what makes resumed training bit-identical.
//!
//! ```
//! use candle_core::{DType, Device};
//! use candle_generative::rng::Rng;
//!
//! let mut a = Rng::new(42);
//! let mut b = Rng::new(42);
//! let x = a.randn((2, 3), DType::F32, &Device::Cpu)?;
//! let y = b.randn((2, 3), DType::F32, &Device::Cpu)?;
//! assert_eq!(x.to_vec2::<f32>()?, y.to_vec2::<f32>()?);
//! # Ok::<(), candle_generative::Error>(())
//! ```

use candle_core::{DType, Device, Shape, Tensor};
use rand::{Rng as _, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// A seeded, portable random number generator that makes tensors on any device.
#[derive(Debug, Clone)]
pub struct Rng {
    inner: ChaCha8Rng,
}

/// The exact position of an [`Rng`], for checkpoints (serde-serialisable).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RngState {
    /// The 256-bit ChaCha key.
    pub key: [u8; 32],
    /// The ChaCha stream number.
    pub stream: u64,
    /// High 64 bits of the 128-bit word position in the stream.
    pub word_pos_hi: u64,
    /// Low 64 bits of the word position.
    pub word_pos_lo: u64,
}

impl Rng {
    /// A generator seeded with `seed`. Two generators with the same seed give the same stream.
    pub fn new(seed: u64) -> Self {
        Self { inner: ChaCha8Rng::seed_from_u64(seed) }
    }

    /// Generator number `stream` of the family seeded with `seed`: independent of the other
    /// streams of the same seed (ChaCha's stream counter), e.g. one stream per epoch.
    pub fn with_stream(seed: u64, stream: u64) -> Self {
        let mut inner = ChaCha8Rng::seed_from_u64(seed);
        inner.set_stream(stream);
        Self { inner }
    }

    /// The generator's exact position, to store in a checkpoint.
    pub fn state(&self) -> RngState {
        let pos = self.inner.get_word_pos();
        RngState {
            key: self.inner.get_seed(),
            stream: self.inner.get_stream(),
            word_pos_hi: (pos >> 64) as u64,
            word_pos_lo: pos as u64,
        }
    }

    /// A generator at exactly the position `state` was taken at.
    pub fn from_state(state: &RngState) -> Self {
        let mut inner = ChaCha8Rng::from_seed(state.key);
        inner.set_stream(state.stream);
        inner.set_word_pos(((state.word_pos_hi as u128) << 64) | state.word_pos_lo as u128);
        Self { inner }
    }

    /// A new, independent generator seeded from this one (advances this one by one draw).
    ///
    /// Use it to give the data pipeline and the model their own streams, so that changing how
    /// much noise one of them draws does not change the other's numbers.
    pub fn fork(&mut self) -> Rng {
        Rng::new(self.inner.next_u64())
    }

    /// A uniform `f64` in `[0, 1)`.
    pub fn uniform_f64(&mut self) -> f64 {
        self.inner.random::<f64>()
    }

    /// A standard normal `f64` (mean 0, variance 1).
    pub fn normal_f64(&mut self) -> f64 {
        StandardNormal.sample(&mut self.inner)
    }

    /// A uniform integer in `[0, n)`; `n` must be positive.
    pub fn below(&mut self, n: usize) -> Result<usize> {
        if n == 0 {
            return Err(Error::config("n", "Rng::below needs n > 0"));
        }
        Ok(self.inner.random_range(0..n))
    }

    /// `true` with probability `p` (clamped to `[0, 1]`).
    pub fn coin(&mut self, p: f64) -> bool {
        self.uniform_f64() < p
    }

    /// A uniformly random permutation of `0..n` (Fisher-Yates).
    pub fn permutation(&mut self, n: usize) -> Vec<usize> {
        let mut v: Vec<usize> = (0..n).collect();
        self.shuffle(&mut v);
        v
    }

    /// Shuffles a slice in place (Fisher-Yates, uniform over permutations).
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.inner.random_range(0..=i);
            items.swap(i, j);
        }
    }

    /// `n` standard normal values as `f32`.
    pub fn normal_vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| StandardNormal.sample(&mut self.inner)).collect()
    }

    /// A tensor of standard normal values (mean 0, variance 1) of `shape`, `dtype` and `device`.
    ///
    /// Values are drawn in `f32` (in `f64` for `DType::F64`) and converted to `dtype`.
    pub fn randn<S: Into<Shape>>(&mut self, shape: S, dtype: DType, device: &Device) -> Result<Tensor> {
        let shape = shape.into();
        let n = shape.elem_count();
        let t = if dtype == DType::F64 {
            let v: Vec<f64> = (0..n).map(|_| StandardNormal.sample(&mut self.inner)).collect();
            Tensor::from_vec(v, shape, device)?
        } else {
            check_float("Rng::randn", dtype)?;
            Tensor::from_vec(self.normal_vec(n), shape, device)?.to_dtype(dtype)?
        };
        Ok(t)
    }

    /// Standard normal noise with the shape, dtype and device of `like`.
    pub fn randn_like(&mut self, like: &Tensor) -> Result<Tensor> {
        self.randn(like.shape().clone(), like.dtype(), like.device())
    }

    /// A tensor of values uniform in `[lo, hi)`.
    pub fn uniform<S: Into<Shape>>(
        &mut self,
        shape: S,
        lo: f64,
        hi: f64,
        dtype: DType,
        device: &Device,
    ) -> Result<Tensor> {
        if !(lo.is_finite() && hi.is_finite() && lo < hi) {
            return Err(Error::config("lo, hi", format!("Rng::uniform needs finite lo < hi, got [{lo}, {hi})")));
        }
        let shape = shape.into();
        let n = shape.elem_count();
        let t = if dtype == DType::F64 {
            let v: Vec<f64> = (0..n).map(|_| lo + (hi - lo) * self.uniform_f64()).collect();
            Tensor::from_vec(v, shape, device)?
        } else {
            check_float("Rng::uniform", dtype)?;
            let v: Vec<f32> = (0..n).map(|_| (lo + (hi - lo) * self.uniform_f64()) as f32).collect();
            Tensor::from_vec(v, shape, device)?.to_dtype(dtype)?
        };
        Ok(t)
    }

    /// A `U32` tensor of integers uniform in `[lo, hi)`, e.g. diffusion timesteps per sample.
    pub fn randint<S: Into<Shape>>(&mut self, shape: S, lo: u32, hi: u32, device: &Device) -> Result<Tensor> {
        if lo >= hi {
            return Err(Error::config("lo, hi", format!("Rng::randint needs lo < hi, got [{lo}, {hi})")));
        }
        let shape = shape.into();
        let v: Vec<u32> = (0..shape.elem_count()).map(|_| self.inner.random_range(lo..hi)).collect();
        Ok(Tensor::from_vec(v, shape, device)?)
    }

    /// A tensor of 0/1 values, each 1 with probability `p` in `[0, 1]` (dropout masks,
    /// label dropout for classifier-free guidance, random flips).
    pub fn bernoulli<S: Into<Shape>>(&mut self, shape: S, p: f64, dtype: DType, device: &Device) -> Result<Tensor> {
        if !(0.0..=1.0).contains(&p) {
            return Err(Error::config("p", format!("Bernoulli probability must be in [0, 1], got {p}")));
        }
        let shape = shape.into();
        let v: Vec<f32> = (0..shape.elem_count()).map(|_| if self.coin(p) { 1.0 } else { 0.0 }).collect();
        Ok(Tensor::from_vec(v, shape, device)?.to_dtype(dtype)?)
    }
}

fn check_float(context: &str, dtype: DType) -> Result<()> {
    if dtype.is_float() {
        Ok(())
    } else {
        Err(Error::shape(context, format!("needs a floating-point dtype, got {dtype:?}")))
    }
}

impl RngCore for Rng {
    fn next_u32(&mut self) -> u32 {
        self.inner.next_u32()
    }
    fn next_u64(&mut self) -> u64 {
        self.inner.next_u64()
    }
    fn fill_bytes(&mut self, dst: &mut [u8]) {
        self.inner.fill_bytes(dst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn moments(v: &[f64]) -> (f64, f64) {
        let n = v.len() as f64;
        let mean = v.iter().sum::<f64>() / n;
        let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
        (mean, var)
    }

    #[test]
    fn same_seed_same_tensors_different_seed_different() -> Result<()> {
        let dev = Device::Cpu;
        let a = Rng::new(7).randn((4, 5), DType::F32, &dev)?.flatten_all()?.to_vec1::<f32>()?;
        let b = Rng::new(7).randn((4, 5), DType::F32, &dev)?.flatten_all()?.to_vec1::<f32>()?;
        let c = Rng::new(8).randn((4, 5), DType::F32, &dev)?.flatten_all()?.to_vec1::<f32>()?;
        assert_eq!(a, b);
        assert_ne!(a, c);
        Ok(())
    }

    #[test]
    fn stream_is_fixed_across_versions_and_platforms() {
        // ChaCha8 seeded through `seed_from_u64` is specified bit for bit; if this changes, every
        // saved seed in users' experiments would give other numbers.
        let mut r = Rng::new(0);
        let first: Vec<u64> = (0..3).map(|_| r.next_u64()).collect();
        let mut again = Rng::new(0);
        assert_eq!(first, (0..3).map(|_| again.next_u64()).collect::<Vec<_>>());
        assert_eq!(first[0], STREAM_SEED0_FIRST);
    }

    // Pinned on the first run (x86_64): a regression guard, so a dependency upgrade that changes
    // the stream fails here instead of silently changing every seeded experiment.
    const STREAM_SEED0_FIRST: u64 = 13080132717333068652;

    #[test]
    fn normal_moments() -> Result<()> {
        let v = Rng::new(1).randn(200_000, DType::F64, &Device::Cpu)?.to_vec1::<f64>()?;
        let (m, var) = moments(&v);
        // Standard errors: mean 1/sqrt(n) ~ 0.0022, variance sqrt(2/n) ~ 0.0032.
        assert!(m.abs() < 0.01, "mean {m}");
        assert!((var - 1.0).abs() < 0.015, "variance {var}");
        let skew = v.iter().map(|x| (x - m).powi(3)).sum::<f64>() / v.len() as f64;
        assert!(skew.abs() < 0.03, "third moment {skew}");
        Ok(())
    }

    #[test]
    fn uniform_randint_bernoulli_moments() -> Result<()> {
        let dev = Device::Cpu;
        let mut r = Rng::new(2);
        let u = r.uniform(100_000, -1.0, 3.0, DType::F32, &dev)?.to_vec1::<f32>()?;
        let u: Vec<f64> = u.iter().map(|&x| x as f64).collect();
        assert!(u.iter().all(|&x| (-1.0..3.0).contains(&x)));
        let (m, var) = moments(&u);
        assert!((m - 1.0).abs() < 0.02, "mean {m}");
        assert!((var - 16.0 / 12.0).abs() < 0.03, "variance {var}");

        let k = r.randint(60_000, 0, 6, &dev)?.to_vec1::<u32>()?;
        let mut hist = [0usize; 6];
        k.iter().for_each(|&x| hist[x as usize] += 1);
        assert!(hist.iter().all(|&h| (h as i64 - 10_000).abs() < 400), "{hist:?}");

        let b = r.bernoulli(100_000, 0.3, DType::F32, &dev)?.to_vec1::<f32>()?;
        assert!(b.iter().all(|&x| x == 0.0 || x == 1.0));
        let p = b.iter().sum::<f32>() as f64 / b.len() as f64;
        assert!((p - 0.3).abs() < 0.005, "p {p}");
        Ok(())
    }

    #[test]
    fn permutation_is_a_permutation_and_seeded() {
        let p = Rng::new(3).permutation(1000);
        let mut s = p.clone();
        s.sort_unstable();
        assert_eq!(s, (0..1000).collect::<Vec<_>>());
        assert_eq!(p, Rng::new(3).permutation(1000));
        assert_ne!(p, (0..1000).collect::<Vec<_>>());
    }

    #[test]
    fn state_round_trip_resumes_exactly() -> Result<()> {
        let mut r = Rng::new(11);
        let _ = r.randn(37, DType::F32, &Device::Cpu)?;
        let saved = r.state();
        let json = serde_json::to_string(&saved).expect("RngState serialises");
        let restored: RngState = serde_json::from_str(&json).expect("RngState deserialises");
        let mut resumed = Rng::from_state(&restored);
        let a = r.randn(50, DType::F32, &Device::Cpu)?.to_vec1::<f32>()?;
        let b = resumed.randn(50, DType::F32, &Device::Cpu)?.to_vec1::<f32>()?;
        assert_eq!(a, b);
        Ok(())
    }

    #[test]
    fn bad_arguments_are_errors() {
        let mut r = Rng::new(0);
        assert!(r.uniform(3, 1.0, 1.0, DType::F32, &Device::Cpu).is_err());
        assert!(r.randint(3, 5, 5, &Device::Cpu).is_err());
        assert!(r.bernoulli(3, 1.5, DType::F32, &Device::Cpu).is_err());
        assert!(r.randn(3, DType::U8, &Device::Cpu).is_err());
        assert!(r.below(0).is_err());
    }

    #[test]
    fn half_precision_noise() -> Result<()> {
        let mut r = Rng::new(5);
        for dt in [DType::F16, DType::BF16] {
            let x = r.randn((8, 8), dt, &Device::Cpu)?;
            assert_eq!(x.dtype(), dt);
            let v = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
            assert!(v.iter().all(|x| x.is_finite()));
        }
        Ok(())
    }
}
