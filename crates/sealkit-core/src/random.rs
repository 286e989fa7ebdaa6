//! Injected randomness: the core never asks the operating system itself.

use core::fmt::Debug;

use crate::Result;

/// A cryptographically secure random number generator.
///
/// The facade supplies one backed by the operating system; tests may use a deterministic one
/// such as [`FixedRandom`].
pub trait SecureRandom: Send + Sync + Debug {
    /// Fills `dest` with random bytes.
    fn fill(&self, dest: &mut [u8]) -> Result<()>;
}

/// A deterministic generator for tests and golden vectors. **Never use it for real data**: it
/// repeats nonces across instances with the same seed.
#[derive(Debug)]
pub struct FixedRandom {
    state: core::sync::atomic::AtomicU64,
}

impl FixedRandom {
    /// A generator whose output is a function of `seed` and the number of bytes drawn so far.
    pub const fn new(seed: u64) -> Self {
        Self {
            state: core::sync::atomic::AtomicU64::new(seed),
        }
    }
}

impl SecureRandom for FixedRandom {
    fn fill(&self, dest: &mut [u8]) -> Result<()> {
        use core::sync::atomic::Ordering;
        for chunk in dest.chunks_mut(8) {
            // splitmix64: a simple, well-distributed sequence (not cryptographic).
            let mut z = self
                .state
                .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed);
            z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            chunk.copy_from_slice(&z.to_le_bytes()[..chunk.len()]);
        }
        Ok(())
    }
}
