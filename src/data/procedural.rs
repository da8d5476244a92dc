//! A procedural data set of shapes, generated from a seed: no download, any size.
//!
//! Each image is one filled shape on a black background: a disc (class 0), a square
//! (class 1) or a triangle (class 2), of random size, position, rotation and intensity
//! (a random colour for 3 channels). Edges are anti-aliased by 4x4 supersampling. The examples
//! fall back to this set when Fashion-MNIST is not installed, and the tests train on it.

use serde::{Deserialize, Serialize};

use super::{ImageDataset, Split};
use crate::rng::Rng;
use crate::{Error, Result};

/// The shape classes, in label order.
pub const SHAPE_CLASSES: [&str; 3] = ["disc", "square", "triangle"];

/// What to generate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShapesConfig {
    /// Image height and width in pixels (at least 8).
    pub size: usize,
    /// 1 (grey) or 3 (RGB).
    pub channels: usize,
    /// Number of images.
    pub count: usize,
    /// Smallest shape radius as a fraction of half the image size, in `(0, max_radius]`.
    pub min_radius: f64,
    /// Largest shape radius as a fraction of half the image size, at most 1.
    pub max_radius: f64,
    /// The seed: the same config gives the same images.
    pub seed: u64,
}

impl Default for ShapesConfig {
    /// 28x28 grey, 10 000 images, radii 35%..90% of half the image, seed 0.
    fn default() -> Self {
        Self { size: 28, channels: 1, count: 10_000, min_radius: 0.35, max_radius: 0.9, seed: 0 }
    }
}

impl ShapesConfig {
    fn validate(&self) -> Result<()> {
        if self.size < 8 {
            return Err(Error::config("ShapesConfig.size", format!("must be >= 8, got {}", self.size)));
        }
        if self.channels != 1 && self.channels != 3 {
            return Err(Error::config("ShapesConfig.channels", format!("must be 1 or 3, got {}", self.channels)));
        }
        if self.count == 0 {
            return Err(Error::config("ShapesConfig.count", "must be > 0"));
        }
        if !(self.min_radius > 0.0 && self.min_radius <= self.max_radius && self.max_radius <= 1.0) {
            return Err(Error::config(
                "ShapesConfig.min_radius/max_radius",
                format!("need 0 < min_radius <= max_radius <= 1, got {} and {}", self.min_radius, self.max_radius),
            ));
        }
        Ok(())
    }
}

/// Generates the shapes data set described by `cfg` (3 classes, labels cycle 0, 1, 2 so the
/// classes are balanced).
pub fn shapes(cfg: &ShapesConfig) -> Result<ImageDataset> {
    cfg.validate()?;
    let mut rng = Rng::new(cfg.seed);
    let (s, c) = (cfg.size, cfg.channels);
    let mut pixels = Vec::with_capacity(cfg.count * c * s * s);
    let mut labels = Vec::with_capacity(cfg.count);
    for i in 0..cfg.count {
        let class = (i % 3) as u32;
        let half = s as f64 / 2.0;
        let radius = half * (cfg.min_radius + (cfg.max_radius - cfg.min_radius) * rng.uniform_f64());
        // Keep the shape inside the image: its centre is at least `radius` from each border.
        let slack = (half - radius).max(0.0);
        let cx = half + slack * (2.0 * rng.uniform_f64() - 1.0);
        let cy = half + slack * (2.0 * rng.uniform_f64() - 1.0);
        let angle = std::f64::consts::TAU * rng.uniform_f64();
        let colour: Vec<f64> = if c == 1 {
            vec![0.5 + 0.5 * rng.uniform_f64()]
        } else {
            (0..3).map(|_| 0.2 + 0.8 * rng.uniform_f64()).collect()
        };
        let shape = Shape::new(class, cx, cy, radius, angle);
        let cover = shape.coverage(s);
        for col in &colour {
            pixels.extend(cover.iter().map(|&a| (a * col * 255.0).round() as u8));
        }
        labels.push(class);
    }
    ImageDataset::new(format!("procedural shapes (seed {})", cfg.seed), pixels, labels, (c, s, s), 3)
}

/// A train/test pair of shapes data sets with different seeds (`seed` and `seed + 1`).
pub fn shapes_split(train_count: usize, test_count: usize, size: usize, channels: usize, seed: u64) -> Result<Split> {
    let base = ShapesConfig { size, channels, ..ShapesConfig::default() };
    Ok(Split {
        train: shapes(&ShapesConfig { count: train_count, seed, ..base.clone() })?,
        test: shapes(&ShapesConfig { count: test_count, seed: seed.wrapping_add(1), ..base })?,
    })
}

/// One shape in pixel coordinates.
struct Shape {
    class: u32,
    cx: f64,
    cy: f64,
    radius: f64,
    cos: f64,
    sin: f64,
}

impl Shape {
    fn new(class: u32, cx: f64, cy: f64, radius: f64, angle: f64) -> Self {
        Self { class, cx, cy, radius, cos: angle.cos(), sin: angle.sin() }
    }

    fn contains(&self, x: f64, y: f64) -> bool {
        // Rotate the point into the shape's frame, scaled so the circumradius is 1.
        let (dx, dy) = ((x - self.cx) / self.radius, (y - self.cy) / self.radius);
        let (u, v) = (self.cos * dx + self.sin * dy, -self.sin * dx + self.cos * dy);
        match self.class {
            0 => u * u + v * v <= 1.0,
            1 => u.abs() <= std::f64::consts::FRAC_1_SQRT_2 && v.abs() <= std::f64::consts::FRAC_1_SQRT_2,
            _ => {
                // Equilateral triangle, vertices counter-clockwise on the unit circle at 90, 210 and 330
                // degrees: inside means left of every edge.
                let h = 3f64.sqrt() / 2.0;
                let verts = [(0.0, 1.0), (-h, -0.5), (h, -0.5)];
                (0..3).all(|k| {
                    let (a, b) = (verts[k], verts[(k + 1) % 3]);
                    (b.0 - a.0) * (v - a.1) - (b.1 - a.1) * (u - a.0) >= 0.0
                })
            }
        }
    }

    /// Fraction of each pixel of an `s x s` image covered by the shape (4x4 samples per pixel).
    fn coverage(&self, s: usize) -> Vec<f64> {
        const SUB: usize = 4;
        let mut out = Vec::with_capacity(s * s);
        for py in 0..s {
            for px in 0..s {
                let mut hits = 0;
                for sy in 0..SUB {
                    for sx in 0..SUB {
                        let x = px as f64 + (sx as f64 + 0.5) / SUB as f64;
                        let y = py as f64 + (sy as f64 + 0.5) / SUB as f64;
                        hits += self.contains(x, y) as usize;
                    }
                }
                out.push(hits as f64 / (SUB * SUB) as f64);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_balanced_and_in_range() -> Result<()> {
        let cfg = ShapesConfig { count: 300, ..ShapesConfig::default() };
        let a = shapes(&cfg)?;
        assert_eq!(a.len(), 300);
        assert_eq!(a.image_shape(), (1, 28, 28));
        assert_eq!(a.label_histogram(), vec![100, 100, 100]);
        assert_eq!(a.pixels(), shapes(&cfg)?.pixels());
        assert_ne!(a.pixels(), shapes(&ShapesConfig { seed: 1, ..cfg.clone() })?.pixels());
        // Each image has a shape on a black background: some bright pixels, black corners mostly.
        for i in 0..a.len() {
            let img = a.image(i).unwrap();
            assert!(img.iter().any(|&p| p > 100), "image {i} is empty");
            assert!(img.iter().filter(|&&p| p == 0).count() > 100, "image {i} has no background");
        }
        Ok(())
    }

    #[test]
    fn disc_area_matches_pi_r_squared() {
        // A disc of radius 10 centred in a 32x32 image covers pi * 100 pixels.
        let cover = Shape::new(0, 16.0, 16.0, 10.0, 0.0).coverage(32);
        let area: f64 = cover.iter().sum();
        assert!((area - std::f64::consts::PI * 100.0).abs() < 3.0, "area {area}");
        // A square inscribed in the unit circle has side sqrt(2) r, area 2 r^2.
        let area: f64 = Shape::new(1, 16.0, 16.0, 10.0, 0.3).coverage(32).iter().sum();
        assert!((area - 200.0).abs() < 3.0, "area {area}");
        // An equilateral triangle inscribed in a circle of radius r has area 3 sqrt(3)/4 r^2.
        let area: f64 = Shape::new(2, 16.0, 16.0, 10.0, 1.0).coverage(32).iter().sum();
        assert!((area - 75.0 * 3f64.sqrt()).abs() < 3.0, "area {area}");
    }

    #[test]
    fn rgb_and_config_errors() -> Result<()> {
        let d = shapes(&ShapesConfig { channels: 3, size: 16, count: 6, ..ShapesConfig::default() })?;
        assert_eq!(d.image_shape(), (3, 16, 16));
        for bad in [
            ShapesConfig { size: 4, ..ShapesConfig::default() },
            ShapesConfig { channels: 2, ..ShapesConfig::default() },
            ShapesConfig { count: 0, ..ShapesConfig::default() },
            ShapesConfig { min_radius: 0.9, max_radius: 0.5, ..ShapesConfig::default() },
        ] {
            assert!(matches!(shapes(&bad), Err(Error::Config { .. })));
        }
        let s = shapes_split(30, 9, 28, 1, 4)?;
        assert_eq!((s.train.len(), s.test.len()), (30, 9));
        Ok(())
    }
}
