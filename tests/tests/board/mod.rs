//! A fake actuator board on a pseudo-terminal, speaking the line protocol of docs/actuators.md
//! (written here from the document, not from the vehicle's code): it answers every line with
//! `S <seq> <status> *<ck>`, goes to its neutral by itself 100 ms after the last valid `D` or
//! `N`, and records what it saw. With a car socket it also plays the car's servo and ESC for
//! `--sim-actuation outputs`: what it puts out goes to the simulator as steering and throttle.

#![allow(dead_code)]

use ads_testkit::DEADLINE;
use std::io::{Read as _, Write as _};
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BOARD_TIMEOUT: Duration = Duration::from_millis(100);

/// One valid host → board line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Line {
    /// `C`, `D` or `N`.
    pub verb: char,
    pub seq: u32,
    pub steering_us: u16,
    pub throttle_us: u16,
}

impl Line {
    pub fn pulses(&self) -> (u16, u16) {
        (self.steering_us, self.throttle_us)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    Line(Line),
    Bad,
    /// Its own timeout fired.
    Timeout,
}

fn xor(body: &str) -> u8 {
    body.bytes().fold(0, |ck, b| ck ^ b)
}

fn parse(line: &str) -> Option<Line> {
    let (body, ck) = line.trim_end().rsplit_once(" *")?;
    if u8::from_str_radix(ck, 16).ok()? != xor(body) {
        return None;
    }
    let f: Vec<&str> = body.split(' ').collect();
    let [verb, seq, steer, thr] = f[..] else { return None };
    let verb = match verb {
        "C" | "D" | "N" => verb.chars().next()?,
        _ => return None,
    };
    Some(Line {
        verb,
        seq: seq.parse().ok()?,
        steering_us: steer.parse().ok()?,
        throttle_us: thr.parse().ok()?,
    })
}

fn status(seq: u32, state: &str) -> String {
    let body = format!("S {seq} {state}");
    format!("{body} *{:02X}\n", xor(&body))
}

/// A pseudo-terminal: the master (non-blocking) for the board, the slave's path for the vehicle.
pub fn pty() -> (std::fs::File, String) {
    use rustix::pty::{grantpt, openpt, ptsname, unlockpt, OpenptFlags};
    let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC).unwrap();
    grantpt(&master).unwrap();
    unlockpt(&master).unwrap();
    let name = ptsname(&master, Vec::new()).unwrap().into_string().unwrap();
    let flags = rustix::fs::fcntl_getfl(&master).unwrap();
    rustix::fs::fcntl_setfl(&master, flags | rustix::fs::OFlags::NONBLOCK).unwrap();
    (std::fs::File::from(master), name)
}

pub struct FakeBoard {
    pub path: String,
    log: Arc<Mutex<Vec<(Instant, Seen)>>>,
    output: Arc<Mutex<(u16, u16)>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeBoard {
    /// A board on a fresh pty; `car`: the simulator's outputs socket to report to, if any.
    /// `centre_us`: the car's straight-ahead steering pulse (its servo's mapping, for `car`).
    pub fn start(car: Option<PathBuf>, centre_us: u16) -> Self {
        let (mut master, path) = pty();
        let log: Arc<Mutex<Vec<(Instant, Seen)>>> = Arc::default();
        let output = Arc::new(Mutex::new((1500, 1500)));
        let stop = Arc::new(AtomicBool::new(false));
        let (l, o, st) = (Arc::clone(&log), Arc::clone(&output), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            let wire = UnixDatagram::unbound().unwrap();
            // The car's servo and ESC: ±500 µs is full lock / full throttle, left and forward
            // above. Until the vehicle has bound its socket, reports are lost.
            let report = |(s, t): (u16, u16)| {
                if let Some(car) = &car {
                    let norm = |us: u16, c: u16| ((f64::from(us) - f64::from(c)) / 500.0).clamp(-1.0, 1.0);
                    let text = format!("{:.4} {:.4}", norm(s, centre_us), norm(t, 1500));
                    let _ = wire.send_to(text.as_bytes(), car);
                }
            };
            let mut neutral = (1500, 1500);
            let (mut last_valid, mut acked, mut state, mut timed_out) =
                (None::<Instant>, 0, "neutral", false);
            let mut partial = Vec::new();
            let mut buf = [0u8; 256];
            while !st.load(Ordering::Relaxed) {
                if !timed_out && last_valid.is_some_and(|t| t.elapsed() > BOARD_TIMEOUT) {
                    timed_out = true;
                    state = "timeout";
                    *o.lock().unwrap() = neutral;
                    l.lock().unwrap().push((Instant::now(), Seen::Timeout));
                    report(neutral);
                    let _ = master.write_all(status(acked, state).as_bytes());
                }
                match master.read(&mut buf) {
                    Ok(n) if n > 0 => partial.extend_from_slice(&buf[..n]),
                    _ => {
                        std::thread::sleep(Duration::from_millis(1));
                        continue;
                    }
                }
                while let Some(end) = partial.iter().position(|&b| b == b'\n') {
                    let text: Vec<u8> = partial.drain(..=end).collect();
                    let now = Instant::now();
                    match parse(&String::from_utf8_lossy(&text)) {
                        Some(line) => {
                            acked = line.seq;
                            if line.verb == 'C' {
                                neutral = line.pulses();
                            } else {
                                last_valid = Some(now);
                                timed_out = false;
                                *o.lock().unwrap() = line.pulses();
                                state = if line.verb == 'D' { "drive" } else { "neutral" };
                            }
                            l.lock().unwrap().push((now, Seen::Line(line)));
                        }
                        None => {
                            l.lock().unwrap().push((now, Seen::Bad));
                            state = "error";
                        }
                    }
                    let _ = master.write_all(status(acked, state).as_bytes());
                    report(*o.lock().unwrap());
                }
            }
        });
        Self { path, log, output, stop, thread: Some(thread) }
    }

    pub fn seen(&self) -> Vec<(Instant, Seen)> {
        self.log.lock().unwrap().clone()
    }

    /// The valid lines seen after `after`.
    pub fn lines_after(&self, after: Instant) -> Vec<(Instant, Line)> {
        self.seen()
            .into_iter()
            .filter_map(|(t, s)| match s {
                Seen::Line(l) if t > after => Some((t, l)),
                _ => None,
            })
            .collect()
    }

    /// What it puts out now: (steering µs, throttle µs).
    pub fn output(&self) -> (u16, u16) {
        *self.output.lock().unwrap()
    }

    /// Polls until `done` holds for the lines seen; a bound only against hanging.
    pub fn wait_for(&self, what: &str, done: impl Fn(&[(Instant, Line)]) -> bool) -> Vec<(Instant, Line)> {
        let deadline = Instant::now() + DEADLINE;
        let start = Instant::now() - Duration::from_secs(3600);
        loop {
            let lines = self.lines_after(start);
            if done(&lines) {
                return lines;
            }
            assert!(Instant::now() < deadline, "the board never saw {what}; last: {:?}", lines.last());
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for FakeBoard {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
