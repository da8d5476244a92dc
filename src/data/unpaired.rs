//! Unpaired two-domain data for image-to-image translation (CycleGAN, Zhu et al. 2017): two
//! image folders, or two disjoint parts of one labelled data set.

use std::path::Path;

use candle_core::{Device, Tensor};

use super::batcher::Batcher;
use super::image_folder::{load_image_folder, ImageFolderOptions};
use super::transforms::to_signed;
use super::ImageDataset;
use crate::rng::Rng;
use crate::{Error, Result};

/// Two image sets, domain A and domain B, with no pairing between them. Both hold images of one
/// size `(H, W)` (the channels may differ).
#[derive(Debug, Clone)]
pub struct UnpairedDomains {
    /// The images of domain A.
    pub a: ImageDataset,
    /// The images of domain B.
    pub b: ImageDataset,
}

impl UnpairedDomains {
    /// Two domains; `Error::Data` when one is empty or their image sizes `(H, W)` differ.
    pub fn new(a: ImageDataset, b: ImageDataset) -> Result<Self> {
        for d in [&a, &b] {
            if d.is_empty() {
                return Err(Error::data(d.name(), "domain has no images"));
            }
        }
        let ((_, ha, wa), (_, hb, wb)) = (a.image_shape(), b.image_shape());
        if (ha, wa) != (hb, wb) {
            return Err(Error::data(
                b.name(),
                format!("domain B images are {hb}x{wb} but domain A images ({}) are {ha}x{wa}", a.name()),
            ));
        }
        Ok(Self { a, b })
    }

    /// Domain A from the PNG/JPEG images in `dir_a`, domain B from `dir_b` (any depth; see
    /// [`load_image_folder`]), both converted and fitted by `opts`.
    pub fn from_folders(dir_a: impl AsRef<Path>, dir_b: impl AsRef<Path>, opts: &ImageFolderOptions) -> Result<Self> {
        Self::new(load_image_folder(dir_a, opts)?.dataset, load_image_folder(dir_b, opts)?.dataset)
    }

    /// Domain A = the images of `dataset` whose label is in `classes_a`, domain B = those in
    /// `classes_b` (e.g. Fashion-MNIST's sneakers vs. ankle boots). The class sets must be
    /// disjoint (`Error::Config`), so no image is in both domains.
    pub fn from_classes(dataset: &ImageDataset, classes_a: &[u32], classes_b: &[u32]) -> Result<Self> {
        if let Some(c) = classes_a.iter().find(|c| classes_b.contains(c)) {
            return Err(Error::config("classes_b", format!("class {c} is in both domains")));
        }
        Self::new(
            dataset.subset(&dataset.indices_of_classes(classes_a))?,
            dataset.subset(&dataset.indices_of_classes(classes_b))?,
        )
    }

    /// Splits the images of `dataset` whose label is in `classes` (every image when `classes` is
    /// empty) into two disjoint halves in a random order drawn from `seed`: domain A gets the
    /// first `ceil(n / 2)`, domain B the rest, so no image is in both. Apply a known mapping to
    /// one half ([`invert`]) to get a translation task whose answer is known.
    pub fn split_disjoint(dataset: &ImageDataset, classes: &[u32], seed: u64) -> Result<Self> {
        let mut indices = if classes.is_empty() {
            (0..dataset.len()).collect::<Vec<_>>()
        } else {
            dataset.indices_of_classes(classes)
        };
        if indices.len() < 2 {
            return Err(Error::data(
                dataset.name(),
                format!("{} images cannot be split into two domains", indices.len()),
            ));
        }
        Rng::new(seed).shuffle(&mut indices);
        let half = indices.len().div_ceil(2);
        Self::new(dataset.subset(&indices[..half])?, dataset.subset(&indices[half..])?)
    }
}

/// The same images with every pixel inverted, `255 - p` (`1 - x` in `[0, 1]`, `-x` in
/// `[-1, 1]`); the name gains `" (inverted)"`.
pub fn invert(dataset: &ImageDataset) -> Result<ImageDataset> {
    let pixels = dataset.pixels().iter().map(|&p| 255 - p).collect();
    ImageDataset::new(
        format!("{} (inverted)", dataset.name()),
        pixels,
        dataset.labels().to_vec(),
        dataset.image_shape(),
        dataset.num_classes(),
    )
}

/// Seeded shuffled batches from both domains at once: step `s` gives batch `s` of domain A's and
/// of domain B's own [`Batcher`] (seeds `seed` and `seed + 1`, last partial batches dropped), so
/// the batches depend only on `(seed, s)` and a resumed run sees the same ones.
#[derive(Debug, Clone)]
pub struct UnpairedBatcher {
    a: Batcher,
    b: Batcher,
}

impl UnpairedBatcher {
    /// Batches of `batch_size` from `domains`; `Error::Config` for `batch_size = 0`.
    pub fn new(domains: &UnpairedDomains, batch_size: usize, seed: u64) -> Result<Self> {
        Ok(Self {
            a: Batcher::new(domains.a.len(), batch_size, seed)?.drop_last(true),
            b: Batcher::new(domains.b.len(), batch_size, seed.wrapping_add(1))?.drop_last(true),
        })
    }

    /// The indices into domain A and into domain B of step `step`.
    pub fn indices_at_step(&self, step: u64) -> (Vec<usize>, Vec<usize>) {
        (self.a.batch_at_step(step), self.b.batch_at_step(step))
    }

    /// The images of step `step`, `(B, C_a, H, W)` and `(B, C_b, H, W)` `F32` in `[-1, 1]` on
    /// `device`.
    pub fn batch_at_step(&self, domains: &UnpairedDomains, step: u64, device: &Device) -> Result<(Tensor, Tensor)> {
        let (ia, ib) = self.indices_at_step(step);
        Ok((to_signed(&domains.a.images(&ia, device)?)?, to_signed(&domains.b.images(&ib, device)?)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labelled(n: usize) -> Result<ImageDataset> {
        // Image i is 1x2x2 with every pixel i, label i % 3.
        let pixels = (0..n).flat_map(|i| [i as u8; 4]).collect();
        ImageDataset::new("labelled", pixels, (0..n as u32).map(|i| i % 3).collect(), (1, 2, 2), 3)
    }

    #[test]
    fn domains_never_share_an_image() -> Result<()> {
        let d = labelled(30)?;
        let split = UnpairedDomains::split_disjoint(&d, &[0, 2], 7)?;
        let ids = |s: &ImageDataset| (0..s.len()).map(|i| s.image(i).unwrap()[0]).collect::<Vec<_>>();
        let (a, b) = (ids(&split.a), ids(&split.b));
        assert_eq!(a.len() + b.len(), 20);
        assert!(a.iter().all(|i| !b.contains(i) && i % 3 != 1));
        let by_class = UnpairedDomains::from_classes(&d, &[0], &[1, 2])?;
        assert_eq!((by_class.a.len(), by_class.b.len()), (10, 20));
        assert!(matches!(UnpairedDomains::from_classes(&d, &[0, 1], &[1]), Err(Error::Config { .. })));
        let inv = invert(&split.b)?;
        assert_eq!(inv.image(0).unwrap()[0], 255 - split.b.image(0).unwrap()[0]);
        Ok(())
    }

    #[test]
    fn batches_are_seeded_and_in_range() -> Result<()> {
        let d = UnpairedDomains::split_disjoint(&labelled(30)?, &[], 1)?;
        let batcher = UnpairedBatcher::new(&d, 4, 3)?;
        let (a, b) = batcher.batch_at_step(&d, 5, &Device::Cpu)?;
        assert_eq!((a.dims(), b.dims()), (&[4, 1, 2, 2][..], &[4, 1, 2, 2][..]));
        assert_eq!(batcher.indices_at_step(5), UnpairedBatcher::new(&d, 4, 3)?.indices_at_step(5));
        assert!(a.flatten_all()?.to_vec1::<f32>()?.iter().all(|v| (-1.0..=1.0).contains(v)));
        let other = ImageDataset::new("big", vec![0; 9], vec![0], (1, 3, 3), 1)?;
        assert!(UnpairedDomains::new(d.a.clone(), other).is_err());
        Ok(())
    }
}
