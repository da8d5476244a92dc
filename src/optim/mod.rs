//! Training utilities: optimizers with exportable state, learning-rate schedules, EMA of
//! weights, gradient clipping, mixed precision and data-parallel gradient averaging.
//!
//! Every optimizer implements `candle_nn::Optimizer` (so `backward_step` and
//! `set_learning_rate` work as usual) and [`TrainingState`], so its moments and step count go
//! into a checkpoint and come back bit for bit. Optimizers act on [`NamedVars`]: a whole
//! `VarMap`, the variables under a prefix, or any filtered subset.

mod adam;
mod clip;
mod data_parallel;
mod ema;
mod grads;
mod loss_scale;
mod mixed_precision;
mod named;
mod rmsprop;
mod schedule;
mod sgd;
mod state;
#[cfg(test)]
mod testing;
mod thread_group;

pub use adam::{Adam, AdamConfig};
pub use clip::{clip_grad_norm, clip_grad_value, grad_norm};
pub use data_parallel::{DataParallel, GradientReducer};
pub use ema::{Ema, EmaConfig, EmaWarmup};
pub use grads::retain_var_grads;
pub use loss_scale::{LossScaleConfig, LossScaler, ScaleChange};
pub use mixed_precision::{scaled_backward, LossScaling, MixedPrecision, MixedStepReport};
pub(crate) use named::{read_like, read_scalar, scalar_tensor};
pub use named::{NamedVars, TrainingState};
pub use rmsprop::{RmsProp, RmsPropConfig};
pub use schedule::{LrSchedule, LrScheduleKind};
pub use sgd::{Sgd, SgdConfig};
pub use thread_group::ThreadGroup;
