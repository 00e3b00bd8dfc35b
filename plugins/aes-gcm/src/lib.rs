//! The `aes-gcm` transform: AES-256-GCM in a chunked stream construction, sealed and
//! opened by the host through a key handle, so key bytes never enter this plugin.
//!
//! Stream: the plaintext is cut into segments of `segment_size` bytes; each is sealed as
//! `nonce || ciphertext || tag` with associated data binding the object id, the segment
//! index and whether it is the last one. Reordered, dropped, truncated, spliced or
//! tampered segments fail to open. The last segment may be empty, so even an empty
//! object is authenticated.

use std::rc::Rc;

use runner_sdk::keys::{self, SEAL_OVERHEAD, SealingKey};
use runner_sdk::{
    Decoder, Encoder, Error, Metadata, MetadataExt, ObjectInfo, Plugin, Result, Transform,
};
use serde::Deserialize;

/// Version tag inside the associated data: a future construction cannot be confused with this one.
const CONSTRUCTION: &[u8] = b"runner/aes-gcm/v1";
const DEFAULT_SEGMENT: usize = 1024 * 1024;

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Config {
    /// Name of the granted key to use ("data": the repository's data key).
    key: String,
    /// Plaintext bytes per sealed segment.
    segment_size: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            key: "data".into(),
            segment_size: DEFAULT_SEGMENT,
        }
    }
}

struct AesGcm {
    /// Shared with every encoder and decoder of this instance.
    key: Rc<SealingKey>,
    segment_size: usize,
}

impl Plugin for AesGcm {
    const NAME: &'static str = "aes-gcm";
    const DESCRIPTION: &'static str = "AES-256-GCM authenticated encryption (key held by the host)";
    type Config = Config;

    fn new(config: Config) -> Result<Self> {
        if !(1024..=16 * 1024 * 1024).contains(&config.segment_size) {
            return Err(Error::config_field(
                "segment_size",
                "must be between 1024 and 16777216 bytes",
            ));
        }
        let key = keys::get_key(&config.key)?;
        Ok(AesGcm {
            key: Rc::new(key),
            segment_size: config.segment_size,
        })
    }
}

/// The associated data of segment `index` of object `id`.
fn associated_data(id: &str, index: u64, last: bool) -> Vec<u8> {
    let mut ad = Vec::with_capacity(CONSTRUCTION.len() + id.len() + 13);
    ad.extend_from_slice(CONSTRUCTION);
    ad.extend_from_slice(&(id.len() as u32).to_be_bytes());
    ad.extend_from_slice(id.as_bytes());
    ad.extend_from_slice(&index.to_be_bytes());
    ad.push(last as u8);
    ad
}

struct Sealer {
    key: Rc<SealingKey>,
    id: String,
    segment_size: usize,
    pending: Vec<u8>,
    index: u64,
}

struct Opener {
    key: Rc<SealingKey>,
    id: String,
    /// Sealed size of a full segment.
    sealed_size: usize,
    pending: Vec<u8>,
    index: u64,
}

struct SealingEncoder(Sealer);
struct OpeningDecoder(Opener);

impl Transform for AesGcm {
    type Encoder = SealingEncoder;
    type Decoder = OpeningDecoder;

    fn encoder(&self, object: &ObjectInfo) -> Result<SealingEncoder> {
        Ok(SealingEncoder(Sealer {
            key: self.key.clone(),
            id: object.id.clone(),
            segment_size: self.segment_size,
            pending: Vec::with_capacity(self.segment_size),
            index: 0,
        }))
    }

    fn decoder(&self, object: &ObjectInfo, params: &Metadata) -> Result<OpeningDecoder> {
        let key_id: String = params.require("key")?;
        if key_id != self.key.id() {
            return Err(Error::corrupt(format!(
                "object was encrypted with key {key_id}, but the granted key is {}",
                self.key.id()
            )));
        }
        let segment_size: usize = params.require("segment_size")?;
        Ok(OpeningDecoder(Opener {
            key: self.key.clone(),
            id: object.id.clone(),
            sealed_size: segment_size + SEAL_OVERHEAD,
            pending: Vec::new(),
            index: 0,
        }))
    }
}

impl Sealer {
    fn seal(&mut self, plaintext: &[u8], last: bool, output: &mut Vec<u8>) -> Result<()> {
        let sealed = self
            .key
            .seal(&associated_data(&self.id, self.index, last), plaintext)?;
        runner_sdk::append_output(output, sealed);
        self.index += 1;
        Ok(())
    }
}

impl Encoder for SealingEncoder {
    fn push(&mut self, mut input: &[u8], output: &mut Vec<u8>) -> Result<()> {
        let s = &mut self.0;
        // A full segment is sealed only once more input proves it is not the last.
        while !input.is_empty() {
            if s.pending.len() == s.segment_size {
                let segment = std::mem::take(&mut s.pending);
                s.seal(&segment, false, output)?;
                s.pending = segment;
                s.pending.clear();
            }
            let take = (s.segment_size - s.pending.len()).min(input.len());
            s.pending.extend_from_slice(&input[..take]);
            input = &input[take..];
        }
        Ok(())
    }

    fn finish(&mut self, output: &mut Vec<u8>) -> Result<Metadata> {
        let s = &mut self.0;
        let segment = std::mem::take(&mut s.pending);
        s.seal(&segment, true, output)?;
        Ok(vec![
            ("key".into(), s.key.id()),
            ("segment_size".into(), s.segment_size.to_string()),
            ("segments".into(), s.index.to_string()),
        ])
    }
}

impl Opener {
    fn open(&mut self, sealed: &[u8], last: bool, output: &mut Vec<u8>) -> Result<()> {
        let plaintext = self
            .key
            .open(&associated_data(&self.id, self.index, last), sealed)
            .map_err(|e| match e {
                Error::Corrupt(_) if last => Error::corrupt(format!(
                    "aes-gcm: segment {} does not authenticate as the last one (truncated, reordered, tampered or from another object)",
                    self.index
                )),
                Error::Corrupt(_) => Error::corrupt(format!(
                    "aes-gcm: segment {} does not authenticate (tampered, reordered or from another object)",
                    self.index
                )),
                other => other,
            })?;
        runner_sdk::append_output(output, plaintext);
        self.index += 1;
        Ok(())
    }
}

impl Decoder for OpeningDecoder {
    fn push(&mut self, input: &[u8], output: &mut Vec<u8>) -> Result<()> {
        let o = &mut self.0;
        // Taken out while its segments are opened in place (`open` needs all of `o`).
        let mut pending = std::mem::take(&mut o.pending);
        pending.extend_from_slice(input);
        // Keep at least one full segment back: it may turn out to be the last.
        let mut start = 0;
        let mut opened = Ok(());
        while opened.is_ok() && pending.len() - start > o.sealed_size {
            opened = o.open(&pending[start..start + o.sealed_size], false, output);
            start += o.sealed_size;
        }
        pending.drain(..start);
        o.pending = pending;
        opened
    }

    fn finish(&mut self, output: &mut Vec<u8>) -> Result<()> {
        let o = &mut self.0;
        let last = std::mem::take(&mut o.pending);
        if last.len() < SEAL_OVERHEAD {
            return Err(Error::corrupt(format!(
                "aes-gcm: stream truncated ({} bytes where a sealed segment needs at least {SEAL_OVERHEAD})",
                last.len()
            )));
        }
        o.open(&last, true, output)
    }
}

runner_sdk::export_transform!(AesGcm);
