//! ads-replay: a recording played back as a vehicle on the vehicle's ports, so a viewer
//! connects to it as to a live car. Messages go out at their recorded receive times (scaled by
//! `--speed`), with the recorded frame ids; timestamps are moved to now, keeping each
//! message's recorded age, so the viewer's latency figures look as they did live.
//!
//! The viewer's own buttons drive it: `pause` (and `emergency_stop`) pause, `resume` resumes,
//! `respawn` seeks: to the start, or with a spawn point N to N seconds into the recording.
//!
//! A replay is honest about being one: every state says `source: "replay"` and carries the
//! replay's own run id and run clock (never the recorded car's), and actions pass the same gate
//! as a vehicle's ([`ads_protocol::gate`]: the key, the vehicle id, this run, expiry, repeats),
//! so a viewer pointed at a replay by mistake never sees a stop "accepted" by something that
//! is not the car. Without a key the action socket is narrowed to loopback, as a vehicle's is.

pub mod publish;

use crate::channels::{Channel, EnvelopeMeta, Recorded};
use crate::frames::RecordedFrame;
use crate::recover::{self, ReadError};
use crate::subscribe::wall_ns;
use ads_protocol::gate::{bind_endpoint, ActionGate, EndpointError, SharedOutcomes, Verdict};
use ads_protocol::{ActionKey, Command, DriveMode, Event, Message, NoticeLevel, RejectReason, VehicleState};
use publish::VehicleEndpoints;
use serde::de::DeserializeOwned;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const STATE_WHILE_HELD: Duration = Duration::from_millis(200);

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error("{} holds no ads messages: is it an ads-record recording?", path.display())]
    Empty { path: PathBuf },
    #[error(transparent)]
    Publish(#[from] publish::PublishError),
    #[error(transparent)]
    Endpoint(#[from] EndpointError),
    #[error("reading random bytes for the run id: {0}")]
    RunId(std::io::Error),
}

/// Actions expiring further ahead than this are refused, as by a vehicle's default.
const MAX_EXPIRY_NS: u64 = 60_000_000_000;

/// One message to send, at `at_ns` after the recording's first.
#[derive(Debug, Clone)]
struct Item {
    at_ns: u64,
    /// Recorded receive − capture: the age it had when it arrived live.
    age_ns: u64,
    message: Message,
    payload: Option<Vec<u8>>,
}

fn parse<B: DeserializeOwned>(data: &[u8]) -> Option<Recorded<B>> {
    serde_json::from_slice(data).ok()
}

/// The ads messages of a recording, in recorded order.
#[derive(Debug)]
pub struct Playlist {
    items: Vec<Item>,
    pub truncated: Option<String>,
    pub frames: usize,
}

impl Playlist {
    pub fn load(path: &Path) -> Result<Self, ReplayError> {
        let reading = recover::read(path)?;
        let first = reading.messages.first().map_or(0, |m| m.log_time);
        let mut items = Vec::new();
        let mut pending_frame: Option<Recorded<ads_protocol::FrameInfo>> = None;
        let item = |envelope: &EnvelopeMeta, log_time: u64, message, payload| Item {
            at_ns: log_time.saturating_sub(first),
            age_ns: log_time.saturating_sub(envelope.capture_ns),
            message,
            payload,
        };
        for m in &reading.messages {
            let parsed = match Channel::by_topic(&m.topic) {
                Some(Channel::Frame) => {
                    pending_frame = parse(&m.data);
                    continue;
                }
                Some(Channel::Image) => pending_frame.take().and_then(|info| {
                    let jpeg = crate::frames::image_jpeg(&m.data)?;
                    let frame = RecordedFrame { info, jpeg, log_ns: m.log_time };
                    Some(item(
                        &frame.info.envelope,
                        m.log_time,
                        Message::Frame(frame.info.body),
                        Some(frame.jpeg),
                    ))
                }),
                Some(Channel::Detection) => parse(&m.data)
                    .map(|r: Recorded<_>| item(&r.envelope, m.log_time, Message::Detection(r.body), None)),
                Some(Channel::State) => parse(&m.data)
                    .map(|r: Recorded<_>| item(&r.envelope, m.log_time, Message::State(r.body), None)),
                Some(Channel::Event) => parse(&m.data)
                    .map(|r: Recorded<_>| item(&r.envelope, m.log_time, Message::Event(r.body), None)),
                Some(Channel::Truth) => parse(&m.data)
                    .map(|r: Recorded<_>| item(&r.envelope, m.log_time, Message::Truth(r.body), None)),
                Some(Channel::Controls) => parse(&m.data)
                    .map(|r: Recorded<_>| item(&r.envelope, m.log_time, Message::Controls(r.body), None)),
                _ => continue,
            };
            items.extend(parsed);
        }
        if items.is_empty() {
            return Err(ReplayError::Empty { path: path.to_path_buf() });
        }
        // Receive times of one recorder only grow, but be safe against a file that mixes runs.
        items.sort_by_key(|i| i.at_ns);
        let frames = items.iter().filter(|i| matches!(i.message, Message::Frame(_))).count();
        Ok(Self { items, truncated: reading.truncated, frames })
    }

    pub fn duration_ns(&self) -> u64 {
        self.items.last().map_or(0, |i| i.at_ns)
    }
}

#[derive(Debug, Clone)]
pub struct ReplayOptions {
    pub broadcast: String,
    pub video: String,
    pub actions: String,
    pub vehicle_id: String,
    /// Recording seconds per real second.
    pub speed: f64,
    pub looping: bool,
    /// The action key: actions must carry its MAC. `None`: the action socket is loopback only.
    pub key: Option<ActionKey>,
}

/// Where in the recording playback stands.
struct Clock {
    /// Recording time at `since`.
    position_ns: u64,
    since: Instant,
    speed: f64,
    paused: bool,
}

impl Clock {
    fn now_ns(&self) -> u64 {
        if self.paused {
            return self.position_ns;
        }
        self.position_ns + (self.since.elapsed().as_secs_f64() * 1e9 * self.speed) as u64
    }

    fn set(&mut self, position_ns: u64, paused: bool) {
        self.position_ns = position_ns;
        self.since = Instant::now();
        self.paused = paused;
    }
}

struct Player<'a> {
    playlist: &'a Playlist,
    out: VehicleEndpoints,
    clock: Clock,
    next: usize,
    last_state: Option<VehicleState>,
    /// The same gate as a vehicle's, for this replay's own run.
    gate: ActionGate,
    outcomes: SharedOutcomes,
    run_id: String,
    run_start: Instant,
    ended_said: bool,
}

impl Player<'_> {
    fn send(&mut self, item: &Item) {
        let now = wall_ns();
        let capture_ns = now.saturating_sub(item.age_ns);
        let mut message = item.message.clone();
        match &mut message {
            Message::Detection(d) => {
                // The detector's own times, moved with the capture time.
                let shift = |t: u64| {
                    if t == 0 {
                        0
                    } else {
                        t.saturating_add(capture_ns).saturating_sub(d.capture_ns)
                    }
                };
                d.read_ns = shift(d.read_ns);
                d.control_read_ns = shift(d.control_read_ns);
                d.capture_ns = capture_ns;
            }
            Message::State(s) => {
                s.paused = self.clock.paused;
                self.dress(s);
                self.last_state = Some(s.clone());
            }
            _ => {}
        }
        self.out.publish(capture_ns, &message, item.payload.as_deref());
    }

    fn seek(&mut self, position_ns: u64) {
        self.next = self.playlist.items.partition_point(|i| i.at_ns < position_ns);
        self.clock.set(position_ns, self.clock.paused);
        self.ended_said = false;
    }

    fn held_state(&mut self) {
        if let Some(mut state) = self.last_state.clone() {
            state.paused = self.clock.paused;
            if self.clock.paused {
                state.mode = DriveMode::Paused;
            }
            state.fps = 0.0;
            self.dress(&mut state);
            self.out.publish(wall_ns(), &Message::State(state), None);
        }
    }

    fn notice(&mut self, text: String) {
        tracing::info!("{text}");
        self.out.publish(wall_ns(), &Message::Event(Event::Notice { level: NoticeLevel::Info, text }), None);
    }

    /// A recorded state as this replay's: its source, run id and run clock (what actions
    /// must name), never the recorded car's.
    fn dress(&self, state: &mut VehicleState) {
        state.source = "replay".into();
        state.commands.run_id = self.run_id.clone();
        state.commands.run_ns = self.run_ns();
    }

    fn run_ns(&self) -> u64 {
        u64::try_from(self.run_start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn act(&mut self, parts: &[Vec<u8>]) {
        let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
        let ack = match self.gate.judge(&refs, self.run_ns()) {
            Verdict::Accept(accepted) => {
                self.gate.record(&accepted);
                let (accepted_now, reason, detail) = self.carry_out(&accepted.action.command);
                let ack = Event::Ack {
                    action_id: accepted.action.id.clone(),
                    sender: accepted.action.sender.clone(),
                    seq: accepted.seq,
                    accepted: accepted_now,
                    reason,
                    detail,
                    persisted: None,
                };
                let mut log = self.outcomes.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                log.decide(&accepted.action.id, &ack);
                ack
            }
            // A replay moves nothing a dead-man would stop.
            Verdict::Heartbeat | Verdict::Drive(_) | Verdict::InProgress => return,
            Verdict::Repeat(ack) => ack,
            Verdict::Reject(rejection) => {
                tracing::warn!(reason = ?rejection.reason, detail = %rejection.detail, "action rejected");
                rejection.into_event()
            }
        };
        self.out.publish(wall_ns(), &Message::Event(ack), None);
    }

    fn carry_out(&mut self, command: &Command) -> (bool, Option<RejectReason>, String) {
        let position = self.clock.now_ns();
        match command {
            Command::Pause => {
                self.clock.set(position, true);
                (true, None, format!("replay paused at {:.1} s", position as f64 / 1e9))
            }
            Command::EmergencyStop => {
                self.clock.set(position, true);
                let detail = format!(
                    "THIS IS A REPLAY, not a car: paused at {:.1} s; no car was stopped",
                    position as f64 / 1e9
                );
                (true, None, detail)
            }
            Command::Reset => (true, None, "a replay has no e-stop latch to release".into()),
            Command::Heartbeat | Command::Drive { .. } => (true, None, String::new()),
            Command::SetDriveMode { mode } => (
                false,
                Some(RejectReason::NotAllowed),
                format!("THIS IS A REPLAY, not a car: there is nothing to drive in {} mode", mode.as_str()),
            ),
            Command::Resume => {
                self.clock.set(position, false);
                (true, None, format!("replay resumed at {:.1} s", position as f64 / 1e9))
            }
            Command::Respawn { spawn_point } => {
                let seconds = spawn_point.unwrap_or(0);
                let target = u64::from(seconds) * 1_000_000_000;
                if target > self.playlist.duration_ns() {
                    return (
                        false,
                        Some(RejectReason::NotAllowed),
                        format!(
                            "the recording is only {:.1} s long",
                            self.playlist.duration_ns() as f64 / 1e9
                        ),
                    );
                }
                self.seek(target);
                (true, None, format!("replay moved to {seconds} s"))
            }
            Command::SetTargetSpeed { .. } => {
                (false, Some(RejectReason::NotAllowed), "a replay cannot change the car's speed".into())
            }
            Command::CalibratePulse { .. } | Command::CalibrateRelease | Command::CalibrateSave { .. } => {
                (false, Some(RejectReason::NotAllowed), "a replay has no actuator to calibrate".into())
            }
        }
    }

    fn run(&mut self, stop: &AtomicBool, looping: bool) {
        let mut last_held = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            let position = self.clock.now_ns();
            while let Some(item) = self.playlist.items.get(self.next).filter(|i| i.at_ns <= position) {
                let item = item.clone();
                self.send(&item);
                self.next += 1;
            }
            let at_end = self.next >= self.playlist.items.len();
            if at_end && looping {
                self.seek(0);
                continue;
            }
            if at_end && !self.ended_said {
                self.ended_said = true;
                self.notice("end of the recording (respawn plays it again)".into());
            }
            if (self.clock.paused || at_end) && last_held.elapsed() >= STATE_WHILE_HELD {
                last_held = Instant::now();
                self.held_state();
            }
            let wait = match self.playlist.items.get(self.next) {
                Some(next) if !self.clock.paused => {
                    let ahead_ns = next.at_ns.saturating_sub(self.clock.now_ns()) as f64 / self.clock.speed;
                    Duration::from_nanos(ahead_ns as u64).min(Duration::from_millis(50))
                }
                _ => Duration::from_millis(50),
            };
            if let Some(parts) = self.out.next_action(wait) {
                self.act(&parts);
            }
        }
    }
}

/// Plays `path` until `stop`.
pub fn replay(path: &Path, options: &ReplayOptions, stop: &AtomicBool) -> Result<(), ReplayError> {
    let playlist = Playlist::load(path)?;
    if let Some(why) = &playlist.truncated {
        tracing::warn!(
            "{} is truncated ({why}): playing the {} frames before it",
            path.display(),
            playlist.frames
        );
    }
    let actions = bind_endpoint(&options.actions, options.key.is_some())?;
    let out = VehicleEndpoints::bind(&options.broadcast, &options.video, &actions, &options.vehicle_id)?;
    let run_id = random_run_id().map_err(ReplayError::RunId)?;
    let outcomes = SharedOutcomes::default();
    let gate = ActionGate::new(
        &options.vehicle_id,
        &run_id,
        options.key.clone(),
        MAX_EXPIRY_NS,
        std::sync::Arc::clone(&outcomes),
    );
    tracing::info!(
        path = %path.display(),
        frames = playlist.frames,
        seconds = playlist.duration_ns() as f64 / 1e9,
        speed = options.speed,
        broadcast = %options.broadcast,
        video = %options.video,
        actions = %options.actions,
        "replaying"
    );
    let clock = Clock { position_ns: 0, since: Instant::now(), speed: options.speed, paused: false };
    let mut player = Player {
        playlist: &playlist,
        out,
        clock,
        next: 0,
        last_state: None,
        gate,
        outcomes,
        run_id,
        run_start: Instant::now(),
        ended_said: false,
    };
    player.run(stop, options.looping);
    Ok(())
}

/// 16 hex digits from the kernel's random source: a run id no recording can hold.
fn random_run_id() -> std::io::Result<String> {
    use std::io::Read as _;
    let mut bytes = [0u8; 8];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}
