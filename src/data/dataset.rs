//! The in-memory image data set every loader returns.

use candle_core::{Device, Tensor};

use crate::{Error, Result};

/// Images with class labels, held as 8-bit pixels in `(N, C, H, W)` order.
///
/// Every loader of the crate (IDX files, image folders, procedural shapes) returns this type, so
/// batching, transforms and the examples work the same on all of them. Pixels stay `u8` in
/// memory (Fashion-MNIST's 60 000 training images take 47 MB) and become tensors per batch.
#[derive(Debug, Clone)]
pub struct ImageDataset {
    name: String,
    pixels: Vec<u8>,
    labels: Vec<u32>,
    channels: usize,
    height: usize,
    width: usize,
    num_classes: usize,
}

/// A train/test pair of data sets.
#[derive(Debug, Clone)]
pub struct Split {
    /// The training images.
    pub train: ImageDataset,
    /// The held-out test images.
    pub test: ImageDataset,
}

impl ImageDataset {
    /// Builds a data set from `N * C * H * W` pixels in `(N, C, H, W)` order and `N` labels,
    /// each below `num_classes` (use one class, label 0, for unlabelled data).
    ///
    /// `name` appears in error messages (a file or directory path, or a description).
    pub fn new(
        name: impl Into<String>,
        pixels: Vec<u8>,
        labels: Vec<u32>,
        (channels, height, width): (usize, usize, usize),
        num_classes: usize,
    ) -> Result<Self> {
        let name = name.into();
        let per_image = channels * height * width;
        if per_image == 0 {
            return Err(Error::data(&name, format!("image shape ({channels}, {height}, {width}) has no pixels")));
        }
        if pixels.len() != labels.len() * per_image {
            return Err(Error::data(
                &name,
                format!(
                    "{} pixels do not make {} images of shape ({channels}, {height}, {width})",
                    pixels.len(),
                    labels.len()
                ),
            ));
        }
        if let Some((i, &l)) = labels.iter().enumerate().find(|(_, &l)| l as usize >= num_classes) {
            return Err(Error::data(&name, format!("label {l} of image {i} is not below num_classes = {num_classes}")));
        }
        Ok(Self { name, pixels, labels, channels, height, width, num_classes })
    }

    /// The data set's name (its path or a description).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Number of images `N`.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// `true` when there are no images.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// `(C, H, W)` of every image.
    pub fn image_shape(&self) -> (usize, usize, usize) {
        (self.channels, self.height, self.width)
    }

    /// Number of classes; labels are in `0..num_classes`.
    pub fn num_classes(&self) -> usize {
        self.num_classes
    }

    /// All pixels, `(N, C, H, W)` row-major, 0..=255.
    pub fn pixels(&self) -> &[u8] {
        &self.pixels
    }

    /// All labels, one per image.
    pub fn labels(&self) -> &[u32] {
        &self.labels
    }

    /// The pixels of image `i` in `(C, H, W)` order, or `None` when out of range.
    pub fn image(&self, i: usize) -> Option<&[u8]> {
        let n = self.channels * self.height * self.width;
        self.pixels.get(i * n..(i + 1) * n)
    }

    /// How many images each class has.
    pub fn label_histogram(&self) -> Vec<usize> {
        let mut h = vec![0; self.num_classes];
        self.labels.iter().for_each(|&l| h[l as usize] += 1);
        h
    }

    fn check_indices(&self, context: &str, indices: &[usize]) -> Result<()> {
        match indices.iter().find(|&&i| i >= self.len()) {
            Some(i) => Err(Error::shape(
                context,
                format!("index {i} is out of range for data set `{}` of {} images", self.name, self.len()),
            )),
            None => Ok(()),
        }
    }

    /// The images at `indices` as a `U8` tensor of shape `(B, C, H, W)`, values 0..=255.
    pub fn images_u8(&self, indices: &[usize], device: &Device) -> Result<Tensor> {
        self.check_indices("ImageDataset::images_u8", indices)?;
        let n = self.channels * self.height * self.width;
        let mut buf = Vec::with_capacity(indices.len() * n);
        for &i in indices {
            buf.extend_from_slice(&self.pixels[i * n..(i + 1) * n]);
        }
        Ok(Tensor::from_vec(buf, (indices.len(), self.channels, self.height, self.width), device)?)
    }

    /// The images at `indices` as an `F32` tensor `(B, C, H, W)` with values in `[0, 1]`
    /// (pixel / 255). Use `data::transforms` to move to `[-1, 1]` or another dtype.
    pub fn images(&self, indices: &[usize], device: &Device) -> Result<Tensor> {
        self.check_indices("ImageDataset::images", indices)?;
        let n = self.channels * self.height * self.width;
        let mut buf = Vec::with_capacity(indices.len() * n);
        for &i in indices {
            buf.extend(self.pixels[i * n..(i + 1) * n].iter().map(|&p| p as f32 / 255.0));
        }
        Ok(Tensor::from_vec(buf, (indices.len(), self.channels, self.height, self.width), device)?)
    }

    /// The labels at `indices` as a `U32` tensor of shape `(B,)`.
    pub fn labels_tensor(&self, indices: &[usize], device: &Device) -> Result<Tensor> {
        self.check_indices("ImageDataset::labels_tensor", indices)?;
        let v: Vec<u32> = indices.iter().map(|&i| self.labels[i]).collect();
        Ok(Tensor::from_vec(v, indices.len(), device)?)
    }

    /// A new data set with the images at `indices`, in that order (repeats allowed).
    pub fn subset(&self, indices: &[usize]) -> Result<Self> {
        self.check_indices("ImageDataset::subset", indices)?;
        let n = self.channels * self.height * self.width;
        let mut pixels = Vec::with_capacity(indices.len() * n);
        let mut labels = Vec::with_capacity(indices.len());
        for &i in indices {
            pixels.extend_from_slice(&self.pixels[i * n..(i + 1) * n]);
            labels.push(self.labels[i]);
        }
        Ok(Self { pixels, labels, ..self.clone_meta() })
    }

    /// The indices of the images whose label is in `classes`.
    pub fn indices_of_classes(&self, classes: &[u32]) -> Vec<usize> {
        (0..self.len()).filter(|&i| classes.contains(&self.labels[i])).collect()
    }

    /// The first `n` images (all when `n >= len`).
    pub fn take(&self, n: usize) -> Self {
        let n = n.min(self.len());
        let per = self.channels * self.height * self.width;
        Self { pixels: self.pixels[..n * per].to_vec(), labels: self.labels[..n].to_vec(), ..self.clone_meta() }
    }

    fn clone_meta(&self) -> Self {
        Self {
            name: self.name.clone(),
            pixels: Vec::new(),
            labels: Vec::new(),
            channels: self.channels,
            height: self.height,
            width: self.width,
            num_classes: self.num_classes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> ImageDataset {
        // Three 1x2x2 images whose pixels encode their index.
        let pixels = vec![0, 1, 2, 3, 10, 11, 12, 13, 20, 21, 22, 23];
        ImageDataset::new("tiny", pixels, vec![0, 1, 1], (1, 2, 2), 2).unwrap()
    }

    #[test]
    fn batches_pick_the_right_images() -> Result<()> {
        let d = tiny();
        let x = d.images_u8(&[2, 0], &Device::Cpu)?;
        assert_eq!(x.dims(), &[2, 1, 2, 2]);
        assert_eq!(x.flatten_all()?.to_vec1::<u8>()?, vec![20, 21, 22, 23, 0, 1, 2, 3]);
        let f = d.images(&[1], &Device::Cpu)?.flatten_all()?.to_vec1::<f32>()?;
        assert_eq!(f, vec![10.0 / 255.0, 11.0 / 255.0, 12.0 / 255.0, 13.0 / 255.0]);
        assert_eq!(d.labels_tensor(&[0, 2], &Device::Cpu)?.to_vec1::<u32>()?, vec![0, 1]);
        assert_eq!(d.label_histogram(), vec![1, 2]);
        let s = d.subset(&d.indices_of_classes(&[1]))?;
        assert_eq!(s.len(), 2);
        assert_eq!(s.image(0).unwrap(), &[10, 11, 12, 13]);
        assert_eq!(d.take(1).pixels(), &[0, 1, 2, 3]);
        Ok(())
    }

    #[test]
    fn bad_input_is_an_error() {
        assert!(ImageDataset::new("x", vec![0; 5], vec![0], (1, 2, 2), 1).is_err());
        assert!(ImageDataset::new("x", vec![0; 4], vec![3], (1, 2, 2), 2).is_err());
        assert!(ImageDataset::new("x", vec![], vec![], (0, 2, 2), 1).is_err());
        let e = tiny().images(&[3], &Device::Cpu).unwrap_err().to_string();
        assert!(e.contains("index 3") && e.contains("tiny"), "{e}");
    }
}
