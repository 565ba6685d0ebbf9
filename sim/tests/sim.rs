//! The simulator's contract: reproducible frames, truth that matches the pixels, a car model
//! that obeys its equations, and tracks a simple controller can lap.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly by design")]

use std::path::PathBuf;

use ads_sim::{Controls, LaneTruth, LinePattern, Pose, SimConfig, SimError, Simulator, TrackKind};

const DT: f64 = 1.0 / 30.0;

fn sim(track: TrackKind, seed: u64) -> Simulator {
    Simulator::new(SimConfig { track, seed, ..SimConfig::default() })
}

fn frame(sim: &Simulator, index: u64) -> Vec<u8> {
    let c = sim.config();
    let stride = 3 * c.width as usize;
    let mut out = vec![0u8; stride * c.height as usize];
    sim.render(index, &mut out, stride);
    out
}

/// Pure pursuit on the true lane centre plus a proportional speed loop: the controller a
/// `--control truth` mode would use.
fn drive(sim: &Simulator, speed: f64) -> Controls {
    let st = sim.state();
    let ld = (0.8 * st.speed).max(6.0);
    let r = sim.lane_reference(ld);
    let wheelbase = sim.config().vehicle.wheelbase;
    let steering = (2.0 * wheelbase * r.lookahead_offset / (ld * ld)).atan();
    let err = speed - st.speed;
    Controls { steering, throttle: (0.1 + 0.5 * err).clamp(0.0, 1.0), brake: (-0.5 * err).clamp(0.0, 1.0) }
}

fn drive_for(sim: &mut Simulator, seconds: f64, speed: f64) {
    for _ in 0..(seconds / DT).round() as usize {
        let c = drive(sim, speed);
        sim.step(DT, c);
    }
}

#[test]
fn same_seed_same_bytes_other_seed_or_frame_differs() {
    for track in TrackKind::ALL {
        let (mut a, mut b) = (sim(track, 7), sim(track, 7));
        drive_for(&mut a, 2.0, 10.0);
        drive_for(&mut b, 2.0, 10.0);
        assert_eq!(a.state(), b.state());
        assert!(frame(&a, 5) == frame(&b, 5), "{track:?}: same seed, different bytes");
        assert!(frame(&a, 5) != frame(&a, 6), "{track:?}: sensor noise ignores the frame index");
        let mut c = sim(track, 8);
        drive_for(&mut c, 2.0, 10.0);
        assert!(frame(&a, 5) != frame(&c, 5), "{track:?}: seed does not change the image");
        // Texture and noise only: a different seed moves nothing geometric.
        assert_eq!(a.truth(), c.truth());
    }
}

#[test]
fn a_timed_render_draws_the_same_bytes_and_says_what_the_noise_took() {
    let s = sim(TrackKind::Oval, 3);
    let c = s.config();
    let stride = 3 * c.width as usize;
    let mut timed = vec![0u8; stride * c.height as usize];
    let noise = s.render_timed(4, &mut timed, stride);
    assert!(timed == frame(&s, 4), "timing the noise changed the picture");
    // 600 rows of table reads take some time.
    assert!(noise > std::time::Duration::ZERO);
}

#[test]
fn render_respects_stride() {
    let s = sim(TrackKind::Long, 1);
    let (w, h) = (s.config().width as usize, s.config().height as usize);
    let stride = 3 * w + 17;
    // A buffer exactly as short as the contract allows: no padding after the last row.
    let mut padded = vec![0xABu8; stride * (h - 1) + 3 * w];
    s.render(3, &mut padded, stride);
    let tight = frame(&s, 3);
    for v in 0..h {
        let row = &padded[v * stride..];
        assert_eq!(&row[..3 * w], &tight[v * 3 * w..(v + 1) * 3 * w], "row {v}");
        if v + 1 < h {
            assert!(row[3 * w..stride].iter().all(|&b| b == 0xAB), "padding of row {v} written");
        }
    }
}

#[test]
#[should_panic(expected = "too small")]
fn render_rejects_a_short_buffer() {
    let s = sim(TrackKind::Oval, 0);
    let mut out = vec![0u8; 100];
    s.render(0, &mut out, 2400);
}

fn luma(p: [u8; 3]) -> f64 {
    0.114 * f64::from(p[0]) + 0.587 * f64::from(p[1]) + 0.299 * f64::from(p[2])
}

fn saturation(p: [u8; 3]) -> f64 {
    f64::from(*p.iter().max().unwrap()) - f64::from(*p.iter().min().unwrap())
}

struct Image<'a> {
    px: &'a [u8],
    width: usize,
}

impl Image<'_> {
    fn at(&self, x: i64, y: u32) -> Option<[u8; 3]> {
        let x = usize::try_from(x).ok().filter(|&x| x < self.width)?;
        let i = 3 * (y as usize * self.width + x);
        Some([self.px[i], self.px[i + 1], self.px[i + 2]])
    }

    /// Median brightness and saturation of `count` pixels starting `from` columns away.
    fn beside(&self, x: f64, y: u32, from: f64, dir: f64, count: u32) -> Option<(f64, f64)> {
        let mut l = Vec::new();
        let mut s = Vec::new();
        for k in 0..count {
            let p = self.at((x + dir * (from + f64::from(k))).round() as i64, y)?;
            l.push(luma(p));
            s.push(saturation(p));
        }
        l.sort_by(f64::total_cmp);
        s.sort_by(f64::total_cmp);
        Some((l[l.len() / 2], s[s.len() / 2]))
    }
}

/// How much the paint at (x, y) stands out from the ground on both sides, by brightness or
/// by colour; None where a side is outside the image. `at` lists the columns (relative to x)
/// where paint should be; the best of them counts.
fn contrast(img: &Image<'_>, x: f64, y: u32, at: &[f64], reach: f64) -> Option<f64> {
    let best = at
        .iter()
        .filter_map(|&dx| img.at((x + dx).round() as i64, y))
        .map(|p| (luma(p), saturation(p)))
        .fold((0.0f64, 0.0f64), |a, b| (a.0.max(b.0), a.1.max(b.1)));
    let (left, right) = (img.beside(x, y, reach, -1.0, 3)?, img.beside(x, y, reach, 1.0, 3)?);
    Some((best.0 - left.0.max(right.0)).max(best.1 - left.1.max(right.1)))
}

/// Like `contrast`, for a dash gap: medians of five pixels, so asphalt grain is not paint.
fn gap_contrast(img: &Image<'_>, x: f64, y: u32, reach: f64) -> Option<f64> {
    let mid = img.beside(x, y, -2.0, 1.0, 5)?;
    let (left, right) = (img.beside(x, y, reach, -1.0, 5)?, img.beside(x, y, reach, 1.0, 5)?);
    Some((mid.0 - left.0.max(right.0)).max(mid.1 - left.1.max(right.1)))
}

/// Checks every truth point of the current pose against the pixels; returns how many points
/// were checked as painted.
fn check_truth_against_pixels(s: &Simulator, label: &str) -> usize {
    let px = frame(s, 11);
    let img = Image { px: &px, width: s.config().width as usize };
    let truth = s.truth();
    assert_eq!(truth.lanes.len(), truth.styles.len());
    assert_eq!(truth.lanes.len(), truth.line_ids.len());
    let (mut painted, mut gaps) = (0, 0);
    for (lane, &id) in truth.lanes.iter().zip(&truth.line_ids) {
        let line = &s.road_lines()[id];
        let style = line.style;
        for (&y, x) in truth.h_samples.iter().zip(lane) {
            let Some(x) = x.map(f64::from) else { continue };
            let here = s.ground_at(y, x as f32).expect("a truth point lies on the mapped ground");
            // Pixels per metre across the row, from the mapping itself.
            let next = s.ground_at(y, x as f32 + 1.0).or_else(|| s.ground_at(y, x as f32 - 1.0)).unwrap();
            let px_per_m = 1.0 / (next.n - here.n).abs().max(1e-6);
            // The label is where render() centres the line, to f32 rounding of the column.
            let miss = (here.n - line.offset).abs() * px_per_m;
            assert!(miss < 1e-3, "{label}: truth {miss} px off the line at {}", line.offset);
            let stripes: Vec<f64> = match line.style.pattern {
                LinePattern::Double => {
                    let d = (line.gap + line.stripe_width) / 2.0 * px_per_m;
                    vec![-d, 0.0, d]
                }
                _ => vec![0.0],
            };
            let reach = line.half_extent() * px_per_m + 3.0;
            let Some(c) = contrast(&img, x, y, &stripes, reach) else { continue };
            let on = line.painted_at(here.s - 0.3) && line.painted_at(here.s + 0.3);
            let off = !line.painted_at(here.s - 0.3) && !line.painted_at(here.s + 0.3);
            if on {
                painted += 1;
                assert!(c > 25.0, "{label}: line {style:?} at ({x:.2}, {y}) stands out by only {c:.1}");
            } else if off {
                let c = gap_contrast(&img, x, y, reach).unwrap_or(0.0);
                assert!(c < 20.0, "{label}: dash gap at ({x:.2}, {y}) looks painted ({c:.1})");
                gaps += 1;
            }
        }
    }
    let dashed = truth.line_ids.iter().any(|&i| s.road_lines()[i].dash.is_some());
    assert!(!dashed || gaps > 0, "{label}: no dash gap seen on a dashed line");
    painted
}

#[test]
fn truth_matches_pixels() {
    for track in TrackKind::ALL {
        let mut s = sim(track, 3);
        let (mut checked, mut poses) = (0, 0);
        for i in (0..s.spawn_points().len()).step_by(2) {
            poses += 2;
            let p = s.respawn(i).unwrap();
            checked += check_truth_against_pixels(&s, &format!("{track:?} spawn {i}"));
            // Off-centre and skewed in the lane, as a real car would be.
            let (sin, cos) = p.yaw.sin_cos();
            let off = Pose { x: p.x - 0.9 * sin, y: p.y + 0.9 * cos, yaw: p.yaw - 0.06 };
            s.set_pose(off);
            checked += check_truth_against_pixels(&s, &format!("{track:?} spawn {i} shifted"));
        }
        s.respawn(0).unwrap();
        for k in 0..6 {
            poses += 1;
            drive_for(&mut s, 7.0, 12.0);
            checked += check_truth_against_pixels(&s, &format!("{track:?} driving {k}"));
        }
        println!("{track:?}: {checked} painted truth points checked over {poses} poses");
        assert!(checked > 25 * poses, "{track:?}: only {checked} painted truth points checked");
    }
}

#[test]
fn other_resolutions_keep_truth_and_pixels_together() {
    for (width, height) in [(640, 480), (1280, 720)] {
        for track in TrackKind::ALL {
            let mut s = Simulator::new(SimConfig { width, height, track, ..SimConfig::default() });
            s.respawn(1).unwrap();
            drive_for(&mut s, 5.0, 12.0);
            let label = format!("{track:?} at {width}x{height}");
            // Fewer sample rows at 640x480, and dash gaps do not count.
            assert!(check_truth_against_pixels(&s, &label) > 10, "{label}");
        }
    }
}

#[test]
fn truth_has_the_tusimple_shape_and_the_ego_lane() {
    for track in TrackKind::ALL {
        let mut s = sim(track, 0);
        let rows = s.h_samples().to_vec();
        assert!(rows.windows(2).all(|w| w[1] == w[0] + 10), "{track:?}: {rows:?}");
        assert!(*rows.last().unwrap() < s.config().height && rows.len() > 30);
        for i in 0..s.spawn_points().len() {
            s.respawn(i).unwrap();
            let t: LaneTruth = s.truth();
            assert!(t.lanes.iter().all(|l| l.len() == rows.len()));
            let (l, r) = (t.ego_left.expect("ego left line"), t.ego_right.expect("ego right line"));
            assert_eq!(r, l + 1, "{track:?} spawn {i}: ego lines are neighbours");
            // Left of right on every row where both are seen, and seen over most rows.
            let both: Vec<_> = t.lanes[l]
                .iter()
                .zip(&t.lanes[r])
                .filter_map(|(a, b)| Some((*a)?.min(f32::MAX)).zip(*b))
                .collect();
            assert!(both.len() >= 15, "{track:?} spawn {i}: ego lines share only {} rows", both.len());
            assert!(both.iter().all(|(a, b)| a < b));
        }
    }
}

#[test]
fn truth_matches_the_ideal_camera_on_a_straight() {
    // The oval's first spawn point is mid-straight with 75 m of straight road ahead: every
    // line must appear where a pinhole camera puts a straight line on flat ground.
    let s = sim(TrackKind::Oval, 0);
    let cfg = s.config().clone();
    let cam = cfg.camera;
    let f = f64::from(cfg.width) / 2.0 / (cam.hfov / 2.0).tan();
    let (cx, cy) = ((f64::from(cfg.width) - 1.0) / 2.0, (f64::from(cfg.height) - 1.0) / 2.0);
    let t = s.truth();
    let mut compared = 0;
    for (lane, &id) in t.lanes.iter().zip(&t.line_ids) {
        let line = &s.road_lines()[id];
        for (&v, x) in t.h_samples.iter().zip(lane) {
            let Some(x) = x else { continue };
            let b = (f64::from(v) - cy) / f;
            let den = cam.pitch.sin() + b * cam.pitch.cos();
            let depth = cam.height / den;
            let expected = cx - line.offset * f / depth;
            assert!((f64::from(*x) - expected).abs() < 0.05, "row {v}: {x} vs {expected}");
            compared += 1;
        }
    }
    assert!(compared > 40);
}

#[test]
fn zero_steering_drives_straight() {
    let mut s = sim(TrackKind::Oval, 0);
    let start = s.respawn(0).unwrap();
    for _ in 0..300 {
        s.step(DT, Controls { steering: 0.0, throttle: 0.5, brake: 0.0 });
    }
    let p = s.state().pose;
    let along = (p.x - start.x) * start.yaw.cos() + (p.y - start.y) * start.yaw.sin();
    let across = -(p.x - start.x) * start.yaw.sin() + (p.y - start.y) * start.yaw.cos();
    assert!(along > 50.0, "moved {along} m");
    assert!(across.abs() < 1e-9 && (p.yaw - start.yaw).abs() < 1e-12, "drifted {across} m");
    assert!((s.state().odometer - along).abs() < 1e-6);
}

#[test]
fn constant_steering_drives_the_bicycle_circle() {
    for delta in [0.1, 0.25, -0.4] {
        let mut s = sim(TrackKind::Oval, 0);
        s.respawn(0).unwrap();
        // Let the steering reach its angle (rate limited), then record a full turn.
        for _ in 0..60 {
            s.step(DT, Controls { steering: delta, throttle: 0.3, brake: 0.0 });
        }
        let mut pts = Vec::new();
        for _ in 0..3000 {
            s.step(DT, Controls { steering: delta, throttle: 0.3, brake: 0.0 });
            pts.push((s.state().pose.x, s.state().pose.y));
        }
        assert!((s.state().steering - delta).abs() < 1e-12);
        // Least-squares circle fit (Kåsa).
        let n = pts.len() as f64;
        let (mx, my) = (pts.iter().map(|p| p.0).sum::<f64>() / n, pts.iter().map(|p| p.1).sum::<f64>() / n);
        let (mut suu, mut svv, mut suv, mut suuu, mut svvv, mut suvv, mut svuu) =
            (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
        for &(x, y) in &pts {
            let (u, v) = (x - mx, y - my);
            suu += u * u;
            svv += v * v;
            suv += u * v;
            suuu += u * u * u;
            svvv += v * v * v;
            suvv += u * v * v;
            svuu += v * u * u;
        }
        let (r1, r2) = (0.5 * (suuu + suvv), 0.5 * (svvv + svuu));
        let det = suu * svv - suv * suv;
        let (uc, vc) = ((r1 * svv - r2 * suv) / det, (r2 * suu - r1 * suv) / det);
        let radius = (uc * uc + vc * vc + (suu + svv) / n).sqrt();
        let expected = s.config().vehicle.wheelbase / f64::tan(delta.abs());
        assert!((radius - expected).abs() / expected < 1e-3, "δ={delta}: radius {radius} vs {expected}");
        // And every point on it, not just on average.
        let worst =
            pts.iter().map(|&(x, y)| ((x - mx - uc).hypot(y - my - vc) - radius).abs()).fold(0.0, f64::max);
        assert!(worst < 1e-3 * expected, "δ={delta}: off the circle by {worst} m");
    }
}

#[test]
fn brake_stops_the_car_and_it_never_reverses() {
    let mut s = sim(TrackKind::Long, 0);
    s.respawn(1).unwrap();
    for _ in 0..150 {
        s.step(DT, Controls { steering: 0.0, throttle: 1.0, brake: 0.0 });
    }
    let v0 = s.state().speed;
    assert!(v0 > 10.0, "full throttle for 5 s reached only {v0} m/s");
    let mut last = v0;
    for _ in 0..300 {
        s.step(DT, Controls { steering: 0.0, throttle: 0.0, brake: 1.0 });
        let v = s.state().speed;
        assert!(v >= 0.0 && v <= last, "speed went {last} -> {v}");
        last = v;
    }
    assert_eq!(s.state().speed, 0.0);
    let parked = s.state().pose;
    s.step(1.0, Controls { steering: 0.3, throttle: 0.0, brake: 0.5 });
    assert_eq!(s.state().pose, parked, "a stopped, braking car moved");
    // Garbage inputs are ignored rather than propagated.
    s.step(DT, Controls { steering: f64::NAN, throttle: f64::INFINITY, brake: -3.0 });
    assert!(s.state().pose.x.is_finite() && s.state().steering.abs() <= s.config().vehicle.max_steer);
}

#[test]
fn steering_is_clamped_and_rate_limited() {
    let mut s = sim(TrackKind::Oval, 0);
    s.respawn(0).unwrap();
    s.step(0.1, Controls { steering: 2.0, throttle: 0.0, brake: 0.0 });
    let p = s.config().vehicle;
    assert!((s.state().steering - p.max_steer_rate * 0.1).abs() < 1e-9);
    s.step(5.0, Controls { steering: 2.0, throttle: 0.0, brake: 0.0 });
    assert_eq!(s.state().steering, p.max_steer);
}

#[test]
fn respawn_puts_the_car_on_the_spawn_pose() {
    for track in TrackKind::ALL {
        let mut s = sim(track, 0);
        let spawns = s.spawn_points().to_vec();
        assert!(spawns.len() >= 4);
        drive_for(&mut s, 3.0, 10.0);
        for (i, want) in spawns.iter().enumerate() {
            let got = s.respawn(i).unwrap();
            assert_eq!(got, *want);
            let st = s.state();
            assert_eq!((st.pose, st.speed, st.steering), (*want, 0.0, 0.0));
            // On the ego-lane centre, heading along it.
            let r = s.lane_reference(5.0);
            assert!(r.lateral_offset.abs() < 1e-6 && r.heading_error.abs() < 1e-6, "{track:?} {i}: {r:?}");
        }
        let err = s.respawn(spawns.len()).unwrap_err();
        assert_eq!(err, SimError::NoSuchSpawnPoint { index: spawns.len(), last: spawns.len() - 1 });
        assert!(err.to_string().contains(&format!("0..={}", spawns.len() - 1)), "{err}");
    }
}

#[test]
fn truth_controller_laps_every_track_in_its_lane() {
    for track in TrackKind::ALL {
        let mut s = sim(track, 0);
        s.respawn(0).unwrap();
        let lap = s.track_length();
        let (mut progress, mut last, mut worst) = (0.0, s.state().lap_distance, 0.0f64);
        let mut steps = 0;
        while progress < lap + 20.0 {
            let c = drive(&s, 10.0);
            s.step(DT, c);
            let st = s.state();
            let d = (st.lap_distance - last + lap / 2.0).rem_euclid(lap) - lap / 2.0;
            progress += d;
            last = st.lap_distance;
            let off = s.lane_reference(0.0).lateral_offset;
            worst = worst.max(off.abs());
            assert!(off.abs() < 1.75, "{track:?}: left the lane ({off:.2} m) at s={:.0}", st.lap_distance);
            steps += 1;
            assert!(steps < 30 * 600, "{track:?}: no lap after 10 minutes ({progress:.0} of {lap:.0} m)");
        }
        println!("{track:?}: lap of {lap:.0} m in {:.0} s, worst offset {worst:.2} m", s.state().sim_time);
        assert!(worst < 0.6, "{track:?}: the truth controller wanders {worst:.2} m off centre");
    }
}

#[test]
fn writes_a_frame_per_track() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).parent().unwrap().join("sim-frames");
    std::fs::create_dir_all(&dir).unwrap();
    for track in TrackKind::ALL {
        let mut s = sim(track, 0);
        s.respawn(0).unwrap();
        drive_for(&mut s, 4.0, 12.0);
        let (w, h) = (s.config().width, s.config().height);
        let bgr = frame(&s, 120);
        let rgb: Vec<u8> = bgr.chunks_exact(3).flat_map(|p| [p[2], p[1], p[0]]).collect();
        let path = dir.join(format!("{}.png", track.name()));
        let file = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
        let mut enc = png::Encoder::new(file, w, h);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        enc.write_header().unwrap().write_image_data(&rgb).unwrap();
        println!("wrote {}", path.display());
    }
}
