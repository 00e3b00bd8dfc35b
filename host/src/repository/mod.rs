//! The repository on a sink: its layout, format version and key slots, and the small
//! objects the host itself reads and writes (key slots, manifests, stage components).
//!
//! Layout (keys on the sink):
//! - `config`: format version, repository id, whether it is encrypted (plain JSON);
//! - `keys/<slot>`: key slots (the master key wrapped per passphrase);
//! - `components/<sha256>.wasm`: every stage component a snapshot used;
//! - `data/<xx>/<name>`: objects;
//! - `snapshots/<id>`: manifests, written last;
//! - `history/<time>-<id>`: one record per run, whatever its outcome;
//! - `locks/<id>`: locks of the commands working on it (see [`lock`]).

pub mod history;
pub mod keys;
pub mod lock;

use serde::{Deserialize, Serialize};

use crate::capabilities::keys::DataKey;
use crate::config::Secret;
use crate::engine::bindings::PluginErrorKind;
use crate::engine::{PluginError, SinkInstance};
use crate::manifest::Manifest;
use keys::{KeySlot, MasterKey, RepoKeys};

pub const FORMAT_VERSION: u32 = 1;
const CONFIG_KEY: &str = "config";
const KEYS_PREFIX: &str = "keys/";
const SNAPSHOTS_PREFIX: &str = "snapshots/";
const CHUNK: u32 = 1 << 20;

#[derive(Debug, Serialize, Deserialize)]
struct RepoConfig {
    format: u32,
    id: String,
    created: String,
    encrypted: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    #[error("the sink holds no repository (no `config` object); `runner run` creates one")]
    Missing,
    #[error("wrong passphrase: none of the {slots} key slot(s) of repository {id} opens with it")]
    WrongKey { id: String, slots: usize },
    #[error(
        "repository {id} is encrypted, but the pipeline sets no [repository] passphrase or key_file"
    )]
    KeyRequired { id: String },
    #[error(
        "repository {id} is not encrypted, but the pipeline sets a key; remove the key or use another repository"
    )]
    NotEncrypted { id: String },
    #[error("repository {id} has no key slots left; it cannot be opened")]
    NoSlots { id: String },
    #[error(
        "repository format {found} is not supported (this runner reads format {FORMAT_VERSION})"
    )]
    Format { found: u32 },
    #[error("repository object {key} is damaged: {reason}")]
    Corrupt { key: String, reason: String },
    #[error("snapshot {0} does not exist")]
    NoSnapshot(String),
    #[error(transparent)]
    Sink(#[from] PluginError),
}

/// An open repository.
pub struct Repository {
    pub id: String,
    keys: Option<RepoKeys>,
    master: Option<MasterKey>,
    sink: SinkInstance,
}

impl Repository {
    /// Opens the repository on `sink`, or creates it when the sink has none and `create` is set.
    /// With a repository key, the passphrase must open one of its slots.
    pub async fn open(
        mut sink: SinkInstance,
        passphrase: Option<&Secret>,
        create: bool,
    ) -> Result<Self, RepoError> {
        let Some(bytes) = get_bytes(&mut sink, CONFIG_KEY).await? else {
            if !create {
                return Err(RepoError::Missing);
            }
            return Self::create(sink, passphrase).await;
        };
        let config: RepoConfig =
            serde_json::from_slice(&bytes).map_err(|e| RepoError::Corrupt {
                key: CONFIG_KEY.into(),
                reason: e.to_string(),
            })?;
        if config.format != FORMAT_VERSION {
            return Err(RepoError::Format {
                found: config.format,
            });
        }
        let master = match (config.encrypted, passphrase) {
            (false, None) => None,
            (false, Some(_)) => return Err(RepoError::NotEncrypted { id: config.id }),
            (true, None) => return Err(RepoError::KeyRequired { id: config.id }),
            (true, Some(passphrase)) => {
                Some(Self::unlock(&mut sink, &config.id, passphrase).await?)
            }
        };
        let keys = master.as_ref().map(|m| m.derive(&config.id));
        Ok(Repository {
            id: config.id,
            keys,
            master,
            sink,
        })
    }

    async fn create(
        mut sink: SinkInstance,
        passphrase: Option<&Secret>,
    ) -> Result<Self, RepoError> {
        let id = hex::encode(rand::random::<[u8; 16]>());
        let master = passphrase.map(|_| MasterKey::generate());
        if let (Some(master), Some(passphrase)) = (&master, passphrase) {
            let slot = KeySlot::create(
                master,
                passphrase.expose(),
                &id,
                "created with the repository",
            );
            let bytes = serde_json::to_vec_pretty(&slot).expect("a key slot serializes");
            put_bytes(
                &mut sink,
                &format!("{KEYS_PREFIX}{}", slot.id),
                &bytes,
                true,
            )
            .await?;
        }
        let config = RepoConfig {
            format: FORMAT_VERSION,
            id: id.clone(),
            created: jiff::Timestamp::now().to_string(),
            encrypted: master.is_some(),
        };
        // Written with put-if-absent and last: two runs creating the repository at once
        // cannot both win, and a half-created repository has no `config`.
        let bytes = serde_json::to_vec_pretty(&config).expect("config serializes");
        match put_bytes(&mut sink, CONFIG_KEY, &bytes, true).await {
            Ok(()) => {}
            Err(RepoError::Sink(PluginError::Plugin {
                error: PluginErrorKind::AlreadyExists(_),
                ..
            })) => {
                // Another run created it first: open that one instead.
                return Box::pin(Self::open(sink, passphrase, false)).await;
            }
            Err(e) => return Err(e),
        }
        tracing::info!(repository = %id, encrypted = config.encrypted, "repository created");
        let keys = master.as_ref().map(|m| m.derive(&id));
        Ok(Repository {
            id,
            keys,
            master,
            sink,
        })
    }

    async fn unlock(
        sink: &mut SinkInstance,
        id: &str,
        passphrase: &Secret,
    ) -> Result<MasterKey, RepoError> {
        let slots = read_slots(sink).await?;
        if slots.is_empty() {
            return Err(RepoError::NoSlots { id: id.into() });
        }
        for slot in &slots {
            match slot.open(passphrase.expose(), id) {
                Ok(Some(master)) => return Ok(master),
                Ok(None) => {}
                Err(e) => tracing::warn!("{e}"),
            }
        }
        Err(RepoError::WrongKey {
            id: id.into(),
            slots: slots.len(),
        })
    }

    pub fn keys(&self) -> Option<&RepoKeys> {
        self.keys.as_ref()
    }

    pub fn manifest_key(&self) -> Option<&DataKey> {
        self.keys.as_ref().map(|k| &*k.manifest)
    }

    /// How this repository's lock objects are sealed (with the manifest key when encrypted).
    pub fn lock_seal(&self) -> lock::LockSeal {
        lock::LockSeal {
            repository: self.id.clone(),
            key: self.keys.as_ref().map(|k| k.manifest.clone()),
        }
    }

    pub fn sink(&mut self) -> &mut SinkInstance {
        &mut self.sink
    }

    /// A unique, unlinkable object key for part `index` of an artifact in a snapshot.
    /// The largest object the sink takes, if it has a limit.
    pub async fn max_object_size(&mut self) -> Result<Option<u64>, RepoError> {
        Ok(self.sink.max_object_size().await?)
    }

    pub fn object_key(&self, snapshot: &str, artifact: &str, index: usize) -> String {
        let input = format!("{snapshot}\0{artifact}\0{index}");
        let name = match &self.keys {
            Some(keys) => keys.object_name(input.as_bytes()),
            None => blake3::hash(input.as_bytes()).to_hex().to_string(),
        };
        format!("data/{}/{}", &name[..2], name)
    }

    /// Stores a stage component under its digest (once).
    pub async fn store_component(&mut self, sha256: &str, wasm: &[u8]) -> Result<(), RepoError> {
        let key = component_key(sha256);
        if self
            .sink
            .stat(&key)
            .await?
            .is_some_and(|stat| stat.size == wasm.len() as u64)
        {
            return Ok(());
        }
        match put_bytes(&mut self.sink, &key, wasm, true).await {
            Err(RepoError::Sink(PluginError::Plugin {
                error: PluginErrorKind::AlreadyExists(_),
                ..
            }))
            | Ok(()) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// A stage component a snapshot recorded, checked against its digest.
    pub async fn load_component(&mut self, sha256: &str) -> Result<Vec<u8>, RepoError> {
        let key = component_key(sha256);
        let wasm = get_bytes(&mut self.sink, &key)
            .await?
            .ok_or_else(|| RepoError::Corrupt {
                key: key.clone(),
                reason: "the component is missing".into(),
            })?;
        let actual = hex::encode(crate::plugins::sha256(&wasm));
        if actual != sha256 {
            return Err(RepoError::Corrupt {
                key,
                reason: format!("its sha256 is {actual}"),
            });
        }
        Ok(wasm)
    }

    /// Commits a snapshot: the manifest is the last object written.
    pub async fn write_manifest(&mut self, manifest: &Manifest) -> Result<(), RepoError> {
        let bytes = manifest.encode(self.manifest_key());
        let key = snapshot_key(&manifest.snapshot);
        if crate::pipeline::failpoint::triggers("mid-manifest") {
            let upload = self.sink.put(&key, true).await?;
            self.sink
                .write(&upload, bytes[..bytes.len() / 2].to_vec())
                .await?;
            crate::pipeline::failpoint::kill();
        }
        put_bytes(&mut self.sink, &key, &bytes, true).await
    }

    pub async fn read_manifest(&mut self, snapshot: &str) -> Result<Manifest, RepoError> {
        let key = snapshot_key(snapshot);
        let bytes = get_bytes(&mut self.sink, &key)
            .await?
            .ok_or_else(|| RepoError::NoSnapshot(snapshot.into()))?;
        Manifest::decode(&bytes, self.manifest_key(), &self.id, snapshot)
            .map_err(|reason| RepoError::Corrupt { key, reason })
    }

    /// Ids of every committed snapshot (from the sink's listing; manifests are not read).
    pub async fn snapshot_ids(&mut self) -> Result<Vec<String>, RepoError> {
        Ok(self
            .sink
            .list_all(SNAPSHOTS_PREFIX)
            .await?
            .into_iter()
            .filter_map(|o| o.key.strip_prefix(SNAPSHOTS_PREFIX).map(str::to_string))
            .collect())
    }

    /// Every snapshot's manifest, oldest first.
    pub async fn manifests(&mut self) -> Result<Vec<Manifest>, RepoError> {
        let mut manifests = Vec::new();
        for id in self.snapshot_ids().await? {
            manifests.push(self.read_manifest(&id).await?);
        }
        // By time, not text: RFC 3339 strings with and without fractions do not sort.
        manifests.sort_by_key(|m| (m.started_at(), m.snapshot.clone()));
        Ok(manifests)
    }

    pub async fn slots(&mut self) -> Result<Vec<KeySlot>, RepoError> {
        read_slots(&mut self.sink).await
    }

    /// Adds a key slot for `passphrase`; the data is not re-encrypted.
    pub async fn add_slot(
        &mut self,
        passphrase: &Secret,
        label: &str,
    ) -> Result<KeySlot, RepoError> {
        let master = self
            .master
            .as_ref()
            .ok_or_else(|| RepoError::NotEncrypted {
                id: self.id.clone(),
            })?;
        let slot = KeySlot::create(master, passphrase.expose(), &self.id, label);
        let bytes = serde_json::to_vec_pretty(&slot).expect("a key slot serializes");
        put_bytes(
            &mut self.sink,
            &format!("{KEYS_PREFIX}{}", slot.id),
            &bytes,
            true,
        )
        .await?;
        Ok(slot)
    }

    pub async fn remove_slot(&mut self, slot_id: &str) -> Result<(), RepoError> {
        self.sink.delete(&format!("{KEYS_PREFIX}{slot_id}")).await?;
        Ok(())
    }
}

pub fn snapshot_key(snapshot: &str) -> String {
    format!("{SNAPSHOTS_PREFIX}{snapshot}")
}

pub fn component_key(sha256: &str) -> String {
    format!("components/{sha256}.wasm")
}

async fn read_slots(sink: &mut SinkInstance) -> Result<Vec<KeySlot>, RepoError> {
    let mut slots = Vec::new();
    for object in sink.list_all(KEYS_PREFIX).await? {
        let bytes = get_bytes(sink, &object.key).await?.unwrap_or_default();
        let slot: KeySlot = serde_json::from_slice(&bytes).map_err(|e| RepoError::Corrupt {
            key: object.key.clone(),
            reason: e.to_string(),
        })?;
        slots.push(slot);
    }
    Ok(slots)
}

/// Reads a whole (small) object; `None` when absent.
pub async fn get_bytes(sink: &mut SinkInstance, key: &str) -> Result<Option<Vec<u8>>, PluginError> {
    if sink.stat(key).await?.is_none() {
        return Ok(None);
    }
    let download = sink.get(key, 0, None).await?;
    let mut bytes = Vec::new();
    while let Some(chunk) = sink.read(&download, CHUNK).await? {
        bytes.extend_from_slice(&chunk);
    }
    sink.close_download(download).await?;
    Ok(Some(bytes))
}

/// Writes a whole (small) object.
pub async fn put_bytes(
    sink: &mut SinkInstance,
    key: &str,
    bytes: &[u8],
    if_absent: bool,
) -> Result<(), RepoError> {
    let upload = sink.put(key, if_absent).await?;
    for chunk in bytes.chunks(CHUNK as usize) {
        if let Err(e) = sink.write(&upload, chunk.to_vec()).await {
            let _ = sink.abort(upload).await;
            return Err(e.into());
        }
    }
    sink.finish(upload).await?;
    Ok(())
}
