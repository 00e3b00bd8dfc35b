//! The key service: AES-256-GCM sealing and opening by key handle. Key bytes stay in the
//! host; a plugin holds only a handle to a key its stage was granted.

use std::collections::BTreeMap;
use std::sync::Arc;

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use wasmtime::component::Resource;

use crate::capabilities::HostState;
use crate::engine::bindings::services::runner::plugin::keys::{Host, HostSealingKey};
use crate::engine::bindings::services::runner::plugin::types::Error;

const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;

/// A 256-bit key the host seals with. Its bytes are zeroized when dropped.
pub struct DataKey {
    id: String,
    cipher: Aes256Gcm,
}

impl DataKey {
    /// `name` is the grant name ("data"); the id adds a fingerprint that reveals nothing
    /// about the key but tells keys apart in decoder parameters.
    pub fn new(name: &str, key: &[u8; 32]) -> Self {
        let fingerprint = blake3::derive_key("runner key fingerprint v1", key);
        DataKey {
            id: format!("{name}:{}", hex::encode(&fingerprint[..8])),
            cipher: Aes256Gcm::new(key.into()),
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn seal(&self, associated_data: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let ciphertext = self
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext,
                    aad: associated_data,
                },
            )
            .expect("AES-GCM encryption of an in-memory buffer cannot fail");
        let mut sealed = Vec::with_capacity(NONCE_LEN + ciphertext.len());
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&ciphertext);
        sealed
    }

    /// None when the bytes do not authenticate under this key and associated data.
    pub fn open(&self, associated_data: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
        if sealed.len() < NONCE_LEN + TAG_LEN {
            return None;
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        self.cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: associated_data,
                },
            )
            .ok()
    }
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// The keys granted to one stage, by name.
#[derive(Clone, Default, Debug)]
pub struct KeyRing {
    keys: BTreeMap<String, Arc<DataKey>>,
}

impl KeyRing {
    pub fn with(mut self, name: &str, key: Arc<DataKey>) -> Self {
        self.keys.insert(name.to_string(), key);
        self
    }

    pub fn get(&self, name: &str) -> Option<&Arc<DataKey>> {
        self.keys.get(name)
    }
}

/// What a plugin's `sealing-key` handle points at.
pub struct SealingKeyHandle(Arc<DataKey>);

impl Host for HostState {
    async fn get_key(
        &mut self,
        name: String,
    ) -> wasmtime::Result<Result<Resource<SealingKeyHandle>, Error>> {
        let Some(key) = self.keys.get(&name).cloned() else {
            return Ok(Err(Error::AccessDenied(format!(
                "no key named {name:?} is granted to this stage (does the pipeline set [repository] passphrase or key_file?)"
            ))));
        };
        Ok(Ok(self.table.push(SealingKeyHandle(key))?))
    }
}

impl HostSealingKey for HostState {
    async fn id(&mut self, key: Resource<SealingKeyHandle>) -> wasmtime::Result<String> {
        Ok(self.table.get(&key)?.0.id.clone())
    }

    async fn seal(
        &mut self,
        key: Resource<SealingKeyHandle>,
        associated_data: Vec<u8>,
        plaintext: Vec<u8>,
    ) -> wasmtime::Result<Result<Vec<u8>, Error>> {
        Ok(Ok(self
            .table
            .get(&key)?
            .0
            .seal(&associated_data, &plaintext)))
    }

    async fn open(
        &mut self,
        key: Resource<SealingKeyHandle>,
        associated_data: Vec<u8>,
        sealed: Vec<u8>,
    ) -> wasmtime::Result<Result<Vec<u8>, Error>> {
        Ok(self
            .table
            .get(&key)?
            .0
            .open(&associated_data, &sealed)
            .ok_or_else(|| Error::Corrupt("authentication failed".into())))
    }

    async fn drop(&mut self, key: Resource<SealingKeyHandle>) -> wasmtime::Result<()> {
        self.table.delete(key)?;
        Ok(())
    }
}
