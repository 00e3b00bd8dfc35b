//! Test-only failpoints: `RUNNER_TEST_FAILPOINT=<name>[:<n>]` kills the process with
//! SIGKILL the `n`-th time (default: first) the run reaches `name`, so tests can prove a
//! killed run leaves no snapshot. Unset, every check is one atomic load.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

const VARIABLE: &str = "RUNNER_TEST_FAILPOINT";

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
