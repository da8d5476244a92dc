//! The per-variable state that all optimizers of this module (SGD, Adam, RMSprop) share
//! ([`VarStates`]), and their common checks of hyper-parameters.

use std::collections::HashMap;

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};

use super::{read_like, read_scalar, scalar_tensor, NamedVars};
use crate::{Error, Result};

/// The per-variable state of an optimizer: for each named variable the number of updates it has
/// received (PyTorch's per-parameter `step`) and its buffers (moments, momentum), as plain
/// tensors in the variable's dtype and on its device.
///
/// Buffers start as zeros (one zero tensor per variable, shared by its buffers until the first
/// update replaces them), so that an exported state always holds every buffer: a variable that
/// has not had a gradient yet exports zeros and step 0, and comes back the same.
#[derive(Debug)]
pub(crate) struct VarStates {
    buffer_names: Vec<&'static str>,
    entries: Vec<VarState>,
}

#[derive(Debug)]
struct VarState {
    name: String,
    var: Var,
    step: u64,
    buffers: Vec<Tensor>,
}

impl VarStates {
    /// Zero state for `vars`, with one buffer per name in `buffer_names`.
    pub(crate) fn new(vars: NamedVars, buffer_names: Vec<&'static str>) -> Result<Self> {
        let entries = vars
            .iter()
            .map(|(name, var)| {
                let zeros = var.zeros_like()?;
                let buffers = vec![zeros; buffer_names.len()];
                Ok(VarState { name: name.to_string(), var: var.clone(), step: 0, buffers })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { buffer_names, entries })
    }

    /// For each variable with a gradient in `grads`: advances its step count to `t` and sets it
    /// to `rule(t, θ, ∇f(θ), buffers)`. `θ` is detached; the rule replaces the buffers (in the
    /// order of the names given to [`VarStates::new`]) and returns the new value of `θ`.
    pub(crate) fn update(
        &mut self,
        grads: &GradStore,
        mut rule: impl FnMut(u64, &Tensor, &Tensor, &mut [Tensor]) -> Result<Tensor>,
    ) -> Result<()> {
        for entry in &mut self.entries {
            let Some(grad) = grads.get(&entry.var) else { continue };
            // Ops return an empty tensor itself rather than a copy, and `Var::set` refuses a tensor
            // sharing the variable's storage; an empty variable has nothing to update anyway.
            if entry.var.elem_count() == 0 {
                continue;
            }
            // Candle's gradients are graph nodes themselves (they reference every tensor of the
            // backward pass); moments built from them would keep each step's graph alive.
            let grad = grad.detach();
            let step = entry.step + 1;
            let next = rule(step, &entry.var.as_detached_tensor(), &grad, &mut entry.buffers)?;
            entry.var.set(&next)?;
            entry.step = step;
        }
        Ok(())
    }

    /// `"step"` and `"lr"` as scalars, then per variable `"step.<name>"` and `"<buffer>.<name>"`.
    pub(crate) fn export(&self, step: u64, lr: f64) -> Result<Vec<(String, Tensor)>> {
        let mut out = vec![("step".to_string(), scalar_tensor(step as f64)?), ("lr".to_string(), scalar_tensor(lr)?)];
        for entry in &self.entries {
            out.push((format!("step.{}", entry.name), scalar_tensor(entry.step as f64)?));
            for (buffer, tensor) in self.buffer_names.iter().zip(&entry.buffers) {
                out.push((format!("{buffer}.{}", entry.name), tensor.clone()));
            }
        }
        Ok(out)
    }

    /// Reads everything [`VarStates::export`] writes, checking names, shapes and dtypes, and
    /// returns the global step and learning rate. Nothing changes unless all of it is valid.
    pub(crate) fn import(&mut self, tensors: &HashMap<String, Tensor>) -> Result<(u64, f64)> {
        let step = read_count(tensors, "step")?;
        let lr = read_scalar(tensors, "lr")?;
        check_lr("lr", lr).map_err(|e| Error::shape("load_state_tensors", e.to_string()))?;
        let mut loaded = Vec::with_capacity(self.entries.len());
        for entry in &self.entries {
            let var_step = read_count(tensors, &format!("step.{}", entry.name))?;
            let buffers = (self.buffer_names.iter())
                .map(|buffer| read_like(tensors, &format!("{buffer}.{}", entry.name), entry.var.as_tensor()))
                .collect::<Result<Vec<_>>>()?;
            loaded.push((var_step, buffers));
        }
        for (entry, (var_step, buffers)) in self.entries.iter_mut().zip(loaded) {
            entry.step = var_step;
            entry.buffers = buffers;
        }
        Ok((step, lr))
    }
}

/// Reads a step count stored with [`scalar_tensor`]: a non-negative integer below 2^53.
fn read_count(tensors: &HashMap<String, Tensor>, name: &str) -> Result<u64> {
    let value = read_scalar(tensors, name)?;
    if value >= 0.0 && value.fract() == 0.0 && value <= 9_007_199_254_740_992.0 {
        Ok(value as u64)
    } else {
        Err(Error::shape("load_state_tensors", format!("`{name}` should be a step count, got {value}")))
    }
}

/// `g + λ θ` (L2 penalty folded into the gradient); the gradient itself when `λ = 0`.
pub(crate) fn add_weight_decay(grad: &Tensor, param: &Tensor, weight_decay: f64) -> Result<Tensor> {
    if weight_decay == 0.0 {
        Ok(grad.clone())
    } else {
        Ok((grad + (param * weight_decay)?)?)
    }
}

/// `Error::Config` for `field` unless `value` is finite and `ok`.
pub(crate) fn check_field(field: &str, value: f64, ok: bool, expected: &str) -> Result<()> {
    if value.is_finite() && ok {
        Ok(())
    } else {
        Err(Error::config(field, format!("must be finite and {expected}, got {value}")))
    }
}

/// A learning rate must be finite and >= 0.
pub(crate) fn check_lr(field: &str, lr: f64) -> Result<()> {
    check_field(field, lr, lr >= 0.0, ">= 0")
}

/// The crate's error as a candle error, for the `candle_nn::Optimizer` methods.
pub(crate) fn into_candle_error(error: Error) -> candle_core::Error {
    match error {
        Error::Candle(e) => e,
        other => candle_core::Error::wrap(other),
    }
}
