//! Driving a source plugin: backup sessions that list and read artifacts, restore
//! sessions that stage artifacts and commit or abort.

use wasmtime::component::ResourceAny;

use crate::capabilities::StageGrants;
use crate::config::Limits;
use crate::engine::contract::{Artifact, RestoreOptions, RestoreReport, SourceBindings};
use crate::engine::{Engine, LoadedPlugin, PluginError, PluginInstance};

pub type Metadata = Vec<(String, String)>;

pub struct SourceInstance {
    inner: PluginInstance<SourceBindings>,
}

/// Guest resources, released when the call that ends them returns.
pub struct BackupSession(ResourceAny);
pub struct ArtifactReader(ResourceAny);
pub struct RestoreSession(ResourceAny);
pub struct ArtifactWriter(ResourceAny);

impl SourceInstance {
    pub async fn start(
        engine: &Engine,
        plugin: &LoadedPlugin,
        label: &str,
        config_json: &str,
        grants: StageGrants,
        limits: &Limits,
    ) -> Result<Self, PluginError> {
        Ok(SourceInstance {
            inner: PluginInstance::configured(engine, plugin, label, config_json, grants, limits)
                .await?,
        })
    }

    pub fn label(&self) -> &str {
        self.inner.label()
    }

    /// Copies of every linear memory of the instance (debug engines only; tests prove
    /// credentials never enter a source plugin).
    pub fn linear_memories(&mut self) -> Vec<Vec<u8>> {
        self.inner.linear_memories()
    }

    pub async fn begin_backup(
        &mut self,
        share_token: Option<String>,
    ) -> Result<BackupSession, PluginError> {
        self.inner
            .call_result("begin-backup", |store, b| {
                Box::pin(async move { b.begin_backup(store, share_token.as_deref()).await })
            })
            .await
            .map(BackupSession)
    }

    pub async fn share_token(
        &mut self,
        session: &BackupSession,
    ) -> Result<Option<String>, PluginError> {
        let resource = session.0;
        self.inner
            .call("backup-session.share-token", |store, b| {
                Box::pin(async move { b.share_token(store, resource).await })
            })
            .await
    }

    pub async fn artifacts(
        &mut self,
        session: &BackupSession,
    ) -> Result<Vec<Artifact>, PluginError> {
        let resource = session.0;
        self.inner
            .call_result("backup-session.artifacts", |store, b| {
                Box::pin(async move { b.artifacts(store, resource).await })
            })
            .await
    }

    pub async fn open(
        &mut self,
        session: &BackupSession,
        name: &str,
    ) -> Result<ArtifactReader, PluginError> {
        let (resource, name) = (session.0, name.to_string());
        self.inner
            .call_result("backup-session.open", |store, b| {
                Box::pin(async move { b.open(store, resource, &name).await })
            })
            .await
            .map(ArtifactReader)
    }

    pub async fn read(
        &mut self,
        reader: &ArtifactReader,
        max: u32,
    ) -> Result<Option<Vec<u8>>, PluginError> {
        let resource = reader.0;
        let chunk = self
            .inner
            .call_result("artifact-reader.read", |store, b| {
                Box::pin(async move { b.read(store, resource, max).await })
            })
            .await?;
        if let Some(chunk) = &chunk {
            self.inner.check_chunk("artifact-reader.read", chunk, max)?;
        }
        Ok(chunk)
    }

    /// Ends a read; returns metadata learned while reading.
    pub async fn finish_read(&mut self, reader: ArtifactReader) -> Result<Metadata, PluginError> {
        let resource = reader.0;
        let metadata = self
            .inner
            .call_result("artifact-reader.finish", |store, b| {
                Box::pin(async move { b.finish_read(store, resource).await })
            })
            .await;
        self.inner.release(resource).await?;
        metadata
    }

    pub async fn close_backup(&mut self, session: BackupSession) -> Result<(), PluginError> {
        let resource = session.0;
        let closed = self
            .inner
            .call_result("backup-session.close", |store, b| {
                Box::pin(async move { b.close(store, resource).await })
            })
            .await;
        self.inner.release(resource).await?;
        closed
    }

    pub async fn begin_restore(
        &mut self,
        options: &RestoreOptions,
    ) -> Result<RestoreSession, PluginError> {
        let options = options.clone();
        self.inner
            .call_result("begin-restore", |store, b| {
                Box::pin(async move { b.begin_restore(store, &options).await })
            })
            .await
            .map(RestoreSession)
    }

    pub async fn write_artifact(
        &mut self,
        session: &RestoreSession,
        artifact: &Artifact,
    ) -> Result<ArtifactWriter, PluginError> {
        let (resource, artifact) = (session.0, artifact.clone());
        self.inner
            .call_result("restore-session.write-artifact", |store, b| {
                Box::pin(async move { b.write_artifact(store, resource, &artifact).await })
            })
            .await
            .map(ArtifactWriter)
    }

    pub async fn write(
        &mut self,
        writer: &ArtifactWriter,
        chunk: Vec<u8>,
    ) -> Result<(), PluginError> {
        let resource = writer.0;
        self.inner
            .call_result("artifact-writer.write", |store, b| {
                Box::pin(async move { b.write(store, resource, &chunk).await })
            })
            .await
    }

    pub async fn finish_write(&mut self, writer: ArtifactWriter) -> Result<(), PluginError> {
        let resource = writer.0;
        let finished = self
            .inner
            .call_result("artifact-writer.finish", |store, b| {
                Box::pin(async move { b.finish_write(store, resource).await })
            })
            .await;
        self.inner.release(resource).await?;
        finished
    }

    pub async fn commit(
        &mut self,
        session: RestoreSession,
    ) -> Result<Vec<RestoreReport>, PluginError> {
        let resource = session.0;
        let reports = self
            .inner
            .call_result("restore-session.commit", |store, b| {
                Box::pin(async move { b.commit(store, resource).await })
            })
            .await;
        self.inner.release(resource).await?;
        reports
    }

    pub async fn abort(&mut self, session: RestoreSession) -> Result<(), PluginError> {
        let resource = session.0;
        self.inner
            .call("restore-session.abort", |store, b| {
                Box::pin(async move { b.abort(store, resource).await })
            })
            .await?;
        self.inner.release(resource).await
    }
}
