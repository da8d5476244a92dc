//! Folders of PNG/JPEG images as an [`ImageDataset`]: the user's own data, CycleGAN domains.
//!
//! Two layouts are read, as torchvision's `ImageFolder` does for the first:
//! ```text
//! labelled/            flat/
//!   cat/ a.png           a.png
//!   dog/ b.jpg           b.jpg
//! ```
//! A folder of subdirectories is a labelled set (one class per subdirectory, in name order,
//! images found at any depth below it); a folder of image files is a single class.

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};

use image::imageops::{self, FilterType};
use image::{ImageBuffer, Pixel};

use super::ImageDataset;
use crate::io::image_grid::decode_image;
use crate::{Error, Result};

/// The file extensions read (compared case-insensitively); other files are ignored.
pub const IMAGE_EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

/// The resampling filter: a tent filter whose support widens when shrinking, so downscaled
/// images are averaged over their source area instead of aliased.
const FILTER: FilterType = FilterType::Triangle;

/// How an image whose size differs from [`ImageFolderOptions::size`] is fitted to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ResizeMode {
    /// Resize both axes independently to the target size (the aspect ratio may change).
    Stretch,
    /// Scale so that the image covers the target size with its aspect ratio kept (the shorter
    /// side, relative to the target, fits exactly), then keep the centre.
    #[default]
    CenterCrop,
}

/// What [`load_image_folder`] makes of every image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageFolderOptions {
    /// Target `(H, W)` in pixels, both > 0.
    pub size: (usize, usize),
    /// 1 (grey, RGB converted with the sRGB luma weights) or 3 (RGB, grey replicated).
    pub channels: usize,
    /// How images of another size are fitted to `size`.
    pub resize: ResizeMode,
}

impl Default for ImageFolderOptions {
    /// 64 x 64 RGB, centre-cropped.
    fn default() -> Self {
        Self { size: (64, 64), channels: 3, resize: ResizeMode::CenterCrop }
    }
}

impl ImageFolderOptions {
    /// Checks `size` (both sides in `1..=u32::MAX`) and `channels` (1 or 3); returns
    /// `Error::Config` naming the field.
    pub fn validate(&self) -> Result<()> {
        let (h, w) = self.size;
        if h == 0 || w == 0 || u32::try_from(h).is_err() || u32::try_from(w).is_err() {
            return Err(Error::config(
                "ImageFolderOptions.size",
                format!("(H, W) must both be in 1..={}, got ({h}, {w})", u32::MAX),
            ));
        }
        if self.channels != 1 && self.channels != 3 {
            return Err(Error::config("ImageFolderOptions.channels", format!("must be 1 or 3, got {}", self.channels)));
        }
        Ok(())
    }
}

/// An image folder loaded into memory.
#[derive(Debug, Clone)]
pub struct ImageFolder {
    /// The images, `(N, C, H, W)` 8-bit with `(C, H, W) = (channels, size.0, size.1)`, and
    /// their labels; `num_classes = class_names.len()`.
    pub dataset: ImageDataset,
    /// The class of label `i` is `class_names[i]`: the subdirectory names in sorted order, or the
    /// folder's own name for a flat folder.
    pub class_names: Vec<String>,
}

/// Loads every `.png`, `.jpg` and `.jpeg` file (any letter case, format detected from the
/// content) of `dir` into memory, converted to `opts.channels` and fitted to `opts.size`.
///
/// When `dir` holds subdirectories, each is a class (sorted by name, label = index; hidden
/// entries starting with `.` are skipped) and its images are searched recursively; when it
/// holds image files only, they form class 0, named after the folder. Images are ordered by
/// class, then by path, so the result is deterministic. Pixels are 0..=255; call
/// `dataset.images(..)` for `F32` tensors in `[0, 1]`.
///
/// Errors: `Error::Config` for bad options; `Error::Io` when `dir` (or a file) cannot be read;
/// `Error::Data` when there are no images, or when image files and subdirectories are mixed at
/// the top level; `Error::Image` naming the file that cannot be decoded.
pub fn load_image_folder(dir: impl AsRef<Path>, opts: &ImageFolderOptions) -> Result<ImageFolder> {
    let dir = dir.as_ref();
    opts.validate()?;
    let (subdirs, files) = list_dir(dir)?;

    let (class_names, class_files) = if subdirs.is_empty() {
        (vec![folder_name(dir)], vec![files])
    } else if !files.is_empty() {
        return Err(Error::data(
            dir,
            format!(
                "holds both image files (e.g. {}) and class subdirectories (e.g. {}); use one layout",
                files[0].display(),
                subdirs[0].display()
            ),
        ));
    } else {
        let mut names = Vec::with_capacity(subdirs.len());
        let mut per_class = Vec::with_capacity(subdirs.len());
        for sub in &subdirs {
            names.push(folder_name(sub));
            let mut found = Vec::new();
            collect_images(sub, &mut found)?;
            found.sort();
            per_class.push(found);
        }
        (names, per_class)
    };

    let total: usize = class_files.iter().map(Vec::len).sum();
    if total == 0 {
        let searched =
            if subdirs.is_empty() { String::new() } else { format!(" in its {} class subdirectories", subdirs.len()) };
        return Err(Error::data(
            dir,
            format!("no image files (extensions {}, any case) found{searched}", IMAGE_EXTENSIONS.join(", ")),
        ));
    }

    let (h, w) = opts.size;
    let per_image = opts.channels * h * w;
    let mut pixels = Vec::with_capacity(total * per_image);
    let mut labels = Vec::with_capacity(total);
    for (label, files) in class_files.iter().enumerate() {
        for file in files {
            let img = decode_image(file)?;
            let chw =
                if opts.channels == 1 { fit_to_size(&img.to_luma8(), opts) } else { fit_to_size(&img.to_rgb8(), opts) };
            pixels.extend_from_slice(&chw);
            // At most one class per directory entry, far below u32::MAX.
            labels.push(label as u32);
        }
    }
    let dataset =
        ImageDataset::new(dir.display().to_string(), pixels, labels, (opts.channels, h, w), class_names.len())?;
    Ok(ImageFolder { dataset, class_names })
}

/// The non-hidden subdirectories and image files directly in `dir`, each sorted by path.
fn list_dir(dir: &Path) -> Result<(Vec<PathBuf>, Vec<PathBuf>)> {
    let mut subdirs = Vec::new();
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let path = entry.map_err(|e| Error::io(dir, e))?.path();
        if path.file_name().and_then(OsStr::to_str).is_some_and(|n| n.starts_with('.')) {
            continue;
        }
        if path.is_dir() {
            subdirs.push(path);
        } else if is_image_file(&path) {
            files.push(path);
        }
    }
    subdirs.sort();
    files.sort();
    Ok((subdirs, files))
}

/// Appends the image files below `dir` at any depth; symbolic links to directories are not
/// followed below the class level, so a link cycle cannot loop.
fn collect_images(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let path = entry.path();
        if path.file_name().and_then(OsStr::to_str).is_some_and(|n| n.starts_with('.')) {
            continue;
        }
        let file_type = entry.file_type().map_err(|e| Error::io(&path, e))?;
        if file_type.is_dir() {
            collect_images(&path, out)?;
        } else if !(file_type.is_symlink() && path.is_dir()) && is_image_file(&path) {
            out.push(path);
        }
    }
    Ok(())
}

fn is_image_file(path: &Path) -> bool {
    path.extension()
        .and_then(OsStr::to_str)
        .is_some_and(|ext| IMAGE_EXTENSIONS.iter().any(|known| ext.eq_ignore_ascii_case(known)))
}

/// The last component of `dir`, resolving `.` and `..` when possible.
fn folder_name(dir: &Path) -> String {
    let resolved = dir
        .file_name()
        .map(PathBuf::from)
        .or_else(|| fs::canonicalize(dir).ok().and_then(|p| p.file_name().map(PathBuf::from)));
    match resolved {
        Some(name) => name.to_string_lossy().into_owned(),
        None => dir.display().to_string(),
    }
}

/// Fits an 8-bit image to `opts.size` and returns its pixels in `(C, H, W)` order.
fn fit_to_size<P>(img: &ImageBuffer<P, Vec<u8>>, opts: &ImageFolderOptions) -> Vec<u8>
where
    P: Pixel<Subpixel = u8> + 'static,
{
    // `validate` proved both sides fit in u32.
    let (h, w) = (opts.size.0 as u32, opts.size.1 as u32);
    let (w0, h0) = img.dimensions();
    let fitted = if (w0, h0) == (w, h) {
        img.clone()
    } else {
        match opts.resize {
            ResizeMode::Stretch => imageops::resize(img, w, h, FILTER),
            ResizeMode::CenterCrop => {
                // Scale s = max(w / w0, h / h0) covers the target; cropping the source to the
                // target's size divided by s before resizing is the same as resizing then
                // cropping, but resamples fewer pixels and lands exactly on (w, h).
                let scale = f64::max(f64::from(w) / f64::from(w0), f64::from(h) / f64::from(h0));
                let crop_w = ((f64::from(w) / scale).round() as u32).clamp(1, w0);
                let crop_h = ((f64::from(h) / scale).round() as u32).clamp(1, h0);
                let view = imageops::crop_imm(img, (w0 - crop_w) / 2, (h0 - crop_h) / 2, crop_w, crop_h);
                if (crop_w, crop_h) == (w, h) {
                    view.to_image()
                } else {
                    imageops::resize(&*view, w, h, FILTER)
                }
            }
        }
    };
    interleaved_to_planar(fitted.as_raw(), P::CHANNEL_COUNT as usize)
}

/// `(H, W, C)` interleaved bytes to `(C, H, W)` planes.
fn interleaved_to_planar(hwc: &[u8], channels: usize) -> Vec<u8> {
    if channels == 1 {
        return hwc.to_vec();
    }
    let n = hwc.len() / channels;
    let mut chw = vec![0u8; hwc.len()];
    for (i, px) in hwc.chunks_exact(channels).enumerate() {
        for (c, &v) in px.iter().enumerate() {
            chw[c * n + i] = v;
        }
    }
    chw
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use image::{GrayImage, Luma, Rgb, RgbImage};

    /// Labelled layout: `circles/` holds two grey 4x4 images, `squares/` two RGB 8x4 (W x H)
    /// images whose left half is red and right half blue, plus a text file to ignore.
    fn labelled_folder() -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        let circles = root.path().join("circles");
        let squares = root.path().join("squares");
        fs::create_dir_all(&circles).unwrap();
        fs::create_dir_all(&squares).unwrap();
        GrayImage::from_pixel(4, 4, Luma([10])).save(circles.join("b.png")).unwrap();
        GrayImage::from_pixel(4, 4, Luma([200])).save(circles.join("a.PNG")).unwrap();
        let half = |x: u32, _y: u32| if x < 4 { Rgb([255, 0, 0]) } else { Rgb([0, 0, 255]) };
        RgbImage::from_fn(8, 4, half).save_with_format(squares.join("x.png"), image::ImageFormat::Png).unwrap();
        // PNG bytes under a .jpeg name: the format is detected from the content.
        RgbImage::from_fn(8, 4, half).save_with_format(squares.join("y.jpeg"), image::ImageFormat::Png).unwrap();
        fs::write(squares.join("notes.txt"), "not an image").unwrap();
        root
    }

    #[test]
    fn labelled_folder_stretch() -> Result<()> {
        let root = labelled_folder();
        let opts = ImageFolderOptions { size: (4, 4), channels: 3, resize: ResizeMode::Stretch };
        let folder = load_image_folder(root.path(), &opts)?;
        assert_eq!(folder.class_names, vec!["circles", "squares"]);
        let d = &folder.dataset;
        assert_eq!(d.len(), 4);
        assert_eq!(d.image_shape(), (3, 4, 4));
        assert_eq!(d.num_classes(), 2);
        assert_eq!(d.labels(), &[0, 0, 1, 1]);
        // Sorted by path: a.PNG (200) before b.png (10); grey replicated into R, G and B.
        assert!(d.image(0).unwrap().iter().all(|&p| p == 200));
        assert!(d.image(1).unwrap().iter().all(|&p| p == 10));
        // The 8x4 stretched to 4x4: red on the left column, blue on the right one.
        let sq = d.image(2).unwrap();
        let (r, b) = (&sq[0..16], &sq[32..48]);
        assert_eq!((r[4], b[4]), (255, 0), "left column");
        assert_eq!((r[7], b[7]), (0, 255), "right column");
        let t = d.images(&[2], &Device::Cpu)?;
        assert_eq!(t.dims(), &[1, 3, 4, 4]);
        Ok(())
    }

    #[test]
    fn labelled_folder_center_crop_grey() -> Result<()> {
        let root = labelled_folder();
        let opts = ImageFolderOptions { size: (4, 4), channels: 1, resize: ResizeMode::CenterCrop };
        let folder = load_image_folder(root.path(), &opts)?;
        let d = &folder.dataset;
        assert_eq!(d.image_shape(), (1, 4, 4));
        assert_eq!(d.labels(), &[0, 0, 1, 1]);
        assert_eq!(d.image(0).unwrap(), &[200; 16]);
        // The 8x4 keeps its centre columns 2..6: two red then two blue, as sRGB luma
        // 0.2126 * 255 = 54 and 0.0722 * 255 = 18.
        let sq = d.image(2).unwrap();
        for row in sq.chunks(4) {
            assert!(row[0].abs_diff(54) <= 1 && row[1].abs_diff(54) <= 1, "{sq:?}");
            assert!(row[2].abs_diff(18) <= 1 && row[3].abs_diff(18) <= 1, "{sq:?}");
        }
        Ok(())
    }

    #[test]
    fn center_crop_scales_then_keeps_the_centre() -> Result<()> {
        let root = tempfile::tempdir().unwrap();
        // 24 wide, 8 high: columns 8..16 white, the rest black. Scaled by 1/2 to 12x4, its
        // centre 4x4 is the white band.
        let img = GrayImage::from_fn(24, 8, |x, _| Luma([if (8..16).contains(&x) { 255 } else { 0 }]));
        img.save(root.path().join("wide.png")).unwrap();
        let crop = ImageFolderOptions { size: (4, 4), channels: 1, resize: ResizeMode::CenterCrop };
        let d = load_image_folder(root.path(), &crop)?.dataset;
        assert_eq!(d.image(0).unwrap(), &[255; 16]);
        let stretch = ImageFolderOptions { resize: ResizeMode::Stretch, ..crop };
        let d = load_image_folder(root.path(), &stretch)?.dataset;
        let px = d.image(0).unwrap();
        assert!(px[0] < 60 && px[3] < 60 && px[1] > 60 && px[2] > 60, "{px:?}");
        Ok(())
    }

    #[test]
    fn flat_folder_is_one_class_named_after_it() -> Result<()> {
        let root = tempfile::tempdir().unwrap();
        let flat = root.path().join("horses");
        fs::create_dir(&flat).unwrap();
        RgbImage::from_pixel(5, 3, Rgb([0, 255, 0])).save(flat.join("2.png")).unwrap();
        RgbImage::from_pixel(6, 6, Rgb([10, 20, 30])).save(flat.join("1.JPG")).unwrap();
        fs::write(flat.join(".hidden.png"), b"ignored").unwrap();
        let folder = load_image_folder(&flat, &ImageFolderOptions { size: (3, 3), ..Default::default() })?;
        assert_eq!(folder.class_names, vec!["horses"]);
        assert_eq!(folder.dataset.labels(), &[0, 0]);
        assert_eq!(folder.dataset.num_classes(), 1);
        // 1.JPG comes first; JPEG is lossy, so compare within a few levels.
        let first = folder.dataset.image(0).unwrap();
        for (c, want) in [10u8, 20, 30].into_iter().enumerate() {
            assert!(first[c * 9..(c + 1) * 9].iter().all(|p| p.abs_diff(want) <= 4), "{first:?}");
        }
        let second = folder.dataset.image(1).unwrap();
        assert_eq!(&second[9..18], &[255; 9]);
        Ok(())
    }

    #[test]
    fn corrupt_file_is_an_image_error_naming_it() {
        let root = labelled_folder();
        let bad = root.path().join("squares").join("broken.png");
        fs::write(&bad, b"\x89PNG\r\n\x1a\ntruncated").unwrap();
        let e = load_image_folder(root.path(), &ImageFolderOptions::default()).unwrap_err();
        assert!(matches!(e, Error::Image { .. }), "{e}");
        assert!(e.to_string().contains("broken.png"), "{e}");
    }

    #[test]
    fn empty_or_missing_folders_and_bad_options_are_refused() {
        let root = tempfile::tempdir().unwrap();
        let e = load_image_folder(root.path(), &ImageFolderOptions::default()).unwrap_err();
        assert!(matches!(e, Error::Data { .. }) && e.to_string().contains("png, jpg, jpeg"), "{e}");

        fs::create_dir(root.path().join("empty_class")).unwrap();
        fs::write(root.path().join("empty_class").join("readme.txt"), "x").unwrap();
        let e = load_image_folder(root.path(), &ImageFolderOptions::default()).unwrap_err();
        assert!(matches!(e, Error::Data { .. }), "{e}");

        let missing = root.path().join("nope");
        let e = load_image_folder(&missing, &ImageFolderOptions::default()).unwrap_err();
        assert!(matches!(e, Error::Io { .. }) && e.to_string().contains("nope"), "{e}");

        GrayImage::new(2, 2).save(root.path().join("loose.png")).unwrap();
        let e = load_image_folder(root.path(), &ImageFolderOptions::default()).unwrap_err();
        assert!(matches!(e, Error::Data { .. }) && e.to_string().contains("both"), "{e}");

        for (opts, field) in [
            (ImageFolderOptions { channels: 2, ..Default::default() }, "channels"),
            (ImageFolderOptions { size: (0, 8), ..Default::default() }, "size"),
        ] {
            match load_image_folder(root.path(), &opts) {
                Err(Error::Config { field: f, .. }) => assert!(f.contains(field)),
                other => panic!("expected a config error for {field}, got {other:?}"),
            }
        }
    }

    #[test]
    fn class_images_are_found_in_nested_folders() -> Result<()> {
        let root = tempfile::tempdir().unwrap();
        let nested = root.path().join("a").join("deep");
        fs::create_dir_all(&nested).unwrap();
        fs::create_dir_all(root.path().join("b")).unwrap();
        GrayImage::from_pixel(2, 2, Luma([7])).save(nested.join("x.png")).unwrap();
        GrayImage::from_pixel(2, 2, Luma([9])).save(root.path().join("b").join("y.png")).unwrap();
        let opts = ImageFolderOptions { size: (2, 2), channels: 1, resize: ResizeMode::Stretch };
        let folder = load_image_folder(root.path(), &opts)?;
        assert_eq!(folder.class_names, vec!["a", "b"]);
        assert_eq!(folder.dataset.pixels(), &[7, 7, 7, 7, 9, 9, 9, 9]);
        assert_eq!(folder.dataset.labels(), &[0, 1]);
        Ok(())
    }
}
