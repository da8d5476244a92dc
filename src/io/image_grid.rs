//! Image grids: a batch of images tiled into one PNG, and PNG/JPEG files read back as tensors.
//!
//! [`make_grid`] lays a `(B, C, H, W)` batch out row by row with padding around and between the
//! tiles, the layout of torchvision's `make_grid`; [`save_grid`] writes it as a PNG;
//! [`GridWriter`] does that every `n` training steps with numbered file names; [`load_png`]
//! reads an image file back as a `(C, H, W)` tensor in `[0, 1]`.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use image::{DynamicImage, GrayImage, ImageError, ImageFormat, ImageReader, RgbImage};

use crate::{Error, Result};

/// How [`make_grid`] lays out and scales a batch of images.
#[derive(Debug, Clone, PartialEq)]
pub struct GridOptions {
    /// Images per row of the grid (> 0); the grid has `ceil(B / nrow)` rows.
    pub nrow: usize,
    /// Pixels of padding around the grid and between the tiles.
    pub padding: usize,
    /// The padding's value, in the same units as the images (clamped into `range`).
    pub pad_value: f32,
    /// The value range `(low, high)` mapped to pixel values `0..=255`; values outside are
    /// clamped. `(-1, 1)` for the crate's images, `(0, 1)` for data-set images.
    pub range: (f32, f32),
}

impl Default for GridOptions {
    /// Eight images per row, two pixels of black padding, range `(-1, 1)`.
    fn default() -> Self {
        Self { nrow: 8, padding: 2, pad_value: -1.0, range: (-1.0, 1.0) }
    }
}

impl GridOptions {
    /// Checks the options: `nrow > 0`, `range` finite with `low < high`, `pad_value` not NaN.
    /// Returns `Error::Config` naming the field at fault.
    pub fn validate(&self) -> Result<()> {
        if self.nrow == 0 {
            return Err(Error::config("GridOptions.nrow", "must be > 0, got 0"));
        }
        let (low, high) = self.range;
        if !low.is_finite() || !high.is_finite() || low >= high {
            return Err(Error::config(
                "GridOptions.range",
                format!("must be finite with low < high, got ({low}, {high})"),
            ));
        }
        if self.pad_value.is_nan() {
            return Err(Error::config("GridOptions.pad_value", "must not be NaN"));
        }
        Ok(())
    }

    /// Maps a value of `range` to a pixel: clamp, scale to `0..=255`, round. NaN becomes 0.
    fn to_pixel(&self, v: f32) -> u8 {
        if v.is_nan() {
            return 0;
        }
        let (low, high) = self.range;
        let unit = (v.clamp(low, high) - low) / (high - low);
        (unit * 255.0).round().clamp(0.0, 255.0) as u8
    }
}

/// Tiles a batch of images into one image, torchvision's `make_grid` layout.
///
/// `images` is `(B, C, H, W)` with `B >= 1`, `C` = 1 (grey) or 3 (RGB), of any dtype and on any
/// device (it is copied to the CPU as `f32`). Values in `opts.range` map linearly to `0..=255`
/// (clamped, rounded; NaN becomes 0). Image `i` goes to row `i / nrow`, column `i % nrow`; the
/// result is `rows * (H + padding) + padding` pixels high and `cols * (W + padding) + padding`
/// wide, with `cols = min(nrow, B)` and `rows = ceil(B / cols)`. Returns a grey (`Luma8`)
/// image for `C = 1` and an `Rgb8` image for `C = 3`.
pub fn make_grid(images: &Tensor, opts: &GridOptions) -> Result<DynamicImage> {
    grid_image("make_grid", images, opts)
}

fn grid_image(context: &str, images: &Tensor, opts: &GridOptions) -> Result<DynamicImage> {
    opts.validate()?;
    let (b, c, h, w) = match *images.dims() {
        [b, c, h, w] if b > 0 && (c == 1 || c == 3) && h > 0 && w > 0 => (b, c, h, w),
        _ => {
            return Err(Error::shape(
                context,
                format!(
                    "expected images of shape (B, C, H, W) with B, H, W > 0 and C = 1 or 3, got {:?}",
                    images.dims()
                ),
            ))
        }
    };
    let values = images.to_device(&Device::Cpu)?.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;

    let cols = opts.nrow.min(b);
    let rows = b.div_ceil(cols);
    let pad = opts.padding;
    let grid_w = cols * (w + pad) + pad;
    let grid_h = rows * (h + pad) + pad;
    let (grid_w32, grid_h32) = match (u32::try_from(grid_w), u32::try_from(grid_h)) {
        (Ok(gw), Ok(gh)) => (gw, gh),
        _ => return Err(Error::shape(context, format!("a grid of {grid_h} x {grid_w} pixels is too large"))),
    };

    // Interleaved (H, W, C) bytes, as the image crate stores them.
    let mut pixels = vec![opts.to_pixel(opts.pad_value); grid_w * grid_h * c];
    for i in 0..b {
        let top = pad + (i / cols) * (h + pad);
        let left = pad + (i % cols) * (w + pad);
        for ch in 0..c {
            let plane = &values[(i * c + ch) * h * w..(i * c + ch + 1) * h * w];
            for y in 0..h {
                let row_start = ((top + y) * grid_w + left) * c + ch;
                for x in 0..w {
                    pixels[row_start + x * c] = opts.to_pixel(plane[y * w + x]);
                }
            }
        }
    }

    // The buffer length is grid_w * grid_h * c by construction, so `from_raw` cannot fail.
    let size_mismatch = || Error::shape(context, "internal error: grid buffer size mismatch");
    Ok(if c == 1 {
        DynamicImage::ImageLuma8(GrayImage::from_raw(grid_w32, grid_h32, pixels).ok_or_else(size_mismatch)?)
    } else {
        DynamicImage::ImageRgb8(RgbImage::from_raw(grid_w32, grid_h32, pixels).ok_or_else(size_mismatch)?)
    })
}

/// Writes [`make_grid`]`(images, opts)` as a PNG file at `path` (whatever its extension),
/// creating missing parent directories, and returns the path.
///
/// `images` is `(B, C, H, W)`, `C` = 1 or 3, any dtype and device, values in `opts.range`.
/// Errors: `Error::Shape` for another shape, `Error::Config` for bad options, `Error::Io` or
/// `Error::Image` naming the path when the file cannot be written.
///
/// ```
/// use candle_core::{Device, Tensor};
/// use candle_generative::io::{save_grid, GridOptions};
///
/// # fn main() -> candle_generative::Result<()> {
/// // Sixteen 8x8 RGB images in [-1, 1], four per row.
/// let images = Tensor::randn(0f32, 0.5, (16, 3, 8, 8), &Device::Cpu)?;
/// let opts = GridOptions { nrow: 4, ..GridOptions::default() };
/// let path = std::env::temp_dir().join("candle_generative_doc").join("samples.png");
/// let written = save_grid(&path, &images, &opts)?;
/// assert_eq!(written, path);
/// assert!(path.exists());
/// # std::fs::remove_file(&path).ok();
/// # Ok(())
/// # }
/// ```
pub fn save_grid(path: impl AsRef<Path>, images: &Tensor, opts: &GridOptions) -> Result<PathBuf> {
    let path = path.as_ref();
    let grid = grid_image("save_grid", images, opts)?;
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    }
    grid.save_with_format(path, ImageFormat::Png).map_err(|e| image_error(path, e))?;
    Ok(path.to_path_buf())
}

/// Reads a PNG or JPEG file (format detected from its content) as an `F32` tensor of shape
/// `(C, H, W)` with values in `[0, 1]` on `device`.
///
/// `C` = 1 for grey images and 3 for colour ones; an alpha channel is dropped, 16-bit images
/// keep their precision. Errors: `Error::Io` when the file cannot be read, `Error::Image` when
/// it cannot be decoded, both naming the path.
pub fn load_png(path: impl AsRef<Path>, device: &Device) -> Result<Tensor> {
    let path = path.as_ref();
    let img = decode_image(path)?;
    let (w, h) = (img.width() as usize, img.height() as usize);
    if img.color().has_color() {
        let rgb = img.to_rgb32f().into_raw();
        // The decoder gives interleaved (H, W, 3); the crate's layout is (C, H, W).
        Ok(Tensor::from_vec(rgb, (h, w, 3), device)?.permute((2, 0, 1))?.contiguous()?)
    } else {
        Ok(Tensor::from_vec(img.to_luma32f().into_raw(), (1, h, w), device)?)
    }
}

/// Opens and decodes an image file, detecting the format from its content; errors name `path`.
pub(crate) fn decode_image(path: &Path) -> Result<DynamicImage> {
    let reader = ImageReader::open(path).map_err(|e| Error::io(path, e))?;
    let reader = reader.with_guessed_format().map_err(|e| Error::io(path, e))?;
    let img = reader.decode().map_err(|e| image_error(path, e))?;
    if img.width() == 0 || img.height() == 0 {
        return Err(Error::image(path, "image has no pixels"));
    }
    Ok(img)
}

fn image_error(path: &Path, e: ImageError) -> Error {
    match e {
        ImageError::IoError(io) => Error::io(path, io),
        other => Error::image(path, other.to_string()),
    }
}

/// Writes sample grids during training: `dir/{prefix}_{step:07}.png` every `every` steps.
///
/// ```no_run
/// # use candle_generative::io::GridWriter;
/// # fn main() -> candle_generative::Result<()> {
/// # let samples = candle_core::Tensor::zeros((4, 1, 28, 28), candle_core::DType::F32, &candle_core::Device::Cpu)?;
/// let writer = GridWriter::new("runs/ddpm/samples", "ddpm", 500)?;
/// for step in 0..=1000u64 {
///     // ... a training step ...
///     writer.maybe_write(step, &samples)?; // writes ddpm_0000000.png, ddpm_0000500.png, ...
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct GridWriter {
    /// Directory the grids go to (created on the first write).
    pub dir: PathBuf,
    /// File name prefix.
    pub prefix: String,
    /// Write on steps that are multiples of this (> 0).
    pub every: u64,
    /// Layout and value range of the grids.
    pub options: GridOptions,
}

impl GridWriter {
    /// A writer into `dir` with default [`GridOptions`]; `every = 0` is an `Error::Config`.
    pub fn new(dir: impl Into<PathBuf>, prefix: impl Into<String>, every: u64) -> Result<Self> {
        check_every(every)?;
        Ok(Self { dir: dir.into(), prefix: prefix.into(), every, options: GridOptions::default() })
    }

    /// The same writer with other grid options.
    pub fn with_options(mut self, options: GridOptions) -> Self {
        self.options = options;
        self
    }

    /// The file a grid of `step` goes to: `dir/{prefix}_{step:07}.png`.
    pub fn path_for(&self, step: u64) -> PathBuf {
        self.dir.join(format!("{}_{step:07}.png", self.prefix))
    }

    /// Writes the grid of `images` (`(B, C, H, W)`, values in `options.range`) when
    /// `step % every == 0` and returns its path; otherwise does nothing and returns `None`.
    pub fn maybe_write(&self, step: u64, images: &Tensor) -> Result<Option<PathBuf>> {
        check_every(self.every)?;
        if step % self.every == 0 {
            self.write(step, images).map(Some)
        } else {
            Ok(None)
        }
    }

    /// Writes the grid of `images` (`(B, C, H, W)`, values in `options.range`) for `step`
    /// whatever the step, and returns its path.
    pub fn write(&self, step: u64, images: &Tensor) -> Result<PathBuf> {
        save_grid(self.path_for(step), images, &self.options)
    }
}

fn check_every(every: u64) -> Result<()> {
    if every == 0 {
        return Err(Error::config("GridWriter.every", "must be > 0, got 0"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values on the 8-bit grid of [-1, 1] so the round trip is exact up to 1/255.
    fn known_batch(b: usize, c: usize, h: usize, w: usize) -> Vec<f32> {
        (0..b * c * h * w).map(|i| ((i * 37) % 256) as f32 / 255.0 * 2.0 - 1.0).collect()
    }

    #[test]
    fn grey_grid_round_trip() -> Result<()> {
        let dir = tempfile::tempdir().unwrap();
        let (b, c, h, w) = (4, 1, 3, 5);
        let src = known_batch(b, c, h, w);
        let images = Tensor::from_vec(src.clone(), (b, c, h, w), &Device::Cpu)?;
        let opts = GridOptions { nrow: 2, padding: 1, ..GridOptions::default() };
        let path = save_grid(dir.path().join("nested/deeper/grid.png"), &images, &opts)?;
        let grid = load_png(&path, &Device::Cpu)?;
        let (gh, gw) = ((h + 1) * 2 + 1, (w + 1) * 2 + 1);
        assert_eq!(grid.dims(), &[1, gh, gw]);
        let g = grid.flatten_all()?.to_vec1::<f32>()?;
        let mut is_tile = vec![false; gh * gw];
        for i in 0..b {
            let (top, left) = (1 + (i / 2) * (h + 1), 1 + (i % 2) * (w + 1));
            for y in 0..h {
                for x in 0..w {
                    let expected = (src[(i * h + y) * w + x] + 1.0) / 2.0;
                    let got = g[(top + y) * gw + left + x];
                    assert!((got - expected).abs() <= 1.0 / 255.0 + 1e-6, "image {i} ({y},{x}): {got} vs {expected}");
                    is_tile[(top + y) * gw + left + x] = true;
                }
            }
        }
        // Padding is pad_value = -1, i.e. black.
        for (p, _) in g.iter().zip(&is_tile).filter(|(_, &t)| !t) {
            assert_eq!(*p, 0.0);
        }
        Ok(())
    }

    #[test]
    fn rgb_grid_round_trip_with_partial_last_row() -> Result<()> {
        let dir = tempfile::tempdir().unwrap();
        let (b, c, h, w) = (3, 3, 4, 2);
        let src = known_batch(b, c, h, w);
        let images = Tensor::from_vec(src.clone(), (b, c, h, w), &Device::Cpu)?;
        let opts = GridOptions { nrow: 2, padding: 2, pad_value: 1.0, range: (-1.0, 1.0) };
        let path = save_grid(dir.path().join("rgb.png"), &images, &opts)?;
        let grid = load_png(&path, &Device::Cpu)?;
        let (gh, gw) = (2 * (h + 2) + 2, 2 * (w + 2) + 2);
        assert_eq!(grid.dims(), &[3, gh, gw]);
        let g = grid.flatten_all()?.to_vec1::<f32>()?;
        for i in 0..b {
            let (top, left) = (2 + (i / 2) * (h + 2), 2 + (i % 2) * (w + 2));
            for ch in 0..c {
                for y in 0..h {
                    for x in 0..w {
                        let expected = (src[((i * c + ch) * h + y) * w + x] + 1.0) / 2.0;
                        let got = g[(ch * gh + top + y) * gw + left + x];
                        assert!((got - expected).abs() <= 1.0 / 255.0 + 1e-6);
                    }
                }
            }
        }
        // The missing fourth tile and the border are white padding in every channel.
        let (top, left) = (2 + h + 2, 2 + w + 2);
        for ch in 0..3 {
            assert_eq!(g[(ch * gh + top) * gw + left], 1.0);
            assert_eq!(g[ch * gh * gw], 1.0);
        }
        Ok(())
    }

    #[test]
    fn values_are_clamped_and_nan_does_not_panic() -> Result<()> {
        let x = Tensor::from_vec(vec![-5.0f32, 5.0, f32::NAN, 0.0], (1, 1, 1, 4), &Device::Cpu)?;
        let opts = GridOptions { nrow: 1, padding: 0, ..GridOptions::default() };
        let img = make_grid(&x, &opts)?;
        assert_eq!(img.to_luma8().into_raw(), vec![0, 255, 0, 128]);
        let unit = GridOptions { range: (0.0, 1.0), pad_value: 0.0, ..opts };
        let x = Tensor::from_vec(vec![0.5f32], (1, 1, 1, 1), &Device::Cpu)?;
        assert_eq!(make_grid(&x, &unit)?.to_luma8().into_raw(), vec![128]);
        Ok(())
    }

    #[test]
    fn half_precision_input_works() -> Result<()> {
        let src = known_batch(2, 3, 2, 2);
        let x = Tensor::from_vec(src.clone(), (2, 3, 2, 2), &Device::Cpu)?;
        let opts = GridOptions::default();
        let reference = make_grid(&x, &opts)?.to_rgb8().into_raw();
        for dtype in [DType::F16, DType::BF16, DType::F64] {
            let img = make_grid(&x.to_dtype(dtype)?, &opts)?;
            assert_eq!((img.width(), img.height()), (2 * 4 + 2, 2 + 2 + 2));
            let got = img.to_rgb8().into_raw();
            // bf16 keeps 8 bits of mantissa: allow one grey level of difference.
            assert!(got.iter().zip(&reference).all(|(a, b)| a.abs_diff(*b) <= 1), "{dtype:?}");
        }
        Ok(())
    }

    #[test]
    fn bad_shapes_are_shape_errors() -> Result<()> {
        let dir = tempfile::tempdir().unwrap();
        let opts = GridOptions::default();
        let rank3 = Tensor::zeros((3, 8, 8), DType::F32, &Device::Cpu)?;
        let e = save_grid(dir.path().join("a.png"), &rank3, &opts).unwrap_err();
        assert!(matches!(e, Error::Shape { .. }), "{e}");
        let msg = e.to_string();
        assert!(msg.contains("save_grid") && msg.contains("[3, 8, 8]"), "{msg}");
        let two_channels = Tensor::zeros((2, 2, 8, 8), DType::F32, &Device::Cpu)?;
        let e = make_grid(&two_channels, &opts).unwrap_err();
        assert!(matches!(e, Error::Shape { .. }) && e.to_string().contains("make_grid"), "{e}");
        assert!(e.to_string().contains("[2, 2, 8, 8]"), "{e}");
        let empty = Tensor::zeros((0, 1, 8, 8), DType::F32, &Device::Cpu)?;
        assert!(matches!(make_grid(&empty, &opts), Err(Error::Shape { .. })));
        assert!(!dir.path().join("a.png").exists());
        Ok(())
    }

    #[test]
    fn bad_options_are_config_errors() -> Result<()> {
        let x = Tensor::zeros((1, 1, 2, 2), DType::F32, &Device::Cpu)?;
        let cases = [
            (GridOptions { nrow: 0, ..GridOptions::default() }, "nrow"),
            (GridOptions { range: (1.0, 1.0), ..GridOptions::default() }, "range"),
            (GridOptions { range: (1.0, -1.0), ..GridOptions::default() }, "range"),
            (GridOptions { range: (0.0, f32::INFINITY), ..GridOptions::default() }, "range"),
            (GridOptions { range: (f32::NAN, 1.0), ..GridOptions::default() }, "range"),
            (GridOptions { pad_value: f32::NAN, ..GridOptions::default() }, "pad_value"),
        ];
        for (opts, field) in cases {
            match make_grid(&x, &opts) {
                Err(Error::Config { field: f, .. }) => assert!(f.contains(field), "{f} vs {field}"),
                other => panic!("expected a config error for {field}, got {other:?}"),
            }
        }
        assert!(matches!(GridWriter::new("x", "p", 0), Err(Error::Config { .. })));
        Ok(())
    }

    #[test]
    fn unwritable_path_names_the_path() -> Result<()> {
        let dir = tempfile::tempdir().unwrap();
        // A regular file where a parent directory should be.
        let blocker = dir.path().join("file");
        std::fs::write(&blocker, b"x").unwrap();
        let x = Tensor::zeros((1, 1, 2, 2), DType::F32, &Device::Cpu)?;
        let e = save_grid(blocker.join("grid.png"), &x, &GridOptions::default()).unwrap_err();
        assert!(matches!(e, Error::Io { .. } | Error::Image { .. }), "{e}");
        assert!(e.to_string().contains(&*blocker.to_string_lossy()), "{e}");
        Ok(())
    }

    #[test]
    fn load_png_reports_missing_and_corrupt_files() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.png");
        let e = load_png(&missing, &Device::Cpu).unwrap_err();
        assert!(matches!(e, Error::Io { .. }) && e.to_string().contains("missing.png"), "{e}");
        let corrupt = dir.path().join("corrupt.png");
        std::fs::write(&corrupt, b"\x89PNG\r\n\x1a\nnot really").unwrap();
        let e = load_png(&corrupt, &Device::Cpu).unwrap_err();
        assert!(matches!(e, Error::Image { .. }) && e.to_string().contains("corrupt.png"), "{e}");
    }

    #[test]
    fn load_png_drops_alpha_and_reads_jpeg() -> Result<()> {
        let dir = tempfile::tempdir().unwrap();
        let rgba = image::RgbaImage::from_fn(3, 2, |x, y| image::Rgba([x as u8 * 100, y as u8 * 200, 50, 7]));
        let path = dir.path().join("rgba.png");
        rgba.save(&path).unwrap();
        let t = load_png(&path, &Device::Cpu)?;
        assert_eq!(t.dims(), &[3, 2, 3]);
        let v = t.to_vec3::<f32>()?;
        assert_eq!(v[0][1][2], 200.0 / 255.0);
        assert_eq!(v[1][1][0], 200.0 / 255.0);
        assert_eq!(v[2][0][0], 50.0 / 255.0);
        let grey = GrayImage::from_pixel(4, 4, image::Luma([128]));
        let jpeg = dir.path().join("grey.jpg");
        grey.save(&jpeg).unwrap();
        let t = load_png(&jpeg, &Device::Cpu)?;
        assert_eq!(t.dims(), &[1, 4, 4]);
        assert!(t.flatten_all()?.to_vec1::<f32>()?.iter().all(|v| (v - 128.0 / 255.0).abs() < 3.0 / 255.0));
        Ok(())
    }

    #[test]
    fn grid_writer_writes_on_multiples_of_every() -> Result<()> {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("samples");
        let writer = GridWriter::new(&out, "gan", 5)?.with_options(GridOptions { nrow: 2, ..GridOptions::default() });
        let x = Tensor::zeros((4, 3, 4, 4), DType::F32, &Device::Cpu)?;
        let mut written = Vec::new();
        for step in 0..=12u64 {
            if let Some(p) = writer.maybe_write(step, &x)? {
                written.push(p);
            }
        }
        let expected: Vec<PathBuf> = [0, 5, 10].iter().map(|s| out.join(format!("gan_{s:07}.png"))).collect();
        assert_eq!(written, expected);
        assert_eq!(expected[1].file_name().unwrap(), "gan_0000005.png");
        let mut on_disk: Vec<_> = std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().path()).collect();
        on_disk.sort();
        assert_eq!(on_disk, expected);
        assert_eq!(writer.write(7, &x)?, out.join("gan_0000007.png"));
        assert!(out.join("gan_0000007.png").exists());
        assert_eq!(load_png(&expected[0], &Device::Cpu)?.dims(), &[3, 2 * 6 + 2, 2 * 6 + 2]);
        Ok(())
    }
}
