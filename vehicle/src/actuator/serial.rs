//! A microcontroller (Arduino, RP2040, ESP32) on a serial port, generating the servo and ESC
//! pulses itself, driven by the line protocol of docs/actuators.md:
//!
//! ```text
//! host  → board   C <seq> <steer_us> <thr_us> *<ck>   neutral pulses for the board's own timeout
//!                 D <seq> <steer_us> <thr_us> *<ck>   drive: put out these pulses
//!                 N <seq> <steer_us> <thr_us> *<ck>   stop: put out these pulses (neutral or brake)
//! board → host    S <seq> <status> *<ck>              status: drive | neutral | timeout | error
//! ```
//!
//! `<ck>` is the XOR of every byte before ` *`, two upper-case hex digits; lines end in `\n`.
//! The board answers every line with the `seq` of the newest valid command, and goes to its
//! neutral pulses by itself 100 ms after the last valid `D` or `N`: a dead host, a dead
//! process or a cut cable all stop the car. `firmware/ads_actuator/ads_actuator.ino` is the
//! reference implementation.

use super::{Actuator, ActuatorError, DeviceStatus, Pulses};
use crate::config::ActuatorSection;
use std::io::{Read as _, Write as _};
use std::time::Duration;

/// The board's own timeout: no valid `D` or `N` for this long → neutral.
pub const BOARD_TIMEOUT_MS: u64 = 100;

/// Lines sent without any answer before the board counts as silent (half a second at 50 Hz).
const SILENT_AFTER_LINES: u32 = 25;

/// Longest line either side sends; longer input is garbage.
pub const MAX_LINE: usize = 64;

/// A command line's verb.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    /// `C`: the pulses the board puts out on its own timeout.
    Config,
    /// `D`: drive.
    Drive,
    /// `N`: stop (neutral or brake).
    Neutral,
}

impl Verb {
    fn letter(self) -> char {
        match self {
            Verb::Config => 'C',
            Verb::Drive => 'D',
            Verb::Neutral => 'N',
        }
    }
}

/// One host → board line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommandLine {
    pub verb: Verb,
    pub seq: u32,
    pub pulses: Pulses,
}

/// The board's state, as it reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BoardState {
    /// Putting out the pulses of a `D`.
    Drive,
    /// Putting out the pulses of an `N`, or its neutral before any command.
    Neutral,
    /// No valid command for 100 ms: at its neutral by itself.
    Timeout,
    /// The last line it got was invalid (checksum, format, range); it was ignored.
    Error,
}

impl BoardState {
    pub fn word(self) -> &'static str {
        match self {
            BoardState::Drive => "drive",
            BoardState::Neutral => "neutral",
            BoardState::Timeout => "timeout",
            BoardState::Error => "error",
        }
    }
}

/// One board → host line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusLine {
    pub seq: u32,
    pub state: BoardState,
}

/// XOR of the bytes.
pub fn checksum(body: &str) -> u8 {
    body.bytes().fold(0, |ck, b| ck ^ b)
}

fn seal(body: &str) -> String {
    format!("{body} *{:02X}\n", checksum(body))
}

/// `body` of `body *CK`, the checksum verified.
fn unseal(line: &str) -> Result<&str, String> {
    let line = line.trim_end_matches(['\r', '\n']);
    let (body, ck) = line.rsplit_once(" *").ok_or_else(|| format!("no checksum in {line:?}"))?;
    let ck = u8::from_str_radix(ck, 16).map_err(|_| format!("bad checksum field in {line:?}"))?;
    if ck != checksum(body) {
        return Err(format!("checksum mismatch in {line:?} (computed {:02X})", checksum(body)));
    }
    Ok(body)
}

impl CommandLine {
    pub fn encode(&self) -> String {
        let Pulses { steering_us, throttle_us } = self.pulses;
        seal(&format!("{} {} {steering_us} {throttle_us}", self.verb.letter(), self.seq))
    }

    /// What the board does with a line (pulses outside 500..=2500 µs are refused).
    pub fn parse(line: &str) -> Result<Self, String> {
        let body = unseal(line)?;
        let fields: Vec<&str> = body.split(' ').collect();
        let [verb, seq, steer, thr] = fields[..] else { return Err(format!("not 4 fields: {body:?}")) };
        let verb = match verb {
            "C" => Verb::Config,
            "D" => Verb::Drive,
            "N" => Verb::Neutral,
            _ => return Err(format!("unknown verb in {body:?}")),
        };
        let number = |s: &str| s.parse::<u32>().map_err(|_| format!("bad number {s:?} in {body:?}"));
        let pulse = |s: &str| {
            let us = number(s)?;
            u16::try_from(us)
                .ok()
                .filter(|us| super::PULSE_RANGE_US.contains(us))
                .ok_or_else(|| format!("pulse {us} µs out of 500..=2500 in {body:?}"))
        };
        Ok(Self {
            verb,
            seq: number(seq)?,
            pulses: Pulses { steering_us: pulse(steer)?, throttle_us: pulse(thr)? },
        })
    }
}

impl StatusLine {
    pub fn encode(&self) -> String {
        seal(&format!("S {} {}", self.seq, self.state.word()))
    }

    pub fn parse(line: &str) -> Result<Self, String> {
        let body = unseal(line)?;
        let fields: Vec<&str> = body.split(' ').collect();
        let ["S", seq, state] = fields[..] else { return Err(format!("not a status line: {body:?}")) };
        let seq = seq.parse().map_err(|_| format!("bad sequence number in {body:?}"))?;
        let state = match state {
            "drive" => BoardState::Drive,
            "neutral" => BoardState::Neutral,
            "timeout" => BoardState::Timeout,
            "error" => BoardState::Error,
            _ => return Err(format!("unknown status in {body:?}")),
        };
        Ok(Self { seq, state })
    }
}

/// The host's side of the protocol on an open port.
pub struct SerialActuator {
    port: Box<dyn serialport::SerialPort>,
    device: String,
    seq: u32,
    /// Bytes of an answer line not yet complete.
    partial: Vec<u8>,
    status: DeviceStatus,
    /// Lines sent since the last valid answer.
    unanswered: u32,
}

impl std::fmt::Debug for SerialActuator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SerialActuator").field("device", &self.device).field("seq", &self.seq).finish()
    }
}

impl SerialActuator {
    /// Speaks the protocol on `port` (`device` names it in errors); tells the board its
    /// neutral (`C`) and puts it there (`N`).
    pub fn new(
        port: Box<dyn serialport::SerialPort>,
        device: &str,
        neutral: Pulses,
    ) -> Result<Self, ActuatorError> {
        let mut this = Self {
            port,
            device: device.into(),
            seq: 0,
            partial: Vec::new(),
            status: DeviceStatus::default(),
            unanswered: 0,
        };
        this.send(Verb::Config, neutral)?;
        this.send(Verb::Neutral, neutral)?;
        Ok(this)
    }

    /// The sequence number of the newest line sent.
    pub fn seq(&self) -> u32 {
        self.seq
    }

    fn send(&mut self, verb: Verb, pulses: Pulses) -> Result<(), ActuatorError> {
        self.seq = self.seq.wrapping_add(1);
        let line = CommandLine { verb, seq: self.seq, pulses }.encode();
        self.port.write_all(line.as_bytes()).map_err(|e| ActuatorError::Io {
            device: self.device.clone(),
            reason: format!("writing to the board: {e}"),
            hint: "is the board still plugged in? (`ls /dev/serial/by-id/`)".into(),
        })?;
        self.unanswered = self.unanswered.saturating_add(1);
        self.read_answers();
        Ok(())
    }

    /// Takes the answers that have arrived, never waiting for more.
    fn read_answers(&mut self) {
        let waiting = self.port.bytes_to_read().unwrap_or(0) as usize;
        if waiting > 0 {
            let mut buf = vec![0; waiting.min(4096)];
            if let Ok(n) = self.port.read(&mut buf) {
                self.partial.extend_from_slice(&buf[..n]);
            }
        }
        while let Some(end) = self.partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=end).collect();
            match std::str::from_utf8(&line).map_err(|e| e.to_string()).and_then(StatusLine::parse) {
                Ok(answer) => {
                    self.unanswered = 0;
                    self.status.board = Some(answer.state.word().into());
                    self.status.acked_seq = Some(answer.seq);
                    self.status.fault = (answer.state == BoardState::Error)
                        .then(|| "the board refused a line (checksum or range): check the baud rate".into());
                }
                Err(e) => self.status.fault = Some(format!("a garbled answer from the board: {e}")),
            }
        }
        if self.partial.len() > MAX_LINE {
            self.partial.clear();
            self.status.fault = Some("the board sends garbage: check actuator.baud and the firmware".into());
        }
        if self.unanswered > SILENT_AFTER_LINES {
            self.status.board = None;
            self.status.fault = Some(format!(
                "the board on {} does not answer (firmware flashed? actuator.baud = the firmware's?)",
                self.device
            ));
        }
    }
}

impl Actuator for SerialActuator {
    fn kind(&self) -> &'static str {
        "serial"
    }

    fn write(&mut self, pulses: Pulses) -> Result<(), ActuatorError> {
        self.send(Verb::Drive, pulses)
    }

    fn neutral(&mut self, pulses: Pulses) -> Result<(), ActuatorError> {
        self.send(Verb::Neutral, pulses)
    }

    fn status(&self) -> DeviceStatus {
        self.status.clone()
    }
}

/// Opens the configured port (`/dev/ttyACM0` by default) at `actuator.baud`.
pub fn open(config: &ActuatorSection) -> Result<SerialActuator, ActuatorError> {
    let path = config.device_path();
    let device = path.display().to_string();
    let port = serialport::new(device.as_str(), config.baud)
        // A write that cannot go out in this long is an error, not a stall of the output thread.
        .timeout(Duration::from_millis(50))
        .open()
        .map_err(|e| {
            use serialport::ErrorKind;
            use std::io::ErrorKind as Io;
            // EBUSY comes as NoDevice: asked first, or it would read "plugged in?".
            if e.description.contains("busy") {
                let hint = "another program has the port open (a serial monitor, ModemManager?)".into();
                return ActuatorError::Busy { device: device.clone(), hint };
            }
            let hint = match e.kind() {
                ErrorKind::NoDevice | ErrorKind::Io(Io::NotFound) => {
                    "is the board plugged in? `ls /dev/serial/by-id/` lists the ports".to_string()
                }
                ErrorKind::Io(Io::PermissionDenied) => {
                    "add the user to the dialout group; under systemd, a drop-in with DeviceAllow=char-ttyACM rw (or char-ttyUSB)".into()
                }
                _ => "check the port with `ls -l /dev/serial/by-id/`".into(),
            };
            ActuatorError::Open { device: device.clone(), reason: e.description.clone(), hint }
        })?;
    SerialActuator::new(port, &device, config.calibration.neutral())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actuator::output::{Output, OutputSettings};
    use crate::actuator::{ActuatorCommand, Calibration, Limits, Shaper};
    use crate::config::StopThrottle;
    use ads_shmem_ipc::clock;
    use std::io::{Read, Write};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};

    const MS: u64 = 1_000_000;
    const NEUTRAL: Pulses = Pulses { steering_us: 1500, throttle_us: 1500 };

    #[test]
    fn lines_are_sealed_with_the_xor_checksum_and_parsed_back() {
        // The worked example of docs/actuators.md.
        let d = CommandLine { verb: Verb::Drive, seq: 1, pulses: NEUTRAL };
        assert_eq!(d.encode(), "D 1 1500 1500 *55\n");
        assert_eq!(CommandLine::parse("D 1 1500 1500 *55\n"), Ok(d));
        assert_eq!(StatusLine { seq: 1, state: BoardState::Drive }.encode(), "S 1 drive *0E\n");
        assert_eq!(
            StatusLine::parse("S 1 drive *0E\r\n"),
            Ok(StatusLine { seq: 1, state: BoardState::Drive })
        );
        let c = CommandLine { verb: Verb::Config, seq: 1, pulses: NEUTRAL };
        assert_eq!(c.encode(), "C 1 1500 1500 *52\n");
        for bad in [
            "D 1 1500 1501 *55\n", // one digit changed: checksum
            "D 1 1500 1500 *5\n",  // checksum field
            "D 1 1500 1500\n",     // none
            "X 1 1500 1500 *41\n", // verb (checksum right)
            "D 1 3000 1500 *55\n", // out of range (and checksum)
        ] {
            assert!(CommandLine::parse(bad).is_err(), "{bad:?}");
        }
        let x = seal("X 1 1500 1500");
        assert!(CommandLine::parse(&x).unwrap_err().contains("verb"));
        let far = seal("D 1 3000 1500");
        assert!(CommandLine::parse(&far).unwrap_err().contains("out of 500..=2500"));
    }

    /// A pseudo-terminal: the master for the fake board, the slave's path for serialport.
    fn pty() -> (std::fs::File, String) {
        use rustix::pty::{grantpt, openpt, ptsname, unlockpt, OpenptFlags};
        let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC).unwrap();
        grantpt(&master).unwrap();
        unlockpt(&master).unwrap();
        let name = ptsname(&master, Vec::new()).unwrap().into_string().unwrap();
        let flags = rustix::fs::fcntl_getfl(&master).unwrap();
        rustix::fs::fcntl_setfl(&master, flags | rustix::fs::OFlags::NONBLOCK).unwrap();
        (std::fs::File::from(master), name)
    }

    #[derive(Debug, Clone, PartialEq)]
    enum Seen {
        Line(CommandLine),
        Bad(String),
        /// The board's own timeout fired.
        Timeout,
    }

    /// A board speaking docs/actuators.md on the pty master, as the reference firmware does:
    /// answers every line, neutral by itself 100 ms after the last valid D or N.
    struct FakeBoard {
        seen: Arc<Mutex<Vec<(u64, Seen)>>>,
        /// What it puts out now.
        output: Arc<Mutex<Pulses>>,
        stop: Arc<AtomicBool>,
        thread: Option<std::thread::JoinHandle<()>>,
    }

    impl FakeBoard {
        fn start(mut master: std::fs::File) -> Self {
            let seen = Arc::new(Mutex::new(Vec::new()));
            let output = Arc::new(Mutex::new(NEUTRAL));
            let stop = Arc::new(AtomicBool::new(false));
            let (s, o, st) = (Arc::clone(&seen), Arc::clone(&output), Arc::clone(&stop));
            let thread = std::thread::spawn(move || {
                let mut neutral = NEUTRAL;
                let mut last_valid: Option<u64> = None;
                let mut acked = 0;
                let mut state = BoardState::Neutral;
                let mut partial = Vec::new();
                let mut buf = [0u8; 256];
                while !st.load(Ordering::Relaxed) {
                    let now = clock::monotonic_ns();
                    if state != BoardState::Timeout
                        && last_valid.is_some_and(|t| now - t > BOARD_TIMEOUT_MS * MS)
                    {
                        state = BoardState::Timeout;
                        *o.lock().unwrap() = neutral;
                        s.lock().unwrap().push((now, Seen::Timeout));
                        let _ = master.write_all(StatusLine { seq: acked, state }.encode().as_bytes());
                    }
                    match master.read(&mut buf) {
                        Ok(n) if n > 0 => partial.extend_from_slice(&buf[..n]),
                        _ => {
                            std::thread::sleep(Duration::from_millis(1));
                            continue;
                        }
                    }
                    while let Some(end) = partial.iter().position(|&b| b == b'\n') {
                        let line: Vec<u8> = partial.drain(..=end).collect();
                        let now = clock::monotonic_ns();
                        let text = String::from_utf8_lossy(&line).into_owned();
                        match CommandLine::parse(&text) {
                            Ok(c) => {
                                acked = c.seq;
                                match c.verb {
                                    Verb::Config => neutral = c.pulses,
                                    Verb::Drive | Verb::Neutral => {
                                        last_valid = Some(now);
                                        *o.lock().unwrap() = c.pulses;
                                        state = if c.verb == Verb::Drive {
                                            BoardState::Drive
                                        } else {
                                            BoardState::Neutral
                                        };
                                    }
                                }
                                s.lock().unwrap().push((now, Seen::Line(c)));
                                let _ =
                                    master.write_all(StatusLine { seq: acked, state }.encode().as_bytes());
                            }
                            Err(e) => {
                                s.lock().unwrap().push((now, Seen::Bad(e)));
                                let answer = StatusLine { seq: acked, state: BoardState::Error };
                                let _ = master.write_all(answer.encode().as_bytes());
                            }
                        }
                    }
                }
            });
            Self { seen, output, stop, thread: Some(thread) }
        }

        fn seen(&self) -> Vec<(u64, Seen)> {
            self.seen.lock().unwrap().clone()
        }

        fn lines(&self) -> Vec<CommandLine> {
            self.seen()
                .into_iter()
                .filter_map(|(_, s)| match s {
                    Seen::Line(c) => Some(c),
                    _ => None,
                })
                .collect()
        }

        /// Polls until `done` holds; a bound only against hanging forever.
        fn wait_for(&self, what: &str, done: impl Fn(&[(u64, Seen)]) -> bool) -> Vec<(u64, Seen)> {
            for _ in 0..6000 {
                let seen = self.seen();
                if done(&seen) {
                    return seen;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            panic!("the board never saw {what}: {:?}", self.seen());
        }
    }

    impl Drop for FakeBoard {
        fn drop(&mut self) {
            self.stop.store(true, Ordering::Relaxed);
            if let Some(t) = self.thread.take() {
                t.join().unwrap();
            }
        }
    }

    fn calibration() -> Calibration {
        Calibration { steering_centre_us: 1480, brake_us: 1300, ..Calibration::default() }
    }

    fn open_pty(path: &str) -> SerialActuator {
        let config = ActuatorSection {
            kind: crate::config::ActuatorKind::Serial,
            device: Some(path.into()),
            calibration: calibration(),
            ..ActuatorSection::default()
        };
        open(&config).unwrap()
    }

    fn output(actuator: SerialActuator, timeout_ms: u64, refresh_ms: u64) -> Output {
        let limits = Limits {
            max_throttle: 0.3,
            throttle_slew_per_s: 100.0,
            allow_reverse: false,
            reverse_brake_ns: 0,
            reverse_neutral_ns: 0,
        };
        let settings = OutputSettings {
            shaper: Shaper::new(calibration(), limits),
            command_timeout_ns: timeout_ms * MS,
            timeout_throttle: StopThrottle::Neutral,
            refresh_ns: refresh_ms * MS,
        };
        Output::spawn(Box::new(actuator), settings).unwrap()
    }

    const LEFT: ActuatorCommand = ActuatorCommand { steering: 1.0, throttle: 0.2, brake: 0.0 };
    /// LEFT through the calibration: full left, 0.2 of full forward.
    const LEFT_PULSES: Pulses = Pulses { steering_us: 2000, throttle_us: 1600 };

    #[test]
    fn commands_flow_through_a_real_tty_and_the_board_answers() {
        let (master, path) = pty();
        let board = FakeBoard::start(master);
        let out = output(open_pty(&path), 60_000, 20);
        // The loop at its rate: a command every 10 ms.
        for _ in 0..30 {
            out.command(LEFT, clock::monotonic_ns());
            std::thread::sleep(Duration::from_millis(10));
        }
        board.wait_for("the drive pulses", |s| {
            s.iter()
                .any(|(_, s)| matches!(s, Seen::Line(c) if c.verb == Verb::Drive && c.pulses == LEFT_PULSES))
        });
        let lines = board.lines();
        // First the board learns its neutral (the calibrated one), then is put there.
        let neutral = Pulses { steering_us: 1480, throttle_us: 1500 };
        assert_eq!(lines[0], CommandLine { verb: Verb::Config, seq: 1, pulses: neutral });
        assert_eq!(lines[1], CommandLine { verb: Verb::Neutral, seq: 2, pulses: neutral });
        // Every line valid, numbered one after the other.
        assert!(board.seen().iter().all(|(_, s)| !matches!(s, Seen::Bad(_))), "{:?}", board.seen());
        assert!(lines.windows(2).all(|w| w[1].seq == w[0].seq + 1), "{lines:?}");
        // The answers come back: the host knows the board drives and what it acknowledged,
        // and sees no fault.
        let mut status = out.status();
        for _ in 0..6000 {
            out.command(LEFT, clock::monotonic_ns());
            status = out.status();
            let d = &status.device;
            if d.board.as_deref() == Some("drive") && d.acked_seq.is_some_and(|a| a > 2) && d.fault.is_none()
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(status.device.board.as_deref(), Some("drive"), "{status:?}");
        assert!(status.device.acked_seq.is_some_and(|a| a > 2), "{status:?}");
        assert_eq!(status.device.fault, None);
    }

    #[test]
    fn a_hung_loop_gets_neutral_lines_from_the_host() {
        let (master, path) = pty();
        let board = FakeBoard::start(master);
        let out = output(open_pty(&path), 100, 20);
        // The loop runs until the board drives…
        let is_drive = |s: &(u64, Seen)| matches!(s.1, Seen::Line(c) if c.verb == Verb::Drive);
        for _ in 0..6000 {
            out.command(LEFT, clock::monotonic_ns());
            if board.seen().iter().any(is_drive) {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        // …then hangs. The host keeps refreshing every 20 ms: drive lines while the
        // command is fresh, then N lines at neutral, so the board never needs its own timeout
        // while the vehicle process lives. Were the host's timeout broken, the drive lines
        // would go on for ever and this would never hold.
        let neutral_after_drive = |s: &[(u64, Seen)]| -> Vec<(u64, CommandLine)> {
            let lines: Vec<_> = s
                .iter()
                .filter_map(|(t, s)| if let Seen::Line(c) = s { Some((*t, *c)) } else { None })
                .collect();
            match lines.iter().rposition(|(_, c)| c.verb == Verb::Drive) {
                Some(last_drive) => lines[last_drive + 1..].to_vec(),
                None => Vec::new(),
            }
        };
        let seen = board.wait_for("5 lines after the last drive line", |s| neutral_after_drive(s).len() >= 5);
        let after = neutral_after_drive(&seen);
        let neutral = Pulses { steering_us: 1480, throttle_us: 1500 };
        assert!(after.iter().all(|(_, c)| c.verb == Verb::Neutral && c.pulses == neutral), "{after:?}");
        assert_eq!(out.status().state, crate::actuator::output::OutputState::TimedOut);
    }

    #[test]
    fn a_dead_host_leaves_the_board_at_neutral_by_its_own_timeout() {
        let (master, path) = pty();
        let board = FakeBoard::start(master);
        let mut host = open_pty(&path);
        for _ in 0..5 {
            host.write(LEFT_PULSES).unwrap();
            std::thread::sleep(Duration::from_millis(10));
        }
        board.wait_for("the drive lines", |s| {
            s.iter().filter(|(_, s)| matches!(s, Seen::Line(_))).count() == 7
        });
        assert_eq!(board.lines()[6], CommandLine { verb: Verb::Drive, seq: 7, pulses: LEFT_PULSES });
        // The host dies without a word (the port closes, as at a SIGKILL): the stream stops.
        drop(host);
        let seen = board.wait_for("its own timeout after the last line", |s| {
            matches!(s.last(), Some((_, Seen::Timeout))) && s.iter().any(|(_, s)| matches!(s, Seen::Line(_)))
        });
        let last_line =
            seen.iter().filter(|(_, s)| matches!(s, Seen::Line(_))).map(|(t, _)| *t).max().unwrap();
        let timeout_at = seen.last().unwrap().0;
        assert!(timeout_at >= last_line + BOARD_TIMEOUT_MS * MS);
        // At the neutral the host told it with C, not the firmware's default.
        assert_eq!(*board.output.lock().unwrap(), Pulses { steering_us: 1480, throttle_us: 1500 });
    }

    #[test]
    fn a_stop_is_the_brake_pulse_in_the_next_line() {
        let (master, path) = pty();
        let board = FakeBoard::start(master);
        // No refresh and no timeout within the test: every line answers an order.
        let out = output(open_pty(&path), 3_600_000, 3_600_000);
        let count = |n: usize| {
            move |s: &[(u64, Seen)]| s.iter().filter(|(_, s)| matches!(s, Seen::Line(_))).count() == n
        };
        board.wait_for("C, N and the thread's first N", count(3));
        out.command(LEFT, clock::monotonic_ns());
        board.wait_for("the drive line", count(4));
        out.stop("emergency stop", clock::monotonic_ns());
        board.wait_for("the stop line", count(5));
        let lines = board.lines();
        assert_eq!(lines[3], CommandLine { verb: Verb::Drive, seq: 4, pulses: LEFT_PULSES });
        let brake = Pulses { steering_us: 1480, throttle_us: 1300 };
        assert_eq!(lines[4], CommandLine { verb: Verb::Neutral, seq: 5, pulses: brake });
        // Dropped: neutral last.
        drop(out);
        board.wait_for("the last neutral", count(6));
        let neutral = Pulses { steering_us: 1480, throttle_us: 1500 };
        assert_eq!(board.lines()[5], CommandLine { verb: Verb::Neutral, seq: 6, pulses: neutral });
    }

    #[test]
    fn write_neutral_once_puts_the_board_at_neutral() {
        let (master, path) = pty();
        let board = FakeBoard::start(master);
        let config = ActuatorSection {
            kind: crate::config::ActuatorKind::Serial,
            device: Some(path.into()),
            calibration: calibration(),
            ..ActuatorSection::default()
        };
        let pulses = crate::actuator::write_neutral_once(&config).unwrap();
        let neutral = Pulses { steering_us: 1480, throttle_us: 1500 };
        assert_eq!(pulses, Some(neutral));
        board.wait_for("C, N, N", |s| s.iter().filter(|(_, s)| matches!(s, Seen::Line(_))).count() == 3);
        let lines = board.lines();
        assert_eq!(
            lines.iter().map(|c| c.verb).collect::<Vec<_>>(),
            [Verb::Config, Verb::Neutral, Verb::Neutral]
        );
        assert!(lines.iter().all(|c| c.pulses == neutral));
    }

    #[test]
    fn ads_vehicle_neutral_flags_reach_the_board() {
        use clap::Parser as _;
        let (master, path) = pty();
        let board = FakeBoard::start(master);
        let argv = ["ads-vehicle neutral", "--actuator", "serial", "--actuator-device", path.as_str()];
        crate::actuator::neutral::run(crate::actuator::neutral::NeutralArgs::parse_from(argv)).unwrap();
        board.wait_for("C, N, N", |s| s.iter().filter(|(_, s)| matches!(s, Seen::Line(_))).count() == 3);
        let lines = board.lines();
        assert_eq!(lines[2], CommandLine { verb: Verb::Neutral, seq: 3, pulses: NEUTRAL });
    }

    #[test]
    fn ads_vehicle_calibrate_moves_one_channel_then_neutral_and_saves_the_value() {
        use clap::Parser as _;
        let (master, path) = pty();
        let board = FakeBoard::start(master);
        let dir = std::env::temp_dir().join(format!("ads-calibrate-pty-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("vehicle.toml");
        std::fs::write(&file, "[actuator.calibration]\nsteering_centre_us = 1480\n").unwrap();
        let argv = [
            "ads-vehicle calibrate",
            "--config",
            file.to_str().unwrap(),
            "--actuator",
            "serial",
            "--actuator-device",
            path.as_str(),
            "--channel",
            "steering",
            "--us",
            "1900",
            "--hold-ms",
            "100",
            "--save-as",
            "steering_left_us",
        ];
        let args = crate::actuator::calibrate::CalibrateArgs::parse_from(argv);
        crate::actuator::calibrate::run_until(args, &AtomicBool::new(false)).unwrap();
        let neutral = Pulses { steering_us: 1480, throttle_us: 1500 };
        let held = Pulses { steering_us: 1900, throttle_us: 1500 };
        let seen = board.wait_for("the neutral after the hold", |s| {
            s.iter().any(|(_, s)| matches!(s, Seen::Line(c) if c.pulses == held))
                && matches!(s.last(), Some((_, Seen::Line(c))) if c.verb == Verb::Neutral && c.pulses == neutral)
        });
        let lines: Vec<CommandLine> =
            seen.iter().filter_map(|(_, s)| if let Seen::Line(c) = s { Some(*c) } else { None }).collect();
        // C and N at open, the held pulse as drive lines (throttle at neutral), neutral last.
        assert_eq!(lines[..2].iter().map(|c| c.verb).collect::<Vec<_>>(), [Verb::Config, Verb::Neutral]);
        let (last, middle) = lines[2..].split_last().unwrap();
        assert!(
            !middle.is_empty() && middle.iter().all(|c| c.verb == Verb::Drive && c.pulses == held),
            "{lines:?}"
        );
        assert_eq!((last.verb, last.pulses), (Verb::Neutral, neutral));
        let saved = std::fs::read_to_string(&file).unwrap();
        assert_eq!(saved, "[actuator.calibration]\nsteering_centre_us = 1480\nsteering_left_us = 1900\n");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_missing_port_is_an_error_naming_it_and_what_to_check() {
        let config = ActuatorSection {
            kind: crate::config::ActuatorKind::Serial,
            device: Some("/dev/ttyACM-does-not-exist".into()),
            ..ActuatorSection::default()
        };
        let err = open(&config).unwrap_err().to_string();
        assert!(err.contains("/dev/ttyACM-does-not-exist") && err.contains("plugged in"), "{err}");
    }
}
