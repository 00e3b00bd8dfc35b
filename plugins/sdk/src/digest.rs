//! Digests the host computes at native speed (contract 0.2): a SHA-256 inside WebAssembly
//! runs several times slower than the host's, which uses the CPU's SHA extensions.

use crate::bindings::transform::runner::plugin0_2_0::digest as wit;

/// SHA-256 over bytes fed in order, computed by the host.
pub struct Sha256(wit::Sha256);

impl Sha256 {
    pub fn new() -> Self {
        Sha256(wit::Sha256::new())
    }

    /// Feeds the next bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    /// The digest of everything fed since the start or the last `finalize`; the hasher
    /// starts over.
    pub fn finalize(&mut self) -> [u8; 32] {
        self.0
            .finish()
            .try_into()
            .expect("the host's sha256 is 32 bytes")
    }
}

impl Default for Sha256 {
    fn default() -> Self {
        Self::new()
    }
}
