//! What is drawn over a frame, computed here on the laptop from the vehicle's messages, in the
//! frame's pixel coordinates. The browser draws it on a canvas; `/stream.mjpg` burns it in.

use ads_protocol::{Detections, DriveMode, LaneTruthMsg, LaneXs, VehicleState};
use serde::Serialize;

/// A point in frame pixels.
pub type Point = [f32; 2];

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Overlay {
    pub width: u32,
    pub height: u32,
    /// The detector's lanes, if a detection is at hand.
    pub lanes: Option<LaneOverlay>,
    pub objects: Vec<ObjectBox>,
    /// The simulator's true ego-lane lines (sim only), for judging the detector by eye.
    pub truth: Vec<Vec<Point>>,
    pub hud: Option<Hud>,
    /// Warnings shown over the picture: stale or missing data, lost link.
    pub stale: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LaneOverlay {
    pub left: Vec<Point>,
    pub right: Vec<Point>,
    /// Polygon between the lines, on the rows where both were found.
    pub area: Vec<Point>,
    /// Midpoints of the lines.
    pub centre: Vec<Point>,
    pub offset_m: f32,
    pub left_confidence: f32,
    pub right_confidence: f32,
    /// The frame the detection is for, and how much older than the shown frame it is.
    pub frame_id: u64,
    pub age_ms: f32,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ObjectBox {
    pub x: f32,
    pub y: f32,
    pub w: f32,
    pub h: f32,
    pub label: String,
    pub score: f32,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Hud {
    pub speed_kmh: f64,
    pub target_kmh: f64,
    pub steering_deg: f64,
    pub throttle: f64,
    pub brake: f64,
    pub mode: DriveMode,
    pub source: String,
    pub fps: f32,
}

impl Overlay {
    /// The overlay for a picture of `width` x `height` (a reduced tier's JPEG), from one
    /// computed in the captured frame's coordinates.
    pub fn scaled_to(mut self, width: u32, height: u32) -> Self {
        if (width, height) == (self.width, self.height) || self.width == 0 || self.height == 0 {
            return self;
        }
        let (sx, sy) = (width as f32 / self.width as f32, height as f32 / self.height as f32);
        let scale = |points: &mut Vec<Point>| points.iter_mut().for_each(|p| *p = [p[0] * sx, p[1] * sy]);
        if let Some(l) = &mut self.lanes {
            for points in [&mut l.left, &mut l.right, &mut l.area, &mut l.centre] {
                scale(points);
            }
        }
        self.truth.iter_mut().for_each(scale);
        for b in &mut self.objects {
            (b.x, b.y, b.w, b.h) = (b.x * sx, b.y * sy, b.w * sx, b.h * sy);
        }
        (self.width, self.height) = (width, height);
        self
    }
}

impl Hud {
    pub fn lines(&self) -> [String; 3] {
        [
            format!("{:5.1} km/h (target {:.0})  {:?}", self.speed_kmh, self.target_kmh, self.mode),
            format!("steer {:+5.1} deg  thr {:.2}  brk {:.2}", self.steering_deg, self.throttle, self.brake),
            format!("{} {:.1} fps", self.source, self.fps),
        ]
    }
}

/// The inputs for one frame's overlay.
#[derive(Debug, Clone, Copy)]
pub struct OverlayInputs<'a> {
    pub width: u32,
    pub height: u32,
    /// Capture time of the frame shown.
    pub capture_ns: u64,
    pub detection: Option<&'a Detections>,
    pub truth: Option<&'a LaneTruthMsg>,
    pub state: Option<&'a VehicleState>,
    pub stale_detection_ms: u64,
    pub link_lost: bool,
}

pub fn compute(inputs: OverlayInputs<'_>) -> Overlay {
    let mut stale = Vec::new();
    if inputs.link_lost {
        stale.push("vehicle link lost".to_string());
    }
    let mut lanes = None;
    let mut objects = Vec::new();
    match inputs.detection {
        None => stale.push("no detections".to_string()),
        Some(d) => {
            let age_ms = inputs.capture_ns.saturating_sub(d.capture_ns) as f32 / 1e6;
            if age_ms > inputs.stale_detection_ms as f32 {
                stale.push(format!("detections {age_ms:.0} ms old"));
            }
            lanes = d.lanes.as_ref().map(|l| {
                let left = points(&l.h_samples, &l.left);
                let right = points(&l.h_samples, &l.right);
                let both: Vec<(Point, Point)> = l
                    .h_samples
                    .iter()
                    .zip(l.left.iter().zip(&l.right))
                    .filter_map(|(&y, (a, b))| Some(([(*a)?, y as f32], [(*b)?, y as f32])))
                    .collect();
                let mut area: Vec<Point> = both.iter().map(|(a, _)| *a).collect();
                area.extend(both.iter().rev().map(|(_, b)| *b));
                let centre = both.iter().map(|(a, b)| [(a[0] + b[0]) / 2.0, a[1]]).collect();
                LaneOverlay {
                    left,
                    right,
                    area,
                    centre,
                    offset_m: l.lateral_offset_m,
                    left_confidence: l.left_confidence,
                    right_confidence: l.right_confidence,
                    frame_id: d.frame_id,
                    age_ms,
                }
            });
            if d.lanes.is_none() && d.objects.is_empty() {
                stale.push("detector found nothing".to_string());
            }
            objects = d
                .objects
                .iter()
                .map(|o| ObjectBox {
                    x: o.x_px,
                    y: o.y_px,
                    w: o.w_px,
                    h: o.h_px,
                    label: o.class.clone(),
                    score: o.score,
                })
                .collect();
        }
    }
    let truth = inputs
        .truth
        .map(|t| {
            [t.ego_left, t.ego_right]
                .into_iter()
                .flatten()
                .filter_map(|i| t.lanes.get(i as usize))
                .map(|xs| points(&t.h_samples, xs))
                .collect()
        })
        .unwrap_or_default();
    let hud = inputs.state.map(|s| Hud {
        speed_kmh: s.speed_mps * 3.6,
        target_kmh: s.target_speed_mps * 3.6,
        steering_deg: s.steering_rad.to_degrees(),
        throttle: s.throttle,
        brake: s.brake,
        mode: s.mode,
        source: s.source.clone(),
        fps: s.fps,
    });
    if inputs.state.is_none() {
        stale.push("no vehicle state".to_string());
    }
    Overlay { width: inputs.width, height: inputs.height, lanes, objects, truth, hud, stale }
}

fn points(h_samples: &[u32], xs: &LaneXs) -> Vec<Point> {
    h_samples.iter().zip(xs).filter_map(|(&y, x)| Some([(*x)?, y as f32])).collect()
}

/// Which layers to draw; all on by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layers {
    pub lanes: bool,
    pub area: bool,
    pub centre: bool,
    pub objects: bool,
    pub hud: bool,
    pub truth: bool,
    pub stale: bool,
}

impl Default for Layers {
    fn default() -> Self {
        Self { lanes: true, area: true, centre: true, objects: true, hud: true, truth: false, stale: true }
    }
}

impl Layers {
    pub const NAMES: [&'static str; 7] = ["lanes", "area", "centre", "objects", "hud", "truth", "stale"];

    pub fn none() -> Self {
        Self {
            lanes: false,
            area: false,
            centre: false,
            objects: false,
            hud: false,
            truth: false,
            stale: false,
        }
    }

    /// `lanes,hud,...` as in `/stream.mjpg?layers=lanes,hud`; an unknown name is an error.
    pub fn parse(list: &str) -> Result<Self, String> {
        let mut layers = Self::none();
        for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let flag = match name {
                "lanes" => &mut layers.lanes,
                "area" => &mut layers.area,
                "centre" | "center" => &mut layers.centre,
                "objects" => &mut layers.objects,
                "hud" => &mut layers.hud,
                "truth" => &mut layers.truth,
                "stale" => &mut layers.stale,
                other => {
                    return Err(format!("unknown layer {other:?}; layers are {}", Self::NAMES.join(", ")))
                }
            };
            *flag = true;
        }
        Ok(layers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ads_protocol::LaneDetection;

    fn detection(capture_ns: u64) -> Detections {
        Detections {
            frame_id: 9,
            capture_ns,
            detector: "cv".into(),
            processing_us: 1000,
            read_ns: 0,
            control_read_ns: 0,
            lanes: Some(LaneDetection {
                h_samples: vec![300, 400, 500],
                left: vec![None, Some(300.0), Some(250.0)],
                right: vec![Some(480.0), Some(500.0), None],
                left_confidence: 0.9,
                right_confidence: 0.8,
                lateral_offset_m: 0.1,
                heading_error_rad: 0.0,
                curvature_radius_m: None,
            }),
            objects: vec![],
        }
    }

    #[test]
    fn an_overlay_scales_to_a_reduced_picture() {
        let overlay = Overlay {
            width: 800,
            height: 600,
            truth: vec![vec![[400.0, 300.0], [800.0, 600.0]]],
            objects: vec![ObjectBox { x: 80.0, y: 60.0, w: 40.0, h: 20.0, label: "car".into(), score: 0.9 }],
            ..Overlay::default()
        };
        let half = overlay.clone().scaled_to(400, 300);
        assert_eq!((half.width, half.height), (400, 300));
        assert_eq!(half.truth, vec![vec![[200.0, 150.0], [400.0, 300.0]]]);
        assert_eq!((half.objects[0].x, half.objects[0].w, half.objects[0].h), (40.0, 20.0, 10.0));
        assert_eq!(overlay.clone().scaled_to(800, 600), overlay);
    }

    #[test]
    fn lane_area_and_centre_use_rows_where_both_lines_exist() {
        let d = detection(1_000_000_000);
        let o = compute(OverlayInputs {
            width: 800,
            height: 600,
            capture_ns: 1_000_000_000,
            detection: Some(&d),
            truth: None,
            state: None,
            stale_detection_ms: 300,
            link_lost: false,
        });
        let lanes = o.lanes.unwrap();
        assert_eq!(lanes.left, vec![[300.0, 400.0], [250.0, 500.0]]);
        assert_eq!(lanes.right, vec![[480.0, 300.0], [500.0, 400.0]]);
        assert_eq!(lanes.centre, vec![[400.0, 400.0]]);
        assert_eq!(lanes.area, vec![[300.0, 400.0], [500.0, 400.0]]);
        assert_eq!(o.stale, vec!["no vehicle state".to_string()]);
    }

    #[test]
    fn old_detections_and_a_lost_link_are_marked() {
        let d = detection(1_000_000_000);
        let o = compute(OverlayInputs {
            width: 800,
            height: 600,
            capture_ns: 1_500_000_000,
            detection: Some(&d),
            truth: None,
            state: None,
            stale_detection_ms: 300,
            link_lost: true,
        });
        assert_eq!(o.stale[0], "vehicle link lost");
        assert_eq!(o.stale[1], "detections 500 ms old");
        let none = compute(OverlayInputs { detection: None, link_lost: false, ..inputs_for_none() });
        assert!(none.stale.contains(&"no detections".to_string()));
        assert!(none.lanes.is_none());
    }

    fn inputs_for_none() -> OverlayInputs<'static> {
        OverlayInputs {
            width: 1,
            height: 1,
            capture_ns: 0,
            detection: None,
            truth: None,
            state: None,
            stale_detection_ms: 300,
            link_lost: false,
        }
    }

    #[test]
    fn layer_lists_parse_and_unknown_names_are_refused() {
        let l = Layers::parse("lanes, hud").unwrap();
        assert!(l.lanes && l.hud && !l.objects && !l.area);
        assert!(Layers::parse("lanes,wings").unwrap_err().contains("wings"));
        assert_eq!(Layers::parse("").unwrap(), Layers::none());
    }
}
