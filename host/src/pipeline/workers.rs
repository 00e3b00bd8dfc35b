//! A pool of chain workers, one per core: objects of one or many artifacts are encoded (or
//! decoded) in parallel, with a bounded number of objects and chunks in flight.

use std::sync::Arc;

use tokio::sync::{Mutex, mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::engine::{Engine, PluginError};
use crate::manifest::ObjectRecord;
use crate::pipeline::RunError;
use crate::pipeline::chain::{ChainError, ChainSpec, Worker};

pub enum Job {
    Encode {
        artifact: String,
        key: String,
        chunks: mpsc::Receiver<Vec<u8>>,
        done: oneshot::Sender<Result<ObjectRecord, ChainError>>,
    },
    Decode {
        artifact: String,
        record: ObjectRecord,
        out: mpsc::Sender<Vec<u8>>,
        done: oneshot::Sender<Result<(), ChainError>>,
    },
}

/// The result of one job, as a run error naming the snapshot.
pub async fn outcome<T>(
    result: oneshot::Receiver<Result<T, ChainError>>,
    snapshot: &str,
) -> Result<T, RunError> {
    result
        .await
        .map_err(|_| RunError::Failed("a worker stopped unexpectedly".into()))?
        .map_err(|source| RunError::Chain {
            snapshot: snapshot.into(),
            source,
        })
}

pub struct Pool {
    jobs: mpsc::Sender<Job>,
    workers: Vec<JoinHandle<()>>,
}

/// Workers to run: one per core the process may use.
pub fn default_size() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
}

impl Pool {
    pub async fn start(
        engine: &Engine,
        spec: &ChainSpec,
        size: usize,
    ) -> Result<Self, PluginError> {
        let (jobs, receiver) = mpsc::channel::<Job>(1);
        let receiver = Arc::new(Mutex::new(receiver));
        let mut workers = Vec::new();
        for _ in 0..size.max(1) {
            let mut worker = Worker::start(engine, spec).await?;
            let receiver = receiver.clone();
            workers.push(tokio::spawn(async move {
                loop {
                    let job = receiver.lock().await.recv().await;
                    match job {
                        Some(Job::Encode {
                            artifact,
                            key,
                            mut chunks,
                            done,
                        }) => {
                            let _ = done.send(worker.encode(&artifact, &key, &mut chunks).await);
                        }
                        Some(Job::Decode {
                            artifact,
                            record,
                            out,
                            done,
                        }) => {
                            let _ = done.send(worker.decode(&artifact, &record, &out).await);
                        }
                        None => break,
                    }
                }
            }));
        }
        Ok(Pool { jobs, workers })
    }

    pub async fn submit(&self, job: Job) {
        // The workers only stop after `finish`, so the channel is open here.
        let _ = self.jobs.send(job).await;
    }

    /// Queues a job only if a worker can take it without waiting; gives it back otherwise.
    pub fn try_submit(&self, job: Job) -> Result<(), Job> {
        self.jobs.try_send(job).map_err(|e| e.into_inner())
    }

    pub async fn finish(self) {
        drop(self.jobs);
        for worker in self.workers {
            let _ = worker.await;
        }
    }
}
