//! Builds the hostile test plugins in tests/fixtures once per test process.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// The `.wasm` of fixture crate `name` (e.g. "hostile-source"), built on first use.
pub fn hostile(name: &str) -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    let dir = BUILT.get_or_init(|| {
        let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures");
        let target = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("fixtures");
        let status = Command::new(env!("CARGO"))
            .args([
                "build",
                "--release",
                "--target",
                "wasm32-wasip2",
                "--target-dir",
            ])
            .arg(&target)
            .current_dir(&fixtures)
            .env_remove("CARGO_TARGET_DIR")
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .status()
            .expect("cargo runs");
        assert!(
            status.success(),
            "building the hostile fixture plugins failed"
        );
        target.join("wasm32-wasip2/release")
    });
    dir.join(format!("{}.wasm", name.replace('-', "_")))
}
