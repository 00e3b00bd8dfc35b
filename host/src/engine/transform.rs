//! Driving a transform plugin: encoders and decoders, one per stored object.

use wasmtime::component::ResourceAny;

use crate::capabilities::StageGrants;
use crate::config::Limits;
use crate::engine::contract::TransformBindings;
use crate::engine::{Engine, LoadedPlugin, PluginError, PluginInstance};

/// Decoder parameters: what an encoder's `finish` returned, stored in the manifest.
pub type Params = Vec<(String, String)>;

/// Largest piece pulled from a codec at once.
pub const PULL_MAX: u32 = 1 << 20;

pub use crate::engine::contract::ObjectInfo;

/// One encoder or decoder inside a transform instance.
pub struct Codec {
    resource: ResourceAny,
    decoder: bool,
}

pub struct TransformInstance {
    inner: PluginInstance<TransformBindings>,
}

impl TransformInstance {
    /// Instantiates and configures a transform plugin.
    pub async fn start(
        engine: &Engine,
        plugin: &LoadedPlugin,
        label: &str,
        config_json: &str,
        grants: StageGrants,
        limits: &Limits,
    ) -> Result<Self, PluginError> {
        Ok(TransformInstance {
            inner: PluginInstance::configured(engine, plugin, label, config_json, grants, limits)
                .await?,
        })
    }

    pub fn label(&self) -> &str {
        self.inner.label()
    }

    pub async fn encoder(&mut self, object: &ObjectInfo) -> Result<Codec, PluginError> {
        let object = object.clone();
        let resource = self
            .inner
            .call_result("new-encoder", |store, b| {
                Box::pin(async move { b.new_encoder(store, &object).await })
            })
            .await?;
        Ok(Codec {
            resource,
            decoder: false,
        })
    }

    pub async fn decoder(
        &mut self,
        object: &ObjectInfo,
        params: &Params,
    ) -> Result<Codec, PluginError> {
        let (object, params) = (object.clone(), params.clone());
        let resource = self
            .inner
            .call_result("new-decoder", |store, b| {
                Box::pin(async move { b.new_decoder(store, &object, &params).await })
            })
            .await?;
        Ok(Codec {
            resource,
            decoder: true,
        })
    }

    pub async fn push(&mut self, codec: &Codec, input: Vec<u8>) -> Result<(), PluginError> {
        let (resource, decoder) = (codec.resource, codec.decoder);
        self.inner
            .call_result("push", |store, b| {
                Box::pin(async move { b.push(store, resource, decoder, &input).await })
            })
            .await
    }

    pub async fn pull(&mut self, codec: &Codec, max: u32) -> Result<Option<Vec<u8>>, PluginError> {
        let (resource, decoder) = (codec.resource, codec.decoder);
        let chunk = self
            .inner
            .call_result("pull", |store, b| {
                Box::pin(async move { b.pull(store, resource, decoder, max).await })
            })
            .await?;
        if let Some(chunk) = &chunk {
            self.inner.check_chunk("pull", chunk, max)?;
        }
        Ok(chunk)
    }

    /// Ends an encoder's input; returns its decoder parameters. Pull the rest afterwards.
    pub async fn finish_encoder(&mut self, codec: &Codec) -> Result<Params, PluginError> {
        let resource = codec.resource;
        self.inner
            .call_result("finish", |store, b| {
                Box::pin(async move { b.finish_encoder(store, resource).await })
            })
            .await
    }

    /// Ends a decoder's input; fails when the stream is corrupt. Pull the rest afterwards.
    pub async fn finish_decoder(&mut self, codec: &Codec) -> Result<(), PluginError> {
        let resource = codec.resource;
        self.inner
            .call_result("finish", |store, b| {
                Box::pin(async move { b.finish_decoder(store, resource).await })
            })
            .await
    }

    /// Releases a codec's resource in the guest.
    pub async fn close(&mut self, codec: Codec) -> Result<(), PluginError> {
        self.inner.release(codec.resource).await
    }

    /// Pushes one input chunk and appends everything the codec has ready to `output`.
    pub async fn feed(
        &mut self,
        codec: &Codec,
        input: Vec<u8>,
        output: &mut impl FnMut(Vec<u8>),
    ) -> Result<(), PluginError> {
        self.push(codec, input).await?;
        self.drain(codec, output).await
    }

    /// Pulls until the codec has nothing more ready.
    pub async fn drain(
        &mut self,
        codec: &Codec,
        output: &mut impl FnMut(Vec<u8>),
    ) -> Result<(), PluginError> {
        while let Some(chunk) = self.pull(codec, PULL_MAX).await? {
            output(chunk);
        }
        Ok(())
    }

    /// Copies of every linear memory of the instance. Empty unless the engine was built
    /// with `guest_debug` (tests use it to prove key bytes never enter the plugin).
    pub fn linear_memories(&mut self) -> Vec<Vec<u8>> {
        self.inner.linear_memories()
    }
}
