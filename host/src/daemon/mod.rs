//! `runner daemon`: runs pipelines on their schedules — never two runs of one pipeline at
//! once, one catch-up run for times missed while it was down (unless `missed = "skip"`) —
//! notifies when a pipeline turns stale, serves `/health`, `/metrics` and `POST /run/NAME`,
//! and stops cleanly on SIGTERM.

pub mod clock;
mod http;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures::future::LocalBoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use jiff::Timestamp;
use tokio::sync::{mpsc, oneshot};

use crate::config::{MissedRuns, MonitorConfig, Secret};
use crate::monitor::notify::{self, Notification};
use crate::monitor::{PipelineState, Problem};
use crate::pipeline::job::{self, Interrupt, JobReport, error_chain};
use crate::pipeline::{Context, RunError};
use crate::repository::history::Outcome;

pub use clock::Clock;

pub struct Options {
    /// Where `/health`, `/metrics` and `POST /run/NAME` are served; `None`: nowhere.
    pub listen: Option<SocketAddr>,
    /// The bearer token `POST /run/NAME` needs; `None`: that endpoint is refused.
    pub token: Option<Secret>,
    /// On SIGTERM, how long running backups may go on before they are aborted.
    pub grace: Duration,
    /// How often each repository's state is re-read (runs by other processes, new snapshots).
    pub refresh: Duration,
    pub clock: Clock,
}

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("cannot listen on {address}: {source}")]
    Listen {
        address: SocketAddr,
        source: std::io::Error,
    },
}

/// A pipeline as `/health` and `/metrics` see it; the scheduler keeps it current.
#[derive(Clone, Debug)]
pub struct View {
    pub name: String,
    pub monitor: MonitorConfig,
    /// "0 2 * * * (Europe/Berlin)"; `None`: runs only on `POST /run/NAME`.
    pub schedule: Option<String>,
    /// The repository's state when it was last read.
    pub state: Option<PipelineState>,
    /// Why the last read of the repository failed.
    pub error: Option<String>,
    pub running: bool,
    pub next_run: Option<Timestamp>,
}

impl View {
    /// What `runner check` would report at `now`.
    pub fn problems(&self, now: Timestamp) -> Vec<Problem> {
        self.state
            .as_ref()
            .map(|state| state.problems(&self.monitor, now))
            .unwrap_or_default()
    }

    /// Fresh: the repository could be read and `runner check` finds nothing wrong.
    pub fn healthy(&self, now: Timestamp) -> bool {
        self.error.is_none() && self.state.is_some() && self.problems(now).is_empty()
    }
}

/// `POST /run/NAME`, forwarded to the scheduler.
pub struct RunRequest {
    pub pipeline: String,
    pub reply: oneshot::Sender<RunReply>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunReply {
    Started,
    AlreadyRunning,
    Unknown,
}

/// Runs until `shutdown` fires, then lets running backups go on for `grace` and aborts
/// the rest cleanly (no snapshot, no lock left behind).
pub async fn run(
    contexts: Vec<Context>,
    options: Options,
    shutdown: Interrupt,
) -> Result<(), DaemonError> {
    let views: Vec<View> = contexts
        .iter()
        .map(|ctx| View {
            name: ctx.pipeline.name.clone(),
            monitor: ctx.pipeline.monitor.clone(),
            schedule: ctx.pipeline.schedule.as_ref().map(|s| s.describe()),
            state: None,
            error: None,
            running: false,
            next_run: None,
        })
        .collect();
    let views = Arc::new(Mutex::new(views));
    let (abort, jobs_interrupt) = Interrupt::manual();
    let mut scheduler = Scheduler {
        contexts: &contexts,
        slots: contexts.iter().map(|_| Slot::default()).collect(),
        views: views.clone(),
        clock: options.clock.clone(),
        refresh: options.refresh,
        interrupt: &jobs_interrupt,
        work: FuturesUnordered::new(),
    };

    // Every repository is read (side by side) before anything else, so missed runs are
    // known and `/health` answers from its first request.
    let states = futures::future::join_all(contexts.iter().map(PipelineState::load)).await;
    for (i, state) in states.into_iter().enumerate() {
        scheduler.finish_read(i, state);
    }
    let (requests, mut incoming) = mpsc::channel(16);
    let server = match options.listen {
        Some(address) => {
            let (bound, task) = http::serve(
                address,
                http::Endpoint {
                    views: views.clone(),
                    clock: options.clock.clone(),
                    token: options.token,
                    requests,
                },
            )
            .await?;
            tracing::info!("listening on http://{bound}");
            Some(task)
        }
        None => None,
    };
    scheduler.start();

    loop {
        let now = scheduler.tick();
        let wait = scheduler.clock.poll_interval(scheduler.until_next_run(now));
        let event = tokio::select! {
            biased;
            _ = shutdown.fired() => break,
            Some(done) = scheduler.work.next() => Some(done),
            Some(request) = incoming.recv() => {
                scheduler.request(request);
                None
            }
            _ = tokio::time::sleep(wait) => None,
        };
        if let Some(done) = event {
            scheduler.done(done);
        }
    }

    // No new connections; a POST /run still waiting is answered 503.
    if let Some(server) = server {
        server.abort();
    }
    drop(incoming);
    let running = scheduler.running();
    if running > 0 {
        tracing::warn!(
            "stopping: {running} run(s) in progress; they may finish within {}s, then they are aborted",
            options.grace.as_secs()
        );
    } else {
        tracing::info!("stopping: no run in progress");
    }
    let grace = tokio::time::sleep(options.grace);
    tokio::pin!(grace);
    while scheduler.running() > 0 {
        tokio::select! {
            _ = &mut grace => break,
            Some(done) = scheduler.work.next() => scheduler.done(done),
        }
    }
    if scheduler.running() > 0 {
        tracing::warn!(
            "aborting {} run(s): no snapshot is committed",
            scheduler.running()
        );
        let _ = abort.send(true);
    }
    while let Some(done) = scheduler.work.next().await {
        scheduler.done(done);
    }
    Ok(())
}

/// The scheduler's own bookkeeping per pipeline (the rest is in its [`View`]).
#[derive(Default)]
struct Slot {
    /// A read of the repository is under way.
    reading: bool,
    /// When the repository was last read.
    refreshed: Option<Instant>,
    /// A `stale` notification went out and the pipeline has not been fresh since.
    stale_notified: bool,
}

/// What finished in the scheduler's work set.
enum Done {
    Job(usize, Box<JobReport>),
    Read(usize, Result<Option<PipelineState>, RunError>),
    Notified,
}

struct Scheduler<'a> {
    contexts: &'a [Context],
    slots: Vec<Slot>,
    views: Arc<Mutex<Vec<View>>>,
    clock: Clock,
    refresh: Duration,
    /// Fires when the daemon aborts its runs.
    interrupt: &'a Interrupt,
    /// Runs, repository reads and notifications under way (the contexts are not `Send`
    /// across tasks, so they are polled here rather than spawned).
    work: FuturesUnordered<LocalBoxFuture<'a, Done>>,
}

impl<'a> Scheduler<'a> {
    fn views(&self) -> MutexGuard<'_, Vec<View>> {
        self.views.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// First schedule: a catch-up run where one is due, the next times.
    fn start(&mut self) {
        let now = self.clock.now();
        for (i, ctx) in self.contexts.iter().enumerate() {
            let Some(schedule) = &ctx.pipeline.schedule else {
                tracing::info!(pipeline = %ctx.pipeline.name, "no schedule: runs only on POST /run/{}", ctx.pipeline.name);
                continue;
            };
            let next = schedule.next_after(now);
            let (last_run, readable) = {
                let views = self.views();
                let view = &views[i];
                let last = view
                    .state
                    .as_ref()
                    .and_then(|s| s.last_run())
                    .and_then(|r| r.started.parse::<Timestamp>().ok());
                (last, view.error.is_none())
            };
            self.views()[i].next_run = next;
            tracing::info!(
                pipeline = %ctx.pipeline.name,
                "schedule {}: next run {}",
                schedule.describe(),
                next.map_or("never".into(), |t| t.to_string())
            );
            if schedule.missed == MissedRuns::Skip {
                continue;
            }
            if !readable {
                tracing::warn!(
                    pipeline = %ctx.pipeline.name,
                    "cannot tell whether a scheduled run was missed (the repository could not be read): waiting for the next time"
                );
            } else if schedule.missed_since(last_run, now) {
                let why = match last_run {
                    Some(last) => {
                        format!("catch-up (a scheduled time passed since the last run at {last})")
                    }
                    None => "catch-up (no run recorded yet)".into(),
                };
                self.start_job(i, &why);
            }
        }
    }

    /// Starts what is due at the clock's time; notices pipelines turning stale. Returns
    /// the time it went by.
    fn tick(&mut self) -> Timestamp {
        let now = self.clock.now();
        for i in 0..self.contexts.len() {
            let ctx = &self.contexts[i];
            if let Some(schedule) = &ctx.pipeline.schedule {
                let (due, running) = {
                    let views = self.views();
                    (views[i].next_run, views[i].running)
                };
                if let Some(due) = due.filter(|due| *due <= now) {
                    if running {
                        tracing::warn!(
                            pipeline = %ctx.pipeline.name,
                            "the run scheduled for {due} is skipped: the previous run is still going"
                        );
                    } else {
                        self.start_job(i, "scheduled");
                    }
                    // Times that passed meanwhile (a long run, a suspended machine) are
                    // coalesced into the run just started.
                    self.views()[i].next_run = schedule.next_after(now);
                }
            }
            let slot = &self.slots[i];
            let running = self.views()[i].running;
            if !running
                && !slot.reading
                && slot.refreshed.is_none_or(|at| at.elapsed() >= self.refresh)
            {
                self.start_read(i);
            }
            self.check_stale(i, now);
        }
        now
    }

    /// Time from `now` until the earliest next run.
    fn until_next_run(&self, now: Timestamp) -> Option<Duration> {
        self.views()
            .iter()
            .filter_map(|v| v.next_run)
            .min()
            .map(|next| Duration::try_from(next.duration_since(now)).unwrap_or(Duration::ZERO))
    }

    fn running(&self) -> usize {
        self.views().iter().filter(|v| v.running).count()
    }

    fn start_job(&mut self, i: usize, why: &str) {
        let contexts = self.contexts;
        let ctx = &contexts[i];
        let interrupt = self.interrupt;
        let time = self.clock.now();
        tracing::info!(pipeline = %ctx.pipeline.name, "starting a {why} run");
        self.views()[i].running = true;
        self.work.push(Box::pin(async move {
            Done::Job(
                i,
                Box::new(job::run(ctx, Vec::new(), Some(time), interrupt).await),
            )
        }));
    }

    fn start_read(&mut self, i: usize) {
        let contexts = self.contexts;
        let ctx = &contexts[i];
        self.slots[i].reading = true;
        self.work.push(Box::pin(async move {
            Done::Read(i, PipelineState::load(ctx).await)
        }));
    }

    fn finish_read(&mut self, i: usize, state: Result<Option<PipelineState>, RunError>) {
        let name = &self.contexts[i].pipeline.name;
        self.slots[i].reading = false;
        self.slots[i].refreshed = Some(Instant::now());
        let mut views = self.views();
        match state {
            Ok(state) => {
                views[i].state = Some(state.unwrap_or_else(|| PipelineState::empty(name)));
                views[i].error = None;
            }
            Err(e) => {
                let error = error_chain(&e);
                if views[i].error.as_ref() != Some(&error) {
                    tracing::warn!(pipeline = %name, "cannot read the repository: {error}");
                }
                views[i].error = Some(error);
            }
        }
    }

    /// Notifies `stale` when a pipeline turns stale (or too big); once, until it is fresh
    /// again. A pipeline whose run is going on is judged when the run ends (a first run
    /// at startup would otherwise always be announced as stale). `/health` says it anyway.
    fn check_stale(&mut self, i: usize, now: Timestamp) {
        let (problems, running) = {
            let views = self.views();
            (views[i].problems(now), views[i].running)
        };
        if running {
            return;
        }
        let slot = &mut self.slots[i];
        if problems.is_empty() {
            slot.stale_notified = false;
            return;
        }
        if slot.stale_notified {
            return;
        }
        slot.stale_notified = true;
        let contexts = self.contexts;
        let ctx = &contexts[i];
        let reasons: Vec<String> = problems.iter().map(Problem::describe).collect();
        tracing::warn!(pipeline = %ctx.pipeline.name, "needs attention: {}", reasons.join("; "));
        let notification = Notification::stale(&ctx.pipeline.name, problems);
        self.work.push(Box::pin(async move {
            notify::send(&ctx.pipeline, &ctx.secrets, &notification).await;
            Done::Notified
        }));
    }

    fn done(&mut self, done: Done) {
        match done {
            Done::Job(i, report) => {
                self.views()[i].running = false;
                log_report(&self.contexts[i], &report);
                // The run changed the repository: read it again at once.
                self.slots[i].refreshed = None;
            }
            Done::Read(i, state) => self.finish_read(i, state),
            Done::Notified => {}
        }
    }

    fn request(&mut self, request: RunRequest) {
        let found = self
            .contexts
            .iter()
            .position(|ctx| ctx.pipeline.name == request.pipeline);
        let reply = match found {
            None => RunReply::Unknown,
            Some(i) if self.views()[i].running => RunReply::AlreadyRunning,
            Some(i) => {
                self.start_job(i, "requested (POST /run)");
                RunReply::Started
            }
        };
        let _ = request.reply.send(reply);
    }
}

fn log_report(ctx: &Context, report: &JobReport) {
    let name = &ctx.pipeline.name;
    let record = &report.record;
    match (&report.error, record.outcome) {
        (None, Outcome::Success) => tracing::info!(
            pipeline = %name,
            "snapshot {} committed: {} byte(s) read, {} stored, {:.1}s",
            record.snapshot.as_deref().map_or("?", |s| &s[..8.min(s.len())]),
            record.bytes_read,
            record.bytes_stored,
            record.seconds
        ),
        (None, _) => tracing::warn!(
            pipeline = %name,
            "snapshot {} committed, incomplete: {} item(s) could not be read",
            record.snapshot.as_deref().unwrap_or("?"),
            record.incomplete
        ),
        (Some(error), _) => tracing::error!(
            pipeline = %name,
            "run failed (exit code {}): {}",
            report.status().code(),
            error_chain(error)
        ),
    }
}
