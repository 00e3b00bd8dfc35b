//! Commands in the background for tests that order concurrent work: a running command
//! with its stderr collected line by line, and a gate that pauses one at a named point.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A command running in the background, its stderr collected line by line as it comes.
pub struct Running {
    pub child: Child,
    pub lines: Arc<Mutex<Vec<String>>>,
    reader: std::thread::JoinHandle<()>,
}

impl Running {
    pub fn spawn(mut cmd: Command) -> Running {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        let collected = lines.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                collected.lock().unwrap().push(line);
            }
        });
        Running {
            child,
            lines,
            reader,
        }
    }

    /// Waits until a stderr line contains `needle`.
    pub fn wait_for_line(&self, needle: &str) {
        let started = Instant::now();
        while !self
            .lines
            .lock()
            .unwrap()
            .iter()
            .any(|line| line.contains(needle))
        {
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "no line with {needle:?} in: {:?}",
                self.lines.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the exit; returns the exit code, stdout and stderr.
    pub fn finish(mut self) -> (Option<i32>, String, String) {
        let status = self.child.wait().unwrap();
        let mut out = String::new();
        self.child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        self.reader.join().unwrap();
        let err = self.lines.lock().unwrap().join("\n");
        (status.code(), out, err)
    }
}

/// Where a paused command waits: it writes `go.paused` when it holds its lock, and goes on
/// once `go` exists.
pub struct Gate {
    pub go: PathBuf,
}

impl Gate {
    pub fn new(dir: &Path, name: &str) -> Gate {
        Gate { go: dir.join(name) }
    }

    /// Makes `cmd` pause right after taking its lock.
    pub fn arm(&self, cmd: &mut Command) {
        cmd.env("RUNNER_TEST_PAUSE", format!("locked:{}", self.go.display()));
    }

    /// Waits until the paused command holds its lock; returns its pid.
    pub fn wait_paused(&self, running: &Running) -> u32 {
        let paused = PathBuf::from(format!("{}.paused", self.go.display()));
        let started = Instant::now();
        loop {
            // The file exists a moment before its pid is written in it.
            if let Some(pid) = std::fs::read_to_string(&paused)
                .ok()
                .and_then(|text| text.parse().ok())
            {
                return pid;
            }
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "the command never paused: {:?}",
                running.lines.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn open(&self) {
        std::fs::write(&self.go, b"").unwrap();
    }
}
