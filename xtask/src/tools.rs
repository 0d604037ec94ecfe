//! Running and installing the outside tools the build needs: cargo, rustup's wasm32 target, the npm packages in
//! `xtask/package.json` (binaryen's wasm-opt, esbuild) and Debian's Chromium, nginx and systemd. Each installs only
//! when missing and only from the package registries this project may use.

use std::path::Path;
use std::process::Command;

use anyhow::Context;

/// Runs a command, failing with its name if it fails.
pub fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let shown = format!("{cmd:?}");
    let status = cmd.status().with_context(|| format!("cannot start {shown}"))?;
    anyhow::ensure!(status.success(), "{shown} failed ({status})");
    Ok(())
}

/// Runs cargo (the same cargo that runs xtask).
pub fn cargo(args: &[&str]) -> anyhow::Result<()> {
    cargo_with_env(args, &[])
}

/// Runs cargo with extra environment variables.
pub fn cargo_with_env(args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    run(Command::new(cargo).args(args).envs(env.iter().copied()))
}

/// Adds the wasm32 target through rustup when it is missing.
pub fn ensure_wasm_target() -> anyhow::Result<()> {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .context("rustup is needed to add the wasm32-unknown-unknown target")?;
    if String::from_utf8_lossy(&installed.stdout).lines().any(|l| l.trim() == "wasm32-unknown-unknown") {
        return Ok(());
    }
    println!("xtask: installing the wasm32-unknown-unknown target");
    run(Command::new("rustup").args(["target", "add", "wasm32-unknown-unknown"]))
}

/// Installs Debian's Node.js and npm when `npm` is missing (needs root or sudo).
pub fn ensure_node() -> anyhow::Result<()> {
    if Command::new("npm").arg("--version").output().is_ok_and(|o| o.status.success()) {
        return Ok(());
    }
    println!("xtask: installing Debian's nodejs and npm packages");
    apt_install(&["nodejs", "npm"])
        .context("could not install Node.js; install Debian's `nodejs` and `npm` and run again")
}

/// `npm ci` in `dir` unless its node_modules already matches its lockfile.
pub fn npm_ci(dir: &Path) -> anyhow::Result<()> {
    ensure_node()?;
    let stamp = dir.join("node_modules/.package-lock.json");
    let lock = dir.join("package-lock.json");
    let fresh = match (std::fs::read(&stamp), std::fs::read(&lock)) {
        (Ok(_), Ok(_)) => {
            let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
            modified(&stamp) >= modified(&lock)
        }
        _ => false,
    };
    if fresh {
        return Ok(());
    }
    println!("xtask: npm ci in {}", dir.display());
    let mut npm = Command::new("npm");
    npm.args(["ci", "--no-audit", "--no-fund"]).env("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1").current_dir(dir);
    // Native modules (better-sqlite3 in bench/node) build against the installed Node's headers: node-gyp would
    // otherwise download them, and only the package registries are reachable.
    if Path::new("/usr/include/node/node.h").exists() {
        npm.env("npm_config_nodedir", "/usr");
    }
    run(&mut npm)
}

/// Installs Debian's Chromium when `/usr/bin/chromium` is missing (needs root, as on CI).
pub fn ensure_chromium() -> anyhow::Result<()> {
    if Path::new("/usr/bin/chromium").exists() {
        return Ok(());
    }
    println!("xtask: installing Debian's chromium package for the browser tests");
    apt_install(&["chromium"]).context("could not install chromium; install Debian's `chromium` package and run again")
}

/// Installs Debian's PostgreSQL server when its programs are missing (needs root or sudo, as on CI). The tests
/// start their own private cluster from these programs; the package's own cluster is not used.
pub fn ensure_postgres() -> anyhow::Result<()> {
    if testpg::bin_dir().is_ok() {
        return Ok(());
    }
    println!("xtask: installing Debian's postgresql package for the PostgreSQL tests");
    apt_install(&["postgresql"])
        .context("could not install PostgreSQL; install Debian's `postgresql` package and run again")?;
    testpg::bin_dir().map(drop)
}

/// Installs Debian's nginx when `/usr/sbin/nginx` is missing (the deployment and multi-node tests run it with the repo's config).
pub fn ensure_nginx() -> anyhow::Result<()> {
    if Path::new("/usr/sbin/nginx").exists() {
        return Ok(());
    }
    println!("xtask: installing Debian's nginx package for the deployment tests");
    apt_install(&["nginx"]).context("could not install nginx; install Debian's `nginx` package and run again")
}

/// Installs Debian's systemd (for `systemd-analyze verify` of the unit in deploy/) when it is missing.
pub fn ensure_systemd_analyze() -> anyhow::Result<()> {
    if Path::new("/usr/bin/systemd-analyze").exists() {
        return Ok(());
    }
    println!("xtask: installing Debian's systemd package for systemd-analyze");
    apt_install(&["systemd"]).context("could not install systemd; install Debian's `systemd` package and run again")
}

/// Installs Debian's sqlite3 shell when it is missing (browser tests count rows in the demo server's database).
pub fn ensure_sqlite3() -> anyhow::Result<()> {
    if Path::new("/usr/bin/sqlite3").exists() {
        return Ok(());
    }
    println!("xtask: installing Debian's sqlite3 package for the browser tests");
    apt_install(&["sqlite3"]).context("could not install sqlite3; install Debian's `sqlite3` package and run again")
}

/// `apt-get update` then `apt-get install -y` (through sudo when not root).
fn apt_install(packages: &[&str]) -> anyhow::Result<()> {
    let sudo = !is_root();
    let apt = |args: &[&str]| {
        let mut cmd = if sudo { Command::new("sudo") } else { Command::new("apt-get") };
        if sudo {
            cmd.arg("apt-get");
        }
        cmd.args(args).env("DEBIAN_FRONTEND", "noninteractive");
        run(&mut cmd)
    };
    apt(&["update", "-q"])?;
    let mut install = vec!["install", "-y", "-q"];
    install.extend_from_slice(packages);
    apt(&install)
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0").unwrap_or(false)
}
