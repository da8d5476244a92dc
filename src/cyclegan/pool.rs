//! The history of generated images the discriminators are trained on (Shrivastava et al. 2017).

use std::collections::HashMap;

use candle_core::{Device, Tensor};

use crate::optim::TrainingState;
use crate::rng::Rng;
use crate::{Error, Result};

/// The history size CycleGAN uses (Zhu et al. 2017, section 4: "a history of 50 generated images").
pub const DEFAULT_POOL_SIZE: usize = 50;

/// A buffer of previously generated images (Shrivastava et al. 2017, "Learning from Simulated
/// and Unsupervised Images through Adversarial Training", section 2.3): the discriminator sees a
/// mix of the newest and older generator outputs, which damps oscillations.
///
/// [`ImagePool::query`] takes a batch of new images; for each one, in order:
/// - while the pool holds fewer than `capacity` images, the image is stored and returned;
/// - once full, with probability 1/2 a uniformly chosen stored image is returned and the new
///   image takes its place; otherwise the new image is returned and the pool is unchanged.
///
/// So with a full pool about half of the returned images are older ones. Capacity 0 returns
/// every batch unchanged. The choices come from the caller's seeded [`Rng`]; the pool's
/// contents are a [`TrainingState`] (`Checkpoint::add_state`), so a resumed run continues
/// exactly. Images are stored detached: the pool never carries gradients.
#[derive(Debug, Clone)]
pub struct ImagePool {
    capacity: usize,
    images: Vec<Tensor>,
}

impl ImagePool {
    /// An empty pool of `capacity` images ([`DEFAULT_POOL_SIZE`] = 50 in CycleGAN; 0 disables it).
    pub fn new(capacity: usize) -> Self {
        Self { capacity, images: Vec::with_capacity(capacity) }
    }

    /// The maximum number of stored images.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The number of stored images.
    pub fn len(&self) -> usize {
        self.images.len()
    }

    /// Whether nothing is stored yet.
    pub fn is_empty(&self) -> bool {
        self.images.is_empty()
    }

    /// The batch `(B, C, H, W)` to show the discriminator for the new images `(B, C, H, W)`, as in
    /// the type's description; the result is detached, with the input's shape, dtype and device.
    /// Every image must have the shape of those already stored, else `Error::Shape`.
    pub fn query(&mut self, images: &Tensor, rng: &mut Rng) -> Result<Tensor> {
        let images = images.detach();
        if images.rank() != 4 || images.dim(0)? == 0 {
            return Err(Error::shape("ImagePool::query", format!("expected (B, C, H, W), got {:?}", images.dims())));
        }
        if let Some(stored) = self.images.first() {
            if stored.dims()[1..] != images.dims()[1..] || stored.dtype() != images.dtype() {
                return Err(Error::shape(
                    "ImagePool::query",
                    format!(
                        "images {:?} {:?} differ from the stored ones {:?} {:?}",
                        images.dims(),
                        images.dtype(),
                        stored.dims(),
                        stored.dtype()
                    ),
                ));
            }
        }
        if self.capacity == 0 {
            return Ok(images);
        }
        let device = images.device().clone();
        let mut out = Vec::with_capacity(images.dim(0)?);
        for i in 0..images.dim(0)? {
            // `copy` so that the stored image owns its storage, whatever the caller does next.
            let image = images.narrow(0, i, 1)?.copy()?;
            if self.images.len() < self.capacity {
                self.images.push(image.clone());
                out.push(image);
            } else if rng.coin(0.5) {
                let j = rng.below(self.capacity)?;
                let old = std::mem::replace(&mut self.images[j], image);
                out.push(old.to_device(&device)?);
            } else {
                out.push(image);
            }
        }
        Ok(Tensor::cat(&out, 0)?)
    }
}

impl TrainingState for ImagePool {
    /// `count` (a 1-element `F64` tensor) and, when the pool is not empty, `images`, the stored
    /// images stacked `(count, C, H, W)` in their order.
    fn state_tensors(&self) -> Result<Vec<(String, Tensor)>> {
        let mut out = vec![("count".to_string(), Tensor::new(&[self.images.len() as f64], &Device::Cpu)?)];
        if !self.images.is_empty() {
            out.push(("images".to_string(), Tensor::cat(&self.images, 0)?));
        }
        Ok(out)
    }

    /// Restores the stored images (at most `capacity`; more is an error). The images stay on
    /// the device they were loaded to until a query returns them on the query's device.
    fn load_state_tensors(&mut self, tensors: &HashMap<String, Tensor>) -> Result<()> {
        let count = tensors
            .get("count")
            .ok_or_else(|| Error::shape("ImagePool", "state has no `count`"))?
            .flatten_all()?
            .to_dtype(candle_core::DType::F64)?
            .to_vec1::<f64>()?;
        let count = match count.as_slice() {
            [c] if *c >= 0.0 && c.fract() == 0.0 => *c as usize,
            other => return Err(Error::shape("ImagePool", format!("`count` should be one integer, got {other:?}"))),
        };
        if count > self.capacity {
            return Err(Error::shape(
                "ImagePool",
                format!("state holds {count} images, capacity is {}", self.capacity),
            ));
        }
        let images = match (count, tensors.get("images")) {
            (0, _) => Vec::new(),
            (n, Some(t)) if t.rank() == 4 && t.dim(0)? == n => {
                (0..n).map(|i| Ok(t.narrow(0, i, 1)?.copy()?)).collect::<Result<Vec<_>>>()?
            }
            (n, t) => {
                return Err(Error::shape(
                    "ImagePool",
                    format!("`images` should be ({n}, C, H, W), got {:?}", t.map(|t| t.dims().to_vec())),
                ))
            }
        };
        self.images = images;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::DType;

    /// A batch of `n` 1x1x1 images whose value is their id.
    fn batch(ids: std::ops::Range<usize>) -> Result<Tensor> {
        let v: Vec<f32> = ids.map(|i| i as f32).collect();
        let n = v.len();
        Ok(Tensor::from_vec(v, (n, 1, 1, 1), &Device::Cpu)?)
    }

    fn ids(t: &Tensor) -> Result<Vec<usize>> {
        Ok(t.flatten_all()?.to_vec1::<f32>()?.into_iter().map(|v| v as usize).collect())
    }

    #[test]
    fn fills_first_then_returns_old_images_half_the_time() -> Result<()> {
        let mut pool = ImagePool::new(50);
        let mut rng = Rng::new(3);
        // Filling: the first 50 images come back unchanged.
        for k in 0..10 {
            let out = pool.query(&batch(k * 5..k * 5 + 5)?, &mut rng)?;
            assert_eq!(ids(&out)?, (k * 5..k * 5 + 5).collect::<Vec<_>>());
        }
        assert_eq!(pool.len(), 50);
        // Full: each returned image is an older one with probability 1/2. Over n = 4000 draws
        // the fraction's standard deviation is sqrt(0.25 / 4000) = 0.0079; allow 4 of them.
        let (mut old, mut total, mut next) = (0usize, 0usize, 50usize);
        for _ in 0..1000 {
            let out = ids(&pool.query(&batch(next..next + 4)?, &mut rng)?)?;
            for (i, id) in out.iter().enumerate() {
                let new_id = next + i;
                assert!(*id <= new_id, "returned {id}, which was never queried before {new_id}");
                old += usize::from(*id != new_id);
                total += 1;
            }
            next += 4;
        }
        let fraction = old as f64 / total as f64;
        assert!((fraction - 0.5).abs() < 4.0 * 0.0079, "fraction of stored images returned: {fraction}");
        assert_eq!(pool.len(), 50, "the pool never grows beyond its capacity");
        Ok(())
    }

    #[test]
    fn returned_old_images_are_uniform_over_the_pool() -> Result<()> {
        // Fill with ids 0..50, then query one image at a time, refilling the pool with the same
        // ids (the returned old image is put back), and count which slot was returned.
        let mut rng = Rng::new(4);
        let mut pool = ImagePool::new(50);
        pool.query(&batch(0..50)?, &mut rng)?;
        let mut counts = vec![0usize; 50];
        let mut n = 0;
        for _ in 0..20_000 {
            let out = ids(&pool.query(&batch(1000..1001)?, &mut rng)?)?[0];
            if out != 1000 {
                counts[out] += 1;
                n += 1;
                // Put the old image back where the new one went, so the pool holds 0..50 again.
                let slot = pool.images.iter().position(|t| ids(t).unwrap()[0] == 1000).unwrap();
                pool.images[slot] = batch(out..out + 1)?;
            }
        }
        // Chi-square over 50 cells with 49 degrees of freedom: the 0.999 quantile is 85.4.
        let expected = n as f64 / 50.0;
        let chi2: f64 = counts.iter().map(|&c| (c as f64 - expected).powi(2) / expected).sum();
        assert!(chi2 < 85.4, "chi-square {chi2} over {n} old images: {counts:?}");
        Ok(())
    }

    #[test]
    fn seeded_state_round_trip_and_errors() -> Result<()> {
        let run = |pool: &mut ImagePool, rng: &mut Rng, from: usize| -> Result<Vec<usize>> {
            let mut out = Vec::new();
            for k in 0..20 {
                out.extend(ids(&pool.query(&batch(from + 3 * k..from + 3 * k + 3)?, rng)?)?);
            }
            Ok(out)
        };
        let (mut a, mut ra) = (ImagePool::new(10), Rng::new(5));
        run(&mut a, &mut ra, 0)?;
        // Save the pool and the RNG, continue; a restored copy continues identically.
        let saved: HashMap<String, Tensor> = a.state_tensors()?.into_iter().collect();
        let rng_state = ra.state();
        let continued = run(&mut a, &mut ra, 100)?;
        let mut b = ImagePool::new(10);
        b.load_state_tensors(&saved)?;
        assert_eq!(run(&mut b, &mut Rng::from_state(&rng_state), 100)?, continued);
        // Same seed, same choices.
        let (mut c, mut rc) = (ImagePool::new(10), Rng::new(5));
        let (mut d, mut rd) = (ImagePool::new(10), Rng::new(5));
        assert_eq!(run(&mut c, &mut rc, 0)?, run(&mut d, &mut rd, 0)?);
        // Empty and disabled pools.
        let empty: HashMap<String, Tensor> = ImagePool::new(3).state_tensors()?.into_iter().collect();
        b.load_state_tensors(&empty)?;
        assert!(b.is_empty());
        let mut off = ImagePool::new(0);
        assert_eq!(ids(&off.query(&batch(0..3)?, &mut rc)?)?, vec![0, 1, 2]);
        // Errors: too many images for the capacity, a shape change, a non-batch.
        assert!(ImagePool::new(2).load_state_tensors(&saved).is_err());
        assert!(a.query(&Tensor::zeros((2, 1, 2, 2), DType::F32, &Device::Cpu)?, &mut ra).is_err());
        assert!(a.query(&Tensor::zeros((2, 2), DType::F32, &Device::Cpu)?, &mut ra).is_err());
        Ok(())
    }
}
