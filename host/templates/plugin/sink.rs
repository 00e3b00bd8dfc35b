//! {{name}}: a sink that keeps each object as a file under one granted directory —
//! replace the file calls with your storage service's API.

use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Component, Path, PathBuf};

use runner_sdk::{Error, ListPage, ObjectReader, ObjectStat, ObjectWriter, Plugin, Result, Sink};
use serde::Deserialize;

/// The stage's options, as written in the pipeline (`[sink]` table).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// An absolute directory, granted read-write in `[sink.grants] dirs`.
    pub path: String,
}

pub struct {{Struct}} {
    root: PathBuf,
}

impl Plugin for {{Struct}} {
    const NAME: &'static str = "{{name}}";
    const DESCRIPTION: &'static str = "{{description}}";
    type Config = Config;

    fn new(config: Config) -> Result<Self> {
        let root = PathBuf::from(&config.path);
        if !root.is_absolute() || !root.is_dir() {
            return Err(Error::config_field("path", "must be an absolute directory granted read-write in [sink.grants] dirs"));
        }
        Ok({{Struct}} { root })
    }
}

/// Suffix of a file still being written; renamed into place when the object is complete.
const PARTIAL: &str = ".partial";

impl {{Struct}} {
    /// The host chooses keys like `data/3f/3f2a…`; refuse anything that could leave the root.
    fn path(&self, key: &str) -> Result<PathBuf> {
        let relative = Path::new(key);
        if key.is_empty() || key.ends_with(PARTIAL) || !relative.components().all(|c| matches!(c, Component::Normal(_))) {
            return Err(Error::invalid_input(format!("unusable object key {key:?}")));
        }
        Ok(self.root.join(relative))
    }

    fn walk(&self, dir: &Path, prefix: &str, found: &mut Vec<ObjectStat>) -> Result<()> {
        let entries = match fs::read_dir(dir) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            other => other?,
        };
        for entry in entries {
            let entry = entry?;
            let path = entry.path();
            let key = path.strip_prefix(&self.root).map_err(Error::internal)?.to_string_lossy().into_owned();
            if entry.file_type()?.is_dir() {
                self.walk(&path, prefix, found)?;
            } else if key.starts_with(prefix) && !key.ends_with(PARTIAL) {
                found.push(ObjectStat { key, size: entry.metadata()?.len() });
            }
        }
        Ok(())
    }
}

impl Sink for {{Struct}} {
    type Writer = Upload;
    type Reader = Download;

    fn put(&self, key: &str, if_absent: bool) -> Result<Upload> {
        let path = self.path(key)?;
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
        }
        let partial = PathBuf::from(format!("{}{PARTIAL}", path.display()));
        let file = fs::File::create(&partial)?;
        Ok(Upload { key: key.to_string(), path, partial, file: Some(file), if_absent, size: 0 })
    }

    fn stat(&self, key: &str) -> Result<Option<ObjectStat>> {
        match fs::metadata(self.path(key)?) {
            Ok(meta) => Ok(Some(ObjectStat { key: key.to_string(), size: meta.len() })),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    fn get(&self, key: &str, offset: u64, length: Option<u64>) -> Result<Download> {
        let mut file = fs::File::open(self.path(key)?)?;
        file.seek(SeekFrom::Start(offset))?;
        Ok(Download { file, left: length.unwrap_or(u64::MAX) })
    }

    fn list(&self, prefix: &str, _page_token: Option<String>) -> Result<ListPage> {
        // Everything in one page; a remote store would return its own pages and token.
        let mut objects = Vec::new();
        self.walk(&self.root, prefix, &mut objects)?;
        objects.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(ListPage { objects, next_page: None })
    }

    fn delete(&self, key: &str) -> Result<()> {
        match fs::remove_file(self.path(key)?) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }
}

pub struct Upload {
    key: String,
    path: PathBuf,
    partial: PathBuf,
    file: Option<fs::File>,
    if_absent: bool,
    size: u64,
}

impl ObjectWriter for Upload {
    fn write(&mut self, chunk: &[u8]) -> Result<()> {
        let file = self.file.as_mut().ok_or_else(|| Error::invalid_input("write after finish"))?;
        file.write_all(chunk)?;
        self.size += chunk.len() as u64;
        Ok(())
    }

    fn finish(&mut self) -> Result<ObjectStat> {
        let file = self.file.take().ok_or_else(|| Error::invalid_input("finish twice"))?;
        file.sync_all()?;
        if self.if_absent && self.path.exists() {
            self.abort();
            return Err(Error::AlreadyExists(self.key.clone()));
        }
        fs::rename(&self.partial, &self.path)?;
        Ok(ObjectStat { key: self.key.clone(), size: self.size })
    }

    fn abort(&mut self) {
        self.file = None;
        let _ = fs::remove_file(&self.partial);
    }
}

pub struct Download {
    file: fs::File,
    left: u64,
}

impl ObjectReader for Download {
    fn read(&mut self, max: usize) -> Result<Option<Vec<u8>>> {
        let mut chunk = vec![0; (max as u64).min(self.left) as usize];
        let n = self.file.read(&mut chunk)?;
        if n == 0 {
            return Ok(None);
        }
        chunk.truncate(n);
        self.left -= n as u64;
        Ok(Some(chunk))
    }
}

runner_sdk::export_sink!({{Struct}});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_lists_reads_and_deletes_an_object() {
        let dir = std::env::temp_dir().join(format!("{{file}}-test-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let sink = {{Struct}}::new(Config { path: dir.display().to_string() }).unwrap();

        let mut upload = sink.put("data/ab/object", true).unwrap();
        upload.write(b"hello, ").unwrap();
        upload.write(b"world").unwrap();
        assert_eq!(upload.finish().unwrap().size, 12);
        assert!(sink.put("data/ab/object", true).unwrap().finish().is_err(), "put-if-absent");

        let listed = sink.list("data/", None).unwrap().objects;
        assert_eq!(listed.iter().map(|o| (o.key.as_str(), o.size)).collect::<Vec<_>>(), [("data/ab/object", 12)]);
        let mut download = sink.get("data/ab/object", 7, Some(3)).unwrap();
        assert_eq!(download.read(1 << 20).unwrap().unwrap(), b"wor");
        assert!(sink.path("../escape").is_err());

        sink.delete("data/ab/object").unwrap();
        assert!(sink.stat("data/ab/object").unwrap().is_none());
        fs::remove_dir_all(&dir).unwrap();
    }
}
