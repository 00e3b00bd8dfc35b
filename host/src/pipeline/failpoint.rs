//! Test-only failpoints: `RUNNER_TEST_FAILPOINT=<name>[:<n>]` kills the process with
//! SIGKILL the `n`-th time (default: first) the run reaches `name`, so tests can prove a
//! killed run leaves no snapshot; `RUNNER_TEST_PAUSE=<name>:<file>` holds the command at
//! `name` until `<file>` exists (writing `<file>.paused` when it gets there), so tests can
//! order concurrent commands without sleeping. Unset, every check is one atomic load.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

const VARIABLE: &str = "RUNNER_TEST_FAILPOINT";
const PAUSE_VARIABLE: &str = "RUNNER_TEST_PAUSE";
/// A paused command gives up waiting after this long, so a broken test cannot hang forever.
const PAUSE_LIMIT: std::time::Duration = std::time::Duration::from_secs(300);

struct Armed {
    name: String,
    at: u64,
    seen: AtomicU64,
}

fn armed() -> Option<&'static Armed> {
    static ARMED: OnceLock<Option<Armed>> = OnceLock::new();
    ARMED
        .get_or_init(|| {
            let spec = std::env::var(VARIABLE).ok()?;
            let (name, at) = match spec.split_once(':') {
                Some((name, n)) => (name.to_string(), n.parse().unwrap_or(1)),
                None => (spec, 1),
            };
            Some(Armed {
                name,
                at,
                seen: AtomicU64::new(0),
            })
        })
        .as_ref()
}

/// Whether reaching `name` now should kill the process.
pub fn triggers(name: &str) -> bool {
    armed().is_some_and(|a| a.name == name && a.seen.fetch_add(1, Ordering::SeqCst) + 1 == a.at)
}

/// Dies like `kill -9` would: no destructors, no flushing, no cleanup.
pub fn kill() -> ! {
    let _ = rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL);
    std::process::abort()
}

/// Kills the process if `name` triggers.
pub fn hit(name: &str) {
    if triggers(name) {
        kill();
    }
}

/// Holds the command at `name` (the first time it gets there) until the file named by
/// `RUNNER_TEST_PAUSE=<name>:<file>` exists.
pub async fn pause(name: &str) {
    static PAUSE: OnceLock<Option<(String, std::path::PathBuf, AtomicU64)>> = OnceLock::new();
    let armed = PAUSE.get_or_init(|| {
        let spec = std::env::var(PAUSE_VARIABLE).ok()?;
        let (name, file) = spec.split_once(':')?;
        Some((name.to_string(), file.into(), AtomicU64::new(0)))
    });
    let Some((at, file, seen)) = armed else {
        return;
    };
    if at != name || seen.fetch_add(1, Ordering::SeqCst) != 0 {
        return;
    }
    let mut paused = file.clone().into_os_string();
    paused.push(".paused");
    // Written aside and renamed: a test that sees the file can read the pid in it.
    let mut writing = paused.clone();
    writing.push(".tmp");
    if std::fs::write(&writing, std::process::id().to_string()).is_ok() {
        let _ = std::fs::rename(&writing, &paused);
    }
    let started = std::time::Instant::now();
    while !file.exists() && started.elapsed() < PAUSE_LIMIT {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
