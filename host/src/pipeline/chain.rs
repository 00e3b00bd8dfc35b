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
    /// Read every written object back and compare digests before the manifest may name it.
    /// On for sinks loaded from a file (code the host does not control); built-in sinks
    /// write through the host's own storage service and are checked by size.
    pub read_back_writes: bool,
}

/// Where an object failed, for messages that let an operator find it.
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    #[error("artifact {artifact}, object {object}: {source}")]
    Plugin {
        artifact: String,
        object: String,
        source: PluginError,
    },
    #[error(
        "artifact {artifact}, object {object}: stage {stage} ({label}) mismatch: expected {expected_bytes} bytes with blake3 {expected}, got {actual_bytes} bytes with blake3 {actual}"
    )]
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
    #[error(
        "artifact {artifact}, object {object}: the sink reports {reported} bytes stored, but {written} were written"
    )]
    ShortWrite {
        artifact: String,
        object: String,
        reported: u64,
        written: u64,
    },
    #[error(
        "artifact {artifact}, object {object}: stage {stage} ({label}) rejected the data: {reason}"
    )]
    Rejected {
        artifact: String,
        object: String,
        stage: usize,
        label: String,
        reason: String,
    },
    #[error("artifact {artifact}, object {object}: the sink reported it stored, but {reason}")]
    NotStored {
        artifact: String,
        object: String,
        reason: String,
    },
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
    read_back_writes: bool,
}

/// Bytes and BLAKE3 of one stage's output, accumulated as it streams.
struct Tally {
    bytes: u64,
    hasher: blake3::Hasher,
}

impl Tally {
    fn new() -> Self {
        Tally {
            bytes: 0,
            hasher: blake3::Hasher::new(),
        }
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
                TransformInstance::start(
                    engine,
                    &stage.plugin,
                    &stage.label,
                    &stage.config_json,
                    stage.grants.clone(),
                    &stage.limits,
                )
                .await?,
            );
            labels.push(stage.label.clone());
        }
        let s = &spec.sink;
        let sink = SinkInstance::start(
            engine,
            &s.plugin,
            &s.label,
            &s.config_json,
            s.grants.clone(),
            &s.limits,
        )
        .await?;
        Ok(Worker {
            transforms,
            sink,
            labels,
            read_back_writes: spec.read_back_writes,
        })
    }

    /// Encodes the chunks of one object into the sink under `key`.
    pub async fn encode(
        &mut self,
        artifact: &str,
        key: &str,
        chunks: &mut mpsc::Receiver<Vec<u8>>,
    ) -> Result<ObjectRecord, ChainError> {
        let at = |source| ChainError::Plugin {
            artifact: artifact.into(),
            object: key.into(),
            source,
        };
        let object = ObjectInfo {
            id: key.to_string(),
            size_hint: None,
        };
        let n = self.transforms.len();
        let mut codecs = Vec::new();
        for t in &mut self.transforms {
            codecs.push(t.encoder(&object).await.map_err(at)?);
        }
        // Stage i's encoder writes stage i+1's output; tallies[0] is the source slice.
        let order: Vec<usize> = (0..n).collect();
        let outputs: Vec<usize> = (1..=n).collect();
        let mut tallies: Vec<Tally> = (0..=n).map(|_| Tally::new()).collect();
        let upload = self.sink.put(key, true).await.map_err(at)?;
        let Worker {
            transforms, sink, ..
        } = self;
        let mut params = Vec::new();
        let result = async {
            let mut store = Output::Sink {
                sink: &mut *sink,
                upload: &upload,
            };
            let mut flow = Flow {
                transforms: &mut *transforms,
                codecs: &codecs,
                order: &order,
                outputs: &outputs,
                tallies: &mut tallies,
                ceilings: None,
            };
            let failed = |e: FlowError| match e {
                FlowError::Stage(_, e) | FlowError::Sink(e) => at(e),
                FlowError::Receiver | FlowError::Overflow(_) => ChainError::Receiver,
            };
            while let Some(chunk) = chunks.recv().await {
                flow.count(0, &chunk).map_err(failed)?;
                flow.push_through(0, chunk, &mut store)
                    .await
                    .map_err(failed)?;
            }
            // End of input: finish each stage in order; its rest flows into the stages after it.
            for k in 0..n {
                params.push(
                    flow.transforms[k]
                        .finish_encoder(&codecs[k])
                        .await
                        .map_err(at)?,
                );
                flow.drain_from(k, &mut store).await.map_err(failed)?;
            }
            Ok::<_, ChainError>(())
        }
        .await;
        if let Err(e) = result {
            let _ = self.sink.abort(upload).await;
            return Err(e);
        }
        let stat = self.sink.finish(upload).await.map_err(at)?;
        crate::pipeline::failpoint::hit("after-upload");
        let written = tallies[n].bytes;
        if stat.size != written {
            return Err(ChainError::ShortWrite {
                artifact: artifact.into(),
                object: key.into(),
                reported: stat.size,
                written,
            });
        }
        self.confirm_stored(key, &tallies[n])
            .await
            .map_err(|reason| match reason {
                Ok(reason) => ChainError::NotStored {
                    artifact: artifact.into(),
                    object: key.into(),
                    reason,
                },
                Err(e) => at(e),
            })?;
        for (t, codec) in self.transforms.iter_mut().zip(codecs) {
            t.close(codec).await.map_err(at)?;
        }
        let stages = (0..=n)
            .map(|i| StageOutput {
                bytes: tallies[i].bytes,
                blake3: tallies[i].digest(),
                input_blake3: (i > 0).then(|| tallies[i - 1].digest()),
                params: if i > 0 {
                    params[i - 1].clone()
                } else {
                    Vec::new()
                },
            })
            .collect();
        Ok(ObjectRecord {
            key: key.to_string(),
            stages,
        })
    }

    /// The post-write check: the sink is asked again for the object's size and its bytes
    /// are read back and digested, before any manifest can reference it. A sink that says
    /// "stored" but kept other bytes, or none, fails the run here.
    async fn confirm_stored(
        &mut self,
        key: &str,
        written: &Tally,
    ) -> Result<(), Result<String, PluginError>> {
        match self.sink.stat(key).await.map_err(Err)? {
            None => return Err(Ok("it is not there when asked again".into())),
            Some(stat) if stat.size != written.bytes => {
                return Err(Ok(format!(
                    "{} bytes were written, {} are there",
                    written.bytes, stat.size
                )));
            }
            Some(_) => {}
        }
        if !self.read_back_writes {
            return Ok(());
        }
        let download = self.sink.get(key, 0, None).await.map_err(Err)?;
        let mut read_back = Tally::new();
        while let Some(chunk) = self.sink.read(&download, PULL_MAX).await.map_err(Err)? {
            read_back.add(&chunk);
        }
        self.sink.close_download(download).await.map_err(Err)?;
        if read_back.bytes != written.bytes || read_back.digest() != written.digest() {
            return Err(Ok(format!(
                "reading it back gives {} bytes with blake3 {}, not the {} bytes with blake3 {} written",
                read_back.bytes,
                read_back.digest(),
                written.bytes,
                written.digest()
            )));
        }
        Ok(())
    }

    /// Reads one object back through the decoders, sending its source bytes to `out`, and
    /// checks the digest of every stage boundary against `record`.
    pub async fn decode(
        &mut self,
        artifact: &str,
        record: &ObjectRecord,
        out: &mpsc::Sender<Vec<u8>>,
    ) -> Result<(), ChainError> {
        let key = record.key.as_str();
        let at = |source| ChainError::Plugin {
            artifact: artifact.into(),
            object: key.into(),
            source,
        };
        let n = self.transforms.len();
        if self.sink.stat(key).await.map_err(at)?.is_none() {
            return Err(ChainError::Missing {
                artifact: artifact.into(),
                object: key.into(),
            });
        }
        let object = ObjectInfo {
            id: key.to_string(),
            size_hint: None,
        };
        let mut codecs = Vec::new();
        for (i, t) in self.transforms.iter_mut().enumerate() {
            codecs.push(
                t.decoder(&object, &record.stages[i + 1].params)
                    .await
                    .map_err(at)?,
            );
        }
        // Decoders run last to first; the decoder of stage i restores stage i-1's output.
        let order: Vec<usize> = (0..n).rev().collect();
        let outputs: Vec<usize> = (0..n).rev().collect();
        let mut tallies: Vec<Tally> = (0..=n).map(|_| Tally::new()).collect();
        let download = self.sink.get(key, 0, None).await.map_err(at)?;
        let Worker {
            transforms,
            sink,
            labels,
            ..
        } = self;
        let mut deliver = Output::Channel(out);
        // No stage may give more than the manifest recorded for it: a damaged object stops
        // at once instead of filling memory (restores decode objects ahead) or the target.
        let ceilings: Vec<u64> = record.stages.iter().map(|s| s.bytes).collect();
        let mut flow = Flow {
            transforms: &mut *transforms,
            codecs: &codecs,
            order: &order,
            outputs: &outputs,
            tallies: &mut tallies,
            ceilings: Some(&ceilings),
        };
        let decoded: Result<(), FlowError> = async {
            loop {
                let Some(chunk) = sink
                    .read(&download, PULL_MAX)
                    .await
                    .map_err(FlowError::Sink)?
                else {
                    break;
                };
                flow.count(n, &chunk)?;
                flow.push_through(0, chunk, &mut deliver).await?;
            }
            for k in 0..n {
                let i = order[k];
                flow.transforms[i]
                    .finish_decoder(&codecs[i])
                    .await
                    .map_err(|e| FlowError::Stage(i, e))?;
                flow.drain_from(k, &mut deliver).await?;
            }
            Ok(())
        }
        .await;
        if let Err(stop) = decoded {
            // A damaged object is reported as such, not as the fault of the decoder that noticed.
            while let Ok(Some(chunk)) = sink.read(&download, PULL_MAX).await {
                tallies[n].add(&chunk);
            }
            let stored = &record.stages[n];
            if tallies[n].bytes != stored.bytes || tallies[n].digest() != stored.blake3 {
                return Err(mismatch(labels, artifact, key, n, n, stored, &tallies[n]));
            }
            return Err(match stop {
                FlowError::Overflow(i) => {
                    mismatch(labels, artifact, key, i, n, &record.stages[i], &tallies[i])
                }
                stop => rejected(labels, artifact, key, stop),
            });
        }
        self.sink.close_download(download).await.map_err(at)?;
        for (t, codec) in self.transforms.iter_mut().zip(codecs) {
            t.close(codec).await.map_err(at)?;
        }
        for i in (0..=n).rev() {
            let expected = &record.stages[i];
            if tallies[i].bytes != expected.bytes || tallies[i].digest() != expected.blake3 {
                return Err(mismatch(
                    &self.labels,
                    artifact,
                    key,
                    i,
                    n,
                    expected,
                    &tallies[i],
                ));
            }
        }
        Ok(())
    }

    pub fn sink(&mut self) -> &mut SinkInstance {
        &mut self.sink
    }
}

/// A stage's output differs from what the manifest recorded.
fn mismatch(
    labels: &[String],
    artifact: &str,
    key: &str,
    stage: usize,
    stored: usize,
    expected: &StageOutput,
    actual: &Tally,
) -> ChainError {
    ChainError::Mismatch {
        artifact: artifact.into(),
        object: key.into(),
        stage,
        label: if stage == stored {
            format!("stored object, {}", labels[stage])
        } else {
            labels[stage].clone()
        },
        expected: expected.blake3.clone(),
        expected_bytes: expected.bytes,
        actual: actual.digest(),
        actual_bytes: actual.bytes,
    }
}

/// A decoder refused its input, the sink failed, or the restore target stopped reading:
/// name the stage.
fn rejected(labels: &[String], artifact: &str, key: &str, stop: FlowError) -> ChainError {
    match stop {
        FlowError::Stage(i, PluginError::Plugin { call, error, .. }) => ChainError::Rejected {
            artifact: artifact.into(),
            object: key.into(),
            stage: i + 1,
            label: labels[i + 1].clone(),
            reason: format!("{call}: {}", crate::engine::bindings::describe(&error)),
        },
        FlowError::Stage(_, source) | FlowError::Sink(source) => ChainError::Plugin {
            artifact: artifact.into(),
            object: key.into(),
            source,
        },
        FlowError::Receiver | FlowError::Overflow(_) => ChainError::Receiver,
    }
}

/// Streams pieces through stages depth-first, so the host holds at most one piece per
/// stage whatever a stage's expansion (a decompressor can turn 1 MiB into 100).
struct Flow<'a> {
    transforms: &'a mut [TransformInstance],
    codecs: &'a [crate::engine::transform::Codec],
    /// Stage indices in processing order.
    order: &'a [usize],
    /// For each position in `order`, the tally its output counts into.
    outputs: &'a [usize],
    tallies: &'a mut [Tally],
    /// Most bytes each tally may reach (decoding: what the manifest recorded).
    ceilings: Option<&'a [u64]>,
}

/// Where the last stage's output goes.
enum Output<'a> {
    Sink {
        sink: &'a mut SinkInstance,
        upload: &'a crate::engine::sink::ObjectUpload,
    },
    Channel(&'a mpsc::Sender<Vec<u8>>),
}

impl Output<'_> {
    async fn emit(&mut self, piece: Vec<u8>) -> Result<(), FlowError> {
        match self {
            Output::Sink { sink, upload } => {
                sink.write(upload, piece).await.map_err(FlowError::Sink)
            }
            Output::Channel(sender) => sender.send(piece).await.map_err(|_| FlowError::Receiver),
        }
    }
}

/// Why pieces stopped flowing.
enum FlowError {
    /// The transform at this index into the transforms failed.
    Stage(usize, PluginError),
    /// The sink failed.
    Sink(PluginError),
    /// The receiving side went away.
    Receiver,
    /// This tally passed its ceiling.
    Overflow(usize),
}

impl Flow<'_> {
    /// Adds `data` to tally `i`; past its ceiling, the flow stops.
    fn count(&mut self, i: usize, data: &[u8]) -> Result<(), FlowError> {
        self.tallies[i].add(data);
        match self.ceilings {
            Some(ceilings) if self.tallies[i].bytes > ceilings[i] => Err(FlowError::Overflow(i)),
            _ => Ok(()),
        }
    }

    /// Pushes `piece` into the stage at position `k` and carries everything it yields to the end.
    async fn push_through(
        &mut self,
        k: usize,
        piece: Vec<u8>,
        output: &mut Output<'_>,
    ) -> Result<(), FlowError> {
        // No stages at all: the piece goes straight out.
        if k == self.order.len() {
            return output.emit(piece).await;
        }
        let i = self.order[k];
        self.transforms[i]
            .push(&self.codecs[i], piece)
            .await
            .map_err(|e| FlowError::Stage(i, e))?;
        self.drain_from(k, output).await
    }

    /// Pulls what the stage at position `k` has ready, carrying each piece through the rest.
    async fn drain_from(&mut self, k: usize, output: &mut Output<'_>) -> Result<(), FlowError> {
        let mut stack = vec![k];
        while let Some(&k) = stack.last() {
            let i = self.order[k];
            match self.transforms[i]
                .pull(&self.codecs[i], PULL_MAX)
                .await
                .map_err(|e| FlowError::Stage(i, e))?
            {
                None => {
                    stack.pop();
                }
                Some(out) => {
                    self.count(self.outputs[k], &out)?;
                    if k + 1 == self.order.len() {
                        output.emit(out).await?;
                    } else {
                        let next = self.order[k + 1];
                        self.transforms[next]
                            .push(&self.codecs[next], out)
                            .await
                            .map_err(|e| FlowError::Stage(next, e))?;
                        stack.push(k + 1);
                    }
                }
            }
        }
        Ok(())
    }
}
