//! Restore: indices recreated from their meta artifact and loaded by bulk requests with the
//! documents' original `_id`s; `replace` loads a new index and swaps it in at commit.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use runner_sdk::{
    Artifact, ArtifactWriter, Error, MetadataExt, RestoreMode, RestoreOptions, RestoreReport,
    RestoreSession, Result,
};
use serde_json::{Value, json, value::RawValue};
use waki::Method;

use crate::Settings;
use crate::client::{Cluster, backoff};
use crate::meta::{self, IndexMeta, Part};

/// Failed documents listed per index in the error; the rest are counted.
const MAX_LISTED_FAILURES: usize = 20;

pub struct EsRestore {
    shared: Rc<RefCell<Shared>>,
}

struct Shared {
    settings: Rc<Settings>,
    cluster: Rc<Cluster>,
    mode: RestoreMode,
    dry_run: bool,
    prefix: String,
    /// By the snapshot's index name, in the order they arrived.
    indices: BTreeMap<String, IndexRestore>,
    order: Vec<String>,
    finished: bool,
}

/// One index being restored.
struct IndexRestore {
    /// The name it gets: prefix + the snapshot's name.
    target: String,
    meta: Option<IndexMeta>,
    /// Where documents go: the target (merge) or the new index (replace).
    load_index: Option<String>,
    /// The index this restore created to swap in (replace); deleted on failure.
    staging: Option<String>,
    /// Documents the snapshot holds, from the artifact's metadata.
    expected: Option<u64>,
    /// Documents read from the artifact.
    read: u64,
    restored: u64,
    /// `_id` and reason of each document the cluster refused.
    failed: Vec<(String, String)>,
    retried: u64,
}

impl EsRestore {
    pub fn begin(settings: Rc<Settings>, options: RestoreOptions) -> Result<Self> {
        let cluster = Rc::new(settings.cluster());
        // Checks the URL, the credentials and that this is a cluster before anything is written.
        let version = cluster.version()?;
        let prefix = options
            .target
            .clone()
            .unwrap_or_else(|| settings.target_prefix.clone());
        if prefix
            .chars()
            .any(|c| c.is_ascii_uppercase() || matches!(c, ',' | '/' | ' ' | '*' | '?' | '"' | '#'))
        {
            return Err(Error::config(format!(
                "restore target {prefix:?} is used as an index name prefix: lowercase, without , / * ? \" # or spaces"
            )));
        }
        runner_sdk::info!(
            "restoring into {} {} ({}{})",
            version.distribution,
            version.number,
            if matches!(options.mode, RestoreMode::Replace) {
                "replace"
            } else {
                "merge"
            },
            if prefix.is_empty() {
                String::new()
            } else {
                format!(", index names prefixed with {prefix:?}")
            }
        );
        Ok(EsRestore {
            shared: Rc::new(RefCell::new(Shared {
                settings,
                cluster,
                mode: options.mode,
                dry_run: options.dry_run,
                prefix,
                indices: BTreeMap::new(),
                order: Vec::new(),
                finished: false,
            })),
        })
    }
}

impl Shared {
    fn index(&mut self, name: &str) -> &mut IndexRestore {
        if !self.indices.contains_key(name) {
            self.order.push(name.to_string());
            self.indices.insert(
                name.to_string(),
                IndexRestore {
                    target: format!("{}{name}", self.prefix),
                    meta: None,
                    load_index: None,
                    staging: None,
                    expected: None,
                    read: 0,
                    restored: 0,
                    failed: Vec::new(),
                    retried: 0,
                },
            );
        }
        self.indices.get_mut(name).expect("inserted above")
    }

    fn replace(&self) -> bool {
        matches!(self.mode, RestoreMode::Replace)
    }

    /// Creates what the documents of `name` load into, from its meta.
    fn prepare(&mut self, name: &str, meta: IndexMeta) -> Result<()> {
        let cluster = self.cluster.clone();
        let (dry_run, replace, prefix) = (self.dry_run, self.replace(), self.prefix.clone());
        let index = self.index(name);
        let target = index.target.clone();
        if dry_run {
            index.load_index = Some(target);
        } else if replace {
            let staging = format!("{target}-restore-{}", now_millis());
            cluster.json(
                Method::Put,
                &format!("/{staging}"),
                Some(&meta.create_body(&prefix, false)),
            )?;
            index.staging = Some(staging.clone());
            index.load_index = Some(staging);
        } else {
            match cluster.send_retrying(Method::Get, &format!("/{target}/_mapping"), None)? {
                Ok(_) => {}
                Err(f) if f.status == 404 => {
                    cluster
                        .json(
                            Method::Put,
                            &format!("/{target}"),
                            Some(&meta.create_body(&prefix, true)),
                        )
                        .map_err(|e| context(e, &format!("creating index {target}")))?;
                }
                Err(f) => return Err(f.into_error(&format!("GET /{target}/_mapping"))),
            }
            index.load_index = Some(target);
        }
        index.meta = Some(meta);
        Ok(())
    }

    /// Sends one bulk request of `docs` documents, retrying the whole request on 429/503
    /// and the items the cluster refused with 429; other item errors are recorded.
    fn bulk(&mut self, name: &str, batch: &[Doc]) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let cluster = self.cluster.clone();
        let max_retries = cluster.max_retries;
        let dry_run = self.dry_run;
        let index = self.index(name);
        if dry_run {
            index.restored += batch.len() as u64;
            return Ok(());
        }
        let load = index
            .load_index
            .clone()
            .expect("load index set before documents");
        let mut pending: Vec<&Doc> = batch.iter().collect();
        let mut attempt = 0;
        while !pending.is_empty() {
            let mut body = Vec::with_capacity(pending.iter().map(|d| d.source.len() + 100).sum());
            for doc in &pending {
                let mut action = json!({"index": {"_index": load, "_id": doc.id}});
                if let Some(routing) = &doc.routing {
                    action["index"]["routing"] = json!(routing);
                }
                serde_json::to_writer(&mut body, &action).map_err(Error::internal)?;
                body.push(b'\n');
                body.extend_from_slice(doc.source.as_bytes());
                body.push(b'\n');
            }
            let answer = cluster
                .send_retrying(
                    Method::Post,
                    "/_bulk",
                    Some((&body, "application/x-ndjson")),
                )?
                .map_err(|f| f.into_error(&format!("bulk indexing into {load}")))?;
            let answer: Value = serde_json::from_slice(&answer).map_err(|e| {
                Error::permanent(format!(
                    "bulk indexing into {load}: the answer is not JSON: {e}"
                ))
            })?;
            let items = answer
                .get("items")
                .and_then(Value::as_array)
                .filter(|items| items.len() == pending.len())
                .ok_or_else(|| {
                    Error::permanent(format!(
                        "bulk indexing into {load}: expected one item per document"
                    ))
                })?;
            let mut refused = Vec::new();
            for (doc, item) in pending.iter().zip(items) {
                let outcome = item
                    .as_object()
                    .and_then(|o| o.values().next())
                    .cloned()
                    .unwrap_or(Value::Null);
                let status = outcome.get("status").and_then(Value::as_u64).unwrap_or(0);
                if (200..300).contains(&status) {
                    index.restored += 1;
                } else if matches!(status, 429 | 503) && attempt < max_retries {
                    refused.push(*doc);
                } else {
                    let error = outcome.get("error");
                    let kind = error
                        .and_then(|e| e.get("type"))
                        .and_then(Value::as_str)
                        .unwrap_or("error");
                    let reason = error
                        .and_then(|e| e.get("reason"))
                        .and_then(Value::as_str)
                        .unwrap_or("");
                    index
                        .failed
                        .push((doc.id.clone(), format!("HTTP {status} {kind}: {reason}")));
                }
            }
            if !refused.is_empty() {
                index.retried += refused.len() as u64;
                backoff(attempt);
                attempt += 1;
            }
            pending = refused;
        }
        Ok(())
    }

    /// Deletes the indices this restore created to swap in.
    fn remove_staging(&mut self) {
        if self.dry_run {
            return;
        }
        for index in self.indices.values_mut() {
            if let Some(staging) = index.staging.take() {
                if let Err(e) = self
                    .cluster
                    .json(Method::Delete, &format!("/{staging}"), None)
                {
                    runner_sdk::warn!("could not delete the unused index {staging}: {e:?}");
                }
            }
        }
    }

    /// Refreshes and counts every loaded index, then (replace) swaps them in.
    fn commit(&mut self) -> Result<Vec<RestoreReport>> {
        let mut problems = Vec::new();
        let mut counts = BTreeMap::new();
        for name in self.order.clone() {
            let index = &self.indices[&name];
            let Some(load) = index.load_index.clone() else {
                continue;
            };
            if let Some(expected) = index.expected
                && index.read != expected
            {
                problems.push(format!(
                    "{name}: the snapshot lists {expected} documents but its artifact holds {}",
                    index.read
                ));
            }
            if self.dry_run || index.expected.is_none() {
                continue;
            }
            self.cluster
                .json(Method::Post, &format!("/{load}/_refresh"), None)?;
            let count = self
                .cluster
                .json(Method::Get, &format!("/{load}/_count"), None)?;
            let count = count.get("count").and_then(Value::as_u64).unwrap_or(0);
            // Replace: the new index holds exactly what was restored. Merge: at least that.
            let consistent = if self.replace() {
                count == index.restored
            } else {
                count >= index.restored
            };
            if !consistent && index.failed.is_empty() {
                problems.push(format!(
                    "{name}: {load} counts {count} documents after restoring {}",
                    index.restored
                ));
            }
            counts.insert(name, count);
        }
        let failed: usize = self.indices.values().map(|i| i.failed.len()).sum();
        if failed > 0 || !problems.is_empty() {
            let mut message = String::from("elasticsearch restore failed");
            if failed > 0 {
                message.push_str(&format!(
                    ": {failed} document(s) were refused by the cluster"
                ));
            }
            for name in &self.order {
                let index = &self.indices[name];
                message.push_str(&format!(
                    "\n  {}",
                    self.summary(name, index, counts.get(name))
                ));
                for (id, reason) in index.failed.iter().take(MAX_LISTED_FAILURES) {
                    message.push_str(&format!("\n    _id {id:?}: {reason}"));
                }
                if index.failed.len() > MAX_LISTED_FAILURES {
                    message.push_str(&format!(
                        "\n    … and {} more",
                        index.failed.len() - MAX_LISTED_FAILURES
                    ));
                }
            }
            for problem in &problems {
                message.push_str(&format!("\n  {problem}"));
            }
            if self.replace() {
                message.push_str("\n  replace: the existing indices were left as they were");
                self.remove_staging();
            }
            return Err(Error::permanent(message));
        }
        if self.replace() && !self.dry_run {
            self.swap()?;
        }
        let mut reports = Vec::new();
        for name in &self.order {
            let index = &self.indices[name];
            let mut metadata = vec![
                ("index".to_string(), index.target.clone()),
                (
                    "exported".to_string(),
                    index
                        .expected
                        .map(|e| e.to_string())
                        .unwrap_or_else(|| "-".into()),
                ),
                ("restored".to_string(), index.restored.to_string()),
                ("failed".to_string(), index.failed.len().to_string()),
            ];
            if let Some(count) = counts.get(name) {
                metadata.push(("count".to_string(), count.to_string()));
            }
            if index.retried > 0 {
                metadata.push(("retried".to_string(), index.retried.to_string()));
            }
            if self.dry_run {
                metadata.push(("dry_run".to_string(), "true".to_string()));
            }
            reports.push(RestoreReport {
                artifact: name.clone(),
                metadata,
                warnings: Vec::new(),
            });
        }
        Ok(reports)
    }

    /// One atomic `_aliases` call per index: the old index (or the indices its name is an
    /// alias of) removed, the new one named by an alias, the snapshot's aliases added.
    fn swap(&mut self) -> Result<()> {
        for name in self.order.clone() {
            let index = self.indices.get_mut(&name).expect("listed");
            let Some(staging) = index.staging.clone() else {
                continue;
            };
            let target = index.target.clone();
            let mut actions = Vec::new();
            match self
                .cluster
                .send_retrying(Method::Get, &format!("/{target}/_alias"), None)?
            {
                Ok(bytes) => {
                    let existing: Value =
                        serde_json::from_slice(&bytes).map_err(Error::internal)?;
                    for concrete in existing.as_object().into_iter().flat_map(|o| o.keys()) {
                        actions.push(json!({"remove_index": {"index": concrete}}));
                    }
                }
                Err(f) if f.status == 404 => {}
                Err(f) => return Err(f.into_error(&format!("GET /{target}/_alias"))),
            }
            actions.push(json!({"add": {"index": staging, "alias": target}}));
            if let Some(meta) = &index.meta {
                for (alias, spec) in meta.renamed_aliases(&self.prefix) {
                    let mut add = spec.as_object().cloned().unwrap_or_default();
                    add.insert("index".into(), json!(staging));
                    add.insert("alias".into(), json!(alias));
                    actions.push(json!({ "add": add }));
                }
            }
            self.cluster
                .json(
                    Method::Post,
                    "/_aliases",
                    Some(&json!({ "actions": actions })),
                )
                .map_err(|e| context(e, &format!("swapping {staging} in as {target}")))?;
            // Swapped: no longer ours to delete.
            self.indices.get_mut(&name).expect("listed").staging = None;
        }
        Ok(())
    }

    fn summary(&self, name: &str, index: &IndexRestore, count: Option<&u64>) -> String {
        format!(
            "{name} → {}: exported {}, restored {}, failed {}{}",
            index.load_index.as_deref().unwrap_or(&index.target),
            index
                .expected
                .map(|e| e.to_string())
                .unwrap_or_else(|| "?".into()),
            index.restored,
            index.failed.len(),
            count.map(|c| format!(", count {c}")).unwrap_or_default()
        )
    }
}

impl RestoreSession for EsRestore {
    type Writer = EsWriter;

    fn write_artifact(&mut self, artifact: Artifact) -> Result<EsWriter> {
        let (index, part) = meta::parse_artifact_name(&artifact.name)?;
        if artifact.schema_version != meta::SCHEMA_VERSION {
            return Err(Error::unsupported(format!(
                "artifact {} has schema version {}; this plugin reads {}",
                artifact.name,
                artifact.schema_version,
                meta::SCHEMA_VERSION
            )));
        }
        let mut shared = self.shared.borrow_mut();
        let replace = shared.replace();
        let state = shared.index(index);
        if part == Part::Documents {
            state.expected = Some(artifact.metadata.require::<u64>("documents")?);
            if state.load_index.is_none() {
                if replace {
                    return Err(Error::invalid_input(format!(
                        "replace needs {index}/meta before {index}/documents (select both, e.g. --only '{index}/*')"
                    )));
                }
                // Merge without meta: into the existing index (or one the cluster creates).
                state.load_index = Some(state.target.clone());
            }
        }
        Ok(EsWriter {
            shared: self.shared.clone(),
            index: index.to_string(),
            part,
            pending: Vec::new(),
            batch: Vec::new(),
            batch_bytes: 0,
        })
    }

    fn commit(&mut self) -> Result<Vec<RestoreReport>> {
        let mut shared = self.shared.borrow_mut();
        shared.finished = true;
        shared.commit()
    }

    fn abort(&mut self) {
        let mut shared = self.shared.borrow_mut();
        if !shared.finished {
            shared.finished = true;
            shared.remove_staging();
        }
    }
}

/// One document from the NDJSON artifact, ready for a bulk request.
struct Doc {
    id: String,
    routing: Option<String>,
    source: String,
}

#[derive(serde::Deserialize)]
struct Line<'a> {
    #[serde(rename = "_id")]
    id: String,
    #[serde(rename = "_source", borrow)]
    source: &'a RawValue,
    #[serde(rename = "_routing", default)]
    routing: Option<String>,
}

pub struct EsWriter {
    shared: Rc<RefCell<Shared>>,
    index: String,
    part: Part,
    /// Bytes of an unfinished line (or the whole meta).
    pending: Vec<u8>,
    batch: Vec<Doc>,
    batch_bytes: usize,
}

impl EsWriter {
    fn take_line(&mut self, line: &[u8]) -> Result<()> {
        if line.iter().all(u8::is_ascii_whitespace) {
            return Ok(());
        }
        let parsed: Line = serde_json::from_slice(line).map_err(|e| {
            Error::corrupt(format!(
                "{}/documents: a line is not a document ({{\"_id\", \"_source\"}}): {e}",
                self.index
            ))
        })?;
        self.batch_bytes += parsed.source.get().len();
        self.batch.push(Doc {
            id: parsed.id,
            routing: parsed.routing,
            source: parsed.source.get().to_string(),
        });
        let (docs, bytes) = {
            let shared = self.shared.borrow();
            (shared.settings.batch_docs, shared.settings.batch_bytes)
        };
        if self.batch.len() >= docs || self.batch_bytes >= bytes {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        let batch = std::mem::take(&mut self.batch);
        self.batch_bytes = 0;
        let mut shared = self.shared.borrow_mut();
        shared.index(&self.index).read += batch.len() as u64;
        shared.bulk(&self.index, &batch)
    }
}

impl ArtifactWriter for EsWriter {
    fn write(&mut self, chunk: &[u8]) -> Result<()> {
        if self.part == Part::Meta {
            self.pending.extend_from_slice(chunk);
            return Ok(());
        }
        let mut rest = chunk;
        while let Some(newline) = rest.iter().position(|&b| b == b'\n') {
            let (line, tail) = rest.split_at(newline);
            rest = &tail[1..];
            if self.pending.is_empty() {
                self.take_line(line)?;
            } else {
                let mut whole = std::mem::take(&mut self.pending);
                whole.extend_from_slice(line);
                self.take_line(&whole)?;
            }
        }
        self.pending.extend_from_slice(rest);
        Ok(())
    }

    fn finish(&mut self) -> Result<()> {
        match self.part {
            Part::Meta => {
                let meta: IndexMeta = serde_json::from_slice(&self.pending).map_err(|e| {
                    Error::corrupt(format!(
                        "{}/meta is not an index description: {e}",
                        self.index
                    ))
                })?;
                self.shared.borrow_mut().prepare(&self.index, meta)
            }
            Part::Documents => {
                let last = std::mem::take(&mut self.pending);
                self.take_line(&last)?;
                self.flush()
            }
        }
    }
}

fn now_millis() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default()
}

/// The error with what was being done in front of its message.
fn context(error: Error, what: &str) -> Error {
    match error {
        Error::Remote(mut remote) => {
            remote.message = format!("{what}: {}", remote.message);
            Error::Remote(remote)
        }
        Error::AccessDenied(m) => Error::AccessDenied(format!("{what}: {m}")),
        Error::NotFound(m) => Error::NotFound(format!("{what}: {m}")),
        other => other,
    }
}
