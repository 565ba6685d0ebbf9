//! A frame, row by row from the bottom: textured ground below the horizon (here), painted
//! lines on top (`paint`), sky above (`sky`), sensor noise last.
//!
//! The budget is ~5 ms for 800x600 on one slow core, so the per-pixel work is integer only:
//! world and track coordinates advance by fixed-point steps along each row segment, the ground
//! class changes only where a segment crosses a zone boundary (found once per segment), and
//! the texture is one integer hash of the world texel.

use super::look::{Bgr, Look, Material, Tables, WEAR_CELL_SHIFT};
use super::noise::{hash2, mix64, value_noise};
use super::paint::{paint_lines, LinePaint, RowFog};
use super::road::RoadLine;
use super::rows::{RowMap, Sample, MAX_DIST};
use super::sky::{fill, Sky};
use super::{modulo, Scene};

/// Fraction bits of the fixed-point coordinates.
const FRAC: u32 = 32;
const ONE: f64 = (1u64 << FRAC) as f64;
/// Finest texel: 2^-7 m, about the size of asphalt grit.
const TEXEL_BITS: u32 = 7;
/// Grass this close to the pavement can be shaded by the roadside trees (m).
const SHADE_REACH: f64 = 12.0;
/// Metre-scale blotches of the ground.
const BLOTCH_CELL: f64 = 2.5;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Zone {
    FarGrass,
    NearGrass,
    Shoulder,
    Asphalt,
}

/// Zones left of the first boundary, between boundaries, and right of the last.
const ZONES: [Zone; 7] = [
    Zone::FarGrass,
    Zone::NearGrass,
    Zone::Shoulder,
    Zone::Asphalt,
    Zone::Shoulder,
    Zone::NearGrass,
    Zone::FarGrass,
];

/// Per-frame constants.
struct Ctx<'a> {
    look: &'a Look,
    tables: &'a Tables,
    lines: &'a [RoadLine],
    horizon: f64,
    /// Offsets where the zone changes, ascending.
    bounds: [f64; 6],
    wear_lo: i64,
    shadows: bool,
    skew: f64,
    tex_seed: u32,
}

/// One material, for one row: fog, light and distance already folded in.
#[derive(Debug, Clone, Copy, Default)]
struct RowMat {
    base: [i32; 3],
    /// Response to brightness variation, 1/256 units.
    gain: [i32; 3],
    /// Grain amplitude, in grey levels × 2 (a signed byte times this, shifted by 8).
    grain: i32,
    blotch: i32,
}

/// Per-row constants of the ground.
struct RowLook {
    mats: [RowMat; 3],
    fog: [i32; 3],
    /// Share of the surface colour left after fog, and the fog added.
    keep: f32,
    fog_f: Bgr,
    shift: u32,
}

/// Fixed-point state stepped along a run of pixels.
#[derive(Debug, Clone, Copy)]
struct Acc {
    wx: i64,
    wy: i64,
    n: i64,
    /// Position in the shadow table (cells), skewed by the offset so bands cross obliquely.
    sk: i64,
    /// Blotch value, 16 fraction bits, in −1..1.
    blot: i32,
}

/// Draws the frame; with `noise_ns`, adds the time the sensor noise took to it (a clock read
/// before and after each row's noise, ~2 % of the frame).
pub(crate) fn render(
    scene: &Scene<'_>,
    frame: u64,
    out: &mut [u8],
    stride: usize,
    mut noise_ns: Option<&mut u64>,
) {
    let (w, h) = (scene.width as usize, scene.height as usize);
    if w == 0 || h == 0 {
        return;
    }
    assert!(stride >= 3 * w, "stride {stride} is shorter than a row of {w} BGR pixels");
    assert!(
        out.len() >= stride * (h - 1) + 3 * w,
        "frame buffer of {} bytes is too small for {w}x{h} at stride {stride}",
        out.len()
    );
    let ctx = Ctx::new(scene);
    let paint = ctx.line_paint();
    let sky = Sky::new(scene);
    let sampler = scene.sampler();
    let mut map = RowMap::default();
    let mut hint = scene.cam_s;
    // Bottom up, so each row's searches start from the row below.
    for v in (0..h).rev() {
        let row = &mut out[v * stride..v * stride + 3 * w];
        if sampler.row(v as u32, &mut hint, &mut map) {
            let rl = ctx.row_look(scene, &map);
            ground_row(&ctx, &rl, &map, row);
            paint_lines(&paint, &RowFog { keep: rl.keep, fog_f: rl.fog_f }, &map, row);
        } else if v as f64 > ctx.horizon {
            fill(row, ctx.look.fog.map(|c| c.round() as u8));
        } else {
            sky.row(v, row);
        }
        match noise_ns.as_deref_mut() {
            Some(total) => {
                let started = std::time::Instant::now();
                scene.world.sensor.apply(frame, v, row);
                *total += started.elapsed().as_nanos() as u64;
            }
            None => scene.world.sensor.apply(frame, v, row),
        }
    }
}

impl<'a> Ctx<'a> {
    fn new(scene: &Scene<'a>) -> Self {
        let world = scene.world;
        let (lo, hi) = world.road.asphalt;
        let sh = world.road.shoulder;
        let look = &world.look;
        Self {
            look,
            tables: &world.tables,
            lines: &world.road.lines,
            horizon: scene.projector.horizon,
            bounds: [lo - sh - SHADE_REACH, lo - sh, lo, hi, hi + sh, hi + sh + SHADE_REACH],
            wear_lo: (lo * ONE) as i64,
            shadows: look.shadows.is_some() && !world.tables.shade.is_empty(),
            skew: look.shadows.map_or(0.0, |s| s.2),
            tex_seed: mix64(scene.seed ^ 0x7E47_0000) as u32,
        }
    }

    fn line_paint(&self) -> LinePaint<'a> {
        LinePaint {
            look: self.look,
            tables: self.tables,
            lines: self.lines,
            shadows: self.shadows,
            skew: self.skew,
            tex_seed: self.tex_seed,
        }
    }

    fn fog_factor(&self, dist: f64) -> f64 {
        let l = self.look;
        let f = |d: f64| 1.0 - (-(d - l.fog_start).max(0.0) / l.fog_scale).exp();
        (f(dist) / f(MAX_DIST)).clamp(0.0, 1.0)
    }

    fn row_look(&self, scene: &Scene<'_>, map: &RowMap) -> RowLook {
        let fog = self.fog_factor(map.dist) as f32;
        let keep = 1.0 - fog;
        let light = self.look.light;
        // How far one image row reaches along the ground, for texture filtering.
        let depth = depth_footprint(scene, f64::from(map.v));
        let texel0 = 1.0 / f64::from(1u32 << TEXEL_BITS);
        let level = (map.per_px / texel0).log2().ceil().max(0.0);
        let texel = texel0 * level.exp2();
        // A pixel averages this many texels' worth of grain: shrink the grain as a box filter
        // would, so the far road does not sparkle.
        let grain_keep = (texel / depth.max(texel)).sqrt() as f32;
        let blotch_keep = (BLOTCH_CELL / depth.max(BLOTCH_CELL)).sqrt() as f32;
        let mat = |m: &Material| {
            let c = |i: usize| m.color[i] * light[i] * keep;
            let g = |i: usize| (m.tint[i] * light[i] * keep * 256.0).round() as i32;
            RowMat {
                base: [c(0), c(1), c(2)].map(|x| x.round() as i32),
                gain: [g(0), g(1), g(2)],
                grain: (m.grain * grain_keep * 2.0).round() as i32,
                blotch: (m.blotch * blotch_keep).round() as i32,
            }
        };
        let fog_f = self.look.fog.map(|c| c * fog);
        RowLook {
            mats: [mat(&self.look.asphalt), mat(&self.look.shoulder), mat(&self.look.grass)],
            fog: fog_f.map(|c| c.round() as i32),
            keep,
            fog_f,
            shift: FRAC - TEXEL_BITS + level as u32,
        }
    }

    fn zone(&self, n: f64) -> usize {
        self.bounds.iter().filter(|&&b| b <= n).count()
    }
}

/// Ground distance covered by one image row around row `v` (m).
fn depth_footprint(scene: &Scene<'_>, v: f64) -> f64 {
    let p = scene.projector;
    match (p.row(v - 0.5), p.row(v + 0.5)) {
        (Some(a), Some(b)) => (a.dist - b.dist).abs(),
        _ => MAX_DIST,
    }
}

fn ground_row(ctx: &Ctx<'_>, rl: &RowLook, map: &RowMap, row: &mut [u8]) {
    let samples = &map.samples;
    let cells = ctx.tables.shade.len() as f64;
    let cell = ctx.tables.shade_cell;
    let mut blot_a = blotch(ctx, map, samples.first());
    for (k, a) in samples.iter().enumerate() {
        let next = samples.get(k + 1);
        let blot_b = blotch(ctx, map, next);
        let b = next.unwrap_or(a);
        let p0 = a.u as usize;
        let p1 = next.map_or(p0 + 1, |b| b.u as usize);
        let span = (b.u - a.u).max(1.0);
        let dblot = ((blot_b - blot_a) / span * 65536.0) as i32;
        let at = |p: usize, n: f64, s: f64, dn: f64, ds: f64| {
            let du = p as f64;
            let (wx, wy) = map.world(du);
            let t = du - a.u;
            let sk = modulo((s + ctx.skew * n) / cell, cells.max(1.0));
            let start = Acc {
                wx: (wx * ONE) as i64,
                wy: (wy * ONE) as i64,
                n: (n * ONE) as i64,
                sk: (sk * ONE) as i64,
                blot: ((blot_a + (blot_b - blot_a) * t / span) * 65536.0) as i32,
            };
            let step = Acc {
                wx: (map.step.0 * ONE) as i64,
                wy: (map.step.1 * ONE) as i64,
                n: (dn * ONE) as i64,
                sk: ((ds + ctx.skew * dn) / cell * ONE) as i64,
                blot: dblot,
            };
            (start, step)
        };
        if a.link {
            let dn = (b.n - a.n) / span;
            let ds = (b.s - a.s) / span;
            let mut p = p0;
            while p < p1 {
                let t = (p - p0) as f64;
                let n = a.n + dn * t;
                let z = ctx.zone(n);
                let end = if dn > 0.0 && z < ctx.bounds.len() {
                    (p0 as f64 + (ctx.bounds[z] - a.n) / dn).ceil()
                } else if dn < 0.0 && z > 0 {
                    (p0 as f64 + (ctx.bounds[z - 1] - a.n) / dn).floor() + 1.0
                } else {
                    p1 as f64
                };
                let end = (end.max(0.0) as usize).clamp(p + 1, p1);
                let (start, step) = at(p, n, a.s + ds * t, dn, ds);
                run(ctx, rl, ZONES[z], &mut row[3 * p..3 * end], start, step);
                p = end;
            }
        } else {
            let first = if a.valid { ZONES[ctx.zone(a.n)] } else { Zone::FarGrass };
            let (start, step) = at(p0, a.n, a.s, 0.0, 0.0);
            run(ctx, rl, first, &mut row[3 * p0..3 * p0 + 3], start, step);
            if p1 > p0 + 1 {
                let (start, step) = at(p0 + 1, 0.0, 0.0, 0.0, 0.0);
                run(ctx, rl, Zone::FarGrass, &mut row[3 * (p0 + 1)..3 * p1], start, step);
            }
        }
        blot_a = blot_b;
    }
}

/// Metre-scale brightness variation at a sample, in −1..1.
fn blotch(ctx: &Ctx<'_>, map: &RowMap, s: Option<&Sample>) -> f64 {
    s.map_or(0.0, |s| {
        let (x, y) = map.world(s.u);
        value_noise(x, y, BLOTCH_CELL, ctx.tex_seed)
    })
}

fn run(ctx: &Ctx<'_>, rl: &RowLook, zone: Zone, px: &mut [u8], a: Acc, d: Acc) {
    let [asphalt, shoulder, grass] = &rl.mats;
    match (zone, ctx.shadows) {
        (Zone::Asphalt, true) => shade_run::<true, true>(ctx, rl, asphalt, px, a, d),
        (Zone::Asphalt, false) => shade_run::<true, false>(ctx, rl, asphalt, px, a, d),
        (Zone::Shoulder, true) => shade_run::<false, true>(ctx, rl, shoulder, px, a, d),
        (Zone::Shoulder, false) => shade_run::<false, false>(ctx, rl, shoulder, px, a, d),
        (Zone::NearGrass, true) => shade_run::<false, true>(ctx, rl, grass, px, a, d),
        (Zone::NearGrass, false) | (Zone::FarGrass, _) => shade_run::<false, false>(ctx, rl, grass, px, a, d),
    }
}

/// The hot loop: one hash, a few multiplies and adds per pixel.
#[inline(always)]
fn shade_run<const WEAR: bool, const SHADOW: bool>(
    ctx: &Ctx<'_>,
    rl: &RowLook,
    m: &RowMat,
    px: &mut [u8],
    mut a: Acc,
    d: Acc,
) {
    let wear = &ctx.tables.wear[..];
    let wear_last = wear.len() as i64 - 1;
    let shade = &ctx.tables.shade[..];
    let cells = shade.len() as i64;
    for out in px.chunks_exact_mut(3) {
        let h = hash2((a.wx >> rl.shift) as u32, (a.wy >> rl.shift) as u32, ctx.tex_seed);
        let grain = (h >> 24) as i32 - 128;
        let mut l = ((grain * m.grain) >> 8) + ((a.blot * m.blotch) >> 16);
        if WEAR {
            let i = ((a.n - ctx.wear_lo) >> (FRAC - WEAR_CELL_SHIFT)).clamp(0, wear_last);
            l += wear.get(i as usize).copied().unwrap_or(0);
        }
        let light = if SHADOW {
            let mut c = a.sk >> FRAC;
            if c >= cells {
                c -= cells;
            } else if c < 0 {
                c += cells;
            }
            i32::from(shade.get(c as usize).copied().unwrap_or(256))
        } else {
            256
        };
        for ((o, &base), (&gain, &fog)) in out.iter_mut().zip(&m.base).zip(m.gain.iter().zip(&rl.fog)) {
            let mut v = base + ((l * gain) >> 8);
            if SHADOW {
                v = (v * light) >> 8;
            }
            *o = (v + fog).clamp(0, 255) as u8;
        }
        a.wx += d.wx;
        a.wy += d.wy;
        if WEAR {
            a.n += d.n;
        }
        if SHADOW {
            a.sk += d.sk;
        }
        a.blot += d.blot;
    }
}
