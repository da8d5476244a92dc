//! Process tuning for training binaries (examples and benches; a library cannot choose these for
//! its users, see docs/performance.md).
//!
//! - glibc's malloc serves blocks above an adaptive threshold (128 KiB rising to 32 MiB) with
//!   fresh `mmap`s and unmaps them on free, so every training step page-faults its activations and
//!   gradients back in: 7-15 % of a step of the bench models here. Fixing the mmap threshold at its
//!   maximum and never trimming the heap keeps freed blocks for the next step.
//! - candle 0.11 asks for its thread count on every CPU matmul and, unless `RAYON_NUM_THREADS` is
//!   set, counts physical cores by reading `/proc/cpuinfo` each time. Setting the variable once
//!   (to the cores this process may use) turns that into an environment lookup.

/// Applies both tunings; call it first in `main`, before any other thread exists.
#[allow(dead_code)]
pub fn tune_for_training() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; it is called before any other thread
    // exists, and a refused value leaves the defaults in place.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        // candle's own default (physical cores), computed once.
        let cores = candle_core::utils::get_num_threads();
        // Before any other thread exists, so no concurrent reader of the environment.
        std::env::set_var("RAYON_NUM_THREADS", cores.to_string());
    }
}
