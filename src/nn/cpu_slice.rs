//! The contiguous slice of a CPU storage that a layout describes, for the crate's custom ops.

use candle_core::Layout;

/// `data[start..end]` of a contiguous `layout`; an error naming `what` (the op and input)
/// otherwise. The ops' callers make their inputs contiguous first, so the error is a bug guard.
pub(super) fn contiguous<'a, T>(data: &'a [T], layout: &Layout, what: &str) -> candle_core::Result<&'a [T]> {
    layout
        .contiguous_offsets()
        .map(|(start, end)| &data[start..end])
        .ok_or_else(|| candle_core::Error::Msg(format!("{what} must be contiguous")))
}
