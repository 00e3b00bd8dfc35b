//! The S3 and Google Drive sinks end to end through the real binary: the same pipeline as the
//! local tests with only `[sink]` changed, against an in-process S3 server (s3s-fs, SigV4) and
//! a Drive v3 fake — large artifacts with bounded memory, retries through outages, rate
//! limits and token refreshes, and clean failures that commit no snapshot.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::backup::{CHAIN, PASSPHRASE, Setup, run_measured};
use crate::common::drive_fake::DriveFake;
use crate::common::fault_proxy::FaultProxy;
use crate::common::s3_server::{self, S3Server};
use crate::common::{Prng, tree};
use crate::{stderr, stdout};

pub const BUCKET: &str = "backups";

pub fn s3_sink(endpoint: &str, extra: &str) -> String {
    format!(
        "[sink]\ntype = \"s3\"\nbucket = \"{BUCKET}\"\nprefix = \"runner/test\"\nregion = \"us-east-1\"\nendpoint = \"{endpoint}\"\naccess_key_id = \"{}\"\nsecret_access_key = \"${{env:TEST_S3_SECRET}}\"\n{extra}\n",
        s3_server::ACCESS_KEY
    )
}

fn drive_sink(endpoint: &str, extra: &str) -> String {
    format!(
        "[sink]\ntype = \"gdrive\"\nfolder = \"/Backups/runner\"\nendpoint = \"{endpoint}\"\nclient_id = \"{}\"\nclient_secret = \"${{env:TEST_GDRIVE_SECRET}}\"\nrefresh_token = \"${{env:TEST_GDRIVE_REFRESH}}\"\n{extra}\n",
        DriveFake::CLIENT_ID
    )
}

/// Runs `runner` in `setup` with the remote credentials in its environment.
pub fn command(setup: &Setup, args: &[&str], s3_secret: &str) -> std::process::Command {
    let mut cmd = setup.command(args, PASSPHRASE);
    cmd.env("TEST_S3_SECRET", s3_secret)
        .env("TEST_GDRIVE_SECRET", DriveFake::CLIENT_SECRET)
        .env("TEST_GDRIVE_REFRESH", DriveFake::REFRESH_TOKEN);
    cmd
}

fn run_ok(setup: &Setup, args: &[&str]) -> String {
    crate::succeeded(
        &command(setup, args, s3_server::SECRET_KEY)
            .output()
            .unwrap(),
        args,
    )
}

fn snapshot_count(setup: &Setup) -> usize {
    let listed = run_ok(setup, &["snapshots", "pipeline.toml", "--json"]);
    serde_json::from_str::<Vec<serde_json::Value>>(&listed)
        .unwrap()
        .len()
}

/// One file of `size` pseudo-random (incompressible) bytes plus a few small ones.
pub fn write_data(root: &Path, size: usize, seed: u64) {
    use std::io::Write;
    let mut prng = Prng::new(seed);
    let mut file = std::fs::File::create(root.join("big.bin")).unwrap();
    let mut block = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        let n = left.min(block.len());
        prng.fill(&mut block[..n]);
        file.write_all(&block[..n]).unwrap();
        left -= n;
    }
    std::fs::create_dir(root.join("notes")).unwrap();
    for i in 0..20 {
        std::fs::write(root.join(format!("notes/{i}.txt")), format!("note {i}\n")).unwrap();
    }
}

/// Restores the newest snapshot into `restored/` and compares it with the data.
fn restore_and_compare(setup: &Setup) {
    let target = setup.dir.path().join("restored");
    let _ = std::fs::remove_dir_all(&target);
    run_ok(
        setup,
        &[
            "restore",
            "pipeline.toml",
            "--target",
            target.to_str().unwrap(),
        ],
    );
    tree::assert_same(&setup.data(), &target.join("data"));
}

#[test]
fn s3_round_trips_a_300_mib_artifact_in_multipart_objects_with_bounded_memory() {
    let root = tempfile::tempdir().unwrap();
    let server = S3Server::start(root.path());
    server.create_bucket(BUCKET);
    let setup = Setup::with_sink(CHAIN, &s3_sink(&server.endpoint(), ""));
    write_data(&setup.data(), 300 << 20, 1);

    let report = run_ok(&setup, &["validate", "--check-remote", "pipeline.toml"]);
    assert!(report.contains("reachable and writable"), "{report}");

    let (output, rss) = run_measured(command(
        &setup,
        &["run", "pipeline.toml"],
        s3_server::SECRET_KEY,
    ));
    assert!(
        output.status.success(),
        "{}{}",
        stdout(&output),
        stderr(&output)
    );
    let objects = server.objects(BUCKET);
    let large = objects.iter().filter(|(_, size)| *size > 8 << 20).count();
    assert!(
        large >= 18,
        "expected 16 MiB objects (two parts each): {objects:?}"
    );
    assert!(
        objects
            .iter()
            .all(|(key, _)| key.starts_with("runner/test/")),
        "objects outside the prefix: {objects:?}"
    );
    assert!(
        !objects.iter().any(|(key, _)| key.contains("runner-probe")),
        "the probe object was left behind"
    );
    println!(
        "s3: peak RSS of runner run with a 300 MiB artifact: {} MiB",
        rss >> 20
    );
    assert!(rss < 200 << 20, "runner run peaked at {} MiB", rss >> 20);

    run_ok(&setup, &["verify", "pipeline.toml"]);
    assert_eq!(snapshot_count(&setup), 1);
    restore_and_compare(&setup);

    // The secret went to the host only: not to any output, nor to the stored (encrypted)
    // objects' plaintext metadata; the manifest records the reference as written.
    let all_output = format!("{}{}", stdout(&output), stderr(&output));
    assert!(!all_output.contains(s3_server::SECRET_KEY));
}

#[test]
fn s3_wrong_secret_and_missing_bucket_fail_clearly_without_a_snapshot() {
    let root = tempfile::tempdir().unwrap();
    let server = S3Server::start(root.path());
    server.create_bucket(BUCKET);
    let setup = Setup::with_sink(CHAIN, &s3_sink(&server.endpoint(), "retries = 2"));
    write_data(&setup.data(), 1 << 20, 2);

    let wrong = "not-the-secret-key-at-all";
    for args in [
        &["validate", "--check-remote", "pipeline.toml"][..],
        &["run", "pipeline.toml"],
    ] {
        let output = command(&setup, args, wrong).output().unwrap();
        let err = stderr(&output);
        assert!(
            !output.status.success(),
            "{args:?} succeeded with a wrong secret"
        );
        assert!(
            err.contains("SignatureDoesNotMatch") || err.contains("PermissionDenied"),
            "{args:?}: the error should say the credentials were refused:\n{err}"
        );
        assert!(
            !err.contains(wrong),
            "the secret leaked into the error:\n{err}"
        );
    }
    assert!(
        server.objects(BUCKET).is_empty(),
        "{:?}",
        server.objects(BUCKET)
    );

    // A bucket that does not exist is named as such.
    let missing = Setup::with_sink(
        CHAIN,
        &s3_sink(&server.endpoint(), "retries = 2")
            .replace("bucket = \"backups\"", "bucket = \"no-such-bucket\""),
    );
    let output = command(
        &missing,
        &["validate", "--check-remote", "pipeline.toml"],
        s3_server::SECRET_KEY,
    )
    .output()
    .unwrap();
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("NoSuchBucket"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn s3_upload_survives_a_server_restart_and_a_faulty_network() {
    let root = tempfile::tempdir().unwrap();
    let server = S3Server::start(root.path());
    server.create_bucket(BUCKET);
    let port = server.addr.port();
    let setup = Setup::with_sink(CHAIN, &s3_sink(&server.endpoint(), ""));
    write_data(&setup.data(), 96 << 20, 3);

    // The server stops once the first data objects arrive, and comes back two seconds later.
    let child = command(&setup, &["run", "pipeline.toml"], s3_server::SECRET_KEY)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while server
        .objects(BUCKET)
        .iter()
        .filter(|(_, size)| *size > 1 << 20)
        .count()
        < 1
    {
        assert!(Instant::now() < deadline, "no object arrived");
        std::thread::sleep(Duration::from_millis(20));
    }
    server.stop();
    std::thread::sleep(Duration::from_secs(2));
    let server = S3Server::start_on(root.path(), port);
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{}{}",
        stdout(&output),
        stderr(&output)
    );
    assert!(
        stderr(&output).contains("retrying"),
        "no retry was logged:\n{}",
        stderr(&output)
    );
    restore_and_compare(&setup);

    // Delays, 503 SlowDown answers and connections cut mid-transfer, between runner and server.
    let proxy = FaultProxy::start(server.addr, 7, 40);
    setup.write_sink(&s3_sink(&proxy.endpoint(), ""));
    std::fs::write(setup.data().join("notes/changed.txt"), "after the restart").unwrap();
    run_ok(&setup, &["run", "pipeline.toml"]);
    run_ok(&setup, &["verify", "pipeline.toml"]);
    restore_and_compare(&setup);
    let counts = &proxy.counts;
    use std::sync::atomic::Ordering::Relaxed;
    println!("fault proxy: {counts:?}");
    assert!(counts.answered_503.load(Relaxed) > 0 && counts.cut.load(Relaxed) > 0);
    assert_eq!(snapshot_count(&setup), 2);
}

#[test]
fn s3_permanent_failure_fails_the_run_and_commits_nothing() {
    let root = tempfile::tempdir().unwrap();
    let server = S3Server::start(root.path());
    server.create_bucket(BUCKET);
    let port = server.addr.port();
    let setup = Setup::with_sink(CHAIN, &s3_sink(&server.endpoint(), "retries = 2"));
    write_data(&setup.data(), 4 << 20, 4);
    run_ok(&setup, &["run", "pipeline.toml"]);

    // The server goes away for good in the middle of the second run.
    write_data(&setup.data().join("notes"), 64 << 20, 5);
    let child = command(&setup, &["run", "pipeline.toml"], s3_server::SECRET_KEY)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let before = server.objects(BUCKET).len();
    let deadline = Instant::now() + Duration::from_secs(60);
    while server.objects(BUCKET).len() <= before {
        assert!(Instant::now() < deadline, "no object arrived");
        std::thread::sleep(Duration::from_millis(20));
    }
    server.stop();
    let output = child.wait_with_output().unwrap();
    assert!(
        !output.status.success(),
        "the run succeeded without its storage"
    );
    assert!(
        !stdout(&output).contains("committed"),
        "{}",
        stdout(&output)
    );

    // Back online: still exactly the first snapshot, and it verifies.
    let _server = S3Server::start_on(root.path(), port);
    assert_eq!(snapshot_count(&setup), 1);
    run_ok(&setup, &["verify", "pipeline.toml"]);
}

#[test]
fn gdrive_round_trips_300_mib_in_parts_through_token_refreshes_and_rate_limits() {
    let drive = DriveFake::start();
    // OpenDAL refreshes two minutes before expiry: 122 s tokens are refreshed every ~2 s.
    drive.set_token_lifetime(122);
    drive.rate_limit_next(4);
    let setup = Setup::with_sink(CHAIN, &drive_sink(&drive.base_url(), ""));
    write_data(&setup.data(), 300 << 20, 6);

    let report = run_ok(&setup, &["validate", "--check-remote", "pipeline.toml"]);
    assert!(report.contains("reachable and writable"), "{report}");

    let (output, rss) = run_measured(command(
        &setup,
        &["run", "pipeline.toml"],
        s3_server::SECRET_KEY,
    ));
    assert!(
        output.status.success(),
        "{}{}",
        stdout(&output),
        stderr(&output)
    );
    let stats = drive.stats();
    println!("drive fake: {stats:?}; peak RSS {} MiB", rss >> 20);
    assert!(stats.rate_limited >= 4, "{stats:?}");
    assert!(
        stats.token_grants >= 2,
        "the token was never refreshed: {stats:?}"
    );
    assert!(
        stats.largest_upload <= crate::common::drive_fake::MAX_SIMPLE_UPLOAD as u64,
        "{stats:?}"
    );
    let files = drive.files_in("/Backups/runner");
    assert!(!files.is_empty(), "nothing stored under the folder");
    assert!(rss < 200 << 20, "runner run peaked at {} MiB", rss >> 20);

    run_ok(&setup, &["verify", "pipeline.toml"]);
    assert_eq!(snapshot_count(&setup), 1);
    restore_and_compare(&setup);
    drive.stop();
}

#[test]
fn gdrive_refused_credentials_fail_clearly_without_a_snapshot() {
    let drive = DriveFake::start();
    let setup = Setup::with_sink(CHAIN, &drive_sink(&drive.base_url(), "retries = 2"));
    write_data(&setup.data(), 1 << 20, 7);
    for args in [
        &["validate", "--check-remote", "pipeline.toml"][..],
        &["run", "pipeline.toml"],
    ] {
        let output = command(&setup, args, "")
            .env("TEST_GDRIVE_REFRESH", "revoked-refresh-token")
            .output()
            .unwrap();
        assert!(
            !output.status.success(),
            "{args:?} succeeded with a revoked token"
        );
        let err = stderr(&output);
        assert!(err.contains("invalid_grant"), "{args:?}:\n{err}");
        assert!(
            !err.contains("revoked-refresh-token"),
            "the token leaked:\n{err}"
        );
        assert!(
            !err.contains(DriveFake::CLIENT_SECRET),
            "the client secret leaked:\n{err}"
        );
    }
    assert!(drive.files_in("/Backups/runner").is_empty());
}

/// A fresh RSA key as a service-account JSON key file in `dir`; returns the file and the
/// public key (PKCS#1 DER) for the fake to trust.
fn service_account_key(dir: &Path, email: &str) -> (std::path::PathBuf, Vec<u8>) {
    let pem = dir.join("sa-key.pem");
    let public = dir.join("sa-public.der");
    let openssl = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "openssl {args:?}: {}", stderr(&out));
    };
    openssl(&[
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:2048",
        "-out",
        pem.to_str().unwrap(),
    ]);
    openssl(&[
        "rsa",
        "-in",
        pem.to_str().unwrap(),
        "-RSAPublicKey_out",
        "-outform",
        "DER",
        "-out",
        public.to_str().unwrap(),
    ]);
    let key_file = dir.join("service-account.json");
    let json = serde_json::json!({
        "type": "service_account",
        "client_email": email,
        "private_key": std::fs::read_to_string(&pem).unwrap(),
        "token_uri": "https://oauth2.googleapis.com/token",
    });
    std::fs::write(&key_file, json.to_string()).unwrap();
    (key_file, std::fs::read(public).unwrap())
}

#[test]
fn gdrive_authenticates_as_a_service_account_with_a_signed_jwt() {
    let drive = DriveFake::start();
    let setup = Setup::with_sink(CHAIN, "[sink]\n");
    let email = "backup@runner-test.iam.gserviceaccount.com";
    let (key_file, public_key) = service_account_key(setup.dir.path(), email);
    setup.write_sink(&format!(
        "[sink]\ntype = \"gdrive\"\nfolder = \"/Backups/sa\"\nendpoint = \"{}\"\nservice_account_key = \"${{file:{}}}\"\nretries = 2\n",
        drive.base_url(),
        key_file.display()
    ));
    write_data(&setup.data(), 6 << 20, 8);

    // Not trusted yet: Google's answer for a key it does not know, and nothing stored.
    let output = command(&setup, &["run", "pipeline.toml"], "")
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("invalid_grant"),
        "{}",
        stderr(&output)
    );
    assert!(
        !stderr(&output).contains("PRIVATE KEY"),
        "the key leaked:\n{}",
        stderr(&output)
    );

    drive.trust_service_account(email, public_key);
    run_ok(&setup, &["run", "pipeline.toml"]);
    assert!(drive.stats().token_grants >= 1);
    assert!(!drive.files_in("/Backups/sa").is_empty());
    run_ok(&setup, &["verify", "pipeline.toml"]);
    restore_and_compare(&setup);
}

#[test]
fn gdrive_folder_by_id_reaches_a_folder_shared_with_the_account() {
    let drive = DriveFake::start();
    let shared = drive.add_shared_folder("Team backups");
    let sink = |folder: &str| {
        drive_sink(&drive.base_url(), "retries = 2").replace(
            "folder = \"/Backups/runner\"",
            &format!("folder_id = \"{folder}\"\nfolder = \"hosts/db1\""),
        )
    };
    let setup = Setup::with_sink(CHAIN, &sink(&shared));
    write_data(&setup.data(), 3 << 20, 11);
    run_ok(&setup, &["validate", "--check-remote", "pipeline.toml"]);
    run_ok(&setup, &["run", "pipeline.toml"]);
    run_ok(&setup, &["run", "pipeline.toml"]);
    assert_eq!(snapshot_count(&setup), 2);
    // Everything is inside the shared folder (under `folder`), nothing in My Drive.
    assert_eq!(drive.files_in_folder(&shared), [("hosts/".to_string(), 0)]);
    assert!(drive.files_in("").is_empty(), "{:?}", drive.files_in(""));
    run_ok(&setup, &["verify", "pipeline.toml", "--read-data"]);
    restore_and_compare(&setup);

    // A folder id the account cannot see, and a file's id: clear errors, nothing stored.
    for (id, expected) in [
        (
            "1SnoSuchFolder0000000000000000000",
            "no such folder, or this account cannot see it",
        ),
        ("bad id!", "`folder_id` is a Drive folder id"),
    ] {
        setup.write_sink(&sink(id));
        for args in [
            &["validate", "--check-remote", "pipeline.toml"][..],
            &["run", "pipeline.toml"],
        ] {
            let output = command(&setup, args, "").output().unwrap();
            assert!(!output.status.success(), "{args:?} with folder_id {id}");
            let err = stderr(&output);
            assert!(err.contains(expected), "{args:?}:\n{err}");
        }
    }
    assert!(drive.files_in("").is_empty());
}
