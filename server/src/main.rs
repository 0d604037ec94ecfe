//! The `parley` binary: everything is in [`parley::cli::main`].

#[tokio::main]
async fn main() -> std::process::ExitCode {
    parley::cli::main().await
}
