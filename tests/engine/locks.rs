//! Repository locks through the library: conflicts between kinds, refreshing while held, and
//! release when the holding future is cancelled (the Ctrl-C path) rather than released.

use std::path::{Path, PathBuf};
use std::time::Duration;

use runner::config::Pipeline;
use runner::pipeline::{Context, RunError};
use runner::plugins::Builtins;
use runner::repository::lock::{LockError, LockKind};

use crate::common;

fn context(dir: &Path) -> Context {
    let text = "[repository]\nlock_stale_after = \"10s\"\n\n[source]\ntype = \"files\"\npaths = [\".\"]\n\n[sink]\ntype = \"local\"\npath = \"repo\"\n";
    let pipeline = Pipeline::parse(text, dir.join("p.toml"), &Builtins).unwrap();
    Context::new(common::engine(), pipeline)
}

fn lock_files(dir: &Path) -> Vec<PathBuf> {
    match std::fs::read_dir(dir.join("repo/locks")) {
        Ok(entries) => entries.map(|e| e.unwrap().path()).collect(),
        Err(_) => Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn exclusive_excludes_all_and_held_locks_are_refreshed_and_released() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = context(dir.path());
    let repository = ctx.open_repository(true).await.unwrap();

    let exclusive = ctx
        .lock(&repository, LockKind::Exclusive, "prune")
        .await
        .unwrap();
    for kind in [LockKind::Read, LockKind::Append, LockKind::Exclusive] {
        match ctx.lock(&repository, kind, "test").await {
            Err(RunError::Lock(LockError::Held { holder, .. })) => {
                assert!(holder.starts_with("`prune` (exclusive lock"), "{holder}")
            }
            Err(e) => panic!("{kind}: {e}"),
            Ok(_) => panic!("{kind} was granted beside an exclusive lock"),
        }
    }
    // Every refused attempt removed its own object again.
    let before = lock_files(dir.path());
    assert_eq!(before.len(), 1);

    // Refreshed every sixth of lock_stale_after (10s): a new object, the old one gone.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let after = lock_files(dir.path());
    assert_eq!(after.len(), 1);
    assert_ne!(before, after, "the lock was not refreshed");
    exclusive.check().await.unwrap();
    exclusive.release().await;
    assert!(lock_files(dir.path()).is_empty());

    // Readers share; an appender beside them is fine; a second appender is not.
    let read = ctx
        .lock(&repository, LockKind::Read, "verify")
        .await
        .unwrap();
    let read2 = ctx
        .lock(&repository, LockKind::Read, "restore")
        .await
        .unwrap();
    let append = ctx
        .lock(&repository, LockKind::Append, "run")
        .await
        .unwrap();
    assert!(matches!(
        ctx.lock(&repository, LockKind::Append, "run").await,
        Err(RunError::Lock(LockError::Held { .. }))
    ));
    for guard in [read, read2, append] {
        guard.release().await;
    }
    assert!(lock_files(dir.path()).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cancelled_holder_releases_its_lock() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = context(dir.path());
    let repository = ctx.open_repository(true).await.unwrap();
    // What `tokio::select!` on Ctrl-C does to a running command: drops its future.
    let work = async {
        let _guard = ctx
            .lock(&repository, LockKind::Append, "run")
            .await
            .unwrap();
        std::future::pending::<()>().await;
    };
    tokio::select! {
        _ = work => unreachable!(),
        _ = tokio::time::sleep(Duration::from_secs(2)) => {}
    }
    assert!(
        lock_files(dir.path()).is_empty(),
        "the dropped guard left its lock"
    );
    let again = ctx
        .lock(&repository, LockKind::Exclusive, "prune")
        .await
        .unwrap();
    again.release().await;
}
