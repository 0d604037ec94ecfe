//! Runs the Messenger sandbox alone, for trying the chat page or driving it by hand:
//! `cargo run -p messenger-sandbox --example serve -- [PORT] [CALLBACK_URL]`.

use messenger_sandbox::{SandboxConfig, launch};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let port: u16 = args.next().map(|p| p.parse()).transpose()?.unwrap_or(0);
    let config = SandboxConfig { callback_url: args.next(), ..SandboxConfig::default() };
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    let sandbox = launch(config, listener).await?;
    println!("messenger sandbox at {}", sandbox.base_url());
    println!("chat page: {}", sandbox.m_me_link(Some("demo-ref")));
    tokio::signal::ctrl_c().await?;
    sandbox.shutdown().await;
    Ok(())
}
