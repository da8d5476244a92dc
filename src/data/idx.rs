//! The IDX file format of MNIST and Fashion-MNIST, raw or gzip-compressed.
//!
//! IDX (LeCun, Bottou, Bengio and Haffner, 1998, "Gradient-based learning applied to document
//! recognition", the format of the MNIST files) stores one n-dimensional array:
//!
//! | bytes            | content                                                   |
//! |------------------|-----------------------------------------------------------|
//! | 0, 1             | zero                                                      |
//! | 2                | element type: `0x08` unsigned byte (the only one read here) |
//! | 3                | number of dimensions `d`, 1..=4 here                      |
//! | 4 .. 4 + 4d      | each dimension, a big-endian `u32`                        |
//! | then             | the elements, row-major, exactly the product of the dims  |
//!
//! [`read_idx`] recognises gzip by its magic bytes (`1f 8b`), whatever the file is called, and
//! refuses every malformation (bad magic, other element types, truncation, trailing bytes,
//! corrupt gzip, impossible dimensions) with an [`Error::Data`] that names
//! the file, instead of panicking or returning a short array.
//!
//! ```
//! use candle_generative::data::idx::{read_idx, write_idx};
//! # fn main() -> candle_generative::Result<()> {
//! let dir = tempfile::tempdir().unwrap();
//! let path = dir.path().join("two-images-idx3-ubyte.gz");
//! write_idx(&path, &[2, 2, 3], &[0, 1, 2, 3, 4, 5, 250, 251, 252, 253, 254, 255])?;
//! let array = read_idx(&path)?;
//! assert_eq!(array.dims, vec![2, 2, 3]);
//! assert_eq!(array.data[6], 250);
//! # Ok(())
//! # }
//! ```

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::Path;

use flate2::read::MultiGzDecoder;
use flate2::write::GzEncoder;
use flate2::Compression;

use crate::{Error, Result};

/// The element type code of unsigned bytes, the only type this module reads and writes.
pub const IDX_TYPE_U8: u8 = 0x08;

/// The largest number of dimensions accepted (MNIST uses 1 for labels and 3 for images).
pub const IDX_MAX_DIMS: usize = 4;

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Deflate cannot expand data by more than about 1032:1, so a gzip file of `n` bytes holds at
/// most this many times `n` bytes; an IDX header claiming more is corrupt, and refusing it up
/// front keeps a broken header from driving a huge read.
const GZIP_MAX_RATIO: u64 = 1100;

/// One array read from an IDX file: its dimensions and its `u8` elements in row-major order.
///
/// `data.len()` is always the product of `dims`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxArray {
    /// The dimensions, outermost first, e.g. `[60000, 28, 28]` for Fashion-MNIST's training images.
    pub dims: Vec<usize>,
    /// The elements, row-major, 0..=255.
    pub data: Vec<u8>,
}

/// Reads an IDX file of unsigned bytes, raw or gzip-compressed (told apart by the gzip magic
/// bytes `1f 8b`, not by the extension).
///
/// Errors: [`Error::Io`] naming the path when the file cannot be read; [`Error::Data`] naming
/// the path for a corrupt gzip stream and for every malformation listed in [`parse_idx`].
pub fn read_idx(path: impl AsRef<Path>) -> Result<IdxArray> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    if bytes.starts_with(&GZIP_MAGIC) {
        let limit = (bytes.len() as u64).saturating_mul(GZIP_MAX_RATIO);
        let mut decoder = MultiGzDecoder::new(bytes.as_slice());
        parse_stream(path, &mut decoder, Body::AtMost(limit), |e| {
            Error::data(path, format!("corrupt or truncated gzip stream: {e}"))
        })
    } else {
        parse_idx(path, &bytes)
    }
}

/// Parses the bytes of an uncompressed IDX file; `name` is the file the bytes came from and
/// appears in the errors.
///
/// Every malformation is an [`Error::Data`] naming `name`: first two bytes not zero (bad
/// magic), an element type other than `0x08` (unsigned byte), 0 or more than
/// [`IDX_MAX_DIMS`] dimensions, a header cut short, dimensions whose product overflows or
/// exceeds the bytes present (reported as a truncated body with expected and found counts),
/// and trailing bytes after the body.
pub fn parse_idx(name: &Path, bytes: &[u8]) -> Result<IdxArray> {
    let mut reader = bytes;
    // Reading from a slice cannot fail; a short slice shows up as a short read.
    parse_stream(name, &mut reader, Body::Exactly(bytes.len() as u64), |e| {
        Error::data(name, format!("read failed: {e}"))
    })
}

/// Writes `data` as an IDX file of unsigned bytes with dimensions `dims`, gzip-compressed when
/// the path ends in `.gz`.
///
/// `dims` must have 1..=[`IDX_MAX_DIMS`] entries, each at most `u32::MAX`, whose product is
/// `data.len()`; otherwise [`Error::Data`] naming the path, and nothing is written.
/// [`Error::Io`] when the file cannot be created or written.
pub fn write_idx(path: impl AsRef<Path>, dims: &[usize], data: &[u8]) -> Result<()> {
    let path = path.as_ref();
    if dims.is_empty() || dims.len() > IDX_MAX_DIMS {
        return Err(Error::data(path, format!("IDX needs 1 to {IDX_MAX_DIMS} dims, got {dims:?}")));
    }
    if let Some(d) = dims.iter().find(|&&d| u32::try_from(d).is_err()) {
        return Err(Error::data(path, format!("dim {d} of {dims:?} does not fit in the u32 of an IDX header")));
    }
    let expected = dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
    if expected != Some(data.len()) {
        return Err(Error::data(path, format!("dims {dims:?} do not match the {} data bytes given", data.len())));
    }
    let mut header = vec![0, 0, IDX_TYPE_U8, dims.len() as u8];
    for &d in dims {
        // Fits: checked against u32 above.
        header.extend_from_slice(&(d as u32).to_be_bytes());
    }
    let file = File::create(path).map_err(|e| Error::io(path, e))?;
    let writer = BufWriter::new(file);
    let io_err = |e| Error::io(path, e);
    if path.extension().is_some_and(|ext| ext == "gz") {
        let mut gz = GzEncoder::new(writer, Compression::default());
        gz.write_all(&header).and_then(|_| gz.write_all(data)).map_err(io_err)?;
        gz.finish().and_then(|mut w| w.flush()).map_err(io_err)
    } else {
        let mut w = writer;
        w.write_all(&header).and_then(|_| w.write_all(data)).and_then(|_| w.flush()).map_err(io_err)
    }
}

/// What is known about the size of the decompressed stream before reading the body.
#[derive(Clone, Copy)]
enum Body {
    /// The whole (uncompressed) file has exactly this many bytes.
    Exactly(u64),
    /// The decompressed stream cannot be longer than this.
    AtMost(u64),
}

/// Reads up to `n` bytes; fewer only at the end of the stream. Decoder errors are passed on.
fn read_up_to(reader: &mut dyn Read, n: u64) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    reader.take(n).read_to_end(&mut buf)?;
    Ok(buf)
}

fn type_name(code: u8) -> &'static str {
    match code {
        0x08 => "unsigned byte",
        0x09 => "signed byte",
        0x0B => "i16",
        0x0C => "i32",
        0x0D => "f32",
        0x0E => "f64",
        _ => "not an IDX type",
    }
}

fn parse_stream(
    name: &Path,
    reader: &mut dyn Read,
    body: Body,
    stream_err: impl Fn(std::io::Error) -> Error,
) -> Result<IdxArray> {
    let prefix = read_up_to(reader, 4).map_err(&stream_err)?;
    if prefix.len() < 4 {
        return Err(Error::data(
            name,
            format!("truncated header: {} bytes, an IDX header needs at least 4", prefix.len()),
        ));
    }
    if prefix[0] != 0 || prefix[1] != 0 {
        return Err(Error::data(
            name,
            format!("bad magic: first two bytes are {:#04x} {:#04x}, IDX needs 0x00 0x00", prefix[0], prefix[1]),
        ));
    }
    let code = prefix[2];
    if code != IDX_TYPE_U8 {
        return Err(Error::data(
            name,
            format!(
                "unsupported element type code {code:#04x} ({}); only 0x08 (unsigned byte) is supported",
                type_name(code)
            ),
        ));
    }
    let ndims = prefix[3] as usize;
    if ndims == 0 || ndims > IDX_MAX_DIMS {
        return Err(Error::data(name, format!("{ndims} dimensions; 1 to {IDX_MAX_DIMS} are supported")));
    }
    let header_len = 4 + 4 * ndims as u64;
    let raw_dims = read_up_to(reader, 4 * ndims as u64).map_err(&stream_err)?;
    if raw_dims.len() < 4 * ndims {
        return Err(Error::data(
            name,
            format!("truncated header: {ndims} dims need {header_len} header bytes, found {}", 4 + raw_dims.len()),
        ));
    }
    let dims: Vec<usize> =
        raw_dims.chunks_exact(4).map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize).collect();
    let expected = dims
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64))
        .filter(|&n| usize::try_from(n).is_ok())
        .ok_or_else(|| Error::data(name, format!("dims {dims:?}: their product overflows")))?;
    match body {
        Body::Exactly(total) => {
            let found = total - header_len;
            if found < expected {
                return Err(Error::data(
                    name,
                    format!("truncated body: dims {dims:?} need {expected} data bytes, found {found}"),
                ));
            }
        }
        Body::AtMost(limit) if expected > limit => {
            return Err(Error::data(
                name,
                format!(
                    "dims {dims:?} claim {expected} data bytes, more than this gzip file can hold \
                     (at most {limit}); the header is corrupt"
                ),
            ));
        }
        Body::AtMost(_) => {}
    }
    // Read one byte past the body so trailing data is noticed, not silently dropped.
    let mut data = read_up_to(reader, expected + 1).map_err(&stream_err)?;
    if (data.len() as u64) < expected {
        return Err(Error::data(
            name,
            format!("truncated body: dims {dims:?} need {expected} data bytes, found {}", data.len()),
        ));
    }
    if data.len() as u64 > expected {
        let rest = std::io::copy(reader, &mut std::io::sink()).map_err(&stream_err)?;
        let count = rest + 1;
        let noun = if count == 1 { "byte" } else { "bytes" };
        return Err(Error::data(name, format!("{count} trailing {noun} after the {expected}-byte body")));
    }
    data.shrink_to_fit();
    Ok(IdxArray { dims, data })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn header(code: u8, dims: &[u32]) -> Vec<u8> {
        let mut h = vec![0, 0, code, dims.len() as u8];
        dims.iter().for_each(|d| h.extend_from_slice(&d.to_be_bytes()));
        h
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut gz = GzEncoder::new(Vec::new(), Compression::default());
        gz.write_all(bytes).unwrap();
        gz.finish().unwrap()
    }

    /// Writes `bytes` to a file called `name` in `dir`, reads it back and returns the message of
    /// the `Error::Data` it must give, after checking that the error names the file.
    fn data_error(dir: &Path, name: &str, bytes: &[u8]) -> String {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        match read_idx(&path) {
            Err(Error::Data { path: p, message }) => {
                assert_eq!(p, path);
                let shown = Error::data(&p, message.clone()).to_string();
                assert!(shown.contains(name), "{shown}");
                message
            }
            other => panic!("{name}: expected Error::Data, got {other:?}"),
        }
    }

    #[test]
    fn raw_and_gzip_round_trip() -> Result<()> {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..2 * 3 * 4).map(|i| (i * 11 % 256) as u8).collect();
        for name in ["a-idx3-ubyte", "a-idx3-ubyte.gz"] {
            let path = dir.path().join(name);
            write_idx(&path, &[2, 3, 4], &data)?;
            let a = read_idx(&path)?;
            assert_eq!(a, IdxArray { dims: vec![2, 3, 4], data: data.clone() });
        }
        let raw = std::fs::read(dir.path().join("a-idx3-ubyte")).unwrap();
        assert_eq!(&raw[..8], &[0, 0, 8, 3, 0, 0, 0, 2]);
        assert_eq!(raw.len(), 4 + 12 + 24);
        let gz = std::fs::read(dir.path().join("a-idx3-ubyte.gz")).unwrap();
        assert_eq!(&gz[..2], &GZIP_MAGIC);
        // Detection is by content: gzip bytes without the extension, raw bytes with it.
        std::fs::write(dir.path().join("gz-no-ext"), &gz).unwrap();
        std::fs::write(dir.path().join("raw-with-ext.gz"), &raw).unwrap();
        assert_eq!(read_idx(dir.path().join("gz-no-ext"))?.data, data);
        assert_eq!(read_idx(dir.path().join("raw-with-ext.gz"))?.data, data);
        // A 1-d array (labels) and an empty one.
        write_idx(dir.path().join("l"), &[3], &[9, 0, 255])?;
        assert_eq!(read_idx(dir.path().join("l"))?, IdxArray { dims: vec![3], data: vec![9, 0, 255] });
        write_idx(dir.path().join("e"), &[0, 28], &[])?;
        assert_eq!(read_idx(dir.path().join("e"))?.dims, vec![0, 28]);
        Ok(())
    }

    #[test]
    fn every_malformation_is_a_data_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let good = [header(8, &[2, 2]), vec![1, 2, 3, 4]].concat();
        assert!(parse_idx(Path::new("good"), &good).is_ok());

        let m = data_error(d, "bad-magic", &[[1, 0].as_slice(), &good[2..]].concat());
        assert!(m.contains("bad magic"), "{m}");
        let m = data_error(d, "float", &[header(0x0D, &[2, 2]), vec![0; 16]].concat());
        assert!(m.contains("0x0d") && m.contains("f32") && m.contains("only 0x08"), "{m}");
        let m = data_error(d, "zero-dims", &header(8, &[]));
        assert!(m.contains("0 dimensions"), "{m}");
        let m = data_error(d, "five-dims", &[header(8, &[1, 1, 1, 1, 1]), vec![0]].concat());
        assert!(m.contains("5 dimensions"), "{m}");
        let m = data_error(d, "short-prefix", &[0, 0, 8]);
        assert!(m.contains("truncated header"), "{m}");
        let m = data_error(d, "short-dims", &good[..9]);
        assert!(m.contains("truncated header") && m.contains("need 12") && m.contains("found 9"), "{m}");
        let m = data_error(d, "short-body", &good[..good.len() - 1]);
        assert!(m.contains("truncated body") && m.contains("need 4") && m.contains("found 3"), "{m}");
        let m = data_error(d, "trailing", &[good.as_slice(), &[7, 7]].concat());
        assert!(m.contains("2 trailing bytes"), "{m}");
        let m = data_error(d, "overflow", &[header(8, &[u32::MAX; 4]), vec![0; 8]].concat());
        assert!(m.contains("overflows"), "{m}");
        let m = data_error(d, "absurd", &[header(8, &[65536, 65536, 65536]), vec![0; 8]].concat());
        assert!(m.contains("need 281474976710656") && m.contains("found 8"), "{m}");
        let m = data_error(d, "empty", &[]);
        assert!(m.contains("truncated header"), "{m}");

        // The same checks apply inside a gzip stream.
        let m = data_error(d, "gz-trailing.gz", &gzip(&[good.as_slice(), &[7]].concat()));
        assert!(m.contains("1 trailing byte after"), "{m}");
        let m = data_error(d, "gz-short-body.gz", &gzip(&good[..good.len() - 2]));
        assert!(m.contains("truncated body") && m.contains("found 2"), "{m}");
        let m = data_error(d, "gz-absurd.gz", &gzip(&[header(8, &[65536, 65536, 16]), vec![0; 8]].concat()));
        assert!(m.contains("more than this gzip file can hold"), "{m}");
        let m = data_error(d, "gz-float.gz", &gzip(&[header(0x0C, &[1]), vec![0; 4]].concat()));
        assert!(m.contains("i32"), "{m}");
    }

    #[test]
    fn corrupt_or_truncated_gzip_is_a_data_error() {
        let dir = tempfile::tempdir().unwrap();
        let body: Vec<u8> = (0..4000u32).map(|i| (i * 7919 % 251) as u8).collect();
        let gz = gzip(&[header(8, &[4000]), body].concat());
        for cut in [3, 12, gz.len() / 2, gz.len() - 4] {
            let m = data_error(dir.path(), &format!("cut-{cut}.gz"), &gz[..cut]);
            assert!(m.contains("gzip"), "cut at {cut}: {m}");
        }
        let mut flipped = gz.clone();
        flipped[gz.len() / 2] ^= 0xff;
        flipped[gz.len() / 2 + 1] ^= 0x5a;
        let m = data_error(dir.path(), "flipped.gz", &flipped);
        assert!(m.contains("gzip"), "{m}");
        // Garbage after a complete gzip member is a second, corrupt member.
        let m = data_error(dir.path(), "garbage-after.gz", &[gz.as_slice(), b"garbage!!!!!"].concat());
        assert!(m.contains("gzip"), "{m}");
    }

    #[test]
    fn missing_file_is_an_io_error_with_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nope-idx1-ubyte");
        match read_idx(&path) {
            Err(e @ Error::Io { .. }) => assert!(e.to_string().contains("nope-idx1-ubyte"), "{e}"),
            other => panic!("expected Error::Io, got {other:?}"),
        }
    }

    #[test]
    fn write_refuses_inconsistent_input() {
        let dir = tempfile::tempdir().unwrap();
        let p: PathBuf = dir.path().join("w");
        assert!(matches!(write_idx(&p, &[2, 2], &[0; 3]), Err(Error::Data { .. })));
        assert!(matches!(write_idx(&p, &[], &[]), Err(Error::Data { .. })));
        assert!(matches!(write_idx(&p, &[1; 5], &[0]), Err(Error::Data { .. })));
        assert!(!p.exists());
        let missing_dir = dir.path().join("no-such-dir").join("w");
        assert!(matches!(write_idx(&missing_dir, &[1], &[0]), Err(Error::Io { .. })));
    }
}
