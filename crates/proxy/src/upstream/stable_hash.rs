//! Hashes whose values are part of the mesh's behaviour, not of one process: a user's hash-policy
//! key must land on the same version (and endpoint) in every sidecar and gateway, on every machine,
//! after every upgrade of graymesh or of Rust. So they are written out here (FNV-1a 64 and the
//! SplitMix64 finalizer) instead of taken from `std`, whose `DefaultHasher` may change between
//! releases. They must never depend on a seed, the platform or the build.

const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a 64 of `bytes`.
pub fn fnv1a_64(bytes: &[u8]) -> u64 {
    fnv1a_64_extend(FNV_OFFSET_BASIS, bytes)
}

/// Continues an FNV-1a 64 hash over more bytes, so values made of parts need no buffer.
pub fn fnv1a_64_extend(mut state: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        state ^= u64::from(*b);
        state = state.wrapping_mul(FNV_PRIME);
    }
    state
}

/// SplitMix64's finalizer: a bijection that spreads every input bit over every output bit. FNV's
/// high bits depend weakly on a key's last bytes, and keys like `user-17` / `user-18` differ only
/// there, so a value is mixed before its high bits choose anything.
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
