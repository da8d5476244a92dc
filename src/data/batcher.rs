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
    rank: usize,
    world_size: usize,
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
        Ok(Self { len, batch_size, seed, drop_last: false, shuffle: true, rank: 0, world_size: 1 })
    }

    /// This process's share of every epoch in data-parallel training over `world_size` processes
    /// (ranks `0..world_size`): all ranks build the batcher with the same `len`, `batch_size` and
    /// seed, so they draw the same permutation of each epoch, and rank `r` takes its items
    /// `r, r + world_size, r + 2 world_size, ...`. Every item lands in exactly one shard per epoch.
    ///
    /// Shards differ in length by at most one item. With [`Batcher::drop_last`] every rank uses
    /// the shortest shard's length (`len / world_size`), so all ranks run the same number of
    /// steps per epoch, which an all-reduce per step needs; without it a rank may run one batch
    /// more than another when `world_size` does not divide `len`.
    ///
    /// `Error::Config` when `rank >= world_size` or `len < world_size` (an empty shard).
    pub fn shard(mut self, rank: usize, world_size: usize) -> Result<Self> {
        if world_size == 0 || rank >= world_size {
            return Err(Error::config("rank", format!("rank {rank} is not in 0..{world_size}")));
        }
        if self.len < world_size {
            return Err(Error::config("world_size", format!("{} items cannot fill {world_size} shards", self.len)));
        }
        self.rank = rank;
        self.world_size = world_size;
        Ok(self)
    }

    /// `(rank, world_size)` of [`Batcher::shard`]; `(0, 1)` when not sharded.
    pub fn shard_of(&self) -> (usize, usize) {
        (self.rank, self.world_size)
    }

    /// Items in this rank's shard of an epoch (all of them when not sharded).
    fn shard_len(&self) -> usize {
        (self.len - self.rank).div_ceil(self.world_size)
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

    /// Number of batches in every epoch (of this rank's shard when sharded).
    pub fn batches_per_epoch(&self) -> usize {
        let n = if self.drop_last { self.len / self.world_size } else { self.shard_len() };
        if self.drop_last && n >= self.batch_size {
            n / self.batch_size
        } else {
            n.div_ceil(self.batch_size)
        }
    }

    /// The order of items in epoch `epoch`: a permutation of `0..len`, or this rank's part of it
    /// when sharded.
    pub fn epoch_order(&self, epoch: u64) -> Vec<usize> {
        let order: Vec<usize> = if self.shuffle {
            Rng::with_stream(self.seed, epoch).permutation(self.len)
        } else {
            (0..self.len).collect()
        };
        if self.world_size == 1 {
            return order;
        }
        order.into_iter().skip(self.rank).step_by(self.world_size).collect()
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
        order[start..(start + self.batch_size).min(order.len())].to_vec()
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

    #[test]
    fn shards_cover_every_item_exactly_once_per_epoch() -> Result<()> {
        for (len, world, batch) in [(10, 3, 2), (12, 4, 3), (7, 7, 1), (100, 3, 8)] {
            for epoch in 0..3 {
                let mut seen = vec![0usize; len];
                let mut steps = Vec::new();
                for rank in 0..world {
                    let b = Batcher::new(len, batch, 5)?.shard(rank, world)?;
                    assert_eq!(b.shard_of(), (rank, world));
                    let batches = b.epoch(epoch);
                    steps.push(batches.len());
                    for i in batches.into_iter().flatten() {
                        seen[i] += 1;
                    }
                    // batch_at_step agrees with the epoch's batches on every rank.
                    let per = b.batches_per_epoch() as u64;
                    assert_eq!(b.batch_at_step(epoch * per), b.epoch(epoch)[0]);
                }
                assert!(seen.iter().all(|&c| c == 1), "len {len} world {world} epoch {epoch}: {seen:?}");
                assert!(steps.iter().max().unwrap() - steps.iter().min().unwrap() <= 1);
            }
            // drop_last: the same number of full batches on every rank.
            let counts: Vec<usize> = (0..world)
                .map(|r| Batcher::new(len, batch, 5).and_then(|b| b.drop_last(true).shard(r, world)))
                .map(|b| b.map(|b| b.epoch(0).len()))
                .collect::<Result<_>>()?;
            assert!(counts.iter().all(|&c| c == counts[0]), "{counts:?}");
        }
        // Unsharded batches are unchanged by the sharding code path (world 1).
        assert_eq!(Batcher::new(9, 2, 1)?.epoch(1), Batcher::new(9, 2, 1)?.shard(0, 1)?.epoch(1));
        assert!(Batcher::new(9, 2, 1)?.shard(3, 3).is_err());
        assert!(Batcher::new(2, 2, 1)?.shard(0, 3).is_err());
        Ok(())
    }
}
