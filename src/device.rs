//! Device and dtype selection for examples and user programs.
//!
//! Nothing in the crate assumes CPU: models follow their `VarBuilder`'s device and dtype. These
//! helpers choose a device at start-up and parse `--dtype` style arguments.

use candle_core::{DType, Device};

use crate::{Error, Result};

/// The device to run on: CUDA device `ordinal` when the crate is built with the `cuda` feature
/// and a GPU is present, else Metal device `ordinal` when built with `metal` on a Mac with
/// Metal, else the CPU.
pub fn best_device(ordinal: usize) -> Result<Device> {
    if candle_core::utils::cuda_is_available() {
        return Ok(Device::new_cuda(ordinal)?);
    }
    if candle_core::utils::metal_is_available() {
        return Ok(Device::new_metal(ordinal)?);
    }
    Ok(Device::Cpu)
}

/// Parses a device name: `cpu`, `cuda`, `cuda:N`, `metal`, `metal:N` or `auto`
/// (see [`best_device`]). Asking for a backend the crate was not built with is an error.
pub fn parse_device(name: &str) -> Result<Device> {
    let lower = name.trim().to_ascii_lowercase();
    let (kind, ordinal) = match lower.split_once(':') {
        Some((k, n)) => {
            let n =
                n.parse::<usize>().map_err(|_| Error::config("device", format!("bad device ordinal in `{name}`")))?;
            (k.to_string(), n)
        }
        None => (lower.clone(), 0),
    };
    match kind.as_str() {
        "auto" => best_device(ordinal),
        "cpu" => Ok(Device::Cpu),
        "cuda" if candle_core::utils::cuda_is_available() => Ok(Device::new_cuda(ordinal)?),
        "metal" if candle_core::utils::metal_is_available() => Ok(Device::new_metal(ordinal)?),
        "cuda" | "metal" => Err(Error::config(
            "device",
            format!("`{name}` is not available: build with `--features {kind}` on a machine that has one"),
        )),
        _ => Err(Error::config("device", format!("unknown device `{name}` (cpu, cuda[:N], metal[:N], auto)"))),
    }
}

/// Parses a floating-point dtype name: `f32`, `f16`, `bf16` or `f64` (case-insensitive).
pub fn parse_dtype(name: &str) -> Result<DType> {
    match name.trim().to_ascii_lowercase().as_str() {
        "f32" | "float32" => Ok(DType::F32),
        "f16" | "float16" | "half" => Ok(DType::F16),
        "bf16" | "bfloat16" => Ok(DType::BF16),
        "f64" | "float64" => Ok(DType::F64),
        _ => Err(Error::config("dtype", format!("unknown dtype `{name}` (f32, f16, bf16, f64)"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_dtypes_and_devices() {
        assert_eq!(parse_dtype("F16").unwrap(), DType::F16);
        assert_eq!(parse_dtype("bf16").unwrap(), DType::BF16);
        assert_eq!(parse_dtype("f32").unwrap(), DType::F32);
        let e = parse_dtype("int8").unwrap_err().to_string();
        assert!(e.contains("dtype") && e.contains("int8"), "{e}");
        assert!(parse_device("cpu").unwrap().is_cpu());
        assert!(parse_device("tpu").is_err());
        assert!(parse_device("cuda:x").is_err());
        #[cfg(not(feature = "cuda"))]
        assert!(parse_device("cuda").is_err());
        #[cfg(not(any(feature = "cuda", feature = "metal")))]
        assert!(best_device(0).unwrap().is_cpu());
    }
}
