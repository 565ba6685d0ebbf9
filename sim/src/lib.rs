//! The built-in driving simulator: a car on a closed track, seen through a forward camera.
//!
//! It exists so the whole pipeline (ring, detector, control loop, viewer) can run and be measured
//! without hardware, and so lane detection can be scored against exact ground truth. Everything
//! is deterministic: the same config, seed, pose and frame index give byte-identical pixels.
//!
//! The pieces, one job each: `track` builds centrelines from curvature profiles, `road` says
//! where the lines are, `look` how each track is lit, `camera` which ground line each image row
//! sees, `rows` maps those lines to track coordinates; `render` (ground), `paint` (lines) and
//! `truth` (TuSimple labels) all read that one mapping, so labels and pixels cannot disagree;
//! `sky` draws above the horizon, `noise` holds the hashes, `model` moves the car.

mod camera;
mod look;
mod model;
mod noise;
mod paint;
mod render;
mod road;
mod rows;
mod sky;
mod track;
mod truth;

use serde::{Deserialize, Serialize};

pub use camera::CameraConfig;
pub use model::VehicleParams;
pub use road::{LineColor, LinePattern, LineStyle, RoadLine};

use rows::{RowMap, RowSampler};
use track::Centreline;

/// Which closed track to drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum TrackKind {
    /// Two straights joined by half circles; noon sun, one-way two-lane road.
    #[default]
    Oval,
    /// Reverse curves joined by clothoids; overcast, two-way road with a double yellow.
    SBends,
    /// A 3.2 km loop whose curvature never stops changing; low sun and tree shadows, three lanes.
    Long,
}

impl TrackKind {
    /// Every track, for benches and tests that cover them all.
    pub const ALL: [TrackKind; 3] = [TrackKind::Oval, TrackKind::SBends, TrackKind::Long];

    /// The kebab-case name used on the command line and in file names.
    pub fn name(self) -> &'static str {
        match self {
            TrackKind::Oval => "oval",
            TrackKind::SBends => "s-bends",
            TrackKind::Long => "long",
        }
    }
}

/// Everything that fixes what the simulator shows; two simulators with equal configs and poses
/// render identical frames.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SimConfig {
    pub width: u32,
    pub height: u32,
    pub track: TrackKind,
    /// Varies the ground texture and the sensor noise, nothing geometric.
    pub seed: u64,
    pub camera: CameraConfig,
    pub vehicle: VehicleParams,
    /// Ground truth stops at rows that see farther than this (m): beyond it a 15 cm line is
    /// narrower than a pixel and a detector cannot be expected to find it.
    pub truth_range: f64,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            width: 800,
            height: 600,
            track: TrackKind::Oval,
            seed: 0,
            camera: CameraConfig::default(),
            vehicle: VehicleParams::default(),
            truth_range: 62.0,
        }
    }
}

/// A position and heading in the world frame (x east, y north, yaw counter-clockwise from x).
/// For the car it is the middle of the rear axle, the point the bicycle model turns about.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Pose {
    pub x: f64,
    pub y: f64,
    pub yaw: f64,
}

/// Driver inputs; out-of-range and non-finite values are clamped or treated as zero, because
/// they may come from a remote action.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Controls {
    /// Front wheel angle (rad), + = left.
    pub steering: f64,
    /// 0..1.
    pub throttle: f64,
    /// 0..1.
    pub brake: f64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CarState {
    pub pose: Pose,
    /// m/s, never negative: the model has no reverse gear.
    pub speed: f64,
    /// Actual front wheel angle (rad), after clamping and rate limiting.
    pub steering: f64,
    pub sim_time: f64,
    /// Arc length of the car's position along the track, 0..track length.
    pub lap_distance: f64,
    /// Distance driven since the simulator was created (m).
    pub odometer: f64,
}

/// The ego lane as the true geometry has it, for driving without a detector.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LaneReference {
    /// m, + = car left of the ego-lane centre.
    pub lateral_offset: f64,
    /// rad, + = car pointing left of the lane direction.
    pub heading_error: f64,
    /// 1/m, + = left turn, at the car.
    pub curvature: f64,
    /// Lateral position (car frame, m, + = left) of the lane centre `lookahead` metres further
    /// along the track.
    pub lookahead_offset: f64,
}

/// TuSimple form: for each fixed row in `h_samples`, x of each lane line, None where not visible.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LaneTruth {
    pub h_samples: Vec<u32>,
    /// Ordered left to right; a line appears only with at least [`MIN_TRUTH_POINTS`] points.
    pub lanes: Vec<Vec<Option<f32>>>,
    pub ego_left: Option<usize>,
    pub ego_right: Option<usize>,
    /// Colour and pattern of each entry of `lanes`, for per-kind accuracy reports.
    #[serde(default)]
    pub styles: Vec<LineStyle>,
    /// Index into [`Simulator::road_lines`] of each entry of `lanes`.
    #[serde(default)]
    pub line_ids: Vec<usize>,
}

/// A line seen on fewer rows than this is left out of the truth: TuSimple's metric fits a line
/// through each label and a couple of points at the image edge are not a lane anyone can find.
pub const MIN_TRUTH_POINTS: usize = 4;

/// Where a pixel's ground point lies relative to the track, as render() sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrackCoord {
    /// Arc length along the centreline (m); may run past the track length ahead of the car.
    pub s: f64,
    /// Lateral offset from the ego-lane centre (m, + = left).
    pub n: f64,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SimError {
    #[error("spawn point {index} does not exist on this track: valid indices are 0..={last}")]
    NoSuchSpawnPoint { index: usize, last: usize },
}

/// Spawn points per track, spread evenly along the lap.
const SPAWN_POINTS: usize = 8;

/// The simulated world, car and camera.
#[derive(Debug, Clone)]
pub struct Simulator {
    cfg: SimConfig,
    world: World,
    projector: camera::Projector,
    h_samples: Vec<u32>,
    spawns: Vec<Pose>,
    car: model::Kinematics,
    /// Track arc length of the car, kept between steps to warm-start the projection.
    s: f64,
    sim_time: f64,
    odometer: f64,
}

/// What does not change while driving: geometry, paint and light of one track.
#[derive(Debug, Clone)]
pub(crate) struct World {
    pub(crate) track: Centreline,
    pub(crate) road: road::RoadLayout,
    pub(crate) look: look::Look,
    pub(crate) tables: look::Tables,
    pub(crate) sensor: noise::SensorNoise,
}

impl Simulator {
    pub fn new(cfg: SimConfig) -> Self {
        let track = Centreline::new(cfg.track);
        let road = road::RoadLayout::new(cfg.track, track.length());
        let look = look::Look::new(cfg.track);
        let tables = look::Tables::new(&look, &road, track.length(), cfg.seed);
        let sensor = noise::SensorNoise::new(cfg.seed, look.noise, cfg.width as usize);
        let projector = camera::Projector::new(&cfg.camera, cfg.width, cfg.height);
        let h_samples = projector.h_samples();
        let spawns = (0..SPAWN_POINTS)
            .map(|i| {
                let f = track.frame_at(track.length() * i as f64 / SPAWN_POINTS as f64);
                Pose { x: f.x, y: f.y, yaw: f.heading }
            })
            .collect::<Vec<_>>();
        let car = model::Kinematics { pose: spawns[0], speed: 0.0, steering: 0.0 };
        Self {
            cfg,
            world: World { track, road, look, tables, sensor },
            projector,
            h_samples,
            spawns,
            car,
            s: 0.0,
            sim_time: 0.0,
            odometer: 0.0,
        }
    }

    pub fn config(&self) -> &SimConfig {
        &self.cfg
    }

    pub fn spawn_points(&self) -> &[Pose] {
        &self.spawns
    }

    /// Puts the car on a spawn point, stopped and with straight wheels.
    pub fn respawn(&mut self, index: usize) -> Result<Pose, SimError> {
        let pose = *self
            .spawns
            .get(index)
            .ok_or(SimError::NoSuchSpawnPoint { index, last: self.spawns.len() - 1 })?;
        self.car = model::Kinematics { pose, speed: 0.0, steering: 0.0 };
        self.s = self.world.track.length() * index as f64 / SPAWN_POINTS as f64;
        Ok(pose)
    }

    /// Puts the car anywhere (stopped, wheels straight): for tests and for a viewer's "move
    /// here" action. Costs a scan of the whole track to find where the car now is on it.
    pub fn set_pose(&mut self, pose: Pose) {
        self.car = model::Kinematics { pose, speed: 0.0, steering: 0.0 };
        let hint = self.world.track.nearest_s(pose.x, pose.y);
        self.s = self.world.track.project(pose.x, pose.y, hint).s.rem_euclid(self.world.track.length());
    }

    /// Advances the car by `dt` seconds under `controls` (sub-stepped internally, so any frame
    /// rate gives the same path).
    pub fn step(&mut self, dt: f64, controls: Controls) {
        if !(dt.is_finite() && dt > 0.0) {
            return;
        }
        let before = self.car.pose;
        model::advance(&mut self.car, &self.cfg.vehicle, dt, controls);
        self.odometer += (self.car.pose.x - before.x).hypot(self.car.pose.y - before.y);
        self.sim_time += dt;
        let foot = self.world.track.project(self.car.pose.x, self.car.pose.y, self.s);
        if foot.converged {
            self.s = foot.s.rem_euclid(self.world.track.length());
        } else {
            self.set_s_globally();
        }
    }

    fn set_s_globally(&mut self) {
        let (x, y) = (self.car.pose.x, self.car.pose.y);
        let hint = self.world.track.nearest_s(x, y);
        self.s = self.world.track.project(x, y, hint).s.rem_euclid(self.world.track.length());
    }

    pub fn state(&self) -> CarState {
        CarState {
            pose: self.car.pose,
            speed: self.car.speed,
            steering: self.car.steering,
            sim_time: self.sim_time,
            lap_distance: self.s,
            odometer: self.odometer,
        }
    }

    /// Length of one lap along the ego-lane centre (m).
    pub fn track_length(&self) -> f64 {
        self.world.track.length()
    }

    /// The painted lines of this track's road, left to right (offsets from the ego-lane centre).
    pub fn road_lines(&self) -> &[RoadLine] {
        &self.world.road.lines
    }

    pub fn lane_reference(&self, lookahead_m: f64) -> LaneReference {
        let track = &self.world.track;
        let pose = self.car.pose;
        let foot = track.project(pose.x, pose.y, self.s);
        let here = track.frame_at(foot.s);
        let ahead = track.frame_at(foot.s + lookahead_m);
        let (dx, dy) = (ahead.x - pose.x, ahead.y - pose.y);
        LaneReference {
            lateral_offset: foot.n,
            heading_error: wrap_angle(pose.yaw - here.heading),
            curvature: here.kappa,
            lookahead_offset: -dx * pose.yaw.sin() + dy * pose.yaw.cos(),
        }
    }

    /// Draws the camera view. `frame_index` only seeds the sensor noise, so a frame can be
    /// re-rendered exactly.
    ///
    /// # Panics
    /// If `stride < 3 * width` or `out` is shorter than `stride * (height - 1) + 3 * width`:
    /// the caller sized the buffer for another geometry, a bug in the caller.
    pub fn render(&self, frame_index: u64, out: &mut [u8], stride: usize) {
        render::render(&self.scene(), frame_index, out, stride, None);
    }

    /// `render`, and how long of it the sensor noise took (the vehicle's stage timings).
    ///
    /// # Panics
    /// As `render`.
    pub fn render_timed(&self, frame_index: u64, out: &mut [u8], stride: usize) -> std::time::Duration {
        let mut noise_ns = 0;
        render::render(&self.scene(), frame_index, out, stride, Some(&mut noise_ns));
        std::time::Duration::from_nanos(noise_ns)
    }

    /// TuSimple labels for the current pose, from the same row mapping render() draws with.
    pub fn truth(&self) -> LaneTruth {
        let car_n = self.world.track.project(self.car.pose.x, self.car.pose.y, self.s).n;
        truth::truth(&self.scene(), &self.h_samples, car_n, self.cfg.truth_range)
    }

    pub fn h_samples(&self) -> &[u32] {
        &self.h_samples
    }

    /// Track coordinates of the ground seen at (row, x), with exactly the interpolation
    /// render() uses; None for sky, fog, or ground too far from the track to be mapped.
    pub fn ground_at(&self, row: u32, x: f32) -> Option<TrackCoord> {
        let scene = self.scene();
        let mut map = RowMap::default();
        let mut hint = scene.cam_s;
        if !scene.sampler().row(row, &mut hint, &mut map) {
            return None;
        }
        map.at(f64::from(x)).map(|(s, n)| TrackCoord { s, n })
    }

    fn scene(&self) -> Scene<'_> {
        let pose = self.car.pose;
        let (sin, cos) = pose.yaw.sin_cos();
        let fwd = self.cfg.camera.forward;
        let (cx, cy) = (pose.x + fwd * cos, pose.y + fwd * sin);
        let cam_s = self.world.track.project(cx, cy, self.s + fwd).s;
        Scene {
            world: &self.world,
            projector: &self.projector,
            width: self.cfg.width,
            height: self.cfg.height,
            seed: self.cfg.seed,
            cam: (cx, cy),
            yaw: pose.yaw,
            cam_s,
        }
    }
}

/// One frame's worth of borrowed state: the world and where the camera is in it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Scene<'a> {
    pub(crate) world: &'a World,
    pub(crate) projector: &'a camera::Projector,
    pub(crate) width: u32,
    pub(crate) height: u32,
    pub(crate) seed: u64,
    /// Camera position on the ground (world m).
    pub(crate) cam: (f64, f64),
    pub(crate) yaw: f64,
    /// Track arc length below the camera: the warm start for the first row.
    pub(crate) cam_s: f64,
}

impl Scene<'_> {
    pub(crate) fn sampler(&self) -> RowSampler<'_> {
        RowSampler::new(self)
    }
}

/// `x.floor() as i64` without a libm call: baseline x86-64 and many ARM targets have no
/// rounding instruction, and this runs per sample and per run of pixels.
#[inline]
pub(crate) fn floor_i64(x: f64) -> i64 {
    let t = x as i64;
    if (t as f64) > x {
        t - 1
    } else {
        t
    }
}

/// `x.rem_euclid(m)` for m > 0, without fmod.
#[inline]
pub(crate) fn modulo(x: f64, m: f64) -> f64 {
    x - floor_i64(x / m) as f64 * m
}

pub(crate) fn wrap_angle(a: f64) -> f64 {
    let w = (a + std::f64::consts::PI).rem_euclid(std::f64::consts::TAU) - std::f64::consts::PI;
    if w.is_finite() {
        w
    } else {
        0.0
    }
}
