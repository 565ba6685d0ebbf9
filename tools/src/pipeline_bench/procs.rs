//! The pipeline's processes as the benchmark runs them, and what /proc says about them.

use anyhow::Context as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A child that is stopped like a supervisor would: SIGTERM, a grace period, SIGKILL.
#[derive(Debug)]
pub struct Proc {
    pub name: &'static str,
    child: Child,
    /// Signal its whole process group (chromedriver's browsers must not outlive it).
    group: bool,
}

impl Proc {
    pub fn spawn(name: &'static str, program: &Path, args: &[String]) -> anyhow::Result<Self> {
        Self::start(name, program, args, false)
    }

    /// In a process group of its own, stopped as a group: everything it started goes too.
    pub fn spawn_group(name: &'static str, program: &Path, args: &[String]) -> anyhow::Result<Self> {
        Self::start(name, program, args, true)
    }

    fn start(name: &'static str, program: &Path, args: &[String], group: bool) -> anyhow::Result<Self> {
        use std::os::unix::process::CommandExt as _;
        let mut command = Command::new(program);
        command
            .args(args)
            .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
            .stdout(Stdio::null());
        if group {
            command.process_group(0);
        }
        let child = command.spawn().with_context(|| format!("starting {}", program.display()))?;
        Ok(Self { name, child, group })
    }

    fn signal(&self, signal: rustix::process::Signal) {
        if let Some(pid) = rustix::process::Pid::from_raw(self.child.id() as i32) {
            let _ = if self.group {
                rustix::process::kill_process_group(pid, signal)
            } else {
                rustix::process::kill_process(pid, signal)
            };
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `Err` if the process has exited: a benchmark of a dead pipeline means nothing.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        match self.child.try_wait()? {
            Some(status) => anyhow::bail!("{} exited during the benchmark: {status}", self.name),
            None => Ok(()),
        }
    }

    pub fn stop(&mut self) {
        self.signal(rustix::process::Signal::TERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                if self.group {
                    // The leader is gone; whatever of its group is left goes now.
                    self.signal(rustix::process::Signal::KILL);
                }
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.signal(rustix::process::Signal::KILL);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Where the workspace's binaries are: next to this executable (target/release when run by
/// scripts/bench.sh).
pub fn bin_dir() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe.parent().context("executable without a directory")?;
    // Test executables live one level deeper, in deps/.
    let dir = if dir.ends_with("deps") { dir.parent().context("deps without a parent")? } else { dir };
    Ok(dir.to_path_buf())
}

/// CPU time (user + system) of a process and all its descendants, in seconds, and their
/// resident memory in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    pub cpu_s: f64,
    pub rss_bytes: u64,
}

fn ticks_per_second() -> f64 {
    rustix::param::clock_ticks_per_second() as f64
}

/// (pid, ppid, utime + stime ticks) of every process.
fn all_processes() -> Vec<(u32, u32, u64)> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .filter_map(|e| {
            let pid: u32 = e.ok()?.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // The command name may contain spaces and parentheses: fields start after the last ')'.
            let rest = &stat[stat.rfind(')')? + 2..];
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let ppid = fields.get(1)?.parse().ok()?;
            let utime: u64 = fields.get(11)?.parse().ok()?;
            let stime: u64 = fields.get(12)?.parse().ok()?;
            Some((pid, ppid, utime + stime))
        })
        .collect()
}

fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Usage of `root` alone, or with `tree`, of it and all its descendants (a browser is many
/// processes).
pub fn usage(root: u32, tree: bool) -> Usage {
    let processes = all_processes();
    let mut members = vec![root];
    if tree {
        let mut i = 0;
        while i < members.len() {
            let parent = members[i];
            members.extend(processes.iter().filter(|(_, ppid, _)| *ppid == parent).map(|(pid, _, _)| *pid));
            i += 1;
        }
    }
    let ticks: u64 = processes.iter().filter(|(pid, _, _)| members.contains(pid)).map(|(_, _, t)| t).sum();
    Usage { cpu_s: ticks as f64 / ticks_per_second(), rss_bytes: members.iter().map(|&p| rss_bytes(p)).sum() }
}
