//! The HTTP accept loop: a thread of its own that takes connections off the kernel's listen queue as fast as they
//! arrive and hands them to the server's runtime ([`Acceptor`], an `axum::serve` listener), and the open-file limit
//! the server raises at start ([`raise_open_file_limit`]).
//!
//! Why a thread: in a reconnect storm the runtime's workers are busy with thousands of handshakes, and an accept
//! task on them is polled once per pass over its run queue; meanwhile the kernel queue (at most
//! `net.core.somaxconn`) overflows and every connection that does not fit waits for a SYN retransmit (a second or
//! more). The thread is woken by the listener alone, so accepted connections wait in memory, not in the kernel.
//! When the process is out of file descriptors (EMFILE), the connection stays queued and the thread retries after
//! [`RETRY_WHEN_FULL`] (axum's own loop sleeps a whole second), as closing sockets free descriptors.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// How long the accept thread waits before trying again when the process has no file descriptor left.
pub const RETRY_WHEN_FULL: Duration = Duration::from_millis(5);

/// How often the accept thread warns while the process keeps running out of file descriptors.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// An accepted connection on its way to the runtime.
type Accepted = (std::net::TcpStream, SocketAddr);

/// The server's end of the accept thread: `axum::serve` takes connections from it. Dropping it (the server
/// stopped accepting) ends the thread, which closes the listening socket: new connections are refused.
pub struct Acceptor {
    rx: mpsc::UnboundedReceiver<Accepted>,
    addr: SocketAddr,
}

impl Acceptor {
    /// Moves `listener` to a new accept thread.
    pub fn spawn(listener: TcpListener) -> io::Result<Self> {
        let addr = listener.local_addr()?;
        let listener = listener.into_std()?;
        let (tx, rx) = mpsc::unbounded_channel();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_io().enable_time().build()?;
        std::thread::Builder::new().name("http-accept".into()).spawn(move || {
            runtime.block_on(async move {
                match TcpListener::from_std(listener) {
                    Ok(listener) => accept_loop(listener, tx).await,
                    Err(e) => tracing::error!(error = %e, "cannot watch the listener; no connection is accepted"),
                }
            });
        })?;
        Ok(Self { rx, addr })
    }
}

impl axum::serve::Listener for Acceptor {
    type Io = TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (TcpStream, SocketAddr) {
        loop {
            let Some((stream, addr)) = self.rx.recv().await else {
                // The accept thread is gone (it logged why): nothing more will come.
                return std::future::pending().await;
            };
            match TcpStream::from_std(stream) {
                Ok(stream) => return (stream, addr),
                Err(e) => tracing::warn!(error = %e, "cannot register an accepted connection"),
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.addr)
    }
}

/// Accepts until the [`Acceptor`] is dropped.
async fn accept_loop(listener: TcpListener, tx: mpsc::UnboundedSender<Accepted>) {
    let mut warned: Option<Instant> = None;
    loop {
        let accepted = tokio::select! {
            biased;
            () = tx.closed() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            // Handed over unregistered: the runtime that serves it watches it.
            Ok((stream, addr)) => match stream.into_std() {
                Ok(stream) => {
                    if tx.send((stream, addr)).is_err() {
                        return;
                    }
                }
                Err(e) => tracing::debug!(error = %e, "cannot hand over an accepted connection"),
            },
            Err(e) if is_connection_error(&e) => {}
            Err(e) => {
                if warned.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
                    warned = Some(Instant::now());
                    tracing::warn!(error = %e, "cannot accept a connection (out of file descriptors?); retrying");
                }
                // The connection stays queued; sockets closing meanwhile make room for it.
                tokio::select! {
                    biased;
                    () = tx.closed() => return,
                    () = tokio::time::sleep(RETRY_WHEN_FULL) => {}
                }
            }
        }
    }
}

/// Errors of one connection (it went away before it was accepted), not of the listener.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
    )
}

/// Raises the soft limit on open files to the hard limit (every socket is a descriptor; distributions start
/// services with a soft limit of 1,024 and a much higher hard one). Returns the limit now in force.
pub fn raise_open_file_limit() -> io::Result<u64> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(io::Error::from)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).map_err(io::Error::from)?;
    }
    Ok(hard)
}
