//! Repository keys: a random master key wrapped in key slots (Argon2id from a passphrase),
//! and the subkeys derived from it (HKDF) for data, manifests and object names.

use std::sync::Arc;

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::capabilities::keys::DataKey;

/// What a key slot's wrapping is bound to, so a slot cannot be moved to another repository.
const SLOT_CONTEXT: &[u8] = b"runner key slot v1";

/// Argon2id parameters for new slots: 64 MiB, 3 passes (OWASP's second recommendation).
const MEMORY_KIB: u32 = 64 * 1024;
const ITERATIONS: u32 = 3;
const PARALLELISM: u32 = 1;

/// The repository's random master key. Never stored in clear, never given to a plugin.
pub struct MasterKey(Zeroizing<[u8; 32]>);

impl MasterKey {
    pub fn generate() -> Self {
        MasterKey(Zeroizing::new(rand::random()))
    }

    /// The subkeys for a repository: each a different HKDF expansion of the master key.
    pub fn derive(&self, repository_id: &str) -> RepoKeys {
        let hkdf =
            hkdf::Hkdf::<sha2::Sha256>::new(Some(repository_id.as_bytes()), self.0.as_slice());
        let expand = |info: &str| {
            let mut key = Zeroizing::new([0u8; 32]);
            hkdf.expand(info.as_bytes(), key.as_mut_slice())
                .expect("32 bytes is a valid HKDF length");
            key
        };
        RepoKeys {
            data: Arc::new(DataKey::new("data", &expand("runner/data/v1"))),
            manifest: Arc::new(DataKey::new("manifest", &expand("runner/manifest/v1"))),
            names: expand("runner/names/v1"),
        }
    }
}

/// The keys a run works with.
pub struct RepoKeys {
    /// Seals object data; granted to encrypting transforms as "data".
    pub data: Arc<DataKey>,
    /// Seals manifests and locks (the host's own use, never granted to a plugin).
    pub manifest: Arc<DataKey>,
    /// Keys object names, so stored names reveal nothing about content or order.
    names: Zeroizing<[u8; 32]>,
}

impl RepoKeys {
    /// A name for an object that only this repository's key can produce.
    pub fn object_name(&self, input: &[u8]) -> String {
        blake3::keyed_hash(&self.names, input).to_hex().to_string()
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct KdfParams {
    pub algorithm: String,
    pub version: u32,
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
    /// Hex.
    pub salt: String,
}

/// One way to unlock the repository: the master key wrapped by a passphrase-derived key.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct KeySlot {
    pub id: String,
    pub created: String,
    /// Free text to tell slots apart ("ops team", "break-glass").
    #[serde(default)]
    pub label: String,
    pub kdf: KdfParams,
    /// Hex of nonce || AES-256-GCM(master key) || tag.
    pub wrapped: String,
}

#[derive(Debug, thiserror::Error)]
pub enum KeySlotError {
    #[error("key slot {slot} uses an unsupported key derivation ({0})", slot = .1)]
    UnsupportedKdf(String, String),
    #[error("key slot {0} is malformed: {1}")]
    Malformed(String, String),
}

impl KeySlot {
    /// Wraps `master` under a key derived from `passphrase`.
    pub fn create(master: &MasterKey, passphrase: &str, repository_id: &str, label: &str) -> Self {
        let id = hex::encode(rand::random::<[u8; 4]>());
        let salt: [u8; 16] = rand::random();
        let kdf = KdfParams {
            algorithm: "argon2id".into(),
            version: 0x13,
            memory_kib: MEMORY_KIB,
            iterations: ITERATIONS,
            parallelism: PARALLELISM,
            salt: hex::encode(salt),
        };
        let wrapping = derive_wrapping_key(passphrase, &kdf).expect("fresh parameters are valid");
        let cipher = Aes256Gcm::new(wrapping.as_slice().into());
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let aad = slot_context(repository_id, &id);
        let sealed = cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: master.0.as_slice(),
                    aad: &aad,
                },
            )
            .expect("in-memory AES-GCM cannot fail");
        let mut wrapped = nonce.to_vec();
        wrapped.extend_from_slice(&sealed);
        KeySlot {
            id,
            created: jiff::Timestamp::now().to_string(),
            label: label.to_string(),
            kdf,
            wrapped: hex::encode(wrapped),
        }
    }

    /// The master key, when `passphrase` is this slot's; `Ok(None)` for another passphrase.
    pub fn open(
        &self,
        passphrase: &str,
        repository_id: &str,
    ) -> Result<Option<MasterKey>, KeySlotError> {
        let wrapping = derive_wrapping_key(passphrase, &self.kdf)
            .map_err(|reason| KeySlotError::UnsupportedKdf(reason, self.id.clone()))?;
        let wrapped = hex::decode(&self.wrapped)
            .map_err(|e| KeySlotError::Malformed(self.id.clone(), e.to_string()))?;
        if wrapped.len() != 12 + 32 + 16 {
            return Err(KeySlotError::Malformed(
                self.id.clone(),
                "wrapped key has the wrong length".into(),
            ));
        }
        let (nonce, sealed) = wrapped.split_at(12);
        let cipher = Aes256Gcm::new(wrapping.as_slice().into());
        let aad = slot_context(repository_id, &self.id);
        let Ok(master) = cipher.decrypt(
            Nonce::from_slice(nonce),
            Payload {
                msg: sealed,
                aad: &aad,
            },
        ) else {
            return Ok(None);
        };
        let mut key = Zeroizing::new([0u8; 32]);
        key.copy_from_slice(&master);
        Ok(Some(MasterKey(key)))
    }
}

fn slot_context(repository_id: &str, slot_id: &str) -> Vec<u8> {
    [
        SLOT_CONTEXT,
        repository_id.as_bytes(),
        b"/",
        slot_id.as_bytes(),
    ]
    .concat()
}

fn derive_wrapping_key(passphrase: &str, kdf: &KdfParams) -> Result<Zeroizing<[u8; 32]>, String> {
    if kdf.algorithm != "argon2id" || kdf.version != 0x13 {
        return Err(format!("{} version {}", kdf.algorithm, kdf.version));
    }
    let salt = hex::decode(&kdf.salt).map_err(|e| format!("bad salt: {e}"))?;
    let params = argon2::Params::new(kdf.memory_kib, kdf.iterations, kdf.parallelism, Some(32))
        .map_err(|e| format!("bad argon2id parameters: {e}"))?;
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut key = Zeroizing::new([0u8; 32]);
    argon
        .hash_password_into(passphrase.as_bytes(), &salt, key.as_mut_slice())
        .map_err(|e| format!("argon2id failed: {e}"))?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_opens_with_its_passphrase_only_and_only_in_its_repository() {
        let master = MasterKey::generate();
        let slot = KeySlot::create(&master, "correct horse", "repo-a", "");
        let opened = slot
            .open("correct horse", "repo-a")
            .unwrap()
            .expect("right passphrase opens");
        assert_eq!(opened.0.as_slice(), master.0.as_slice());
        assert!(slot.open("wrong horse", "repo-a").unwrap().is_none());
        assert!(
            slot.open("correct horse", "repo-b").unwrap().is_none(),
            "a slot copied to another repository must not open"
        );
    }

    #[test]
    fn subkeys_differ_from_each_other_and_between_repositories() {
        let master = MasterKey::generate();
        let a = master.derive("repo-a");
        let b = master.derive("repo-b");
        assert_ne!(a.data.id(), a.manifest.id().replace("manifest", "data"));
        assert_ne!(a.data.id(), b.data.id());
        assert_ne!(a.object_name(b"x"), b.object_name(b"x"));
    }
}
