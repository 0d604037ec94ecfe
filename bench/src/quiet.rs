//! Keeping one target's aftermath out of the next one's figures. Owns what the harness reads about the whole
//! machine — `/proc/meminfo` Dirty and Writeback, `/proc/diskstats` of the disk holding the temporary folders
//! (busy share, flushes, discards), `/proc/pressure/io`, `/proc/loadavg`, `/proc/stat`, `/proc/net/sockstat`
//! (TIME_WAIT) and this process's descendants — and the settle step every target's start goes through: the
//! previous target's processes gone (waited for, not slept on), `syncfs` of the temporary folders' filesystem,
//! then Dirty + Writeback and the disk's busy share small over consecutive windows (at most [`Limits::timeout`]).
//! Each settle is logged for the report, and a [`Sampler`] records the same state through each scenario.
//!
//! TIME_WAIT is recorded, not waited for: every target listens on a fresh port and the generator's sockets come
//! from 127.0.0.2… (see `sys::source_addr`), so no new connection can meet an old one's four-tuple.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const MIB_KB: f64 = 1024.0;

/// Dirty and Writeback of `/proc/meminfo`, kB.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Mem {
    pub dirty_kb: u64,
    pub writeback_kb: u64,
}

pub fn parse_meminfo(text: &str) -> Option<Mem> {
    let field = |name: &str| {
        text.lines().find_map(|l| {
            let rest = l.strip_prefix(name)?.strip_prefix(':')?;
            rest.split_whitespace().next()?.parse::<u64>().ok()
        })
    };
    Some(Mem { dirty_kb: field("Dirty")?, writeback_kb: field("Writeback")? })
}

/// The TCP line of `/proc/net/sockstat`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sockstat {
    pub inuse: u64,
    pub orphan: u64,
    pub time_wait: u64,
}

pub fn parse_sockstat(text: &str) -> Option<Sockstat> {
    let line = text.lines().find_map(|l| l.strip_prefix("TCP:"))?;
    let words: Vec<&str> = line.split_whitespace().collect();
    let pick = |name: &str| {
        words.iter().position(|w| *w == name).and_then(|i| words.get(i + 1)).and_then(|v| v.parse::<u64>().ok())
    };
    Some(Sockstat { inuse: pick("inuse")?, orphan: pick("orphan")?, time_wait: pick("tw")? })
}

/// The 1, 5 and 15 minute load averages of `/proc/loadavg`.
pub fn parse_loadavg(text: &str) -> Option<[f64; 3]> {
    let mut it = text.split_whitespace().map(|w| w.parse::<f64>().ok());
    Some([it.next()??, it.next()??, it.next()??])
}

/// Microseconds some task (`some`) and every task (`full`) stalled on I/O so far (`/proc/pressure/io`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pressure {
    pub some_us: u64,
    pub full_us: u64,
}

pub fn parse_pressure(text: &str) -> Option<Pressure> {
    let total = |prefix: &str| {
        text.lines().find_map(|l| {
            let rest = l.strip_prefix(prefix)?;
            rest.split_whitespace().find_map(|kv| kv.strip_prefix("total="))?.parse::<u64>().ok()
        })
    };
    Some(Pressure { some_us: total("some ")?, full_us: total("full ").unwrap_or(0) })
}

/// Counters of one disk from `/proc/diskstats` (since boot).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Disk {
    pub sectors_written: u64,
    pub in_flight: u64,
    /// Milliseconds the disk had I/O in progress.
    pub busy_ms: u64,
    pub discards: u64,
    pub sectors_discarded: u64,
    pub flushes: u64,
}

/// The line of the disk `dev` (major, minor) in `/proc/diskstats`; `None` when it has no line.
pub fn parse_diskstats(text: &str, dev: (u64, u64)) -> Option<Disk> {
    text.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        let num = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok());
        if (num(0)?, num(1)?) != dev {
            return None;
        }
        // After major, minor and name: reads (4), writes (4), in flight, busy ms, weighted ms, then (Linux 4.18+)
        // discards (4) and (5.5+) flushes (2).
        Some(Disk {
            sectors_written: num(9)?,
            in_flight: num(11)?,
            busy_ms: num(12)?,
            discards: num(14).unwrap_or(0),
            sectors_discarded: num(16).unwrap_or(0),
            flushes: num(18).unwrap_or(0),
        })
    })
}

/// Busy and total CPU ticks of all cores (`cpu` line of `/proc/stat`; idle and iowait are not busy).
pub fn parse_cpu(text: &str) -> Option<(u64, u64)> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line.split_whitespace().skip(1).filter_map(|w| w.parse().ok()).collect();
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3)? + v.get(4).unwrap_or(&0);
    Some((total.saturating_sub(idle), total))
}

/// The parent pid in a `/proc/<pid>/stat` line, unless the process is a zombie (exited, costs nothing).
pub fn parse_live_ppid(stat: &str) -> Option<u32> {
    let rest = stat.rsplit_once(')')?.1;
    let mut f = rest.split_whitespace();
    let state = f.next()?;
    if state == "Z" || state == "X" {
        return None;
    }
    f.next()?.parse().ok()
}

/// Every pid below `root` in a (pid, parent) list.
pub fn descendants(pairs: &[(u32, u32)], root: u32) -> Vec<u32> {
    let mut found = vec![root];
    let mut i = 0;
    while let Some(&parent) = found.get(i) {
        for &(pid, ppid) in pairs {
            if ppid == parent && !found.contains(&pid) {
                found.push(pid);
            }
        }
        i += 1;
    }
    found.remove(0);
    found
}

fn live_descendants() -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    let pairs: Vec<(u32, u32)> = dir
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            Some((pid, parse_live_ppid(&stat)?))
        })
        .collect();
    descendants(&pairs, std::process::id())
}

/// The folder targets keep their files in, and its disk (major, minor), when it has a line in `/proc/diskstats`.
fn temp_disk() -> (PathBuf, Option<(u64, u64)>) {
    use std::os::unix::fs::MetadataExt;
    let dir = std::env::temp_dir();
    let dev = std::fs::metadata(&dir).ok().map(|m| major_minor(m.dev()));
    (dir, dev)
}

/// Major and minor of a Linux `dev_t` (glibc's `gnu_dev_major`/`gnu_dev_minor`).
pub fn major_minor(dev: u64) -> (u64, u64) {
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & 0xffff_f000);
    let minor = (dev & 0xff) | ((dev >> 12) & 0xffff_ff00);
    (major, minor)
}

/// Everything read at one instant.
#[derive(Clone, Copy, Debug)]
pub struct Snapshot {
    pub at: Instant,
    pub mem: Option<Mem>,
    pub disk: Option<Disk>,
    pub pressure: Option<Pressure>,
    pub load: Option<[f64; 3]>,
    pub cpu: Option<(u64, u64)>,
    pub sockets: Option<Sockstat>,
}

impl Snapshot {
    pub fn take(dev: Option<(u64, u64)>) -> Self {
        let read = |p: &str| std::fs::read_to_string(p).ok();
        Self {
            at: Instant::now(),
            mem: read("/proc/meminfo").as_deref().and_then(parse_meminfo),
            disk: dev.and_then(|d| read("/proc/diskstats").as_deref().and_then(|t| parse_diskstats(t, d))),
            pressure: read("/proc/pressure/io").as_deref().and_then(parse_pressure),
            load: read("/proc/loadavg").as_deref().and_then(parse_loadavg),
            cpu: read("/proc/stat").as_deref().and_then(parse_cpu),
            sockets: read("/proc/net/sockstat").as_deref().and_then(parse_sockstat),
        }
    }
}

/// The machine between two snapshots: levels at the end, shares and amounts over the window.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Window {
    pub seconds: f64,
    pub dirty_kb: u64,
    pub writeback_kb: u64,
    /// Share of the window the disk had I/O in progress (0–1).
    pub disk_busy: Option<f64>,
    /// Share of the window some task stalled on I/O (0–1).
    pub io_some: Option<f64>,
    /// Share of all cores busy (0–1).
    pub cpu_busy: Option<f64>,
    pub load1: f64,
    pub written_mib: f64,
    pub discarded_mib: f64,
    pub flushes: u64,
    pub time_wait: u64,
    /// Processes below the generator still running (at the end).
    pub descendants: usize,
    /// The generator's own tasks still alive (a previous target's visitors closing their sockets), at the end.
    pub tasks: usize,
    /// Median of a few one-page write + `fdatasync` at the end of the window, ms (settle only: what the next
    /// target's commits meet).
    pub fsync_ms: Option<f64>,
}

impl Window {
    pub fn between(a: &Snapshot, b: &Snapshot, descendants: usize) -> Self {
        let seconds = b.at.duration_since(a.at).as_secs_f64().max(1e-3);
        let mem = b.mem.unwrap_or_default();
        let disk = a.disk.zip(b.disk);
        let sectors_mib = |s: u64| s as f64 * 512.0 / 1048576.0;
        Self {
            seconds,
            dirty_kb: mem.dirty_kb,
            writeback_kb: mem.writeback_kb,
            disk_busy: disk.map(|(a, b)| (b.busy_ms.saturating_sub(a.busy_ms) as f64 / 1000.0 / seconds).min(1.0)),
            io_some: a
                .pressure
                .zip(b.pressure)
                .map(|(a, b)| (b.some_us.saturating_sub(a.some_us) as f64 / 1e6 / seconds).min(1.0)),
            cpu_busy: a
                .cpu
                .zip(b.cpu)
                .map(|((ab, at), (bb, bt))| bb.saturating_sub(ab) as f64 / bt.saturating_sub(at).max(1) as f64),
            load1: b.load.map_or(0.0, |l| l[0]),
            written_mib: disk.map_or(0.0, |(a, b)| sectors_mib(b.sectors_written.saturating_sub(a.sectors_written))),
            discarded_mib: disk
                .map_or(0.0, |(a, b)| sectors_mib(b.sectors_discarded.saturating_sub(a.sectors_discarded))),
            flushes: disk.map_or(0, |(a, b)| b.flushes.saturating_sub(a.flushes)),
            time_wait: b.sockets.map_or(0, |s| s.time_wait),
            descendants,
            tasks: 0,
            fsync_ms: None,
        }
    }

    /// Dirty + Writeback, MiB.
    pub fn unwritten_mib(&self) -> f64 {
        (self.dirty_kb + self.writeback_kb) as f64 / MIB_KB
    }

    /// One line: load, page cache not yet on disk, disk, I/O stall, TIME_WAIT.
    pub fn describe(&self) -> String {
        let pct = |v: Option<f64>| v.map_or("–".to_string(), |v| format!("{:.0} %", 100.0 * v));
        let mut fsync = self.fsync_ms.map_or(String::new(), |ms| format!(", fsync {ms:.2} ms"));
        if self.tasks > 0 {
            let _ = write!(fsync, ", generator tasks {}", self.tasks);
        }
        format!(
            "load {:.2}, Dirty {:.1} MiB, Writeback {:.1} MiB, disk busy {}, I/O stall {}, CPU {}, TIME_WAIT \
             {}{fsync}",
            self.load1,
            self.dirty_kb as f64 / MIB_KB,
            self.writeback_kb as f64 / MIB_KB,
            pct(self.disk_busy),
            pct(self.io_some),
            pct(self.cpu_busy),
            self.time_wait
        )
    }
}

/// When the machine counts as settled.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Limits {
    /// Dirty + Writeback at most this, kB.
    pub max_unwritten_kb: u64,
    /// The disk busy at most this share of a window.
    pub max_disk_busy: f64,
    /// A one-page write + `fdatasync` in the temporary folder at most this, ms (median of [`PROBES`]).
    pub max_fsync_ms: f64,
    /// Length of one window.
    pub window: Duration,
    /// Consecutive quiet windows needed (a lull between two write-back bursts is not quiet).
    pub quiet_windows: usize,
    /// Give up waiting (the run goes on, the report says it was not settled).
    pub timeout: Duration,
    /// `false`: only record the state (one window), neither sync nor wait (`--no-settle`, the harness as it was).
    pub wait: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_unwritten_kb: 16 * 1024,
            max_disk_busy: 0.10,
            max_fsync_ms: 2.0,
            window: Duration::from_millis(500),
            quiet_windows: 2,
            timeout: Duration::from_secs(30),
            wait: true,
        }
    }
}

/// What a window still shows that the next target must not meet (empty: quiet).
pub fn waiting_for(w: &Window, limits: &Limits) -> Vec<String> {
    let mut reasons = Vec::new();
    if w.descendants > 0 {
        reasons.push(format!("processes of the previous target still running: {}", w.descendants));
    }
    if w.tasks > 0 {
        reasons.push(format!("generator tasks of the previous target still alive: {}", w.tasks));
    }
    if w.dirty_kb + w.writeback_kb > limits.max_unwritten_kb {
        reasons.push(format!("Dirty + Writeback {:.1} MiB", w.unwritten_mib()));
    }
    if let Some(busy) = w.disk_busy.filter(|b| *b > limits.max_disk_busy) {
        reasons.push(format!("disk busy {:.0} %", 100.0 * busy));
    }
    if let Some(ms) = w.fsync_ms.filter(|ms| *ms > limits.max_fsync_ms) {
        reasons.push(format!("fsync {ms:.1} ms"));
    }
    reasons
}

/// Whether the last `quiet_windows` windows were all quiet.
pub fn settled(history: &[Window], limits: &Limits) -> bool {
    let n = limits.quiet_windows.max(1);
    history.len() >= n && history[history.len() - n..].iter().all(|w| waiting_for(w, limits).is_empty())
}

/// One settle before a target.
#[derive(Clone, Debug)]
pub struct Settle {
    pub before: String,
    pub waited: Duration,
    pub sync: Duration,
    /// The first window, before `syncfs`: what the previous target left.
    pub first: Window,
    /// The last window: the state the target starts in.
    pub last: Window,
    /// Every distinct reason waited on (reason kinds, first seen first).
    pub waited_for: Vec<String>,
    pub settled: bool,
}

/// The settle log and the trace a run writes; shared by every target's start.
#[derive(Debug, Default)]
pub struct Quiet {
    pub limits: Limits,
    log: Mutex<Vec<Settle>>,
    /// What the trace marks the current samples with.
    phase: Mutex<String>,
}

impl Quiet {
    pub fn new(limits: Limits) -> Arc<Self> {
        Arc::new(Self { limits, ..Self::default() })
    }

    fn set_phase(&self, phase: &str) {
        let mut p = self.phase.lock().unwrap_or_else(|e| e.into_inner());
        phase.clone_into(&mut p);
    }

    fn phase(&self) -> String {
        self.phase.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The settles since the last call.
    pub fn take(&self) -> Vec<Settle> {
        std::mem::take(&mut *self.log.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Waits until the machine is quiet before `before` starts (see the module header); logs what it waited for.
    pub async fn settle(&self, before: &str) -> Settle {
        self.settle_counting(before, true).await
    }

    /// [`Self::settle`] beside processes of the generator's that stay up through the scenario (the PostgreSQL
    /// cluster of `nodes`): those do not count.
    pub async fn settle_beside_running(&self, before: &str) -> Settle {
        self.settle_counting(before, false).await
    }

    async fn settle_counting(&self, before: &str, children: bool) -> Settle {
        let running = || if children { live_descendants().len() } else { 0 };
        // Settles run between targets, from the scenario's own task: any other task is a previous target's.
        let tasks = || tokio::runtime::Handle::current().metrics().num_alive_tasks();
        let t0 = Instant::now();
        self.set_phase(&format!("settle: {before}"));
        let (dir, dev) = temp_disk();
        let limits = self.limits;
        let mut prev = Snapshot::take(dev);
        tokio::time::sleep(limits.window).await;
        let now = Snapshot::take(dev);
        let mut first = Window::between(&prev, &now, running());
        first.tasks = tasks();
        first.fsync_ms = fsync_probe(&dir).await;
        prev = now;
        let mut waited_for = Vec::new();
        let note = |w: &Window, waited_for: &mut Vec<String>| {
            for r in waiting_for(w, &limits) {
                // The kind of reason: its words before the figure.
                let kind: String =
                    r.split(|c: char| c.is_ascii_digit()).next().unwrap_or(&r).trim().trim_end_matches(':').to_string();
                push_new(waited_for, &kind);
            }
        };
        note(&first, &mut waited_for);
        // Write everything out now rather than let it land on the next target's fsyncs.
        let mut sync = Duration::ZERO;
        if limits.wait {
            sync += sync_dir(&dir).await;
        }
        let deadline = t0 + limits.timeout;
        let mut history = if limits.wait { Vec::new() } else { vec![first] };
        let mut last = first;
        while limits.wait && !settled(&history, &limits) && Instant::now() < deadline {
            tokio::time::sleep(limits.window).await;
            let now = Snapshot::take(dev);
            last = Window::between(&prev, &now, running());
            last.tasks = tasks();
            last.fsync_ms = fsync_probe(&dir).await;
            prev = now;
            note(&last, &mut waited_for);
            history.push(last);
            // Pages dirtied meanwhile (by anything on the machine) would otherwise wait for the kernel's 30 s
            // expiry and be written during the run.
            if last.dirty_kb + last.writeback_kb > limits.max_unwritten_kb {
                sync += sync_dir(&dir).await;
            }
        }
        let s = Settle {
            before: before.to_string(),
            waited: t0.elapsed(),
            sync,
            first,
            last,
            waited_for,
            settled: if limits.wait { settled(&history, &limits) } else { waiting_for(&first, &limits).is_empty() },
        };
        eprintln!(
            "bench: {} {:.1} s before {before} (sync {:.1} s; waited for: {}); left: {}; now: {}",
            if s.settled { "settled in" } else { "NOT settled after" },
            s.waited.as_secs_f64(),
            s.sync.as_secs_f64(),
            if s.waited_for.is_empty() { "nothing".to_string() } else { s.waited_for.join(", ") },
            s.first.describe(),
            s.last.describe()
        );
        self.set_phase(&format!("{RUN}{before}"));
        self.log.lock().unwrap_or_else(|e| e.into_inner()).push(s.clone());
        s
    }
}

/// One-page writes + `fdatasync` a probe makes.
pub const PROBES: usize = 7;

/// The median of [`PROBES`] one-page write + `fdatasync` in a file of its own in `dir`, ms (`None`: cannot).
async fn fsync_probe(dir: &Path) -> Option<f64> {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || {
        use std::io::{Seek, Write};
        let mut f = tempfile::tempfile_in(&dir).ok()?;
        let page = [0x5a_u8; 4096];
        let mut ms = Vec::with_capacity(PROBES);
        for _ in 0..PROBES {
            let t = Instant::now();
            f.rewind().ok()?;
            f.write_all(&page).ok()?;
            f.sync_data().ok()?;
            ms.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        median(&mut ms)
    })
    .await
    .ok()
    .flatten()
}

pub fn median(v: &mut [f64]) -> Option<f64> {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied()
}

/// `syncfs` of the filesystem holding `dir` (`sync` of all when it cannot be opened); how long it took.
async fn sync_dir(dir: &Path) -> Duration {
    let dir = dir.to_path_buf();
    let t = Instant::now();
    let _ = tokio::task::spawn_blocking(move || match std::fs::File::open(&dir) {
        Ok(f) => {
            if nix::unistd::syncfs(&f).is_err() {
                nix::unistd::sync();
            }
        }
        Err(_) => nix::unistd::sync(),
    })
    .await;
    t.elapsed()
}

/// Maxima and totals of the samples taken through one scenario.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Summary {
    pub seconds: f64,
    pub samples: usize,
    pub max_dirty_kb: u64,
    pub max_writeback_kb: u64,
    pub max_time_wait: u64,
    pub max_load1: f64,
    /// Over the whole scenario.
    pub disk_busy: Option<f64>,
    pub io_some: Option<f64>,
    pub cpu_busy: Option<f64>,
    pub written_mib: f64,
    pub discarded_mib: f64,
    pub flushes: u64,
    /// The same for each target's run (from its start to the next settle), in order.
    pub runs: Vec<Run>,
}

/// The machine through one target's run.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Run {
    pub target: String,
    pub samples: usize,
    pub max_unwritten_kb: u64,
    busy_sum: f64,
    stall_sum: f64,
}

impl Run {
    fn add(&mut self, w: &Window) {
        self.samples += 1;
        self.max_unwritten_kb = self.max_unwritten_kb.max(w.dirty_kb + w.writeback_kb);
        self.busy_sum += w.disk_busy.unwrap_or(0.0);
        self.stall_sum += w.io_some.unwrap_or(0.0);
    }

    pub fn describe(&self) -> String {
        let n = self.samples.max(1) as f64;
        format!(
            "{}: Dirty + Writeback max {:.1} MiB, disk busy {:.0} %, I/O stall {:.0} %",
            self.target,
            self.max_unwritten_kb as f64 / MIB_KB,
            100.0 * self.busy_sum / n,
            100.0 * self.stall_sum / n
        )
    }
}

/// Adds a sample taken in `phase` to the run it belongs to: a new run whenever a target's run begins.
pub fn add_to_runs(runs: &mut Vec<Run>, previous_phase: &str, phase: &str, w: &Window) {
    let Some(target) = phase.strip_prefix(RUN) else { return };
    if phase != previous_phase || runs.is_empty() {
        runs.push(Run { target: target.to_string(), ..Run::default() });
    }
    if let Some(run) = runs.last_mut() {
        run.add(w);
    }
}

/// How the phase of a target's run is named (after its settle).
const RUN: &str = "run: ";

impl Summary {
    pub fn add(&mut self, w: &Window) {
        self.samples += 1;
        self.max_dirty_kb = self.max_dirty_kb.max(w.dirty_kb);
        self.max_writeback_kb = self.max_writeback_kb.max(w.writeback_kb);
        self.max_time_wait = self.max_time_wait.max(w.time_wait);
        self.max_load1 = self.max_load1.max(w.load1);
    }

    pub fn describe(&self) -> String {
        let pct = |v: Option<f64>| v.map_or("–".to_string(), |v| format!("{:.0} %", 100.0 * v));
        format!(
            "over {:.0} s ({} samples): Dirty max {:.1} MiB, Writeback max {:.1} MiB, disk busy {}, I/O stall {}, \
             CPU {}, written {:.0} MiB, discarded {:.0} MiB, {} flushes, load max {:.2}, TIME_WAIT max {}",
            self.seconds,
            self.samples,
            self.max_dirty_kb as f64 / MIB_KB,
            self.max_writeback_kb as f64 / MIB_KB,
            pct(self.disk_busy),
            pct(self.io_some),
            pct(self.cpu_busy),
            self.written_mib,
            self.discarded_mib,
            self.flushes,
            self.max_load1,
            self.max_time_wait
        )
    }
}

/// Samples the machine every `every` on a thread of its own until stopped; with a trace file, one CSV line a sample.
pub struct Sampler {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Summary>,
}

impl Sampler {
    pub fn start(quiet: Arc<Quiet>, every: Duration, trace: Option<PathBuf>, scenario: String) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let (_, dev) = temp_disk();
            let start = Snapshot::take(dev);
            let mut prev = start;
            let mut summary = Summary::default();
            let mut lines = String::new();
            let mut previous_phase = String::new();
            while !flag.load(Ordering::Relaxed) {
                std::thread::sleep(every);
                let now = Snapshot::take(dev);
                let w = Window::between(&prev, &now, 0);
                summary.add(&w);
                let phase = quiet.phase();
                add_to_runs(&mut summary.runs, &previous_phase, &phase, &w);
                if trace.is_some() {
                    let pct = |v: Option<f64>| v.map_or(String::new(), |v| format!("{:.1}", 100.0 * v));
                    let _ = writeln!(
                        lines,
                        "{scenario},{:.2},\"{}\",{},{},{},{},{},{:.2},{:.2},{},{}",
                        now.at.duration_since(start.at).as_secs_f64(),
                        phase,
                        w.dirty_kb,
                        w.writeback_kb,
                        pct(w.disk_busy),
                        pct(w.io_some),
                        pct(w.cpu_busy),
                        w.written_mib,
                        w.discarded_mib,
                        w.flushes,
                        w.time_wait
                    );
                }
                prev = now;
                previous_phase = phase;
            }
            let total = Window::between(&start, &prev, 0);
            summary.seconds = total.seconds;
            summary.disk_busy = total.disk_busy;
            summary.io_some = total.io_some;
            summary.cpu_busy = total.cpu_busy;
            summary.written_mib = total.written_mib;
            summary.discarded_mib = total.discarded_mib;
            summary.flushes = total.flushes;
            if let Some(path) = trace {
                append_trace(&path, &lines);
            }
            summary
        });
        Self { stop, thread }
    }

    pub fn finish(self) -> Summary {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or_default()
    }
}

const TRACE_HEADER: &str = "scenario,t_s,phase,dirty_kb,writeback_kb,disk_busy_pct,io_stall_pct,cpu_pct,written_mib,\
                            discarded_mib,flushes,time_wait\n";

fn append_trace(path: &Path, lines: &str) {
    use std::io::Write;
    let fresh = !path.exists();
    match std::fs::OpenOptions::new().create(true).append(true).open(path) {
        Ok(mut f) => {
            let header = if fresh { TRACE_HEADER } else { "" };
            if let Err(e) = f.write_all(format!("{header}{lines}").as_bytes()) {
                eprintln!("bench: cannot write the trace {}: {e}", path.display());
            }
        }
        Err(e) => eprintln!("bench: cannot open the trace {}: {e}", path.display()),
    }
}

/// Appends `item` unless `list` holds it already.
fn push_new(list: &mut Vec<String>, item: &str) {
    if !list.iter().any(|k| k == item) {
        list.push(item.to_string());
    }
}

/// The report's lines on one scenario: the machine at its start, what was waited for before each target, and the
/// machine through it.
pub fn scenario_notes(start: &Settle, targets: &[Settle], during: &Summary) -> Vec<String> {
    let mut notes = vec![format!(
        "machine at start{}: {}",
        if start.settled { "" } else { " (⚠ not settled)" },
        start.last.describe()
    )];
    if !targets.is_empty() {
        let waits: Vec<f64> = targets.iter().map(|s| s.waited.as_secs_f64()).collect();
        let min = waits.iter().copied().fold(f64::INFINITY, f64::min);
        let max = waits.iter().copied().fold(0.0, f64::max);
        let worst = targets.iter().max_by(|a, b| a.first.unwritten_mib().total_cmp(&b.first.unwritten_mib()));
        let mut line = format!("before each of its targets ({}) the harness waited {min:.1}–{max:.1} s", targets.len());
        if let Some(w) = worst {
            let _ = write!(
                line,
                " (most left behind, before {}: Dirty + Writeback {:.1} MiB, disk busy {})",
                w.before,
                w.first.unwritten_mib(),
                w.first.disk_busy.map_or("–".to_string(), |b| format!("{:.0} %", 100.0 * b))
            );
        }
        let slowest =
            targets.iter().filter_map(|s| s.first.fsync_ms.map(|ms| (ms, s))).max_by(|a, b| a.0.total_cmp(&b.0));
        if let Some((ms, s)) = slowest {
            let after = s.last.fsync_ms.map_or("–".to_string(), |a| format!("{a:.2} ms"));
            let _ = write!(line, "; slowest fsync found, before {}: {ms:.2} ms (at its start: {after})", s.before);
        }
        let mut kinds: Vec<String> = Vec::new();
        for r in targets.iter().flat_map(|s| &s.waited_for) {
            push_new(&mut kinds, r);
        }
        if !kinds.is_empty() {
            let _ = write!(line, "; waited for: {}", kinds.join(", "));
        }
        let unsettled: Vec<&str> = targets.iter().filter(|s| !s.settled).map(|s| s.before.as_str()).collect();
        if unsettled.is_empty() {
            line.push_str("; every target started settled");
        } else {
            let _ = write!(line, "; ⚠ not settled before: {}", unsettled.join(", "));
        }
        notes.push(line);
    }
    notes.push(format!("machine during the scenario {}", during.describe()));
    if !during.runs.is_empty() {
        let runs: Vec<String> = during.runs.iter().map(Run::describe).collect();
        notes.push(format!("during each target's run: {}", runs.join("; ")));
    }
    notes
}

#[cfg(test)]
mod tests {
    use super::*;

    const MEMINFO: &str = "MemTotal:        8029248 kB\nMemFree:          412348 kB\nDirty:            184320 kB\n\
                           Writeback:          2048 kB\nAnonPages:        998300 kB\nWritebackTmp:          0 kB\n";

    #[test]
    fn meminfo_gives_dirty_and_writeback_not_writeback_tmp() {
        assert_eq!(parse_meminfo(MEMINFO), Some(Mem { dirty_kb: 184320, writeback_kb: 2048 }));
        assert_eq!(parse_meminfo("MemTotal: 1 kB\n"), None);
        let live = std::fs::read_to_string("/proc/meminfo").expect("meminfo");
        assert!(parse_meminfo(&live).is_some());
    }

    #[test]
    fn sockstat_gives_time_wait() {
        let text = "sockets: used 20\nTCP: inuse 12 orphan 3 tw 20017 alloc 15 mem 4\nUDP: inuse 0 mem 0\n";
        assert_eq!(parse_sockstat(text), Some(Sockstat { inuse: 12, orphan: 3, time_wait: 20017 }));
        assert_eq!(parse_sockstat("sockets: used 20\n"), None);
        let live = std::fs::read_to_string("/proc/net/sockstat").expect("sockstat");
        assert!(parse_sockstat(&live).is_some());
    }

    #[test]
    fn loadavg_and_pressure_parse() {
        assert_eq!(parse_loadavg("3.55 2.54 2.10 7/122 24578\n"), Some([3.55, 2.54, 2.10]));
        assert_eq!(parse_loadavg("3.55 x"), None);
        let psi = "some avg10=5.78 avg60=8.49 avg300=3.65 total=1887471170\n\
                   full avg10=3.08 avg60=6.80 avg300=2.94 total=561945936\n";
        assert_eq!(parse_pressure(psi), Some(Pressure { some_us: 1887471170, full_us: 561945936 }));
        assert_eq!(parse_pressure(""), None);
    }

    #[test]
    fn diskstats_picks_the_device_and_its_discards_and_flushes() {
        let text = " 254       0 vda 12281842 249370 512150994 30870324 34087424 3029800 2344164624 32407006 2 3511248 \
                    64680909 1915889 4194 1333416752 394868 7337594 1008709\n 253       0 zram0 0 0 0 0 0 0 0 0 0 0 0 \
                    0 0 0 0 0 0\n   7       0 loop0 1 0 2 0 0 0 0 0 0 4 0\n";
        let d = parse_diskstats(text, (254, 0)).expect("vda");
        assert_eq!(
            d,
            Disk {
                sectors_written: 2344164624,
                in_flight: 2,
                busy_ms: 3511248,
                discards: 1915889,
                sectors_discarded: 1333416752,
                flushes: 7337594
            }
        );
        // An old kernel's line without discards and flushes still gives the rest.
        assert_eq!(parse_diskstats(text, (7, 0)).map(|d| (d.busy_ms, d.discards)), Some((4, 0)));
        assert_eq!(parse_diskstats(text, (8, 0)), None);
        assert_eq!(major_minor(0xfe00), (254, 0));
        assert_eq!(major_minor(0x0803), (8, 3));
        assert_eq!(major_minor((259 << 8) | 1 | (3 << 20)), (259, 0x301));
    }

    #[test]
    fn median_of_probes() {
        assert_eq!(median(&mut [5.0, 0.3, 0.4]), Some(0.4));
        assert_eq!(median(&mut []), None);
    }

    #[test]
    fn cpu_busy_excludes_idle_and_iowait() {
        let text = "cpu  100 5 50 800 40 3 2 0 0 0\ncpu0 1 2 3 4 5 6 7 8\n";
        assert_eq!(parse_cpu(text), Some((160, 1000)));
    }

    #[test]
    fn live_ppid_skips_zombies_and_names_with_parentheses() {
        assert_eq!(parse_live_ppid("4242 (parley (x)) S 77 4242 1 0 -1"), Some(77));
        assert_eq!(parse_live_ppid("4243 (node) Z 77 4243 1 0 -1"), None);
        let pairs = [(10, 1), (11, 10), (12, 11), (13, 1), (14, 12)];
        let mut below = descendants(&pairs, 10);
        below.sort_unstable();
        assert_eq!(below, vec![11, 12, 14]);
        assert!(descendants(&pairs, 13).is_empty());
    }

    fn quiet_window() -> Window {
        Window { seconds: 0.5, dirty_kb: 1024, writeback_kb: 0, disk_busy: Some(0.02), ..Window::default() }
    }

    #[test]
    fn a_window_waits_for_children_dirty_pages_and_a_busy_disk() {
        let limits = Limits::default();
        assert!(waiting_for(&quiet_window(), &limits).is_empty());
        let dirty = Window { dirty_kb: 180 * 1024, writeback_kb: 4096, ..quiet_window() };
        assert_eq!(waiting_for(&dirty, &limits), vec!["Dirty + Writeback 184.0 MiB".to_string()]);
        // Writeback alone counts too: pages on their way to the disk are what an fsync queues behind.
        let writeback = Window { dirty_kb: 0, writeback_kb: 17 * 1024, ..quiet_window() };
        assert_eq!(waiting_for(&writeback, &limits).len(), 1);
        let busy = Window { disk_busy: Some(0.6), ..quiet_window() };
        assert_eq!(waiting_for(&busy, &limits), vec!["disk busy 60 %".to_string()]);
        let slow = Window { fsync_ms: Some(12.5), ..quiet_window() };
        assert_eq!(waiting_for(&slow, &limits), vec!["fsync 12.5 ms".to_string()]);
        assert!(waiting_for(&Window { fsync_ms: Some(0.4), ..quiet_window() }, &limits).is_empty());
        let child = Window { descendants: 1, ..quiet_window() };
        assert_eq!(waiting_for(&child, &limits).len(), 1);
        let task = Window { tasks: 3, ..quiet_window() };
        assert_eq!(
            waiting_for(&task, &limits),
            vec!["generator tasks of the previous target still alive: 3".to_string()]
        );
        // No disk line (e.g. an overlay filesystem): Dirty and Writeback alone decide.
        assert!(waiting_for(&Window { disk_busy: None, ..quiet_window() }, &limits).is_empty());
        // TIME_WAIT does not hold a target back (fresh ports, spread source addresses).
        assert!(waiting_for(&Window { time_wait: 40_000, ..quiet_window() }, &limits).is_empty());
    }

    #[test]
    fn settled_needs_consecutive_quiet_windows() {
        let limits = Limits::default();
        let q = quiet_window();
        let busy = Window { disk_busy: Some(0.5), ..q };
        assert!(!settled(&[], &limits));
        assert!(!settled(&[q], &limits), "one window is not enough");
        assert!(!settled(&[busy, q], &limits));
        assert!(!settled(&[q, busy], &limits), "a burst after a lull is not quiet");
        assert!(settled(&[busy, q, q], &limits));
        assert!(!settled(&[busy], &Limits { quiet_windows: 0, ..limits }), "at least one window, quiet");
    }

    #[test]
    fn window_turns_counters_into_shares() {
        let t = Instant::now();
        let snap = |ms: u64, busy_ms: u64, some_us: u64, cpu: (u64, u64), sectors: u64| Snapshot {
            at: t + Duration::from_millis(ms),
            mem: Some(Mem { dirty_kb: 2048, writeback_kb: 1024 }),
            disk: Some(Disk { busy_ms, sectors_written: sectors, flushes: sectors / 8, ..Disk::default() }),
            pressure: Some(Pressure { some_us, full_us: 0 }),
            load: Some([0.5, 0.4, 0.3]),
            cpu: Some(cpu),
            sockets: Some(Sockstat { inuse: 1, orphan: 0, time_wait: 7 }),
        };
        let a = snap(0, 1000, 0, (100, 1000), 0);
        let b = snap(1000, 1250, 500_000, (150, 1200), 2048 * 10);
        let w = Window::between(&a, &b, 0);
        assert!((w.seconds - 1.0).abs() < 1e-9);
        assert_eq!(w.disk_busy, Some(0.25));
        assert_eq!(w.io_some, Some(0.5));
        assert_eq!(w.cpu_busy, Some(0.25));
        assert!((w.written_mib - 10.0).abs() < 1e-9);
        assert_eq!(w.flushes, 2560);
        assert_eq!((w.dirty_kb, w.writeback_kb, w.time_wait), (2048, 1024, 7));
        assert!((w.unwritten_mib() - 3.0).abs() < 1e-9);
    }

    #[test]
    fn samples_are_grouped_by_target_run() {
        let w = |dirty_kb: u64, busy: f64| Window { dirty_kb, disk_busy: Some(busy), ..Window::default() };
        let mut runs = Vec::new();
        let phases = [
            ("settle: Parley", w(900_000, 0.9)),
            ("run: Parley", w(1024, 0.2)),
            ("run: Parley", w(2048, 0.4)),
            ("settle: Parley", w(500_000, 0.5)),
            ("run: Parley", w(4096, 0.0)),
            ("run: bare relay", w(0, 0.0)),
        ];
        let mut previous = String::new();
        for (phase, window) in &phases {
            add_to_runs(&mut runs, &previous, phase, window);
            previous = phase.to_string();
        }
        // Settle samples belong to no run; two runs of the same target stay apart.
        let seen: Vec<(&str, usize, u64)> =
            runs.iter().map(|r| (r.target.as_str(), r.samples, r.max_unwritten_kb)).collect();
        assert_eq!(seen, vec![("Parley", 2, 2048), ("Parley", 1, 4096), ("bare relay", 1, 0)]);
        assert_eq!(runs[0].describe(), "Parley: Dirty + Writeback max 2.0 MiB, disk busy 30 %, I/O stall 0 %");
    }

    #[tokio::test]
    async fn settle_on_this_machine_ends_and_logs() {
        // Whatever the machine is doing, a settle ends by the timeout and is logged once.
        let limits =
            Limits { timeout: Duration::from_secs(3), window: Duration::from_millis(100), ..Limits::default() };
        let quiet = Quiet::new(limits);
        let t0 = Instant::now();
        let s = quiet.settle("a test").await;
        assert!(t0.elapsed() < Duration::from_secs(10));
        assert!(s.settled || s.waited >= limits.timeout);
        assert_eq!(quiet.take().len(), 1);
        assert!(quiet.take().is_empty());
        let notes = scenario_notes(&s, std::slice::from_ref(&s), &Summary::default());
        assert_eq!(notes.len(), 3);
        assert!(notes[0].starts_with("machine at start"));
    }

    #[tokio::test]
    async fn settle_waits_for_a_previous_targets_tasks() {
        let limits =
            Limits { timeout: Duration::from_secs(5), window: Duration::from_millis(100), ..Limits::default() };
        let quiet = Quiet::new(limits);
        // A previous target's visitor, still closing its socket when the next target is due.
        let leftover = tokio::spawn(tokio::time::sleep(Duration::from_millis(300)));
        let s = quiet.settle("the next target").await;
        assert!(s.waited_for.iter().any(|r| r == "generator tasks of the previous target still alive"), "{s:?}");
        assert_eq!(s.first.tasks, 1);
        assert_eq!(s.last.tasks, 0, "{s:?}");
        assert!(leftover.is_finished());
    }
}
