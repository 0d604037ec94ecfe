//! `cluster`: the demo on three nodes, for the browser suite (`cargo xtask test` runs it) and by hand. It starts
//! the cluster harness of the tests (`server/tests/support/cluster.rs`): a fresh database on PostgreSQL (the test
//! run's cluster named by `PARLEY_TEST_POSTGRES_URL`, else a private one), three nodes sharing it and a real nginx
//! in front of them running `deploy/nginx/parley.conf`. Node A runs `parley-demo demo` (the demo site and agent,
//! the host page on `http://localhost:<host-port>` and the Messenger sandbox); nodes B and C run `parley-demo serve`
//! wired to that same sandbox. Every node's public URL is nginx's, so the host page, the chat frame, its
//! WebSocket, the console and the sandbox's webhooks all go through nginx to any node.
//!
//! ```sh
//! cargo run -p server --example cluster -- --demo-bin target/debug/parley-demo --site-dir target/site
//! ```
//!
//! Once every node is ready it prints one JSON line (`chat_origin`, `host_origin`, `database_url`, `nodes`), then
//! runs until its stdin closes (Ctrl-D, or the parent ends), and stops everything it started (`--logs DIR` keeps
//! the nodes' and nginx's logs).

#[path = "../tests/support/db_check.rs"]
mod db_check;
#[path = "../tests/support/cluster.rs"]
mod harness;
#[path = "../tests/support/nginx.rs"]
mod nginx;
#[path = "../tests/support/process.rs"]
mod process;

use std::path::PathBuf;

use clap::Parser;
use harness::{Cluster, Database, NodeSpec, Options, free_port, messenger_env};

#[derive(Parser, Debug)]
struct Args {
    /// The `parley-demo` binary (built by `cargo xtask build`).
    #[arg(long)]
    demo_bin: PathBuf,
    /// The built front-end (`target/site`).
    #[arg(long)]
    site_dir: PathBuf,
    /// Port of the demo host page (0: a free one).
    #[arg(long, default_value_t = 0)]
    host_port: u16,
    /// Port nginx listens on, the chat's public URL (0: a free one).
    #[arg(long, default_value_t = 0)]
    nginx_port: u16,
    /// Port of the Messenger sandbox (0: a free one).
    #[arg(long, default_value_t = 0)]
    messenger_port: u16,
    /// Where to copy the nodes' and nginx's logs when stopping (else they go with the cluster's temp folder).
    #[arg(long)]
    logs: Option<PathBuf>,
    /// The demo agent's password.
    #[arg(long, env = "PARLEY_DEMO_PASSWORD", default_value = "parley-demo", hide_env_values = true)]
    password: String,
}

fn port_or_free(port: u16) -> u16 {
    if port == 0 { free_port() } else { port }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let host_port = port_or_free(args.host_port);
    let nginx_port = port_or_free(args.nginx_port);
    let messenger = format!("127.0.0.1:{}", port_or_free(args.messenger_port));
    let sandbox = messenger_sandbox::SandboxConfig::default();
    let sandbox_url = format!("http://{messenger}");

    let demo = NodeSpec {
        program: args.demo_bin.clone(),
        args: ["demo", "--host-bind", &format!("127.0.0.1:{host_port}"), "--messenger-bind", &messenger]
            .map(String::from)
            .to_vec(),
        env: vec![("PARLEY_DEMO_PASSWORD".into(), args.password.clone())],
    };
    let mut serve = NodeSpec::serve(&args.demo_bin);
    serve.env = messenger_env(&sandbox, &sandbox_url, "demo");
    // As the demo does for itself: the sandbox serves customers' attachments on its own host and port.
    serve.env.push((
        "PARLEY_MESSENGER__ATTACHMENT_HOSTS".into(),
        format!("[\"*.fbcdn.net\", \"*.fbsbx.com\", \"cdn.fbsbx.com\", \"{sandbox_url}\"]"),
    ));
    let mut options =
        Options { nodes: vec![demo, serve.clone(), serve], env: Vec::new(), nginx_port: Some(nginx_port) }
            .env("PARLEY_ASSETS__DIR", args.site_dir.display().to_string());
    if let Ok(log) = std::env::var("RUST_LOG") {
        options = options.env("RUST_LOG", log);
    }
    let cluster = Cluster::start(Database::shared().await, options).await;
    let ready = serde_json::json!({
        "chat_origin": cluster.public_url(),
        "host_origin": format!("http://localhost:{host_port}"),
        "messenger_origin": sandbox_url,
        "database_url": cluster.database.url,
        "nodes": cluster.nodes.iter().map(|n| n.url()).collect::<Vec<_>>(),
        "logs": cluster.dir().display().to_string(),
    });
    println!("{ready}");
    eprintln!("cluster: ready; close stdin (Ctrl-D) to stop");
    tokio::task::spawn_blocking(|| std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink())).await??;
    if let Some(logs) = &args.logs {
        keep_logs(&cluster, logs)?;
    }
    drop(cluster);
    Ok(())
}

/// Copies every node's log and nginx's error log into `to`.
fn keep_logs(cluster: &Cluster, to: &std::path::Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(cluster.dir())? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "log")
            && let Some(name) = path.file_name()
        {
            std::fs::copy(&path, to.join(name))?;
        }
    }
    std::fs::write(to.join("nginx-error.log"), cluster.nginx_log())?;
    Ok(())
}
