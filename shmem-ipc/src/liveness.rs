//! Is the process that wrote a segment still alive?
//!
//! A pid alone is not enough: a killed writer that its parent has not reaped yet is a zombie
//! (`kill(pid, 0)` still succeeds), and pids get reused. `/proc/<pid>/stat` gives both the
//! state and the process start time, which together identify one process incarnation.
//! This assumes writer and readers share a pid namespace, as processes sharing `/dev/shm`
//! on a vehicle do.

use std::io;

/// One incarnation of a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProcessId {
    pub(crate) pid: u32,
    pub(crate) start_ticks: u64,
}

impl ProcessId {
    pub(crate) fn current() -> io::Result<Self> {
        let pid = std::process::id();
        let (_, start_ticks) = read_stat(pid)?;
        Ok(Self { pid, start_ticks })
    }

    /// False once the process has exited, is a zombie, or its pid belongs to someone else.
    pub(crate) fn is_alive(&self) -> bool {
        match read_stat(self.pid) {
            Ok((state, start)) => !matches!(state, 'Z' | 'X' | 'x') && start == self.start_ticks,
            Err(e) if e.kind() == io::ErrorKind::NotFound => false,
            // Anything else (e.g. hidepid on /proc) tells us nothing: assume alive rather than
            // steal a live writer's ring.
            Err(_) => true,
        }
    }
}

/// State letter and start time (field 22) of `/proc/<pid>/stat`.
fn read_stat(pid: u32) -> io::Result<(char, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_stat(&text).ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "malformed /proc/<pid>/stat"))
}

fn parse_stat(text: &str) -> Option<(char, u64)> {
    // The command name (field 2) is in parentheses and may itself contain spaces or ')'.
    let after_comm = &text[text.rfind(')')? + 1..];
    let mut fields = after_comm.split_ascii_whitespace();
    let state = fields.next()?.chars().next()?;
    // Field 3 was `state`; field 22 is 19 further on.
    let start = fields.nth(18)?.parse().ok()?;
    Some((state, start))
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn parses_names_with_spaces_and_parens() {
        let line = "1234 (a b) c)) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 424242 9 9";
        assert_eq!(parse_stat(line), Some(('S', 424242)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn this_process_is_alive_and_a_reaped_child_is_not() {
        let me = ProcessId::current().unwrap();
        assert!(me.is_alive());
        assert!(!ProcessId { start_ticks: me.start_ticks + 1, ..me }.is_alive(), "reused pid");
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        let (_, start_ticks) = read_stat(pid).unwrap_or(('R', 0));
        child.wait().unwrap();
        assert!(!ProcessId { pid, start_ticks }.is_alive());
    }

    #[test]
    fn an_unreaped_killed_child_is_dead() {
        let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let id = ProcessId { pid: child.id(), start_ticks: read_stat(child.id()).unwrap().1 };
        assert!(id.is_alive());
        child.kill().unwrap();
        // Not reaped yet: a zombie until `wait`. Poll briefly; SIGKILL delivery is asynchronous.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while id.is_alive() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert!(!id.is_alive(), "a zombie must count as dead");
        child.wait().unwrap();
    }
}
