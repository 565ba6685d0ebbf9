//! ads-replay: a recording played back as a vehicle on the vehicle's ports, so a viewer
//! connects to it as to a live car. Messages go out at their recorded receive times (scaled by
//! `--speed`), with the recorded frame ids; timestamps are moved to now, keeping each
//! message's recorded age, so the viewer's latency figures look as they did live.
//!
//! The viewer's own buttons drive it: `pause` (and `emergency_stop`) pause, `resume` resumes,
//! `respawn` seeks: to the start, or with a spawn point N to N seconds into the recording.
//! Every action is acknowledged on `event` like the vehicle does; repeats get the same answer.

pub mod publish;

use crate::channels::{Channel, EnvelopeMeta, Recorded};
use crate::frames::RecordedFrame;
use crate::recover::{self, ReadError};
use crate::subscribe::wall_ns;
use ads_protocol::{Command, DriveMode, Event, Message, NoticeLevel, RejectReason, VehicleState};
use publish::{Incoming, VehicleEndpoints};
use serde::de::DeserializeOwned;
use std::collections::HashMap;
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
}

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
    /// Outcomes of actions by id, so a retransmission gets the same answer.
    answered: HashMap<String, (bool, Option<RejectReason>, String)>,
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
            self.out.publish(wall_ns(), &Message::State(state), None);
        }
    }

    fn notice(&mut self, text: String) {
        tracing::info!("{text}");
        self.out.publish(wall_ns(), &Message::Event(Event::Notice { level: NoticeLevel::Info, text }), None);
    }

    fn act(&mut self, seq: u64, action: ads_protocol::Action) {
        // Heartbeats are noted by a vehicle, never answered; a replay moves nothing to stop.
        if matches!(action.command, Command::Heartbeat) {
            return;
        }
        // Expiry is judged on the run clock of the state being replayed, which is what the
        // viewer addressed the action against (protocol.md 5).
        let run_now_ns = self.last_state.as_ref().map_or(0, |s| s.commands.run_ns);
        let outcome = match self.answered.get(&action.id) {
            Some(outcome) => outcome.clone(),
            None => {
                let expired = action.run.expires_run_ns < run_now_ns
                    && !matches!(action.command, Command::EmergencyStop);
                let outcome = if expired {
                    (false, Some(RejectReason::Expired), "expired before it arrived".to_string())
                } else {
                    self.carry_out(&action.command)
                };
                self.answered.insert(action.id.clone(), outcome.clone());
                outcome
            }
        };
        let (accepted, reason, detail) = outcome;
        let ack = Event::Ack {
            action_id: action.id,
            sender: action.sender,
            seq,
            accepted,
            reason,
            detail,
            persisted: None,
        };
        self.out.publish(wall_ns(), &Message::Event(ack), None);
    }

    fn carry_out(&mut self, command: &Command) -> (bool, Option<RejectReason>, String) {
        let position = self.clock.now_ns();
        match command {
            Command::Pause | Command::EmergencyStop => {
                self.clock.set(position, true);
                (true, None, format!("replay paused at {:.1} s", position as f64 / 1e9))
            }
            Command::Reset => (true, None, "a replay has no e-stop latch to release".into()),
            Command::Heartbeat => (true, None, String::new()),
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
            match self.out.next_action(wait) {
                Some(Incoming::Action { seq, action }) => self.act(seq, action),
                Some(Incoming::Malformed(e)) => tracing::warn!("malformed action, ignored: {e}"),
                None => {}
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
    let out =
        VehicleEndpoints::bind(&options.broadcast, &options.video, &options.actions, &options.vehicle_id)?;
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
        answered: HashMap::new(),
        ended_said: false,
    };
    player.run(stop, options.looping);
    Ok(())
}
