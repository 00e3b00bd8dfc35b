//! How a command's events are shown: bars on a terminal, one JSON object per event with
//! `--json`, nothing otherwise (the command prints its one summary line); log lines go
//! around the bars instead of through them.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::cli::Globals;
use crate::pipeline::events::{Event, Events, Observer};

/// The bars on screen, if any: log lines suspend them while they print.
static SCREEN: OnceLock<MultiProgress> = OnceLock::new();

/// JSON progress lines at most this often per command (other events always).
const JSON_PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// The display a command reports to; [`finish`](Display::finish) clears the bars.
pub struct Display {
    pub events: Events,
    bars: Option<Arc<Bars>>,
}

impl Display {
    /// Bars when stderr is a terminal, JSON lines with `--json`, else nothing.
    pub fn new(globals: Globals) -> Self {
        if globals.json {
            return Display {
                events: Events::new(Arc::new(JsonLines::default())),
                bars: None,
            };
        }
        if !std::io::stderr().is_terminal() {
            return Display {
                events: Events::default(),
                bars: None,
            };
        }
        let multi = SCREEN
            .get_or_init(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()))
            .clone();
        let bars = Arc::new(Bars::new(multi));
        Display {
            events: Events::new(bars.clone()),
            bars: Some(bars),
        }
    }

    /// Removes the bars, before the command prints its summary.
    pub fn finish(&self) {
        if let Some(bars) = &self.bars {
            bars.clear();
        }
    }
}

/// `--json`: every event a line on stdout; progress throttled.
#[derive(Default)]
struct JsonLines {
    last_progress: Mutex<Option<Instant>>,
}

impl Observer for JsonLines {
    fn event(&self, event: &Event) {
        if let Event::Progress { .. } = event {
            let mut last = self.last_progress.lock().expect("not poisoned");
            if last.is_some_and(|at| at.elapsed() < JSON_PROGRESS_EVERY) {
                return;
            }
            *last = Some(Instant::now());
        }
        print_json(event);
    }
}

/// Prints one JSON line on stdout (events, summaries, errors share the stream).
pub fn print_json(value: &impl serde::Serialize) {
    let line = serde_json::to_string(value).expect("events serialize");
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// A bar for the whole command and one per artifact being read.
struct Bars {
    multi: MultiProgress,
    overall: ProgressBar,
    artifacts: Mutex<HashMap<String, ProgressBar>>,
    listed: Mutex<(usize, usize)>,
}

const BAR: &str = "{prefix:>24.bold} [{bar:32}] {bytes:>10}/{total_bytes:<10} {binary_bytes_per_sec:>12} ETA {eta}";
const SPINNER: &str =
    "{prefix:>24.bold} {spinner} {bytes:>10} {binary_bytes_per_sec:>12} {elapsed}";

impl Bars {
    fn new(multi: MultiProgress) -> Self {
        let overall = multi.add(ProgressBar::no_length());
        overall.set_style(style(SPINNER));
        overall.set_prefix("total");
        overall.enable_steady_tick(Duration::from_millis(250));
        Bars {
            multi,
            overall,
            artifacts: Mutex::new(HashMap::new()),
            listed: Mutex::new((0, 0)),
        }
    }

    fn clear(&self) {
        for (_, bar) in self.artifacts.lock().expect("not poisoned").drain() {
            bar.finish_and_clear();
        }
        self.overall.finish_and_clear();
        let _ = self.multi.clear();
    }

    fn count_prefix(&self) {
        let (done, listed) = *self.listed.lock().expect("not poisoned");
        self.overall.set_prefix(format!("total {done}/{listed}"));
    }
}

impl Observer for Bars {
    fn event(&self, event: &Event) {
        match event {
            Event::Start { .. } => {}
            Event::Listed {
                artifacts,
                bytes_hint,
            } => {
                self.listed.lock().expect("not poisoned").1 = *artifacts;
                if let Some(total) = bytes_hint {
                    self.overall.set_length(*total);
                    self.overall.set_style(style(BAR));
                }
                self.count_prefix();
            }
            Event::ArtifactStart {
                artifact,
                size_hint,
            } => {
                let bar = match size_hint {
                    Some(size) => {
                        let bar = ProgressBar::new(*size);
                        bar.set_style(style(BAR));
                        bar
                    }
                    None => {
                        let bar = ProgressBar::no_length();
                        bar.set_style(style(SPINNER));
                        bar
                    }
                };
                let bar = self.multi.insert_before(&self.overall, bar);
                bar.set_prefix(short(artifact, 24));
                self.artifacts
                    .lock()
                    .expect("not poisoned")
                    .insert(artifact.clone(), bar);
            }
            Event::Progress {
                artifact,
                bytes,
                total_bytes,
            } => {
                if let Some(bar) = self.artifacts.lock().expect("not poisoned").get(artifact) {
                    // A size hint is not a promise: grow the bar rather than overflow it.
                    if bar.length().is_some_and(|length| *bytes > length) {
                        bar.set_length(*bytes);
                    }
                    bar.set_position(*bytes);
                }
                if self
                    .overall
                    .length()
                    .is_some_and(|length| *total_bytes > length)
                {
                    self.overall.set_length(*total_bytes);
                }
                self.overall.set_position(*total_bytes);
            }
            Event::ArtifactDone { artifact, .. } => {
                if let Some(bar) = self
                    .artifacts
                    .lock()
                    .expect("not poisoned")
                    .remove(artifact)
                {
                    bar.finish_and_clear();
                }
                self.listed.lock().expect("not poisoned").0 += 1;
                self.count_prefix();
            }
        }
    }
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .expect("the templates are valid")
        .progress_chars("=> ")
}

/// The last `width` characters of a name, marked when cut.
fn short(name: &str, width: usize) -> String {
    let count = name.chars().count();
    if count <= width {
        return name.to_string();
    }
    let tail: String = name.chars().skip(count - (width - 1)).collect();
    format!("…{tail}")
}

/// Log output to stderr that steps around the bars: each event is written whole, with the
/// bars suspended while it prints.
#[derive(Clone, Copy, Default)]
pub struct LogWriter;

pub struct LogLine(Vec<u8>);

impl Write for LogLine {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LogLine {
    fn drop(&mut self) {
        let write = || {
            let _ = std::io::stderr().lock().write_all(&self.0);
        };
        match SCREEN.get() {
            Some(multi) => multi.suspend(write),
            None => write(),
        }
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LogLine;

    fn make_writer(&'a self) -> Self::Writer {
        LogLine(Vec::new())
    }
}
