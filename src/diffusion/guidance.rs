//! Classifier-free guidance (Ho & Salimans 2022): one network trained both with labels and with a
//! "null" label ([`drop_labels`]), then sampled with the extrapolation [`Guided`].

use candle_core::{DType, Tensor};

use super::denoiser::Denoiser;
use crate::losses::diffusion::Prediction;
use crate::rng::Rng;
use crate::{Error, Result};

/// Label dropout for classifier-free guidance training: each label of `labels` (`(B,)` `U32`) is
/// replaced by `null_class` with probability `p` in `[0, 1]` (paper: 0.1 to 0.2), drawing from `rng`.
pub fn drop_labels(labels: &Tensor, p: f64, null_class: u32, rng: &mut Rng) -> Result<Tensor> {
    if labels.rank() != 1 || labels.dtype() != DType::U32 {
        return Err(Error::shape(
            "drop_labels",
            format!("labels must be (B,) U32, got {:?} {:?}", labels.dims(), labels.dtype()),
        ));
    }
    if !(0.0..=1.0).contains(&p) {
        return Err(Error::config("label_dropout", format!("must be in [0, 1], got {p}")));
    }
    let v: Vec<u32> = labels.to_vec1::<u32>()?.into_iter().map(|l| if rng.coin(p) { null_class } else { l }).collect();
    Ok(Tensor::from_vec(v, labels.dims()[0], labels.device())?)
}

/// A conditional [`Denoiser`] sampled with classifier-free guidance:
/// `out = out(x, t, null) + scale · (out(x, t, c) - out(x, t, null))`.
///
/// `scale = 1` is the plain conditional model, `scale = 0` the unconditional one, `scale > 1` trades
/// diversity for fidelity (the paper's `w` is `scale - 1`). The combination is linear in the output,
/// so it applies to epsilon, x0 and v predictions alike. Both passes run as one batch of `2B`.
/// The condition passed to [`Denoiser::predict`] must be `(B,)` `U32` labels.
#[derive(Debug, Clone, Copy)]
pub struct Guided<D> {
    /// The conditional network (trained with label dropout to `null_class`).
    pub inner: D,
    /// The label the network was trained to treat as "no label".
    pub null_class: u32,
    /// The guidance scale (3.0 is a usual choice).
    pub scale: f64,
}

impl<D: Denoiser> Denoiser for Guided<D> {
    fn prediction(&self) -> Prediction {
        self.inner.prediction()
    }

    fn predict(&self, x_t: &Tensor, t: &Tensor, cond: Option<&Tensor>) -> Result<Tensor> {
        let Some(labels) = cond else {
            return Err(Error::shape("Guided::predict", "classifier-free guidance needs labels"));
        };
        if self.scale == 1.0 {
            return self.inner.predict(x_t, t, Some(labels));
        }
        let b = x_t.dims()[0];
        let null = Tensor::full(self.null_class, b, labels.device())?;
        let x2 = Tensor::cat(&[x_t, x_t], 0)?;
        let t2 = Tensor::cat(&[t, t], 0)?;
        let c2 = Tensor::cat(&[labels, &null], 0)?;
        let out = self.inner.predict(&x2, &t2, Some(&c2))?;
        let (cond_out, uncond) = (out.narrow(0, 0, b)?, out.narrow(0, b, b)?);
        Ok((&uncond + (cond_out - &uncond)?.affine(self.scale, 0.0)?)?)
    }
}
