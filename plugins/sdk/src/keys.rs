//! Sealing keys held by the host: plugins name a key and ask the host to seal and open.

use crate::Result;
use crate::bindings::host::runner::plugin::keys as wit;

pub use wit::SealingKey;

/// The key granted to this stage under `name` ("data" is the repository's data key).
pub fn get_key(name: &str) -> Result<SealingKey> {
    wit::get_key(name)
}

/// Bytes `seal` adds to its input: a 12-byte nonce and a 16-byte tag.
pub const SEAL_OVERHEAD: usize = 12 + 16;
