//! `faultproxy --listen ADDR --upstream ADDR`: the fault proxy as a process, for browser tests. Prints
//! `listening on ADDR` once it accepts connections, then reads one command per line on stdin and answers each
//! with one line (`ok …` or `error …`); exits when stdin closes.
//!
//! Commands: `latency MS`, `blackhole on|off`, `cut`, `reset`, `status`.

use std::net::SocketAddr;
use std::time::Duration;

use faultproxy::FaultProxy;
use tokio::io::{AsyncBufReadExt, BufReader};

const USAGE: &str = "usage: faultproxy --listen ADDR --upstream ADDR";

fn arg(args: &[String], name: &str) -> Result<SocketAddr, String> {
    let value = args
        .iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .ok_or_else(|| format!("missing {name}\n{USAGE}"))?;
    value.parse().map_err(|e| format!("{name} {value}: {e}"))
}

/// Applies one command line; returns the answer line.
fn command(proxy: &FaultProxy, line: &str) -> String {
    let words: Vec<&str> = line.split_whitespace().collect();
    match words.as_slice() {
        ["latency", ms] => match ms.parse::<u64>() {
            Ok(ms) => {
                proxy.set_latency(Duration::from_millis(ms));
                format!("ok latency {ms}")
            }
            Err(e) => format!("error latency {ms}: {e}"),
        },
        ["blackhole", "on"] => {
            proxy.set_blackhole(true);
            "ok blackhole on".into()
        }
        ["blackhole", "off"] => {
            proxy.set_blackhole(false);
            "ok blackhole off".into()
        }
        ["cut"] => format!("ok cut {}", proxy.cut()),
        ["reset"] => format!("ok reset {}", proxy.reset()),
        ["status"] => format!("ok {}", proxy.status()),
        _ => format!("error unknown command {line:?} (latency MS | blackhole on|off | cut | reset | status)"),
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("faultproxy: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let listen = arg(&args, "--listen")?;
    let upstream = arg(&args, "--upstream")?;
    let proxy = FaultProxy::start(listen, upstream).await.map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    println!("listening on {}", proxy.local_addr());
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if !line.trim().is_empty() {
            println!("{}", command(&proxy, line.trim()));
        }
    }
    Ok(())
}
