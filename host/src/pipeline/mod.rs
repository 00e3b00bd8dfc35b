//! Running a pipeline: starting its stages, backup forward, restore backward, verify.

pub mod stages;
