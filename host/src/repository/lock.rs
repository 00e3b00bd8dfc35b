//! Repository locks: `locks/<object id>` objects that keep runs, prunes and readers of one
//! repository from corrupting each other on any sink, without compare-and-swap.
//!
//! How a lock is taken (restic's way, which needs only put, list, get and delete):
//! look at `locks/`; when nothing conflicts, write our own lock object, look again, and
//! when a conflicting lock appeared meanwhile, delete ours and retry with jittered backoff
//! until `--lock-wait` runs out. Two takers racing both back off (neither wins) rather than
//! both winning: each one's second look sees the other's object.
//!
//! A held lock is refreshed in the background (a new object with a new `refreshed` time,
//! then the old one deleted: every sink can create and delete, not every sink overwrites
//! in place). A lock is **stale** when its holder ran on this machine, in this pid
//! namespace, and its process is gone, or when it was not refreshed for `lock_stale_after`.
//! Stale locks are reported and ignored; `runner unlock` removes them.
//!
//! Safety rule: a holder whose lock could not be refreshed for half of `lock_stale_after`,
//! or whose lock object disappeared, has lost the lock for good and must not commit
//! anything ([`LockGuard::check`] right before the commit), so a prune that took over a
//! stale lock can never delete objects of a snapshot that then commits. This holds as long
//! as hosts' clocks differ by less than half of `lock_stale_after` minus the time a commit
//! takes.
//!
//! Format: JSON; sealed with the repository's manifest key when the repository is
//! encrypted (host names, pids and commands are operational metadata, not secrets, but
//! manifests hide the host name too, and a sealed lock cannot be forged).

use std::collections::HashSet;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, oneshot};

use crate::capabilities::keys::DataKey;
use crate::engine::bindings::PluginErrorKind;
use crate::engine::{PluginError, SinkInstance};
use crate::repository::{RepoError, get_bytes, put_bytes};

pub const LOCKS_PREFIX: &str = "locks/";
/// `[repository] lock_stale_after` when the pipeline does not set it.
pub const DEFAULT_STALE_AFTER: Duration = Duration::from_secs(30 * 60);
/// The shortest `lock_stale_after` a pipeline may set: locks are refreshed every sixth of it.
pub const MIN_STALE_AFTER: Duration = Duration::from_secs(10);
const LOCK_FORMAT: u32 = 1;
/// Prefix of a sealed lock; a plain one is JSON and starts with `{`.
const SEALED_MAGIC: &[u8] = b"RUNNER-LOCK-SEALED-1\n";
/// Longest pause between two attempts while waiting for a lock.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(5);
const FIRST_RETRY_DELAY: Duration = Duration::from_millis(250);
/// How long releasing from `Drop` may block the thread.
const DROP_RELEASE_TIMEOUT: Duration = Duration::from_secs(15);

/// What a command does to the repository, and so whom it must exclude.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LockKind {
    /// Reads snapshots (restore, verify): only a deleting command can hurt it.
    Read,
    /// Adds objects and snapshots (run): readers are safe beside it; another appender is
    /// not allowed, so a run's retention and history see one writer.
    Append,
    /// Deletes (prune, anything removing objects): nobody else may work.
    Exclusive,
}

impl LockKind {
    /// Whether a holder of `self` and a holder of `other` may not work at the same time.
    pub fn conflicts_with(self, other: LockKind) -> bool {
        use LockKind::*;
        matches!(
            (self, other),
            (Exclusive, _) | (_, Exclusive) | (Append, Append)
        )
    }
}

impl std::fmt::Display for LockKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LockKind::Read => "read",
            LockKind::Append => "append",
            LockKind::Exclusive => "exclusive",
        })
    }
}

/// One lock object's content.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct LockRecord {
    pub format: u32,
    /// The holder, the same for the lock's whole life (its object key changes on refresh).
    pub id: String,
    pub kind: LockKind,
    pub host: String,
    pub pid: u32,
    /// Boot id and pid namespace of the holder: pids of two processes are comparable only
    /// when these are equal (containers sharing a host name have their own pid spaces).
    #[serde(default)]
    pub process_space: Option<String>,
    /// The holder's start time (clock ticks after boot), so a reused pid is not taken for it.
    #[serde(default)]
    pub process_start: Option<u64>,
    /// The runner subcommand holding it ("run", "restore", "verify", "prune").
    pub command: String,
    pub pipeline: String,
    /// RFC 3339, the holder's clock.
    pub created: String,
    pub refreshed: String,
}

impl LockRecord {
    /// "`run` (append lock, pid 4242 on backup-1, pipeline daily)".
    pub fn holder(&self) -> String {
        format!(
            "`{}` ({} lock, pid {} on {}, pipeline {})",
            self.command, self.kind, self.pid, self.host, self.pipeline
        )
    }

    /// Time since the last refresh by `now`; zero when the holder's clock is ahead.
    pub fn age(&self, now: jiff::Timestamp) -> Duration {
        self.refreshed
            .parse::<jiff::Timestamp>()
            .ok()
            .and_then(|refreshed| Duration::try_from(now.duration_since(refreshed)).ok())
            .unwrap_or(Duration::ZERO)
    }
}

/// Why a lock no longer protects anything.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stale {
    /// The holder ran on this machine in this pid namespace and its process is gone.
    ProcessGone,
    /// Not refreshed for longer than `lock_stale_after`.
    NotRefreshed(Duration),
}

impl std::fmt::Display for Stale {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stale::ProcessGone => f.write_str("its process is gone"),
            Stale::NotRefreshed(age) => {
                write!(f, "not refreshed for {}", human_duration(*age))
            }
        }
    }
}

/// The running process as locks describe it.
#[derive(Clone, Debug)]
pub struct ThisProcess {
    pub host: String,
    pub pid: u32,
    pub process_space: Option<String>,
    pub process_start: Option<u64>,
}

impl ThisProcess {
    pub fn get() -> &'static ThisProcess {
        static THIS: OnceLock<ThisProcess> = OnceLock::new();
        THIS.get_or_init(|| {
            let pid = std::process::id();
            ThisProcess {
                host: hostname(),
                pid,
                process_space: process_space(),
                process_start: process_start(pid),
            }
        })
    }
}

/// Whether `record` is stale as seen by `observer` at `now`. `alive(pid, start)` answers
/// for processes in the observer's own pid space only.
pub fn staleness(
    record: &LockRecord,
    observer: &ThisProcess,
    now: jiff::Timestamp,
    stale_after: Duration,
    alive: impl Fn(u32, Option<u64>) -> bool,
) -> Option<Stale> {
    let age = record.age(now);
    if age > stale_after {
        return Some(Stale::NotRefreshed(age));
    }
    let same_space = record.host == observer.host
        && record.process_space.is_some()
        && record.process_space == observer.process_space;
    if same_space && !alive(record.pid, record.process_start) {
        return Some(Stale::ProcessGone);
    }
    None
}

/// Whether process `pid` of this pid space runs, and is the one started at `start`.
pub fn process_alive(pid: u32, start: Option<u64>) -> bool {
    let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return false;
    };
    match rustix::process::test_kill_process(pid) {
        Err(rustix::io::Errno::SRCH) => false,
        // EPERM: it exists, under another user.
        _ => match (
            start,
            process_start(pid.as_raw_nonzero().get().unsigned_abs()),
        ) {
            (Some(recorded), Some(now)) => recorded == now,
            _ => true,
        },
    }
}

/// Whether a holder that last refreshed `since_refresh` ago must consider its lock lost:
/// at half the stale age, well before anybody else may treat it as stale.
pub fn lost_by_age(since_refresh: Duration, stale_after: Duration) -> bool {
    since_refresh > stale_after / 2
}

/// How often a held lock is refreshed.
pub fn refresh_interval(stale_after: Duration) -> Duration {
    (stale_after / 6).min(Duration::from_secs(5 * 60))
}

/// Seals and opens lock objects of one repository.
#[derive(Clone)]
pub struct LockSeal {
    pub repository: String,
    pub key: Option<Arc<DataKey>>,
}

impl LockSeal {
    fn encode(&self, object: &str, record: &LockRecord) -> Vec<u8> {
        let json = serde_json::to_vec_pretty(record).expect("a lock serializes");
        match &self.key {
            Some(key) => {
                let mut out = SEALED_MAGIC.to_vec();
                out.extend_from_slice(&key.seal(&self.binding(object), &json));
                out
            }
            None => json,
        }
    }

    fn decode(&self, object: &str, bytes: &[u8]) -> Result<LockRecord, String> {
        let json = match (bytes.strip_prefix(SEALED_MAGIC), &self.key) {
            (Some(sealed), Some(key)) => key.open(&self.binding(object), sealed).ok_or(
                "it does not authenticate with this repository's key (damaged, or written by another repository)",
            )?,
            (Some(_), None) => {
                return Err("it is sealed, but the repository is not encrypted".into());
            }
            (None, Some(_)) => {
                return Err("it is not sealed, but this repository's locks must be".into());
            }
            (None, None) => bytes.to_vec(),
        };
        let record: LockRecord =
            serde_json::from_slice(&json).map_err(|e| format!("it is not a lock: {e}"))?;
        if record.format != LOCK_FORMAT {
            return Err(format!(
                "lock format {} is not supported (this runner writes {LOCK_FORMAT})",
                record.format
            ));
        }
        Ok(record)
    }

    fn binding(&self, object: &str) -> Vec<u8> {
        format!("runner lock v1\0{}\0{object}", self.repository).into_bytes()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "the repository is locked by {holder}, created {created} ago, refreshed {refreshed} ago; {waited}{hint}"
    )]
    Held {
        holder: String,
        created: String,
        refreshed: String,
        waited: String,
        hint: &'static str,
    },
    #[error(
        "lock object {key} cannot be read ({reason}); if no other runner works on this repository, `runner unlock --all PIPELINE` removes it"
    )]
    Unreadable { key: String, reason: String },
    #[error("this command's {kind} lock was lost: {reason}; nothing was committed")]
    Lost { kind: LockKind, reason: String },
    #[error(transparent)]
    Sink(#[from] PluginError),
    #[error(transparent)]
    Repository(#[from] RepoError),
}

/// A lock object found under `locks/`.
pub struct FoundLock {
    pub key: String,
    pub record: Result<LockRecord, String>,
}

/// Every (non-empty) lock object in the repository. Empty ones are skipped: some stores
/// show an object before its bytes arrive.
pub async fn read_locks(
    sink: &mut SinkInstance,
    seal: &LockSeal,
) -> Result<Vec<FoundLock>, PluginError> {
    let mut found = Vec::new();
    for object in sink.list_all(LOCKS_PREFIX).await? {
        if object.size == 0 {
            continue;
        }
        // Released (or replaced by a refresh) between the listing and the read: not a
        // lock any more.
        let bytes = match get_bytes(sink, &object.key).await {
            Ok(Some(bytes)) => bytes,
            Ok(None)
            | Err(PluginError::Plugin {
                error: PluginErrorKind::NotFound(_),
                ..
            }) => continue,
            Err(e) => return Err(e),
        };
        found.push(FoundLock {
            record: seal.decode(&object.key, &bytes),
            key: object.key,
        });
    }
    Ok(found)
}

/// Deletes an object; one that is already gone counts as deleted.
async fn delete_object(sink: &mut SinkInstance, key: &str) -> Result<(), PluginError> {
    match sink.delete(key).await {
        Err(PluginError::Plugin {
            error: PluginErrorKind::NotFound(_),
            ..
        }) => Ok(()),
        other => other,
    }
}

/// What `runner unlock` did to one lock object.
pub struct Unlocked {
    pub key: String,
    pub record: Option<LockRecord>,
    /// Why it was removed (or kept).
    pub reason: String,
}

/// Removes stale locks (every lock with `all`); returns what was removed and what was kept.
pub async fn remove_locks(
    sink: &mut SinkInstance,
    seal: &LockSeal,
    stale_after: Duration,
    all: bool,
) -> Result<(Vec<Unlocked>, Vec<Unlocked>), PluginError> {
    let (mut removed, mut kept) = (Vec::new(), Vec::new());
    let now = jiff::Timestamp::now();
    for found in read_locks(sink, seal).await? {
        let (record, stale) = match found.record {
            Ok(record) => {
                let stale = staleness(&record, ThisProcess::get(), now, stale_after, process_alive);
                (Some(record), stale.map(|s| s.to_string()))
            }
            Err(reason) => (None, Some(format!("unreadable: {reason}"))),
        };
        let remove = match (&stale, &record) {
            (_, _) if all => true,
            (Some(_), Some(_)) => true,
            // An unreadable lock may be a newer runner's: only --all removes it.
            _ => false,
        };
        let reason = stale.unwrap_or_else(|| "held".into());
        let entry = Unlocked {
            key: found.key,
            record,
            reason,
        };
        if remove {
            delete_object(sink, &entry.key).await?;
            removed.push(entry);
        } else {
            kept.push(entry);
        }
    }
    Ok((removed, kept))
}

/// What a command asks for.
pub struct LockRequest {
    pub kind: LockKind,
    /// The subcommand, recorded for whoever it blocks.
    pub command: String,
    pub pipeline: String,
    /// How long to keep trying while another holder conflicts.
    pub wait: Duration,
    pub stale_after: Duration,
}

/// A held lock. Release it with [`LockGuard::release`]; dropping it releases too, blocking
/// the thread for a moment (the path taken when a command's future is cancelled, e.g. on
/// Ctrl-C).
pub struct LockGuard {
    kind: LockKind,
    held: Arc<Mutex<Held>>,
    stop: Option<oneshot::Sender<()>>,
    refresher: Option<tokio::task::JoinHandle<()>>,
}

/// The lock's state, shared by the guard and its refresh task.
struct Held {
    sink: SinkInstance,
    seal: LockSeal,
    /// The current lock object.
    key: String,
    record: LockRecord,
    /// When the `refreshed` time of the current object was taken (before writing it).
    refreshed_at: Instant,
    stale_after: Duration,
    /// Set for good once the lock is lost.
    lost: Option<String>,
}

/// A lock that conflicts with the one wanted.
enum Conflict {
    Held(LockRecord),
    Unreadable { key: String, reason: String },
}

impl LockGuard {
    /// Takes a lock on the repository behind `sink` (an instance of its own: the refresh
    /// task uses it while the command works).
    pub async fn acquire(
        mut sink: SinkInstance,
        seal: LockSeal,
        request: LockRequest,
    ) -> Result<LockGuard, LockError> {
        let me = ThisProcess::get();
        let id = hex::encode(rand::random::<[u8; 16]>());
        let started = Instant::now();
        let mut delay = FIRST_RETRY_DELAY;
        let mut reported = HashSet::new();
        let mut announced = false;
        loop {
            // Look first, so no object is written while a conflict is visible.
            let mut conflict = find_conflict(
                &mut sink,
                &seal,
                request.kind,
                &id,
                request.stale_after,
                &mut reported,
            )
            .await?;
            if conflict.is_none() {
                let now = jiff::Timestamp::now().to_string();
                let record = LockRecord {
                    format: LOCK_FORMAT,
                    id: id.clone(),
                    kind: request.kind,
                    host: me.host.clone(),
                    pid: me.pid,
                    process_space: me.process_space.clone(),
                    process_start: me.process_start,
                    command: request.command.clone(),
                    pipeline: request.pipeline.clone(),
                    created: now.clone(),
                    refreshed: now,
                };
                let refreshed_at = Instant::now();
                let key = write_lock(&mut sink, &seal, &record).await?;
                let second = find_conflict(
                    &mut sink,
                    &seal,
                    request.kind,
                    &id,
                    request.stale_after,
                    &mut reported,
                )
                .await;
                match second {
                    Ok(None) => {
                        tracing::debug!(lock = %key, kind = %request.kind, "repository locked");
                        let held = Held {
                            sink,
                            seal,
                            key,
                            record,
                            refreshed_at,
                            stale_after: request.stale_after,
                            lost: None,
                        };
                        return Ok(LockGuard::hold(request.kind, held));
                    }
                    Ok(Some(found)) => {
                        delete_object(&mut sink, &key).await?;
                        conflict = Some(found);
                    }
                    Err(e) => {
                        let _ = delete_object(&mut sink, &key).await;
                        return Err(e);
                    }
                }
            }
            let conflict = conflict.expect("a conflict was found");
            let waited = started.elapsed();
            if waited >= request.wait {
                return Err(conflict.into_error(&request, waited));
            }
            if !announced {
                announced = true;
                let holder = match &conflict {
                    Conflict::Held(record) => record.holder(),
                    Conflict::Unreadable { key, .. } => format!("unreadable lock {key}"),
                };
                tracing::warn!(
                    "waiting up to {} for the {} lock, held by {holder}",
                    human_duration(request.wait),
                    request.kind
                );
            }
            // Jitter, so two waiting runners do not retry in step forever.
            let jittered = delay.mul_f64(rand::random_range(0.5..1.0));
            tokio::time::sleep(jittered.min(request.wait - waited)).await;
            delay = (delay * 2).min(MAX_RETRY_DELAY);
        }
    }

    fn hold(kind: LockKind, held: Held) -> LockGuard {
        let interval = refresh_interval(held.stale_after);
        let held = Arc::new(Mutex::new(held));
        let (stop, mut stopped) = oneshot::channel::<()>();
        let shared = held.clone();
        let refresher = tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = &mut stopped => return,
                    _ = tokio::time::sleep(interval) => {}
                }
                let mut held = shared.lock().await;
                held.refresh().await;
                if held.lost.is_some() {
                    return;
                }
            }
        });
        LockGuard {
            kind,
            held,
            stop: Some(stop),
            refresher: Some(refresher),
        }
    }

    pub fn kind(&self) -> LockKind {
        self.kind
    }

    /// Fails when the lock no longer protects this command: lost earlier, not refreshed
    /// for too long, or its object removed (`runner unlock`). Call it right before a commit.
    pub async fn check(&self) -> Result<(), LockError> {
        let mut held = self.held.lock().await;
        held.check_age();
        if held.lost.is_none() {
            let key = held.key.clone();
            if held.sink.stat(&key).await?.is_none() {
                held.lost = Some(format!(
                    "its lock object {key} was removed (by `runner unlock`?)"
                ));
            }
        }
        match &held.lost {
            None => Ok(()),
            Some(reason) => Err(LockError::Lost {
                kind: self.kind,
                reason: reason.clone(),
            }),
        }
    }

    /// Stops refreshing and deletes the lock object. A failure is logged, not returned: the
    /// command's own outcome matters more, and the lock turns stale on its own.
    pub async fn release(mut self) {
        let cleanup = self.cleanup();
        cleanup.await;
    }

    /// The release work, detached from `self` (so `Drop` can run it too).
    fn cleanup(&mut self) -> impl Future<Output = ()> + Send + 'static {
        let stop = self.stop.take();
        let refresher = self.refresher.take();
        let held = self.held.clone();
        async move {
            drop(stop);
            if let Some(refresher) = refresher {
                let _ = refresher.await;
            }
            let mut held = held.lock().await;
            let key = held.key.clone();
            match delete_object(&mut held.sink, &key).await {
                Ok(()) => tracing::debug!(lock = %key, "repository lock released"),
                Err(e) => tracing::warn!(
                    "could not remove lock object {key}: {e}; it turns stale on its own, `runner unlock` removes it"
                ),
            }
        }
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        if self.stop.is_none() {
            return; // released
        }
        let cleanup = self.cleanup();
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        // A cancelled command (Ctrl-C) drops its guard while the runtime may be about to
        // shut down, so a spawned task might never run: block here instead, where the
        // runtime allows it.
        let cleanup = async move {
            if tokio::time::timeout(DROP_RELEASE_TIMEOUT, cleanup)
                .await
                .is_err()
            {
                tracing::warn!("releasing the repository lock timed out");
            }
        };
        match runtime.runtime_flavor() {
            tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(|| runtime.block_on(cleanup));
            }
            _ => {
                runtime.spawn(cleanup);
            }
        }
    }
}

impl Held {
    /// Marks the lock lost when it went unrefreshed for too long.
    fn check_age(&mut self) {
        let since = self.refreshed_at.elapsed();
        if self.lost.is_none() && lost_by_age(since, self.stale_after) {
            self.lost = Some(format!(
                "it could not be refreshed for {} (others may treat it as stale after {})",
                human_duration(since),
                human_duration(self.stale_after)
            ));
        }
    }

    /// Writes a new lock object with a fresh time and deletes the old one. A lost lock
    /// stays lost: refreshing it again would hide that someone may have taken over.
    async fn refresh(&mut self) {
        self.check_age();
        if self.lost.is_some() {
            return;
        }
        match self.try_refresh().await {
            Ok(()) => {}
            Err(e) => {
                tracing::warn!("could not refresh the repository lock {}: {e}", self.key);
                self.check_age();
            }
        }
        if let Some(reason) = &self.lost {
            tracing::error!("the repository lock was lost: {reason}");
        }
    }

    async fn try_refresh(&mut self) -> Result<(), LockError> {
        let old = self.key.clone();
        if self.sink.stat(&old).await?.is_none() {
            self.lost = Some(format!(
                "its lock object {old} was removed (by `runner unlock`?)"
            ));
            return Ok(());
        }
        let mut record = self.record.clone();
        record.refreshed = jiff::Timestamp::now().to_string();
        let refreshed_at = Instant::now();
        let new = write_lock(&mut self.sink, &self.seal, &record).await?;
        // Removed while the new one was written: the remover did not see the new one.
        if self.sink.stat(&old).await?.is_none() {
            let _ = delete_object(&mut self.sink, &new).await;
            self.lost = Some(format!(
                "its lock object {old} was removed (by `runner unlock`?)"
            ));
            return Ok(());
        }
        self.key = new;
        self.record = record;
        self.refreshed_at = refreshed_at;
        delete_object(&mut self.sink, &old).await?;
        tracing::debug!(lock = %self.key, "repository lock refreshed");
        Ok(())
    }
}

impl Conflict {
    fn into_error(self, request: &LockRequest, waited: Duration) -> LockError {
        match self {
            Conflict::Unreadable { key, reason } => LockError::Unreadable { key, reason },
            Conflict::Held(record) => {
                let now = jiff::Timestamp::now();
                let created = LockRecord {
                    refreshed: record.created.clone(),
                    ..record.clone()
                };
                LockError::Held {
                    holder: record.holder(),
                    created: human_duration(created.age(now)),
                    refreshed: human_duration(record.age(now)),
                    waited: if request.wait.is_zero() {
                        "not waiting for it (--lock-wait 0)".to_string()
                    } else {
                        format!(
                            "gave up after waiting {} (--lock-wait)",
                            human_duration(waited)
                        )
                    },
                    hint: ". Wait with --lock-wait DURATION; if that holder is gone, `runner unlock PIPELINE` removes its lock once it is stale",
                }
            }
        }
    }
}

/// Writes a new lock object for `record` under a fresh name; returns its key.
async fn write_lock(
    sink: &mut SinkInstance,
    seal: &LockSeal,
    record: &LockRecord,
) -> Result<String, LockError> {
    let key = format!("{LOCKS_PREFIX}{}", hex::encode(rand::random::<[u8; 16]>()));
    put_bytes(sink, &key, &seal.encode(&key, record), true).await?;
    Ok(key)
}

/// The first live lock of another holder that conflicts with `kind`; reports stale locks
/// once per holder.
async fn find_conflict(
    sink: &mut SinkInstance,
    seal: &LockSeal,
    kind: LockKind,
    own_id: &str,
    stale_after: Duration,
    reported: &mut HashSet<String>,
) -> Result<Option<Conflict>, LockError> {
    let now = jiff::Timestamp::now();
    let mut conflict = None;
    for found in read_locks(sink, seal).await? {
        let record = match found.record {
            Ok(record) => record,
            Err(reason) => {
                // Unknown holder, unknown kind: it might exclude everyone.
                conflict.get_or_insert(Conflict::Unreadable {
                    key: found.key,
                    reason,
                });
                continue;
            }
        };
        if record.id == own_id {
            continue;
        }
        match staleness(&record, ThisProcess::get(), now, stale_after, process_alive) {
            Some(stale) => {
                if reported.insert(record.id.clone()) {
                    tracing::warn!(
                        "ignoring stale lock {}: {}, created {} ago: {stale}; `runner unlock PIPELINE` removes it",
                        found.key,
                        record.holder(),
                        human_duration(
                            LockRecord {
                                refreshed: record.created.clone(),
                                ..record.clone()
                            }
                            .age(now)
                        ),
                    );
                }
            }
            None if kind.conflicts_with(record.kind) => {
                if !matches!(conflict, Some(Conflict::Held(_))) {
                    conflict = Some(Conflict::Held(record));
                }
            }
            None => {}
        }
    }
    Ok(conflict)
}

/// "2h 5m", "41s", "0s".
pub fn human_duration(duration: Duration) -> String {
    let secs = duration.as_secs();
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m {s}s"),
        _ => format!("{h}h {m}m"),
    }
}

fn hostname() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}

/// "<boot id>/pid:[<inode>]": equal only for processes whose pids name the same processes.
fn process_space() -> Option<String> {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let namespace = std::fs::read_link("/proc/self/ns/pid").ok()?;
    Some(format!("{}/{}", boot.trim(), namespace.to_string_lossy()))
}

/// Field 22 of /proc/<pid>/stat: when the process started, in clock ticks after boot.
fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: fields count from its end.
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use LockKind::*;

    #[test]
    fn conflict_matrix() {
        let expected = [
            (Read, Read, false),
            (Read, Append, false),
            (Read, Exclusive, true),
            (Append, Append, true),
            (Append, Exclusive, true),
            (Exclusive, Exclusive, true),
        ];
        for (a, b, conflicts) in expected {
            assert_eq!(a.conflicts_with(b), conflicts, "{a} vs {b}");
            assert_eq!(b.conflicts_with(a), conflicts, "{b} vs {a} (symmetric)");
        }
    }

    fn record(host: &str, space: Option<&str>, refreshed: jiff::Timestamp) -> LockRecord {
        LockRecord {
            format: LOCK_FORMAT,
            id: "holder".into(),
            kind: Append,
            host: host.into(),
            pid: 4242,
            process_space: space.map(str::to_string),
            process_start: Some(7),
            command: "run".into(),
            pipeline: "daily".into(),
            created: refreshed.to_string(),
            refreshed: refreshed.to_string(),
        }
    }

    fn observer() -> ThisProcess {
        ThisProcess {
            host: "backup-1".into(),
            pid: 1,
            process_space: Some("boot/pid:[1]".into()),
            process_start: Some(1),
        }
    }

    #[test]
    fn stale_rules() {
        let now: jiff::Timestamp = "2026-11-22T08:00:00Z".parse().unwrap();
        let minutes = |m: i64| now - jiff::SignedDuration::from_mins(m);
        let thirty = Duration::from_secs(30 * 60);
        let gone = |_: u32, _: Option<u64>| false;
        let alive = |_: u32, _: Option<u64>| true;
        let me = observer();

        // Fresh, holder alive on this machine: live.
        let fresh = record("backup-1", Some("boot/pid:[1]"), minutes(1));
        assert_eq!(staleness(&fresh, &me, now, thirty, alive), None);
        // Fresh, same machine and pid space, process gone: stale at once.
        assert_eq!(
            staleness(&fresh, &me, now, thirty, gone),
            Some(Stale::ProcessGone)
        );
        // Same host name, other pid space (another container): its pid means nothing here.
        let container = record("backup-1", Some("boot/pid:[2]"), minutes(1));
        assert_eq!(staleness(&container, &me, now, thirty, gone), None);
        // No pid space recorded: pids are not compared.
        let unknown = record("backup-1", None, minutes(1));
        assert_eq!(staleness(&unknown, &me, now, thirty, gone), None);
        // Another host: only time makes it stale.
        let other = record("backup-2", Some("boot/pid:[1]"), minutes(29));
        assert_eq!(staleness(&other, &me, now, thirty, gone), None);
        let old = record("backup-2", Some("boot/pid:[1]"), minutes(31));
        assert_eq!(
            staleness(&old, &me, now, thirty, alive),
            Some(Stale::NotRefreshed(Duration::from_secs(31 * 60)))
        );
        // A holder whose clock runs ahead is not stale.
        let ahead = record("backup-2", None, now + jiff::SignedDuration::from_mins(10));
        assert_eq!(staleness(&ahead, &me, now, thirty, gone), None);
    }

    #[test]
    fn holders_give_up_well_before_others_take_over() {
        let thirty = Duration::from_secs(30 * 60);
        assert!(!lost_by_age(Duration::from_secs(14 * 60), thirty));
        assert!(lost_by_age(Duration::from_secs(16 * 60), thirty));
        // Several refreshes fit before a holder gives up.
        assert!(refresh_interval(thirty) * 3 <= thirty / 2);
        assert!(refresh_interval(MIN_STALE_AFTER) * 3 <= MIN_STALE_AFTER / 2);
    }

    #[test]
    fn this_process_is_alive_and_a_dead_one_is_not() {
        let me = ThisProcess::get();
        assert!(process_alive(me.pid, me.process_start));
        // Same pid, another start time: a reused pid is not the recorded holder.
        if let Some(start) = me.process_start {
            assert!(!process_alive(me.pid, Some(start + 1)));
        }
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        assert!(!process_alive(pid, None));
    }

    #[test]
    fn sealed_locks_authenticate_and_bind_to_their_object() {
        let key = Arc::new(DataKey::new("manifest", &[7u8; 32]));
        let sealed = LockSeal {
            repository: "repo".into(),
            key: Some(key),
        };
        let record = record("backup-1", None, jiff::Timestamp::now());
        let bytes = sealed.encode("locks/a", &record);
        assert!(!bytes.windows(8).any(|w| w == b"backup-1"), "host in clear");
        assert_eq!(sealed.decode("locks/a", &bytes).unwrap(), record);
        assert!(sealed.decode("locks/b", &bytes).is_err(), "moved object");
        let plain = LockSeal {
            repository: "repo".into(),
            key: None,
        };
        assert!(plain.decode("locks/a", &bytes).is_err());
        assert!(
            sealed
                .decode("locks/a", &plain.encode("locks/a", &record))
                .is_err()
        );
        assert_eq!(
            plain
                .decode("locks/a", &plain.encode("locks/a", &record))
                .unwrap(),
            record
        );
    }
}
