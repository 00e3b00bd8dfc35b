//! Driving a sink plugin: streamed puts, stats, ranged gets, paged lists, deletes.

use wasmtime::component::ResourceAny;

use crate::capabilities::StageGrants;
use crate::config::Limits;
use crate::engine::contract::{ListPage, ObjectStat, SinkBindings};
use crate::engine::{Engine, LoadedPlugin, PluginError, PluginInstance};

pub struct SinkInstance {
    inner: PluginInstance<SinkBindings>,
}

/// An upload in progress inside the sink.
pub struct ObjectUpload(ResourceAny);
/// A download in progress inside the sink.
pub struct ObjectDownload(ResourceAny);

impl SinkInstance {
    pub async fn start(
        engine: &Engine,
        plugin: &LoadedPlugin,
        label: &str,
        config_json: &str,
        grants: StageGrants,
        limits: &Limits,
    ) -> Result<Self, PluginError> {
        Ok(SinkInstance {
            inner: PluginInstance::configured(engine, plugin, label, config_json, grants, limits)
                .await?,
        })
    }

    pub fn label(&self) -> &str {
        self.inner.label()
    }

    pub async fn max_object_size(&mut self) -> Result<Option<u64>, PluginError> {
        self.inner
            .call("max-object-size", |store, b| {
                Box::pin(async move { b.max_object_size(store).await })
            })
            .await
    }

    pub async fn put(&mut self, key: &str, if_absent: bool) -> Result<ObjectUpload, PluginError> {
        let key = key.to_string();
        self.inner
            .call_result("put", |store, b| {
                Box::pin(async move { b.put(store, &key, if_absent).await })
            })
            .await
            .map(ObjectUpload)
    }

    pub async fn write(
        &mut self,
        upload: &ObjectUpload,
        chunk: Vec<u8>,
    ) -> Result<(), PluginError> {
        let resource = upload.0;
        self.inner
            .call_result("object-writer.write", |store, b| {
                Box::pin(async move { b.write(store, resource, &chunk).await })
            })
            .await
    }

    pub async fn finish(&mut self, upload: ObjectUpload) -> Result<ObjectStat, PluginError> {
        let resource = upload.0;
        let stat = self
            .inner
            .call_result("object-writer.finish", |store, b| {
                Box::pin(async move { b.finish(store, resource).await })
            })
            .await;
        self.inner.release(resource).await?;
        stat
    }

    pub async fn abort(&mut self, upload: ObjectUpload) -> Result<(), PluginError> {
        let resource = upload.0;
        self.inner
            .call("object-writer.abort", |store, b| {
                Box::pin(async move { b.abort(store, resource).await })
            })
            .await?;
        self.inner.release(resource).await
    }

    pub async fn stat(&mut self, key: &str) -> Result<Option<ObjectStat>, PluginError> {
        let key = key.to_string();
        self.inner
            .call_result("stat", |store, b| {
                Box::pin(async move { b.stat(store, &key).await })
            })
            .await
    }

    pub async fn get(
        &mut self,
        key: &str,
        offset: u64,
        length: Option<u64>,
    ) -> Result<ObjectDownload, PluginError> {
        let key = key.to_string();
        self.inner
            .call_result("get", |store, b| {
                Box::pin(async move { b.get(store, &key, offset, length).await })
            })
            .await
            .map(ObjectDownload)
    }

    /// Up to `max` bytes of a download; none at its end.
    pub async fn read(
        &mut self,
        download: &ObjectDownload,
        max: u32,
    ) -> Result<Option<Vec<u8>>, PluginError> {
        let resource = download.0;
        let chunk = self
            .inner
            .call_result("object-reader.read", |store, b| {
                Box::pin(async move { b.read(store, resource, max).await })
            })
            .await?;
        if let Some(chunk) = &chunk {
            self.inner.check_chunk("object-reader.read", chunk, max)?;
        }
        Ok(chunk)
    }

    pub async fn close_download(&mut self, download: ObjectDownload) -> Result<(), PluginError> {
        self.inner.release(download.0).await
    }

    pub async fn list(
        &mut self,
        prefix: &str,
        page_token: Option<String>,
    ) -> Result<ListPage, PluginError> {
        let prefix = prefix.to_string();
        self.inner
            .call_result("list", |store, b| {
                Box::pin(async move { b.list(store, &prefix, page_token.as_deref()).await })
            })
            .await
    }

    /// Every object under `prefix`, following pages.
    pub async fn list_all(&mut self, prefix: &str) -> Result<Vec<ObjectStat>, PluginError> {
        let mut objects = Vec::new();
        let mut token = None;
        loop {
            let page = self.list(prefix, token).await?;
            objects.extend(page.objects);
            match page.next_page {
                Some(next) => token = Some(next),
                None => return Ok(objects),
            }
        }
    }

    pub async fn delete(&mut self, key: &str) -> Result<(), PluginError> {
        let key = key.to_string();
        self.inner
            .call_result("delete", |store, b| {
                Box::pin(async move { b.delete(store, &key).await })
            })
            .await
    }

    pub async fn check(&mut self) -> Result<(), PluginError> {
        self.inner
            .call_result("check", |store, b| {
                Box::pin(async move { b.check(store).await })
            })
            .await
    }

    /// Copies of every linear memory of the instance. Empty unless the engine was built
    /// with `guest_debug` (tests use it to prove storage credentials never enter the plugin).
    pub fn linear_memories(&mut self) -> Vec<Vec<u8>> {
        self.inner.linear_memories()
    }
}
