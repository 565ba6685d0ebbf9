//! Painted lines, drawn over the ground with their exact coverage of each pixel across the row
//! (so they are anti-aliased), at the columns where the row mapping puts each line's offset:
//! the same columns truth() reports.

use super::look::{Bgr, Look, Tables};
use super::noise::hash2;
use super::road::{LineColor, RoadLine};
use super::rows::RowMap;
use super::{floor_i64, modulo};

/// What painting needs of the frame, handed over by the render pass (which owns the ground).
pub(super) struct LinePaint<'a> {
    pub(super) look: &'a Look,
    pub(super) tables: &'a Tables,
    pub(super) lines: &'a [RoadLine],
    pub(super) shadows: bool,
    pub(super) skew: f64,
    pub(super) tex_seed: u32,
}

/// What painting needs of the row: the share of the surface colour left after fog, and the
/// fog added.
pub(super) struct RowFog {
    pub(super) keep: f32,
    pub(super) fog_f: Bgr,
}

/// Draws each stripe over the ground with its exact pixel coverage across the row.
pub(super) fn paint_lines(ctx: &LinePaint<'_>, rl: &RowFog, map: &RowMap, row: &mut [u8]) {
    let width = row.len() / 3;
    let mut spans: Vec<(f64, f64)> = Vec::new();
    for (li, line) in ctx.lines.iter().enumerate() {
        for (c, half) in line.stripes() {
            spans.clear();
            let (lo, hi) = (c - half, c + half);
            for w in map.samples.windows(2) {
                let (a, b) = (&w[0], &w[1]);
                if !a.link || a.n.max(b.n) < lo || a.n.min(b.n) > hi {
                    continue;
                }
                let (t0, t1) = if a.n == b.n {
                    (0.0, 1.0)
                } else {
                    let (ta, tb) = ((lo - a.n) / (b.n - a.n), (hi - a.n) / (b.n - a.n));
                    (ta.min(tb).max(0.0), ta.max(tb).min(1.0))
                };
                if t0 >= t1 {
                    continue;
                }
                let (u0, u1) = (a.u + t0 * (b.u - a.u), a.u + t1 * (b.u - a.u));
                match spans.last_mut() {
                    Some(last) if last.1 >= u0 - 1e-9 => last.1 = last.1.max(u1),
                    _ => spans.push((u0, u1)),
                }
            }
            for &(u0, u1) in &spans {
                let first = (u0 + 0.5).floor().max(0.0) as usize;
                let last = ((u1 - 0.5).ceil().max(0.0) as usize).min(width - 1);
                for p in first..=last {
                    let pc = p as f64;
                    let cover = (u1.min(pc + 0.5) - u0.max(pc - 0.5)) as f32;
                    if cover <= 0.0 {
                        continue;
                    }
                    let Some((s, n)) = map.at(pc.clamp(u0, u1)) else { continue };
                    if !line.painted_at(s) {
                        continue;
                    }
                    let paint = paint_color(ctx, rl, line, li, s, n);
                    for (o, &pc) in row[3 * p..3 * p + 3].iter_mut().zip(&paint) {
                        let cur = f32::from(*o);
                        *o = (cur + (pc - cur) * cover + 0.5).clamp(0.0, 255.0) as u8;
                    }
                }
            }
        }
    }
}

/// Paint in the light at (s, n): worn unevenly along the line, shaded like the ground.
fn paint_color(ctx: &LinePaint<'_>, rl: &RowFog, line: &RoadLine, index: usize, s: f64, n: f64) -> Bgr {
    let base = match line.style.color {
        LineColor::White => ctx.look.white,
        LineColor::Yellow => ctx.look.yellow,
    };
    let cell = floor_i64(s);
    let worn = |c: i64| (hash2(c as u32, index as u32, ctx.tex_seed ^ 0xBEEF) >> 24) as f32 / 255.0;
    let t = (s - cell as f64) as f32;
    let wear = 0.9 + 0.1 * (worn(cell) + (worn(cell + 1) - worn(cell)) * t);
    let light = if ctx.shadows {
        let cells = ctx.tables.shade.len() as f64;
        let c = modulo((s + ctx.skew * n) / ctx.tables.shade_cell, cells) as usize;
        f32::from(ctx.tables.shade.get(c).copied().unwrap_or(256)) / 256.0
    } else {
        1.0
    };
    std::array::from_fn(|i| base[i] * ctx.look.light[i] * wear * light * rl.keep + rl.fog_f[i])
}
