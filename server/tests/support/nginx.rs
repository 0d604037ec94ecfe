//! A private nginx for tests, running the repo's `deploy/nginx/parley.conf` with only its addresses changed (the
//! upstream lists the test's nodes, it listens on a loopback port instead of 80), plus the child-process guard the
//! process-level tests share. Used by `server/tests/ops.rs` (one node) and the cluster harness (three).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// A file of the repository, by its path from the workspace root.
pub fn repo_file(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

/// A child process killed (and reaped) when dropped, with the file it logs to.
pub struct Running {
    pub child: Child,
    pub log: PathBuf,
}

impl Running {
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Fails, naming the Debian package, when `program` is missing.
pub fn require(program: &str, package: &str) -> PathBuf {
    let found =
        ["/usr/sbin", "/usr/bin", "/sbin", "/bin"].iter().map(|d| Path::new(d).join(program)).find(|p| p.exists());
    found.unwrap_or_else(|| {
        panic!("{program} is missing: install Debian's `{package}` package (`cargo xtask test` does it)")
    })
}

/// The repo's nginx config with only its addresses changed: the upstream lists `nodes`, and it listens on
/// `listen` (loopback) instead of port 80.
pub fn site_config(nodes: &[SocketAddr], listen: u16) -> String {
    let conf = std::fs::read_to_string(repo_file("deploy/nginx/parley.conf")).expect("deploy/nginx/parley.conf");
    let mut out = String::new();
    let mut servers_written = false;
    for line in conf.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("server ") && trimmed.contains("max_fails") {
            if !servers_written {
                for node in nodes {
                    out.push_str(&format!("    server {node} max_fails=3 fail_timeout=10s;\n"));
                }
                servers_written = true;
            }
        } else if trimmed == "listen 80;" {
            out.push_str(&format!("    listen 127.0.0.1:{listen};\n"));
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    assert!(servers_written, "the config has no upstream server lines to point at the test nodes:\n{conf}");
    out
}

/// A private nginx (its own prefix, pid, logs and temp folders) in the foreground, one process, serving
/// `site_conf` (from [`site_config`]). `nginx -t` must accept it first.
pub fn start(dir: &Path, site_conf: &str) -> Running {
    let nginx = require("nginx", "nginx");
    std::fs::create_dir_all(dir.join("logs")).expect("nginx dirs");
    std::fs::write(dir.join("parley.conf"), site_conf).expect("site config");
    let d = dir.display();
    // worker_connections: two per proxied socket (client side and node side), plus pooled keep-alives.
    let main = format!(
        "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/logs/error.log \
         info;\nevents {{ worker_connections 1024; }}\nhttp {{\n  access_log {d}/logs/access.log;\n  \
         client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n  \
         uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n  include {d}/parley.conf;\n}}\n"
    );
    std::fs::write(dir.join("nginx.conf"), main).expect("nginx.conf");
    let check = Command::new(&nginx).args(["-t", "-p"]).arg(dir).arg("-c").arg(dir.join("nginx.conf")).output();
    let check = check.expect("nginx -t runs");
    assert!(check.status.success(), "nginx refuses the config: {}", String::from_utf8_lossy(&check.stderr));
    let log = dir.join("logs/stderr.log");
    // Under `setpriv --pdeathsig KILL` (util-linux): it dies with the thread that started it even when no Drop runs.
    let child = Command::new("setpriv")
        .args(["--pdeathsig", "KILL", "--"])
        .arg(&nginx)
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(dir.join("nginx.conf"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("nginx starts");
    Running { child, log: dir.join("logs/error.log") }
}
