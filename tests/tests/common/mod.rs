//! Spawning `ads-ring` processes and reading their JSON-line events.

#![allow(dead_code)]

use serde_json::Value;
use std::io::BufRead as _;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// Generous deadlines: they only keep a broken test from hanging, they measure nothing.
pub const DEADLINE: Duration = Duration::from_secs(60);

pub struct Proc {
    pub child: Child,
    events: Receiver<Value>,
    pub role: String,
}

pub fn unique_name(test: &str) -> String {
    format!("t{}-{test}", std::process::id())
}

pub fn ads_ring(role: &str, args: &[&str]) -> Proc {
    ads_ring_under(role, &[], args)
}

/// `ads-ring` started through a wrapper command, e.g. `["unshare", "--pid", "--fork"]`.
pub fn ads_ring_under(role: &str, wrapper: &[&str], args: &[&str]) -> Proc {
    let bin = env!("CARGO_BIN_EXE_ads-ring");
    let mut command = match wrapper.split_first() {
        Some((program, wrapper_args)) => {
            let mut c = Command::new(program);
            c.args(wrapper_args).arg(bin);
            c
        }
        None => Command::new(bin),
    };
    let mut child =
        command.args(args).stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().expect("spawn ads-ring");
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, events) = mpsc::channel();
    let role_name = role.to_string();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            match serde_json::from_str::<Value>(&line) {
                Ok(v) => {
                    if tx.send(v).is_err() {
                        break;
                    }
                }
                Err(_) => eprintln!("[{role_name}] {line}"),
            }
        }
    });
    Proc { child, events, role: role.to_string() }
}

impl Proc {
    /// The next event named `name` that satisfies `accept`, skipping others.
    pub fn expect_where(&mut self, name: &str, accept: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(v) if v["event"] == name && accept(&v) => return v,
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => {
                    panic!("{}: no {name:?} event within {DEADLINE:?}", self.role)
                }
                Err(RecvTimeoutError::Disconnected) => {
                    panic!("{}: exited before a {name:?} event ({:?})", self.role, self.child.try_wait())
                }
            }
        }
    }

    pub fn expect(&mut self, name: &str) -> Value {
        self.expect_where(name, |_| true)
    }

    pub fn pid(&self) -> rustix::process::Pid {
        rustix::process::Pid::from_raw(self.child.id() as i32).expect("non-zero pid")
    }

    pub fn signal(&self, signal: rustix::process::Signal) {
        rustix::process::kill_process(self.pid(), signal).expect("kill");
    }

    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "{} did not exit", self.role);
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn u64_of(v: &Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or_else(|| panic!("{key} missing in {v}"))
}

/// A workspace binary next to this test's own executable (scripts/test.sh builds them first
/// with `cargo build --workspace --bins`).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("own executable");
    let path = exe.parent().and_then(|deps| deps.parent()).expect("target directory").join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins` (scripts/test.sh does)",
        path.display()
    );
    path
}

pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("its address").port()
}

/// A child stopped like a supervisor would at the end: SIGCONT (a stopped process would sit on
/// SIGTERM forever), SIGTERM, a grace period, then SIGKILL, so even a failing test leaves
/// nothing in /dev/shm.
pub struct Kill(pub Child);

impl Kill {
    pub fn signal(&self, signal: rustix::process::Signal) {
        self.try_signal(signal).expect("kill");
    }

    pub fn try_signal(&self, signal: rustix::process::Signal) -> rustix::io::Result<()> {
        let pid = rustix::process::Pid::from_raw(self.0.id() as i32).expect("non-zero pid");
        rustix::process::kill_process(pid, signal)
    }

    /// SIGKILL, and wait until it is gone, so what follows happens without it.
    pub fn crash(mut self) {
        self.signal(rustix::process::Signal::KILL);
        self.0.wait().expect("wait");
    }

    pub fn wait_exit(&mut self, what: &str) -> ExitStatus {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = self.0.try_wait().expect("try_wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "{what} did not exit");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Kill {
    fn drop(&mut self) {
        if let Ok(Some(_)) = self.0.try_wait() {
            return;
        }
        let _ = self.try_signal(rustix::process::Signal::CONT);
        let _ = self.try_signal(rustix::process::Signal::TERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
