//! One object through the transform chain: forward into the sink with a digest at every
//! stage boundary, or backward out of the sink checking every digest the manifest recorded.

use tokio::sync::mpsc;

use crate::capabilities::StageGrants;
use crate::config::Limits;
use crate::engine::transform::{ObjectInfo, PULL_MAX};
use crate::engine::{Engine, LoadedPlugin, PluginError, SinkInstance, TransformInstance};
use crate::manifest::{ObjectRecord, StageOutput};

/// How to start one stage's plugin.
#[derive(Clone)]
pub struct StageSpec {
    pub plugin: LoadedPlugin,
    pub label: String,
    pub config_json: String,
    pub grants: StageGrants,
    pub limits: Limits,
}

/// The stages a worker runs: the transforms in order, then the sink.
#[derive(Clone)]
pub struct ChainSpec {
    pub transforms: Vec<StageSpec>,
    pub sink: StageSpec,
}

/// Where an object failed, for messages that let an operator find it.
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    #[error("artifact {artifact}, object {object}: {source}")]
    Plugin { artifact: String, object: String, source: PluginError },
    #[error("artifact {artifact}, object {object}: stage {stage} ({label}) mismatch: expected {expected_bytes} bytes with blake3 {expected}, got {actual_bytes} bytes with blake3 {actual}")]
    Mismatch {
        artifact: String,
        object: String,
        stage: usize,
        label: String,
        expected: String,
        expected_bytes: u64,
        actual: String,
        actual_bytes: u64,
    },
    #[error("artifact {artifact}, object {object}: the sink reports {reported} bytes stored, but {written} were written")]
    ShortWrite { artifact: String, object: String, reported: u64, written: u64 },
    #[error("artifact {artifact}, object {object}: the stored object is missing")]
    Missing { artifact: String, object: String },
    #[error("the restore target stopped accepting data")]
    Receiver,
}

/// A running chain: one instance of every transform and of the sink.
pub struct Worker {
    transforms: Vec<TransformInstance>,
    sink: SinkInstance,
    labels: Vec<String>,
}

/// Bytes and BLAKE3 of one stage's output, accumulated as it streams.
struct Tally {
    bytes: u64,
    hasher: blake3::Hasher,
}

impl Tally {
    fn new() -> Self {
        Tally { bytes: 0, hasher: blake3::Hasher::new() }
    }

    fn add(&mut self, data: &[u8]) {
        self.bytes += data.len() as u64;
        self.hasher.update(data);
    }

    fn digest(&self) -> String {
        self.hasher.finalize().to_hex().to_string()
    }
}

impl Worker {
    pub async fn start(engine: &Engine, spec: &ChainSpec) -> Result<Self, PluginError> {
        let mut transforms = Vec::new();
        let mut labels = vec!["source".to_string()];
        for stage in &spec.transforms {
            transforms.push(
                TransformInstance::start(engine, &stage.plugin, &stage.label, &stage.config_json, stage.grants.clone(), &stage.limits)
                    .await?,
            );
            labels.push(stage.label.clone());
        }
        let s = &spec.sink;
        let sink = SinkInstance::start(engine, &s.plugin, &s.label, &s.config_json, s.grants.clone(), &s.limits).await?;
        Ok(Worker { transforms, sink, labels })
    }

    /// Encodes the chunks of one object into the sink under `key`.
    pub async fn encode(&mut self, artifact: &str, key: &str, chunks: &mut mpsc::Receiver<Vec<u8>>) -> Result<ObjectRecord, ChainError> {
        let at = |source| ChainError::Plugin { artifact: artifact.into(), object: key.into(), source };
        let object = ObjectInfo { id: key.to_string(), size_hint: None };
        let mut codecs = Vec::new();
        for t in &mut self.transforms {
            codecs.push(t.encoder(&object).await.map_err(at)?);
        }
        let mut tallies: Vec<Tally> = (0..=self.transforms.len()).map(|_| Tally::new()).collect();
        let upload = self.sink.put(key, true).await.map_err(at)?;
        let result = async {
            while let Some(chunk) = chunks.recv().await {
                tallies[0].add(&chunk);
                let mut pending = vec![chunk];
                for (i, (t, codec)) in self.transforms.iter_mut().zip(&codecs).enumerate() {
                    let mut next = Vec::new();
                    for piece in pending {
                        t.feed(codec, piece, &mut |out| next.push(out)).await?;
                    }
                    next.iter().for_each(|out| tallies[i + 1].add(out));
                    pending = next;
                }
                for piece in pending {
                    self.sink.write(&upload, piece).await?;
                }
            }
            // End of input: each stage's remaining output flows into the next before it finishes.
            let mut params = Vec::new();
            let mut pending: Vec<Vec<u8>> = Vec::new();
            for (i, (t, codec)) in self.transforms.iter_mut().zip(&codecs).enumerate() {
                let mut next = Vec::new();
                for piece in pending {
                    t.feed(codec, piece, &mut |out| next.push(out)).await?;
                }
                params.push(t.finish_encoder(codec).await?);
                t.drain(codec, &mut |out| next.push(out)).await?;
                next.iter().for_each(|out| tallies[i + 1].add(out));
                pending = next;
            }
            for piece in pending {
                self.sink.write(&upload, piece).await?;
            }
            Ok::<_, PluginError>(params)
        }
        .await;
        let params = match result {
            Ok(params) => params,
            Err(e) => {
                let _ = self.sink.abort(upload).await;
                return Err(at(e));
            }
        };
        let stat = self.sink.finish(upload).await.map_err(at)?;
        crate::pipeline::failpoint::hit("after-upload");
        let written = tallies.last().map(|t| t.bytes).unwrap_or(0);
        if stat.size != written {
            return Err(ChainError::ShortWrite { artifact: artifact.into(), object: key.into(), reported: stat.size, written });
        }
        for (t, codec) in self.transforms.iter_mut().zip(codecs) {
            t.close(codec).await.map_err(at)?;
        }
        let mut stages = Vec::new();
        for (i, tally) in tallies.iter().enumerate() {
            stages.push(StageOutput {
                bytes: tally.bytes,
                blake3: tally.digest(),
                input_blake3: (i > 0).then(|| tallies[i - 1].digest()),
                params: if i > 0 { params[i - 1].clone() } else { Vec::new() },
            });
        }
        Ok(ObjectRecord { key: key.to_string(), stages })
    }

    /// Reads one object back through the decoders, sending its source bytes to `out`, and
    /// checks the digest of every stage boundary against `record`.
    pub async fn decode(&mut self, artifact: &str, record: &ObjectRecord, out: &mpsc::Sender<Vec<u8>>) -> Result<(), ChainError> {
        let key = record.key.as_str();
        let at = |source| ChainError::Plugin { artifact: artifact.into(), object: key.into(), source };
        let n = self.transforms.len();
        if self.sink.stat(key).await.map_err(at)?.is_none() {
            return Err(ChainError::Missing { artifact: artifact.into(), object: key.into() });
        }
        let object = ObjectInfo { id: key.to_string(), size_hint: None };
        let mut codecs = Vec::new();
        for (i, t) in self.transforms.iter_mut().enumerate() {
            codecs.push(t.decoder(&object, &record.stages[i + 1].params).await.map_err(at)?);
        }
        let mut tallies: Vec<Tally> = (0..=n).map(|_| Tally::new()).collect();
        let download = self.sink.get(key, 0, None).await.map_err(at)?;

        // Stage i's decoder turns stage i's output back into stage i-1's.
        let step = async |this: &mut Self, input: Option<Vec<u8>>, tallies: &mut Vec<Tally>| -> Result<(), ChainError> {
            let Worker { transforms, labels, .. } = this;
            let failed = |stage: usize, source| stage_error(labels, artifact, key, stage, source);
            let mut pending = match input {
                Some(data) => {
                    tallies[n].add(&data);
                    vec![data]
                }
                None => Vec::new(),
            };
            let finishing = pending.is_empty();
            for i in (0..n).rev() {
                let (t, codec) = (&mut transforms[i], &codecs[i]);
                let mut next = Vec::new();
                for piece in pending {
                    t.feed(codec, piece, &mut |o| next.push(o)).await.map_err(|e| failed(i + 1, e))?;
                }
                if finishing {
                    t.finish_decoder(codec).await.map_err(|e| failed(i + 1, e))?;
                    t.drain(codec, &mut |o| next.push(o)).await.map_err(|e| failed(i + 1, e))?;
                }
                next.iter().for_each(|o| tallies[i].add(o));
                pending = next;
            }
            for piece in pending {
                out.send(piece).await.map_err(|_| ChainError::Receiver)?;
            }
            Ok(())
        };
        loop {
            let chunk = self.sink.read(&download, PULL_MAX).await.map_err(at)?;
            let done = chunk.is_none();
            step(self, chunk, &mut tallies).await?;
            if done {
                break;
            }
        }
        self.sink.close_download(download).await.map_err(at)?;
        for (t, codec) in self.transforms.iter_mut().zip(codecs) {
            t.close(codec).await.map_err(at)?;
        }
        // The stored bytes first: a damaged object is reported as such, not as a decoder's fault.
        for i in (0..=n).rev() {
            let expected = &record.stages[i];
            if tallies[i].bytes != expected.bytes || tallies[i].digest() != expected.blake3 {
                return Err(ChainError::Mismatch {
                    artifact: artifact.into(),
                    object: key.into(),
                    stage: i,
                    label: if i == n { format!("stored object, {}", self.labels[i]) } else { self.labels[i].clone() },
                    expected: expected.blake3.clone(),
                    expected_bytes: expected.bytes,
                    actual: tallies[i].digest(),
                    actual_bytes: tallies[i].bytes,
                });
            }
        }
        Ok(())
    }

    pub fn sink(&mut self) -> &mut SinkInstance {
        &mut self.sink
    }
}

/// A decoder refused its input: name the stage that did.
fn stage_error(labels: &[String], artifact: &str, key: &str, stage: usize, source: PluginError) -> ChainError {
    ChainError::Plugin {
        artifact: artifact.into(),
        object: format!("{key}: stage {stage} ({}) rejected the data", labels[stage]),
        source,
    }
}
