//! Glue between the plugin traits and the generated bindings; the export macros expand to it.

use std::any::Any;
use std::cell::RefCell;
use std::marker::PhantomData;
use std::rc::Rc;

use crate::__private::PackageVersion;
use crate::bindings::host::runner::plugin::types::{ConfigError, PluginInfo};
use crate::bindings::{sink as sink_world, source as source_world, transform as transform_world};
use crate::{
    ArtifactReader, ArtifactWriter, BackupSession, Decoder, Encoder, Error, Metadata, ObjectReader,
    ObjectWriter, Plugin, RestoreSession, Result, Sink, Source, Transform,
};

thread_local! {
    /// The configured plugin of this instance (a component instance is single-threaded).
    static INSTANCE: RefCell<Option<Rc<dyn Any>>> = const { RefCell::new(None) };
}

fn info<P: Plugin + PackageVersion>() -> PluginInfo {
    PluginInfo {
        name: P::NAME.to_string(),
        version: P::VERSION.to_string(),
        description: P::DESCRIPTION.to_string(),
    }
}

fn configure<P: Plugin>(json: &str) -> Result<()> {
    let plugin = P::new(parse_config(json)?)?;
    INSTANCE.with(|slot| *slot.borrow_mut() = Some(Rc::new(plugin)));
    Ok(())
}

fn instance<P: Plugin>() -> Result<Rc<P>> {
    INSTANCE
        .with(|slot| slot.borrow().clone())
        .ok_or_else(|| Error::invalid_input("the host called the plugin before `configure`"))?
        .downcast::<P>()
        .map_err(|_| Error::internal("plugin instance has an unexpected type"))
}

/// Deserializes the stage's options, reporting the dotted path of a bad field so the
/// host can point at its line in the pipeline file.
pub fn parse_config<C: serde::de::DeserializeOwned>(json: &str) -> Result<C> {
    let mut de = serde_json::Deserializer::from_str(json);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let mut message = e.inner().to_string();
        // serde_json appends a position in the JSON text, which means nothing to the user.
        if let Some(at) = message.rfind(" at line ") {
            message.truncate(at);
        }
        Error::Config(ConfigError {
            field: (path != ".").then_some(path),
            message,
        })
    })
}

/// Output produced by an encoder or decoder, handed out in pieces of at most `max` bytes.
#[derive(Default)]
struct Output {
    buf: Vec<u8>,
    pos: usize,
}

impl Output {
    /// The buffer to append to, with what was already pulled dropped.
    fn sink(&mut self) -> &mut Vec<u8> {
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        &mut self.buf
    }

    fn take(&mut self, max: u32) -> Result<Option<Vec<u8>>> {
        let max = max as usize;
        if max == 0 {
            return Err(Error::invalid_input("pull with max = 0"));
        }
        let available = self.buf.len() - self.pos;
        if available == 0 {
            self.buf.clear();
            self.pos = 0;
            return Ok(None);
        }
        if self.pos == 0 && available <= max {
            return Ok(Some(std::mem::take(&mut self.buf)));
        }
        let n = available.min(max);
        let piece = self.buf[self.pos..self.pos + n].to_vec();
        self.pos += n;
        Ok(Some(piece))
    }
}

// ---------------------------------------------------------------- transform

pub struct TransformExport<T>(PhantomData<T>);

pub struct EncoderResource<E> {
    state: RefCell<(E, Output, bool)>,
}

pub struct DecoderResource<D> {
    state: RefCell<(D, Output, bool)>,
}

impl<T: Transform + PackageVersion> transform_world::Guest for TransformExport<T> {
    fn info() -> PluginInfo {
        info::<T>()
    }
    fn configure(config: String) -> Result<()> {
        configure::<T>(&config)
    }
}

impl<T: Transform + PackageVersion> transform_world::exports::runner::plugin0_2_0::transform::Guest
    for TransformExport<T>
{
    type Encoder = EncoderResource<T::Encoder>;
    type Decoder = DecoderResource<T::Decoder>;

    fn new_encoder(
        object: crate::ObjectInfo,
    ) -> Result<transform_world::exports::runner::plugin0_2_0::transform::Encoder> {
        let encoder = instance::<T>()?.encoder(&object)?;
        Ok(
            transform_world::exports::runner::plugin0_2_0::transform::Encoder::new(
                EncoderResource {
                    state: RefCell::new((encoder, Output::default(), false)),
                },
            ),
        )
    }

    fn new_decoder(
        object: crate::ObjectInfo,
        params: Metadata,
    ) -> Result<transform_world::exports::runner::plugin0_2_0::transform::Decoder> {
        let decoder = instance::<T>()?.decoder(&object, &params)?;
        Ok(
            transform_world::exports::runner::plugin0_2_0::transform::Decoder::new(
                DecoderResource {
                    state: RefCell::new((decoder, Output::default(), false)),
                },
            ),
        )
    }
}

fn ensure_open(finished: bool) -> Result<()> {
    if finished {
        Err(Error::invalid_input("push after finish"))
    } else {
        Ok(())
    }
}

impl<E: Encoder> transform_world::exports::runner::plugin0_2_0::transform::GuestEncoder
    for EncoderResource<E>
{
    fn push(&self, input: Vec<u8>) -> Result<()> {
        let (encoder, output, finished) = &mut *self.state.borrow_mut();
        ensure_open(*finished)?;
        encoder.push_owned(input, output.sink())
    }
    fn pull(&self, max: u32) -> Result<Option<Vec<u8>>> {
        self.state.borrow_mut().1.take(max)
    }
    fn finish(&self) -> Result<Metadata> {
        let (encoder, output, finished) = &mut *self.state.borrow_mut();
        ensure_open(*finished)?;
        *finished = true;
        encoder.finish(output.sink())
    }
}

impl<D: Decoder> transform_world::exports::runner::plugin0_2_0::transform::GuestDecoder
    for DecoderResource<D>
{
    fn push(&self, input: Vec<u8>) -> Result<()> {
        let (decoder, output, finished) = &mut *self.state.borrow_mut();
        ensure_open(*finished)?;
        decoder.push_owned(input, output.sink())
    }
    fn pull(&self, max: u32) -> Result<Option<Vec<u8>>> {
        self.state.borrow_mut().1.take(max)
    }
    fn finish(&self) -> Result<()> {
        let (decoder, output, finished) = &mut *self.state.borrow_mut();
        ensure_open(*finished)?;
        *finished = true;
        decoder.finish(output.sink())
    }
}

// ---------------------------------------------------------------- source

pub struct SourceExport<S>(PhantomData<S>);
pub struct BackupSessionResource<B>(RefCell<B>);
pub struct ArtifactReaderResource<R>(RefCell<R>);
pub struct RestoreSessionResource<R>(RefCell<R>);
pub struct ArtifactWriterResource<W>(RefCell<W>);

use source_world::exports::runner::plugin0_2_0::source as source_api;

impl<S: Source + PackageVersion> source_world::Guest for SourceExport<S> {
    fn info() -> PluginInfo {
        info::<S>()
    }
    fn configure(config: String) -> Result<()> {
        configure::<S>(&config)
    }
}

impl<S: Source + PackageVersion> source_api::Guest for SourceExport<S> {
    type BackupSession = BackupSessionResource<S::Backup>;
    type ArtifactReader = ArtifactReaderResource<<S::Backup as BackupSession>::Reader>;
    type RestoreSession = RestoreSessionResource<S::Restore>;
    type ArtifactWriter = ArtifactWriterResource<<S::Restore as RestoreSession>::Writer>;

    fn begin_backup(share_token: Option<String>) -> Result<source_api::BackupSession> {
        let session = instance::<S>()?.begin_backup(share_token)?;
        Ok(source_api::BackupSession::new(BackupSessionResource(
            RefCell::new(session),
        )))
    }

    fn begin_restore(options: source_api::RestoreOptions) -> Result<source_api::RestoreSession> {
        let session = instance::<S>()?.begin_restore(options)?;
        Ok(source_api::RestoreSession::new(RestoreSessionResource(
            RefCell::new(session),
        )))
    }
}

impl<B: BackupSession> source_api::GuestBackupSession for BackupSessionResource<B> {
    fn share_token(&self) -> Option<String> {
        self.0.borrow().share_token()
    }
    fn artifacts(&self) -> Result<Vec<source_api::Artifact>> {
        self.0.borrow_mut().artifacts()
    }
    fn open(&self, name: String) -> Result<source_api::ArtifactReader> {
        let reader = self.0.borrow_mut().open(&name)?;
        Ok(source_api::ArtifactReader::new(ArtifactReaderResource(
            RefCell::new(reader),
        )))
    }
    fn close(&self) -> Result<()> {
        self.0.borrow_mut().close()
    }
}

impl<R: ArtifactReader> source_api::GuestArtifactReader for ArtifactReaderResource<R> {
    fn read(&self, max: u32) -> Result<Option<Vec<u8>>> {
        self.0.borrow_mut().read(max as usize)
    }
    fn finish(&self) -> Result<Metadata> {
        self.0.borrow_mut().finish()
    }
}

impl<R: RestoreSession> source_api::GuestRestoreSession for RestoreSessionResource<R> {
    fn write_artifact(&self, artifact: source_api::Artifact) -> Result<source_api::ArtifactWriter> {
        let writer = self.0.borrow_mut().write_artifact(artifact)?;
        Ok(source_api::ArtifactWriter::new(ArtifactWriterResource(
            RefCell::new(writer),
        )))
    }
    fn commit(&self) -> Result<Vec<source_api::RestoreReport>> {
        self.0.borrow_mut().commit()
    }
    fn abort(&self) {
        self.0.borrow_mut().abort()
    }
}

impl<W: ArtifactWriter> source_api::GuestArtifactWriter for ArtifactWriterResource<W> {
    fn write(&self, chunk: Vec<u8>) -> Result<()> {
        self.0.borrow_mut().write(&chunk)
    }
    fn finish(&self) -> Result<()> {
        self.0.borrow_mut().finish()
    }
}

// ---------------------------------------------------------------- sink

pub struct SinkExport<S>(PhantomData<S>);
pub struct ObjectWriterResource<W>(RefCell<W>);
pub struct ObjectReaderResource<R>(RefCell<R>);

use sink_world::exports::runner::plugin0_2_0::sink as sink_api;

impl<S: Sink + PackageVersion> sink_world::Guest for SinkExport<S> {
    fn info() -> PluginInfo {
        info::<S>()
    }
    fn configure(config: String) -> Result<()> {
        configure::<S>(&config)
    }
}

impl<S: Sink + PackageVersion> sink_api::Guest for SinkExport<S> {
    type ObjectWriter = ObjectWriterResource<S::Writer>;
    type ObjectReader = ObjectReaderResource<S::Reader>;

    fn max_object_size() -> Option<u64> {
        instance::<S>().ok()?.max_object_size()
    }
    fn put(key: String, if_absent: bool) -> Result<sink_api::ObjectWriter> {
        let writer = instance::<S>()?.put(&key, if_absent)?;
        Ok(sink_api::ObjectWriter::new(ObjectWriterResource(
            RefCell::new(writer),
        )))
    }
    fn stat(key: String) -> Result<Option<sink_api::ObjectStat>> {
        instance::<S>()?.stat(&key)
    }
    fn get(key: String, offset: u64, length: Option<u64>) -> Result<sink_api::ObjectReader> {
        let reader = instance::<S>()?.get(&key, offset, length)?;
        Ok(sink_api::ObjectReader::new(ObjectReaderResource(
            RefCell::new(reader),
        )))
    }
    fn list(prefix: String, page_token: Option<String>) -> Result<sink_api::ListPage> {
        instance::<S>()?.list(&prefix, page_token)
    }
    fn delete(key: String) -> Result<()> {
        instance::<S>()?.delete(&key)
    }
    fn check() -> Result<()> {
        instance::<S>()?.check()
    }
}

impl<W: ObjectWriter> sink_api::GuestObjectWriter for ObjectWriterResource<W> {
    fn write(&self, chunk: Vec<u8>) -> Result<()> {
        self.0.borrow_mut().write(&chunk)
    }
    fn finish(&self) -> Result<sink_api::ObjectStat> {
        self.0.borrow_mut().finish()
    }
    fn abort(&self) {
        self.0.borrow_mut().abort()
    }
}

impl<R: ObjectReader> sink_api::GuestObjectReader for ObjectReaderResource<R> {
    fn read(&self, max: u32) -> Result<Option<Vec<u8>>> {
        self.0.borrow_mut().read(max as usize)
    }
}

// ---------------------------------------------------------------- export macros

/// Exports a [`Transform`](crate::Transform) implementation as this component's plugin.
#[macro_export]
macro_rules! export_transform {
    ($plugin:ty) => {
        impl $crate::__private::PackageVersion for $plugin {
            const VERSION: &'static str = env!("CARGO_PKG_VERSION");
        }
        #[doc(hidden)]
        type __RunnerTransformExport = $crate::__private::TransformExport<$plugin>;
        $crate::bindings::transform::export_transform_world!(__RunnerTransformExport with_types_in $crate::bindings::transform);
    };
}

/// Exports a [`Source`](crate::Source) implementation as this component's plugin.
#[macro_export]
macro_rules! export_source {
    ($plugin:ty) => {
        impl $crate::__private::PackageVersion for $plugin {
            const VERSION: &'static str = env!("CARGO_PKG_VERSION");
        }
        #[doc(hidden)]
        type __RunnerSourceExport = $crate::__private::SourceExport<$plugin>;
        $crate::bindings::source::export_source_world!(__RunnerSourceExport with_types_in $crate::bindings::source);
    };
}

/// Exports a [`Sink`](crate::Sink) implementation as this component's plugin.
#[macro_export]
macro_rules! export_sink {
    ($plugin:ty) => {
        impl $crate::__private::PackageVersion for $plugin {
            const VERSION: &'static str = env!("CARGO_PKG_VERSION");
        }
        #[doc(hidden)]
        type __RunnerSinkExport = $crate::__private::SinkExport<$plugin>;
        $crate::bindings::sink::export_sink_world!(__RunnerSinkExport with_types_in $crate::bindings::sink);
    };
}
