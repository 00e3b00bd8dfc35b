//! `runner`: a WebAssembly-extensible backup pipeline runner.
//!
//! A pipeline (TOML, [`config`]) names a source, transforms and a sink; each is a
//! WebAssembly component run by the [`engine`] with exactly the [`capabilities`] its stage
//! grants. The built-in components are embedded in the binary ([`plugins`]).

pub mod capabilities;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod engine;
pub mod manifest;
pub mod monitor;
pub mod pipeline;
pub mod plugins;
pub mod repository;
pub mod sinks;
pub mod status;
