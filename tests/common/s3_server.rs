//! An in-process S3 server (s3s-fs: objects as files, SigV4 checked like real S3) on a
//! loopback port, stoppable and restartable on the same port, for the S3 sink tests.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;

pub const ACCESS_KEY: &str = "runner-test-access-key";
pub const SECRET_KEY: &str = "runner-test-secret-key-0123456789";

/// A running server; dropping it stops it at once (open connections are cut).
pub struct S3Server {
    pub addr: SocketAddr,
    root: PathBuf,
    runtime: Option<tokio::runtime::Runtime>,
}

impl S3Server {
    /// Serves `root` (one directory per bucket) on a free port.
    pub fn start(root: &Path) -> Self {
        Self::start_on(root, 0)
    }

    /// Serves `root` on `port` (0: any free port).
    pub fn start_on(root: &Path, port: u16) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let service = {
            let mut builder = S3ServiceBuilder::new(s3s_fs::FileSystem::new(root).unwrap());
            builder.set_auth(SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
            builder.build()
        };
        // Bound here, not with block_on, so async tests can start a server too.
        let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        runtime.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let http = ConnBuilder::new(TokioExecutor::new());
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    continue;
                };
                let connection = http
                    .serve_connection(TokioIo::new(socket), service.clone())
                    .into_owned();
                tokio::spawn(async move {
                    let _ = connection.await;
                });
            }
        });
        S3Server {
            addr,
            root: root.to_path_buf(),
            runtime: Some(runtime),
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Creates a bucket (a directory of the served root).
    pub fn create_bucket(&self, name: &str) {
        std::fs::create_dir_all(self.root.join(name)).unwrap();
    }

    /// Object files stored in `bucket`, relative to it.
    pub fn objects(&self, bucket: &str) -> Vec<(String, u64)> {
        fn walk(base: &Path, dir: &Path, out: &mut Vec<(String, u64)>) {
            let Ok(entries) = std::fs::read_dir(dir) else {
                return;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                let name = path
                    .strip_prefix(base)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                // s3s-fs keeps its own bookkeeping in dot-directories and ".metadata" files.
                if name.split('/').any(|part| part.starts_with('.')) {
                    continue;
                }
                if path.is_dir() {
                    walk(base, &path, out);
                } else {
                    out.push((name, entry.metadata().unwrap().len()));
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.root.join(bucket), &self.root.join(bucket), &mut out);
        out.sort();
        out
    }

    /// Stops serving at once, cutting open connections.
    pub fn stop(mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}
