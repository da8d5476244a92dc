//! [`ThreadGroup`]: the [`GradientReducer`] of data-parallel replicas on threads of one process.

use std::sync::{Arc, Barrier, Mutex};

use candle_core::{DType, Tensor};

use super::data_parallel::GradientReducer;
use crate::{Error, Result};

/// A [`GradientReducer`] for replicas on threads of one process, one thread per replica:
/// [`ThreadGroup::new`] makes the `world_size` members, and each thread moves its member into its
/// replica's [`DataParallel`](super::DataParallel). The replicas' gradients may live on different devices (e.g. one
/// CUDA device per thread): they are summed on the host in `f32` (`f64` for `f64`) in rank order,
/// so every replica gets the same numbers, and each member returns the mean on its own
/// gradient's device and dtype. Across processes, use an NCCL all-reduce instead.
///
/// A member waits for all the others at every [`GradientReducer::mean`]: every thread must keep
/// stepping until the end, or the others block.
#[derive(Debug)]
pub struct ThreadGroup {
    rank: usize,
    world_size: usize,
    slots: Arc<Mutex<Vec<Option<Tensor>>>>,
    barrier: Arc<Barrier>,
}

impl ThreadGroup {
    /// The `world_size` members of a new group, rank `r` at index `r`. `Error::Config` when
    /// `world_size` is 0.
    pub fn new(world_size: usize) -> Result<Vec<ThreadGroup>> {
        if world_size == 0 {
            return Err(Error::config("world_size", "must be at least 1"));
        }
        let slots = Arc::new(Mutex::new(vec![None; world_size]));
        let barrier = Arc::new(Barrier::new(world_size));
        Ok((0..world_size)
            .map(|rank| ThreadGroup { rank, world_size, slots: slots.clone(), barrier: barrier.clone() })
            .collect())
    }

    /// This member's rank, in `0..world_size`.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// The number of replicas.
    pub fn world_size(&self) -> usize {
        self.world_size
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Option<Tensor>>> {
        // A panicking replica poisons the lock; the data (tensors) stays usable.
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl GradientReducer for ThreadGroup {
    fn mean(&mut self, name: &str, grad: &Tensor) -> Result<Tensor> {
        if self.world_size == 1 {
            return Ok(grad.clone());
        }
        let acc = if grad.dtype() == DType::F64 { DType::F64 } else { DType::F32 };
        self.lock()[self.rank] = Some(grad.to_dtype(acc)?.to_device(&candle_core::Device::Cpu)?);
        self.barrier.wait();
        let summed = (|| -> Result<Tensor> {
            let slots = self.lock();
            let mut sum: Option<Tensor> = None;
            for (rank, slot) in slots.iter().enumerate() {
                let g = slot.as_ref().ok_or_else(|| {
                    Error::config("ThreadGroup", format!("rank {rank} sent no gradient for `{name}`"))
                })?;
                if g.dims() != grad.dims() {
                    return Err(Error::shape(
                        "ThreadGroup",
                        format!(
                            "`{name}` is {:?} on rank {rank} but {:?} on rank {}",
                            g.dims(),
                            grad.dims(),
                            self.rank
                        ),
                    ));
                }
                sum = Some(match sum {
                    None => g.clone(),
                    Some(s) => (s + g)?,
                });
            }
            let sum = sum.ok_or_else(|| Error::config("ThreadGroup", "no replicas"))?;
            Ok(sum.affine(1.0 / self.world_size as f64, 0.0)?)
        })();
        // Everyone has read every slot before anyone writes the next gradient into them.
        self.barrier.wait();
        Ok(summed?.to_dtype(grad.dtype())?.to_device(grad.device())?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn a_group_of_one_returns_the_gradient_itself() -> Result<()> {
        assert!(ThreadGroup::new(0).is_err());
        let mut group = ThreadGroup::new(1)?.remove(0);
        assert_eq!((group.rank(), group.world_size()), (0, 1));
        let g = Tensor::new(&[1.5f32, -2.0], &Device::Cpu)?;
        assert_eq!(group.mean("g", &g)?.to_vec1::<f32>()?, [1.5, -2.0]);
        Ok(())
    }
}
