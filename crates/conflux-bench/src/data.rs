//! What every throughput scenario moves and checks: a pseudo-random source that
//! chunks are cut from, the chunk offsets of one run, and a checksum that every
//! reader folds every byte into (so both sides of a comparison do the same work,
//! and a run that lost or reordered bytes fails).

use bytes::Bytes;

/// Size of the source that chunks are cut from.
pub const SOURCE_LEN: usize = 1 << 20;

/// `SOURCE_LEN` pseudo-random bytes (xorshift; the same every run).
pub fn source() -> Bytes {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let v: Vec<u8> = (0..SOURCE_LEN)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    Bytes::from(v)
}

/// Folds every byte of `bytes` into `sum`. Position-independent: chunk
/// boundaries do not change the result.
pub fn fold(sum: u64, bytes: &[u8]) -> u64 {
    let mut s = 0u64;
    // 64 KiB of bytes sum to under 2^24: a u32 per block cannot overflow.
    for block in bytes.chunks(1 << 16) {
        s += u64::from(block.iter().map(|&b| u32::from(b)).sum::<u32>());
    }
    sum.wrapping_add(s)
}

/// Offsets into the source of the `chunk`-sized writes that move `total` bytes.
pub fn offsets(total: u64, chunk: usize) -> impl Iterator<Item = usize> {
    assert!(chunk <= SOURCE_LEN && SOURCE_LEN.is_multiple_of(chunk), "chunks tile the source");
    (0..total / chunk as u64).map(move |i| (i as usize * chunk) % SOURCE_LEN)
}

/// The checksum a reader must end with after a run of [`offsets`].
pub fn expected_sum(src: &[u8], total: u64, chunk: usize) -> u64 {
    offsets(total, chunk).fold(0, |s, off| fold(s, &src[off..off + chunk]))
}

/// Reads `reader` to its end in `buf_len`-byte reads, folding every byte into
/// the checksum it returns (what a tokio baseline's reader does).
pub async fn drain<R: tokio::io::AsyncRead + Unpin>(mut reader: R, buf_len: usize) -> (R, u64) {
    use tokio::io::AsyncReadExt;
    let mut buf = vec![0u8; buf_len];
    let mut sum = 0;
    loop {
        let n = reader.read(&mut buf).await.expect("read");
        if n == 0 {
            return (reader, sum);
        }
        sum = fold(sum, &buf[..n]);
    }
}

/// Listens on port 0 of `stack` with a sink that folds every byte of each
/// accepted flow into a checksum, sent on the returned channel at the flow's
/// Eof. Returns the port. Call it within the runtime the stack runs on.
pub fn listen_folding<S: conflux_tcp::TcpStack>(stack: &S) -> (u16, tokio::sync::mpsc::UnboundedReceiver<u64>) {
    use conflux_flow::FlowExt;
    let (tx, sums) = tokio::sync::mpsc::unbounded_channel();
    let port = stack
        .listen(0, None, move |mut flow| {
            let tx = tx.clone();
            async move {
                let mut sum = 0;
                while let Some(chunk) = flow.read().await.expect("flow read") {
                    sum = fold(sum, &chunk);
                }
                let _ = tx.send(sum);
            }
        })
        .expect("listen")
        .port();
    (port, sums)
}

/// A current_thread tokio runtime with time and I/O.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a tokio runtime")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fold_ignores_chunk_boundaries() {
        let src = source();
        let whole = fold(0, &src);
        let pieces = src.chunks(1500).fold(0, fold);
        assert_eq!(whole, pieces);
        assert_eq!(whole, src.iter().map(|&b| u64::from(b)).sum::<u64>());
    }

    #[test]
    fn offsets_cycle_through_the_source() {
        let offs: Vec<usize> = offsets(3 * SOURCE_LEN as u64, 1 << 19).collect();
        assert_eq!(offs, [0, 1 << 19, 0, 1 << 19, 0, 1 << 19]);
    }
}
