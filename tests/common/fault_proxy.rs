//! A fault-injecting TCP proxy for the remote sink tests: delays, 503 answers and connections
//! cut mid-transfer, chosen per connection by a seeded PRNG so failures reproduce.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::Prng;

/// What happened to the connections so far.
#[derive(Debug, Default)]
pub struct FaultCounts {
    pub connections: AtomicU64,
    pub delayed: AtomicU64,
    pub answered_503: AtomicU64,
    pub cut: AtomicU64,
}

pub struct FaultProxy {
    pub addr: SocketAddr,
    pub counts: Arc<FaultCounts>,
    stop: Arc<AtomicBool>,
}

impl FaultProxy {
    /// Forwards to `upstream`; of the first `faulty` connections, about a third are delayed,
    /// a third answered with 503 SlowDown and a third cut after a random number of bytes.
    pub fn start(upstream: SocketAddr, seed: u64, faulty: u64) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let counts = Arc::new(FaultCounts::default());
        let stop = Arc::new(AtomicBool::new(false));
        let prng = Arc::new(Mutex::new(Prng::new(seed)));
        std::thread::spawn({
            let (counts, stop) = (counts.clone(), stop.clone());
            move || {
                for client in listener.incoming() {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let Ok(client) = client else { continue };
                    let n = counts.connections.fetch_add(1, Ordering::Relaxed);
                    let (fault, budget) = {
                        let mut prng = prng.lock().unwrap();
                        (prng.below(3), 64 * 1024 + prng.below(6 << 20) as u64)
                    };
                    let fault = if n < faulty { Some(fault) } else { None };
                    let counts = counts.clone();
                    std::thread::spawn(move || serve(client, upstream, fault, budget, &counts));
                }
            }
        });
        FaultProxy { addr, counts, stop }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(self.addr); // wakes the accept loop
    }
}

fn serve(
    mut client: TcpStream,
    upstream: SocketAddr,
    fault: Option<usize>,
    budget: u64,
    counts: &FaultCounts,
) {
    match fault {
        Some(0) => {
            counts.delayed.fetch_add(1, Ordering::Relaxed);
            std::thread::sleep(Duration::from_millis(300));
        }
        Some(1) => {
            counts.answered_503.fetch_add(1, Ordering::Relaxed);
            let mut request = [0u8; 4096];
            let _ = client.read(&mut request);
            let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>";
            let _ = write!(
                client,
                "HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = client.shutdown(Shutdown::Both);
            return;
        }
        _ => {}
    }
    let Ok(server) = TcpStream::connect(upstream) else {
        return;
    };
    let cut_after = (fault == Some(2)).then_some(budget);
    if cut_after.is_some() {
        counts.cut.fetch_add(1, Ordering::Relaxed);
    }
    let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
    let upload = std::thread::spawn(move || pipe(c2, s2, cut_after));
    pipe(server, client, None);
    let _ = upload.join();
}

/// Copies until EOF, or cuts both directions after `cut_after` bytes.
fn pipe(mut from: TcpStream, mut to: TcpStream, cut_after: Option<u64>) {
    let mut buffer = vec![0u8; 64 * 1024];
    let mut copied = 0u64;
    loop {
        let n = match from.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if cut_after.is_some_and(|limit| copied + n as u64 > limit) {
            let _ = from.shutdown(Shutdown::Both);
            let _ = to.shutdown(Shutdown::Both);
            return;
        }
        if to.write_all(&buffer[..n]).is_err() {
            break;
        }
        copied += n as u64;
    }
    let _ = to.shutdown(Shutdown::Write);
}
