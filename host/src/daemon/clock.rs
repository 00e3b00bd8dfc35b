//! The daemon's wall clock: the system's, or — for tests only — a time read from the file
//! `RUNNER_TEST_CLOCK` names, so a test can move a day forward without waiting one.

use std::path::PathBuf;
use std::time::Duration;

use jiff::Timestamp;

#[derive(Clone, Debug)]
pub enum Clock {
    System,
    /// A file holding an RFC 3339 time, re-read at every tick.
    TestFile(PathBuf),
}

impl Clock {
    pub fn from_env() -> Self {
        match std::env::var_os("RUNNER_TEST_CLOCK") {
            Some(path) => Clock::TestFile(path.into()),
            None => Clock::System,
        }
    }

    pub fn now(&self) -> Timestamp {
        match self {
            Clock::System => Timestamp::now(),
            Clock::TestFile(path) => std::fs::read_to_string(path)
                .ok()
                .and_then(|text| text.trim().parse().ok())
                .unwrap_or_else(|| {
                    panic!(
                        "RUNNER_TEST_CLOCK: {} holds no RFC 3339 time",
                        path.display()
                    )
                }),
        }
    }

    /// How long to sleep before looking at the clock again when the next thing to do is
    /// `until` away: never longer than 30 s, so a clock that jumps (suspend, NTP, a test)
    /// is noticed soon.
    pub fn poll_interval(&self, until: Option<Duration>) -> Duration {
        match self {
            Clock::System => until
                .unwrap_or(Duration::MAX)
                .clamp(Duration::from_millis(100), Duration::from_secs(30)),
            Clock::TestFile(_) => Duration::from_millis(50),
        }
    }
}
