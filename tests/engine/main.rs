//! Engine-level tests: the real built-in components, driven through the host's engine.

#[path = "../common/mod.rs"]
mod common;

mod compile_cache;
mod contract;
mod elasticsearch_source;
mod es_rest_tests;
mod files_source;
mod locks;
mod remote_sinks;
mod retention;
mod transforms;
