//! The `parley` binary: everything is in [`parley::cli::main`].

/// mimalloc instead of glibc's malloc: it gives memory freed by closed sockets back to the system, which glibc's
/// per-thread arenas kept (README, Deployment).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    parley::cli::main().await
}
