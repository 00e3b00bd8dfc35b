//! Engine-level tests: the real built-in components, driven through the host's engine.

#[path = "../common/mod.rs"]
mod common;

mod compile_cache;
mod elasticsearch_source;
mod files_source;
mod remote_sinks;
mod transforms;
