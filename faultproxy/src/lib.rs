//! A TCP proxy that injects network faults between a client and a server, for tests: the Rust fault tests use it
//! as a library, browser tests through its command line (`faultproxy --listen ADDR --upstream ADDR`, commands on
//! stdin).
//!
//! Faults, all switchable at any time:
//! - **latency**: every chunk is delivered that long after it was read, in each direction (order is kept);
//! - **cut**: every open connection is closed at both ends (FIN);
//! - **reset**: every open connection is aborted at both ends (RST, through `SO_LINGER` 0);
//! - **blackhole**: nothing is forwarded (in either direction, on open and new connections) while it is on, but
//!   connections stay open, as when a network path silently drops packets; bytes read meanwhile are held and
//!   delivered in order when it is turned off, as TCP would retransmit them.
//!
//! Counters (`held_bytes`, `forwarded_bytes`, `open_connections`) let a test wait for a condition ("the frame is
//! stuck in the blackhole") instead of sleeping.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// How an open connection is to end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kill {
    No,
    Cut,
    Reset,
}

struct Shared {
    upstream: SocketAddr,
    latency_us: AtomicU64,
    blackhole: watch::Sender<bool>,
    connections: Mutex<HashMap<u64, watch::Sender<Kill>>>,
    next_id: AtomicU64,
    accepted: AtomicU64,
    held: AtomicU64,
    forwarded: AtomicU64,
}

impl Shared {
    fn connections(&self) -> std::sync::MutexGuard<'_, HashMap<u64, watch::Sender<Kill>>> {
        // A poisoned map is still a valid map: the proxy never panics while holding it.
        self.connections.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn kill_all(&self, kill: Kill) -> usize {
        let connections = self.connections();
        for control in connections.values() {
            let _ = control.send(kill);
        }
        connections.len()
    }
}

/// A running proxy; stops accepting (and drops every connection) when dropped.
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

impl FaultProxy {
    /// Listens on `listen` (port 0 picks one) and forwards every connection to `upstream`.
    pub async fn start(listen: SocketAddr, upstream: SocketAddr) -> io::Result<Self> {
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            upstream,
            latency_us: AtomicU64::new(0),
            blackhole: watch::Sender::new(false),
            connections: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
            held: AtomicU64::new(0),
            forwarded: AtomicU64::new(0),
        });
        let accept = tokio::spawn(accept_loop(listener, Arc::clone(&shared)));
        Ok(Self { addr, shared, accept })
    }

    /// The address clients connect to.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// One-way delay added to every chunk, in both directions (0 turns it off).
    pub fn set_latency(&self, latency: Duration) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.shared.latency_us.store(us, Ordering::SeqCst);
    }

    /// Stops (or resumes) forwarding on every connection, keeping them open.
    pub fn set_blackhole(&self, on: bool) {
        self.shared.blackhole.send_replace(on);
    }

    /// Closes every open connection at both ends; returns how many.
    pub fn cut(&self) -> usize {
        self.shared.kill_all(Kill::Cut)
    }

    /// Resets every open connection at both ends (RST); returns how many.
    pub fn reset(&self) -> usize {
        self.shared.kill_all(Kill::Reset)
    }

    /// Connections open now.
    pub fn open_connections(&self) -> usize {
        self.shared.connections().len()
    }

    /// Connections accepted since the start.
    pub fn accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// Bytes read from one side and not yet written to the other (delayed or blackholed).
    pub fn held_bytes(&self) -> u64 {
        self.shared.held.load(Ordering::SeqCst)
    }

    /// Bytes delivered since the start, both directions.
    pub fn forwarded_bytes(&self) -> u64 {
        self.shared.forwarded.load(Ordering::SeqCst)
    }

    /// A one-line summary of the counters, as the command line prints it.
    pub fn status(&self) -> String {
        format!(
            "connections={} accepted={} held={} forwarded={}",
            self.open_connections(),
            self.accepted(),
            self.held_bytes(),
            self.forwarded_bytes()
        )
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.shared.kill_all(Kill::Cut);
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let client = match listener.accept().await {
            Ok((client, _)) => client,
            // E.g. out of file descriptors: keep serving the connections that exist and try again.
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        shared.accepted.fetch_add(1, Ordering::SeqCst);
        let id = shared.next_id.fetch_add(1, Ordering::SeqCst);
        let (control, kill) = watch::channel(Kill::No);
        shared.connections().insert(id, control);
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            connection(&shared, client, kill).await;
            shared.connections().remove(&id);
        });
    }
}

async fn connection(shared: &Shared, client: TcpStream, mut kill: watch::Receiver<Kill>) {
    let Ok(upstream) = TcpStream::connect(shared.upstream).await else { return };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let (mut client_read, mut client_write) = client.into_split();
    let (mut upstream_read, mut upstream_write) = upstream.into_split();
    let ended = tokio::select! {
        _ = async {
            tokio::try_join!(
                pump(shared, &mut client_read, &mut upstream_write),
                pump(shared, &mut upstream_read, &mut client_write),
            )
        } => Kill::Cut,
        kill = kill.wait_for(|k| *k != Kill::No) => kill.map(|k| *k).unwrap_or(Kill::Cut),
    };
    for (read, write) in [(client_read, client_write), (upstream_read, upstream_write)] {
        let Ok(mut stream) = read.reunite(write) else { continue };
        match ended {
            Kill::Reset => {
                let _ = stream.set_zero_linger();
            }
            Kill::Cut | Kill::No => {
                let _ = stream.shutdown().await;
            }
        }
        drop(stream);
    }
}

/// Bytes read and not yet written; counted in [`Shared::held`] for as long as they exist.
struct Chunk<'a> {
    data: Vec<u8>,
    held: &'a AtomicU64,
}

impl<'a> Chunk<'a> {
    fn new(data: &[u8], held: &'a AtomicU64) -> Self {
        held.fetch_add(data.len() as u64, Ordering::SeqCst);
        Self { data: data.to_vec(), held }
    }
}

impl Drop for Chunk<'_> {
    fn drop(&mut self) {
        self.held.fetch_sub(self.data.len() as u64, Ordering::SeqCst);
    }
}

/// Forwards one direction until its end of stream (passed on as a half-close) or an error. Reading and writing
/// run concurrently through a queue, so latency delays every chunk without limiting throughput.
async fn pump(shared: &Shared, from: &mut OwnedReadHalf, to: &mut OwnedWriteHalf) -> io::Result<()> {
    let (queue, mut chunks) = mpsc::unbounded_channel::<(Instant, Chunk<'_>)>();
    let reading = async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = from.read(&mut buf).await?;
            // An empty chunk marks the end of the stream.
            if queue.send((Instant::now(), Chunk::new(&buf[..n], &shared.held))).is_err() || n == 0 {
                return Ok::<_, io::Error>(());
            }
        }
    };
    let writing = async {
        let mut blackhole = shared.blackhole.subscribe();
        while let Some((read_at, chunk)) = chunks.recv().await {
            let latency = Duration::from_micros(shared.latency_us.load(Ordering::SeqCst));
            tokio::time::sleep_until(read_at + latency).await;
            if blackhole.wait_for(|on| !*on).await.is_err() {
                return Ok(());
            }
            if chunk.data.is_empty() {
                return to.shutdown().await;
            }
            to.write_all(&chunk.data).await?;
            shared.forwarded.fetch_add(chunk.data.len() as u64, Ordering::SeqCst);
        }
        Ok(())
    };
    tokio::try_join!(reading, writing).map(|_| ())
}
