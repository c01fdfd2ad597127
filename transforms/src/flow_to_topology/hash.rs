//! The hasher of the service map's keys.

use std::hash::Hasher;

/// A fast non-cryptographic hasher (the multiply-rotate of rustc's FxHash) for keys that come
/// from the flows themselves.
#[derive(Default, Clone, Copy)]
pub struct FxHasher(u64);

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl FxHasher {
    pub fn write_u64(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(SEED);
    }

    pub fn write_bytes(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut b = [0u8; 8];
            b.copy_from_slice(c);
            self.write_u64(u64::from_le_bytes(b));
        }
        let rest = chunks.remainder();
        let mut b = [0u8; 8];
        b[..rest.len()].copy_from_slice(rest);
        self.write_u64(u64::from_le_bytes(b) ^ ((rest.len() as u64) << 56));
    }
}

impl Hasher for FxHasher {
    fn finish(&self) -> u64 {
        // A final mix so that the low bits a hash table uses depend on every input bit.
        let mut h = self.0;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^ (h >> 33)
    }
    fn write(&mut self, bytes: &[u8]) {
        self.write_bytes(bytes);
    }
    fn write_u64(&mut self, v: u64) {
        FxHasher::write_u64(self, v);
    }
}
