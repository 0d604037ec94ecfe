//! What the harness reads from and asks of Linux: CPU time and resident memory of a process (`/proc/<pid>/stat`,
//! `/proc/<pid>/status`), listen-queue overflows (`/proc/net/netstat`, TcpExt ListenOverflows), pinning to a core
//! (`sched_setaffinity`), the open-file limit (`RLIMIT_NOFILE`), and the source addresses 127.0.0.2… that spread
//! the generator's sockets so its ephemeral ports are never the limit.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use anyhow::Context;

/// Clock ticks per second of `/proc/<pid>/stat` times (USER_HZ; 100 on every Linux this runs on).
const TICKS: f64 = 100.0;

/// CPU seconds (user + system) a process has used so far.
pub fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).with_context(|| format!("no process {pid}"))?;
    // The command name may hold spaces; the fields after its closing parenthesis are fixed.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).context("odd /proc stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of the line (utime, stime) are 12 and 13 after the state field.
    let tick = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).context("odd /proc stat");
    Ok((tick(11)? + tick(12)?) / TICKS)
}

/// Resident memory of a process, in bytes (`VmRSS`).
pub fn rss_bytes(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).with_context(|| format!("no process {pid}"))?;
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .context("no VmRSS")?;
    Ok(kb * 1024)
}

/// Open file descriptors of a process.
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

/// TcpExt ListenOverflows and ListenDrops so far (whole machine).
pub fn listen_overflows() -> anyhow::Result<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/net/netstat").context("/proc/net/netstat")?;
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("TcpExt:")).collect();
    let (names, values) = match lines.as_slice() {
        [names, values, ..] => (*names, *values),
        _ => anyhow::bail!("no TcpExt in /proc/net/netstat"),
    };
    let pick = |name: &str| {
        names
            .split_whitespace()
            .position(|n| n == name)
            .and_then(|i| values.split_whitespace().nth(i))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Ok((pick("ListenOverflows"), pick("ListenDrops")))
}

/// Pins the calling process (all its future threads) to one core; false when there is no such core.
pub fn pin_self(core: usize) -> bool {
    use nix::sched::{CpuSet, sched_setaffinity};
    use nix::unistd::Pid;
    let mut set = CpuSet::new();
    if core >= CpuSet::count() || set.set(core).is_err() {
        return false;
    }
    sched_setaffinity(Pid::from_raw(0), &set).is_ok()
}

/// Cores this machine has (online), whatever this process is pinned to.
pub fn cores() -> usize {
    std::fs::read_to_string("/proc/cpuinfo")
        .map(|c| c.lines().filter(|l| l.starts_with("processor")).count())
        .ok()
        .filter(|n| *n > 0)
        .unwrap_or(1)
}

/// Raises the open-file limit as far as the kernel lets this process (children inherit it); the new soft limit.
pub fn raise_nofile(wanted: u64) -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else { return 1024 };
    // Root may raise the hard limit too (up to fs.nr_open); others stay under theirs.
    if wanted > hard && setrlimit(Resource::RLIMIT_NOFILE, wanted, wanted).is_ok() {
        return wanted;
    }
    let target = wanted.min(hard).max(soft);
    if setrlimit(Resource::RLIMIT_NOFILE, target, hard).is_ok() { target } else { soft }
}

/// The `i`th source address: 127.0.0.2 … 127.0.0.254, then 127.0.1.1 …, so no one address carries many sockets.
pub fn source_addr(i: usize) -> IpAddr {
    const PER_BLOCK: usize = 253;
    let block = (i / PER_BLOCK) % 200;
    let host = (i % PER_BLOCK) + if block == 0 { 2 } else { 1 };
    IpAddr::V4(Ipv4Addr::new(127, 0, block as u8, host as u8))
}

/// CPU use of a process over a window: start it, then read the share of one core used since.
pub struct CpuMeter {
    pid: u32,
    cpu0: f64,
    t0: Instant,
}

impl CpuMeter {
    pub fn start(pid: u32) -> Self {
        Self { pid, cpu0: cpu_seconds(pid).unwrap_or(0.0), t0: Instant::now() }
    }

    /// Percent of one core since `start`.
    pub fn percent(&self) -> f64 {
        let wall = self.t0.elapsed().as_secs_f64().max(1e-6);
        let used = cpu_seconds(self.pid).unwrap_or(self.cpu0) - self.cpu0;
        100.0 * used / wall
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_addresses_are_loopback_and_never_127_0_0_1() {
        let addrs: Vec<IpAddr> = (0..600).map(source_addr).collect();
        assert!(addrs.iter().all(|a| a.is_loopback()));
        assert!(!addrs.contains(&IpAddr::V4(Ipv4Addr::LOCALHOST)));
        assert_eq!(addrs[0], IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)));
        let distinct: std::collections::HashSet<_> = addrs.iter().collect();
        assert_eq!(distinct.len(), 600);
    }

    #[test]
    fn this_process_has_cpu_time_and_memory() {
        let pid = std::process::id();
        assert!(rss_bytes(pid).expect("rss") > 0);
        assert!(cpu_seconds(pid).expect("cpu") >= 0.0);
        assert!(listen_overflows().is_ok());
    }
}
