//! {{name}}: a source whose artifacts are the files directly inside one granted directory —
//! replace the file calls with your database's or service's export.

use std::fs;
use std::io::{Read, Write};
use std::path::PathBuf;

use runner_sdk::{
    Artifact, ArtifactReader, ArtifactWriter, BackupSession, Error, Plugin, RestoreOptions, RestoreReport,
    RestoreSession, Result, SizeEstimate, Source,
};
use serde::Deserialize;

/// The stage's options, as written in the pipeline (`[source]` table).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// An absolute directory, granted in `[source.grants] dirs`.
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
            return Err(Error::config_field("path", "must be an absolute directory granted in [source.grants] dirs"));
        }
        Ok({{Struct}} { root })
    }
}

impl Source for {{Struct}} {
    type Backup = Backup;
    type Restore = Restore;

    fn begin_backup(&self, _share_token: Option<String>) -> Result<Backup> {
        Ok(Backup { root: self.root.clone() })
    }

    fn begin_restore(&self, options: RestoreOptions) -> Result<Restore> {
        // `runner restore --target DIR` (granted to the stage) or, by default, where the data came from.
        let target = options.target.map(PathBuf::from).unwrap_or_else(|| self.root.clone());
        Ok(Restore { target, dry_run: options.dry_run, staged: Vec::new() })
    }
}

pub struct Backup {
    root: PathBuf,
}

impl BackupSession for Backup {
    type Reader = FileReader;

    fn artifacts(&mut self) -> Result<Vec<Artifact>> {
        let mut artifacts = Vec::new();
        for entry in fs::read_dir(&self.root)? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                artifacts.push(Artifact {
                    name: entry.file_name().to_string_lossy().into_owned(),
                    media_type: "application/octet-stream".into(),
                    size: Some(SizeEstimate::bytes(entry.metadata()?.len())),
                    schema_version: 1,
                    metadata: Vec::new(),
                });
            }
        }
        artifacts.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(artifacts)
    }

    fn open(&mut self, name: &str) -> Result<FileReader> {
        Ok(FileReader(fs::File::open(self.root.join(name))?))
    }
}

pub struct FileReader(fs::File);

impl ArtifactReader for FileReader {
    fn read(&mut self, max: usize) -> Result<Option<Vec<u8>>> {
        let mut chunk = vec![0; max];
        let n = self.0.read(&mut chunk)?;
        chunk.truncate(n);
        Ok((n > 0).then_some(chunk))
    }
}

pub struct Restore {
    target: PathBuf,
    dry_run: bool,
    /// (staging file, final name): nothing reaches the target before `commit`.
    staged: Vec<(PathBuf, PathBuf)>,
}

impl RestoreSession for Restore {
    type Writer = FileWriter;

    fn write_artifact(&mut self, artifact: Artifact) -> Result<FileWriter> {
        if artifact.name.contains('/') || artifact.name.starts_with('.') {
            return Err(Error::invalid_input(format!("unusable artifact name {:?}", artifact.name)));
        }
        if self.dry_run {
            return Ok(FileWriter(None));
        }
        let staging = self.target.join(format!(".{}.restoring", artifact.name));
        self.staged.push((staging.clone(), self.target.join(&artifact.name)));
        Ok(FileWriter(Some(fs::File::create(staging)?)))
    }

    fn commit(&mut self) -> Result<Vec<RestoreReport>> {
        let mut reports = Vec::new();
        for (staging, path) in self.staged.drain(..) {
            fs::rename(&staging, &path)?;
            let artifact = path.file_name().unwrap_or_default().to_string_lossy().into_owned();
            reports.push(RestoreReport { artifact, metadata: Vec::new(), warnings: Vec::new() });
        }
        Ok(reports)
    }

    fn abort(&mut self) {
        for (staging, _) in self.staged.drain(..) {
            let _ = fs::remove_file(staging);
        }
    }
}

pub struct FileWriter(Option<fs::File>);

impl ArtifactWriter for FileWriter {
    fn write(&mut self, chunk: &[u8]) -> Result<()> {
        if let Some(file) = &mut self.0 {
            file.write_all(chunk)?;
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<()> {
        if let Some(file) = self.0.take() {
            file.sync_all()?;
        }
        Ok(())
    }
}

runner_sdk::export_source!({{Struct}});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backs_up_the_files_of_a_directory_and_restores_them_elsewhere() {
        let base = std::env::temp_dir().join(format!("{{file}}-test-{}", std::process::id()));
        let (data, target) = (base.join("data"), base.join("target"));
        fs::create_dir_all(&data).unwrap();
        fs::create_dir_all(&target).unwrap();
        fs::write(data.join("a.txt"), b"first").unwrap();
        fs::write(data.join("b.bin"), [0u8, 1, 2]).unwrap();
        let source = {{Struct}}::new(Config { path: data.display().to_string() }).unwrap();

        let mut backup = source.begin_backup(None).unwrap();
        let artifacts = backup.artifacts().unwrap();
        assert_eq!(artifacts.iter().map(|a| a.name.as_str()).collect::<Vec<_>>(), ["a.txt", "b.bin"]);
        let options = RestoreOptions {
            target: Some(target.display().to_string()),
            only: Vec::new(),
            mode: runner_sdk::RestoreMode::Merge,
            dry_run: false,
            overwrite: false,
        };
        let mut restore = source.begin_restore(options).unwrap();
        for artifact in artifacts {
            let mut reader = backup.open(&artifact.name).unwrap();
            let mut writer = restore.write_artifact(artifact).unwrap();
            while let Some(chunk) = reader.read(2).unwrap() {
                writer.write(&chunk).unwrap();
            }
            writer.finish().unwrap();
        }
        assert_eq!(restore.commit().unwrap().len(), 2);
        assert_eq!(fs::read(target.join("a.txt")).unwrap(), b"first");
        assert_eq!(fs::read(target.join("b.bin")).unwrap(), [0, 1, 2]);
        fs::remove_dir_all(&base).unwrap();
    }
}
