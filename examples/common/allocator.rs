//! Allocator tuning for training binaries (examples and benches; a library cannot choose this for
//! its users, see docs/performance.md).
//!
//! glibc's malloc serves blocks above an adaptive threshold (128 KiB rising to 32 MiB) with fresh
//! `mmap`s and unmaps them on free, so every training step page-faults its activations and
//! gradients back in: 7-15 % of a step of the bench models here. Fixing the mmap threshold at its
//! maximum and never trimming the heap keeps freed blocks for the next step.

/// Keeps freed memory in the process for reuse (glibc on Linux; a no-op elsewhere).
#[allow(dead_code)]
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; it is called before any other thread
    // exists, and a refused value leaves the defaults in place.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}
