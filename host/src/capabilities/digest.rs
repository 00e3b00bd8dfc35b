//! The `digest` host service (contract 0.2): SHA-256 at the host's native speed for
//! plugins such as `checksum`, which would hash several times slower inside WebAssembly.

use sha2::Digest;
use wasmtime::component::Resource;

use crate::capabilities::HostState;
use crate::engine::bindings::services_0_2::runner::plugin0_2_0::digest::{Host, HostSha256};

/// What a plugin's `sha256` handle points at.
#[derive(Default)]
pub struct Sha256Hasher(sha2::Sha256);

impl Host for HostState {}

impl HostSha256 for HostState {
    async fn new(&mut self) -> wasmtime::Result<Resource<Sha256Hasher>> {
        Ok(self.table.push(Sha256Hasher::default())?)
    }

    async fn update(
        &mut self,
        hasher: Resource<Sha256Hasher>,
        bytes: Vec<u8>,
    ) -> wasmtime::Result<()> {
        self.table.get_mut(&hasher)?.0.update(&bytes);
        Ok(())
    }

    async fn finish(&mut self, hasher: Resource<Sha256Hasher>) -> wasmtime::Result<Vec<u8>> {
        let state = &mut self.table.get_mut(&hasher)?.0;
        Ok(std::mem::take(state).finalize().to_vec())
    }

    async fn drop(&mut self, hasher: Resource<Sha256Hasher>) -> wasmtime::Result<()> {
        self.table.delete(hasher)?;
        Ok(())
    }
}
