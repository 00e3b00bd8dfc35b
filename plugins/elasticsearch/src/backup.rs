//! Backup: lists the selected indices, opens one point in time (or scroll) per index when
//! the session begins, and streams each index's meta and documents as artifacts.

use std::cell::RefCell;
use std::rc::Rc;

use runner_sdk::{Artifact, ArtifactReader, BackupSession, Error, Metadata, Result, SizeEstimate};
use serde_json::{Value, json, value::RawValue};
use waki::Method;

use crate::Settings;
use crate::client::{Cluster, ClusterVersion, ViewApi};
use crate::meta::{self, IndexMeta, Part};

/// One backup: every selected index, each with its own consistent view opened at begin.
pub struct EsBackup {
    settings: Rc<Settings>,
    cluster: Rc<Cluster>,
    version: ClusterVersion,
    indices: Vec<IndexView>,
    keeper: Rc<RefCell<KeepAlive>>,
}

/// Points in time not being read must not expire while other indices are read: every
/// `TOUCH_EVERY` the reader extends them all (a size-0 search carrying `keep_alive`).
struct KeepAlive {
    cursors: Vec<(String, Rc<RefCell<Cursor>>)>,
    last: std::time::Instant,
}

const TOUCH_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

struct IndexView {
    meta: IndexMeta,
    /// Documents the view holds, as the cluster counted them when it was opened.
    documents: u64,
    cursor: Rc<RefCell<Cursor>>,
}

/// Where reading an index's documents stands.
enum Cursor {
    /// Elasticsearch ≥ 7.12 and OpenSearch ≥ 2.4: point in time, `search_after` in
    /// `_shard_doc` (or, OpenSearch before 3.3, `_id`) order.
    Pit {
        api: ViewApi,
        id: String,
        after: Option<Vec<Value>>,
        done: bool,
    },
    /// Older clusters: a scroll whose first page came with its opening.
    Scroll {
        id: Option<String>,
        first: Option<Vec<u8>>,
        done: bool,
    },
    Closed,
}

impl EsBackup {
    pub fn begin(settings: Rc<Settings>) -> Result<Self> {
        let cluster = Rc::new(settings.cluster());
        let version = cluster.version()?;
        let patterns = if settings.indices.is_empty() {
            vec!["*".to_string()]
        } else {
            settings.indices.clone()
        };
        let listed = cluster.json(
            Method::Get,
            &format!("/{}?expand_wildcards=open", patterns.join(",")),
            None,
        )?;
        let listed = listed
            .as_object()
            .ok_or_else(|| Error::permanent("GET /{indices}: expected an object of indices"))?;
        // System and internal indices (".security", ".kibana_1", …) only when asked for by name.
        let wants_dot = patterns.iter().any(|p| p.starts_with('.'));
        let mut names: Vec<&String> = listed
            .keys()
            .filter(|n| wants_dot || !n.starts_with('.'))
            .collect();
        names.sort();
        if names.is_empty() {
            return Err(Error::config_field(
                "indices",
                format!(
                    "no open index matches {} on {}",
                    patterns.join(", "),
                    settings.url
                ),
            ));
        }
        let keeper = Rc::new(RefCell::new(KeepAlive {
            cursors: Vec::new(),
            last: std::time::Instant::now(),
        }));
        let mut backup = EsBackup {
            settings: settings.clone(),
            cluster,
            version,
            indices: Vec::new(),
            keeper,
        };
        for name in names {
            let meta = IndexMeta::from_get_index(name, &listed[name.as_str()], &backup.version)?;
            // Keep what is already open closable if a later index fails.
            let (cursor, documents) = match backup.open_view(name) {
                Ok(opened) => opened,
                Err(e) => {
                    let _ = backup.close_views();
                    return Err(e);
                }
            };
            let cursor = Rc::new(RefCell::new(cursor));
            backup
                .keeper
                .borrow_mut()
                .cursors
                .push((name.clone(), cursor.clone()));
            backup.indices.push(IndexView {
                meta,
                documents,
                cursor,
            });
        }
        runner_sdk::info!(
            "{} {}: {} index(es) at one point in time each ({}); credentials: {}",
            backup.version.distribution,
            backup.version.number,
            backup.indices.len(),
            if backup.version.has_point_in_time() {
                "point in time"
            } else {
                "scroll"
            },
            settings
                .credentials
                .as_deref()
                .map(|c| format!("{c}, sent by the host"))
                .unwrap_or_else(|| "none".into())
        );
        Ok(backup)
    }

    /// Opens the consistent view of one index and counts the documents it holds.
    fn open_view(&self, index: &str) -> Result<(Cursor, u64)> {
        let keep_alive = &self.settings.keep_alive;
        let api = self.version.view_api();
        if api != ViewApi::Scroll {
            let (path, field) = match api {
                ViewApi::ElasticsearchPit => {
                    (format!("/{index}/_pit?keep_alive={keep_alive}"), "id")
                }
                _ => (
                    format!("/{index}/_search/point_in_time?keep_alive={keep_alive}"),
                    "pit_id",
                ),
            };
            let opened = self.cluster.json(Method::Post, &path, None)?;
            let id = opened
                .get(field)
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    let path = path.split('?').next().unwrap_or(&path);
                    Error::permanent(format!("POST {path}: no `{field}` in the answer"))
                })?
                .to_string();
            let counted = self.cluster.json(
                Method::Post,
                "/_search",
                Some(&json!({"size": 0, "track_total_hits": true, "pit": {"id": id, "keep_alive": keep_alive}})),
            )?;
            let documents = total_hits(&counted)
                .ok_or_else(|| Error::permanent("POST /_search: no hits.total"))?;
            Ok((
                Cursor::Pit {
                    api,
                    id,
                    after: None,
                    done: false,
                },
                documents,
            ))
        } else {
            let mut body = json!({"size": self.settings.page_size, "sort": ["_doc"]});
            if self.version.major >= 7 || self.version.distribution == "opensearch" {
                body["track_total_hits"] = json!(true);
            }
            let path = format!("/{index}/_search?scroll={keep_alive}");
            let encoded = body.to_string();
            let first = self
                .cluster
                .send_retrying(
                    Method::Post,
                    &path,
                    Some((encoded.as_bytes(), "application/json")),
                )?
                .map_err(|f| f.into_error(&format!("POST /{index}/_search?scroll")))?;
            let page: Value = serde_json::from_slice(&first)
                .map_err(|e| Error::permanent(format!("POST /{index}/_search: not JSON: {e}")))?;
            let documents = total_hits(&page)
                .ok_or_else(|| Error::permanent("POST /_search: no hits.total"))?;
            let id = page
                .get("_scroll_id")
                .and_then(Value::as_str)
                .map(str::to_string);
            Ok((
                Cursor::Scroll {
                    id,
                    first: Some(first),
                    done: false,
                },
                documents,
            ))
        }
    }

    /// Releases every point in time and scroll still open; the first failure is returned.
    fn close_views(&mut self) -> Result<()> {
        let mut result = Ok(());
        for view in &self.indices {
            let cursor = std::mem::replace(&mut *view.cursor.borrow_mut(), Cursor::Closed);
            let closed = match cursor {
                Cursor::Pit {
                    api: ViewApi::ElasticsearchPit,
                    id,
                    ..
                } => self
                    .cluster
                    .json(Method::Delete, "/_pit", Some(&json!({"id": id})))
                    .map(drop),
                Cursor::Pit { id, .. } => self
                    .cluster
                    .json(
                        Method::Delete,
                        "/_search/point_in_time",
                        Some(&json!({"pit_id": [id]})),
                    )
                    .map(drop),
                Cursor::Scroll { id: Some(id), .. } => self
                    .cluster
                    .json(
                        Method::Delete,
                        "/_search/scroll",
                        Some(&json!({"scroll_id": [id]})),
                    )
                    .map(drop),
                _ => Ok(()),
            };
            if let Err(e) = closed {
                runner_sdk::warn!("closing the view of {}: {e:?}", view.meta.index);
                if result.is_ok() {
                    result = Err(e);
                }
            }
        }
        result
    }
}

impl BackupSession for EsBackup {
    type Reader = EsReader;

    fn artifacts(&mut self) -> Result<Vec<Artifact>> {
        let mut artifacts = Vec::new();
        for view in &self.indices {
            let base = vec![
                ("index".to_string(), view.meta.index.clone()),
                (
                    "cluster_version".to_string(),
                    format!("{} {}", self.version.distribution, self.version.number),
                ),
            ];
            artifacts.push(Artifact {
                name: format!("{}/meta", view.meta.index),
                media_type: meta::META_MEDIA_TYPE.to_string(),
                size: None,
                schema_version: meta::SCHEMA_VERSION,
                metadata: base.clone(),
            });
            let mut metadata = base;
            metadata.push(("documents".to_string(), view.documents.to_string()));
            metadata.push((
                "consistency".to_string(),
                if self.version.has_point_in_time() {
                    "point-in-time"
                } else {
                    "scroll"
                }
                .to_string(),
            ));
            artifacts.push(Artifact {
                name: format!("{}/documents", view.meta.index),
                media_type: meta::DOCUMENTS_MEDIA_TYPE.to_string(),
                // Counted in this view, so exact; the reader reports progress in documents.
                size: Some(SizeEstimate {
                    amount: view.documents,
                    unit: "documents".into(),
                    exact: true,
                }),
                schema_version: meta::SCHEMA_VERSION,
                metadata,
            });
        }
        Ok(artifacts)
    }

    fn open(&mut self, name: &str) -> Result<EsReader> {
        let (index, part) = meta::parse_artifact_name(name)?;
        let view = self
            .indices
            .iter()
            .find(|v| v.meta.index == index)
            .ok_or_else(|| {
                Error::not_found(format!("no artifact named {name:?} in this backup"))
            })?;
        Ok(match part {
            Part::Meta => {
                let mut bytes = serde_json::to_vec(&view.meta).map_err(Error::internal)?;
                bytes.push(b'\n');
                EsReader::Meta { bytes, at: 0 }
            }
            Part::Documents => EsReader::Documents(DocumentsReader {
                index: index.to_string(),
                cluster: self.cluster.clone(),
                settings: self.settings.clone(),
                cursor: view.cursor.clone(),
                keeper: self.keeper.clone(),
                expected: view.documents,
                exported: 0,
                page: Vec::new(),
                at: 0,
            }),
        })
    }

    fn close(&mut self) -> Result<()> {
        self.close_views()
    }
}

impl Drop for EsBackup {
    fn drop(&mut self) {
        let _ = self.close_views();
    }
}

pub enum EsReader {
    Meta { bytes: Vec<u8>, at: usize },
    Documents(DocumentsReader),
}

pub struct DocumentsReader {
    index: String,
    cluster: Rc<Cluster>,
    settings: Rc<Settings>,
    cursor: Rc<RefCell<Cursor>>,
    keeper: Rc<RefCell<KeepAlive>>,
    expected: u64,
    exported: u64,
    /// NDJSON of the current page and how much of it was handed out.
    page: Vec<u8>,
    at: usize,
}

impl ArtifactReader for EsReader {
    fn read(&mut self, max: usize) -> Result<Option<Vec<u8>>> {
        match self {
            EsReader::Meta { bytes, at } => Ok(take(bytes, at, max)),
            EsReader::Documents(reader) => reader.read(max),
        }
    }

    fn finish(&mut self) -> Result<Metadata> {
        match self {
            EsReader::Meta { .. } => Ok(Metadata::new()),
            EsReader::Documents(reader) => {
                if reader.exported != reader.expected {
                    return Err(Error::permanent(format!(
                        "index {}: the consistent view held {} documents but {} were read",
                        reader.index, reader.expected, reader.exported
                    )));
                }
                Ok(vec![("exported".to_string(), reader.exported.to_string())])
            }
        }
    }
}

fn take(bytes: &[u8], at: &mut usize, max: usize) -> Option<Vec<u8>> {
    if *at >= bytes.len() {
        return None;
    }
    let end = (*at + max).min(bytes.len());
    let chunk = bytes[*at..end].to_vec();
    *at = end;
    Some(chunk)
}

/// One search hit, with `_source` kept as the cluster's bytes.
#[derive(serde::Deserialize)]
struct Hit<'a> {
    #[serde(rename = "_id")]
    id: String,
    #[serde(rename = "_source", borrow, default)]
    source: Option<&'a RawValue>,
    #[serde(rename = "_routing", default)]
    routing: Option<String>,
    #[serde(default)]
    sort: Option<Vec<Value>>,
}

#[derive(serde::Deserialize)]
struct Hits<'a> {
    #[serde(borrow)]
    hits: Vec<Hit<'a>>,
}

#[derive(serde::Deserialize)]
struct Page<'a> {
    #[serde(default)]
    pit_id: Option<String>,
    #[serde(rename = "_scroll_id", default)]
    scroll_id: Option<String>,
    #[serde(borrow)]
    hits: Hits<'a>,
}

impl DocumentsReader {
    fn read(&mut self, max: usize) -> Result<Option<Vec<u8>>> {
        loop {
            if let Some(chunk) = take(&self.page, &mut self.at, max) {
                return Ok(Some(chunk));
            }
            if !self.next_page()? {
                return Ok(None);
            }
        }
    }

    /// Extends the points in time of the other indices, at most every `TOUCH_EVERY`.
    fn keep_others_alive(&self) -> Result<()> {
        let mut keeper = self.keeper.borrow_mut();
        if keeper.last.elapsed() < TOUCH_EVERY {
            return Ok(());
        }
        keeper.last = std::time::Instant::now();
        for (index, cursor) in &keeper.cursors {
            if Rc::ptr_eq(cursor, &self.cursor) {
                continue;
            }
            let mut cursor = cursor.borrow_mut();
            if let Cursor::Pit {
                id, done: false, ..
            } = &mut *cursor
            {
                let body = json!({"size": 0, "track_total_hits": false, "pit": {"id": id, "keep_alive": self.settings.keep_alive}});
                let answer = self
                    .cluster
                    .json(Method::Post, "/_search", Some(&body))
                    .map_err(|e| {
                        Error::permanent(format!(
                            "keeping the point in time of {index} alive: {e:?}"
                        ))
                    })?;
                if let Some(new_id) = answer.get("pit_id").and_then(Value::as_str) {
                    *id = new_id.to_string();
                }
            }
        }
        Ok(())
    }

    /// Fetches the next page into `self.page`; false at the end.
    fn next_page(&mut self) -> Result<bool> {
        self.keep_others_alive()?;
        let keep_alive = self.settings.keep_alive.clone();
        let size = self.settings.page_size;
        let mut cursor = self.cursor.borrow_mut();
        let bytes = match &mut *cursor {
            Cursor::Closed => {
                return Err(Error::invalid_input(format!(
                    "index {}: the backup session is closed",
                    self.index
                )));
            }
            Cursor::Pit { done: true, .. } | Cursor::Scroll { done: true, .. } => return Ok(false),
            Cursor::Pit { api, id, after, .. } => {
                let mut body = json!({
                    "size": size,
                    "pit": {"id": id, "keep_alive": keep_alive},
                    "sort": api.pit_sort(),
                    "track_total_hits": false,
                });
                if let Some(after) = after {
                    body["search_after"] = Value::Array(after.clone());
                }
                let encoded = body.to_string();
                self.cluster
                    .send_retrying(
                        Method::Post,
                        "/_search",
                        Some((encoded.as_bytes(), "application/json")),
                    )?
                    .map_err(|f| {
                        f.into_error(&format!("searching {} at its point in time", self.index))
                    })?
            }
            Cursor::Scroll { id, first, .. } => match first.take() {
                Some(first) => first,
                None => {
                    let Some(scroll_id) = id.clone() else {
                        return Ok(false);
                    };
                    let body = json!({"scroll": keep_alive, "scroll_id": scroll_id}).to_string();
                    self.cluster
                        .send_retrying(
                            Method::Post,
                            "/_search/scroll",
                            Some((body.as_bytes(), "application/json")),
                        )?
                        .map_err(|f| f.into_error(&format!("scrolling {}", self.index)))?
                }
            },
        };
        let page: Page = serde_json::from_slice(&bytes).map_err(|e| {
            Error::permanent(format!("searching {}: unexpected answer: {e}", self.index))
        })?;
        self.page.clear();
        self.at = 0;
        let count = page.hits.hits.len();
        let mut last_sort = None;
        for hit in page.hits.hits {
            let source = hit.source.ok_or_else(|| {
                Error::unsupported(format!(
                    "index {}: document {:?} has no _source (disabled in the mapping?); it cannot be backed up",
                    self.index, hit.id
                ))
            })?;
            self.page.extend_from_slice(b"{\"_id\":");
            serde_json::to_writer(&mut self.page, &hit.id).map_err(Error::internal)?;
            self.page.extend_from_slice(b",\"_source\":");
            if source.get().contains('\n') {
                // Pretty-printed source: one line per document.
                let value: Value = serde_json::from_str(source.get()).map_err(Error::internal)?;
                serde_json::to_writer(&mut self.page, &value).map_err(Error::internal)?;
            } else {
                self.page.extend_from_slice(source.get().as_bytes());
            }
            if let Some(routing) = &hit.routing {
                self.page.extend_from_slice(b",\"_routing\":");
                serde_json::to_writer(&mut self.page, routing).map_err(Error::internal)?;
            }
            self.page.extend_from_slice(b"}\n");
            last_sort = hit.sort;
        }
        self.exported += count as u64;
        runner_sdk::log::progress(self.exported, Some(self.expected), "documents");
        match &mut *cursor {
            Cursor::Pit {
                id, after, done, ..
            } => {
                if let Some(new_id) = page.pit_id {
                    *id = new_id;
                }
                *done = count < size as usize;
                if count > 0 {
                    *after = Some(last_sort.ok_or_else(|| {
                        Error::permanent(format!(
                            "searching {}: hits carry no sort values",
                            self.index
                        ))
                    })?);
                }
            }
            Cursor::Scroll { id, done, .. } => {
                if page.scroll_id.is_some() {
                    *id = page.scroll_id;
                }
                *done = count == 0;
            }
            Cursor::Closed => {}
        }
        Ok(count > 0)
    }
}

/// `hits.total` as a number (`{"value": n}` since 7.0, a bare number before).
fn total_hits(page: &Value) -> Option<u64> {
    let total = page.get("hits")?.get("total")?;
    total.as_u64().or_else(|| total.get("value")?.as_u64())
}
