//! `runner plugins new`: writes a plugin crate that builds outside this repository — a
//! minimal working source, transform or sink, its test, a README and a test config.
//!
//! The SDK dependency: a third party has no checkout of this repository, and runner-sdk is
//! not on a registry yet, so by default the crate gets a copy of the SDK and the WIT
//! contract this binary was built with (`vendor/runner/`, laid out as in the repository),
//! and the lock file of the built-in plugins (the versions known to build). `--sdk PATH`
//! depends on an SDK checkout instead.

use std::path::{Path, PathBuf};

use crate::cli::CliError;
use crate::config::StageKind;

include!(concat!(env!("OUT_DIR"), "/sdk_files.rs"));

/// Where the vendored SDK goes inside the new crate.
const VENDOR_DIR: &str = "vendor/runner";

#[derive(clap::Args, Debug)]
pub struct Args {
    /// What the plugin is.
    #[arg(long, value_parser = ["source", "transform", "sink"])]
    kind: String,
    /// The plugin's name: lowercase letters, digits and dashes (`my-sink`).
    name: String,
    /// Where to write the crate (default: ./NAME); must not exist or be empty.
    dir: Option<PathBuf>,
    /// Depend on this runner-sdk crate directory (e.g. a checkout's plugins/sdk) instead of
    /// a vendored copy.
    #[arg(long, value_name = "PATH")]
    sdk: Option<PathBuf>,
}

pub fn run(args: Args) -> Result<(), CliError> {
    let kind = match args.kind.as_str() {
        "source" => StageKind::Source,
        "transform" => StageKind::Transform,
        _ => StageKind::Sink,
    };
    check_name(&args.name).map_err(|e| CliError::config(anyhow::anyhow!("{e}")))?;
    let dir = args.dir.unwrap_or_else(|| PathBuf::from(&args.name));
    if std::fs::read_dir(&dir).is_ok_and(|mut entries| entries.next().is_some()) {
        return Err(CliError::config(anyhow::anyhow!(
            "{} exists and is not empty; choose a new directory",
            dir.display()
        )));
    }
    let sdk = match &args.sdk {
        Some(path) => {
            let path = std::path::absolute(path)
                .map_err(|e| CliError::config(anyhow::anyhow!("--sdk {}: {e}", path.display())))?;
            if !path.join("Cargo.toml").is_file() {
                return Err(CliError::config(anyhow::anyhow!(
                    "--sdk {}: no Cargo.toml there; expected the runner-sdk crate (plugins/sdk in the runner repository)",
                    path.display()
                )));
            }
            Some(path)
        }
        None => None,
    };
    let files = crate_files(kind, &args.name, sdk.as_deref());
    write_files(&dir, &files).map_err(CliError::failure)?;
    let file = args.name.replace('-', "_");
    println!("wrote the {kind} plugin {} in {}", args.name, dir.display());
    println!(
        "build it:  cd {} && cargo build --release --target wasm32-wasip2",
        dir.display()
    );
    println!(
        "test it:   runner plugins test target/wasm32-wasip2/release/{file}.wasm --config plugin-test.toml"
    );
    Ok(())
}

/// Crate names double as the plugin's name in pipelines and in the `.wasm` file name.
fn check_name(name: &str) -> Result<(), String> {
    let ok = name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.ends_with('-')
        && name.len() <= 64;
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid plugin name {name:?}: expected lowercase letters, digits and dashes, starting with a letter (like \"my-sink\")"
        ))
    }
}

/// Every file of the new crate, by path relative to its directory.
pub fn crate_files(kind: StageKind, name: &str, sdk: Option<&Path>) -> Vec<(PathBuf, Vec<u8>)> {
    let file = name.replace('-', "_");
    let type_name: String = name
        .split('-')
        .map(|part| {
            let mut chars = part.chars();
            chars
                .next()
                .map(|c| c.to_ascii_uppercase().to_string() + chars.as_str())
                .unwrap_or_default()
        })
        .collect();
    let (description, source, table, options, test_setup, test_what) = match kind {
        StageKind::Source => (
            "backs up the files directly inside one directory",
            include_str!("../../../templates/plugin/source.rs"),
            "[source]",
            "path = \"/srv/data\"\n[source.grants]\ndirs = [{ path = \"/srv/data\", access = \"read\" }]".to_string(),
            format!("mkdir -p /tmp/{name}-data && echo hello > /tmp/{name}-data/hello.txt\n"),
            "a backup into a scratch repository, a verify, and a restore into a scratch directory.",
        ),
        StageKind::Transform => (
            "passes bytes through and checks their count on restore",
            include_str!("../../../templates/plugin/transform.rs"),
            "[[transform]]",
            String::new(),
            String::new(),
            "sample files backed up through it, verified and restored, compared byte for byte.",
        ),
        StageKind::Sink => (
            "keeps objects as files in one directory",
            include_str!("../../../templates/plugin/sink.rs"),
            "[sink]",
            "path = \"/srv/backups\"\n[sink.grants]\ndirs = [{ path = \"/srv/backups\", access = \"read-write\" }]".to_string(),
            format!("mkdir -p /tmp/{name}-test\n"),
            "objects written, listed, read back (whole and ranged) and compared, put-if-absent \
             refused, then deleted; and a backup, verify and restore through it.",
        ),
    };
    let test_config = match kind {
        StageKind::Source => format!(
            "# The source's options for `runner plugins test`, as under [source] in a pipeline.\n\
             path = \"/tmp/{name}-data\"\n\n[grants]\ndirs = [{{ path = \"/tmp/{name}-data\", access = \"read\" }}]\n"
        ),
        StageKind::Transform => "# The transform's options for `runner plugins test`, as under [[transform]] in a pipeline.\n".to_string(),
        StageKind::Sink => format!(
            "# The sink's options for `runner plugins test`, as under [sink] in a pipeline.\n\
             # The test writes objects there and deletes them again; it refuses a non-empty location.\n\
             path = \"/tmp/{name}-test\"\n\n[grants]\ndirs = [{{ path = \"/tmp/{name}-test\", access = \"read-write\" }}]\n"
        ),
    };
    let (sdk_dependency, sdk_note) = match sdk {
        Some(path) => (
            format!("runner-sdk = {{ path = {:?} }}", path.display().to_string()),
            format!("The SDK is the crate at {}.", path.display()),
        ),
        None => (
            format!("runner-sdk = {{ path = \"{VENDOR_DIR}/plugins/sdk\" }}"),
            format!(
                "`{VENDOR_DIR}/` is a copy of the runner SDK and WIT contract \
                 (runner:plugin@{}) this crate was made with; replace it with a newer copy to upgrade.",
                contract_version()
            ),
        ),
    };
    let fill = |template: &str| {
        template
            .replace("{{name}}", name)
            .replace("{{file}}", &file)
            .replace("{{Struct}}", &type_name)
            .replace("{{kind}}", &kind.to_string())
            .replace("{{description}}", description)
            .replace("{{sdk_dependency}}", &sdk_dependency)
            .replace("{{sdk_note}}", &sdk_note)
            .replace("{{pipeline_table}}", table)
            .replace("{{pipeline_options}}", &options)
            .replace("{{test_setup}}", &test_setup)
            .replace("{{test_what}}", test_what)
    };
    let mut files = vec![
        (
            PathBuf::from("Cargo.toml"),
            fill(include_str!("../../../templates/plugin/Cargo.toml")).into_bytes(),
        ),
        (
            PathBuf::from("README.md"),
            fill(include_str!("../../../templates/plugin/README.md")).into_bytes(),
        ),
        (PathBuf::from("src/lib.rs"), fill(source).into_bytes()),
        (PathBuf::from("plugin-test.toml"), test_config.into_bytes()),
        (PathBuf::from(".gitignore"), b"/target\n".to_vec()),
    ];
    if sdk.is_none() {
        files.push((PathBuf::from("Cargo.lock"), SDK_LOCK.as_bytes().to_vec()));
        for (path, bytes) in SDK_FILES {
            files.push((Path::new(VENDOR_DIR).join(path), bytes.to_vec()));
        }
    }
    files
}

/// The version of the vendored contract, from the `package runner:plugin@…;` line of the
/// current contract (`wit/*.wit`; older versions it still imports live in `wit/deps/`).
fn contract_version() -> String {
    SDK_FILES
        .iter()
        .filter(|(path, _)| Path::new(path).parent() == Some(Path::new("wit")))
        .filter_map(|(_, bytes)| std::str::from_utf8(bytes).ok())
        .flat_map(str::lines)
        .find_map(|line| {
            line.trim()
                .strip_prefix("package runner:plugin@")?
                .strip_suffix(';')
                .map(str::to_string)
        })
        .unwrap_or_else(|| "unknown".into())
}

fn write_files(dir: &Path, files: &[(PathBuf, Vec<u8>)]) -> anyhow::Result<()> {
    for (relative, bytes) in files {
        let path = dir.join(relative);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", parent.display()))?;
        }
        std::fs::write(&path, bytes)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    }
    Ok(())
}
