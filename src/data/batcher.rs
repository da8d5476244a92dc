//! Seeded, shuffled mini-batches of indices, epoch by epoch.

use crate::rng::Rng;
use crate::{Error, Result};

/// Splits `0..len` into mini-batches, shuffled anew each epoch.
///
/// The order of epoch `e` depends only on `(seed, e)` (stream `e` of [`Rng::with_stream`]), not
/// on how much other randomness the training loop drew, so a run resumed at any step sees exactly
/// the batches it would have seen: [`Batcher::batch_at_step`] recomputes them from the step.
///
/// ```
/// use candle_generative::data::batcher::Batcher;
/// let b = Batcher::new(10, 4, 0)?.drop_last(true);
/// let epoch = b.epoch(0);
/// assert_eq!(epoch.len(), 2); // the last, partial batch of 2 is dropped
/// assert_eq!(b.batch_at_step(1), epoch[1]);
/// # Ok::<(), candle_generative::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Batcher {
    len: usize,
    batch_size: usize,
    seed: u64,
    drop_last: bool,
    shuffle: bool,
}

impl Batcher {
    /// Batches of `batch_size` over `len` items, shuffled with `seed`; the last partial batch is
    /// kept (see [`Batcher::drop_last`]).
    pub fn new(len: usize, batch_size: usize, seed: u64) -> Result<Self> {
        if len == 0 {
            return Err(Error::config("len", "cannot batch an empty data set"));
        }
        if batch_size == 0 {
            return Err(Error::config("batch_size", "must be > 0"));
        }
        Ok(Self { len, batch_size, seed, drop_last: false, shuffle: true })
    }

    /// Drop the last batch of an epoch when it is smaller than `batch_size` (when `len` is
    /// smaller than one batch, the one partial batch is kept so an epoch is never empty).
    pub fn drop_last(mut self, drop_last: bool) -> Self {
        self.drop_last = drop_last;
        self
    }

    /// Shuffle each epoch (the default) or keep `0..len` in order (evaluation).
    pub fn shuffle(mut self, shuffle: bool) -> Self {
        self.shuffle = shuffle;
        self
    }

    /// Number of items batched.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always `false`: a `Batcher` is never built over zero items.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The batch size.
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// Number of batches in every epoch.
    pub fn batches_per_epoch(&self) -> usize {
        if self.drop_last && self.len >= self.batch_size {
            self.len / self.batch_size
        } else {
            self.len.div_ceil(self.batch_size)
        }
    }

    /// The order of items in epoch `epoch` (a permutation of `0..len`).
    pub fn epoch_order(&self, epoch: u64) -> Vec<usize> {
        if self.shuffle {
            Rng::with_stream(self.seed, epoch).permutation(self.len)
        } else {
            (0..self.len).collect()
        }
    }

    /// The batches of epoch `epoch`, each a list of item indices.
    pub fn epoch(&self, epoch: u64) -> Vec<Vec<usize>> {
        let order = self.epoch_order(epoch);
        order.chunks(self.batch_size).take(self.batches_per_epoch()).map(|c| c.to_vec()).collect()
    }

    /// The batch used at global training step `step` (counting from 0 over all epochs).
    pub fn batch_at_step(&self, step: u64) -> Vec<usize> {
        let per = self.batches_per_epoch() as u64;
        let (epoch, k) = (step / per, (step % per) as usize);
        let order = self.epoch_order(epoch);
        let start = k * self.batch_size;
        order[start..(start + self.batch_size).min(self.len)].to_vec()
    }

    /// An endless iterator of `(step, batch)` starting at global step `start_step`, crossing epoch
    /// boundaries; resume a run by passing the step it stopped at.
    pub fn iter_from(&self, start_step: u64) -> impl Iterator<Item = (u64, Vec<usize>)> + '_ {
        let per = self.batches_per_epoch() as u64;
        let mut epoch = start_step / per;
        let mut batches = self.epoch(epoch);
        let mut k = (start_step % per) as usize;
        let mut step = start_step;
        std::iter::from_fn(move || {
            if k == batches.len() {
                epoch += 1;
                batches = self.epoch(epoch);
                k = 0;
            }
            let item = (step, std::mem::take(&mut batches[k]));
            k += 1;
            step += 1;
            Some(item)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_index_once_per_epoch() -> Result<()> {
        for (len, bs, drop) in [(10, 3, false), (12, 4, true), (1000, 64, false), (2, 5, true)] {
            let b = Batcher::new(len, bs, 9)?.drop_last(drop);
            for e in 0..3 {
                let mut all: Vec<usize> = b.epoch(e).concat();
                assert_eq!(b.epoch(e).len(), b.batches_per_epoch());
                all.sort_unstable();
                assert_eq!(all, (0..len).collect::<Vec<_>>(), "len {len} bs {bs} epoch {e}");
            }
        }
        Ok(())
    }

    #[test]
    fn drop_last_drops_only_the_partial_batch() -> Result<()> {
        let b = Batcher::new(10, 3, 1)?.drop_last(true);
        let e = b.epoch(0);
        assert_eq!(e.len(), 3);
        assert!(e.iter().all(|x| x.len() == 3));
        let kept = Batcher::new(10, 3, 1)?.epoch(0);
        assert_eq!(kept.last().map(Vec::len), Some(1));
        Ok(())
    }

    #[test]
    fn epochs_differ_and_are_seeded() -> Result<()> {
        let b = Batcher::new(100, 10, 5)?;
        assert_ne!(b.epoch(0), b.epoch(1));
        assert_eq!(b.epoch(1), Batcher::new(100, 10, 5)?.epoch(1));
        assert_ne!(b.epoch(0), Batcher::new(100, 10, 6)?.epoch(0));
        assert_eq!(Batcher::new(5, 2, 5)?.shuffle(false).epoch(0), vec![vec![0, 1], vec![2, 3], vec![4]]);
        Ok(())
    }

    #[test]
    fn resuming_at_a_step_gives_the_same_batches() -> Result<()> {
        let b = Batcher::new(23, 5, 3)?;
        let straight: Vec<_> = b.iter_from(0).take(17).collect();
        let resumed: Vec<_> = b.iter_from(11).take(6).collect();
        assert_eq!(&straight[11..], &resumed[..]);
        for (step, batch) in &straight {
            assert_eq!(&b.batch_at_step(*step), batch);
        }
        assert!(Batcher::new(0, 5, 0).is_err());
        assert!(Batcher::new(5, 0, 0).is_err());
        Ok(())
    }
}
