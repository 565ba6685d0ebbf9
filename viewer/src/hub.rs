//! The viewer's picture of the vehicle: the newest frame with its overlay, the newest state,
//! telemetry history, events, the link's health and our pending actions. The ZeroMQ link
//! thread feeds it; every browser and MJPEG client reads from it without ever slowing the
//! link or each other (newest-wins `watch` channels, a bounded `broadcast` for events).

use crate::actions::{ActionBook, Outcome, RunView};
use crate::config::ViewerConfig;
use crate::freshness::{Freshness, Verdict};
use crate::metrics::Metrics;
use crate::overlay::{self, OverlayInputs};
pub use crate::packet::{wall_ns, FramePacket};
use crate::packet::{DecodedUnit, ForwardUnit, KeyframeWish};
use crate::page::{Outbound, PageMessage, StateReport, ViewerCounts};
use crate::teleop::{Control, ControlView};
use ads_protocol::{
    ActionKey, Command, Detections, Event, LaneTruthMsg, Message, NoticeLevel, VehicleState, WireMessage,
};
use serde::Serialize;
use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How long one presence report from a page keeps the operator heartbeat going.
pub const PRESENCE_HOLDS: Duration = Duration::from_millis(1000);
use tokio::sync::{broadcast, watch};

/// Telemetry kept for the plots.
const HISTORY: Duration = Duration::from_secs(60);
/// At most this many history samples per second (state arrives at the vehicle's fps).
const HISTORY_HZ: u64 = 10;
/// Events kept for browsers that connect later.
const EVENT_LOG: usize = 50;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkStatus {
    /// Nothing heard yet.
    Connecting,
    Live,
    /// Heard before, silent for longer than the link timeout.
    Lost,
}

/// Latest latency of each hop, milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Hops {
    pub capture_to_detection_ms: Option<f64>,
    pub detection_to_vehicle_ms: Option<f64>,
    pub vehicle_to_viewer_ms: Option<f64>,
    pub viewer_to_browser_ms: Option<f64>,
    pub capture_to_browser_ms: Option<f64>,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Sample {
    pub t_ms: u64,
    pub speed_mps: f64,
    pub steering_deg: f64,
    pub offset_m: Option<f64>,
    pub truth_offset_m: Option<f64>,
    pub latency_ms: Option<f64>,
}

#[derive(Debug)]
struct Inner {
    vehicle_id: Option<String>,
    other_vehicles_warned: bool,
    video_port_warned: bool,
    detection: Option<Detections>,
    truth: VecDeque<LaneTruthMsg>,
    state: Option<VehicleState>,
    last_heard: Option<Instant>,
    link: LinkStatus,
    last_frame_id: Option<u64>,
    packet_seq: u64,
    history: VecDeque<Sample>,
    last_sample_ms: u64,
    events: VecDeque<Arc<Outbound>>,
    hops: Hops,
    actions: ActionBook,
    /// The vehicle's run, from its newest state: what actions are addressed to.
    run: Option<RunView>,
    last_heartbeat: Option<Instant>,
    /// Until when a page's last presence report holds (see [`Hub::note_presence`]).
    operator_present_until: Option<Instant>,
    video: crate::video::VideoLinkView,
    /// Which browser drives (manual driving).
    control: Control,
    /// Which states are shown (not a backlog, never older than the newest shown).
    freshness: Freshness,
}

#[derive(Debug)]
pub struct Hub {
    pub config: ViewerConfig,
    pub metrics: Metrics,
    /// Every message the link receives, for the recorder and the Foxglove feed.
    pub fanout: crate::fanout::Fanout,
    frames: watch::Sender<Option<Arc<FramePacket>>>,
    states: watch::Sender<Option<Arc<Outbound>>>,
    events: broadcast::Sender<Arc<Outbound>>,
    actions_out: Mutex<std::sync::mpsc::Sender<Vec<Vec<u8>>>>,
    action_key: Option<ActionKey>,
    /// Someone (this viewer's decoder, a browser's) needs an H.264 keyframe.
    keyframe_wish: Arc<KeyframeWish>,
    /// Browsers connected that decode H.264 (for `codec = "auto"`).
    h264_browsers: std::sync::atomic::AtomicUsize,
    /// Numbers the browsers (websockets) for control.
    next_client: std::sync::atomic::AtomicU64,
    inner: Mutex<Inner>,
}

/// Why a browser's drive command did not go to the vehicle.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DriveRefused {
    #[error("you do not have control ({}): press Take control", .0.as_deref().map_or("nobody drives".to_string(), |l| format!("{l} drives")))]
    NotInControl(Option<String>),
    #[error("steering and throttle must be numbers")]
    Invalid,
    #[error("not connected to the vehicle ({0:?})")]
    NotConnected(LinkStatus),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SendError {
    #[error("not connected to the vehicle ({0:?}); the action was not sent")]
    NotConnected(LinkStatus),
    #[error("the link to the vehicle is shut down")]
    LinkClosed,
}

impl Hub {
    /// The hub and the receiving end of its outgoing actions (for the link thread).
    pub fn new(
        config: ViewerConfig,
        action_key: Option<ActionKey>,
    ) -> (Arc<Self>, std::sync::mpsc::Receiver<Vec<Vec<u8>>>) {
        let (actions_tx, actions_rx) = std::sync::mpsc::channel();
        let actions = ActionBook::new(&config.sender, Duration::from_millis(config.ack_timeout_ms));
        let hub = Self {
            metrics: Metrics::default(),
            fanout: crate::fanout::Fanout::default(),
            frames: watch::Sender::new(None),
            states: watch::Sender::new(None),
            events: broadcast::Sender::new(256),
            actions_out: Mutex::new(actions_tx),
            action_key,
            keyframe_wish: Arc::default(),
            next_client: std::sync::atomic::AtomicU64::new(1),
            h264_browsers: std::sync::atomic::AtomicUsize::new(0),
            inner: Mutex::new(Inner {
                vehicle_id: (!config.vehicle_id.is_empty()).then(|| config.vehicle_id.clone()),
                other_vehicles_warned: false,
                video_port_warned: false,
                detection: None,
                truth: VecDeque::new(),
                state: None,
                last_heard: None,
                link: LinkStatus::Connecting,
                last_frame_id: None,
                packet_seq: 0,
                history: VecDeque::new(),
                last_sample_ms: 0,
                events: VecDeque::new(),
                hops: Hops::default(),
                actions,
                run: None,
                last_heartbeat: None,
                operator_present_until: None,
                video: crate::video::VideoLinkView::default(),
                control: Control::default(),
                freshness: Freshness::new(Duration::from_millis(config.stale_state_ms)),
            }),
            config,
        };
        (Arc::new(hub), actions_rx)
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain data behind; keep serving it.
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn frames(&self) -> watch::Receiver<Option<Arc<FramePacket>>> {
        self.frames.subscribe()
    }

    pub fn states(&self) -> watch::Receiver<Option<Arc<Outbound>>> {
        self.states.subscribe()
    }

    pub fn events(&self) -> broadcast::Receiver<Arc<Outbound>> {
        self.events.subscribe()
    }

    pub fn link(&self) -> LinkStatus {
        self.inner().link
    }

    /// What a browser needs on connecting: who we watch, the link, the plots' history and the
    /// recent events.
    pub fn hello(&self) -> (PageMessage, Vec<Arc<Outbound>>) {
        let inner = self.inner();
        let hello = PageMessage::Hello {
            vehicle: inner.vehicle_id.clone(),
            link: inner.link,
            sender: inner.actions.sender().to_string(),
            history: inner.history.iter().copied().collect(),
            control: inner.control.view(),
            drive_lease_ms: self.config.drive_lease_ms,
        };
        (hello, inner.events.iter().cloned().collect())
    }

    /// What the video link delivers now (the link thread sets it per frame).
    pub fn set_video_view(&self, view: crate::video::VideoLinkView) {
        self.inner().video = view;
    }

    fn publish_event(&self, inner: &mut Inner, message: PageMessage) {
        let event = Outbound::new(message);
        if inner.events.len() == EVENT_LOG {
            inner.events.pop_front();
        }
        inner.events.push_back(Arc::clone(&event));
        // No receivers is fine: nobody is watching.
        let _ = self.events.send(event);
    }

    /// Where a keyframe is wished for (the link thread asks the vehicle, rate-limited).
    pub fn keyframe_wish(&self) -> &Arc<KeyframeWish> {
        &self.keyframe_wish
    }

    /// A browser that decodes H.264 came (`true`) or went (`false`).
    pub fn note_h264_browser(&self, came: bool) {
        if came {
            self.h264_browsers.fetch_add(1, Ordering::Relaxed);
        } else {
            self.h264_browsers.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// The codec to ask the vehicle for now. `auto`: H.264 while a page decodes it, except
    /// while a recording or a Foxglove client shares the stream (they store the vehicle's
    /// full JPEG pictures, not ones made here from a smaller H.264 rung).
    /// The action key, which also signs the video session's hellos (a signed session is
    /// never displaced by unsigned ones; docs/protocol.md 2.1).
    pub fn action_key(&self) -> Option<&ActionKey> {
        self.action_key.as_ref()
    }

    pub fn codec(&self) -> &str {
        let h264_pages = self.h264_browsers.load(Ordering::Relaxed) > 0;
        match self.config.codec.as_str() {
            crate::config::CODEC_AUTO if h264_pages && !self.fanout.active() => ads_protocol::CODEC_H264,
            crate::config::CODEC_AUTO => ads_protocol::CODEC_JPEG,
            codec => codec,
        }
    }

    /// Asks the vehicle for an H.264 keyframe.
    pub fn want_keyframe(&self) {
        self.keyframe_wish.want();
    }

    /// One decoded message from the vehicle.
    pub fn on_message(&self, message: WireMessage<'_>, recv_ns: u64) {
        self.on_message_with(message, recv_ns, None);
    }

    /// One message; for an H.264 frame, `h264` is what the decoder made of it (its JPEG
    /// replaces the payload for every JPEG consumer).
    pub fn on_message_with(&self, message: WireMessage<'_>, recv_ns: u64, h264: Option<DecodedUnit>) {
        self.metrics.messages_received.fetch_add(1, Ordering::Relaxed);
        let mut guard = self.inner();
        let inner = &mut *guard;
        match &inner.vehicle_id {
            Some(id) if *id != message.vehicle => {
                if !inner.other_vehicles_warned {
                    inner.other_vehicles_warned = true;
                    tracing::warn!(ours = %id, other = %message.vehicle, "ignoring messages from another vehicle");
                }
                return;
            }
            Some(_) => {}
            None => {
                tracing::info!(vehicle = %message.vehicle, "watching vehicle");
                inner.vehicle_id = Some(message.vehicle.clone());
            }
        }
        inner.last_heard = Some(Instant::now());
        // Live only once a state was heard: until then the vehicle's run is unknown, and an
        // action (other than an e-stop, which goes anyway) could not name it.
        let commandable = inner.run.is_some() || matches!(message.message, Message::State(_));
        if inner.link != LinkStatus::Live && commandable {
            tracing::info!("vehicle link up");
            let back = inner.link == LinkStatus::Lost;
            inner.link = LinkStatus::Live;
            self.publish_event(inner, PageMessage::Link { status: LinkStatus::Live, back });
        }
        match message.message {
            Message::Frame(info) => {
                let (jpeg, unit) = match h264 {
                    Some(decoded) => (decoded.jpeg, Some(decoded.unit)),
                    None => match message.payload {
                        // An H.264 unit that did not go through the decoder is never shown.
                        Some(jpeg) if info.codec == ads_protocol::CODEC_JPEG => {
                            if let Err(e) = crate::burn::check_jpeg(
                                jpeg,
                                info.width,
                                info.height,
                                self.config.max_frame_pixels,
                            ) {
                                self.metrics.messages_malformed.fetch_add(1, Ordering::Relaxed);
                                tracing::debug!("frame {} refused: {e}", info.frame_id);
                                return;
                            }
                            (crate::packet::Jpeg::ready(jpeg.to_vec()), None)
                        }
                        _ => return,
                    },
                };
                // Detections and truth are in the captured frame's pixels; a reduced tier's
                // picture is smaller.
                let source = match (info.source_width, info.source_height) {
                    (0, _) | (_, 0) => (info.width, info.height),
                    size => size,
                };
                self.on_frame(
                    inner,
                    info.frame_id,
                    source,
                    (info.width, info.height),
                    message.capture_ns,
                    recv_ns,
                    (jpeg, unit),
                );
            }
            Message::Detection(d) => {
                if d.read_ns > 0 {
                    inner.hops.capture_to_detection_ms = Some(ms_between(d.capture_ns, d.read_ns));
                    if d.control_read_ns > 0 {
                        let done_ns = d.read_ns + u64::from(d.processing_us) * 1000;
                        inner.hops.detection_to_vehicle_ms = Some(ms_between(done_ns, d.control_read_ns));
                    }
                }
                inner.detection = Some(d);
            }
            Message::Truth(t) => {
                if inner.truth.len() == 8 {
                    inner.truth.pop_front();
                }
                inner.truth.push_back(t);
            }
            Message::State(s) => self.on_state(inner, s, message.send_ns, recv_ns),
            Message::Event(Event::Ack { action_id, sender, accepted, reason, detail, .. }) => {
                if let Some(outcome) =
                    inner.actions.acknowledge(&action_id, &sender, accepted, reason, &detail)
                {
                    let counter = if accepted {
                        &self.metrics.actions_accepted
                    } else {
                        &self.metrics.actions_rejected
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                    self.publish_outcome(inner, &outcome);
                }
            }
            Message::Event(Event::Notice { level, text }) => {
                self.publish_event(inner, PageMessage::Notice { level, text, t_ms: recv_ns / 1_000_000 });
            }
            // Actions are what viewers send; one on the vehicle's stream is not for us. The
            // per-frame controls are for recorders; the page gets the same from state.
            Message::Action(_) | Message::Controls(_) => {}
        }
    }

    #[allow(clippy::too_many_arguments, reason = "the fields of one frame message")]
    fn on_frame(
        &self,
        inner: &mut Inner,
        frame_id: u64,
        (width, height): (u32, u32),
        jpeg_size: (u32, u32),
        capture_ns: u64,
        recv_ns: u64,
        (jpeg, h264): (Arc<crate::packet::Jpeg>, Option<ForwardUnit>),
    ) {
        self.metrics.frames_received.fetch_add(1, Ordering::Relaxed);
        match inner.last_frame_id {
            Some(last) if frame_id <= last => {
                // Frame ids only go back when the vehicle restarted (older vehicles do not
                // send their start time; newer ones are caught by it before any frame).
                self.on_restart(inner, format!("frame ids went from {last} back to {frame_id}"), recv_ns);
            }
            Some(last) => {
                self.metrics.frames_missed.fetch_add(frame_id - last - 1, Ordering::Relaxed);
            }
            None => {}
        }
        inner.last_frame_id = Some(frame_id);
        let latency = ms_between(capture_ns, recv_ns);
        self.metrics.vehicle_to_viewer.observe_ms(latency);
        inner.hops.vehicle_to_viewer_ms = Some(latency);
        let truth = inner.truth.iter().rev().find(|t| t.frame_id == frame_id).or(inner.truth.back());
        let overlay = overlay::compute(OverlayInputs {
            width,
            height,
            capture_ns,
            detection: inner.detection.as_ref(),
            truth,
            state: inner.state.as_ref(),
            stale_detection_ms: self.config.stale_detection_ms,
            link_lost: false,
        })
        .scaled_to(jpeg_size.0, jpeg_size.1);
        let overlay_json = serde_json::to_string(&overlay).unwrap_or_else(|_| "null".into());
        inner.packet_seq += 1;
        let packet = FramePacket {
            packet_seq: inner.packet_seq,
            frame_id,
            capture_ns,
            recv_ns,
            jpeg,
            h264,
            overlay,
            overlay_json,
        };
        self.frames.send_replace(Some(Arc::new(packet)));
    }

    /// A new run of the vehicle: a new scene, nothing of the old one applies.
    fn on_restart(&self, inner: &mut Inner, why: String, recv_ns: u64) {
        inner.detection = None;
        inner.truth.clear();
        inner.last_frame_id = None;
        let text = format!("vehicle restarted ({why})");
        tracing::info!("{text}");
        self.publish_event(
            inner,
            PageMessage::Notice { level: NoticeLevel::Info, text, t_ms: recv_ns / 1_000_000 },
        );
    }

    fn on_state(&self, inner: &mut Inner, state: VehicleState, sent_ns: u64, recv_ns: u64) {
        match inner.freshness.judge(state.started_ns, sent_ns, recv_ns) {
            Verdict::Show => {}
            verdict => {
                let n = self.metrics.states_discarded.fetch_add(1, Ordering::Relaxed);
                if n % 100 == 0 {
                    tracing::debug!(?verdict, "state not shown ({} so far)", n + 1);
                }
                return;
            }
        }
        let previous = inner.state.as_ref().map_or(0, |s| s.started_ns);
        if previous != 0 && state.started_ns != 0 && state.started_ns != previous {
            self.on_restart(inner, "its start time changed".into(), recv_ns);
        }
        if !state.commands.run_id.is_empty() {
            inner.run = Some(RunView {
                run_id: state.commands.run_id.clone(),
                run_ns: state.commands.run_ns,
                seen: Instant::now(),
            });
        }
        let port = state.link.video_port;
        if port != 0
            && !inner.video_port_warned
            && !self.config.video.is_empty()
            && !self.config.video.ends_with(&format!(":{port}"))
        {
            inner.video_port_warned = true;
            tracing::warn!(
                ours = %self.config.video,
                "the vehicle's video socket is on port {port}, not where we look for it: pass --video"
            );
        }
        let t_ms = recv_ns / 1_000_000;
        let sample = Sample {
            t_ms,
            speed_mps: state.speed_mps,
            steering_deg: state.steering_rad.to_degrees(),
            offset_m: inner
                .detection
                .as_ref()
                .and_then(|d| d.lanes.as_ref())
                .map(|l| f64::from(l.lateral_offset_m)),
            truth_offset_m: state.truth_lateral_offset_m,
            latency_ms: inner.hops.vehicle_to_viewer_ms,
        };
        if t_ms >= inner.last_sample_ms + 1000 / HISTORY_HZ {
            inner.last_sample_ms = t_ms;
            inner.history.push_back(sample);
            let horizon = t_ms.saturating_sub(HISTORY.as_millis() as u64);
            while inner.history.front().is_some_and(|s| s.t_ms < horizon) {
                inner.history.pop_front();
            }
        }
        let report = StateReport {
            state: state.clone(),
            sent_ns,
            sample,
            hops: inner.hops,
            video: inner.video.clone(),
            viewer: ViewerCounts {
                frames_received: self.metrics.frames_received.load(Ordering::Relaxed),
                frames_missed: self.metrics.frames_missed.load(Ordering::Relaxed),
                frames_dropped_clients: self.metrics.frames_dropped_clients.load(Ordering::Relaxed),
                clients: self.metrics.clients.load(Ordering::Relaxed),
            },
        };
        inner.state = Some(state);
        self.states.send_replace(Some(Outbound::new(PageMessage::State(Box::new(report)))));
    }

    fn publish_outcome(&self, inner: &mut Inner, outcome: &Outcome) {
        self.publish_event(inner, PageMessage::Ack { outcome: outcome.clone() });
    }

    /// Link health, retransmissions, the operator heartbeat and unanswered actions; the link
    /// thread calls this a few times a second.
    pub fn tick(&self, now: Instant) {
        let mut inner = self.inner();
        let timeout = Duration::from_millis(self.config.link_timeout_ms);
        if inner.link == LinkStatus::Live && inner.last_heard.is_some_and(|t| now.duration_since(t) > timeout)
        {
            inner.link = LinkStatus::Lost;
            self.metrics.link_losses.fetch_add(1, Ordering::Relaxed);
            tracing::warn!("vehicle silent for more than {} ms: link lost", timeout.as_millis());
            self.publish_event(&mut inner, PageMessage::Link { status: LinkStatus::Lost, back: false });
        }
        for outcome in inner.actions.expire(now) {
            self.metrics.actions_unanswered.fetch_add(1, Ordering::Relaxed);
            self.publish_outcome(&mut inner, &outcome);
        }
        let mut out = inner.actions.due(now);
        self.metrics.actions_retransmitted.fetch_add(out.len() as u64, Ordering::Relaxed);
        // Dead-man: a person is there (a page reported itself visible and used, lately) and
        // the vehicle is heard. An open websocket alone (a forgotten tab, a script) is not.
        let heartbeat_every = Duration::from_millis(self.config.heartbeat_ms);
        let present = inner.operator_present_until.is_some_and(|until| now < until);
        if present
            && inner.link == LinkStatus::Live
            && inner.last_heartbeat.is_none_or(|t| now.saturating_duration_since(t) >= heartbeat_every)
        {
            if let (Some(vehicle), Some(run)) = (inner.vehicle_id.clone(), inner.run.clone()) {
                inner.last_heartbeat = Some(now);
                let (beat, seq) = inner.actions.create(Command::Heartbeat, Some(&run), now);
                out.push(ads_protocol::encode_action(
                    &vehicle,
                    seq,
                    wall_ns(),
                    &beat,
                    self.action_key.as_ref(),
                ));
            }
        }
        drop(inner);
        if !out.is_empty() {
            let sender = self.actions_out.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            for parts in out {
                let _ = sender.send(parts);
            }
        }
    }

    /// A page's report of its operator: `visible` (Page Visibility API) and the time since its
    /// last input. A present report holds for [`PRESENCE_HOLDS`]; pages send one every 250 ms,
    /// so a hidden, closed or idle page stops the heartbeat within that time.
    pub fn note_presence(&self, visible: bool, input_age_ms: u64, now: Instant) {
        if visible && input_age_ms <= self.config.operator_input_ms {
            self.inner().operator_present_until = Some(now + PRESENCE_HOLDS);
        }
    }

    /// Sends `command` to the vehicle, again and again until it is answered; its outcome
    /// arrives later as an `ack` event carrying `request_id`. An emergency stop is taken
    /// whatever the link's state (it is retried until the vehicle confirms it); anything else
    /// needs a live link.
    pub fn send_action(&self, command: Command, request_id: String) -> Result<String, SendError> {
        let mut inner = self.inner();
        let estop = command == Command::EmergencyStop;
        let live = inner.link == LinkStatus::Live;
        let vehicle = match (inner.vehicle_id.clone(), live, estop) {
            (Some(vehicle), true, _) => vehicle,
            (Some(vehicle), false, true) => vehicle,
            // Nobody heard yet: an e-stop goes to whichever vehicle is on the action endpoint.
            (None, _, true) => "*".into(),
            _ => return Err(SendError::NotConnected(inner.link)),
        };
        let now = Instant::now();
        let run = inner.run.clone();
        let (action, seq) = inner.actions.create(command, run.as_ref(), now);
        let parts = ads_protocol::encode_action(&vehicle, seq, wall_ns(), &action, self.action_key.as_ref());
        inner.actions.track(&action, request_id, parts.clone(), now);
        drop(inner);
        self.actions_out
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .send(parts)
            .map_err(|_| SendError::LinkClosed)?;
        self.metrics.actions_sent.fetch_add(1, Ordering::Relaxed);
        tracing::info!(id = %action.id, command = ?action.command, "action sent");
        Ok(action.id)
    }

    /// Where the action `action_id` stands (pending, or its recent outcome).
    pub fn action_status(&self, action_id: &str) -> Option<crate::actions::ActionStatus> {
        self.inner().actions.status(action_id)
    }

    /// A number for a new browser (its websocket), for control.
    pub fn register_client(&self) -> u64 {
        self.next_client.fetch_add(1, Ordering::Relaxed)
    }

    /// `client` takes control of driving from this viewer ("take control").
    pub fn take_control(&self, client: u64, label: &str) {
        let mut inner = self.inner();
        if let Some(view) = inner.control.take(client, label) {
            tracing::info!(client, label, "takes control");
            self.publish_control(&mut inner, &view);
        }
    }

    /// `client` lets go of control (the button, or its websocket closed).
    pub fn release_control(&self, client: u64) {
        let mut inner = self.inner();
        if let Some(view) = inner.control.release(client) {
            tracing::info!(client, "lets go of control");
            self.publish_control(&mut inner, &view);
        }
    }

    fn publish_control(&self, inner: &mut Inner, view: &ControlView) {
        self.publish_event(inner, PageMessage::Control { control: view.clone() });
    }

    /// Sends one `drive` command from `client`, who must hold control: never tracked or
    /// retransmitted (the next one replaces it), leased for `drive_lease_ms` and expiring soon
    /// after on the vehicle's clock, so a command that queued on the way gets no fresh lease.
    /// `issued_ns`: the operator's input on the wall clock (0: unknown).
    pub fn send_drive(
        &self,
        client: u64,
        steering: f64,
        throttle: f64,
        issued_ns: u64,
    ) -> Result<(), DriveRefused> {
        let mut inner = self.inner();
        if !inner.control.holds(client) {
            return Err(DriveRefused::NotInControl(inner.control.view().label));
        }
        if !(steering.is_finite() && throttle.is_finite()) {
            return Err(DriveRefused::Invalid);
        }
        let (Some(vehicle), Some(run), LinkStatus::Live) =
            (inner.vehicle_id.clone(), inner.run.clone(), inner.link)
        else {
            return Err(DriveRefused::NotConnected(inner.link));
        };
        let now = Instant::now();
        // Someone driving is present (the dead-man's heartbeat goes on).
        inner.operator_present_until = Some(now + PRESENCE_HOLDS);
        let lease_ms = self.config.drive_lease_ms;
        let command = Command::Drive {
            steering: steering.clamp(-1.0, 1.0),
            throttle: throttle.clamp(-1.0, 1.0),
            lease_ms,
            issued_ns,
        };
        // The run clock we estimate lags the vehicle's by a state's transit; twice the lease
        // leaves room for that and still ends a command that sat in a queue.
        let ttl = Duration::from_millis(2 * u64::from(lease_ms));
        let (action, seq) = inner.actions.create_expiring(command, Some(&run), now, ttl);
        drop(inner);
        let parts = ads_protocol::encode_action(&vehicle, seq, wall_ns(), &action, self.action_key.as_ref());
        self.actions_out
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .send(parts)
            .map_err(|_| DriveRefused::NotConnected(LinkStatus::Lost))?;
        self.metrics.drives_sent.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// A browser painted a frame: `painted_ns` on its wall clock (same clock as ours when it
    /// runs on this machine; implausible values from a skewed remote clock are ignored).
    pub fn on_painted(&self, recv_ns: u64, capture_ns: u64, painted_ns: u64) {
        let (to_browser, end_to_end) =
            (painted_ns as f64 - recv_ns as f64, painted_ns as f64 - capture_ns as f64);
        if !(0.0..10e9).contains(&to_browser) || !(0.0..10e9).contains(&end_to_end) {
            return;
        }
        self.metrics.viewer_to_browser.observe_ms(to_browser / 1e6);
        self.metrics.capture_to_browser.observe_ms(end_to_end / 1e6);
        let mut inner = self.inner();
        inner.hops.viewer_to_browser_ms = Some(to_browser / 1e6);
        inner.hops.capture_to_browser_ms = Some(end_to_end / 1e6);
    }
}

fn ms_between(from_ns: u64, to_ns: u64) -> f64 {
    (to_ns as f64 - from_ns as f64) / 1e6
}
