//! Helpers for flows that hand a `&mut [Bytes]` of pending writes (or a
//! caller's borrowed slices) to a vectored socket write: gather the non-empty
//! buffers, then advance past what the socket took.

use std::io::IoSlice;

use bytes::{Buf, Bytes};

/// Most buffers gathered into one vectored write (`IOV_MAX` is 1024 on Linux;
/// 64 already amortises the system call).
pub const MAX_IOV: usize = 64;

/// Fills `out` with the non-empty buffers of `bufs`, in order, and returns how
/// many it filled (at most `out.len()`).
pub fn gather<'a>(bufs: &'a [Bytes], out: &mut [IoSlice<'a>]) -> usize {
    let mut n = 0;
    for (slot, b) in out.iter_mut().zip(bufs.iter().filter(|b| !b.is_empty())) {
        *slot = IoSlice::new(b);
        n += 1;
    }
    n
}

/// As [`gather`] for borrowed slices (a [`poll_write_borrowed`] caller's):
/// fills `out` with the non-empty ones, in order, and returns how many.
///
/// [`poll_write_borrowed`]: crate::Flow::poll_write_borrowed
pub fn gather_slices<'a>(bufs: &[IoSlice<'a>], out: &mut [IoSlice<'a>]) -> usize {
    let mut n = 0;
    for (slot, b) in out.iter_mut().zip(bufs.iter().filter(|b| !b.is_empty())) {
        *slot = *b;
        n += 1;
    }
    n
}

/// Advances `bufs` past the first `n` bytes, as a vectored write that took
/// `n` bytes consumed them (emptied buffers stay, empty).
pub fn advance(bufs: &mut [Bytes], mut n: usize) {
    for b in bufs.iter_mut() {
        if n == 0 {
            break;
        }
        let take = n.min(b.len());
        b.advance(take);
        n -= take;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gather_skips_empty_buffers_and_advance_spans_them() {
        let mut bufs = [Bytes::from_static(b"ab"), Bytes::new(), Bytes::from_static(b"cde")];
        let mut slices = [IoSlice::new(&[]); 2];
        let n = gather(&bufs, &mut slices);
        assert_eq!(n, 2);
        assert_eq!((&*slices[0], &*slices[1]), (&b"ab"[..], &b"cde"[..]));
        advance(&mut bufs, 3);
        assert_eq!(bufs, [Bytes::new(), Bytes::new(), Bytes::from_static(b"de")]);
        let mut one = [IoSlice::new(&[])];
        assert_eq!(gather(&bufs, &mut one), 1, "no more than out holds");
    }

    #[test]
    fn gather_slices_skips_empty_slices() {
        let bufs = [IoSlice::new(b""), IoSlice::new(b"ab"), IoSlice::new(b""), IoSlice::new(b"c")];
        let mut out = [IoSlice::new(&[]); 4];
        let n = gather_slices(&bufs, &mut out);
        assert_eq!(n, 2);
        assert_eq!((&*out[0], &*out[1]), (&b"ab"[..], &b"c"[..]));
        let mut one = [IoSlice::new(&[])];
        assert_eq!(gather_slices(&bufs, &mut one), 1, "no more than out holds");
    }
}
