//! Spawning `ads-ring` processes and reading their JSON-line events.

#![allow(dead_code)]

use ads_testkit::DEADLINE;
use serde_json::Value;
use std::io::BufRead as _;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

pub struct Proc {
    pub child: Child,
    events: Receiver<Value>,
    pub role: String,
}

pub fn ads_ring(role: &str, args: &[&str]) -> Proc {
    ads_ring_under(role, &[], args)
}

/// `ads-ring` started through a wrapper command, e.g. `["unshare", "--pid", "--fork"]`.
pub fn ads_ring_under(role: &str, wrapper: &[&str], args: &[&str]) -> Proc {
    let bin = ads_testkit::bin("ads-ring");
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
