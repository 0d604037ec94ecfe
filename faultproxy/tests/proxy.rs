//! The proxy's faults against a real echo server over real sockets: forwarding, latency (never early, order kept),
//! cut (EOF at both ends), reset (RST), and blackhole (held, then delivered in order).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use faultproxy::FaultProxy;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// An echo server; reports on `ended` how each connection it served ended (`true` for a clean EOF).
async fn echo_server() -> (SocketAddr, mpsc::UnboundedReceiver<bool>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, ended) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                loop {
                    match socket.read(&mut buf).await {
                        Ok(0) => break tx.send(true),
                        Ok(n) => {
                            if socket.write_all(&buf[..n]).await.is_err() {
                                break tx.send(false);
                            }
                        }
                        Err(_) => break tx.send(false),
                    }
                }
            });
        }
    });
    (addr, ended)
}

async fn setup() -> (FaultProxy, TcpStream, mpsc::UnboundedReceiver<bool>) {
    let (upstream, ended) = echo_server().await;
    let proxy = FaultProxy::start(SocketAddr::from(([127, 0, 0, 1], 0)), upstream).await.expect("proxy");
    let client = TcpStream::connect(proxy.local_addr()).await.expect("connect");
    (proxy, client, ended)
}

async fn echo(client: &mut TcpStream, text: &[u8]) -> Vec<u8> {
    client.write_all(text).await.expect("write");
    let mut back = vec![0u8; text.len()];
    tokio::time::timeout(Duration::from_secs(10), client.read_exact(&mut back))
        .await
        .expect("echo in time")
        .expect("read");
    back
}

async fn wait_until(what: &str, check: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn forwards_and_delays_by_the_latency_in_each_direction_keeping_order() {
    let (proxy, mut client, _) = setup().await;
    assert_eq!(echo(&mut client, b"hello").await, b"hello");
    proxy.set_latency(Duration::from_millis(50));
    let started = Instant::now();
    client.write_all(b"one ").await.expect("write");
    client.write_all(b"two ").await.expect("write");
    client.write_all(b"three").await.expect("write");
    let mut back = vec![0u8; 13];
    client.read_exact(&mut back).await.expect("read");
    assert_eq!(back, b"one two three");
    assert!(started.elapsed() >= Duration::from_millis(100), "delayed both ways: {:?}", started.elapsed());
    assert_eq!(proxy.open_connections(), 1);
}

#[tokio::test]
async fn a_cut_closes_both_ends() {
    let (proxy, mut client, mut ended) = setup().await;
    assert_eq!(echo(&mut client, b"x").await, b"x");
    assert_eq!(proxy.cut(), 1);
    let mut buf = [0u8; 1];
    assert_eq!(client.read(&mut buf).await.expect("clean close"), 0, "the client sees EOF");
    assert_eq!(ended.recv().await, Some(true), "the server sees EOF");
    wait_until("the connection to be gone", || proxy.open_connections() == 0).await;
}

#[tokio::test]
async fn a_reset_aborts_both_ends() {
    let (proxy, mut client, mut ended) = setup().await;
    assert_eq!(echo(&mut client, b"x").await, b"x");
    assert_eq!(proxy.reset(), 1);
    let mut buf = [0u8; 1];
    let err = client.read(&mut buf).await.expect_err("the client sees a reset, not EOF");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset);
    assert_eq!(ended.recv().await, Some(false), "the server sees a reset");
}

#[tokio::test]
async fn a_blackhole_holds_bytes_keeps_the_connection_and_delivers_in_order_after() {
    let (proxy, mut client, _) = setup().await;
    assert_eq!(echo(&mut client, b"x").await, b"x");
    proxy.set_blackhole(true);
    client.write_all(b"held ").await.expect("write");
    client.write_all(b"back").await.expect("write");
    wait_until("the bytes to be held", || proxy.held_bytes() == 9).await;
    let forwarded = proxy.forwarded_bytes();
    let mut buf = [0u8; 9];
    assert!(
        tokio::time::timeout(Duration::from_millis(100), client.read(&mut buf)).await.is_err(),
        "nothing comes back through a blackhole"
    );
    assert_eq!(proxy.forwarded_bytes(), forwarded);
    assert_eq!(proxy.open_connections(), 1, "the connection stays open");
    proxy.set_blackhole(false);
    client.read_exact(&mut buf).await.expect("read");
    assert_eq!(&buf, b"held back");
    assert_eq!(proxy.held_bytes(), 0);
}
