//! The WASI context of a plugin: nothing but the granted directories and TCP addresses.

use wasmtime_wasi::filesystem::FsPerms;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder};

use crate::config::{DirAccess, Grants};

/// No environment, no arguments, no stdio: only granted directories (each visible at its
/// own host path) and granted TCP destinations.
pub fn context(grants: &Grants) -> anyhow::Result<WasiCtx> {
    let mut builder = WasiCtxBuilder::new();
    for dir in &grants.dirs {
        let perms = match dir.access {
            DirAccess::Read => FsPerms::ReadOnly,
            DirAccess::ReadWrite => FsPerms::ReadWrite,
        };
        let guest = dir.path.to_string_lossy();
        builder
            .preopened_dir(&dir.path, &*guest, perms)
            .map_err(|e| {
                anyhow::anyhow!("cannot open granted directory {}: {e}", dir.path.display())
            })?;
    }
    super::network::grant_tcp(&mut builder, &grants.tcp)?;
    Ok(builder.build())
}
