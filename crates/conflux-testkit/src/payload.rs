//! Deterministic test payloads.

use bytes::Bytes;

/// One step of splitmix64.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `len` pseudo-random bytes, the same for the same `seed` on every run and
/// machine (splitmix64, little-endian). A shorter payload of the same seed is
/// a prefix of a longer one.
pub fn payload(seed: u64, len: usize) -> Bytes {
    let mut state = seed;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        out.extend_from_slice(&splitmix64(&mut state).to_le_bytes());
    }
    out.truncate(len);
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::payload;

    #[test]
    fn deterministic_and_prefix_stable() {
        assert_eq!(payload(7, 1000), payload(7, 1000));
        assert_eq!(payload(7, 1000)[..333], payload(7, 333)[..]);
        assert_ne!(payload(7, 64), payload(8, 64));
        assert!(payload(0, 0).is_empty());
        assert_eq!(payload(1, 13).len(), 13);
    }

    #[test]
    fn golden_first_bytes() {
        // splitmix64 with seed 0: first output 0xE220A8397B1DCDAF.
        assert_eq!(payload(0, 8)[..], 0xE220_A839_7B1D_CDAF_u64.to_le_bytes()[..]);
    }

    #[test]
    fn not_trivially_repetitive() {
        let p = payload(42, 4096);
        let zeros = p.iter().filter(|&&b| b == 0).count();
        assert!(zeros < 64, "{zeros} zero bytes in 4096");
    }
}
