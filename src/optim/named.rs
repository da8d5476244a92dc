//! Named trainable variables: what an optimizer or EMA updates, with stable names for checkpoints.

use std::collections::HashMap;

use candle_core::{Tensor, Var};
use candle_nn::VarMap;

use crate::{Error, Result};

/// A list of `(name, Var)` pairs, sorted by name, that an optimizer or an EMA acts on.
///
/// Names make optimizer and EMA state addressable in a checkpoint (`"m.gen.fc.weight"`), so a
/// resumed run finds each moment again whatever order the variables were created in. Build one
/// from a whole `VarMap`, from the variables under a prefix (one optimizer for the generator,
/// one for the discriminator over one `VarMap`), or from any name filter.
///
/// ```
/// use candle_core::{DType, Device};
/// use candle_nn::{VarBuilder, VarMap};
/// use candle_generative::optim::NamedVars;
///
/// let varmap = VarMap::new();
/// let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
/// let _g = candle_nn::linear(4, 4, vb.pp("gen"))?;
/// let _d = candle_nn::linear(4, 1, vb.pp("disc"))?;
/// let gen = NamedVars::with_prefix(&varmap, "gen")?;
/// assert_eq!(gen.names(), vec!["gen.bias", "gen.weight"]);
/// # Ok::<(), candle_generative::Error>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct NamedVars {
    vars: Vec<(String, Var)>,
}

impl NamedVars {
    /// All floating-point variables of `varmap`.
    pub fn from_varmap(varmap: &VarMap) -> Self {
        Self::filtered(varmap, |_| true)
    }

    /// The floating-point variables of `varmap` whose name passes `keep`.
    pub fn filtered(varmap: &VarMap, keep: impl Fn(&str) -> bool) -> Self {
        // The lock is only poisoned if another thread panicked while holding it; the map itself
        // is still consistent, so read it anyway.
        let data = varmap.data().lock().unwrap_or_else(|e| e.into_inner());
        let mut vars: Vec<(String, Var)> = data
            .iter()
            .filter(|(name, var)| keep(name) && var.dtype().is_float())
            .map(|(name, var)| (name.clone(), var.clone()))
            .collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        Self { vars }
    }

    /// The variables named `prefix` or `prefix.*`; an error when there are none (a typo in the
    /// prefix would otherwise give an optimizer that silently trains nothing).
    pub fn with_prefix(varmap: &VarMap, prefix: &str) -> Result<Self> {
        let dotted = format!("{prefix}.");
        let named = Self::filtered(varmap, |n| n == prefix || n.starts_with(&dotted));
        if named.is_empty() {
            return Err(Error::config("prefix", format!("no variables named `{prefix}.*` in the VarMap")));
        }
        Ok(named)
    }

    /// Unnamed variables (as `candle_nn::Optimizer::new` receives them), named `"0"`, `"1"`, ...
    /// in the given order; non-float variables are left out.
    pub fn from_vars(vars: Vec<Var>) -> Self {
        let vars = vars.into_iter().filter(|v| v.dtype().is_float()).enumerate();
        Self { vars: vars.map(|(i, v)| (i.to_string(), v)).collect() }
    }

    /// Explicit `(name, var)` pairs; names must be unique.
    pub fn from_pairs(pairs: Vec<(String, Var)>) -> Result<Self> {
        let mut vars = pairs;
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        if let Some(w) = vars.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err(Error::config("names", format!("variable name `{}` appears twice", w[0].0)));
        }
        Ok(Self { vars })
    }

    /// Number of variables.
    pub fn len(&self) -> usize {
        self.vars.len()
    }

    /// `true` when there are no variables.
    pub fn is_empty(&self) -> bool {
        self.vars.is_empty()
    }

    /// The names, sorted.
    pub fn names(&self) -> Vec<&str> {
        self.vars.iter().map(|(n, _)| n.as_str()).collect()
    }

    /// The `(name, var)` pairs, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Var)> {
        self.vars.iter().map(|(n, v)| (n.as_str(), v))
    }

    /// The variables, sorted by name.
    pub fn vars(&self) -> Vec<Var> {
        self.vars.iter().map(|(_, v)| v.clone()).collect()
    }

    /// Number of scalar parameters (sum of element counts).
    pub fn num_params(&self) -> usize {
        self.vars.iter().map(|(_, v)| v.elem_count()).sum()
    }

    /// Adds a variable; an error if the name is taken.
    pub fn push(&mut self, name: impl Into<String>, var: Var) -> Result<()> {
        let name = name.into();
        match self.vars.binary_search_by(|(n, _)| n.as_str().cmp(&name)) {
            Ok(_) => Err(Error::config("names", format!("variable name `{name}` appears twice"))),
            Err(pos) => {
                self.vars.insert(pos, (name, var));
                Ok(())
            }
        }
    }
}

/// State that can be exported as named tensors and imported back bit for bit: optimizers
/// (moments, step counts) and EMA weights. Checkpoints store it under a prefix.
pub trait TrainingState {
    /// The whole state as `(name, tensor)` pairs. Scalars (step counts, learning rate) are
    /// 1-element `F64` tensors so that the one checkpoint file holds everything.
    fn state_tensors(&self) -> Result<Vec<(String, Tensor)>>;

    /// Restores the state from tensors named as [`TrainingState::state_tensors`] names them.
    /// Every expected name must be present with the same shape and dtype; an error names the
    /// first one that is missing or differs.
    fn load_state_tensors(&mut self, tensors: &HashMap<String, Tensor>) -> Result<()>;
}

/// A 1-element `F64` tensor holding a scalar of a [`TrainingState`].
pub(crate) fn scalar_tensor(value: f64) -> Result<Tensor> {
    Ok(Tensor::new(&[value], &candle_core::Device::Cpu)?)
}

/// Reads a scalar stored with [`scalar_tensor`].
pub(crate) fn read_scalar(tensors: &HashMap<String, Tensor>, name: &str) -> Result<f64> {
    let t = tensors.get(name).ok_or_else(|| Error::shape("load_state_tensors", format!("missing `{name}`")))?;
    if t.elem_count() != 1 {
        return Err(Error::shape("load_state_tensors", format!("`{name}` should hold one value, has {:?}", t.dims())));
    }
    Ok(t.flatten_all()?.to_dtype(candle_core::DType::F64)?.to_vec1::<f64>()?[0])
}

/// Looks up `name` and checks it has the shape and dtype of `like`, moving it to `like`'s device.
pub(crate) fn read_like(tensors: &HashMap<String, Tensor>, name: &str, like: &Tensor) -> Result<Tensor> {
    let t = tensors.get(name).ok_or_else(|| Error::shape("load_state_tensors", format!("missing `{name}`")))?;
    if t.dims() != like.dims() || t.dtype() != like.dtype() {
        return Err(Error::shape(
            "load_state_tensors",
            format!("`{name}` is {:?} {:?}, expected {:?} {:?}", t.dtype(), t.dims(), like.dtype(), like.dims()),
        ));
    }
    Ok(t.to_device(like.device())?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use candle_nn::VarBuilder;

    #[test]
    fn prefixes_filters_and_duplicates() -> Result<()> {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
        candle_nn::linear(3, 2, vb.pp("g"))?;
        candle_nn::linear(3, 1, vb.pp("gx"))?;
        let g = NamedVars::with_prefix(&vm, "g")?;
        assert_eq!(g.names(), vec!["g.bias", "g.weight"]);
        assert_eq!(g.num_params(), 8);
        assert_eq!(NamedVars::from_varmap(&vm).len(), 4);
        assert!(NamedVars::with_prefix(&vm, "d").is_err());
        let mut n = NamedVars::from_vars(g.vars());
        assert_eq!(n.names(), vec!["0", "1"]);
        assert!(n.push("0", g.vars()[0].clone()).is_err());
        Ok(())
    }
}
