//! Narrowing a backward pass's gradients to the variables one optimizer should update.

use candle_core::backprop::GradStore;
use candle_core::Tensor;

/// Keeps in `grads` (from `loss.backward()`) only the gradients of the variables `loss` reached
/// for which `keep` holds, each detached; the gradients of intermediate tensors are left alone.
///
/// Two uses in an adversarial step: a loss that runs through two networks (the generator's loss
/// passes through the discriminator) gives gradients to both, and the optimizer of the other
/// network must not see them when it is built over shared variables; and candle does not detach
/// the gradients of variables, so each still references the step's activations (and, under a
/// kept graph, the whole step): an optimizer that stores gradients in its state, as
/// `candle_nn::AdamW` does, would keep every step's memory alive. Detaching shares the storage,
/// so it costs nothing.
pub fn retain_var_grads(loss: &Tensor, grads: &mut GradStore, keep: impl Fn(&Tensor) -> bool) {
    for node in loss.sorted_nodes() {
        if node.is_variable() {
            if let Some(g) = grads.remove(node) {
                if keep(node) {
                    grads.insert(node, g.detach());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Result;
    use candle_core::{Device, Var};

    #[test]
    fn keeps_only_the_chosen_variables_detached() -> Result<()> {
        let dev = Device::Cpu;
        let (a, b) = (Var::new(&[1f32, 2.0], &dev)?, Var::new(&[3f32], &dev)?);
        let loss = (a.sqr()?.sum_all()? * b.as_tensor().sum_all()?)?;
        let mut grads = crate::nn::double_backward::backward_with_graph(&loss)?;
        assert!(grads.get(&a).is_some_and(|g| g.track_op()), "the probe keeps its graph");
        retain_var_grads(&loss, &mut grads, |v| v.id() == a.id());
        let ga = grads.get(&a).expect("a keeps its gradient");
        assert!(!ga.track_op());
        // d/da sum(a^2) * b = 2 a b
        assert_eq!(ga.to_vec1::<f32>()?, vec![6.0, 12.0]);
        assert!(grads.get(&b).is_none(), "b's gradient is dropped");
        Ok(())
    }
}
