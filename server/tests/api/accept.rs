//! The accept loop of `parley serve` (the real process): out of file descriptors, it takes the queued connection as
//! soon as one is free again, instead of sleeping a second per failed accept (axum's own loop), which in a reconnect
//! storm let the listen queue overflow.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The process's file limit (soft and hard, so raising the soft one at start changes nothing).
const FILE_LIMIT: u32 = 128;

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Sends a health check on a new connection; the connection once answered within `limit`, else `Err` with it.
fn health_check(port: u16, limit: Duration) -> Result<TcpStream, TcpStream> {
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).expect("the kernel queues the connection");
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n").expect("request written");
    if answered(&mut tcp, limit) { Ok(tcp) } else { Err(tcp) }
}

/// Whether an HTTP response starts arriving within `limit`.
fn answered(tcp: &mut TcpStream, limit: Duration) -> bool {
    tcp.set_read_timeout(Some(limit)).expect("timeout");
    let mut buf = [0u8; 256];
    matches!(tcp.read(&mut buf), Ok(n) if n > 0 && buf.starts_with(b"HTTP/1.1 200"))
}

#[test]
fn out_of_file_descriptors_the_server_accepts_again_as_soon_as_one_is_free() {
    let dir = tempfile::tempdir().expect("dir");
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr").port();
    let limit = format!("--nofile={FILE_LIMIT}:{FILE_LIMIT}");
    let child = Command::new("prlimit")
        .args([limit.as_str(), "--", env!("CARGO_BIN_EXE_parley"), "serve"])
        .env("PARLEY_DATABASE__URL", format!("sqlite://{}", dir.path().join("parley.db").display()))
        .env("PARLEY_HTTP__BIND", format!("127.0.0.1:{port}"))
        .env("PARLEY_ASSETS__DIR", dir.path().join("site"))
        .env("PARLEY_LIMITS__MAX_SOCKETS_PER_IP", "100000")
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prlimit (util-linux) runs parley");
    let _server = Server(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "parley did not start listening");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Hold answered connections until one is queued but not accepted: the process has no descriptor left.
    let mut held = Vec::new();
    let pending = loop {
        assert!(held.len() < FILE_LIMIT as usize, "every connection was accepted under a limit of {FILE_LIMIT}");
        match health_check(port, Duration::from_millis(300)) {
            Ok(tcp) => held.push(tcp),
            Err(tcp) => break tcp,
        }
    };
    assert!(held.len() > 10, "the server ran out of descriptors after {} connections", held.len());
    // Free some: the queued connection is accepted and answered at once.
    let freed = Instant::now();
    held.truncate(held.len() - 5);
    let mut pending = pending;
    assert!(answered(&mut pending, Duration::from_secs(5)), "the queued connection was never answered");
    let waited = freed.elapsed();
    assert!(waited < Duration::from_millis(500), "answered {waited:?} after descriptors were free again");
    // And the server goes on accepting.
    assert!(health_check(port, Duration::from_secs(5)).is_ok());
}
