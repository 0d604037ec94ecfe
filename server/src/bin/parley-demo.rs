//! `parley-demo`: the `parley` command line built with the `demo-sandbox` feature, so `parley-demo demo` brings
//! the Messenger sandbox along. Made by `cargo xtask build`; never the binary you deploy.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    parley::cli::main().await
}
